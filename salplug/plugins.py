"""The plugin manager: built-ins first, then entry points of group ``salplug``, each isolated.

Environment switches:

- ``SALPLUG_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry points (built-ins only).
- ``SALPLUG_BLOCK_PLUGINS=a,b``: block plugins by name (entry point names or built-in module names).
- ``SALPLUG_STRICT_PLUGINS=1``: a broken plugin is an error instead of a warning.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import pkgutil
import warnings
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError, PluginLoadWarning
from .registry import KINDS, Component, Registry

PROJECT = "salplug"
ENTRY_POINT_GROUP = "salplug"

#: Built-in plugins besides the method modules, registered after them under their module names.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "salplug.backends",
    "salplug.visualizers.images",
    "salplug.metrics.builtin",
)


def builtin_plugin_modules() -> list[str]:
    """Every module of ``salplug.builtin_methods`` (one plugin per method), then BUILTIN_PLUGINS."""
    from . import builtin_methods

    methods = sorted(
        f"{builtin_methods.__name__}.{info.name}"
        for info in pkgutil.iter_modules(builtin_methods.__path__) if not info.name.startswith("_")
    )
    return [*methods, *BUILTIN_PLUGINS]


_HOOK_KIND = {
    "register_methods": "method",
    "register_backends": "backend",
    "register_visualizers": "visualizer",
    "register_metrics": "metric",
}

# Keyword arguments of register() that become component metadata, per kind.
_METADATA_KEYS = {
    "method": {"requires", "description"},
    "backend": {"framework", "provides", "extra", "description"},
    "visualizer": {"description"},
    "metric": {"requires", "description"},
}


def _salplug_version() -> str:
    from . import __version__

    return __version__


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass
class PluginInfo:
    """What the host knows about one plugin."""

    name: str
    distribution: str | None = None
    version: str | None = None
    builtin: bool = False
    hooks: list[str] = field(default_factory=list)
    error: str | None = None


class PluginHost:
    """A pluggy manager plus the component registries it filled."""

    def __init__(self, pm: pluggy.PluginManager, *, strict: bool) -> None:
        self.pm = pm
        self.strict = strict
        self.registries: dict[str, Registry] = {kind: Registry(kind) for kind in KINDS}
        self.plugins: dict[str, PluginInfo] = {}

    # -- registries ------------------------------------------------------------------------
    @property
    def methods(self) -> Registry:
        return self.registries["method"]

    @property
    def backends(self) -> Registry:
        return self.registries["backend"]

    @property
    def visualizers(self) -> Registry:
        return self.registries["visualizer"]

    @property
    def metrics(self) -> Registry:
        return self.registries["metric"]

    @property
    def load_errors(self) -> dict[str, str]:
        """Plugin name -> why it was skipped."""
        return {name: info.error for name, info in self.plugins.items() if info.error}

    # -- loading ---------------------------------------------------------------------------
    def add_plugin(self, plugin: Any, name: str, *, distribution: str | None = None,
                   version: str | None = None, builtin: bool = False) -> bool:
        """Register ``plugin`` and collect its components; on failure, warn and roll back."""
        info = PluginInfo(name, distribution, version, builtin)
        self.plugins[name] = info
        if self.pm.is_blocked(name):
            info.error = "blocked"
            return False
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except Exception as exc:  # noqa: BLE001 - isolation is the point
            self._unregister(name)
            return self._failed(info, f"invalid hooks: {exc}")
        info.hooks = sorted(
            caller.name for caller in self.pm.get_hookcallers(plugin) or () if caller.name
        )
        added: list[tuple[Registry, str]] = []
        try:
            for hook_name, kind in _HOOK_KIND.items():
                for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                    if impl.plugin_name == name:
                        impl.function(register=self._register_callback(kind, info, added))
        except Exception as exc:  # noqa: BLE001
            for registry, component_name in added:
                registry._remove(component_name)
            self._unregister(name)
            return self._failed(info, f"{type(exc).__name__}: {exc}")
        return True

    def _unregister(self, name: str) -> None:
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)

    def _failed(self, info: PluginInfo, reason: str) -> bool:
        who = info.name
        if info.distribution:
            who = f"{info.name!r} from distribution {info.distribution} {info.version or ''}".strip()
        info.error = reason
        message = f"salplug plugin {who} was not loaded: {reason.rstrip('.')}"
        if self.strict or info.builtin:
            raise PluginError(message + " (strict mode: unset SALPLUG_STRICT_PLUGINS to only warn)"
                              if self.strict else message)
        warnings.warn(message + ". Everything else keeps working; set SALPLUG_BLOCK_PLUGINS="
                      f"{info.name} to silence this.", PluginLoadWarning, stacklevel=3)
        return False

    def _register_callback(self, kind: str, info: PluginInfo, added: list):
        registry = self.registries[kind]
        allowed = _METADATA_KEYS[kind]

        def register(name: str, target: Any, *, aliases: tuple[str, ...] | list[str] = (),
                     override: bool = False, **metadata: Any) -> None:
            unknown = set(metadata) - allowed
            if unknown:
                raise PluginError(
                    f"register() for a {kind} got unknown keyword(s) {sorted(unknown)}; "
                    f"accepted: name, target, aliases, override, {', '.join(sorted(allowed))}."
                )
            if not isinstance(name, str) or not name:
                raise PluginError(f"a {kind} must be registered under a non-empty string name")
            if target is None:
                raise PluginError(f"{kind} {name!r} was registered with target None")
            for key in ("requires", "provides"):
                if key in metadata:
                    metadata[key] = frozenset(metadata[key])
            component = Component(kind, name, target, info.name, info.distribution, info.version,
                                  tuple(aliases), metadata)
            registry.add(component, override=override)
            added.append((registry, name))

        return register

    def load_builtins(self) -> None:
        for module_name in builtin_plugin_modules():
            self.add_plugin(importlib.import_module(module_name), module_name, distribution="salplug",
                            version=_salplug_version(), builtin=True)

    def load_entry_points(self) -> None:
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
                         key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else None
            version = dist.version if dist is not None else None
            if self.pm.is_blocked(ep.name):
                self.plugins[ep.name] = PluginInfo(ep.name, dist_name, version, error="blocked")
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001
                info = PluginInfo(ep.name, dist_name, version)
                self.plugins[ep.name] = info
                self._failed(info, f"import failed: {type(exc).__name__}: {exc}")
                continue
            self.add_plugin(plugin, ep.name, distribution=dist_name, version=version)

    # -- backend detection -----------------------------------------------------------------
    def detect_backend(self, model: Any) -> str | None:
        return self.pm.hook.detect_backend(model=model)


def get_plugin_manager(*, autoload: bool | None = None, blocked: list[str] | tuple[str, ...] | None = None,
                       strict: bool | None = None, plugins: dict[str, Any] | None = None) -> PluginHost:
    """Build a fresh plugin host.

    Parameters
    ----------
    autoload : load entry points; default: unless ``SALPLUG_DISABLE_PLUGIN_AUTOLOAD`` is set.
    blocked : plugin names to block; default: ``SALPLUG_BLOCK_PLUGINS`` (comma separated).
    strict : raise on a broken plugin; default: ``SALPLUG_STRICT_PLUGINS``.
    plugins : extra plugin objects by name, registered after the built-ins (handy in tests).
    """
    if autoload is None:
        autoload = not _flag("SALPLUG_DISABLE_PLUGIN_AUTOLOAD")
    if blocked is None:
        blocked = [b.strip() for b in os.environ.get("SALPLUG_BLOCK_PLUGINS", "").split(",") if b.strip()]
    if strict is None:
        strict = _flag("SALPLUG_STRICT_PLUGINS")
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    host = PluginHost(pm, strict=strict)
    host.load_builtins()
    for name, plugin in (plugins or {}).items():
        host.add_plugin(plugin, name)
    if autoload:
        host.load_entry_points()
    return host


_default_host: PluginHost | None = None


def get_host() -> PluginHost:
    """The process-wide host, built on first use (``reset_host()`` discards it)."""
    global _default_host
    if _default_host is None:
        _default_host = get_plugin_manager()
    return _default_host


def reset_host() -> None:
    global _default_host
    _default_host = None
