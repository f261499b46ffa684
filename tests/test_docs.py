"""Every hook is documented for plugin authors."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

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


def test_plugin_example_pins_salplug_as_the_guide_recommends():
    import tomllib

    guide = (ROOT / "docs" / "plugins.md").read_text()
    assert "`salplug>=0.1,<0.2`" in guide
    with open(ROOT / "plugins_example" / "pyproject.toml", "rb") as fh:
        deps = tomllib.load(fh)["project"]["dependencies"]
    assert "salplug>=0.1,<0.2" in deps


def test_readme_backend_options_are_torch_backend_options():
    import re

    pytest.importorskip("torch")
    from salplug.api import backend_option_names
    from salplug.backends.torch import TorchAdapter

    readme = (ROOT / "README.md").read_text()
    assert "salplug.Explainer(model, eval_mode=False)" in readme
    assert 'backend_options={"eval_mode": False}' in readme
    sentence = readme[readme.index("(backend options such as"):]
    named = re.findall(r"`(\w+)`", sentence[:sentence.index(")")])
    accepted, _ = backend_option_names(TorchAdapter)
    assert named and set(named) <= set(accepted)


def test_sic_ordering_report_path_is_the_out_default():
    import re

    script = (ROOT / "benchmarks" / "sic_ordering.py").read_text()
    default = re.search(r'"--out", default="([^"]+)"', script).group(1)
    assert (ROOT / "docs" / "evaluation.md").read_text().count(f"`{default}/REPORT.md`") == 1


def test_demo_toml_says_what_salplug_demo_adds():
    from salplug.demo import DEMO_METHODS
    import salplug

    host = salplug.get_plugin_manager(autoload=False)
    listed = {name for name, _ in DEMO_METHODS}
    extra = sorted(c.name for c in host.methods.components() if c.name not in listed)
    header = (ROOT / "examples" / "demo.toml").read_text().split("\n\n")[0]
    assert extra  # the demo runs more than the file lists ...
    for name in extra:  # ... and the file's header says which
        assert f"`{name}`" in header, name
