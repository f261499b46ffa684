"""``TF1Model``: a TensorFlow 1 graph bundle for the ``tf1`` backend (imports no TensorFlow)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["TF1Model"]


@dataclass(frozen=True, eq=False)
class TF1Model:
    """A ``tf.compat.v1`` graph, its session and the tensors to explain.

    Parameters
    ----------
    graph : the ``tf.Graph`` holding the model (default: ``session.graph``).
    session : a ``tf.compat.v1.Session`` of that graph, variables initialised.
    x : the input tensor (a placeholder, NHWC, batch first) or its name ("input:0").
    y : the explained tensor or its name: one scalar per example, shape (N,) -- upstream
        ``saliency.tf1`` semantics, then ``target`` must be None -- or logits (N, classes),
        then ``target`` picks the class of each example.
    conv_layer : the convolutional layer's output tensor (or name) Grad-CAM uses when no
        ``layer=`` is given.
    feed_dict : values for other placeholders (a keep probability, a training flag), fed on
        every call; never mutated.
    """

    graph: Any
    session: Any
    x: Any
    y: Any
    conv_layer: Any = None
    feed_dict: Mapping[Any, Any] | None = None

    def __post_init__(self) -> None:
        if self.graph is None and self.session is not None:
            object.__setattr__(self, "graph", getattr(self.session, "graph", None))
