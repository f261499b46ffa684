"""Fixes from review r2 of the command line, configs, outputs and plugins (see each test)."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

import salplug
from salplug.config import ConfigError, load_config, validate_config
from salplug.evaluate import EvaluationResult
from salplug.errors import ModelOutputError, ParameterError, PluginError, PluginLoadWarning
from salplug.metrics.base import Metric
from salplug.outputs import MARKER, check_destination
from test_config import assert_clean_failure, run_cli
from test_hunt_cli_fixes import config, make_project, plugin_module, use_host

torch = pytest.importorskip("torch")


@pytest.fixture
def project(tmp_path, monkeypatch):
    """The tiny torch model and one photo; the working folder."""
    return make_project(tmp_path, monkeypatch)


def _no_staging_left(folder):
    return [p.name for p in folder.rglob(".*tmp-*")] + [p.name for p in folder.rglob(".*old-*")]


# --------------------------------------------------------------------------------------------- #
# 3. an output folder that is a dangling symbolic link (or under one) is created through it
# --------------------------------------------------------------------------------------------- #
def test_evaluate_default_folder_under_a_dangling_link_is_created_through_it(project):
    (project / "link").symlink_to("real")
    path = config(project, out="link", evaluation="include_random = false")
    result = run_cli("evaluate", str(path), "-q")
    assert result.exit_code == 0, result.output
    assert (project / "link").is_symlink()
    assert (project / "real" / "evaluation" / "evaluation.csv").is_file()
    assert _no_staging_left(project) == []


def test_run_out_under_a_dangling_link_is_created_through_it(project):
    (project / "link").symlink_to("real")
    result = run_cli("run", str(config(project)), "-q", "--out", "link/sub")
    assert result.exit_code == 0, result.output
    assert (project / "link").is_symlink() and (project / "real" / "sub" / "index.html").is_file()


def test_evaluate_claims_outputs_folder_not_a_link_targets_parent(project):
    (project / "runout").mkdir()
    (project / "runout" / "evaluation").symlink_to("../elsewhere/deep/e")
    path = config(project, out="runout", evaluation="include_random = false")
    result = run_cli("evaluate", str(path), "-q")
    assert result.exit_code == 0, result.output
    assert (project / "elsewhere" / "deep" / "e" / "evaluation.csv").is_file()
    assert not (project / "elsewhere" / "deep" / MARKER).exists()  # a folder the user chose, not salplug's


# --------------------------------------------------------------------------------------------- #
# 11. the working folder (or a folder holding it), and a symbolic link loop: refused up front
# --------------------------------------------------------------------------------------------- #
@pytest.mark.parametrize("out", [".", "..", "{project}"])
@pytest.mark.parametrize("command", ["run", "evaluate"])
def test_working_folder_as_output_is_refused_before_the_model_loads(project, out, command):
    path = config(project)
    path.write_text(path.read_text().replace("tiny_model.py:build", "tiny_model.py:failing"))
    (project / "keep.txt").write_text("mine")
    result = run_cli(command, str(path), "-q", "--out", out.format(project=project))
    message = assert_clean_failure(result, project, "working folder")
    assert "no weights here" not in message  # refused before the model was built
    assert (project / "keep.txt").read_text() == "mine"


def test_working_folder_as_output_is_refused_by_the_api(project):
    with pytest.raises(ParameterError, match="out_dir: .*working folder"):
        check_destination(".", where="out_dir", error=ParameterError)


@pytest.mark.parametrize("command", ["run", "evaluate"])
@pytest.mark.parametrize("out", ["loop", "loop/sub"])
def test_symlink_loop_as_output_is_refused_before_the_model_loads(project, command, out):
    (project / "loop").symlink_to("loop")
    path = config(project)
    path.write_text(path.read_text().replace("tiny_model.py:build", "tiny_model.py:failing"))
    message = assert_clean_failure(run_cli(command, str(path), "-q", "--out", out), project, "symbolic link")
    assert "no weights here" not in message


@pytest.mark.parametrize("out", ["missing/../precious", "dangling"])
def test_a_path_that_resolves_to_somebody_elses_folder_is_refused(project, out):
    # 'missing/../precious' is 'precious' once the OS resolves it; so is a dangling link
    # through a missing folder: the checks look at the folder that would be replaced
    (project / "precious").mkdir()
    (project / "precious" / "thesis.txt").write_text("mine")
    (project / "dangling").symlink_to(project / "gone" / ".." / "precious")
    with pytest.raises(ConfigError, match="was not written by salplug"):
        check_destination(out)
    assert (project / "precious" / "thesis.txt").read_text() == "mine"


# --------------------------------------------------------------------------------------------- #
# 5. evaluate: a metric name that cannot name files is refused; write failures are one error line
# --------------------------------------------------------------------------------------------- #
@pytest.mark.parametrize("name", ["a/b", "", "x" * 101])
def test_metric_entry_name_must_be_file_safe(name):
    data = {"explanations": [{"method": "gradients"}],
            "evaluation": {"metrics": [{"metric": "insertion", "name": name}]}}
    with pytest.raises(ConfigError, match=r"evaluation\.metrics\[0\]\.name: name is used in file names"):
        validate_config(data)


def test_metric_entry_name_with_a_slash_is_a_clean_cli_error(project):
    path = config(project)
    path.write_text(path.read_text().replace('metric = "deletion"', 'metric = "deletion", name = "a/b"'))
    assert_clean_failure(run_cli("evaluate", str(path), "-q"), project, "c.toml", "evaluation.metrics[0].name")


def test_evaluate_write_failure_is_a_config_error(project, monkeypatch):
    def full_disk(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(EvaluationResult, "to_json", full_disk)
    path = config(project, evaluation="include_random = false")
    assert_clean_failure(run_cli("evaluate", str(path), "-q"), project, "evaluation.folder: writing",
                         "No space left on device", "nothing was written")
    assert not (project / "out").exists() and _no_staging_left(project) == []


class _Curvy(Metric):
    curve_name = "a/b"
    y = None

    def evaluate(self, ctx, x, targets, attributions):
        from salplug.metrics.base import Curve, MetricResult

        n = len(x)
        y = self.y if self.y is not None else np.zeros((n, 3))
        return MetricResult(scores={"m": np.zeros(n)}, higher_is_better={"m": True},
                            curves={self.curve_name: Curve(np.arange(3.0), y)})


def _metric_host(cls):
    from salplug.testing import make_host

    def register_metrics(register):
        register("curvy", cls)

    return make_host({"p": plugin_module("p", register_metrics=register_metrics)})


def _evaluate(host, **kwargs):
    from salplug.testing import AnalyticModel

    x = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)
    return salplug.evaluate(AnalyticModel((8, 8, 3), classes=3), x, ["gradients"], ["curvy"], host=host,
                            include_random=False, progress=False, **kwargs)


def test_plugin_curve_name_with_a_slash_gets_a_file_safe_plot_name(tmp_path):
    pytest.importorskip("matplotlib")
    result = _evaluate(_metric_host(_Curvy), out_dir=tmp_path / "ev")
    assert (tmp_path / "ev" / "curve_a_b.png").is_file()
    assert result.files["plot:a/b"] == str(tmp_path / "ev" / "curve_a_b.png")


# --------------------------------------------------------------------------------------------- #
# 6. a ragged curve is a ModelOutputError naming the metric
# --------------------------------------------------------------------------------------------- #
def test_ragged_curve_is_a_model_output_error_naming_the_metric():
    class Ragged(_Curvy):
        curve_name = "c"
        y = [[0.0, 1.0, 2.0], [0.0, 1.0]]

    with pytest.raises(ModelOutputError, match=r"Metric 'curvy' .*curve 'c'"):
        _evaluate(_metric_host(Ragged))


# --------------------------------------------------------------------------------------------- #
# 7. "nan" and "inf" as strings are not finite numbers either
# --------------------------------------------------------------------------------------------- #
@pytest.mark.parametrize("key, value", [("scale", "nan"), ("scale", "inf"), ("scale", "-Infinity"),
                                        ("scale", "1e999"), ("mean", ["nan", 0, 0]), ("std", "inf")])
def test_string_nan_and_inf_are_refused(key, value):
    data = {"explanations": [{"method": "gradients"}], "model": {"preprocessing": {key: value}}}
    with pytest.raises(ConfigError, match=rf"model\.preprocessing\.{key}: expected a finite number"):
        validate_config(data)


def test_numeric_strings_still_pass():
    data = {"explanations": [{"method": "gradients"}],
            "model": {"preprocessing": {"scale": "2", "mean": ["0.5", 0, 0], "std": "0.25"}}}
    pre = validate_config(data).model.preprocessing
    assert (pre.scale, pre.mean, pre.std) == (2.0, (0.5, 0.0, 0.0), 0.25)


# --------------------------------------------------------------------------------------------- #
# 8. a lazy plugin backend whose module raises is a PluginError (file and key in the message)
# --------------------------------------------------------------------------------------------- #
def test_lazy_backend_whose_module_raises_is_a_plugin_error(project, monkeypatch):
    from salplug.evaluate import evaluate_config
    from salplug.runner import run

    (project / "boom_lazy_backend.py").write_text('raise RuntimeError("backend module exploded")\n')
    monkeypatch.syspath_prepend(str(project))

    def register_backends(register):
        register("lazyback", "boom_lazy_backend:Adapter", provides=("scores", "input_gradients"))

    host = use_host(monkeypatch, {"boom": plugin_module("boom", register_backends=register_backends)})
    path = config(project, model='backend = "lazyback"')
    for fn in (run, evaluate_config):
        monkeypatch.delitem(sys.modules, "boom_lazy_backend", raising=False)
        with pytest.raises(PluginError) as info:
            fn(load_config(path, host=host, env={}), host=host, quiet=True, source=str(path))
        assert not isinstance(info.value, ConfigError)
        assert f"{path}: model.backend:" in str(info.value) and "backend module exploded" in str(info.value)
    monkeypatch.delitem(sys.modules, "boom_lazy_backend", raising=False)
    assert_clean_failure(run_cli("run", str(path), "-q"), project, "c.toml: model.backend", "'lazyback'",
                         "backend module exploded")


# --------------------------------------------------------------------------------------------- #
# 9. with a detect_backend hookwrapper installed, a nonsense answer is still skipped with a warning
# --------------------------------------------------------------------------------------------- #
class _LoggingWrapper:
    seen: list = []

    @salplug.hookimpl(hookwrapper=True)
    def detect_backend(self, model):
        outcome = yield
        if outcome.exception is None:
            self.seen.append(outcome.get_result())


class _Odd:
    def __init__(self, answer):
        self.answer = answer

    @salplug.hookimpl(tryfirst=True)
    def detect_backend(self, model):
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class _Forcing:
    @salplug.hookimpl(hookwrapper=True)
    def detect_backend(self, model):
        outcome = yield
        outcome.force_result(12345)


def _detector_host(strict=False, **plugins):
    host = salplug.get_plugin_manager(autoload=False, strict=strict)
    for name, plugin in plugins.items():
        assert host.add_plugin(plugin, name)
    return host


_MODEL = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))


@pytest.mark.parametrize("answer, registered, what", [
    (12345, False, "answered 12345"), ("nosuch", True, "answered 'nosuch'"),
    (RuntimeError("detector exploded"), False, "raised RuntimeError: detector exploded")])
def test_detector_answering_nonsense_is_skipped_with_a_wrapper_installed(answer, registered, what):
    wrapper = _LoggingWrapper()
    wrapper.seen = []
    host = _detector_host(odd=_Odd(answer), wrap=wrapper)
    with pytest.warns(PluginLoadWarning, match=rf"'odd'.*detect_backend hook {what}"):
        assert host.detect_backend(_MODEL, registered=registered) == "torch"
    assert wrapper.seen[-1] == "torch"  # the wrapper saw the answer that was used
    strict = _detector_host(strict=True, odd=_Odd(answer), wrap=_LoggingWrapper())
    with pytest.raises(PluginError, match=rf"'odd'.*{what}"):
        strict.detect_backend(_MODEL, registered=registered)


def test_detector_nonsense_through_explain_with_a_wrapper():
    host = _detector_host(odd=_Odd(12345), wrap=_LoggingWrapper())
    with pytest.warns(PluginLoadWarning, match="'odd'"):
        out = salplug.explain(_MODEL, np.zeros((1, 2, 2, 3), np.float32), "gradients", host=host, layout="NHWC",
                              progress=False, target=0)
    assert out.backend == "torch"


def test_wrapper_that_forces_nonsense_is_skipped_saying_it_cannot_tell_which_plugin():
    host = _detector_host(force=_Forcing())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert host.detect_backend(_MODEL) == "torch"
    messages = [str(w.message) for w in caught if issubclass(w.category, PluginLoadWarning)]
    assert len(messages) == 1 and "'force'" in messages[0] and "cannot tell" in messages[0], messages
    with pytest.raises(PluginError, match="cannot tell"):
        _detector_host(strict=True, force=_Forcing()).detect_backend(_MODEL)


def test_wrapper_with_a_good_detector_answers_once():
    calls = []

    class Counting:
        @salplug.hookimpl(tryfirst=True)
        def detect_backend(self, model):
            calls.append(1)
            return None

    host = _detector_host(count=Counting(), wrap=_LoggingWrapper())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert host.detect_backend(_MODEL) == "torch"
    assert len(calls) == 1


# --------------------------------------------------------------------------------------------- #
# 10. one bad --batch-size / SALPLUG_BATCH_SIZE is reported once, under the key the user set
# --------------------------------------------------------------------------------------------- #
@pytest.mark.parametrize("how", ["env", "flag"])
def test_bad_batch_size_override_is_reported_once(how):
    data = {"explanations": [{"method": "gradients"}]}
    kwargs = {"env": {"SALPLUG_BATCH_SIZE": "0"}} if how == "env" else {"overrides": {"model.batch_size": 0}, "env": {}}
    with pytest.raises(ConfigError) as info:
        load_config(data=data, **kwargs)
    assert "model.batch_size" in str(info.value) and "evaluation.batch_size" not in str(info.value)


def test_bad_evaluation_batch_size_in_the_file_is_still_reported():
    data = {"explanations": [{"method": "gradients"}], "evaluation": {"batch_size": 0}}
    with pytest.raises(ConfigError, match=r"evaluation\.batch_size"):
        load_config(data=data, env={})


def test_batch_size_flag_cli_reports_once(project):
    result = run_cli("run", str(config(project)), "-q", "--batch-size", "0")
    message = assert_clean_failure(result, project, "model.batch_size")
    assert "evaluation.batch_size" not in message


def test_evaluate_save_write_failure_is_a_parameter_error(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    result = _evaluate(_metric_host(_Curvy))

    def full_disk(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(EvaluationResult, "to_json", full_disk)
    with pytest.raises(ParameterError, match="out_dir: writing .*No space left on device.*nothing was written"):
        result.save(tmp_path / "ev")
    assert list(tmp_path.iterdir()) == []


def test_overlapping_runs_keep_their_config_folder_on_sys_path_until_the_last_ends(tmp_path):
    # two runs from one folder, overlapping (threads): the first to end must not take the
    # folder off while the other still imports from it
    from salplug.runner import config_folder_on_path

    folder = str(tmp_path)
    first, second = config_folder_on_path(folder), config_folder_on_path(folder)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert folder in sys.path
    second.__exit__(None, None, None)
    assert folder not in sys.path
