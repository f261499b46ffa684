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
