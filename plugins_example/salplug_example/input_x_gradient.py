"""Input x Gradient (Shrikumar et al. 2016): each input value times the gradient there.

For a model that is linear in its input, f(x) = sum(w * x) + b, the map w * x splits the
score f(x) - b exactly over the inputs.
"""

from __future__ import annotations

import numpy as np

from salplug import INPUT_GRADIENTS, Method


class InputXGradient(Method):
    """``x * d score / d x``, one model batch per ``ctx.batch_size`` inputs."""

    requires = frozenset({INPUT_GRADIENTS})

    def explain(self, ctx, x, targets):
        out = np.empty_like(x, dtype=np.float32)
        for rows in ctx.chunks(len(x), "input x gradient"):
            out[rows] = x[rows] * ctx.adapter.input_gradients(x[rows], targets.take(rows))
        return out
