"""Sparse and all-zero maps: the percentile can equal the minimum, yet the salient pixels show."""

from __future__ import annotations

import numpy as np
import pytest
import saliency.core as upstream

import salplug.core as sp
from salplug.visualizers import render


@pytest.fixture
def sparse():
    """3 salient pixels of 400: the 99th percentile of |values| is the minimum (0)."""
    m = np.zeros((20, 20, 3))
    m[5, 5], m[6, 6], m[7, 7] = 1.0, 0.5, -0.8
    return m


def test_grayscale_of_a_sparse_map_shows_the_salient_pixels(sparse):
    ours = sp.VisualizeImageGrayscale(sparse)
    with np.errstate(divide="ignore", invalid="ignore"):
        theirs = upstream.VisualizeImageGrayscale(sparse)  # 1 at the salient pixels, NaN (0/0) elsewhere
    salient = np.abs(sparse).sum(axis=2) > 0
    np.testing.assert_array_equal(ours[salient], theirs[salient])
    assert (ours[salient] == 1).all() and (ours[~salient] == 0).all()
    np.testing.assert_array_equal(render("grayscale", sparse), ours)


def test_diverging_of_a_sparse_map_keeps_zero_at_half(sparse):
    ours = sp.VisualizeImageDiverging(sparse)
    with np.errstate(divide="ignore", invalid="ignore"):
        theirs = np.clip(upstream.VisualizeImageDiverging(sparse), 0, 1)  # NaN at 0, +-inf clipped
    assert ours[0, 0] == 0.5 and ours[5, 5] == 1.0 and ours[6, 6] == 1.0 and ours[7, 7] == 0.0
    finite = np.isfinite(theirs)
    np.testing.assert_array_equal(ours[finite], theirs[finite])
    np.testing.assert_array_equal(render("diverging", sparse), ours)


def test_all_zero_map():
    zero = np.zeros((4, 5, 3))
    assert (render("grayscale", zero) == 0).all()
    assert (render("diverging", zero) == 0.5).all()
    assert (sp.VisualizeImageDiverging(zero) == 0.5).all()


def test_constant_maps_match_upstream():
    for c in (2.0, -3.0):
        const = np.full((4, 4, 1), c)
        assert (render("grayscale", const) == 0).all()  # upstream: NaN (0 / 0)
        np.testing.assert_array_equal(render("diverging", const), upstream.VisualizeImageDiverging(const))


def test_heatmap_of_a_sparse_map_is_not_uniform(sparse):
    for signed in (False, True):
        rgb = render("heatmap", sparse, signed=signed)
        assert not np.allclose(rgb[5, 5], rgb[0, 0])


def test_heatmap_keeps_a_float_photo_that_overshoots_one_a_little():
    photo = np.full((4, 4, 3), 0.5)
    photo[0, 0] = 1.0001  # a [0, 1] photo after resampling: not a 0..255 one
    out = render("heatmap", np.zeros((4, 4, 1)), image=photo, alpha=0.0)  # alpha 0: the photo itself
    np.testing.assert_allclose(out[1:, 1:], 0.5)
