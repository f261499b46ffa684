"""Grad-CAM (Selvaraju et al. 2017): a convolutional layer's channels weighted by their gradients.

weights_k = mean over the layer's spatial positions of d score / d A_k; the map is
sum_k weights_k * A_k. Upstream ``saliency`` then applies a ReLU, divides by the maximum,
resizes bilinearly to the input's height and width and tiles the map to three channels.
Captum's ``LayerGradCam`` is the same map without ReLU, normalisation or resizing.
"""

from __future__ import annotations

import functools

import numpy as np

from ..errors import LayerError, ParameterError
from ..hookspecs import hookimpl
from ..types import LAYER_GRADIENTS, Method


def _check_flag(value, name: str) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterError(f"{name} must be True or False; got {value!r}.")


@functools.lru_cache(maxsize=64)
def resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) matrix of scikit-image's order-1 ``resize`` along one axis.

    Bilinear resizing (and the Gaussian anti-aliasing scikit-image applies when shrinking) is
    linear and separable, so resizing the identity gives the matrix of the operation. Cached
    (read-only): building it takes ~10 ms, far more than using it.
    """
    from skimage.transform import resize

    matrix = resize(np.eye(size_in), (size_out, size_in), order=1)
    matrix.flags.writeable = False
    return matrix


def resize_maps(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear (order 1) resize of a stack of 2-D maps (N, h, w) to (N, *shape).

    Same numbers as ``skimage.transform.resize(map, shape, order=1)`` per map, computed for
    the whole stack as ``rows @ maps @ cols.T``.
    """
    if maps.shape[1:] == tuple(shape):
        return maps
    rows = resize_matrix(maps.shape[1], shape[0])
    cols = resize_matrix(maps.shape[2], shape[1])
    return rows @ maps @ cols.T


def normalize_maps(maps):
    """Divide each map by its largest absolute value (maps that are all zero stay zero); numpy or
    device arrays alike."""
    peak = abs(maps).reshape(len(maps), -1).max(axis=1)
    peak = getattr(peak, "values", peak).reshape(-1, 1, 1)  # a torch max is (values, indices)
    return maps / (peak + (peak == 0))  # an all-zero map is divided by 1


class GradCam(Method):
    """Gradient-weighted class activation map of one convolutional layer.

    Parameters
    ----------
    layer : the layer, as a module path ("layer4.1") or the module object; None only where
        the backend's model function picks the layer itself (the ``callable`` backend).
    relu : keep only positive evidence (upstream: always on; Captum: off by default).
    should_resize : resize the map to the input's height and width (bilinear).
    three_dims : tile the map to 3 channels, (N, H, W, 3) (upstream's default); else (N, H, W).
    normalize : divide each map by its maximum (absolute value). None: when resizing (upstream).

    Returns (N, H, W, 3) with ``three_dims`` else (N, H, W); without ``should_resize`` the
    layer's own height and width.
    """

    requires = frozenset({LAYER_GRADIENTS})
    rows_are_inputs = True  # model rows are x's rows: top-1 targets can be chosen in the same pass

    def check(self, ctx, x, targets, *, layer=None, relu=True, should_resize=True, three_dims=True,
              normalize=None):
        for name, flag in (("relu", relu), ("should_resize", should_resize), ("three_dims", three_dims)):
            _check_flag(flag, name)
        if normalize is not None:
            _check_flag(normalize, "normalize")
        if should_resize and x.ndim != 4:
            raise ParameterError(f"should_resize needs image inputs (N, H, W, C); got shape {x.shape}.")
        ctx.adapter.check_layer(layer)

    def explain(self, ctx, x, targets, *, layer=None, relu=True, should_resize=True, three_dims=True,
                normalize=None):
        inputs = ctx.to_device(x)  # no copy of a GPU input when the adapter keeps work there
        cams = []
        for rows in ctx.chunks(len(x), "grad_cam"):
            values, grads = ctx.adapter.layer_values_and_gradients(inputs[rows], targets.take(rows), layer)
            if not ctx.on_device or not hasattr(values, "shape"):  # numpy, or array-likes: as numpy
                values, grads = np.asarray(values), np.asarray(grads)
            cams.append(layer_map(values, grads, layer))
        maps = ctx.concat(cams)  # (N, h, w): float64 numpy, or float32 where the layer's values are
        if relu:  # (on the device: negative entries become -0.0, equal to 0)
            maps = np.maximum(maps, 0.0) if isinstance(maps, np.ndarray) else maps * (maps > 0)
        if should_resize if normalize is None else normalize:
            maps = normalize_maps(maps)
        if should_resize and ctx.on_device:  # the full-size maps are made where the results stay
            maps = resize_maps_on_device(ctx, maps, x.shape[1:3])
        elif should_resize:
            maps = resize_maps(maps, x.shape[1:3])
        maps = ctx.astype(maps, np.float32)
        if three_dims:  # tiled to 3 channels
            ones = np.ones(3, np.float32)
            maps = maps[..., None] * (ones if isinstance(maps, np.ndarray) else ctx.to_device(ones))
        return maps


def layer_map(values, grads, layer):
    """sum_k mean_hw(grads_k) * values_k, (N, h, w): float64 for numpy, float32 for device arrays."""
    if values.ndim != 4 or grads.shape != values.shape:
        raise LayerError(
            f"Grad-CAM needs a convolutional layer with outputs (N, H, W, C) and gradients of "
            f"the same shape; layer {layer!r} gave values {tuple(values.shape)} and gradients "
            f"{tuple(grads.shape)}. Choose a convolutional layer."
        )
    if isinstance(values, np.ndarray):
        return np.einsum("nhwk,nk->nhw", values.astype(np.float64), grads.mean(axis=(1, 2), dtype=np.float64))
    # device arrays (ctx.on_device): the same sums in float32, on the device (k products: rounding only)
    return (values * grads.mean(axis=(1, 2))[:, None, None, :]).sum(axis=-1)


def resize_maps_on_device(ctx, maps, shape: tuple[int, int]):
    """``resize_maps`` as float32 matrix products on the adapter's device (a device array)."""
    rows = resize_matrix(maps.shape[1], shape[0]).astype(np.float32)
    cols = resize_matrix(maps.shape[2], shape[1]).T.astype(np.float32)
    return ctx.to_device(rows) @ ctx.to_device(ctx.astype(maps, np.float32)) @ ctx.to_device(cols)


@hookimpl
def register_methods(register):
    register("grad_cam", GradCam, requires=GradCam.requires, aliases=("gradcam",),
             description="Grad-CAM (Selvaraju et al. 2017)")
