"""``saliency.tf1.xrai``: XRAI of a TF1 graph."""

from __future__ import annotations

from ..core import xrai as core_xrai
from ..core.xrai import XRAIOutput, XRAIParameters
from .base import TF1CoreSaliency

__all__ = ["XRAI", "XRAIParameters", "XRAIOutput"]


class XRAI(TF1CoreSaliency):
    """XRAI (salplug.core.XRAI over the graph)."""

    _wraps_core = True

    def __init__(self, graph, session, y, x):
        super().__init__(graph, session, y, x)
        self.core_instance = core_xrai.XRAI()

    def _check(self, batch_size, extra_parameters):
        steps = (XRAIParameters() if extra_parameters is None else extra_parameters).steps
        self.validate_xy_tensor_shape(steps, batch_size)

    def _validate(self, kwargs):
        """GetSmoothedMask runs GetMask's check (``batch_size``: IG points per run, as upstream)."""
        self._check(kwargs.get("batch_size", 1), kwargs.get("extra_parameters"))

    def GetMask(self, x_value, feed_dict=None, baselines=None, segments=None, base_attribution=None,
                batch_size=1, extra_parameters=None):
        """The XRAI map of one input; see salplug.core.XRAI.GetMaskWithDetails."""
        self._check(batch_size, extra_parameters)
        return self.core_instance.GetMask(x_value, call_model_function=self.call_model_function,
                                          call_model_args=feed_dict, baselines=baselines, segments=segments,
                                          base_attribution=base_attribution, batch_size=batch_size,
                                          extra_parameters=extra_parameters)

    def GetMaskWithDetails(self, x_value, feed_dict=None, baselines=None, segments=None, base_attribution=None,
                           batch_size=1, extra_parameters=None):
        """XRAI with baselines, IG maps and segments on request (an XRAIOutput)."""
        self._check(batch_size, extra_parameters)
        return self.core_instance.GetMaskWithDetails(x_value, call_model_function=self.call_model_function,
                                                     call_model_args=feed_dict, baselines=baselines,
                                                     segments=segments, base_attribution=base_attribution,
                                                     batch_size=batch_size, extra_parameters=extra_parameters)
