"""Saliency metrics.

:mod:`salplug.metrics.pic` is the Performance Information Curve (SIC / AIC) of Kapishnikov et
al. (ICCV 2019) with the upstream ``saliency.metrics.pic`` names. Submodules are imported on
use: ``import salplug.metrics`` loads nothing heavy.
"""

from __future__ import annotations

__all__ = ["pic"]


def __getattr__(name: str):
    if name == "pic":
        import importlib

        return importlib.import_module(f"{__name__}.pic")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
