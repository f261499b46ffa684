"""``explain()`` and ``Explainer``: resolve the backend and the method, check everything, run."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import ModelOutputError, ParameterError, SalplugError, TargetError, did_you_mean
from .plugins import PluginHost, get_host
from .registry import backend_failure, call_plugin, instantiate, keyword_parameters, resolve_keywords
from .types import Attribution, Context, MethodOutput, Targets

DEFAULT_BATCH_SIZE = 16
CHECKING = "checking the parameters (its check())"


def create_adapter(host: PluginHost, model: Any, backend: str = "auto", **options: Any) -> Any:
    """Wrap ``model`` in the adapter of ``backend`` ("auto" asks the detect_backend hook)."""
    if backend in (None, "auto"):
        backend = host.detect_backend(model, registered=True)
        if backend is None:
            raise SalplugError(
                f"Could not tell which backend runs a model of type {type(model).__module__}."
                f"{type(model).__qualname__}. Pass backend= one of: "
                f"{', '.join(host.backends.names())}."
            )
    component = host.backends.get(backend)
    adapter_cls = component.load()
    _check_backend_options(component.name, adapter_cls, options)
    try:
        adapter = adapter_cls(model, **options)
    except SalplugError:
        raise
    except Exception as exc:  # noqa: BLE001 - one paragraph naming the backend (and its plugin)
        raise backend_failure(component, exc) from exc
    adapter.name = component.name
    return adapter


@functools.lru_cache(maxsize=256)
def backend_option_names(adapter_cls: Any) -> tuple[list[str], bool]:
    """(the option names ``adapter_cls(model, **options)`` accepts, whether it takes **kwargs)."""
    try:
        params = list(inspect.signature(adapter_cls).parameters.values())
    except (TypeError, ValueError):  # no signature to read: let the call decide
        return [], True
    names, var_kw = [], False
    for i, p in enumerate(params):
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and i > 0):
            names.append(p.name)  # the first positional parameter takes the model
    return names, var_kw


def _check_backend_options(name: str, adapter_cls: Any, options: dict[str, Any]) -> None:
    accepted, var_kw = backend_option_names(adapter_cls)
    unknown = [key for key in options if key not in accepted]
    if unknown and not var_kw:
        key = unknown[0]
        raise ParameterError(
            f"The {name!r} backend has no option {key!r}.{did_you_mean(key, accepted)} "
            f"Accepted: {', '.join(accepted) or 'none'}."
        )


def _hint_backend_options(adapter: Any, method: Any, params: dict[str, Any]) -> None:
    """Refuse a backend option passed as a method parameter, saying where it belongs."""
    accepted_by_method, var_kw = method_parameters(method)
    if var_kw:
        return
    options, _ = backend_option_names(type(adapter))
    for key in params:
        if key not in accepted_by_method and key in options:
            raise ParameterError(
                f"{key!r} is an option of the {adapter.name!r} backend, not a parameter of method "
                f"{method.name!r}: pass it as salplug.Explainer(model, {key}=...) or "
                f"salplug.explain(..., backend_options={{{key!r}: ...}})."
            )


def load_method(host: PluginHost, name: str, adapter: Any) -> Any:
    """Instantiate method ``name`` after checking the adapter provides what it requires."""
    return instantiate(host.methods.get(name), adapter)


def method_parameters(method: Any) -> tuple[dict[str, Any], bool]:
    """(accepted keyword parameters with their defaults, whether **kwargs is accepted)."""
    return keyword_parameters(method.explain)


def resolve_params(method: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Check ``params`` names against the method's signature; return them with defaults filled."""
    return resolve_keywords(method.explain, params, f"Method {method.name!r}")


def run_method(ctx: Context, name: str, x: np.ndarray, targets: Targets,
               params: dict[str, Any], *, checked: bool = False, host_values: bool = True) -> MethodOutput:
    """Validate (unless already ``checked``) and run one registered method on canonical ``x``.

    A method's device array (``ctx.on_device``) lands in ``out.device_values``; ``out.values`` is
    its numpy copy, or (``host_values=False``) the device array itself, checked where it lies."""
    method = load_method(ctx.host, name, ctx.adapter)
    full = resolve_params(method, params)
    if not checked and hasattr(method, "check"):
        call_plugin(ctx.host.methods.get(name), CHECKING, method.check, ctx, x, targets, **full)
    out = method.explain(ctx, x, targets, **full)
    if not isinstance(out, MethodOutput):
        out = MethodOutput(out)
    who = f"Method {method.name!r} (from {ctx.host.methods.get(name).provider})"
    if not all(hasattr(ctx.adapter, helper) for helper in ("dtype_kind", "all_finite")):
        host_values = True  # an adapter that cannot check arrays where they lie: checked as numpy
    if ctx.on_device and not isinstance(out.values, np.ndarray) and hasattr(out.values, "shape"):
        out.device_values = out.values
        if host_values:
            out.values = ctx.to_numpy(out.values)
    if out.device_values is not None and out.values is out.device_values:
        kind, finite = ctx.adapter.dtype_kind(out.values), ctx.adapter.all_finite
    else:
        try:
            out.values = np.asarray(out.values)
            kind = out.values.dtype.kind
        except Exception:  # noqa: BLE001 - ragged or odd objects
            kind = "O"
        finite = _all_finite
    if kind not in "fiub":
        raise ModelOutputError(f"{who} returned {type(out.values).__name__}, not numbers; a method "
                               f"must return one numeric map per input.")
    shape = tuple(out.values.shape)
    if shape[:1] != x.shape[:1]:
        raise ModelOutputError(
            f"{who} returned values of shape {shape} for a batch of "
            f"{x.shape[0]} inputs; a method must return one map per input (batch first)."
        )
    _check_map_shape(who, shape, x.shape, coarse=_asks_coarse(full))
    if not finite(out.values):
        raise ModelOutputError(f"{who} returned NaN or infinite values; the model's outputs or "
                               f"gradients may be non-finite for this input, or the method is wrong.")
    out.extras.setdefault("params", full)
    return out


def check_progress(progress: Any) -> bool:
    """``progress`` as a bool (None: off); anything else is refused."""
    if progress is None:
        return False
    if not isinstance(progress, (bool, np.bool_)):
        raise ParameterError(f"progress must be True or False, got {progress!r}.")
    return bool(progress)


def _asks_coarse(params: dict[str, Any]) -> bool:
    """should_resize=False among the parameters, or among a wrapped method's (SmoothGrad's base_params)."""
    return params.get("should_resize") is False or any(
        isinstance(v, dict) and _asks_coarse(v) for v in params.values())


def _all_finite(values: np.ndarray) -> bool:
    return bool(np.isfinite(values).all())


def _check_map_shape(who: str, shape: tuple[int, ...], x_shape: tuple[int, ...], coarse: bool) -> None:
    """Images (N, H, W, C): (N, H, W) or (N, H, W, 1|3|C); other inputs: x's shape, or without its
    last axis. ``coarse`` (a method called with should_resize=False) lets H, W differ."""
    if len(x_shape) == 4:
        n, h, w, c = x_shape
        spatial_ok = coarse or tuple(shape[1:3]) == (h, w)
        ok = spatial_ok and (len(shape) == 3 or (len(shape) == 4 and shape[3] in (1, 3, c)))
        want = (f"(N, H, W) or (N, H, W, k), channels last: here ({n}, {h}, {w}) or ({n}, {h}, {w}, k) "
                f"with k in {sorted({1, 3, c})}")
    else:
        ok = tuple(shape) == tuple(x_shape) or (len(x_shape) > 2 and tuple(shape) == tuple(x_shape[:-1]))
        want = str(tuple(x_shape))
    if not ok:
        raise ModelOutputError(f"{who} returned values of shape {tuple(shape)} for canonical inputs of "
                               f"shape {tuple(x_shape)}; a method must return one map per input, {want}.")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_top1(target: Any) -> bool:
    """True for the targets that mean "each sample's highest output"."""
    return target is None or (isinstance(target, str) and target.lower() in ("top1", "top-1", "auto"))


def resolve_targets(adapter: Any, x: np.ndarray, target: Any, batch_size: int, inputs: Any = None) -> Targets:
    """Turn the user's ``target`` into per-sample Targets, checking range before model work.

    ``None`` or ``"top1"`` picks each sample's highest output (one forward pass, over
    ``inputs`` when given: the same rows as ``x``, e.g. already on the adapter's device).
    """
    n = x.shape[0]
    supports = getattr(adapter, "supports_targets", True)
    if callable(target) and not isinstance(target, type):
        if not supports:
            raise TargetError(f"The {adapter.name!r} backend cannot apply a target callable: it explains the "
                              f"scalar its model returns.")
        if not getattr(adapter, "supports_target_callables", True):
            raise TargetError(f"The {adapter.name!r} backend cannot apply a target callable; give a class "
                              f"index (an int, or one per sample).")
        return Targets(fn=target)
    if is_top1(target):
        if not supports:
            return Targets.none()
        rows = x if inputs is None else inputs
        outputs = [np.asarray(adapter.outputs(rows[s])) for s in _slices(n, batch_size)]
        if all(o.size == len(o) for o in outputs):  # one score per sample: explain that score
            return Targets.none()
        return Targets(np.concatenate([o.reshape(len(o), -1).argmax(axis=1) for o in outputs]))
    if not supports:
        raise TargetError(
            f"The {adapter.name!r} backend explains the scalar its model returns; it takes no "
            f"target (got {target!r}). Build the class selection into the model's output "
            f"(e.g. a tf1 `y` of one scalar per example), or give the backend logits "
            f"(tf1: logits as `y`; callable: the backend option target_arg)."
        )
    if hasattr(target, "detach"):  # a torch tensor
        target = target.detach().cpu().numpy()
    elif not isinstance(target, (np.ndarray, Sequence, str)) and hasattr(target, "__array__"):
        try:  # a TensorFlow (eager) tensor, a JAX array, ...
            target = np.asarray(target)
        except Exception as exc:  # noqa: BLE001 - e.g. a symbolic tf1 tensor has no value
            raise TargetError(f"target {type(target).__name__} has no value to read ({exc}); give ints, "
                              f"one per sample, or a numpy array.") from None
    if isinstance(target, np.ndarray) and target.ndim == 0:  # a 0-d array or tensor: one class for all
        target = target.item()
    if _is_int(target):
        if not 0 <= int(target) <= np.iinfo(np.int64).max:  # negative, or no int64 for it
            raise _out_of_range(adapter, int(target))
        indices = np.full(n, int(target), dtype=np.int64)
    else:
        if isinstance(target, str) or not isinstance(target, (Sequence, np.ndarray)):
            raise TargetError(
                f"target must be an int, one int per sample, a callable on the model output, "
                f"'top1' or None; got {type(target).__name__} {target!r}."
            )
        if not isinstance(target, np.ndarray) and all(_is_int(t) for t in target):
            # Python ints beyond int64 make numpy pick float or object: report the value itself
            wide = np.iinfo(np.int64)
            huge = [int(t) for t in target if not wide.min <= int(t) <= wide.max]
            if huge:
                raise _out_of_range(adapter, huge[0])
        arr = np.asarray(target)
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise TargetError(f"target as a list must hold one int per sample; got {target!r}.")
        if len(arr) != n:
            raise TargetError(f"target has {len(arr)} entries but the batch has {n} samples; give one per sample.")
        if arr.dtype.kind == "u" and int(arr.max()) > np.iinfo(np.int64).max:  # would wrap to negatives
            raise _out_of_range(adapter, int(arr[arr > np.iinfo(np.int64).max][0]))
        indices = arr.astype(np.int64)
    k = adapter.num_outputs()
    bad = indices[(indices < 0) | ((indices >= k) if k is not None else False)]
    if bad.size:
        raise _out_of_range(adapter, int(bad[0]))
    return Targets(indices)


def _out_of_range(adapter: Any, value: int) -> TargetError:
    k = adapter.num_outputs()
    limit = f"0..{k - 1}" if k is not None else "non-negative"
    how = getattr(adapter, "num_outputs_guess", None)  # where an unverified class count came from
    hint = (f" ({k} is a guess from {how}; if the model has more outputs, pass the backend option "
            f"num_classes)") if how else ""
    return TargetError(f"target {value} is out of range: the model's output classes are {limit}{hint}.")


def _slices(total: int, size: int):
    for start in range(0, total, max(1, size)):
        yield slice(start, min(start + size, total))


class Explainer:
    """Keeps a model's adapter for repeated explanations.

    Parameters
    ----------
    model : the model (torch module, Keras model, a call_model_function, ...).
    backend : backend name or "auto".
    batch_size : rows per model call for inner work (IG steps, noise samples, windows); by
        default the backend picks it per input (``adapter.batch_size_for``, else its
        ``default_batch_size``).
    progress : show progress bars on long work.
    host : plugin host to use (default: the process-wide one).
    **backend_options : passed to the backend (e.g. ``device``, ``output`` for torch).
    """

    def __init__(self, model: Any, backend: str = "auto", *, batch_size: int | None = None,
                 progress: bool = False, host: PluginHost | None = None, **backend_options: Any):
        self.host = host or get_host()
        self.adapter = create_adapter(self.host, model, backend, **backend_options)
        if batch_size is not None and (not _is_int(batch_size) or batch_size < 1):
            raise ParameterError(f"batch_size must be a positive int, got {batch_size!r}.")
        self.batch_size = batch_size or getattr(self.adapter, "default_batch_size", DEFAULT_BATCH_SIZE)
        self._auto_batch = batch_size is None  # then the adapter may size batches per input
        self.progress = check_progress(progress)

    @property
    def backend(self) -> str:
        return self.adapter.name

    def explain(self, x: Any, method: str = "gradients", *, target: Any = None, layout: str | None = None,
                batch_size: int | None = None, progress: bool | None = None, **params: Any) -> Attribution:
        """Explain ``x`` (one input or a batch) with ``method``; see ``salplug.explain``."""
        m = load_method(self.host, method, self.adapter)
        _hint_backend_options(self.adapter, m, params)
        full = resolve_params(m, params)
        if batch_size is not None and (not _is_int(batch_size) or batch_size < 1):
            raise ParameterError(f"batch_size must be a positive int, got {batch_size!r}.")
        canonical, info = self.adapter.to_canonical(x, layout)
        size = batch_size or self.batch_size
        progress = self.progress if progress is None else check_progress(progress)
        ctx = Context(self.adapter, self.host, size, progress, info)
        if hasattr(m, "check"):  # parameter values, before the top-1 forward pass
            call_plugin(self.host.methods.get(m.name), CHECKING, m.check, ctx, canonical, Targets.none(), **full)
        if batch_size is None and self._auto_batch and hasattr(self.adapter, "batch_size_for"):
            ctx.batch_size = size = self.adapter.batch_size_for(canonical)
        scope = getattr(self.adapter, "call_scope", None)  # per-call state of a backend (tf1: weights read once)
        with scope() if scope is not None else contextlib.nullcontext():
            if is_top1(target) and getattr(m, "rows_are_inputs", False) and getattr(self.adapter, "top1_in_pass",
                                                                                     False):
                targets = Targets.top1(len(canonical))  # chosen in the explained pass: no pass of its own
            else:
                # a caller's tensor already on the adapter's device: the top-1 pass reads it there
                targets = resolve_targets(self.adapter, canonical, target, size,
                                          inputs=info.device_values if ctx.on_device else None)
            # a result for a caller's device tensor stays there; its numpy copy is made when read
            keep = info.kind != "numpy" and getattr(self.adapter, "keep_on_device", False)
            out = run_method(ctx, m.name, canonical, targets, full, checked=True, host_values=not keep)
            targets = targets.resolved()
        extras = {k: v for k, v in out.extras.items() if k != "params"}
        if out.values is out.device_values and out.device_values is not None:  # kept on the device
            device_values, to_host = out.device_values, self.adapter.to_host
            values = self.adapter.from_canonical(device_values, info)
            canonical_values: Any = lambda: np.asarray(to_host(device_values), dtype=np.float32)  # noqa: E731
        else:
            canonical_values = np.asarray(out.values, dtype=np.float32)
            values = self.adapter.from_canonical(canonical_values, info)
            if isinstance(values, np.ndarray) and np.shares_memory(values, canonical_values):
                values = values.copy()  # the caller's array, never the one visualizers and metrics read
        return Attribution(
            values=values,
            canonical=canonical_values,
            method=m.name,
            params=full,
            target=targets.describe(),
            backend=self.adapter.name,
            extras=extras,
            batched=info.batched,
            host=self.host,
        )


def explain(model: Any, x: Any, method: str = "gradients", *, target: Any = None, backend: str = "auto",
            batch_size: int | None = None, layout: str | None = None, progress: bool = False,
            host: PluginHost | None = None, backend_options: dict[str, Any] | None = None,
            **params: Any) -> Attribution:
    """Compute a saliency map.

    Parameters
    ----------
    model : torch module, Keras model, TF1 graph bundle or call_model_function.
    x : one input or a batch, as you hold it (numpy NHWC/HWC, torch NCHW/CHW, ...).
    method : registered method name (``salplug list`` shows them), e.g. "integrated_gradients".
    target : class index, one index per sample, a callable on the model output, or None (top-1).
    backend : "auto", "torch", "tf2", "tf1", "callable" or a plugin's backend.
    batch_size : rows per model call for the method's inner work (default: the backend's choice
        for this input size and device).
    layout : the input's layout when the default guess is wrong ("NHWC", "NCHW", "HWC", "CHW").
    **params : the method's parameters (e.g. ``steps=50``).

    Returns
    -------
    Attribution with ``values`` in the input's layout and type.
    """
    explainer = Explainer(model, backend, batch_size=batch_size, progress=progress, host=host,
                          **(backend_options or {}))
    return explainer.explain(x, method, target=target, layout=layout, **params)
