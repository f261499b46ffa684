"""tf2 backend on Keras models with channels_first layers: NCHW in, the same maps as channels_last."""

from __future__ import annotations

import numpy as np
import pytest

import salplug
from salplug.errors import InputError

tf = pytest.importorskip("tensorflow", reason="the tf2 backend needs TensorFlow: pip install 'salplug[tf]'")
keras = pytest.importorskip("keras", reason="the tf2 backend tests use Keras 3 (installed with TensorFlow)")
L = keras.layers


def build(fmt: str):
    """conv -> pool -> conv -> ReLU layer (no data_format of its own) -> GAP -> dense."""
    inp = keras.Input((3, 8, 10) if fmt == "channels_first" else (8, 10, 3))
    h = L.Conv2D(4, 3, padding="same", activation="relu", data_format=fmt, name="conv1")(inp)
    h = L.MaxPooling2D(2, data_format=fmt)(h)
    h = L.Conv2D(6, 3, padding="same", data_format=fmt, name="conv2")(h)
    h = L.ReLU(name="relu2")(h)
    h = L.GlobalAveragePooling2D(data_format=fmt)(h)
    return keras.Model(inp, L.Dense(5, name="fc")(h))


@pytest.fixture(scope="module")
def pair():
    keras.utils.set_random_seed(3)
    first, last = build("channels_first"), build("channels_last")
    last.set_weights(first.get_weights())
    x = np.random.default_rng(0).uniform(0, 1, (2, 8, 10, 3)).astype(np.float32)
    nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(first(nchw).numpy(), last(x).numpy(), atol=1e-5)  # same network
    return first, last, x, nchw


CASES = [
    ("gradients", {}),
    ("integrated_gradients", {"steps": 4}),
    ("occlusion", {"size": 3}),
    ("guided_backprop", {}),
    ("grad_cam", {"layer": "conv2", "three_dims": False}),
    ("grad_cam", {"layer": "relu2"}),
]


@pytest.mark.parametrize("method,params", CASES, ids=[f"{m}-{p.get('layer', '')}" for m, p in CASES])
def test_channels_first_model_gives_the_channels_last_maps_in_nchw(pair, method, params):
    first, last, x, nchw = pair
    ref = salplug.explain(last, x, method, target=[1, 3], **params).values  # NHWC (or NHW)
    got = salplug.explain(first, nchw, method, target=[1, 3], **params)
    want = ref.transpose(0, 3, 1, 2) if ref.ndim == 4 else ref
    assert got.values.shape == want.shape
    np.testing.assert_allclose(got.values, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.canonical, ref.reshape(got.canonical.shape), rtol=1e-4, atol=1e-5)


def test_channels_first_single_image_and_explicit_layouts(pair):
    first, last, x, nchw = pair
    ref = salplug.explain(last, x[:1], "gradients", target=2).values
    one = salplug.explain(first, nchw[0], "gradients", target=2).values  # CHW by default
    assert one.shape == (3, 8, 10)
    np.testing.assert_allclose(one, ref[0].transpose(2, 0, 1), rtol=1e-4, atol=1e-6)
    named = salplug.explain(first, nchw[:1], "gradients", target=2, layout="NCHW").values
    np.testing.assert_allclose(named, ref.transpose(0, 3, 1, 2), rtol=1e-4, atol=1e-6)
    as_nhwc = salplug.explain(first, x[:1], "gradients", target=2, layout="NHWC").values
    np.testing.assert_allclose(as_nhwc, ref, rtol=1e-4, atol=1e-6)
    tensor = salplug.explain(first, tf.constant(nchw[:1]), "gradients", target=2).values
    assert tf.is_tensor(tensor)
    np.testing.assert_allclose(tensor.numpy(), ref.transpose(0, 3, 1, 2), rtol=1e-4, atol=1e-6)


def test_channels_first_model_checks_channels_on_axis_1(pair):
    first = pair[0]
    with pytest.raises(InputError, match="expects 3 input channels.*channels first"):
        salplug.explain(first, np.zeros((1, 8, 10, 3), np.float32), "gradients", target=0)
