"""One exception hierarchy. Every message says what was wrong and what to do next."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SalplugError(Exception):
    """Base class of every error salplug raises on purpose."""


class InputError(SalplugError, ValueError):
    """The input array or tensor cannot be explained as given (shape, dtype, values)."""


class TargetError(InputError):
    """The target (class index, list or callable) does not fit the input or the model."""


class LayerError(InputError):
    """The layer named for a layer-based method does not exist or cannot be hooked."""


class ParameterError(SalplugError, ValueError):
    """A method, backend or visualizer was given a parameter it does not accept."""


class CapabilityError(SalplugError):
    """The method needs a primitive that the model backend does not provide."""


class ModelOutputError(SalplugError):
    """The model (or the user's call_model_function) returned something unusable."""


class BackendUnavailableError(SalplugError, ImportError):
    """The framework a backend needs is not installed."""


class PluginError(SalplugError):
    """A plugin failed to load, registered nonsense, or clashed with another plugin."""


class DuplicateComponentError(PluginError):
    """Two plugins registered the same component name without ``override=True``."""


class UnknownComponentError(SalplugError, KeyError):
    """No registered component has the requested name."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class PluginLoadWarning(UserWarning):
    """A third-party plugin was skipped because it failed; the rest keeps working."""


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """Return the candidate most similar to ``name``, or None when nothing is close."""
    matches = difflib.get_close_matches(str(name), list(candidates), n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A ' Did you mean 'x'?' suffix, or an empty string."""
    match = closest(name, candidates)
    return f" Did you mean {match!r}?" if match else ""


def model_failure(where: str, exc: Exception) -> ModelOutputError:
    """An exception from the model (or a method running it) as one paragraph naming where it happened."""
    message = " ".join(str(exc).split()) or "(no message)"
    return ModelOutputError(f"{where} failed: {type(exc).__name__}: {message}")
