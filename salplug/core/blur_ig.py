"""``saliency.core.blur_ig``: Blur IG (the registered ``blur_ig`` method) and ``gaussian_blur``."""

from __future__ import annotations

import numpy as np

from .base import INPUT_OUTPUT_GRADIENTS, CoreSaliency, Spec, run

__all__ = ["BlurIG", "gaussian_blur"]


def gaussian_blur(image, sigma):
    """Blur an (H, W, C) image (or an (H, W) one) over its two spatial axes, zero padding.

    The same blur Blur IG uses on its path; ``sigma == 0`` returns the image unchanged.
    """
    from ..builtin_methods.blur_ig import gaussian_blur as blur_stack

    image = np.asarray(image)
    if sigma == 0:
        return image
    if image.ndim == 2:
        out = blur_stack(image, sigma)
    else:
        out = np.moveaxis(blur_stack(np.moveaxis(image, -1, 0), sigma), 0, -1)
    return out.astype(np.float32) if image.dtype == np.float32 else out  # upstream keeps float32


class BlurIG(CoreSaliency):
    """Blur Integrated Gradients (Xu et al. 2020): the path runs through ever stronger blurs."""

    expected_keys = [INPUT_OUTPUT_GRADIENTS]

    def _spec(self, max_sigma=50, steps=100, grad_step=0.01, sqrt=False, batch_size=1):
        return Spec("blur_ig", {"max_sigma": max_sigma, "steps": steps, "grad_step": grad_step, "sqrt": sqrt},
                    batch_size, image=True)

    def GetMask(self, x_value, call_model_function, call_model_args=None, max_sigma=50, steps=100,
                grad_step=0.01, sqrt=False, batch_size=1):
        """Blur IG of one (H, W, C) or (H, W) image; ``batch_size`` path points per model call.

        With ``sqrt=True`` each step keeps its own width, whatever ``batch_size`` is (upstream
        gave every point of a batch the last point's width).
        """
        spec = self._spec(max_sigma, steps, grad_step, sqrt, batch_size)
        return run(spec.method, x_value, call_model_function, call_model_args, batch_size=spec.batch_size,
                   image=True, **spec.params)[0]
