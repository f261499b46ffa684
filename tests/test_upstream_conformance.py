"""The upstream ``saliency`` package's own tests pass against salplug.core/.metrics/.tf1.

Runs ``scripts/upstream_conformance.py`` (which copies the test modules out of the installed
upstream wheel, points their imports at salplug and runs pytest on them) in a subprocess.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "upstream_conformance.py"
EXPECTED = {"core+metrics": 46, "tf1": 38}  # test counts of saliency 0.2.1


def run_suite(suite: str) -> str:
    if importlib.util.find_spec("saliency") is None:
        reason = "the upstream package is not installed (pip install saliency==0.2.1): conformance not checked"
        print(reason)
        pytest.skip(reason)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--suite", suite], capture_output=True, text=True,
                          timeout=900)
    print(proc.stdout, proc.stderr[-3000:], sep="\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    return proc.stdout


def counts(output: str, suite: str) -> tuple[int, int]:
    match = re.search(rf"^{re.escape(suite)}: (\d+)/(\d+) passed", output, re.M)
    assert match, output
    return int(match.group(1)), int(match.group(2))


def test_upstream_core_and_metrics_tests_pass():
    out = run_suite("core+metrics")
    assert counts(out, "core+metrics") == (EXPECTED["core+metrics"],) * 2


def test_upstream_tf1_tests_pass():
    if importlib.util.find_spec("tensorflow") is None:
        reason = "TensorFlow is not installed (pip install tensorflow): the tf1 conformance suite is skipped"
        print(reason)
        pytest.skip(reason)
    out = run_suite("tf1")
    assert counts(out, "tf1") == (EXPECTED["tf1"],) * 2
