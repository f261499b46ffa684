"""End to end, with salplug-example pip-installed: discovery, `salplug list`, explain() by name on
every backend that provides what a method requires, config files, the command line, and the
environment switches that hide or block the plugin.

Run ``pip install ./plugins_example`` first. Without it these tests are skipped, except on CI
(``CI`` set), where a missing install is a failure.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner


import salplug
from salplug import testing as T
from salplug.cli import main

DIST = "salplug-example"
METHODS = {"input_x_gradient": {"input_gradients"}, "rise": {"scores"}}
PARAMS = {"input_x_gradient": {}, "rise": {"masks": 16, "grid": 3}}
SWITCHES = ("SALPLUG_DISABLE_PLUGIN_AUTOLOAD", "SALPLUG_BLOCK_PLUGINS", "SALPLUG_STRICT_PLUGINS")


def _installed() -> importlib.metadata.Distribution | None:
    try:
        return importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError:
        return None


@pytest.fixture(autouse=True)
def installed(monkeypatch):
    """The installed distribution; the environment switches cleared; a fresh default host."""
    dist = _installed()
    if dist is None:
        message = f"{DIST} is not installed: run `pip install ./plugins_example` first"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    for name in SWITCHES:
        monkeypatch.delenv(name, raising=False)
    salplug.reset_host()
    yield dist
    salplug.reset_host()


def _cli(*args: str):
    salplug.reset_host()
    result = CliRunner().invoke(main, list(args))
    salplug.reset_host()
    return result


def _rows(output: str) -> dict[str, str]:
    return {line.split()[0]: line for line in output.splitlines() if line.startswith("  ") and line.split()}


# -- discovery -----------------------------------------------------------------------------------------

def test_the_distribution_declares_its_entry_point(installed):
    (ep,) = [ep for ep in installed.entry_points if ep.group == "salplug"]
    assert (ep.name, ep.value) == ("salplug_example", "salplug_example.plugin")


def test_salplug_list_shows_the_components_under_the_distribution(installed):
    result = _cli("list")
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    provider = f"{DIST} {installed.version}"
    for name in [*METHODS, "top_k_mask"]:
        assert provider in rows[name], rows.get(name)
    assert "requires: scores" in rows["rise"] and "requires: input_gradients" in rows["input_x_gradient"]
    plugins = _cli("plugins")
    line = [ln for ln in plugins.output.splitlines() if ln.startswith("salplug_example ")][0]
    assert provider in line and "register_methods" in line and "register_visualizers" in line


def test_disable_autoload_hides_it(monkeypatch):
    monkeypatch.setenv("SALPLUG_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = _cli("list")
    assert result.exit_code == 0 and "rise" not in _rows(result.output) and "gradients" in _rows(result.output)
    assert "rise" not in salplug.get_plugin_manager().methods


def test_block_plugins_blocks_it(monkeypatch):
    monkeypatch.setenv("SALPLUG_BLOCK_PLUGINS", "salplug_example")
    result = _cli("list")
    assert result.exit_code == 0 and "top_k_mask" not in _rows(result.output)
    plugins = _cli("plugins")
    assert [ln for ln in plugins.output.splitlines() if ln.startswith("salplug_example ") and "blocked" in ln]
    with pytest.raises(salplug.UnknownComponentError, match="may not be installed"):
        salplug.explain(T.AnalyticModel((6, 6, 3)), T.sample_inputs(2, (6, 6, 3)), "rise",
                        host=T.make_host(autoload=True), target=0)
    assert "rise" in T.make_host(autoload=True, blocked=[]).methods


def test_discovery_imports_no_method_module_and_no_framework():
    code = textwrap.dedent("""
        import json, sys
        import salplug
        host = salplug.get_plugin_manager()
        print(json.dumps({"methods": host.methods.names(), "modules": sorted(sys.modules)}))
    """)
    env = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert "rise" in found["methods"]
    modules = set(found["modules"])
    assert "salplug_example.plugin" in modules
    assert not modules & {"salplug_example.rise", "salplug_example.input_x_gradient", "salplug_example.visualizers"}
    assert not {m.split(".")[0] for m in modules} & {"torch", "tensorflow", "keras", "jax"}


# -- explain() by name, on every backend that provides what the method requires --------------------

def _analytic(x, method, params):
    model = T.AnalyticModel(x.shape[1:], classes=3)
    return salplug.explain(model, x, method, target=[2, 0], host=T.make_host(autoload=True), **params)


def _callable(x, method, params):
    model = T.AnalyticModel(x.shape[1:], classes=3)
    return salplug.explain(model.call_model_function, x, method, target=[2, 0], backend="callable",
                           backend_options={"target_arg": "target", "num_classes": 3}, **params)


def _torch(x, method, params):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                                torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    images = torch.from_numpy(x).permute(0, 3, 1, 2)
    att = salplug.explain(model, images, method, target=[2, 0], **params)  # backend detected
    assert att.backend == "torch" and torch.is_tensor(att.values) and att.values.shape == images.shape
    return att


def _tf2(x, method, params):
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(x.shape[1:]), keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    att = salplug.explain(model, tf.constant(x), method, target=[2, 0], **params)  # backend detected
    assert att.backend == "tf2" and tuple(att.values.shape) == x.shape
    return att


def _tf1(x, method, params):
    tf = pytest.importorskip("tensorflow")
    from salplug.backends.tf1_model import TF1Model

    v1 = tf.compat.v1
    rng = np.random.default_rng(0)
    graph = tf.Graph()
    with graph.as_default():
        images = v1.placeholder(tf.float32, [None, *x.shape[1:]], name="x")
        kernel = tf.constant(rng.normal(0, 0.5, (3, 3, 3, 4)), tf.float32)
        dense = tf.constant(rng.normal(0, 0.5, (4, 3)), tf.float32)
        h = tf.nn.relu(tf.nn.conv2d(images, kernel, 1, "SAME"))
        logits = tf.matmul(tf.reduce_mean(h, axis=[1, 2]), dense, name="logits")
    bundle = TF1Model(graph, v1.Session(graph=graph), images, logits)
    att = salplug.explain(bundle, x, method, target=[2, 0], **params)  # backend detected
    assert att.backend == "tf1" and att.values.shape == x.shape
    return att


RUNNERS = {"analytic": _analytic, "callable": _callable, "torch": _torch, "tf2": _tf2, "tf1": _tf1}


@pytest.mark.parametrize("backend", sorted(RUNNERS))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_explain_by_name_on_each_backend(method, backend):
    x = T.sample_inputs(2, (8, 6, 3))
    att = RUNNERS[backend](x, method, PARAMS[method])
    assert att.method == method and att.canonical.shape == x.shape and np.isfinite(att.canonical).all()
    assert att.target == [2, 0]
    if method == "rise":
        again = RUNNERS[backend](x, method, {**PARAMS[method], "seed": 0})
        np.testing.assert_allclose(RUNNERS[backend](x, method, {**PARAMS[method], "seed": 0}).canonical,
                                   again.canonical)
    picture = att.visualize("top_k_mask", fraction=0.25)
    assert picture.shape == (8, 6) and picture.sum() == 12


def test_every_backend_that_provides_the_requirements_is_covered():
    host = T.make_host(autoload=True)
    for method, requires in METHODS.items():
        assert frozenset(host.methods.get(method).metadata["requires"]) == requires
        able = [b.name for b in host.backends if requires <= set(b.metadata.get("provides", ()))]
        assert {"analytic", "callable", "torch"} <= set(able)
        missing = sorted(set(able) - set(RUNNERS))
        assert not missing, f"{method} runs on {', '.join(missing)} too: add a model factory to RUNNERS"


# -- config files and the command line ----------------------------------------------------------------

MODEL_FILE = """
import numpy as np

def make_torch_model():
    import torch
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                               torch.nn.Flatten(), torch.nn.Linear(16, 5)).eval()

def make_call_model_function():
    from salplug.testing import AnalyticModel
    return AnalyticModel((16, 12, 3), classes=5).call_model_function
"""


@pytest.fixture
def project(tmp_path):
    from PIL import Image

    (tmp_path / "models.py").write_text(MODEL_FILE)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 12, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    return tmp_path


def _config(project, backend: str, visualizer: str = "top_k_mask") -> str:
    source = {"torch": "models.py:make_torch_model", "callable": "models.py:make_call_model_function"}[backend]
    options = '\noptions = { target_arg = "target", num_classes = 5 }' if backend == "callable" else ""
    text = textwrap.dedent(f"""
        [model]
        backend = "{backend}"
        source = "{source}"
        target = 3{options}

        [inputs]
        files = ["photo.png"]

        [[explanations]]
        method = "rise"
        params = {{ masks = 20, grid = 3 }}

        [[explanations]]
        method = "input_x_gradient"
        visualizers = ["{visualizer}", "grayscale"]

        [outputs]
        folder = "out"
        visualizers = ["{visualizer}"]
        formats = ["npz", "json", "png"]
    """)
    path = project / "salplug.toml"
    path.write_text(text)
    return str(path)


def _check_outputs(folder, methods=("rise", "input_x_gradient")):
    summary = json.loads((folder / "summary.json").read_text())
    (image,) = summary["images"]
    done = {e["method"]: e for e in image["explanations"]}
    assert set(done) == set(methods)
    for method in methods:
        values = np.load(folder / done[method]["files"]["npz"])["attribution"]
        assert values.shape == (16, 12, 3) and np.isfinite(values).all() and np.abs(values).sum() > 0
        assert (folder / done[method]["files"]["png"]["top_k_mask"]).is_file()
    return done


@pytest.mark.parametrize("backend", ["torch", "callable"])
def test_salplug_run_config_file(project, backend):
    if backend == "torch":
        pytest.importorskip("torch")
    result = _cli("run", _config(project, backend), "--quiet")
    assert result.exit_code == 0, result.output
    done = _check_outputs(project / "out")
    assert done["rise"]["target"] == 3 and done["rise"]["params"]["masks"] == 20
    assert done["rise"]["params"]["seed"] == 0  # the config's seed reaches the plugin's seed parameter
    assert "grayscale" in done["input_x_gradient"]["files"]["png"]


def test_config_file_through_the_python_api(project):
    pytest.importorskip("torch")
    from salplug.config import load_config
    from salplug.runner import run

    host = salplug.get_plugin_manager()
    config = load_config(_config(project, "torch"), overrides={"outputs.folder": str(project / "api-out")}, host=host)
    result = run(config, host=host, quiet=True)
    _check_outputs(result.folder)


def test_config_naming_a_blocked_plugin_method_is_a_clear_error(project, monkeypatch):
    monkeypatch.setenv("SALPLUG_BLOCK_PLUGINS", "salplug_example")
    result = _cli("run", _config(project, "torch"), "--quiet")
    assert result.exit_code == 2
    assert "unknown visualizer 'top_k_mask'" in result.output and "needs that plugin installed" in result.output
    result = _cli("run", _config(project, "torch", visualizer="heatmap"), "--quiet")
    assert result.exit_code == 2
    assert "unknown method 'rise'" in result.output and "needs that plugin installed" in result.output
    assert not (project / "out").exists()


def test_salplug_explain_command(project):
    pytest.importorskip("torch")
    out = project / "cli-out"
    result = _cli("explain", str(project / "photo.png"), "--model", str(project / "models.py") + ":make_torch_model",
                  "--method", "rise", "--method", "input_x_gradient", "-p", "rise.masks=20", "-p", "rise.grid=3",
                  "--visualizer", "top_k_mask", "--target", "1", "--seed", "7", "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    done = _check_outputs(out)
    assert done["rise"]["params"]["seed"] == 7 and done["input_x_gradient"]["target"] == 1
