"""Guided-backprop ReLU gradients for PyTorch (Springenberg et al. 2015), without touching the model.

Inside :func:`guided_relu_gradients` a ``TorchFunctionMode`` watches every torch call made in
this thread. Calls that are a ReLU -- ``nn.ReLU``/``nn.ReLU6`` modules (they call ``F.relu`` /
``F.hardtanh(0, 6)``), ``F.relu``, ``F.relu6``, ``torch.relu``, ``Tensor.relu``, their in-place
forms, ``clamp``/``clip``/``clamp_min`` with ``min=0``, ``hardtanh`` with ``min_val=0`` and
``threshold(x, 0, 0)`` -- backpropagate the incoming gradient only where the ReLU was active
(``0 < input``, and ``input < max`` with an upper bound) AND the gradient is positive. Where
torch's own backward already applies that strict mask (relu, relu6, hardtanh, threshold), the
original call runs and a hook on its output clears the negative gradients arriving there (cheap:
no Python autograd function); clamp and clip, whose own backward keeps the bounds themselves,
and in-place calls on a view run through an autograd function that applies the whole rule.
Every other call runs unchanged, and so does any call with a lower bound other than zero or a
non-number bound. Nothing is patched: leaving the context pops the mode.

Not seen: code Python does not run (TorchScript, ``torch.compile``'d graphs, C++ extensions).
The context counts the ReLUs it overrode and warns when there were none.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode

__all__ = ["GuidedReLUMode", "guided_relu_gradients"]

def _spec(names: tuple[str, ...], defaults: dict[str, Any], **fixed: Any) -> tuple:
    return names, defaults, fixed


# func -> (parameter names, defaults, fixed values); the bounds are normalised below.
_RELU = _spec(("input", "inplace"), {"inplace": False}, min=0, max=None)
_RELU_OUT = _spec(("input",), {}, min=0, max=None, inplace=False)
_RELU_IN = _spec(("input",), {}, min=0, max=None, inplace=True)
_RELU6 = _spec(("input", "inplace"), {"inplace": False}, min=0, max=6.0)
_RELU6_OUT = _spec(("input",), {}, min=0, max=6.0, inplace=False)
_RELU6_IN = _spec(("input",), {}, min=0, max=6.0, inplace=True)
_HARDTANH = _spec(("input", "min_val", "max_val", "inplace"),
                  {"min_val": -1.0, "max_val": 1.0, "inplace": False})
_HARDTANH_OUT = _spec(("input", "min_val", "max_val"), {"min_val": -1.0, "max_val": 1.0}, inplace=False)
_HARDTANH_IN = _spec(("input", "min_val", "max_val"), {"min_val": -1.0, "max_val": 1.0}, inplace=True)
_CLAMP_OUT = _spec(("input", "min", "max"), {"min": None, "max": None}, inplace=False)
_CLAMP_IN = _spec(("input", "min", "max"), {"min": None, "max": None}, inplace=True)
_CLAMP_MIN_OUT = _spec(("input", "min"), {}, max=None, inplace=False)
_CLAMP_MIN_IN = _spec(("input", "min"), {}, max=None, inplace=True)
_THRESHOLD = _spec(("input", "threshold", "value", "inplace"), {"inplace": False}, max=None)
_THRESHOLD_OUT = _spec(("input", "threshold", "value"), {}, max=None, inplace=False)
_THRESHOLD_IN = _spec(("input", "threshold", "value"), {}, max=None, inplace=True)


def _table() -> dict[Callable[..., Any], tuple]:
    nn_ops = torch._C._nn
    entries = [
        (F.relu, _RELU), (torch.relu, _RELU_OUT), (torch.Tensor.relu, _RELU_OUT),
        (torch.relu_, _RELU_IN), (torch.Tensor.relu_, _RELU_IN),
        (F.relu6, _RELU6), (getattr(nn_ops, "relu6", None), _RELU6_OUT),
        (getattr(nn_ops, "relu6_", None), _RELU6_IN),
        (F.hardtanh, _HARDTANH), (nn_ops.hardtanh, _HARDTANH_OUT), (nn_ops.hardtanh_, _HARDTANH_IN),
        (torch.clamp, _CLAMP_OUT), (torch.Tensor.clamp, _CLAMP_OUT),
        (torch.clip, _CLAMP_OUT), (torch.Tensor.clip, _CLAMP_OUT),
        (torch.clamp_, _CLAMP_IN), (torch.Tensor.clamp_, _CLAMP_IN),
        (torch.clip_, _CLAMP_IN), (torch.Tensor.clip_, _CLAMP_IN),
        (torch.clamp_min, _CLAMP_MIN_OUT), (torch.Tensor.clamp_min, _CLAMP_MIN_OUT),
        (torch.clamp_min_, _CLAMP_MIN_IN), (torch.Tensor.clamp_min_, _CLAMP_MIN_IN),
        (F.threshold, _THRESHOLD), (torch.threshold, _THRESHOLD_OUT), (torch.threshold_, _THRESHOLD_IN),
    ]
    return {func: spec for func, spec in entries if func is not None}


_FUNCS = _table()
# ReLUs whose backward masks strictly (0 < input, input < upper: relu's and hardtanh's and
# threshold's kernels): for them a hook clearing negative output gradients gives the guided
# gradient. clamp's backward keeps the bounds themselves, so clamp and clip run _GuidedReLU.
_STRICT_MASK = frozenset(f for f in (
    F.relu, torch.relu, torch.Tensor.relu, torch.relu_, torch.Tensor.relu_,
    F.relu6, getattr(torch._C._nn, "relu6", None), getattr(torch._C._nn, "relu6_", None),
    F.hardtanh, torch._C._nn.hardtanh, torch._C._nn.hardtanh_,
    F.threshold, torch.threshold, torch.threshold_) if f is not None)


def _positive_part(grad: torch.Tensor) -> torch.Tensor:
    return grad.clamp_min(0.0)
# torch's relu backward keeps its output; hardtanh, clamp and threshold keep their input.
_SAVES_OUTPUT = frozenset({F.relu, torch.relu, torch.Tensor.relu})


def _bind(spec: tuple, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """Arguments of a call by parameter name (None when they do not fit the spec)."""
    names, defaults, fixed = spec
    if len(args) > len(names):
        return None
    bound = dict(zip(names, args))
    for key, value in kwargs.items():
        key = "input" if key == "self" else key
        if key not in names or key in bound:
            return None
        bound[key] = value
    for name in names:
        if name not in bound:
            if name not in defaults:
                return None
            bound[name] = defaults[name]
    bound.update(fixed)
    return bound


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def relu_like(func: Callable[..., Any], args: tuple, kwargs: dict[str, Any] | None) -> tuple[torch.Tensor, float | None, bool] | None:
    """``(input, upper bound or None, in place)`` when the call is a ReLU, else None.

    A call is a ReLU when its lower bound is the number 0 (for ``threshold``: threshold 0 and
    value 0) and its upper bound is absent, infinite, or a positive number.
    """
    spec = _FUNCS.get(func)
    if spec is None:
        return None
    bound = _bind(spec, tuple(args), dict(kwargs or {}))
    if bound is None:
        return None
    x = bound["input"]
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        return None
    if "threshold" in bound:
        if _number(bound["threshold"]) != 0.0 or _number(bound["value"]) != 0.0:
            return None
        lo, hi = 0.0, None
    else:
        lo = _number(bound.get("min", bound.get("min_val")))
        raw_hi = bound.get("max", bound.get("max_val"))
        hi = None if raw_hi is None else _number(raw_hi)
        if lo != 0.0 or (raw_hi is not None and (hi is None or hi <= 0.0)):
            return None
        if hi is not None and math.isinf(hi):
            hi = None
    inplace = bound["inplace"]
    if not isinstance(inplace, bool):
        return None
    return x, hi, inplace


class _GuidedReLU(torch.autograd.Function):
    """Forward: the original call. Backward: grad where 0 < out (< upper) and grad > 0."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, upper: float | None, inplace: bool, save_input: bool,
                call: Callable[[], torch.Tensor]) -> torch.Tensor:
        out = call()
        if inplace:
            ctx.mark_dirty(x)
        ctx.upper = upper
        # Save what torch's own backward saves, so the same later in-place edits stay legal.
        ctx.save_for_backward(x if save_input and not inplace else out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None, None]:
        (saved,) = ctx.saved_tensors
        # saved is the input or the output: out = clamp(input, 0, upper), so out > 0 iff
        # input > 0 and out < upper iff input < upper; either gives the same mask. torch's
        # own ReLU/hardtanh backward kernels apply it in one pass, then negatives are zeroed.
        if ctx.upper is None:
            passed = torch.ops.aten.threshold_backward(grad, saved, 0)
        else:
            passed = torch.ops.aten.hardtanh_backward(grad, saved, 0.0, ctx.upper)
        return passed.clamp_min_(0.0), None, None, None, None


class GuidedReLUMode(TorchFunctionMode):
    """A torch function mode that gives every ReLU call the guided-backprop gradient.

    ``count`` is the number of ReLU calls overridden so far.
    """

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        if func in _FUNCS and torch.is_grad_enabled():
            found = relu_like(func, args, kwargs)
            if found is not None and found[0].requires_grad:
                x, upper, inplace = found
                self.count += 1
                if func in _STRICT_MASK and not (inplace and x._is_view()):  # (a view's hook would not see
                    # the gradient reaching its base)
                    # torch's own backward already keeps the gradient only where 0 < input (< upper):
                    # negative gradients arriving at the output are zeroed first, by a hook
                    out = func(*args, **kwargs)
                    out.register_hook(_positive_part)
                    return out
                out = _GuidedReLU.apply(x, upper, inplace, func not in _SAVES_OUTPUT,
                                        lambda: func(*args, **kwargs))
                if inplace and out is not x:  # the caller holds x: keep it the result
                    return x
                return out
        return func(*args, **kwargs)


@contextlib.contextmanager
def guided_relu_gradients(model: Any = None, *, warn: bool = True) -> Iterator[GuidedReLUMode]:
    """Within the block, ReLUs run in this thread backpropagate guided gradients.

    Parameters
    ----------
    model : the model being explained (only named in the warning; it is never changed).
    warn : warn when the block ran no ReLU (e.g. a model without ReLUs, or one whose ReLUs
        run in TorchScript/compiled code), since the gradients are then the plain ones.

    Yields
    ------
    The active :class:`GuidedReLUMode` (its ``count`` says how many ReLUs it overrode).
    """
    mode = GuidedReLUMode()
    with mode:  # TorchFunctionMode.__exit__ pops the mode even when the block raises
        yield mode
    if warn and mode.count == 0:
        name = type(model).__name__ if model is not None else "the model"
        warnings.warn(
            f"Guided backprop found no ReLU call while running {name}: the result equals the "
            f"plain input gradient. Models without ReLU (GELU, SiLU, ...) have nothing to guide; "
            f"ReLUs inside TorchScript or torch.compile code cannot be intercepted (run the "
            f"eager Python model instead).",
            RuntimeWarning,
            stacklevel=3,
        )
