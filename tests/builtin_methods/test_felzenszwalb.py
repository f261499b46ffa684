"""Felzenszwalb at several scales: the shared-edge compiled passes give scikit-image's labels."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data
from skimage.segmentation import felzenszwalb

import salplug
from salplug.builtin_methods import _felzenszwalb, _segments


def test_numba_is_installed_for_the_tests():
    # The dev extra installs numba, so the compiled path below is what the suite checks.
    assert _felzenszwalb.compiled_kernel() is not None
    assert _felzenszwalb.shares_edges()


def _images():
    rng = np.random.default_rng(0)
    chelsea = _segments.normalize_for_segmentation(data.chelsea().astype(np.float32))      # 224 x 224
    coffee = _segments.normalize_for_segmentation(data.coffee()[::4, ::5].astype(np.float32), None)
    noise = rng.uniform(-1, 1, (40, 50, 3))
    ties = np.round(rng.uniform(size=(64, 64, 3)) * 3) / 3      # few colours: many equal edge weights
    grey = rng.uniform(size=(33, 47, 1))
    flat = np.zeros((20, 30, 3))
    return {"chelsea": chelsea, "coffee": coffee, "noise": noise, "ties": ties, "grey": grey, "flat": flat}


@pytest.mark.parametrize("name", list(_images()))
def test_xrai_scales_equal_scikit_image(name):
    image = _images()[name]
    ours = _felzenszwalb.felzenszwalb_scales(image, _segments.FELZENSZWALB_SCALES, 0.8, 150)
    for scale, labels in zip(_segments.FELZENSZWALB_SCALES, ours):
        expected = felzenszwalb(image, scale=scale, sigma=0.8, min_size=150)
        np.testing.assert_array_equal(labels, expected, err_msg=f"{name}, scale {scale}")


@pytest.mark.parametrize("sigma,min_size,scales", [(0.0, 1, (1, 10)), (2.0, 20, (5, 300)), (0.5, 5, (3000,))])
def test_other_parameters_equal_scikit_image(sigma, min_size, scales):
    image = _images()["coffee"]
    ours = _felzenszwalb.felzenszwalb_scales(image, scales, sigma, min_size)
    for scale, labels in zip(scales, ours):
        expected = felzenszwalb(image, scale=scale, sigma=sigma, min_size=min_size)
        np.testing.assert_array_equal(labels, expected)
        assert labels.max() > 0 or scale == 3000  # not trivially one segment


@pytest.fixture
def without_numba(monkeypatch):
    monkeypatch.setattr(_felzenszwalb, "_KERNEL", None)
    monkeypatch.setattr(_felzenszwalb, "_UNAVAILABLE", "disabled by the test")


def test_without_numba_each_scale_is_one_scikit_image_call(without_numba, monkeypatch):
    calls = []
    import skimage.segmentation

    real = skimage.segmentation.felzenszwalb
    monkeypatch.setattr(skimage.segmentation, "felzenszwalb", lambda *a, **k: calls.append(k["scale"]) or real(*a, **k))
    assert _segments.scale_groups() == [(s,) for s in _segments.FELZENSZWALB_SCALES]
    image = _images()["noise"]
    labels = _felzenszwalb.felzenszwalb_scales(image, (50, 100), 0.8, 150)
    assert calls == [50, 100]
    np.testing.assert_array_equal(labels[1], real(image, scale=100, sigma=0.8, min_size=150))


def test_xrai_is_the_same_with_and_without_numba(monkeypatch):
    rng = np.random.default_rng(4)
    x = np.stack([data.astronaut()[::8, ::8], data.coffee()[::6, ::9][:64, :64]]).astype(np.float32) / 255
    attr = rng.normal(size=x.shape[:3])
    with_numba = salplug.explain(lambda *a, **k: None, x, "xrai", backend="callable", base_attribution=attr,
                                 return_segments=True)
    monkeypatch.setattr(_felzenszwalb, "_KERNEL", None)
    monkeypatch.setattr(_felzenszwalb, "_UNAVAILABLE", "disabled by the test")
    without = salplug.explain(lambda *a, **k: None, x, "xrai", backend="callable", base_attribution=attr,
                              return_segments=True)
    np.testing.assert_array_equal(with_numba.values, without.values)
    np.testing.assert_array_equal(with_numba.extras["segments"], without.extras["segments"])


def test_a_broken_numba_warns_once_and_falls_back(monkeypatch):
    monkeypatch.setattr(_felzenszwalb, "_KERNEL", None)
    monkeypatch.setattr(_felzenszwalb, "_UNAVAILABLE", None)

    def broken():
        raise RuntimeError("Numba needs NumPy 2.3 or less")

    monkeypatch.setattr(_felzenszwalb, "_load_kernel", broken)
    with pytest.warns(RuntimeWarning, match="failed to load .*NumPy 2.3"):
        assert _felzenszwalb.compiled_kernel() is None
    assert not _felzenszwalb.shares_edges()
    image = _images()["noise"]
    labels = _felzenszwalb.felzenszwalb_scales(image, (100,), 0.8, 150)[0]  # no second warning
    np.testing.assert_array_equal(labels, felzenszwalb(image, scale=100, sigma=0.8, min_size=150))
