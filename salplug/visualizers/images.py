"""Built-in visualizers: grayscale, diverging (upstream semantics) and a heatmap overlay."""

from __future__ import annotations

import numpy as np

from ..errors import InputError, ParameterError
from ..hookspecs import hookimpl


def _as_3d(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 2:
        return values[..., None]
    if values.ndim != 3:
        raise InputError(f"A visualizer takes one map (H, W) or (H, W, C) channels last; got shape "
                         f"{values.shape}. Pick one sample (attribution.canonical[i]).")
    return values


def _check_percentile(percentile: float) -> None:
    if not 0 < percentile <= 100:
        raise ParameterError(f"percentile must be in (0, 100], got {percentile!r}.")


def grayscale(values, image=None, *, percentile: float = 99) -> np.ndarray:
    """Sum of |values| over channels, scaled from its minimum to its ``percentile`` -> [0, 1].

    When the percentile equals the minimum (a sparse map), pixels above the minimum are 1 and
    the rest 0, as upstream (which gives NaN, 0 / 0, for the rest); a constant map is all 0.
    """
    _check_percentile(percentile)
    flat = np.abs(_as_3d(values)).sum(axis=2)
    low, high = flat.min(), np.percentile(flat, percentile)
    if high <= low:
        return (flat > low).astype(np.float64)
    return np.clip((flat - low) / (high - low), 0.0, 1.0)


def diverging(values, image=None, *, percentile: float = 99) -> np.ndarray:
    """Signed sum over channels; 0 maps to 0.5, +/- the |percentile| value to 1 and 0.

    When that value is 0 (a sparse or all-zero map), positive pixels are 1, negative ones 0
    and zeros 0.5, as upstream (which gives NaN, 0 / 0, for the zeros).
    """
    _check_percentile(percentile)
    flat = _as_3d(values).sum(axis=2)
    span = abs(np.percentile(flat, percentile))
    if span == 0:
        return 0.5 + 0.5 * np.sign(flat)
    return np.clip((flat + span) / (2 * span), 0.0, 1.0)


def _as_rgb(image, shape) -> np.ndarray:
    """``image`` (H, W), (H, W, 1|3|4) or (1|3|4, H, W) for the map's ``shape`` (H, W), as RGB
    floats in [0, 1]: uint8 and other integers are 0..255 (uint16: 0..65535), floats [0, 1]
    (floats above 2 are taken as 0..255: a [0, 1] photo may overshoot 1 a little after
    resampling). Channels last wins when both readings fit (an (H, H, H) image)."""
    img = np.asarray(image)
    given, shape = img.shape, tuple(shape)
    integers = np.issubdtype(img.dtype, np.integer)
    if integers:  # by dtype, not by value: a dark uint8 photo (max 1) stays dark
        img = img.astype(np.float64) / (65535.0 if img.dtype == np.uint16 else 255.0)
    img = img.astype(np.float64)
    if img.ndim == 2:
        img = img[..., None]
    channels = (1, 3, 4)
    hwc = img.ndim == 3 and img.shape[:2] == shape and img.shape[2] in channels
    if not hwc and img.ndim == 3 and img.shape[1:] == shape and img.shape[0] in channels:
        img, hwc = img.transpose(1, 2, 0), True  # CHW -> HWC
    if not hwc:
        raise InputError(f"The overlay image must be (H, W), (H, W, C) or (C, H, W) with H, W = {shape} "
                         f"and C = 1, 3 or 4; got {given}.")
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    img = img[..., :3]
    if not integers and img.max() > 2.0:
        img = img / 255.0
    return np.clip(img, 0, 1)


def heatmap(values, image=None, *, percentile: float = 99, cmap: str = "jet", alpha: float = 0.5,
            signed: bool = False) -> np.ndarray:
    """A colour heatmap of the map, blended over ``image`` when given: (H, W), (H, W, 1|3|4) or
    (1|3|4, H, W), floats in [0, 1] or uint8 (see ``_as_rgb``)."""
    if not 0 <= alpha <= 1:
        raise ParameterError(f"alpha must be in [0, 1], got {alpha!r}.")
    from matplotlib import colormaps

    try:
        colours = colormaps[cmap]
    except KeyError:
        raise ParameterError(f"Unknown matplotlib colormap {cmap!r}.") from None
    intensity = (diverging if signed else grayscale)(values, percentile=percentile)
    rgb = colours(intensity)[..., :3]
    if image is None:
        return rgb
    base = _as_rgb(image, intensity.shape)
    return (1 - alpha) * base + alpha * rgb


@hookimpl
def register_visualizers(register):
    register("grayscale", grayscale, aliases=("gray", "greyscale"),
             description="|attribution| summed over channels, percentile-clipped (upstream)")
    register("diverging", diverging, description="signed attribution, 0 at mid-gray (upstream)")
    register("heatmap", heatmap, aliases=("overlay",), description="colour heatmap over the image")
