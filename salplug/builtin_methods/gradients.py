"""Vanilla Gradients (Simonyan et al. 2013): the gradient of the target score w.r.t. the input."""

from __future__ import annotations

from ..hookspecs import hookimpl
from ..types import INPUT_GRADIENTS, Method


class VanillaGradients(Method):
    """d score / d input, one model batch per ``batch_size`` inputs."""

    requires = frozenset({INPUT_GRADIENTS})

    device_arrays = True  # x may be a device array; the work stays there (Context.to_device)
    rows_are_inputs = True  # model rows are x's rows: top-1 targets can be chosen in the same pass

    def explain(self, ctx, x, targets):
        x = ctx.to_device(x)  # numpy unless the adapter keeps work on its device
        return ctx.concat([ctx.adapter.input_gradients(x[rows], targets.take(rows))
                           for rows in ctx.chunks(len(x), "gradients")])


@hookimpl
def register_methods(register):
    register("gradients", VanillaGradients, requires=VanillaGradients.requires,
             aliases=("vanilla_gradients", "vanilla", "saliency", "gradient"),
             description="Vanilla Gradients (Simonyan et al. 2013)")
