"""Odd but legitimate inputs: NaN maps in render(), SmoothGrad overflow, overlay layouts, messages."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import salplug
from salplug.errors import InputError, LayerError, ParameterError, TargetError
from salplug.visualizers import render

F32_MAX = float(np.finfo(np.float32).max)


# -- 1. render() checks the map before any visualizer runs ---------------------------------------
def _recording_host(calls):
    class Plugin:
        @salplug.hookimpl
        def register_visualizers(self, register):
            register("spy", lambda v, image=None: calls.append(1) or np.zeros(v.shape[:2]))

    return salplug.get_plugin_manager(autoload=False, plugins={"vis": Plugin()})


@pytest.mark.parametrize("kind", ["heatmap", "grayscale", "diverging", "spy"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_render_refuses_a_map_with_nan_or_inf_before_the_visualizer(kind, bad):
    calls = []
    m = np.linspace(-1, 1, 48).reshape(4, 4, 3)
    m[0, 0, 0] = bad
    m[1, 2, 1] = bad
    with pytest.raises(InputError, match=r"2 NaN or infinite.*nan_to_num"):
        render(kind, m, image=np.full((4, 4, 3), 200, np.uint8), host=_recording_host(calls))
    assert calls == []
    render("spy", np.nan_to_num(m), host=_recording_host(calls))  # the advice works
    assert calls == [1]


def test_attribution_save_of_a_nan_map_writes_nothing(tmp_path):
    values = np.ones((1, 4, 4, 3), np.float32)
    values[0, 1, 1, 1] = np.nan
    att = salplug.Attribution(values, values, "m", {}, None, "b")
    with pytest.raises(InputError, match="1 NaN"):
        att.save(str(tmp_path / "out.png"), kind="heatmap")
    assert not (tmp_path / "out.png").exists()


# -- 3. the overlay's CHW/HWC choice reads the map's (H, W) ---------------------------------------
@pytest.mark.parametrize("map_hw,image_shape,chw", [
    ((3, 5), (3, 5, 4), False),  # RGBA, 3 pixels tall
    ((1, 5), (1, 5, 4), False),  # RGBA, 1 pixel tall
    ((5, 3), (3, 5, 3), True),  # CHW, 3 pixels wide
    ((5, 1), (3, 5, 1), True),  # CHW, 1 pixel wide
    ((4, 4), (3, 4, 4), True),  # the case the guess already got right
])
def test_overlay_layout_follows_the_map_shape(map_hw, image_shape, chw):
    rng = np.random.default_rng(0)
    m = rng.normal(size=(*map_hw, 3))
    img = rng.integers(0, 256, image_shape, dtype=np.uint8)
    hwc = img.transpose(1, 2, 0) if chw else img
    expected = render("heatmap", m, image=np.ascontiguousarray(hwc[..., :3]))
    np.testing.assert_allclose(render("heatmap", m, image=img), expected)


def test_overlay_shape_error_shows_the_image_as_given():
    with pytest.raises(InputError, match=r"got \(5, 4, 3\)"):
        render("heatmap", np.zeros((4, 4, 3)), image=np.zeros((5, 4, 3)))
    with pytest.raises(InputError, match="overlay image"):  # two channels: neither RGB nor gray
        render("heatmap", np.zeros((4, 4, 3)), image=np.zeros((4, 4, 2)))


# -- torch models ----------------------------------------------------------------------------------
torch = pytest.importorskip("torch")
nn = torch.nn


class Recording(nn.Module):
    """A small CNN that records every batch it is called on."""

    def __init__(self, classes=5, size=6):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * size * size, classes)
        self.seen = []

    def forward(self, x):
        self.seen.append(bool(torch.isfinite(x).all()))
        return self.fc(torch.relu(self.conv(x)).flatten(1))


X = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype(np.float32)


# -- 2. SmoothGrad noise that would overflow float32 -----------------------------------------------
@pytest.mark.parametrize("params,error,match", [
    (dict(stdev=1e39), ParameterError, "stdev"),
    (dict(stdev=5e37), ParameterError, "stdev"),  # 10 sigma above float32's max
    (dict(stdev_spread=1e38), ParameterError, "stdev_spread"),
    (dict(stdev_spread=1e308), ParameterError, "stdev_spread"),  # sigma overflows float64 too
    (dict(stdev=float("inf")), ParameterError, "stdev"),
    (dict(stdev_spread=float("nan")), ParameterError, "stdev_spread"),
])
def test_smoothgrad_noise_that_overflows_float32_is_refused_before_the_model(params, error, match):
    net = Recording()
    with pytest.raises(error, match=match):
        salplug.explain(net, X, "smoothgrad", target=1, nsamples=2, seed=0, **params)
    assert net.seen == []


def test_smoothgrad_on_an_input_whose_range_overflows_float32_is_an_input_error():
    net = Recording()
    big = np.where(X > 0, 2e38, -2e38).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy overflow warning on the way
        with pytest.raises(InputError, match="range") as info:
            salplug.explain(net, big, "smoothgrad", target=1, nsamples=2, seed=0)
    assert not isinstance(info.value, ParameterError) and net.seen == []


def test_smoothgrad_with_large_but_safe_noise_still_runs():
    net = Recording()
    out = salplug.explain(net, X, "smoothgrad", target=1, nsamples=2, seed=0, stdev=1e36)
    assert net.seen and all(net.seen) and np.isfinite(out.canonical).all()


# -- 4.1 float64 beyond float32's range ------------------------------------------------------------
def test_float64_values_beyond_float32_say_overflow_without_a_warning():
    net = Recording()
    x = X.astype(np.float64)
    x[0, 0, 0, :2] = 1e40
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match=r"2 value\(s\).*float32") as info:
            salplug.explain(net, x, "gradients", target=1)
    assert "NaN" not in str(info.value) and net.seen == []
    x[1, 1, 1, 1] = np.nan  # NaN still reads as NaN
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match="1 NaN or infinite"):
            salplug.explain(net, x, "gradients", target=1)


# -- 4.2 sparse tensors ----------------------------------------------------------------------------
def test_a_sparse_tensor_is_an_input_error():
    net = Recording()
    sparse = torch.from_numpy(X.transpose(0, 3, 1, 2).copy()).to_sparse()
    with pytest.raises(InputError, match="to_dense"):
        salplug.explain(net, sparse, "gradients", target=1)
    assert net.seen == []


# -- 4.3 a class target for a one-score model ------------------------------------------------------
class OneScore(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = Recording()

    def forward(self, x):
        return self.net(x)[:, 0]


@pytest.mark.parametrize("method,params", [("integrated_gradients", dict(steps=5)), ("occlusion", dict(size=2)),
                                           ("gradients", {})])
def test_a_class_target_on_a_one_score_model_suggests_target_none(method, params):
    with pytest.raises(TargetError) as info:
        salplug.explain(OneScore(), X, method, target=0, **params)
    message = str(info.value)
    assert "target=None" in message and "(N,)" in message
    assert "(10,)" not in message and "(34,)" not in message
    out = salplug.explain(OneScore(), X, method, target=None, **params)  # the advice works
    assert np.isfinite(out.canonical).all()


# -- 4.4 uint64 targets above int64 ----------------------------------------------------------------
@pytest.mark.parametrize("target", [np.array([2**64 - 1, 1], np.uint64), [2**64 - 1, 1], np.uint64(2**64 - 1),
                                    2**64 - 1, 2**70])
def test_huge_unsigned_targets_are_out_of_range_not_wrapped(target):
    net = Recording()
    with pytest.raises(TargetError, match=f"target {max(int(t) for t in np.ravel(np.asarray(target, dtype=object)))} is out of range"):
        salplug.explain(net, X, "gradients", target=target)
    assert net.seen == []


# -- 4.5 Grad-CAM on a traced model ----------------------------------------------------------------
def test_grad_cam_on_a_traced_model_says_it_needs_the_python_module():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace is deprecated, still in use
        traced = torch.jit.trace(net, torch.zeros(1, 3, 6, 6))
    with pytest.raises(LayerError, match="Python nn.Module"):
        salplug.explain(traced, X, "grad_cam", target=1, layer="0")


def test_grad_cam_on_a_layer_inside_a_traced_submodule_names_torchscript():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(net, torch.zeros(1, 3, 6, 6))

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = traced

        def forward(self, x):
            return self.inner(x)

    with pytest.raises(LayerError, match="TorchScript.*Python nn.Module"):
        salplug.explain(Wrapper(), X, "grad_cam", target=1, layer="inner.0")


# -- lead's follow-ups: float64 torch tensors beyond float32, tf2's one-score message -------------
@pytest.mark.parametrize("keep_on_device", [False, True])
def test_a_float64_torch_tensor_beyond_float32_is_said_to_overflow(keep_on_device):
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    x = torch.zeros(1, 3, 6, 6, dtype=torch.float64)
    x[0, 0, 0, 0] = 1e40
    explainer = salplug.Explainer(model, device_arrays=keep_on_device)
    with pytest.raises(InputError, match="beyond float32's range"):
        explainer.explain(x, "gradients", target=0)
    x[0, 0, 0, 1] = float("nan")
    with pytest.raises(InputError, match="NaN or infinite"):
        explainer.explain(x, "gradients", target=0)


def test_tf2_one_score_model_with_a_class_target_says_pass_none():
    keras = pytest.importorskip("keras")
    inp = keras.Input((6, 6, 3))
    model = keras.Model(inp, keras.layers.Dense(1)(keras.layers.Flatten()(inp))[:, 0])
    x = np.random.default_rng(0).random((2, 6, 6, 3)).astype(np.float32)
    with pytest.raises(TargetError, match=r"one score per input \(output shape \(N,\)\). Pass target=None"):
        salplug.explain(model, x, "integrated_gradients", target=1, steps=5)
    assert salplug.explain(model, x, "integrated_gradients", target=None, steps=5).values.shape == x.shape
