"""The ``top_k_mask`` visualizer: keep the most important pixels, hide the rest."""

from __future__ import annotations

import numbers

import numpy as np

from salplug import InputError, ParameterError


def top_k_mask(values, image=None, *, fraction: float = 0.1, signed: bool = False, dim: float = 0.0) -> np.ndarray:
    """The top ``fraction`` of pixels by attribution.

    Parameters
    ----------
    values : one map, (H, W, C) channels last (or (H, W)).
    image : optional RGB image (H, W, 3), [0, 1] floats or uint8; then the kept pixels show
        the image and the others are multiplied by ``dim``.
    fraction : share of pixels to keep, in (0, 1]; exactly ceil(fraction * H * W) pixels
        (ties broken by position).
    signed : rank by the signed sum over channels (positive evidence) instead of the sum of
        absolute values.
    dim : brightness of the hidden pixels when an image is given, in [0, 1].

    Returns (H, W) with 1 for kept pixels and 0 elsewhere, or (H, W, 3) with an image.
    """
    if not _number_in(fraction, 0, 1, low_open=True):
        raise ParameterError(f"fraction must be a number in (0, 1], got {fraction!r}.")
    if not _number_in(dim, 0, 1):
        raise ParameterError(f"dim must be a number in [0, 1], got {dim!r}.")
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 2:
        v = v[..., None]
    if v.ndim != 3:
        raise InputError(f"top_k_mask takes one map (H, W, C) or (H, W); got shape {v.shape}.")
    score = v.sum(axis=2) if signed else np.abs(v).sum(axis=2)
    h, w = score.shape
    keep = int(np.ceil(fraction * h * w))
    order = np.argsort(-score.ravel(), kind="stable")[:keep]
    mask = np.zeros(h * w)
    mask[order] = 1.0
    mask = mask.reshape(h, w)
    if image is None:
        return mask
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[:2] != (h, w):
        raise InputError(f"image must be (H, W[, C]) with H, W = {(h, w)}; got {img.shape}.")
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    img = img[..., :3]
    kind = np.asarray(image).dtype
    if kind.kind in "iu":  # by dtype: 0..255, or 0..65535 for uint16
        img = img / (65535.0 if kind == np.uint16 else 255.0)
    elif img.max() > 2.0:  # floats in 0..255 (a [0, 1] image may overshoot 1 a little)
        img = img / 255.0
    img = np.clip(img, 0.0, 1.0)
    return img * (mask + dim * (1 - mask))[..., None]


def _number_in(value, low: float, high: float, low_open: bool = False) -> bool:
    """A real number (numpy scalars too, booleans not) within [low, high] (or (low, high])."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return False
    return (low < value if low_open else low <= value) and value <= high
