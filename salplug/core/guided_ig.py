"""``saliency.core.guided_ig``: Guided IG (the registered ``guided_ig`` method), NumPy 2 safe."""

from __future__ import annotations

from .base import INPUT_OUTPUT_GRADIENTS, CoreSaliency, Spec, run

__all__ = ["GuidedIG"]


class GuidedIG(CoreSaliency):
    """Guided Integrated Gradients (Kapishnikov et al. 2021): an adaptive path that moves the
    features with the smallest absolute gradient first."""

    expected_keys = [INPUT_OUTPUT_GRADIENTS]

    def _spec(self, x_baseline=None, x_steps=200, fraction=0.25, max_dist=0.02, batch_size=1):
        return Spec("guided_ig", {"baseline": x_baseline, "steps": x_steps, "fraction": fraction,
                                  "max_dist": max_dist}, batch_size)

    def GetMask(self, x_value, call_model_function, call_model_args=None, x_baseline=None, x_steps=200,
                fraction=0.25, max_dist=0.02, batch_size=1):
        """Guided IG of one unbatched input: ``x_steps`` model calls of one point each.

        ``batch_size`` (a salplug addition) groups noisy copies in ``GetSmoothedMask``.
        """
        spec = self._spec(x_baseline, x_steps, fraction, max_dist, batch_size)
        return run(spec.method, x_value, call_model_function, call_model_args, batch_size=spec.batch_size,
                   **spec.params)[0]
