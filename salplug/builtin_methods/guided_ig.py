"""Guided Integrated Gradients (Kapishnikov et al., CVPR 2021).

The path from the baseline x' to the input x adapts to the model: at step t (of ``steps``)
it must come to L1 distance (1 - (t+1)/steps) * |x - x'|_1 from the input, and gets there by
moving the features with the smallest absolute gradient first. A share ``fraction`` of the
features (those of lowest |gradient|) moves at once, all the way to the step's upper bound
if that is not enough, else by the common ratio that lands exactly on the target distance;
then the next share. Each feature's progress along its own segment stays within
``max_dist`` of the step's progress (t+1)/steps: laggards are pulled up, leaders stopped.
The attribution adds up (change of each feature) * (gradient at the step's start), so it
sums to about f(x) - f(x'). ``max_dist=0`` is IG on the straight line (left Riemann sum).

The path runs in float64; every step makes one model call for a batch of samples.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..errors import ParameterError
from ..hookspecs import hookimpl
from ..types import INPUT_GRADIENTS, Method
from .integrated_gradients import check_steps

EPSILON = 1e-9  # the path has reached a step's target distance when this close to it


def _isclose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Symmetric closeness (like math.isclose) with relative and absolute tolerance EPSILON."""
    return np.abs(a - b) <= np.maximum(EPSILON * np.maximum(np.abs(a), np.abs(b)), EPSILON)


@functools.lru_cache(maxsize=64)
def lower_quantile_index(n: int, fraction: float) -> int:
    """Index of the sorted value that ``np.quantile(..., fraction, method="lower")`` returns."""
    return int(np.quantile(np.arange(n), fraction, method="lower"))


def guided_step(path, attr, grads, start, diff, end, dist_total, step, steps, fraction, max_dist):
    """Advance each row of ``path`` (rows: samples, columns: features) by one Guided IG step.

    ``grads`` are the gradients at the current path points; ``path`` and ``attr`` are
    updated in place. Rows are independent; every operation is vectorised over them.
    """
    alpha = (step + 1.0) / steps
    lo, hi = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
    x_hi = start + diff * hi
    target = dist_total * (1.0 - alpha)
    old = path.copy()
    # Progress of each feature along its own segment (NaN where it has none: never behind);
    # features that fell behind the step's lower bound are pulled up to it.
    with np.errstate(divide="ignore", invalid="ignore"):
        behind = (path - start) / diff < lo
    np.copyto(path, start + diff * lo, where=behind)
    rank = np.abs(grads)  # features with the smallest |gradient| move first
    kth = lower_quantile_index(rank.shape[1], fraction)
    rows = None  # rows still short of this step's target distance (None: all of them)
    while True:
        if rows is None:  # views: marks and moves land in place
            p, top, r, goal = path, x_hi, rank, target
            current = np.abs(p - end).sum(axis=1)
        else:
            p, top, r, goal = path[rows], x_hi[rows], rank[rows], target[rows]
            current = np.abs(p - end[rows]).sum(axis=1)
        done = _isclose(goal, current)
        r[p == top] = np.inf  # features at their upper bound cannot move further
        threshold = np.partition(r, kth, axis=1)[:, kth:kth + 1]  # the fraction-quantile, "lower"
        chosen = (r <= threshold) & (r != np.inf)
        chosen[done] = False
        room = np.where(chosen, np.abs(p - top), 0.0).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            gamma = np.where(room > 0, (current - goal) / room, np.inf)
        # Rows with nothing left to move (or past the goal by rounding) stop here too.
        done |= (room == 0) | (gamma <= 0)
        full = (gamma > 1.0) & ~done  # moving the chosen features all the way is not enough
        share = np.where(full | done, 0.0, gamma)[:, None]
        moved = p + (top - p) * share
        np.copyto(moved, top, where=full[:, None])  # exactly at the bound, so it is seen there
        np.copyto(p, moved, where=chosen)
        if rows is None:  # p was a view of path
            rows = np.flatnonzero(full)
        else:
            path[rows] = p
            rank[rows] = r
            rows = rows[full]
        if not rows.size:
            break
    attr += (path - old) * grads


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value):
        raise ParameterError(f"{name} must be a finite number, got {value!r}.")
    return float(value)


class GuidedIG(Method):
    """Guided Integrated Gradients: an adaptive path that moves low-gradient features first.

    Parameters
    ----------
    baseline : None (zeros), a scalar, an array (one sample or one per sample, in the
        input's layout), or a callable mapping the canonical batch to baselines.
    steps : number of steps (one model call each per batch of samples).
    fraction : share of the features (lowest |gradient|) moved at once, in (0, 1].
    max_dist : how far (as a share of its segment, in [0, 1]) a feature's progress may
        deviate from the straight line's; 0 gives IG on the straight line.
    """

    requires = frozenset({INPUT_GRADIENTS})

    def check(self, ctx, x, targets, *, baseline=None, steps=200, fraction=0.25, max_dist=0.02):
        check_steps(steps)
        if not 0.0 < _number(fraction, "fraction") <= 1.0:
            raise ParameterError(
                f"fraction must be in (0, 1] (the share of features moved at once), got {fraction!r}."
            )
        if not 0.0 <= _number(max_dist, "max_dist") <= 1.0:
            raise ParameterError(
                f"max_dist must be in [0, 1] (0: straight-line IG, 1: unbounded Guided IG), got {max_dist!r}."
            )
        if baseline is not None:
            ctx.as_canonical(baseline, x, "baseline")

    def explain(self, ctx, x, targets, *, baseline=None, steps=200, fraction=0.25, max_dist=0.02):
        n = len(x)
        if baseline is None:
            base = np.broadcast_to(np.zeros((1,) + x.shape[1:], np.float32), x.shape)
        else:
            base = np.broadcast_to(ctx.as_canonical(baseline, x, "baseline"), x.shape)
        attr = np.zeros((n, x[0].size), dtype=np.float64)
        for group in ctx.chunks(n, "guided ig"):
            end = x[group].reshape(-1, attr.shape[1]).astype(np.float64)
            start = base[group].reshape(end.shape).astype(np.float64)
            diff = end - start
            dist_total = np.abs(diff).sum(axis=1)
            live = np.flatnonzero(dist_total > 0)  # a sample equal to its baseline gets zeros
            if not live.size:
                continue
            start, diff, end, dist_total = start[live], diff[live], end[live], dist_total[live]
            members = np.arange(group.start, group.stop)[live]
            rows_targets = targets.take(members)
            path = start.copy()
            out = np.zeros_like(path)
            for step in range(steps):
                points = path.reshape((-1,) + x.shape[1:]).astype(np.float32)
                grads = ctx.adapter.input_gradients(points, rows_targets).reshape(path.shape).astype(np.float64)
                guided_step(path, out, grads, start, diff, end, dist_total, step, steps, fraction, max_dist)
            attr[members] = out
        return attr.reshape(x.shape).astype(np.float32)


@hookimpl
def register_methods(register):
    register("guided_ig", GuidedIG, requires=GuidedIG.requires, aliases=("guidedig",),
             description="Guided Integrated Gradients (Kapishnikov et al. 2021)")
