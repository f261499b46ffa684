"""``saliency.core.guided_ig``: Guided IG (the registered ``guided_ig`` method), NumPy 2 safe.

Also upstream's module-level helpers: ``guided_ig_impl`` (the path integral over a gradient
function), ``translate_x_to_alpha``, ``translate_alpha_to_x``, ``l1_distance`` and ``EPSILON``.
"""

from __future__ import annotations

import numpy as np

from ..builtin_methods.guided_ig import EPSILON, guided_step
from ..builtin_methods.integrated_gradients import check_steps
from ..errors import ParameterError
from .base import INPUT_OUTPUT_GRADIENTS, CoreSaliency, Spec, run

__all__ = ["EPSILON", "GuidedIG", "guided_ig_impl", "l1_distance", "translate_alpha_to_x",
           "translate_x_to_alpha"]


#: The share that selects the same features as upstream's ``fraction=0``.
SMALLEST_SHARE = float(np.nextafter(0.0, 1.0))


def _is_zero(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)) \
        and value == 0


class AlphaRangeError(ParameterError, AssertionError):
    """An alpha outside [0, 1] (an AssertionError too, as upstream raised)."""


def l1_distance(x1, x2):
    """L1 distance between two points: the sum of ``|x1 - x2|``."""
    return np.abs(x1 - x2).sum()


def translate_x_to_alpha(x, x_input, x_baseline):
    """Where each feature of ``x`` lies on its segment from ``x_baseline`` (0) to ``x_input``
    (1): ``(x - x_baseline) / (x_input - x_baseline)``, NaN where the segment is empty."""
    diff = x_input - x_baseline
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(diff != 0, (x - x_baseline) / diff, np.nan)


def translate_alpha_to_x(alpha, x_input, x_baseline):
    """The point ``x_baseline + alpha * (x_input - x_baseline)`` for ``alpha`` in [0, 1]."""
    a = np.asarray(alpha)
    if not ((a >= 0) & (a <= 1.0)).all():
        raise AlphaRangeError(f"alpha must be in [0, 1] (0: x_baseline, 1: x_input), got {alpha!r}.")
    return x_baseline + (x_input - x_baseline) * alpha


def guided_ig_impl(x_input, x_baseline, grad_func, steps=200, fraction=0.25, max_dist=0.02):
    """Guided IG attribution (float64, the shape of ``x_input``) along the adaptive path.

    ``grad_func(x)`` returns the gradient of the explained output at ``x`` (float64, the
    input's shape); it is called once per step. ``fraction``: the share of features (lowest
    |gradient|) moved at once; ``max_dist``: how far in [0, 1] a feature's progress may deviate
    from the straight line (0: IG on the straight line, 1: unbounded). An input equal to its
    baseline gets zeros without any call.
    """
    check_steps(steps)
    for name, value in (("fraction", fraction), ("max_dist", max_dist)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not 0.0 <= value <= 1.0:
            raise ParameterError(f"{name} must be a number in [0, 1], got {value!r}.")
    end = np.asarray(x_input, dtype=np.float64)
    start = np.asarray(x_baseline, dtype=np.float64)
    if start.shape != end.shape:
        start = np.broadcast_to(start, end.shape)  # ValueError when they do not fit
    shape = end.shape
    end, start = end.reshape(1, -1), start.reshape(1, -1).copy()
    diff = end - start
    dist_total = np.abs(diff).sum(axis=1)
    attr = np.zeros_like(end)
    if dist_total[0] == 0:
        return attr.reshape(shape)
    path = start.copy()
    for step in range(steps):
        grads = np.asarray(grad_func(path.reshape(shape).copy()), dtype=np.float64)
        if grads.shape != shape:
            raise ValueError(f"grad_func returned shape {grads.shape}; it must return the gradient "
                             f"of the input's shape {shape}.")
        guided_step(path, attr, grads.reshape(1, -1), start, diff, end, dist_total, step, steps,
                    float(fraction), float(max_dist))
    return attr.reshape(shape)


class GuidedIG(CoreSaliency):
    """Guided Integrated Gradients (Kapishnikov et al. 2021): an adaptive path that moves the
    features with the smallest absolute gradient first."""

    expected_keys = [INPUT_OUTPUT_GRADIENTS]

    def _spec(self, x_baseline=None, x_steps=200, fraction=0.25, max_dist=0.02, batch_size=1):
        if _is_zero(fraction):
            # Upstream accepts 0: the "lower" 0-quantile of |gradient| is its minimum, the same
            # threshold as the smallest positive share (the registered method wants (0, 1]).
            fraction = SMALLEST_SHARE
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
