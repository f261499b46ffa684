"""salplug.core / salplug.metrics.pic / salplug.tf1 against the upstream ``saliency`` package.

Same inputs, same call_model_function, same NumPy seeds: the outputs equal upstream's wherever
upstream works (tolerances: salplug feeds float32 batches where upstream feeds float64, so
rtol 1e-4 on model-based maps; exact where no model is involved). Where upstream is broken on
NumPy 2 (Guided IG's ``np.quantile(interpolation=)``, PIC's ``np.trapz``) the oracle runs with
a compatibility shim for the removed NumPy API. Also: upstream bugs that are fixed, module
attributes that stay patchable, salplug's additions (batch_size).
"""

from __future__ import annotations

import glob
import os
from unittest import mock

import numpy as np
import pytest
import saliency.core as up
from conftest import make_cnn, quadratic_call_model_function, torch_call_model_function
from saliency.metrics import pic as up_pic

import salplug.core as sp
from salplug.metrics import pic as sp_pic

RTOL, ATOL = 1e-4, 1e-6


def image(h=12, w=12, c=3, seed=0):
    """A float64 image whose values are exact in float32 (both packages see the same numbers)."""
    return np.random.default_rng(seed).uniform(0, 1, (h, w, c)).astype(np.float32).astype(np.float64)


class Counting:
    """Wrap a call_model_function and count calls and rows."""

    def __init__(self, fn):
        self.fn, self.calls, self.rows = fn, 0, 0

    def __call__(self, x_value_batch, call_model_args=None, expected_keys=None):
        self.calls += 1
        self.rows += len(x_value_batch)
        return self.fn(x_value_batch, call_model_args=call_model_args, expected_keys=expected_keys)


@pytest.fixture(scope="module")
def torch_model():
    pytest.importorskip("torch")
    model = make_cnn(seed=3)
    return model, torch_call_model_function(model, target=2, layer=model.conv2)


def test_gradients_and_smoothgrad_equal_upstream(torch_model):
    _, fn = torch_model
    x = image()
    np.testing.assert_allclose(sp.GradientSaliency().GetMask(x, fn), up.GradientSaliency().GetMask(x, fn),
                               rtol=RTOL, atol=ATOL)
    for magnitude in (True, False):
        np.random.seed(7)
        ours = sp.GradientSaliency().GetSmoothedMask(x, fn, nsamples=6, magnitude=magnitude)
        np.random.seed(7)
        theirs = up.GradientSaliency().GetSmoothedMask(x, fn, nsamples=6, magnitude=magnitude)
        np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)
        assert ours.dtype == np.float32


def test_smoothgrad_consumes_the_global_random_state_like_upstream(torch_model):
    _, fn = torch_model
    x = image()
    np.random.seed(3)
    sp.GradientSaliency().GetSmoothedMask(x, fn, nsamples=4)
    ours = np.random.random()
    np.random.seed(3)
    up.GradientSaliency().GetSmoothedMask(x, fn, nsamples=4)
    assert ours == np.random.random()


def test_integrated_gradients_equal_upstream(torch_model):
    _, fn = torch_model
    x, base = image(), image(seed=1) * 0.1
    for kwargs in ({}, {"x_steps": 10, "batch_size": 4}, {"x_baseline": base, "x_steps": 7, "batch_size": 3}):
        np.testing.assert_allclose(sp.IntegratedGradients().GetMask(x, fn, **kwargs),
                                   up.IntegratedGradients().GetMask(x, fn, **kwargs), rtol=RTOL, atol=ATOL)
    np.random.seed(1)
    ours = sp.IntegratedGradients().GetSmoothedMask(x, fn, nsamples=3, x_steps=5, batch_size=5)
    np.random.seed(1)
    theirs = up.IntegratedGradients().GetSmoothedMask(x, fn, nsamples=3, x_steps=5, batch_size=5)
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)


def test_integrated_gradients_call_pattern_matches_upstream(torch_model):
    _, fn = torch_model
    ours, theirs = Counting(fn), Counting(fn)
    sp.IntegratedGradients().GetMask(image(), ours, x_steps=11, batch_size=4)
    up.IntegratedGradients().GetMask(image(), theirs, x_steps=11, batch_size=4)
    assert (ours.calls, ours.rows) == (theirs.calls, theirs.rows) == (3, 11)


def test_blur_ig_equals_upstream(torch_model):
    _, fn = torch_model
    x = image()
    for kwargs in ({"steps": 6, "max_sigma": 4}, {"steps": 5, "max_sigma": 3, "batch_size": 5},
                   {"steps": 4, "max_sigma": 3, "sqrt": True, "batch_size": 1}):
        np.testing.assert_allclose(sp.BlurIG().GetMask(x, fn, **kwargs), up.BlurIG().GetMask(x, fn, **kwargs),
                                   rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(sp.gaussian_blur(x, 2.0), up.blur_ig.gaussian_blur(x, 2.0), rtol=1e-12, atol=1e-12)


def test_blur_ig_sqrt_with_batches_is_fixed(torch_model):
    """Upstream gives every point of a batch the last point's step width when sqrt=True."""
    _, fn = torch_model
    x = image()
    kwargs = {"steps": 6, "max_sigma": 4, "sqrt": True}
    single = up.BlurIG().GetMask(x, fn, batch_size=1, **kwargs)
    ours = sp.BlurIG().GetMask(x, fn, batch_size=6, **kwargs)
    theirs = up.BlurIG().GetMask(x, fn, batch_size=6, **kwargs)
    np.testing.assert_allclose(ours, single, rtol=1e-3, atol=1e-5)
    assert not np.allclose(theirs, single, rtol=1e-2)


def test_guided_ig_equals_upstream_with_numpy2_shim(torch_model, quantile_shim):
    _, fn = torch_model
    x, base = image(6, 6), image(6, 6, seed=2) * 0.2
    for kwargs in ({"x_steps": 8}, {"x_steps": 6, "x_baseline": base, "fraction": 0.5, "max_dist": 0.1}):
        np.testing.assert_allclose(sp.GuidedIG().GetMask(x, fn, **kwargs), up.GuidedIG().GetMask(x, fn, **kwargs),
                                   rtol=1e-3, atol=1e-5)


def test_guided_ig_runs_on_numpy2_without_shim(torch_model):
    _, fn = torch_model
    with pytest.raises(TypeError, match="interpolation"):
        up.GuidedIG().GetMask(image(6, 6), fn, x_steps=4)
    assert np.isfinite(sp.GuidedIG().GetMask(image(6, 6), fn, x_steps=4)).all()


def test_grad_cam_equals_upstream(torch_model):
    _, fn = torch_model
    x = image(16, 16)
    for kwargs in ({}, {"should_resize": False, "three_dims": False}, {"three_dims": False}):
        np.testing.assert_allclose(sp.GradCam().GetMask(x, fn, **kwargs), up.GradCam().GetMask(x, fn, **kwargs),
                                   rtol=RTOL, atol=ATOL)


def test_occlusion_equals_upstream_and_batches(torch_model):
    _, fn = torch_model
    x = image(9, 9)
    theirs_fn, ours_fn = Counting(fn), Counting(fn)
    theirs = up.Occlusion().GetMask(x, theirs_fn, size=4, value=0.5)
    ours = sp.Occlusion().GetMask(x, ours_fn, size=4, value=0.5)
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=1e-5)
    assert ours_fn.calls == theirs_fn.calls == 37  # one call per window and one for the input
    batched_fn = Counting(fn)
    batched = sp.Occlusion().GetMask(x, batched_fn, size=4, value=0.5, batch_size=64)
    np.testing.assert_allclose(batched, ours, rtol=RTOL, atol=1e-5)
    assert batched_fn.calls == 1


def test_xrai_equals_upstream():
    w = np.random.default_rng(5).normal(size=(32, 32, 3))
    fn = quadratic_call_model_function(w)
    x = image(32, 32)
    for algorithm in ("full", "fast"):
        params = {"steps": 10, "algorithm": algorithm, "return_xrai_segments": True, "return_ig_attributions": True}
        ours = sp.XRAI().GetMaskWithDetails(x, fn, batch_size=10, extra_parameters=sp.XRAIParameters(**params))
        theirs = up.XRAI().GetMaskWithDetails(x, fn, batch_size=10, extra_parameters=up.XRAIParameters(**params))
        np.testing.assert_allclose(ours.ig_attribution, theirs.ig_attribution, rtol=RTOL, atol=ATOL)
        np.testing.assert_array_equal(ours.segments, theirs.segments)
        np.testing.assert_allclose(ours.attribution_mask, theirs.attribution_mask, rtol=RTOL, atol=ATOL)
        assert ours.attribution_mask.dtype == np.float64
        for a, b in zip(ours.baselines, theirs.baselines):
            np.testing.assert_array_equal(a, b)


def test_xrai_with_base_attribution_and_segments_is_exact():
    x, attr = image(20, 20), np.random.default_rng(1).normal(size=(20, 20, 3))
    segs = []
    for y0, x0 in [(0, 0), (5, 5), (10, 0), (0, 10)]:
        m = np.zeros((20, 20), bool)
        m[y0:y0 + 10, x0:x0 + 10] = True
        segs.append(m)
    for flatten in (True, False):
        params = {"return_xrai_segments": True, "flatten_xrai_segments": flatten}
        ours = sp.XRAI().GetMaskWithDetails(x, None, base_attribution=attr, segments=segs,
                                            extra_parameters=sp.XRAIParameters(**params))
        theirs = up.XRAI().GetMaskWithDetails(x, None, base_attribution=attr, segments=segs,
                                              extra_parameters=up.XRAIParameters(**params))
        np.testing.assert_allclose(ours.attribution_mask, theirs.attribution_mask, rtol=1e-12)
        np.testing.assert_array_equal(np.asarray(ours.segments), np.asarray(theirs.segments))


def test_xrai_integrated_gradients_is_patchable():
    """What upstream's xrai_test does: replace xrai.IntegratedGradients before building XRAI."""
    x = image(16, 16)
    ig = [np.full(x.shape, 1.0), np.full(x.shape, 3.0)]
    with mock.patch("salplug.core.xrai.IntegratedGradients") as patched:
        patched.return_value.GetMask.side_effect = ig
        out = sp.XRAI().GetMaskWithDetails(x, None, batch_size=7, extra_parameters=sp.XRAIParameters(
            steps=3, return_ig_attributions=True))
    calls = patched.return_value.GetMask.call_args_list
    assert len(calls) == 2 and all(c.kwargs["batch_size"] == 7 and c.kwargs["x_steps"] == 3 for c in calls)
    np.testing.assert_array_equal(calls[0].kwargs["x_baseline"], np.full(x.shape, x.min()))
    assert out.ig_attribution[0] is ig[0]
    np.testing.assert_allclose(out.attribution_mask, 2.0)  # the mean of the two patched maps


def test_core_saliency_subclass_is_smoothed_like_upstream():
    """A user's own GetMask: GetSmoothedMask calls it once per noisy copy with upstream's noise."""

    def make(base):
        class Square(base):
            def GetMask(self, x_value, call_model_function, call_model_args=None, scale=1.0):
                return scale * np.asarray(x_value) ** 2

        return Square()

    x = image(4, 4, 1)
    np.random.seed(11)
    ours = make(sp.CoreSaliency).GetSmoothedMask(x, None, nsamples=5, scale=2.0)
    np.random.seed(11)
    theirs = make(up.CoreSaliency).GetSmoothedMask(x, None, nsamples=5, scale=2.0)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


def test_shape_errors_are_upstreams_value_errors():
    def bad(x_value_batch, call_model_args=None, expected_keys=None):
        return {sp.INPUT_OUTPUT_GRADIENTS: np.zeros(x_value_batch.shape[1:])}

    with pytest.raises(ValueError, match="INPUT_OUTPUT_GRADIENTS"):
        sp.IntegratedGradients().GetMask(image(4, 4), bad, x_steps=3, batch_size=3)


def test_visualizations():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(10, 10, 3))
    np.testing.assert_allclose(sp.VisualizeImageGrayscale(m), up.VisualizeImageGrayscale(m), rtol=1e-12)
    ours, theirs = sp.VisualizeImageDiverging(m, percentile=80), up.VisualizeImageDiverging(m, percentile=80)
    inside = theirs >= 0
    np.testing.assert_allclose(ours[inside], theirs[inside], rtol=1e-12)
    assert theirs.min() < 0 and ours.min() == 0 and ours.max() <= 1  # upstream clipped to [-1, 1]


# -- PIC -----------------------------------------------------------------------------------------
@pytest.fixture
def trapz_shim(monkeypatch):
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)


def pic_image():
    from skimage import data
    from skimage.transform import resize

    return (resize(data.chelsea(), (48, 64), preserve_range=True, anti_aliasing=True)).astype(np.uint8)


def test_pic_helpers_equal_upstream():
    img = pic_image()
    np.random.seed(4)
    ours = sp_pic.generate_random_mask(48, 64, fraction=0.05)
    np.random.seed(4)
    theirs = up_pic.generate_random_mask(48, 64, fraction=0.05)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(sp_pic.create_blurred_image(img, ours), up_pic.create_blurred_image(img, ours))
    gray = img.mean(axis=2).astype(np.uint8)
    np.testing.assert_array_equal(sp_pic.create_blurred_image(gray, ours), up_pic.create_blurred_image(gray, ours))
    assert sp_pic.estimate_image_entropy(img) == up_pic.estimate_image_entropy(img)
    full = np.ones((48, 64), bool)
    assert sp_pic.create_blurred_image(gray, full).shape == gray.shape  # upstream returns (H, W, 1)


def test_pic_metric_equals_upstream(trapz_shim):
    img = pic_image()
    mask = sp_pic.generate_random_mask(48, 64, fraction=0.02, seed=0)
    saliency_map = np.random.default_rng(1).random((48, 64))
    truth = img.astype(np.float64)

    def pred(batch):  # higher when closer to the original image
        return [float(np.exp(-np.abs(batch[0] - truth).mean() / 20.0))]

    kwargs = {"saliency_thresholds": [0.05, 0.1, 0.3, 0.6], "min_pred_value": 0.5, "num_data_points": 50}
    ours = sp_pic.compute_pic_metric(img, saliency_map, mask, pred, **kwargs)
    theirs = up_pic.compute_pic_metric(img, saliency_map, mask, pred, **kwargs)
    np.testing.assert_allclose(ours.curve_y, theirs.curve_y, rtol=1e-12)
    np.testing.assert_allclose(ours.curve_x, theirs.curve_x, rtol=1e-12)
    assert ours.auc == pytest.approx(theirs.auc, rel=1e-12)
    assert ours.predictions == theirs.predictions and ours.thresholds == theirs.thresholds
    for a, b in zip(ours.blurred_images, theirs.blurred_images):
        np.testing.assert_array_equal(a, b)
    for method in ("mean", "median"):
        agg = sp_pic.aggregate_individual_pic_results([ours, ours], method=method)
        ref = up_pic.aggregate_individual_pic_results([theirs, theirs], method=method)
        assert agg.auc == pytest.approx(ref.auc, rel=1e-12)


def test_pic_aggregate_rejects_different_x_axes():
    a = sp_pic.PicMetricResult([0.0, 0.5, 1.0], [0.0, 0.5, 1.0], [], [], [], 0.5)
    b = sp_pic.PicMetricResult([0.0, 0.25, 1.0], [0.0, 0.5, 1.0], [], [], [], 0.5)
    with pytest.raises(ValueError, match="x-axis"):
        sp_pic.aggregate_individual_pic_results([a, b])


def test_metrics_package_is_light():
    import json
    import subprocess
    import sys

    code = ("import sys, json, salplug.metrics, salplug.core, salplug.tf1\n"
            "print(json.dumps([m for m in ('torch', 'tensorflow', 'scipy.interpolate', 'PIL.Image') "
            "if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


# -- tf1 -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tf1_graph():
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, (None, 6, 6, 2), name="x")
        label = v1.placeholder(tf.int32, (), name="label")
        w1 = tf.constant(np.random.default_rng(0).normal(size=(3, 3, 2, 4)), tf.float32)
        conv = tf.nn.relu(tf.nn.conv2d(x, w1, 1, "SAME"))
        w2 = v1.Variable(np.random.default_rng(1).normal(size=(6 * 6 * 4, 3)).astype(np.float32))
        logits = tf.matmul(tf.reshape(conv, (-1, 6 * 6 * 4)), w2)
        y = logits[:, 1]
        y_scalar = logits[0][label]
        sess = v1.Session(graph=graph)
        sess.run(v1.global_variables_initializer())
    return {"graph": graph, "sess": sess, "x": x, "y": y, "y_scalar": y_scalar, "label": label, "conv": conv}


def test_tf1_methods_equal_upstream(tf1_graph):
    import saliency.tf1 as up_tf1

    import salplug.tf1 as sp_tf1

    g = tf1_graph
    args = (g["graph"], g["sess"], g["y"], g["x"])
    x = image(6, 6, 2)
    np.testing.assert_allclose(sp_tf1.GradientSaliency(*args).GetMask(x), up_tf1.GradientSaliency(*args).GetMask(x),
                               rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(sp_tf1.IntegratedGradients(*args).GetMask(x, x_steps=6, batch_size=3),
                               up_tf1.IntegratedGradients(*args).GetMask(x, x_steps=6, batch_size=3),
                               rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(sp_tf1.Occlusion(*args).GetMask(x, size=3),
                               up_tf1.Occlusion(*args).GetMask(x, size=3), rtol=RTOL, atol=1e-5)
    cam = (g["graph"], g["sess"], g["y"], g["x"], g["conv"])
    np.testing.assert_allclose(sp_tf1.GradCam(*cam).GetMask(x), up_tf1.GradCam(*cam).GetMask(x),
                               rtol=RTOL, atol=ATOL)
    np.random.seed(2)
    ours = sp_tf1.IntegratedGradients(*args).GetSmoothedMask(x, nsamples=3, x_steps=4, batch_size=4)
    np.random.seed(2)
    theirs = up_tf1.IntegratedGradients(*args).GetSmoothedMask(x, nsamples=3, x_steps=4, batch_size=4)
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)


def test_tf1_guided_backprop_equals_upstream_without_files(tf1_graph, tmp_path, monkeypatch):
    import saliency.tf1 as up_tf1

    import salplug.tf1 as sp_tf1

    g = tf1_graph
    x = image(6, 6, 2) - 0.5
    feed = {g["label"]: 1}
    theirs = up_tf1.GuidedBackprop(g["graph"], g["sess"], g["y_scalar"], g["x"],
                                   tmp_ckpt_path=str(tmp_path / "ckpt")).GetMask(x, feed_dict=feed)
    monkeypatch.chdir(tmp_path)
    before = set(tmp_path.rglob("*"))
    upstream_default = "/tmp/guided_backprop_ckpt*"  # upstream's default tmp_ckpt_path

    def default_files():
        return {(p, os.stat(p).st_mtime_ns) for p in glob.glob(upstream_default)}

    before_default = default_files()

    saver = pytest.importorskip("tensorflow").compat.v1.train.Saver

    def no_files(*args, **kwargs):
        raise AssertionError("salplug must not write or read a checkpoint")

    with pytest.MonkeyPatch.context() as mp:  # upstream (below) still needs the real Saver
        mp.setattr(saver, "save", no_files)
        mp.setattr(saver, "restore", no_files)
        gbp = sp_tf1.GuidedBackprop(g["graph"], g["sess"], g["y_scalar"], g["x"])
        np.testing.assert_allclose(gbp.GetMask(x, feed_dict=feed), theirs, rtol=RTOL, atol=ATOL)
        plain = sp_tf1.GradientSaliency(g["graph"], g["sess"], g["y"], g["x"]).GetMask(x)
        guided = sp_tf1.GuidedBackprop(g["graph"], g["sess"], g["y"], g["x"]).GetMask(x, feed_dict=None)
    assert set(tmp_path.rglob("*")) == before  # no checkpoint written here ...
    assert default_files() == before_default  # ... nor (new or rewritten) at upstream's default path
    assert guided.shape == x.shape and not np.allclose(guided, plain)
    with pytest.raises(TypeError):  # upstream iterates feed_dict=None
        up_tf1.GuidedBackprop(g["graph"], g["sess"], g["y"], g["x"],
                              tmp_ckpt_path=str(tmp_path / "ckpt2")).GetMask(x, feed_dict=None)
    np.random.seed(5)
    smoothed = gbp.GetSmoothedMask(x, feed_dict=feed, nsamples=3)
    assert smoothed.shape == x.shape and np.isfinite(smoothed).all()


def test_pic_curves_of_erratic_predictions_and_their_aggregates_equal_upstream(trapz_shim):
    # predictions that rise and fall as pixels are revealed (keep_monotonous matters), three
    # different curves (mean and median differ), and a min_pred_value equal to the original's
    import zlib

    img = pic_image()
    mask = sp_pic.generate_random_mask(48, 64, fraction=0.02, seed=0)
    truth = img.astype(np.float64)

    def pred(batch):
        if np.array_equal(batch[0], img):
            return [1.0]
        jitter = zlib.crc32(np.ascontiguousarray(batch[0]).tobytes()) / 2**32
        return [float(0.9 * jitter * np.exp(-np.abs(batch[0] - truth).mean() / 20.0))]

    kwargs = {"saliency_thresholds": [0.05, 0.2, 0.5], "min_pred_value": 1.0, "num_data_points": 50}
    maps = [np.random.default_rng(10 + k).random((48, 64)) for k in range(3)]
    ours = [sp_pic.compute_pic_metric(img, m, mask, pred, **kwargs) for m in maps]
    theirs = [up_pic.compute_pic_metric(img, m, mask, pred, **kwargs) for m in maps]
    for a, b in zip(ours, theirs):  # keep_monotonous (the default) made them monotonous alike
        np.testing.assert_allclose(a.curve_y, b.curve_y, rtol=1e-12)
    erratic = sp_pic.compute_pic_metric(img, maps[0], mask, pred, keep_monotonous=False, **kwargs)
    assert (np.diff(erratic.curve_y) < 0).any()  # without it the curve does fall somewhere
    for method in ("mean", "median"):
        agg = sp_pic.aggregate_individual_pic_results(ours, method=method)
        ref = up_pic.aggregate_individual_pic_results(theirs, method=method)
        np.testing.assert_allclose(agg.curve_y, ref.curve_y, rtol=1e-12)
        assert agg.auc == pytest.approx(ref.auc, rel=1e-12)
    mean = sp_pic.aggregate_individual_pic_results(ours, method="mean").curve_y
    assert not np.allclose(mean, sp_pic.aggregate_individual_pic_results(ours, method="median").curve_y)
