"""Results of the TensorFlow backends (tf1, tf2) in the caller's layout and type."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import tensorflow as tf

from ..layout import canonical_to_layout
from ..types import InputInfo


def tf_from_canonical(values: np.ndarray, info: InputInfo) -> Any:
    """Canonical ``values`` in the input's layout: a tf.Tensor on the input's device when the
    input was a tensor, else a numpy array."""
    out = canonical_to_layout(values, info)
    if info.kind == "tf":
        with tf.device(info.device) if info.device else contextlib.nullcontext():
            return tf.identity(tf.convert_to_tensor(out))
    return out
