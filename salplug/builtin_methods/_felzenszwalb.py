"""Felzenszwalb-Huttenlocher graph segmentation (IJCV 2004) of one image at several scales.

The labels are those of scikit-image's ``felzenszwalb`` (which upstream XRAI calls): the image
is smoothed by a Gaussian (``sigma`` on both spatial axes), every pixel is joined to its 8
neighbours by edges weighted with the colour distance, and the edges are visited by weight.
Two segments merge over an edge lighter than both of their thresholds -- the segment's largest
merge weight plus ``scale / 255 / size``, rounded to float32 -- and a second pass over the same
edges merges every segment smaller than ``min_size`` into its neighbour. Segments are numbered
by their first pixel (C order).

The smoothing, the edge weights and their sort depend only on the image, so with numba (the
``fast`` extra) they are computed once and each scale runs only the two compiled union-find
passes. Without numba each scale is one call of scikit-image's function.
"""

from __future__ import annotations

import warnings

import numpy as np

_KERNEL = None        # the compiled passes, once loaded
_UNAVAILABLE = None   # why numba could not be used, once known


def _load_kernel():
    from ._felzenszwalb_numba import merge_passes

    return merge_passes


def compiled_kernel():
    """The numba-compiled merge passes, or None when numba is not installed (or fails to load)."""
    global _KERNEL, _UNAVAILABLE
    if _KERNEL is None and _UNAVAILABLE is None:
        try:
            _KERNEL = _load_kernel()
        except ImportError as exc:  # not installed: the documented fallback, no warning
            _UNAVAILABLE = str(exc)
        except Exception as exc:  # noqa: BLE001 -- installed but broken (e.g. numpy too new)
            _UNAVAILABLE = str(exc)
            warnings.warn(f"numba is installed but failed to load ({exc}); XRAI segments with "
                          "scikit-image's felzenszwalb instead (slower).", RuntimeWarning, stacklevel=2)
    return _KERNEL


def shares_edges() -> bool:
    """Whether the scales share one edge sort (numba is available), without importing numba."""
    if _KERNEL is not None or _UNAVAILABLE is not None:
        return _KERNEL is not None
    from importlib.util import find_spec

    return find_spec("numba") is not None


def sorted_edges(image: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """The 8-connected edges of ``image`` (H, W, C) after smoothing, by weight.

    Returns (pixel pairs (E, 2) intp, weights (E,) float64): horizontal, vertical, down-right
    and up-right edges, ordered by ``np.argsort`` of their weights in that order (so equal
    weights keep scikit-image's order).
    """
    from scipy import ndimage

    im = ndimage.gaussian_filter(np.asarray(image, np.float64), sigma=(sigma, sigma, 0), mode="reflect")
    h, w = im.shape[:2]

    def distance(a, b):
        d = a - b
        return np.sqrt(np.sum(d * d, axis=-1)).ravel()

    weights = np.concatenate([
        distance(im[:, 1:], im[:, :-1]),        # (y, x+1) - (y, x)
        distance(im[1:, :], im[:-1, :]),        # (y+1, x) - (y, x)
        distance(im[1:, 1:], im[:-1, :-1]),     # (y+1, x+1) - (y, x)
        distance(im[1:, :-1], im[:-1, 1:]),     # (y+1, x) - (y, x+1)
    ])
    pix = np.arange(h * w, dtype=np.intp).reshape(h, w)
    first = np.concatenate([pix[:, 1:].ravel(), pix[1:, :].ravel(), pix[1:, 1:].ravel(), pix[:-1, 1:].ravel()])
    second = np.concatenate([pix[:, :-1].ravel(), pix[:-1, :].ravel(), pix[:-1, :-1].ravel(), pix[1:, :-1].ravel()])
    order = np.argsort(weights)
    edges = np.stack([first[order], second[order]], axis=1)
    return edges, np.ascontiguousarray(weights[order])


def felzenszwalb_scales(image: np.ndarray, scales, sigma: float, min_size: int) -> list[np.ndarray]:
    """Felzenszwalb labels (H, W) of ``image`` (H, W, C) at each of ``scales``."""
    image = np.asarray(image, np.float64)
    if image.ndim == 2:
        image = image[..., None]
    kernel = compiled_kernel()
    if kernel is None:
        from skimage.segmentation import felzenszwalb

        return [felzenszwalb(image, scale=s, sigma=sigma, min_size=min_size, channel_axis=-1) for s in scales]
    edges, weights = sorted_edges(image, sigma)
    shape = image.shape[:2]
    return [kernel(edges, weights, shape[0] * shape[1], float(s) / 255.0, int(min_size)).reshape(shape)
            for s in scales]
