"""The metric protocol: what a metric plugin receives and returns.

A metric scores saliency maps against the model that produced them. It is a class with

- ``requires``: the adapter capabilities it uses (``"scores"`` for all that only run the model);
- ``needs_method``: True when it recomputes the maps itself (the randomisation sanity check),
  so it reads ``ctx.method_name`` and ``ctx.method_params``;
- ``check(self, ctx, x, targets, **params)`` (optional): validate parameter values before any
  model call, raising :class:`~salplug.errors.ParameterError`;
- ``evaluate(self, ctx, x, targets, attributions, **params) -> MetricResult``.

``x`` holds the images as the metric perturbs them (canonical float32 (N, H, W, C), usually
RGB in [0, 1]); ``ctx.model_input(images)`` turns any batch of such images into model input
(the user's ``preprocess``). ``attributions`` are the maps being scored, canonical (N, H, W) or
(N, H, W, C'). Metrics batch every model call through ``ctx.chunks`` and draw every random
choice from ``ctx.seed``. Class probabilities come from ``ctx.class_probabilities(outputs)``:
softmax of the outputs, or the outputs as they are when the model already outputs probabilities
(``ctx.probabilities``, decided once per evaluation). This module imports numpy only.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import InputError, ParameterError
from ..types import SCORES, Context, Targets

__all__ = ["PROBABILITY_TOLERANCE", "Curve", "Metric", "MetricContext", "MetricResult", "REDUCTIONS", "SCORE_KINDS",
           "are_probabilities", "check_choice", "check_int", "check_number", "check_score", "predict", "rank_pixels",
           "sample_rng", "saliency_2d", "softmax"]

#: How a map with channels becomes one value per pixel.
REDUCTIONS = ("abs", "sum", "max", "none")

#: What a metric reads from the model: the class probability, or the explained score itself.
SCORE_KINDS = ("softmax", "logit")

#: How far from 1 a row of outputs may sum and still count as probabilities.
PROBABILITY_TOLERANCE = 1e-3


@dataclass
class Curve:
    """Per-sample curves on a shared x axis.

    ``x`` is (P,), ``y`` is (N, P) (a row of NaN for a sample that was not scored). ``ticks``
    optionally names the x positions (layer names, say).
    """

    x: np.ndarray
    y: np.ndarray
    xlabel: str = ""
    ylabel: str = ""
    ticks: list[str] | None = None

    def mean(self) -> np.ndarray:
        """The mean curve over the scored samples (NaN rows ignored)."""
        y = np.asarray(self.y, np.float64)
        ok = ~np.isnan(y).all(axis=1)
        return y[ok].mean(axis=0) if ok.any() else np.full(y.shape[1], np.nan)


@dataclass
class MetricResult:
    """What a metric returns for one method on N samples.

    scores : name -> (N,) one value per sample (NaN where a sample could not be scored).
    higher_is_better : name -> whether a larger value means a better map.
    curves : name -> :class:`Curve` (optional), plotted per method.
    summary : name -> one number over all samples beyond mean and spread (optional, e.g. the
        AUC of the median PIC curve, which is what the XRAI paper reports).
    extras : anything else (skipped samples and why, per-layer details, ...).
    """

    scores: dict[str, np.ndarray]
    higher_is_better: dict[str, bool]
    curves: dict[str, Curve] = field(default_factory=dict)
    summary: dict[str, float] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class MetricContext(Context):
    """A :class:`~salplug.types.Context` plus what metrics need.

    preprocess : canonical image batch -> canonical model input (None: the images are the input).
    method_name, method_params : the method whose maps are scored (for metrics that recompute maps).
    seed : the evaluation's seed; every random choice derives from it.
    cache : shared across the methods of one evaluation (e.g. PIC's fully blurred images).
    probabilities : the model's outputs are already class probabilities (see
        :func:`are_probabilities`): metrics use them without another softmax.
    """

    preprocess: Callable[[np.ndarray], np.ndarray] | None = None
    method_name: str | None = None
    method_params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    cache: dict[Any, Any] = field(default_factory=dict)
    probabilities: bool = False

    def class_probabilities(self, outputs: Any) -> np.ndarray:
        """Class probabilities (N, classes) float64 from model outputs: softmax, unless
        ``self.probabilities`` (then the outputs as they are)."""
        z = np.asarray(outputs, np.float64)
        z = z.reshape(len(z), -1)
        return z if self.probabilities else softmax(z)

    def model_input(self, images: np.ndarray) -> np.ndarray:
        """The model input for a canonical batch of images (float32)."""
        if self.preprocess is None:
            return np.asarray(images, dtype=np.float32)
        return np.asarray(self.preprocess(np.asarray(images, dtype=np.float32)), dtype=np.float32)


class Metric:
    """Base class of metrics (optional: the protocol is duck-typed)."""

    requires: ClassVar[frozenset[str]] = frozenset({SCORES})
    needs_method: ClassVar[bool] = False

    def check(self, ctx: MetricContext, x: np.ndarray, targets: Targets, **params: Any) -> None:
        """Validate parameters before any model call (default: nothing to check)."""

    def evaluate(self, ctx: MetricContext, x: np.ndarray, targets: Targets, attributions: np.ndarray,
                 **params: Any) -> MetricResult:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# Helpers shared by the built-in metrics
# ---------------------------------------------------------------------------------------------

def check_choice(value: Any, choices: tuple[str, ...], name: str) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ParameterError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}.")


def check_int(value: Any, name: str, minimum: int = 1) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ParameterError(f"{name} must be an int >= {minimum}; got {value!r}.")


def check_number(value: Any, name: str, low: float | None = None, high: float | None = None,
                 *, low_open: bool = False) -> None:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)) \
        and np.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        span = f" in {'(' if low_open else '['}{low}, {high}]" if low is not None and high is not None else \
            (f" > {low}" if low_open else f" >= {low}") if low is not None else ""
        raise ParameterError(f"{name} must be a finite number{span}; got {value!r}.")


def saliency_2d(attributions: Any, x: np.ndarray, reduce: str = "abs") -> np.ndarray:
    """One value per pixel, (N, H, W) float64, from maps (N, H, W) or (N, H, W, C').

    reduce : "abs" sums absolute values over channels (the grayscale view of upstream
        ``saliency``), "sum" sums signed values, "max" takes the channel maximum, "none"
        requires (N, H, W) or one channel.
    """
    a = np.asarray(attributions, dtype=np.float64)
    n, h, w = x.shape[:3]
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4 or a.shape[:3] != (n, h, w):
        raise InputError(f"The maps have shape {a.shape}; a metric needs one map per image of the images' "
                         f"height and width: ({n}, {h}, {w}) or ({n}, {h}, {w}, channels).")
    if not np.isfinite(a).all():
        raise InputError("The maps contain NaN or infinite values.")
    if reduce == "abs":
        return np.abs(a).sum(axis=-1)
    if reduce == "sum":
        return a.sum(axis=-1)
    if reduce == "max":
        return a.max(axis=-1)
    if reduce == "none":
        if a.shape[-1] != 1:
            raise InputError(f"reduce='none' needs maps with one channel; got {a.shape[-1]}.")
        return a[..., 0]
    raise ParameterError(f"reduce must be one of {REDUCTIONS}; got {reduce!r}.")


def sample_rng(seed: int, image: np.ndarray, salt: str = "") -> np.random.Generator:
    """A generator seeded by ``seed`` and the image's content (and ``salt``).

    The same image gets the same draws whatever batch it is in, and another image other draws.
    """
    digest = zlib.crc32(np.ascontiguousarray(image, dtype=np.float32).tobytes())
    return np.random.default_rng([int(seed), digest, zlib.crc32(salt.encode())])  # any int >= 0, whole


def rank_pixels(saliency: np.ndarray, x: np.ndarray, seed: int) -> np.ndarray:
    """Rank of each pixel, 0 for the most salient, (N, H*W) int; ties broken at random (seeded)."""
    n = len(saliency)
    flat = saliency.reshape(n, -1)
    ties = np.stack([sample_rng(seed, x[i], "ties").random(flat.shape[1]) for i in range(n)])
    order = np.lexsort((ties, -flat), axis=-1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None].repeat(n, 0), axis=-1)
    return ranks


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def are_probabilities(outputs: Any, tolerance: float = PROBABILITY_TOLERANCE) -> bool:
    """True when every row of (N, classes) outputs, classes >= 2, is non-negative and sums to 1
    within ``tolerance`` (a model ending in softmax, like the keras.applications models)."""
    z = np.asarray(outputs, np.float64)
    if z.ndim < 1 or len(z) == 0:
        return False
    z = z.reshape(len(z), -1)
    return bool(z.shape[1] >= 2 and np.isfinite(z).all() and (z >= 0).all()
                and (np.abs(z.sum(axis=1) - 1.0) <= tolerance).all())


def predict(ctx: MetricContext, images: np.ndarray, targets: Targets, score: str) -> np.ndarray:
    """The model's value for each row's target on a batch of images (one model call), float64.

    score : "softmax" (the class probability, :meth:`MetricContext.class_probabilities`; needs
        class targets) or "logit" (the explained score the methods use, ``adapter.scores``).
    """
    inputs = ctx.model_input(images)
    if score == "logit":
        return np.asarray(ctx.adapter.scores(inputs, targets), np.float64).reshape(len(images))
    probs = ctx.class_probabilities(np.asarray(ctx.adapter.outputs(inputs), np.float64).reshape(len(images), -1))
    return probs[np.arange(len(images)), targets.indices]


def check_score(score: Any, targets: Targets | None) -> None:
    check_choice(score, SCORE_KINDS, "score")
    if score == "softmax" and targets is not None and targets.indices is None:
        raise ParameterError("score='softmax' needs class targets (indices); this model's targets are a "
                             "callable or its own scalar output. Use score='logit'.")
