"""salplug.tf1 runs on salplug's ``tf1`` backend: equal to upstream ``saliency.tf1``, gradient ops
built once by the backend (under its ``salplug/`` name scope), finalized graphs through the
backend's in-memory copy, one session.run per call_model_function call on the caller's graph,
feeds passed through, copies fed the current weights.
"""

from __future__ import annotations

import re
import unittest.mock as mock

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="salplug.tf1 needs TensorFlow: pip install 'salplug[tf]'")
v1 = tf.compat.v1

import salplug.tf1 as sp  # noqa: E402
from salplug.backends import tf1 as tf1_backend  # noqa: E402

SIZE = 8
RTOL, ATOL = 1e-4, 1e-6


def make_graph(seed: int = 0) -> dict:
    """conv 3x3 + ReLU ('conv'), dense: logits (N, 3); y = logits[:, 1], y_scalar = logits[0][label]."""
    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, (None, SIZE, SIZE, 3), name="x")
        label = v1.placeholder(tf.int32, (), name="label")
        w1 = v1.Variable(rng.normal(0, 0.5, (3, 3, 3, 4)).astype(np.float32), name="w1")
        conv = tf.nn.relu(tf.nn.conv2d(x, w1, 1, "SAME") - 0.1, name="conv")
        w2 = v1.Variable(rng.normal(0, 0.1, (SIZE * SIZE * 4, 3)).astype(np.float32), name="w2")
        logits = tf.matmul(tf.reshape(conv, (-1, SIZE * SIZE * 4)), w2, name="logits")
        y = tf.identity(logits[:, 1], name="y")
        y_scalar = tf.identity(logits[0][label], name="y_scalar")
        sess = v1.Session(graph=graph)
        sess.run(v1.global_variables_initializer())
    return {"graph": graph, "sess": sess, "x": x, "y": y, "y_scalar": y_scalar, "label": label, "conv": conv}


def image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (SIZE, SIZE, 3)).astype(np.float32)


def masks(module, g: dict, x: np.ndarray, ckpt: str | None = None) -> dict:
    """The maps of every wrapper of ``module`` (salplug.tf1 or saliency.tf1) on graph ``g``."""
    args = (g["graph"], g["sess"], g["y"], g["x"])
    gbp = {"tmp_ckpt_path": ckpt} if ckpt else {}
    return {
        "gradients": module.GradientSaliency(*args).GetMask(x),
        "ig": module.IntegratedGradients(*args).GetMask(x, x_steps=6, batch_size=3),
        "blur_ig": module.BlurIG(*args).GetMask(x, steps=6, max_sigma=4, batch_size=3),
        "grad_cam": module.GradCam(*args, g["conv"]).GetMask(x),
        "occlusion": module.Occlusion(*args).GetMask(x, size=3),
        "guided_backprop": module.GuidedBackprop(g["graph"], g["sess"], g["y_scalar"], g["x"], **gbp)
        .GetMask(x, feed_dict={g["label"]: 2}),
    }


# -- equal to upstream -----------------------------------------------------------------------------
def test_every_wrapper_equals_upstream_saliency_tf1(tmp_path, quantile_shim):
    up = pytest.importorskip("saliency.tf1", reason="the upstream `saliency` package is the oracle here")
    g = make_graph()
    x = image()
    ours, theirs = masks(sp, g, x), masks(up, g, x, ckpt=str(tmp_path / "ckpt"))
    for name, expected in theirs.items():
        assert ours[name].shape == expected.shape, name
        np.testing.assert_allclose(ours[name], expected, rtol=RTOL, atol=ATOL, err_msg=name)
    args = (g["graph"], g["sess"], g["y"], g["x"])
    np.testing.assert_allclose(sp.GuidedIG(*args).GetMask(x, x_steps=6), up.GuidedIG(*args).GetMask(x, x_steps=6),
                               rtol=1e-3, atol=1e-5)
    params = (sp.XRAIParameters(steps=4), up.XRAIParameters(steps=4))
    np.testing.assert_allclose(sp.XRAI(*args).GetMask(x, batch_size=4, extra_parameters=params[0]),
                               up.XRAI(*args).GetMask(x, batch_size=4, extra_parameters=params[1]), rtol=1e-6)


def test_call_model_function_answers_equal_upstream_for_scalar_and_batched_y():
    up = pytest.importorskip("saliency.tf1", reason="the upstream `saliency` package is the oracle here")
    g = make_graph()
    keys = [sp.OUTPUT_LAYER_VALUES, sp.INPUT_OUTPUT_GRADIENTS, sp.CONVOLUTION_LAYER_VALUES,
            sp.CONVOLUTION_OUTPUT_GRADIENTS]
    for y, batch in ((g["y"], np.stack([image(1), image(2)])), (g["y_scalar"], image(1)[None])):
        ours = sp.create_tf1_call_model_function(g["graph"], g["sess"], y, g["x"], g["conv"])
        theirs = up.create_tf1_call_model_function(g["graph"], g["sess"], y, g["x"], g["conv"])
        got = ours(batch, call_model_args={g["label"]: 1}, expected_keys=keys)
        want = theirs(batch, call_model_args={g["label"]: 1}, expected_keys=keys)
        assert list(got) == keys
        for key in keys:
            expected = np.reshape(want[key], (1,)) if np.ndim(want[key]) == 0 else want[key]  # scalar y: batch axis
            np.testing.assert_allclose(got[key], expected, rtol=1e-6, atol=1e-7, err_msg=key)


# -- on the backend --------------------------------------------------------------------------------
def test_gradient_ops_are_the_backends_and_shared_with_it():
    g = make_graph()
    graph, x = g["graph"], image()
    before = {op.name for op in graph.get_operations()}
    sp.GradientSaliency(graph, g["sess"], g["y"], g["x"]).GetMask(x)
    sp.GradCam(graph, g["sess"], g["y"], g["x"], g["conv"]).GetMask(x)
    added = {op.name for op in graph.get_operations()} - before
    assert added and all(re.match(r"salplug(_\d+)?/", name) for name in added), sorted(added)[:5]
    # the backend's own primitive finds those ops in its cache: nothing more is built
    adapter = tf1_backend.TF1Adapter(tf1_backend.TF1Model(graph, g["sess"], g["x"], g["y"], g["conv"]), upstream=True)
    grads, layer_grads = adapter.run_fetches(x[None], ["input_gradients", "layer_gradients"])
    assert len(graph.get_operations()) == len(before) + len(added)
    np.testing.assert_allclose(grads[0], sp.GradientSaliency(graph, g["sess"], g["y"], g["x"]).GetMask(x), rtol=1e-6)
    assert layer_grads.shape == (1, SIZE, SIZE, 4)


def test_a_finalized_graph_works_where_upstream_cannot_add_gradient_ops(tmp_path):
    g = make_graph()
    x = image()
    expected = masks(sp, g, x)
    g["graph"].finalize()
    finalized = masks(sp, g, x)
    for name, value in expected.items():
        np.testing.assert_allclose(finalized[name], value, rtol=RTOL, atol=ATOL, err_msg=name)
    smoothed = sp.IntegratedGradients(g["graph"], g["sess"], g["y"], g["x"]).GetSmoothedMask(x, nsamples=2, x_steps=4)
    assert smoothed.shape == x.shape and np.isfinite(smoothed).all()
    up = pytest.importorskip("saliency.tf1", reason="the upstream `saliency` package is the oracle here")
    with pytest.raises(RuntimeError, match="finalized"):
        up.GradientSaliency(g["graph"], g["sess"], g["y"], g["x"])


def test_a_hundred_calls_add_no_graph_node_after_the_first():
    g = make_graph()
    graph, sess, x = g["graph"], g["sess"], image()
    args = (graph, sess, g["y"], g["x"])
    runs = [
        lambda: sp.GradientSaliency(*args).GetMask(x),
        lambda: sp.IntegratedGradients(*args).GetMask(x, x_steps=2, batch_size=2),
        lambda: sp.GradCam(*args, g["conv"]).GetMask(x),
        lambda: sp.Occlusion(*args).GetMask(x, size=4, batch_size=64),
        lambda: sp.GuidedBackprop(graph, sess, g["y_scalar"], g["x"]).GetMask(x, feed_dict={g["label"]: 0}),
        lambda: sp.create_tf1_call_model_function(graph, sess, g["y_scalar"], g["x"], g["conv"])(
            x[None], {g["label"]: 2}, [sp.OUTPUT_LAYER_VALUES, sp.INPUT_OUTPUT_GRADIENTS]),
    ]
    first = [run() for run in runs]
    nodes = len(graph.get_operations())
    (copy,) = tf1_backend._COPIES[sess].values()  # the guided copy
    copy_nodes = len(copy.graph.get_operations())
    for i in range(100):
        out = runs[i % len(runs)]()
        if not isinstance(out, dict):
            np.testing.assert_array_equal(out, first[i % len(runs)])
    assert len(graph.get_operations()) == nodes
    assert len(copy.graph.get_operations()) == copy_nodes


def weight_loader(g: dict):
    """A function that loads new random values (from a seed) into g's variables; ops built now."""
    graph, sess = g["graph"], g["sess"]
    with graph.as_default():
        variables = v1.global_variables()
        news = [v1.placeholder(v.dtype.base_dtype, v.shape) for v in variables]
        assign = [v.assign(n) for v, n in zip(variables, news)]

    def load(seed):
        rng = np.random.default_rng(seed)
        sess.run(assign, {n: rng.normal(0, 0.5, n.shape.as_list()).astype(np.float32) for n in news})

    return load


def test_every_call_uses_the_current_weights_as_upstream_objects_built_after_the_update(tmp_path):
    up = pytest.importorskip("saliency.tf1", reason="the upstream `saliency` package is the oracle here")
    g, twin = make_graph(), make_graph()  # twin: upstream's graph, loaded with the same new weights
    load, load_twin = weight_loader(g), weight_loader(twin)
    x, feed = image(), {g["label"]: 2}
    gbp = sp.GuidedBackprop(g["graph"], g["sess"], g["y_scalar"], g["x"])
    first = gbp.GetMask(x, feed_dict=feed)  # builds the guided copy
    g["graph"].finalize()
    sp.GradientSaliency(g["graph"], g["sess"], g["y"], g["x"]).GetMask(x)  # builds the finalized graph's copy
    load(7)
    load_twin(7)
    expected = up.GuidedBackprop(twin["graph"], twin["sess"], twin["y_scalar"], twin["x"],
                                 tmp_ckpt_path=str(tmp_path / "ckpt")).GetMask(x, feed_dict={twin["label"]: 2})
    assert not np.allclose(first, expected, rtol=RTOL, atol=ATOL)  # the update matters
    fresh = sp.GuidedBackprop(g["graph"], g["sess"], g["y_scalar"], g["x"]).GetMask(x, feed_dict=feed)
    np.testing.assert_allclose(fresh, expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(gbp.GetMask(x, feed_dict=feed), expected, rtol=RTOL, atol=ATOL)  # old object too
    grads = sp.GradientSaliency(g["graph"], g["sess"], g["y"], g["x"]).GetMask(x)
    np.testing.assert_allclose(grads, up.GradientSaliency(twin["graph"], twin["sess"], twin["y"], twin["x"]).GetMask(x),
                               rtol=RTOL, atol=ATOL)


# -- sessions and feeds ----------------------------------------------------------------------------
def test_one_session_run_per_call_and_feed_keys_reach_it_unchanged():
    g = make_graph()
    spy = mock.MagicMock(wraps=g["sess"])  # as upstream's tests wrap the session
    fn = sp.create_tf1_call_model_function(g["graph"], spy, g["y_scalar"], g["x"], g["conv"])
    feed = {g["label"]: 1, "label:0": 1}  # a tensor and a tensor name: both are session.run's to read
    keys = [sp.INPUT_OUTPUT_GRADIENTS, sp.CONVOLUTION_LAYER_VALUES]
    for n in range(1, 4):
        fn(image(n)[None], call_model_args=feed, expected_keys=keys)
        assert spy.run.call_count == n
    sent = spy.run.call_args[1]["feed_dict"]
    assert g["label"] in sent and "label:0" in sent and sent[g["x"]].shape == (1, SIZE, SIZE, 3)
    assert feed == {g["label"]: 1, "label:0": 1}  # the caller's dict is not modified
    marker = object()
    spy.run.return_value = [marker]
    out = fn(image()[None], call_model_args={"foo": "bar"}, expected_keys=[sp.OUTPUT_LAYER_VALUES])
    assert spy.run.call_args[1]["feed_dict"]["foo"] == "bar"
    assert out[sp.OUTPUT_LAYER_VALUES].shape == (1,) and out[sp.OUTPUT_LAYER_VALUES][0] is marker  # batch axis
    ig = sp.IntegratedGradients(g["graph"], mock.MagicMock(wraps=g["sess"]), g["y"], g["x"])
    ig.GetMask(image(), x_steps=6, batch_size=2)
    assert ig.session.run.call_count == 3


def test_upstream_errors_of_the_call_model_function():
    g = make_graph()
    fn = sp.create_tf1_call_model_function(g["graph"], g["sess"], g["y"], g["x"])
    with pytest.raises(RuntimeError, match="Cannot return key CONVOLUTION_OUTPUT_GRADIENTS because no conv_layer"):
        fn(image()[None], expected_keys=[sp.CONVOLUTION_OUTPUT_GRADIENTS])
    with pytest.raises(ValueError, match="Invalid expected key FOO_BAR"):
        fn(image()[None], expected_keys=["FOO_BAR"])
    no_y = sp.create_tf1_call_model_function(g["graph"], g["sess"], None, g["x"])
    with pytest.raises(RuntimeError, match="Cannot return key INPUT_OUTPUT_GRADIENTS because no y"):
        no_y(image()[None], expected_keys=[sp.INPUT_OUTPUT_GRADIENTS])


def test_a_scalar_y_smooths_one_noisy_copy_per_run_whatever_the_batch_size():
    # y = logits[0][k] scores row 0 only: several copies per run gave ~1/batch_size of the map
    tf = pytest.importorskip("tensorflow")
    import salplug.tf1 as sp_tf1

    v1 = tf.compat.v1
    r = np.random.RandomState(0)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [None, 8, 8, 3])
        conv = tf.nn.conv2d(x, r.normal(size=(3, 3, 3, 4)).astype(np.float32), 1, "SAME")
        logits = tf.matmul(tf.reduce_mean(tf.nn.relu(conv), [1, 2]), r.normal(size=(4, 5)).astype(np.float32))
        y = logits[0][2]
        sess = v1.Session(graph=g)
    img = r.uniform(size=(8, 8, 3)).astype(np.float32)
    for obj, kw in [(sp_tf1.GradientSaliency(g, sess, y, x), {}), (sp_tf1.GradCam(g, sess, y, x, conv), {}),
                    (sp_tf1.GuidedIG(g, sess, y, x), {"x_steps": 4}), (sp_tf1.Occlusion(g, sess, y, x), {"size": 3})]:
        np.random.seed(0)
        one = obj.GetSmoothedMask(img, nsamples=6, **kw)
        np.random.seed(0)
        np.testing.assert_allclose(obj.GetSmoothedMask(img, nsamples=6, batch_size=3, **kw), one, rtol=1e-5, atol=1e-7)
    occlusion = sp_tf1.Occlusion(g, sess, y, x)
    np.testing.assert_allclose(occlusion.GetMask(img, size=3, batch_size=4), occlusion.GetMask(img, size=3), rtol=1e-5,
                               atol=1e-7)
    with pytest.raises(ValueError, match="Unexpected shape for y tensor"):  # as upstream's GetMask check
        sp_tf1.XRAI(g, sess, y, x).GetSmoothedMask(img, nsamples=2, batch_size=3,
                                                   extra_parameters=sp_tf1.XRAIParameters(steps=3))
