"""A working plugin: a method and a visualizer, registered lazily."""

import salplug


@salplug.hookimpl
def register_methods(register):
    register("good_double", "sp_good.methods:DoubleGradients", requires=("input_gradients",),
             description="twice the gradients (test plugin)")


@salplug.hookimpl
def register_visualizers(register):
    register("good_vis", "sp_good.methods:flat", description="a flat gray image (test plugin)")
