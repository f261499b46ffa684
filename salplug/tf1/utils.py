"""``saliency.tf1.utils``: a call_model_function over a TensorFlow 1 graph and session."""

from __future__ import annotations

import weakref

import numpy as np

from ..core.base import (
    CONVOLUTION_LAYER_VALUES,
    CONVOLUTION_OUTPUT_GRADIENTS,
    INPUT_OUTPUT_GRADIENTS,
    OUTPUT_LAYER_VALUES,
)

__all__ = [
    "CONVOLUTION_LAYER_VALUES", "CONVOLUTION_OUTPUT_GRADIENTS", "INPUT_OUTPUT_GRADIENTS", "OUTPUT_LAYER_VALUES",
    "MISSING_Y_ERROR_MESSAGE", "MISSING_CONV_LAYER_ERROR_MESSAGE", "create_tf1_call_model_function",
]

MISSING_Y_ERROR_MESSAGE = "Cannot return key {} because no y was specified"
MISSING_CONV_LAYER_ERROR_MESSAGE = "Cannot return key {} because no conv_layer was specified"

# graph -> {(y name, tensor name): gradient tensor}: built once per graph, not once per wrapper.
_GRADIENTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _gradient(graph, y, wrt):
    table = _GRADIENTS.setdefault(graph, {})
    key = (y.name, wrt.name)
    if key not in table:
        import tensorflow as tf

        with graph.as_default():
            table[key] = tf.compat.v1.gradients(y, wrt)[0]
    return table[key]


def create_tf1_call_model_function(graph, session, y, x, conv_layer=None):
    """A call_model_function running ``session`` on ``graph``.

    Parameters
    ----------
    graph, session : the TF1 graph and a session of it (variables initialised).
    y : the explained tensor: one scalar per example, shape (N,), or a scalar () for batches of one.
    x : the input tensor, batch first.
    conv_layer : a convolutional layer's output tensor, batch first, for Grad-CAM's keys.

    The returned function takes ``call_model_args`` as the session's feed_dict (never modified;
    None means no other feeds) and answers one ``session.run`` per call. Gradient ops are added
    to the graph once per (y, tensor), however many functions are created.
    """
    def fetch(key):
        if key == INPUT_OUTPUT_GRADIENTS:
            grad = _gradient(graph, y, x)
            if grad is None:
                raise ValueError(f"y ({y.name}) does not depend on x ({x.name}): its gradient is None.")
            return grad
        if key == OUTPUT_LAYER_VALUES:
            if y is None:
                raise RuntimeError(MISSING_Y_ERROR_MESSAGE.format(key))
            return y
        if key in (CONVOLUTION_LAYER_VALUES, CONVOLUTION_OUTPUT_GRADIENTS):
            if conv_layer is None:
                raise RuntimeError(MISSING_CONV_LAYER_ERROR_MESSAGE.format(key))
            return conv_layer if key == CONVOLUTION_LAYER_VALUES else _gradient(graph, y, conv_layer)
        raise ValueError(f"Invalid expected key {key}")

    def call_model_function(x_value_batch, call_model_args=None, expected_keys=None):
        """Run the model on ``x_value_batch``; ``call_model_args`` is the feed_dict."""
        keys = list(expected_keys or ())
        if INPUT_OUTPUT_GRADIENTS in keys and y is None:
            raise RuntimeError(MISSING_Y_ERROR_MESSAGE.format(INPUT_OUTPUT_GRADIENTS))
        fetches = [fetch(key) for key in keys]
        feed = dict(call_model_args or {})
        feed[x] = x_value_batch
        with graph.as_default():
            data = session.run(fetches, feed_dict=feed)
        out = {}
        for key, value in zip(keys, data):
            if key == OUTPUT_LAYER_VALUES and np.ndim(value) == 0:
                value = np.reshape(value, (1,))  # a scalar y explains a batch of one
            out[key] = value
        return out

    return call_model_function
