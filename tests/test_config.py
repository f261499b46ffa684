"""Config files: formats, precedence, validation messages, and `salplug run` on a tiny model.

The bad-config cases go through the command line (click's CliRunner): each must exit with
status 2, print one paragraph (no traceback) naming the key, and leave no output folder.
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import salplug
from salplug.cli import main
from salplug.config import ConfigError, find_config, load_config

pytest.importorskip("torch")

TINY_MODEL = '''
import torch
from collections import OrderedDict
from torch import nn


def build():
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(3, 4, 3, padding=1), relu=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(2),
        flat=nn.Flatten(), fc=nn.Linear(16, 5))).eval()


def failing():
    raise RuntimeError("no weights here")
'''


def _photo(path: Path, seed: int, size: int = 24) -> Path:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size, size + 4, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def project(tmp_path):
    """A folder with a tiny torch model module and two photos; returns its path."""
    (tmp_path / "tiny_model.py").write_text(TINY_MODEL)
    (tmp_path / "photos").mkdir()
    _photo(tmp_path / "photos" / "a.png", 0)
    _photo(tmp_path / "photos" / "b.jpg", 1)
    return tmp_path


TINY_CONFIG = """
seed = 3

[model]
backend = "torch"
source = "tiny_model.py:build"
preprocessing = {{ size = 16, mean = 0.5, std = 0.25 }}
layer = "relu"
{model_extra}

[inputs]
files = ["photos/a.png"]
{inputs_extra}

[[explanations]]
method = "gradients"
{explanations_extra}

[[explanations]]
method = "grad_cam"

[outputs]
folder = "out"
{outputs_extra}
"""


def write_config(folder: Path, name: str = "salplug.toml", **extra: str) -> Path:
    keys = ("model_extra", "inputs_extra", "explanations_extra", "outputs_extra")
    text = TINY_CONFIG.format(**{k: extra.get(k, "") for k in keys})
    path = folder / name
    path.write_text(text)
    return path


def run_cli(*args: str):
    return CliRunner().invoke(main, list(args))


def leftovers(folder: Path) -> list[str]:
    """Output folders or staging folders a failed run might have left."""
    return sorted(p.name for p in folder.iterdir() if p.name == "out" or p.name.startswith(".out"))


# --------------------------------------------------------------------------------------------- #
# Bad configs: one test per case, through the CLI
# --------------------------------------------------------------------------------------------- #
def assert_clean_failure(result, folder: Path, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message, message  # one paragraph
    for fragment in fragments:
        assert fragment in message, message
    assert leftovers(folder) == []
    return message


def test_unknown_method_names_the_closest(project):
    config = write_config(project, explanations_extra="")
    config.write_text(config.read_text().replace('method = "gradients"', 'method = "integrated_gradient"'))
    result = run_cli("run", str(config))
    assert_clean_failure(result, project, "explanations[0].method", "'integrated_gradient'",
                         "Did you mean 'integrated_gradients'?", "Accepted:", "grad_cam")


def test_misspelled_key_gives_path_accepted_keys_and_closest(project):
    config = write_config(project, outputs_extra='fromats = ["png"]')
    result = run_cli("run", str(config))
    assert_clean_failure(result, project, "'outputs.fromats'", "Did you mean 'formats'?",
                         "Accepted keys in outputs: folder, visualizers, formats, overwrite")


def test_wrong_type(project):
    config = write_config(project, model_extra='batch_size = "sixteen"')
    result = run_cli("run", str(config))
    assert_clean_failure(result, project, "model.batch_size", "valid integer", "'sixteen'")


def test_missing_input_file(project):
    config = write_config(project, inputs_extra="")
    config.write_text(config.read_text().replace("photos/a.png", "photos/missing.png"))
    result = run_cli("run", str(config))
    assert_clean_failure(result, project, "inputs.files[0]", "no such file", "missing.png")


def test_layer_that_does_not_exist(project):
    config = write_config(project)
    config.write_text(config.read_text().replace('layer = "relu"', 'layer = "rleu"'))
    result = run_cli("run", str(config))
    assert_clean_failure(result, project, "model.layer", "'rleu'", "Did you mean 'relu'?")


@pytest.mark.parametrize("extra, fragments", [
    ({"explanations_extra": "params = { stepz = 3 }"}, ("explanations[0].params", "no parameter 'stepz'")),
    ({"model_extra": "target = 3.5"}, ("model.target", "class index")),
    ({"model_extra": "target = 9"}, ("model.target", "out of range", "0..4", "model.options.num_classes")),
    ({"model_extra": "target = [1, 2, 3]"}, ("model.target", "3 class indices", "1 images")),
    ({"outputs_extra": 'formats = ["pgn"]'}, ("outputs.formats[0]", "Did you mean 'png'?")),
    ({"outputs_extra": 'visualizers = ["heatmpa"]'}, ("outputs.visualizers[0]", "Did you mean 'heatmap'?")),
    ({"inputs_extra": 'samples = ["chelsee"]'}, ("inputs.samples[0]", "Did you mean 'chelsea'?")),
    ({"inputs_extra": 'globs = ["photos/*.gif"]'}, ("inputs.globs[0]", "matches no file")),
])
def test_more_bad_values_fail_cleanly(project, extra, fragments):
    result = run_cli("run", str(write_config(project, **extra)))
    assert_clean_failure(result, project, *fragments)


def test_a_size_of_three_numbers_says_what_a_size_is(project):
    config = write_config(project)
    config.write_text(config.read_text().replace("size = 16,", "size = [16, 16, 3],"))
    result = run_cli("run", str(config))
    assert_clean_failure(result, project, "model.preprocessing.size", "one side or [height, width]", "3 numbers")


def test_bad_method_parameter_value_is_caught_before_work(project):
    config = write_config(project)
    config.write_text(config.read_text().replace('method = "grad_cam"', 'method = "grad_cam"\nparams = { relu = "yes" }'))
    result = run_cli("run", str(config))
    assert_clean_failure(result, project, "explanations[1].params", "relu must be True or False")


def test_model_source_errors(project):
    config = write_config(project)
    text = config.read_text()
    config.write_text(text.replace("tiny_model.py:build", "tiny_model.py:biuld"))
    assert_clean_failure(run_cli("run", str(config)), project, "model.source", "no attribute 'biuld'",
                         "Did you mean 'build'?")
    config.write_text(text.replace("tiny_model.py:build", "tiny_model.py:failing"))
    assert_clean_failure(run_cli("run", str(config)), project, "model.source", "no weights here")
    config.write_text(text.replace("tiny_model.py:build", "efficientnet_lite1"))
    assert_clean_failure(run_cli("run", str(config)), project, "model.source", "Did you mean 'efficientnet_lite0'?")


def test_invalid_toml_and_missing_config_file(project):
    bad = project / "bad.toml"
    bad.write_text("[model\nbackend = 'torch'")
    message = assert_clean_failure(run_cli("run", str(bad)), project, "is not valid TOML")
    assert "line 1" in message
    assert_clean_failure(run_cli("run", str(project / "nope.toml")), project, "does not exist")


def test_runtime_failure_leaves_no_output(project, host, monkeypatch):
    """A method that fails halfway through: the staging folder is removed, nothing is left."""
    from salplug.runner import run
    from salplug.types import INPUT_GRADIENTS, Method

    calls, staged = [], []

    class Flaky(Method):
        requires = frozenset({INPUT_GRADIENTS})

        def explain(self, ctx, x, targets):
            calls.append(1)
            if len(calls) == 2:  # what the staging folder holds when the second image fails
                staged.extend(p.relative_to(stage).as_posix() for stage in project.glob(".out*")
                              for p in stage.rglob("*") if p.is_file())
                raise salplug.ModelOutputError("the model fell over")
            return np.zeros_like(x)

    class Plugin:
        @salplug.hookimpl
        def register_methods(self, register):
            register("flaky", Flaky, requires=Flaky.requires)

    host.add_plugin(Plugin(), "flaky-plugin")
    write_config(project, inputs_extra='folders = ["photos"]')
    config = load_config(project / "salplug.toml", host=host)
    config.explanations[0].method = "flaky"
    with pytest.raises(salplug.ModelOutputError, match="fell over"):
        run(config, host=host, quiet=True)
    assert len(calls) == 2
    assert {"a/flaky.npz", "a/grad_cam.npz", "a/grid.png"} <= set(staged), staged  # the first image was written
    assert leftovers(project) == []


# --------------------------------------------------------------------------------------------- #
# Formats, precedence, defaults
# --------------------------------------------------------------------------------------------- #
def test_yaml_and_pyproject_and_toml_give_the_same_config(project):
    pytest.importorskip("yaml")
    toml_path = write_config(project, name="a.toml")
    from_toml = load_config(toml_path, env={})
    yaml_path = project / "a.yaml"
    yaml_path.write_text(textwrap.dedent("""
        seed: 3
        model: {backend: torch, source: "tiny_model.py:build", layer: relu,
                preprocessing: {size: 16, mean: 0.5, std: 0.25}}
        inputs: {files: [photos/a.png]}
        explanations: [{method: gradients}, {method: grad_cam}]
        outputs: {folder: out}
    """))
    pyproject = project / "pyproject.toml"
    body = toml_path.read_text().replace("[model]", "[tool.salplug.model]").replace(
        "[inputs]", "[tool.salplug.inputs]").replace("[[explanations]]", "[[tool.salplug.explanations]]").replace(
        "[outputs]", "[tool.salplug.outputs]").replace("seed = 3", "")
    pyproject.write_text('[project]\nname = "x"\n\n[tool.salplug]\nseed = 3\n' + body)
    for path in (yaml_path, pyproject):
        assert load_config(path, env={}).model_dump() == from_toml.model_dump()
    # without an argument, `salplug run` finds salplug.toml, else [tool.salplug] in pyproject.toml
    assert find_config(project) == pyproject
    (project / "salplug.toml").write_text(toml_path.read_text())
    assert find_config(project) == project / "salplug.toml"


def test_a_broken_pyproject_with_a_salplug_table_says_what_is_broken(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text('[project]\nname = "x"\n\n[tool.salplug\nseed = 3\n')
    assert find_config(tmp_path) == path  # found, so that loading it reports the syntax error
    with pytest.raises(ConfigError, match="pyproject.toml"):
        load_config(path)
    path.write_text('[project\nname = "x"\n')  # broken, but nothing to do with salplug
    assert find_config(tmp_path) is None


def test_pyproject_without_table_is_an_error(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text('[project]\nname = "x"\n')
    with pytest.raises(ConfigError, match=r"no \[tool.salplug\] table"):
        load_config(path)
    assert find_config(tmp_path) is None


def test_precedence_flags_then_environment_then_file_then_defaults(project):
    path = write_config(project, model_extra='device = "cpu"')
    env = {"SALPLUG_SEED": "7", "SALPLUG_OUTPUT": "from-env", "SALPLUG_TARGET": "2,3", "SALPLUG_BATCH_SIZE": "4"}
    plain = load_config(path, env={})
    assert (plain.seed, plain.outputs.folder, plain.model.target, plain.model.batch_size) == (3, "out", "top1", None)
    assert plain.model.device == "cpu" and plain.model.dtype == "float32"  # file, default
    from_env = load_config(path, env=env)
    assert (from_env.seed, from_env.outputs.folder, from_env.model.target, from_env.model.batch_size) == \
        (7, str(Path("from-env").absolute()), [2, 3], 4)
    flagged = load_config(path, env=env, overrides={"seed": 11, "outputs.folder": "from-flag", "model.target": None})
    assert (flagged.seed, flagged.outputs.folder, flagged.model.target) == (11, "from-flag", [2, 3])


def test_relative_paths_start_at_the_config_folder(project, monkeypatch, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    monkeypatch.chdir(elsewhere)
    config = load_config(write_config(project))
    assert config.path("photos/a.png") == project / "photos" / "a.png"
    assert config.path(config.outputs.folder) == project / "out"
    # SALPLUG_OUTPUT, like --out, starts at the working folder
    from_env = load_config(write_config(project), env={"SALPLUG_OUTPUT": "results"})
    assert from_env.path(from_env.outputs.folder) == elsewhere / "results"


# --------------------------------------------------------------------------------------------- #
# Running
# --------------------------------------------------------------------------------------------- #
def test_run_writes_every_output(project):
    config = write_config(project, inputs_extra='folders = ["photos"]\nglobs = ["photos/*.png"]',
                          outputs_extra='visualizers = ["auto", "diverging"]')
    result = run_cli("run", str(config), "--quiet")
    assert result.exit_code == 0, result.output
    out = project / "out"
    summary = json.loads((out / "summary.json").read_text())
    names = [entry["image"] for entry in summary["images"]]
    assert names == ["a", "a_2", "a_3", "b"]  # files, globs, folders (a.png, b.jpg): unique names
    for entry in summary["images"]:
        assert entry["size"] == [16, 16]
        assert 0 <= entry["prediction"]["class"] < 5 and entry["prediction"]["label"].startswith("class ")
        for item in entry["explanations"]:
            assert set(item) >= {"method", "params", "target", "seconds", "files"}
            assert item["target"] == entry["prediction"]["class"]
            seconds = item["seconds"]  # recorded, but no timing claim: only that it is a duration
            assert isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0, seconds
            values = np.load(out / item["files"]["npz"])["attribution"]
            assert values.shape[:2] == (16, 16) and np.isfinite(values).all()
            assert set(item["files"]["png"]) == ({"grayscale", "diverging"} if item["method"] == "gradients"
                                                 else {"heatmap", "diverging"})
            for png in item["files"]["png"].values():
                assert (out / png).is_file()
        assert entry["explanations"][1]["params"]["layer"] == "relu"  # model.layer reached Grad-CAM
    assert not [p for p in project.iterdir() if p.name.startswith(".out")]  # no staging left


def test_run_explains_the_targets_it_is_given(project):
    config = write_config(project, inputs_extra='folders = ["photos"]', model_extra="target = [1, 2, 3]")
    result = run_cli("run", str(config), "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads((project / "out" / "summary.json").read_text())
    assert [e["explanations"][0]["target"] for e in summary["images"]] == [1, 2, 3]
    assert summary["seed"] == 3 and summary["model"]["layer"] == "relu"


def test_gradients_match_a_direct_explain_call(project):
    """The runner's npz holds exactly what salplug.explain returns for the same preprocessed input."""
    import torch

    config = write_config(project, model_extra="target = 4")
    assert run_cli("run", str(config), "--quiet").exit_code == 0
    saved = np.load(project / "out" / "a" / "gradients.npz")["attribution"]
    from PIL import Image
    from skimage.transform import resize

    pixels = np.asarray(Image.open(project / "photos" / "a.png").convert("RGB")).astype(np.float32) / 255
    x = (np.clip(resize(pixels, (16, 16), order=1, anti_aliasing=True, preserve_range=True), 0, 1) - 0.5) / 0.25
    spec = __import__("importlib.util").util.spec_from_file_location("tiny_direct", project / "tiny_model.py")
    module = __import__("importlib.util").util.module_from_spec(spec)
    spec.loader.exec_module(module)
    direct = salplug.explain(module.build(), torch.from_numpy(x.astype(np.float32)).permute(2, 0, 1)[None],
                             "gradients", target=4).canonical[0]
    np.testing.assert_allclose(saved, direct, rtol=1e-5, atol=1e-6)


def test_output_folder_is_replaced_only_when_salplug_wrote_it(project):
    config = write_config(project)
    assert run_cli("run", str(config), "--quiet").exit_code == 0
    first = (project / "out" / "summary.json").read_text()
    assert run_cli("run", str(config), "--quiet", "--seed", "5").exit_code == 0  # replaced
    assert json.loads((project / "out" / "summary.json").read_text())["seed"] == 5 != json.loads(first)["seed"]
    foreign = project / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    result = run_cli("run", str(config), "--out", str(foreign))
    assert result.exit_code == 2 and "not written by salplug" in result.stderr
    assert (foreign / "thesis.tex").read_text() == "precious" and len(list(foreign.iterdir())) == 1


def test_flags_beat_the_file(project, monkeypatch):
    import salplug.api

    made = []

    class Spy(salplug.api.Explainer):  # the runner's Explainer: records the batch size it was given
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(salplug.api, "Explainer", Spy)
    config = write_config(project)
    out = project / "flagged"
    result = run_cli("run", str(config), "--out", str(out), "--target", "2", "--batch-size", "1", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"][0]["explanations"][0]["target"] == 2
    assert [(e.batch_size, e._auto_batch) for e in made] == [(1, False)]  # --batch-size 1 reached the run
    assert not (project / "out").exists()


def test_html_references_only_existing_files(project):
    config = write_config(project, inputs_extra='folders = ["photos"]')
    assert run_cli("run", str(config), "--quiet").exit_code == 0
    out = project / "out"
    page = (out / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert refs and all((out / ref).is_file() for ref in refs)
    assert "summary.json" in refs and "a/grid.png" in refs


@pytest.mark.parametrize("name", ["demo.toml", "torch.toml", "tf2.toml", "tf1.toml", "demo-small.yaml"])
def test_example_configs_are_valid(name, host):
    if name.endswith(".yaml"):
        pytest.importorskip("yaml")
    path = Path(__file__).resolve().parents[1] / "examples" / name
    config = load_config(path, env={}, host=host)
    assert config.model.source == "efficientnet_lite0" and config.explanations
    assert config.path(config.outputs.folder).parent == path.parent


# --------------------------------------------------------------------------------------------- #
# Preprocessing defaults, whole numbers, layers through wrappers, visualizers, model sources
# --------------------------------------------------------------------------------------------- #
def _builtin_stand_in(monkeypatch):
    """The built-in model's loading replaced by a tiny torch network (no weights download)."""
    import torch

    import salplug.runner

    def tiny(name, backend, dtype="float32"):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                  torch.nn.Linear(2, 3))
        return net.eval(), {}

    monkeypatch.setattr(salplug.runner, "_builtin_model", tiny)


def test_builtin_preprocessing_keeps_the_keys_not_given(project, monkeypatch):
    from salplug.plugins import get_host
    from salplug.runner import load_model

    _builtin_stand_in(monkeypatch)
    base = {"inputs": {"files": ["photos/a.png"]}, "explanations": [{"method": "gradients"}]}

    def loaded(pre):
        model = {"source": "efficientnet_lite0", **({"preprocessing": pre} if pre is not None else {})}
        m = load_model(load_config(data={**base, "model": model}, env={}), get_host())
        return m.size, m.scale, m.mean, m.std

    assert loaded(None) == ((224, 224), 255.0, 127.0, 128.0)  # (x * 255 - 127) / 128, docs/config.md
    assert loaded({"size": 224}) == ((224, 224), 255.0, 127.0, 128.0)
    assert loaded({"size": 32, "mean": 100.0}) == ((32, 32), 255.0, 100.0, 128.0)
    maps = []
    for pre in ("", "preprocessing = { size = 224 }"):
        (project / "run.toml").write_text(f'[model]\nsource = "efficientnet_lite0"\ntarget = 1\n{pre}\n'
                                          f'[inputs]\nfiles = ["photos/a.png"]\n[[explanations]]\n'
                                          f'method = "gradients"\n[outputs]\nfolder = "out"\nformats = ["npz"]\n')
        assert run_cli("run", str(project / "run.toml"), "-q").exit_code == 0
        maps.append(np.load(project / "out" / "a" / "gradients.npz")["attribution"])
    np.testing.assert_array_equal(maps[0], maps[1])


@pytest.mark.parametrize("line, fragments", [
    ("seed = -3", ("seed", "greater than or equal to 0")),
    ("seed = true", ("seed", "whole number")),
])
def test_seed_must_be_a_whole_number_from_0(project, line, fragments):
    config = write_config(project)
    config.write_text(config.read_text().replace("seed = 3", line))
    assert_clean_failure(run_cli("run", str(config)), project, *fragments)


def test_batch_size_true_is_not_1(project):
    result = run_cli("run", str(write_config(project, model_extra="batch_size = true")))
    assert_clean_failure(result, project, "model.batch_size", "whole number")


def test_negative_seed_given_to_smoothgrad_directly_is_a_parameter_error():
    from salplug.builtin_methods.smoothgrad import make_rng
    from salplug.errors import ParameterError

    with pytest.raises(ParameterError, match="seed must be an int >= 0"):
        make_rng(-3)
    with pytest.raises(ParameterError, match="seed must be an int >= 0"):
        make_rng(np.int64(-1))
    assert make_rng(0).integers(10**9) == np.random.default_rng(0).integers(10**9)


def test_smoothgrad_over_grad_cam_gets_model_layer(project):
    config = write_config(project, explanations_extra='[[explanations]]\nmethod = "smoothgrad"\n'
                                                      'params = { base = "grad_cam", nsamples = 2 }')
    result = run_cli("run", str(config), "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads((project / "out" / "summary.json").read_text())
    by_method = {e["method"]: e for e in summary["images"][0]["explanations"]}
    assert by_method["smoothgrad"]["params"]["layer"] == "relu"
    assert "layer" not in by_method["gradients"]["params"]


def test_smoothgrad_base_params_layer_wins_over_model_layer(project):
    from salplug.plugins import get_host
    from salplug.runner import _explanation_params, load_model

    host = get_host()
    config = load_config(write_config(project, explanations_extra=(
        '[[explanations]]\nmethod = "smoothgrad"\nparams = { base = "grad_cam", base_params = { layer = "conv" } }')),
        env={})
    loaded = load_model(config, host)
    smooth = host.methods.get("smoothgrad").load()()
    assert "layer" not in _explanation_params(config.explanations[1], smooth, loaded, config, host)
    assert "layer" not in _explanation_params(config.explanations[0], smooth, loaded, config, host)  # base gradients


def test_empty_explanation_visualizers_write_no_png(project):
    config = write_config(project, explanations_extra="visualizers = []")
    assert run_cli("run", str(config), "--quiet").exit_code == 0
    summary = json.loads((project / "out" / "summary.json").read_text())
    gradients, grad_cam = summary["images"][0]["explanations"]
    assert "png" not in gradients["files"] and not list((project / "out" / "a").glob("gradients_*.png"))
    assert set(grad_cam["files"]["png"]) == {"heatmap"}  # outputs.visualizers (auto) still apply elsewhere


DATACLASS_MODEL = '''
from __future__ import annotations

import dataclasses

from tiny_model import build as tiny_build


@dataclasses.dataclass
class Settings:
    eval_mode: bool = True


def build():
    return tiny_build().eval() if Settings().eval_mode else tiny_build()
'''


def test_py_file_model_may_use_dataclasses_and_import_its_siblings(project, monkeypatch, tmp_path_factory):
    import sys

    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))  # the sibling is found from the file's folder
    (project / "dc_model.py").write_text(DATACLASS_MODEL)
    config = write_config(project)
    config.write_text(config.read_text().replace("tiny_model.py:build", "dc_model.py:build"))
    before = list(sys.path)
    result = run_cli("run", str(config), "--quiet")
    assert result.exit_code == 0, result.output
    assert (project / "out" / "summary.json").is_file()
    assert sys.path == before  # the folder was on sys.path only while importing


CALL_MODEL_FUNCTION = '''
import numpy as np


def call_model_function(x_value_batch, call_model_args=None, expected_keys=None):
    x = np.asarray(x_value_batch, np.float64)
    out = {}
    if "OUTPUT_LAYER_VALUES" in expected_keys:
        out["OUTPUT_LAYER_VALUES"] = x.mean(axis=(1, 2, 3))  # one score per photo
    if "INPUT_OUTPUT_GRADIENTS" in expected_keys:
        out["INPUT_OUTPUT_GRADIENTS"] = np.full(x.shape, 1.0 / x[0].size)
    return out


def build():
    return call_model_function
'''


@pytest.mark.parametrize("source", ["fn.py:call_model_function", "fn.py:build"])
def test_callable_backend_takes_the_function_itself(project, source):
    (project / "fn.py").write_text(CALL_MODEL_FUNCTION)
    (project / "run.toml").write_text(f'[model]\nbackend = "callable"\nsource = "{source}"\n'
                                      f'preprocessing = {{ size = 8 }}\n[inputs]\nfiles = ["photos/a.png"]\n'
                                      f'[[explanations]]\nmethod = "gradients"\n[outputs]\nfolder = "out"\n'
                                      f'formats = ["npz"]\n')
    result = run_cli("run", str(project / "run.toml"), "--quiet")
    assert result.exit_code == 0, result.output
    values = np.load(project / "out" / "a" / "gradients.npz")["attribution"]
    np.testing.assert_allclose(values, np.full((8, 8, 3), 1.0 / 192), rtol=1e-6)  # the function's gradient
