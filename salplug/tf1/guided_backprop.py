"""``saliency.tf1.guided_backprop``: Guided Backprop on salplug's ``tf1`` backend.

The backend imports an in-memory copy of the graph, variables frozen to constants, with the
guided gradient for Relu and Relu6 ops: no checkpoint is written, the caller's graph is left
as it is, and ``feed_dict=None`` works.
"""

from __future__ import annotations

import numpy as np

from .base import TF1Saliency

__all__ = ["GuidedBackprop"]


class GuidedBackprop(TF1Saliency):
    """Guided Backpropagation (Springenberg et al. 2015) of ``y`` with respect to ``x``.

    ``tmp_ckpt_path`` is accepted for compatibility and unused (nothing is written to disk).
    """

    def __init__(self, graph, session, y, x, tmp_ckpt_path=None):
        super().__init__(graph, session, y, x)
        self._scalar_y = y.shape.rank == 0
        if self._scalar_y:  # the backend explains one value per example: give the scalar a batch axis
            import tensorflow as tf

            with graph.as_default():
                self._y = tf.reshape(y, [-1], name="salplug_guided_backprop_y")
        else:
            self._y = y

    def _explain(self, x_value, feed_dict, method, batch_size=1, **params):
        from ..api import explain
        from ..backends.tf1_model import TF1Model

        model = TF1Model(graph=self.graph, session=self.session, x=self.x, y=self._y, feed_dict=feed_dict)
        size = 1 if self._scalar_y else batch_size
        return explain(model, np.asarray(x_value), method, backend="tf1", batch_size=size, **params).values

    def GetMask(self, x_value, feed_dict=None):
        """Guided-backprop gradient of y for one unbatched input."""
        return self._explain(x_value, feed_dict, "guided_backprop")

    def GetSmoothedMask(self, x_value, feed_dict=None, stdev_spread=.15, nsamples=25, magnitude=True,
                        batch_size=1, **kwargs):
        """SmoothGrad of guided backprop; ``batch_size`` (a salplug addition) noisy copies per run."""
        if "GetMask" in vars(self) or type(self).GetMask is not GuidedBackprop.GetMask or kwargs:
            return super().GetSmoothedMask(x_value, feed_dict, stdev_spread, nsamples, magnitude, **kwargs)
        return self._explain(x_value, feed_dict, "smoothgrad", batch_size=batch_size, base="guided_backprop",
                             nsamples=nsamples, stdev_spread=stdev_spread, mode="squared" if magnitude else "mean",
                             seed=np.random.mtrand._rand)
