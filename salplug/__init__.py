"""salplug: saliency maps for image models, extensible by plugins.

Quick start::

    import salplug
    attribution = salplug.explain(model, images, method="integrated_gradients", steps=50)
    attribution.save("ig.png", kind="heatmap", image=images[0])

``import salplug`` never imports torch or tensorflow: backends load them when first used.
"""

from __future__ import annotations

from .api import Explainer, explain
from .backends.tf1_model import TF1Model
from .evaluate import evaluate
from .errors import (
    BackendUnavailableError,
    CapabilityError,
    DuplicateComponentError,
    InputError,
    LayerError,
    ModelOutputError,
    ParameterError,
    PluginError,
    PluginLoadWarning,
    SalplugError,
    TargetError,
    UnknownComponentError,
)
from .hookspecs import hookimpl
from .plugins import get_host, get_plugin_manager, reset_host
from .types import (
    GUIDED_GRADIENTS,
    INPUT_GRADIENTS,
    LAYER_GRADIENTS,
    SCORES,
    Attribution,
    Context,
    Method,
    MethodOutput,
    ModelAdapter,
    Targets,
)

__version__ = "0.1.0"

__all__ = [
    "Attribution", "BackendUnavailableError", "CapabilityError", "Context", "DuplicateComponentError",
    "Explainer", "GUIDED_GRADIENTS", "INPUT_GRADIENTS", "InputError", "LAYER_GRADIENTS", "LayerError",
    "Method", "MethodOutput", "ModelAdapter", "ModelOutputError", "ParameterError", "PluginError",
    "PluginLoadWarning", "SCORES", "SalplugError", "TF1Model", "Targets", "TargetError", "UnknownComponentError",
    "evaluate", "explain", "get_host", "get_plugin_manager", "hookimpl", "reset_host", "__version__",
]
