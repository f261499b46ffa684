"""TensorFlow 2 backend: Keras 3 / ``tf.keras`` models, ``tf.Module``s and callables returning logits.

Layout: the caller's arrays are taken in the model's own layout: channels last (NHWC, HWC for
one image, already canonical), or channels first (NCHW, CHW) for a Keras model whose first
convolution has ``data_format="channels_first"``. Such a model gets its inputs transposed back
to NCHW, and its input gradients and (channels-first) layer values and gradients come back
channels last, so every method works on it; maps return in the input's layout. A
``tf.Tensor`` input gives ``tf.Tensor`` results on the input's device. Gradients come from ``tf.GradientTape`` watching the input only, so the
model's variables never get gradients and the model is never changed.

Gradient steps of Keras models and ``tf.Module``s run as ``tf.function`` concrete functions,
traced once per model, kind of step, input shape (batch left open) and layer, and kept while
the model lives: repeated ``explain()`` calls on the same model reuse them. Plain Python
callables run eagerly (pass ``compile=True`` to trace them too).

Grad-CAM layers are Keras layers named by ``name`` or by path (``"block/conv"``), nested
models included: while the step is traced (or run eagerly) the layer's ``call`` is wrapped to
capture its output, and restored right after; one capture runs at a time, and calls from other
threads pass through the wrapper untouched. Guided backprop traces the model inside
``gradient_override_map`` (see :mod:`salplug.backends.tf_guided`) and differentiates with
``tf.gradients``: every Relu/Relu6 op the model creates -- activation functions inside layers,
``ReLU`` layers, ``tf.nn.relu`` calls, inside ``tf.cond``/``tf.while_loop`` too --
backpropagates the guided gradient (ReLUs inside nested ``tf.function``s cannot, and are
warned about); the model's own gradients are untouched.

A Keras model's declared input shape is checked before any model call (every axis but the
batch for functional models; the rank and last axis for Sequential ones, as Keras does).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import re
import sys
import threading
import types
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

try:
    import tensorflow as tf
except ImportError as exc:  # pragma: no cover - exercised without tensorflow installed
    from ..errors import BackendUnavailableError

    raise BackendUnavailableError(
        'The tf2 backend needs TensorFlow. Install it with: pip install "salplug[tf]"'
    ) from exc

from ..errors import (InputError, LayerError, ModelOutputError, ParameterError, SalplugError, TargetError,
                      did_you_mean)
from ._batching import TF_CPU_ROWS, tf_rows
from ._outputs import class_target_error, make_output_selector as _make_selector, select_logits
from ..layout import (check_channels, check_image_rank, default_layout, numpy_to_canonical,
                      read_array)
from ..types import GUIDED_GRADIENTS, INPUT_GRADIENTS, LAYER_GRADIENTS, SCORES, InputInfo, Targets
from ._tf_arrays import tf_from_canonical
from .tf_guided import GUIDED_OVERRIDES, relu_counts

__all__ = ["TF2Adapter", "is_keras_layer", "keras_layers"]

_KERAS_PACKAGES = ("keras", "tf_keras")
_CONV2D = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D")
# model -> {key: _Step}; traced steps live as long as the model does (the latest few per model).
_TRACES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_STEPS_KEPT = 32  # traced steps kept per model (or per target callable): one per input size, kind, ...


class _Steps(collections.OrderedDict):
    """The latest ``_STEPS_KEPT`` steps by key: a model explained at ever new image sizes keeps
    one traced graph per size (about 2 MB each), so the oldest go."""

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            value = self[key]
            self.move_to_end(key)
        except KeyError:  # absent, or evicted by another thread meanwhile
            return default
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        while len(self) > _STEPS_KEPT:
            self.popitem(last=False)


# -- Keras helpers (no import: a Keras model means Keras is already in sys.modules) --------
def _class_names(obj: Any) -> set[str]:
    return {c.__name__ for c in type(obj).__mro__}


def is_keras_layer(obj: Any) -> bool:
    """True for a Keras 3 or tf_keras layer (models included)."""
    for name in _KERAS_PACKAGES:
        package = sys.modules.get(name)
        layer_cls = getattr(getattr(package, "layers", None), "Layer", None) if package else None
        if isinstance(layer_cls, type) and isinstance(obj, layer_cls):
            return True
    return False


def _keras_backend(obj: Any) -> str | None:
    """The Keras backend running ``obj`` ('tensorflow', 'jax', 'torch'), None if not Keras 3."""
    module = type(obj).__module__.split(".")[0]
    package = sys.modules.get("keras")
    if package is None or module == "tf_keras" or not is_keras_layer(obj):
        return None
    try:
        return package.backend.backend()
    except Exception:  # noqa: BLE001
        return None


def _children(layer: Any) -> list[Any]:
    if _class_names(layer) & {"Model", "Functional", "Sequential"} and hasattr(layer, "layers"):
        found = list(layer.layers)
    elif hasattr(layer, "_flatten_layers"):
        try:
            found = list(layer._flatten_layers(include_self=False, recursive=False))  # noqa: SLF001
        except TypeError:
            found = []
    else:
        found = []
    return [c for c in found if "InputLayer" not in _class_names(c)]


def _attribute_layers(obj: Any, prefix: str, seen: set[int], depth: int = 0) -> Iterator[tuple[str, Any]]:
    """Keras layers reachable through the attributes of a non-Keras object (a tf.Module)."""
    if depth > 6 or not hasattr(obj, "__dict__"):
        return
    for key, value in list(vars(obj).items()):
        if key.startswith("_"):
            continue
        if isinstance(value, Mapping):
            pairs = [(f"{prefix}{key}.{k}", v) for k, v in value.items()]
        elif isinstance(value, (list, tuple)):
            pairs = [(f"{prefix}{key}.{i}", v) for i, v in enumerate(value)]
        else:
            pairs = [(f"{prefix}{key}", value)]
        for name, item in pairs:
            if id(item) in seen:
                continue
            if is_keras_layer(item):
                seen.add(id(item))
                yield from _walk(item, f"{name}/", seen, own=name)
            elif isinstance(item, tf.Module):
                seen.add(id(item))
                yield from _attribute_layers(item, f"{name}.", seen, depth + 1)


def _walk(layer: Any, prefix: str, seen: set[int], own: str | None = None) -> Iterator[tuple[str, Any]]:
    yield (own or prefix.rstrip("/")), layer
    for child in _children(layer):
        if id(child) in seen:
            continue
        seen.add(id(child))
        yield from _walk(child, f"{prefix}{child.name}/", seen, own=f"{prefix}{child.name}")


def keras_layers(model: Any) -> list[tuple[str, Any]]:
    """(path, layer) for every Keras layer of ``model``, depth first, nested models included.

    Paths join layer names with '/' ("inner_model/conv2"); for a non-Keras ``tf.Module``
    they start from attribute names.
    """
    if is_keras_layer(model):
        found = []
        seen = {id(model)}
        for child in _children(model):
            if id(child) not in seen:
                seen.add(id(child))
                found.extend(_walk(child, f"{child.name}/", seen, own=child.name))
        return found
    if isinstance(model, tf.Module) or hasattr(model, "__dict__"):
        return list(_attribute_layers(model, "", {id(model)}))
    return []


def _leaves(model: Any) -> list[Any]:
    return [layer for _, layer in keras_layers(model) if not _children(layer)]


def _infer_num_classes(model: Any) -> int | None:
    """Units of the last Dense layer, when it is known to give the model's output: checked
    against the model's own outputs (functional models), or the last layer of a Sequential
    model. Else None: in a subclassed model only running it shows which layer gives the output."""
    outputs = _model_outputs(model)
    if outputs is None:
        layers = list(getattr(model, "layers", None) or []) if "Sequential" in _class_names(model) else []
        last = layers[-1] if layers else None
    else:
        last = None
        for layer in _leaves(model):
            if getattr(layer, "weights", None):
                last = layer
    if last is None or "Dense" not in _class_names(last):
        return None
    units = getattr(last, "units", None)
    if outputs is not None:
        if len(outputs) != 1 or len(tuple(outputs[0].shape)) != 2 or tuple(outputs[0].shape)[-1] != units:
            return None
    return int(units) if units else None


def _model_outputs(model: Any) -> list[Any] | None:
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    if outputs is None:
        return None
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def _input_info(model: Any) -> tuple[bool, int | None, bool]:
    """(is a 2-D convolutional network, its input channels when known, whether it takes
    channels-first (NCHW) input: its first convolution has data_format="channels_first")."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    conv = next((layer for layer in _leaves(model) if _class_names(layer) & set(_CONV2D)), None)
    first = getattr(conv, "data_format", "channels_last") == "channels_first"
    axis = 1 if first else -1
    if inputs and len(inputs) == 1 and len(inputs[0].shape) == 4:
        channels = inputs[0].shape[axis]
        return True, int(channels) if channels else None, first
    if conv is None:
        return False, None, False
    spec = getattr(conv, "input_spec", None)
    axes = getattr(spec, "axes", None) or {}
    channels = axes.get(axis, axes.get(3 if axis == -1 else axis))
    return True, int(channels) if channels else None, first


def _declared_input(model: Any) -> tuple[tuple[int | None, ...], bool] | None:
    """(the shape of a Keras model's single declared input, whether Keras holds inputs to all
    of it): functional models check every axis but the batch; Sequential ones only the rank
    (their last axis meets the first layer's weights). None when the model declares none."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not isinstance(inputs, (list, tuple)) or len(inputs) != 1:
        return None
    try:
        shape = tuple(None if d is None else int(d) for d in tuple(inputs[0].shape))
    except (TypeError, ValueError):
        return None
    if not shape:
        return None
    names = _class_names(model)
    return shape, "Functional" in names and "Sequential" not in names


def _to_channels_last(t: Any) -> np.ndarray:
    """A channels-first (N, C, H, W) result, as canonical (N, H, W, C) float32."""
    return np.ascontiguousarray(np.asarray(t, dtype=np.float32).transpose(0, 2, 3, 1))


# -- outputs and targets ------------------------------------------------------------------
def default_output_selector(out: Any) -> Any:
    """Pick the logits from a model's output: a tensor, tuple/list (first), dict ("logits")."""
    return select_logits(out, tf.is_tensor)


def make_output_selector(output: Any) -> Callable[[Any], Any]:
    return _make_selector(output, default_output_selector)


def _shape_text(shape: Any) -> str:
    dims = ["N" if i == 0 and d is None else ("?" if d is None else str(d)) for i, d in enumerate(shape)]
    return f"({', '.join(dims)}{',' if len(dims) == 1 else ''})"


def check_indices(idx: np.ndarray | None, k: int | None) -> None:
    if idx is None or k is None or idx.size == 0:
        return
    if idx.min() < 0 or idx.max() >= k:
        raise TargetError(f"target {int(idx.max() if idx.max() >= k else idx.min())} is out of "
                          f"range: the model has {k} output classes (0..{k - 1}).")


def select_scores(out: Any, idx: Any, fn: Callable[[Any], Any] | None, meta: dict[str, Any]) -> Any:
    """One scalar per row of the logits ``out`` (graph or eager)."""
    if not tf.is_tensor(out):
        raise ModelOutputError(f"The selected model output is {type(out).__name__}, not a tensor.")
    m = out.shape[0]
    if fn is not None:
        s = fn(out)
        if not tf.is_tensor(s):
            raise TargetError(f"The target callable must return a tensor with one scalar per sample; "
                              f"it returned {type(s).__name__}.")
        n = s.shape.num_elements()
        if s.shape.rank is not None and (s.shape.rank > 2 or (n is not None and m is not None and n != m)
                                         or (s.shape.rank == 2 and s.shape[1] not in (1, None))):
            raise TargetError(f"The target callable must return one scalar per sample ({m or 'N'} "
                              f"values); it returned shape {_shape_text(s.shape)}.")
        return tf.reshape(s, [-1])
    if idx is None:
        if out.shape[1:].num_elements() == 1:
            return tf.reshape(out, [-1])
        raise TargetError(f"The model output has shape {_shape_text(out.shape)}; give a target class.")
    if out.shape.rank != 2:
        raise class_target_error(tuple(out.shape[1:]) if out.shape.rank is not None else (None, None))
    meta["k"] = out.shape[1]
    if tf.executing_eagerly():
        check_indices(np.asarray(idx), out.shape[1])
    return tf.gather(out, idx, batch_dims=1)


# -- traced steps -------------------------------------------------------------------------
class _Step:
    """One gradient step (eager function or traced concrete function) and what tracing saw."""

    __slots__ = ("call", "meta")

    def __init__(self, call: Callable[..., Any], meta: dict[str, Any]) -> None:
        self.call, self.meta = call, meta


# Layers being captured: id(layer) -> (layer, had its own call, the original call, watchers:
# thread id -> stack of (tape, captured list)). One wrapper per layer, installed by the first
# capture and removed by the last; the lock guards only this table, never a forward pass.
_CAPTURES: dict[int, tuple[Any, bool, Any, dict[int, list]]] = {}
_CAPTURES_LOCK = threading.Lock()


def _wrapped_call(original: Any, watchers: dict[int, list]) -> Callable[..., Any]:
    @functools.wraps(original)
    def call(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        for tape, captured in watchers.get(threading.get_ident(), ()):  # this thread's captures only
            first = out[0] if isinstance(out, (tuple, list)) else out
            if tf.is_tensor(first):
                tape.watch(first)
            captured.append(first)
        return out
    return call


@contextlib.contextmanager
def _capture(layer: Any, tape: Any, captured: list[Any]) -> Iterator[None]:
    """While active, ``layer``'s outputs in this thread are watched by ``tape`` and appended to
    ``captured``; calls from other threads (their own captures included) are not."""
    me = threading.get_ident()
    with _CAPTURES_LOCK:
        entry = _CAPTURES.get(id(layer))
        if entry is None:
            had_own, original, watchers = "call" in vars(layer), layer.call, {}
            object.__setattr__(layer, "call", _wrapped_call(original, watchers))  # bypass Keras tracking
            entry = _CAPTURES[id(layer)] = (layer, had_own, original, watchers)
        mine = entry[3].setdefault(me, [])
        mine.append((tape, captured))
    try:
        yield
    finally:
        with _CAPTURES_LOCK:
            mine.pop()
            if not mine:
                del entry[3][me]
            if not entry[3]:
                del _CAPTURES[id(layer)]
                if entry[1]:
                    object.__setattr__(layer, "call", entry[2])
                else:
                    object.__delattr__(layer, "call")


def _make_body(kind: str, model_ref: Callable[[], Any], keras: bool, select: Callable[[Any], Any],
               fn: Callable[[Any], Any] | None, layer_ref: Callable[[], Any] | None, layer_name: Any,
               meta: dict[str, Any]) -> Callable[..., Any]:
    """The Python function of a step. It holds the model only weakly (traces live in a cache
    keyed by the model)."""

    def forward(x: Any) -> Any:
        model = model_ref()
        if model is None:  # pragma: no cover - the cache entry dies with the model
            raise ModelOutputError("The model was garbage-collected.")
        out = select(model(x, training=False) if keras else model(x))
        if not tf.is_tensor(out):
            raise ModelOutputError(f"The selected model output is {type(out).__name__}, not a tensor.")
        return out

    def body(x: Any, *rest: Any) -> Any:
        idx = rest[0] if rest else None
        if kind == "outputs":
            return forward(x)
        if kind == "scores":
            return select_scores(forward(x), idx, fn, meta)
        if kind == "gradients":
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(x)
                s = select_scores(forward(x), idx, fn, meta)
            grad = tape.gradient(s, x)
            if grad is None:
                raise ModelOutputError("The explained output does not depend on the input "
                                       "(its gradient is None).")
            return grad
        if kind == "guided":
            graph = tf.compat.v1.get_default_graph()
            with graph.gradient_override_map(GUIDED_OVERRIDES):
                s = select_scores(forward(x), idx, fn, meta)
            counts = relu_counts(graph, guide=True)  # ReLUs inside tf.cond/while bodies too
            meta["guided"], meta["nested"], meta["control"] = counts.guided, counts.nested, counts.control
            (grad,) = tf.gradients(s, [x])
            if grad is None:
                raise ModelOutputError("The explained output does not depend on the input "
                                       "(its gradient is None).")
            return grad
        if kind == "layer":
            captured: list[Any] = []
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                with _capture(layer_ref(), tape, captured):
                    out = forward(x)
                s = select_scores(out, idx, fn, meta)
            if len(captured) != 1:
                raise LayerError(f"Layer {layer_name!r} ran {len(captured)} times in one forward pass; "
                                 f"choose a layer that runs exactly once.")
            if not tf.is_tensor(captured[0]):
                raise LayerError(f"Layer {layer_name!r} returned {type(captured[0]).__name__}, not a tensor.")
            grad = tape.gradient(s, captured[0])
            if grad is None:
                raise LayerError(f"The explained output does not depend on layer {layer_name!r}.")
            return captured[0], grad
        raise AssertionError(kind)  # pragma: no cover

    return body


def _input_refused(x: np.ndarray, exc: BaseException) -> InputError:
    """Keras' own input check (a ValueError, maybe wrapped by autograph) as an InputError."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # Keras' terminal colours
    lines = [line.strip() for line in text.splitlines() if "incompatible" in line or "expected" in line]
    said = " ".join(lines) or text.strip().splitlines()[-1]
    return InputError(f"The model cannot take inputs of shape {tuple(x.shape)}: {said}")


def _salplug_error(exc: BaseException) -> SalplugError | None:
    """The innermost salplug error behind ``exc`` (itself, or down its cause/context chain), if
    any: autograph re-raises ours as new errors of the same class with its own text, the
    original one further down the chain."""
    found, seen = None, 0
    while exc is not None and seen < 20:
        if isinstance(exc, SalplugError):
            found = exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return found


def _weak(obj: Any) -> tuple[Callable[[], Any], bool]:
    """(a getter for ``obj``, whether it is held weakly)."""
    if isinstance(obj, types.MethodType):
        return (lambda: obj), False
    try:
        ref = weakref.ref(obj)
    except TypeError:
        return (lambda: obj), False
    return ref, True


def tf_device_name(device: Any) -> str | None:
    """A TensorFlow device name for ``device`` (torch-style names accepted), checked to exist."""
    if device is None:
        return None
    text = str(device).strip()
    low = text.lower()
    kind, _, index = low.partition(":")
    if kind in ("cpu", "cuda", "gpu") and (index == "" or index.isdigit()):
        name = f"/{'CPU' if kind == 'cpu' else 'GPU'}:{index or 0}"
    elif text.startswith("/"):
        name = text
    else:
        raise ParameterError(f"device {device!r} is not a device name; use 'cpu', 'cuda', 'cuda:1' or a "
                             f"TensorFlow name like '/GPU:0'.")
    available = [d.name for d in tf.config.list_logical_devices()]
    short = {n.split("device:")[-1].upper(): n for n in available}  # '/device:GPU:0' -> 'GPU:0'
    if name.lstrip("/").upper().split("DEVICE:")[-1] not in short:
        raise ParameterError(f"device {device!r}: TensorFlow sees no {name.lstrip('/')} on this machine; "
                             f"available: {', '.join(sorted(short)) or 'none'}.")
    return name


class TF2Adapter:
    """A TensorFlow 2 model as a salplug ``ModelAdapter``.

    Parameters
    ----------
    model : a Keras model (Keras 3 on the TensorFlow backend, or ``tf.keras``/tf_keras), a
        ``tf.Module`` or any callable taking an NHWC ``tf.Tensor`` and returning logits.
    output : selects the logits from a tuple/dict output (index, key or callable).
    num_classes : number of outputs, for early target checks (default: the output width of a
        functional model ending in a Dense layer, or a Sequential one's last Dense layer; else
        unknown, and targets are checked against the output width once the step is traced).
    compile : trace gradient steps with ``tf.function`` (default: yes for Keras models and
        ``tf.Module``s, no for other callables). Guided backprop always traces.
    device : where the steps run: ``"cpu"``, ``"cuda"``/``"gpu"`` (first GPU), ``"cuda:1"``, or
        a TensorFlow device name like ``"/GPU:1"`` (default: TensorFlow's own placement).
    """

    name = "tf2"
    provides = frozenset({SCORES, INPUT_GRADIENTS, LAYER_GRADIENTS, GUIDED_GRADIENTS})
    default_batch_size = TF_CPU_ROWS
    supports_targets = True

    def __init__(self, model: Any, *, output: Any = None, num_classes: int | None = None,
                 compile: bool | None = None, device: str | None = None) -> None:
        self.device = tf_device_name(device)
        if not callable(model):
            raise ParameterError(
                f"The tf2 backend needs a Keras model, a tf.Module or a callable returning logits, "
                f"got {type(model).__name__}."
            )
        if compile is not None and not isinstance(compile, bool):
            raise ParameterError(f"compile must be True, False or None; got {compile!r}.")
        kb = _keras_backend(model)
        if kb not in (None, "tensorflow"):
            raise ParameterError(
                f"This Keras model runs on Keras' {kb!r} backend; the tf2 backend needs "
                f"KERAS_BACKEND=tensorflow (set it before importing keras)"
                + (", or use backend='torch'." if kb == "torch" else ".")
            )
        self.model = model
        self.keras = is_keras_layer(model)
        self.output = output
        self.select = make_output_selector(output)
        self._num_classes = num_classes if num_classes is not None else (
            _infer_num_classes(model) if self.keras else None)
        self.is_conv2d, self.in_channels, self.channels_first = (
            _input_info(model) if self.keras else (False, None, False))
        traceable = self.keras or isinstance(model, tf.Module) or hasattr(model, "get_concrete_function")
        self.compile = traceable if compile is None else compile
        self._explicit_compile = compile is True
        self._model_ref, weak = _weak(model)
        shared = weak and (output is None or isinstance(output, (int, str)))
        self._steps: dict[Any, _Step] = _Steps()
        # target callable -> its traced steps, gone with the callable (keyed by id, a freed
        # callable's address reused by a new one gave it the old one's graph: another class)
        self._fn_steps: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        if shared:
            try:
                self._steps = _TRACES.setdefault(model, _Steps())
            except TypeError:  # unhashable model
                pass

    # -- conversion ------------------------------------------------------------------------
    def to_canonical(self, x: Any, layout: str | None = None) -> tuple[np.ndarray, InputInfo]:
        if tf.is_tensor(x) or isinstance(x, tf.Variable):
            if not hasattr(x, "numpy"):
                raise InputError("The input is a symbolic tensor; pass concrete values (eager tensors "
                                 "or numpy arrays).")
            arr, kind, device = x.numpy(), "tf", getattr(x, "device", None)
        else:
            arr, kind, device = read_array(x), "numpy", None
        declared = _declared_input(self.model) if self.keras else None
        # images in: a 2-D conv net, unless its declared input is not an image batch (a model
        # that reshapes (N, 28, 28) into images itself)
        images = self.is_conv2d and (declared is None or len(declared[0]) == 4)
        if images:
            check_image_rank(arr, "(H, W, C) or a batch (N, H, W, C)")
        if layout is None:
            layout = default_layout(arr.ndim, self.channels_first)
            if declared is not None and not images:  # the model's own rank says batch or not
                want = declared[0]
                if arr.ndim == len(want):
                    layout = "N..."
                elif arr.ndim == len(want) - 1 and all(w is None or w == g for w, g in zip(want[1:], arr.shape)):
                    layout = "..."
        canonical, info = numpy_to_canonical(arr, layout, kind=kind, device=device)
        if images:
            check_channels(canonical, self.in_channels, info, arr.shape)
        if declared is not None:
            self._check_declared(canonical, arr.shape, declared)
        return canonical, info

    def _check_declared(self, canonical: np.ndarray, shape: tuple,
                        declared: tuple[tuple[int | None, ...], bool]) -> None:
        """Refuse, before any model call, an input the Keras model's declared input shape rules
        out as Keras itself would (a trailing axis of 1 may be added or dropped)."""
        model_shape, every_axis = declared
        want = model_shape
        if self.channels_first and len(want) == 4:  # compare in canonical (channels-last) order
            want = (want[0], want[2], want[3], want[1])
        got: tuple = canonical.shape
        if len(got) == len(want) + 1 and got[-1] == 1:
            got = got[:-1]
        elif len(got) == len(want) - 1 and want[-1] == 1:
            want = want[:-1]
        if len(got) == len(want):
            axes = range(1, len(want)) if every_axis else range(max(1, len(want) - 1), len(want))
            if all(want[i] is None or want[i] == got[i] for i in axes):
                return
        dims = ["?" if d is None else str(d) for d in model_shape[1:]]
        one = f"({', '.join(dims)}{',' if len(dims) == 1 else ''})"
        raise InputError(
            f"The model takes inputs of shape {_shape_text((None, *model_shape[1:]))} (its Keras "
            f"input); the input has shape {tuple(shape)}. Pass one example of shape {one} or a "
            f"batch of them (or layout= when the axes are in another order).")

    def from_canonical(self, values: np.ndarray, info: InputInfo) -> Any:
        return tf_from_canonical(values, info)

    # -- steps -----------------------------------------------------------------------------
    def _step(self, kind: str, x: np.ndarray, targets: Targets, layer: Any = None,
              layer_name: Any = None) -> _Step:
        fn = targets.fn
        compiled = kind == "guided" or (self.compile and (fn is None or self._explicit_compile))
        has_idx = targets.indices is not None
        key = (kind, compiled, x.shape[1:], has_idx, self.output if isinstance(self.output, (int, str)) else None,
               id(layer) if layer is not None else None, layer_name)
        store = self._steps if fn is None else self._steps_of(fn, compiled)
        step = store.get(key)
        if step is not None:
            return step
        meta: dict[str, Any] = {}
        layer_ref = _weak(layer)[0] if layer is not None else None
        body = _make_body(kind, self._model_ref, self.keras, self.select, fn, layer_ref, layer_name, meta)
        if not compiled:
            step = _Step(body, meta)
        else:
            specs = [tf.TensorSpec([None, *x.shape[1:]], tf.float32)]
            if has_idx:
                specs.append(tf.TensorSpec([None], tf.int64))
            try:
                concrete = tf.function(body).get_concrete_function(*specs)
            except Exception as exc:
                original = _salplug_error(exc)
                if original is not None:  # autograph re-raises our errors as StagingError
                    raise original.with_traceback(None) from None
                if "is incompatible with the layer" in str(exc):  # Keras' own input check
                    raise _input_refused(x, exc) from exc
                if kind != "guided" or self.compile:
                    raise
                raise ModelOutputError(
                    f"Guided backprop traces the model into a graph (tf.function), which failed for "
                    f"this {type(self.model).__name__}: {exc}. Make the model traceable (TensorFlow "
                    f"ops only, no .numpy() calls)."
                ) from exc
            step = _Step(concrete, meta)
        store[key] = step
        return step

    def _steps_of(self, fn: Callable[[Any], Any], compiled: bool) -> dict[Any, _Step]:
        """The cache for target callable ``fn``'s traced steps; a fresh one (nothing kept) for an
        eager step (cheap to build, and it holds ``fn``) or a callable without weak references."""
        if not compiled:
            return {}
        try:
            return self._fn_steps.setdefault(fn, _Steps())
        except TypeError:
            return {}

    def _run(self, kind: str, x: np.ndarray, targets: Targets, layer: Any = None,
             layer_name: Any = None) -> Any:
        if targets.indices is not None:
            check_indices(targets.indices, self._num_classes)
        if self._nchw(x):  # the model's own layout; callers turn results back to channels last
            x = x.transpose(0, 3, 1, 2)
        step = self._step(kind, x, targets, layer, layer_name)
        if targets.indices is not None:
            check_indices(targets.indices, step.meta.get("k"))
        with tf.device(self.device) if self.device else contextlib.nullcontext():
            args = [tf.constant(np.ascontiguousarray(x, dtype=np.float32))]
            if targets.indices is not None:
                args.append(tf.constant(targets.indices, tf.int64))
            try:
                return step.call(*args), step.meta
            except ValueError as exc:  # eager steps: Keras' own input check, as when tracing
                if "is incompatible with the layer" not in str(exc):
                    raise
                raise _input_refused(x, exc) from exc

    def _nchw(self, x: np.ndarray) -> bool:
        """Whether canonical ``x`` goes to the model transposed to NCHW."""
        return self.channels_first and x.ndim == 4

    def _input_grads(self, x: np.ndarray, out: Any) -> np.ndarray:
        return _to_channels_last(self._numpy(out)) if self._nchw(x) else self._numpy(out)

    @staticmethod
    def _numpy(t: Any) -> np.ndarray:
        return np.asarray(t.numpy() if hasattr(t, "numpy") else t, dtype=np.float32)

    def num_outputs(self) -> int | None:
        return self._num_classes

    def batch_size_for(self, x: np.ndarray) -> int:
        """Rows per model call for inputs like ``x`` when the caller gives none (see
        :func:`salplug.backends._batching.tf_rows`)."""
        on_gpu = "GPU" in self.device.upper() if self.device else bool(tf.config.list_logical_devices("GPU"))
        return tf_rows(x, on_gpu)

    def outputs(self, x: np.ndarray) -> np.ndarray:
        out, _ = self._run("outputs", x, Targets.none())
        return self._numpy(out).reshape(len(x), -1)

    def scores(self, x: np.ndarray, targets: Targets) -> np.ndarray:
        out, _ = self._run("scores", x, targets)
        s = self._numpy(out)
        if s.shape != (len(x),):
            raise TargetError(f"The explained output must be one scalar per sample ({len(x)} values); "
                              f"got shape {s.shape}.")
        return s

    def input_gradients(self, x: np.ndarray, targets: Targets) -> np.ndarray:
        out, _ = self._run("gradients", x, targets)
        return self._input_grads(x, out)

    def guided_input_gradients(self, x: np.ndarray, targets: Targets) -> np.ndarray:
        out, meta = self._run("guided", x, targets)
        if meta.get("nested"):
            warnings.warn(
                f"Guided backprop: {meta['nested']} ReLU op(s) of {type(self.model).__name__} run inside "
                f"nested tf.functions whose gradients were fixed when they were traced; they "
                f"backpropagate plain gradients. Call the eager (undecorated) model instead.",
                RuntimeWarning, stacklevel=2)
        if meta.get("control"):
            warnings.warn(
                f"Guided backprop: {meta['control']} ReLU op(s) of {type(self.model).__name__} run inside "
                f"control flow (tf.cond, tf.while_loop, tf.switch_case) whose bodies could not be "
                f"given the guided gradient; they backpropagate plain gradients.",
                RuntimeWarning, stacklevel=2)
        if not (meta.get("guided") or meta.get("nested") or meta.get("control")):
            warnings.warn(
                f"Guided backprop found no ReLU op while running {type(self.model).__name__}: the "
                f"result equals the plain input gradient. Models without ReLU/ReLU6 (GELU, SiLU, "
                f"LeakyReLU, ...) have nothing to guide.", RuntimeWarning, stacklevel=2)
        return self._input_grads(x, out)

    # -- layers ----------------------------------------------------------------------------
    def _layer(self, layer: Any) -> tuple[Any, str]:
        entries = keras_layers(self.model)
        if not entries:
            raise LayerError(
                f"Layer methods need a model made of Keras layers (got {type(self.model).__name__}, "
                f"in which no Keras layer was found)."
            )
        if is_keras_layer(layer):
            for path, found in entries:
                if found is layer:
                    return found, path
            raise LayerError(f"The layer {getattr(layer, 'name', type(layer).__name__)!r} is not part of the model.")
        if not isinstance(layer, str) or not layer:
            raise LayerError(f"A layer is a Keras layer name like 'conv2', a path like 'block/conv2', or "
                             f"a layer object; got {layer!r}.")
        matches = [(p, lay) for p, lay in entries if p == layer]
        if not matches:
            matches = [(p, lay) for p, lay in entries if getattr(lay, "name", None) == layer]
        unique = {id(lay): (p, lay) for p, lay in matches}
        if len(unique) == 1:
            path, found = next(iter(unique.values()))
            return found, path
        paths = [p for p, _ in entries]
        if len(unique) > 1:
            raise LayerError(f"Layer name {layer!r} is ambiguous: it names "
                             f"{', '.join(p for p, _ in unique.values())}. Give the full path.")
        names = sorted({*paths, *(getattr(lay, "name", "") for _, lay in entries)} - {""})
        raise LayerError(
            f"The model has no layer {layer!r}.{did_you_mean(layer, names)} Layers: "
            f"{', '.join(paths[:40])}{' ...' if len(paths) > 40 else ''}."
        )

    def check_layer(self, layer: Any) -> None:
        self._layer(layer)

    def layer_values_and_gradients(self, x: np.ndarray, targets: Targets, layer: Any) -> tuple[np.ndarray, np.ndarray]:
        found, path = self._layer(layer)
        (values, grads), _ = self._run("layer", x, targets, found, path)
        values, grads = self._numpy(values), self._numpy(grads)
        # a layer's own data_format wins; layers without one (activations, normalisation) follow
        # the model's: in a channels-first model, feature maps are channels first throughout
        fmt = getattr(found, "data_format", None)
        first = fmt == "channels_first" if fmt in ("channels_first", "channels_last") else self.channels_first
        if first and values.ndim == 4 and grads.shape == values.shape:
            values, grads = _to_channels_last(values), _to_channels_last(grads)
        return values, grads
