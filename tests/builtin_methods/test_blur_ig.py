"""Blur IG: the blur itself, completeness, agreement with upstream ``saliency``, batching."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import salplug
from conftest import (counting, linear_call_model_function, make_cnn, quadratic_call_model_function,
                      torch_call_model_function)
from salplug.builtin_methods.blur_ig import blur_sigmas, gaussian_blur
from salplug.errors import InputError, ParameterError


def scipy_blur(image_hwc: np.ndarray, sigma: float) -> np.ndarray:
    """The reference blur: scipy over H and W only, zero padding, float64."""
    return ndimage.gaussian_filter(np.asarray(image_hwc, np.float64), (sigma, sigma, 0), mode="constant")


# -- the blur ------------------------------------------------------------------------------

@pytest.mark.parametrize("sigma", [0.0, 0.01, 0.2, 0.4, 1.0, 3.3, 12.0, 50.0, 80.01])
def test_gaussian_blur_matches_scipy(sigma):
    # A 40 x 300 image: the long axis with a narrow kernel takes the scipy branch, the
    # others the dense-matrix branch; both must equal scipy's constant-mode filter.
    img = np.random.default_rng(0).random((2, 3, 40, 300))
    expected = ndimage.gaussian_filter(img, (0, 0, sigma, sigma), mode="constant")
    np.testing.assert_allclose(gaussian_blur(img, sigma), expected, rtol=0, atol=1e-12)


def test_sigmas_linear_and_sqrt():
    np.testing.assert_allclose(blur_sigmas(50, 4), [0, 12.5, 25, 37.5, 50])
    np.testing.assert_allclose(blur_sigmas(50, 4, sqrt=True), np.sqrt([0, 12.5, 25, 37.5, 50]))


# -- exact identities and completeness on analytic models ----------------------------------

@pytest.mark.parametrize("max_sigma,steps", [(3.0, 30), (0.6, 16)])
def test_linear_model_equals_finite_difference_sum(max_sigma, steps):
    # For f(x) = sum(w x) the gradient is w everywhere, so Blur IG's total is exactly
    # -(h / g) * sum_k [phi(s_k + g) - phi(s_k)] with phi(s) = f(blur(x, s)): an identity we
    # evaluate with scipy's blur (independent of salplug's). float32 output: rtol 1e-5.
    rng = np.random.default_rng(1)
    x = rng.random((10, 12, 2)).astype(np.float32)
    w = rng.normal(size=x.shape)
    g = 0.01
    sig = blur_sigmas(max_sigma, steps)
    phi = lambda s: float((w * scipy_blur(x, s)).sum())  # noqa: E731
    expected = -sum((sig[k + 1] - sig[k]) / g * (phi(sig[k] + g) - phi(sig[k])) for k in range(steps))
    attr = salplug.explain(linear_call_model_function(w), x, "blur_ig", backend="callable",
                           max_sigma=max_sigma, steps=steps, grad_step=g).values
    assert attr.shape == x.shape
    np.testing.assert_allclose(attr.sum(), expected, rtol=1e-5)
    # ... and per pixel: attr = -w * sum_k h * (blur(s_k + g) - blur(s_k)) / g.
    per_pixel = -w * sum((sig[k + 1] - sig[k]) / g * (scipy_blur(x, sig[k] + g) - scipy_blur(x, sig[k]))
                         for k in range(steps))
    np.testing.assert_allclose(attr, per_pixel, rtol=1e-4, atol=1e-6 * np.abs(per_pixel).max())


def test_completeness_quadratic_converges_with_steps():
    # f(x) = sum(w x^2). Blur IG is a left Riemann sum (step h = max_sigma / steps) of a
    # forward-difference derivative (width g) of phi(s) = f(blur(x, s)), so its total misses
    # f(x) - f(blur(x, max_sigma)) by O(h + g): bounded by (h + g) * TV(phi') plus a term
    # g * max|sum w x'^2| * max_sigma from the quadratic's curvature. With max_sigma = 0.6 the
    # kernel's radius changes only where its new taps weigh < 1e-6 (exp(-32), exp(-14)), so
    # the path is smooth and the error must shrink about linearly in h (g = h / 4 here).
    rng = np.random.default_rng(2)
    x = rng.random((10, 10, 2)).astype(np.float32)
    w = rng.normal(size=x.shape)
    f = lambda z: float((w * np.asarray(z, np.float64) ** 2).sum())  # noqa: E731
    max_sigma = 0.6
    expected = f(x) - f(scipy_blur(x, max_sigma))
    fine = np.linspace(0, max_sigma, 2001)
    phi = np.array([f(scipy_blur(x, s)) for s in fine])
    dphi = np.diff(phi) / np.diff(fine)
    tv = np.abs(np.diff(dphi)).sum()  # total variation of phi'
    slope = np.diff([scipy_blur(x, s) for s in fine[::100]], axis=0) / (fine[100] - fine[0])
    curv = np.abs((w * slope**2).sum(axis=(1, 2, 3))).max()
    errors = []
    for steps in (25, 100, 400):
        h = max_sigma / steps
        g = h / 4
        attr = salplug.explain(quadratic_call_model_function(w), x, "blur_ig", backend="callable",
                               max_sigma=max_sigma, steps=steps, grad_step=g, batch_size=64).values
        err = abs(float(attr.sum(dtype=np.float64)) - expected)
        bound = (h + g) * tv + g * curv * max_sigma
        assert err <= bound, (steps, err, bound)
        errors.append(err)
    assert errors[1] < 0.4 * errors[0] and errors[2] < 0.4 * errors[1], errors  # ~4x per 4x steps
    assert errors[2] < 2e-3 * abs(expected)


def test_sign_increasing_score_gets_positive_total():
    # Blurring lowers f(x) = sum(x^2) for a bright spot, so the total must be positive.
    x = np.zeros((9, 9, 1), np.float32)
    x[4, 4] = 1.0
    attr = salplug.explain(quadratic_call_model_function(np.ones_like(x)), x, "blur_ig",
                           backend="callable", max_sigma=2, steps=40).values
    assert attr.sum() > 0.5  # f(x) - f(blurred) = 1 - sum(blurred^2) ~ 0.96


# -- agreement with upstream saliency ------------------------------------------------------

@pytest.fixture(scope="module")
def upstream():
    return pytest.importorskip("saliency.core")


@pytest.mark.parametrize("sqrt", [False, True])
def test_agrees_with_upstream_batch_size_1(upstream, sqrt):
    # Same model and input; upstream gets float64 x (its scipy blur in float64), both feed the
    # model float32 points. Only rounding separates them: max diff <= 1e-5 * max |attr|.
    model = make_cnn()
    x = np.random.default_rng(3).random((20, 20, 3)).astype(np.float32)
    expected = upstream.BlurIG().GetMask(x.astype(np.float64), torch_call_model_function(model, 3),
                                         max_sigma=8, steps=16, sqrt=sqrt, batch_size=1)
    ours = salplug.explain(model, x, "blur_ig", target=3, max_sigma=8, steps=16, sqrt=sqrt,
                           batch_size=5).values
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_sqrt_batches_use_each_steps_own_width(upstream):
    # Upstream with sqrt=True and batch_size > 1 weights every item of a batch with the last
    # item's width: it differs from its own batch_size=1 result. salplug does not.
    model = make_cnn()
    x = np.random.default_rng(4).random((16, 16, 3)).astype(np.float32)
    fn = torch_call_model_function(model, 2)
    params = dict(max_sigma=6, steps=12, sqrt=True)
    up1 = upstream.BlurIG().GetMask(x.astype(np.float64), fn, batch_size=1, **params)
    up4 = upstream.BlurIG().GetMask(x.astype(np.float64), fn, batch_size=4, **params)
    scale = np.abs(up1).max()
    assert np.abs(up4 - up1).max() > 1e-2 * scale  # the upstream bug
    for bs in (1, 4, 7, 12):
        ours = salplug.explain(model, x, "blur_ig", target=2, batch_size=bs, **params).values
        np.testing.assert_allclose(ours, up1, rtol=0, atol=1e-5 * scale)


# -- batching and targets ------------------------------------------------------------------

def test_per_sample_targets_batch_equals_singles():
    model = make_cnn()
    x = np.random.default_rng(5).random((3, 16, 16, 3)).astype(np.float32)
    targets = [1, 4, 7]
    params = dict(max_sigma=5, steps=10)
    batch = salplug.explain(model, x, "blur_ig", target=targets, batch_size=7, **params).values
    singles = np.stack([salplug.explain(model, x[i], "blur_ig", target=t, batch_size=3, **params).values
                        for i, t in enumerate(targets)])
    np.testing.assert_allclose(batch, singles, rtol=0, atol=1e-5 * np.abs(singles).max())
    assert not np.allclose(singles[0], salplug.explain(model, x[0], "blur_ig", target=2, **params).values)


def test_torch_nchw_round_trip():
    torch = pytest.importorskip("torch")
    model = make_cnn()
    x = np.random.default_rng(6).random((2, 12, 12, 3)).astype(np.float32)
    a = salplug.explain(model, torch.from_numpy(x).permute(0, 3, 1, 2), "blurig", target=1, max_sigma=3, steps=6)
    b = salplug.explain(model, x, "blur_ig", target=1, max_sigma=3, steps=6)
    assert tuple(a.values.shape) == (2, 3, 12, 12)
    np.testing.assert_allclose(a.values.permute(0, 2, 3, 1).numpy(), b.values, rtol=0, atol=1e-9)


def test_rows_are_packed_into_batches():
    # N * steps rows in ceil(N * steps / batch_size) model calls of at most batch_size rows.
    w = np.ones((6, 6, 1))
    fn, calls = counting(linear_call_model_function(w))
    x = np.random.default_rng(7).random((3, 6, 6, 1)).astype(np.float32)
    salplug.explain(fn, x, "blur_ig", backend="callable", max_sigma=2, steps=10, batch_size=8)
    assert sum(calls) == 30 and len(calls) == 4 and max(calls) <= 8


@pytest.mark.parametrize("params,error", [
    (dict(max_sigma=0), ParameterError), (dict(max_sigma=-1), ParameterError),
    (dict(max_sigma=float("inf")), ParameterError), (dict(max_sigma="50"), ParameterError),
    (dict(steps=0), ParameterError), (dict(steps=2.5), ParameterError), (dict(steps=True), ParameterError),
    (dict(grad_step=0), ParameterError), (dict(grad_step=float("nan")), ParameterError),
    (dict(sqrt="yes"), ParameterError), (dict(sigma=4), ParameterError),
])
def test_bad_parameters_raise_before_any_model_call(params, error):
    fn, calls = counting(linear_call_model_function(np.ones((6, 6, 1))))
    x = np.zeros((6, 6, 1), np.float32)
    with pytest.raises(error):
        salplug.explain(fn, x, "blur_ig", backend="callable", **params)
    assert calls == []


def test_non_image_input_is_rejected_before_any_model_call():
    fn, calls = counting(linear_call_model_function(np.ones(5)))
    with pytest.raises(InputError, match="images"):
        salplug.explain(fn, np.zeros((2, 5), np.float32), "blur_ig", backend="callable")
    assert calls == []
