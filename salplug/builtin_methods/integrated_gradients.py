"""Integrated Gradients (Sundararajan et al. 2017).

attribution = (x - x') * sum_k w_k * grad f(x' + a_k (x - x')), with the path points a_k and
weights w_k of a quadrature rule. The default rule is upstream ``saliency``'s: a_k =
linspace(0, 1, steps) with both ends, each weighted 1/steps.
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError
from ..hookspecs import hookimpl
from ..types import INPUT_GRADIENTS, Method
from ._rows import add_by_sample, batch_index, broadcast_rows, sample_and_step

RULES = ("riemann", "left", "right", "middle", "trapezoid", "gausslegendre")


def quadrature(steps: int, rule: str = "riemann") -> tuple[np.ndarray, np.ndarray]:
    """Path points ``alphas`` in [0, 1] and their ``weights`` (summing to 1) for ``rule``."""
    k = np.arange(steps, dtype=np.float64)
    if rule == "riemann":  # upstream saliency: both ends included, equal weights
        return np.linspace(0.0, 1.0, steps), np.full(steps, 1.0 / steps)
    if rule in ("left", "right", "middle"):
        offset = {"left": 0.0, "right": 1.0, "middle": 0.5}[rule]
        return (k + offset) / steps, np.full(steps, 1.0 / steps)
    if rule == "trapezoid":
        if steps < 2:
            raise ParameterError("The trapezoid rule needs steps >= 2.")
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2
        return np.linspace(0.0, 1.0, steps), weights
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (nodes + 1) / 2, weights / 2
    raise ParameterError(f"Unknown rule {rule!r}; use one of {', '.join(RULES)}.")


def check_steps(steps, name: str = "steps") -> None:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ParameterError(f"{name} must be a positive int, got {steps!r}.")


def path_gradient_sums(ctx, x: np.ndarray, baseline: np.ndarray, targets, alphas: np.ndarray,
                       weights: np.ndarray, desc: str = "integrated gradients", *, keep: bool = False):
    """sum_k w_k * grad f(x' + a_k (x - x')) per sample, packed in batches of ctx.batch_size.

    Numpy in and out; on an adapter that keeps work on its device (``ctx.on_device``) the path
    points, gradients and sums stay there, and only ``x - x'`` and the sums cross over (with
    ``keep``, the float64 sums come back as the device array, nothing crosses)."""
    steps = len(alphas)
    zero_base = not np.any(baseline)
    diff = ctx.to_device(x if zero_base else (x - baseline).astype(np.float32, copy=False))
    base = None if zero_base else ctx.to_device(np.ascontiguousarray(baseline, dtype=np.float32))
    total = ctx.zeros(x.shape, np.float64)
    shape = (-1,) + (1,) * (x.ndim - 1)
    alphas32 = ctx.to_device(alphas.astype(np.float32))
    uniform = bool(np.all(weights == weights[0]))  # then weigh the sums once, at the end
    step_weights = None if uniform else ctx.to_device(weights)
    for rows in ctx.chunks(len(x) * steps, desc):
        samples, k = sample_and_step(rows, steps)
        at, k_at = batch_index(ctx, samples, k)  # indices where the arrays are
        points = diff[at] * alphas32[k_at].reshape(shape)  # a fresh float32 array
        if base is not None:
            points += broadcast_rows(base, at)
        grads = ctx.adapter.input_gradients(points, targets.take(samples))
        add_by_sample(total, samples, grads if uniform else grads * step_weights[k_at].reshape(shape))
        del points, grads  # before the next batch is built: peak memory is one batch's worth
    if uniform:
        total *= weights[0]
    return total if keep else ctx.to_numpy(total)


class IntegratedGradients(Method):
    """Integrated Gradients along the straight path from ``baseline`` to the input.

    Parameters
    ----------
    baseline : None (zeros), a scalar, an array (one sample or one per sample, in the
        input's layout), or a callable mapping the canonical batch to baselines.
    steps : number of path points.
    rule : "riemann" (upstream), "left", "right", "middle", "trapezoid", "gausslegendre".
    """

    requires = frozenset({INPUT_GRADIENTS})

    def check(self, ctx, x, targets, *, baseline=None, steps=25, rule="riemann"):
        check_steps(steps)
        quadrature(steps, rule)
        if baseline is not None:
            ctx.as_canonical(baseline, x, "baseline")

    def explain(self, ctx, x, targets, *, baseline=None, steps=25, rule="riemann"):
        base = np.zeros((1,) + x.shape[1:], np.float32) if baseline is None else ctx.as_canonical(baseline, x, "baseline")
        base = np.broadcast_to(base, (base.shape[0],) + x.shape[1:])
        alphas, weights = quadrature(steps, rule)
        grads = path_gradient_sums(ctx, x, base, targets, alphas, weights, keep=True)
        if isinstance(grads, np.ndarray):
            return ((x - base) * grads).astype(np.float32)
        # on the device: x - x' is there already for a zero baseline (the caller's tensor)
        diff = ctx.to_device(x if not np.any(base) else (x - base).astype(np.float32))
        return ctx.astype(diff * grads, np.float32)


@hookimpl
def register_methods(register):
    register("integrated_gradients", IntegratedGradients, requires=IntegratedGradients.requires,
             aliases=("ig", "integratedgradients"),
             description="Integrated Gradients (Sundararajan et al. 2017)")
