"""``saliency.core.occlusion``: Occlusion (the registered ``occlusion`` method)."""

from __future__ import annotations

import numbers

import numpy as np

from ..builtin_methods.occlusion import as_pair
from ..errors import ModelOutputError, ParameterError
from .base import OUTPUT_LAYER_VALUES, CoreSaliency, ModelFunction, Spec, _no_model, run

__all__ = ["Occlusion", "OUTPUT_LAYER_VALUES"]


class Occlusion(CoreSaliency):
    """Occlusion: how much the output drops when a ``size`` x ``size`` window is filled with
    ``value``, summed over the windows (stride 1, full windows) that cover each pixel. A window
    larger than the image fits nowhere: the map is all zeros, as upstream."""

    expected_keys = [OUTPUT_LAYER_VALUES]

    def _spec(self, size=15, value=0, batch_size=1):
        return Spec("occlusion", {"size": size, "value": value, "stride": 1, "aggregate": "sum"},
                    batch_size, image=True)

    def GetMask(self, x_value, call_model_function, call_model_args=None, size=15, value=0, batch_size=1):
        """Occlusion map of one (H, W, C) or (H, W) image.

        ``batch_size`` (a salplug addition) sends that many occluded images per model call; the
        default 1 calls the model once per window as upstream did (plus once for the input).
        """
        x = np.asarray(x_value)
        if _window_exceeds(x, size):
            return _zero_map(x, call_model_function, call_model_args, value, batch_size)
        spec = self._spec(size, value, batch_size)
        return run(spec.method, x_value, call_model_function, call_model_args, batch_size=spec.batch_size,
                   image=True, **spec.params)[0]

    def _smooth_natively(self, x_value, kwargs) -> bool:
        return not _window_exceeds(np.asarray(x_value), kwargs.get("size", 15))

    def getY(self, x_value, call_model_function, call_model_args):
        """The model's OUTPUT_LAYER_VALUES for one unbatched input (one call, batch of one)."""
        batch = np.expand_dims(x_value, axis=0)
        data = call_model_function(batch, call_model_args=call_model_args,
                                   expected_keys=[OUTPUT_LAYER_VALUES])
        if OUTPUT_LAYER_VALUES not in data:
            raise ModelOutputError(f"call_model_function returned keys {sorted(map(str, data))}; "
                                   f"Occlusion.getY needs {OUTPUT_LAYER_VALUES!r}.")
        self.format_and_check_call_model_output(data, batch.shape, [OUTPUT_LAYER_VALUES])
        return data[OUTPUT_LAYER_VALUES][0]


def _window_exceeds(x: np.ndarray, size) -> bool:
    """Whether a valid ``size`` window is taller or wider than the image ``x`` (H, W[, C])."""
    if x.ndim not in (2, 3):
        return False  # the registered method explains what it takes
    sh, sw = as_pair(size, "size")
    return sh > x.shape[0] or sw > x.shape[1]


def _zero_map(x, call_model_function, call_model_args, value, batch_size) -> np.ndarray:
    """Upstream's result when no window fits: zeros, after its one call for the input's output."""
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral)
                                   or batch_size < 1):
        raise ParameterError(f"batch_size must be a positive int, got {batch_size!r}.")
    fill = np.asarray(value)
    try:
        fits = fill.dtype.kind in "biuf" and np.broadcast_shapes(fill.shape, x.shape) == x.shape
    except ValueError:
        fits = False
    if not fits:
        raise ParameterError(f"value must be a number or an array that broadcasts to the image's shape "
                             f"{x.shape}; got {value!r}.")
    fn = _no_model if call_model_function is None else ModelFunction(call_model_function, x.shape)
    output = fn(x[None], call_model_args=call_model_args, expected_keys=[OUTPUT_LAYER_VALUES])
    if not hasattr(output, "keys") or OUTPUT_LAYER_VALUES not in output:
        got = sorted(map(str, output)) if hasattr(output, "keys") else type(output).__name__
        raise ModelOutputError(f"call_model_function returned {got}; Occlusion needs the key "
                               f"{OUTPUT_LAYER_VALUES!r}.")
    return np.zeros(x.shape, np.float32)
