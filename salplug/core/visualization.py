"""``saliency.core.visualization``: the upstream names of salplug's grayscale and diverging
visualizers (one (H, W, C) map in, an (H, W) image in [0, 1] out)."""

from __future__ import annotations

import numpy as np

from ..visualizers.images import diverging, grayscale

__all__ = ["VisualizeImageGrayscale", "VisualizeImageDiverging"]


def VisualizeImageGrayscale(image_3d, percentile=99):
    """Sum of |values| over channels, scaled from its minimum to its ``percentile`` -> [0, 1]."""
    return _like(grayscale(image_3d, percentile=percentile), image_3d)


def VisualizeImageDiverging(image_3d, percentile=99):
    """Signed sum over channels: 0 -> 0.5, +/- the |percentile| value -> 1 / 0, clipped to [0, 1]."""
    return _like(diverging(image_3d, percentile=percentile), image_3d)


def _like(image: np.ndarray, source) -> np.ndarray:
    """``image`` in the float type upstream returns: float32 for a float32 (or float16) map,
    else float64."""
    dtype = getattr(source, "dtype", None)
    return image.astype(np.float32 if dtype in (np.float32, np.float16) else np.float64, copy=False)
