"""salplug.core as a drop-in: it accepts what upstream saliency 0.2.1 accepts (with upstream's
results), refuses wrong-shaped XRAI segments as upstream does, and honours a patched GetMask."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import saliency.core as up
from conftest import quadratic_call_model_function

import salplug.core as sp
from salplug.errors import ParameterError


def image(h=8, w=8, c=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (h, w, c)).astype(np.float32).astype(np.float64)


def sin_model(w):
    """f(x) = sum(sin(w x)): non-linear, so Guided IG's path matters."""

    def call(x_batch, call_model_args=None, expected_keys=None):
        x_batch = np.asarray(x_batch, np.float64)
        out = {}
        if sp.INPUT_OUTPUT_GRADIENTS in expected_keys:
            out[sp.INPUT_OUTPUT_GRADIENTS] = w * np.cos(w * x_batch)
        if sp.OUTPUT_LAYER_VALUES in expected_keys:
            out[sp.OUTPUT_LAYER_VALUES] = np.sin(w * x_batch).reshape(len(x_batch), -1).sum(1)
        return out

    return call


class Counting:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x_value_batch, call_model_args=None, expected_keys=None):
        self.calls += 1
        return self.fn(x_value_batch, call_model_args=call_model_args, expected_keys=expected_keys)


# --- finding 6: XRAI segments of the wrong shape ------------------------------------------------

def left_columns(h, w, n=3):
    m = np.zeros((h, w), bool)
    m[:, :n] = True
    return m


@pytest.mark.parametrize("how", ["transposed", "flattened", "channel axis"])
def test_xrai_refuses_segments_of_another_shape(how):
    x = image(6, 10)
    attr = np.random.default_rng(1).normal(size=x.shape)
    good = left_columns(6, 10)
    bad = {"transposed": good.T, "flattened": good.ravel(), "channel axis": good[..., None]}[how]
    with pytest.raises(ValueError):  # upstream: a NumPy broadcast / index error
        up.XRAI().GetMaskWithDetails(x, None, base_attribution=attr, segments=[bad, ~bad])
    with pytest.raises(ParameterError, match=r"segments\[0\] has shape .*\(6, 10\)"):
        sp.XRAI().GetMaskWithDetails(x, None, base_attribution=attr, segments=[bad, ~bad])


def test_xrai_accepts_masks_that_broadcast_to_the_image_like_upstream():
    """Upstream broadcasts each mask against (H, W): a (W,) mask selects columns."""
    x = image(6, 10)
    attr = np.random.default_rng(2).normal(size=x.shape)
    cols = np.arange(10) < 4
    segs = [cols, ~cols, np.arange(6)[:, None] < 2]
    results = []
    for lib in (sp, up):
        params = lib.XRAIParameters(return_xrai_segments=True)
        params.experimental_params = {"min_pixel_diff": 1}
        results.append(lib.XRAI().GetMaskWithDetails(x, None, base_attribution=attr, segments=segs,
                                                     extra_parameters=params))
    ours, theirs = results
    assert theirs.segments.max() == 3
    np.testing.assert_allclose(ours.attribution_mask, theirs.attribution_mask, rtol=1e-12)
    np.testing.assert_array_equal(ours.segments, theirs.segments)


def test_xrai_on_a_vector_takes_vector_segments():
    x = np.linspace(0, 1, 120)
    attr = np.sin(np.arange(120.0))
    segs = [np.arange(120) < 60, np.arange(120) >= 60]
    out = sp.XRAI().GetMask(x, None, base_attribution=attr, segments=segs)
    assert out.shape == (120,)
    np.testing.assert_allclose(out[:60], attr[:60].mean())
    with pytest.raises(ParameterError, match="shape"):
        sp.XRAI().GetMask(x, None, base_attribution=attr, segments=[s.reshape(10, 12) for s in segs])


# --- finding 7: values upstream accepts ---------------------------------------------------------

def test_guided_ig_fraction_zero_equals_upstream(quantile_shim):
    x = image(6, 6)
    w = np.random.default_rng(3).normal(size=x.shape) * 3
    fn = sin_model(w)
    for kwargs in ({"x_steps": 5, "fraction": 0.0}, {"x_steps": 4, "fraction": 0, "max_dist": 0.5}):
        ours = sp.GuidedIG().GetMask(x, fn, **kwargs)
        theirs = up.GuidedIG().GetMask(x, fn, **kwargs)
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
    np.random.seed(0)
    smoothed = sp.GuidedIG().GetSmoothedMask(x, fn, nsamples=2, x_steps=3, fraction=0.0)
    np.random.seed(0)
    np.testing.assert_allclose(smoothed, up.GuidedIG().GetSmoothedMask(x, fn, nsamples=2, x_steps=3, fraction=0.0),
                               rtol=1e-4, atol=1e-6)
    with pytest.raises(ParameterError, match="fraction"):
        sp.GuidedIG().GetMask(x, fn, x_steps=3, fraction=-0.1)


def xrai_case(h=12, w=12):
    x = image(h, w)
    attr = np.random.default_rng(4).normal(size=x.shape)
    segs = []
    for y0, x0 in [(0, 0), (4, 4), (6, 0), (0, 6), (8, 8)]:
        m = np.zeros((h, w), bool)
        m[y0:y0 + 5, x0:x0 + 5] = True
        segs.append(m)
    return x, attr, segs


@pytest.mark.parametrize("threshold", [0, 0.0, 1.5, 1])
@pytest.mark.parametrize("algorithm", ["full", "fast"])
def test_xrai_area_threshold_outside_0_1_equals_upstream(threshold, algorithm):
    x, attr, segs = xrai_case()
    results = []
    for lib in (sp, up):
        params = lib.XRAIParameters(area_threshold=threshold, algorithm=algorithm, return_xrai_segments=True)
        params.experimental_params = {"min_pixel_diff": 5}
        results.append(lib.XRAI().GetMaskWithDetails(x, None, base_attribution=attr, segments=segs,
                                                     extra_parameters=params))
    ours, theirs = results
    np.testing.assert_allclose(ours.attribution_mask, theirs.attribution_mask, rtol=1e-12)
    np.testing.assert_array_equal(ours.segments, theirs.segments)


def test_xrai_area_threshold_zero_ranks_one_region():
    x, attr, segs = xrai_case()
    params = sp.XRAIParameters(area_threshold=0, return_xrai_segments=True)
    params.experimental_params = {"min_pixel_diff": 5}
    out = sp.XRAI().GetMaskWithDetails(x, None, base_attribution=attr, segments=segs, extra_parameters=params)
    assert out.segments.max() == 2  # the best mask, then the rest of the image


@pytest.mark.parametrize("threshold", [-0.5, float("nan"), "all", None])
def test_xrai_refuses_meaningless_area_thresholds(threshold):
    x, attr, segs = xrai_case()
    with pytest.raises(ParameterError, match="area_threshold"):
        sp.XRAI().GetMask(x, None, base_attribution=attr, segments=segs,
                          extra_parameters=sp.XRAIParameters(area_threshold=threshold))


def test_xrai_empty_segments_equal_upstream():
    x, attr, _ = xrai_case()
    for flatten in (True, False):
        results = []
        for lib in (sp, up):
            params = lib.XRAIParameters(return_xrai_segments=True, flatten_xrai_segments=flatten)
            results.append(lib.XRAI().GetMaskWithDetails(x, None, base_attribution=attr, segments=[],
                                                         extra_parameters=params))
        ours, theirs = results
        np.testing.assert_allclose(ours.attribution_mask, theirs.attribution_mask, rtol=1e-12)
        np.testing.assert_allclose(ours.attribution_mask, attr.max(axis=-1).mean())
        np.testing.assert_array_equal(np.asarray(ours.segments), np.asarray(theirs.segments))


def test_xrai_empty_segments_with_fast_is_refused_clearly():
    x, attr, _ = xrai_case()
    with pytest.raises(ValueError):  # upstream: "not enough values to unpack"
        up.XRAI().GetMask(x, None, base_attribution=attr, segments=[],
                          extra_parameters=up.XRAIParameters(algorithm="fast"))
    with pytest.raises(ParameterError, match="segments"):
        sp.XRAI().GetMask(x, None, base_attribution=attr, segments=[],
                          extra_parameters=sp.XRAIParameters(algorithm="fast"))


@pytest.mark.parametrize("shape", [(8, 8, 3), (8, 20, 1), (20, 8), (14, 14, 2)])
def test_occlusion_window_larger_than_the_image_gives_a_zero_map_like_upstream(shape):
    x = np.random.default_rng(5).uniform(0, 1, shape)
    fn = quadratic_call_model_function(np.random.default_rng(6).normal(size=shape))
    ours_fn, theirs_fn = Counting(fn), Counting(fn)
    ours = sp.Occlusion().GetMask(x, ours_fn)  # size=15 by default
    theirs = up.Occlusion().GetMask(x, theirs_fn)
    assert ours.shape == theirs.shape == shape
    np.testing.assert_array_equal(ours, theirs)
    assert not ours.any() and ours_fn.calls == theirs_fn.calls == 1
    size = max(shape[:2]) + 1
    ours_fn, theirs_fn = Counting(fn), Counting(fn)
    smoothed = sp.Occlusion().GetSmoothedMask(x, ours_fn, nsamples=3, size=size, batch_size=4)
    up.Occlusion().GetSmoothedMask(x, theirs_fn, nsamples=3, size=size)
    assert smoothed.shape == shape and not smoothed.any()
    assert ours_fn.calls == theirs_fn.calls == 3


def test_occlusion_window_larger_than_the_image_still_checks_its_input():
    x = image(8, 8)
    fn = quadratic_call_model_function(np.ones(x.shape))
    with pytest.raises(ParameterError, match="value"):
        sp.Occlusion().GetMask(x, fn, value="black")
    with pytest.raises(ParameterError, match="size"):
        sp.Occlusion().GetMask(x, fn, size=0)
    with pytest.raises(ParameterError, match="batch_size"):
        sp.Occlusion().GetMask(x, fn, batch_size=0)
    with pytest.raises(ValueError, match="OUTPUT_LAYER_VALUES"):  # upstream's shape error
        sp.Occlusion().GetMask(x, lambda b, call_model_args=None, expected_keys=None:
                               {sp.OUTPUT_LAYER_VALUES: np.zeros(3)})


# --- finding 8: a class-level patch of GetMask --------------------------------------------------

@pytest.mark.parametrize("name", ["IntegratedGradients", "GradientSaliency", "GuidedIG"])
def test_get_smoothed_mask_calls_a_patched_class_get_mask(name, quantile_shim):
    x = image(6, 6)
    fn = sin_model(np.random.default_rng(7).normal(size=x.shape))
    kwargs = {} if name == "GradientSaliency" else {"x_steps": 2}
    maps, counts = [], []
    for lib in (sp, up):
        klass = getattr(lib, name)
        original = klass.GetMask
        calls = []

        def spy(self, *args, _original=original, _calls=calls, **kw):
            _calls.append(1)
            return _original(self, *args, **kw)

        np.random.seed(2)
        with mock.patch.object(klass, "GetMask", spy):
            maps.append(klass().GetSmoothedMask(x, fn, nsamples=3, **kwargs))
        counts.append(len(calls))
    assert counts == [3, 3]
    np.testing.assert_allclose(maps[0], maps[1], rtol=1e-4, atol=1e-6)


def test_a_patched_get_mask_changes_the_smoothed_map():
    x = image(6, 6)
    fn = sin_model(np.ones(x.shape))
    with mock.patch.object(sp.IntegratedGradients, "GetMask", lambda self, *a, **k: np.full(x.shape, 2.0)):
        out = sp.IntegratedGradients().GetSmoothedMask(x, fn, nsamples=2)
    np.testing.assert_allclose(out, 4.0)  # magnitude=True: the mean of the squared maps
    # the patch is gone: the façade's own GetMask runs the registered methods again
    assert not np.allclose(sp.IntegratedGradients().GetSmoothedMask(x, fn, nsamples=2, x_steps=2), 4.0)


@pytest.mark.parametrize("name, params", [("GradientSaliency", {}), ("IntegratedGradients", {"x_steps": 2}),
                                          ("BlurIG", {"steps": 2})])
def test_get_smoothed_mask_batches_noisy_copies_into_batch_size_calls(name, params):
    # the façade's own GetMask is smoothed by the registered smoothgrad: batch_size rows per call
    # (a patched or subclass GetMask is called once per noisy copy instead, as upstream does)
    calls = []

    def fn(xb, call_model_args=None, expected_keys=None):
        calls.append(len(xb))
        return {sp.INPUT_OUTPUT_GRADIENTS: np.cos(np.asarray(xb, np.float64))}

    x = np.random.default_rng(1).uniform(size=(6, 6, 3))
    getattr(sp, name)().GetSmoothedMask(x, fn, nsamples=6, batch_size=3, **params)
    assert calls and max(calls) == 3 and sum(calls) == 6 * max(1, params.get("x_steps", params.get("steps", 1)))


def test_a_user_subclass_with_a_spec_of_its_own_is_smoothed_through_its_get_mask():
    class ZeroGradients(sp.GradientSaliency):
        def _spec(self, batch_size=1):  # a name of the user's own choosing
            raise AssertionError("salplug's batched path must not use a subclass's _spec")

        def GetMask(self, x_value, call_model_function, call_model_args=None, batch_size=1):
            return np.zeros_like(x_value)

    def fn(xb, call_model_args=None, expected_keys=None):
        return {sp.INPUT_OUTPUT_GRADIENTS: np.ones_like(np.asarray(xb, np.float64))}

    x = np.random.default_rng(2).uniform(size=(4, 4, 3))
    assert ZeroGradients().GetSmoothedMask(x, fn, nsamples=3).max() == 0.0
