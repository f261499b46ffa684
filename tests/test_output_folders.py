"""Where `salplug run`, `explain` and `evaluate` write, what they read, and how they fail.

Output folders: both commands stage their files and mark the folder, so they share one config
and never write over a folder salplug did not write; a folder that cannot be created is an
error before any model call. A model that raises is one `error:` paragraph (exit 2), nothing left.
"""

from __future__ import annotations

import numpy as np
import pytest

from test_config import TINY_MODEL, assert_clean_failure, run_cli

pytest.importorskip("torch")

BROKEN_MODEL = '''
import torch
from torch import nn

from tiny_model import build


class Broken(nn.Module):
    """Predicts, but raises as soon as gradients are asked for (a model that breaks mid-run)."""

    def __init__(self):
        super().__init__()
        self.inner = build()

    def forward(self, x):
        if torch.is_grad_enabled() and x.requires_grad:
            raise ValueError("this model cannot give gradients")
        return self.inner(x)


def broken():
    return Broken().eval()
'''

CONFIG = """
seed = 2
[model]
source = "{source}"
preprocessing = {{ size = 16 }}
target = 1
[inputs]
files = ["a.png", "b.png"]
[[explanations]]
method = "gradients"
[outputs]
folder = "out"
[evaluation]
metrics = [{{ metric = "deletion", params = {{ steps = 4 }} }}]
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    from test_config import _photo

    (tmp_path / "tiny_model.py").write_text(TINY_MODEL)
    (tmp_path / "broken_model.py").write_text(BROKEN_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))  # broken_model imports tiny_model
    _photo(tmp_path / "a.png", 0)
    _photo(tmp_path / "b.png", 1)
    return tmp_path


def config_file(folder, source="tiny_model.py:build"):
    path = folder / "run.toml"
    path.write_text(CONFIG.format(source=source))
    return path


def listing(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# --------------------------------------------------------------------------------------------- #
# evaluate writes like run
# --------------------------------------------------------------------------------------------- #
def test_evaluate_never_writes_over_a_folder_salplug_did_not_write(project):
    config = config_file(project)
    mine = project / "mysite"
    mine.mkdir()
    (mine / "index.html").write_text("<html>my own page</html>")
    before = listing(project)
    result = run_cli("evaluate", str(config), "-q", "--out", str(mine))
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {config}: evaluation.folder:") and "not written by salplug" in result.stderr
    assert "Traceback" not in result.output
    assert (mine / "index.html").read_text() == "<html>my own page</html>"
    assert listing(project) == before  # no staging folder left either
    # checked before the model is even built: a model that cannot be built is not the error shown
    failing = run_cli("evaluate", str(config_file(project, "tiny_model.py:failing")), "-q", "--out", str(mine))
    assert failing.exit_code == 2 and "not written by salplug" in failing.stderr, failing.output


def test_evaluate_and_run_share_one_config(project):
    config = config_file(project)
    out = project / "out"
    first = run_cli("evaluate", str(config), "-q")  # the default folder: out/evaluation
    assert first.exit_code == 0, first.output
    assert (out / "evaluation" / "index.html").is_file()
    ran = run_cli("run", str(config), "-q")  # out was made by salplug: run may replace it
    assert ran.exit_code == 0, ran.output
    assert (out / "summary.json").is_file() and not (out / "evaluation").exists()
    for _ in range(2):  # into the run's folder, then over its own earlier evaluation
        again = run_cli("evaluate", str(config), "-q")
        assert again.exit_code == 0, again.output
        assert (out / "summary.json").is_file() and (out / "evaluation" / "evaluation.csv").is_file()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".evaluation")]  # no staging leftovers
    assert run_cli("run", str(config), "-q").exit_code == 0


def test_evaluate_respects_outputs_overwrite(project):
    config = config_file(project)
    assert run_cli("evaluate", str(config), "-q").exit_code == 0
    config.write_text(config.read_text().replace('folder = "out"', 'folder = "out"\noverwrite = false'))
    result = run_cli("evaluate", str(config), "-q")
    assert result.exit_code == 2 and "outputs.overwrite is false" in result.stderr, result.output


# --------------------------------------------------------------------------------------------- #
# an output folder that cannot be created
# --------------------------------------------------------------------------------------------- #
@pytest.mark.parametrize("command", ["run", "evaluate"])
def test_output_under_a_file_is_an_error_before_the_model_loads(project, command):
    config = config_file(project, "tiny_model.py:failing")  # building the model would fail
    result = run_cli(command, str(config), "-q", "--out", str(project / "a.png" / "out"))
    assert result.exit_code == 2, result.output
    assert "is a file, not a folder" in result.stderr and "a.png" in result.stderr
    assert "Traceback" not in result.output and "no weights here" not in result.stderr


def test_explain_into_a_file_path_fails_cleanly(project):
    result = run_cli("explain", str(project / "a.png"), "--model", f"{project / 'tiny_model.py'}:build", "-q",
                     "--out", str(project / "a.png" / "out"))
    assert result.exit_code == 2 and "is a file, not a folder" in result.stderr, result.output


def test_output_in_a_read_only_folder_is_an_error(project, monkeypatch):
    import os
    from pathlib import Path

    locked = project / "locked"
    locked.mkdir()
    access = os.access
    # the permission as the OS would report it to a normal user (tests may run as root)
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked and access(path, mode))
    result = run_cli("run", str(config_file(project, "tiny_model.py:failing")), "-q", "--out", str(locked / "out"))
    assert result.exit_code == 2 and "no permission to write in" in result.stderr, result.output
    assert list(locked.iterdir()) == []


# --------------------------------------------------------------------------------------------- #
# a model that raises
# --------------------------------------------------------------------------------------------- #
def test_a_model_that_raises_during_run_is_a_clean_error(project):
    config = config_file(project, "broken_model.py:broken")
    result = run_cli("run", str(config), "-q")
    message = assert_clean_failure(result, project, "explanation 'gradients'", "ValueError",
                                   "this model cannot give gradients")
    assert "a," in message  # the photo it happened on


def test_a_model_that_raises_during_explain_is_a_clean_error(project):
    result = run_cli("explain", str(project / "a.png"), "--model", f"{project / 'broken_model.py'}:broken",
                     "-q", "--out", str(project / "out"))
    assert_clean_failure(result, project, "'gradients'", "ValueError: this model cannot give gradients")


def test_a_model_that_raises_during_evaluate_is_a_clean_error(project):
    result = run_cli("evaluate", str(config_file(project, "broken_model.py:broken")), "-q")
    assert_clean_failure(result, project, "method 'gradients'", "ValueError: this model cannot give gradients")


# --------------------------------------------------------------------------------------------- #
# 16-bit photos
# --------------------------------------------------------------------------------------------- #
def test_16_bit_grayscale_photos_keep_their_range(project):
    from PIL import Image

    from salplug.config import load_config
    from salplug.runner import resolve_inputs

    ramp = np.linspace(0, 65535, 12 * 20).reshape(12, 20).astype(np.uint16)
    Image.fromarray(ramp).save(project / "deep.png")
    with Image.open(project / "deep.png") as img:
        assert img.mode == "I;16"  # what Pillow gives for a 16-bit grayscale PNG
    config = load_config(data={"inputs": {"files": [str(project / "deep.png")]},
                               "explanations": [{"method": "gradients"}]})
    pixels = resolve_inputs(config)[0].pixels
    expected = np.floor(ramp.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    assert pixels.dtype == np.uint8 and pixels.shape == (12, 20, 3)
    np.testing.assert_array_equal(pixels, np.repeat(expected[..., None], 3, axis=2))


def test_32_bit_integer_photos_outside_16_bits_are_an_error(project):
    from PIL import Image

    from salplug.config import ConfigError, load_config
    from salplug.runner import resolve_inputs

    Image.fromarray(np.array([[0, 70000], [5, 6]], np.int32)).save(project / "wide.tif")
    config = load_config(data={"inputs": {"files": [str(project / "wide.tif")]},
                               "explanations": [{"method": "gradients"}]})
    with pytest.raises(ConfigError, match="inputs.files\\[0\\].*outside the 16-bit range"):
        resolve_inputs(config)


def test_a_visualizer_that_raises_during_run_is_a_clean_error(project, monkeypatch):
    import salplug
    import salplug.plugins

    def raising(values, image=None):
        raise ValueError("no pictures today")

    class Plugin:
        @salplug.hookimpl
        def register_visualizers(self, register):
            register("bad_vis", raising)

    monkeypatch.setattr(salplug.plugins, "_default_host",
                        salplug.get_plugin_manager(autoload=False, plugins={"badvis": Plugin()}))
    config = config_file(project)
    config.write_text(config.read_text().replace('method = "gradients"\n',
                                                 'method = "gradients"\nvisualizers = ["bad_vis"]\n'))
    result = run_cli("run", str(config), "-q")
    assert_clean_failure(result, project, "visualizer 'bad_vis'", "explanation 'gradients'",
                         "ValueError: no pictures today")


# --------------------------------------------------------------------------------------------- #
# a model that outputs probabilities
# --------------------------------------------------------------------------------------------- #
def test_run_reports_a_softmax_models_probability_as_it_is(project):
    import json

    (project / "soft_model.py").write_text(
        "import torch\nfrom tiny_model import build\n\n\ndef soft():\n"
        "    model = build()\n    with torch.no_grad():\n        model.fc.weight.mul_(500.0)\n"
        "    return torch.nn.Sequential(model, torch.nn.Softmax(dim=-1)).eval()\n\n\n"
        "def logits():\n    return soft()[0]\n")
    predictions = {}
    for source in ("logits", "soft"):
        config = config_file(project, f"soft_model.py:{source}")
        config.write_text(config.read_text().replace('folder = "out"', f'folder = "out_{source}"\nformats = ["json"]'))
        result = run_cli("run", str(config), "-q")
        assert result.exit_code == 0, result.output
        summary = json.loads((project / f"out_{source}" / "summary.json").read_text())
        predictions[source] = ([e["prediction"] for e in summary["images"]], summary["outputs"])
    assert predictions["logits"][1] == "logits" and predictions["soft"][1] == "probabilities"
    assert predictions["soft"][0] == predictions["logits"][0]  # not a softmax of the probabilities
    assert max(p["probability"] for p in predictions["soft"][0]) > 0.5
