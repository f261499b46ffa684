"""Gaps a mutation test of the suite found: behaviour no test pinned down (see each test)."""

from __future__ import annotations

import numpy as np
import pytest
import saliency.core as up

import salplug
import salplug.core as sp
from conftest import host_with_method, make_cnn
from salplug.metrics.base import softmax


def quadrant_masks(size=16):
    """Four quadrants, each exactly a quarter of the image."""
    h = size // 2
    masks = []
    for r in (0, h):
        for c in (0, h):
            m = np.zeros((size, size), bool)
            m[r:r + h, c:c + h] = True
            masks.append(m)
    return masks


def xrai_both(image, masks, attribution, **params):
    def never(*args, **kwargs):
        raise AssertionError("base_attribution given: no model call")

    attribution = np.repeat(attribution[..., None], image.shape[-1], axis=-1)  # the image's shape, as upstream wants
    out = []
    for pkg in (sp, up):
        p = pkg.XRAIParameters(**params)
        p.return_xrai_segments = True
        out.append(pkg.XRAI().GetMaskWithDetails(image, never, segments=masks, base_attribution=attribution,
                                                 extra_parameters=p))
    return out


def test_xrai_full_goes_on_while_the_covered_area_equals_the_threshold():
    # after two quadrants exactly half the image is covered: with area_threshold 0.5 upstream
    # ranks a third region (<=), where a strict < would lump the rest together
    image = np.zeros((16, 16, 3))
    attribution = np.zeros((16, 16))
    for k, m in enumerate(quadrant_masks()):
        attribution[m] = 4 - k
    ours, theirs = xrai_both(image, quadrant_masks(), attribution, area_threshold=0.5)
    np.testing.assert_array_equal(ours.attribution_mask, theirs.attribution_mask)
    np.testing.assert_array_equal(ours.segments, theirs.segments)
    assert len(np.unique(ours.segments)) == 4  # three ranked regions and the rest


def test_xrai_fast_keeps_a_mask_adding_exactly_min_pixel_diff_new_pixels():
    size = 16
    first = np.zeros((size, size), bool)
    first[:8] = True  # 128 pixels
    second = first.copy()
    second.flat[128:128 + 50] = True  # exactly 50 pixels first lacks
    attribution = np.where(first, 2.0, 0.0) + np.where(second & ~first, 1.0, 0.0)
    ours, theirs = xrai_both(np.zeros((size, size, 3)), [first, second], attribution, algorithm="fast")
    np.testing.assert_array_equal(ours.attribution_mask, theirs.attribution_mask)
    np.testing.assert_array_equal(ours.segments, theirs.segments)
    assert len(np.unique(ours.segments)) == 3  # both masks ranked, and the rest


def test_grad_cam_without_relu_is_normalized_by_its_largest_magnitude(host):
    captum_attr = pytest.importorskip("captum.attr")
    torch = pytest.importorskip("torch")
    model = make_cnn()
    torch.manual_seed(0)
    x = torch.rand(3, 3, 24, 24)
    targets = [0, 5, 9]
    raw = captum_attr.LayerGradCam(model, model.conv2).attribute(x, target=targets, relu_attributions=False)
    raw = raw[:, 0].detach().numpy()
    peak = np.abs(raw).reshape(3, -1).max(axis=1)
    assert (raw.reshape(3, -1).max(axis=1) < peak).any()  # a map whose largest magnitude is negative
    ours = salplug.explain(model, x, "grad_cam", target=targets, layer="conv2", host=host, relu=False,
                           should_resize=False, three_dims=False, normalize=True).values
    np.testing.assert_allclose(ours.numpy(), raw / peak[:, None, None], rtol=1e-5, atol=1e-6)


def test_softmax_of_large_logits_is_finite():
    np.testing.assert_allclose(softmax(np.array([[1000.0, 0.0], [-1000.0, -999.0]])),
                               [[1.0, 0.0], [1 / (1 + np.e), np.e / (1 + np.e)]], rtol=1e-12, atol=1e-300)


def test_a_method_writing_into_its_input_leaves_the_callers_array_alone():
    torch = pytest.importorskip("torch")

    class Scribbler(salplug.Method):
        requires = frozenset()

        def explain(self, ctx, x, targets):
            x[...] = 0  # canonical x is salplug's own copy
            return np.ones(x.shape, np.float32)

    host = host_with_method("scribbler", Scribbler)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    images = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)  # NHWC: canonical as it is
    kept = images.copy()
    salplug.explain(model, images, "scribbler", target=0, host=host)
    np.testing.assert_array_equal(images, kept)


def test_pic_information_beyond_the_originals_counts_as_all_of_it():
    from salplug.metrics.pic import pic_curve

    # a partly revealed image that encodes larger than the original: information 1.5 is clipped to 1
    above = pic_curve([100.0, 0.0, 10.0, 150.0], [1.0, 0.0, 0.5, 0.6], num_data_points=10, min_pred_value=0.5)
    at = pic_curve([100.0, 0.0, 10.0, 100.0], [1.0, 0.0, 0.5, 0.6], num_data_points=10, min_pred_value=0.5)
    np.testing.assert_array_equal(above[1], at[1])
    assert above[2] == at[2]


def test_deletion_auc_is_taken_over_the_fractions_of_pixels_actually_deleted():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    x = np.random.default_rng(0).uniform(0, 1, (1, 7, 7, 3)).astype(np.float32)  # 49 pixels, 20 steps
    result = salplug.evaluate(model, x, ["gradients"], [("deletion", {"steps": 20})], target=1,
                              include_random=False, progress=False)
    res = next(iter(result.results.values()))
    curve = res.curves["deletion"]
    np.testing.assert_array_equal(curve.x, np.round(np.arange(21) * 49 / 20) / 49)
    assert res.scores["deletion"][0] == pytest.approx(np.trapezoid(curve.y[0], curve.x), rel=1e-12)
