"""TensorFlow backends: fixes from a bug hunt (class counts, guided control flow, threads, fixed
batch sizes, layers off y's path, unknown class counts, error texts, declared input shapes)."""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import pytest

import salplug
from salplug.errors import InputError, LayerError, ModelOutputError, TargetError

tf = pytest.importorskip("tensorflow", reason="the TensorFlow backends need TensorFlow: pip install 'salplug[tf]'")
keras = pytest.importorskip("keras", reason="the tf2 backend tests use Keras 3 (installed with TensorFlow)")
from salplug.backends.tf1_model import TF1Model  # noqa: E402

v1 = tf.compat.v1
L = keras.layers


def rand(*shape, seed=0, low=-1.0):
    return np.random.default_rng(seed).uniform(low, 1, shape).astype(np.float32)


def tape_gradients(model, x, targets):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        s = tf.gather(model(x, training=False), targets, batch_dims=1)
    return tape.gradient(s, x).numpy()


# -- 1. tf2: subclassed models' class count ------------------------------------------------------
class ProjectedHead(keras.Model):
    """10 logits; a Dense(3) bottleneck created after the head but run before it."""

    def __init__(self):
        super().__init__()
        self.conv = L.Conv2D(4, 3, padding="same", activation="relu")
        self.gap = L.GlobalAveragePooling2D()
        self.head = L.Dense(10)
        self.proj = L.Dense(3)

    def call(self, x, training=False):
        return self.head(self.proj(self.gap(self.conv(x))))


@pytest.mark.parametrize("compile", [None, False])
def test_a_subclassed_models_class_count_is_not_guessed(compile):
    keras.utils.set_random_seed(0)
    model = ProjectedHead()
    x = rand(2, 8, 8, 3)
    options = {} if compile is None else {"compile": compile}
    assert salplug.Explainer(model, **options).adapter.num_outputs() is None
    got = salplug.explain(model, x, "gradients", target=7, backend_options=options).canonical
    np.testing.assert_allclose(got, tape_gradients(model, x, [7, 7]), rtol=1e-5, atol=1e-6)
    with pytest.raises(TargetError, match="target 12 is out of range.*10 output classes"):
        salplug.explain(model, x, "gradients", target=12, backend_options=options)


def test_a_sequential_model_ending_in_dense_still_gives_its_class_count():
    unbuilt = keras.Sequential([L.Dense(4), L.Dense(6)])
    assert salplug.Explainer(unbuilt).adapter.num_outputs() == 6


# -- 2. guided backprop through control flow ------------------------------------------------------
RNG = np.random.default_rng(0)
W1, W2, W3 = (RNG.normal(0, 1, s).astype(np.float32) for s in ((6, 12), (12, 12), (12, 3)))
GX = RNG.uniform(-2, 2, (4, 6)).astype(np.float32)
GT = np.array([0, 1, 2, 1])


def guided_by_hand() -> np.ndarray:
    """y = relu(relu(x W1 + .5) W2) W3: the guided gradient of y[n, t_n] by hand."""
    p1 = GX @ W1 + 0.5
    p2 = np.maximum(p1, 0) @ W2
    g = W3[:, GT].T
    g2 = g * (p2 > 0) * (g > 0)
    g1 = g2 @ W2.T
    return (g1 * (p1 > 0) * (g1 > 0)) @ W1.T


def second_relu(kind: str, z):
    """relu(z), inside the control flow ``kind``."""
    if kind == "cond":
        return tf.cond(tf.constant(True), lambda: tf.nn.relu(z), lambda: z * 0.5)
    if kind == "while":
        return tf.while_loop(lambda i, h: i < 1, lambda i, h: (i + 1, tf.nn.relu(h)), [tf.constant(0), z])[1]
    if kind == "switch_case":
        return tf.switch_case(tf.constant(1), [lambda: z * 0.5, lambda: tf.nn.relu(z)])
    if kind == "cond_in_while":
        body = lambda i, h: (i + 1, tf.cond(tf.constant(True), lambda: tf.nn.relu(h), lambda: h))  # noqa: E731
        return tf.while_loop(lambda i, h: i < 1, body, [tf.constant(0), z])[1]
    raise AssertionError(kind)


def keras_control_flow_model(kind: str):
    class ControlFlowRelu(L.Layer):
        def call(self, z):
            return second_relu(kind, z)

    inp = keras.Input((6,))
    d1, d2, d3 = L.Dense(12, activation="relu"), L.Dense(12, use_bias=False), L.Dense(3, use_bias=False)
    model = keras.Model(inp, d3(ControlFlowRelu()(d2(d1(inp)))))
    d1.set_weights([W1, np.full(12, 0.5, np.float32)])
    d2.set_weights([W2])
    d3.set_weights([W3])
    return model


def tf1_control_flow_model(kind: str, first_relu: bool = True):
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 6], name="x")
        p1 = tf.matmul(x, W1) + 0.5
        p2 = tf.matmul(tf.nn.relu(p1) if first_relu else p1, W2)
        y = tf.matmul(second_relu(kind, p2), W3, name="y")
    return TF1Model(graph, v1.Session(graph=graph), x, y)


def guided(model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = salplug.explain(model, GX, "guided_backprop", target=GT).canonical
    return values, [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


@pytest.mark.parametrize("kind", ["cond", "while", "switch_case", "cond_in_while"])
def test_guided_backprop_guides_relus_inside_control_flow_tf2(kind):
    values, warned = guided(keras_control_flow_model(kind))
    np.testing.assert_allclose(values, guided_by_hand(), rtol=1e-5, atol=1e-5)
    assert warned == []


@pytest.mark.parametrize("kind", ["cond", "while", "cond_in_while"])
def test_guided_backprop_guides_relus_inside_control_flow_tf1(kind):
    values, warned = guided(tf1_control_flow_model(kind))
    np.testing.assert_allclose(values, guided_by_hand(), rtol=1e-5, atol=1e-5)
    assert warned == []


def test_tf1_relus_only_inside_a_cond_are_guided_and_counted():
    from salplug.backends.tf_guided import relu_counts

    model = tf1_control_flow_model("cond", first_relu=False)
    counts = relu_counts(model.graph)  # the user's own graph: the cond's ReLU is plain there
    assert (counts.guided, counts.control, counts.nested) == (0, 1, 0)
    values, warned = guided(model)
    assert warned == []  # no "found no Relu/Relu6 op" warning: there is one, and it is guided
    p1 = GX @ W1 + 0.5
    p2 = p1 @ W2
    g = W3[:, GT].T * (p2 > 0)
    np.testing.assert_allclose(values, ((g * (g > 0)) @ W2.T) @ W1.T, rtol=1e-5, atol=1e-5)


def test_tf1_guides_relus_inside_called_functions():
    # The guided copy has nested tf.functions inlined: their ReLUs are guided too (no warning).
    inner = tf.function(tf.nn.relu)
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 6], name="x")
        y = tf.matmul(inner(tf.matmul(tf.nn.relu(tf.matmul(x, W1) + 0.5), W2)), W3, name="y")
    values, warned = guided(TF1Model(graph, v1.Session(graph=graph), x, y))
    assert warned == []
    np.testing.assert_allclose(values, guided_by_hand(), rtol=1e-5, atol=1e-5)


# -- 3. tf2 Grad-CAM from several threads ---------------------------------------------------------
class Gate(L.Layer):
    """Passes its input through; in thread "A" it waits for ``release`` once, after setting ``paused``."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.paused, self.release = threading.Event(), threading.Event()

    def call(self, z):
        if threading.current_thread().name == "A" and not self.paused.is_set():
            self.paused.set()
            assert self.release.wait(60)
        return z


def gated_cnn():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inp)
    h = L.Conv2D(6, 3, padding="same", name="conv2")(h)
    gate = Gate(name="gate")
    h = gate(h)
    return keras.Model(inp, L.Dense(5)(L.GlobalAveragePooling2D()(L.ReLU()(h)))), gate


@pytest.mark.parametrize("compile", [True, False])
def test_grad_cam_while_another_thread_runs_the_model(compile):
    """Thread A pauses inside its Grad-CAM forward pass; meanwhile the main thread runs the
    model itself and thread B starts Grad-CAM on the same layer."""
    net, gate = gated_cnn()
    x = rand(2, 8, 8, 3, low=0.0)
    options = {"compile": compile}
    want = salplug.explain(net, x, "grad_cam", target=[1, 2], layer="conv2",
                           backend_options={"compile": False}).canonical
    net2, gate2 = gated_cnn()  # a fresh model: its trace happens in thread A
    results, errors = {}, []

    def work(name):
        try:
            results[name] = salplug.explain(net2, x, "grad_cam", target=[1, 2], layer="conv2",
                                            backend_options=options).canonical
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
        finally:
            gate2.release.set()

    a = threading.Thread(name="A", target=work, args=("A",))
    a.start()
    assert gate2.paused.wait(60)
    net2(x)  # the user's own forward pass, while A's capture is active
    b = threading.Thread(name="B", target=work, args=("B",))
    b.start()
    time.sleep(0.3)  # lets B reach the layer capture (no assertion depends on it)
    gate2.release.set()
    a.join(60)
    b.join(60)
    assert errors == []
    assert "call" not in vars(net2.get_layer("conv2"))
    for name in "AB":
        np.testing.assert_allclose(results[name], want, rtol=1e-5, atol=1e-6)


def test_grad_cam_from_three_threads_at_once():
    net, _ = gated_cnn()
    x = rand(2, 8, 8, 3, low=0.0)
    want = salplug.explain(net, x, "grad_cam", target=[1, 2], layer="conv2",
                           backend_options={"compile": False}).canonical
    errors, results = [], []

    def work():
        try:
            for _ in range(4):
                results.append(salplug.explain(net, x, "grad_cam", target=[1, 2], layer="conv2",
                                               backend_options={"compile": False}).canonical)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert "call" not in vars(net.get_layer("conv2"))
    assert len(results) == 12
    for got in results:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# -- 4. tf1: a graph with a fixed batch size ------------------------------------------------------
def conv_graph(batch, finalize=False):
    rng = np.random.default_rng(0)
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [batch, 8, 8, 3], name="x")
        w = tf.constant(rng.normal(0, 0.5, (3, 3, 3, 4)).astype(np.float32))
        h = tf.nn.relu(tf.nn.conv2d(x, w, 1, "SAME"), name="h")
        wd = tf.constant(rng.normal(0, 0.5, (4, 5)).astype(np.float32))
        y = tf.matmul(tf.reduce_mean(h, [1, 2]), wd, name="logits")
    if finalize:
        graph.finalize()
    return TF1Model(graph, v1.Session(graph=graph), x, y, conv_layer=h)


@pytest.mark.parametrize("method,params,n", [
    ("gradients", {}, 2),
    ("gradients", {"target": None}, 2),  # the top-1 pass too
    ("integrated_gradients", {"steps": 5}, 2),
    ("occlusion", {"size": 3}, 1),
    ("grad_cam", {}, 2),
    ("guided_backprop", {}, 4),
])
def test_a_fixed_batch_size_pads_the_last_batch(method, params, n):
    x = rand(n, 8, 8, 3, seed=1, low=0.0)
    params = {"target": 1, **params}
    fixed = salplug.explain(conv_graph(3), x, method, **params).canonical
    free = salplug.explain(conv_graph(None), x, method, **params).canonical
    np.testing.assert_allclose(fixed, free, rtol=1e-5, atol=1e-6)


def test_a_fixed_batch_size_splits_a_larger_batch():
    x = rand(5, 8, 8, 3, seed=2, low=0.0)
    fixed = salplug.explain(conv_graph(3), x, "gradients", target=[0, 1, 2, 3, 4], batch_size=5).canonical
    free = salplug.explain(conv_graph(None), x, "gradients", target=[0, 1, 2, 3, 4]).canonical
    np.testing.assert_allclose(fixed, free, rtol=1e-5, atol=1e-6)


# -- 5. tf1: a layer y is not computed from -------------------------------------------------------
class CountingSession:
    def __init__(self, session):
        self.session, self.graph, self.runs = session, session.graph, 0

    def run(self, *args, **kwargs):
        self.runs += 1
        return self.session.run(*args, **kwargs)


def side_branch_model(finalize: bool, counting: bool = False):
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 8, 8, 3], name="x")
        w = v1.get_variable("w", initializer=np.random.default_rng(0).normal(0, .5, (3, 3, 3, 4)).astype(np.float32))
        h = tf.nn.relu(tf.nn.conv2d(x, w, 1, "SAME"), name="relu1")
        tf.nn.relu(tf.nn.conv2d(x, w, 1, "SAME"), name="side_branch")
        y = tf.matmul(tf.reduce_mean(h, [1, 2]), tf.ones((4, 5)), name="logits")
        init = v1.global_variables_initializer()
    session = v1.Session(graph=graph)
    session.run(init)
    if finalize:
        graph.finalize()
    return TF1Model(graph, CountingSession(session) if counting else session, x, y)


@pytest.mark.parametrize("finalize", [False, True])
def test_grad_cam_on_a_layer_off_the_path_to_y_is_a_layer_error(finalize):
    model = side_branch_model(finalize, counting=not finalize)
    explainer = salplug.Explainer(model)
    with pytest.raises(LayerError, match="side_branch:0 is not on the path from x to y"):
        explainer.adapter.check_layer("side_branch")
    with pytest.raises(LayerError, match="side_branch:0 is not on the path from x to y"):
        explainer.explain(rand(2, 8, 8, 3), "grad_cam", target=1, layer="side_branch")
    if not finalize:
        assert model.session.runs == 0
    assert explainer.explain(rand(2, 8, 8, 3), "grad_cam", target=1, layer="relu1").values.shape[:3] == (2, 8, 8)


def test_layer_suggestions_leave_out_salplugs_own_tensors():
    model = side_branch_model(False)
    explainer = salplug.Explainer(model)
    explainer.explain(rand(1, 8, 8, 3), "grad_cam", target=1, layer="relu1")  # builds salplug's gradient ops
    with pytest.raises(LayerError) as caught:
        explainer.explain(rand(1, 8, 8, 3), "grad_cam", target=1, layer="relu_1")
    assert "relu1:0" in str(caught.value)
    assert "salplug" not in str(caught.value)


# -- 6. tf1: logits whose class count is not static -----------------------------------------------
def unknown_width_model(static: bool):
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 6], name="x")
        logits = tf.matmul(tf.nn.relu(tf.matmul(x, W1)), W2[:, :4])
        y = v1.placeholder_with_default(logits, [None, 4 if static else None], name="y")
    return TF1Model(graph, v1.Session(graph=graph), x, y)


@pytest.mark.parametrize("method", ["gradients", "guided_backprop"])
def test_an_unknown_class_count_still_checks_targets(method):
    model = unknown_width_model(static=False)
    assert salplug.Explainer(model).adapter.num_outputs() is None
    with pytest.raises(TargetError, match=r"target 9 is out of range: y \(y:0\) has 4 classes \(0..3\)"):
        salplug.explain(model, GX, method, target=9)
    with pytest.raises(TargetError, match="out of range"):
        salplug.explain(model, GX, method, target=[0, 1, 4, 2])
    got = salplug.explain(model, GX, method, target=GT).canonical
    want = salplug.explain(unknown_width_model(static=True), GX, method, target=GT).canonical
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


# -- 7. tf2: salplug errors raised while tracing ----------------------------------------------------
def test_errors_raised_while_tracing_keep_their_own_message():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    logits = L.Dense(5)(L.GlobalAveragePooling2D()(L.Conv2D(4, 3)(inp)))
    model = keras.Model(inp, {"a": logits, "b": L.Rescaling(2.0)(logits)})
    with pytest.raises(ModelOutputError) as caught:
        salplug.explain(model, rand(1, 8, 8, 3), "gradients", target=1)
    assert str(caught.value).startswith("The model returned a dict with keys ['a', 'b']")

    class Constant(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(5)

        def call(self, t, training=False):
            return self.d(tf.zeros([tf.shape(t)[0], 3]))

    with pytest.raises(ModelOutputError) as caught:
        salplug.explain(Constant(), rand(1, 8, 8, 3), "gradients", target=1)
    assert str(caught.value).startswith("The explained output does not depend on the input")


# -- 8. tf2: the Keras model's declared input shape -------------------------------------------------
class Calls(L.Layer):
    """Passes its input through and counts its Python calls (eager or traced)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.count = 0

    def call(self, z):
        self.count += 1
        return z


def test_inputs_the_declared_input_shape_rules_out_are_refused_before_any_model_call():
    keras.utils.set_random_seed(0)
    calls = Calls()
    inp = keras.Input((8, 8, 3))
    flat = keras.Model(inp, L.Dense(5)(L.Flatten()(L.Conv2D(4, 3, padding="same")(calls(inp)))))
    dense_calls = Calls()
    dense = keras.Sequential([keras.Input((6,)), dense_calls, L.Dense(8, activation="relu"), L.Dense(3)])
    calls.count = dense_calls.count = 0
    cases = [(flat, rand(2, 9, 9, 3), r"\(N, 8, 8, 3\).*\(2, 9, 9, 3\)"),
             (flat, rand(9, 9, 3), r"\(N, 8, 8, 3\).*\(9, 9, 3\)"),
             (dense, rand(2, 5), r"\(N, 6\).*\(2, 5\).*one example of shape \(6,\)"),
             (dense, rand(2, 3, 6), r"\(N, 6\).*\(2, 3, 6\)")]
    for model, x, match in cases:
        with pytest.raises(InputError, match=match):
            salplug.explain(model, x, "gradients", target=1)
    assert calls.count == dense_calls.count == 0


def test_inputs_keras_itself_accepts_are_still_explained():
    keras.utils.set_random_seed(0)
    # a Sequential model runs on other image sizes than its Input's (Keras warns, no error)
    seq = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3), L.GlobalAveragePooling2D(), L.Dense(3)])
    assert salplug.explain(seq, rand(2, 12, 12, 3), "gradients", target=1).values.shape == (2, 12, 12, 3)
    # one example without its batch axis; a declared trailing axis of 1 left out (Keras adds it)
    inp = keras.Input((6, 1))
    model = keras.Model(inp, L.Dense(3)(L.Flatten()(inp)))
    assert salplug.explain(model, rand(2, 6), "gradients", target=1).values.shape == (2, 6)
    assert salplug.explain(model, rand(2, 6, 1), "gradients", target=1).values.shape == (2, 6, 1)


def test_grad_cam_inside_a_forward_pass_that_waits_for_another_threads_grad_cam():
    # a layer hands work to a worker thread, which runs Grad-CAM on another model: captures of
    # different threads must not wait for each other (a process-wide lock held over the forward
    # pass deadlocked here)
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).random((1, 8, 8, 3), np.float32)
    inp = keras.Input((8, 8, 3))
    other = keras.Model(inp, L.Dense(5)(L.GlobalAveragePooling2D()(L.Conv2D(4, 3, padding="same", name="c1")(inp))))
    results = []

    class WaitsForWorker(L.Layer):
        def call(self, z):
            if tf.executing_eagerly():
                worker = threading.Thread(daemon=True, target=lambda: results.append(salplug.explain(
                    other, x, "grad_cam", target=1, layer="c1", backend_options={"compile": False})))
                worker.start()
                worker.join(20)
                assert results, "the worker's Grad-CAM is blocked"
            return z

    inp = keras.Input((8, 8, 3))
    outer = keras.Model(inp, L.Dense(5)(L.GlobalAveragePooling2D()(
        WaitsForWorker()(L.Conv2D(4, 3, padding="same", name="cA")(inp)))))
    out = salplug.explain(outer, x, "grad_cam", target=1, layer="cA", backend_options={"compile": False})
    assert out.values.shape == (1, 8, 8, 3) and results


@pytest.mark.parametrize("compile", [None, False])
def test_a_sequential_model_refusing_the_input_size_is_an_input_error(compile):
    # Sequential models are only checked on their last axis up front (Keras lets them run on
    # other sizes); Keras' own refusal while the step runs comes back as an InputError
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(2, 3, padding="same"), L.Flatten(), L.Dense(5)])
    x = np.random.default_rng(0).random((2, 9, 9, 3), np.float32)
    with pytest.raises(InputError, match=r"cannot take inputs of shape \(2, 9, 9, 3\).*incompatible"):
        salplug.explain(model, x, "gradients", target=1, backend_options={"compile": compile})


@pytest.mark.parametrize("functional", [False, True])
def test_a_conv_model_that_reshapes_its_declared_input_takes_batches_of_it(functional):
    # Input((28, 28)) + Reshape + Conv2D: a (N, 28, 28) batch used to be read as one HWC image
    # of 28 channels and refused
    keras.utils.set_random_seed(0)
    layers = [L.Reshape((28, 28, 1)), L.Conv2D(4, 3), L.GlobalAveragePooling2D(), L.Dense(10)]
    if functional:
        inp = keras.Input((28, 28))
        out = inp
        for layer in layers:
            out = layer(out)
        model = keras.Model(inp, out)
    else:
        model = keras.Sequential([keras.Input((28, 28)), *layers])
    x = np.random.default_rng(0).random((2, 28, 28), np.float32)
    out = salplug.explain(model, x, "gradients", target=3).values
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        score = tf.reduce_sum(model(xt)[:, 3])
    np.testing.assert_allclose(out, tape.gradient(score, xt).numpy(), rtol=1e-5, atol=1e-6)


def _loop_graph():
    """y = relu-loop(x W) through a v2 tf.while_loop, twice (0.9 relu(h) each turn)."""
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [None, 6], name="x")
        w = tf.constant(np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32))
        h = tf.while_loop(lambda i, h: i < 2, lambda i, h: (i + 1, tf.nn.relu(h) * 0.9),
                          [tf.constant(0), tf.matmul(x, w)])[1]
        y = tf.identity(h, name="y")
    return g, x, y, w


@pytest.mark.parametrize("finalize", [False, True])
def test_tf1_while_loop_graphs_differentiate_after_the_session_ran_them(finalize):
    # TensorFlow cannot add a while loop's gradient to a graph its session has run (it adds
    # outputs to the forward op): such graphs are differentiated in a copy. Plain and guided
    # copies of one graph coexist (their derived functions used to clash by name).
    g, x, y, w = _loop_graph()
    session = v1.Session(graph=g)
    xs = np.random.default_rng(1).normal(size=(3, 6)).astype(np.float32)
    h = xs @ session.run(w)
    session.run(y, {x: xs})  # the user ran y first
    if finalize:
        g.finalize()
    model = TF1Model(g, session, x, y)
    active = (h > 0) & (0.9 * h > 0)
    expected = (session.run(w)[:, 1] * (0.81 * active[:, 1])[:, None])  # d y[:, 1] / d x
    for method in ("gradients", "guided_backprop", "gradients"):
        out = salplug.explain(model, xs, method, target=1).values
        assert out.shape == xs.shape
    np.testing.assert_allclose(salplug.explain(model, xs, "gradients", target=1).values, expected, rtol=1e-5, atol=1e-6)
