"""Per-sample parameters (a baseline per image, say) under SmoothGrad, and bad parameter values.

SmoothGrad runs its base method on batches of noisy rows, not on the caller's N samples; each
row must still get its own sample's baseline, fill value, segments or attribution.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import linear_call_model_function, make_cnn

import salplug

RNG = np.random.default_rng(0)
W = RNG.normal(size=(4, 4, 1))


def linear(calls=None):
    """f(x) = sum(W x) per sample (gradients W, IG (x - x') W); ``calls`` records batch sizes."""
    fn = linear_call_model_function(W)

    def call(xb, call_model_args=None, expected_keys=None):
        if calls is not None:
            calls.append(len(xb))
        return fn(xb, call_model_args, expected_keys)
    return call


X = RNG.uniform(0, 1, (3, 4, 4, 1)).astype(np.float32)
PER_SAMPLE = np.stack([np.zeros((4, 4, 1)), np.ones((4, 4, 1)), np.full((4, 4, 1), 0.5)]).astype(np.float32)


def smoothed(method, params, batch_size):
    """SmoothGrad without noise: the base method's own map, whatever the batching."""
    return salplug.explain(linear(), X, "smoothgrad", backend="callable", base=method, nsamples=2,
                           stdev_spread=0.0, base_params=params, batch_size=batch_size).values


@pytest.mark.parametrize("batch_size", [1, 2, 3, 4, 100])
def test_smoothgrad_over_ig_gives_each_row_its_own_baseline(batch_size):
    expected = W * (X - PER_SAMPLE)
    np.testing.assert_allclose(smoothed("integrated_gradients", {"baseline": PER_SAMPLE, "steps": 2}, batch_size),
                               expected, atol=1e-6)


@pytest.mark.parametrize("method, params", [
    ("occlusion", {"size": 2, "value": PER_SAMPLE}),
    ("guided_ig", {"baseline": PER_SAMPLE, "steps": 3}),
    ("blur_ig", {"steps": 3}),
])
def test_smoothgrad_without_noise_equals_the_base_with_per_sample_parameters(method, params):
    direct = salplug.explain(linear(), X, method, backend="callable", **params).values
    for batch_size in (2, 5):
        np.testing.assert_allclose(smoothed(method, params, batch_size), direct, atol=1e-5)


def test_smoothgrad_over_xrai_with_per_sample_segments_and_attribution():
    labels = np.stack([np.arange(16).reshape(4, 4) // 4, np.arange(16).reshape(4, 4) % 4,
                       (np.arange(16).reshape(4, 4) // 8)]).astype(np.int64)  # one label image per sample
    attribution = RNG.normal(size=(3, 4, 4))
    params = {"segments": labels, "base_attribution": attribution, "min_pixel_diff": 0}
    direct = salplug.explain(linear(), X, "xrai", backend="callable", **params).values
    np.testing.assert_allclose(smoothed("xrai", params, 2), direct, atol=1e-6)
    assert not np.allclose(direct[0], direct[1])  # the samples really differ


def test_wrong_number_of_per_sample_baselines_is_refused_before_any_model_call():
    calls = []
    with pytest.raises(salplug.ParameterError, match="baseline"):
        salplug.explain(linear(calls), X, "smoothgrad", backend="callable", base="integrated_gradients",
                        base_params={"baseline": PER_SAMPLE[:2]}, nsamples=2)
    assert calls == []


def test_rows_of_rows_map_back_to_the_callers_samples():
    ctx = salplug.types.Context(adapter=None, host=None, batch_size=4)
    inner = ctx.for_rows(np.array([0, 0, 1, 1, 2]), 3).for_rows(np.array([4, 1]), 5)
    assert inner.rows_of(["a", "b", "c"]) == ["c", "a"]
    assert inner.sample_count(np.zeros((2, 1))) == 3
    assert ctx.rows_of("unchanged") == "unchanged"


@pytest.mark.parametrize("method, params", [
    ("smoothgrad", {"stdev_spread": "0.1"}),
    ("smoothgrad", {"stdev": "1"}),
    ("smoothgrad", {"stdev_spread": float("inf")}),
    ("integrated_gradients", {"baseline": "zeros"}),
    ("occlusion", {"size": 2, "value": None}),
    ("occlusion", {"size": 2, "value": "black"}),
    ("xrai", {"baselines": [None], "steps": 2}),
    ("xrai", {"base_attribution": "a"}),
    ("integrated_gradients", {"baseline": [[1, 2], [3]]}),
    ("smoothgrad", {"base_params": 3}),
])
def test_bad_parameter_values_are_parameter_errors_before_any_model_call(method, params):
    calls = []
    with pytest.raises(salplug.ParameterError):
        salplug.explain(linear(calls), X, method, backend="callable", **params)
    assert calls == []


def test_a_batched_baseline_for_one_sample_names_the_rank_it_needs():
    with pytest.raises(salplug.ParameterError, match=r"one sample \(rank 3\)") as err:
        salplug.explain(linear(), X[0], "ig", backend="callable", layout="HWC", baseline=PER_SAMPLE[:1])
    assert "rank 4)" not in str(err.value)


def test_smoothgrad_over_coarse_grad_cam_maps():
    # Grad-CAM with should_resize=False gives maps at the layer's size; wrapped in SmoothGrad
    # (base_params) the shape check used to ask for the input's size and refuse them.
    torch = pytest.importorskip("torch")
    model = make_cnn()
    x = torch.rand(2, 3, 16, 16)
    params = {"layer": "conv2", "should_resize": False}
    coarse = salplug.explain(model, x, "grad_cam", target=1, **params).values
    smooth = salplug.explain(model, x, "smoothgrad", base="grad_cam", target=1, nsamples=3, stdev_spread=0.0,
                             base_params=params).values
    assert tuple(coarse.shape[2:]) == (8, 8)
    np.testing.assert_allclose(smooth.numpy(), coarse.numpy(), atol=1e-6)


class _FrameworkScalar:
    """A 0-d tensor of another framework (a tf.constant, a tf.Variable): float() reads it."""

    shape = ()
    ndim = 0

    def __float__(self):
        return 0.25


@pytest.mark.parametrize("scalar", [0.25, np.float32(0.25), np.array(0.25), _FrameworkScalar()])
def test_scalar_baselines_of_any_kind(scalar):
    out = salplug.explain(linear(), X, "integrated_gradients", backend="callable", baseline=scalar, steps=2).values
    np.testing.assert_allclose(out, W * (X - 0.25), atol=1e-6)


def test_a_users_raising_baseline_function_is_not_blamed_on_a_plugin():
    def baseline(x):
        raise ZeroDivisionError("my own bug")

    with pytest.raises(ZeroDivisionError, match="my own bug"):
        salplug.explain(linear(), X, "integrated_gradients", backend="callable", baseline=baseline)
