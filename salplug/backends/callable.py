"""The ``callable`` backend: any framework, through an upstream-style call_model_function.

``call_model_function(x_batch, call_model_args=None, expected_keys=None) -> dict`` returns
the requested keys (see the constants below) for a numpy batch. Arrays are passed in the
caller's own layout (no transposition): the function knows what its model expects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..errors import InputError, LayerError, ModelOutputError, ParameterError, TargetError
from ..layout import LAYOUTS, canonical_to_layout, numpy_to_canonical
from ..types import INPUT_GRADIENTS, LAYER_GRADIENTS, SCORES, InputInfo, Targets

CONVOLUTION_LAYER_VALUES = "CONVOLUTION_LAYER_VALUES"
CONVOLUTION_OUTPUT_GRADIENTS = "CONVOLUTION_OUTPUT_GRADIENTS"
INPUT_OUTPUT_GRADIENTS = "INPUT_OUTPUT_GRADIENTS"
OUTPUT_LAYER_VALUES = "OUTPUT_LAYER_VALUES"
KEYS = (CONVOLUTION_LAYER_VALUES, CONVOLUTION_OUTPUT_GRADIENTS, INPUT_OUTPUT_GRADIENTS, OUTPUT_LAYER_VALUES)


def check_call_model_output(output: Any, x: np.ndarray, expected_keys: list[str]) -> dict[str, np.ndarray]:
    """Check a call_model_function's answer: every key present, batch sizes (and shapes) right."""
    if not isinstance(output, Mapping):
        raise ModelOutputError(
            f"call_model_function must return a dict with keys {expected_keys}; it returned "
            f"{type(output).__name__}."
        )
    checked = {}
    for key in expected_keys:
        if key not in output:
            raise ModelOutputError(
                f"call_model_function did not return key {key!r} (it returned "
                f"{sorted(map(str, output))}). It was asked for {expected_keys}."
            )
        value = np.asarray(output[key])
        if key == INPUT_OUTPUT_GRADIENTS and value.shape != x.shape:
            raise ModelOutputError(
                f"Expected key INPUT_OUTPUT_GRADIENTS to have the input batch's shape {x.shape}, "
                f"got {value.shape}."
            )
        if value.ndim == 0 or value.shape[0] != x.shape[0]:
            raise ModelOutputError(
                f"Expected the outermost dimension of {key} to be the batch size {x.shape[0]}, "
                f"got shape {value.shape}."
            )
        if not np.isfinite(value).all():
            raise ModelOutputError(f"call_model_function returned NaN or infinite values for {key}.")
        checked[key] = value
    return checked


class CallableAdapter:
    """A user's call_model_function as a salplug ``ModelAdapter``.

    Parameters
    ----------
    call_model_function : the function, upstream ``saliency`` style.
    call_model_args : passed through unchanged on every call (never mutated).
    target_arg : if set, the per-row class targets are passed as ``call_model_args[target_arg]``
        (an int when every row shares it, else an int array); without it the function
        decides what it explains and ``target`` must be None.
    """

    name = "callable"
    provides = frozenset({SCORES, INPUT_GRADIENTS, LAYER_GRADIENTS})
    default_batch_size = 16
    supports_target_callables = False  # targets reach the function as class indices only

    def __init__(self, call_model_function: Callable[..., Mapping], *, call_model_args: Any = None,
                 target_arg: str | None = None, num_classes: int | None = None) -> None:
        if not callable(call_model_function):
            raise ParameterError(
                f"The callable backend needs a call_model_function, got {type(call_model_function).__name__}."
            )
        if target_arg is not None and call_model_args is not None and not isinstance(call_model_args, Mapping):
            raise ParameterError(
                f"target_arg={target_arg!r} puts the targets into call_model_args, which must then be a dict "
                f"(or None); got {type(call_model_args).__name__}.")
        self.fn = call_model_function
        self.call_model_args = call_model_args
        self.target_arg = target_arg
        self._num_classes = num_classes
        self.supports_targets = target_arg is not None

    def to_canonical(self, x: Any, layout: str | None = None) -> tuple[np.ndarray, InputInfo]:
        if hasattr(x, "detach") or hasattr(x, "numpy") and not isinstance(x, np.ndarray):
            raise InputError("The callable backend takes numpy arrays; convert tensors with .numpy() first.")
        arr = np.asarray(x)
        if layout is None:
            layout = "N..." if arr.ndim >= 4 else "..."
        if LAYOUTS.get(layout, (None, True, None))[2] is not None:
            raise InputError(f"The callable backend passes arrays as they are; layout {layout!r} "
                             f"would transpose them. Use 'N...' (a batch) or '...' (one input).")
        return numpy_to_canonical(arr, layout, kind="numpy")

    def from_canonical(self, values: np.ndarray, info: InputInfo) -> Any:
        return canonical_to_layout(values, info)

    def num_outputs(self) -> int | None:
        return self._num_classes

    def _call(self, x: np.ndarray, targets: Targets, keys: list[str]) -> dict[str, np.ndarray]:
        args = self.call_model_args
        if self.target_arg is not None and targets.indices is not None:
            args = dict(args or {})
            idx = targets.indices
            args[self.target_arg] = int(idx[0]) if (idx == idx[0]).all() else idx.copy()
        return check_call_model_output(self.fn(x, call_model_args=args, expected_keys=keys), x, keys)

    def outputs(self, x: np.ndarray) -> np.ndarray:
        values = self._call(x, Targets.none(), [OUTPUT_LAYER_VALUES])[OUTPUT_LAYER_VALUES]
        if values.ndim > 2:
            raise ModelOutputError(
                f"OUTPUT_LAYER_VALUES has shape {values.shape}; class scores are one row per example, "
                f"(N,) or (N, classes), to choose top-1 targets from.")
        return values.reshape(len(x), -1).astype(np.float32)

    def scores(self, x: np.ndarray, targets: Targets) -> np.ndarray:
        values = self._call(x, targets, [OUTPUT_LAYER_VALUES])[OUTPUT_LAYER_VALUES].reshape(len(x), -1)
        if values.shape[1] == 1:
            return _score_array(values[:, 0])
        if targets.indices is None:
            raise TargetError(
                f"OUTPUT_LAYER_VALUES has {values.shape[1]} values per example; return one scalar "
                f"per example (the explained score), or pass a target."
            )
        if targets.indices.max(initial=0) >= values.shape[1]:
            raise TargetError(f"target {int(targets.indices.max())} is out of range: OUTPUT_LAYER_VALUES has "
                              f"{values.shape[1]} values per example (classes 0..{values.shape[1] - 1}).")
        return _score_array(values[np.arange(len(x)), targets.indices])

    def input_gradients(self, x: np.ndarray, targets: Targets) -> np.ndarray:
        return self._call(x, targets, [INPUT_OUTPUT_GRADIENTS])[INPUT_OUTPUT_GRADIENTS].astype(np.float32)

    def check_layer(self, layer: Any) -> None:
        if layer is not None:
            raise LayerError("With the callable backend your call_model_function chooses the layer "
                             "(CONVOLUTION_LAYER_VALUES); pass layer=None.")

    def layer_values_and_gradients(self, x: np.ndarray, targets: Targets, layer: Any) -> tuple[np.ndarray, np.ndarray]:
        self.check_layer(layer)
        out = self._call(x, targets, [CONVOLUTION_LAYER_VALUES, CONVOLUTION_OUTPUT_GRADIENTS])
        return (out[CONVOLUTION_LAYER_VALUES].astype(np.float32),
                out[CONVOLUTION_OUTPUT_GRADIENTS].astype(np.float32))


def _score_array(values: np.ndarray) -> np.ndarray:
    """Scores as float32, or float64 when the function answers in float64: a method subtracting
    scores (occlusion) then loses no digits the model gave, as upstream does not."""
    return values.astype(np.float64 if values.dtype == np.float64 else np.float32)
