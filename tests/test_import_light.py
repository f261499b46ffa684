"""`import salplug`, building the plugin manager and `salplug list` import no heavy framework."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "tensorflow", "keras", "matplotlib")


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_and_plugin_manager_stay_light():
    assert _loaded_after("import salplug; salplug.get_plugin_manager().methods.names()") == []


def test_cli_list_stays_light():
    code = ("import sys\nfrom click.testing import CliRunner\nfrom salplug.cli import main\n"
            "r = CliRunner().invoke(main, ['list'])\nassert r.exit_code == 0, r.output\n"
            "assert 'integrated_gradients' in r.output\n")
    assert _loaded_after(code) == []
