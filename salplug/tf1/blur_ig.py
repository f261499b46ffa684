"""``saliency.tf1.blur_ig``: Blur IG of a TF1 graph."""

from __future__ import annotations

from ..core import blur_ig as core_blur_ig
from .base import TF1CoreSaliency

__all__ = ["BlurIG"]


class BlurIG(TF1CoreSaliency):
    """Blur IG (salplug.core.BlurIG over the graph)."""

    _wraps_core = True

    def __init__(self, graph, session, y, x):
        super().__init__(graph, session, y, x)
        self.core_instance = core_blur_ig.BlurIG()

    def _validate(self, kwargs):
        self.validate_xy_tensor_shape(kwargs.get("steps", 100), kwargs.get("batch_size", 1))

    def GetMask(self, x_value, feed_dict=None, max_sigma=50, steps=100, grad_step=0.01, sqrt=False, batch_size=1):
        """Blur IG of one image; ceil(steps / batch_size) session.run calls."""
        self.validate_xy_tensor_shape(steps, batch_size)
        return self.core_instance.GetMask(x_value, self.call_model_function, call_model_args=feed_dict,
                                          max_sigma=max_sigma, steps=steps, grad_step=grad_step, sqrt=sqrt,
                                          batch_size=batch_size)
