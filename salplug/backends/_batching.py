"""Rows per model call sized by the input, for backends whose caller gave no batch size."""

from __future__ import annotations

import numpy as np

IMAGE_224 = 224 * 224 * 3  # input values of one 224 x 224 RGB image


def rows_for_values(x: np.ndarray, values: int, cap: int) -> int:
    """Rows of inputs shaped like ``x`` (batch first) that hold about ``values`` input values,
    between 1 and ``cap``: few rows of large images, many of small ones (per-call overhead)."""
    per_row = max(1, int(np.prod(x.shape[1:])))
    return int(min(max(round(values / per_row), 1), cap))


# TensorFlow (tf1, tf2) keeps gaining from larger batches longer than PyTorch. Measured on 2 CPU
# cores: EfficientNet-Lite0 IG with 64 steps, 16 rows 1.38 s, 32 rows 1.29 s, 64 rows 1.32 s;
# a small CNN on 64 images of 32 x 32 (IG, 8 steps): 16 rows 65 ms, 256 rows 25 ms, 512 rows 24 ms.
TF_CPU_ROWS = 16
TF_GPU_ROWS = 64
TF_MAX_ROWS = 512


def tf_rows(x: np.ndarray, on_gpu: bool) -> int:
    """Rows per call for the TensorFlow backends: about 16 (CPU) or 64 (GPU) images of
    224 x 224 x 3 worth of input values, at most 512 rows."""
    return rows_for_values(x, (TF_GPU_ROWS if on_gpu else TF_CPU_ROWS) * IMAGE_224, TF_MAX_ROWS)
