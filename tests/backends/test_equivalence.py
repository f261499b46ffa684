"""The same small CNN in PyTorch, Keras and a TF1 graph: every built-in method, the same map.

One network -- conv 3x3 'same' + ReLU, max-pool 2, conv 3x3 'same', ReLU layer, global average
pooling, dense + ReLU, dense -- is built in torch with fixed random weights, and the weights
are copied into a Keras model (conv kernels OIHW -> HWIO, dense weights transposed) and into a
``tf.compat.v1`` graph (variables, so guided backprop's in-memory copy freezes them). Each
registered method runs on the three backends, chosen by name; the maps must agree to 1e-4 of
the torch map's range (float32 round-off only), XRAI's region ranking exactly.
"""

from __future__ import annotations

import collections
import inspect

import numpy as np
import pytest

import salplug

torch = pytest.importorskip("torch", reason="the equivalence test needs PyTorch (pip install 'salplug[torch]')")
tf = pytest.importorskip("tensorflow", reason="the TF backends need TensorFlow: pip install 'salplug[tf]'")
keras = pytest.importorskip("keras", reason="the tf2 backend test needs Keras 3 (installed with TensorFlow)")
from torch import nn  # noqa: E402

from salplug.api import method_parameters  # noqa: E402
from salplug.backends.tf1_model import TF1Model  # noqa: E402

METHODS = salplug.get_plugin_manager(autoload=False).methods.names()
TARGETS = [1, 3]
CLASSES = 10

# Small parameters for every method (only those a method accepts are passed).
SMALL = {"steps": 8, "nsamples": 3, "seed": 0, "size": 4, "max_sigma": 4, "stdev_spread": 0.15,
         "return_segments": True}
# Grad-CAM's layer on each backend: the second ReLU's output.
LAYERS = {"torch": "relu2", "tf2": "relu2", "tf1": "relu2:0"}


def make_torch_twin(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(collections.OrderedDict([
        ("conv1", nn.Conv2d(3, 8, 3, padding=1)), ("relu1", nn.ReLU()), ("pool", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(8, 16, 3, padding=1)), ("relu2", nn.ReLU()),
        ("gap", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(16, 32)), ("relu3", nn.ReLU()), ("fc2", nn.Linear(32, CLASSES)),
    ])).eval()


def _weights(model: nn.Module) -> dict[str, np.ndarray]:
    """Torch weights in TensorFlow's layout: conv HWIO, dense (in, out)."""
    out = {}
    for name in ("conv1", "conv2"):
        out[f"{name}/kernel"] = getattr(model, name).weight.detach().numpy().transpose(2, 3, 1, 0)
    for name in ("fc1", "fc2"):
        out[f"{name}/kernel"] = getattr(model, name).weight.detach().numpy().T
    for name in ("conv1", "conv2", "fc1", "fc2"):
        out[f"{name}/bias"] = getattr(model, name).bias.detach().numpy()
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def make_keras_twin(model: nn.Module, size: int = 16):
    """The torch twin as Keras layers: ReLU as a Conv2D/Dense activation and as a ReLU layer."""
    L = keras.layers
    net = keras.Sequential([
        keras.Input((size, size, 3)),
        L.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
        L.MaxPooling2D(2, name="pool"),
        L.Conv2D(16, 3, padding="same", name="conv2"),
        L.ReLU(name="relu2"),
        L.GlobalAveragePooling2D(name="gap"),
        L.Dense(32, activation="relu", name="fc1"),
        L.Dense(CLASSES, name="fc2"),
    ])
    w = _weights(model)
    for name in ("conv1", "conv2", "fc1", "fc2"):
        net.get_layer(name).set_weights([w[f"{name}/kernel"], w[f"{name}/bias"]])
    return net


def make_tf1_twin(model: nn.Module, size: int | None = 16):
    """The torch twin as a tf.compat.v1 graph with variables, logits y, in its own session."""
    v1 = tf.compat.v1
    w = _weights(model)
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, size, size, 3], name="x")
        var = {k: v1.get_variable(k, initializer=v) for k, v in w.items()}
        h = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, var["conv1/kernel"], 1, "SAME"), var["conv1/bias"]),
                       name="relu1")
        h = tf.nn.max_pool2d(h, 2, 2, "VALID")
        h = tf.nn.bias_add(tf.nn.conv2d(h, var["conv2/kernel"], 1, "SAME"), var["conv2/bias"])
        h = tf.nn.relu(h, name="relu2")
        h = tf.reduce_mean(h, axis=[1, 2])
        h = tf.nn.relu(tf.matmul(h, var["fc1/kernel"]) + var["fc1/bias"], name="relu3")
        y = tf.add(tf.matmul(h, var["fc2/kernel"]), var["fc2/bias"], name="logits")
        init = v1.global_variables_initializer()
    session = v1.Session(graph=graph)
    session.run(init)
    return TF1Model(graph, session, x, y)


@pytest.fixture(scope="module")
def twins():
    model = make_torch_twin()
    x = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
    return {"torch": model, "tf2": make_keras_twin(model), "tf1": make_tf1_twin(model)}, x


def _inputs(backend: str, x: np.ndarray):
    """What a user of each framework holds: a torch NCHW tensor, a tf tensor, numpy."""
    if backend == "torch":
        return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    if backend == "tf2":
        return tf.constant(x)
    return x


def _params(method: str, backend: str) -> dict:
    host = salplug.get_plugin_manager(autoload=False)
    cls = host.methods.get(method).load()
    accepted, _ = method_parameters(cls() if inspect.isclass(cls) else cls)
    params = {k: v for k, v in SMALL.items() if k in accepted}
    if "layer" in accepted:
        params["layer"] = LAYERS[backend]
    return params


def _explain(twins, x, method, backend, **extra):
    models, _ = twins
    out = salplug.explain(models[backend], _inputs(backend, x), method, target=TARGETS, backend=backend,
                          **_params(method, backend), **extra)
    assert out.backend == backend
    return out


def test_the_twins_compute_the_same_logits(twins):
    models, x = twins
    ref = models["torch"](_inputs("torch", x)).detach().numpy()
    np.testing.assert_allclose(models["tf2"](x, training=False).numpy(), ref, atol=1e-5)
    bundle = models["tf1"]
    np.testing.assert_allclose(bundle.session.run(bundle.y, {bundle.x: x}), ref, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_the_same_map_on_every_backend(twins, method):
    _, x = twins
    torch_out = _explain(twins, x, method, "torch")
    ref = torch_out.canonical
    span = float(ref.max() - ref.min())
    assert np.isfinite(ref).all() and span > 0, f"{method} gave a constant map on the torch twin"
    for backend in ("tf2", "tf1"):
        out = _explain(twins, x, method, backend)
        got = out.canonical
        assert got.shape == ref.shape
        diff = float(np.abs(got - ref).max())
        assert diff <= 1e-4 * span, f"{method} on {backend}: max |diff| {diff:.3g} > 1e-4 x range {span:.3g}"
        if "segments" in torch_out.extras:  # XRAI: the same regions, ranked in the same order
            np.testing.assert_array_equal(out.extras["segments"], torch_out.extras["segments"])


def test_results_come_back_in_each_frameworks_type(twins):
    _, x = twins
    assert isinstance(_explain(twins, x, "gradients", "torch").values, torch.Tensor)
    assert tf.is_tensor(_explain(twins, x, "gradients", "tf2").values)
    assert isinstance(_explain(twins, x, "gradients", "tf1").values, np.ndarray)


def test_auto_detection_picks_each_backend(twins):
    models, x = twins
    host = salplug.get_plugin_manager(autoload=False)
    assert {name: host.detect_backend(model) for name, model in models.items()} == {
        "torch": "torch", "tf2": "tf2", "tf1": "tf1"}
    ref = salplug.explain(models["torch"], _inputs("torch", x), "gradients", target=TARGETS)
    for name in ("tf2", "tf1"):
        out = salplug.explain(models[name], x, "gradients", target=TARGETS)  # backend="auto"
        assert out.backend == name
        np.testing.assert_allclose(out.canonical, ref.canonical, atol=1e-5)


def test_default_targets_are_the_same_top1(twins):
    models, x = twins
    picked = {name: salplug.explain(m, _inputs(name, x), "gradients", backend=name).target
              for name, m in models.items()}
    assert picked["torch"] == picked["tf2"] == picked["tf1"]


def test_integrated_gradients_at_224x224_on_each_backend():
    model = make_torch_twin(seed=1)
    x = np.random.default_rng(1).uniform(0, 1, (1, 224, 224, 3)).astype(np.float32)
    models = {"torch": model, "tf2": make_keras_twin(model, 224), "tf1": make_tf1_twin(model, 224)}
    maps = {name: salplug.explain(m, _inputs(name, x), "ig", target=2, steps=32, backend=name,
                                  batch_size=16).canonical for name, m in models.items()}
    span = float(maps["torch"].max() - maps["torch"].min())
    for name in ("tf2", "tf1"):
        assert float(np.abs(maps[name] - maps["torch"]).max()) <= 1e-4 * span
