"""``saliency.tf1.gradients``: vanilla gradients of a TF1 graph."""

from __future__ import annotations

from ..core import gradients as core_gradients
from .base import TF1CoreSaliency

__all__ = ["GradientSaliency"]


class GradientSaliency(TF1CoreSaliency):
    """Vanilla gradients (salplug.core.GradientSaliency over the graph)."""

    _wraps_core = True

    def __init__(self, graph, session, y, x):
        super().__init__(graph, session, y, x)
        self.core_instance = core_gradients.GradientSaliency()

    def GetMask(self, x_value, feed_dict=None):
        """d y / d x for one unbatched input (one session.run)."""
        return self.core_instance.GetMask(x_value, self.call_model_function, call_model_args=feed_dict)
