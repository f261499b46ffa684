"""The command line: list and plugins."""

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
