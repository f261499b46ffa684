"""SmoothGrad's host noise, pinned: float32 normals for noise="auto", float64 for noise="host"."""

from __future__ import annotations

import numpy as np
import pytest

import salplug

torch = pytest.importorskip("torch")


class HalfSquare(torch.nn.Module):
    """f(x) = sum(x^2) / 2 + 0 * conv(x): its gradient is x, so SmoothGrad's mean is x + mean noise."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1)

    def forward(self, x):
        return (0.5 * (x * x).flatten(1).sum(1) + 0 * self.conv(x).flatten(1).sum(1))[:, None]


@pytest.mark.parametrize("noise, dtype", [("auto", np.float32), ("host", np.float64)])
def test_smoothgrad_host_noise_is_the_generators_normals(noise, dtype):
    x = np.random.default_rng(0).random((2, 5, 4, 3)).astype(np.float32)  # NHWC, canonical
    out = salplug.explain(HalfSquare(), x, "smoothgrad", nsamples=4, seed=3, noise=noise, target=0,
                          stdev_spread=0.2).values
    normals = np.random.default_rng(3).standard_normal((4, 5, 4, 3), dtype=dtype)
    sigma = 0.2 * (x.reshape(2, -1).max(1) - x.reshape(2, -1).min(1))
    expected = x + sigma[:, None, None, None] * normals.mean(0)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    other = np.random.default_rng(3).standard_normal((4, 5, 4, 3), dtype=np.float64 if dtype == np.float32 else np.float32)
    assert not np.allclose(out, x + sigma[:, None, None, None] * other.mean(0), rtol=1e-5, atol=1e-6)
