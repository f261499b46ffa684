"""Helpers for inner work laid out as sample-major rows (row r belongs to sample r // k)."""

from __future__ import annotations

import numpy as np


def sample_and_step(rows: slice, per_sample: int) -> tuple[np.ndarray, np.ndarray]:
    """For rows ``rows`` of an (N * per_sample)-row job: (sample index, step index) per row."""
    r = np.arange(rows.start, rows.stop)
    return r // per_sample, r % per_sample


def add_by_sample(out: np.ndarray, samples: np.ndarray, values: np.ndarray) -> None:
    """``out[samples[i]] += values[i]`` for sorted ``samples``, one vectorised reduction per run."""
    starts = np.flatnonzero(np.r_[True, samples[1:] != samples[:-1]])
    out[samples[starts]] += np.add.reduceat(values, starts, axis=0)


def broadcast_rows(arr: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Rows of ``arr`` for ``samples``; an array with a batch axis of 1 is shared by all."""
    return arr[np.zeros_like(samples)] if arr.shape[0] == 1 else arr[samples]
