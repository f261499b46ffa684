"""Every hook is documented for plugin authors."""

from __future__ import annotations

import inspect
from pathlib import Path

from salplug import hookspecs

ROOT = Path(__file__).resolve().parents[1]


def hook_names():
    return [name for name, obj in vars(hookspecs).items()
            if inspect.isfunction(obj) and hasattr(obj, "salplug_spec")]


def test_every_hook_has_a_docstring_and_a_section_in_the_guide():
    guide = (ROOT / "docs" / "plugins.md").read_text()
    names = hook_names()
    assert {"register_methods", "register_backends", "register_visualizers", "register_metrics",
            "detect_backend"} <= set(names)
    for name in names:
        assert (getattr(hookspecs, name).__doc__ or "").strip(), name
        assert f"### {name}" in guide, f"hook {name} is missing from docs/plugins.md"


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest -q" in readme and "python -m pytest -q" in ci
