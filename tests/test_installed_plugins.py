"""Fault isolation with real distributions, installed by pip (not mocks, not hand-made dist-info).

The distributions under tests/data/dists/ are built and installed once per module with
``pip install --no-deps --target <tmp>``: real wheels, real ``*.dist-info`` folders with
METADATA, RECORD and ``entry_points.txt``. A process that has ``<tmp>`` on its path sees them
exactly as if they were pip-installed into its environment:

- salplug-broken-import 0.1.0: its module fails to import (a missing dependency);
- salplug-raising-hook 0.2.0: its register_methods hook registers a method, then raises;
- salplug-duplicate 0.3.0: registers a fresh name, then "gradients" (a built-in name);
- salplug-nonsense 0.4.0: loads fine; its methods return nonsense shapes or types;
- salplug-good 1.0.0: a working method and visualizer, installed next to the broken ones.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import salplug
from salplug.errors import ModelOutputError, PluginError, PluginLoadWarning

DISTS = Path(__file__).parent / "data" / "dists"
BROKEN = {  # entry point name -> (distribution, version, what the warning must say)
    "sp_broken_import": ("salplug-broken-import", "0.1.0", "salplug_test_dependency_that_is_not_installed"),
    "sp_raising_hook": ("salplug-raising-hook", "0.2.0", "hook exploded on purpose"),
    "sp_duplicate": ("salplug-duplicate", "0.3.0", "registered twice"),
}
SWITCHES = ("SALPLUG_DISABLE_PLUGIN_AUTOLOAD", "SALPLUG_BLOCK_PLUGINS", "SALPLUG_STRICT_PLUGINS")


def _can_build_offline() -> bool:
    try:
        import setuptools  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A folder with every test distribution pip-installed into it."""
    work = tmp_path_factory.mktemp("dists")
    sources = []
    for dist in sorted(p for p in DISTS.iterdir() if (p / "pyproject.toml").is_file()):
        shutil.copytree(dist, work / "src" / dist.name)  # builds leave build/ and *.egg-info behind
        sources.append(str(work / "src" / dist.name))
    target = work / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
           "--target", str(target)]
    if _can_build_offline():  # setuptools is here: no index needed
        cmd += ["--no-build-isolation", "--no-index"]
    result = subprocess.run([*cmd, *sources], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"pip install failed:\n{result.stdout}\n{result.stderr}"
    return target


def _env(site: Path, **switches: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONWARNINGS"] = "default"
    env.update(switches)
    return env


def _salplug(site: Path, *args: str, **switches: str) -> subprocess.CompletedProcess:
    """The command line, in a fresh process that sees the installed test distributions."""
    return subprocess.run([sys.executable, "-m", "salplug.cli", *args], capture_output=True, text=True,
                          env=_env(site, **switches), timeout=300)


def _python(site: Path, code: str, **switches: str) -> dict:
    """Run ``code`` (which prints one JSON line last) in a fresh process; return that JSON."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            env=_env(site, **switches), timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def on_path(site, monkeypatch):
    """The installed distributions on this process's path, entry points autoloaded."""
    monkeypatch.syspath_prepend(str(site))
    for name in SWITCHES:
        monkeypatch.delenv(name, raising=False)
    return site


def _linear(w):
    from conftest import linear_call_model_function

    return linear_call_model_function(w)


# -- the distributions are real ------------------------------------------------------------------

def test_pip_installed_real_distributions_with_entry_points(site):
    dists = {d.metadata["Name"]: d for d in importlib.metadata.distributions(path=[str(site)])}
    assert set(dists) == {"salplug-broken-import", "salplug-raising-hook", "salplug-duplicate",
                          "salplug-nonsense", "salplug-good"}
    for dist in dists.values():
        assert dist.read_text("RECORD"), dist.metadata["Name"]  # written by pip, not by hand
        (ep,) = [ep for ep in dist.entry_points if ep.group == "salplug"]
        assert ep.value == ep.name
    assert dists["salplug-duplicate"].version == "0.3.0"


# -- the command line ------------------------------------------------------------------------------

def test_salplug_list_warns_naming_each_broken_distribution_and_lists_the_rest(site):
    result = _salplug(site, "list")
    assert result.returncode == 0, result.stderr
    for entry_point, (dist, version, reason) in BROKEN.items():
        warning = [line for line in result.stderr.splitlines() if f"from distribution {dist} {version}" in line]
        assert warning, f"no warning names {dist} {version}:\n{result.stderr}"
        assert reason in warning[0] and "PluginLoadWarning" in warning[0]
        assert f"SALPLUG_BLOCK_PLUGINS={entry_point}" in warning[0]  # says how to silence it
    out = result.stdout
    assert "integrated_gradients" in out and "grayscale" in out          # built-ins
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "salplug-good 1.0.0" in rows["good_double"] and "salplug-good 1.0.0" in rows["good_vis"]
    assert "salplug-nonsense 0.4.0" in rows["nonsense_rows"]
    assert "salplug 0.1.0" in rows["gradients"]                          # the duplicate did not win
    assert "half_registered" not in rows and "dup_unique" not in rows     # rolled back
    assert "raising_hook_vis" not in rows


def test_salplug_plugins_shows_load_errors_with_distribution(site):
    result = _salplug(site, "plugins")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    for entry_point, (dist, version, _) in BROKEN.items():
        assert f"{dist} {version}" in rows[entry_point] and "NOT LOADED" in rows[entry_point]
    assert "salplug-good 1.0.0" in rows["sp_good"] and "register_methods" in rows["sp_good"]


@pytest.mark.parametrize("entry_point", sorted(BROKEN))
def test_strict_mode_command_line_fails_naming_the_distribution(site, entry_point):
    others = ",".join(sorted(set(BROKEN) - {entry_point}))
    result = _salplug(site, "list", SALPLUG_STRICT_PLUGINS="1", SALPLUG_BLOCK_PLUGINS=others)
    dist, version, reason = BROKEN[entry_point]
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert f"{dist} {version}" in text and reason in text and "strict mode" in text


def test_blocking_the_broken_plugins_silences_them(site):
    result = _salplug(site, "list", SALPLUG_BLOCK_PLUGINS=",".join(BROKEN))
    assert result.returncode == 0
    assert "PluginLoadWarning" not in result.stderr and "not loaded" not in result.stderr
    assert "good_double" in result.stdout
    plugins = _salplug(site, "plugins", SALPLUG_BLOCK_PLUGINS=",".join(BROKEN))
    rows = {line.split()[0]: line for line in plugins.stdout.splitlines() if line.strip()}
    assert all("blocked" in rows[name] for name in BROKEN)


def test_disabling_autoload_hides_every_installed_plugin(site):
    result = _salplug(site, "list", SALPLUG_DISABLE_PLUGIN_AUTOLOAD="1")
    assert result.returncode == 0
    assert result.stderr.strip() == ""
    assert "good_double" not in result.stdout and "nonsense_rows" not in result.stdout
    assert "integrated_gradients" in result.stdout


def test_discovery_is_lazy_in_a_fresh_process(site):
    found = _python(site, """
        import json, sys, warnings
        warnings.simplefilter("ignore")
        import salplug
        host = salplug.get_plugin_manager()
        print(json.dumps({"methods": host.methods.names(),
                          "imported": sorted(m for m in sys.modules if m.startswith(("sp_", "torch", "tensorflow")))}))
    """)
    assert "good_double" in found["methods"]
    # entry-point modules are imported; their lazy targets and frameworks are not
    assert "sp_good" in found["imported"] and "sp_good.methods" not in found["imported"]
    assert "sp_nonsense.methods" not in found["imported"]
    assert not [m for m in found["imported"] if m.startswith(("torch", "tensorflow"))]


# -- the Python API, in this process ----------------------------------------------------------------

def test_warnings_name_distribution_and_version_and_the_rest_works(on_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        host = salplug.get_plugin_manager()
    messages = [str(w.message) for w in caught if issubclass(w.category, PluginLoadWarning)]
    assert len(messages) == len(BROKEN), messages
    for entry_point, (dist, version, reason) in BROKEN.items():
        (message,) = [m for m in messages if f"{entry_point!r} from distribution {dist} {version}" in m]
        assert reason in message and "Everything else keeps working" in message
        assert host.plugins[entry_point].distribution == dist and host.plugins[entry_point].version == version
        assert host.pm.get_plugin(entry_point) is None          # rolled back
    assert "half_registered" not in host.methods and "dup_unique" not in host.methods
    assert "raising_hook_vis" not in host.visualizers
    assert host.methods.get("gradients").distribution == "salplug"
    comp = host.methods.get("good_double")
    assert (comp.distribution, comp.version) == ("salplug-good", "1.0.0")

    w = np.arange(24, dtype=np.float32).reshape(2, 4, 3) / 10
    good = salplug.explain(_linear(w), w, "good_double", backend="callable", host=host)
    np.testing.assert_allclose(good.values, 2 * w, rtol=1e-6)
    plain = salplug.explain(_linear(w), w, "integrated_gradients", backend="callable", host=host, steps=4)
    np.testing.assert_allclose(plain.values, w * w, rtol=1e-5)
    picture = salplug.visualizers.render("good_vis", good.canonical[0], host=host)
    assert picture.shape == (2, 4)


@pytest.mark.parametrize("entry_point", sorted(BROKEN))
def test_strict_mode_raises_plugin_error_naming_the_distribution(on_path, entry_point):
    dist, version, reason = BROKEN[entry_point]
    others = sorted(set(BROKEN) - {entry_point})
    with pytest.raises(PluginError) as info:
        salplug.get_plugin_manager(strict=True, blocked=others)
    text = str(info.value)
    assert f"{dist} {version}" in text and reason in text and entry_point in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and nothing warns once all three are blocked
        host = salplug.get_plugin_manager(strict=True, blocked=sorted(BROKEN))
    assert "good_double" in host.methods


def test_environment_switches(on_path, monkeypatch):
    monkeypatch.setenv("SALPLUG_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "good_double" not in salplug.get_plugin_manager().methods
    monkeypatch.delenv("SALPLUG_DISABLE_PLUGIN_AUTOLOAD")
    monkeypatch.setenv("SALPLUG_BLOCK_PLUGINS", ",".join([*BROKEN, "sp_good"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        host = salplug.get_plugin_manager()
    assert "good_double" not in host.methods and "nonsense_rows" in host.methods
    monkeypatch.setenv("SALPLUG_STRICT_PLUGINS", "1")
    monkeypatch.setenv("SALPLUG_BLOCK_PLUGINS", "sp_raising_hook,sp_duplicate")
    with pytest.raises(PluginError, match="salplug-broken-import 0.1.0"):
        salplug.get_plugin_manager()


@pytest.mark.parametrize("method, shape", [("nonsense_rows", "(3, 2)"), ("nonsense_scalar", "()")])
def test_nonsense_shapes_are_a_model_output_error_naming_the_method(on_path, method, shape):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)
        host = salplug.get_plugin_manager()
    w = np.ones((2, 4, 3), np.float32)
    x = np.stack([w, 2 * w])
    with pytest.raises(ModelOutputError) as info:
        salplug.explain(_linear(w), x, method, backend="callable", host=host)
    text = str(info.value)
    assert repr(method) in text and shape in text and "one map per input" in text
    # the host is still fine afterwards
    again = salplug.explain(_linear(w), x, "good_double", backend="callable", host=host)
    np.testing.assert_allclose(again.values, 2 * np.broadcast_to(w, x.shape))


def test_non_numeric_output_is_a_model_output_error(on_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)
        host = salplug.get_plugin_manager()
    w = np.ones((2, 4, 3), np.float32)
    with pytest.raises(ModelOutputError, match="nonsense_text"):
        salplug.explain(_linear(w), np.stack([w, w]), "nonsense_text", backend="callable", host=host)
