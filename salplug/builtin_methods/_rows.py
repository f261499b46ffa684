"""Helpers for inner work laid out as sample-major rows (row r belongs to sample r // k)."""

from __future__ import annotations

import numpy as np


def sample_and_step(rows: slice, per_sample: int) -> tuple[np.ndarray, np.ndarray]:
    """For rows ``rows`` of an (N * per_sample)-row job: (sample index, step index) per row."""
    r = np.arange(rows.start, rows.stop)
    return r // per_sample, r % per_sample


def batch_index(ctx, samples: np.ndarray, steps: np.ndarray) -> tuple:
    """Indices of a batch's samples and steps, for the arrays ``ctx.to_device`` made: slices when
    the whole batch belongs to one sample (no index array to build or send), else index arrays."""
    if samples[0] == samples[-1]:
        first = int(samples[0])
        return slice(first, first + 1), slice(int(steps[0]), int(steps[-1]) + 1)
    return ctx.to_device(samples), ctx.to_device(steps)


def add_by_sample(out: np.ndarray, samples: np.ndarray, values: np.ndarray) -> None:
    """``out[samples[i]] += values[i]`` for sorted ``samples``, summed in ``out``'s precision.

    One vectorised sum per run of equal samples (a batch holds a few runs: the rows of one
    sample are consecutive); ``np.add.reduceat`` would be 3-4x slower on image-sized rows.
    ``out`` and ``values`` may be device arrays (``Context.to_device``); ``samples`` is numpy.
    """
    starts = np.flatnonzero(np.r_[True, samples[1:] != samples[:-1]])
    if len(starts) == len(samples):  # one row per sample
        first = int(samples[0])
        if int(samples[-1]) - first == len(samples) - 1:  # consecutive (rows of a batch are): a slice
            out[first:first + len(samples)] += values
        else:
            out[samples] += values
        return
    for a, b in zip(starts, np.r_[starts[1:], len(samples)]):
        out[samples[a]] += values[a:b].sum(axis=0, dtype=out.dtype)


def broadcast_rows(arr: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Rows of ``arr`` for ``samples``; an array with a batch axis of 1 is shared by all
    (returned as is: it broadcasts). ``arr`` and ``samples`` may be device arrays."""
    return arr if arr.shape[0] == 1 else arr[samples]
