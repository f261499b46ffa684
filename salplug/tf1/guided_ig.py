"""``saliency.tf1.guided_ig``: Guided IG of a TF1 graph."""

from __future__ import annotations

from ..core import guided_ig as core_guided_ig
from .base import TF1CoreSaliency

__all__ = ["GuidedIG"]


class GuidedIG(TF1CoreSaliency):
    """Guided IG (salplug.core.GuidedIG over the graph)."""

    _wraps_core = True

    def __init__(self, graph, session, y, x):
        super().__init__(graph, session, y, x)
        self.core_instance = core_guided_ig.GuidedIG()

    def GetMask(self, x_value, feed_dict=None, x_baseline=None, x_steps=200, fraction=0.25, max_dist=0.02):
        """Guided IG of one unbatched input; x_steps session.run calls."""
        return self.core_instance.GetMask(x_value, self.call_model_function, call_model_args=feed_dict,
                                          x_baseline=x_baseline, x_steps=x_steps, fraction=fraction,
                                          max_dist=max_dist)
