"""``saliency.tf1.base``: the TF1 base classes.

``TF1CoreSaliency`` runs a :mod:`salplug.core` method (``core_instance``) on
``call_model_function``, made by :func:`salplug.tf1.utils.create_tf1_call_model_function` over
salplug's ``tf1`` backend (which does every TensorFlow step); ``TF1Saliency`` is the base of
``GuidedBackprop``, which uses the backend's guided copy of the graph.
"""

from __future__ import annotations

import numpy as np

from . import utils

__all__ = ["TF1Saliency", "TF1CoreSaliency", "X_SHAPE_ERROR_MESSAGE", "Y_SHAPE_ERROR_MESSAGE"]

X_SHAPE_ERROR_MESSAGE = "Unexpected outermost dimension for x tensor - expected {} for outermost dimension, actual {}"
Y_SHAPE_ERROR_MESSAGE = "Unexpected shape for y tensor - expected shape {}, actual {}"


class TF1Saliency:
    """Base class of the TF1 saliency methods.

    Parameters
    ----------
    graph : the tf.Graph.
    session : a tf.compat.v1.Session of ``graph``.
    y : the explained tensor: (N,) one scalar per example, or () for one example at a time.
    x : the input tensor, batch first.
    """

    def __init__(self, graph, session, y, x):
        self.graph = graph
        self.session = session
        self.y = y
        self.x = x

    def GetMask(self, x_value, feed_dict=None):
        """The mask of one unbatched input (implemented by subclasses)."""
        raise NotImplementedError("A subclass of TF1Saliency must implement GetMask().")

    def GetSmoothedMask(self, x_value, feed_dict=None, stdev_spread=.15, nsamples=25, magnitude=True, **kwargs):
        """SmoothGrad over ``GetMask`` (salplug's ``smoothgrad``; noise from NumPy's global state)."""
        from ..core._host import GET_MASK, private_host
        from ..core.base import run

        x = np.asarray(x_value)
        values, _ = run("smoothgrad", x, None, None, batch_size=1, host=private_host(), base=GET_MASK,
                        base_params={"get_mask": lambda v, _f, _a, **kw: self.GetMask(v, feed_dict, **kw),
                                     "shape": x.shape, "kwargs": kwargs},
                        nsamples=nsamples, stdev_spread=stdev_spread, mode="squared" if magnitude else "mean",
                        seed=np.random.mtrand._rand)
        return values


class TF1CoreSaliency(TF1Saliency):
    """A :mod:`salplug.core` method (``core_instance``) over ``call_model_function`` (the tf1 backend).

    ``conv_layer``: a convolutional layer's output tensor (Grad-CAM).
    """

    core_instance = None

    def __init__(self, graph, session, y, x, conv_layer=None):
        super().__init__(graph, session, y, x)
        self.conv_layer = conv_layer
        self.call_model_function = utils.create_tf1_call_model_function(graph, session, y, x, conv_layer)

    def validate_xy_tensor_shape(self, x_steps=1, batch_size=1):
        """Check that ``x`` and ``y`` can take batches of ``batch_size`` of ``x_steps`` points.

        ``y`` must be (None,) or exactly one value per batch row (a scalar when every batch has
        one row); ``x``'s first dimension must be None or the batch size. Raises ValueError.
        """
        target = batch_size if x_steps % batch_size == 0 else None
        y_shape = self.y.get_shape().as_list()
        known = [d for d in y_shape if d is not None]
        y_size = int(np.prod(known)) if known else 1
        if (y_size, len(known) < len(y_shape)) not in ((1, True), (target, False)):
            expected = "[None]" + ("" if target is None else f" or tensor with size {target}")
            raise ValueError(Y_SHAPE_ERROR_MESSAGE.format(expected, y_shape))
        x_shape = self.x.get_shape().as_list()
        outer = x_shape[0] if x_shape else None
        if outer not in (None, target):
            expected = "None" + ("" if target is None else f" or {target}")
            raise ValueError(X_SHAPE_ERROR_MESSAGE.format(expected, outer))

    def _validate(self, kwargs):
        """Hook: the shape check GetMask runs for ``kwargs``. By default (``batch_size`` counts noisy
        copies per run) a scalar ``y``, which explains row 0 only, takes one copy per run."""
        if self.y.shape.rank == 0 and kwargs.get("batch_size", 1) != 1:
            kwargs["batch_size"] = 1

    def GetSmoothedMask(self, x_value, feed_dict=None, stdev_spread=.15, nsamples=25, magnitude=True, **kwargs):
        """SmoothGrad of the core method (salplug's ``smoothgrad``, noise from NumPy's global state)."""
        if "GetMask" in vars(self) or self.core_instance is None or type(self).GetMask is not _declared_get_mask(self):
            return super().GetSmoothedMask(x_value, feed_dict, stdev_spread, nsamples, magnitude, **kwargs)
        kwargs = dict(kwargs)
        self._validate(kwargs)
        return self.core_instance.GetSmoothedMask(x_value, self.call_model_function, call_model_args=feed_dict,
                                                  stdev_spread=stdev_spread, nsamples=nsamples,
                                                  magnitude=magnitude, **kwargs)


def _declared_get_mask(instance):
    """The GetMask of the façade class that declared ``core_instance`` handling."""
    for klass in type(instance).__mro__:
        if vars(klass).get("_wraps_core"):
            return klass.GetMask
    return None
