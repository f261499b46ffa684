"""Occlusion (Zeiler & Fergus 2014): how much the explained score drops when a patch is hidden.

A window of ``size`` slides over the image with ``stride``; inside it every channel is
replaced by ``value``. Each window gets the score difference f(x) - f(x_occluded), and a pixel
gets the sum (upstream ``saliency``) or the mean (Captum) of the differences of the windows
that cover it. The map is the same for every channel.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError, ParameterError
from ..hookspecs import hookimpl
from ..types import SCORES, Method, MethodOutput
from ._rows import sample_and_step

AGGREGATES = ("sum", "mean")


def as_pair(value, name: str) -> tuple[int, int]:
    """A positive int or a pair of positive ints as (height, width)."""
    items = value if isinstance(value, (tuple, list, np.ndarray)) else (value, value)
    ok = len(items) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v >= 1 for v in items)
    if not ok:
        raise ParameterError(f"{name} must be a positive int or a pair (height, width) of positive ints; "
                             f"got {value!r}.")
    return int(items[0]), int(items[1])


def window_starts(length: int, size: int, stride: int, partial: bool) -> np.ndarray:
    """First row (or column) of every window along one axis (each inside the image: with
    ``partial`` and a stride above the size, the step past the last full window may leave it)."""
    count = (-(-(length - size) // stride) if partial else (length - size) // stride) + 1
    starts = np.arange(count) * stride
    return starts[starts < length]


def box_sum(values: np.ndarray, r0: np.ndarray, c0: np.ndarray, size: tuple[int, int],
            shape: tuple[int, int]) -> np.ndarray:
    """Sum of per-window ``values`` (N, len(r0), len(c0)) over the pixels each window covers.

    A 2-D difference array: +v at the window's top-left corner, -v past its bottom and right
    edges, +v past the bottom-right corner, then cumulative sums over both axes.
    """
    n = values.shape[0]
    h, w = shape
    r1 = np.minimum(r0 + size[0], h)
    c1 = np.minimum(c0 + size[1], w)
    stride = (h + 1) * (w + 1)
    base = (np.arange(n) * stride)[:, None, None]
    idx, weights = [], []
    for rows, cols, sign in ((r0, c0, 1.0), (r1, c0, -1.0), (r0, c1, -1.0), (r1, c1, 1.0)):
        idx.append((base + rows[:, None] * (w + 1) + cols[None, :]).ravel())
        weights.append(sign * values.ravel())
    diff = np.bincount(np.concatenate(idx), np.concatenate(weights), minlength=n * stride)
    diff = diff.reshape(n, h + 1, w + 1)
    return diff.cumsum(1).cumsum(2)[:, :h, :w]


class Occlusion(Method):
    """Score drop when a sliding window is occluded, accumulated over the covered pixels.

    Parameters
    ----------
    size : window size, an int or (height, width) (upstream default 15).
    value : what fills the window: a scalar, or an array in the input's layout (one sample or
        one per sample) whose values inside the window replace the input's.
    stride : window step, an int or (height, width) (upstream: 1).
    aggregate : "sum" of the differences of the windows covering a pixel (upstream) or their
        "mean" (Captum).
    partial : also place windows that run past the bottom/right edge, clipped to the image,
        when ``stride`` does not divide ``H - size`` (Captum does); default: full windows only.

    Returns (N, H, W, C): the map repeated over channels. ``extras["window_scores"]`` holds the
    per-window differences, (N, rows, columns) of window positions.
    """

    requires = frozenset({SCORES})

    def check(self, ctx, x, targets, *, size=15, value=0, stride=1, aggregate="sum", partial=False):
        if x.ndim != 4:
            raise InputError(f"Occlusion slides a window over images: the input must be (N, H, W, C) "
                             f"(canonical), got shape {x.shape}.")
        sh, sw = as_pair(size, "size")
        as_pair(stride, "stride")
        h, w = x.shape[1:3]
        if sh > h or sw > w:
            raise ParameterError(f"size {(sh, sw)} is larger than the image ({h}, {w}); choose a window "
                                 f"of at most the image size.")
        if aggregate not in AGGREGATES:
            raise ParameterError(f"aggregate must be one of {', '.join(AGGREGATES)}; got {aggregate!r}.")
        if not isinstance(partial, (bool, np.bool_)):
            raise ParameterError(f"partial must be True or False; got {partial!r}.")
        ctx.as_canonical(value, x, "value")

    def explain(self, ctx, x, targets, *, size=15, value=0, stride=1, aggregate="sum", partial=False):
        n, h, w, c = x.shape
        sh, sw = as_pair(size, "size")
        th, tw = as_pair(stride, "stride")
        fill = ctx.as_canonical(value, x, "value")
        r0 = window_starts(h, sh, th, partial)
        c0 = window_starts(w, sw, tw, partial)
        windows = len(r0) * len(c0)
        per = windows + 1  # row 0 of each sample is the unoccluded input
        fill = np.broadcast_to(fill, (fill.shape[0],) + x.shape[1:])
        dy, dx = np.arange(sh), np.arange(sw)
        scores = np.empty((n, per), np.float64)
        for rows in ctx.chunks(n * per, "occlusion"):
            samples, k = sample_and_step(rows, per)
            batch = x[samples]  # a copy: the windows are written into it
            hit = np.flatnonzero(k > 0)
            if hit.size:
                win = k[hit] - 1
                # a window running past the edge (partial) is clipped: its last row/column repeats
                ys = np.minimum(r0[win // len(c0)][:, None] + dy, h - 1)[:, :, None]
                xs = np.minimum(c0[win % len(c0)][:, None] + dx, w - 1)[:, None, :]
                src = np.zeros_like(hit) if fill.shape[0] == 1 else samples[hit]
                batch[hit[:, None, None], ys, xs] = fill[src[:, None, None], ys, xs]
            scores[samples, k] = ctx.adapter.scores(batch, targets.take(samples))
        diffs = (scores[:, :1] - scores[:, 1:]).reshape(n, len(r0), len(c0))
        total = box_sum(diffs, r0, c0, (sh, sw), (h, w))
        if aggregate == "mean":
            count = box_sum(np.ones((1, len(r0), len(c0))), r0, c0, (sh, sw), (h, w))
            count = np.rint(count)
            total = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        maps = np.repeat(total[..., None].astype(np.float32), c, axis=-1)
        return MethodOutput(maps, {"window_scores": diffs.astype(np.float32)})


@hookimpl
def register_methods(register):
    register("occlusion", Occlusion, requires=Occlusion.requires,
             description="Occlusion: score drop under a sliding occluding window (Zeiler & Fergus 2014)")
