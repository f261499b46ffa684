#!/usr/bin/env python
"""Run the upstream ``saliency`` package's own tests against salplug's drop-in modules.

The upstream wheel (PyPI ``saliency`` 0.2.1) ships its test modules: ``saliency/core/*_test.py``,
``saliency/metrics/*_test.py`` and ``saliency/tf1/*_test.py``. This script copies them into a
temporary package, points their relative imports (``from . import xrai``, ``from .base import
...``, ``from ..core import ...``) at ``salplug.core`` / ``salplug.metrics`` / ``salplug.tf1``
(or, with ``--upstream``, back at ``saliency.*``), runs pytest on them and prints the pass
counts per suite. The exit status is non-zero when any test fails.

Two fixtures the tests expect from the upstream source tree are provided, the same for both
targets (``--verbatim`` turns both off):

* ``doberman.png`` (read by ``pic_test``; not in the wheel): scikit-image's ``chelsea`` photo
  (at quarter size) is written in its place.
* ``tf1/grad_cam_test.py`` looks its convolution up by the Keras 2 tensor name
  ``'Conv/BiasAdd:0'``; Keras 3 (what ``tf.keras`` is from TensorFlow 2.16 on) names that op
  ``Conv_1/Add``, so ``setUp`` raises KeyError before any saliency code runs. Under Keras 3 the
  lookup is replaced by the layer's output tensor ``conv1``, which the test builds just before.

Usage::

    python scripts/upstream_conformance.py              # salplug
    python scripts/upstream_conformance.py --upstream   # the upstream package itself
    python scripts/upstream_conformance.py --suite core --keep
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "upstream_tests"
SUITES = {  # suite -> upstream sub-packages whose tests it runs
    "core+metrics": ("core", "metrics"),
    "tf1": ("tf1",),
}
KERAS2_LOOKUP = "self.graph.get_tensor_by_name('Conv/BiasAdd:0')"


def upstream_dir() -> Path:
    spec = importlib.util.find_spec("saliency")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("The upstream package is not installed: pip install saliency==0.2.1")
    return Path(list(spec.submodule_search_locations)[0])


def has_tensorflow() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def keras3() -> bool:
    """True when tf.keras resolves to Keras 3 (read from metadata, without importing TF)."""
    if os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() in ("1", "true", "yes"):
        return False
    try:
        return int(importlib.metadata.version("keras").split(".")[0]) >= 3
    except importlib.metadata.PackageNotFoundError:
        return False


def rewrite(source: str, sub: str, target: str) -> str:
    """Point the relative imports of a test module of ``saliency.<sub>`` at ``<target>.<sub>``."""
    here, parent = f"{target}.{sub}", target

    def absolute(match: re.Match) -> str:
        dots, rest = match.group(1), match.group(2)
        base = here if len(dots) == 1 else parent
        return f"from {base}.{rest} import" if rest else f"from {base} import"

    source = re.sub(r"^from (\.{1,2})([\w.]*) import", absolute, source, flags=re.M)
    return re.sub(r"\bsaliency\.(core|metrics|tf1)\b", lambda m: f"{target}.{m.group(1)}", source)


def write_fixture_image(path: Path) -> None:
    from PIL import Image
    from skimage import data

    # Quarter size (75 x 113): the PIC tests interpolate it and encode it as WebP a dozen times.
    Image.fromarray(data.chelsea()[::4, ::4]).save(path)


def prepare(root: Path, target: str, subs: list[str], verbatim: bool) -> list[str]:
    """Copy and rewrite the test modules under ``root/PACKAGE``; return notes on fixtures."""
    notes = []
    src = upstream_dir()
    pkg = root / PACKAGE
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    for sub in subs:
        (pkg / sub).mkdir(exist_ok=True)
        (pkg / sub / "__init__.py").write_text("")
        for test in sorted((src / sub).glob("*_test.py")):
            text = rewrite(test.read_text(), sub, target)
            if not verbatim and sub == "tf1" and test.name == "grad_cam_test.py" and keras3() \
                    and KERAS2_LOOKUP in text:
                text = text.replace(KERAS2_LOOKUP, "conv1")
                notes.append("tf1/grad_cam_test.py: Keras 3 op names, the conv layer is looked up as "
                             "the tensor conv1 instead of 'Conv/BiasAdd:0'")
            (pkg / sub / test.name).write_text(text)
    if "metrics" in subs and not verbatim:
        write_fixture_image(root / "doberman.png")
        notes.append("doberman.png: scikit-image's chelsea photo stands in for the image of the "
                     "upstream source tree")
    return notes


def run_suite(root: Path, subs: list[str], name: str, verbose: bool) -> dict:
    report = root / f"{name.replace('+', '_')}.xml"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(root),
           f"--junitxml={report}", "-o", "junit_family=xunit1", *[str(root / PACKAGE / s) for s in subs]]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    if verbose or not report.exists():
        print(proc.stdout[-20000:], proc.stderr[-5000:], sep="\n")
    results = {"passed": 0, "failed": [], "total": 0}
    if not report.exists():
        results["failed"].append(f"pytest exited with {proc.returncode} and wrote no report")
        return results
    for case in ET.parse(report).getroot().iter("testcase"):
        results["total"] += 1
        bad = [c for c in case if c.tag in ("failure", "error")]
        skipped = [c for c in case if c.tag == "skipped"]
        test_id = f"{case.get('classname', '').split('.', 1)[-1]}::{case.get('name')}"
        if bad:
            reason = (bad[0].get("message") or "").splitlines()[0][:160] if bad[0].get("message") else bad[0].tag
            results["failed"].append(f"{test_id}: {reason}")
        elif skipped:
            results["failed"].append(f"{test_id}: skipped ({skipped[0].get('message', '')})")
        else:
            results["passed"] += 1
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", action="store_true", help="run the tests against the upstream package")
    parser.add_argument("--suite", choices=[*SUITES, "all"], default="all")
    parser.add_argument("--verbatim", action="store_true",
                        help="no fixtures: no stand-in doberman.png, no Keras 3 lookup fix")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("-v", "--verbose", action="store_true", help="print pytest's output")
    args = parser.parse_args(argv)

    target = "saliency" if args.upstream else "salplug"
    suites = list(SUITES) if args.suite == "all" else [args.suite]
    root = Path(tempfile.mkdtemp(prefix="salplug_conformance_"))
    failed = False
    try:
        print(f"Upstream tests from {upstream_dir()} against {target}")
        for suite in suites:
            subs = list(SUITES[suite])
            if "tf1" in subs and not has_tensorflow():
                print(f"{suite}: skipped, TensorFlow is not installed (pip install tensorflow)")
                continue
            for note in prepare(root, target, subs, args.verbatim):
                print(f"  fixture: {note}")
            res = run_suite(root, subs, suite, args.verbose)
            print(f"{suite}: {res['passed']}/{res['total']} passed")
            for line in res["failed"]:
                print(f"  FAILED {line}")
            failed |= bool(res["failed"]) or res["total"] == 0
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
