"""Guided Backpropagation (Springenberg et al. 2015).

The gradient of the target score with respect to the input, where every ReLU passes the
incoming gradient back only where its input was positive AND the gradient is positive. The
ReLU override is the backend's job (capability ``guided_input_gradients``); this method only
batches the inputs. Smooth it with ``explain(..., "smoothgrad", base="guided_backprop")``.
"""

from __future__ import annotations

from ..hookspecs import hookimpl
from ..types import GUIDED_GRADIENTS, Method


class GuidedBackprop(Method):
    """Guided-backprop input gradients, one model batch per ``batch_size`` inputs."""

    requires = frozenset({GUIDED_GRADIENTS})

    device_arrays = True  # x may be a device array; the work stays there (Context.to_device)
    rows_are_inputs = True  # model rows are x's rows: top-1 targets can be chosen in the same pass

    def explain(self, ctx, x, targets):
        x = ctx.to_device(x)  # numpy unless the adapter keeps work on its device
        return ctx.concat([ctx.adapter.guided_input_gradients(x[rows], targets.take(rows))
                           for rows in ctx.chunks(len(x), "guided backprop")])


@hookimpl
def register_methods(register):
    register("guided_backprop", GuidedBackprop, requires=GuidedBackprop.requires,
             aliases=("guidedbackprop", "guided_backpropagation", "guided_bp"),
             description="Guided Backpropagation (Springenberg et al. 2015)")
