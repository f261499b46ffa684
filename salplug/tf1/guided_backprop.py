"""``saliency.tf1.guided_backprop``: Guided Backprop on salplug's ``tf1`` backend.

The backend imports an in-memory copy of the graph with the guided gradient for Relu and Relu6
ops: no checkpoint is written, the caller's graph is left as it is (no op is added to it), and
``feed_dict=None`` works. Every call reads the variables' current values from the session and
feeds them to the copy (upstream snapshots them when the object is built).
"""

from __future__ import annotations

from ..core import gradients as core_gradients
from . import utils
from .base import TF1Saliency

__all__ = ["GuidedBackprop"]


class GuidedBackprop(TF1Saliency):
    """Guided Backpropagation (Springenberg et al. 2015) of ``y`` with respect to ``x``.

    ``tmp_ckpt_path`` is accepted for compatibility and unused (nothing is written to disk).
    """

    def __init__(self, graph, session, y, x, tmp_ckpt_path=None):
        super().__init__(graph, session, y, x)
        self._core = core_gradients.GradientSaliency()
        self._call_model_function = utils._call_model_function(graph, session, y, x, guided=True)
        self._batch_of_one = y.shape.rank == 0  # a scalar y explains one example per run

    def GetMask(self, x_value, feed_dict=None):
        """Guided-backprop gradient of y for one unbatched input (one run of the guided copy)."""
        return self._core.GetMask(x_value, self._call_model_function, call_model_args=feed_dict)

    def GetSmoothedMask(self, x_value, feed_dict=None, stdev_spread=.15, nsamples=25, magnitude=True,
                        batch_size=1, **kwargs):
        """SmoothGrad of guided backprop; ``batch_size`` (a salplug addition) noisy copies per run
        (1 when ``y`` is a scalar)."""
        if "GetMask" in vars(self) or type(self).GetMask is not GuidedBackprop.GetMask or kwargs:
            return super().GetSmoothedMask(x_value, feed_dict, stdev_spread, nsamples, magnitude, **kwargs)
        return self._core.GetSmoothedMask(x_value, self._call_model_function, call_model_args=feed_dict,
                                          stdev_spread=stdev_spread, nsamples=nsamples, magnitude=magnitude,
                                          batch_size=1 if self._batch_of_one else batch_size)
