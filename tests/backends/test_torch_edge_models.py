"""The torch backend with unusual models and calls: threads through a shared model, inference
tensors, lazy modules, models whose first registered convolution is not the first they run,
odd layer outputs, TorchScript, and calls made inside torch.inference_mode()."""

from __future__ import annotations

import collections
import threading
import warnings

import numpy as np
import pytest
from conftest import make_cnn

import salplug
from salplug.errors import InputError, LayerError, ModelOutputError, ParameterError

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional
tb = pytest.importorskip("salplug.backends.torch")


class Residual(nn.Module):
    """A residual block whose forward can pause in thread "A" (to interleave two threads)."""

    def __init__(self, arrived=None, go_on=None):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)
        self.arrived, self.go_on = arrived, go_on

    def forward(self, x):
        if self.arrived is not None and threading.current_thread().name == "A":
            self.arrived.set()
            self.go_on.wait(10)
        y = F.relu(self.stem(x))
        return self.fc((y + self.block(y)).mean((2, 3)))


def test_grad_cams_layer_hook_leaves_other_threads_passes_alone():
    # Thread A's Grad-CAM hook sits on the shared layer while thread B explains the same model:
    # B's pass used to be cut at the layer (a silently wrong map) and A then failed ("ran 2 times").
    arrived, go_on = threading.Event(), threading.Event()
    model = Residual().eval()
    x = torch.randn(2, 3, 8, 8)
    alone_b = salplug.explain(model, x, "gradients", target=1).values
    alone_a = salplug.explain(model, x, "grad_cam", target=1, layer="block").values
    model.arrived, model.go_on = arrived, go_on
    results = {}

    def run_a():
        try:
            results["A"] = salplug.explain(model, x, "grad_cam", target=1, layer="block").values
        except Exception as exc:  # noqa: BLE001 - reported below
            results["A"] = exc

    def run_b():
        arrived.wait(10)
        try:
            results["B"] = salplug.explain(model, x, "gradients", target=1).values
        finally:
            go_on.set()

    threads = [threading.Thread(target=run_a, name="A"), threading.Thread(target=run_b, name="B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert torch.is_tensor(results["A"]), results["A"]
    torch.testing.assert_close(results["A"], alone_a)
    torch.testing.assert_close(results["B"], alone_b)


def _train_mode_state(model):
    return [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]


def test_a_model_of_inference_tensors_is_explained_and_left_as_it_was():
    with torch.inference_mode():  # e.g. built or loaded inside an inference block
        net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.9),
                            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5))
    net.train()
    before = _train_mode_state(net)
    x = torch.randn(2, 3, 8, 8)
    first = salplug.explain(net, x, "occlusion", target=1, size=3).values  # forward passes only
    second = salplug.explain(net, x, "occlusion", target=1, size=3).values
    torch.testing.assert_close(first, second)  # eval mode: dropout off in both
    assert _train_mode_state(net) == before
    assert not tb._FROZEN and not tb._IN_EVAL


class _Stubborn:
    """A parameter-like item that refuses to be turned back on."""

    requires_grad = True

    def requires_grad_(self, on):
        if on:
            raise RuntimeError("cannot turn back on")
        self.requires_grad = on


def test_every_item_is_restored_even_when_one_restore_fails():
    model = make_cnn()
    model.train()
    params = [_Stubborn(), *model.parameters()]
    with pytest.raises(RuntimeError, match="cannot turn back on"):
        with tb.hold_model(list(model.modules()), params, eval_mode=True):
            assert not any(m.training for m in model.modules())
    assert all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    assert not tb._FROZEN and not tb._IN_EVAL


class HeadFirst(nn.Module):
    """Its head is registered before its stem: the first registered convolution takes 16 channels."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.head = nn.Conv2d(16, 5, 1)
        self.stem = nn.Conv2d(3, 16, 3, padding=1)

    def forward(self, x):
        return self.head(F.relu(self.stem(x))).mean((2, 3))


class FlatIn(nn.Module):
    """Takes (N, 64) vectors and makes images of them itself."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(F.relu(self.conv(x.reshape(-1, 1, 8, 8))).mean((2, 3)))


@pytest.mark.parametrize("model, x, layout", [(HeadFirst, (2, 3, 8, 8), "NCHW"), (FlatIn, (2, 64), "N...")])
def test_a_named_layout_takes_the_input_as_given(model, x, layout):
    model = model().eval()
    x = torch.randn(*x)
    with pytest.raises(InputError, match="layout"):  # the guess from the first registered convolution
        salplug.explain(model, x, "gradients", target=1)
    out = salplug.explain(model, x, "gradients", target=1, layout=layout).values
    xr = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(model(xr)[:, 1].sum(), xr)
    torch.testing.assert_close(out, expected)


def test_a_lazy_model_before_its_first_pass():
    torch.manual_seed(3)
    net = nn.Sequential(nn.LazyConv2d(4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                        nn.LazyLinear(5))
    x = torch.randn(2, 3, 8, 8)
    out = salplug.explain(net, x, "gradients", target=1).values  # used to read in_channels = 0
    xr = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(net(xr)[:, 1].sum(), xr)
    torch.testing.assert_close(out, expected)


def test_a_complex_tensor_is_refused():
    with pytest.raises(InputError, match="complex64; pass real numbers"):
        salplug.explain(make_cnn(), torch.randn(1, 3, 8, 8, dtype=torch.complex64), "gradients", target=1)


def test_inside_inference_mode_gradients_are_refused_clearly_and_forward_methods_work():
    model, x = make_cnn(), torch.rand(1, 3, 8, 8)
    expected = salplug.explain(model, x, "occlusion", target=1, size=4).values
    with torch.inference_mode():
        for method, params in (("gradients", {}), ("grad_cam", {"layer": "conv2"}), ("guided_backprop", {})):
            with pytest.raises(ParameterError, match="inference_mode"):
                salplug.explain(model, x, method, target=1, **params)
        torch.testing.assert_close(salplug.explain(model, x, "occlusion", target=1, size=4).values, expected)


Pair = collections.namedtuple("Pair", "features extra")


class OddLayer(nn.Module):
    """A wrapper around a convolution whose output is a namedtuple or a dict."""

    def __init__(self, kind):
        super().__init__()
        self.conv, self.kind = nn.Conv2d(3, 4, 3, padding=1), kind

    def forward(self, x):
        y = self.conv(x)
        return Pair(y, y.mean()) if self.kind == "namedtuple" else {"features": y}


class OddNet(nn.Module):
    def __init__(self, kind):
        super().__init__()
        torch.manual_seed(4)
        self.layer, self.fc = OddLayer(kind), nn.Linear(4, 5)

    def forward(self, x):
        out = self.layer(x)
        y = out[0] if isinstance(out, tuple) else out["features"]
        return self.fc(F.relu(y).mean((2, 3)))


def test_grad_cam_on_a_layer_returning_a_namedtuple_or_a_dict():
    x = torch.rand(2, 3, 8, 8)
    via_tuple = salplug.explain(OddNet("namedtuple").eval(), x, "grad_cam", target=1, layer="layer").values
    via_conv = salplug.explain(OddNet("namedtuple").eval(), x, "grad_cam", target=1, layer="layer.conv").values
    torch.testing.assert_close(via_tuple, via_conv)
    with pytest.raises(LayerError, match="dict"):
        salplug.explain(OddNet("dict").eval(), x, "grad_cam", target=1, layer="layer")


def test_a_target_callable_that_detaches_is_a_clear_error():
    with pytest.raises(ModelOutputError, match="does not depend on the input"):
        salplug.explain(make_cnn(), torch.rand(1, 3, 8, 8), "gradients", target=lambda out: out[:, 1].detach())


def test_torchscript_layer_lookup_is_a_layer_error():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 5)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated, still in use
        scripted = torch.jit.script(net)
    with pytest.raises(LayerError, match="TorchScript"):
        salplug.explain(scripted, torch.rand(1, 3, 8, 8), "grad_cam", target=1, layer="0")


class WritesIntoItsInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = make_cnn()

    def forward(self, x):
        return self.net(x.sub_(0.5))


def test_scores_never_write_into_the_methods_rows():
    adapter = salplug.Explainer(WritesIntoItsInput()).adapter
    rows = np.random.default_rng(0).uniform(size=(3, 8, 8, 3)).astype(np.float32)
    kept = rows.copy()
    adapter.scores(rows, salplug.types.Targets(np.array([1, 2, 3])))
    np.testing.assert_array_equal(rows, kept)


class CountingRows(nn.Module):
    """make_cnn's network, recording the rows of every forward pass."""

    def __init__(self):
        super().__init__()
        self.net, self.rows = make_cnn(), []

    def forward(self, x):
        self.rows.append(len(x))
        return self.net(x)


def test_a_named_layout_the_model_cannot_take_is_refused_after_one_row():
    # Named layouts are tried on the model when the first-convolution checks refuse them: a
    # real mismatch is still an InputError, after a single one-row forward pass.
    model = CountingRows().eval()
    x = torch.rand(4, 1, 8, 8)  # one channel for a three-channel network
    with pytest.raises(InputError, match="fails on it too"):
        salplug.explain(model, x, "integrated_gradients", target=1, layout="NCHW")
    assert model.rows == [1]


def test_parameters_follow_the_inputs_verdict_on_the_shape_checks():
    # A model the first-convolution checks misjudge takes its baseline as its input; for a model
    # they fit, a baseline they refuse is a ParameterError before any model call.
    x = torch.rand(2, 3, 8, 8)
    odd = HeadFirst().eval()
    base = torch.full((3, 8, 8), 0.25)
    out = salplug.explain(odd, x, "ig", target=1, layout="NCHW", baseline=base, steps=4).values
    zero = salplug.explain(odd, x - 0.25, "ig", target=1, layout="NCHW", steps=4).values
    assert out.shape == x.shape and not torch.allclose(out, zero)  # the baseline was used
    plain = CountingRows().eval()
    with pytest.raises(ParameterError, match="baseline"):
        salplug.explain(plain, x, "ig", target=1, layout="NCHW", baseline=torch.zeros(5, 8, 8), steps=4)
    assert plain.rows == []


class HeadFirstView(HeadFirst):
    """HeadFirst, flattening with .view (which refuses the CPU's channels-last memory), with
    batch norm in its head (one row cannot run it in train mode)."""

    def __init__(self):
        super().__init__()
        self.fc, self.norm = nn.Linear(5 * 8 * 8, 5), nn.BatchNorm1d(5)

    def forward(self, x):
        y = self.head(F.relu(self.stem(x)))
        return self.norm(self.fc(y.view(y.shape[0], -1)))


def test_the_one_row_try_runs_as_real_calls_run():
    # through outputs(): the .view retry in plain NCHW; in eval mode, so a train-mode model (eval_mode=False) gets no statistics update and no one-row batch norm
    model = HeadFirstView().train()
    stats = model.norm.num_batches_tracked.clone()
    x = torch.rand(4, 3, 8, 8)
    out = salplug.explain(model, x, "gradients", target=1, layout="NCHW", backend_options={"eval_mode": False})
    assert out.values.shape == x.shape
    assert int(model.norm.num_batches_tracked - stats) == 1  # the explained pass only


def test_each_refused_input_shape_is_tried_once_per_explainer():
    class AnyChannels(nn.Module):  # gray or RGB: its first registered convolution takes 3
        def __init__(self):
            super().__init__()
            self.net, self.rows = make_cnn(), []

        def forward(self, x):
            self.rows.append(len(x))
            return self.net(x.expand(-1, 3, -1, -1))

    model = AnyChannels().eval()
    ex = salplug.Explainer(model)
    rgb, gray = torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8)
    for x in (rgb, gray, rgb, gray):
        ex.explain(x, "gradients", target=1, layout="NCHW")
    assert model.rows == [2, 1, 2, 2, 2]  # one try for the gray shape, then the four calls
