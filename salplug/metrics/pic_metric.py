"""PIC (SIC and AIC) as a metric plugin, batched through the backend.

The curve is the one of :func:`salplug.metrics.pic.compute_pic_metric` (Kapishnikov et al.,
ICCV 2019) and is built from that module's own pieces (``generate_random_mask``,
``create_blurred_image``, ``reveal``, ``estimate_image_entropy``, ``pic_curve``,
``PicMetricResult``, ``aggregate_individual_pic_results``). The difference is only in how the
model is called: ``compute_pic_metric`` asks ``pred_func`` for one image at a time; here the
original, the fully blurred and every partly revealed image of every sample are collected first
and sent through the adapter in batches of ``ctx.batch_size``; one forward pass gives both the
softmax (SIC; the outputs as they are when the model already outputs probabilities) and the
correctness of the top-1 class (AIC).

The random mask of an image derives from the evaluation's seed and the image's content, so it
is the same for every method compared (as the paper requires). Images that cannot be scored
(prediction below ``min_pred_value``, or blurring removes neither information nor prediction)
get NaN and their reason in ``extras["skipped"]``.
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
    sample_rng,
    saliency_2d,
)

#: Saliency thresholds of the upstream PIC example (fractions of the most salient pixels revealed).
DEFAULT_THRESHOLDS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.10, 0.13, 0.21, 0.34, 0.5, 0.75)
KINDS = ("sic", "aic")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """An image in [0, 1] as uint8 (what ``compute_pic_metric`` takes)."""
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


class PIC(Metric):
    """Softmax and Accuracy Information Curves (SIC, AIC); higher is better.

    Parameters
    ----------
    thresholds : ascending fractions of the most salient pixels to reveal.
    fraction : share of pixels every blurred image keeps at random (``generate_random_mask``).
    min_pred_value : images whose prediction (softmax for SIC, 0/1 for AIC) is below are skipped.
    keep_monotonous : make each curve non-decreasing (as in the paper).
    num_data_points : curve points before the last one at x = 1.
    reduce : maps with channels to one value per pixel ("abs", "sum", "max", "none").
    aggregate : "median" or "mean": how ``summary`` combines the curves of all images before
        taking the area (the paper reports the median curve's AUC).
    keep_images : keep the blurred images in ``extras["results"]`` (memory heavy).
    """

    requires = frozenset({SCORES})

    def check(self, ctx: MetricContext, x, targets, *, thresholds=DEFAULT_THRESHOLDS, fraction: float = 0.01,
              min_pred_value: float = 0.8, keep_monotonous: bool = True, num_data_points: int = 1000,
              reduce: str = "abs", aggregate: str = "median", keep_images: bool = False) -> None:
        try:
            t = np.asarray(thresholds, dtype=np.float64) if not isinstance(thresholds, str) else np.array([np.nan])
        except (TypeError, ValueError):  # strings, ragged lists: refused below
            t = np.array([np.nan])
        if t.ndim != 1 or t.size == 0 or not np.isfinite(t).all() or (t <= 0).any() or (t >= 1).any() \
                or (np.diff(t) <= 0).any():
            raise ParameterError(f"thresholds must be an ascending list of fractions in (0, 1); got {thresholds!r}.")
        check_number(fraction, "fraction", 0.0, 1.0)
        check_number(min_pred_value, "min_pred_value")
        check_int(num_data_points, "num_data_points", 2)
        check_choice(reduce, REDUCTIONS, "reduce")
        check_choice(aggregate, ("median", "mean"), "aggregate")
        check_score("softmax", targets)
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise ParameterError(f"PIC needs RGB or grayscale images (N, H, W, 3 or 1) in [0, 1]; got shape {x.shape}.")
        if x.size and (x.min() < -1e-6 or x.max() > 1 + 1e-6):
            raise ParameterError(
                f"PIC measures information in 8-bit images: give the images in [0, 1] (or uint8) and the "
                f"model's normalisation as preprocess=; these images span [{x.min():.3g}, {x.max():.3g}].")

    def evaluate(self, ctx: MetricContext, x, targets, attributions, *, thresholds=DEFAULT_THRESHOLDS,
                 fraction: float = 0.01, min_pred_value: float = 0.8, keep_monotonous: bool = True,
                 num_data_points: int = 1000, reduce: str = "abs", aggregate: str = "median",
                 keep_images: bool = False) -> MetricResult:
        from .pic import (
            ComputePicMetricError,
            PicMetricResult,
            aggregate_individual_pic_results,
            create_blurred_image,
            estimate_image_entropy,
            generate_random_mask,
            pic_curve,
            reveal,
        )

        x = np.asarray(x, np.float32)
        n, h, w = x.shape[:3]
        thresholds = [float(t) for t in thresholds]
        saliency = saliency_2d(attributions, x, reduce)
        gray = x.shape[-1] == 1

        # 1. the images: original, fully blurred (cached across methods), one per threshold
        images = []  # per sample: list of uint8 images
        entropies = np.empty((n, len(thresholds) + 2), np.float64)
        samples = range(n)
        if ctx.progress and n > 1:
            from tqdm.auto import tqdm

            samples = tqdm(samples, desc="pic: blurring", unit="image", leave=False)
        for i in samples:
            img = to_uint8(x[i][..., 0] if gray else x[i])
            # keyed on the float image the mask is drawn from (two can share one 8-bit form)
            key = ("pic", np.ascontiguousarray(x[i]).tobytes(), float(fraction), int(ctx.seed))
            if key not in ctx.cache:
                mask = generate_random_mask(h, w, fraction=fraction, seed=sample_rng(ctx.seed, x[i], "pic-mask"))
                blurred = create_blurred_image(full_img=img, pixel_mask=mask)
                ctx.cache[key] = (mask, blurred, estimate_image_entropy(img), estimate_image_entropy(blurred))
            mask, blurred, e_orig, e_blur = ctx.cache[key]
            row = [img, blurred]
            ent = [e_orig, e_blur]
            for t in thresholds:
                image = reveal(img, saliency[i], mask, t)
                row.append(image)
                ent.append(estimate_image_entropy(image))
            images.append(row)
            entropies[i] = ent

        # 2. every prediction, batched: rows are sample-major
        per = len(thresholds) + 2
        probs = np.empty(n * per, np.float64)
        correct = np.empty(n * per, np.float64)
        for rows in ctx.chunks(n * per, "pic"):
            r = np.arange(rows.start, rows.stop)
            s, k = r // per, r % per
            batch = np.stack([images[a][b] for a, b in zip(s, k)]).astype(np.float32) / 255.0
            if gray:
                batch = batch[..., None]
            logits = np.asarray(ctx.adapter.outputs(ctx.model_input(batch)), np.float64).reshape(len(r), -1)
            idx = targets.indices[s]
            probs[rows] = ctx.class_probabilities(logits)[np.arange(len(r)), idx]
            correct[rows] = (logits.argmax(axis=1) == idx).astype(np.float64)
        probs, correct = probs.reshape(n, per), correct.reshape(n, per)

        # 3. the curves
        scores = {kind: np.full(n, np.nan) for kind in KINDS}
        curves = {kind: np.full((n, num_data_points + 1), np.nan) for kind in KINDS}
        results: dict[str, list[Any]] = {kind: [None] * n for kind in KINDS}
        skipped: dict[str, dict[int, str]] = {kind: {} for kind in KINDS}
        curve_x = None
        for kind, preds in (("sic", probs), ("aic", correct)):
            for i in range(n):
                try:
                    cx, cy, area = pic_curve(entropies[i], preds[i], min_pred_value=min_pred_value,
                                             keep_monotonous=keep_monotonous, num_data_points=num_data_points)
                except ComputePicMetricError as exc:
                    skipped[kind][i] = str(exc)
                    continue
                curve_x = cx
                scores[kind][i], curves[kind][i] = area, cy
                results[kind][i] = PicMetricResult(
                    curve_x=cx, curve_y=cy, blurred_images=[images[i][1], *images[i][2:], images[i][0]]
                    if keep_images else [], predictions=[preds[i][1], *preds[i][2:], preds[i][0]],
                    thresholds=[0.0, *thresholds, 1.0], auc=area)
        if curve_x is None:
            curve_x = np.append(np.linspace(0.0, 1.0, num=num_data_points, endpoint=False), 1.0)
        summary = {}
        for kind in KINDS:
            done = [r for r in results[kind] if r is not None]
            if done:
                summary[f"{kind}_{aggregate}_curve_auc"] = float(aggregate_individual_pic_results(done, aggregate).auc)
        return MetricResult(
            scores=scores,
            higher_is_better={kind: True for kind in KINDS},
            curves={kind: Curve(curve_x, curves[kind], "normalized estimation of entropy",
                                "normalized " + ("softmax" if kind == "sic" else "accuracy")) for kind in KINDS},
            summary=summary,
            extras={"skipped": skipped, "results": results, "entropies": entropies,
                    "predictions": {"softmax": probs, "correct": correct}},
        )
