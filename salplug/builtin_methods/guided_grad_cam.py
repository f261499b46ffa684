"""Guided Grad-CAM (Selvaraju et al. 2017): Guided Backprop times the resized Grad-CAM map.

Both parts are the registered methods ``grad_cam`` and ``guided_backprop``, run through the
registry, so a plugin that replaces either one changes this method too.
"""

from __future__ import annotations

import numpy as np

from ..api import resolve_params
from ..errors import ParameterError
from ..hookspecs import hookimpl
from ..types import GUIDED_GRADIENTS, LAYER_GRADIENTS, Method


class GuidedGradCam(Method):
    """Guided Backprop map multiplied, channel by channel, by the Grad-CAM map.

    Parameters
    ----------
    layer : the Grad-CAM layer (module path or object; see ``grad_cam``).
    relu : ReLU on the Grad-CAM map (as in the paper).
    normalize : divide the Grad-CAM map by its maximum before the product (None: yes, as
        ``grad_cam`` does when resizing).
    guided_params : parameters of the ``guided_backprop`` method, if it takes any.

    Returns (N, H, W, C), the input's shape.
    """

    requires = frozenset({LAYER_GRADIENTS, GUIDED_GRADIENTS})

    def _parts(self, ctx, layer, relu, normalize, guided_params):
        if guided_params is not None and not isinstance(guided_params, dict):
            raise ParameterError(f"guided_params must be a dict of guided_backprop parameters; got "
                                 f"{guided_params!r}.")
        cam = dict(layer=layer, relu=relu, should_resize=True, three_dims=False, normalize=normalize)
        return cam, dict(guided_params or {})

    def check(self, ctx, x, targets, *, layer=None, relu=True, normalize=None, guided_params=None):
        cam, guided = self._parts(ctx, layer, relu, normalize, guided_params)
        for name, params in (("grad_cam", cam), ("guided_backprop", guided)):
            method = ctx.method(name)
            if hasattr(method, "check"):
                method.check(ctx, x, targets, **resolve_params(method, params))

    def explain(self, ctx, x, targets, *, layer=None, relu=True, normalize=None, guided_params=None):
        cam, guided = self._parts(ctx, layer, relu, normalize, guided_params)
        heat = ctx.run("grad_cam", x, targets, **cam).values
        backprop = ctx.run("guided_backprop", x, targets, **guided).values
        return (np.asarray(backprop) * np.asarray(heat)[..., None]).astype(np.float32)


@hookimpl
def register_methods(register):
    register("guided_grad_cam", GuidedGradCam, requires=GuidedGradCam.requires,
             aliases=("guided_gradcam", "guidedgradcam"),
             description="Guided Grad-CAM: Guided Backprop x Grad-CAM (Selvaraju et al. 2017)")
