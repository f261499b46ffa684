"""``saliency.core.integrated_gradients``: the registered ``integrated_gradients`` method with
upstream's rule ("riemann": ``x_steps`` points from the baseline to the input, both ends
included, each weighted 1/x_steps)."""

from __future__ import annotations

from .base import INPUT_OUTPUT_GRADIENTS, CoreSaliency, Spec, run

__all__ = ["IntegratedGradients"]


class IntegratedGradients(CoreSaliency):
    """Integrated Gradients (Sundararajan et al. 2017) along the straight path."""

    expected_keys = [INPUT_OUTPUT_GRADIENTS]

    def _spec(self, x_baseline=None, x_steps=25, batch_size=1):
        return Spec("integrated_gradients", {"baseline": x_baseline, "steps": x_steps, "rule": "riemann"},
                    batch_size)

    def GetMask(self, x_value, call_model_function, call_model_args=None, x_baseline=None, x_steps=25,
                batch_size=1):
        """IG of one unbatched input.

        ``x_baseline``: an array of the input's shape (default zeros); ``x_steps`` path points;
        ``batch_size`` path points per model call (ceil(x_steps / batch_size) calls).
        """
        spec = self._spec(x_baseline, x_steps, batch_size)
        return run(spec.method, x_value, call_model_function, call_model_args, batch_size=spec.batch_size,
                   **spec.params)[0]
