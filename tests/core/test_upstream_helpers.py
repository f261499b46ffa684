"""Upstream's module-level Guided IG helpers and ``Occlusion.getY`` in salplug.core, against
the upstream ``saliency`` package (its Guided IG runs on NumPy 2 through ``quantile_shim``)."""

from __future__ import annotations

import numpy as np
import pytest
import saliency.core as up
import saliency.core.guided_ig as up_gig

import salplug.core as sp
import salplug.core.guided_ig as sp_gig
from salplug.errors import ParameterError

NAMES = ["guided_ig_impl", "translate_x_to_alpha", "translate_alpha_to_x", "l1_distance", "EPSILON"]


@pytest.mark.parametrize("name", NAMES)
def test_guided_ig_helpers_are_where_upstream_has_them(name):
    assert hasattr(up_gig, name) and hasattr(up, name)
    assert hasattr(sp_gig, name) and hasattr(sp, name)


def test_epsilon_equals_upstream():
    assert sp_gig.EPSILON == up_gig.EPSILON


def gradient_function(seed=0, shape=(6, 6, 3)):
    """A nonlinear gradient field, with a record of the points it was asked about."""
    w = np.random.default_rng(seed).normal(size=shape)
    seen = []

    def grad(x):
        seen.append((x.dtype, x.shape))
        return np.cos(3 * x) * w + x ** 2

    return grad, seen


@pytest.mark.parametrize("kwargs", [{"steps": 10}, {"steps": 7, "fraction": 0.5, "max_dist": 0.1},
                                    {"steps": 5, "max_dist": 0.0}, {"steps": 4, "fraction": 0.1, "max_dist": 1.0},
                                    {}])
def test_guided_ig_impl_equals_upstream(quantile_shim, kwargs):
    rng = np.random.default_rng(1)
    x = rng.random((6, 6, 3)).astype(np.float32)
    base = rng.random((6, 6, 3)) * 0.2
    base[0, 0, 0] = x[0, 0, 0]  # one feature with an empty segment
    ours_grad, ours_seen = gradient_function()
    theirs_grad, theirs_seen = gradient_function()
    ours = sp_gig.guided_ig_impl(x, base, ours_grad, **kwargs)
    theirs = up_gig.guided_ig_impl(x, base, theirs_grad, **kwargs)
    assert ours.dtype == theirs.dtype == np.float64 and ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    assert ours_seen == theirs_seen  # one float64 point of the input's shape per step


def test_guided_ig_impl_at_the_baseline_is_zero_without_calls(quantile_shim):
    x = np.full((4, 4, 3), 0.5)
    grad, seen = gradient_function(shape=(4, 4, 3))
    ours = sp_gig.guided_ig_impl(x, x.copy(), grad, steps=5)
    np.testing.assert_array_equal(ours, up_gig.guided_ig_impl(x, x.copy(), grad, steps=5))
    assert not ours.any() and seen == []


def test_guided_ig_impl_without_deviation_is_the_left_riemann_ig():
    """max_dist=0 walks the straight line: sum over steps of (x - x') / steps * grad(x' + k/steps (x - x'))."""
    w = np.array([[1.0, -2.0], [0.5, 3.0]])
    x, base, steps = np.array([[1.0, 2.0], [-1.0, 0.5]]), np.zeros((2, 2)), 4
    grad = lambda p: w * p  # noqa: E731 - f = sum(w * p**2) / 2
    expected = sum((x - base) / steps * (w * (base + k / steps * (x - base))) for k in range(steps))
    np.testing.assert_allclose(sp_gig.guided_ig_impl(x, base, grad, steps=steps, max_dist=0.0), expected,
                               rtol=1e-12)


@pytest.mark.parametrize("kwargs,match", [({"steps": 0}, "steps"), ({"fraction": 1.5}, "fraction"),
                                          ({"max_dist": -0.1}, "max_dist")])
def test_guided_ig_impl_refuses_bad_parameters_before_any_call(kwargs, match):
    grad, seen = gradient_function(shape=(2, 2))
    with pytest.raises(ParameterError, match=match):
        sp_gig.guided_ig_impl(np.ones((2, 2)), np.zeros((2, 2)), grad, **kwargs)
    assert seen == []


def test_translate_x_to_alpha_equals_upstream():
    x_input = np.array([1.0, 2.0, 3.0, 3.0, 2.0])
    x_baseline = np.array([0.0, 0.0, 1.0, 3.0, 4.0])
    for x in (np.array([0.5, 1.0, 2.0, 3.0, 3.0]), np.array([2.0, -1.0, 0.0, 4.0, 2.0])):
        for dtype in (np.float64, np.float32):
            args = (x.astype(dtype), x_input.astype(dtype), x_baseline.astype(dtype))
            ours, theirs = sp_gig.translate_x_to_alpha(*args), up_gig.translate_x_to_alpha(*args)
            assert ours.dtype == theirs.dtype
            np.testing.assert_array_equal(ours, theirs)  # NaN where the segment is empty
    with np.errstate(all="raise"):  # no division warnings
        assert np.isnan(sp_gig.translate_x_to_alpha(np.array([4.0]), np.array([3.0]), np.array([3.0])))[0]


def test_translate_alpha_to_x_equals_upstream():
    x_input, x_baseline = np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.0, 1.0])
    for alpha in (0, 0.3, 1, np.float32(0.7)):
        for dtype in (np.float64, np.float32):
            args = (alpha, x_input.astype(dtype), x_baseline.astype(dtype))
            ours, theirs = sp_gig.translate_alpha_to_x(*args), up_gig.translate_alpha_to_x(*args)
            assert ours.dtype == theirs.dtype
            np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("alpha", [1.5, -0.1])
def test_translate_alpha_outside_the_segment_is_refused_like_upstream(alpha):
    x_input, x_baseline = np.ones(3), np.zeros(3)
    with pytest.raises(AssertionError):
        up_gig.translate_alpha_to_x(alpha, x_input, x_baseline)
    with pytest.raises(AssertionError, match=r"alpha must be in \[0, 1\]"):
        sp_gig.translate_alpha_to_x(alpha, x_input, x_baseline)
    with pytest.raises(ParameterError):
        sp_gig.translate_alpha_to_x(alpha, x_input, x_baseline)


def test_l1_distance_equals_upstream():
    a = np.array([[1.0, -2.0], [0.5, 3.0]])
    b = np.array([[0.0, 1.0], [0.5, -1.0]])
    assert sp_gig.l1_distance(a, b) == 8.0
    for dtype in (np.float64, np.float32, np.int64):
        ours = sp_gig.l1_distance(a.astype(dtype), b.astype(dtype))
        theirs = up_gig.l1_distance(a.astype(dtype), b.astype(dtype))
        assert ours == theirs and np.asarray(ours).dtype == np.asarray(theirs).dtype


def recording_model(outputs):
    calls = []

    def call_model_function(x_value_batch, call_model_args=None, expected_keys=None):
        calls.append((x_value_batch.shape, x_value_batch.dtype, call_model_args, expected_keys))
        return {up.OUTPUT_LAYER_VALUES: outputs(x_value_batch)}

    return call_model_function, calls


def test_occlusion_get_y_equals_upstream():
    x = np.random.default_rng(0).random((5, 5, 3)).astype(np.float32)
    scores = lambda batch: batch.reshape(len(batch), -1).sum(1)[:, None] * np.array([1.0, -2.0])  # noqa: E731
    ours_fn, ours_calls = recording_model(scores)
    theirs_fn, theirs_calls = recording_model(scores)
    ours = sp.Occlusion().getY(x, ours_fn, {"k": 1})
    theirs = up.Occlusion().getY(x, theirs_fn, {"k": 1})
    np.testing.assert_array_equal(ours, theirs)
    assert ours_calls == theirs_calls == [((1, 5, 5, 3), np.float32, {"k": 1}, [up.OUTPUT_LAYER_VALUES])]
    one, _ = recording_model(lambda batch: [3.0])  # a list of one score per row
    assert sp.Occlusion().getY(x, one, None) == up.Occlusion().getY(x, one, None) == 3.0


def test_occlusion_get_y_checks_the_batch_size_like_upstream():
    two_rows, _ = recording_model(lambda batch: np.ones((2, 4)))
    with pytest.raises(ValueError, match="OUTPUT_LAYER_VALUES.*expected 1, actual 2"):
        up.Occlusion().getY(np.ones((4, 4, 3)), two_rows, None)
    with pytest.raises(ValueError, match="OUTPUT_LAYER_VALUES.*expected 1, actual 2"):
        sp.Occlusion().getY(np.ones((4, 4, 3)), two_rows, None)


def test_occlusion_get_y_names_a_missing_key():
    from salplug.errors import ModelOutputError

    def wrong_key(x_value_batch, call_model_args=None, expected_keys=None):
        return {up.INPUT_OUTPUT_GRADIENTS: np.ones_like(x_value_batch)}

    with pytest.raises(ModelOutputError, match="getY needs 'OUTPUT_LAYER_VALUES'"):
        sp.Occlusion().getY(np.ones((4, 4, 3)), wrong_key, None)
