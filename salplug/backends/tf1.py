"""TensorFlow 1 backend: a ``tf.compat.v1`` graph run by its session (upstream ``saliency.tf1``).

The model is a :class:`salplug.TF1Model` (graph, session, input tensor ``x``, explained tensor
``y``, optional ``conv_layer`` and ``feed_dict``). ``y`` is either one scalar per example --
upstream semantics, ``target`` must then be None -- or logits (N, classes), where a target
class per example is fed through an int64 placeholder.

Every op salplug needs (the target placeholder, the gathered score, the gradients of the score
with respect to ``x`` and to a layer tensor) is built once per graph, the first time it is
needed, and cached by name: running 100 explanations adds no node after the first. Guided
backprop imports a copy of the graph, made in memory (no checkpoint file), under
``gradient_override_map`` so its Relu/Relu6 ops backpropagate the guided gradient; the copy and
its session are cached per session. The copy holds no weights: each variable y depends on is a
placeholder there, fed on every run with the variable's current value, read from the user's
session in one ``session.run`` just before (so training, ``assign`` or a restore between calls
is seen). A finalized graph cannot take new ops, so its gradients are built in such a copy too
(without the override), as are those of a y computed through control flow or a nested
``tf.function`` (their gradients change ops a session may already have run); the copy has the
nested functions inlined.

:meth:`TF1Adapter.run_fetches` evaluates upstream's raw quantities (y as the graph gives it,
d sum(y) / d x, a layer and d sum(y) / d layer) in one ``session.run`` (through a copy: plus
the variable read) with the same op cache and copies: the drop-in ``salplug.tf1`` package runs
on it.

Arrays are NHWC as ``x`` takes them, which is canonical: nothing is transposed. A graph that
fixes x's batch size gets batches of exactly that size (the last one padded, the padding's
results dropped). With logits whose class count is not static, an in-graph check refuses
out-of-range targets (TargetError) before the score is gathered.
"""

from __future__ import annotations

import contextlib
import re
import threading
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
        'The tf1 backend needs TensorFlow. Install it with: pip install "salplug[tf]"'
    ) from exc

from ..errors import InputError, LayerError, ModelOutputError, ParameterError, TargetError, did_you_mean
from ..layout import check_channels, default_layout, numpy_to_canonical, read_array
from ..types import GUIDED_GRADIENTS, INPUT_GRADIENTS, LAYER_GRADIENTS, SCORES, InputInfo, Targets
from ._batching import TF_CPU_ROWS, tf_rows
from .tf1_model import TF1Model
from ._tf_arrays import tf_from_canonical
from .tf_guided import GUIDED_OVERRIDES, ReluCounts, guide_function_library, relu_counts, rename_calls

__all__ = ["FETCHES", "TF1Adapter", "TF1Model"]

#: What :meth:`TF1Adapter.run_fetches` evaluates: y's values, d sum(y) / d x, the layer's values
#: and d sum(y) / d layer.
FETCHES = ("y", "input_gradients", "layer", "layer_gradients")

v1 = tf.compat.v1

# graph -> {key: tensor names}: the ops salplug added to that graph, built once.
_OPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# session -> {(guided, y name): _View}: in-memory copies of the session's graph.
_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _silenced() -> Any:
    try:
        from tensorflow.python.util import deprecation

        return deprecation.silence()
    except (ImportError, AttributeError):  # pragma: no cover - older/newer TF
        return contextlib.nullcontext()


def _as_tensor(graph: Any, value: Any, what: str) -> Any:
    """A tensor of ``graph`` from a tensor, a tensor name ('x:0') or an op name ('x')."""
    if isinstance(value, str):
        try:
            return graph.get_tensor_by_name(value if ":" in value else f"{value}:0")
        except (KeyError, ValueError):
            raise KeyError(value) from None
    if isinstance(value, tf.Operation):
        value = value.outputs[0] if value.outputs else None
    if not isinstance(value, tf.Tensor) or getattr(value, "graph", None) is not graph:
        raise ParameterError(f"{what} must be a tensor of the model's graph (or its name), got "
                             f"{type(value).__name__}.")
    return value


def _resolve_feeds(graph: Any, feed_dict: Mapping[Any, Any]) -> dict[Any, Any]:
    """``feed_dict`` with tensor and op names replaced by the tensors of ``graph`` they name."""
    out = {}
    for key, value in feed_dict.items():
        if isinstance(key, str):
            try:
                key = _as_tensor(graph, key, "a feed_dict key")
            except KeyError:
                raise ParameterError(f"feed_dict key {key!r} is not a tensor of the model's graph.") from None
        elif isinstance(key, tf.Tensor) and getattr(key, "graph", None) is not graph:
            raise ParameterError(f"feed_dict key {key.name!r} is a tensor of another graph than the model's.")
        out[key] = value
    return out


_OWN_SCOPE = re.compile(r"salplug(_\d+)?/")  # the name scopes of the ops salplug adds to a graph


def _tensor_names(graph: Any, rank: int | None = None) -> list[str]:
    names = []
    for op in graph.get_operations():
        if _OWN_SCOPE.match(op.name):
            continue
        for out in op.outputs:
            if rank is None or out.shape.rank == rank:
                names.append(out.name)
    return names


_RANGE_CHECK = "salplug: target out of range; classes:"


def _gather_checked(y: Any, t: Any, check: bool) -> Any:
    """y[i, t[i]]. With ``check`` (y's class count is not static), an assertion the gather (and
    all that depends on it) waits for checks the targets first: tf.gather would fail later on a
    CPU, and give 0 on a GPU."""
    if not check:
        return tf.gather(y, t, batch_dims=1)
    width = tf.shape(y, out_type=tf.int64)[1]
    ok = tf.reduce_all(tf.logical_and(t >= 0, t < width))
    assertion = tf.debugging.Assert(ok, [_RANGE_CHECK, width], name="target_check")
    with tf.control_dependencies([assertion]):
        return tf.gather(y, t, batch_dims=1)


def _range_error(exc: Exception, targets: Any, y: Any) -> TargetError | None:
    """A failed target check of :func:`_gather_checked` as a TargetError (else None)."""
    text = str(exc)
    if _RANGE_CHECK not in text:
        return None
    found = re.search(re.escape(_RANGE_CHECK) + r"\]\s*\[(\d+)\]", text)
    k = int(found.group(1)) if found else None
    idx = getattr(targets, "indices", None)
    if idx is not None and idx.size and k is not None:
        bad = int(idx.max() if idx.max() >= k else idx.min())
        return TargetError(f"target {bad} is out of range: y ({y.name}) has {k} classes (0..{k - 1}).")
    return TargetError(f"A target is out of range for the classes of y ({y.name})"
                       f"{f' (0..{k - 1})' if k else ''}.")


class _View:
    """A graph and the session that runs it: the user's own, or an in-memory copy.

    ``variables`` (copies only): (placeholder of the copy, tensor of the user's graph that reads
    the variable) pairs; ``source``: the user's session, which :meth:`run` reads them from (held
    weakly: the copy is cached under that session in a weak dictionary).
    """

    def __init__(self, graph: Any, session: Any, copy: bool, guided: bool = False,
                 variables: tuple[tuple[str, str], ...] = (), source: Any = None) -> None:
        self.graph, self.session, self.copy, self.guided = graph, session, copy, guided
        self.ran = False  # whether self.session has run the graph (a copy's then needs a new one to grow)
        self.relus = relu_counts(graph) if guided else ReluCounts()
        self.variables = variables
        self.source = weakref.ref(source) if source is not None else None

    def run(self, fetches: list[Any], feed: dict[Any, Any], held: dict[int, Any] | None = None) -> list[Any]:
        """``session.run(fetches, feed)``; a copy is first fed the variables' current values.

        Those are read from the user's session in one run; a feed the caller gives for the same
        placeholder (a variable fed by name) wins, as it would on the user's graph. ``held``
        (the adapter's :meth:`TF1Adapter.call_scope`) keeps the values read by the first run of
        one ``explain()`` call for the rest of it.
        """
        if self.variables:
            values = held.get(id(self)) if held is not None else None
            if values is None:
                values = self.source().run([read for _, read in self.variables])
                if held is not None:
                    held[id(self)] = values
            feed = {**{self.graph.get_tensor_by_name(ph): v for (ph, _), v in zip(self.variables, values)},
                    **feed}
        self.ran = True
        return self.session.run(fetches, feed_dict=feed)

    def tensor(self, t: Any) -> Any:
        return t if not self.copy else self.graph.get_tensor_by_name(t.name)

    def feed(self, feed_dict: Mapping[Any, Any]) -> dict[Any, Any]:
        """The user's feed_dict for this graph, as a new dict.

        On the user's own graph every key is kept as it is (session.run reads it); in a copy,
        keys are matched by tensor or op name and keys the copy lacks are dropped.
        """
        if not self.copy:
            return dict(feed_dict)
        out = {}
        for key, value in feed_dict.items():
            name = key if isinstance(key, str) else getattr(key, "name", None)
            if not isinstance(name, str):
                continue
            try:
                out[self.graph.get_tensor_by_name(name if ":" in name else f"{name}:0")] = value
            except (KeyError, ValueError):
                pass
        return out

    def ops(self, key: tuple, build: Callable[[], list[Any]]) -> list[Any]:
        """The tensors cached under ``key`` for this graph, built (once) by ``build``."""
        table = _OPS.setdefault(self.graph, {})
        names = table.get(key)
        if names is None:
            with self.graph.as_default(), v1.name_scope("salplug"):
                tensors = build()
            names = tuple(t.name for t in tensors)
            table[key] = names
            if self.copy and self.ran:
                # a gradient through a while loop adds outputs to the loop's op, which a session
                # that has run it cannot take; the copy holds no state (its variables are fed), so
                # a new session on it runs old and new ops alike
                self.session = v1.Session(graph=self.graph, config=getattr(self.session, "_config", None))
                self.ran = False
        return [self.graph.get_tensor_by_name(n) for n in names]


_VARIABLE_OPS = {"Variable": ":0", "VariableV2": ":0", "VarHandleOp": "/Read/ReadVariableOp:0"}


def _memory_copy(graph: Any, session: Any, outputs: list[str], guided: bool) -> _View:
    """Import ``graph`` into a new graph, variables as placeholders, optionally guided.

    TensorFlow's freezing rewrites what reads a variable (resource reads and gathers too) to
    read a constant; each such constant then becomes a placeholder of the variable's name, and
    the view feeds it the variable's current value on every run.
    """
    with _silenced():
        try:
            frozen = v1.graph_util.convert_variables_to_constants(session, graph.as_graph_def(), outputs)
        except Exception as exc:  # noqa: BLE001
            raise ModelOutputError(
                f"Could not copy the TF1 graph in memory for "
                f"{'guided backprop' if guided else 'a finalized graph'}: {exc}"
            ) from exc
    variables = []
    for node in frozen.node:
        try:
            kind = graph.get_operation_by_name(node.name).type
        except KeyError:
            continue
        if node.op == "Const" and kind in _VARIABLE_OPS:
            dtype, shape = node.attr["dtype"].type, node.attr["value"].tensor.tensor_shape
            node.op = "Placeholder"
            node.ClearField("attr")
            node.attr["dtype"].type = dtype
            node.attr["shape"].shape.CopyFrom(shape)
            variables.append((f"{node.name}:0", node.name + _VARIABLE_OPS[kind]))
    frozen = _inline_calls(frozen, outputs)
    if guided:  # the override reaches top-level nodes only; cond/while bodies live in functions
        guide_function_library(frozen)
    copy = tf.Graph()
    with copy.as_default():
        scope = copy.gradient_override_map(GUIDED_OVERRIDES) if guided else contextlib.nullcontext()
        with scope:
            tf.import_graph_def(frozen, name="")
    config = getattr(session, "_config", None)
    config = config if isinstance(config, v1.ConfigProto) else None  # e.g. a mock wrapping a session
    return _View(copy, v1.Session(graph=copy, config=config), copy=True, guided=guided,
                 variables=tuple(variables), source=session)


_CONTROL_FLOW_OPS = frozenset({"While", "StatelessWhile", "If", "StatelessIf", "Case", "StatelessCase"})
_CALL_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})


def _inline_calls(graph_def: Any, outputs: list[str]) -> Any:
    """``graph_def`` with the functions its call ops run (nested ``tf.function``s) inlined.

    An imported call op is differentiated by a SymbolicGradient op, which silently gives zeros
    through a while loop inside the function; inlined, the function's ops are ordinary nodes
    (the guided override reaches them too). Grappler's function optimizer does it, with
    control flow kept as v2 ops (their gradients need no control-flow context). A call op it
    cannot inline is refused when its function holds control flow.
    """
    if not any(node.op in _CALL_OPS for node in graph_def.node):
        return graph_def
    try:
        from tensorflow.core.protobuf import config_pb2, meta_graph_pb2
        from tensorflow.python.grappler import tf_optimizer

        meta = meta_graph_pb2.MetaGraphDef()
        meta.graph_def.CopyFrom(graph_def)
        for node in [*meta.graph_def.node, *(n for f in meta.graph_def.library.function for n in f.node_def)]:
            if node.op in _CONTROL_FLOW_OPS:
                node.attr["_lower_using_switch_merge"].b = False
        meta.collection_def["train_op"].node_list.value.extend(outputs)
        config = config_pb2.ConfigProto()
        config.graph_options.rewrite_options.min_graph_nodes = -1  # small graphs too
        config.graph_options.rewrite_options.optimizers.append("function")
        with _silenced():
            inlined = tf_optimizer.OptimizeGraph(config, meta)
    except Exception:  # noqa: BLE001 - checked below: what was not inlined is refused if unsafe
        inlined = graph_def
    _unshare_functions(inlined)
    functions = {f.signature.name: f for f in inlined.library.function}
    for node in inlined.node:
        if node.op in _CALL_OPS and _holds_control_flow(node.attr["f"].func.name, functions, set()):
            raise ModelOutputError(
                f"y is computed through a tf.function ({node.name}) holding control flow "
                f"(tf.cond, tf.while_loop), which TensorFlow cannot differentiate in an imported "
                f"copy of the graph. Build y without the nested tf.function.")
    return inlined


def _unshare_functions(graph_def: Any) -> None:
    """Give each control-flow node of ``graph_def`` functions of its own (copies, renamed).

    A function inlined twice leaves two while loops sharing one body; TensorFlow names the
    functions it derives for a loop's gradient after the body, so the second gradient clashed.
    """
    functions = {f.signature.name: f for f in graph_def.library.function}
    taken: set[str] = set()
    for k, node in enumerate(n for n in graph_def.node if n.op in _CONTROL_FLOW_OPS):
        closure = _called([node], functions)
        if not closure & taken:
            taken |= closure
            continue
        names = {name: f"{name}_salplug_{k}" for name in closure}
        for name in closure:
            copy = graph_def.library.function.add()
            copy.CopyFrom(functions[name])
            copy.signature.name = names[name]
            rename_calls(copy.node_def, names)
        rename_calls([node], names)


def _called(nodes: Any, functions: Mapping[str, Any]) -> set[str]:
    """The functions ``nodes`` reference, and those they reference in turn."""
    found: set[str] = set()
    stack = list(nodes)
    while stack:
        node = stack.pop()
        for value in node.attr.values():
            refs = [value.func.name] if value.HasField("func") else [f.name for f in value.list.func]
            for name in refs:
                if name in functions and name not in found:
                    found.add(name)
                    stack.extend(functions[name].node_def)
    return found


def _holds_control_flow(name: str, functions: Mapping[str, Any], seen: set[str]) -> bool:
    """Whether function ``name`` (or one it calls) runs a control-flow op."""
    if name in seen or name not in functions:
        return False
    seen.add(name)
    for node in functions[name].node_def:
        if node.op in _CONTROL_FLOW_OPS:
            return True
        if any(value.HasField("func") and _holds_control_flow(value.func.name, functions, seen)
               for value in node.attr.values()):
            return True
    return False


def _upstream(y: Any) -> Iterator[tuple[Any, Any]]:
    """(op, its input tensor) for every data input of every op ``y`` is computed from, each op once."""
    seen, stack = {y.op.name}, [y.op]
    while stack:
        op = stack.pop()
        for t in op.inputs:
            yield op, t
            if t.op.name not in seen:
                seen.add(t.op.name)
                stack.append(t.op)


def _through_control_flow(y: Any) -> bool:
    """Whether a control-flow v2 op or a function call is among the ops ``y`` is computed from."""
    kinds = _CONTROL_FLOW_OPS | _CALL_OPS
    return y.op.type in kinds or any(t.op.type in kinds for _, t in _upstream(y))


def _computed_from(y: Any, tensor: Any) -> bool:
    """Whether ``y`` is computed from ``tensor`` (through data inputs, in y's graph)."""
    return y.name == tensor.name or any(t.name == tensor.name for _, t in _upstream(y))


class TF1Adapter:
    """A TensorFlow 1 graph as a salplug ``ModelAdapter``.

    Parameters
    ----------
    model : a :class:`salplug.TF1Model`, or a ``tf.compat.v1.Session`` with ``x`` and ``y``.
    x, y, conv_layer, feed_dict : override the bundle's fields (tensors or tensor names).
    num_classes : number of classes of logits ``y``, when its static shape does not say.
    upstream : accept ``y`` of any shape, as upstream ``saliency.tf1`` does (a scalar for a batch
        of one): for :meth:`run_fetches`, the drop-in package's path. The explaining primitives
        still need (N,) or (N, classes) and say so when called. The feed_dict is then passed to
        session.run as it is, not checked against the graph.
    """

    name = "tf1"
    provides = frozenset({SCORES, INPUT_GRADIENTS, LAYER_GRADIENTS, GUIDED_GRADIENTS})
    default_batch_size = TF_CPU_ROWS

    def __init__(self, model: Any, *, x: Any = None, y: Any = None, conv_layer: Any = None,
                 feed_dict: Mapping[Any, Any] | None = None, num_classes: int | None = None,
                 upstream: bool = False) -> None:
        if isinstance(model, TF1Model):
            graph, session = model.graph, model.session
            x = model.x if x is None else x
            y = model.y if y is None else y
            conv_layer = model.conv_layer if conv_layer is None else conv_layer
            feed_dict = model.feed_dict if feed_dict is None else feed_dict
        elif hasattr(model, "run") and hasattr(model, "graph"):
            graph, session = model.graph, model
        else:
            raise ParameterError(
                f"The tf1 backend needs a salplug.TF1Model(graph, session, x, y) or a "
                f"tf.compat.v1.Session with backend_options x= and y=; got {type(model).__name__}."
            )
        if graph is None or session is None or x is None or y is None:
            raise ParameterError("The tf1 backend needs a graph, a session, an input tensor x and an "
                                 "output tensor y.")
        own = getattr(session, "graph", None)
        if isinstance(own, tf.Graph) and own is not graph:
            raise ParameterError("The session does not run the given graph (session.graph is another graph).")
        if feed_dict is not None and not isinstance(feed_dict, Mapping):
            raise ParameterError(f"feed_dict must be a mapping, got {type(feed_dict).__name__}.")
        self.graph, self.session = graph, session
        self._scope = threading.local()  # per thread: variable values of in-memory copies, per explain() call
        try:
            self.x = _as_tensor(graph, x, "x")
            self.y = _as_tensor(graph, y, "y")
        except KeyError as exc:
            raise ParameterError(f"The graph has no tensor {exc.args[0]!r}.") from None
        self.conv_layer = conv_layer
        feed_dict = feed_dict if feed_dict is not None else {}
        self.feed_dict: Mapping[Any, Any] = feed_dict if upstream else _resolve_feeds(graph, feed_dict)
        self.dtype = self.x.dtype.as_numpy_dtype if self.x.dtype.is_floating else np.float32

        shape = self.y.shape
        self._y_error = None
        if shape.rank is None:
            self._y_error = (f"y ({self.y.name}) has an unknown rank; reshape it to (N,) for one "
                             f"scalar per example or (N, classes) for logits.")
        elif shape.rank == 0 or shape.rank > 2:
            self._y_error = (f"y ({self.y.name}) has shape {shape}; the tf1 backend explains one scalar per "
                             f"example (N,) or logits (N, classes). Reduce or reshape it in the graph.")
        if self._y_error and not upstream:
            raise ParameterError(self._y_error)
        self.logits = shape.rank == 2 and shape[1] != 1
        self._one_column = shape.rank == 2 and shape[1] == 1  # (N, 1): class 0 is that score, as on torch
        self.supports_targets = self.logits or self._one_column
        self._num_classes = num_classes if num_classes is not None else (
            int(shape[1]) if self.logits and shape[1] is not None else None)
        xs = self.x.shape
        self.x_shape = tuple(xs.as_list()) if xs.rank is not None else None
        self.in_channels = self.x_shape[-1] if self.x_shape and len(self.x_shape) == 4 else None

    # -- conversion ------------------------------------------------------------------------
    def to_canonical(self, x: Any, layout: str | None = None) -> tuple[np.ndarray, InputInfo]:
        if tf.is_tensor(x) and hasattr(x, "numpy"):
            arr, kind, device = x.numpy(), "tf", getattr(x, "device", None)
        else:
            arr, kind, device = read_array(x), "numpy", None
        rank = len(self.x_shape) if self.x_shape is not None else None
        if rank is not None and arr.ndim not in (rank, rank - 1):
            raise InputError(f"x ({self.x.name}) takes batches of shape {self._shape_text()}; got an "
                             f"input of shape {arr.shape}. Pass one example or a batch.")
        if layout is None:
            layout = default_layout(arr.ndim, False) if rank in (None, 4) else (
                "N..." if arr.ndim == rank else "...")
        canonical, info = numpy_to_canonical(arr, layout, kind=kind, device=device)
        check_channels(canonical, self.in_channels, info, arr.shape)
        if self.x_shape is not None and canonical.ndim == len(self.x_shape):
            for want, got in zip(self.x_shape[1:], canonical.shape[1:]):
                if want is not None and want != got:
                    raise InputError(f"x ({self.x.name}) takes batches of shape {self._shape_text()}; "
                                     f"the input has shape {arr.shape}.")
        return canonical, info

    def _shape_text(self) -> str:
        return "(" + ", ".join("N" if i == 0 and d is None else "?" if d is None else str(d)
                               for i, d in enumerate(self.x_shape or ())) + ")"

    def from_canonical(self, values: np.ndarray, info: InputInfo) -> Any:
        return tf_from_canonical(values, info)

    # -- graphs ----------------------------------------------------------------------------
    def _copy(self, guided: bool) -> _View:
        copies = _COPIES.setdefault(self.session, {})
        key = (guided, self.y.name)
        view = copies.get(key)
        if view is None:
            view = _memory_copy(self.graph, self.session, [self.y.op.name], guided)
            copies[key] = view
        return view

    def _view(self, guided: bool = False) -> _View:
        if guided:
            return self._copy(True)
        if self.graph.finalized or self._control_flow:
            return self._copy(False)
        return _View(self.graph, self.session, copy=False)

    @property
    def _control_flow(self) -> bool:
        """Whether y is computed through control flow v2 (While/If/Case ops) or a nested
        ``tf.function``: their gradients add outputs to the forward op, which TensorFlow refuses
        once a session has run it, so such graphs are differentiated in an in-memory copy."""
        found = self.__dict__.get("_has_control_flow")
        if found is None:
            found = self.__dict__["_has_control_flow"] = _through_control_flow(self.y)
        return found

    def _score(self, view: _View) -> tuple[Any, Any]:
        """(score tensor, target placeholder or None) of ``view``."""
        if self._y_error:
            raise ParameterError(self._y_error)
        y = view.tensor(self.y)
        if not self.logits:
            (s,) = view.ops(("score", y.name), lambda: [tf.reshape(y, [-1])])
            return s, None
        (t,) = view.ops(("target",), lambda: [v1.placeholder(tf.int64, [None], name="target")])
        (s,) = view.ops(("score", y.name, t.name), lambda: [_gather_checked(y, t, self.y.shape[1] is None)])
        return s, t

    def _check_targets(self, targets: Targets) -> None:
        if targets.fn is not None:
            raise TargetError("The tf1 backend takes class indices as targets, not callables: build the "
                              "explained scalar in your graph and pass it as y.")
        idx = targets.indices
        if not self.logits:
            if idx is not None and not (self._one_column and not idx.any()):
                raise TargetError(f"y ({self.y.name}) is one scalar per example, so the target must be "
                                  f"None{' or 0' if self._one_column else ''}; pass logits (N, classes) as y "
                                  f"to choose a class.")
            return
        if idx is None:
            raise TargetError(f"y ({self.y.name}) holds logits of shape {self.y.shape}; give a target class.")
        k = self._num_classes
        if k is not None and idx.size and (idx.min() < 0 or idx.max() >= k):
            raise TargetError(f"target {int(idx.max() if idx.max() >= k else idx.min())} is out of "
                              f"range: the model has {k} output classes (0..{k - 1}).")

    def _feed(self, view: _View, x: np.ndarray, targets: Targets, target_ph: Any) -> dict[Any, Any]:
        feed = view.feed(self.feed_dict)
        feed[view.tensor(self.x)] = np.asarray(x, dtype=self.dtype)
        if target_ph is not None:
            feed[target_ph] = targets.indices
        return feed

    def _gradient(self, view: _View, s: Any, wrt: Any, what: str, error: type[Exception] = ModelOutputError) -> Any:
        def build() -> list[Any]:
            (g,) = v1.gradients(s, [wrt])
            if g is None:
                raise error(f"y ({self.y.name}) does not depend on {what}; its gradient is None.")
            return [g]

        (g,) = view.ops(("grad", s.name, wrt.name), build)
        return g

    @property
    def _held(self) -> dict[int, Any] | None:
        return getattr(self._scope, "held", None)

    @_held.setter
    def _held(self, value: dict[int, Any] | None) -> None:
        self._scope.held = value

    @contextlib.contextmanager
    def call_scope(self) -> Iterator[None]:
        """One ``explain()`` call: an in-memory copy reads the variables once, not per batch."""
        if self._held is not None:  # nested: the outer scope holds them
            yield
            return
        self._held = {}
        try:
            yield
        finally:
            self._held = None

    def _run(self, view: _View, fetches: list[Any], feed: dict[Any, Any]) -> list[np.ndarray]:
        out = view.run(fetches, feed, self._held)
        return [np.asarray(o, dtype=np.float32) for o in out]

    def _run_targets(self, view: _View, fetches: list[Any], feed: dict[Any, Any],
                     targets: Targets) -> list[np.ndarray]:
        """:meth:`_run`, a failed in-graph target check raised as a TargetError."""
        try:
            return self._run(view, fetches, feed)
        except tf.errors.InvalidArgumentError as exc:
            error = _range_error(exc, targets, self.y)
            if error is None:
                raise
            raise error from None

    def _by_rows(self, x: np.ndarray, targets: Targets,
                 run: Callable[[np.ndarray, Targets], list[np.ndarray]]) -> list[np.ndarray]:
        """``run(x, targets)``: arrays with one row per row of ``x``. A graph that fixes x's batch
        size B gets batches of exactly B rows: the last one padded with copies of its last row
        (and target), whose results are dropped."""
        fixed = self.x_shape[0] if self.x_shape else None
        if fixed is None or len(x) == fixed or len(x) == 0:
            return run(x, targets)
        parts = []
        for start in range(0, len(x), fixed):
            xs, ts = x[start:start + fixed], targets.take(slice(start, start + fixed))
            n = len(xs)
            if n < fixed:
                xs = np.concatenate([xs, np.repeat(xs[-1:], fixed - n, axis=0)])
                if ts.indices is not None:
                    ts = Targets(np.concatenate([ts.indices, np.repeat(ts.indices[-1:], fixed - n)]))
            parts.append([o[:n] for o in run(xs, ts)])
        return [np.concatenate(p) for p in zip(*parts)]

    # -- primitives ------------------------------------------------------------------------
    def num_outputs(self) -> int | None:
        return self._num_classes

    def batch_size_for(self, x: np.ndarray) -> int:
        """Rows per session.run for inputs like ``x`` when the caller gives none; ``x``'s static
        batch size, when the graph fixes one, wins."""
        fixed = self.x_shape[0] if self.x_shape else None
        return int(fixed) if fixed is not None else tf_rows(x, bool(tf.config.list_logical_devices("GPU")))

    def outputs(self, x: np.ndarray) -> np.ndarray:
        view = self._view()

        def run(xs: np.ndarray, ts: Targets) -> list[np.ndarray]:
            (out,) = self._run(view, [view.tensor(self.y)], self._feed(view, xs, ts, None))
            return [out.reshape(len(xs), -1)]

        return self._by_rows(x, Targets.none(), run)[0]

    def scores(self, x: np.ndarray, targets: Targets) -> np.ndarray:
        self._check_targets(targets)
        view = self._view()
        s, t = self._score(view)

        def run(xs: np.ndarray, ts: Targets) -> list[np.ndarray]:
            (out,) = self._run_targets(view, [s], self._feed(view, xs, ts, t), ts)
            return [out.reshape(len(xs))]

        return self._by_rows(x, targets, run)[0]

    def input_gradients(self, x: np.ndarray, targets: Targets) -> np.ndarray:
        self._check_targets(targets)
        return self._input_gradients(self._view(), x, targets)

    def _input_gradients(self, view: _View, x: np.ndarray, targets: Targets) -> np.ndarray:
        s, t = self._score(view)
        g = self._gradient(view, s, view.tensor(self.x), f"x ({self.x.name})")

        def run(xs: np.ndarray, ts: Targets) -> list[np.ndarray]:
            return self._run_targets(view, [g], self._feed(view, xs, ts, t), ts)

        return self._by_rows(x, targets, run)[0]

    def guided_input_gradients(self, x: np.ndarray, targets: Targets) -> np.ndarray:
        self._check_targets(targets)
        view = self._guided_view()
        return self._input_gradients(view, x, targets)

    def _guided_view(self) -> _View:
        view = self._view(guided=True)
        relus = view.relus
        if relus.nested:
            warnings.warn(f"Guided backprop: {relus.nested} Relu/Relu6 op(s) in the graph of y ({self.y.name}) "
                          f"run inside functions the graph calls (tf.function); TensorFlow differentiates "
                          f"those without the override, so they backpropagate plain gradients.",
                          RuntimeWarning, stacklevel=3)
        if relus.control:
            warnings.warn(f"Guided backprop: {relus.control} Relu/Relu6 op(s) in the graph of y ({self.y.name}) "
                          f"run inside control flow (tf.cond, tf.while_loop) whose bodies could not be given "
                          f"the guided gradient; they backpropagate plain gradients.",
                          RuntimeWarning, stacklevel=3)
        if not (relus.guided or relus.plain):
            warnings.warn(f"Guided backprop found no Relu/Relu6 op in the graph of y ({self.y.name}): the "
                          f"result equals the plain input gradient.", RuntimeWarning, stacklevel=3)
        return view

    # -- layers ----------------------------------------------------------------------------
    def _layer(self, layer: Any) -> Any:
        layer = self.conv_layer if layer is None else layer
        if layer is None:
            raise LayerError("Give the convolutional layer's output tensor: layer=<tensor or name>, or "
                             "conv_layer= in the TF1Model.")
        try:
            return _as_tensor(self.graph, layer, "layer")
        except KeyError:
            names = _tensor_names(self.graph, 4)
            raise LayerError(
                f"The graph has no tensor {layer!r}.{did_you_mean(layer, names)} 4-D tensors: "
                f"{', '.join(names[:40])}{' ...' if len(names) > 40 else ''}."
            ) from None
        except ParameterError as exc:
            raise LayerError(str(exc)) from None

    def _layer_of_y(self, layer: Any) -> Any:
        """The layer tensor, checked to be one y is computed from."""
        tensor = self._layer(layer)
        paths = self.__dict__.setdefault("_on_path", {})
        key = (self.y.name, tensor.name)
        if key not in paths:
            paths[key] = _computed_from(self.y, tensor)
        if not paths[key]:
            raise LayerError(f"Layer {tensor.name} is not on the path from x to y ({self.y.name}): y is not "
                             f"computed from it. Give a layer y depends on (e.g. the last convolution's output).")
        return tensor

    def check_layer(self, layer: Any) -> None:
        self._layer_of_y(layer)

    def layer_values_and_gradients(self, x: np.ndarray, targets: Targets, layer: Any) -> tuple[np.ndarray, np.ndarray]:
        tensor = self._layer_of_y(layer)
        self._check_targets(targets)
        view = self._view()
        s, t = self._score(view)
        try:
            conv = view.tensor(tensor)
        except KeyError:  # an in-memory copy holds y's subgraph only
            raise LayerError(f"Layer {tensor.name} is not on the path from x to y ({self.y.name}); give a "
                             f"layer y depends on.") from None
        g = self._gradient(view, s, conv, f"layer {tensor.name}", LayerError)

        def run(xs: np.ndarray, ts: Targets) -> list[np.ndarray]:
            return self._run_targets(view, [conv, g], self._feed(view, xs, ts, t), ts)

        values, grads = self._by_rows(x, targets, run)
        return values, grads

    # -- upstream quantities (salplug.tf1) ---------------------------------------------------------
    def run_fetches(self, x: Any, wants: Any, feed_dict: Mapping[Any, Any] | None = None, *,
                    layer: Any = None, guided: bool = False) -> list[Any]:
        """Evaluate ``wants`` (names from :data:`FETCHES`) for the batch ``x`` in one session.run.

        "y" is y's value as the graph gives it (any shape: upstream's scalar for a batch of one
        too), "input_gradients" d sum(y) / d x, "layer" the values of ``layer`` (default: the
        conv_layer) and "layer_gradients" d sum(y) / d layer. ``feed_dict`` adds feeds for this
        call and is never modified; on the user's graph its keys reach session.run unchanged.
        ``guided``: through the guided copy (fed the variables' current values). Values come
        back in the order of ``wants``, as session.run returns them. Gradient ops are built once
        per graph (or copy).
        """
        wants = list(wants)
        unknown = [w for w in wants if w not in FETCHES]
        if unknown:
            raise ParameterError(f"run_fetches cannot evaluate {unknown[0]!r}; it evaluates {', '.join(FETCHES)}.")
        if feed_dict is not None and not isinstance(feed_dict, Mapping):
            raise ParameterError(f"feed_dict must be a mapping, got {type(feed_dict).__name__}.")
        layer_tensor = self._layer(layer) if {"layer", "layer_gradients"} & set(wants) else None
        view = self._guided_view() if guided else self._view()
        y = view.tensor(self.y)
        conv = None
        if layer_tensor is not None:
            try:
                conv = view.tensor(layer_tensor)
            except KeyError:
                raise LayerError(f"Layer {layer_tensor.name} is not on the path from x to y "
                                 f"({self.y.name}); give a layer y depends on.") from None
        fetches = []
        for want in wants:
            if want == "y":
                fetches.append(y)
            elif want == "input_gradients":
                fetches.append(self._gradient(view, y, view.tensor(self.x), f"x ({self.x.name})"))
            elif want == "layer":
                fetches.append(conv)
            else:
                fetches.append(self._gradient(view, y, conv, f"layer {layer_tensor.name}"))
        feed = view.feed(self.feed_dict)
        feed.update(view.feed(feed_dict or {}))
        feed[view.tensor(self.x)] = np.asarray(x, dtype=self.x.dtype.as_numpy_dtype)
        return list(view.run(fetches, feed, self._held))
