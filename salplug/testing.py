"""Test helpers for plugin authors: an analytic numpy backend and conformance checks.

Nothing here imports torch or tensorflow, so a plugin's tests run anywhere::

    from salplug.testing import check_method, check_visualizer

    def test_my_method_conforms():
        check_method("my_method", plugins={"mine": my_package.plugin}, params={"steps": 4})

- ``AnalyticModel`` / ``AnalyticAdapter``: a numpy "network" with exactly known outputs, input
  gradients, layer activations and gradients, and guided-backprop gradients. Register it as
  the ``analytic`` backend with ``plugins={"salplug.testing": salplug.testing}`` (or use
  ``make_host()``), then ``salplug.explain(AnalyticModel(...), x, "my_method", host=host)``.
- ``check_method``, ``check_backend``, ``check_visualizer``: conformance checks. Each is a
  plain function that raises ``AssertionError`` with a message saying what is wrong, so it
  works as a pytest test body; each returns a small report (a dict) when everything passes.
"""

from __future__ import annotations

import ast
import inspect
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from .errors import InputError, LayerError, ParameterError, SalplugError, TargetError
from .hookspecs import hookimpl
from .layout import canonical_to_layout, numpy_to_canonical
from .types import (
    CAPABILITIES,
    GUIDED_GRADIENTS,
    INPUT_GRADIENTS,
    LAYER_GRADIENTS,
    SCORES,
    Context,
    InputInfo,
    MethodOutput,
    Targets,
)

__all__ = [
    "AnalyticAdapter", "AnalyticModel", "FRAMEWORKS", "check_backend", "check_method",
    "check_visualizer", "framework_imports", "make_host", "sample_inputs",
]

#: Top-level modules a method or visualizer must never import.
FRAMEWORKS = ("torch", "tensorflow", "keras", "tf_keras", "jax", "flax", "mxnet", "paddle")

#: The name of the analytic model's one layer (``layer=None`` means the same layer).
LAYER_NAME = "features"


# --------------------------------------------------------------------------------------------
# The analytic model
# --------------------------------------------------------------------------------------------

class AnalyticModel:
    """A numpy model whose outputs and derivatives are known exactly.

    For one input ``x`` of shape ``(..., C)`` (canonical, channels last)::

        z = x @ p                        # a fixed linear "layer" mixing C channels into D
        h = relu(z)  (or z when relu=False)    # the layer called "features"
        f_k(x) = sum(w[k] * h) + 0.5 * sum(q[k] * h**2)      # class k

    so ``d f_k / d h = w[k] + q[k] * h`` and ``d f_k / d x = (d f_k / d h * [z > 0]) @ p.T``.
    Guided backprop (a ReLU passes only positive gradients where its input is positive) gives
    ``(max(d f_k / d h, 0) * [z > 0]) @ p.T``.

    Parameters
    ----------
    shape : the shape of one input, channels last, e.g. (8, 8, 3).
    classes : number of outputs K.
    features : D, channels of the "features" layer (default: C).
    relu : put a ReLU after the linear layer (else the model is a smooth quadratic).
    seed : seeds the random ``w``, ``q`` (>= 0, so the model is convex in h) and ``p``.
    w, q, p : explicit parameters instead (shapes (K, ..., D), (K, ..., D), (C, D)).
    """

    def __init__(self, shape: tuple[int, ...] = (8, 8, 3), classes: int = 4, *, features: int | None = None,
                 relu: bool = True, seed: int = 0, w: Any = None, q: Any = None, p: Any = None) -> None:
        self.shape = tuple(int(s) for s in shape)
        if not self.shape or min(self.shape) < 1:
            raise ParameterError(f"shape must be the shape of one input, e.g. (8, 8, 3); got {shape!r}.")
        rng = np.random.default_rng(seed)
        channels = self.shape[-1]
        d = int(features or channels)
        self.p = np.asarray(p, np.float64) if p is not None else rng.normal(0, 1, (channels, d)) / np.sqrt(channels)
        d = self.p.shape[1]
        field = (int(classes), *self.shape[:-1], d)
        self.w = np.asarray(w, np.float64) if w is not None else rng.normal(0, 1, field)
        self.q = np.asarray(q, np.float64) if q is not None else rng.uniform(0, 0.5, field)
        if self.p.shape[0] != channels or self.w.shape[1:] != field[1:] or self.q.shape != self.w.shape:
            raise ParameterError(f"w and q must have shape (classes, ..., D) = {field} and p (C, D) = "
                                 f"{(channels, d)}; got {self.w.shape}, {self.q.shape}, {self.p.shape}.")
        self.classes = self.w.shape[0]
        self.relu = bool(relu)

    # -- exact quantities (float64) --------------------------------------------------------
    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if x.shape[1:] != self.shape:
            raise InputError(f"The analytic model takes inputs of shape (N, {', '.join(map(str, self.shape))}) "
                             f"(canonical, channels last); got {x.shape}.")
        return x

    def pre_activation(self, x: np.ndarray) -> np.ndarray:
        return self._check(x) @ self.p

    def features(self, x: np.ndarray) -> np.ndarray:
        """The layer's activations h, (N, ..., D)."""
        z = self.pre_activation(x)
        return np.maximum(z, 0.0) if self.relu else z

    def _axes(self, x: np.ndarray) -> tuple[int, ...]:
        return tuple(range(1, x.ndim))

    def outputs(self, x: np.ndarray) -> np.ndarray:
        """All class outputs, (N, K)."""
        h = self.features(x).reshape(len(x), -1)
        k = self.classes
        return h @ self.w.reshape(k, -1).T + 0.5 * ((h * h) @ self.q.reshape(k, -1).T)

    def _rows(self, targets: Targets, n: int) -> np.ndarray:
        if targets.fn is not None:
            raise TargetError("The analytic model explains class indices; target callables are not supported.")
        if targets.indices is None:
            if self.classes == 1:
                return np.zeros(n, np.int64)
            raise TargetError(f"The analytic model has {self.classes} outputs; give a target class.")
        idx = targets.indices
        if len(idx) != n:
            raise TargetError(f"{len(idx)} targets for {n} rows.")
        if idx.size and (idx.min() < 0 or idx.max() >= self.classes):
            raise TargetError(f"target out of range: the analytic model's classes are 0..{self.classes - 1}.")
        return idx

    def scores(self, x: np.ndarray, targets: Targets) -> np.ndarray:
        idx = self._rows(targets, len(x))
        return self.outputs(x)[np.arange(len(x)), idx]

    def layer_gradients(self, x: np.ndarray, targets: Targets) -> np.ndarray:
        """d score / d h, (N, ..., D)."""
        idx = self._rows(targets, len(x))
        return self.w[idx] + self.q[idx] * self.features(x)

    def _back(self, x: np.ndarray, grad_h: np.ndarray) -> np.ndarray:
        if self.relu:
            grad_h = grad_h * (self.pre_activation(x) > 0)
        return grad_h @ self.p.T

    def input_gradients(self, x: np.ndarray, targets: Targets) -> np.ndarray:
        return self._back(x, self.layer_gradients(x, targets))

    def guided_input_gradients(self, x: np.ndarray, targets: Targets) -> np.ndarray:
        return self._back(x, np.maximum(self.layer_gradients(x, targets), 0.0))

    # -- as an upstream-style call_model_function ------------------------------------------
    def call_model_function(self, x_batch, call_model_args=None, expected_keys=None) -> dict:
        """The model as an upstream ``call_model_function`` (for the ``callable`` backend).

        The class comes from ``call_model_args["target"]`` (an int or one per row; use the
        backend option ``target_arg="target"``). Without a target, ``OUTPUT_LAYER_VALUES`` holds
        every class's output (N, K) and the gradients are those of class 0. ``CONVOLUTION_*``
        keys are the "features" layer.
        """
        from .backends.callable import (
            CONVOLUTION_LAYER_VALUES,
            CONVOLUTION_OUTPUT_GRADIENTS,
            INPUT_OUTPUT_GRADIENTS,
            OUTPUT_LAYER_VALUES,
        )

        x = np.asarray(x_batch, np.float64)
        target = (call_model_args or {}).get("target")
        targets = Targets(np.broadcast_to(np.asarray(0 if target is None else target, np.int64), (len(x),)))
        keys = set(expected_keys or ())
        out = {}
        if OUTPUT_LAYER_VALUES in keys:
            out[OUTPUT_LAYER_VALUES] = self.outputs(x) if target is None else self.scores(x, targets)
        if INPUT_OUTPUT_GRADIENTS in keys:
            out[INPUT_OUTPUT_GRADIENTS] = self.input_gradients(x, targets)
        if CONVOLUTION_LAYER_VALUES in keys:
            out[CONVOLUTION_LAYER_VALUES] = self.features(x)
        if CONVOLUTION_OUTPUT_GRADIENTS in keys:
            out[CONVOLUTION_OUTPUT_GRADIENTS] = self.layer_gradients(x, targets)
        return out


class AnalyticAdapter:
    """``AnalyticModel`` as a salplug ``ModelAdapter`` (backend name ``"analytic"``).

    It provides every capability; ``provides=`` narrows that (to test that a method is
    rejected by a backend lacking what it needs). ``calls`` and ``rows`` count primitive calls
    and the rows they carried, per primitive name, so tests can assert "no model call".
    """

    name = "analytic"
    provides = frozenset({SCORES, INPUT_GRADIENTS, LAYER_GRADIENTS, GUIDED_GRADIENTS})
    default_batch_size = 16
    supports_targets = True

    def __init__(self, model: AnalyticModel | None = None, *, provides: Iterable[str] | None = None) -> None:
        self.model = model if model is not None else AnalyticModel()
        if not isinstance(self.model, AnalyticModel):
            raise ParameterError(f"The analytic backend runs a salplug.testing.AnalyticModel, "
                                 f"got {type(self.model).__name__}.")
        if provides is not None:
            unknown = set(provides) - CAPABILITIES
            if unknown:
                raise ParameterError(f"Unknown capabilities {sorted(unknown)}; use {sorted(CAPABILITIES)}.")
            self.provides = frozenset(provides)
        self.calls: Counter[str] = Counter()
        self.rows: Counter[str] = Counter()

    def _count(self, what: str, x: np.ndarray) -> None:
        if what in CAPABILITIES and what not in self.provides:
            raise AssertionError(f"{what} was called on an analytic adapter that does not provide it.")
        self.calls[what] += 1
        self.rows[what] += len(x)

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def to_canonical(self, x: Any, layout: str | None = None) -> tuple[np.ndarray, InputInfo]:
        arr = np.asarray(x)
        if layout is None:
            batched = arr.ndim == len(self.model.shape) + 1
            layout = ("NHWC" if arr.ndim == 4 else "N...") if batched else ("HWC" if arr.ndim == 3 else "...")
        canonical, info = numpy_to_canonical(arr, layout, kind="numpy")
        self.model._check(canonical)
        return canonical, info

    def from_canonical(self, values: np.ndarray, info: InputInfo) -> Any:
        return canonical_to_layout(values, info)

    def num_outputs(self) -> int | None:
        return self.model.classes

    def outputs(self, x: np.ndarray) -> np.ndarray:
        self._count("outputs", x)
        return self.model.outputs(x).astype(np.float32)

    def scores(self, x: np.ndarray, targets: Targets) -> np.ndarray:
        self._count(SCORES, x)
        return self.model.scores(x, targets).astype(np.float32)

    def input_gradients(self, x: np.ndarray, targets: Targets) -> np.ndarray:
        self._count(INPUT_GRADIENTS, x)
        return self.model.input_gradients(x, targets).astype(np.float32)

    def check_layer(self, layer: Any) -> None:
        if layer not in (None, LAYER_NAME):
            raise LayerError(f"The analytic model has one layer, {LAYER_NAME!r} (or None); got {layer!r}.")

    def layer_values_and_gradients(self, x: np.ndarray, targets: Targets, layer: Any) -> tuple[np.ndarray, np.ndarray]:
        self.check_layer(layer)
        self._count(LAYER_GRADIENTS, x)
        return (self.model.features(x).astype(np.float32),
                self.model.layer_gradients(x, targets).astype(np.float32))

    def guided_input_gradients(self, x: np.ndarray, targets: Targets) -> np.ndarray:
        self._count(GUIDED_GRADIENTS, x)
        return self.model.guided_input_gradients(x, targets).astype(np.float32)


@hookimpl
def register_backends(register):
    register("analytic", "salplug.testing:AnalyticAdapter", framework="numpy",
             provides=AnalyticAdapter.provides,
             description="salplug.testing.AnalyticModel: exact gradients, for tests")


@hookimpl
def detect_backend(model: Any) -> str | None:
    return "analytic" if isinstance(model, AnalyticModel) else None


def make_host(plugins: Mapping[str, Any] | None = None, *, autoload: bool = False, strict: bool = True,
              blocked: Iterable[str] | None = None):
    """A fresh plugin host with the built-ins, the ``analytic`` backend and ``plugins``.

    ``autoload`` also loads installed entry points; ``strict`` (default on) turns a broken
    plugin into an error instead of a warning; ``blocked`` defaults to ``SALPLUG_BLOCK_PLUGINS``.
    """
    from .plugins import get_plugin_manager

    return get_plugin_manager(autoload=autoload, blocked=None if blocked is None else list(blocked), strict=strict,
                              plugins={"salplug.testing": sys.modules[__name__], **dict(plugins or {})})


def sample_inputs(n: int = 3, shape: tuple[int, ...] = (9, 7, 3), seed: int = 0) -> np.ndarray:
    """A canonical batch (n, *shape), float32 in [0, 1]. H != W != C, so transposed results show."""
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, *shape)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------

def framework_imports(obj: Any) -> list[str]:
    """Frameworks (``FRAMEWORKS``) imported anywhere in the module that defines ``obj``.

    Reads the module's source, so imports inside functions count too; imports under
    ``if TYPE_CHECKING:`` do not.
    """
    module = obj if inspect.ismodule(obj) else sys.modules.get(getattr(obj, "__module__", "") or "")
    if module is None:
        return []
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return []
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in (
                "importlib.import_module", "import_module", "__import__") and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names = [arg.value]
        for name in names:
            top = name.split(".")[0]
            if top in FRAMEWORKS and top not in found:
                found.append(top)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


def _loaded_frameworks() -> set[str]:
    return {name for name in FRAMEWORKS if name in sys.modules}


def _fail(who: str, message: str) -> None:
    raise AssertionError(f"{who}: {message}")


def _max_diff(a: np.ndarray, b: np.ndarray) -> str:
    """Where and by how much two arrays differ most, for messages."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        return f"shapes {a.shape} and {b.shape}"
    if not a.size:
        return "both empty"
    diff = np.abs(a - b)
    i = np.unravel_index(int(np.argmax(diff)), diff.shape)
    return (f"max |difference| {float(diff[i]):.3g} at index {tuple(int(v) for v in i)}: "
            f"{float(a[i]):.6g} vs {float(b[i]):.6g}")


def _close(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> bool:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        return False
    scale = max(float(np.abs(a).max(initial=0.0)), float(np.abs(b).max(initial=0.0)))
    return bool(np.all(np.abs(a - b) <= atol + rtol * scale))


# --------------------------------------------------------------------------------------------
# check_method
# --------------------------------------------------------------------------------------------

class _CapabilityGuard:
    """Wraps an adapter; a primitive outside the allowed capabilities raises AssertionError."""

    _PRIMITIVES = {
        "scores": SCORES,
        "input_gradients": INPUT_GRADIENTS,
        "layer_values_and_gradients": LAYER_GRADIENTS,
        "guided_input_gradients": GUIDED_GRADIENTS,
    }

    def __init__(self, adapter: Any, allowed: Callable[[], frozenset[str]], who: str) -> None:
        self._adapter = adapter
        self._allowed = allowed
        self._who = who
        self.calls: Counter[str] = Counter()
        self.violations: list[str] = []
        self.max_rows = 0  # the most rows one primitive call carried

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._adapter, attr)
        capability = self._PRIMITIVES.get(attr)
        if capability is None and attr != "outputs":
            return value

        def primitive(*args: Any, **kwargs: Any) -> Any:
            if capability is not None and capability not in self._allowed():
                self.violations.append(capability)
                raise AssertionError(
                    f"{self._who}: called the adapter's {attr}() but does not declare "
                    f"{capability!r} in requires (declared: {sorted(self._allowed()) or 'nothing'}). "
                    f"Add it to requires= in register() and to the class's requires."
                )
            self.calls[attr] += 1
            if args and hasattr(args[0], "shape") and len(args[0].shape):
                self.max_rows = max(self.max_rows, int(args[0].shape[0]))
            return value(*args, **kwargs)

        return primitive

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())


def _method_host(method: Any, name: str | None, host: Any, plugins: Mapping[str, Any] | None):
    """(host, registered name) for a method given by name, class or instance."""
    if isinstance(method, str):
        if host is None:  # no plugins given: the installed ones (a broken one only warns)
            host = make_host(plugins, autoload=plugins is None, strict=plugins is not None)
        return host, host.methods.get(method).name
    target = method
    cls = method if isinstance(method, type) else type(method)
    reg_name = name or f"checked_{cls.__name__.lower()}"
    requires = getattr(cls, "requires", ())

    class _Throwaway:
        @hookimpl
        def register_methods(self, register):
            register(reg_name, target, requires=requires, override=True)

    if host is None:
        host = make_host(plugins)
    host.add_plugin(_Throwaway(), f"salplug.testing.check:{reg_name}")
    return host, reg_name


def check_method(method: Any, *, params: Mapping[str, Any] | None = None, x: np.ndarray | None = None,
                 targets: Any = None, adapter: Any = None, host: Any = None,
                 plugins: Mapping[str, Any] | None = None, name: str | None = None,
                 batch_size: int = 2, expected_shape: Any = None, check_batch: bool = True,
                 bad_params: Iterable[Mapping[str, Any]] = (), seed_param: str = "seed",
                 check_targets: bool = True, rtol: float = 1e-4, atol: float = 1e-6) -> dict[str, Any]:
    """Check that a saliency method follows salplug's method contract.

    Parameters
    ----------
    method : a registered name (looked up in ``host``), or a method class / instance.
    params : the method's parameters for every run (keep them small: few steps, samples).
    x : canonical inputs, (N, H, W, C) float32 with N >= 2; default ``sample_inputs()``.
    targets : class indices, one per row (default: a different class per row), or Targets.
    adapter : the model adapter; default an ``AnalyticAdapter`` for ``x``'s shape.
    host : plugin host to resolve names and compositions (default: ``make_host(plugins)``;
        for a name without ``plugins``, installed entry points are loaded too).
    plugins : extra plugins for the default host, e.g. ``{"mine": my_package.plugin}``.
    name : registration name for a class (default ``checked_<classname>``).
    batch_size : rows per model call in the main run (small, so inner work spans batches).
    expected_shape : exact output shape (a tuple, or a callable of ``x``), for a stricter check
        within what ``explain()`` accepts (docs/plugins.md); default: batch first with ``x``'s
        height and width, i.e. (N, H, W) or (N, H, W, k).
    check_batch : compare the batch with single-input runs and other batch sizes.
    bad_params : parameter sets that must be rejected (a SalplugError) before any model call.
    seed_param : the name of the method's seed parameter, if it has one.
    check_targets : other targets must give other maps (False for a method whose maps do not
        depend on the explained class).
    rtol, atol : tolerance for batch-versus-single comparisons (relative to the largest value).

    Checks: the declared capabilities are known names and the method calls no primitive it
    did not declare (methods it composes through ``ctx.run`` / ``load_method`` add theirs);
    output shape, layout, dtype and finiteness; batch == stack of single-input runs, and
    independence from ``batch_size``; the same seed gives the same map (whatever the global
    numpy state) and another seed another map; no seed parameter means deterministic output;
    bad parameters fail before any model call; no framework is imported (statically, in the
    method's module, and dynamically, when none was loaded before); no adapter call carries more
    than ``batch_size`` rows; ``x`` and numpy's global random state are left as they were; other
    targets give other maps.

    Returns
    -------
    dict with ``name``, ``shape`` (of the output), ``calls`` (primitive calls of the main run).
    """
    from .api import load_method, method_parameters, run_method

    host, reg_name = _method_host(method, name, host, plugins)
    who = f"method {reg_name!r}"
    component = host.methods.get(reg_name)
    cls = component.load()
    instance = cls() if isinstance(cls, type) else cls
    declared = frozenset(component.metadata.get("requires", ()))
    own = frozenset(getattr(instance, "requires", ()) or ())
    for caps, where in ((declared, "register(requires=...)"), (own, "the class's requires")):
        unknown = set(caps) - CAPABILITIES
        if unknown:
            _fail(who, f"{where} names unknown capabilities {sorted(unknown)}; known: {sorted(CAPABILITIES)}.")
    if declared and own and declared != own:
        _fail(who, f"register(requires={sorted(declared)}) and the class's requires={sorted(own)} differ; "
                   f"declare the same capabilities in both places.")
    heavy = framework_imports(instance)
    if heavy:
        _fail(who, f"its module {type(instance).__module__} imports {', '.join(heavy)}; methods use "
                   f"numpy only and ask the adapter for primitives.")

    x = sample_inputs() if x is None else np.array(x, np.float32)  # a copy: the caller's stays as it is
    if x.ndim < 2 or len(x) < 2:
        _fail(who, f"check_method needs a batch of at least 2 inputs, got shape {x.shape}.")
    x_kept = x.copy()
    if adapter is None:
        adapter = AnalyticAdapter(AnalyticModel(x.shape[1:], classes=max(4, len(x))))
    if targets is None:
        k = adapter.num_outputs() or 1
        targets = Targets(np.arange(len(x)) % k) if getattr(adapter, "supports_targets", True) else Targets.none()
    elif not isinstance(targets, Targets):
        targets = Targets(np.asarray(targets))
    params = dict(params or {})
    accepted, _ = method_parameters(load_method(host, reg_name, adapter))
    seeded = seed_param in accepted
    if seeded and params.get(seed_param) is None:
        params[seed_param] = 0

    # Track every method resolved during a run (compositions add their requirements).
    looked_up: set[str] = set()
    registry = host.methods
    plain_get = type(registry).get.__get__(registry)

    def recording_get(key: str):
        found = plain_get(key)
        looked_up.add(found.name)
        return found

    def allowed() -> frozenset[str]:
        caps = set(declared | own)
        for method_name in looked_up:
            comp = host.methods._items.get(method_name)
            if comp is not None:
                caps |= set(comp.metadata.get("requires", ()))
                loaded = comp._loaded
                caps |= set(getattr(loaded, "requires", ()) or ()) if loaded is not None else set()
        return frozenset(caps)

    info = InputInfo(layout="N...", batched=True)
    loaded_before = _loaded_frameworks()

    def run(xs: np.ndarray, ts: Targets, ps: Mapping[str, Any], size: int, what: str):
        guard = _CapabilityGuard(adapter, allowed, who)
        ctx = Context(guard, host, size, False, info)
        looked_up.clear()
        registry.get = recording_get
        try:
            out = run_method(ctx, reg_name, xs, ts, dict(ps))
        except AssertionError:
            raise
        except Exception as exc:  # noqa: BLE001 - say which run failed
            raise AssertionError(f"{who}: {what} raised {type(exc).__name__}: {exc}") from exc
        finally:
            del registry.get
        if guard.violations:
            _fail(who, f"{what}: called undeclared capabilities {sorted(set(guard.violations))} "
                       f"(the method swallowed the error).")
        values = out.values if isinstance(out, MethodOutput) else np.asarray(out)
        return np.asarray(values), guard

    global_state = np.random.get_state()
    values, guard = run(x, targets, params, batch_size, f"the batch run (batch_size={batch_size})")
    n = len(x)
    if not np.array_equal(x, x_kept):
        _fail(who, "changed its input x in place; methods must leave x as they got it (build new arrays).")
    after = np.random.get_state()
    if any(not np.array_equal(a, b) if isinstance(a, np.ndarray) else a != b for a, b in zip(global_state, after)):
        np.random.set_state(global_state)
        if seeded:
            _fail(who, f"used numpy's global random state (np.random.seed / np.random.normal ...); draw all "
                       f"randomness from np.random.default_rng({seed_param}), never from the global numpy state.")
        _fail(who, f"used numpy's global random state (np.random.seed / np.random.normal ...); a method with "
                   f"randomness needs a {seed_param!r} parameter and np.random.default_rng({seed_param}).")
    if guard.max_rows > batch_size:
        _fail(who, f"sent {guard.max_rows} rows in one adapter call with batch_size={batch_size}; pack inner "
                   f"work with ctx.chunks(total) (at most ctx.batch_size rows per call: memory stays bounded).")
    k = adapter.num_outputs() or 0
    if check_targets and targets.indices is not None and k >= 2 and guard.total_calls:
        other, _ = run(x, Targets((targets.indices + 1) % k), params, batch_size, "the run with other targets")
        if np.array_equal(other, np.asarray(values)):
            _fail(who, "gave the same maps for other targets; pass each row's target to the adapter "
                       "(targets.take(rows)), or give check_targets=False if the maps do not depend on it.")
    if not np.issubdtype(values.dtype, np.floating):
        _fail(who, f"returned dtype {values.dtype}; return float maps (float32).")
    if values.ndim == 0 or values.shape[0] != n:
        _fail(who, f"returned shape {values.shape} for {n} inputs; return one map per input, batch first.")
    if expected_shape is not None:
        want = tuple(expected_shape(x) if callable(expected_shape) else expected_shape)
        if values.shape != want:
            _fail(who, f"returned shape {values.shape}, expected {want}.")
    elif x.ndim == 4:
        ok = values.ndim in (3, 4) and values.shape[1:3] == x.shape[1:3]
        if not ok:
            _fail(who, f"returned shape {values.shape} for inputs {x.shape} (N, H, W, C); maps must be "
                       f"(N, H, W) or (N, H, W, k), channels last, in the inputs' height and width "
                       f"(explain() rejects other shapes; see docs/plugins.md).")
    if not np.isfinite(values).all():
        _fail(who, f"returned {int((~np.isfinite(values)).sum())} NaN or infinite values.")

    if check_batch:
        for i in range(n):
            single, _ = run(x[i:i + 1], targets.take(slice(i, i + 1)), params, batch_size,
                            f"the single-input run of sample {i}")
            if not _close(single[0], values[i], rtol, atol):
                _fail(who, f"the map of sample {i} in a batch of {n} differs from its map computed alone "
                           f"({_max_diff(values[i], single[0])}). Each sample's map must not depend on "
                           f"the other samples of the batch (noise, masks or targets mixed up?).")
        for size in (1, max(64, n * 64)):
            other, _ = run(x, targets, params, size, f"the run with batch_size={size}")
            if not _close(other, values, rtol, atol):
                _fail(who, f"batch_size={size} gives another map than batch_size={batch_size} "
                           f"({_max_diff(values, other)}); batching must not change results.")

    state = np.random.get_state()
    try:
        np.random.seed(1)
        first, _ = run(x, targets, params, batch_size, "a repeated run")
        np.random.seed(2)
        again, _ = run(x, targets, params, batch_size, "a repeated run")
    finally:
        np.random.set_state(state)
    if not np.array_equal(first, again) or not np.array_equal(first, values):
        if seeded:
            _fail(who, f"the same {seed_param}={params[seed_param]!r} gave different maps "
                       f"({_max_diff(first, again)}); draw all randomness from "
                       f"np.random.default_rng({seed_param}), never from the global numpy state.")
        _fail(who, f"two runs with the same parameters gave different maps ({_max_diff(first, again)}); "
                   f"a method with randomness needs a {seed_param!r} parameter.")
    if seeded:
        other_seed = dict(params)
        other_seed[seed_param] = 12345 if params[seed_param] != 12345 else 54321
        different, _ = run(x, targets, other_seed, batch_size, f"a run with {seed_param}={other_seed[seed_param]}")
        if np.array_equal(different, values):
            _fail(who, f"{seed_param}={params[seed_param]!r} and {seed_param}={other_seed[seed_param]!r} "
                       f"gave identical maps: the seed seems to be ignored.")

    for bad in bad_params:
        counter = _CapabilityGuard(adapter, lambda: frozenset(CAPABILITIES), who)
        ctx = Context(counter, host, batch_size, False, info)
        try:
            run_method(ctx, reg_name, x, targets, {**params, **dict(bad)})
        except SalplugError as exc:
            if counter.total_calls:
                _fail(who, f"parameters {dict(bad)!r} were rejected ({exc}) only after "
                           f"{counter.total_calls} model call(s); validate them in check().")
            if not str(exc).strip():
                _fail(who, f"parameters {dict(bad)!r} were rejected with an empty message.")
        except Exception as exc:  # noqa: BLE001
            _fail(who, f"parameters {dict(bad)!r} raised {type(exc).__name__}: {exc}; raise "
                       f"salplug.ParameterError (or another SalplugError) saying what to pass instead.")
        else:
            _fail(who, f"parameters {dict(bad)!r} were accepted; they should raise ParameterError.")

    new = _loaded_frameworks() - loaded_before
    if new:
        _fail(who, f"running it imported {', '.join(sorted(new))}; methods never import a framework.")
    return {"name": reg_name, "shape": values.shape, "calls": dict(guard.calls)}


# --------------------------------------------------------------------------------------------
# check_backend
# --------------------------------------------------------------------------------------------

def _default_targets(adapter: Any, x: np.ndarray, outputs: np.ndarray | None) -> Targets:
    if not getattr(adapter, "supports_targets", True):
        return Targets.none()
    k = adapter.num_outputs() or (outputs.shape[1] if outputs is not None and outputs.ndim == 2 else 1)
    return Targets(np.arange(len(x)) % max(1, k))


def _stack_of_singles(fn: Callable, x: np.ndarray, targets: Targets, *rest: Any) -> Any:
    outs = [fn(x[i:i + 1], targets.take(slice(i, i + 1)), *rest) for i in range(len(x))]
    if isinstance(outs[0], tuple):
        return tuple(np.concatenate([o[j] for o in outs]) for j in range(len(outs[0])))
    return np.concatenate(outs)


_NO_LAYER = object()


def check_backend(adapter: Any, x: np.ndarray, *, targets: Any = None, layer: Any = _NO_LAYER,
                  native: Any = None, directions: int = 2, eps: float | None = None,
                  rtol: float = 0.05, atol: float | None = None, seed: int = 0) -> dict[str, Any]:
    """Check that a model adapter's primitives are consistent and agree with finite differences.

    Parameters
    ----------
    adapter : a model adapter (e.g. ``salplug.api.create_adapter(host, model, "torch")``).
    x : canonical inputs (N, ...) float32, N >= 2.
    targets : class indices per row (default: a different class per row), or Targets.
    layer : a layer for ``layer_values_and_gradients``; not given: that primitive is not
        checked (``None`` is a layer: the ``callable`` backend's only one). The layer must be a
        cut: every path from the input to the score passes through it (the chain-rule check
        needs that).
    native : the same inputs as the caller holds them; ``to_canonical`` must give ``x`` and
        ``from_canonical`` must give them back.
    directions : random directions per input for the directional finite differences.
    eps : finite-difference step along unit-norm directions (default 1e-2 times the largest |x|).
    rtol, atol : tolerance: |fd - analytic| <= atol + rtol * max(|fd|, |analytic|, typical size);
        default atol allows float32 rounding of the scores.

    Checks: ``provides`` names known capabilities and each has its method; ``outputs`` is
    (N, K) with K = ``num_outputs()``; ``scores`` are the targets' outputs; every primitive
    gives batch-first finite arrays of the right shape and equals the stack of single-row
    calls (per-sample targets in one batch); ``input_gradients`` match central differences of
    ``scores`` along random directions; ``layer_values_and_gradients`` satisfy the chain rule
    <dscore/dA, dA> = dscore along the same directions; guided gradients have the input's shape.

    Returns
    -------
    dict with the capabilities checked and the worst finite-difference error.
    """
    who = f"backend {getattr(adapter, 'name', type(adapter).__name__)!r}"
    x = np.asarray(x, np.float32)
    if x.ndim < 2 or len(x) < 2:
        _fail(who, f"check_backend needs a batch of at least 2 inputs, got shape {x.shape}.")
    provides = frozenset(getattr(adapter, "provides", ()))
    unknown = provides - CAPABILITIES
    if unknown:
        _fail(who, f"provides unknown capabilities {sorted(unknown)}; known: {sorted(CAPABILITIES)}.")
    needed = ("to_canonical", "from_canonical", "num_outputs", "outputs",
              *(("check_layer",) if LAYER_GRADIENTS in provides else ()), *sorted(provides))
    for attr in needed:
        if not callable(getattr(adapter, attr, None)):
            _fail(who, f"has no method {attr}() (every adapter needs it, or it is in provides).")
    report: dict[str, Any] = {"checked": []}

    if native is not None:
        canonical, info = adapter.to_canonical(native)
        if not _close(canonical, x, 1e-6, 1e-6):
            _fail(who, f"to_canonical(native) differs from x ({_max_diff(canonical, x)}); check the layout.")
        back = adapter.from_canonical(canonical, info)
        back = back.detach().cpu().numpy() if hasattr(back, "detach") else np.asarray(back)
        native_np = native.detach().cpu().numpy() if hasattr(native, "detach") else np.asarray(native)
        if not _close(back, native_np, 1e-6, 1e-6):
            _fail(who, f"from_canonical(to_canonical(native)) is not native ({_max_diff(back, native_np)}).")
        report["checked"].append("layout")

    n = len(x)
    outputs = np.asarray(adapter.outputs(x))
    if outputs.ndim != 2 or outputs.shape[0] != n or not np.isfinite(outputs).all():
        _fail(who, f"outputs(x) must be finite (N, K) = ({n}, K); got shape {outputs.shape}.")
    k = adapter.num_outputs()
    if k is not None and outputs.shape[1] != k:
        _fail(who, f"num_outputs() is {k} but outputs() has {outputs.shape[1]} columns.")
    if targets is None:
        targets = _default_targets(adapter, x, outputs)
    elif not isinstance(targets, Targets):
        targets = Targets(np.asarray(targets))

    def check_array(value: Any, shape: tuple[int, ...] | None, what: str) -> np.ndarray:
        arr = np.asarray(value)
        if not isinstance(value, np.ndarray):
            _fail(who, f"{what} returned {type(value).__name__}; primitives return numpy arrays.")
        if not np.issubdtype(arr.dtype, np.floating):
            _fail(who, f"{what} returned dtype {arr.dtype}; return float32.")
        if shape is not None and arr.shape != shape:
            _fail(who, f"{what} returned shape {arr.shape}, expected {shape}.")
        if arr.ndim == 0 or arr.shape[0] != n:
            _fail(who, f"{what} returned shape {arr.shape}; the first axis must be the batch ({n}).")
        if not np.isfinite(arr).all():
            _fail(who, f"{what} returned NaN or infinite values.")
        return arr

    def check_singles(fn: Callable, batch: Any, what: str, *rest: Any) -> None:
        singles = _stack_of_singles(fn, x, targets, *rest)
        pairs = zip(batch, singles) if isinstance(batch, tuple) else [(batch, singles)]
        for a, b in pairs:
            if not _close(a, b, 1e-4, 1e-6):
                _fail(who, f"{what} on the batch differs from stacking single-row calls "
                           f"({_max_diff(a, b)}); rows must not influence each other (per-row targets?).")

    rng = np.random.default_rng(seed)
    scale = float(np.abs(x).max()) or 1.0
    step = float(eps) if eps is not None else 1e-2 * scale
    dirs = rng.standard_normal((directions, *x.shape))
    dirs /= np.sqrt((dirs.reshape(directions, n, -1) ** 2).sum(-1)).reshape(directions, n, *([1] * (x.ndim - 1)))
    dirs = dirs.astype(np.float32)
    plus = np.concatenate([x + step * d for d in dirs])
    minus = np.concatenate([x - step * d for d in dirs])
    rep = Targets(None if targets.indices is None else np.tile(targets.indices, directions), targets.fn)
    worst = 0.0

    def compare(fd: np.ndarray, analytic: np.ndarray, size: float, what: str) -> float:
        tol_abs = atol if atol is not None else 16 * np.finfo(np.float32).eps * size / step + 1e-7
        bound = tol_abs + rtol * np.maximum(np.maximum(np.abs(fd), np.abs(analytic)), 0.0)
        err = np.abs(fd - analytic)
        bad = np.flatnonzero(err > bound)
        if bad.size:
            i = int(bad[0])
            _fail(who, f"{what} disagrees with central finite differences of scores() (step {step:.3g}) "
                       f"for row {i % n} along direction {i // n}: {analytic.ravel()[i]:.6g} vs "
                       f"{fd.ravel()[i]:.6g} (tolerance {bound.ravel()[i]:.3g}).")
        return float(err.max(initial=0.0))

    fd = None
    if SCORES in provides:
        s = check_array(adapter.scores(x, targets), (n,), "scores(x, targets)")
        if targets.indices is not None and not _close(s, outputs[np.arange(n), targets.indices], 1e-5, 1e-6):
            _fail(who, f"scores() are not outputs()[row, target] ({_max_diff(s, outputs[np.arange(n), targets.indices])}).")
        check_singles(adapter.scores, s, "scores")
        s_plus = np.asarray(adapter.scores(plus, rep), np.float64).reshape(directions, n)
        s_minus = np.asarray(adapter.scores(minus, rep), np.float64).reshape(directions, n)
        fd = (s_plus - s_minus) / (2 * step)
        size = float(np.abs(np.concatenate([s_plus, s_minus])).max(initial=0.0))
        report["checked"].append(SCORES)
    if INPUT_GRADIENTS in provides:
        g = check_array(adapter.input_gradients(x, targets), x.shape, "input_gradients(x, targets)")
        check_singles(adapter.input_gradients, g, "input_gradients")
        if fd is not None:
            analytic = np.stack([(g * d).reshape(n, -1).sum(1, dtype=np.float64) for d in dirs])
            worst = max(worst, compare(fd, analytic, size, "input_gradients"))
        report["checked"].append(INPUT_GRADIENTS)
    if LAYER_GRADIENTS in provides and layer is not _NO_LAYER:
        adapter.check_layer(layer)
        pair = adapter.layer_values_and_gradients(x, targets, layer)
        if not isinstance(pair, tuple) or len(pair) != 2:
            _fail(who, "layer_values_and_gradients must return a pair (values, gradients).")
        values = check_array(pair[0], None, "layer_values_and_gradients(...)[0] (values)")
        grads = check_array(pair[1], values.shape, "layer_values_and_gradients(...)[1] (gradients)")
        check_singles(adapter.layer_values_and_gradients, (values, grads), "layer_values_and_gradients", layer)
        if fd is not None:
            a_plus = np.asarray(adapter.layer_values_and_gradients(plus, rep, layer)[0], np.float64)
            a_minus = np.asarray(adapter.layer_values_and_gradients(minus, rep, layer)[0], np.float64)
            da = ((a_plus - a_minus) / (2 * step)).reshape(directions, n, -1)
            analytic = (da * grads.reshape(1, n, -1)).sum(-1)
            worst = max(worst, compare(fd, analytic, size, f"layer_values_and_gradients (layer {layer!r}, chain rule)"))
        report["checked"].append(LAYER_GRADIENTS)
    if GUIDED_GRADIENTS in provides:
        gg = check_array(adapter.guided_input_gradients(x, targets), x.shape, "guided_input_gradients(x, targets)")
        check_singles(adapter.guided_input_gradients, gg, "guided_input_gradients")
        report["checked"].append(GUIDED_GRADIENTS)
    report["max_fd_error"] = worst
    return report


# --------------------------------------------------------------------------------------------
# check_visualizer
# --------------------------------------------------------------------------------------------

def check_visualizer(visualizer: Any, *, params: Mapping[str, Any] | None = None, values: Any = None,
                     image: Any = None, host: Any = None, plugins: Mapping[str, Any] | None = None
                     ) -> dict[str, Any]:
    """Check that a visualizer follows the contract: one map (H, W, C) in, [0, 1] image out.

    Parameters
    ----------
    visualizer : a registered name (looked up in ``host``) or the callable / class itself.
    params : keyword parameters for every call.
    values : a map (H, W, C); default a signed random (9, 7, 3) map.
    image : an RGB image (H, W, 3) in [0, 1] for the overlay call; default random.
    host, plugins : as for ``check_method``.

    Checks: the output is a finite float array (H, W) or (H, W, 3) with values in [0, 1], for
    maps with 3 channels and with 1, for an all-zero map (no division by zero), with an RGB
    image in [0, 1] and a uint8 one; inputs are not modified; the same call gives the same
    image; the module imports no framework.
    """
    who = f"visualizer {visualizer!r}" if isinstance(visualizer, str) else \
        f"visualizer {getattr(visualizer, '__name__', type(visualizer).__name__)}"
    if isinstance(visualizer, str):
        if host is None:
            host = make_host(plugins, autoload=plugins is None, strict=plugins is not None)
        fn = host.visualizers.get(visualizer).load()
    else:
        fn = visualizer
    if isinstance(fn, type):
        fn = fn()
    if not callable(fn):
        _fail(who, f"is {type(fn).__name__}, not a callable (values, image=None, **params).")
    heavy = framework_imports(fn)
    if heavy:
        _fail(who, f"its module imports {', '.join(heavy)}; visualizers use numpy (and plotting libraries).")
    params = dict(params or {})
    rng = np.random.default_rng(0)
    values = rng.normal(0, 1, (9, 7, 3)).astype(np.float32) if values is None else np.asarray(values)
    if values.ndim != 3:
        _fail(who, f"check_visualizer takes one map (H, W, C); got shape {values.shape}.")
    h, w = values.shape[:2]
    image = rng.uniform(0, 1, (h, w, 3)) if image is None else np.asarray(image)
    cases = [
        ("a map with 3 channels", values, None),
        ("a map with 1 channel", values.sum(axis=2, keepdims=True), None),
        ("an all-zero map", np.zeros_like(values), None),
        ("an RGB image in [0, 1]", values, image),
        ("a uint8 RGB image", values, (np.clip(image, 0, 1) * 255).astype(np.uint8)),
    ]
    shapes = []
    loaded_before = _loaded_frameworks()
    for what, v, img in cases:
        v_copy = v.copy()
        img_copy = None if img is None else img.copy()
        try:
            out = fn(v, image=img, **params)
        except Exception as exc:  # noqa: BLE001
            _fail(who, f"failed on {what}: {type(exc).__name__}: {exc}")
        if not np.array_equal(v, v_copy) or (img is not None and not np.array_equal(img, img_copy)):
            _fail(who, f"modified its input ({what}); work on a copy.")
        if not isinstance(out, np.ndarray):
            _fail(who, f"returned {type(out).__name__} for {what}; return a numpy array.")
        if out.shape not in ((h, w), (h, w, 3)):
            _fail(who, f"returned shape {out.shape} for {what}; expected ({h}, {w}) or ({h}, {w}, 3).")
        if not np.issubdtype(out.dtype, np.floating):
            _fail(who, f"returned dtype {out.dtype} for {what}; return floats in [0, 1].")
        if not np.isfinite(out).all():
            _fail(who, f"returned NaN or infinite values for {what}.")
        if out.min() < 0 or out.max() > 1:
            _fail(who, f"returned values in [{out.min():.3g}, {out.max():.3g}] for {what}; clip to [0, 1].")
        again = fn(v, image=img, **params)
        if not np.array_equal(out, again):
            _fail(who, f"two calls on {what} gave different images.")
        shapes.append(out.shape)
    new = _loaded_frameworks() - loaded_before
    if new:
        _fail(who, f"imported {', '.join(sorted(new))}; visualizers never import a framework.")
    return {"shapes": shapes}
