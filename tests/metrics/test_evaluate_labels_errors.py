"""evaluate(): score columns under metric aliases, and errors that name the method or metric."""

from __future__ import annotations

import numpy as np
import pytest

import salplug
from salplug.errors import ModelOutputError, ParameterError
from salplug.evaluate import evaluate
from salplug.testing import AnalyticModel, make_host

SHAPE = (8, 7, 3)
PIC = {"min_pred_value": 0.0, "num_data_points": 10}


def _run(metrics, host=None, **kw):
    x = np.random.default_rng(0).uniform(0, 1, (2, *SHAPE)).astype(np.float32)
    return evaluate(AnalyticModel(SHAPE, classes=3, seed=0), x, kw.pop("methods", ["gradients"]), metrics,
                    backend="analytic", host=host or make_host(), progress=False, include_random=False, **kw)


@pytest.mark.parametrize("typed", ["pic", "sic", "aic", "SIC"])
def test_an_alias_gives_the_registered_metrics_columns(typed):
    r = _run([{"metric": typed, "params": PIC}])
    assert r.score_names() == ["sic", "aic"]
    assert list(r.metrics) == ["pic"]
    assert r.summary_names() == ["sic_median_curve_auc", "aic_median_curve_auc"]


def test_an_explicit_name_still_labels_the_columns():
    r = _run([{"metric": "sic", "name": "mine", "params": PIC}])
    assert r.score_names() == ["mine.sic", "mine.aic"]


def test_a_metric_and_its_alias_together_need_names():
    with pytest.raises(ParameterError, match="Two metrics are called 'pic'.*distinct 'name'"):
        _run([{"metric": "pic", "params": PIC}, {"metric": "sic", "params": PIC}])
    r = _run([{"metric": "pic", "params": PIC}, {"metric": "sic", "name": "sic2", "params": PIC}])
    assert r.score_names() == ["sic", "aic", "sic2.sic", "sic2.aic"]


def test_the_sanity_alias_keeps_the_score_names(cnn):
    x = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
    r = evaluate(cnn, x, ["gradients"], [{"metric": "sanity", "params": {"max_steps": 1}}], backend="torch",
                 progress=False, include_random=False)
    assert r.score_names() == ["randomization_corr", "randomization_corr_last"]


class _NanMethod:
    def explain(self, ctx, x, targets):
        return np.full(x.shape, np.nan, np.float32)


class _BadParamsMethod:
    def explain(self, ctx, x, targets):
        raise ParameterError("the method's own complaint")


class _BadMetric:
    requires = frozenset({"scores"})

    def evaluate(self, ctx, x, targets, attributions):
        raise ParameterError("something about my params")


class _Plug:
    @salplug.hookimpl
    def register_methods(self, register):
        register("nan_method", _NanMethod)
        register("bad_params", _BadParamsMethod)

    @salplug.hookimpl
    def register_metrics(self, register):
        register("bad_metric", _BadMetric)


def test_salplug_errors_name_the_method_or_metric_and_keep_their_type():
    host = make_host({"plug": _Plug()})
    with pytest.raises(ParameterError, match="^metric 'bad_metric' on method 'gradients': something about my params"):
        _run(["bad_metric"], host)
    with pytest.raises(ParameterError, match="^method 'mine' \\(bad_params\\): the method's own complaint"):
        _run(["deletion"], host, methods=[{"method": "bad_params", "name": "mine"}])
    with pytest.raises(ModelOutputError, match="^method 'nan_method': .*NaN"):
        _run(["deletion"], host, methods=["nan_method"])
