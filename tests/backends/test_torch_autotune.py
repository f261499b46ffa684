"""Torch backend fast paths: out-of-memory halving gives the same maps, batch-size choices.

Timing lives in benchmarks/; these tests only check that the fast paths give the results of
the straightforward ones.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_cnn

import salplug
from salplug.types import Targets

torch = pytest.importorskip("torch")
nn = torch.nn

from salplug.backends.torch import (  # noqa: E402
    CPU_BATCH_SIZE, CPU_MAX_ROWS, TorchAdapter, is_out_of_memory)


class OOMAbove(nn.Module):
    """Raises a CUDA out-of-memory error for batches larger than ``limit`` (like a full GPU)."""

    def __init__(self, inner: nn.Module, limit: int, error=None):
        super().__init__()
        self.inner, self.limit, self.batches = inner, limit, []
        self.error = error or (lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))

    def forward(self, x):
        self.batches.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise self.error()
        return self.inner(x)


def images(n=3, size=12, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).uniform(0, 1, (n, 3, size, size)).astype(np.float32))


CASES = [
    ("integrated_gradients", {"steps": 7}),
    ("gradients", {}),
    ("smoothgrad", {"nsamples": 5, "seed": 1}),
    ("guided_backprop", {}),
    ("occlusion", {"size": 5, "stride": 2}),
    ("grad_cam", {"layer": "conv2"}),
]


@pytest.mark.parametrize("method,params", CASES)
def test_out_of_memory_halves_the_batch_and_gives_the_same_map(method, params):
    inner = make_cnn(seed=3)
    x = images()
    expected = salplug.explain(inner, x, method, target=[1, 4, 7], batch_size=16, **params).values
    model = OOMAbove(inner, limit=2)
    if method == "grad_cam":
        params = {**params, "layer": "inner.conv2"}
    explainer = salplug.Explainer(model, batch_size=16)
    with pytest.warns(RuntimeWarning, match=r"Out of memory with \d+ rows per model call"):
        out = explainer.explain(x, method, target=[1, 4, 7], **params).values
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert 1 <= explainer.adapter.max_rows <= 2  # halved until it fits (16 -> 8 -> 4 -> 2, or 3 -> 1)
    # the learned limit is kept: the next call starts at 2 rows, without another error
    model.batches.clear()
    explainer.explain(x, method, target=[1, 4, 7], **params)
    assert max(model.batches) <= 2


def test_top1_targets_and_custom_target_functions_survive_a_split():
    inner = make_cnn(seed=4)
    x = images(5)
    expected = salplug.explain(inner, x, "ig", steps=4, batch_size=32)
    with pytest.warns(RuntimeWarning):
        out = salplug.explain(OOMAbove(inner, limit=2), x, "ig", steps=4, batch_size=32)
    assert out.target == expected.target
    torch.testing.assert_close(out.values, expected.values, rtol=1e-5, atol=1e-6)
    fn = lambda logits: logits[:, 2] - logits[:, 5]  # noqa: E731
    expected = salplug.explain(inner, x, "gradients", target=fn, batch_size=32)
    with pytest.warns(RuntimeWarning):
        out = salplug.explain(OOMAbove(inner, limit=2), x, "gradients", target=fn, batch_size=32)
    torch.testing.assert_close(out.values, expected.values, rtol=1e-5, atol=1e-6)


def test_a_runtime_error_saying_out_of_memory_counts_too():
    inner = make_cnn(seed=5)
    model = OOMAbove(inner, 1, error=lambda: RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    with pytest.warns(RuntimeWarning):
        out = salplug.explain(model, images(2), "gradients", target=0, batch_size=2)
    torch.testing.assert_close(out.values, salplug.explain(inner, images(2), "gradients", target=0).values)


def test_other_errors_and_out_of_memory_at_one_row_are_raised():
    class Broken(nn.Module):
        def forward(self, x):
            raise ValueError("not a memory problem")

    with pytest.raises(ValueError, match="not a memory problem"):
        TorchAdapter(Broken()).input_gradients(np.zeros((4, 8, 8, 3), np.float32), Targets(np.zeros(4, int)))
    model = OOMAbove(make_cnn(seed=6), limit=0)
    with pytest.warns(RuntimeWarning), pytest.raises(torch.cuda.OutOfMemoryError):
        TorchAdapter(model).input_gradients(np.zeros((4, 8, 8, 3), np.float32), Targets(np.zeros(4, int)))
    assert model.batches == [4, 2, 1]


def test_is_out_of_memory():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(MemoryError())  # host memory: splitting would not help the next call


def test_default_batch_size_on_cpu_and_batch_size_for_inputs():
    adapter = TorchAdapter(make_cnn())
    assert adapter.default_batch_size == CPU_BATCH_SIZE == salplug.Explainer(make_cnn()).batch_size
    assert adapter.batch_size_for(np.zeros((1, 224, 224, 3), np.float32)) == 8
    assert adapter.batch_size_for(np.zeros((1, 112, 112, 3), np.float32)) == 32
    assert adapter.batch_size_for(np.zeros((1, 32, 32, 3), np.float32)) == CPU_MAX_ROWS == 64
    assert adapter.batch_size_for(np.zeros((1, 1024, 1024, 3), np.float32)) == 1
    adapter.max_rows = 3  # after an out-of-memory error
    assert adapter.batch_size_for(np.zeros((1, 112, 112, 3), np.float32)) == 3


def test_pieces_equal_one_batch_for_every_primitive():
    """The split path (max_rows set) gives what one call gives, for each primitive."""
    model = make_cnn(seed=7)
    x = np.random.default_rng(2).uniform(0, 1, (5, 10, 10, 3)).astype(np.float32)
    t = Targets(np.array([0, 3, 9, 2, 5]))
    whole, split = TorchAdapter(model), TorchAdapter(model)
    split.max_rows = 2
    np.testing.assert_allclose(split.outputs(x), whole.outputs(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(split.scores(x, t), whole.scores(x, t), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(split.input_gradients(x, t), whole.input_gradients(x, t), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(split.guided_input_gradients(x, t), whole.guided_input_gradients(x, t),
                               rtol=1e-5, atol=1e-7)
    for a, b in zip(split.layer_values_and_gradients(x, t, "conv2"), whole.layer_values_and_gradients(x, t, "conv2")):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_cuda_batch_size_comes_from_free_memory(monkeypatch):
    """The CUDA rule with the device's memory counters simulated: half the free memory."""
    model = make_cnn()
    adapter = TorchAdapter(model)
    adapter.device = torch.device("cuda")
    mib = 2**20
    counters = {"allocated": 100 * mib}
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: counters["allocated"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: counters["allocated"] + 2 * 30 * mib)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: counters["allocated"] + 60 * mib)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3000 * mib, 8000 * mib))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    probes = []
    monkeypatch.setattr(adapter, "_input_gradients", lambda x, targets: probes.append(x.shape))
    x = np.zeros((5, 64, 64, 3), np.float32)
    assert adapter.batch_size_for(x) == int(0.5 * (3000 + 60) / 30)  # 30 MiB per row
    assert probes == [(2, 64, 64, 3)]
    assert adapter.batch_size_for(x) == 51 and len(probes) == 1  # cached per input shape
    again = TorchAdapter(model)  # what each salplug.explain() call makes: the probe is not repeated
    again.device = torch.device("cuda")
    monkeypatch.setattr(again, "_input_gradients", lambda x, targets: probes.append(x.shape))
    assert again.batch_size_for(x) == 51 and len(probes) == 1
    other = TorchAdapter(make_cnn(seed=1))  # another model is probed on its own
    other.device = torch.device("cuda")
    monkeypatch.setattr(other, "_input_gradients", lambda x, targets: probes.append(x.shape))
    assert other.batch_size_for(x) == 51 and len(probes) == 2

    def oom(x, targets):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(adapter, "_input_gradients", oom)
    assert adapter.batch_size_for(np.zeros((1, 32, 32, 3), np.float32)) == 1
