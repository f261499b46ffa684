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


def _is_call_model_function(model: Any) -> bool:
    if not (inspect.isfunction(model) or inspect.ismethod(model)):
        return False
    params = inspect.signature(model).parameters
    return "expected_keys" in params or len(params) >= 3


@hookimpl(trylast=True)
def detect_backend(model: Any) -> str | None:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return "torch"
    if _is_call_model_function(model):
        return "callable"
    return None
