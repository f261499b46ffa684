"""Models that already output probabilities (ending in softmax): the metrics use them as they are."""

from __future__ import annotations

import numpy as np
import pytest

import salplug
from salplug.evaluate import PROBABILITIES_NOTE, evaluate
from salplug.metrics.base import are_probabilities

torch = pytest.importorskip("torch")
from conftest import make_cnn  # noqa: E402

METRICS = ["insertion", "deletion", {"metric": "pic", "params": {"min_pred_value": 0.0}}]


def test_are_probabilities():
    rows = np.array([[0.2, 0.8], [0.5, 0.5]], np.float32)
    assert are_probabilities(rows)
    assert are_probabilities(rows + np.array([[0.0004, 0.0]]))  # within the tolerance
    assert not are_probabilities(rows * 0.98)  # sums to 0.98
    assert not are_probabilities(np.array([[1.2, -0.2], [0.5, 0.5]]))  # a negative entry
    assert not are_probabilities(np.array([[1.0], [1.0]]))  # one output: no classes to normalise
    assert not are_probabilities(np.array([[0.5, np.nan]]))


def _models():
    logits = make_cnn(0, classes=5)
    with torch.no_grad():
        logits.fc.weight.mul_(300.0)  # confident predictions: softmax twice would flatten them
    return logits, torch.nn.Sequential(logits, torch.nn.Softmax(dim=-1)).eval()


def _run(model, x, maps):
    return evaluate(model, x, [], METRICS, backend="torch", maps=maps, include_random=False, progress=False,
                    host=salplug.get_plugin_manager(autoload=False))


def test_a_model_ending_in_softmax_scores_like_the_same_model_without():
    x = np.random.default_rng(0).uniform(0, 1, (3, 16, 16, 3)).astype(np.float32)
    maps = {"given": np.random.default_rng(1).uniform(0, 1, (3, 16, 16)).astype(np.float32)}
    logit_model, prob_model = _models()
    with torch.no_grad():
        top = prob_model(torch.from_numpy(x).permute(0, 3, 1, 2)).max(dim=1).values.numpy()
    assert top.min() > 0.4  # what the metrics must read: softmax again would give far less
    a, b = _run(logit_model, x, maps), _run(prob_model, x, maps)
    for score in ("insertion", "deletion"):
        np.testing.assert_allclose(b.scores("given", score), a.scores("given", score), rtol=1e-5, atol=1e-6)
    pa = a.results[("given", "pic")].extras["predictions"]["softmax"]
    pb = b.results[("given", "pic")].extras["predictions"]["softmax"]
    np.testing.assert_allclose(pb, pa, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pb[:, 0], top, atol=0.01)  # column 0: the original (as uint8)
    assert PROBABILITIES_NOTE in b.notes and PROBABILITIES_NOTE not in a.notes


def test_explicit_targets_detect_probabilities_too():
    x = np.random.default_rng(2).uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
    maps = {"given": np.random.default_rng(3).uniform(0, 1, (2, 16, 16)).astype(np.float32)}
    logit_model, prob_model = _models()
    kw = dict(backend="torch", maps=maps, include_random=False, progress=False, target=[1, 3],
              host=salplug.get_plugin_manager(autoload=False))
    a = evaluate(logit_model, x, [], ["insertion"], **kw)
    b = evaluate(prob_model, x, [], ["insertion"], **kw)
    np.testing.assert_allclose(b.scores("given", "insertion"), a.scores("given", "insertion"), rtol=1e-5, atol=1e-6)
    assert PROBABILITIES_NOTE in b.notes
