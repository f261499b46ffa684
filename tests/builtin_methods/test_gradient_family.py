"""Vanilla Gradients, Integrated Gradients and SmoothGrad: exact values, axioms, upstream agreement."""

from __future__ import annotations

import numpy as np
import pytest
import saliency.core as upstream
from conftest import linear_call_model_function, make_cnn, quadratic_call_model_function, torch_call_model_function

import salplug
from salplug.builtin_methods.integrated_gradients import quadrature

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(0)


def image(h=16, w=16, c=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (h, w, c)).astype(np.float32)


# -- exact answers on analytic functions ---------------------------------------------------------
def test_gradients_of_linear_function_are_the_weights():
    w = RNG.normal(size=(5, 4, 3)).astype(np.float32)
    out = salplug.explain(linear_call_model_function(w), image(5, 4), "gradients", backend="callable")
    np.testing.assert_allclose(out.values, w, rtol=1e-6)


@pytest.mark.parametrize("rule", ["riemann", "left", "right", "middle", "trapezoid", "gausslegendre"])
def test_ig_of_linear_function_is_exact(rule):
    w = RNG.normal(size=(5, 4, 3)).astype(np.float32)
    x, base = image(5, 4, seed=1), image(5, 4, seed=2)
    out = salplug.explain(linear_call_model_function(w), x, "integrated_gradients", backend="callable",
                          baseline=base, steps=7, rule=rule)
    np.testing.assert_allclose(out.values, (x - base) * w, rtol=1e-5, atol=1e-6)


def test_ig_of_quadratic_with_exact_rules():
    # f = sum(w x^2); IG from 0 is w x^2 exactly for rules integrating linear functions exactly.
    w = RNG.uniform(0.5, 2, size=(4, 4, 3))
    x = image(4, 4, seed=3)
    fn = quadratic_call_model_function(w)
    for rule, steps in (("trapezoid", 2), ("middle", 1), ("gausslegendre", 1)):
        out = salplug.explain(fn, x, "ig", backend="callable", steps=steps, rule=rule)
        np.testing.assert_allclose(out.values, w * x**2, rtol=1e-5)
    # The upstream rule with both ends weighted 1/steps: sum_k k/(n-1) / n = 1/2 exactly -> w x^2.
    out = salplug.explain(fn, x, "ig", backend="callable", steps=9)
    np.testing.assert_allclose(out.values, w * x**2, rtol=1e-5)


def test_quadrature_weights_sum_to_one():
    for rule in ("riemann", "left", "right", "middle", "trapezoid", "gausslegendre"):
        alphas, weights = quadrature(11, rule)
        assert weights.sum() == pytest.approx(1.0) and alphas.min() >= 0 and alphas.max() <= 1


# -- IG completeness on a real network -------------------------------------------------------------
def test_ig_completeness_on_small_cnn_within_one_percent():
    model = make_cnn(seed=1)
    x = torch.rand(3, 3, 16, 16)
    target = [1, 4, 7]
    out = salplug.explain(model, x, "integrated_gradients", target=target, steps=200, batch_size=64)
    with torch.no_grad():
        gap = model(x)[torch.arange(3), target] - model(torch.zeros_like(x))[torch.arange(3), target]
    sums = out.values.sum(dim=(1, 2, 3))
    assert torch.allclose(sums, gap, rtol=0.01, atol=1e-4 * gap.abs().max())


def test_ig_baselines_scalar_array_callable_agree():
    model = make_cnn(seed=2)
    x = torch.rand(2, 3, 8, 8)
    ref = salplug.explain(model, x, "ig", steps=10, target=0, baseline=torch.full((2, 3, 8, 8), 0.5))
    for baseline in (0.5, torch.full((3, 8, 8), 0.5), lambda xs: np.full_like(xs, 0.5)):
        out = salplug.explain(model, x, "ig", steps=10, target=0, baseline=baseline)
        torch.testing.assert_close(out.values, ref.values)


# -- agreement with the upstream saliency package ----------------------------------------------------
@pytest.fixture(scope="module")
def model_and_input():
    model = make_cnn(seed=3)
    x = image(16, 16, seed=4)
    target = 2
    return model, x, target, torch_call_model_function(model, target)


def test_gradients_match_upstream(model_and_input):
    model, x, target, fn = model_and_input
    ref = upstream.GradientSaliency().GetMask(x, fn)
    ours = salplug.explain(model, x, "gradients", target=target).values
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("batch_size", [1, 7])
def test_ig_matches_upstream(model_and_input, batch_size):
    model, x, target, fn = model_and_input
    base = image(16, 16, seed=5) * 0.2
    ref = upstream.IntegratedGradients().GetMask(x, fn, x_baseline=base, x_steps=25, batch_size=batch_size)
    ours = salplug.explain(model, x, "ig", target=target, baseline=base, steps=25, batch_size=batch_size).values
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("magnitude", [True, False])
def test_smoothgrad_matches_upstream_with_the_same_noise(model_and_input, magnitude):
    model, x, target, fn = model_and_input
    np.random.seed(11)
    ref = upstream.GradientSaliency().GetSmoothedMask(x, fn, stdev_spread=0.2, nsamples=6, magnitude=magnitude)
    ours = salplug.explain(model, x, "smoothgrad", target=target, stdev_spread=0.2, nsamples=6,
                           mode="squared" if magnitude else "mean", seed=np.random.RandomState(11)).values
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-9)


def test_smoothgrad_over_ig_matches_upstream(model_and_input):
    model, x, target, fn = model_and_input
    np.random.seed(3)
    ref = upstream.IntegratedGradients().GetSmoothedMask(x, fn, nsamples=3, magnitude=False, x_steps=5,
                                                          x_baseline=np.zeros_like(x))
    ours = salplug.explain(model, x, "smoothgrad", base="integrated_gradients", steps=5, target=target,
                           nsamples=3, seed=np.random.RandomState(3)).values
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-7)


# -- SmoothGrad semantics --------------------------------------------------------------------------
def test_smoothgrad_modes_relationship_and_seed():
    model = make_cnn(seed=4)
    x = torch.rand(2, 3, 8, 8)
    kw = dict(target=1, nsamples=8, seed=5)
    mean = salplug.explain(model, x, "smoothgrad", mode="mean", **kw).canonical.astype(np.float64)
    sq = salplug.explain(model, x, "smoothgrad", mode="squared", **kw).canonical.astype(np.float64)
    var = salplug.explain(model, x, "smoothgrad", mode="vargrad", **kw).canonical.astype(np.float64)
    np.testing.assert_allclose(var, sq - mean**2, atol=1e-6 * np.abs(sq).max())
    again = salplug.explain(model, x, "smoothgrad", mode="mean", **kw).canonical
    np.testing.assert_array_equal(mean.astype(np.float32), again)
    other = salplug.explain(model, x, "smoothgrad", mode="mean", target=1, nsamples=8, seed=6).canonical
    assert not np.allclose(mean, other)


def test_smoothgrad_with_zero_noise_is_the_base_method():
    w = RNG.normal(size=(4, 4, 3))
    x = image(4, 4)
    fn = quadratic_call_model_function(w)
    out = salplug.explain(fn, x, "smoothgrad", backend="callable", stdev=0.0, nsamples=3)
    np.testing.assert_allclose(out.values, 2 * w * x, rtol=1e-5)


# -- batches ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method,params", [
    ("gradients", {}),
    ("integrated_gradients", {"steps": 6}),
    ("smoothgrad", {"nsamples": 4, "seed": 0}),
])
def test_batch_of_8_equals_8_single_calls(method, params):
    model = make_cnn(seed=5)
    x = torch.rand(8, 3, 12, 12)
    targets = [0, 1, 2, 3, 4, 5, 6, 7]
    batch = salplug.explain(model, x, method, target=targets, batch_size=5, **params).values
    for i in range(8):
        single = salplug.explain(model, x[i], method, target=targets[i], **params).values
        torch.testing.assert_close(batch[i], single, rtol=1e-4, atol=1e-6)
