"""Blur Integrated Gradients (Xu et al., CVPR 2020).

The path runs from the input blurred at ``max_sigma`` back to the input itself: x(s) is the
input under a Gaussian blur of width s over the two spatial axes (zero padding outside the
image, the kernel cut at 4 s, like ``scipy.ndimage.gaussian_filter(mode="constant")``). With
s_i = i * max_sigma / steps (or its square root), the attribution is the left Riemann sum

    -sum_i (s_{i+1} - s_i) * dx/ds(s_i) * grad f(x(s_i)),

with dx/ds by a forward difference of width ``grad_step``. Its total is about
f(x) - f(x(max_sigma)). Each step's own width s_{i+1} - s_i is used (upstream ``saliency`` gives
every item of a batch the last item's width when ``sqrt=True``).
"""

from __future__ import annotations

import contextlib
import functools
import math

import numpy as np

from ..errors import InputError, ParameterError
from ..hookspecs import hookimpl
from ..types import INPUT_GRADIENTS, Method
from ._rows import add_by_sample, sample_and_step
from .integrated_gradients import check_steps

TRUNCATE = 4.0  # the kernel reaches 4 sigma, as in scipy.ndimage
DENSE_RATIO = 12  # blur an axis of length n by a dense n x n matrix when n < DENSE_RATIO * taps
SMALL_PRODUCT = 1 << 20  # matrix products this small stay on one thread in OpenBLAS (measured)


def kernel_radius(sigma: float) -> int:
    """Half-width of the Gaussian kernel for ``sigma`` (scipy's rule: int(4 sigma + 0.5))."""
    return int(TRUNCATE * sigma + 0.5)


def blur_matrix(n: int, sigma: float) -> np.ndarray:
    """The (n, n) matrix that blurs an axis of length n with zero padding (rows: outputs)."""
    radius = kernel_radius(sigma)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    offset = np.arange(n)[None, :] - np.arange(n)[:, None]
    inside = np.abs(offset) <= radius
    return np.where(inside, taps[np.clip(offset + radius, 0, 2 * radius)], 0.0) / taps.sum()


@functools.lru_cache(maxsize=None)
def _blas_controller():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


def single_threaded_blas():
    """Run BLAS on one thread inside the block, when ``threadpoolctl`` is installed.

    The blur is many mid-sized matrix products between model calls; threaded BLAS gains
    little there and stalls badly when the cores are busy (measured on a loaded 2-core
    machine: 224 x 224 Blur IG 3.5x slower than upstream with threaded BLAS, 2x faster
    with one thread).
    """
    controller = _blas_controller()
    return controller.limit(limits=1, user_api="blas") if controller is not None else contextlib.nullcontext()


def _dense_limit() -> float:
    """Largest matrix product (m * n * k) the blur hands to BLAS.

    Any size when BLAS can be kept on one thread (threadpoolctl); otherwise only products
    small enough that OpenBLAS runs them on one thread anyway (larger ones go to scipy).
    """
    return math.inf if _blas_controller() is not None else float(SMALL_PRODUCT)


def gaussian_blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Blur a stack of channels-first images (..., H, W) over H and W, float64.

    Matches ``scipy.ndimage.gaussian_filter(image, (0, sigma, sigma), mode="constant")``;
    an axis whose kernel is wide relative to its length is blurred by a dense matrix
    product (BLAS), a narrow one by ``scipy.ndimage.gaussian_filter1d``.
    """
    out = np.asarray(images, dtype=np.float64)
    if sigma <= 0 or kernel_radius(sigma) == 0:  # the kernel is [1]: nothing changes
        return out
    taps = 2 * kernel_radius(sigma) + 1
    limit = _dense_limit()
    for axis in (-2, -1):
        n = out.shape[axis]
        if n < DENSE_RATIO * taps and n * out.shape[-2] * out.shape[-1] <= limit:
            m = blur_matrix(n, sigma)
            out = np.matmul(m, out) if axis == -2 else np.matmul(out, m.T)
        else:
            from scipy.ndimage import gaussian_filter1d

            out = gaussian_filter1d(out, sigma, axis=axis, mode="constant", truncate=TRUNCATE)
    return out


def blur_sigmas(max_sigma: float, steps: int, sqrt: bool = False) -> np.ndarray:
    """The steps + 1 blur widths s_0 = 0, ..., s_steps = max_sigma of the path."""
    sigmas = np.arange(steps + 1, dtype=np.float64) * float(max_sigma) / steps
    return np.sqrt(sigmas) if sqrt else sigmas


def _positive_number(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value <= 0:
        raise ParameterError(f"{name} must be a positive finite number, got {value!r}.")


class BlurIG(Method):
    """Integrated gradients along a path of ever stronger Gaussian blur.

    Parameters
    ----------
    max_sigma : width (pixels) of the strongest blur, the path's start.
    steps : number of Riemann steps between the input and its strongest blur.
    grad_step : width of the forward difference that estimates dx/dsigma.
    sqrt : space the widths as sqrt(i * max_sigma / steps) instead of linearly.
    """

    requires = frozenset({INPUT_GRADIENTS})

    def check(self, ctx, x, targets, *, max_sigma=50, steps=100, grad_step=0.01, sqrt=False):
        if x.ndim != 4:
            raise InputError(
                f"Blur IG blurs images: it needs inputs of shape (N, H, W, C) canonically "
                f"(one image or a batch); got canonical shape {x.shape}."
            )
        _positive_number(max_sigma, "max_sigma")
        check_steps(steps)
        _positive_number(grad_step, "grad_step")
        if not isinstance(sqrt, (bool, np.bool_)):
            raise ParameterError(f"sqrt must be True or False, got {sqrt!r}.")

    def explain(self, ctx, x, targets, *, max_sigma=50, steps=100, grad_step=0.01, sqrt=False):
        sigmas = blur_sigmas(max_sigma, steps, sqrt)
        widths = np.diff(sigmas)
        images = np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # channels first for the blur
        total = np.zeros(x.shape, dtype=np.float64)
        for rows in ctx.chunks(len(x) * steps, "blur ig"):
            samples, k = sample_and_step(rows, steps)
            batch = images[samples]
            points = np.empty(batch.shape, dtype=np.float64)
            slopes = np.empty(batch.shape, dtype=np.float64)
            with single_threaded_blas():
                for step in np.unique(k):  # one blur per distinct width, over all its rows at once
                    sel = k == step
                    here = gaussian_blur(batch[sel], sigmas[step])
                    ahead = gaussian_blur(batch[sel], sigmas[step] + grad_step)
                    points[sel] = here
                    slopes[sel] = (ahead - here) * (widths[step] / grad_step)
            points = points.transpose(0, 2, 3, 1).astype(np.float32)
            grads = ctx.adapter.input_gradients(points, targets.take(samples))
            add_by_sample(total, samples, slopes.transpose(0, 2, 3, 1) * grads)
        return (-total).astype(np.float32)


@hookimpl
def register_methods(register):
    register("blur_ig", BlurIG, requires=BlurIG.requires, aliases=("blurig",),
             description="Blur Integrated Gradients (Xu et al. 2020)")
