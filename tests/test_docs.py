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
    after = readme[readme.index("Run the test suite:"):]
    block = after[after.index("```bash\n") + len("```bash\n"):]
    readme_steps = block[:block.index("```")].strip().split(" && ")
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert readme_steps[-1] == ci_lines[-1]  # CI's last command is the README's test command, exactly
    installs = {line.replace(" -q", "") for line in ci_lines[:-1]}  # CI installs quietly
    missing = [step for step in readme_steps[:-1] if step not in installs]
    assert not missing, f"README set-up steps CI does not run: {missing}"
