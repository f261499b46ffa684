"""Config files for ``salplug run``: TOML, YAML (with the ``yaml`` extra), ``[tool.salplug]``.

A config names a model (backend, source, preprocessing, target, Grad-CAM layer), inputs
(files, globs, folders, scikit-image sample photos), a list of explanations (method +
parameters) and outputs (folder, visualizers, formats). It is validated into typed models
(pydantic v2); every problem is reported as one :class:`ConfigError` paragraph that names the
key's path, the accepted values and the closest match.

Precedence, highest first: call arguments / CLI flags (``overrides``), ``SALPLUG_*``
environment variables (:data:`ENV_VARS`), the file, the defaults. Relative paths in a file
are relative to the file's folder. See docs/config.md for every key.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, ValidationError, field_validator

from .errors import SalplugError, closest

__all__ = [
    "BUILTIN_MODELS", "Config", "ConfigError", "ENV_VARS", "Evaluation", "Explanation", "FORMATS", "Inputs",
    "ModelConfig", "Outputs", "Preprocessing", "apply_overrides", "find_config", "load_config",
    "read_config_file", "validate_config",
]

#: Built-in model names accepted by ``model.source`` (``salplug.runner`` knows how to load them).
BUILTIN_MODELS = ("efficientnet_lite0",)

#: What ``outputs.formats`` may contain.
FORMATS = ("png", "npz", "json", "grid", "html")

#: Environment variables and the config key each one sets.
ENV_VARS: dict[str, str] = {
    "SALPLUG_BACKEND": "model.backend",
    "SALPLUG_MODEL": "model.source",
    "SALPLUG_TARGET": "model.target",
    "SALPLUG_LAYER": "model.layer",
    "SALPLUG_DEVICE": "model.device",
    "SALPLUG_BATCH_SIZE": "model.batch_size",
    "SALPLUG_SEED": "seed",
    "SALPLUG_OUTPUT": "outputs.folder",
}
#: Variables holding a folder: made absolute from the working folder, as the --out flag is.
ENV_PATHS = frozenset({"SALPLUG_OUTPUT"})


class ConfigError(SalplugError, ValueError):
    """A config file (or a flag) is wrong; the message names the key, what is accepted, what to do."""

    def __init__(self, message: str, source: str | None = None):
        message = " ".join(str(message).split())  # one paragraph
        super().__init__(f"{source}: {message}" if source else message)


# --------------------------------------------------------------------------------------------- #
# Typed models
# --------------------------------------------------------------------------------------------- #
def _check_target(value: Any) -> Any:
    if value is None:
        return "top1"
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("top1", "top-1", "auto"):
            return "top1"
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if parts and all(p.isdigit() for p in parts):  # "285" or "285,967" (flags, environment)
            return int(parts[0]) if len(parts) == 1 and "," not in text else [int(p) for p in parts]
    elif isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"a class index is >= 0; got {value}")
        return value
    elif isinstance(value, (list, tuple)) and value and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        return list(value)
    raise ValueError(
        f'target must be a class index (an int >= 0), "top1", or a list with one class index per '
        f"image; got {value!r}"
    )


Target = Annotated[Union[int, str, list[int]], BeforeValidator(_check_target)]


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number, not {str(value).lower()}")
    return value


def _real_number(value: Any) -> Any:
    """A finite number (or a list of them); true/false, inf and nan are refused."""
    for v in value if isinstance(value, (list, tuple)) else (value,):
        if isinstance(v, bool):
            raise ValueError(f"expected a number, not {str(v).lower()}")
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"expected a finite number, not {v}")
    return value


def _finite(value: Any) -> Any:
    """After conversion: a number given as text ("nan", "inf", "1e999") is refused too."""
    for v in value if isinstance(value, (list, tuple)) else (value,):
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"expected a finite number, not {v}")
    return value


def _one_or_per_channel(value: Any) -> Any:
    """One number, or three (one per RGB channel)."""
    if isinstance(value, (list, tuple)) and len(value) != 3:
        raise ValueError(f"give one number, or three (one per RGB channel); got {len(value)} numbers "
                         f"{list(value)!r}")
    return _real_number(value)


#: An int, or its digits (environment, flags); true/false are not numbers here.
Count = Annotated[int, BeforeValidator(_not_bool), Field(ge=1)]
Seed = Annotated[int, BeforeValidator(_not_bool), Field(ge=0)]
Side = Annotated[int, BeforeValidator(_not_bool)]
Number = Annotated[float, BeforeValidator(_real_number), AfterValidator(_finite)]
PerChannel = Annotated[Union[float, tuple[float, float, float]], BeforeValidator(_one_or_per_channel),
                       AfterValidator(_finite)]

#: Longest explanation name: it names files (``<name>_<visualizer>.png``), which most file systems
#: limit to 255 bytes.
MAX_NAME_BYTES = 100


def _file_safe_name(value: str | None) -> str | None:
    """A ``name`` that names output files: no path or reserved characters, at most MAX_NAME_BYTES."""
    if value is not None and (not value or any(c in value for c in '/\\:*?"<>|')):
        raise ValueError(f"name is used in file names, so it may not be empty nor hold any of / \\ : * ? \" "
                         f"< > |; got {value!r}")
    if value is not None and len(value.encode("utf-8")) > MAX_NAME_BYTES:
        raise ValueError(f"name is used in file names, so it may be at most {MAX_NAME_BYTES} bytes long; "
                         f"got {len(value.encode('utf-8'))} ({value[:40]!r}...)")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Preprocessing(_Section):
    """How a photo becomes the network input: RGB in [0, 1], resized, then ``(x * scale - mean) / std``."""

    size: Union[Side, tuple[Side, Side], None] = Field(None, description="side (or [height, width]); None keeps the photo's size")
    scale: Number = 1.0
    mean: PerChannel = 0.0
    std: PerChannel = 1.0

    @field_validator("size", mode="before")
    @classmethod
    def _one_side_or_two(cls, value):
        if isinstance(value, (list, tuple)) and len(value) != 2:
            raise ValueError(f"size is one side or [height, width]; got {len(value)} numbers {list(value)!r}")
        if isinstance(value, bool) or (isinstance(value, (list, tuple)) and any(isinstance(v, bool) for v in value)):
            raise ValueError(f"size is a number of pixels (one side or [height, width]), not {json.dumps(value)}")
        return value

    @field_validator("size")
    @classmethod
    def _positive(cls, value):
        sizes = (value,) if isinstance(value, int) else (value or ())
        if any(s < 1 for s in sizes):
            raise ValueError(f"sizes are positive; got {value!r}")
        return value

    @field_validator("std")
    @classmethod
    def _nonzero(cls, value):
        if any(s == 0 for s in ((value,) if isinstance(value, (int, float)) else value)):
            raise ValueError("std must not be 0")
        return value


class ModelConfig(_Section):
    """The model and how to explain it."""

    backend: str = "torch"
    source: str = Field("efficientnet_lite0", description="a built-in model name or 'package.module:attribute'")
    preprocessing: Union[Preprocessing, str, None] = None
    target: Target = "top1"
    layer: Union[str, None] = None
    labels: Union[str, None] = None
    dtype: Literal["float32", "float64"] = "float32"
    device: Union[str, None] = None
    batch_size: Union[Count, None] = None
    options: dict[str, Any] = Field(default_factory=dict)


class Inputs(_Section):
    """Photos to explain; every list may be empty but not all of them."""

    files: list[str] = Field(default_factory=list)
    globs: list[str] = Field(default_factory=list)
    folders: list[str] = Field(default_factory=list)
    samples: list[str] = Field(default_factory=list)


class Explanation(_Section):
    """One method run on every input."""

    method: str
    params: dict[str, Any] = Field(default_factory=dict)
    name: Union[str, None] = None
    visualizers: Union[list[str], None] = None

    @field_validator("name")
    @classmethod
    def _file_safe(cls, value):
        return _file_safe_name(value)


class Outputs(_Section):
    """Where and what to write."""

    folder: str = "salplug-out"
    visualizers: list[str] = Field(default_factory=lambda: ["auto"])
    formats: list[Literal["png", "npz", "json", "grid", "html"]] = Field(default_factory=lambda: list(FORMATS))
    overwrite: StrictBool = True


class MetricEntry(_Section):
    """One metric of ``salplug evaluate`` (``name`` tells two settings of one metric apart)."""

    metric: str
    params: dict[str, Any] = Field(default_factory=dict)
    name: Union[str, None] = None  # names plot files (curve_<name>.png)

    @field_validator("name")
    @classmethod
    def _file_safe(cls, value):
        return _file_safe_name(value)


class Evaluation(_Section):
    """What ``salplug evaluate`` scores the explanations with (see docs/evaluation.md)."""

    metrics: list[Union[str, MetricEntry]] = Field(default_factory=lambda: ["insertion", "deletion"])
    include_random: StrictBool = True
    folder: Union[str, None] = Field(None, description="default: <outputs.folder>/evaluation")
    batch_size: Union[Count, None] = None


class Config(_Section):
    """A whole run. ``base_dir`` (not a key) is where relative paths start."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    inputs: Inputs = Field(default_factory=Inputs)
    explanations: Annotated[list[Explanation], Field(min_length=1)]
    outputs: Outputs = Field(default_factory=Outputs)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    seed: Seed = 0

    base_dir: Annotated[str, Field(exclude=True)] = "."  # set by load_config, not a file key

    def path(self, value: str) -> Path:
        """A path from the config, relative to ``base_dir`` unless absolute; ``~`` expanded."""
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else Path(self.base_dir) / p


# --------------------------------------------------------------------------------------------- #
# Reading files
# --------------------------------------------------------------------------------------------- #
def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping in a TOML / YAML / JSON file, or ``[tool.salplug]`` of a pyproject.toml."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {str(path)!r} does not exist. Pass the path of a .toml, .yaml or "
                          f"pyproject.toml file (see docs/config.md and examples/).")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"is not valid TOML: {exc}.", str(path)) from None
        if path.name == "pyproject.toml":
            section = data.get("tool", {}).get("salplug")
            if section is None:
                raise ConfigError("has no [tool.salplug] table; add one (same keys as a salplug .toml file).",
                                  str(path))
            data = section
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError('YAML configs need PyYAML: pip install "salplug[yaml]" (or use TOML).',
                              str(path)) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"is not valid YAML: {exc}.", str(path)) from None
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"is not valid JSON: {exc}.", str(path)) from None
    else:
        raise ConfigError(f"has an unknown extension {suffix!r}; use .toml, .yaml, .yml, .json or pyproject.toml.",
                          str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"must hold a table of keys at the top level, not {type(data).__name__}.", str(path))
    return data


def find_config(folder: str | Path = ".") -> Path | None:
    """``salplug.toml`` / ``.yaml`` in ``folder``, else a pyproject.toml with ``[tool.salplug]``."""
    folder = Path(folder)
    for name in ("salplug.toml", "salplug.yaml", "salplug.yml"):
        if (folder / name).is_file():
            return folder / name
    pyproject = folder / "pyproject.toml"
    if pyproject.is_file():
        import tomllib

        text = pyproject.read_text(encoding="utf-8")
        try:
            if "salplug" in tomllib.loads(text).get("tool", {}):
                return pyproject
        except tomllib.TOMLDecodeError:  # a broken file that means to configure salplug: load it, to say why
            return pyproject if "tool.salplug" in text else None
    return None


#: Keys that an override (flag, variable, call argument) of the first key sets too: the one
#: batch size a user asks for beats both keys of the file (see docs/config.md, "Precedence").
LINKED_KEYS: dict[str, tuple[str, ...]] = {"model.batch_size": ("evaluation.batch_size",)}


def _set_path(data: dict[str, Any], dotted: str, value: Any, who: str) -> None:
    """Set ``data[a][b]... = value``; a missing table is created, a value that is not a table is an error."""
    node = data
    *parents, last = dotted.split(".")
    for i, key in enumerate(parents):
        child = node.get(key)
        if child is None and key not in node:
            child = {}
            node[key] = child
        elif not isinstance(child, dict):
            where = ".".join(parents[:i + 1])
            raise ConfigError(f"{where}: is {child!r}, not a table, so {who} cannot set {dotted} in it. Write "
                              f"{where} as a table of keys ([{where}] in TOML){_section_hint(where, child)}.")
        node = child
    node[last] = value


def _section_hint(where: str, value: Any) -> str:
    if where == "model" and isinstance(value, str):
        return f", e.g. [model] with source = {value!r}"
    return ""


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any] | None = None,
                    env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A copy of ``data`` with ``SALPLUG_*`` environment values, then ``overrides``, applied.

    ``overrides`` maps dotted keys (``"model.backend"``) to values; None values are skipped.
    A key of :data:`LINKED_KEYS` sets its linked keys too. A section that is present but not a
    table is a :class:`ConfigError` (never replaced by the override).
    """
    return _merge(data, overrides, env)[0]


def _merge(data: Mapping[str, Any], overrides: Mapping[str, Any] | None,
           env: Mapping[str, str] | None) -> tuple[dict[str, Any], set[str]]:
    """:func:`apply_overrides`, plus the linked keys it set (echoes of a key the user set)."""
    import copy

    out = copy.deepcopy(dict(data))
    echoes: set[str] = set()
    env = os.environ if env is None else env
    for var, key in ENV_VARS.items():
        if env.get(var) not in (None, ""):
            value = env[var]
            if var in ENV_PATHS:  # like --out: a relative path starts at the working folder
                value = str(Path(value).expanduser().absolute())
            for k in (key, *LINKED_KEYS.get(key, ())):
                _set_path(out, k, value, f"the variable {var}")
            echoes.update(LINKED_KEYS.get(key, ()))
    for key, value in (overrides or {}).items():
        if value is not None:
            for k in (key, *LINKED_KEYS.get(key, ())):
                _set_path(out, k, value, "a command-line flag or call argument")
            echoes.update(LINKED_KEYS.get(key, ()))
    return out, echoes


# --------------------------------------------------------------------------------------------- #
# Validation and messages
# --------------------------------------------------------------------------------------------- #
def _loc(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _section_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class of the table at ``loc`` (list indices skipped), or None."""
    cls: type[BaseModel] | None = Config
    for part in loc:
        if isinstance(part, int):
            continue
        if cls is None or part not in cls.model_fields:
            return None
        models = _models_in(cls.model_fields[part].annotation)
        cls = models[0] if models else None
    return cls


def _public_fields(cls: type[BaseModel]) -> list[str]:
    return [name for name, f in cls.model_fields.items() if not f.exclude]


def _describe(error: Mapping[str, Any]) -> str:
    loc = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    where = _loc(loc)
    if kind == "extra_forbidden":
        section = _section_at(loc[:-1])
        accepted = _public_fields(section) if section else []
        match = closest(str(loc[-1]), accepted)
        hint = f" Did you mean {match!r}?" if match else ""
        return (f"unknown key {where!r}.{hint} Accepted keys{' in ' + _loc(loc[:-1]) if loc[:-1] else ''}: "
                f"{', '.join(accepted)}.")
    if kind == "missing":
        hint = " (a list of [[explanations]] tables, each with a method)" if loc == ("explanations",) else ""
        return f"{where}: this key is required{hint}."
    if kind == "literal_error":
        expected = [e.strip().strip("'") for e in str(error.get("ctx", {}).get("expected", "")).replace(" or ", ", ").split(",")]
        expected = [e for e in expected if e]
        match = closest(str(value), expected)
        hint = f" Did you mean {match!r}?" if match else ""
        return f"{where}: {value!r} is not accepted.{hint} Accepted: {', '.join(expected)}."
    message = error.get("msg", "invalid value")
    message = message.removeprefix("Value error, ")
    return f"{where}: {message} (got {value!r})." if kind != "value_error" else f"{where}: {message}."


def _format_errors(exc: ValidationError, echoes: Collection[str] = ()) -> str:
    """One paragraph for all errors; an error at an ``echoes`` key (a linked key an override set,
    see :data:`LINKED_KEYS`) is left out when its own key's error says the same."""
    seen: dict[tuple, str] = {}
    for error in exc.errors():
        loc = tuple(error["loc"])
        # A union reports one error per member; keep the first per location, minus member names.
        loc = tuple(p for p in loc if not (isinstance(p, str) and (p[:1].isupper() or p.startswith(
            ("int", "str", "float", "list", "tuple", "function-")))))
        error = {**error, "loc": loc}
        if loc not in seen:
            seen[loc] = _describe(error)
    # A union member that failed deeper (a table's key) explains more than "not a string".
    deepest = [loc for loc in seen if not any(other[:len(loc)] == loc and other != loc for other in seen)]
    reported = {_loc(loc) for loc in deepest}
    primary = {linked: key for key, linked_keys in LINKED_KEYS.items() for linked in linked_keys}
    deepest = [loc for loc in deepest if not (_loc(loc) in echoes and primary[_loc(loc)] in reported)]
    return " ".join(seen[loc] for loc in deepest)


def validate_config(data: Mapping[str, Any], *, source: str | None = None, base_dir: str | Path = ".",
                    host: Any = None) -> Config:
    """Validate a raw mapping into a :class:`Config`; then check names against the registries."""
    return _validate(data, source=source, base_dir=base_dir, host=host)


def _validate(data: Mapping[str, Any], *, source: str | None, base_dir: str | Path, host: Any,
              echoes: Collection[str] = ()) -> Config:
    if not isinstance(data, Mapping):
        raise ConfigError(f"a config is a table of keys, not {type(data).__name__}.", source)
    if "base_dir" in data:
        raise ConfigError("unknown key 'base_dir' (relative paths start at the config file's folder).", source)
    try:
        config = Config.model_validate({**data, "base_dir": str(base_dir)})
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, echoes), source) from None
    if host is not None:
        check_names(config, host, source=source)
    return config


def _unknown(kind: str, name: str, accepted: list[str], where: str, source: str | None,
             candidates: list[str] | None = None) -> ConfigError:
    match = closest(name, candidates or accepted)
    hint = f" Did you mean {match!r}?" if match else ""
    return ConfigError(
        f"{where}: unknown {kind} {name!r}.{hint} Accepted: {', '.join(accepted) or 'none'} "
        f"(`salplug list` shows them; a {kind} from a plugin needs that plugin installed).", source
    )


def _check_name(registry: Any, kind: str, name: str, where: str, source: str | None) -> str:
    from .errors import UnknownComponentError

    try:
        return registry.get(name).name
    except UnknownComponentError:
        names = registry.names()
        aliases = [a for c in registry.components() for a in c.aliases]
        raise _unknown(kind, name, names, where, source, [*names, *aliases]) from None


def _check_visualizers(names: list[str] | None, host: Any, where: str, source: str | None) -> None:
    accepted = ["auto", "regions", *host.visualizers.names()]
    for i, vis in enumerate(names or ()):
        if visualizer_name(vis, host) is None:
            aliases = [a for c in host.visualizers.components() for a in c.aliases]
            raise _unknown("visualizer", vis, accepted, f"{where}[{i}]", source, [*accepted, *aliases])


def visualizer_name(name: str, host: Any) -> str | None:
    """The registered name ``name`` stands for (case, ``-`` and aliases as for methods), "auto" or
    "regions"; None when unknown."""
    from .errors import UnknownComponentError

    try:
        return host.visualizers.get(name).name
    except UnknownComponentError:
        key = str(name).lower().replace("-", "_")
        return key if key in ("auto", "regions") else None


def check_names(config: Config, host: Any, *, source: str | None = None) -> None:
    """Backend, methods, method parameters and visualizers must be registered / accepted."""
    from .api import method_parameters
    from .errors import PluginError
    from .registry import create

    _check_name(host.backends, "backend", config.model.backend, "model.backend", source)
    src = config.model.source
    if ":" not in src and src not in BUILTIN_MODELS:
        match = closest(src, BUILTIN_MODELS)
        hint = f" Did you mean {match!r}?" if match else ""
        raise ConfigError(f"model.source: {src!r} is neither a built-in model nor an import path "
                          f"'package.module:attribute'.{hint} Built-in models: {', '.join(BUILTIN_MODELS)}.", source)
    _check_visualizers(config.outputs.visualizers, host, "outputs.visualizers", source)
    names: set[str] = set()
    for i, exp in enumerate(config.explanations):
        where = f"explanations[{i}]"
        method = _check_name(host.methods, "method", exp.method, f"{where}.method", source)
        try:
            instance = create(host.methods.get(method))
            accepted, var_kw = method_parameters(instance)
        except PluginError as exc:
            raise PluginError(f"{source + ': ' if source else ''}{where}.method: {exc}") from exc.__cause__
        except Exception as exc:  # noqa: BLE001 - e.g. explain() without a signature to read
            raise PluginError(f"{source + ': ' if source else ''}{where}.method: the parameters of method "
                              f"{method!r} cannot be read: {type(exc).__name__}: {exc}") from exc
        if not var_kw:
            for key in exp.params:
                if key not in accepted:
                    match = closest(key, accepted)
                    hint = f" Did you mean {match!r}?" if match else ""
                    raise ConfigError(f"{where}.params: method {method!r} has no parameter {key!r}.{hint} "
                                      f"Accepted: {', '.join(accepted) or 'none'}.", source)
        _check_visualizers(exp.visualizers, host, f"{where}.visualizers", source)
        label = exp.name or method
        if label in names:
            raise ConfigError(f"{where}: two explanations are both called {label!r}; give one a distinct "
                              f"'name' (it names the output files).", source)
        names.add(label)


def load_config(path: str | Path | None = None, *, data: Mapping[str, Any] | None = None,
                overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
                host: Any = None) -> Config:
    """Read, merge (flags > environment > file > defaults) and validate a config.

    Parameters
    ----------
    path : a .toml / .yaml / .json file or a pyproject.toml with ``[tool.salplug]``.
    data : a mapping to use instead of a file (relative paths then start at the working folder).
    overrides : dotted keys set by call arguments / CLI flags, e.g. ``{"model.backend": "tf2"}``.
    env : the environment to read ``SALPLUG_*`` variables from (default ``os.environ``).
    host : plugin host whose registries the names are checked against (None: skip that check).
    """
    if path is not None:
        raw = read_config_file(path)
        source, base = str(path), Path(path).resolve().parent
    else:
        raw, source, base = dict(data or {}), None, Path.cwd()
    try:
        merged, echoes = _merge(raw, overrides, env)
    except ConfigError as exc:
        raise ConfigError(str(exc), source) from None
    return _validate(merged, source=source, base_dir=base, host=host, echoes=echoes)
