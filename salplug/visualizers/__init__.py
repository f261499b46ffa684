"""Visualizers turn one attribution (H, W, C) into an image in [0, 1]; see ``images``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def render(kind: str, values: Any, image: Any = None, host: Any = None, **params: Any) -> np.ndarray:
    """Render ``values`` with the registered visualizer ``kind``."""
    from ..plugins import get_host

    visualizer = (host or get_host()).visualizers.get(kind).load()
    if isinstance(visualizer, type):
        visualizer = visualizer()
    return visualizer(np.asarray(values), image=image, **params)


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
