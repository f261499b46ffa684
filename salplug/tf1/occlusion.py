"""``saliency.tf1.occlusion``: Occlusion of a TF1 graph."""

from __future__ import annotations

from ..core import occlusion as core_occlusion
from .base import TF1CoreSaliency

__all__ = ["Occlusion"]


class Occlusion(TF1CoreSaliency):
    """Occlusion (salplug.core.Occlusion over the graph)."""

    _wraps_core = True

    def __init__(self, graph, session, y, x):
        super().__init__(graph, session, y, x)
        self.core_instance = core_occlusion.Occlusion()

    def GetMask(self, x_value, feed_dict=None, size=15, value=0, batch_size=1):
        """Occlusion map of one image; ``batch_size`` (a salplug addition) windows per session.run
        (1 when ``y`` is a scalar, which scores one row)."""
        return self.core_instance.GetMask(x_value, self.call_model_function, call_model_args=feed_dict,
                                          size=size, value=value, batch_size=1 if self.y.shape.rank == 0 else batch_size)
