"""salplug.evaluate: the table, files, seeds, checks; the PIC plugin against pic.compute_pic_metric;
the random-map baseline."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import salplug
from salplug.errors import CapabilityError, ParameterError, UnknownComponentError
from salplug.evaluate import EvaluationResult, evaluate
from salplug.hookspecs import hookimpl
from salplug.metrics import pic
from salplug.metrics.base import MetricContext, sample_rng, saliency_2d, softmax
from salplug.metrics.pic_metric import PIC
from salplug.testing import AnalyticAdapter, AnalyticModel, check_method, make_host
from salplug.types import Targets

SHAPE = (8, 7, 3)


def images(n=3, seed=0, shape=SHAPE):
    return np.random.default_rng(seed).uniform(0, 1, (n, *shape)).astype(np.float32)


@pytest.fixture
def ahost():
    return make_host()


class Recorder(AnalyticAdapter):
    instances: list = []

    def __init__(self, model=None, **kw):
        super().__init__(model, **kw)
        Recorder.instances.append(self)


class _RecorderPlugin:
    @hookimpl
    def register_backends(self, register):
        register("recorder", Recorder, provides=AnalyticAdapter.provides)


def quick(model, x, host, **kw):
    kw.setdefault("methods", ["gradients", "integrated_gradients"])
    kw.setdefault("metrics", {"insertion": {"steps": 6, "score": "logit"}, "deletion": {"steps": 6}})
    return evaluate(model, x, backend=kw.pop("backend", "analytic"), host=host, progress=kw.pop("progress", False),
                    **kw)


def test_table_files_and_random_baseline(ahost, tmp_path):
    model = AnalyticModel(SHAPE, classes=3, seed=0)
    r = quick(model, images(), ahost, out_dir=tmp_path, names=["a", "b", "c"], seed=4)
    assert isinstance(r, EvaluationResult)
    assert list(r.methods) == ["gradients", "integrated_gradients", "random"]
    assert r.score_names() == ["insertion", "deletion"]
    table = r.table()
    assert table.splitlines()[0].split() == ["method", "insertion", "↑", "deletion", "↓"]
    assert "±" in table and table.splitlines()[-1].startswith("random")
    for name in ("evaluation.csv", "evaluation.json", "curve_insertion.png", "curve_deletion.png", "index.html"):
        assert (tmp_path / name).stat().st_size > 0, name
    page = (tmp_path / "index.html").read_text()
    assert 'href="evaluation.csv"' in page and 'src="curve_insertion.png"' in page and "random" in page
    data = json.loads((tmp_path / "evaluation.json").read_text())
    assert data["seed"] == 4 and data["images"] == ["a", "b", "c"]
    row = next(x for x in data["rows"] if x["method"] == "gradients" and x["score"] == "deletion")
    assert row["n"] == 3 and not row["higher_is_better"]
    np.testing.assert_allclose(row["mean"], r.scores("gradients", "deletion").mean())
    np.testing.assert_allclose(row["std"], r.scores("gradients", "deletion").std(ddof=1))
    csv = (tmp_path / "evaluation.csv").read_text().splitlines()
    assert csv[0].startswith("method,metric,score,mean,std,sem,n") and len(csv) == 1 + 3 * 2
    assert set(data["curves"]["random"]) == {"insertion", "deletion"}
    assert r.methods["random"]["params"] == {"seed": 4, "sigma": 0.0}


def test_seeds_reproduce(ahost):
    model = AnalyticModel(SHAPE, classes=3, seed=0)
    x = images()
    a, b = quick(model, x, ahost, seed=1), quick(model, x, ahost, seed=1)
    c = quick(model, x, ahost, seed=2)
    np.testing.assert_array_equal(a.scores("random", "deletion"), b.scores("random", "deletion"))
    np.testing.assert_array_equal(a.attributions["random"], b.attributions["random"])
    assert not np.array_equal(a.attributions["random"], c.attributions["random"])
    no_random = quick(model, x, ahost, include_random=False)
    assert "random" not in no_random.methods


def test_labels_params_and_given_maps(ahost):
    model = AnalyticModel(SHAPE, classes=3, seed=0)
    x = images()
    r = quick(model, x, ahost, methods={"integrated_gradients": {"steps": 4}},
              metrics=[{"metric": "insertion", "params": {"steps": 4, "score": "logit"}},
                       {"metric": "insertion", "name": "ins_black", "params": {"steps": 4, "baseline": "black",
                                                                                "score": "logit"}}],
              maps={"mine": np.ones(x.shape[:3])}, include_random=False)
    assert r.score_names() == ["insertion", "ins_black"]
    assert r.methods["integrated_gradients"]["params"]["steps"] == 4
    assert r.methods["mine"]["method"] == "(given map)"
    with pytest.raises(ParameterError, match="maps\\['bad'\\]"):
        quick(model, x, ahost, maps={"bad": np.ones((3, 2, 2))})
    with pytest.raises(ParameterError, match="distinct"):
        quick(model, x, ahost, methods=["gradients", "gradients"])


@pytest.mark.parametrize("kwargs, error", [
    ({"metrics": ["insertoin"]}, UnknownComponentError),
    ({"methods": ["integrated_gradients"], "metrics": {"insertion": {"steps": -1}}}, ParameterError),
    ({"methods": {"integrated_gradients": {"steps": 0}}}, ParameterError),
    ({"metrics": {"deletion": {"unknown": 1}}}, ParameterError),
    ({"seed": -1}, ParameterError),
    ({"preprocess": "normalise"}, ParameterError),
    ({"metrics": {"pic": {"thresholds": ["a", "b"]}}}, ParameterError),
    ({"metrics": {"pic": {"thresholds": [[0.1], [0.2, 0.3]]}}}, ParameterError),
])
def test_errors_before_any_model_call(kwargs, error):
    host = make_host({"recorder": _RecorderPlugin()})
    Recorder.instances.clear()
    model = AnalyticModel(SHAPE, classes=3, seed=0)
    with pytest.raises(error) as info:
        quick(model, images(), host, backend="recorder", **kwargs)
    assert all(a.total_calls == 0 for a in Recorder.instances)
    if error is UnknownComponentError:
        assert "insertion" in str(info.value) and "deletion" in str(info.value)


class _NeedsWeight:
    """A metric with a required parameter; ``requires`` comes from the test."""

    requires = frozenset()

    def evaluate(self, ctx, x, targets, attributions, *, weight, steps=3):
        raise AssertionError("must not run")


class _NeedsWeightPlugin:
    def __init__(self, requires):
        self.requires = requires

    @hookimpl
    def register_metrics(self, register):
        register("needs_weight", _NeedsWeight, requires=self.requires)


@pytest.mark.parametrize("requires, metrics, error, match", [
    ((), ["needs_weight"], ParameterError, r"Metric 'needs_weight' needs parameter\(s\): weight"),
    ((), {"needs_weight": {"weight": 1, "stepz": 2}}, ParameterError, "Did you mean 'steps'"),
    (("no_such_capability",), {"needs_weight": {"weight": 1}}, CapabilityError,
     r"Metric 'needs_weight' needs no_such_capability.*Use another backend or metric"),
])
def test_metric_parameters_and_capabilities_are_checked_like_methods(requires, metrics, error, match):
    host = make_host({"recorder": _RecorderPlugin(), "needs": _NeedsWeightPlugin(requires)})
    Recorder.instances.clear()
    with pytest.raises(error, match=match):
        quick(AnalyticModel(SHAPE, classes=3, seed=0), images(), host, backend="recorder", metrics=metrics)
    assert all(a.total_calls == 0 for a in Recorder.instances)


def test_uint8_images_preprocess_and_progress(ahost, capsys):
    model = AnalyticModel(SHAPE, classes=3, seed=0)
    x = images()
    u8 = (x * 255 + 0.5).astype(np.uint8)
    seen = []

    def prep(batch):
        seen.append((float(batch.min()), float(batch.max())))
        return batch * 2.0 - 1.0

    r = quick(model, u8, ahost, preprocess=prep, progress=True)
    assert all(0.0 <= lo and hi <= 1.0 for lo, hi in seen)
    g = salplug.explain(model, (u8 / 255.0).astype(np.float32) * 2 - 1, "gradients", host=ahost, backend="analytic")
    np.testing.assert_allclose(r.attributions["gradients"], g.canonical, rtol=1e-5)
    assert "evaluate" in capsys.readouterr().err


def test_import_stays_light():
    code = ("import sys, salplug, salplug.evaluate, salplug.metrics.builtin\n"
            "h = salplug.get_plugin_manager(autoload=False); h.metrics.names()\n"
            "print([m for m in ('torch', 'tensorflow', 'matplotlib', 'scipy.stats', 'scipy.interpolate') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_registered_metrics(ahost):
    assert ahost.metrics.names() == ["deletion", "insertion", "model_randomization", "pic"]
    assert ahost.metrics.get("sic").name == "pic"
    assert all(c.is_lazy for c in ahost.metrics)


# ---------------------------------------------------------------------------------------------
# the random-map baseline
# ---------------------------------------------------------------------------------------------

def test_random_baseline_follows_the_method_contract():
    report = check_method("random", host=make_host(), params={"sigma": 0.0},
                          bad_params=[{"seed": -1}, {"sigma": -1.0}])
    assert report["calls"] == {}  # never calls the model


def test_random_baseline_ignores_the_model(ahost):
    x = images(2)
    a = salplug.explain(AnalyticModel(SHAPE, classes=3, seed=0), x, "random", target=0, host=ahost).canonical
    b = salplug.explain(AnalyticModel(SHAPE, classes=3, seed=9), x, "random", target=1, host=ahost).canonical
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, 8, 7) and 0 <= a.min() and a.max() < 1
    smooth = salplug.explain(AnalyticModel(SHAPE, classes=3), x, "random", target=0, host=ahost, sigma=2.0).canonical
    assert smooth.std() < a.std()


# ---------------------------------------------------------------------------------------------
# PIC through the backend equals pic.compute_pic_metric
# ---------------------------------------------------------------------------------------------

def _pic_case(n=3, size=24, seed=0):
    """Blocky images and a 2-class analytic model; the target is the class the original favours
    more than its fully blurred version (so PIC can score it)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 1, (n, size // 4, size // 4, 3))
    x = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)
    x = np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1)
    x = ((x * 255 + 0.5).astype(np.uint8) / 255.0).astype(np.float32)
    model = AnalyticModel((size, size, 3), classes=2, seed=seed, relu=False)
    model.w[1] = 0.0
    model.q[1] = 0.0
    return model, x


def test_pic_plugin_equals_compute_pic_metric():
    host = make_host()
    model, x = _pic_case()
    adapter = AnalyticAdapter(model)
    ctx = MetricContext(adapter, host, 5, seed=11)
    fraction, thresholds = 0.05, (0.02, 0.1, 0.3, 0.6)
    saliency = np.random.default_rng(1).normal(size=x.shape)
    masks = [pic.generate_random_mask(24, 24, fraction, seed=sample_rng(11, x[i], "pic-mask")) for i in range(len(x))]
    u8 = (x * 255 + 0.5).astype(np.uint8)
    # the target: whichever class loses more to blurring, per image
    p_orig = softmax(model.outputs(x))
    blurred = np.stack([pic.create_blurred_image(u8[i], masks[i]) for i in range(len(x))]) / 255.0
    p_blur = softmax(model.outputs(blurred))
    target = np.where(p_orig[:, 0] - p_blur[:, 0] > 0, 0, 1)
    targets = Targets(target)
    result = PIC().evaluate(ctx, x, targets, saliency, thresholds=thresholds, fraction=fraction, min_pred_value=0.0,
                            num_data_points=200)
    assert adapter.calls["outputs"] == int(np.ceil(len(x) * (len(thresholds) + 2) / 5))
    sal2d = saliency_2d(saliency, x, "abs")
    scored = {"sic": 0, "aic": 0}
    for kind in ("sic", "aic"):
        for i in range(len(x)):
            if kind == "sic":
                def pred_func(batch, i=i):
                    return softmax(model.outputs(batch / 255.0))[:, target[i]]
            else:
                def pred_func(batch, i=i):
                    return (model.outputs(batch / 255.0).argmax(1) == target[i]).astype(float)
            try:
                want = pic.compute_pic_metric(u8[i], sal2d[i], masks[i], pred_func, list(thresholds),
                                              min_pred_value=0.0, num_data_points=200)
            except pic.ComputePicMetricError:
                assert np.isnan(result.scores[kind][i]) and i in result.extras["skipped"][kind]
                continue
            scored[kind] += 1
            np.testing.assert_allclose(result.scores[kind][i], want.auc, rtol=1e-6)
            np.testing.assert_allclose(result.curves[kind].y[i], want.curve_y, rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(result.curves[kind].x, want.curve_x)
            np.testing.assert_allclose(result.extras["results"][kind][i].predictions, want.predictions, rtol=1e-5)
    assert scored["sic"] == len(x), scored  # the target is chosen so that every image's SIC is scored
    assert "sic_median_curve_auc" in result.summary


def test_pic_curve_from_collected_values_equals_compute_pic_metric():
    """pic.pic_curve on the entropies and predictions a batching caller collects gives
    compute_pic_metric's curve, and raises the same error for an image it cannot score."""
    model, x = _pic_case(n=1)
    u8 = (x[0] * 255 + 0.5).astype(np.uint8)
    saliency = np.random.default_rng(2).normal(size=u8.shape[:2])
    mask = pic.generate_random_mask(24, 24, 0.05, seed=3)
    thresholds = [0.02, 0.1, 0.3, 0.6]
    blurred = pic.create_blurred_image(u8, mask)
    target = int(np.argmax(softmax(model.outputs(x))[0] - softmax(model.outputs(blurred[None] / 255.0))[0]))

    def pred_func(batch):
        return softmax(model.outputs(batch / 255.0))[:, target]

    images = [u8, blurred, *(pic.reveal(u8, saliency, mask, t) for t in thresholds)]
    entropies = [pic.estimate_image_entropy(image) for image in images]
    predictions = [pred_func(image[None])[0] for image in images]
    for monotonous in (True, False):
        want = pic.compute_pic_metric(u8, saliency, mask, pred_func, thresholds, min_pred_value=0.0,
                                      keep_monotonous=monotonous, num_data_points=50)
        curve_x, curve_y, area = pic.pic_curve(entropies, predictions, min_pred_value=0.0,
                                               keep_monotonous=monotonous, num_data_points=50)
        np.testing.assert_array_equal(curve_x, want.curve_x)
        np.testing.assert_array_equal(curve_y, want.curve_y)
        assert area == want.auc
        assert [p for p in want.predictions] == [*predictions[1:], predictions[0]]
    with pytest.raises(pic.ComputePicMetricError, match="min_pred_value"):
        pic.pic_curve(entropies, predictions, min_pred_value=1.5)
    with pytest.raises(pic.ComputePicMetricError, match="information"):
        pic.pic_curve([entropies[1], entropies[1], *entropies[2:]], predictions, min_pred_value=0.0)
    with pytest.raises(pic.ComputePicMetricError, match="fully blurred"):
        pic.pic_curve(entropies, [predictions[0], predictions[0], *predictions[2:]], min_pred_value=0.0)


def test_pic_in_evaluate_and_its_checks(tmp_path):
    host = make_host()
    model, x = _pic_case(n=2)
    r = evaluate(model, x, ["gradients"], {"pic": {"thresholds": [0.05, 0.3], "fraction": 0.05,
                                                    "min_pred_value": 0.0, "num_data_points": 50}},
                 backend="analytic", host=host, target=0, progress=False, out_dir=tmp_path)
    assert {"sic", "aic"} <= set(r.score_names())
    assert "sic_median_curve_auc" in r.summary_names()
    assert (tmp_path / "curve_sic.png").exists()
    for bad in ({"thresholds": [0.5, 0.1]}, {"thresholds": [0.0, 0.5]}, {"fraction": 2.0}, {"aggregate": "max"}):
        with pytest.raises(ParameterError):
            evaluate(model, x, ["gradients"], {"pic": bad}, backend="analytic", host=host, target=0, progress=False)
    with pytest.raises(ParameterError, match="\\[0, 1\\]"):
        evaluate(model, x * 4 - 2, ["gradients"], ["pic"], backend="analytic", host=host, target=0, progress=False)


# ---------------------------------------------------------------------------------------------
# a third-party metric: the example of docs/evaluation.md, registered as a plugin
# ---------------------------------------------------------------------------------------------

def test_the_documented_metric_plugin_runs():
    import re
    import types
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "evaluation.md").read_text()
    section = doc[doc.index("## Writing a metric"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    plugin = types.ModuleType("keep_top_plugin")
    exec(compile(code, "docs/evaluation.md", "exec"), plugin.__dict__)
    host = make_host({"keep_top_plugin": plugin})
    assert "keep_top" in host.metrics
    model = AnalyticModel(SHAPE, classes=3, seed=0)
    r = evaluate(model, images(), ["gradients"], {"keep_top": {"fraction": 0.25}}, backend="analytic", host=host,
                 progress=False)
    assert r.score_names() == ["keep_top"] and np.isfinite(r.scores("gradients", "keep_top")).all()
    with pytest.raises(ParameterError, match="fraction"):
        evaluate(model, images(), ["gradients"], {"keep_top": {"fraction": 2}}, backend="analytic", host=host,
                 progress=False)


# ---------------------------------------------------------------------------------------------
# from a config (what `salplug evaluate CONFIG` runs)
# ---------------------------------------------------------------------------------------------

def test_evaluate_config(tmp_path):
    pytest.importorskip("torch")
    config = pytest.importorskip("salplug.config")
    from salplug.evaluate import evaluate_config

    (tmp_path / "tiny.py").write_text(
        "import sys\nsys.path.insert(0, %r)\nfrom conftest import make_cnn\n\ndef build():\n    return make_cnn(0)\n"
        % str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    data = {"model": {"backend": "torch", "source": "tiny.py:build", "preprocessing": {"size": 16}},
            "inputs": {"samples": ["chelsea", "coffee"]},
            "explanations": [{"method": "gradients"}, {"method": "grad_cam", "params": {"layer": "relu2"}}],
            "outputs": {"folder": str(tmp_path / "out")}, "seed": 3}
    cfg = config.validate_config(data, base_dir=tmp_path)
    host = salplug.get_plugin_manager(autoload=False)
    r = evaluate_config(cfg, host=host, quiet=True, metrics=[{"metric": "deletion", "params": {"steps": 4}}])
    assert list(r.methods) == ["gradients", "grad_cam", "random"]
    assert r.names == ["chelsea", "coffee"] and r.seed == 3
    assert (tmp_path / "out" / "evaluation" / "index.html").exists()
    with pytest.raises(UnknownComponentError):
        evaluate_config(cfg, host=host, quiet=True, metrics=["delition"])


def test_cli_evaluate(tmp_path):
    pytest.importorskip("torch")
    from click.testing import CliRunner

    from salplug.cli import main

    (tmp_path / "tiny.py").write_text(
        "import sys\nsys.path.insert(0, %r)\nfrom conftest import make_cnn\n\ndef build():\n    return make_cnn(0)\n"
        % str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    toml = """
seed = 1
[model]
backend = "torch"
source = "tiny.py:build"
preprocessing = {size = 16}
[inputs]
samples = ["chelsea", "coffee"]
[[explanations]]
method = "gradients"
[outputs]
folder = "out"
[evaluation]
metrics = ["deletion", {metric = "insertion", name = "ins8", params = {steps = 8}}]
"""
    (tmp_path / "eval.toml").write_text(toml)
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "eval.toml"), "-q"])
    assert result.exit_code == 0, result.output
    assert "deletion" in result.output and "ins8" in result.output and "random" in result.output
    assert (tmp_path / "out" / "evaluation" / "evaluation.csv").exists()
    bad = CliRunner().invoke(main, ["evaluate", str(tmp_path / "eval.toml"), "-q", "--metric", "pics"])
    assert bad.exit_code == 2 and "pic" in bad.output
    (tmp_path / "bad.toml").write_text(toml.replace("[evaluation]", "[evaluation]\nmetricz = []"))
    bad = CliRunner().invoke(main, ["evaluate", str(tmp_path / "bad.toml"), "-q"])
    assert bad.exit_code == 2 and "evaluation" in bad.output


# ---------------------------------------------------------------------------------------------
# out_dir: written like `salplug run` writes; a model that raises
# ---------------------------------------------------------------------------------------------

def test_out_dir_is_checked_first_and_never_a_foreign_folder(cnn, tmp_path):
    from salplug.outputs import MARKER

    calls = []
    cnn.register_forward_hook(lambda *_: calls.append(1))
    x = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
    kw = dict(methods=["gradients"], metrics={"deletion": {"steps": 2}}, backend="torch", target=0, progress=False)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "index.html").write_text("my page")
    with pytest.raises(ParameterError, match="out_dir: .*not written by salplug"):
        evaluate(cnn, x, out_dir=mine, **kw)
    with pytest.raises(ParameterError, match="out_dir: .*is a file, not a folder"):
        evaluate(cnn, x, out_dir=mine / "index.html" / "ev", **kw)
    assert calls == [] and (mine / "index.html").read_text() == "my page"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no staging folder left
    r = evaluate(cnn, x, out_dir=tmp_path / "ev", **kw)
    assert (tmp_path / "ev" / MARKER).is_file() and r.files["html"] == str(tmp_path / "ev" / "index.html")
    evaluate(cnn, x, out_dir=tmp_path / "ev", **kw)  # salplug's own folder is replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ev", "mine"]
    with pytest.raises(ParameterError, match="overwrite is false"):
        r.save(tmp_path / "ev", overwrite=False)


def test_a_model_that_raises_names_the_method(cnn):
    from salplug.errors import ModelOutputError

    class Broken(type(cnn)):
        def forward(self, x):
            if x.requires_grad:
                raise ValueError("no gradients here")
            return super().forward(x)

    cnn.__class__ = Broken
    x = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
    with pytest.raises(ModelOutputError, match="method 'gradients'.*ValueError: no gradients here") as info:
        evaluate(cnn, x, ["gradients"], {"deletion": {"steps": 2}}, backend="torch", target=0, progress=False)
    assert isinstance(info.value.__cause__, ValueError)  # the model's own traceback stays reachable


def test_methods_that_compose_other_methods_evaluate_and_recompute():
    # XRAI runs IG and guided Grad-CAM runs Grad-CAM through the context: the metric context
    # must still offer ctx.method(); the sanity check recomputes them too.
    torch = pytest.importorskip("torch")
    from conftest import make_cnn

    model = make_cnn(seed=3)
    x = torch.rand(2, 3, 16, 16)
    methods = [{"method": "xrai", "params": {"steps": 2}}, {"method": "guided_grad_cam", "params": {"layer": "conv1"}}]
    result = evaluate(model, x, methods, ["deletion", {"metric": "sanity", "params": {"max_steps": 1}}],
                      include_random=False, seed=0)
    assert set(result.methods) == {"xrai", "guided_grad_cam"}
    for label in result.methods:
        assert np.isfinite(result.scores(label, "deletion")).all()
        assert np.isfinite(result.scores(label, "randomization_corr")).all()


def test_evaluate_quiet_prints_no_notes(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import importlib

    from salplug.cli import main

    ev = importlib.import_module("salplug.evaluate")  # the module (salplug.evaluate is also the function)

    class Result:
        notes, files = ["outputs used as probabilities"], {}

        def table(self):
            return "the table"

    monkeypatch.setattr(ev, "evaluate_config", lambda *a, **k: Result())
    (tmp_path / "c.toml").write_text('[model]\nsource = "efficientnet_lite0"\n[inputs]\nsamples = ["chelsea"]\n'
                                      '[[explanations]]\nmethod = "gradients"\n')
    loud = CliRunner().invoke(main, ["evaluate", str(tmp_path / "c.toml")])
    quiet = CliRunner().invoke(main, ["evaluate", str(tmp_path / "c.toml"), "-q"])
    assert loud.exit_code == quiet.exit_code == 0, loud.output + quiet.output
    assert "note: outputs used as probabilities" in loud.output
    assert "note:" not in quiet.output and "the table" in quiet.output


def test_a_target_past_the_models_outputs_is_a_target_error_before_the_metrics_run():
    # a torch model without a final Linear layer: its class count shows only in its outputs
    torch = pytest.importorskip("torch")

    class TwoScores(torch.nn.Module):
        def forward(self, x):
            m = x.mean((1, 2, 3))
            return torch.stack([4 * m - 2, torch.zeros_like(m)], 1)

    x = np.random.default_rng(0).uniform(0, 1, (2, 5, 6, 3)).astype(np.float32)
    with pytest.raises(salplug.errors.TargetError, match="target 5 is out of range"):
        evaluate(TwoScores(), x, [], ["deletion"], maps={"m": np.ones((2, 5, 6))}, target=5, progress=False)


def test_seeds_past_32_bits_are_their_own():
    image = np.zeros((2, 2, 3))
    assert not np.array_equal(sample_rng(0, image).random(8), sample_rng(2**32, image).random(8))


def test_a_boolean_baseline_is_refused(ahost):
    with pytest.raises(ParameterError, match="baseline"):
        quick(AnalyticModel(SHAPE, classes=3, seed=0), images(), ahost, metrics={"deletion": {"baseline": True}})
