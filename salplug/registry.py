"""Named registries of components (methods, backends, visualizers, metrics).

A component is registered by a plugin under a name, with optional aliases and metadata.
Its target is either the object itself or a lazy ``"package.module:Name"`` string that is
imported only when the component is first used, so discovery never imports a framework.
``instantiate`` and ``resolve_keywords`` turn a method or metric into a checked instance and
its full parameters.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import (
    BackendUnavailableError,
    CapabilityError,
    DuplicateComponentError,
    ModelOutputError,
    ParameterError,
    PluginError,
    SalplugError,
    UnknownComponentError,
    closest,
    did_you_mean,
)

KINDS = ("method", "backend", "visualizer", "metric")


@dataclass
class Component:
    """One registered component and where it came from."""

    kind: str
    name: str
    target: Any
    plugin: str
    distribution: str | None = None
    version: str | None = None
    aliases: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    _loaded: Any = field(default=None, repr=False)

    @property
    def provider(self) -> str:
        """Human-readable origin: the distribution (with version) or the plugin name."""
        if self.distribution:
            return f"{self.distribution} {self.version or ''}".strip()
        return self.plugin

    @property
    def is_lazy(self) -> bool:
        return isinstance(self.target, str)

    def load(self) -> Any:
        """Return the target object, importing a lazy ``"module:attr"`` target on first use."""
        if self._loaded is not None:
            return self._loaded
        if not self.is_lazy:
            self._loaded = self.target
            return self._loaded
        module_name, _, attr = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            extra = self.metadata.get("extra")
            if extra:
                raise BackendUnavailableError(
                    f"The {self.kind} {self.name!r} needs a package that is not installed "
                    f"({exc}). Install it with: pip install \"salplug[{extra}]\""
                ) from exc
            raise PluginError(
                f"The {self.kind} {self.name!r} from {self.provider} could not be imported "
                f"from {module_name!r}: {exc}"
            ) from exc
        except BaseException as exc:  # noqa: BLE001 - a plugin module may raise anything on import
            _reraise_interrupt(exc)
            raise PluginError(
                f"The {self.kind} {self.name!r} from {self.provider} could not be imported from "
                f"{module_name!r}: importing it raised {describe_exception(exc)}. Fix or uninstall the plugin, or "
                f"block it with SALPLUG_BLOCK_PLUGINS={self.plugin}."
            ) from exc
        obj = module
        for part in attr.split(".") if attr else ():
            try:
                obj = getattr(obj, part)
            except AttributeError as exc:
                raise PluginError(
                    f"The {self.kind} {self.name!r} from {self.provider} points to "
                    f"{self.target!r}, but {module_name!r} has no attribute {part!r}."
                ) from exc
            except Exception as exc:  # noqa: BLE001 - a module __getattr__ may raise anything
                raise PluginError(
                    f"The {self.kind} {self.name!r} from {self.provider} points to {self.target!r}; "
                    f"reading {part!r} raised {describe_exception(exc)}."
                ) from exc
        self._loaded = obj
        return obj


class Registry:
    """Components of one kind, by name and alias."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Component] = {}
        self._aliases: dict[str, str] = {}

    def add(self, component: Component, *, override: bool = False) -> None:
        """Register ``component``; a clash with another plugin is an error unless ``override``.

        With ``override``, the name replaces the component of that name (whose aliases then
        point to the newcomer) and each alias is re-pointed; no other component is removed.
        An alias that is another component's *name* is always an error.
        """
        name, aliases = component.name, tuple(dict.fromkeys(a for a in component.aliases if a != component.name))
        for key in (name, *aliases):
            owner = self._resolve(key)
            if owner is None:
                continue
            if not override:
                raise DuplicateComponentError(
                    f"{self.kind} name {key!r} is registered twice: by {owner.provider} "
                    f"(plugin {owner.plugin!r}) and by {component.provider} (plugin "
                    f"{component.plugin!r}). Rename one, block one with "
                    f"SALPLUG_BLOCK_PLUGINS, or pass override=True in the later register() call."
                )
            if key != name and key == owner.name and owner.name != name:
                raise DuplicateComponentError(
                    f"alias {key!r} of {self.kind} {name!r} (plugin {component.plugin!r}) is the name of "
                    f"the {self.kind} {owner.name!r} from {owner.provider}; override=True re-points aliases "
                    f"but never removes another component. Register under the name {key!r} to replace it, "
                    f"or choose another alias."
                )
        inherited: tuple[str, ...] = ()
        replaced = self._items.get(name)
        if replaced is not None:  # override by name: keep the old aliases, pointing to the newcomer
            inherited = tuple(a for a in replaced.aliases if self._aliases.get(a) == name)
        for key in (name, *aliases):  # re-point aliases held by other components
            holder = self._aliases.get(key)
            if holder is not None and holder != name:
                self._drop_alias(key)
        component.aliases = tuple(dict.fromkeys((*aliases, *inherited)))
        self._items[name] = component
        for alias in component.aliases:
            self._aliases[alias] = name

    def _drop_alias(self, alias: str) -> None:
        """Detach ``alias`` from the component it points to (a copy without it replaces that component)."""
        holder = self._aliases.pop(alias)
        old = self._items[holder]
        self._items[holder] = replace(old, aliases=tuple(a for a in old.aliases if a != alias))

    def snapshot(self) -> tuple[dict[str, Component], dict[str, str]]:
        """The registry's state, for ``restore`` (components are never mutated once registered)."""
        return dict(self._items), dict(self._aliases)

    def restore(self, state: tuple[dict[str, Component], dict[str, str]]) -> None:
        """Put back exactly what ``snapshot`` saw: components and aliases."""
        self._items, self._aliases = dict(state[0]), dict(state[1])

    def _resolve(self, name: str) -> Component | None:
        key = self._aliases.get(name, name)
        return self._items.get(key)

    def get(self, name: str) -> Component:
        """Return the component called ``name`` (or an alias of it)."""
        if not isinstance(name, str):
            raise UnknownComponentError(
                f"A {self.kind} is chosen by its name (a string), not {type(name).__name__}. "
                f"Available: {', '.join(self.names()) or 'none'}."
            )
        found = self._resolve(name) or self._resolve(name.lower().replace("-", "_"))
        if found is not None:
            return found
        everything = [*self._items, *self._aliases]
        match = closest(name, everything)
        hint = f" Did you mean {self._aliases.get(match, match)!r}?" if match else ""
        raise UnknownComponentError(
            f"Unknown {self.kind} {name!r}.{hint} Available {self.kind}s: "
            f"{', '.join(self.names()) or 'none'}. If {name!r} comes from a plugin, the plugin "
            f"that provides it may not be installed (see `salplug plugins`)."
        )

    def names(self) -> list[str]:
        return sorted(self._items)

    def components(self) -> list[Component]:
        return [self._items[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._resolve(name) is not None

    def __iter__(self):
        return iter(self.components())

    def __len__(self) -> int:
        return len(self._items)


# ---------------------------------------------------------------------------------------------
# From a component to a checked instance (methods and metrics alike)
# ---------------------------------------------------------------------------------------------

def create(component: Component) -> Any:
    """Load ``component`` and instantiate it when its target is a class (a method or metric object).

    Whatever the plugin raises (importing, or in ``__init__``) becomes a :class:`PluginError`
    naming the component and its distribution.
    """
    target = component.load()
    if not isinstance(target, type):
        return target
    who = f"{component.kind.capitalize()} {component.name!r} (from {component.provider})"
    problem = _arguments_needed(target)
    if problem:
        raise PluginError(f"{who}: salplug instantiates {target.__name__} without arguments, but it needs "
                          f"some ({problem}). Fix the plugin: give them defaults.")
    try:
        return target()
    except SalplugError:  # said by the plugin itself (BackendUnavailableError, say): as it is
        raise
    except BaseException as exc:  # noqa: BLE001 - a plugin's __init__ may raise anything
        _reraise_interrupt(exc)
        raise PluginError(f"{who}: creating {target.__name__}() raised {describe_exception(exc)}. Fix or "
                          f"uninstall the plugin that provides it, or block it with "
                          f"SALPLUG_BLOCK_PLUGINS={component.plugin}.") from exc


def instantiate(component: Component, adapter: Any) -> Any:
    """Load ``component``, instantiate it (when a class) and check ``adapter`` provides what it requires."""
    obj = create(component)
    who = f"{component.kind.capitalize()} {component.name!r} (from {component.provider})"
    attr = "evaluate" if component.kind == "metric" else "explain"
    if not callable(getattr(obj, attr, None)):
        raise PluginError(f"{who} is a {type(obj).__name__} without an {attr}() method; a {component.kind} "
                          f"target must be a class with {attr}() (or an instance of one). Fix the plugin's "
                          f"register() call.")
    try:
        own = frozenset(getattr(obj, "requires", ()) or ())
        if not all(isinstance(r, str) for r in own):
            raise TypeError(f"requires holds {sorted(map(repr, own))}, not capability names")
    except Exception as exc:  # noqa: BLE001 - a plugin's odd ``requires`` attribute
        raise PluginError(f"{who}: its requires attribute is not a set of capability names "
                          f"({describe_exception(exc)}). Fix the plugin.") from exc
    requires = frozenset(component.metadata.get("requires", ())) | own
    missing = requires - frozenset(adapter.provides)
    if missing:
        raise CapabilityError(
            f"{component.kind.capitalize()} {component.name!r} needs {', '.join(sorted(missing))}, which the "
            f"{adapter.name!r} backend does not provide (it provides: "
            f"{', '.join(sorted(adapter.provides)) or 'nothing'}). Use another backend or {component.kind}."
        )
    try:
        obj.name = component.name
    except Exception as exc:  # noqa: BLE001 - slots, a read-only property
        raise PluginError(f"{who}: salplug sets .name on the {type(obj).__name__} object, which refused "
                          f"({describe_exception(exc)}). Fix the plugin.") from exc
    return obj


def call_plugin(component: Component, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
    """``func(*args, **kwargs)``, a plugin's code: a salplug error passes unchanged, anything else
    becomes a :class:`PluginError` naming the component, its distribution and ``what`` it was doing.
    salplug's own components are called as they are (what they let through is the caller's: a
    baseline function of theirs that raises, say)."""
    if component.distribution == "salplug":
        return func(*args, **kwargs)
    try:
        return func(*args, **kwargs)
    except SalplugError:
        raise
    except BaseException as exc:  # noqa: BLE001 - third-party code may raise anything
        _reraise_interrupt(exc)
        raise PluginError(f"{component.kind.capitalize()} {component.name!r} (from {component.provider}): "
                          f"{what} raised {describe_exception(exc)}. Fix or uninstall the plugin that provides "
                          f"it, or choose another {component.kind}.") from exc


def backend_failure(component: Component, exc: BaseException) -> SalplugError:
    """An exception from a backend's adapter constructor (``target(model, **options)``) as one
    paragraph naming the backend: a :class:`PluginError` for a plugin's backend, a
    :class:`ModelOutputError` (the model, most likely) for salplug's own."""
    if component.distribution == "salplug":
        error: SalplugError = ModelOutputError(f"The {component.name!r} backend could not take the model: "
                                               f"{describe_exception(exc)}")
    else:
        error = PluginError(f"The {component.name!r} backend (from {component.provider}) could not take the "
                            f"model: {describe_exception(exc)}. Fix or uninstall the plugin that provides it, "
                            f"or choose another backend.")
    error.backend = component.name  # where the failure lies, for callers naming a config key
    return error


def _reraise_interrupt(exc: BaseException) -> None:
    """Let Ctrl-C (and interpreter shutdown) through; everything else a plugin raises is its failure."""
    if isinstance(exc, (KeyboardInterrupt, GeneratorExit)):
        raise exc


def describe_exception(exc: BaseException, limit: int = 500) -> str:
    """``Type: message`` in one paragraph (``sys.exit`` said as such), cut to ``limit`` characters."""
    if isinstance(exc, SystemExit):
        return f"the plugin called sys.exit({exc.code!r})"
    text = " ".join(str(exc).split()) or "(no message)"
    text = text if len(text) <= limit else text[:limit] + " [...]"
    return f"{type(exc).__name__}: {text}"


@functools.lru_cache(maxsize=1024)
def _arguments_needed(cls: type) -> str:
    """Why ``cls()`` cannot be called without arguments ("" when it can); cached per class."""
    try:
        inspect.signature(cls).bind()
    except TypeError as exc:
        return str(exc)
    except ValueError:  # no signature to inspect
        pass
    return ""


def keyword_parameters(func: Any) -> tuple[dict[str, Any], bool]:
    """(``func``'s keyword-only parameters with their defaults, whether it takes **kwargs)."""
    params, var_kw = _keyword_parameters(getattr(func, "__func__", func))  # bound methods: their function
    return dict(params), var_kw


@functools.lru_cache(maxsize=1024)
def _keyword_parameters(func: Any) -> tuple[dict[str, Any], bool]:
    params: dict[str, Any] = {}
    var_kw = False
    for p in inspect.signature(func).parameters.values():
        if p.kind is p.KEYWORD_ONLY:
            params[p.name] = p.default
        elif p.kind is p.VAR_KEYWORD:
            var_kw = True
    return params, var_kw


def resolve_keywords(func: Any, params: dict[str, Any], who: str) -> dict[str, Any]:
    """Check ``params`` against ``func``'s keyword parameters; return them with defaults filled.

    ``who`` starts the error messages, e.g. ``"Method 'gradients'"``.
    """
    accepted, var_kw = keyword_parameters(func)
    if not var_kw:
        for key in params:
            if key not in accepted:
                raise ParameterError(
                    f"{who} has no parameter {key!r}.{did_you_mean(key, accepted)} "
                    f"Accepted: {', '.join(accepted) or 'none'}."
                )
    merged = {k: v for k, v in accepted.items() if v is not inspect.Parameter.empty}
    merged.update(params)
    missing = [k for k, v in accepted.items() if v is inspect.Parameter.empty and k not in params]
    if missing:
        raise ParameterError(f"{who} needs parameter(s): {', '.join(missing)}.")
    return merged
