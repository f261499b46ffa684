"""Device arrays: with ``device_arrays=True`` (the default on a GPU) the inner work of gradients,
Guided Backprop, IG and SmoothGrad stays in torch tensors on the model's device. Forced on here
on the CPU, every map must equal the numpy path's, and the tensor path must really be taken.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_cnn

import salplug
from salplug.errors import ParameterError

torch = pytest.importorskip("torch")

from salplug.backends.torch import TorchAdapter  # noqa: E402

CASES = [
    ("gradients", {}),
    ("guided_backprop", {}),
    ("integrated_gradients", {"steps": 7}),
    ("integrated_gradients", {"steps": 6, "rule": "gausslegendre"}),  # weights differ per step
    ("integrated_gradients", {"steps": 5, "baseline": 0.25}),
    ("smoothgrad", {"nsamples": 5, "seed": 1, "noise": "host"}),
    ("smoothgrad", {"nsamples": 5, "seed": 2, "mode": "squared", "base": "guided_backprop", "noise": "host"}),
    ("smoothgrad", {"nsamples": 4, "seed": 3, "mode": "vargrad", "noise": "host"}),
    ("smoothgrad", {"nsamples": 3, "seed": 4, "base": "integrated_gradients", "base_params": {"steps": 4}}),
    ("xrai", {"steps": 4}),
    ("blur_ig", {"steps": 4}),
    ("grad_cam", {"layer": "conv2"}),
    ("grad_cam", {"layer": "conv2", "three_dims": False}),
    ("grad_cam", {"layer": "conv2", "should_resize": False}),
    ("grad_cam", {"layer": "conv1", "relu": False, "normalize": True}),
]


def both(method, params, x, batch_size=3, memory_format="auto", **kw):
    """(map with device arrays, map without) for the same model and input."""
    model = make_cnn(seed=2)
    on = salplug.explain(model, x, method, target=[1, 4, 7][: len(x)] if x.ndim == 4 else 1,
                         batch_size=batch_size, backend_options={"device_arrays": True,
                                                                 "memory_format": memory_format},
                         **params, **kw)
    off = salplug.explain(model, x, method, target=[1, 4, 7][: len(x)] if x.ndim == 4 else 1,
                          batch_size=batch_size, backend_options={"device_arrays": False}, **params, **kw)
    return on, off


@pytest.mark.parametrize("memory_format", ["auto", "contiguous"])  # on the CPU: NHWC memory, then NCHW
@pytest.mark.parametrize("method,params", CASES, ids=lambda v: v if isinstance(v, str) else "")
def test_every_map_equals_the_numpy_path(method, params, memory_format):
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    on, off = both(method, params, x, memory_format=memory_format)
    assert torch.is_tensor(on.values) and on.values.shape == off.values.shape
    scale = float(np.abs(off.canonical).max())
    np.testing.assert_allclose(on.canonical, off.canonical, rtol=1e-5, atol=1e-6 * scale)
    torch.testing.assert_close(on.values, off.values, rtol=1e-5, atol=1e-6 * scale)


def test_the_tensor_path_is_taken_and_the_input_does_not_cross_back():
    model = make_cnn(seed=2)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    seen = {}
    for flag in (True, False):
        ex = salplug.Explainer(model, device_arrays=flag)
        inner, moved = ex.adapter.input_gradients, []
        kinds = seen[flag] = []

        def spy(rows, targets, inner=inner, kinds=kinds):
            kinds.append("tensor" if torch.is_tensor(rows) else "numpy")
            return inner(rows, targets)

        ex.adapter.input_gradients = spy
        if flag:
            to_device = ex.adapter.to_device
            ex.adapter.to_device = lambda arr, to_device=to_device: moved.append(arr.shape) or to_device(arr)
        ex.explain(x, "gradients", target=[0, 1])
        assert moved == []  # the caller's tensor is used on its device, not re-sent from numpy
        ex.explain(x, "ig", target=[0, 1], steps=4, batch_size=4)  # two batches
        ex.explain(x, "smoothgrad", target=[0, 1], nsamples=2, seed=0)
    assert seen[False] == ["numpy"] * 4
    assert seen[True] == ["tensor"] * 4
    assert not x.requires_grad and x.grad is None


class _WritesIntoItsInput(torch.nn.Module):
    """A model that normalises its input in place (a bad habit some wrappers have)."""

    def __init__(self):
        super().__init__()
        self.net = make_cnn(seed=2)

    def forward(self, x):
        if not x.requires_grad:
            x.mul_(0.5)
        return self.net(x)


@pytest.mark.parametrize("flag", [True, False])
@pytest.mark.parametrize("method,params", [("gradients", {}), ("grad_cam", {"layer": "net.conv2"})])
def test_a_model_writing_into_its_input_never_reaches_the_callers_data(flag, method, params):
    model = _WritesIntoItsInput()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    x_np = x.permute(0, 2, 3, 1).numpy().copy()  # NHWC float32: canonical as it is
    before, before_np = x.clone(), x_np.copy()
    for inputs in (x, x_np):
        salplug.explain(model, inputs, method, backend_options={"device_arrays": flag}, **params)  # top-1
    assert torch.equal(x, before) and np.array_equal(x_np, before_np)


def test_a_caller_tensor_that_requires_grad_is_left_alone():
    model = make_cnn(seed=2)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    before = x.detach().clone()
    on = salplug.explain(model, x, "gradients", target=1, backend_options={"device_arrays": True})
    off = salplug.explain(model, x.detach(), "gradients", target=1)
    torch.testing.assert_close(on.values, off.values)
    assert x.grad is None and torch.equal(x.detach(), before)
    assert not on.values.requires_grad


@pytest.mark.parametrize("layout", ["CHW", "NHWC-numpy", "HWC-numpy"])
def test_other_layouts_and_numpy_inputs(layout):
    rng = np.random.default_rng(3)
    if layout == "CHW":
        x = torch.from_numpy(rng.random((3, 16, 16), dtype=np.float32))
    elif layout == "NHWC-numpy":
        x = rng.random((2, 16, 16, 3), dtype=np.float32)
    else:
        x = rng.random((16, 16, 3), dtype=np.float32)
    on, off = both("integrated_gradients", {"steps": 5}, x)
    assert type(on.values) is type(off.values) and on.values.shape == off.values.shape
    np.testing.assert_allclose(np.asarray(on.values), np.asarray(off.values), rtol=1e-5, atol=1e-8)


def test_out_of_memory_halving_joins_device_pieces():
    from test_torch_autotune import OOMAbove

    inner = make_cnn(seed=2)
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    want = salplug.explain(inner, x, "ig", target=2, steps=6, batch_size=24).values
    model = OOMAbove(inner, limit=5)
    with pytest.warns(RuntimeWarning, match="Out of memory"):
        got = salplug.explain(model, x, "ig", target=2, steps=6, batch_size=24,
                              backend_options={"device_arrays": True}).values
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-8)
    with pytest.warns(RuntimeWarning, match="Out of memory"):
        got = salplug.explain(OOMAbove(inner, limit=1), x, "gradients", target=2,
                              backend_options={"device_arrays": True}).values
    torch.testing.assert_close(got, salplug.explain(inner, x, "gradients", target=2).values)


def test_values_and_canonical_never_share_memory():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    for method in ("gradients", "guided_backprop", "ig"):
        out = salplug.explain(make_cnn(seed=2), x, method, target=1, backend_options={"device_arrays": True})
        keep = out.canonical.copy()
        out.values.add_(1.0)
        np.testing.assert_array_equal(out.canonical, keep)


def test_default_is_off_on_the_cpu_and_bad_values_are_refused():
    assert TorchAdapter(make_cnn()).keep_on_device is False
    assert TorchAdapter(make_cnn(), device_arrays=True).keep_on_device is True
    with pytest.raises(ParameterError, match="device_arrays must be True, False or None"):
        TorchAdapter(make_cnn(), device_arrays="yes")


def test_smoothgrad_draws_its_noise_on_the_device_by_default_reproducibly():
    model = make_cnn(seed=2)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    ex = salplug.Explainer(model, device_arrays=True)
    draws = []
    inner = ex.adapter.standard_normal
    ex.adapter.standard_normal = lambda shape, seed: draws.append((shape, seed)) or inner(shape, seed)

    def sg(seed, noise="auto", nsamples=150):
        return ex.explain(x, "smoothgrad", target=[1, 2], nsamples=nsamples, seed=seed, noise=noise).canonical

    first, again, other = sg(0), sg(0), sg(1)
    assert [shape for shape, _ in draws] == [(150, 16, 16, 3)] * 3
    assert draws[0][1] == draws[1][1] != draws[2][1]
    np.testing.assert_array_equal(first, again)  # the same seed gives the same map
    assert not np.allclose(first, other)
    host = sg(0, "host")
    assert len(draws) == 3 and not np.allclose(first, host)  # host noise: numpy's draws, not the device's
    # both estimate the same expectation: the maps agree closely, though not number for number
    assert np.corrcoef(first.ravel(), host.ravel())[0, 1] > 0.95


def test_noise_must_be_auto_or_host():
    with pytest.raises(ParameterError, match="noise must be one of auto, host"):
        salplug.explain(make_cnn(), torch.rand(1, 3, 8, 8), "smoothgrad", target=1, noise="gpu")


def test_top1_targets_come_from_the_callers_tensor_where_it_lies():
    model = make_cnn(seed=2)
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    ex = salplug.Explainer(model, device_arrays=True)
    seen = []
    inner = ex.adapter.outputs
    ex.adapter.outputs = lambda rows: seen.append(torch.is_tensor(rows)) or inner(rows)
    out = ex.explain(x, "ig", steps=4)  # IG's rows are path points: its top-1 pass comes first
    assert seen == [True]  # the top-1 pass read the device copy, not the numpy canonical array
    want = model(x).argmax(1).tolist()
    assert out.target == want
    torch.testing.assert_close(out.values, salplug.explain(model, x, "ig", steps=4, target=want).values)


@pytest.mark.parametrize("batch_size", [1, 2, 5, 7, 100])  # within one image's steps, straddling two, all
@pytest.mark.parametrize("method,params", [("integrated_gradients", {"steps": 7}),
                                           ("integrated_gradients", {"steps": 7, "rule": "gausslegendre",
                                                                     "baseline": 0.5}),
                                           ("smoothgrad", {"nsamples": 7, "seed": 3, "noise": "host",
                                                           "mode": "vargrad"})])
def test_batches_of_one_image_and_across_images_agree(method, params, batch_size):
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    on, off = both(method, params, x, batch_size=batch_size)
    scale = float(np.abs(off.canonical).max())
    np.testing.assert_allclose(on.canonical, off.canonical, rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("base,base_params", [("integrated_gradients", {"steps": 3}), ("grad_cam", {"layer": "conv2"}),
                                              ("gradients", {}), ("guided_backprop", {})])
@pytest.mark.parametrize("mode", ["mean", "vargrad"])
def test_smoothgrad_over_any_base_never_hands_numpy_a_device_array(base, base_params, mode, monkeypatch):
    """On a GPU numpy cannot read a CUDA tensor; here the same is simulated by making every
    tensor refuse numpy's conversion, which salplug must never rely on (it copies with .numpy())."""
    def refuse(*_a, **_k):
        raise TypeError("can't convert a device tensor to numpy (simulated)")

    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    params = dict(base=base, base_params=base_params, nsamples=3, seed=1, noise="host", mode=mode, batch_size=2)
    off = salplug.explain(make_cnn(seed=2), x, "smoothgrad", target=[1, 4], **params)
    monkeypatch.setattr(torch.Tensor, "__array__", refuse)
    for inputs in (x, x.permute(0, 2, 3, 1).numpy().copy()):  # a tensor, and numpy on a "GPU" model
        on = salplug.explain(make_cnn(seed=2), inputs, "smoothgrad", target=[1, 4],
                             backend_options={"device_arrays": True}, **params)
        scale = float(np.abs(off.canonical).max())
        np.testing.assert_allclose(on.canonical, off.canonical, rtol=1e-5, atol=1e-6 * scale)


def test_vargrad_of_one_sample_is_exactly_zero_on_the_device_too():
    """E[m^2] - E[m]^2 cancels exactly only when the squares are taken in the sums' float64."""
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    for flag in (True, False):
        out = salplug.explain(make_cnn(seed=2), x, "smoothgrad", target=[1, 4], nsamples=1, seed=0, mode="vargrad",
                              backend_options={"device_arrays": flag})
        assert not np.any(out.canonical), flag
