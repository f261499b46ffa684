"""evaluate: what a metric plugin returns is checked, its check() isolated; score columns never
hide each other; a config's preprocessing is applied as `salplug run` applies it."""

from __future__ import annotations

import numpy as np
import pytest

import salplug
from salplug.errors import ModelOutputError, ParameterError, PluginError
from salplug.evaluate import evaluate
from salplug.hookspecs import hookimpl
from salplug.metrics.base import Curve, Metric, MetricResult
from salplug.testing import AnalyticModel, make_host

SHAPE = (8, 8, 3)


def _result(n, **changes):
    fields = {"scores": {"m": np.zeros(n)}, "higher_is_better": {"m": True}}
    fields.update(changes)
    return MetricResult(**fields)


BAD_RESULTS = {
    "not_a_result": (lambda n: "garbage", "returned str, not a salplug.metrics.base.MetricResult"),
    "wrong_length": (lambda n: _result(n, scores={"m": np.arange(n + 3.0)}),
                     "returned 5 value(s) (shape (5,)) for score 'm' of 2 image(s)"),
    "no_direction": (lambda n: _result(n, higher_is_better={}), "says nothing about score 'm' in higher_is_better"),
    "odd_direction": (lambda n: _result(n, higher_is_better={"m": "up"}), "higher_is_better['m'] = 'up'"),
    "not_numbers": (lambda n: _result(n, scores={"m": ["a"] * n}), "score 'm' as list, not numbers"),
    "infinite": (lambda n: _result(n, scores={"m": np.full(n, np.inf)}), "infinite values for score 'm'"),
    "bad_summary": (lambda n: _result(n, summary={"s": "x"}), "summary 's' = 'x', not a number"),
    "bad_curve": (lambda n: _result(n, curves={"c": Curve(np.arange(3.0), np.zeros((n + 1, 3)))}),
                  "curve 'c' with x of shape (3,) and y of shape (3, 3)"),
    "bad_skipped": (lambda n: _result(n, extras={"skipped": {"m": {7: "why"}}}), "extras['skipped']"),
}


def _metric_returning(make):
    class Bad(Metric):
        def evaluate(self, ctx, x, targets, attributions):
            return make(len(x))

    return Bad


class _BadMetrics:
    @hookimpl
    def register_metrics(register):
        for name, (make, _) in BAD_RESULTS.items():
            register(name, _metric_returning(make))


def _run(metrics, host, **kw):
    x = np.random.default_rng(0).uniform(0, 1, (2, *SHAPE)).astype(np.float32)
    return evaluate(AnalyticModel(SHAPE, classes=3), x, ["gradients"], metrics, host=host, include_random=False,
                    progress=False, **kw)


@pytest.mark.parametrize("name", list(BAD_RESULTS))
def test_what_a_metric_returns_is_checked(name):
    host = make_host({"bad_metrics": _BadMetrics})
    with pytest.raises(ModelOutputError, match=rf"Metric '{name}' \(from bad_metrics\) on method 'gradients'") as info:
        _run([name], host)
    assert BAD_RESULTS[name][1] in str(info.value)


def test_a_good_result_passes_and_keeps_numbers():
    class Good(Metric):
        def evaluate(self, ctx, x, targets, attributions):
            return MetricResult(scores={"m": [1, 2]}, higher_is_better={"m": np.bool_(False)}, summary={"s": 3},
                                curves={"c": Curve(np.arange(2.0), np.ones((len(x), 2)))},
                                extras={"skipped": {"m": {}}})

    class Plugin:
        @hookimpl
        def register_metrics(register):
            register("good", Good)

    r = _run(["good"], make_host({"good": Plugin}))
    assert r.scores("gradients", "m").tolist() == [1.0, 2.0] and "m ↓" in r.table()


def test_a_metric_check_that_raises_is_a_plugin_error():
    class CheckBoom(Metric):
        def check(self, ctx, x, targets, **params):
            raise KeyError("oops")

        def evaluate(self, ctx, x, targets, attributions):
            return _result(len(x))

    class Plugin:
        @hookimpl
        def register_metrics(register):
            register("check_boom", CheckBoom)

    with pytest.raises(PluginError, match=r"Metric 'check_boom' \(from boom\).*check\(\).*KeyError: 'oops'"):
        _run(["check_boom"], make_host({"boom": Plugin}))


def test_a_method_check_that_raises_is_a_plugin_error():
    class CheckBoom(salplug.Method):
        requires = frozenset({"input_gradients"})

        def check(self, ctx, x, targets):
            raise ZeroDivisionError("nope")

        def explain(self, ctx, x, targets):
            return x

    class Plugin:
        @hookimpl
        def register_methods(register):
            register("check_boom", CheckBoom)

    x = np.zeros((1, *SHAPE), np.float32)
    with pytest.raises(PluginError, match=r"Method 'check_boom' \(from boom\).*ZeroDivisionError: nope"):
        evaluate(AnalyticModel(SHAPE, classes=3), x, ["check_boom"], ["deletion"], host=make_host({"boom": Plugin}),
                 progress=False)


# --------------------------------------------------------------------------------------------- #
# score columns
# --------------------------------------------------------------------------------------------- #
def test_a_metric_named_like_another_metric_is_refused_before_any_work():
    with pytest.raises(ParameterError, match=r"'sic' \(insertion\) takes the name of the metric 'pic'"):
        _run([{"metric": "pic", "params": {"min_pred_value": 0.0}},
              {"metric": "insertion", "name": "sic", "params": {"steps": 4}}], make_host())


def test_two_plugin_metrics_giving_one_score_name_are_refused():
    def make(value):
        class Same(Metric):
            def evaluate(self, ctx, x, targets, attributions):
                return MetricResult(scores={"auc": np.full(len(x), value)}, higher_is_better={"auc": True})

        return Same

    class Plugin:
        @hookimpl
        def register_metrics(register):
            register("first", make(1.0))
            register("second", make(2.0))

    host = make_host({"same": Plugin})
    with pytest.raises(ParameterError, match="'first' and 'second' both give a score called 'auc'.*another 'name'"):
        _run(["first", "second"], host)
    r = _run(["first", {"metric": "second", "name": "other"}], host)
    assert r.score_names() == ["auc", "other"]


# --------------------------------------------------------------------------------------------- #
# preprocessing that changes the channels (a grayscale model)
# --------------------------------------------------------------------------------------------- #
def test_evaluate_with_a_preprocess_that_changes_the_channels():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(2 * 64, 3)).eval()
    photos = np.random.default_rng(0).integers(0, 256, (2, *SHAPE), dtype=np.uint8)
    r = evaluate(model, photos, ["gradients"], [{"metric": "deletion", "params": {"steps": 4}}], backend="torch",
                 preprocess=lambda b: b.mean(axis=3, keepdims=True), progress=False, include_random=False)
    assert np.isfinite(r.scores("gradients", "deletion")).all()
    with pytest.raises(salplug.InputError, match=r"preprocess\(images\) gives the model inputs of shape"):
        evaluate(model, photos, ["gradients"], ["deletion"], backend="torch", preprocess=lambda b: b, progress=False)


GRAY = '''
import numpy as np
import torch
from skimage.transform import resize
from torch import nn


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 12 * 12, 4)).eval()


def build_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12 * 12, 4)).eval()


def to_gray(pixels):
    g = pixels.astype("float32").mean(axis=2, keepdims=True) / 255.0
    return resize(g, (12, 12), preserve_range=True).astype("float32")
'''


@pytest.mark.parametrize("source", ["gray.py:build", "gray.py:build_mlp"])
def test_evaluate_config_applies_a_custom_preprocessing_like_run(tmp_path, source):
    pytest.importorskip("torch")
    from salplug.config import validate_config
    from salplug.evaluate import evaluate_config
    from salplug.runner import run

    (tmp_path / "gray.py").write_text(GRAY)
    data = {"model": {"source": source, "preprocessing": "gray.py:to_gray"}, "inputs": {"samples": ["chelsea", "coffee"]},
            "explanations": [{"method": "gradients"}], "outputs": {"folder": str(tmp_path / "out")}}
    host = salplug.get_plugin_manager(autoload=False)
    cfg = validate_config(data, base_dir=tmp_path)
    run(cfg, host=host, quiet=True)
    r = evaluate_config(cfg, host=host, quiet=True, metrics=[{"metric": "deletion", "params": {"steps": 4}}])
    assert r.attributions["gradients"].shape == (2, 12, 12, 1)
    assert np.isfinite(r.scores("gradients", "deletion")).all()


def test_loaded_model_input_matches_run_preprocessing():
    from salplug.runner import LoadedModel

    loaded = LoadedModel(model=None, backend="torch", size=(6, 6), scale=255.0, mean=(1.0, 2.0, 3.0), std=2.0)
    pixels = np.random.default_rng(1).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    x, shown = loaded.preprocess(pixels)
    np.testing.assert_allclose(loaded.model_input(shown[None] / 255.0)[0], x, rtol=0, atol=0.26)  # shown is rounded to uint8
    np.testing.assert_allclose(loaded.model_input(shown[None].astype(np.float32) / 255)[0],
                               (shown / 255.0 * 255.0 - np.array([1.0, 2.0, 3.0])) / 2.0, rtol=1e-5)
