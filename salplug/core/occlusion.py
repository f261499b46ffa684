"""``saliency.core.occlusion``: Occlusion (the registered ``occlusion`` method)."""

from __future__ import annotations

import numpy as np

from ..errors import ModelOutputError
from .base import OUTPUT_LAYER_VALUES, CoreSaliency, Spec, run

__all__ = ["Occlusion", "OUTPUT_LAYER_VALUES"]


class Occlusion(CoreSaliency):
    """Occlusion: how much the output drops when a ``size`` x ``size`` window is filled with
    ``value``, summed over the windows (stride 1, full windows) that cover each pixel."""

    expected_keys = [OUTPUT_LAYER_VALUES]

    def _spec(self, size=15, value=0, batch_size=1):
        return Spec("occlusion", {"size": size, "value": value, "stride": 1, "aggregate": "sum"},
                    batch_size, image=True)

    def GetMask(self, x_value, call_model_function, call_model_args=None, size=15, value=0, batch_size=1):
        """Occlusion map of one (H, W, C) or (H, W) image.

        ``batch_size`` (a salplug addition) sends that many occluded images per model call; the
        default 1 calls the model once per window as upstream did (plus once for the input).
        """
        spec = self._spec(size, value, batch_size)
        return run(spec.method, x_value, call_model_function, call_model_args, batch_size=spec.batch_size,
                   image=True, **spec.params)[0]

    def getY(self, x_value, call_model_function, call_model_args):
        """The model's OUTPUT_LAYER_VALUES for one unbatched input (one call, batch of one)."""
        batch = np.expand_dims(x_value, axis=0)
        data = call_model_function(batch, call_model_args=call_model_args,
                                   expected_keys=[OUTPUT_LAYER_VALUES])
        self.format_and_check_call_model_output(data, batch.shape, [OUTPUT_LAYER_VALUES])
        if OUTPUT_LAYER_VALUES not in data:
            raise ModelOutputError(f"call_model_function returned keys {sorted(map(str, data))}; "
                                   f"Occlusion.getY needs {OUTPUT_LAYER_VALUES!r}.")
        return data[OUTPUT_LAYER_VALUES][0]
