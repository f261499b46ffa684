"""docs/evaluation.md describes the table cells as ``EvaluationResult.table()`` writes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from salplug.evaluate import EvaluationResult
from salplug.metrics.base import MetricResult

ROOT = Path(__file__).resolve().parents[1]


def result(values):
    scores = {"insertion": np.array(values, dtype=np.float64)}
    return EvaluationResult(methods={"gradients": {"method": "gradients", "params": {}}},
                            metrics={"insertion": {"metric": "insertion", "params": {}}},
                            results={("gradients", "insertion"): MetricResult(scores, {"insertion": True})},
                            attributions={}, targets=None, names=["a", "b", "c"], seed=0, backend="torch")


def test_n_is_shown_only_when_images_were_skipped():
    guide = (ROOT / "docs" / "evaluation.md").read_text()
    assert "`(n=scored images)` only when some images could not" in " ".join(guide.split())
    assert "(n=" not in result([0.2, 0.4, 0.6]).table()
    assert "(n=2)" in result([0.2, np.nan, 0.6]).table()
    assert "n/a" in result([np.nan, np.nan, np.nan]).table()


def test_random_baseline_is_described_as_optional():
    guide = " ".join((ROOT / "docs" / "evaluation.md").read_text().split())
    assert "always in the table" not in guide
    assert "`include_random=False` leaves it out" in guide
