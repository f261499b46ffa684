"""Built-in model backends, registered lazily: no framework is imported here."""

from __future__ import annotations

import inspect
import sys
from typing import Any

from ..hookspecs import hookimpl
from ..types import GUIDED_GRADIENTS, INPUT_GRADIENTS, LAYER_GRADIENTS, SCORES

GRADIENT_CAPS = (SCORES, INPUT_GRADIENTS, LAYER_GRADIENTS)


@hookimpl
def register_backends(register):
    register("torch", "salplug.backends.torch:TorchAdapter", framework="pytorch", extra="torch",
             provides=(*GRADIENT_CAPS, GUIDED_GRADIENTS), aliases=("pytorch",),
             description="PyTorch nn.Module or callable returning logits (NCHW)")
    register("callable", "salplug.backends.callable:CallableAdapter", framework="any",
             provides=GRADIENT_CAPS, aliases=("call_model_function",),
             description="an upstream-style call_model_function(x, call_model_args, expected_keys)")
    register("tf2", "salplug.backends.tf2:TF2Adapter", framework="tensorflow", extra="tf",
             provides=(*GRADIENT_CAPS, GUIDED_GRADIENTS), aliases=("keras", "tensorflow", "tf"),
             description="TensorFlow 2: Keras model, tf.Module or callable returning logits (NHWC)")
    register("tf1", "salplug.backends.tf1:TF1Adapter", framework="tensorflow", extra="tf",
             provides=(*GRADIENT_CAPS, GUIDED_GRADIENTS), aliases=("tensorflow1", "tf_compat_v1"),
             description="TensorFlow 1 graph: salplug.TF1Model(graph, session, x, y, ...) (NHWC)")


def _is_call_model_function(model: Any) -> bool:
    if not (inspect.isfunction(model) or inspect.ismethod(model)):
        return False
    params = inspect.signature(model).parameters
    return "expected_keys" in params or len(params) >= 3


def _is_instance(model: Any, module: Any, *path: str) -> bool:
    """isinstance(model, module.<path>) for a module already imported; False on any doubt."""
    obj = module
    try:
        for part in path:
            obj = getattr(obj, part)
        return isinstance(obj, type) and isinstance(model, obj)
    except Exception:  # noqa: BLE001 - detection never fails
        return False


def _detect_tensorflow(model: Any) -> str | None:
    from .tf1_model import TF1Model

    if isinstance(model, TF1Model):
        return "tf1"
    keras = sys.modules.get("keras")
    if keras is not None and _is_instance(model, keras, "layers", "Layer"):
        try:
            on_tf = keras.backend.backend() == "tensorflow"
        except Exception:  # noqa: BLE001
            on_tf = False
        if on_tf:
            return "tf2"
    tf_keras = sys.modules.get("tf_keras")
    if tf_keras is not None and _is_instance(model, tf_keras, "layers", "Layer"):
        return "tf2"
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        if _is_instance(model, tf, "compat", "v1", "Session"):
            return "tf1"
        if _is_instance(model, tf, "Module") or _is_instance(model, tf, "types", "experimental",
                                                             "GenericFunction"):
            return "tf2"
    return None


@hookimpl(trylast=True)
def detect_backend(model: Any) -> str | None:
    found = _detect_tensorflow(model)
    if found is not None:
        return found
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return "torch"
    if _is_call_model_function(model):
        return "callable"
    return None
