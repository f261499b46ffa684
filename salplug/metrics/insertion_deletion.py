"""Insertion and Deletion (Petsiuk et al., RISE, BMVC 2018).

Pixels are ranked by saliency, most salient first. *Deletion* replaces them, ``n_k`` at a
time, by a baseline (black by default) in the original image; *insertion* puts them, in the
same order, into a baseline image (a blurred copy by default). At each of ``steps + 1`` points
(0, 1/steps, ..., all pixels) the model's probability for the explained class is read; the
score is the area under that curve over the fraction of pixels changed (trapezoid rule). A good
map has a high insertion AUC (the class comes back fast) and a low deletion AUC (it goes fast).

Every perturbed image of every sample is one row of a sample-major job packed into model
batches of ``ctx.batch_size``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ParameterError
from ..types import SCORES
from .base import (
    REDUCTIONS,
    Curve,
    Metric,
    MetricContext,
    MetricResult,
    check_choice,
    check_int,
    check_number,
    check_score,
    predict,
    rank_pixels,
    saliency_2d,
)

BASELINES = ("blur", "black", "white", "mean")


def make_baseline(x: np.ndarray, baseline: Any, sigma: float) -> np.ndarray:
    """The substrate images, canonical like ``x``: "blur" (Gaussian over H and W with ``sigma``),
    "black" (0), "white" (1), "mean" (each image's mean colour), a number, or an array that
    broadcasts to ``x`` (one image or one per image, channels last)."""
    if isinstance(baseline, str):
        if baseline == "blur":
            from scipy.ndimage import gaussian_filter

            return gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="nearest").astype(np.float32)
        if baseline == "black":
            return np.zeros_like(x)
        if baseline == "white":
            return np.ones_like(x)
        if baseline == "mean":
            return np.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape).astype(np.float32)
    return np.broadcast_to(np.asarray(baseline, np.float32), x.shape).astype(np.float32)


def check_baseline(baseline: Any, x: np.ndarray, name: str = "baseline") -> None:
    if isinstance(baseline, str):
        check_choice(baseline, BASELINES, name)
        return
    if isinstance(baseline, (bool, np.bool_)):
        raise ParameterError(f"{name} must be one of {BASELINES}, a number or an array; got {baseline!r}.")
    try:
        arr = np.asarray(baseline, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be one of {BASELINES}, a number or an array; got "
                             f"{type(baseline).__name__}.") from None
    try:
        np.broadcast_shapes(arr.shape, x.shape)
    except ValueError:
        raise ParameterError(f"{name} of shape {arr.shape} does not broadcast to the images {x.shape} "
                             f"(canonical, channels last).") from None
    if not np.isfinite(arr).all():
        raise ParameterError(f"{name} contains NaN or infinite values.")


def pixel_counts(pixels: int, steps: int) -> np.ndarray:
    """Pixels changed at each of the ``steps + 1`` curve points: round(k * pixels / steps)."""
    return np.round(np.arange(steps + 1) * pixels / steps).astype(np.int64)


def auc(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Trapezoid area under each row of ``y`` over ``x``."""
    return np.trapezoid(y, x, axis=-1)


class _PixelCurve(Metric):
    """Insertion or deletion; see the module docstring.

    Parameters
    ----------
    steps : curve points after the start (each changes about H*W/steps pixels).
    baseline : substrate: "blur", "black", "white", "mean", a number or an array.
    sigma : Gaussian blur sigma in pixels for baseline="blur".
    reduce : maps with channels to one value per pixel: "abs" (sum of |values|), "sum", "max",
        "none".
    score : "softmax" (class probability, as in the paper) or "logit" (the explained score).
    """

    requires = frozenset({SCORES})
    mode = ""
    default_baseline = "black"

    def check(self, ctx: MetricContext, x, targets, *, steps: int = 100, baseline: Any = None, sigma: float = 5.0,
              reduce: str = "abs", score: str = "softmax") -> None:
        check_int(steps, "steps")
        check_baseline(self.default_baseline if baseline is None else baseline, x)
        check_number(sigma, "sigma", 0.0, None, low_open=True)
        check_choice(reduce, REDUCTIONS, "reduce")
        check_score(score, targets)

    def evaluate(self, ctx: MetricContext, x, targets, attributions, *, steps: int = 100, baseline: Any = None,
                 sigma: float = 5.0, reduce: str = "abs", score: str = "softmax") -> MetricResult:
        x = np.asarray(x, np.float32)
        n, h, w = x.shape[:3]
        saliency = saliency_2d(attributions, x, reduce)
        ranks = rank_pixels(saliency, x, ctx.seed).reshape(n, h, w, 1)
        base = make_baseline(x, self.default_baseline if baseline is None else baseline, float(sigma))
        counts = pixel_counts(h * w, steps)
        points = steps + 1
        curve = np.empty(n * points, np.float64)
        insert = self.mode == "insertion"
        for rows in ctx.chunks(n * points, self.mode):
            r = np.arange(rows.start, rows.stop)
            samples, k = r // points, r % points
            changed = ranks[samples] < counts[k].reshape(-1, 1, 1, 1)
            if insert:
                batch = np.where(changed, x[samples], base[samples])
            else:
                batch = np.where(changed, base[samples], x[samples])
            curve[rows] = predict(ctx, batch, targets.take(samples), score)
        curve = curve.reshape(n, points)
        fractions = counts / float(h * w)
        ylabel = "class probability" if score == "softmax" else "score"
        return MetricResult(
            scores={self.mode: auc(curve, fractions)},
            higher_is_better={self.mode: insert},
            curves={self.mode: Curve(fractions, curve, "fraction of pixels " + ("inserted" if insert else "deleted"),
                                     ylabel)},
            extras={"params": {"steps": steps, "baseline": baseline if isinstance(baseline, (str, type(None)))
                               else "array", "sigma": sigma, "reduce": reduce, "score": score}},
        )


class Insertion(_PixelCurve):
    __doc__ = _PixelCurve.__doc__.replace("Insertion or deletion", "Insertion: AUC as the most salient "
                                          "pixels are put into a blurred image (higher is better)")
    mode = "insertion"
    default_baseline = "blur"


class Deletion(_PixelCurve):
    __doc__ = _PixelCurve.__doc__.replace("Insertion or deletion", "Deletion: AUC as the most salient "
                                          "pixels are replaced by black (lower is better)")
    mode = "deletion"
    default_baseline = "black"
