"""The plugin module named by the entry point: it registers, it does not compute.

Targets are lazy ``"module:Name"`` strings, so discovering the plugin (``import salplug``,
``salplug list``) imports neither the method modules nor any framework. Because a lazy
target cannot be inspected before it is imported, ``requires=`` is spelled out here.
"""

from __future__ import annotations

from salplug import hookimpl


@hookimpl
def register_methods(register):
    register("input_x_gradient", "salplug_example.input_x_gradient:InputXGradient",
             requires=("input_gradients",),
             aliases=("inputxgradient", "input_times_gradient", "gradient_x_input"),
             description="Input x Gradient (Shrikumar et al. 2016)")
    register("rise", "salplug_example.rise:Rise", requires=("scores",), aliases=("RISE",),
             description="RISE: randomized input sampling (Petsiuk et al. 2018)")


@hookimpl
def register_visualizers(register):
    register("top_k_mask", "salplug_example.visualizers:top_k_mask", aliases=("topk", "top_k"),
             description="the top fraction of pixels by |attribution|, as a mask or a cut-out")
