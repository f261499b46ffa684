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
    ParameterError,
    PluginError,
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
        obj = module
        for part in attr.split(".") if attr else ():
            try:
                obj = getattr(obj, part)
            except AttributeError as exc:
                raise PluginError(
                    f"The {self.kind} {self.name!r} from {self.provider} points to "
                    f"{self.target!r}, but {module_name!r} has no attribute {part!r}."
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

def instantiate(component: Component, adapter: Any) -> Any:
    """Load ``component``, instantiate it (when a class) and check ``adapter`` provides what it requires."""
    target = component.load()
    who = f"{component.kind.capitalize()} {component.name!r} (from {component.provider})"
    if isinstance(target, type):
        problem = _arguments_needed(target)
        if problem:
            raise PluginError(f"{who}: salplug instantiates {target.__name__} without arguments, but it needs "
                              f"some ({problem}). Fix the plugin: give them defaults.")
        obj = target()
    else:
        obj = target
    attr = "evaluate" if component.kind == "metric" else "explain"
    if not callable(getattr(obj, attr, None)):
        raise PluginError(f"{who} is a {type(obj).__name__} without an {attr}() method; a {component.kind} "
                          f"target must be a class with {attr}() (or an instance of one). Fix the plugin's "
                          f"register() call.")
    requires = frozenset(component.metadata.get("requires", ())) | frozenset(getattr(obj, "requires", ()))
    missing = requires - frozenset(adapter.provides)
    if missing:
        raise CapabilityError(
            f"{component.kind.capitalize()} {component.name!r} needs {', '.join(sorted(missing))}, which the "
            f"{adapter.name!r} backend does not provide (it provides: "
            f"{', '.join(sorted(adapter.provides)) or 'nothing'}). Use another backend or {component.kind}."
        )
    obj.name = component.name
    return obj


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
