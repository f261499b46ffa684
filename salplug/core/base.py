"""``saliency.core.base`` names: the model-function keys, ``CoreSaliency`` and SmoothGrad.

Every method class of :mod:`salplug.core` is a thin wrapper: ``GetMask`` maps the upstream
keyword arguments to the parameters of one of salplug's registered methods and runs it with
the ``callable`` backend on the caller's ``call_model_function``. ``GetSmoothedMask`` runs the
registered ``smoothgrad`` method over the same base method.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backends.callable import (
    CONVOLUTION_LAYER_VALUES,
    CONVOLUTION_OUTPUT_GRADIENTS,
    INPUT_OUTPUT_GRADIENTS,
    OUTPUT_LAYER_VALUES,
)

__all__ = [
    "CONVOLUTION_LAYER_VALUES", "CONVOLUTION_OUTPUT_GRADIENTS", "INPUT_OUTPUT_GRADIENTS",
    "OUTPUT_LAYER_VALUES", "SHAPE_ERROR_MESSAGE", "CoreSaliency",
]

#: Error text (``str.format(expected, actual)``) raised as ValueError when a call_model_function
#: answers with an array of the wrong shape. INPUT_OUTPUT_GRADIENTS must have the shape of the
#: batch, the other keys its batch size.
SHAPE_ERROR_MESSAGE = {
    CONVOLUTION_LAYER_VALUES: (
        "Expected outermost dimension of CONVOLUTION_LAYER_VALUES to equal the batch size of "
        "x_value_batch - expected {}, actual {}"
    ),
    CONVOLUTION_OUTPUT_GRADIENTS: (
        "Expected outermost dimension of CONVOLUTION_OUTPUT_GRADIENTS to equal the batch size of "
        "x_value_batch - expected {}, actual {}"
    ),
    INPUT_OUTPUT_GRADIENTS: (
        "Expected key INPUT_OUTPUT_GRADIENTS to have the shape of x_value_batch - expected {}, "
        "actual {}"
    ),
    OUTPUT_LAYER_VALUES: (
        "Expected outermost dimension of OUTPUT_LAYER_VALUES to equal the batch size of "
        "x_value_batch - expected {}, actual {}"
    ),
}


def check_call_model_output(output: Any, input_shape: tuple, expected_keys) -> None:
    """Turn the ``expected_keys`` of ``output`` into arrays in place; raise ValueError with
    ``SHAPE_ERROR_MESSAGE`` when a shape does not fit a batch of ``input_shape``.

    Missing keys are left for the backend, which names what was returned instead.
    """
    for key in expected_keys or ():
        if key not in output:
            continue
        value = np.asarray(output[key])
        output[key] = value
        if key == INPUT_OUTPUT_GRADIENTS:
            expected, actual = tuple(input_shape), value.shape
        else:
            expected, actual = input_shape[0], (value.shape[0] if value.ndim else value.shape)
        if expected != actual and key in SHAPE_ERROR_MESSAGE:
            raise ValueError(SHAPE_ERROR_MESSAGE[key].format(expected, actual))


class ModelFunction:
    """The caller's call_model_function as the ``callable`` backend sees it.

    Batches reach the function in the caller's own sample shape (``shape``), answers are
    checked with upstream's shape errors, and gradients come back in the batch's shape.
    """

    def __init__(self, call_model_function: Any, shape: tuple) -> None:
        self.fn = call_model_function
        self.shape = tuple(shape)

    def __call__(self, x_value_batch, call_model_args=None, expected_keys=None):
        batch = np.asarray(x_value_batch)
        user = batch if batch.shape[1:] == self.shape else batch.reshape((len(batch),) + self.shape)
        output = self.fn(user, call_model_args=call_model_args, expected_keys=expected_keys)
        if not isinstance(output, Mapping):
            return output  # the backend explains what a call_model_function must return
        output = dict(output)
        check_call_model_output(output, user.shape, expected_keys)
        if user is not batch and INPUT_OUTPUT_GRADIENTS in output:
            output[INPUT_OUTPUT_GRADIENTS] = np.asarray(output[INPUT_OUTPUT_GRADIENTS]).reshape(batch.shape)
        return output


def _no_model(x_value_batch, call_model_args=None, expected_keys=None):
    raise RuntimeError("No call_model_function was given to this salplug.core method.")


def run(method: str, x_value: Any, call_model_function: Any, call_model_args: Any = None, *,
        batch_size: int | None = 1, image: bool = False, host: Any = None, **params: Any):
    """Run registered ``method`` on one unbatched input through the callable backend.

    ``image``: the method needs (H, W, C) images, so an (H, W) input gets a channel axis
    (the call_model_function still sees (N, H, W) batches). Returns ``(values, extras)`` with
    values in the input's own shape (without the added channel axis).
    """
    from ..api import explain

    x = np.asarray(x_value)
    shape = x.shape
    if image and x.ndim == 2:
        x = x[..., None]
    fn = _no_model if call_model_function is None else ModelFunction(call_model_function, shape)
    attribution = explain(fn, x, method, backend="callable", layout="...", host=host, batch_size=batch_size,
                          backend_options={"call_model_args": call_model_args}, **params)
    values = attribution.values
    if image and len(shape) == 2 and values.shape == x.shape:
        values = values[..., 0]
    return values, attribution.extras


@dataclass
class Spec:
    """How an upstream GetMask call maps onto a registered salplug method."""

    method: str
    params: dict[str, Any] = field(default_factory=dict)
    batch_size: int | None = 1
    image: bool = False


def _own_get_mask(instance: Any) -> bool:
    """True when ``instance.GetMask`` is the façade's own: not a subclass's, not patched on the
    instance or on the class (``mock.patch.object(IntegratedGradients, "GetMask", ...)``)."""
    if "GetMask" in vars(instance):
        return False
    for klass in type(instance).__mro__:
        if "_facade_get_mask" in vars(klass):  # the nearest of salplug's own façade classes
            return type(instance).GetMask is vars(klass)["_facade_get_mask"]
    return False


class CoreSaliency:
    """Base class of the upstream-compatible saliency methods.

    A subclass implements ``GetMask(x_value, call_model_function, call_model_args=None,
    **params)`` for one unbatched input; ``GetSmoothedMask`` smooths it with SmoothGrad.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # salplug's own façade classes (not a user's subclass, even one with a _spec of its
        # own): their GetMask, to tell a patched or overriding one
        if "_spec" in vars(cls) and cls.__module__.startswith(("salplug.core.", "salplug.tf1.")):
            cls._facade_get_mask = cls.GetMask

    def GetMask(self, x_value, call_model_function, call_model_args=None):
        """Return the saliency mask of one unbatched input (implemented by subclasses)."""
        raise NotImplementedError("A subclass of CoreSaliency must implement GetMask().")

    def _smooth_natively(self, x_value, kwargs) -> bool:
        """Whether ``_spec`` expresses GetSmoothedMask's work (Occlusion: not for a window
        larger than the image)."""
        return True

    def GetSmoothedMask(self, x_value, call_model_function, call_model_args=None, stdev_spread=.15,
                        nsamples=25, magnitude=True, **kwargs):
        """SmoothGrad: average ``GetMask`` over ``nsamples`` noisy copies of the input.

        The noise is N(0, sigma^2) with sigma = stdev_spread * (max(x) - min(x)), drawn from
        NumPy's global random state (``np.random.seed`` reproduces a map); with ``magnitude``
        the squared masks are averaged. ``kwargs`` are GetMask's own parameters.
        """
        smooth = {"nsamples": nsamples, "stdev_spread": stdev_spread,
                  "mode": "squared" if magnitude else "mean", "seed": np.random.mtrand._rand}
        if _own_get_mask(self) and self._smooth_natively(x_value, kwargs):
            spec = self._spec(**kwargs)
            values, _ = run("smoothgrad", x_value, call_model_function, call_model_args,
                            batch_size=spec.batch_size, image=spec.image, base=spec.method,
                            base_params=spec.params, **smooth)
            return values
        # A GetMask of the caller's own (or patched, or a case _spec cannot express): smooth
        # it with the registered smoothgrad all the same, one GetMask call per noisy copy.
        from ._host import GET_MASK, private_host

        x = np.asarray(x_value)
        values, _ = run("smoothgrad", x, None, None, batch_size=1, host=private_host(), base=GET_MASK,
                        base_params={"get_mask": self.GetMask, "shape": x.shape,
                                     "call_model_function": call_model_function,
                                     "call_model_args": call_model_args, "kwargs": kwargs},
                        **smooth)
        return values

    def format_and_check_call_model_output(self, output, input_shape, expected_keys):
        """Convert ``output[key]`` to arrays in place and check their shapes (ValueError); a
        missing key raises KeyError, as upstream."""
        for key in expected_keys or ():
            if key not in output:
                raise KeyError(key)
        check_call_model_output(output, tuple(input_shape), expected_keys)
