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
    "smoothgrad": {"nsamples": 6, "seed": 0},
    "guided_backprop": {},
    "occlusion": {"size": 4, "stride": 2},
    "grad_cam": {"layer": "conv2"},
    "guided_grad_cam": {"layer": "conv2"},
    "blur_ig": {"steps": 8},
    "guided_ig": {"steps": 8},
    "xrai": {"steps": 8},
}


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
