"""Contracts between the host, methods and backends.

Inside salplug every array is *canonical*: float32 numpy, batch first, channels last
(N, H, W, C) for images, any trailing shape for other inputs. Backends convert from and to
what the caller holds; methods only ever see canonical arrays.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .plugins import PluginHost

# Capabilities: primitives an adapter provides and a method requires.
SCORES = "scores"
INPUT_GRADIENTS = "input_gradients"
LAYER_GRADIENTS = "layer_values_and_gradients"
GUIDED_GRADIENTS = "guided_input_gradients"
CAPABILITIES = frozenset({SCORES, INPUT_GRADIENTS, LAYER_GRADIENTS, GUIDED_GRADIENTS})


_SINGLE_LAYOUT = {"NHWC": "HWC", "NCHW": "CHW", "N...": "..."}


class Targets:
    """What to explain, one entry per row of a batch.

    Either class ``indices`` (int array, one per row), or ``fn``, a callable applied to the
    model's (framework) output that returns one scalar per row, or neither: the model's
    output is already one scalar per row (e.g. an upstream ``call_model_function``).
    """

    __slots__ = ("indices", "fn", "_chosen", "_rows")

    def __init__(self, indices: np.ndarray | None = None, fn: Callable[[Any], Any] | None = None):
        self.indices = None if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        self.fn = fn
        self._chosen = self._rows = None  # top-1 chosen in the explained pass (see top1)

    @classmethod
    def none(cls) -> Targets:
        return cls()

    @classmethod
    def top1(cls, n: int) -> Targets:
        """Each row's highest output, chosen by the backend in the very forward pass it explains
        (``record``), for methods whose model rows are the inputs themselves: no separate top-1
        pass. ``resolved()`` then gives the chosen classes."""
        t = cls()
        t._chosen, t._rows = np.full(n, -1, np.int64), np.arange(n)
        return t

    @property
    def pending_top1(self) -> bool:
        return self._chosen is not None

    @property
    def rows(self) -> int | None:
        """How many rows these targets are for (pending top-1 targets only; else None)."""
        return None if self._rows is None else len(self._rows)

    def record(self, chosen: np.ndarray) -> None:
        """The backend's top-1 classes for these rows (pending top-1 targets only)."""
        self._chosen[self._rows] = chosen

    def resolved(self) -> Targets:
        """Pending top-1 targets as the classes chosen (none: the model gave one score per row)."""
        if self._chosen is None:
            return self
        return Targets(self._chosen.copy()) if (self._chosen >= 0).all() else Targets.none()

    def repeat(self, k: int) -> Targets:
        """Each row repeated ``k`` times in a row (sample-major), for inner-work batches."""
        if self._chosen is not None:
            raise RuntimeError("Top-1 targets chosen in the explained pass apply to the inputs' own rows; "
                               "a method that repeats rows must not set rows_are_inputs.")
        return Targets(None if self.indices is None else np.repeat(self.indices, k), self.fn)

    def take(self, rows: np.ndarray | slice) -> Targets:
        if self._chosen is not None:
            t = Targets()
            t._chosen, t._rows = self._chosen, self._rows[rows]
            return t
        return Targets(None if self.indices is None else self.indices[rows], self.fn)

    def describe(self) -> Any:
        """A JSON-friendly record of the target (stored in the Attribution)."""
        if self._chosen is not None:
            return self.resolved().describe()
        if self.indices is not None:
            return [int(i) for i in self.indices]
        if self.fn is not None:
            return getattr(self.fn, "__name__", type(self.fn).__name__)
        return None

    def __repr__(self) -> str:
        return f"Targets({self.describe()!r})"


@dataclass
class InputInfo:
    """How the caller's input looked, so results come back the same way."""

    kind: str = "numpy"            # "numpy", "torch", "tf", ...
    layout: str = "NHWC"           # layout of the caller's array, e.g. "NCHW", "HWC", "N..."
    batched: bool = True
    device: Any = None
    dtype: Any = None
    # An adapter that keeps work on its device (``keep_on_device``) may also hold the canonical
    # input there: ``device_values`` mirrors the numpy canonical array ``device_of``.
    device_values: Any = field(default=None, repr=False, compare=False)
    device_of: Any = field(default=None, repr=False, compare=False)


@runtime_checkable
class ModelAdapter(Protocol):
    """A model wrapped by a backend. All arrays are canonical (see module docstring).

    ``targets`` has one entry per row of ``x``. Each primitive processes exactly the batch it
    gets; methods decide the batching.
    """

    name: str
    provides: frozenset[str]
    default_batch_size: int

    def to_canonical(self, x: Any, layout: str | None = None) -> tuple[np.ndarray, InputInfo]:
        """Validate the caller's input and return (canonical float32 array, InputInfo)."""

    def from_canonical(self, values: np.ndarray, info: InputInfo) -> Any:
        """Return ``values`` (canonical) in the caller's layout, type and device."""

    def num_outputs(self) -> int | None:
        """Number of classes if known without calling the model, else None."""

    def outputs(self, x: np.ndarray) -> np.ndarray:
        """Model outputs, (M, K) numpy (used to pick top-1 targets)."""

    def scores(self, x: np.ndarray, targets: Targets) -> np.ndarray:
        """The explained scalar per row, shape (M,)."""

    def input_gradients(self, x: np.ndarray, targets: Targets) -> np.ndarray:
        """d score / d x, with the shape of ``x``."""

    def check_layer(self, layer: Any) -> None:
        """Raise LayerError unless ``layer`` names a layer of the model."""

    def layer_values_and_gradients(self, x: np.ndarray, targets: Targets,
                                   layer: Any) -> tuple[np.ndarray, np.ndarray]:
        """(activations, d score / d activations) of ``layer``, channels last."""

    def guided_input_gradients(self, x: np.ndarray, targets: Targets) -> np.ndarray:
        """Like ``input_gradients`` with guided-backprop ReLU gradients."""


@dataclass
class MethodOutput:
    """A method's result: canonical ``values`` (N, ...) plus optional ``extras``."""

    values: np.ndarray
    extras: dict[str, Any] = field(default_factory=dict)
    # set by the host when a method returned a device array: ``values`` is then its numpy copy
    device_values: Any = field(default=None, repr=False, compare=False)


class Method:
    """Base class for saliency methods (subclassing is optional; the protocol is duck-typed).

    A method declares ``requires`` (capabilities) and implements
    ``explain(self, ctx, x, targets, *, <params with defaults>)`` returning a canonical array
    (N, ...) or a ``MethodOutput``. Its keyword-only parameters are the accepted params; an
    optional ``check(self, ctx, x, targets, **params)`` validates values before any model call.
    Methods use numpy only: they never import a framework.
    """

    requires: ClassVar[frozenset[str]] = frozenset()

    def check(self, ctx: Context, x: np.ndarray, targets: Targets, **params: Any) -> None:
        """Validate parameter values before any model call (default: nothing to check)."""

    def explain(self, ctx: Context, x: np.ndarray, targets: Targets, **params: Any) -> Any:
        raise NotImplementedError


#: True while ``Context.as_canonical`` converts a parameter (a baseline, a fill value): an
#: adapter may skip input checks that ``as_canonical`` makes itself against the input.
CONVERTING_PARAMETER: contextvars.ContextVar[bool] = contextvars.ContextVar("salplug_converting_parameter",
                                                                           default=False)


@dataclass
class Context:
    """What a running method may use: the adapter, batching, progress, other methods."""

    adapter: ModelAdapter
    host: PluginHost
    batch_size: int
    progress: bool = False
    input_info: InputInfo | None = None
    # When a method runs another on rows it made from the caller's samples (SmoothGrad's noisy
    # copies): the caller's sample behind each row, and how many samples the caller gave.
    row_samples: np.ndarray | None = None
    caller_samples: int | None = None

    def for_rows(self, samples: np.ndarray, n: int) -> Context:
        """This context for a call on rows made from samples ``samples`` of an ``n``-sample
        batch: per-sample parameters (``as_canonical``, ``rows_of``) then follow the rows."""
        samples = np.asarray(samples)
        if self.row_samples is not None:  # rows of rows: map back to the caller's samples
            return replace(self, row_samples=self.row_samples[samples])
        return replace(self, row_samples=samples, caller_samples=n)

    def sample_count(self, x: np.ndarray) -> int:
        """How many samples the caller gave for the rows ``x`` (``len(x)`` unless ``for_rows``)."""
        return len(x) if self.row_samples is None else int(self.caller_samples)

    def rows_of(self, per_sample: Any) -> Any:
        """A per-sample list or array (one entry per caller sample) as one entry per row of x."""
        if self.row_samples is None:
            return per_sample
        if isinstance(per_sample, list):
            return [per_sample[i] for i in self.row_samples]
        return per_sample[self.row_samples]

    def as_canonical(self, value: Any, x: np.ndarray, name: str = "value") -> np.ndarray:
        """An array-valued parameter given in the caller's layout (a baseline, say), as a
        canonical float32 array broadcastable to ``x``. Scalars pass through; a single
        sample is broadcast over the batch; a callable is called on canonical ``x``."""
        from .errors import ParameterError

        try:
            rank = np.ndim(value)
        except ValueError:  # a ragged list
            raise ParameterError(f"{name} is a ragged list; give a number or an array of one shape.") from None
        if callable(value) and not hasattr(value, "shape"):
            out = np.asarray(value(x), dtype=np.float32)  # canonical in, canonical out
        elif rank == 0:
            out = np.full((1,) * x.ndim, _scalar(value, name), dtype=np.float32)
        else:
            info = self.input_info or InputInfo(layout="N...")
            if info.batched and rank == x.ndim:
                layout = info.layout
            elif rank == x.ndim - 1:
                layout = _SINGLE_LAYOUT.get(info.layout, info.layout)
            elif not info.batched:
                raise ParameterError(
                    f"{name} has rank {rank}; the input is one sample, so give {name} in the "
                    f"input's own layout for one sample (rank {x.ndim - 1})."
                )
            else:
                raise ParameterError(
                    f"{name} has rank {rank}; give it in the input's own layout, either for one "
                    f"sample (rank {x.ndim - 1}) or for the whole batch (rank {x.ndim})."
                )
            token = CONVERTING_PARAMETER.set(True)
            try:
                out, _ = self.adapter.to_canonical(value, layout)
            except ValueError as exc:  # InputError: say which parameter was wrong
                raise ParameterError(f"{name}: {exc}") from exc
            finally:
                CONVERTING_PARAMETER.reset(token)
            if self.row_samples is not None and out.shape[0] != 1:  # one per sample: to the rows
                if out.shape[0] != self.caller_samples:
                    raise ParameterError(
                        f"{name} has {out.shape[0]} samples for a batch of {self.caller_samples}; give "
                        f"a scalar, one sample, or one per sample.")
                out = out[self.row_samples]
        try:
            np.broadcast_shapes(out.shape, x.shape)
        except ValueError:
            raise ParameterError(
                f"{name} of shape {out.shape} (canonical, channels last) does not fit inputs of "
                f"shape {x.shape}; give a scalar, one sample, or one per sample."
            ) from None
        if not np.isfinite(out).all():
            raise ParameterError(f"{name} contains NaN or infinite values.")
        return out

    # -- device arrays: methods that set ``device_arrays = True`` may keep inner work on the
    # adapter's device. The arrays stay opaque to the method: it indexes, reshapes and does
    # arithmetic on them, and moves them only through these helpers (numpy when the adapter
    # keeps nothing on a device, so the same code runs everywhere).
    @property
    def on_device(self) -> bool:
        """True when the adapter wants inner work kept on its device (e.g. a CUDA model)."""
        return bool(getattr(self.adapter, "keep_on_device", False))

    def to_device(self, arr: Any) -> Any:
        """``arr`` (canonical numpy) as the adapter's device array; numpy when not ``on_device``.
        The canonical input itself comes back without a copy when the caller's data already
        lives on the device."""
        if not self.on_device or not isinstance(arr, np.ndarray):
            return arr
        info = self.input_info
        if info is not None and info.device_values is not None and arr is info.device_of:
            return info.device_values
        return self.adapter.to_device(arr)

    def to_numpy(self, arr: Any) -> np.ndarray:
        """A device array (or numpy array) as numpy."""
        return arr if isinstance(arr, np.ndarray) else self.adapter.to_host(arr)

    def zeros(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """A zero-filled array of numpy ``dtype``: on the adapter's device when ``on_device``."""
        if not self.on_device or not hasattr(self.adapter, "zeros"):
            return self.to_device(np.zeros(shape, dtype))
        return self.adapter.zeros(shape, dtype)

    def astype(self, arr: Any, dtype: Any) -> Any:
        """``arr`` (numpy or a device array) with numpy ``dtype``, where it lies."""
        if isinstance(arr, np.ndarray):
            return arr.astype(dtype)
        if hasattr(self.adapter, "astype"):
            return self.adapter.astype(arr, dtype)
        return self.to_device(self.to_numpy(arr).astype(dtype))  # an adapter without it: via the host

    def concat(self, parts: list) -> Any:
        """Arrays joined along the batch axis, numpy or device arrays alike."""
        if len(parts) == 1:
            return parts[0]
        if all(isinstance(p, np.ndarray) for p in parts):
            return np.concatenate(parts)
        return self.adapter.concat(parts)

    def chunks(self, total: int, desc: str = "", batch_size: int | None = None) -> Iterator[slice]:
        """Slices of ``range(total)`` of at most ``batch_size`` rows, with a progress bar."""
        size = max(1, int(batch_size or self.batch_size))
        starts = range(0, total, size)
        if self.progress and len(starts) > 1:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=desc or "salplug", unit="batch", leave=False)
        for start in starts:
            yield slice(start, min(start + size, total))

    def method(self, name: str) -> Any:
        """A registered method instance, after checking the adapter provides what it needs."""
        from .api import load_method

        return load_method(self.host, name, self.adapter)

    def run(self, name: str, x: np.ndarray, targets: Targets, **params: Any) -> MethodOutput:
        """Run another registered method (composition: SmoothGrad over X, XRAI over IG)."""
        from .api import run_method

        return run_method(self, name, x, targets, params)


def _scalar(value: Any, name: str) -> float:
    """A scalar parameter (a number, a 0-d array or tensor of any framework) as a float."""
    from .errors import ParameterError

    if not isinstance(value, (str, bytes, bool, np.bool_)) and value is not None:
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    raise ParameterError(f"{name} must be a number, an array or a callable; got {value!r}.")


@dataclass(eq=False)  # arrays inside: compared by identity (== of two results would be ambiguous)
class Attribution:
    """The result of ``explain()``.

    ``values`` is in the caller's layout and type (a torch NCHW tensor for a torch NCHW input,
    numpy HWC for a single numpy HWC image, ...). ``canonical`` holds the same numbers as
    float32 numpy (N, H, W, C) for visualizers and metrics. It may be given as a function of no
    arguments: it is then called on first read (a result kept on a GPU is copied to the host only
    when someone asks for it).
    """

    values: Any
    canonical: np.ndarray
    method: str
    params: dict[str, Any]
    target: Any
    backend: str
    extras: dict[str, Any] = field(default_factory=dict)
    batched: bool = True
    host: PluginHost | None = field(default=None, repr=False, compare=False)  # the host that made it

    def numpy(self) -> np.ndarray:
        """Canonical float32 values, batch first and channels last."""
        return self.canonical

    def __getstate__(self) -> dict[str, Any]:
        """For pickle: the canonical values read (not a function), no plugin host (it holds
        loaded modules; an unpickled result renders with the process-wide host)."""
        state = dict(self.__dict__)
        state["_canonical"] = self.canonical
        state["host"] = None
        return state

    def __copy__(self) -> Attribution:
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        return clone

    def __deepcopy__(self, memo: dict) -> Attribution:
        """Arrays and extras copied; the plugin host shared (it is the process's, not the result's)."""
        import copy

        clone = object.__new__(type(self))
        memo[id(self)] = clone
        for key, value in self.__dict__.items():
            clone.__dict__[key] = value if key == "host" else copy.deepcopy(
                self.canonical if key == "_canonical" else value, memo)
        return clone

    def __len__(self) -> int:
        return len(self.canonical)

    def visualize(self, kind: str = "grayscale", index: int = 0, image: Any = None, *,
                  host: PluginHost | None = None, **params: Any) -> np.ndarray:
        """Render sample ``index`` with visualizer ``kind``; returns floats in [0, 1].

        ``host``: the plugin host to look ``kind`` up in (default: the host that made this
        Attribution, else the process-wide one). ``params`` go to the visualizer.
        """
        from .visualizers import render

        return render(kind, self.canonical[index], image=image, host=host or self.host, **params)

    def save(self, path: str, kind: str = "grayscale", index: int = 0, image: Any = None, *,
             host: PluginHost | None = None, **params: Any) -> str:
        """Render sample ``index`` (as ``visualize``, same ``host``) and write a PNG; returns the path."""
        from .errors import ParameterError
        from .visualizers import save_png

        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -len(self) <= index < len(self):
            raise ParameterError(f"index must be an int in 0..{len(self) - 1} (the batch has {len(self)} maps); "
                                 f"got {index!r}.")
        if Path(path).suffix.lower() != ".png":
            raise ParameterError(f"save writes PNG files: give a path ending in .png; got {str(path)!r}.")
        rendered = self.visualize(kind, index, image, host=host, **params)
        try:
            return save_png(rendered, path)
        except OSError as exc:
            raise ParameterError(f"could not write {str(path)!r}: {exc.strerror or exc}; choose another path.") from None


def _read_canonical(self: Attribution) -> np.ndarray:
    value = self.__dict__["_canonical"]
    if callable(value):
        value = self.__dict__["_canonical"] = value()
    return value


def _write_canonical(self: Attribution, value: Any) -> None:
    self.__dict__["_canonical"] = value


# set after @dataclass has made ``canonical`` a field, so __init__, ==, repr all go through it
Attribution.canonical = property(_read_canonical, _write_canonical,
                                 doc="Canonical float32 values (N, H, W, C), read from the device on first use.")
