"""Visualizers turn one attribution (H, W, C) into an image in [0, 1]; see ``images``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def render(kind: str, values: Any, image: Any = None, host: Any = None, **params: Any) -> np.ndarray:
    """Render ``values`` with the registered visualizer ``kind`` (looked up in ``host``, default
    the process-wide one); returns floats in [0, 1], (H, W) or (H, W, 3|4)."""
    from ..plugins import get_host

    component = (host or get_host()).visualizers.get(kind)
    visualizer = component.load()
    if isinstance(visualizer, type):
        visualizer = visualizer()
    who = f"Visualizer {component.name!r} (from {component.provider})"
    if not callable(visualizer):
        from ..errors import SalplugError

        raise SalplugError(f"{who} is a {type(visualizer).__name__}, not a callable "
                           f"(values, image=None, **params) -> image; fix the plugin's registration.")
    return check_image(visualizer(check_map(values), image=image, **params), who)


def check_map(values: Any) -> np.ndarray:
    """``values`` as an array; InputError when it holds NaN or infinite values (before any visualizer)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        from ..errors import InputError

        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise InputError(f"The map has {bad} NaN or infinite value(s) (of {arr.size}); a visualizer needs "
                         f"finite values. Replace them first, e.g. np.nan_to_num(values, nan=0.0, posinf=0.0, "
                         f"neginf=0.0).")
    return arr


def check_image(out: Any, who: str) -> np.ndarray:
    """``out`` as float [0, 1] (H, W) or (H, W, 3|4); uint8 counts as 0..255. Else ModelOutputError."""
    from ..errors import ModelOutputError

    arr = np.asarray(out) if isinstance(out, np.ndarray) or hasattr(out, "__array__") else None
    if arr is None or arr.dtype.kind not in "fu" or (arr.dtype.kind == "u" and arr.dtype != np.uint8):
        kind = type(out).__name__ if arr is None else f"{type(out).__name__} of {arr.dtype}"
        raise ModelOutputError(f"{who} returned {kind}; a visualizer must return a float array in "
                               f"[0, 1] or a uint8 array.")
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))) or 0 in arr.shape:
        raise ModelOutputError(f"{who} returned an array of shape {arr.shape}; a visualizer must return "
                               f"one image, (H, W) or (H, W, 3|4).")
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if not np.isfinite(arr).all():
        raise ModelOutputError(f"{who} returned NaN or infinite values; a visualizer must return "
                               f"values in [0, 1] (handle an all-zero or constant map).")
    low, high = float(arr.min()), float(arr.max())
    if low < -1e-6 or high > 1 + 1e-6:
        raise ModelOutputError(f"{who} returned values in [{low:g}, {high:g}]; a visualizer must "
                               f"return values in [0, 1] (or uint8).")
    return np.clip(arr, 0.0, 1.0) if (low < 0 or high > 1) else arr


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] float (H, W) or (H, W, 3|4) -> uint8, clipped."""
    return (np.clip(np.asarray(image, np.float64), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def save_png(image: np.ndarray, path: str | Path) -> str:
    """Write a [0, 1] image (grayscale or RGB) as a PNG; creates parent folders."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image)).save(path, format="PNG")
    return str(path)
