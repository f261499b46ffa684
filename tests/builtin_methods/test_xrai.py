"""XRAI: completeness, region structure, a slow reference, upstream agreement, batches, errors."""

from __future__ import annotations

import numpy as np
import pytest
import saliency.core as upstream
from conftest import linear_call_model_function, make_cnn, quadratic_call_model_function, torch_call_model_function

import salplug
from salplug.builtin_methods import _segments
from salplug.errors import ParameterError

torch = pytest.importorskip("torch")


def image(h=16, w=16, c=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (h, w, c)).astype(np.float32)


def natural(name="chelsea", size=(224, 224)):
    from skimage import data
    from skimage.transform import resize

    img = getattr(data, name)()
    return (resize(img, size, order=1, preserve_range=True, anti_aliasing=True) / 255).astype(np.float32)


def smooth_attribution(h, w):
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    a = np.sin(6 * xx) * np.cos(4 * yy) + 0.5 * xx
    return np.stack([a, 0.5 * a + 0.1 * yy, -a], axis=-1).astype(np.float32)


def never_called(*args, **kwargs):
    raise AssertionError("the model must not be called")


def upstream_xrai(x, attr, segments=None, algorithm="full", area_threshold=1.0, min_pixel_diff=50):
    params = upstream.XRAIParameters(area_threshold=area_threshold, algorithm=algorithm,
                                     return_xrai_segments=True)
    params.experimental_params["min_pixel_diff"] = min_pixel_diff
    out = upstream.XRAI().GetMaskWithDetails(x, never_called, base_attribution=attr, segments=segments,
                                             extra_parameters=params)
    return out.attribution_mask, out.segments


def block_segments(h, w):
    """Overlapping rectangles, with duplicates (ties) and masks hidden by others."""
    masks = []
    for y0, y1, x0, x1 in [(0, 12, 0, 12), (0, 12, 0, 12), (4, 20, 4, 20), (12, 24, 0, 24),
                           (0, 24, 12, 24), (6, 10, 6, 10), (0, 24, 0, 6), (16, 24, 16, 24)]:
        m = np.zeros((h, w), bool)
        m[y0:y1, x0:x1] = True
        masks.append(m)
    return masks


class CountingCall:
    """A linear call_model_function that counts its calls."""

    def __init__(self, w):
        self.fn = linear_call_model_function(w)
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


# -- completeness and region structure ---------------------------------------------------------
def test_total_equals_ig_total_and_regions_are_constant():
    # f = sum(w x^2): IG from a constant baseline b is w (x^2 - b^2) exactly with upstream's rule.
    rng = np.random.default_rng(1)
    w = rng.uniform(0.5, 2, size=(40, 40, 3))
    x = natural("coffee", (40, 40))
    out = salplug.explain(quadratic_call_model_function(w), x, "xrai", backend="callable", steps=5,
                          min_pixel_diff=5, return_ig=True, return_segments=True, flatten_segments=False)
    lo, hi = x.min(), x.max()
    ig = w * (x**2 - (lo**2 + hi**2) / 2)
    np.testing.assert_allclose(out.extras["attribution"][0], ig, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out.extras["ig_attribution"][0], [w * (x**2 - lo**2), w * (x**2 - hi**2)],
                               rtol=1e-4, atol=1e-6)
    assert out.values.shape == (40, 40)
    ranked = out.extras["attribution"][0].max(-1).astype(np.float64)
    assert out.values.astype(np.float64).sum() == pytest.approx(ranked.sum(), abs=1e-6 * np.abs(ranked).sum())
    masks = out.extras["segments"][0]
    assert masks.sum(0).max() == 1 and masks.any(0).all()  # a partition of the image
    for mask in masks:
        assert np.ptp(out.values[mask]) <= 1e-6 * np.abs(out.values).max()
    means = [out.values[m][0] for m in masks]
    assert means[:-1] == sorted(means[:-1], reverse=True)  # by value; an uncovered rest comes last


# -- a slow, obviously correct reference on a natural image ------------------------------------
def reference_segments(img):
    from skimage.morphology import dilation, disk
    from skimage.segmentation import felzenszwalb
    from skimage.transform import resize

    im = (img - img.min()) / (img.max() - img.min()) * 2 - 1
    im = resize(im, (224, 224), order=3, mode="constant", preserve_range=True, anti_aliasing=True)
    masks = []
    for scale in (50, 100, 150, 250, 500, 1200):
        seg = felzenszwalb(im, scale=scale, sigma=0.8, min_size=150)
        seg = resize(seg, img.shape[:2], order=0, preserve_range=True, mode="constant",
                     anti_aliasing=False).astype(int)
        for label in range(seg.min(), seg.max() + 1):
            masks.append(dilation(seg == label, disk(5)))
    return np.array(masks)


def reference_xrai(attr, masks, area_threshold=1.0, min_pixel_diff=50):
    """Greedy over every remaining mask at every step; returns (values, ranks)."""
    covered = np.zeros(attr.shape, bool)
    remaining = list(range(len(masks)))
    picked = []
    while covered.mean() <= area_threshold:
        new = masks[remaining] & ~covered
        counts = new.reshape(len(remaining), -1).sum(1)
        keep = counts >= min_pixel_diff
        remaining = [m for m, k in zip(remaining, keep) if k]
        if not remaining:
            break
        gains = [attr[n].mean() for n, k in zip(new, keep) if k]
        best = int(np.argmax(gains))  # first of equal gains
        added = masks[remaining[best]] & ~covered
        picked.append((added, gains[best]))
        covered |= added
        del remaining[best]
    values = np.zeros(attr.shape)
    ranks = np.zeros(attr.shape, int)
    for added, gain in picked:
        values[added] = gain
    for rank, (added, _) in enumerate(sorted(picked, key=lambda p: -p[1]), 1):
        ranks[added] = rank
    if not covered.all():
        values[~covered] = attr[~covered].mean()
        ranks[~covered] = len(picked) + 1
    return values, ranks


@pytest.fixture(scope="module")
def chelsea():
    """A 224 x 224 natural image, a smooth 3-channel attribution, and the reference segments."""
    img = natural("chelsea")
    return img, smooth_attribution(224, 224), reference_segments(img)


def test_full_matches_slow_reference_on_natural_image(chelsea):
    img, attr, masks = chelsea
    inc = _segments.felzenszwalb_incidence(img)
    assert inc.n_masks == len(masks)
    np.testing.assert_array_equal(inc.csr.toarray().astype(bool), masks.reshape(len(masks), -1))
    out = salplug.explain(never_called, img, "xrai", backend="callable", base_attribution=attr,
                          return_segments=True)
    values, ranks = reference_xrai(attr.max(-1).astype(np.float64), masks)
    np.testing.assert_array_equal(out.extras["segments"][0], ranks)
    np.testing.assert_allclose(out.values, values, rtol=1e-5, atol=1e-6)
    assert out.values.sum() == pytest.approx(attr.max(-1).sum(), rel=1e-5)


def test_matches_upstream_with_base_attribution_on_natural_image(chelsea):
    # Upstream ranks the reference segments (the same masks as its own Felzenszwalb segments,
    # see test_segments_match_upstream_dilated_masks); salplug segments the image itself.
    img, attr, masks = chelsea
    for algorithm in ("full", "fast"):
        expected, ranks = upstream_xrai(img, attr, list(masks), algorithm)
        out = salplug.explain(never_called, img, "xrai", backend="callable", base_attribution=attr,
                              algorithm=algorithm, return_segments=True)
        np.testing.assert_array_equal(out.extras["segments"][0], ranks)
        np.testing.assert_allclose(out.values, expected, rtol=1e-5, atol=1e-6)


def test_segments_match_upstream_dilated_masks():
    from saliency.core.xrai import _get_segments_felzenszwalb

    img = natural("astronaut", (48, 40))
    expected = np.array(_get_segments_felzenszwalb(img))
    inc = _segments.felzenszwalb_incidence(img)
    np.testing.assert_array_equal(expected, reference_segments(img))
    assert inc.n_masks == len(expected)
    np.testing.assert_array_equal(inc.csr.toarray().astype(bool), expected.reshape(len(expected), -1))


# -- agreement with upstream on a model -------------------------------------------------------
def test_matches_upstream_on_cnn():
    model = make_cnn(seed=0)
    img = natural("coffee", (64, 64))
    params = upstream.XRAIParameters(steps=10, return_xrai_segments=True, return_ig_attributions=True)
    expected = upstream.XRAI().GetMaskWithDetails(img, torch_call_model_function(model, 3), batch_size=20,
                                                  extra_parameters=params)
    out = salplug.explain(model, torch.from_numpy(img).permute(2, 0, 1), "xrai", target=3, steps=10,
                          batch_size=32, return_segments=True, return_ig=True)
    scale = np.abs(expected.attribution_mask).max()
    np.testing.assert_allclose(out.values.numpy(), expected.attribution_mask, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_array_equal(out.extras["segments"][0], expected.segments)
    np.testing.assert_allclose(out.extras["ig_attribution"][0], expected.ig_attribution, rtol=1e-4,
                               atol=1e-5 * np.abs(expected.ig_attribution).max())
    np.testing.assert_allclose(out.extras["baselines"][0], expected.baselines)


# -- custom segments, thresholds, ties, the fast algorithm -------------------------------------
@pytest.mark.parametrize("algorithm", ["full", "fast"])
@pytest.mark.parametrize("area_threshold,min_pixel_diff", [(1.0, 50), (1.0, 1), (0.4, 10), (0.05, 50)])
def test_custom_segments_match_upstream(algorithm, area_threshold, min_pixel_diff):
    x = image(24, 24, seed=4)
    # piecewise-constant integer attribution: many exact ties between segment means
    attr = np.kron(np.random.default_rng(5).integers(-3, 4, (4, 4, 3)), np.ones((6, 6, 1))).astype(np.float32)
    masks = block_segments(24, 24)
    expected, ranks = upstream_xrai(x, attr, masks, algorithm, area_threshold, min_pixel_diff)
    out = salplug.explain(never_called, x, "xrai", backend="callable", base_attribution=attr, segments=masks,
                          algorithm=algorithm, area_threshold=area_threshold, min_pixel_diff=min_pixel_diff,
                          return_segments=True)
    np.testing.assert_array_equal(out.extras["segments"][0], ranks)
    np.testing.assert_allclose(out.values, expected, rtol=1e-6, atol=1e-6)
    assert out.values.sum() == pytest.approx(attr.max(-1).sum(), rel=1e-6, abs=1e-6)


def test_area_threshold_stops_early_and_merges_the_rest():
    img = natural("coffee", (64, 64))
    attr = smooth_attribution(64, 64)
    inc = _segments.felzenszwalb_incidence(img)
    segs = inc.csr.toarray().astype(bool).reshape(-1, 64, 64)
    full = salplug.explain(never_called, img, "xrai", backend="callable", base_attribution=attr, segments=segs,
                           return_segments=True, flatten_segments=False)
    part = salplug.explain(never_called, img, "xrai", backend="callable", base_attribution=attr, segments=segs,
                           area_threshold=0.3, return_segments=True, flatten_segments=False)
    masks_full, masks_part = full.extras["segments"][0], part.extras["segments"][0]
    assert len(masks_part) < len(masks_full)
    assert 0.3 < masks_part[:-1].any(0).mean() < 1  # the loop stops once the area exceeds 0.3
    rest = masks_part[-1]
    assert part.values[rest] == pytest.approx(attr.max(-1)[rest].mean(), rel=1e-5)


def test_label_image_segments_equal_boolean_masks():
    x = image(24, 24, seed=6)
    attr = smooth_attribution(24, 24)
    labels = np.repeat(np.repeat(np.arange(16).reshape(4, 4), 6, 0), 6, 1) * 3 + 7
    masks = [labels == v for v in np.unique(labels)]
    a = salplug.explain(never_called, x, "xrai", backend="callable", base_attribution=attr, segments=labels,
                        min_pixel_diff=1)
    b = salplug.explain(never_called, x, "xrai", backend="callable", base_attribution=attr, segments=masks,
                        min_pixel_diff=1)
    np.testing.assert_array_equal(a.values, b.values)
    # disjoint segments: each region is one label cell holding its own mean
    means = attr.max(-1).reshape(4, 6, 4, 6).mean((1, 3))
    np.testing.assert_allclose(a.values, np.kron(means, np.ones((6, 6))), rtol=1e-5)


def test_min_pixel_diff_drops_small_segments():
    x = image(24, 24, seed=7)
    attr = np.zeros((24, 24), np.float32)
    attr[8:10, 8:10] = 10.0  # a hot spot inside a small segment
    small = np.zeros((24, 24), bool)
    small[7:11, 7:11] = True  # 16 pixels
    big = np.ones((24, 24), bool)
    kept = salplug.explain(never_called, x, "xrai", backend="callable", base_attribution=attr,
                           segments=[big, small], min_pixel_diff=16)
    dropped = salplug.explain(never_called, x, "xrai", backend="callable", base_attribution=attr,
                              segments=[big, small], min_pixel_diff=17)
    assert kept.values[8, 8] == pytest.approx(40 / 16) and kept.values[0, 0] == 0
    np.testing.assert_allclose(dropped.values, attr.mean())


def test_fast_sorts_once_and_ignores_overlap():
    x = image(24, 24, seed=8)
    attr = np.zeros((24, 24), np.float32)
    attr[:, :8] = 3.0
    attr[:, 16:] = 1.0

    def cols(a, b):
        m = np.zeros((24, 24), bool)
        m[:, a:b] = True
        return m

    # means over whole segments: A 3 > B 1.5 > C 2/3; after A, C's new part (2/3) beats B's (0)
    segs = [cols(0, 8), cols(0, 16), cols(12, 24)]
    full = salplug.explain(never_called, x, "xrai", backend="callable", base_attribution=attr,
                           segments=segs, min_pixel_diff=1, return_segments=True)
    fast = salplug.explain(never_called, x, "xrai", backend="callable", base_attribution=attr,
                           segments=segs, min_pixel_diff=1, algorithm="fast", return_segments=True)
    row = lambda *parts: np.concatenate([np.full(n, v) for n, v in parts])  # noqa: E731
    np.testing.assert_allclose(full.values[5], row((8, 3), (4, 0), (12, 2 / 3)), rtol=1e-6)
    np.testing.assert_allclose(fast.values[5], row((8, 3), (8, 0), (8, 1)), rtol=1e-6)
    np.testing.assert_array_equal(full.extras["segments"][0][5], row((8, 1), (4, 3), (12, 2)))
    np.testing.assert_array_equal(fast.extras["segments"][0][5], row((8, 1), (8, 3), (8, 2)))


# -- details, batches, composition ------------------------------------------------------------
def test_details_in_extras():
    model = make_cnn(seed=2)
    x = torch.from_numpy(natural("chelsea", (32, 32))).permute(2, 0, 1)[None]
    out = salplug.explain(model, x, "xrai", target=1, steps=4, return_ig=True, return_segments=True)
    ex = out.extras
    assert out.values.shape == (1, 32, 32)
    assert ex["baselines"].shape == (1, 2, 32, 32, 3) and ex["ig_attribution"].shape == (1, 2, 32, 32, 3)
    assert ex["baselines"][0, 0].max() == x.min() and ex["baselines"][0, 1].min() == x.max()
    np.testing.assert_allclose(ex["attribution"], ex["ig_attribution"].mean(1), rtol=1e-6)
    ranks = ex["segments"][0]
    assert ranks.min() == 1 and set(np.unique(ranks)) == set(range(1, ranks.max() + 1))
    labels = np.arange(32 * 32).reshape(32, 32) // 50  # cheap custom segments for the rest
    ranks = salplug.explain(model, x, "xrai", target=1, steps=4, segments=labels, min_pixel_diff=1,
                            return_segments=True).extras["segments"][0]
    masks = salplug.explain(model, x, "xrai", target=1, steps=4, segments=labels, min_pixel_diff=1,
                            return_segments=True, flatten_segments=False).extras["segments"][0]
    assert len(masks) == ranks.max() == len(np.unique(labels))
    np.testing.assert_array_equal(masks, [ranks == k for k in range(1, len(masks) + 1)])
    plain = salplug.explain(model, x, "xrai", target=1, steps=4, segments=labels)
    assert set(plain.extras) == {"baselines"}


def test_batch_with_per_sample_targets_equals_single_calls():
    model = make_cnn(seed=3)
    x = torch.from_numpy(np.stack([natural("chelsea", (32, 32)), natural("coffee", (32, 32))])).permute(0, 3, 1, 2)
    both = salplug.explain(model, x, "xrai", target=[1, 4], steps=6, batch_size=5, return_segments=True)
    for i, t in enumerate([1, 4]):
        one = salplug.explain(model, x[i:i + 1], "xrai", target=t, steps=6, batch_size=5, return_segments=True)
        np.testing.assert_array_equal(both.extras["segments"][i], one.extras["segments"][0])
        np.testing.assert_allclose(both.values[i].numpy(), one.values[0].numpy(), rtol=1e-4,
                                   atol=1e-6 * float(one.values.abs().max()))


def test_per_sample_custom_segments_and_baselines():
    w = np.random.default_rng(9).normal(size=(16, 16, 3))
    x = np.stack([image(seed=10), image(seed=11)])
    labels = np.stack([np.repeat(np.arange(4), 4)[None, :].repeat(16, 0),
                       np.repeat(np.arange(4), 4)[:, None].repeat(16, 1)])
    fn = linear_call_model_function(w)
    both = salplug.explain(fn, x, "xrai", backend="callable", segments=labels, baselines=[0.0, x[:1] * 0 + 0.5],
                           steps=3, min_pixel_diff=1)
    for i in range(2):
        one = salplug.explain(fn, x[i], "xrai", backend="callable", segments=labels[i], min_pixel_diff=1,
                              base_attribution=w * (x[i] - 0.25))  # mean of IG from 0 and from 0.5
        np.testing.assert_allclose(both.values[i], one.values, rtol=1e-4, atol=1e-6)
    masks_1 = list(labels[1][None] == np.arange(4)[:, None, None])  # the same cells as boolean masks
    per_list = salplug.explain(fn, x, "xrai", backend="callable", segments=[labels[0], masks_1],
                               baselines=[0.0, 0.5], steps=3, min_pixel_diff=1)
    np.testing.assert_allclose(per_list.values, both.values, rtol=1e-6)


def test_uses_the_registered_integrated_gradients(host):
    calls = []

    class FakeIG:
        def explain(self, ctx, x, targets, *, baseline=None, steps=25):
            calls.append(len(x))
            return x - ctx.as_canonical(baseline, x, "baseline")

    class Plugin:
        @salplug.hookimpl
        def register_methods(self, register):
            register("integrated_gradients", FakeIG, override=True)

    host.add_plugin(Plugin(), "fake_ig")
    x = np.stack([image(20, 20, seed=12), image(20, 20, seed=13)])
    labels = np.arange(400).reshape(20, 20) // 37
    out = salplug.explain(never_called, x, "xrai", backend="callable", host=host, steps=3, segments=labels,
                          min_pixel_diff=1)
    assert calls == [4]  # one run for both images and both baselines
    flat = x.reshape(2, -1)
    expected = x - ((flat.min(1) + flat.max(1)) / 2).reshape(2, 1, 1, 1)
    ref = salplug.explain(never_called, x, "xrai", backend="callable", base_attribution=expected,
                          segments=labels, min_pixel_diff=1)
    np.testing.assert_allclose(out.values, ref.values, rtol=1e-6)


# -- bad parameters fail before any model call -------------------------------------------------
@pytest.mark.parametrize("params,match", [
    ({"algorithm": "slow"}, "algorithm"),
    ({"area_threshold": 0.0}, "area_threshold"),
    ({"area_threshold": 1.5}, "area_threshold"),
    ({"area_threshold": "all"}, "area_threshold"),
    ({"min_pixel_diff": -1}, "min_pixel_diff"),
    ({"steps": 0}, "steps"),
    ({"segments": [np.ones((8, 8), bool)]}, "shape"),
    ({"segments": np.zeros((16, 15), int)}, "shape"),
    ({"segments": np.zeros((16, 16), float)}, "dtype"),
    ({"segments": [np.ones((16, 16), bool), np.ones((16, 8), bool)]}, "shape"),
    ({"segments": []}, "empty"),
    ({"baselines": [np.zeros((8, 8, 3))]}, "baselines"),
    ({"baselines": np.zeros((16, 16, 3))}, "list"),
    ({"base_attribution": np.zeros((8, 8))}, "base_attribution"),
    ({"return_segments": "yes"}, "return_segments"),
    ({"ig_params": {"steps": 3}}, "steps"),
    ({"threads": 0}, "threads"),
    ({"threads": 1.5}, "threads"),
    ({"threads": True}, "threads"),
])
def test_bad_parameters_raise_before_any_model_call(params, match):
    fn = CountingCall(np.ones((16, 16, 3)))
    with pytest.raises(ParameterError, match=match):
        salplug.explain(fn, image(), "xrai", backend="callable", **params)
    assert fn.calls == 0


def test_batch_segments_must_match_batch_size():
    fn = CountingCall(np.ones((16, 16, 3)))
    x = np.stack([image(seed=1), image(seed=2), image(seed=3)])
    with pytest.raises(ParameterError, match="3 images"):
        salplug.explain(fn, x, "xrai", backend="callable", segments=np.zeros((2, 16, 16), int))
    with pytest.raises(ParameterError, match="3 images"):
        salplug.explain(fn, x, "xrai", backend="callable", segments=[np.zeros((16, 16), int)] * 2)
    assert fn.calls == 0


def test_threads_choose_the_segmentation_pool_and_not_the_result(monkeypatch):
    from salplug.builtin_methods import _segments

    pools = []
    real = _segments.default_pool

    def spy(jobs, threads=None, concurrent=False):
        pool = real(jobs, threads, concurrent)
        pools.append(None if pool is None else pool._max_workers)
        return pool

    monkeypatch.setattr(_segments, "default_pool", spy)
    monkeypatch.setattr(_segments.os, "cpu_count", lambda: 4)
    x = np.stack([image(24, 24, seed=21), image(24, 24, seed=22)])
    attr = np.random.default_rng(3).normal(size=(2, 24, 24))
    runs = {t: salplug.explain(never_called, x, "xrai", backend="callable", base_attribution=attr, threads=t)
            for t in (None, 1, 2)}
    jobs = 2 * len(_segments.scale_groups())  # 2 images x (1 job, or 6 without numba)
    assert pools == [min(jobs, 4), None, 2]  # one worker per core (at most one per job), none, two
    for t in (1, 2):
        np.testing.assert_array_equal(runs[t].values, runs[None].values)
    # one image while IG runs: the segmentation still gets a thread of its own, unless threads=1
    pools.clear()
    salplug.explain(linear_call_model_function(np.ones((24, 24, 3))), x[:1], "xrai", backend="callable", steps=2)
    salplug.explain(linear_call_model_function(np.ones((24, 24, 3))), x[:1], "xrai", backend="callable", steps=2,
                    threads=1)
    assert pools == [min(len(_segments.scale_groups()), 4), None]
