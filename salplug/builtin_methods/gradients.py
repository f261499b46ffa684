"""Vanilla Gradients (Simonyan et al. 2013): the gradient of the target score w.r.t. the input."""

from __future__ import annotations

import numpy as np

from ..hookspecs import hookimpl
from ..types import INPUT_GRADIENTS, Method


class VanillaGradients(Method):
    """d score / d input, one model batch per ``batch_size`` inputs."""

    requires = frozenset({INPUT_GRADIENTS})

    def explain(self, ctx, x, targets):
        out = np.empty_like(x, dtype=np.float32)
        for rows in ctx.chunks(len(x), "gradients"):
            out[rows] = ctx.adapter.input_gradients(x[rows], targets.take(rows))
        return out


@hookimpl
def register_methods(register):
    register("gradients", VanillaGradients, requires=VanillaGradients.requires,
             aliases=("vanilla_gradients", "vanilla", "saliency", "gradient"),
             description="Vanilla Gradients (Simonyan et al. 2013)")
