"""Guided-backprop ReLU gradients for TensorFlow graphs (Springenberg et al. 2015).

Two gradient functions are registered with TensorFlow once, when this module is imported:
``SalplugGuidedRelu`` and ``SalplugGuidedRelu6``. They pass the incoming gradient back only
where the ReLU was active (``0 < input``, and ``input < 6`` for Relu6) AND the gradient is
positive. :data:`GUIDED_OVERRIDES` maps the op types to them, for ``Graph.gradient_override_map``.

The override is a graph-construction attribute: it applies to ops created inside the
``gradient_override_map`` block of a graph (a ``tf.compat.v1`` graph or the graph a
``tf.function`` traces) and is honoured by ``tf.gradients``, never by ``tf.GradientTape``.
Nothing global changes the gradients of anybody else's Relu ops.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

__all__ = ["GUIDED_OVERRIDES", "GUIDED_RELU", "GUIDED_RELU6", "count_guided", "nested_relus"]

GUIDED_RELU = "SalplugGuidedRelu"
GUIDED_RELU6 = "SalplugGuidedRelu6"
GUIDED_OVERRIDES = {"Relu": GUIDED_RELU, "Relu6": GUIDED_RELU6}
_CALL_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})


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


def count_guided(graph: Any) -> int:
    """Number of Relu/Relu6 ops of ``graph`` whose gradient is the guided one."""
    found = 0
    for op in graph.get_operations():
        if op.type in GUIDED_OVERRIDES:
            try:
                found += op.get_attr("_gradient_op_type") in (GUIDED_RELU.encode(), GUIDED_RELU6.encode())
            except ValueError:  # no such attribute: a plain Relu
                pass
    return found


def nested_relus(graph: Any) -> int:
    """Relu/Relu6 ops inside functions that ``graph`` calls (nested ``tf.function``s).

    Their gradients were fixed when those functions were traced, so they stay plain.
    Best effort: 0 when the function library cannot be read.
    """
    count = 0
    try:
        for op in graph.get_operations():
            if op.type not in _CALL_OPS:
                continue
            fdef = graph._get_function(op.get_attr("f").name)  # noqa: SLF001 - no public lookup
            if fdef is None:
                continue
            inner = getattr(fdef, "graph", None)
            if inner is not None:
                count += sum(o.type in GUIDED_OVERRIDES for o in inner.get_operations()) + nested_relus(inner)
            else:
                count += sum(n.op in GUIDED_OVERRIDES for n in fdef.definition.node_def)
    except Exception:  # noqa: BLE001 - a diagnostic only
        return count
    return count
