"""Grayscale, diverging (upstream semantics) and heatmap overlay visualizers."""

from __future__ import annotations

import numpy as np
import pytest
import saliency.core as upstream
from PIL import Image

from salplug.errors import InputError, ParameterError, UnknownComponentError
from salplug.visualizers import render, save_png


@pytest.fixture
def values():
    return np.random.default_rng(0).normal(size=(20, 30, 3))


def test_grayscale_matches_upstream(values):
    np.testing.assert_allclose(render("grayscale", values), upstream.VisualizeImageGrayscale(values))
    np.testing.assert_allclose(render("gray", values, percentile=90),
                               upstream.VisualizeImageGrayscale(values, percentile=90))


def test_diverging_matches_upstream_within_the_image_range(values):
    ours = render("diverging", values)
    # upstream clips to [-1, 1]; an image lives in [0, 1], so salplug clips at 0 too.
    np.testing.assert_allclose(ours, np.clip(upstream.VisualizeImageDiverging(values), 0, 1))
    assert (render("diverging", np.zeros((4, 4, 3))) == 0.5).all()  # all-zero map: 0 maps to 0.5


def test_zero_maps_to_half_in_diverging():
    v = np.zeros((3, 3, 1))
    v[0, 0, 0], v[2, 2, 0] = 1.0, -1.0
    img = render("diverging", v, percentile=100)
    assert img[1, 1] == 0.5 and img[0, 0] == 1.0 and img[2, 2] == 0.0


def test_heatmap_alone_and_over_an_image(values):
    alone = render("heatmap", values)
    assert alone.shape == (20, 30, 3) and 0 <= alone.min() and alone.max() <= 1
    photo = np.full((20, 30, 3), 255, np.uint8)
    over = render("overlay", values, image=photo, alpha=0.25)
    np.testing.assert_allclose(over, 0.75 + 0.25 * alone)
    chw = render("heatmap", values, image=np.ones((3, 20, 30)), alpha=0.0)
    np.testing.assert_allclose(chw, 1.0)


def test_bad_visualizer_input():
    with pytest.raises(InputError, match="one map"):
        render("grayscale", np.zeros((2, 4, 4, 3)))
    with pytest.raises(ParameterError, match="percentile"):
        render("grayscale", np.zeros((4, 4, 3)), percentile=0)
    with pytest.raises(InputError, match="overlay image"):
        render("heatmap", np.zeros((4, 4, 3)), image=np.zeros((5, 5, 3)))
    with pytest.raises(ParameterError, match="colormap"):
        render("heatmap", np.zeros((4, 4, 3)), cmap="nope")
    with pytest.raises(UnknownComponentError, match="Did you mean 'heatmap'"):
        render("heatmapp", np.zeros((4, 4, 3)))


def test_save_png_writes_a_readable_image(tmp_path, values):
    path = save_png(render("heatmap", values), tmp_path / "sub" / "h.png")
    with Image.open(path) as img:
        assert img.size == (30, 20) and img.mode == "RGB"
    gray = save_png(render("grayscale", values), tmp_path / "g.png")
    with Image.open(gray) as img:
        assert img.mode == "L"


def test_overlay_reads_the_photo_range_from_its_dtype():
    """uint8 is 0..255 even when dark (max 1), uint16 0..65535, floats [0, 1]."""
    values = np.zeros((4, 4, 3))
    dark = np.ones((4, 4, 3), np.uint8)  # max() == 1, still a uint8 photo: 1/255
    np.testing.assert_allclose(render("heatmap", values, image=dark, alpha=0.0), 1 / 255)
    deep = np.full((4, 4, 3), 65535, np.uint16)
    np.testing.assert_allclose(render("heatmap", values, image=deep, alpha=0.0), 1.0)
    ints = np.full((4, 4, 3), 51, np.int64)  # plain Python-int arrays: 0..255
    np.testing.assert_allclose(render("heatmap", values, image=ints, alpha=0.0), 0.2)
    floats = np.full((4, 4, 3), 0.25)
    np.testing.assert_allclose(render("heatmap", values, image=floats, alpha=0.0), 0.25)
