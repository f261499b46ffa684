"""Guided Backpropagation (Springenberg et al. 2015).

The gradient of the target score with respect to the input, where every ReLU passes the
incoming gradient back only where its input was positive AND the gradient is positive. The
ReLU override is the backend's job (capability ``guided_input_gradients``); this method only
batches the inputs. Smooth it with ``explain(..., "smoothgrad", base="guided_backprop")``.
"""

from __future__ import annotations

import numpy as np

from ..hookspecs import hookimpl
from ..types import GUIDED_GRADIENTS, Method


class GuidedBackprop(Method):
    """Guided-backprop input gradients, one model batch per ``batch_size`` inputs."""

    requires = frozenset({GUIDED_GRADIENTS})

    def explain(self, ctx, x, targets):
        out = np.empty_like(x, dtype=np.float32)
        for rows in ctx.chunks(len(x), "guided backprop"):
            out[rows] = ctx.adapter.guided_input_gradients(x[rows], targets.take(rows))
        return out


@hookimpl
def register_methods(register):
    register("guided_backprop", GuidedBackprop, requires=GuidedBackprop.requires,
             aliases=("guidedbackprop", "guided_backpropagation", "guided_bp"),
             description="Guided Backpropagation (Springenberg et al. 2015)")
