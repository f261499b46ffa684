"""The torch backend on a CUDA device: every method equals its CPU map, tensors stay on the
device, automatic batch sizes from free memory. Skipped without CUDA (CI has none);
``benchmarks/gpu_check.sh`` runs it on a lent GPU machine.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest import make_cnn

import salplug

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")

# method -> parameters, small enough for a quick run
METHODS = {
    "gradients": {},
    "integrated_gradients": {"steps": 16},
    "smoothgrad": {"nsamples": 6, "seed": 0, "noise": "host"},  # numpy's draws on both devices
    "guided_backprop": {},
    "occlusion": {"size": 4, "stride": 2},
    "grad_cam": {"layer": "conv2"},
    "guided_grad_cam": {"layer": "conv2"},
    "blur_ig": {"steps": 8},
    "guided_ig": {"steps": 8},
    "xrai": {"steps": 8},
}


@pytest.fixture(autouse=True)
def _full_float32_precision():
    """CUDA convolutions and matmuls default to TF32 (10-bit mantissa) in torch; compare at full float32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def maps_on(device: str, method: str, params: dict, seed: int = 0) -> np.ndarray:
    model = copy.deepcopy(make_cnn(seed=seed)).to(device)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed)).to(device)
    out = salplug.explain(model, x, method, target=[1, 3], **params)
    assert out.values.device == x.device
    return out.canonical


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_on_cuda_equals_cpu(method):
    cpu = maps_on("cpu", method, METHODS[method])
    gpu = maps_on("cuda", method, METHODS[method])
    scale = max(float(np.abs(cpu).max()), 1e-12)
    np.testing.assert_allclose(gpu, cpu, atol=1e-4 * scale, rtol=1e-3)


def test_automatic_batch_size_comes_from_free_memory_and_is_used():
    model = make_cnn().cuda()
    ex = salplug.Explainer(model)
    x = np.random.default_rng(0).random((1, 32, 32, 3), dtype=np.float32)
    rows = ex.adapter.batch_size_for(x)
    assert 1 <= rows <= 256
    seen = []
    inner = ex.adapter.input_gradients
    ex.adapter.input_gradients = lambda xb, t: seen.append(len(xb)) or inner(xb, t)
    ex.explain(torch.from_numpy(x).permute(0, 3, 1, 2).cuda(), "ig", target=1, steps=300)
    assert max(seen) == min(rows, 300) and sum(seen) == 300


class _Wide(torch.nn.Module):
    """A small CNN whose first step copies its input 2048 times: about 25 MB per row on the GPU."""

    def __init__(self):
        super().__init__()
        self.net = make_cnn(seed=4)

    def forward(self, x):
        wide = x.repeat(1, 2048, 1, 1)
        return self.net(wide.view(len(x), 2048, 3, *x.shape[2:]).mean(1))


def test_a_real_out_of_memory_error_halves_the_batch_and_the_map_is_unchanged():
    model = _Wide().cuda()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)).cuda()
    ex = salplug.Explainer(model)
    # 8192 rows at once need about 200 GB plus the backward pass: more than any single GPU has
    with pytest.warns(RuntimeWarning, match="Out of memory with 8192 rows"):
        big = ex.explain(x, "ig", target=2, steps=8192, batch_size=8192)
    assert 1 <= ex.adapter.max_rows <= 4096
    torch.cuda.empty_cache()
    small = salplug.explain(model, x, "ig", target=2, steps=8192, batch_size=256)
    torch.testing.assert_close(big.values, small.values, rtol=1e-4, atol=1e-6)


def test_smoothgrad_noise_drawn_on_the_gpu_is_reproducible_and_agrees_with_host_noise():
    model = make_cnn(seed=1).cuda()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)).cuda()

    def sg(seed, noise="auto"):
        out = salplug.explain(model, x, "smoothgrad", target=[1, 3], nsamples=200, seed=seed, noise=noise)
        assert out.values.device == x.device
        return out.canonical

    first = sg(0)
    scale = float(np.abs(first).max())
    # the same noise; cuDNN's backward kernels are not bit-deterministic, so equal to rounding
    np.testing.assert_allclose(sg(0), first, rtol=1e-4, atol=1e-5 * scale)
    assert not np.allclose(first, sg(1), rtol=1e-2, atol=1e-3 * scale)
    assert np.corrcoef(first.ravel(), sg(0, "host").ravel())[0, 1] > 0.95


def test_a_bare_cuda_device_is_the_current_gpu_and_inputs_there_are_not_resent():
    model = make_cnn().cuda()
    ex = salplug.Explainer(model, device="cuda")
    assert ex.adapter.device == torch.device("cuda", torch.cuda.current_device()) and ex.adapter.keep_on_device
    moved, to_device = [], ex.adapter.to_device
    ex.adapter.to_device = lambda arr: moved.append(arr.shape) or to_device(arr)
    out = ex.explain(torch.rand(2, 3, 32, 32, device="cuda"), "gradients", target=1)
    assert moved == [] and out.values.is_cuda


def test_on_a_gpu_batches_follow_the_models_weights_and_bad_inputs_are_caught_there():
    model = copy.deepcopy(make_cnn(seed=1)).cuda()
    seen = []
    model.conv1.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    x = torch.rand(2, 3, 32, 32, device="cuda")
    out = salplug.explain(model, x, "ig", target=1, steps=4, batch_size=2)
    assert seen and all(t.is_contiguous() for t in seen)  # NCHW weights: NCHW batches
    assert callable(out.__dict__["_canonical"]) and out.values.device == x.device  # nothing read back yet
    np.testing.assert_allclose(out.canonical, salplug.explain(model.cpu(), x.cpu(), "ig", target=1, steps=4,
                                                              batch_size=2).canonical, rtol=1e-4, atol=1e-6)
    cl = copy.deepcopy(make_cnn(seed=1)).cuda().to(memory_format=torch.channels_last)
    seen.clear()
    cl.conv1.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    salplug.explain(cl, x, "gradients", target=1)
    assert seen and all(t.is_contiguous(memory_format=torch.channels_last) for t in seen)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(salplug.errors.InputError, match="contains 1 NaN"):
        salplug.explain(model.cuda(), bad, "gradients", target=1)


@pytest.mark.parametrize("base,base_params", [("integrated_gradients", {"steps": 4}), ("grad_cam", {"layer": "conv2"})])
def test_smoothgrad_over_bases_that_finish_on_the_gpu(base, base_params):
    """IG and Grad-CAM return device arrays on a GPU; SmoothGrad sums them there."""
    params = dict(base=base, base_params=base_params, nsamples=3, seed=0, noise="host")
    cpu = maps_on("cpu", "smoothgrad", params)
    np.testing.assert_allclose(maps_on("cuda", "smoothgrad", params), cpu, rtol=1e-4, atol=1e-5 * np.abs(cpu).max())


def test_the_sanity_check_leaves_the_callers_cuda_generator_alone():
    from salplug.evaluate import evaluate

    model = copy.deepcopy(make_cnn(seed=2)).cuda()
    images = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
    torch.cuda.manual_seed_all(123)
    state = torch.cuda.get_rng_state()
    evaluate(model, images, ["gradients"], {"model_randomization": {}}, backend="torch", progress=False, seed=0,
             include_random=False, host=salplug.get_plugin_manager(autoload=False))
    assert torch.equal(torch.cuda.get_rng_state(), state)  # manual_seed reseeds CUDA too: forked
