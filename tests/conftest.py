"""Shared fixtures: a fresh plugin host per test, small torch networks, analytic models."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: no spinning threads on shared cores

import numpy as np
import pytest

import salplug
from salplug.backends.callable import INPUT_OUTPUT_GRADIENTS, OUTPUT_LAYER_VALUES


@pytest.fixture
def host():
    """A fresh plugin host with built-ins only (no entry points, no shared state)."""
    return salplug.get_plugin_manager(autoload=False, blocked=[], strict=False)


def host_with_method(name: str, method_class):
    """A plugin host with the built-ins and ``method_class`` registered as ``name``."""

    class Plugin:
        @salplug.hookimpl
        def register_methods(self, register):
            register(name, method_class, requires=method_class.requires)

    return salplug.get_plugin_manager(autoload=False, plugins={"p": Plugin()})


@pytest.fixture(autouse=True)
def _isolated_default_host(monkeypatch):
    """Each test builds its own default host too (salplug.explain without host=)."""
    monkeypatch.setenv("SALPLUG_DISABLE_PLUGIN_AUTOLOAD", "1")
    salplug.reset_host()
    yield
    salplug.reset_host()


def make_cnn(seed: int = 0, channels: int = 3, classes: int = 10, functional: bool = False):
    """A small CNN (conv, ReLU, pooling, dense) with fixed random weights, in eval mode."""
    torch = pytest.importorskip("torch")
    from torch import nn

    torch.manual_seed(seed)

    class SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(channels, 8, 3, padding=1)
            self.relu1 = nn.ReLU()
            self.pool = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
            self.relu2 = nn.ReLU()
            self.gap = nn.AdaptiveAvgPool2d(4)
            self.fc = nn.Linear(16 * 16, classes)

        def forward(self, x):
            act = torch.relu if functional else None
            x = self.pool(act(self.conv1(x)) if act else self.relu1(self.conv1(x)))
            x = act(self.conv2(x)) if act else self.relu2(self.conv2(x))
            return self.fc(self.gap(x).flatten(1))

    return SmallCNN().eval()


@pytest.fixture
def cnn():
    return make_cnn()


def linear_call_model_function(w: np.ndarray):
    """Upstream-style call_model_function for f(x) = sum(w * x) (gradient w, exactly)."""

    def call(x_batch, call_model_args=None, expected_keys=None):
        x_batch = np.asarray(x_batch, np.float64)
        out = {}
        if INPUT_OUTPUT_GRADIENTS in expected_keys:
            out[INPUT_OUTPUT_GRADIENTS] = np.broadcast_to(w, x_batch.shape).copy()
        if OUTPUT_LAYER_VALUES in expected_keys:
            out[OUTPUT_LAYER_VALUES] = (x_batch * w).reshape(len(x_batch), -1).sum(1)
        return out

    return call


def quadratic_call_model_function(w: np.ndarray):
    """f(x) = sum(w * x**2); gradient 2 w x; IG from 0 gives exactly w * x**2."""

    def call(x_batch, call_model_args=None, expected_keys=None):
        x_batch = np.asarray(x_batch, np.float64)
        out = {}
        if INPUT_OUTPUT_GRADIENTS in expected_keys:
            out[INPUT_OUTPUT_GRADIENTS] = 2 * w * x_batch
        if OUTPUT_LAYER_VALUES in expected_keys:
            out[OUTPUT_LAYER_VALUES] = (w * x_batch**2).reshape(len(x_batch), -1).sum(1)
        return out

    return call


def torch_call_model_function(model, target: int, layer=None):
    """An upstream-style call_model_function over a torch model (NHWC numpy in and out).

    It answers every upstream key, so the upstream ``saliency`` package can run on exactly
    the model that salplug's torch backend sees. ``layer`` is the module whose output is
    CONVOLUTION_LAYER_VALUES (channels last).
    """
    import torch

    from salplug.backends.callable import CONVOLUTION_LAYER_VALUES, CONVOLUTION_OUTPUT_GRADIENTS

    def call(x_batch, call_model_args=None, expected_keys=None):
        t = torch.tensor(np.asarray(x_batch), dtype=torch.float32).permute(0, 3, 1, 2).requires_grad_(True)
        captured = []
        handle = layer.register_forward_hook(lambda m, i, o: captured.append(o)) if layer is not None else None
        try:
            logits = model(t)
        finally:
            if handle is not None:
                handle.remove()
        score = logits[:, target]
        out = {}
        if OUTPUT_LAYER_VALUES in expected_keys:
            out[OUTPUT_LAYER_VALUES] = score.detach().numpy()
        if INPUT_OUTPUT_GRADIENTS in expected_keys:
            (g,) = torch.autograd.grad(score.sum(), t, retain_graph=True)
            out[INPUT_OUTPUT_GRADIENTS] = g.permute(0, 2, 3, 1).numpy()
        if CONVOLUTION_LAYER_VALUES in expected_keys or CONVOLUTION_OUTPUT_GRADIENTS in expected_keys:
            (g,) = torch.autograd.grad(score.sum(), captured[0])
            out[CONVOLUTION_LAYER_VALUES] = captured[0].detach().permute(0, 2, 3, 1).numpy()
            out[CONVOLUTION_OUTPUT_GRADIENTS] = g.permute(0, 2, 3, 1).numpy()
        return out

    return call


def counting(fn):
    """Wrap a call_model_function so that it counts its calls and the rows it saw."""
    calls = []

    def call(x_batch, call_model_args=None, expected_keys=None):
        calls.append(len(x_batch))
        return fn(x_batch, call_model_args, expected_keys)

    return call, calls


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: on a shared CI machine busy-waiting OpenMP threads are many
    times slower (the CLI sets OMP_WAIT_POLICY=PASSIVE, which cannot act once torch is imported)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def quantile_shim(monkeypatch):
    """Let upstream's Guided IG run on NumPy 2: map the removed ``interpolation=`` to ``method=``."""
    original = np.quantile

    def quantile(a, q, *args, interpolation=None, **kwargs):
        if interpolation is not None:
            kwargs["method"] = interpolation
        return original(a, q, *args, **kwargs)

    monkeypatch.setattr(np, "quantile", quantile)
