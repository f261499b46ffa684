"""Guided IG: exact results on analytic models, a loop reference, upstream, batching, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import salplug
from conftest import (counting, linear_call_model_function, make_cnn, quadratic_call_model_function,
                      torch_call_model_function)
from salplug.errors import ParameterError


def reference_guided_ig(x, baseline, grad_fn, steps, fraction, max_dist):
    """Guided IG for one input, written as plain loops over steps and features.

    The path is float64; the model sees it as float32, as salplug's backends pass it.
    """
    shape = np.shape(x)
    x = np.asarray(x, np.float64).ravel()
    start = np.asarray(baseline, np.float64).ravel()
    d = x - start
    n = len(x)
    total = np.abs(d).sum()
    path = start.copy()
    attr = np.zeros(n)
    if total == 0:
        return attr
    for t in range(steps):
        grad = np.asarray(grad_fn(path.reshape(shape).astype(np.float32)), np.float64).ravel()
        alpha = (t + 1) / steps
        lo, hi = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
        target = total * (1 - alpha)
        frozen = [False] * n
        for j in range(n):  # pull features that fell behind up to the step's lower bound
            if d[j] != 0 and (path[j] - start[j]) / d[j] < lo:
                attr[j] += (start[j] + d[j] * lo - path[j]) * grad[j]
                path[j] = start[j] + d[j] * lo
        while True:
            current = sum(abs(path[j] - x[j]) for j in range(n))
            if math.isclose(current, target, rel_tol=1e-9, abs_tol=1e-9):
                break
            top = [start[j] + d[j] * hi for j in range(n)]
            for j in range(n):
                frozen[j] = frozen[j] or path[j] == top[j]
            rank = sorted(math.inf if frozen[j] else abs(grad[j]) for j in range(n))
            threshold = rank[int(math.floor(fraction * (n - 1)))]
            chosen = [j for j in range(n) if not frozen[j] and abs(grad[j]) <= threshold]
            room = sum(abs(path[j] - top[j]) for j in chosen)
            gamma = (current - target) / room if room > 0 else math.inf
            for j in chosen:
                new = top[j] if gamma > 1 else path[j] + (top[j] - path[j]) * gamma
                attr[j] += (new - path[j]) * grad[j]
                path[j] = new
            if gamma <= 1:
                break
    return attr


def analytic(w, v):
    """Gradient and call_model_function of f(x) = sum(w x + v x^2)."""
    grad = lambda z: w + 2 * v * z  # noqa: E731

    def call(x_batch, call_model_args=None, expected_keys=None):
        return {"INPUT_OUTPUT_GRADIENTS": grad(np.asarray(x_batch, np.float64))}

    return grad, call


# -- exact results on analytic models ------------------------------------------------------

@pytest.mark.parametrize("equal_weights", [True, False])
def test_linear_model_gives_weight_times_displacement(equal_weights):
    # The gradient of a linear f is w everywhere, and every feature's path ends at its input
    # value, so Guided IG gives exactly w_i (x_i - x'_i) whatever order features move in.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 5, 3)).astype(np.float32)
    w = rng.choice([-1.5, 1.5], size=x.shape[1:]) if equal_weights else rng.normal(size=x.shape[1:])
    baseline = rng.normal(size=x.shape[1:]).astype(np.float32)
    attr = salplug.explain(linear_call_model_function(w), x, "guided_ig", backend="callable",
                           baseline=baseline, steps=20).values
    expected = w * (x.astype(np.float64) - baseline)
    np.testing.assert_allclose(attr, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(attr.sum(axis=(1, 2, 3)), expected.sum(axis=(1, 2, 3)), rtol=1e-6)


@pytest.mark.parametrize("fraction,max_dist", [(0.25, 0.02), (0.1, 0.3), (1.0, 0.05), (0.5, 1.0)])
def test_quadratic_matches_loop_reference_and_completeness(fraction, max_dist):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 4, 4, 2))
    x[1, 0, 0, 0] = 0.0  # a feature equal to its baseline
    x = x.astype(np.float32)
    w, v = rng.normal(size=x.shape[1:]), rng.normal(size=x.shape[1:])
    grad, call = analytic(w, v)
    steps = 15
    attr = salplug.explain(call, x, "guided_ig", backend="callable", steps=steps, fraction=fraction,
                           max_dist=max_dist, batch_size=2).values
    for i in range(len(x)):
        ref = reference_guided_ig(x[i], np.zeros_like(x[i]), grad, steps, fraction, max_dist)
        np.testing.assert_allclose(attr[i].ravel(), ref, rtol=1e-5, atol=1e-6)
    # Completeness: each feature moves monotonically from 0 to x_i, and along its own path
    # sum_k 2 v x_k dx_k = v x^2 - v sum_k dx_k^2; a feature's progress moves at most
    # 1/steps + 2 max_dist per step, so |sum(attr) - (f(x) - f(0))| <= that * sum |v| x^2.
    xd = x.astype(np.float64)
    f = (w * xd + v * xd**2).sum(axis=(1, 2, 3))
    bound = (1 / steps + 2 * max_dist) * (np.abs(v) * xd**2).sum(axis=(1, 2, 3))
    assert np.all(np.abs(attr.sum(axis=(1, 2, 3), dtype=np.float64) - f) <= bound + 1e-5)


def test_all_features_together_is_straight_line_left_riemann():
    # With max_dist = 1 and fraction = 1 every feature moves together in each step, so the
    # path is the straight line and Guided IG is IG with a left Riemann sum of `steps`
    # points: for f = sum(v x^2) it is v x^2 (1 - 1/steps) per feature, exactly.
    x = np.random.default_rng(2).normal(size=(1, 3, 3, 1)).astype(np.float32)
    v = np.random.default_rng(3).normal(size=x.shape[1:])
    steps = 8
    attr = salplug.explain(quadratic_call_model_function(v), x, "guided_ig", backend="callable",
                           steps=steps, fraction=1.0, max_dist=1.0).values
    np.testing.assert_allclose(attr, v * x.astype(np.float64) ** 2 * (1 - 1 / steps), rtol=1e-6, atol=1e-9)


def test_max_dist_zero_is_left_riemann_integrated_gradients():
    model = make_cnn()
    x = np.random.default_rng(4).random((2, 12, 12, 3)).astype(np.float32)
    gig = salplug.explain(model, x, "guided_ig", target=[3, 6], steps=10, max_dist=0).values
    ig = salplug.explain(model, x, "integrated_gradients", target=[3, 6], steps=10, rule="left").values
    np.testing.assert_allclose(gig, ig, rtol=0, atol=1e-5 * np.abs(ig).max())


# -- agreement with upstream saliency ------------------------------------------------------

@pytest.fixture
def upstream(monkeypatch):
    """Upstream's GuidedIG calls np.quantile(interpolation=...), which NumPy 2 removed; map it."""
    core = pytest.importorskip("saliency.core")
    quantile = np.quantile

    def patched(*args, interpolation=None, **kwargs):
        if interpolation is not None:
            kwargs["method"] = interpolation
        return quantile(*args, **kwargs)

    monkeypatch.setattr(np, "quantile", patched)
    return core


@pytest.mark.parametrize("params", [
    dict(steps=25), dict(steps=20, fraction=0.1, max_dist=0.2), dict(steps=12, fraction=0.5, max_dist=1.0),
    dict(steps=15, baseline=0.5),
])
def test_agrees_with_upstream(upstream, params):
    # Same model, same float64 path fed to the model as float32 at batch size 1: results
    # agree to float32 output rounding (max diff <= 1e-5 * max |attr|).
    model = make_cnn()
    x = np.random.default_rng(5).random((14, 14, 3)).astype(np.float32)
    up = dict(params)
    up["x_steps"] = up.pop("steps")
    if "baseline" in up:
        up["x_baseline"] = np.full(x.shape, up.pop("baseline"))
    expected = upstream.GuidedIG().GetMask(x, torch_call_model_function(model, 4), **up)
    ours = salplug.explain(model, x, "guided_ig", target=4, **params).values
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


# -- batching and targets ------------------------------------------------------------------

def test_per_sample_targets_batch_equals_singles():
    model = make_cnn()
    x = np.random.default_rng(6).random((3, 12, 12, 3)).astype(np.float32)
    targets = [1, 4, 7]
    batch = salplug.explain(model, x, "guided_ig", target=targets, steps=20, batch_size=2).values
    singles = np.stack([salplug.explain(model, x[i], "guided_ig", target=t, steps=20).values
                        for i, t in enumerate(targets)])
    np.testing.assert_allclose(batch, singles, rtol=0, atol=1e-5 * np.abs(singles).max())
    assert not np.allclose(singles[0], salplug.explain(model, x[0], "guided_ig", target=2, steps=20).values)


def test_one_model_call_per_step_per_batch():
    fn, calls = counting(linear_call_model_function(np.ones((4, 4, 1))))
    x = np.random.default_rng(7).random((5, 4, 4, 1)).astype(np.float32)
    salplug.explain(fn, x, "guided_ig", backend="callable", steps=7, batch_size=8)
    assert calls == [5] * 7
    calls.clear()
    salplug.explain(fn, x, "guided_ig", backend="callable", steps=7, batch_size=2)
    assert len(calls) == 21 and sum(calls) == 35


def test_input_equal_to_baseline_gets_zeros_without_model_work():
    w = np.random.default_rng(8).normal(size=(4, 4, 1))
    fn, calls = counting(linear_call_model_function(w))
    x = np.random.default_rng(9).random((2, 4, 4, 1)).astype(np.float32)
    x[1] = 0.25
    attr = salplug.explain(fn, x, "guided_ig", backend="callable", steps=6, baseline=0.25).values
    assert np.all(attr[1] == 0)
    np.testing.assert_allclose(attr[0], w * (x[0] - 0.25), rtol=1e-5, atol=1e-7)
    assert calls == [1] * 6


@pytest.mark.parametrize("params", [
    dict(fraction=0), dict(fraction=-0.1), dict(fraction=1.5), dict(fraction=float("nan")), dict(fraction="a"),
    dict(steps=0), dict(steps=-3), dict(steps=2.5), dict(steps=True),
    dict(max_dist=-0.01), dict(max_dist=1.5), dict(max_dist=float("nan")),
    dict(baseline=np.zeros((3, 3, 1))), dict(x_steps=10),
])
def test_bad_parameters_raise_before_any_model_call(params):
    fn, calls = counting(linear_call_model_function(np.ones((4, 4, 1))))
    with pytest.raises(ParameterError):
        salplug.explain(fn, np.ones((4, 4, 1), np.float32), "guided_ig", backend="callable", **params)
    assert calls == []
