"""Fixes from a bug hunt of the command line, configs, outputs and plugins (see each test)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import types
import warnings

import numpy as np
import pytest

import salplug
from salplug.config import ConfigError, load_config, validate_config
from salplug.errors import PluginError, PluginLoadWarning
from test_config import TINY_MODEL, _photo, assert_clean_failure, run_cli

torch = pytest.importorskip("torch")

CONFIG = """
[model]
source = "tiny_model.py:build"
{model}
preprocessing = {{ size = 16 }}
[inputs]
files = ["a.png"]
[[explanations]]
method = "{method}"
{explanation}
[outputs]
folder = "{folder}"
{outputs}
[evaluation]
metrics = [{{ metric = "deletion", params = {{ steps = 4 }} }}]
{evaluation}
"""


def make_project(tmp_path, monkeypatch):
    """The tiny torch model and one photo in ``tmp_path``, made the working folder."""
    (tmp_path / "tiny_model.py").write_text(TINY_MODEL)
    _photo(tmp_path / "a.png", 0)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def project(tmp_path, monkeypatch):
    return make_project(tmp_path, monkeypatch)


def config(folder, *, method="gradients", model="", explanation="", outputs="", evaluation="", out="out",
           name="c.toml"):
    path = folder / name
    path.write_text(CONFIG.format(method=method, model=model, explanation=explanation, outputs=outputs,
                                  evaluation=evaluation, folder=out))
    return path


def use_host(monkeypatch, plugins=None, distribution="salplug-boom", **kwargs):
    """The CLI's host: built-ins plus ``plugins`` (name -> module) as if from ``distribution``."""
    host = salplug.get_plugin_manager(autoload=False, strict=True, **kwargs)
    for name, plugin in (plugins or {}).items():
        assert host.add_plugin(plugin, name, distribution=distribution, version="0.1")
    monkeypatch.setattr(salplug.plugins, "_default_host", host)
    return host


def plugin_module(name, **hooks):
    module = types.ModuleType(name)
    for hook, func in hooks.items():
        setattr(module, hook, salplug.hookimpl(func))
    return module


# --------------------------------------------------------------------------------------------- #
# 1. a plugin component that raises when first used: PluginError naming it, exit 2, nothing left
# --------------------------------------------------------------------------------------------- #
def test_lazy_target_whose_module_raises_is_a_plugin_error(project, monkeypatch):
    (project / "boom_lazy_mod.py").write_text('raise RuntimeError("lazy module exploded")\n')
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.delitem(sys.modules, "boom_lazy_mod", raising=False)

    def register_methods(register):
        register("lazyboom", "boom_lazy_mod:M", requires=("input_gradients",))

    host = use_host(monkeypatch, {"boom_lazy": plugin_module("boom_lazy", register_methods=register_methods)})
    with pytest.raises(PluginError, match=r"lazyboom.*salplug-boom 0\.1.*RuntimeError: lazy module exploded"):
        salplug.explain(torch.nn.Linear(3, 2), np.zeros((1, 3), np.float32), "lazyboom", host=host)
    result = run_cli("run", str(config(project, method="lazyboom")), "-q")
    assert_clean_failure(result, project, "c.toml", "explanations[0].method", "'lazyboom'", "salplug-boom 0.1",
                         "RuntimeError: lazy module exploded")


class _InitBoom(salplug.Method):
    requires = frozenset({"input_gradients"})

    def __init__(self):
        raise RuntimeError("init exploded")

    def explain(self, ctx, x, targets):
        return x


class _CheckBoom(salplug.Method):
    requires = frozenset({"input_gradients"})

    def check(self, ctx, x, targets, *, k=1):
        raise TypeError("check exploded")

    def explain(self, ctx, x, targets, *, k=1):
        return x


class _BackendBoom:
    def __init__(self, model, **options):
        raise RuntimeError("backend ctor exploded")


def _boom_plugin():
    def register_methods(register):
        register("initboom", _InitBoom, requires=("input_gradients",))
        register("checkboom", _CheckBoom, requires=("input_gradients",))

    def register_backends(register):
        register("backendboom", _BackendBoom, provides=("scores", "input_gradients"))

    return plugin_module("boom", register_methods=register_methods, register_backends=register_backends)


@pytest.mark.parametrize("method, model, fragments", [
    ("initboom", "", ("explanations[0].method", "'initboom'", "RuntimeError: init exploded")),
    ("checkboom", "", ("explanations[0]", "'checkboom'", "check()", "TypeError: check exploded")),
    ("gradients", 'backend = "backendboom"', ("model.backend", "'backendboom'", "RuntimeError: backend ctor exploded")),
])
def test_plugin_raising_in_init_check_or_adapter_is_a_clean_error(project, monkeypatch, method, model, fragments):
    use_host(monkeypatch, {"boom": _boom_plugin()})
    for command in ("run", "evaluate"):
        result = run_cli(command, str(config(project, method=method, model=model)), "-q")
        assert_clean_failure(result, project, "c.toml", "salplug-boom 0.1", *fragments)


# --------------------------------------------------------------------------------------------- #
# 15. a detect_backend hook that answers nonsense is skipped, naming its plugin
# --------------------------------------------------------------------------------------------- #
def test_detector_answering_nonsense_is_skipped_with_a_warning_naming_it():
    def detect_backend(model):
        return getattr(model, "answer", None)

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    for answer, registered in ((12345, False), ("nosuch", True)):
        host = salplug.get_plugin_manager(autoload=False, plugins={"odd": plugin_module("odd", detect_backend=detect_backend)})
        model.answer = answer
        with pytest.warns(PluginLoadWarning, match=r"'odd'.*detect_backend hook answered .*not a"):
            assert host.detect_backend(model, registered=registered) == "torch"  # the built-in answers
    strict = salplug.get_plugin_manager(autoload=False, strict=True,
                                        plugins={"odd": plugin_module("odd", detect_backend=detect_backend)})
    with pytest.raises(PluginError, match="'odd'.*answered 'nosuch'"):
        salplug.evaluate(model, np.zeros((1, 2, 2, 3), np.float32), ["gradients"], ["deletion"], host=strict,
                         progress=False)


# --------------------------------------------------------------------------------------------- #
# 4. an override never replaces a section that is not a table
# --------------------------------------------------------------------------------------------- #
def test_override_of_a_section_that_is_not_a_table_is_an_error():
    data = {"model": "tiny.py:build", "explanations": [{"method": "gradients"}]}
    with pytest.raises(ConfigError, match=r"model: is 'tiny.py:build', not a table.*flag.*model.backend"):
        load_config(data=data, overrides={"model.backend": "torch"}, env={})
    with pytest.raises(ConfigError, match=r"model: is 'tiny.py:build', not a table.*SALPLUG_TARGET"):
        load_config(data=data, env={"SALPLUG_TARGET": "3"})


def test_override_of_a_non_table_names_the_file(project):
    path = project / "c.toml"
    path.write_text('model = "tiny_model.py:build"\n[[explanations]]\nmethod = "gradients"\n')
    result = run_cli("run", str(path), "--backend", "torch", "-q")
    assert_clean_failure(result, project, "c.toml: model: is 'tiny_model.py:build', not a table")


# --------------------------------------------------------------------------------------------- #
# 5. --batch-size / SALPLUG_BATCH_SIZE beat the file's [evaluation] batch_size
# --------------------------------------------------------------------------------------------- #
RECORDING_MODEL = TINY_MODEL + '''

SEEN = []


class Recording(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = build()

    def forward(self, x):
        SEEN.append(len(x))
        return self.inner(x)


def recording():
    SEEN.clear()
    return Recording().eval()
'''


def test_batch_size_flag_and_variable_beat_the_evaluation_section(project, monkeypatch):
    (project / "recording_model.py").write_text(RECORDING_MODEL)
    path = config(project, model="", evaluation="batch_size = 16\ninclude_random = false")
    path.write_text(path.read_text().replace("tiny_model.py:build", "recording_model.py:recording"))
    assert load_config(path, env={"SALPLUG_BATCH_SIZE": "2"}).evaluation.batch_size == 2
    assert load_config(path, overrides={"model.batch_size": 3}, env={}).evaluation.batch_size == 3
    assert load_config(path, env={}).evaluation.batch_size == 16
    for flags, env in ((["--batch-size", "2"], {}), ([], {"SALPLUG_BATCH_SIZE": "2"})):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        result = run_cli("evaluate", str(path), "-q", *flags)
        assert result.exit_code == 0, result.output
        seen = sys.modules[next(m for m in sys.modules if m.startswith("salplug_user_recording_model"))].SEEN
        assert seen and max(seen) <= 2, seen
        for key in env:
            monkeypatch.delenv(key)


# --------------------------------------------------------------------------------------------- #
# 6, 7. output folders: written through a symbolic link; permissions follow the umask
# --------------------------------------------------------------------------------------------- #
def test_symlinked_output_folder_is_written_through_the_link(project):
    path = config(project, out="results")
    assert run_cli("run", str(path), "-q", "--out", "scratch/real").exit_code == 0
    (project / "results").symlink_to("scratch/real")
    (project / "scratch" / "real" / "summary.json").write_text("{}")  # stale: must be replaced
    assert run_cli("run", str(path), "-q").exit_code == 0
    assert (project / "results").is_symlink()
    assert json.loads((project / "scratch" / "real" / "summary.json").read_text())["images"]
    assert sorted(p.name for p in project.iterdir() if p.name.startswith(".")) == []
    assert sorted(p.name for p in (project / "scratch").iterdir()) == ["real"]


def test_dangling_symlink_output_folder_creates_its_target(project):
    (project / "results").symlink_to("scratch/real")
    assert run_cli("run", str(config(project, out="results")), "-q").exit_code == 0
    assert (project / "results").is_symlink() and (project / "scratch" / "real" / "index.html").is_file()


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_output_folders_follow_the_umask(project):
    old = os.umask(0o022)
    try:
        path = config(project)
        assert run_cli("run", str(path), "-q").exit_code == 0
        assert run_cli("evaluate", str(path), "-q").exit_code == 0
    finally:
        os.umask(old)
    for folder in ("out", "out/a", "out/evaluation"):
        assert stat.S_IMODE((project / folder).stat().st_mode) == 0o755, folder


# --------------------------------------------------------------------------------------------- #
# 8. more user mistakes: one error paragraph, exit 2
# --------------------------------------------------------------------------------------------- #
def test_preprocessing_function_that_raises_is_a_clean_error(project):
    (project / "prep.py").write_text("def bad(pixels):\n    raise RuntimeError('prep boom')\n")
    path = config(project)
    path.write_text(path.read_text().replace("preprocessing = { size = 16 }", 'preprocessing = "prep.py:bad"'))
    for command in ("run", "evaluate"):
        assert_clean_failure(run_cli(command, str(path), "-q"), project, "c.toml: model.preprocessing",
                             "'prep.py:bad'", "RuntimeError: prep boom")


def test_sample_that_is_not_one_photo_is_a_clean_error(project):
    from salplug.runner import load_sample_image

    import skimage.data

    skimage.data.salplug_test_pair = lambda: (np.zeros((4, 4, 3)), np.zeros((4, 4, 3)))
    try:
        with pytest.raises(ConfigError, match="salplug_test_pair.*2 items, not one photo"):
            load_sample_image("salplug_test_pair")
    finally:
        del skimage.data.salplug_test_pair
    from salplug.runner import _rgb

    with pytest.raises(ConfigError, match="is not an image"):
        _rgb([np.zeros((2, 2)), np.zeros((3, 3))], "ragged")


def test_explanation_name_too_long_for_file_names_is_a_config_error(project):
    result = run_cli("run", str(config(project, explanation=f'name = "{"a" * 300}"')), "-q")
    assert_clean_failure(result, project, "c.toml", "explanations[0].name", "at most 100 bytes")


# --------------------------------------------------------------------------------------------- #
# 9. config values: real numbers and real booleans
# --------------------------------------------------------------------------------------------- #
@pytest.mark.parametrize("model, fragment", [
    ({"preprocessing": {"size": True}}, "model.preprocessing.size"),
    ({"preprocessing": {"size": [True, 4]}}, "model.preprocessing.size"),
    ({"preprocessing": {"scale": True}}, "model.preprocessing.scale: expected a number, not true"),
    ({"preprocessing": {"scale": float("nan")}}, "model.preprocessing.scale: expected a finite number"),
    ({"preprocessing": {"std": float("inf")}}, "model.preprocessing.std: expected a finite number"),
    ({"preprocessing": {"std": float("nan")}}, "model.preprocessing.std: expected a finite number"),
    ({"preprocessing": {"mean": [0.5, float("nan"), 0.5]}}, "model.preprocessing.mean: expected a finite number"),
    ({"preprocessing": {"mean": [0.5, 0.5]}}, "model.preprocessing.mean: give one number, or three"),
])
def test_wrong_preprocessing_values_are_refused(model, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace(".", r"\.")):
        validate_config({"model": model, "explanations": [{"method": "gradients"}]})


@pytest.mark.parametrize("section", [{"outputs": {"overwrite": "yes"}}, {"evaluation": {"include_random": "no"}},
                                     {"evaluation": {"include_random": 1}}])
def test_booleans_must_be_booleans(section):
    with pytest.raises(ConfigError, match="valid boolean"):
        validate_config({"explanations": [{"method": "gradients"}], **section})


def test_right_preprocessing_values_still_pass():
    pre = validate_config({"model": {"preprocessing": {"size": [8, 9], "scale": 255, "mean": [1, 2, 3], "std": 2}},
                           "explanations": [{"method": "gradients"}]}).model.preprocessing
    assert (pre.size, pre.scale, pre.mean, pre.std) == ((8, 9), 255.0, (1.0, 2.0, 3.0), 2.0)


# --------------------------------------------------------------------------------------------- #
# 10, 11, 13. index.html links, visualizer names, plugin visualizers get the photo
# --------------------------------------------------------------------------------------------- #
def test_index_links_are_url_quoted(project):
    import re
    from urllib.parse import unquote, urlsplit

    assert run_cli("run", str(config(project, explanation='name = "grad#1%"')), "-q").exit_code == 0
    page = (project / "out" / "index.html").read_text()
    refs = re.findall(r'(?:href|src)="([^"]+)"', page)
    assert any("grad%231%25" in r for r in refs), refs
    for ref in refs:
        assert (project / "out" / unquote(urlsplit(ref).path)).is_file(), ref


def test_visualizer_names_are_looked_up_like_method_names(project):
    path = config(project, outputs='visualizers = ["Heatmap", "gray", "GrayScale", "greyscale", "Auto"]')
    result = run_cli("run", str(path), "-q")
    assert result.exit_code == 0, result.output
    pngs = sorted(p.name for p in (project / "out" / "a").glob("gradients_*.png"))
    assert pngs == ["gradients_grayscale.png", "gradients_heatmap.png"]
    shutil.rmtree(project / "out")
    bad = run_cli("run", str(config(project, outputs='visualizers = ["heatmapp"]')), "-q")
    assert_clean_failure(bad, project, "outputs.visualizers[0]", "Did you mean 'heatmap'?")


def test_plugin_visualizers_get_the_photo(project, monkeypatch):
    seen = []

    def photo_vis(values, image=None):
        seen.append(None if image is None else np.asarray(image).shape)
        return np.zeros(values.shape[:2])

    def register_visualizers(register):
        register("photo_vis", photo_vis)

    use_host(monkeypatch, {"vis": plugin_module("vis", register_visualizers=register_visualizers)})
    result = run_cli("run", str(config(project, outputs='visualizers = ["photo_vis"]')), "-q")
    assert result.exit_code == 0, result.output
    assert seen == [(16, 16, 3)]


# --------------------------------------------------------------------------------------------- #
# 14. a package.module:attr model source leaves sys.path as it was
# --------------------------------------------------------------------------------------------- #
def test_module_source_restores_sys_path(project, monkeypatch):
    from salplug.runner import load_model

    (project / "sub").mkdir()
    (project / "sub" / "pathmodel_for_test.py").write_text(TINY_MODEL)
    monkeypatch.delitem(sys.modules, "pathmodel_for_test", raising=False)
    monkeypatch.chdir("/")
    cfg = validate_config({"model": {"source": "pathmodel_for_test:build"}, "explanations": [{"method": "gradients"}]},
                          base_dir=project / "sub")
    before = list(sys.path)
    load_model(cfg, salplug.get_plugin_manager(autoload=False))
    assert sys.path == before


def test_a_module_source_may_import_its_neighbours_while_the_run_lasts(project, monkeypatch):
    # the builder (and preprocessing) of a package.module:attr source may import modules beside
    # the config when called, as at import time; sys.path is restored when the run ends
    (project / "lazy_neighbour_for_test.py").write_text(TINY_MODEL)
    (project / "lazy_source_for_test.py").write_text(
        "def build():\n    import lazy_neighbour_for_test\n    return lazy_neighbour_for_test.build()\n")
    for name in ("lazy_neighbour_for_test", "lazy_source_for_test"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    path = config(project)
    path.write_text(path.read_text().replace("tiny_model.py:build", "lazy_source_for_test:build"))
    monkeypatch.chdir("/")
    before = list(sys.path)
    for command in ("run", "evaluate"):
        result = run_cli(command, str(path), "-q")
        assert result.exit_code == 0, result.output
    assert sys.path == before


# --------------------------------------------------------------------------------------------- #
# 17. evaluate: config mistakes name the file and key; -q keeps matplotlib quiet
# --------------------------------------------------------------------------------------------- #
def test_evaluate_names_the_file_and_key(project):
    path = config(project, method="grad_cam", model='layer = "rleu"')
    for command in ("run", "evaluate"):
        assert_clean_failure(run_cli(command, str(path), "-q"), project, "c.toml: model.layer:",
                             "Did you mean 'relu'?")
    path = config(project, evaluation="")
    path.write_text(path.read_text().replace("steps = 4", "stpes = 4"))
    assert_clean_failure(run_cli("evaluate", str(path), "-q"), project, "c.toml: evaluation.metrics[0]:",
                         "'stpes'")


def test_evaluate_quiet_prints_no_matplotlib_warning(project):
    path = config(project)
    path.write_text(path.read_text().replace('metric = "deletion", params = { steps = 4 }',
                                             'metric = "pic", params = { min_pred_value = 0.999 }'))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        result = run_cli("evaluate", str(path), "-q")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
