"""TensorFlow 1 backend: upstream semantics, ops built once per graph, guided copy in memory, feeds."""

from __future__ import annotations

import weakref

import numpy as np
import pytest

import salplug
import salplug.types
from salplug.errors import InputError, LayerError, ParameterError, TargetError

tf = pytest.importorskip("tensorflow", reason="the tf1 backend needs TensorFlow: pip install 'salplug[tf]'")
v1 = tf.compat.v1
from salplug.backends.tf1_model import TF1Model  # noqa: E402

SIZE, CLASSES = 8, 4


class CountingSession:
    """A session proxy that counts run() calls and keeps the last one's arguments."""

    def __init__(self, session):
        self.session, self.graph, self.runs = session, session.graph, 0

    def run(self, *args, **kwargs):
        self.runs, self.last = self.runs + 1, (args, kwargs)
        return self.session.run(*args, **kwargs)


def make_graph(seed: int = 0, scale: bool = False, counting: bool = False, relu6: bool = True):
    """conv 3x3 + ReLU ('relu1'), conv 3x3 + ReLU6 ('relu2'), mean, dense: logits 'logits:0'.

    With ``scale`` the logits are multiplied by a placeholder 'scale:0' that has no default.
    """
    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, SIZE, SIZE, 3], name="x")
        w1 = v1.get_variable("w1", initializer=rng.normal(0, 0.5, (3, 3, 3, 6)).astype(np.float32))
        w2 = v1.get_variable("w2", initializer=rng.normal(0, 0.5, (3, 3, 6, 8)).astype(np.float32))
        wd = v1.get_variable("wd", initializer=rng.normal(0, 0.5, (8, CLASSES)).astype(np.float32))
        h = tf.nn.relu(tf.nn.conv2d(x, w1, 1, "SAME") + 0.1, name="relu1")
        act = tf.nn.relu6 if relu6 else tf.nn.relu
        h = act(tf.nn.conv2d(h, w2, 1, "SAME") * 4.0, name="relu2")
        y = tf.matmul(tf.reduce_mean(h, axis=[1, 2]), wd)
        s = v1.placeholder(tf.float32, [], name="scale") if scale else None
        y = tf.identity(y * s if scale else y, name="logits")
        init = v1.global_variables_initializer()
    session = v1.Session(graph=graph)
    session.run(init)
    return graph, (CountingSession(session) if counting else session), x, y


def bundle(y_index: int | None = None, **kwargs):
    graph, session, x, y = make_graph(**kwargs)
    if y_index is not None:
        with graph.as_default():
            y = tf.identity(y[:, y_index], name="score")
    return TF1Model(graph, session, x, y, conv_layer=graph.get_tensor_by_name("relu2:0"))


def images(n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, SIZE, SIZE, 3)).astype(np.float32)


def session_gradients(model: TF1Model, x: np.ndarray, targets, feed=None) -> np.ndarray:
    """d logits[n, t_n] / d x, computed by hand in a scratch copy of the graph."""
    with model.graph.as_default():
        grads = [v1.gradients(model.y[:, k], model.x)[0] for k in sorted(set(targets))]
    values = dict(zip(sorted(set(targets)), model.session.run(grads, {model.x: x, **(feed or {})})))
    return np.stack([values[k][i] for i, k in enumerate(targets)])


# -- upstream semantics -------------------------------------------------------------------------
def test_scalar_y_matches_upstream_saliency_tf1():
    saliency = pytest.importorskip("saliency.tf1", reason="the upstream `saliency` package is the oracle here")
    model = bundle(y_index=2)
    x = images(1)[0]
    ours = salplug.explain(model, x, "gradients")
    assert ours.backend == "tf1" and ours.values.shape == x.shape and ours.target is None
    ref = saliency.GradientSaliency(model.graph, model.session, model.y, model.x).GetMask(x)
    np.testing.assert_allclose(ours.values, ref, rtol=1e-5, atol=1e-7)
    ig = salplug.explain(model, x, "ig", steps=10, batch_size=4).values
    ref_ig = saliency.IntegratedGradients(model.graph, model.session, model.y, model.x).GetMask(
        x, x_steps=10, x_baseline=np.zeros_like(x), batch_size=4)
    np.testing.assert_allclose(ig, ref_ig, rtol=1e-4, atol=1e-6)
    with pytest.raises(TargetError, match="takes no target"):
        salplug.explain(model, x, "gradients", target=1)


def test_guided_backprop_matches_upstream_without_any_checkpoint_file(monkeypatch, tmp_path):
    saliency = pytest.importorskip("saliency.tf1", reason="the upstream `saliency` package is the oracle here")
    model = bundle(y_index=1, relu6=False)  # upstream overrides Relu only
    x = images(1)[0]
    ref = saliency.GuidedBackprop(model.graph, model.session, model.y, model.x,
                                  tmp_ckpt_path=str(tmp_path / "ckpt")).GetMask(x, feed_dict={})

    def no_files(*args, **kwargs):
        raise AssertionError("salplug must not write a checkpoint")

    monkeypatch.setattr(v1.train.Saver, "save", no_files)
    monkeypatch.setattr(v1.train.Saver, "restore", no_files)
    fresh = bundle(y_index=1, relu6=False)  # a graph upstream never copied
    before = len(fresh.graph.get_operations())
    ours = salplug.explain(fresh, x, "guided_backprop").values  # no feed_dict: fine (upstream crashes)
    assert len(fresh.graph.get_operations()) == before  # guided ops live in the in-memory copy only
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)
    assert np.abs(ours - salplug.explain(fresh, x, "gradients").values).max() > 0


@pytest.mark.parametrize("relu6", [False, True])
def test_guided_backprop_is_exact_for_relu_and_relu6(relu6):
    # y = W2^T act(W1^T x + b); guided d y_k / d x = W1 (g * [0 < pre (< 6)] * [g > 0]), g = W2[:, k].
    rng = np.random.default_rng(4)
    w1, b, w2 = rng.normal(0, 1, (6, 12)), rng.normal(0, 1, 12), rng.normal(0, 1, (12, 3))
    graph = tf.Graph()
    with graph.as_default():
        x_t = v1.placeholder(tf.float32, [None, 6], name="x")
        w1_t = v1.get_variable("w1", initializer=w1.astype(np.float32))
        pre = tf.matmul(x_t, w1_t) + b.astype(np.float32)
        h = tf.nn.relu6(pre) if relu6 else tf.nn.relu(pre)
        y_t = tf.matmul(h, w2.astype(np.float32))
        init = v1.global_variables_initializer()
    session = v1.Session(graph=graph)
    session.run(init)
    x = rng.uniform(-3, 3, (5, 6)).astype(np.float32)
    targets = np.array([0, 1, 2, 0, 1])
    pre_v = x @ w1 + b
    g = w2[:, targets].T
    keep = (pre_v > 0) & (g > 0) & ((pre_v < 6) if relu6 else True)
    assert not relu6 or (pre_v >= 6).any()
    out = salplug.explain(TF1Model(graph, session, x_t, y_t), x, "guided_backprop", target=targets)
    np.testing.assert_allclose(out.canonical, (g * keep) @ w1.T, rtol=1e-4, atol=1e-5)


def dense_relu_graph(resource: bool):
    """y = relu(x @ w1 + b) @ w2 with variables w1, w2; ``assign(w1, w2)`` loads new values."""
    graph = tf.Graph()
    with graph.as_default():
        x_t = v1.placeholder(tf.float32, [None, 6], name="x")
        w1_t = v1.get_variable("w1", [6, 12], use_resource=resource)
        w2_t = v1.get_variable("w2", [12, 3], use_resource=resource)
        y_t = tf.matmul(tf.nn.relu(tf.matmul(x_t, w1_t) + 0.5), w2_t)
        news = [v1.placeholder(tf.float32, w.shape) for w in (w1_t, w2_t)]
        assign = [w.assign(n) for w, n in zip((w1_t, w2_t), news)]
        init = v1.global_variables_initializer()
    session = v1.Session(graph=graph)
    session.run(init)

    def load(w1, w2):
        session.run(assign, dict(zip(news, (w1.astype(np.float32), w2.astype(np.float32)))))

    return TF1Model(graph, session, x_t, y_t), load


def dense_relu_gradients(x, targets, w1, w2, guided):
    """d y_t / d x of ``dense_relu_graph`` by hand: W1 (g * [pre > 0] (* [g > 0] if guided)), g = W2[:, t]."""
    g = w2[:, targets].T
    keep = (x @ w1 + 0.5 > 0) & ((g > 0) if guided else True)
    return (g * keep) @ w1.T


@pytest.mark.parametrize("resource", [True, False])
def test_guided_backprop_and_a_finalized_graph_use_the_current_weights(resource):
    model, load = dense_relu_graph(resource)
    rng = np.random.default_rng(5)
    x = rng.uniform(-2, 2, (4, 6)).astype(np.float32)
    targets = np.array([0, 1, 2, 1])
    weights = [(rng.normal(0, 1, (6, 12)), rng.normal(0, 1, (12, 3))) for _ in range(3)]
    load(*weights[0])
    salplug.explain(model, x, "guided_backprop", target=targets)  # the guided copy is built here
    from salplug.backends import tf1 as tf1_backend

    (copy,) = tf1_backend._COPIES[model.session].values()
    copy_nodes = len(copy.graph.get_operations())
    load(*weights[1])  # e.g. a training step
    out = salplug.explain(model, x, "guided_backprop", target=targets).canonical
    np.testing.assert_allclose(out, dense_relu_gradients(x, targets, *weights[1], guided=True), rtol=1e-4, atol=1e-5)
    assert len(copy.graph.get_operations()) == copy_nodes  # fed, not rebuilt
    model.graph.finalize()
    salplug.explain(model, x, "gradients", target=targets)  # the finalized graph's copy is built here
    load(*weights[2])
    grads = salplug.explain(model, x, "gradients", target=targets).canonical
    np.testing.assert_allclose(grads, dense_relu_gradients(x, targets, *weights[2], guided=False), rtol=1e-4, atol=1e-5)
    guided = salplug.explain(model, x, "guided_backprop", target=targets).canonical
    np.testing.assert_allclose(guided, dense_relu_gradients(x, targets, *weights[2], guided=True), rtol=1e-4, atol=1e-5)


def test_an_in_memory_copy_reads_the_weights_once_per_explain_call(monkeypatch):
    model, load = dense_relu_graph(resource=True)
    rng = np.random.default_rng(6)
    x = rng.uniform(-2, 2, (2, 6)).astype(np.float32)
    model.graph.finalize()
    salplug.explain(model, x, "gradients", target=1)  # builds the copy
    reads = []
    inner = model.session.run
    monkeypatch.setattr(model.session, "run", lambda fetches, *a, **k: reads.append(1) or inner(fetches, *a, **k))
    explainer = salplug.Explainer(model)
    explainer.explain(x, "ig", target=[0, 2], steps=8, batch_size=2)  # 8 model calls through the copy
    assert len(reads) == 1
    weights = rng.normal(0, 1, (6, 12)), rng.normal(0, 1, (12, 3))
    monkeypatch.undo()
    load(*weights)  # a training step between two calls of the same Explainer is seen by the next call
    grads = explainer.explain(x, "gradients", target=[0, 2]).canonical
    np.testing.assert_allclose(grads, dense_relu_gradients(x, np.array([0, 2]), *weights, guided=False),
                               rtol=1e-4, atol=1e-5)


def test_a_dropped_session_takes_its_cached_copy_with_it():
    import gc

    from salplug.backends import tf1 as tf1_backend

    model, _ = dense_relu_graph(resource=True)
    salplug.explain(model, np.ones((1, 6), np.float32), "guided_backprop", target=0)
    session = weakref.ref(model.session)
    assert session() in tf1_backend._COPIES
    del model, _
    gc.collect()
    assert session() is None  # the copy (which reads the session's variables) does not keep it alive


def test_logits_with_per_row_targets_and_top1():
    model = bundle()
    x = images(3, seed=1)
    out = salplug.explain(model, x, "gradients", target=[0, 3, 1])
    np.testing.assert_allclose(out.canonical, session_gradients(model, x, [0, 3, 1]), rtol=1e-5, atol=1e-7)
    top1 = salplug.explain(model, x, "gradients")
    logits = model.session.run(model.y, {model.x: x})
    assert top1.target == [int(i) for i in logits.argmax(1)]


# -- graph growth ---------------------------------------------------------------------------------
def test_a_hundred_explanations_do_not_grow_the_graph():
    model = bundle()
    x = images(2)
    runs = [("gradients", {}), ("ig", {"steps": 3}), ("grad_cam", {}), ("guided_backprop", {}),
            ("occlusion", {"size": 4, "stride": 2}), ("smoothgrad", {"nsamples": 2, "seed": 0}),
            ("guided_grad_cam", {"layer": "relu1"})]
    first = {}
    for method, params in runs:
        first[method] = salplug.explain(model, x, method, target=[1, 2], **params).canonical
    from salplug.backends import tf1 as tf1_backend

    nodes = len(model.graph.get_operations())
    (copy,) = tf1_backend._COPIES[model.session].values()
    copy_nodes = len(copy.graph.get_operations())
    for i in range(100):
        method, params = runs[i % len(runs)]
        out = salplug.explain(model, x, method, target=[1, 2], **params).canonical
        np.testing.assert_array_equal(out, first[method])
    assert len(model.graph.get_operations()) == nodes
    assert len(copy.graph.get_operations()) == copy_nodes


def test_two_bundles_of_one_graph_share_the_ops():
    model = bundle()
    salplug.explain(model, images(1), "gradients", target=1)
    nodes = len(model.graph.get_operations())
    twin = TF1Model(model.graph, model.session, "x:0", "logits:0")  # names work too
    salplug.explain(twin, images(1), "gradients", target=2)
    assert len(model.graph.get_operations()) == nodes


# -- feeds, layers, sessions -------------------------------------------------------------------------
def test_feed_dict_is_fed_and_never_mutated():
    graph, session, x_t, y_t = make_graph(scale=True)
    scale = graph.get_tensor_by_name("scale:0")
    feed = {scale: 2.0}
    model = TF1Model(graph, session, x_t, y_t, conv_layer="relu2", feed_dict=feed)
    x = images(2)
    doubled = salplug.explain(model, x, "gradients", target=[1, 2]).canonical
    once = salplug.explain(model, x, "gradients", target=[1, 2], backend_options={"feed_dict": {"scale:0": 1.0}})
    np.testing.assert_allclose(doubled, 2 * once.canonical, rtol=1e-5)
    guided = salplug.explain(model, x, "guided_backprop", target=[1, 2]).canonical  # fed in the copy too
    guided_once = salplug.explain(model, x, "guided_backprop", target=[1, 2],
                                  backend_options={"feed_dict": {scale: 1.0}}).canonical
    np.testing.assert_allclose(guided, 2 * guided_once, rtol=1e-5)
    salplug.explain(model, x, "grad_cam", target=[1, 2])
    assert feed == {scale: 2.0} and model.feed_dict is feed


def test_layers_by_tensor_name_op_name_or_default():
    model = bundle()
    x = images(2)
    default = salplug.explain(model, x, "grad_cam", target=[0, 1]).canonical
    for layer in ("relu2", "relu2:0", model.graph.get_tensor_by_name("relu2:0")):
        np.testing.assert_array_equal(salplug.explain(model, x, "grad_cam", target=[0, 1], layer=layer).canonical,
                                      default)
    with pytest.raises(LayerError, match="no tensor 'relu3'.*Did you mean 'relu"):
        salplug.explain(model, x, "grad_cam", target=0, layer="relu3")
    bare = TF1Model(model.graph, model.session, model.x, model.y)
    with pytest.raises(LayerError, match="conv_layer"):
        salplug.explain(bare, x, "grad_cam", target=0)
    with pytest.raises(LayerError, match="tensor of the model's graph"):
        salplug.explain(bare, x, "grad_cam", target=0, layer=tf.constant(1.0))


def test_bad_inputs_and_targets_are_rejected_before_any_session_run():
    model = bundle(counting=True)
    scalar = bundle(y_index=0, counting=True)
    bad = images(2)
    bad[0, 1, 1, 1] = np.inf
    cases = [
        (model, bad, {"target": 0}, InputError, "NaN or infinite"),
        (model, np.zeros((2, SIZE, SIZE, 4), np.float32), {"target": 0}, InputError, "3 input channels"),
        (model, np.zeros((2, SIZE + 1, SIZE, 3), np.float32), {"target": 0}, InputError, r"\(N, 8, 8, 3\)"),
        (model, images(2), {"target": 4}, TargetError, "out of range"),
        (model, images(2), {"target": lambda out: out[:, 0]}, TargetError, "not callables"),
        (scalar, images(2), {"target": 1}, TargetError, "takes no target"),
    ]
    for m, x, kwargs, error, match in cases:
        for method in ("gradients", "guided_backprop"):
            with pytest.raises(error, match=match):
                salplug.explain(m, x, method, **kwargs)
    adapter = salplug.Explainer(scalar).adapter
    with pytest.raises(TargetError, match="must be None"):
        adapter.input_gradients(images(2), salplug.types.Targets(np.array([0, 1])))
    assert model.session.runs == 0 and scalar.session.runs == 0


def test_a_session_with_tensor_names_and_auto_detection():
    graph, session, x_t, y_t = make_graph()
    host = salplug.get_plugin_manager(autoload=False)
    assert host.detect_backend(session) == "tf1"
    assert host.detect_backend(TF1Model(graph, session, "x:0", "logits:0")) == "tf1"
    x = images(2)
    out = salplug.explain(session, x, "gradients", target=[2, 0], backend_options={"x": "x:0", "y": "logits"})
    np.testing.assert_allclose(out.canonical, session_gradients(TF1Model(graph, session, x_t, y_t), x, [2, 0]),
                               rtol=1e-5, atol=1e-7)
    with pytest.raises(ParameterError, match="no tensor 'nope:0'"):
        salplug.explain(session, x, "gradients", backend_options={"x": "nope:0", "y": "logits"})


def test_a_finalized_graph_is_explained_through_an_in_memory_copy():
    model = bundle()
    x = images(2)
    expected = session_gradients(model, x, [1, 3])
    model.graph.finalize()
    out = salplug.explain(model, x, "gradients", target=[1, 3]).canonical
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-7)
    cam = salplug.explain(model, x, "grad_cam", target=[1, 3])
    assert np.isfinite(cam.canonical).all()


def test_tf_tensor_inputs_come_back_as_tf_tensors():
    model = bundle()
    out = salplug.explain(model, tf.constant(images(1)[0]), "gradients", target=1)
    assert tf.is_tensor(out.values) and tuple(out.values.shape) == (SIZE, SIZE, 3)


# -- run_fetches: upstream's raw quantities (the salplug.tf1 package's path) -------------------------
def raw_adapter(model: TF1Model, y=None, **kwargs):
    from salplug.backends.tf1 import TF1Adapter

    return TF1Adapter(model, y=y, upstream=True, **kwargs)


def test_run_fetches_takes_upstream_y_shapes_in_one_session_run():
    model = bundle(counting=True)
    graph, x = model.graph, images(2)
    with graph.as_default():
        y_batch = tf.identity(model.y[:, 1], name="y_batch")  # (N,)
        y_scalar = tf.identity(model.y[0, 2], name="y_scalar")  # (): a batch of one
        y_grid = tf.identity(model.y[:, :2] * 2.0, name="y_grid")  # (N, 2): d sum(y) / dx
    for y, rows, shape in ((y_batch, 2, (2,)), (y_scalar, 1, ()), (y_grid, 2, (2, 2))):
        with graph.as_default():
            grads = v1.gradients(y, [model.x, model.conv_layer])
        expected = model.session.session.run([y, model.conv_layer, *grads], {model.x: x[:rows]})
        runs = model.session.runs
        adapter = raw_adapter(model, y=y)
        got = adapter.run_fetches(x[:rows], ["y", "layer", "input_gradients", "layer_gradients"])
        assert model.session.runs == runs + 1
        for value, want in zip(got, expected):
            np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-7)
        assert np.shape(got[0]) == shape  # y as the graph gives it
    nodes = len(graph.get_operations())
    for _ in range(5):
        raw_adapter(model, y=y_scalar).run_fetches(x[:1], ["input_gradients", "layer_gradients"])
    assert len(graph.get_operations()) == nodes


def test_run_fetches_explaining_a_scalar_y_still_needs_a_batch_axis():
    model = bundle()
    with model.graph.as_default():
        y_scalar = tf.identity(model.y[0, 2])
    with pytest.raises(ParameterError, match=r"\(N,\) or logits"):
        salplug.explain(TF1Model(model.graph, model.session, model.x, y_scalar), images(1), "gradients")
    adapter = raw_adapter(model, y=y_scalar)
    with pytest.raises(ParameterError, match=r"\(N,\) or logits"):
        adapter.input_gradients(images(1), salplug.types.Targets.none())
    with pytest.raises(ParameterError, match="cannot evaluate 'logits'"):
        adapter.run_fetches(images(1), ["y", "logits"])
    with pytest.raises(LayerError, match="conv_layer"):
        raw_adapter(TF1Model(model.graph, model.session, model.x, model.y), y=y_scalar).run_fetches(
            images(1), ["layer"])


def test_run_fetches_feeds_pass_through_on_the_graph_and_are_renamed_in_copies():
    graph, session, x_t, y_t = make_graph(scale=True)
    scale = graph.get_tensor_by_name("scale:0")
    with graph.as_default():
        y = tf.identity(y_t[:, 1], name="y1")
    seen = []

    class Recording:
        graph = "not a tf.Graph: a wrapper"  # accepted; only a real other graph is refused

        def run(self, fetches, feed_dict=None):
            seen.append(dict(feed_dict))
            kept = {k: v for k, v in feed_dict.items() if not isinstance(k, str) or k != "extra"}
            return session.run(fetches, feed_dict=kept)

    adapter = raw_adapter(TF1Model(graph, Recording(), x_t, y), y=y)
    x = images(2)
    feed = {scale: 2.0, "extra": object()}
    (double,) = adapter.run_fetches(x, ["input_gradients"], feed)
    assert seen[-1]["extra"] is feed["extra"] and seen[-1][scale] == 2.0 and len(feed) == 2  # unchanged
    (once,) = adapter.run_fetches(x, ["input_gradients"], {"scale:0": 1.0})
    assert "scale:0" in seen[-1]  # a name reaches session.run as it was given
    np.testing.assert_allclose(double, 2 * once, rtol=1e-5)
    guided = raw_adapter(TF1Model(graph, session, x_t, y), y=y)
    runs = len(seen)
    (g2,) = guided.run_fetches(x, ["input_gradients"], {"scale": 2.0, "extra": 1}, guided=True)  # op name, copy
    (g1,) = guided.run_fetches(x, ["input_gradients"], {scale: 1.0}, guided=True)
    np.testing.assert_allclose(g2, 2 * g1, rtol=1e-5)
    expected = salplug.explain(TF1Model(graph, session, x_t, y, feed_dict={scale: 1.0}), x, "guided_backprop")
    np.testing.assert_allclose(g1, expected.canonical, rtol=1e-5, atol=1e-7)
    assert len(seen) == runs
    other = v1.Session(graph=tf.Graph())
    with pytest.raises(ParameterError, match="another graph"):
        raw_adapter(TF1Model(graph, other, x_t, y), y=y)


def test_run_fetches_on_a_finalized_graph_uses_the_in_memory_copy():
    model = bundle(counting=True)
    with model.graph.as_default():
        y = tf.identity(model.y[:, 0])
    x = images(2)
    expected = raw_adapter(model, y=y).run_fetches(x, ["y", "input_gradients", "layer_gradients"])
    model.graph.finalize()
    got = raw_adapter(model, y=y).run_fetches(x, ["y", "input_gradients", "layer_gradients"])
    for value, want in zip(got, expected):
        np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-7)
    runs = model.session.runs
    for _ in range(3):
        raw_adapter(model, y=y).run_fetches(x, ["input_gradients"])
    assert model.session.runs == runs + 3  # per call, one run of the user's session reads the variables
    (reads,), kwargs = model.session.last  # (the copy's own session runs the gradients)
    assert not kwargs and sorted(reads) == ["w1/Read/ReadVariableOp:0", "w2/Read/ReadVariableOp:0",
                                            "wd/Read/ReadVariableOp:0"]


def _rows_per_gradient_call(explainer):
    """Record the rows of every input_gradients call of ``explainer``'s adapter."""
    rows, inner = [], explainer.adapter.input_gradients
    explainer.adapter.input_gradients = lambda x, t: rows.append(len(x)) or inner(x, t)
    return rows


def test_default_batch_size_follows_the_input():
    """No batch_size: 16 rows' worth of 224² values per session.run on a CPU, so all 40 rows of a
    tiny input go in one run; a batch_size given wins; a graph with a fixed batch keeps it."""
    model = bundle()
    ex = salplug.Explainer(model, "tf1")
    rows = _rows_per_gradient_call(ex)
    ex.explain(images(2), "ig", target=[1, 2], steps=20)
    assert rows == [40]
    assert ex.adapter.batch_size_for(np.zeros((1, 224, 224, 3), np.float32)) == 16
    rows.clear()
    ex.explain(images(2), "ig", target=[1, 2], steps=20, batch_size=7)
    assert rows == [7] * 5 + [5]
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [3, SIZE, SIZE, 3])
        y = tf.reduce_sum(x, axis=[1, 2, 3])
    fixed = salplug.Explainer(TF1Model(graph, v1.Session(graph=graph), x, y), "tf1")
    assert fixed.adapter.batch_size_for(np.zeros((1, SIZE, SIZE, 3), np.float32)) == 3


def test_weights_held_for_one_call_are_per_thread(monkeypatch):
    """Thread A pauses inside explain(); the weights change; thread B's explain() sees the new ones."""
    import threading

    from salplug.backends import tf1 as tf1_backend

    model = bundle()
    explainer = salplug.Explainer(model, backend="tf1")
    x = images(2)
    paused, resume = threading.Event(), threading.Event()
    run = tf1_backend.TF1Adapter._run

    def pausing_run(self, view, fetches, feed):
        out = run(self, view, fetches, feed)
        if threading.current_thread().name == "A" and not paused.is_set():
            paused.set()
            resume.wait(30)
        return out

    monkeypatch.setattr(tf1_backend.TF1Adapter, "_run", pausing_run)
    results = {}
    a = threading.Thread(name="A", target=lambda: results.__setitem__(
        "A", explainer.explain(x, "guided_backprop", target=1, batch_size=1).canonical))
    a.start()
    assert paused.wait(30)
    with model.graph.as_default():
        weights = [v for v in v1.global_variables() if v.name == "wd:0"][0]
        change = weights.assign(weights * -3.0)
    model.session.run(change)
    results["B"] = explainer.explain(x, "guided_backprop", target=1, batch_size=1).canonical
    resume.set()
    a.join(30)
    monkeypatch.undo()
    fresh = salplug.Explainer(model, backend="tf1").explain(x, "guided_backprop", target=1).canonical
    np.testing.assert_allclose(results["B"], fresh, rtol=1e-5, atol=1e-7)
    assert not np.allclose(results["A"], results["B"])
