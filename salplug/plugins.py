"""The plugin manager: built-ins first, then entry points of group ``salplug``, each isolated.

Environment switches:

- ``SALPLUG_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry points (built-ins only).
- ``SALPLUG_BLOCK_PLUGINS=a,b``: block plugins by name (entry point names or built-in module names).
- ``SALPLUG_STRICT_PLUGINS=1``: a broken plugin is an error instead of a warning.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import pkgutil
import warnings
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError, PluginLoadWarning
from .registry import KINDS, Component, Registry, _reraise_interrupt

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
        self._warned_detectors: set[str] = set()

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
        if self._name_taken(info) or self._object_taken(info, plugin):
            return False
        self.plugins[name] = info
        if self.pm.is_blocked(name):
            info.error = "blocked"
            return False
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except BaseException as exc:  # noqa: BLE001 - isolation is the point
            _reraise_interrupt(exc)
            self._unregister(name)
            return self._failed(info, f"invalid hooks: {_short(exc)}")
        info.hooks = sorted(
            caller.name for caller in self.pm.get_hookcallers(plugin) or () if caller.name
        )
        before = {kind: registry.snapshot() for kind, registry in self.registries.items()}
        try:
            for hook_name, kind in _HOOK_KIND.items():
                for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                    if impl.plugin_name == name:
                        impl.function(register=self._register_callback(kind, info))
        except BaseException as exc:  # noqa: BLE001
            _reraise_interrupt(exc)
            for kind, state in before.items():  # exactly what was there before, overridden built-ins included
                self.registries[kind].restore(state)
            self._unregister(name)
            return self._failed(info, _describe(exc))
        return True

    def _name_taken(self, info: PluginInfo) -> bool:
        """Refuse a plugin whose name another plugin already holds; the holder stays untouched."""
        holder = self.plugins.get(info.name)
        if holder is None:
            return False
        key = info.name
        for n in range(2, 1000):  # record the refused one next to the holder, for `salplug plugins`
            key = f"{info.name} ({_origin(info)})" + (f" #{n}" if n > 2 else "")
            if key not in self.plugins:
                break
        self.plugins[key] = info
        self._failed(info, f"another plugin already has the name {info.name!r} ({_origin(holder)}); "
                           f"rename this entry point, or uninstall one of the two distributions", block_hint=False)
        return True

    def _object_taken(self, info: PluginInfo, plugin: Any) -> bool:
        """Refuse a module or object that is already registered under another name."""
        other = self.pm.get_name(plugin) if self.pm.is_registered(plugin) else None
        if other is None:
            return False
        self.plugins[info.name] = info
        self._failed(info, f"it is the same object as the already loaded plugin {other!r}; "
                           f"point the entry point at your own module")
        return True

    def _unregister(self, name: str) -> None:
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)

    def _failed(self, info: PluginInfo, reason: str, *, block_hint: bool = True) -> bool:
        who = info.name
        if info.distribution:
            who = f"{info.name!r} from distribution {info.distribution} {info.version or ''}".strip()
        info.error = reason
        message = f"salplug plugin {who} was not loaded: {reason.rstrip('.')}"
        if self.strict or info.builtin:
            raise PluginError(message + " (strict mode: unset SALPLUG_STRICT_PLUGINS to only warn)"
                              if self.strict else message)
        hint = f"; set SALPLUG_BLOCK_PLUGINS={info.name} to silence this" if block_hint else ""
        warnings.warn(f"{message}. Everything else keeps working{hint}.", PluginLoadWarning, stacklevel=3)
        return False

    def _register_callback(self, kind: str, info: PluginInfo):
        registry = self.registries[kind]
        allowed = _METADATA_KEYS[kind]

        def register(name: str, target: Any, *, aliases: str | tuple[str, ...] | list[str] = (),
                     override: bool = False, **metadata: Any) -> None:
            unknown = set(metadata) - allowed
            if unknown:
                raise PluginError(
                    f"register() for a {kind} got unknown keyword(s) {sorted(unknown)}; "
                    f"accepted: name, target, aliases, override, {', '.join(sorted(allowed))}."
                )
            if not isinstance(name, str) or not name:
                raise PluginError(f"a {kind} must be registered under a non-empty string name")
            _check_target(kind, name, target)
            for key in ("requires", "provides"):
                if key in metadata:
                    metadata[key] = frozenset(_names(metadata[key], kind, name, key))
            component = Component(kind, name, target, info.name, info.distribution, info.version,
                                  _names(aliases, kind, name, "aliases"), metadata)
            registry.add(component, override=override)

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
                self.plugins.setdefault(ep.name, PluginInfo(ep.name, dist_name, version, error="blocked"))
                continue
            if self._name_taken(PluginInfo(ep.name, dist_name, version)):
                continue  # refused before its module is even imported
            try:
                plugin = ep.load()
            except BaseException as exc:  # noqa: BLE001 - sys.exit() in a plugin must not end the host
                _reraise_interrupt(exc)
                info = PluginInfo(ep.name, dist_name, version)
                self.plugins[ep.name] = info
                self._failed(info, f"import failed: {_describe(exc)}")
                continue
            self.add_plugin(plugin, ep.name, distribution=dist_name, version=version)

    # -- backend detection -----------------------------------------------------------------
    def detect_backend(self, model: Any, *, registered: bool = False) -> str | None:
        """The first usable answer of the plugins' detectors: a backend name.

        A detector that raises, or answers something that is not a name (a string), is skipped
        with a warning naming its plugin (an error under strict mode). ``registered``: a name
        that is not a registered backend is skipped the same way (``create_adapter`` asks so).
        """
        impls = self.pm.hook.detect_backend.get_hookimpls()
        if any(_is_wrapper(i) for i in impls):
            return self._detect_wrapped(model, registered)
        return self._detect(model, impls, registered)

    def _detect(self, model: Any, impls: list[Any], registered: bool) -> str | None:
        """pluggy's call order (tryfirst / last registered first), each detector guarded."""
        for impl in reversed([i for i in impls if not _is_wrapper(i)]):
            try:
                answer = impl.function(*[{"model": model}[arg] for arg in impl.argnames])
            except Exception as exc:  # noqa: BLE001 - one broken detector must not break auto-detection
                self._detector_failed(impl.plugin_name, f"raised {_describe(exc)}", exc)
                continue
            if answer is None:
                continue
            if not self._usable(answer, registered):
                self._detector_failed(impl.plugin_name, self._unusable(answer))
                continue
            return answer
        return None

    def _detect_wrapped(self, model: Any, registered: bool) -> str | None:
        """Hook wrappers need pluggy's own call loop, which hides who answered: on a bad outcome
        the detectors are asked again one by one to find the culprit, which is then left out."""
        left_out: list[Any] = []
        while True:
            caller = self.pm.subset_hook_caller("detect_backend", left_out) if left_out else self.pm.hook.detect_backend
            error = None
            try:
                answer = caller(model=model)
            except Exception as exc:  # noqa: BLE001 - a detector (or a wrapper) raised
                answer, error = None, exc
            if error is None and (answer is None or self._usable(answer, registered)):
                return answer
            impls = caller.get_hookimpls()
            what = f"raised {_describe(error)}" if error is not None else self._unusable(answer)
            culprit = self._culprit(model, impls, answer, error, registered)
            if culprit is None:  # a wrapper changed the outcome, or a detector answered differently this time
                wrappers = sorted({i.plugin_name for i in impls if _is_wrapper(i)})
                message = (f"salplug: the detect_backend hooks {what}, and salplug cannot tell which plugin did: "
                           f"a hook wrapper (from plugin(s) {', '.join(map(repr, wrappers))}) can change "
                           f"the outcome, which pluggy's wrapper loop hides. The answer was skipped and the "
                           f"detectors were asked without the wrappers. Pass backend= explicitly, or block "
                           f"the plugin with SALPLUG_BLOCK_PLUGINS.")
                if self.strict:
                    raise PluginError(message + " (strict mode: unset SALPLUG_STRICT_PLUGINS to only warn)") \
                        from error
                warnings.warn(message, PluginLoadWarning, stacklevel=3)
                return self._detect(model, impls, registered)
            self._detector_failed(culprit, what, error)
            left_out.append(self.pm.get_plugin(culprit))

    def _culprit(self, model: Any, impls: list[Any], answer: Any, error: Exception | None,
                 registered: bool) -> str | None:
        """The plugin whose detector gave the bad outcome (the first to raise or answer, in pluggy's
        order, doing the same again), or None when none did."""
        for impl in reversed([i for i in impls if not _is_wrapper(i)]):
            try:
                again = impl.function(*[{"model": model}[arg] for arg in impl.argnames])
            except Exception as exc:  # noqa: BLE001
                return impl.plugin_name if error is not None and type(exc) is type(error) else None
            if again is not None:
                same = error is None and not self._usable(again, registered) and _same(again, answer)
                return impl.plugin_name if same else None
        return None

    def _unusable(self, answer: Any) -> str:
        what = "registered backend" if isinstance(answer, str) else "backend name (a string)"
        return f"answered {_short_repr(answer)}, which is not a {what} (registered: {', '.join(self.backends.names())})"

    def _usable(self, answer: Any, registered: bool) -> bool:
        return isinstance(answer, str) and bool(answer) and (not registered or answer in self.backends)

    def _detector_failed(self, plugin_name: str, what: str, exc: Exception | None = None) -> None:
        info = self.plugins.get(plugin_name) or PluginInfo(plugin_name)
        who = f"{plugin_name!r}" + (f" from {_origin(info)}" if info.distribution else "")
        message = (f"salplug plugin {who}: its detect_backend hook {what}; it was skipped and "
                   f"the other detectors answered. Pass backend= explicitly, fix the plugin, or block it with "
                   f"SALPLUG_BLOCK_PLUGINS={plugin_name}.")
        if self.strict:
            raise PluginError(message + " (strict mode: unset SALPLUG_STRICT_PLUGINS to only warn)") from exc
        if plugin_name not in self._warned_detectors:
            self._warned_detectors.add(plugin_name)
            warnings.warn(message, PluginLoadWarning, stacklevel=3)


def _is_wrapper(impl: Any) -> bool:
    return bool(getattr(impl, "hookwrapper", False) or getattr(impl, "wrapper", False))


def _same(a: Any, b: Any) -> bool:
    """``a == b`` for any two answers (an object whose ``==`` raises or is not a bool: identity)."""
    try:
        return a is b or bool(a == b)
    except Exception:  # noqa: BLE001 - an odd answer's __eq__ / __bool__
        return False


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    text = text if len(text) <= limit else text[:limit] + "..."
    return text if isinstance(value, str) else f"{text} (of type {type(value).__name__})"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"the plugin called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {_short(exc)}"


def _short(exc: BaseException, limit: int = 500) -> str:
    """``str(exc)`` cut to ``limit`` characters (pluggy's messages can list every plugin)."""
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + " [...]"


def _origin(info: PluginInfo) -> str:
    if info.builtin:
        return "built into salplug"
    if info.distribution:
        return f"distribution {info.distribution} {info.version or ''}".strip()
    return "no distribution"


def _names(value: Any, kind: str, name: str, key: str) -> tuple[str, ...]:
    """A str is one item; otherwise an iterable of non-empty strings."""
    items = (value,) if isinstance(value, str) else value
    try:
        items = tuple(items)
    except TypeError:
        items = None
    if items is None or not all(isinstance(i, str) and i for i in items):
        raise PluginError(f"register({name!r}, ...) for a {kind}: {key}= must be a string or a tuple of "
                          f"non-empty strings, not {value!r}.")
    return items


#: What a non-lazy target must look like, per kind (the method / metric protocol, or a callable).
_TARGET_RULES = {"method": "explain", "metric": "evaluate", "visualizer": None, "backend": None}


def _check_target(kind: str, name: str, target: Any) -> None:
    """Reject a target salplug could never use, now rather than at a user's first call."""
    if target is None:
        raise PluginError(f"{kind} {name!r} was registered with target None")
    if isinstance(target, str):
        if not target.strip():
            raise PluginError(f"{kind} {name!r} was registered with an empty target string")
        return  # lazy: checked when first used
    attr = _TARGET_RULES[kind]
    if isinstance(target, type):
        if attr and not callable(getattr(target, attr, None)):
            raise PluginError(f"{kind} {name!r}: the class {target.__name__} has no {attr}() method.")
        if kind != "backend":
            _check_no_arg_class(kind, name, target)
        return
    if attr is None:
        if not callable(target):
            raise PluginError(f"{kind} {name!r}: the target must be a callable, a class or a "
                              f"\"module:Name\" string, not {type(target).__name__}.")
    elif not callable(getattr(target, attr, None)):
        raise PluginError(f"{kind} {name!r}: the target must be a class (instantiated without arguments), an "
                          f"object with an {attr}() method, or a \"module:Name\" string, not "
                          f"{type(target).__name__}.")


def _check_no_arg_class(kind: str, name: str, cls: type) -> None:
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # builtins without a signature: nothing to check
        return
    try:
        signature.bind()
    except TypeError as exc:
        raise PluginError(f"{kind} {name!r}: salplug instantiates {cls.__name__} without arguments, but "
                          f"{cls.__name__}{signature} needs some ({exc}). Give its parameters defaults, or "
                          f"take them as keyword parameters of {_TARGET_RULES[kind] or '__call__'}() instead.") from None


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
