"""``saliency.core.gradients``: vanilla gradients (the registered ``gradients`` method)."""

from __future__ import annotations

from .base import INPUT_OUTPUT_GRADIENTS, CoreSaliency, Spec, run

__all__ = ["GradientSaliency"]


class GradientSaliency(CoreSaliency):
    """Vanilla gradients (Simonyan et al. 2013): d output / d input."""

    expected_keys = [INPUT_OUTPUT_GRADIENTS]

    def _spec(self, batch_size=1):
        return Spec("gradients", {}, batch_size)

    def GetMask(self, x_value, call_model_function, call_model_args=None, batch_size=1):
        """Gradient of the explained output for one unbatched input (one model call).

        ``batch_size`` (a salplug addition) only matters in ``GetSmoothedMask``, where it is
        the number of noisy copies sent to the model at once.
        """
        spec = self._spec(batch_size)
        return run(spec.method, x_value, call_model_function, call_model_args, batch_size=spec.batch_size)[0]
