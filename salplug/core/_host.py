"""A private plugin host with one extra method: a caller's own ``GetMask`` as a salplug method.

``CoreSaliency.GetSmoothedMask`` on a subclass that implements ``GetMask`` itself (as upstream
users do) runs the registered ``smoothgrad`` method over this one, so the noise, its seeding
and the averaging are salplug's, and ``GetMask`` is called once per noisy copy.
"""

from __future__ import annotations

import functools

import numpy as np

from ..hookspecs import hookimpl
from ..types import Method

GET_MASK = "_upstream_get_mask"


class UpstreamGetMask(Method):
    """Call ``get_mask(x, call_model_function, call_model_args, **kwargs)`` on each row."""

    requires = frozenset()

    def explain(self, ctx, x, targets, *, get_mask=None, shape=(), call_model_function=None,
                call_model_args=None, kwargs=None):
        maps = [np.asarray(get_mask(row.reshape(shape), call_model_function, call_model_args, **(kwargs or {})),
                           dtype=np.float64) for row in x]
        return np.stack(maps)


@hookimpl
def register_methods(register):
    register(GET_MASK, UpstreamGetMask, description="a salplug.core subclass's own GetMask (internal)")


@functools.lru_cache(maxsize=1)
def private_host():
    """The plugin host for the internal method: built-ins, entry points as configured, plus it."""
    import sys

    from ..plugins import get_plugin_manager

    return get_plugin_manager(plugins={"salplug.core._host": sys.modules[__name__]})
