"""Fixes from a differential hunt of the metrics and evaluate()."""

from __future__ import annotations

import numpy as np
import pytest

import salplug

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 3))


def test_evaluate_gives_its_seed_to_every_method_that_takes_one():
    model = small_model()
    x = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)

    def run(seed, methods):
        return salplug.evaluate(model, x, methods=methods, metrics=["deletion"], seed=seed, progress=False,
                                include_random=False)

    first, again, other = run(0, ["smoothgrad"]), run(0, ["smoothgrad"]), run(5, ["smoothgrad"])
    assert first.methods["smoothgrad"]["params"]["seed"] == 0
    np.testing.assert_array_equal(first.attributions["smoothgrad"], again.attributions["smoothgrad"])
    assert first.table() == again.table()
    assert not np.array_equal(first.attributions["smoothgrad"], other.attributions["smoothgrad"])
    listed = [run(s, ["random"]).attributions["random"] for s in (0, 5)]
    assert not np.array_equal(*listed)
    # a seed the caller gave the method wins
    mine = salplug.evaluate(model, x, methods=[{"method": "smoothgrad", "params": {"seed": 3}}], metrics=["deletion"],
                            seed=0, progress=False, include_random=False)
    assert mine.methods["smoothgrad"]["params"]["seed"] == 3


def test_pic_scores_an_image_alike_whatever_images_share_its_8_bit_form():
    class Sharp(nn.Module):  # class 0 grows with high-frequency content: blurring lowers it
        def forward(self, x):
            hf = (x[:, :, 1:] - x[:, :, :-1]).abs().flatten(1).mean(1)
            return torch.stack([20 * hf - 5, torch.zeros_like(hf)], 1)

    rng = np.random.default_rng(0)
    a = (rng.integers(0, 255, (24, 24, 3)) / 255).astype(np.float32)
    a[:12] = 128 / 255
    b = np.clip(a + np.float32(1e-4), 0, 1)  # the same 8-bit photo, other float values (another mask)
    maps = rng.normal(size=(24, 24)).astype(np.float32)
    kw = dict(methods=[], metrics=[{"metric": "pic", "params": {"min_pred_value": 0.0, "fraction": 0.05}}],
              include_random=False, progress=False, seed=0)
    alone = salplug.evaluate(Sharp(), b[None], maps={"m": maps[None]}, target=[0], **kw).scores("m", "sic")
    both = salplug.evaluate(Sharp(), np.stack([a, b]), maps={"m": np.stack([maps, maps])}, target=[0, 0],
                            **kw).scores("m", "sic")
    assert both[0] != both[1]  # two masks: the case the cache confused
    assert both[1] == alone[0]
