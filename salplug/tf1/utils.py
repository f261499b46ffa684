"""``saliency.tf1.utils``: a call_model_function over a TensorFlow 1 graph and session.

The function is a thin key mapping over salplug's ``tf1`` backend
(:meth:`salplug.backends.tf1.TF1Adapter.run_fetches`): the backend builds the gradient ops
(once per graph), feeds the session and, for a finalized graph, runs an in-memory copy.
"""

from __future__ import annotations

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

# upstream key -> what the backend's run_fetches evaluates for it
_FETCH_OF_KEY = {
    OUTPUT_LAYER_VALUES: "y",
    INPUT_OUTPUT_GRADIENTS: "input_gradients",
    CONVOLUTION_LAYER_VALUES: "layer",
    CONVOLUTION_OUTPUT_GRADIENTS: "layer_gradients",
}


def create_tf1_call_model_function(graph, session, y, x, conv_layer=None):
    """A call_model_function running ``session`` on ``graph`` (through salplug's tf1 backend).

    Parameters
    ----------
    graph, session : the TF1 graph and a session of it (variables initialised).
    y : the explained tensor: one scalar per example, shape (N,), or a scalar () for batches of one.
    x : the input tensor, batch first.
    conv_layer : a convolutional layer's output tensor, batch first, for Grad-CAM's keys.

    The returned function takes ``call_model_args`` as the session's feed_dict (never modified;
    None means no other feeds; its keys reach session.run unchanged) and answers one
    ``session.run`` per call. Gradient ops are added to the graph once per (y, tensor), however
    many functions are created; a finalized graph is run through an in-memory copy, fed the
    variables' current values (read from ``session`` in one more run) on every call.
    """
    return _call_model_function(graph, session, y, x, conv_layer)


def _call_model_function(graph, session, y, x, conv_layer=None, guided=False):
    """``create_tf1_call_model_function``; ``guided``: gradients through the guided copy."""
    adapter = None
    if y is not None:
        from ..backends.tf1 import TF1Adapter, TF1Model

        adapter = TF1Adapter(TF1Model(graph, session, x, y, conv_layer=conv_layer), upstream=True)

    def call_model_function(x_value_batch, call_model_args=None, expected_keys=None):
        """Run the model on ``x_value_batch``; ``call_model_args`` is the feed_dict."""
        keys = list(expected_keys or ())
        wants = []
        for key in keys:
            want = _FETCH_OF_KEY.get(key)
            if want is None:
                raise ValueError(f"Invalid expected key {key}")
            if want.startswith("layer") and conv_layer is None:
                raise RuntimeError(MISSING_CONV_LAYER_ERROR_MESSAGE.format(key))
            wants.append(want)
        if adapter is None:
            if keys:
                raise RuntimeError(MISSING_Y_ERROR_MESSAGE.format(keys[0]))
            return {}
        values = adapter.run_fetches(x_value_batch, wants, call_model_args, guided=guided)
        out = {}
        for key, value in zip(keys, values):
            if key == OUTPUT_LAYER_VALUES and np.ndim(value) == 0:
                value = np.reshape(value, (1,))  # a scalar y explains a batch of one
            out[key] = value
        return out

    return call_model_function
