"""The command line: list, plugins, run, explain (demo: test_demo.py; config errors: test_config.py)."""

from __future__ import annotations

from click.testing import CliRunner

from salplug.cli import main


def test_list_shows_every_kind_with_provider():
    result = CliRunner().invoke(main, ["list"])
    assert result.exit_code == 0, result.output
    for expected in ("methods", "backends", "visualizers", "metrics", "integrated_gradients", "torch",
                     "heatmap", "salplug 0.1.0"):
        assert expected in result.output


def test_list_one_kind():
    result = CliRunner().invoke(main, ["list", "--kind", "backend"])
    assert result.exit_code == 0 and "callable" in result.output and "smoothgrad" not in result.output


def test_plugins_lists_hooks():
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0
    assert "salplug.backends" in result.output and "detect_backend" in result.output


def test_help_lists_every_command():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "run", "explain", "list", "plugins"):
        assert command in result.output
    for flag in ("--quiet", "--device", "--batch-size", "--seed", "--backend"):
        assert flag in CliRunner().invoke(main, ["run", "--help"]).output


def _tiny_project(tmp_path):
    from test_config import TINY_MODEL, _photo

    (tmp_path / "tiny_model.py").write_text(TINY_MODEL)
    return _photo(tmp_path / "a.png", 0), _photo(tmp_path / "b.png", 1)


def test_explain_images_with_methods_and_params(tmp_path):
    import json

    import pytest

    pytest.importorskip("torch")
    a, b = _tiny_project(tmp_path)
    out = tmp_path / "maps"
    result = CliRunner().invoke(main, [
        "explain", str(a), str(b), "--model", f"{tmp_path / 'tiny_model.py'}:build", "-m", "gradients",
        "-m", "integrated_gradients", "-p", "integrated_gradients.steps=3", "--target", "1,2", "--out", str(out),
        "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    first = summary["images"][0]["explanations"]
    assert [e["method"] for e in first] == ["gradients", "integrated_gradients"]
    assert first[1]["params"]["steps"] == 3
    assert [e["explanations"][0]["target"] for e in summary["images"]] == [1, 2]
    assert (out / "index.html").is_file() and (out / "a" / "grid.png").is_file()


def test_explain_errors_exit_2(tmp_path):
    import pytest

    pytest.importorskip("torch")
    a, _ = _tiny_project(tmp_path)
    model = f"{tmp_path / 'tiny_model.py'}:build"
    cases = [
        (["explain", "--model", model], "give at least one IMAGE"),
        (["explain", str(a), "--model", model, "-p", "steps"], "KEY=VALUE"),
        (["explain", str(a), "--model", model, "-p", "ig.steps=3"], "not one of the --method values"),
        (["explain", str(tmp_path / "nope.png"), "--model", model], "no such file"),
        (["explain", str(a), "--model", model, "-m", "integrated_gradient", "--out", str(tmp_path / "o")], "Did you mean"),
    ]
    for args, fragment in cases:
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
        assert fragment in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_run_without_config_uses_the_one_in_the_folder(tmp_path, monkeypatch):
    import pytest

    pytest.importorskip("torch")
    _tiny_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["run"])
    assert result.exit_code == 2 and "no CONFIG given" in result.stderr
    (tmp_path / "salplug.toml").write_text(
        '[model]\nsource = "tiny_model.py:build"\npreprocessing = { size = 8 }\n'
        '[inputs]\nfiles = ["a.png"]\n[[explanations]]\nmethod = "gradients"\n[outputs]\nfolder = "found"\n')
    result = CliRunner().invoke(main, ["run", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "found" / "summary.json").is_file()


def test_explain_flags_beat_environment_which_beats_defaults(tmp_path, monkeypatch):
    import pytest

    pytest.importorskip("torch")
    a, _ = _tiny_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    model = f"{tmp_path / 'tiny_model.py'}:build"
    env = {"SALPLUG_OUTPUT": str(tmp_path / "from-env"), "SALPLUG_MODEL": "nosuch.py:X"}
    result = CliRunner().invoke(main, ["explain", str(a), "--model", model, "--target", "1", "--out", "from-flag",
                                       "-q"], env=env)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "from-flag" / "summary.json").is_file() and not (tmp_path / "from-env").exists()
    result = CliRunner().invoke(main, ["explain", str(a), "--model", model, "--target", "1", "-q"],
                                env={"SALPLUG_OUTPUT": str(tmp_path / "from-env")})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "from-env" / "summary.json").is_file() and not (tmp_path / "salplug-explain").exists()
    result = CliRunner().invoke(main, ["explain", str(a), "--target", "1", "-q"], env={"SALPLUG_MODEL": model})
    assert result.exit_code == 0, result.output  # the variable beats the default model
    assert (tmp_path / "salplug-explain" / "summary.json").is_file()


def test_explain_layer_reaches_smoothgrad_over_grad_cam(tmp_path):
    import json

    import pytest

    pytest.importorskip("torch")
    a, _ = _tiny_project(tmp_path)
    out = tmp_path / "o"
    result = CliRunner().invoke(main, [
        "explain", str(a), "--model", f"{tmp_path / 'tiny_model.py'}:build", "--target", "1", "-m", "smoothgrad",
        "-p", "base=grad_cam", "-p", "nsamples=2", "--layer", "conv", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    params = json.loads((out / "summary.json").read_text())["images"][0]["explanations"][0]["params"]
    assert params["layer"] == "conv" and params["base"] == "grad_cam"


def test_explain_method_prefix_may_be_an_alias_or_the_canonical_name(tmp_path):
    import json

    import pytest

    pytest.importorskip("torch")
    a, _ = _tiny_project(tmp_path)
    model = f"{tmp_path / 'tiny_model.py'}:build"
    for method, prefix, steps in (("ig", "integrated_gradients", 4), ("integrated_gradients", "ig", 3)):
        out = tmp_path / f"o-{method}"
        result = CliRunner().invoke(main, ["explain", str(a), "--model", model, "--target", "1", "-m", method,
                                           "-p", f"{prefix}.steps={steps}", "--out", str(out), "-q"])
        assert result.exit_code == 0, result.output
        summary = json.loads((out / "summary.json").read_text())
        assert summary["images"][0]["explanations"][0]["params"]["steps"] == steps


def test_explain_negative_seed_is_a_clean_error(tmp_path):
    import pytest

    pytest.importorskip("torch")
    a, _ = _tiny_project(tmp_path)
    result = CliRunner().invoke(main, ["explain", str(a), "--model", f"{tmp_path / 'tiny_model.py'}:build",
                                       "-m", "smoothgrad", "--seed", "-3", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "seed: Input should be greater than or equal to 0" in result.stderr, result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()
