"""Input validation and layout conversion between the caller's arrays and canonical ones."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InputError
from .types import InputInfo

#: layout -> (rank or None for any, batched, transpose to channels-last or None)
LAYOUTS: dict[str, tuple[int | None, bool, tuple[int, ...] | None]] = {
    "NHWC": (4, True, None),
    "HWC": (3, False, None),
    "NCHW": (4, True, (0, 2, 3, 1)),
    "CHW": (3, False, (1, 2, 0)),
    "N...": (None, True, None),
    "...": (None, False, None),
}


def read_array(x: Any) -> np.ndarray:
    """``x`` (array-like) as a numpy array; InputError when it cannot be read as one."""
    try:
        return np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - any failure to read is the caller's input
        raise InputError(f"Cannot read the input ({type(x).__name__}) as an array: {exc}") from exc


def check_image_rank(arr: np.ndarray, shapes: str) -> None:
    """A 2-D convolutional network takes one image or a batch: rank 3 or 4 (``shapes`` says which)."""
    if arr.ndim not in (3, 4):
        raise InputError(f"The model is a 2-D convolutional network, so the input must be one image "
                         f"{shapes}; got shape {tuple(arr.shape)}.")


def default_layout(ndim: int, channels_first: bool) -> str:
    """The layout assumed for an array of rank ``ndim`` when the caller names none."""
    if ndim == 4:
        return "NCHW" if channels_first else "NHWC"
    if ndim == 3:
        return "CHW" if channels_first else "HWC"
    return "N..." if ndim >= 2 else "..."


def check_layout(layout: str, ndim: int) -> None:
    if layout not in LAYOUTS:
        raise InputError(f"Unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}.")
    rank = LAYOUTS[layout][0]
    if rank is not None and ndim != rank:
        raise InputError(
            f"layout {layout!r} needs a rank-{rank} input, got rank {ndim}. Pass a batch "
            f"(N, ...) as NHWC/NCHW, one image as HWC/CHW, or another layout= value."
        )


def check_values(arr: np.ndarray, what: str = "input") -> np.ndarray:
    """Reject non-numeric, empty and non-finite arrays; return float32."""
    check_kind(arr.dtype.kind, arr.dtype, arr.size, arr.shape, what)
    with np.errstate(over="ignore"):  # finite values beyond float32's range: reported below
        out = np.asarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        given = np.isfinite(arr) if arr.dtype.kind == "f" else True
        if not np.all(given):
            raise nonfinite_error(int(arr.size - np.count_nonzero(given)), what)
        big = np.abs(arr[~np.isfinite(out)])
        raise InputError(
            f"The {what} has {big.size} value(s) beyond float32's range (up to {float(big.max()):.3g} in "
            f"magnitude; float32 holds {float(np.finfo(np.float32).max):.3g}); saliency runs in float32. "
            f"Rescale the data first (e.g. divide it by a constant)."
        )
    return out


def check_kind(kind: str, dtype: Any, size: int, shape: tuple, what: str = "input") -> None:
    """Reject a non-numeric (numpy ``kind`` "O", "c", "U", "S", "V") or empty array."""
    if kind in "OcUSV":
        raise InputError(f"The {what} has dtype {dtype}; pass real numbers (float or int).")
    if size == 0:
        raise InputError(f"The {what} is empty (shape {tuple(shape)}).")


def nonfinite_error(bad: int, what: str = "input") -> InputError:
    return InputError(
        f"The {what} contains {bad} NaN or infinite value(s); saliency needs finite "
        f"inputs. Clean or re-normalise the data first (e.g. np.nan_to_num)."
    )


def numpy_to_canonical(arr: np.ndarray, layout: str, **info: Any) -> tuple[np.ndarray, InputInfo]:
    """Caller's numpy array in ``layout`` -> canonical float32 (N, ..., C) plus InputInfo."""
    check_layout(layout, arr.ndim)
    _, batched, perm = LAYOUTS[layout]
    original, arr = arr, check_values(arr)
    if perm is not None:
        arr = arr.transpose(perm)
    if not batched:
        arr = arr[None]
    canonical = np.ascontiguousarray(arr)
    if np.may_share_memory(canonical, original):  # salplug's own copy: nothing may write to the caller's
        canonical = canonical.copy()
    return canonical, InputInfo(layout=layout, batched=batched, **info)


def canonical_to_layout(values: np.ndarray, info: InputInfo) -> np.ndarray:
    """Canonical (N, ..., C) -> the caller's layout (batch dim dropped for single inputs)."""
    _, batched, perm = LAYOUTS[info.layout]
    out = values
    if perm is not None and out.ndim == len(perm) + (0 if batched else 1):
        inverse = tuple(int(i) for i in np.argsort(perm))
        if batched:
            out = out.transpose(inverse)
        else:
            out = out.transpose((0, *[i + 1 for i in inverse]))
    if not batched:
        out = out[0]
    return np.ascontiguousarray(out) if out.ndim else out.copy()  # (ascontiguousarray makes 0-d 1-d)


def check_channels(canonical: np.ndarray, expected: int | None, info: InputInfo, shape: tuple) -> None:
    """Raise before any model call when the channel count cannot match the model."""
    if expected is None or canonical.ndim != 4:
        return
    got = canonical.shape[-1]
    if got != expected:
        where = "first" if info.layout in ("NCHW", "CHW") else "last"
        raise InputError(
            f"The model's first convolution expects {expected} input channels, but the input "
            f"of shape {tuple(shape)} (layout {info.layout}, channels {where}) has {got}. "
            f"Check the channel order, or pass layout='NCHW'/'NHWC' (or 'CHW'/'HWC') to say "
            f"which axis holds the channels."
        )
