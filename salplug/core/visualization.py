"""``saliency.core.visualization``: the upstream names of salplug's grayscale and diverging
visualizers (one (H, W, C) map in, an (H, W) image in [0, 1] out)."""

from __future__ import annotations

from ..visualizers.images import diverging, grayscale

__all__ = ["VisualizeImageGrayscale", "VisualizeImageDiverging"]


def VisualizeImageGrayscale(image_3d, percentile=99):
    """Sum of |values| over channels, scaled from its minimum to its ``percentile`` -> [0, 1]."""
    return grayscale(image_3d, percentile=percentile)


def VisualizeImageDiverging(image_3d, percentile=99):
    """Signed sum over channels: 0 -> 0.5, +/- the |percentile| value -> 1 / 0, clipped to [0, 1]."""
    return diverging(image_3d, percentile=percentile)
