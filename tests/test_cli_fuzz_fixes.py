"""Fixes from a differential hunt of the command line against the library API (see each test)."""

from __future__ import annotations

import numpy as np
import pytest

import salplug
from salplug.errors import ParameterError
from conftest import host_with_method
from test_config import _photo, assert_clean_failure, run_cli

torch = pytest.importorskip("torch")

COUNTING_MODEL = '''
import torch
from torch import nn

CALLS = []


class Counting(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        CALLS.append(len(x))
        return self.fc(self.relu(self.conv(x)).mean((2, 3)))


def build():
    return Counting().eval()
'''


def config(folder, explanation, visualizers='["auto"]', files='["big.png", "small.png"]'):
    path = folder / "c.toml"
    path.write_text(f'[model]\nsource = "counting_model.py:build"\nlayer = "conv"\n[inputs]\nfiles = {files}\n'
                    f'[[explanations]]\n{explanation}\n[outputs]\nfolder = "out"\nvisualizers = {visualizers}\n')
    return path


@pytest.fixture
def photos(tmp_path, monkeypatch):
    (tmp_path / "counting_model.py").write_text(COUNTING_MODEL)
    _photo(tmp_path / "big.png", 0, size=20)
    _photo(tmp_path / "small.png", 1, size=10)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_parameters_are_checked_against_every_photo_size_before_any_model_call(photos):
    import counting_model

    counting_model.CALLS.clear()
    path = config(photos, 'method = "occlusion"\nparams = { size = 12 }')  # fits 20x24, not 10x14
    assert_clean_failure(run_cli("run", str(path), "-q"), photos, "explanations[0].params", "photo 'small' (10x14)")
    assert counting_model.CALLS == []


def test_grad_cam_without_resizing_is_drawn_over_the_photo_at_the_maps_size(photos):
    path = config(photos, 'method = "grad_cam"\nparams = { should_resize = false }', '["auto", "regions"]',
                  '["big.png"]')
    result = run_cli("run", str(path), "-q")
    assert result.exit_code == 0, result.output
    maps = np.load(next((photos / "out").rglob("*.npz")))
    from PIL import Image

    drawn = [Image.open(p) for p in (photos / "out").rglob("*.png") if "grad_cam" in p.name]
    assert drawn and all(image.size == (12, 10) for image in drawn), [i.size for i in drawn]  # the layer: 10x12
    assert any(v.shape[:2] == (10, 12) for v in maps.values())


def test_a_misspelled_smoothgrad_parameter_is_named_as_smoothgrads():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    with pytest.raises(ParameterError, match=r"'smoothgrad' has no parameter 'nsampels'.*Did you mean 'nsamples'"):
        salplug.explain(model, torch.rand(1, 3, 8, 8), "smoothgrad", nsampels=3)
    with pytest.raises(ParameterError, match=r"Did you mean 'stdev_spread'"):
        salplug.explain(model, torch.rand(1, 3, 8, 8), "smoothgrad", base="ig", stdev_sprad=0.2)


def test_smoothgrad_seeds_a_base_whose_seed_was_left_at_none():
    seen = []

    class Noisy(salplug.Method):  # a RISE-like method: random draws from seed=None unless given one
        requires = frozenset()

        def explain(self, ctx, x, targets, *, seed=None):
            seen.append(seed)
            return np.random.default_rng(seed).random(x.shape).astype(np.float32)

    host = host_with_method("noisy", Noisy)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    x = torch.rand(1, 3, 8, 8)

    def run(seed, **kw):
        return salplug.explain(model, x, "smoothgrad", base="noisy", nsamples=2, seed=seed, target=0, host=host,
                               **kw).canonical

    np.testing.assert_array_equal(run(0), run(0))  # was a new map each time
    assert None not in seen
    seen.clear()
    np.testing.assert_array_equal(run(0, base_params={"seed": 7}), run(1, base_params={"seed": 7}))
    assert set(seen) == {7}  # a seed given to the base is kept
    seen.clear()
    run(None)
    assert seen == [None]  # no seed: none invented
