"""TensorFlow 2 backend: Keras models, tf.Modules, callables; layers, guided ReLUs, targets, traces."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import warnings
import weakref

import numpy as np
import pytest

import salplug
from salplug.errors import InputError, LayerError, ModelOutputError, ParameterError, TargetError
from salplug.types import Targets

tf = pytest.importorskip("tensorflow", reason="the tf2 backend needs TensorFlow: pip install 'salplug[tf]'")
keras = pytest.importorskip("keras", reason="the tf2 backend tests use Keras 3 (installed with TensorFlow)")
L = keras.layers


def small_cnn(seed: int = 0, size: int = 8, classes: int = 5):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3))
    h = L.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inp)
    h = L.MaxPooling2D(2)(h)
    h = L.Conv2D(6, 3, padding="same", name="conv2")(h)
    h = L.ReLU(name="relu2")(h)
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(inp, L.Dense(classes, name="fc")(h))


class Counting(keras.Model):
    """Counts Python calls of ``call`` (eager calls and traces) and the batch sizes seen."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls = []

    def call(self, x, training=False):
        self.calls.append(x.shape[0])
        return self.inner(x, training=training)


def tape_gradients(model, x, targets):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = model(x, training=False)
        s = tf.gather(out, targets, batch_dims=1)
    return tape.gradient(s, x).numpy()


def rand(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


# -- layouts and types ----------------------------------------------------------------------
def test_numpy_and_tf_inputs_come_back_in_their_own_type_and_layout():
    model = small_cnn()
    x = rand(2, 8, 8, 3)
    batch = salplug.explain(model, x, "gradients", target=[1, 2])
    assert isinstance(batch.values, np.ndarray) and batch.values.shape == (2, 8, 8, 3)
    single = salplug.explain(model, x[1], "gradients", target=2)
    assert single.values.shape == (8, 8, 3)
    np.testing.assert_allclose(single.values, batch.values[1], rtol=1e-5, atol=1e-7)
    as_tf = salplug.explain(model, tf.constant(x), "gradients", target=[1, 2])
    assert tf.is_tensor(as_tf.values) and as_tf.values.shape == (2, 8, 8, 3)
    np.testing.assert_array_equal(as_tf.values.numpy(), batch.values)
    assert batch.backend == "tf2"


def test_device_option_places_the_steps_or_says_what_exists():
    model = small_cnn(seed=3)
    x = rand(2, 8, 8, 3, seed=3)
    ref = salplug.explain(model, x, "gradients", target=[1, 2]).canonical
    on_cpu = salplug.Explainer(model, "tf2", device="cpu").explain(x, "gradients", target=[1, 2]).canonical
    np.testing.assert_array_equal(on_cpu, ref)
    if tf.config.list_logical_devices("GPU"):
        on_gpu = salplug.Explainer(model, "tf2", device="cuda").explain(x, "gradients", target=[1, 2]).canonical
        np.testing.assert_allclose(on_gpu, ref, rtol=1e-4, atol=1e-6)
    else:
        with pytest.raises(ParameterError, match=r"no GPU:0 on this machine; available: CPU:0"):
            salplug.Explainer(model, "tf2", device="cuda")
    with pytest.raises(ParameterError, match="not a device name"):
        salplug.Explainer(model, "tf2", device="banana")


def test_gradients_equal_a_hand_written_gradient_tape_with_per_row_targets():
    model = small_cnn(seed=1)
    x = rand(3, 8, 8, 3, seed=1)
    out = salplug.explain(model, x, "gradients", target=[0, 2, 4])
    np.testing.assert_allclose(out.canonical, tape_gradients(model, x, [0, 2, 4]), rtol=1e-5, atol=1e-7)


def test_eager_and_traced_steps_agree():
    model = small_cnn(seed=2)
    x = rand(2, 8, 8, 3, seed=2)
    for method, params in (("gradients", {}), ("ig", {"steps": 4}), ("grad_cam", {"layer": "conv2"})):
        eager = salplug.explain(model, x, method, target=[1, 3], backend_options={"compile": False}, **params)
        traced = salplug.explain(model, x, method, target=[1, 3], **params)
        np.testing.assert_allclose(eager.canonical, traced.canonical, rtol=1e-5, atol=1e-6)


# -- guided backprop --------------------------------------------------------------------------
class TfNnRelu(L.Layer):
    def call(self, x):
        return tf.nn.relu(x)


GUIDED_ACTIVATIONS = {
    "Dense(activation='relu')": (lambda: None, "relu", None),
    "Dense(activation='relu6')": (lambda: None, "relu6", 6.0),
    "ReLU()": (lambda: L.ReLU(), None, None),
    "ReLU(max_value=6)": (lambda: L.ReLU(max_value=6.0), None, 6.0),
    "Activation('relu')": (lambda: L.Activation("relu"), None, None),
    "tf.nn.relu in a custom layer": (lambda: TfNnRelu(), None, None),
}


@pytest.mark.parametrize("kind", list(GUIDED_ACTIVATIONS))
def test_guided_backprop_is_exact_for_every_way_of_writing_a_relu(kind):
    # f(x) = W2^T act(W1^T x + b1) + b2; guided d f_k / d x = W1 (g * [0 < pre < max] * [g > 0]),
    # with g = W2[:, k] the gradient reaching the activation.
    make_layer, activation, upper = GUIDED_ACTIVATIONS[kind]
    keras.utils.set_random_seed(3)
    inp = keras.Input((6,))
    h = L.Dense(12, activation=activation, name="hidden")(inp)
    extra = make_layer()
    if extra is not None:
        h = extra(h)
    model = keras.Model(inp, L.Dense(4, name="out")(h))
    x = rand(5, 6, seed=3) * 6
    targets = np.array([0, 1, 2, 3, 1])
    w1, b1 = model.get_layer("hidden").get_weights()
    w2, _ = model.get_layer("out").get_weights()
    pre = x @ w1 + b1
    g = w2[:, targets].T
    keep = (pre > 0) & (g > 0) & ((pre < upper) if upper else True)
    expected = (g * keep) @ w1.T
    assert upper is None or (pre > upper).any()  # the cap matters in this example
    out = salplug.explain(model, x, "guided_backprop", target=targets)
    np.testing.assert_allclose(out.canonical, expected, rtol=1e-5, atol=1e-6)
    plain = salplug.explain(model, x, "gradients", target=targets).canonical
    assert np.abs(plain - out.canonical).max() > 1e-3  # it is not the plain gradient


def test_guided_backprop_leaves_the_model_untouched():
    model = small_cnn(seed=4)
    x = rand(2, 8, 8, 3, seed=4)
    layers = {layer.name: layer for layer in model.layers}
    activations = {name: getattr(layer, "activation", None) for name, layer in layers.items()}
    before = tape_gradients(model, x, [1, 2])
    guided = salplug.explain(model, x, "guided_backprop", target=[1, 2]).canonical
    after = tape_gradients(model, x, [1, 2])
    np.testing.assert_array_equal(before, after)  # the model's own ReLU gradients are unchanged
    assert np.abs(guided - before).max() > 0
    for name, layer in layers.items():
        assert getattr(layer, "activation", None) is activations[name]
        assert "call" not in vars(layer)
    np.testing.assert_array_equal(salplug.explain(model, x, "gradients", target=[1, 2]).canonical, before)


def test_guided_backprop_warns_when_there_is_no_relu():
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, activation="gelu"), L.Dense(2)])
    with pytest.warns(RuntimeWarning, match="no ReLU"):
        out = salplug.explain(model, rand(2, 4), "guided_backprop", target=1)
    np.testing.assert_allclose(out.canonical, salplug.explain(model, rand(2, 4), "gradients", target=1).canonical,
                               rtol=1e-5, atol=1e-7)


def test_guided_backprop_warns_about_relus_inside_nested_tf_functions():
    net = small_cnn(seed=6)

    class Compiled(tf.Module):
        @tf.function
        def __call__(self, x):
            return net(x, training=False)

    with pytest.warns(RuntimeWarning, match="nested tf.function"):
        salplug.explain(Compiled(), rand(1, 8, 8, 3), "guided_backprop", target=1, backend="tf2")


# -- layers -----------------------------------------------------------------------------------
def nested_model(seed: int = 7):
    keras.utils.set_random_seed(seed)
    inner = keras.Sequential([keras.Input((8, 8, 4)), L.Conv2D(5, 3, padding="same", name="conv_b")], name="inner")
    inp = keras.Input((8, 8, 3))
    h = inner(L.Conv2D(4, 3, padding="same", activation="relu", name="conv_a")(inp))
    return keras.Model(inp, L.Dense(3, name="fc")(L.GlobalAveragePooling2D()(h))), inner


def test_layer_values_and_gradients_in_a_nested_model_are_exact():
    # logits = fc(mean_hw(conv_b)): d logit_k / d conv_b[n, h, w, c] = fc.kernel[c, k] / (H W).
    model, inner = nested_model()
    adapter = salplug.Explainer(model).adapter
    x = rand(2, 8, 8, 3, seed=7)
    targets = Targets(np.array([0, 2]))
    values, grads = adapter.layer_values_and_gradients(x, targets, "inner/conv_b")
    conv_a = model.get_layer("conv_a")
    np.testing.assert_allclose(values, inner.get_layer("conv_b")(conv_a(x)).numpy(), rtol=1e-5, atol=1e-6)
    kernel = model.get_layer("fc").get_weights()[0]
    np.testing.assert_allclose(grads, np.broadcast_to(kernel[:, [0, 2]].T[:, None, None, :] / 64, grads.shape),
                               rtol=1e-5)
    for same in ("conv_b", inner.get_layer("conv_b")):
        v2, g2 = adapter.layer_values_and_gradients(x, targets, same)
        np.testing.assert_array_equal(v2, values)
        np.testing.assert_array_equal(g2, grads)
    assert "call" not in vars(inner.get_layer("conv_b"))


def test_grad_cam_on_a_nested_layer_by_name():
    model, _ = nested_model()
    out = salplug.explain(model, rand(2, 8, 8, 3), "grad_cam", target=1, layer="conv_b")
    assert out.values.shape == (2, 8, 8, 3) and np.isfinite(out.values).all()


def test_unknown_and_ambiguous_layers_are_layer_errors():
    keras.utils.set_random_seed(8)
    blocks = [keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(3, 3, padding="same", name="conv")], name=f"block{i}")
              for i in (1, 2)]
    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, L.Dense(2)(L.Flatten()(blocks[1](blocks[0](inp)))))
    adapter = salplug.Explainer(model).adapter
    with pytest.raises(LayerError, match=r"no layer 'block3/conv'. Did you mean 'block[12]/conv'"):
        adapter.check_layer("block3/conv")
    with pytest.raises(LayerError, match="ambiguous.*block1/conv, block2/conv"):
        adapter.check_layer("conv")
    adapter.check_layer("block2/conv")
    with pytest.raises(LayerError, match="not part of the model"):
        adapter.check_layer(L.Dense(3))


def test_a_layer_that_runs_twice_is_rejected():
    keras.utils.set_random_seed(9)
    shared = L.Conv2D(3, 3, padding="same", name="shared")
    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, L.Dense(2)(L.GlobalAveragePooling2D()(shared(shared(inp)))))
    with pytest.raises(LayerError, match="ran 2 times"):
        salplug.explain(model, rand(1, 8, 8, 3), "grad_cam", target=0, layer="shared")
    assert "call" not in vars(shared)


# -- targets, outputs, inputs ----------------------------------------------------------------------
def test_bad_targets_and_inputs_are_rejected_before_any_model_call():
    model = Counting(small_cnn(seed=10))
    model(np.zeros((1, 8, 8, 3), np.float32))
    model.calls.clear()
    x = rand(2, 8, 8, 3)
    adapter = salplug.Explainer(model, num_classes=5).adapter
    for bad, error in (({"target": 5}, TargetError), ({"target": [1, 2, 3]}, TargetError)):
        with pytest.raises(error):
            salplug.explain(model, x, "gradients", backend_options={"num_classes": 5}, **bad)
    with pytest.raises(TargetError, match="out of range"):
        adapter.input_gradients(x, Targets(np.array([0, 7])))
    bad_x = x.copy()
    bad_x[0, 0, 0, 0] = np.nan
    for value, match in ((bad_x, "NaN"), (rand(2, 8, 8, 4), "3 input channels"), (rand(8, 3), "2-D convolutional")):
        with pytest.raises(InputError, match=match):
            salplug.explain(model, value, "gradients", target=0)
    assert model.calls == []


def test_number_of_classes_comes_from_the_final_dense_layer():
    assert salplug.Explainer(small_cnn(classes=7)).adapter.num_outputs() == 7
    with pytest.raises(TargetError, match="out of range.*0..6"):
        salplug.explain(small_cnn(classes=7), rand(1, 8, 8, 3), "gradients", target=7)
    keras.utils.set_random_seed(0)
    softmaxed = keras.Sequential([keras.Input((4,)), L.Dense(3), L.BatchNormalization()])
    assert salplug.Explainer(softmaxed).adapter.num_outputs() is None


def test_a_target_callable_on_the_model_output():
    model = small_cnn(seed=11)
    x = rand(2, 8, 8, 3, seed=11)
    diff = salplug.explain(model, x, "gradients", target=lambda out: out[:, 1] - out[:, 0]).canonical
    expected = tape_gradients(model, x, [1, 1]) - tape_gradients(model, x, [0, 0])
    np.testing.assert_allclose(diff, expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(TargetError, match="one scalar per sample"):
        salplug.explain(model, x, "gradients", target=lambda out: out)


def test_dict_and_tuple_outputs():
    net = small_cnn(seed=12)
    inp = keras.Input((8, 8, 3))
    logits = net(inp)
    as_dict = keras.Model(inp, {"aux": L.Rescaling(2.0)(logits), "scores": L.Identity()(logits)})
    as_tuple = keras.Model(inp, [logits, L.Rescaling(0.0)(logits)])
    x = rand(2, 8, 8, 3, seed=12)
    ref = salplug.explain(net, x, "gradients", target=1).canonical
    np.testing.assert_allclose(salplug.explain(as_tuple, x, "gradients", target=1).canonical, ref, rtol=1e-6)
    with pytest.raises(ModelOutputError, match="keys.*aux.*scores"):
        salplug.explain(as_dict, x, "gradients", target=1)
    for output in ("scores", lambda out: out["scores"]):
        out = salplug.explain(as_dict, x, "gradients", target=1, backend_options={"output": output})
        np.testing.assert_allclose(out.canonical, ref, rtol=1e-6)


def test_top1_default_target():
    model = small_cnn(seed=13)
    x = rand(3, 8, 8, 3, seed=13)
    out = salplug.explain(model, x, "gradients")
    assert out.target == [int(i) for i in model(x).numpy().argmax(1)]


# -- other model kinds ------------------------------------------------------------------------------
def test_a_plain_callable_and_a_tf_module():
    net = small_cnn(seed=14)
    x = rand(2, 8, 8, 3, seed=14)
    ref = salplug.explain(net, x, "gradients", target=2).canonical

    def doubled(t):
        return net(t) * 2.0

    np.testing.assert_allclose(salplug.explain(doubled, x, "gradients", target=2, backend="tf2").canonical,
                               2 * ref, rtol=1e-5, atol=1e-7)

    class Module(tf.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def __call__(self, t):
            return self.net(t, training=False)

    module = Module()
    assert salplug.get_plugin_manager(autoload=False).detect_backend(module) == "tf2"
    np.testing.assert_allclose(salplug.explain(module, x, "gradients", target=2).canonical, ref, rtol=1e-5)
    guided_net = salplug.explain(net, x, "guided_backprop", target=2).canonical
    np.testing.assert_allclose(salplug.explain(module, x, "guided_backprop", target=2).canonical, guided_net,
                               rtol=1e-5)
    cam = salplug.explain(module, x, "grad_cam", target=2, layer="net/conv2").canonical
    np.testing.assert_allclose(cam, salplug.explain(net, x, "grad_cam", target=2, layer="conv2").canonical,
                               rtol=1e-5, atol=1e-6)


def test_default_batch_size_follows_the_input():
    """No batch_size: about 16 rows of 224² per call on a CPU (TensorFlow gains from large
    batches), so 80 rows of 8x8 go in one call; a batch_size given anywhere wins."""
    ex = salplug.Explainer(small_cnn(seed=16), "tf2")
    rows, inner = [], ex.adapter.input_gradients
    ex.adapter.input_gradients = lambda x, t: rows.append(len(x)) or inner(x, t)
    ex.explain(rand(2, 8, 8, 3), "ig", target=[1, 2], steps=40)
    assert rows == [80]
    if not tf.config.list_logical_devices("GPU"):
        assert ex.adapter.batch_size_for(np.zeros((1, 224, 224, 3), np.float32)) == 16
    assert salplug.Explainer(small_cnn(), "tf2", device="cpu").adapter.batch_size_for(
        np.zeros((1, 224, 224, 3), np.float32)) == 16
    rows.clear()
    ex.explain(rand(2, 8, 8, 3), "ig", target=[1, 2], steps=40, batch_size=32)
    assert rows == [32, 32, 16]


def test_inner_work_is_packed_into_batches():
    model = Counting(small_cnn(seed=15))
    salplug.explain(model, rand(2, 8, 8, 3), "ig", target=[1, 2], steps=5, batch_size=4,
                    backend_options={"compile": False})
    assert model.calls == [4, 4, 2]


def test_traced_steps_are_reused_across_calls_and_freed_with_the_model():
    model = Counting(small_cnn(seed=16))
    x = rand(2, 8, 8, 3)
    salplug.explain(model, x, "ig", target=[1, 2], steps=20, batch_size=8)
    traced = len(model.calls)
    assert traced >= 1 and all(n is None for n in model.calls)  # traced with an open batch size
    salplug.explain(model, x, "ig", target=[0, 4], steps=7, batch_size=3)
    salplug.explain(model, x[:1], "gradients", target=3)
    assert len(model.calls) == traced  # no retracing for other batch sizes or targets
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


# -- detection and installation --------------------------------------------------------------------
def test_auto_detection():
    host = salplug.get_plugin_manager(autoload=False)
    assert host.detect_backend(small_cnn()) == "tf2"
    assert host.detect_backend(tf.function(lambda t: t)) == "tf2"
    assert host.detect_backend(lambda t: t) is None


def _run_python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_detection_imports_no_framework():
    code = (
        "import json, sys, salplug\n"
        "from salplug.backends.tf1_model import TF1Model\n"
        "host = salplug.get_plugin_manager(autoload=False)\n"
        "found = [host.detect_backend(m) for m in (object(), TF1Model(None, None, 'x:0', 'y:0'))]\n"
        "print(json.dumps([found, [m for m in ('tensorflow', 'keras', 'torch') if m in sys.modules]]))\n"
    )
    assert json.loads(_run_python(code)) == [[None, "tf1"], []]


def test_missing_tensorflow_names_the_extra():
    code = (
        "import sys\n"
        "sys.modules['tensorflow'] = None\n"
        "import numpy as np, salplug\n"
        "from salplug.errors import BackendUnavailableError\n"
        "for name in ('tf2', 'tf1'):\n"
        "    try:\n"
        "        salplug.explain(lambda t: t, np.zeros((1, 4, 4, 3)), backend=name)\n"
        "    except BackendUnavailableError as exc:\n"
        "        print(exc)\n"
    )
    assert 'pip install "salplug[tf]"' in _run_python(code)


def test_warnings_are_not_raised_for_a_relu_model():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        salplug.explain(small_cnn(seed=17), rand(1, 8, 8, 3), "guided_backprop", target=0)


def test_a_reused_explainer_explains_each_target_callables_own_class():
    # traced steps were cached under id(fn): a freed callable's address, reused by the next one,
    # gave it the old callable's graph (another class), and every callable stayed cached
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.ReLU()(inp)))
    x = np.array([[0.5, 1.0, 1.5, 2.0]], np.float32)
    ref = {k: salplug.explain(model, x, "guided_backprop", target=k).values for k in (0, 2)}
    explainer = salplug.Explainer(model, "tf2")
    for i in range(20):
        k = (0, 2)[i % 2]
        fn = (lambda k: (lambda out: out[:, k]))(k)
        np.testing.assert_allclose(explainer.explain(x, "guided_backprop", target=fn).values, ref[k], rtol=1e-6)
        del fn
    assert len(explainer.adapter._fn_steps) == 0  # gone with their callables


def test_traced_steps_per_model_are_bounded():
    from salplug.backends import tf2 as tf2_backend

    inp = keras.Input((None, None, 3))
    h = keras.layers.Conv2D(2, 3, padding="same", activation="relu")(inp)
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h)))
    explainer = salplug.Explainer(model, "tf2")
    for size in range(4, 4 + tf2_backend._STEPS_KEPT + 3):
        explainer.explain(np.ones((1, size, size, 3), np.float32), "guided_backprop", target=1)
    assert len(tf2_backend._TRACES[model]) == tf2_backend._STEPS_KEPT
