"""Guided-backprop ReLU gradients for TensorFlow graphs (Springenberg et al. 2015).

Two gradient functions are registered with TensorFlow once, when this module is imported:
``SalplugGuidedRelu`` and ``SalplugGuidedRelu6``. They pass the incoming gradient back only
where the ReLU was active (``0 < input``, and ``input < 6`` for Relu6) AND the gradient is
positive. :data:`GUIDED_OVERRIDES` maps the op types to them, for ``Graph.gradient_override_map``.

The override is a graph-construction attribute: it applies to ops created inside the
``gradient_override_map`` block of a graph (a ``tf.compat.v1`` graph or the graph a
``tf.function`` traces) and is honoured by ``tf.gradients``, never by ``tf.GradientTape``.
Nothing global changes the gradients of anybody else's Relu ops.

Control flow v2 (``tf.cond``, ``tf.while_loop``, ``tf.switch_case``) puts its bodies in
functions the override map does not reach: :func:`relu_counts` (``guide=True``, traced graphs)
and :func:`guide_function_library` (GraphDefs, before import) mark their ReLUs guided. ReLUs
inside nested ``tf.function`` calls keep plain gradients; :func:`relu_counts` reports them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import tensorflow as tf
from tensorflow.core.framework.attr_value_pb2 import AttrValue

__all__ = ["GUIDED_OVERRIDES", "GUIDED_RELU", "GUIDED_RELU6", "ReluCounts", "guide_function_library",
           "relu_counts", "rename_calls"]

GUIDED_RELU = "SalplugGuidedRelu"
GUIDED_RELU6 = "SalplugGuidedRelu6"
GUIDED_OVERRIDES = {"Relu": GUIDED_RELU, "Relu6": GUIDED_RELU6}
_GUIDED_NAMES = (GUIDED_RELU.encode(), GUIDED_RELU6.encode())
_CALL_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})
# control-flow op -> (function attribute, attribute caching the traced body on the op) per body
_IF = (("then_branch", "_true_graph"), ("else_branch", "_false_graph"))
_WHILE = (("cond", "_cond_graph"), ("body", "_body_graph"))
_CONTROL_FLOW = {"If": _IF, "StatelessIf": _IF, "While": _WHILE, "StatelessWhile": _WHILE}
_CASE = frozenset({"Case", "StatelessCase"})


def _guided_relu(op: Any, grad: tf.Tensor) -> tf.Tensor:
    keep = tf.logical_and(op.inputs[0] > 0, grad > 0)
    return tf.where(keep, grad, tf.zeros_like(grad))


def _guided_relu6(op: Any, grad: tf.Tensor) -> tf.Tensor:
    x = op.inputs[0]
    keep = tf.logical_and(tf.logical_and(x > 0, x < 6), grad > 0)
    return tf.where(keep, grad, tf.zeros_like(grad))


def _register(name: str, fn: Any) -> None:
    try:
        tf.RegisterGradient(name)(fn)
    except KeyError:  # already registered (the module was imported again, e.g. reloaded)
        pass


_register(GUIDED_RELU, _guided_relu)
_register(GUIDED_RELU6, _guided_relu6)


def _is_guided(attrs: Any) -> bool:
    value = attrs.get("_gradient_op_type") if hasattr(attrs, "get") else None
    return value is not None and value.s in _GUIDED_NAMES


def _op_guided(op: Any) -> bool:
    try:
        return op.get_attr("_gradient_op_type") in _GUIDED_NAMES
    except ValueError:  # no such attribute: a plain Relu
        return False


def _function(graph: Any, name: str) -> Any:
    """The traced graph (or else the FunctionDef) of function ``name``, looked up from ``graph``
    outwards; None when not found."""
    while graph is not None:
        found = graph._get_function(name)  # noqa: SLF001 - no public lookup
        if found is not None:
            inner = getattr(found, "graph", None)
            if inner is not None:
                return inner
            return getattr(found, "cached_definition", None) or getattr(found, "definition", None)
        graph = getattr(graph, "outer_graph", None)
    return None


def _body_names(op_type: str, attr: Callable[[str], Any]) -> list[tuple[str, str | None]]:
    """(function name, attribute caching its traced graph on the op) of each body of a
    control-flow op (If/While/Case), or of the function a call op runs."""
    if op_type in _CALL_OPS:
        return [(attr("f").name, None)]
    if op_type in _CASE:
        return [(f.name, f"_branch_graph_{i}") for i, f in enumerate(attr("branches"))]
    return [(attr(name).name, cached) for name, cached in _CONTROL_FLOW[op_type]]


def _node_attr(node: Any) -> Callable[[str], Any]:
    def get(name: str) -> Any:
        value = node.attr[name]
        return value.list.func if value.WhichOneof("value") == "list" else value.func
    return get


def _bodies(graph: Any, op: Any) -> list[tuple[Any, bool]]:
    """(body, whether the op caches it) for each body of a control-flow or call op of
    ``graph``: the traced graph the op caches (the one its gradient is built from), else the
    function as ``graph`` knows it."""
    out = []
    for name, cached in _body_names(op.type, op.get_attr):
        body = getattr(op, cached, None) if cached else None
        out.append((body, True) if body is not None else (_function(graph, name), False))
    return out


def _walk(graph: Any, body: Any, in_call: bool, counts: ReluCounts, guide: bool, depth: int) -> None:
    """Count the ReLUs of ``body`` (a graph, or a FunctionDef of ``graph``'s library); with
    ``guide``, first mark those of a control-flow body guided (``body`` is what its op caches)."""
    if body is None or depth > 20:
        return
    if hasattr(body, "get_operations"):
        nodes = [(op.type, op.get_attr, op) for op in body.get_operations()]
        lookup = body
    else:
        nodes = [(n.op, _node_attr(n), n) for n in body.node_def]
        lookup = graph
    for op_type, attr, node in nodes:
        if op_type in GUIDED_OVERRIDES:
            if guide and depth and not in_call and hasattr(node, "_set_attr"):
                node._set_attr("_gradient_op_type", AttrValue(s=GUIDED_OVERRIDES[op_type].encode()))  # noqa: SLF001
            guided = _op_guided(node) if hasattr(node, "get_attr") else _is_guided(node.attr)
            if in_call:
                counts.nested += 1
            elif guided:
                counts.guided += 1
            elif depth:
                counts.control += 1
        elif op_type in _CALL_OPS or op_type in _CONTROL_FLOW or op_type in _CASE:
            try:
                names = _body_names(op_type, attr)
            except (ValueError, KeyError, AttributeError):
                continue
            if hasattr(node, "get_attr"):
                inner = _bodies(lookup, node)
            else:
                inner = [(_function(lookup, name), False) for name, _ in names]
            for sub, cached in inner:
                _walk(lookup if not hasattr(sub, "get_operations") else sub, sub,
                      in_call or op_type in _CALL_OPS, counts, guide and cached, depth + 1)


class ReluCounts:
    """The Relu/Relu6 ops a guided gradient goes through.

    ``guided``: ops whose gradient is the guided one; ``nested``: ops inside functions the
    graph calls (nested ``tf.function``s), whose gradients TensorFlow fixed without the
    override; ``control``: ops inside control-flow bodies (``tf.cond``, ``tf.while_loop``,
    ``tf.switch_case``) that could not be given the guided gradient.
    """

    __slots__ = ("control", "guided", "nested")

    def __init__(self) -> None:
        self.guided = self.nested = self.control = 0

    @property
    def plain(self) -> int:
        """ReLUs that backpropagate plain gradients."""
        return self.nested + self.control


def relu_counts(graph: Any, guide: bool = False) -> ReluCounts:
    """Count the ReLUs ``graph`` runs, control-flow bodies and called functions included.

    ``guide``: first give the ReLUs inside control-flow bodies the guided gradient, where the
    op caches the traced body its gradient is built from (graphs traced under
    ``gradient_override_map``: the override does not reach into those bodies). Best effort:
    what cannot be read is not counted.
    """
    counts = ReluCounts()
    try:
        _walk(graph, graph, False, counts, guide, 0)
    except Exception:  # noqa: BLE001 - a diagnostic (and a best-effort fix); never fails a run
        pass
    return counts


def guide_function_library(graph_def: Any) -> None:
    """Give every Relu/Relu6 node of ``graph_def``'s function library the guided gradient.

    For a GraphDef about to be imported under ``gradient_override_map``: the override reaches
    only the top-level nodes, while the gradients of control-flow ops (If/While/Case) are built
    from these functions. (Functions run by call ops keep plain gradients regardless.)
    """
    for function in graph_def.library.function:
        for node in function.node_def:
            if node.op in GUIDED_OVERRIDES:
                node.attr["_gradient_op_type"].s = GUIDED_OVERRIDES[node.op].encode()
    _rename_functions(graph_def, "_salplug_guided")


def _rename_functions(graph_def: Any, suffix: str) -> None:
    """Give every function of ``graph_def``'s library a name of its own (``suffix`` added, every
    reference updated): TensorFlow keeps the functions it derives for gradients (a while
    loop's ``..._rewritten`` condition) in one process-wide registry, where the guided copy's
    would clash with those of a plain copy of the same graph."""
    names = {f.signature.name: f.signature.name + suffix for f in graph_def.library.function}
    if not names:
        return
    rename_calls(graph_def.node, names)
    for function in graph_def.library.function:
        function.signature.name = names[function.signature.name]
        rename_calls(function.node_def, names)
    for gradient in graph_def.library.gradient:
        gradient.function_name = names.get(gradient.function_name, gradient.function_name)
        gradient.gradient_func = names.get(gradient.gradient_func, gradient.gradient_func)


def rename_calls(nodes: Any, names: Mapping[str, str]) -> None:
    """Point the function references of ``nodes`` (NodeDefs) at their new ``names``."""
    for node in nodes:
        if node.op in names:  # a function called as an op
            node.op = names[node.op]
        for value in node.attr.values():
            if value.HasField("func") and value.func.name in names:
                value.func.name = names[value.func.name]
            if value.HasField("list"):
                for func in value.list.func:
                    if func.name in names:
                        func.name = names[func.name]
