"""Picking the logits out of a model's output; shared by the framework backends."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ModelOutputError, ParameterError, TargetError


def select_logits(out: Any, is_tensor: Callable[[Any], bool]) -> Any:
    """The logits in ``out``: a tensor, a tuple/list (first item), a dict ("logits"), or ``.logits``."""
    if is_tensor(out):
        return out
    if isinstance(out, (tuple, list)) and out and is_tensor(out[0]):
        return out[0]
    if isinstance(out, Mapping):
        if "logits" in out:
            return out["logits"]
        raise ModelOutputError(
            f"The model returned a dict with keys {sorted(map(str, out))}; pass "
            f"output='<key>' (or a callable) to say which entry holds the logits."
        )
    if is_tensor(getattr(out, "logits", None)):
        return out.logits
    raise ModelOutputError(
        f"The model returned {type(out).__name__}, not a tensor; pass output= an index, a key "
        f"or a callable that selects the logits tensor."
    )


def make_output_selector(output: Any, default: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A selector from the backend option ``output``: None (``default``), an index/key, or a callable."""
    if output is None:
        return default
    if callable(output):
        return output
    if isinstance(output, (int, str)):
        def select(out: Any) -> Any:
            try:
                return out[output]
            except (KeyError, IndexError, TypeError) as exc:
                raise ModelOutputError(f"output={output!r} does not select anything in the model's "
                                       f"{type(out).__name__} output: {exc}") from exc
        return select
    raise ParameterError(f"output must be None, an int, a str or a callable; got {output!r}.")


def class_target_error(per_input: tuple) -> TargetError:
    """A class target for an output that is not (N, classes); ``per_input``: the output's shape
    after the batch axis (None where unknown), shown as the caller sees it ("(N, ...)")."""
    dims = [None if d is None else int(d) for d in per_input]
    seen = f"(N, {', '.join('?' if d is None else str(d) for d in dims)})" if dims else "(N,)"
    if all(d == 1 for d in dims):
        return TargetError(f"A class target needs (N, classes) logits, but the model returns one score per input "
                           f"(output shape {seen}). Pass target=None to explain that score (a config: target = "
                           f"\"top1\", the default; the CLI: --target top1).")
    return TargetError(f"Class targets need (N, classes) logits, but the model output has shape {seen} for N "
                       f"inputs. Pass a target callable that reduces it to one value per sample.")
