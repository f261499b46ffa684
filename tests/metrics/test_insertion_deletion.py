"""Insertion and Deletion (RISE): exact curves on an analytic model, ordering, batching, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import salplug
from salplug.errors import ParameterError
from salplug.evaluate import evaluate
from salplug.hookspecs import hookimpl
from salplug.metrics.base import MetricContext, rank_pixels
from salplug.metrics.insertion_deletion import Deletion, Insertion, make_baseline, pixel_counts
from salplug.testing import AnalyticAdapter, AnalyticModel, make_host
from salplug.types import Targets

SHAPE = (6, 5, 3)


class CountingAdapter(AnalyticAdapter):
    """The analytic adapter, remembering every instance (evaluate() builds its own)."""

    instances: list[CountingAdapter] = []

    def __init__(self, model=None, **kw):
        super().__init__(model, **kw)
        CountingAdapter.instances.append(self)


class _CountingPlugin:
    @hookimpl
    def register_backends(self, register):
        register("counting", CountingAdapter, provides=AnalyticAdapter.provides)


@pytest.fixture
def counting_host():
    CountingAdapter.instances.clear()
    return make_host({"counting": _CountingPlugin()})


def additive_model(seed=0, classes=2, zero_rest=True):
    """An analytic model whose class 0 is a sum of per-pixel terms; the other classes are 0.

    With the other logits constant, the softmax of class 0 is sigmoid(f_0), monotone in f_0.
    """
    m = AnalyticModel(SHAPE, classes=classes, seed=seed)
    if zero_rest:
        m.w[1:] = 0.0
        m.q[1:] = 0.0
    return m


def pixel_contributions(model, x, base, k=0):
    """c[i, h, w] = f_k(base with pixel (h, w) of x) - f_k(base): exact, the model is additive over pixels."""
    n, h, w, _ = x.shape
    out = np.empty((n, h, w))
    f_base = model.outputs(base)[:, k]
    for r in range(h):
        for c in range(w):
            z = base.copy()
            z[:, r, c] = x[:, r, c]
            out[:, r, c] = model.outputs(z)[:, k] - f_base
    return out


def ctx_for(adapter, host, batch_size=7, seed=0):
    return MetricContext(adapter, host, batch_size, seed=seed)


def inputs(n=3, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, *SHAPE)).astype(np.float32)


@pytest.mark.parametrize("score", ["logit", "softmax"])
def test_exact_curves_on_an_additive_model(score):
    """Inserting/deleting one pixel per step in the oracle order gives the cumulative sums exactly."""
    host = make_host()
    model = additive_model()
    adapter = AnalyticAdapter(model)
    x = inputs()
    base = np.zeros_like(x)
    c = pixel_contributions(model, x.astype(np.float64), base.astype(np.float64))
    targets = Targets(np.zeros(len(x), np.int64))
    steps = SHAPE[0] * SHAPE[1]
    ctx = ctx_for(adapter, host)
    ins = Insertion().evaluate(ctx, x, targets, c, steps=steps, baseline="black", score=score, reduce="none")
    dele = Deletion().evaluate(ctx, x, targets, c, steps=steps, baseline="black", score=score, reduce="none")
    top = -np.sort(-c.reshape(len(x), -1), axis=1)
    cum = np.concatenate([np.zeros((len(x), 1)), np.cumsum(top, axis=1)], axis=1)
    f_base = model.outputs(base.astype(np.float64))[:, 0:1]
    f_x = model.outputs(x.astype(np.float64))[:, 0:1]
    link = (lambda v: v) if score == "logit" else (lambda v: 1.0 / (1.0 + np.exp(-v)))
    want_ins, want_del = link(f_base + cum), link(f_x - cum)
    fractions = np.arange(steps + 1) / steps
    np.testing.assert_allclose(ins.curves["insertion"].x, fractions)
    np.testing.assert_allclose(ins.curves["insertion"].y, want_ins, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dele.curves["deletion"].y, want_del, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ins.scores["insertion"], np.trapezoid(want_ins, fractions, axis=1), rtol=1e-5)
    np.testing.assert_allclose(dele.scores["deletion"], np.trapezoid(want_del, fractions, axis=1), rtol=1e-5)
    assert ins.higher_is_better == {"insertion": True} and dele.higher_is_better == {"deletion": False}


@pytest.mark.parametrize("score", ["logit", "softmax"])
def test_causal_ranking_beats_random_and_reverse(score):
    """The truly causal ranking: best insertion and deletion AUC; random in between; reverse worst."""
    host = make_host()
    model = additive_model(seed=3)
    x = inputs(4, seed=1)
    c = pixel_contributions(model, x.astype(np.float64), np.zeros(x.shape))
    result = evaluate(model, x, methods=[], maps={"causal": c, "reverse": -c}, target=0,
                              metrics=[{"metric": "insertion", "params": {"baseline": "black", "steps": 10,
                                                                          "score": score, "reduce": "none"}},
                                       {"metric": "deletion", "params": {"steps": 10, "score": score,
                                                                         "reduce": "none"}}],
                              backend="analytic", host=host, progress=False, seed=0)
    assert list(result.methods) == ["causal", "reverse", "random"]
    ins = {m: result.scores(m, "insertion") for m in result.methods}
    dele = {m: result.scores(m, "deletion") for m in result.methods}
    # per image, not just on average
    assert (ins["causal"] > ins["random"]).all() and (ins["random"] > ins["reverse"]).all()
    assert (dele["causal"] < dele["random"]).all() and (dele["random"] < dele["reverse"]).all()


def test_batched_rows_and_batch_size_independence(counting_host):
    """All N * (steps + 1) images go through the adapter in ceil(rows / batch) calls (after one pass
    over the images, as targets are given); any batch size gives the same numbers; per-sample
    targets in one batch equal single-sample runs."""
    model = AnalyticModel(SHAPE, classes=4, seed=2)
    x = inputs(3)
    maps = np.random.default_rng(5).normal(size=(3, *SHAPE)).astype(np.float32)
    runs = {}
    for batch_size in (1, 5, 64):
        CountingAdapter.instances.clear()
        r = evaluate(model, x, methods=[], maps={"m": maps}, metrics={"insertion": {"steps": 8}},
                             include_random=False, target=[0, 2, 3], backend="counting", host=counting_host,
                             batch_size=batch_size, progress=False)
        adapter = CountingAdapter.instances[-1]
        rows = 3 * 9  # plus one pass over the 3 images: are the outputs probabilities already?
        assert adapter.rows["outputs"] == rows + 3
        assert adapter.calls["outputs"] == math.ceil(rows / batch_size) + math.ceil(3 / batch_size)
        runs[batch_size] = r.scores("m", "insertion")
    np.testing.assert_allclose(runs[1], runs[5], rtol=1e-6)
    np.testing.assert_allclose(runs[1], runs[64], rtol=1e-6)
    singles = [evaluate(model, x[i:i + 1], methods=[], maps={"m": maps[i:i + 1]},
                                metrics={"insertion": {"steps": 8}}, include_random=False, target=[t],
                                backend="analytic", host=counting_host, progress=False).scores("m", "insertion")[0]
               for i, t in enumerate([0, 2, 3])]
    np.testing.assert_allclose(runs[5], singles, rtol=1e-6)


def test_pixel_order_and_substrates():
    x = inputs(2)
    sal = np.zeros((2, SHAPE[0], SHAPE[1]))
    sal[:, 2, 3] = 5.0
    sal[:, 0, 0] = 4.0
    ranks = rank_pixels(sal, x, seed=0)
    assert (ranks[:, 2 * SHAPE[1] + 3] == 0).all() and (ranks[:, 0] == 1).all()
    assert sorted(ranks[0]) == list(range(SHAPE[0] * SHAPE[1]))
    # ties broken at random, reproducibly from the seed; another seed, another order
    np.testing.assert_array_equal(rank_pixels(sal, x, 0), ranks)
    assert not np.array_equal(rank_pixels(sal, x, 1), ranks)
    assert pixel_counts(30, 4).tolist() == [0, 8, 15, 22, 30]
    np.testing.assert_allclose(make_baseline(x, "mean", 1.0)[:, 0, 0], x.mean(axis=(1, 2)), rtol=1e-6)
    assert make_baseline(x, 0.5, 1.0).shape == x.shape and (make_baseline(x, "white", 1.0) == 1).all()
    blurred = make_baseline(x, "blur", 2.0)
    assert blurred.std() < x.std()


@pytest.mark.parametrize("params", [
    {"steps": 0}, {"steps": 2.5}, {"baseline": "grey"}, {"baseline": np.zeros((2, 2))}, {"sigma": 0},
    {"reduce": "median"}, {"score": "probability"}, {"stpes": 3},
])
def test_bad_parameters_fail_before_any_model_call(counting_host, params):
    model = AnalyticModel(SHAPE, classes=3, seed=0)
    with pytest.raises(ParameterError) as info:
        evaluate(model, inputs(2), methods=["gradients"], metrics={"deletion": params},
                         backend="counting", host=counting_host, progress=False)
    assert CountingAdapter.instances[-1].total_calls == 0
    assert str(info.value)


def test_softmax_needs_class_targets():
    host = make_host()
    x = inputs(2)
    ctx = ctx_for(AnalyticAdapter(AnalyticModel(SHAPE, classes=3)), host)
    with pytest.raises(ParameterError, match="score='logit'"):
        Insertion().check(ctx, x, Targets.none(), score="softmax")


def test_torch_curve_end_points(cnn):
    """On a real CNN: insertion runs from the blurred image to the image, deletion to black."""
    torch = pytest.importorskip("torch")
    from scipy.ndimage import gaussian_filter

    host = salplug.get_plugin_manager(autoload=False)
    x = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
    grads = salplug.explain(cnn, x, "gradients", host=host).canonical
    r = evaluate(cnn, x, methods=[], maps={"g": grads}, metrics={"insertion": {"steps": 4},
                                                                         "deletion": {"steps": 4}},
                         include_random=False, backend="torch", host=host, progress=False)
    with torch.no_grad():
        def probs(a):
            return torch.softmax(cnn(torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)), 1).numpy()
        p_x, p_black = probs(x), probs(np.zeros_like(x))
        p_blur = probs(gaussian_filter(x, sigma=(0, 5, 5, 0), mode="nearest").astype(np.float32))
    top = p_x.argmax(1)
    ins = r.results[("g", "insertion")].curves["insertion"].y
    dele = r.results[("g", "deletion")].curves["deletion"].y
    rows = np.arange(2)
    np.testing.assert_allclose(ins[:, 0], p_blur[rows, top], rtol=1e-4)
    np.testing.assert_allclose(ins[:, -1], p_x[rows, top], rtol=1e-4)
    np.testing.assert_allclose(dele[:, 0], p_x[rows, top], rtol=1e-4)
    np.testing.assert_allclose(dele[:, -1], p_black[rows, top], rtol=1e-4)
