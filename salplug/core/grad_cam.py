"""``saliency.core.grad_cam``: Grad-CAM (the registered ``grad_cam`` method)."""

from __future__ import annotations

from .base import CONVOLUTION_LAYER_VALUES, CONVOLUTION_OUTPUT_GRADIENTS, CoreSaliency, Spec, run

__all__ = ["GradCam", "CONVOLUTION_LAYER_VALUES", "CONVOLUTION_OUTPUT_GRADIENTS"]


class GradCam(CoreSaliency):
    """Grad-CAM (Selvaraju et al. 2017) of the layer the call_model_function reports
    (CONVOLUTION_LAYER_VALUES and CONVOLUTION_OUTPUT_GRADIENTS, channels last)."""

    expected_keys = [CONVOLUTION_LAYER_VALUES, CONVOLUTION_OUTPUT_GRADIENTS]

    def _spec(self, should_resize=True, three_dims=True, batch_size=1):
        # upstream tests the flags for truth: 0/1 and numpy bools do as well as True/False
        return Spec("grad_cam", {"layer": None, "relu": True, "should_resize": bool(should_resize),
                                 "three_dims": bool(three_dims)}, batch_size, image=True)

    def GetMask(self, x_value, call_model_function, call_model_args=None, should_resize=True,
                three_dims=True, batch_size=1):
        """Grad-CAM of one image: ReLU of the gradient-weighted channel sum; with
        ``should_resize`` divided by its maximum and resized (bilinear) to the image's height and
        width; with ``three_dims`` tiled to 3 channels. One model call."""
        spec = self._spec(should_resize, three_dims, batch_size)
        return run(spec.method, x_value, call_model_function, call_model_args, batch_size=spec.batch_size,
                   image=True, **spec.params)[0]
