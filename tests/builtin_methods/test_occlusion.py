"""Occlusion: hand-computed maps, upstream ``saliency`` and Captum agreement, batching, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import salplug
from conftest import linear_call_model_function, make_cnn, torch_call_model_function
from salplug.errors import InputError, ParameterError


def counting(fn):
    """Wrap a call_model_function; record the batch size of every call."""
    calls = []

    def call(x_batch, call_model_args=None, expected_keys=None):
        calls.append(len(x_batch))
        return fn(x_batch, call_model_args=call_model_args, expected_keys=expected_keys)

    return call, calls


def brute_force(x, w, size, stride, aggregate, value=0.0):
    """Occlusion of f(x) = sum(w * x) with explicit loops over windows (reference)."""
    h, wd, c = x.shape
    total = np.zeros((h, wd))
    count = np.zeros((h, wd))
    base = (w * x).sum()
    for r in range(0, h - size + 1, stride):
        for q in range(0, wd - size + 1, stride):
            occ = x.copy()
            occ[r:r + size, q:q + size] = value
            total[r:r + size, q:q + size] += base - (w * occ).sum()
            count[r:r + size, q:q + size] += 1
    if aggregate == "mean":
        total = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return np.repeat(total[..., None], c, -1)


# -- exact values on a linear model ------------------------------------------------------------

def test_hand_computed_4x4(host):
    # f(x) = sum(w * x) with w * x = 1 everywhere: every 2x2 window drops the score by 4.
    x = np.ones((4, 4, 1), np.float32)
    fn = linear_call_model_function(np.ones((4, 4, 1)))
    run = lambda **p: salplug.explain(fn, x, "occlusion", backend="callable", host=host, size=2, **p).values[..., 0]  # noqa: E731
    cover = np.array([[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]])
    np.testing.assert_array_equal(run(), 4 * cover)
    np.testing.assert_array_equal(run(aggregate="mean"), np.full((4, 4), 4.0))
    np.testing.assert_array_equal(run(stride=2), np.full((4, 4), 4.0))
    np.testing.assert_array_equal(run(stride=2, aggregate="mean"), np.full((4, 4), 4.0))
    # stride 3 on 4 pixels: only the window at 0 fits; the rest is uncovered (0).
    expected = np.zeros((4, 4))
    expected[:2, :2] = 4
    np.testing.assert_array_equal(run(stride=3), expected)
    # partial=True adds the windows at 3, clipped to one row/column: drops of 2, 2 and 1.
    expected = np.array([[4, 4, 0, 2], [4, 4, 0, 2], [0, 0, 0, 0], [2, 2, 0, 1]])
    np.testing.assert_array_equal(run(stride=3, partial=True), expected)
    np.testing.assert_array_equal(run(stride=3, partial=True, aggregate="mean"), expected)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("aggregate", ["sum", "mean"])
def test_linear_model_matches_loops(host, stride, aggregate):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 7, 2))
    x = rng.normal(size=(6, 7, 2)).astype(np.float32)
    fn = linear_call_model_function(w)
    got = salplug.explain(fn, x, "occlusion", backend="callable", host=host, size=2, stride=stride,
                          aggregate=aggregate, value=0.5).values
    np.testing.assert_allclose(got, brute_force(x, w, 2, stride, aggregate, 0.5), rtol=1e-5, atol=1e-5)


def test_rectangular_window_and_array_value(host):
    rng = np.random.default_rng(1)
    w = rng.normal(size=(5, 6, 3))
    x = rng.normal(size=(5, 6, 3)).astype(np.float32)
    value = rng.normal(size=(5, 6, 3)).astype(np.float32)   # HWC, the input's own layout
    fn = linear_call_model_function(w)
    got = salplug.explain(fn, x, "occlusion", backend="callable", host=host, size=(2, 3), stride=(1, 2),
                          value=value).values
    expected = np.zeros((5, 6))
    base = (w * x).sum()
    for r in range(0, 4):
        for q in range(0, 4, 2):
            occ = x.copy()
            occ[r:r + 2, q:q + 3] = value[r:r + 2, q:q + 3]
            expected[r:r + 2, q:q + 3] += base - (w * occ).sum()
    np.testing.assert_allclose(got, np.repeat(expected[..., None], 3, -1), rtol=1e-5, atol=1e-5)


# -- batching -----------------------------------------------------------------------------------

def test_windows_packed_into_batches(host):
    w = np.ones((8, 8, 1))
    fn, calls = counting(linear_call_model_function(w))
    x = np.random.default_rng(2).random((3, 8, 8, 1)).astype(np.float32)
    salplug.explain(fn, x, "occlusion", backend="callable", host=host, batch_size=10, size=3)
    windows = 3 * (6 * 6 + 1)  # 36 windows per sample plus the unoccluded input
    assert len(calls) == math.ceil(windows / 10)
    assert max(calls) <= 10 and sum(calls) == windows


def test_batch_with_per_sample_targets_equals_single_calls(host):
    model = make_cnn()
    rng = np.random.default_rng(3)
    x = rng.random((3, 12, 12, 3)).astype(np.float32)
    targets = [1, 4, 7]
    batch = salplug.explain(model, x, "occlusion", target=targets, host=host, batch_size=7, size=4,
                            stride=2).values
    for i, t in enumerate(targets):
        single = salplug.explain(model, x[i], "occlusion", target=t, host=host, size=4, stride=2).values
        np.testing.assert_allclose(batch[i], single, rtol=1e-5, atol=1e-6)


# -- agreement with the upstream package and Captum --------------------------------------------

def test_matches_upstream_saliency_occlusion(host):
    core = pytest.importorskip("saliency.core")
    model = make_cnn()
    x = np.random.default_rng(4).random((14, 14, 3)).astype(np.float32)
    for target, size in ((2, 4), (5, 14)):
        ours = salplug.explain(model, x, "occlusion", target=target, host=host, size=size).values
        upstream = core.Occlusion().GetMask(x, torch_call_model_function(model, target), size=size)
        assert ours.shape == upstream.shape == x.shape
        # float32 scores; upstream sums them in float64 in another order
        np.testing.assert_allclose(ours, upstream, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size,stride,partial", [(4, 1, False), (4, 2, False), (4, 3, True), (3, (2, 3), True)])
def test_mean_matches_captum_occlusion(host, size, stride, partial):
    torch = pytest.importorskip("torch")
    captum_attr = pytest.importorskip("captum.attr")
    model = make_cnn()
    torch.manual_seed(0)
    x = torch.rand(2, 3, 14, 14)
    baseline = torch.rand(1, 3, 14, 14)
    targets = [3, 8]
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    expected = captum_attr.Occlusion(model).attribute(
        x, sliding_window_shapes=(3, size, size), strides=(3, sh, sw), baselines=baseline,
        target=targets, perturbations_per_eval=16)
    ours = salplug.explain(model, x, "occlusion", target=targets, host=host, size=size, stride=stride,
                           value=baseline, aggregate="mean", partial=partial).values
    assert torch.is_tensor(ours) and ours.shape == x.shape
    # Captum averages the score drops of the windows covering a pixel (clipping windows at the
    # bottom/right edge when the stride does not fit); float32 on both sides.
    np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape,size,stride", [((3, 11), (1, 2), (4, 1)), ((5, 5), 2, 4), ((9, 7), (2, 3), (5, 6)),
                                               ((6, 6), 3, 2)])
def test_partial_windows_never_start_outside_the_image(host, shape, size, stride):
    # With partial=True, windows step on until one reaches the bottom/right edge; a stride above
    # the size must not add a window that starts past the edge (it used to crash, or occlude the
    # clipped last row again).
    (sh, sw), (th, tw) = [(v, v) if isinstance(v, int) else v for v in (size, stride)]
    h, wd = shape
    rng = np.random.default_rng(3)
    x, w = rng.uniform(0, 1, (h, wd, 1)), rng.normal(size=(h, wd, 1))

    def starts(length, sz, st):
        return [s for s in range(0, length, st) if s == 0 or s - st + sz < length]

    expected = np.zeros((h, wd))
    for r in starts(h, sh, th):
        for q in starts(wd, sw, tw):
            expected[r:r + sh, q:q + sw] += (w[r:r + sh, q:q + sw] * x[r:r + sh, q:q + sw]).sum()
    out = salplug.explain(linear_call_model_function(w), x, "occlusion", backend="callable", host=host, layout="HWC",
                          size=size, stride=stride, partial=True)
    assert out.extras["window_scores"].shape == (1, len(starts(h, sh, th)), len(starts(wd, sw, tw)))
    np.testing.assert_allclose(out.values[..., 0], expected, rtol=1e-5, atol=1e-6)


# -- bad parameters, before any model call -------------------------------------------------------

@pytest.mark.parametrize("params,error,words", [
    ({"size": 9}, ParameterError, "larger than the image"),
    ({"size": (2, 9)}, ParameterError, "larger than the image"),
    ({"size": 0}, ParameterError, "positive"),
    ({"size": (2,)}, ParameterError, "pair"),
    ({"size": 2.5}, ParameterError, "positive int"),
    ({"stride": 0}, ParameterError, "stride"),
    ({"stride": -1}, ParameterError, "stride"),
    ({"stride": True}, ParameterError, "stride"),
    ({"aggregate": "median"}, ParameterError, "sum, mean"),
    ({"partial": "yes"}, ParameterError, "partial"),
    ({"value": np.zeros((3, 3, 1))}, ParameterError, "does not fit"),
    ({"value": np.full((8, 8, 1), np.nan)}, ParameterError, "NaN"),
    ({"sizes": 3}, ParameterError, "Did you mean 'size'"),
])
def test_bad_parameters_raise_before_any_model_call(host, params, error, words):
    fn, calls = counting(linear_call_model_function(np.ones((8, 8, 1))))
    x = np.ones((8, 8, 1), np.float32)
    with pytest.raises(error, match=words):
        salplug.explain(fn, x, "occlusion", backend="callable", host=host, **{"size": 2, **params})
    assert calls == []


def test_non_image_input_rejected(host):
    fn, calls = counting(linear_call_model_function(np.ones(5)))
    with pytest.raises(InputError, match=r"\(N, H, W, C\)"):
        salplug.explain(fn, np.ones((2, 5), np.float32), "occlusion", backend="callable", host=host, size=2)
    assert calls == []
