"""``saliency.tf1.integrated_gradients``: Integrated Gradients of a TF1 graph."""

from __future__ import annotations

from ..core import integrated_gradients as core_integrated_gradients
from .base import TF1CoreSaliency

__all__ = ["IntegratedGradients"]


class IntegratedGradients(TF1CoreSaliency):
    """Integrated Gradients (salplug.core.IntegratedGradients over the graph)."""

    _wraps_core = True

    def __init__(self, graph, session, y, x):
        super().__init__(graph, session, y, x)
        self.core_instance = core_integrated_gradients.IntegratedGradients()

    def _validate(self, kwargs):
        self.validate_xy_tensor_shape(kwargs.get("x_steps", 25), kwargs.get("batch_size", 1))

    def GetMask(self, x_value, feed_dict=None, x_baseline=None, x_steps=25, batch_size=1):
        """IG of one unbatched input; ceil(x_steps / batch_size) session.run calls."""
        self.validate_xy_tensor_shape(x_steps, batch_size)
        return self.core_instance.GetMask(x_value, self.call_model_function, call_model_args=feed_dict,
                                          x_baseline=x_baseline, x_steps=x_steps, batch_size=batch_size)
