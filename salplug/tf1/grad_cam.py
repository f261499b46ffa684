"""``saliency.tf1.grad_cam``: Grad-CAM of a TF1 graph's convolutional layer."""

from __future__ import annotations

from ..core import grad_cam as core_grad_cam
from .base import TF1CoreSaliency

__all__ = ["GradCam"]


class GradCam(TF1CoreSaliency):
    """Grad-CAM (salplug.core.GradCam) of ``conv_layer``, an NHWC output tensor of the graph."""

    _wraps_core = True

    def __init__(self, graph, session, y, x, conv_layer):
        super().__init__(graph, session, y, x, conv_layer)
        self.core_instance = core_grad_cam.GradCam()

    def GetMask(self, x_value, feed_dict=None, should_resize=True, three_dims=True):
        """Grad-CAM of one image (one session.run); see salplug.core.GradCam.GetMask."""
        return self.core_instance.GetMask(x_value, self.call_model_function, call_model_args=feed_dict,
                                          should_resize=should_resize, three_dims=three_dims)
