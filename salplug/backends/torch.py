"""PyTorch backend: wraps an ``nn.Module`` (or a callable returning logits).

Layout: the caller's tensors are NCHW (CHW for one image); numpy inputs NHWC (HWC).
Work runs on the model's device; parameters are frozen during a call (so they never
accumulate gradients), and every hook is removed when the call ends.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

try:
    import torch
    from torch import nn
except ImportError as exc:  # pragma: no cover - exercised without torch installed
    from ..errors import BackendUnavailableError

    raise BackendUnavailableError(
        'The torch backend needs PyTorch. Install it with: pip install "salplug[torch]"'
    ) from exc

from ..errors import InputError, LayerError, ModelOutputError, ParameterError, TargetError, did_you_mean
from ._batching import IMAGE_224, rows_for_values
from ._outputs import class_target_error, make_output_selector as _make_selector, select_logits
from ..layout import (LAYOUTS, canonical_to_layout, check_channels, check_image_rank, check_kind, check_layout,
                      check_values, default_layout, nonfinite_error, numpy_to_canonical, read_array)
from ..types import CONVERTING_PARAMETER, GUIDED_GRADIENTS, INPUT_GRADIENTS, LAYER_GRADIENTS, SCORES, InputInfo, Targets


def default_output_selector(out: Any) -> Any:
    """Pick the logits from a model's output: a tensor, tuple/list (first), dict ("logits")."""
    return select_logits(out, torch.is_tensor)


def make_output_selector(output: Any) -> Callable[[Any], Any]:
    return _make_selector(output, default_output_selector)


# Rows per model call when the caller gives no batch size. Measured on 2 CPU cores (IG, 25
# steps, 224 x 224, one thread): EfficientNet-Lite0 is fastest at 8 (16 is 15% and 25 is 30%
# slower; 1 is 30% slower), a ResNet-style CNN at 8-13 (16: +8%). Inputs arrive channels-last
# (NHWC numpy viewed as NCHW), so the model's own memory format changes little (<= 3%).
CPU_BATCH_SIZE = 8
# On an accelerator larger batches pay; an out-of-memory error halves the batch and retries.
ACCELERATOR_BATCH_SIZE = 64
# batch_size_for(): CPU batches of about this many input values (8 images of 224 x 224 x 3),
# at most CPU_MAX_ROWS rows: small CNNs are memory-bound past that (64 images of 32 x 32, IG,
# gradients and SmoothGrad: 64 rows fastest, 256 rows 5-25% slower; occlusion on 64 x 64:
# 64 rows 0.30 s, 98 rows 0.46 s) ...
CPU_BATCH_VALUES = 8 * IMAGE_224
CPU_MAX_ROWS = 64
# ... on CUDA, this fraction of the free memory, at most MAX_AUTO_ROWS rows.
MAX_AUTO_ROWS = 256
CUDA_MEMORY_FRACTION = 0.5
# The CUDA probe's answer per model (weakly held) and (input shape, device, dtype): every
# Explainer of the same model reuses it, so salplug.explain() pays the probe once per process.
_PROBED_ROWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a device out-of-memory error (CUDA, or a RuntimeError saying "out of memory")."""
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def available_devices() -> list[str]:
    """The devices this torch build can run on here: "cpu", then each CUDA GPU, then "mps"."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def check_device(device: Any) -> torch.device:
    """``device`` as a torch.device, or a ParameterError when it is malformed or not available here."""
    usable = ", ".join(available_devices())
    try:
        if isinstance(device, torch.device):
            dev = device
        elif isinstance(device, str):
            dev = torch.device(device)
        elif isinstance(device, (int, np.integer)) and not isinstance(device, bool):
            dev = torch.device("cuda", int(device))  # torch's meaning of a bare GPU index
        else:
            dev = None
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ParameterError(f"device {device!r} is not a torch device ({exc}). Available here: {usable}.") from None
    if dev is None:
        raise ParameterError(f"device must be a string like 'cpu' or 'cuda:0', a GPU index or a torch.device, got "
                             f"{device!r}. Available here: {usable}.")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ParameterError(f"device {device!r} asks for CUDA, but {why} (torch {torch.__version__}). "
                                 f"Available here: {usable}.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ParameterError(f"device {device!r}: there are only {torch.cuda.device_count()} CUDA "
                                 f"device(s). Available here: {usable}.")
    elif dev.type == "mps" and "mps" not in usable:
        raise ParameterError(f"device {device!r} asks for Apple MPS, which is not available here. "
                             f"Available here: {usable}.")
    return dev


MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def choose_memory_format(choice: Any, device: torch.device, conv: nn.Module | None) -> torch.memory_format:
    """The memory format of image batches for ``choice`` ("auto", "channels_last", "contiguous" or
    a ``torch.memory_format``); see ``TorchAdapter``'s ``memory_format``."""
    if isinstance(choice, torch.memory_format) and choice in MEMORY_FORMATS.values():
        return choice
    if isinstance(choice, str) and choice in MEMORY_FORMATS:
        return MEMORY_FORMATS[choice]
    if choice is not None and choice != "auto":
        raise ParameterError(f"memory_format must be 'auto', 'channels_last' or 'contiguous'; got {choice!r}.")
    if device.type == "cpu":
        return torch.channels_last
    weight = getattr(conv, "weight", None)  # no convolution: the caller's own NCHW
    if weight is not None and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


_FROZEN: dict[int, list] = {}  # id(parameter) -> [holders, parameter, turn]: frozen by salplug, restored at 0
_IN_EVAL: dict[int, list] = {}  # id(module) -> [holders, module, turn]: put in eval by salplug, restored at 0
_HOLDS_LOCK = threading.RLock()


def _take(table: dict[int, list], items: list, is_on: Callable[[Any], bool], turn: Callable[[Any, bool], None],
          taken: list) -> None:
    """Count one more holder of each item; the first turns it off (items already off are the
    user's own setting: not salplug's to change or restore)."""
    for item in items:
        entry = table.get(id(item))
        if entry is None:
            if not is_on(item) or _cannot_turn(item):
                continue
            turn(item, False)
            entry = table[id(item)] = [0, item, turn]
        entry[0] += 1
        taken.append((table, entry))


def _cannot_turn(item: Any) -> bool:
    """A lazy module's parameter before its first pass (it refuses requires_grad_), or an
    inference tensor (it cannot be turned back on, nor gather .grad)."""
    if isinstance(item, nn.parameter.UninitializedParameter):
        return True
    return isinstance(item, torch.Tensor) and item.is_inference()


def _release(taken: list) -> None:
    """Count one holder less; the last turns the item back on. Every item is released and
    restored even when one fails to; the first failure is raised afterwards."""
    failure = None
    for table, entry in taken:
        entry[0] -= 1
        if entry[0] == 0:
            del table[id(entry[1])]
            try:
                entry[2](entry[1], True)
            except Exception as exc:  # noqa: BLE001 - restore the rest first
                failure = failure or exc
    if failure is not None:
        raise failure


def _requires_grad(p: Any, on: bool) -> None:
    p.requires_grad_(on)


def _training(m: Any, on: bool) -> None:
    m.training = on


@contextlib.contextmanager
def hold_model(modules: list, params: list, eval_mode: bool) -> Iterator[None]:
    """``params`` frozen (no .grad accumulates) and, with ``eval_mode``, ``modules`` in eval mode
    while anyone holds them. Each parameter and module is counted on its own, across threads
    and adapters: salplug changes it when the first holder takes it and puts it back when the
    last lets go, so a call never sees a module restored under it (a shared backbone included)."""
    taken: list = []
    with _HOLDS_LOCK:
        try:
            _take(_FROZEN, params, lambda p: p.requires_grad, _requires_grad, taken)
            if eval_mode:
                _take(_IN_EVAL, modules, lambda m: m.training, _training, taken)
        except BaseException:
            _release(taken)
            raise
    try:
        yield
    finally:
        with _HOLDS_LOCK:
            _release(taken)


def _name_the_layout(refused: InputError) -> InputError:
    return InputError(f"{refused} (These checks read the model's first registered convolution; if the model "
                      f"runs another first, name the input's layout, e.g. layout='NCHW' or 'N...', and the "
                      f"model is tried on it.)")


def _check_grad_possible() -> None:
    if torch.is_inference_mode_enabled():
        raise ParameterError("Gradients cannot be taken inside torch.inference_mode(); call salplug outside it "
                             "(it turns gradients on and off itself).")


#: model -> True when its .view refused channels-last memory (see _again_in_plain_layout)
_REFUSES_CHANNELS_LAST: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _known_to_refuse_channels_last(model: Any) -> bool:
    try:
        return _REFUSES_CHANNELS_LAST.get(model, False)
    except TypeError:  # a model that cannot be weakly referenced: its adapter finds out itself
        return False


def _torch_dtype(dtype: Any) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype)).dtype


def _first(modules: list, kind: type | tuple[type, ...]) -> nn.Module | None:
    return next((m for m in modules if isinstance(m, kind)), None)


def infer_num_classes(model: Any, modules: list | None = None) -> int | None:
    """Classes, when the last module with parameters is a Linear layer (else unknown).
    ``modules``: ``list(model.modules())`` when the caller has it."""
    if not isinstance(model, nn.Module):
        return None
    last = None
    for module in modules if modules is not None else model.modules():
        if any(p is not None for p in module._parameters.values()):  # its own parameters
            last = module
    return last.out_features if isinstance(last, nn.Linear) else None


class TorchAdapter:
    """A PyTorch model as a salplug ``ModelAdapter``.

    Parameters
    ----------
    model : nn.Module or callable taking an NCHW tensor and returning logits.
    device : where to run (default: the device of the model's parameters).
    output : selects the logits from a tuple/dict output (index, key or callable).
    num_classes : number of outputs, for early target checks (default: the model's last Linear
        layer's outputs until a forward pass shows the real number).
    eval_mode : run the model in eval mode during each call (BatchNorm uses its running
        statistics and is not updated, dropout is off), putting every module's own mode back
        afterwards; False runs it in whatever mode it is in. (A plain function wrapping a
        module is called as it is: its modules are not seen.)
    device_arrays : keep the inner work of methods that can (gradients, Guided Backprop, IG,
        SmoothGrad over those) on the model's device instead of copying every batch to numpy
        and back. Default: on for CUDA; off on the CPU (where numpy and torch share memory and
        it changes nothing) and on MPS (no float64 there for the sums).
    memory_format : how image batches are laid out in memory for the model: "channels_last"
        (NHWC memory, NCHW shape), "contiguous" (plain NCHW) or "auto" (default): on the CPU
        channels-last (a free view of salplug's NHWC arrays, the fast layout there); on a GPU the
        layout of the model's first convolution weights, so the network runs in the format its
        weights are stored in (a channels-last input to an NCHW model converts every weight on
        every call). With "auto", a model whose ``.view`` refuses channels-last memory (e.g.
        ``x.view(-1, 400)`` after its convolutions) gets plain NCHW from its first refusal on
        (remembered per model).
    """

    name = "torch"
    provides = frozenset({SCORES, INPUT_GRADIENTS, LAYER_GRADIENTS, GUIDED_GRADIENTS})
    default_batch_size = CPU_BATCH_SIZE
    supports_targets = True
    top1_in_pass = True  # picks pending top-1 targets (Targets.top1) in the explained forward pass

    def __init__(self, model: Any, *, device: Any = None, output: Any = None,
                 num_classes: int | None = None, eval_mode: bool = True,
                 device_arrays: bool | None = None, memory_format: Any = "auto") -> None:
        if not callable(model):
            raise ParameterError(f"The torch backend needs an nn.Module or a callable, got {type(model).__name__}.")
        self.model = model
        self.select = make_output_selector(output)
        modules = list(model.modules()) if isinstance(model, nn.Module) else []  # walked once here
        first = next(model.parameters(), None) if modules else None
        first = next(model.buffers(), None) if first is None and modules else first
        self.device = check_device(device) if device is not None else (
            first.device if first is not None else torch.device("cpu"))
        if self.device.type == "cuda" and self.device.index is None:  # "cuda" is the current GPU
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
        if not isinstance(eval_mode, bool):
            raise ParameterError(f"eval_mode must be True or False, got {eval_mode!r}.")
        self.eval_mode = eval_mode
        if device_arrays is not None and not isinstance(device_arrays, bool):
            raise ParameterError(f"device_arrays must be True, False or None (automatic), got {device_arrays!r}.")
        # CUDA only by default: MPS has no float64 for the sums, and on a CPU there is nothing to save
        self.keep_on_device = self.device.type == "cuda" if device_arrays is None else device_arrays
        self._num_classes = num_classes if num_classes is not None else infer_num_classes(model, modules)
        # where an unverified class count came from (None once given or seen in an output)
        self.num_outputs_guess = "the model's last Linear layer" if num_classes is None and self._num_classes else None
        conv = _first(modules, nn.Conv2d)
        # the first registered convolution, usually the stem (a lazy one, not yet run, has 0)
        self.in_channels = conv.in_channels if conv is not None and conv.in_channels else None
        self.memory_format = choose_memory_format(memory_format, self.device, conv)
        self.auto_memory_format = memory_format is None or (isinstance(memory_format, str) and memory_format == "auto")
        first_conv = _first(modules, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
        # a 1-D convolutional network takes (N, C, L) batches: not images, so no CHW guess
        self.signals = isinstance(first_conv, nn.Conv1d)
        self.default_batch_size = CPU_BATCH_SIZE if self.device.type == "cpu" else ACCELERATOR_BATCH_SIZE
        self.max_rows: int | None = None   # learned from out-of-memory errors: rows per model call at most
        self._scope = threading.local()  # per thread: (modules, parameters) during call_scope()
        self._auto_rows: dict[tuple, int] = {}
        # input shapes (H, W, C) the shape checks refused, tried on the model: "" when it took
        # them, else its complaint
        self._taken_shapes: dict[tuple, str] = {}

    def __copy__(self) -> TorchAdapter:
        """A shallow copy (e.g. over a copied model) whose calls are its own: no scope is shared."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone._scope = threading.local()
        return clone

    @contextlib.contextmanager
    def call_scope(self) -> Iterator[None]:
        """One ``explain()`` call: the model's modules and parameters are listed once, and the
        parameters stay frozen and the modules in eval mode for the whole call (not set and put
        back around every batch); all of it is put back when the call ends."""
        if self._listed is not None:  # nested: the outer scope holds
            yield
            return
        modules, params = self._walk()
        with self._held(modules, params):
            self._scope.listed = (modules, params)
            try:
                yield
            finally:
                self._scope.listed = None

    @property
    def _listed(self) -> tuple[list, list] | None:
        return getattr(self._scope, "listed", None)

    def _walk(self) -> tuple[list, list]:
        if not isinstance(self.model, nn.Module):
            return [], []
        return list(self.model.modules()), list(self.model.parameters())

    # -- conversion ------------------------------------------------------------------------
    def to_canonical(self, x: Any, layout: str | None = None) -> tuple[np.ndarray, InputInfo]:
        on_device = torch.is_tensor(x) and self.keep_on_device and x.device == self.device
        if torch.is_tensor(x) and x.is_complex():  # refused as numpy and device inputs are
            check_kind("c", x.dtype, x.numel(), x.shape)
        if torch.is_tensor(x) and x.layout != torch.strided:  # sparse, mkldnn: no numpy view, no device path
            raise InputError(f"The input is a {str(x.layout).replace('torch.', '')} tensor; salplug needs a dense "
                             f"one: pass x.to_dense().")
        # float64 stays float64 up to the checks, which tell values beyond float32's range from inf
        arr = x if on_device else (x.detach().to("cpu", torch.float64 if x.dtype == torch.float64 else torch.float32)
                                   .numpy() if torch.is_tensor(x) else read_array(x))
        # the shape checks read the first registered convolution (usually the first the model
        # runs); when they refuse an input whose layout the caller named, the model decides. A
        # parameter (a baseline) is checked against the input by Context.as_canonical instead.
        checks = self.in_channels is not None and not CONVERTING_PARAMETER.get()
        refused, named = None, layout is not None
        if checks:
            try:
                check_image_rank(arr, "(C, H, W) / (H, W, C) or a batch (N, C, H, W) / (N, H, W, C)")
            except InputError as exc:
                if not named:
                    raise _name_the_layout(exc) from None
                refused = exc
        if layout is None and self.signals and arr.ndim >= 2:
            layout = "N..."
        layout = layout or default_layout(arr.ndim, torch.is_tensor(x))
        if on_device:  # checked and made canonical where it lies: only the result crosses to the host
            canonical, info = self._device_canonical(x, layout)
        else:
            kind, device = ("torch", x.device) if torch.is_tensor(x) else ("numpy", None)
            canonical, info = numpy_to_canonical(arr, layout, kind=kind, device=device)
        if checks and refused is None:
            try:
                check_channels(canonical, self.in_channels, info, tuple(arr.shape))
            except InputError as exc:
                refused = exc
        if refused is not None and not named:
            raise _name_the_layout(refused) from None
        if refused is not None:
            self._model_takes(canonical, refused)
        return canonical, info

    def _model_takes(self, canonical: np.ndarray, refused: InputError) -> None:
        """Whether the model takes inputs of this shape the shape checks refused: one row is run
        (no gradients, in eval mode, as outputs() runs it) once per shape; the refusal stands,
        before any other model call, unless the model takes it."""
        key = tuple(canonical.shape[1:])
        verdict = self._taken_shapes.get(key)
        if verdict is None:
            try:
                modules, params = self._walk()
                with hold_model(modules, params, eval_mode=True):
                    self.outputs(canonical[:1])
                verdict = ""
            except Exception as exc:  # noqa: BLE001 - the model's own complaint, kept
                verdict = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            self._taken_shapes[key] = verdict
        if verdict:
            raise InputError(f"{refused} The model fails on it too: {verdict}")

    def _device_canonical(self, x: torch.Tensor, layout: str) -> tuple[np.ndarray, InputInfo]:
        """``numpy_to_canonical`` for a tensor on the adapter's device: the checks and the layout
        change run there; ``info.device_values`` keeps the canonical copy on the device (salplug's
        own: a model that writes into its input must not reach the caller's tensor)."""
        check_layout(layout, x.ndim)
        kind = "c" if x.is_complex() else ("b" if x.dtype == torch.bool else "f")
        check_kind(kind, x.dtype, x.numel(), x.shape)
        _, batched, perm = LAYOUTS[layout]
        t = x.detach().to(torch.float32, copy=True)
        finite = torch.isfinite(t)
        t = t.permute(perm) if perm is not None else t
        t = t if batched else t[None]
        if t.ndim == 4:  # NHWC in shape, the model's memory format in memory: batches go in without a copy
            t = t.permute(0, 3, 1, 2).contiguous(memory_format=self.memory_format).permute(0, 2, 3, 1)
        host = self._copy_to_host(t.contiguous())  # queued before the check, which waits for both
        if not bool(finite.all()):
            check_values(x.detach().to("cpu", torch.float64).numpy())  # values beyond float32's range, said so
            raise nonfinite_error(int((~finite).sum()))
        info = InputInfo(layout=layout, batched=batched, kind="torch", device=x.device)
        info.device_values, info.device_of = t, host.numpy()
        return info.device_of, info

    @staticmethod
    def _copy_to_host(t: torch.Tensor) -> torch.Tensor:
        """A host copy of ``t``; from a GPU, queued into pinned memory (read it after a sync)."""
        if t.device.type != "cuda":
            return t.to("cpu", copy=True)
        host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        return host.copy_(t, non_blocking=True)

    def from_canonical(self, values: Any, info: InputInfo) -> Any:
        if torch.is_tensor(values):  # a device array: back to the caller's layout where it is
            _, batched, perm = LAYOUTS[info.layout]
            out = values if batched else values[0]
            if perm is not None and out.ndim == len(perm):
                out = out.permute(tuple(int(i) for i in np.argsort(perm)))
            out = out.to(torch.float32)
            if info.kind != "torch":
                return self.to_host(out.contiguous())
            out = out.to(info.device).contiguous()
            # the caller's own tensor: never a view of ``values`` (read later for ``canonical``)
            return out.clone() if out.untyped_storage().data_ptr() == values.untyped_storage().data_ptr() else out
        out = canonical_to_layout(values, info)
        if info.kind == "torch":
            return torch.from_numpy(out).to(info.device)
        return out

    # -- device arrays (see ``device_arrays``): canonical layout, on self.device -------------
    def to_device(self, arr: np.ndarray) -> torch.Tensor:
        arr = np.ascontiguousarray(arr) if arr.flags.writeable else np.array(arr)  # torch needs writable memory
        # non_blocking: from pageable memory the driver stages the bytes before returning, so the
        # array may go at once, and the host does not wait for the GPU's queue (a blocking copy would)
        return torch.from_numpy(arr).to(self.device, non_blocking=True)

    @staticmethod
    def to_host(t: torch.Tensor) -> np.ndarray:
        t = t.detach()
        return t.to("cpu").numpy() if t.device.type != "cpu" else t.numpy().copy()  # never an alias

    @staticmethod
    def dtype_kind(t: torch.Tensor) -> str:
        """numpy's dtype kind ("f", "c", "b", "i", "u") of a device array."""
        if t.dtype == torch.bool:
            return "b"
        return "c" if t.is_complex() else ("f" if t.is_floating_point() else ("u" if t.dtype == torch.uint8 else "i"))

    @staticmethod
    def astype(t: torch.Tensor, dtype: Any) -> torch.Tensor:
        """A device array in numpy ``dtype`` (e.g. np.float32)."""
        return t.to(_torch_dtype(dtype))

    def zeros(self, shape: tuple[int, ...], dtype: Any) -> torch.Tensor:
        return torch.zeros(shape, dtype=_torch_dtype(dtype), device=self.device)

    @staticmethod
    def all_finite(t: torch.Tensor) -> bool:
        return bool(torch.isfinite(t).all())

    @staticmethod
    def concat(parts: list) -> torch.Tensor:
        return torch.cat(parts)

    def standard_normal(self, shape: tuple[int, ...], seed: int) -> torch.Tensor:
        """N(0, 1) float32 draws on the device from a generator seeded with ``seed``."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed)
        return torch.randn(shape, generator=generator, device=self.device, dtype=torch.float32)

    def _tensor(self, x: Any) -> torch.Tensor:
        if torch.is_tensor(x):  # a device array; detached, so the caller's tensor is never touched
            t = x.detach().to(self.device, self.dtype)
        else:
            t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device, self.dtype)
        if t.ndim != 4:
            return t
        # NHWC rows as NCHW: a view in channels-last memory, or a plain NCHW copy (see memory_format)
        return t.permute(0, 3, 1, 2).contiguous(memory_format=self.memory_format)

    @staticmethod
    def _numpy(t: torch.Tensor, like: Any = None) -> Any:
        """Model-side ``t`` as canonical numpy float32, or as a device array when ``like`` is one."""
        if t.ndim == 4:
            t = t.permute(0, 2, 3, 1)
        if torch.is_tensor(like):
            return t.detach().to(torch.float32)
        return t.detach().to("cpu", torch.float32).numpy()

    # -- model calls -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _frozen(self) -> Iterator[None]:
        """Parameters stop requiring grad for the call, so no .grad ever accumulates (inside
        ``call_scope`` they already have)."""
        with torch.enable_grad(), (contextlib.nullcontext() if self._listed is not None
                                   else self._held(*self._walk())):
            yield

    @contextlib.contextmanager
    def _evaluating(self) -> Iterator[None]:
        """The model in eval mode for the call (see ``eval_mode``); each module's mode comes back."""
        with (contextlib.nullcontext() if self._listed is not None else self._held(*self._walk())):
            yield

    def _held(self, modules: list, params: list) -> contextlib.AbstractContextManager:
        return hold_model(modules, params, self.eval_mode)

    def _logits(self, t: torch.Tensor) -> torch.Tensor:
        out = self.select(self.model(t))
        if not torch.is_tensor(out):
            raise ModelOutputError(f"The selected model output is {type(out).__name__}, not a tensor.")
        if out.ndim == 2 and self.num_outputs_guess is not None:  # the real class count replaces the guess
            self._num_classes, self.num_outputs_guess = int(out.shape[1]), None
        return out

    def _refused_channels_last(self, exc: RuntimeError, tried: torch.memory_format) -> bool:
        """True when ``exc`` is a ``.view`` refusing the channels-last memory "auto" chose."""
        return (self.auto_memory_format and tried == torch.channels_last
                and "view size is not compatible" in str(exc))

    def _again_in_plain_layout(self, fn: Callable[..., Any], x: Any, targets: Targets, *args: Any) -> Any:
        """A model that flattens with ``.view`` (``x.view(n, -1)`` after its convolutions) refuses
        channels-last memory: run the primitive again in plain NCHW and, when that works, keep
        it for this model. (The refused pass stopped inside the model's forward; a model run in
        train mode with ``eval_mode=False`` updated its BatchNorm statistics in it once more.)"""
        self.memory_format = torch.contiguous_format
        try:
            out = self._pieces(fn, x, targets, *args)
        except Exception:
            self.memory_format = torch.channels_last  # not the layout: the model's own error
            raise
        try:
            _REFUSES_CHANNELS_LAST[self.model] = True
        except TypeError:  # a model that cannot be weakly referenced: this adapter remembers
            pass
        return out

    def _select(self, out: torch.Tensor, targets: Targets) -> torch.Tensor:
        m = out.shape[0]
        if targets.fn is not None:
            s = targets.fn(out)
            if not torch.is_tensor(s) or s.reshape(-1).shape[0] != m:
                raise TargetError(
                    f"The target callable must return one scalar per sample (a tensor of {m} "
                    f"values); it returned {getattr(s, 'shape', type(s).__name__)}."
                )
            return s.reshape(m)
        if targets.pending_top1:  # top-1 chosen in this very pass
            n = targets.rows
            if out.shape[0] != n:
                raise TargetError(f"The model returned {out.shape[0]} rows (output shape {tuple(out.shape)}) for "
                                  f"{n} inputs; top-1 targets need one row of class scores per input. Make the "
                                  f"model return (N, classes) logits, or pass a target callable.")
            if out.numel() == n:  # one score per row: nothing to choose
                return out.reshape(n)
            if out.ndim != 2:
                raise TargetError(
                    f"Top-1 targets need (N, classes) logits, but the model output has shape "
                    f"{tuple(out.shape)} for {n} inputs. Pass a target callable that reduces it to one "
                    f"value per sample."
                )
            chosen = out.detach().to(torch.float32).argmax(1)  # as a separate pass would: on float32 outputs
            targets.record(chosen.cpu().numpy())
            return out.gather(1, chosen.view(-1, 1)).view(m)
        if targets.indices is None:
            if out.numel() == m:
                return out.reshape(m)
            raise TargetError(f"The model output has shape {tuple(out.shape)}; give a target class.")
        if out.ndim != 2:
            raise class_target_error(tuple(out.shape[1:]))
        k = out.shape[1]
        idx = targets.indices
        if len(idx) != m:
            raise TargetError(f"The model returned {m} rows (output shape {tuple(out.shape)}) for {len(idx)} "
                              f"inputs; class targets need one row of class scores per input. Make the model "
                              f"return (N, classes) logits, or pass a target callable.")
        low, high = int(idx.min()), int(idx.max())
        if low < 0 or high >= k:
            raise TargetError(f"target {high if high >= k else low} is out of "
                              f"range: the model has {k} output classes (0..{k - 1}).")
        if low == high:  # one class for every row (one image, or one target): a column, no index to send
            return out[:, low]
        index = torch.from_numpy(np.ascontiguousarray(idx)).to(out.device, non_blocking=True)  # see to_device
        return out.gather(1, index.view(-1, 1)).view(m)

    def num_outputs(self) -> int | None:
        return self._num_classes

    # -- batching: memory-sized batches, out-of-memory retries ------------------------------
    def batch_size_for(self, x: np.ndarray) -> int:
        """Rows per model call for inputs like ``x`` (canonical) when the caller gives none.

        CPU: about :data:`CPU_BATCH_VALUES` input values per call (8 images of 224 x 224 x 3;
        more rows for small inputs, where per-call overhead dominates, up to :data:`CPU_MAX_ROWS`). CUDA: a one-off probe
        measures the memory of a two-row gradient pass, and the batch takes
        :data:`CUDA_MEMORY_FRACTION` of the free memory. Cached per input shape (on CUDA, per
        model too, for every adapter of it).
        """
        key = tuple(x.shape[1:])
        if key not in self._auto_rows:
            if self.device.type == "cuda" and len(x):
                rows = self._probed_rows(x)
            elif self.device.type == "cpu":
                rows = rows_for_values(x, CPU_BATCH_VALUES, CPU_MAX_ROWS)
            else:
                rows = self.default_batch_size
            self._auto_rows[key] = rows
        rows = self._auto_rows[key]
        return min(rows, self.max_rows) if self.max_rows else rows

    def _probed_rows(self, x: np.ndarray) -> int:
        """The CUDA probe's rows for inputs like ``x``, shared by every adapter of this model."""
        key = (tuple(x.shape[1:]), str(self.device), self.dtype)
        try:
            seen = _PROBED_ROWS.setdefault(self.model, {})
        except TypeError:  # a model that cannot be weakly referenced: probe per adapter
            seen = {}
        if key not in seen:
            seen[key] = int(min(max(self._cuda_rows(x), 1), MAX_AUTO_ROWS))
        return seen[key]

    def _cuda_rows(self, x: np.ndarray) -> int:
        probe = np.repeat(x[:1], 2, axis=0)
        everything = Targets(fn=lambda out: out.reshape(out.shape[0], -1).sum(1))
        torch.cuda.synchronize(self.device)
        before = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        try:
            with self._evaluating():
                self._input_gradients(probe, everything)
        except Exception as exc:  # noqa: BLE001 - the probe is a hint, never a failure
            if not is_out_of_memory(exc):
                return self.default_batch_size
            return 1
        per_row = max(1, (torch.cuda.max_memory_allocated(self.device) - before) // 2)
        free, _ = torch.cuda.mem_get_info(self.device)
        free += torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        return int(CUDA_MEMORY_FRACTION * free // per_row)

    def _release(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _in_pieces(self, fn: Callable[..., Any], x: np.ndarray, targets: Targets, *args: Any) -> Any:
        """``fn(x, targets, *args)`` in pieces of at most ``max_rows`` rows, halving the piece
        (and remembering it) after an out-of-memory error; pieces are joined along rows."""
        with self._evaluating():
            if self.auto_memory_format and _known_to_refuse_channels_last(self.model):
                self.memory_format = torch.contiguous_format  # learned by an earlier adapter of this model
            tried = self.memory_format
            try:
                return self._pieces(fn, x, targets, *args)
            except RuntimeError as exc:
                if not self._refused_channels_last(exc, tried):
                    raise
            return self._again_in_plain_layout(fn, x, targets, *args)

    def _pieces(self, fn: Callable[..., Any], x: np.ndarray, targets: Targets, *args: Any) -> Any:
        n = len(x)
        size = min(n, self.max_rows or n) or 1
        if size >= n:
            try:
                return fn(x, targets, *args)
            except Exception as exc:  # noqa: BLE001
                if not is_out_of_memory(exc) or n <= 1:
                    raise
            # the failed attempt's tensors are freed once its traceback is gone: retry out here
            size = self._shrink(n)
        pieces, start = [], 0
        while start < n:
            stop = min(start + size, n)
            try:
                pieces.append(fn(x[start:stop], targets.take(slice(start, stop)), *args))
            except Exception as exc:  # noqa: BLE001
                if not is_out_of_memory(exc) or stop - start <= 1:
                    raise
                failed = stop - start
            else:
                start = stop
                continue
            size = self._shrink(failed)
        first = pieces[0][0] if isinstance(pieces[0], tuple) else pieces[0]
        join = torch.cat if torch.is_tensor(first) else np.concatenate
        if isinstance(pieces[0], tuple):
            return tuple(join(parts) for parts in zip(*pieces))
        return join(pieces)

    def _shrink(self, failed: int) -> int:
        self._release()
        size = max(1, failed // 2)
        if self.max_rows is None or size < self.max_rows:
            warnings.warn(f"Out of memory with {failed} rows per model call on {self.device}; using {size} "
                          f"from now on (pass a smaller batch_size to start there).", RuntimeWarning, stacklevel=4)
            self.max_rows = size
        return size

    # -- primitives -------------------------------------------------------------------------
    def outputs(self, x: np.ndarray) -> np.ndarray:
        return self._in_pieces(lambda rows, _targets: self._outputs(rows), x, Targets.none())

    def _outputs(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():  # a clone: a model that writes into its input must not change salplug's copy
            out = self._logits(self._tensor(x).clone())
        return out.detach().to("cpu", torch.float32).numpy().reshape(len(x), -1)

    def scores(self, x: np.ndarray, targets: Targets) -> np.ndarray:
        return self._in_pieces(self._scores, x, targets)

    def _scores(self, x: np.ndarray, targets: Targets) -> np.ndarray:
        with torch.no_grad():  # a clone, as in _outputs
            s = self._select(self._logits(self._tensor(x).clone()), targets)
            return s.to("cpu", torch.float64 if s.dtype == torch.float64 else torch.float32).numpy()

    def input_gradients(self, x: np.ndarray, targets: Targets) -> np.ndarray:
        _check_grad_possible()
        return self._in_pieces(self._input_gradients, x, targets)

    def _input_gradients(self, x: np.ndarray, targets: Targets) -> np.ndarray:
        with self._frozen():
            t = self._tensor(x).requires_grad_(True)
            s = self._select(self._logits(t), targets)
            if not s.requires_grad:
                raise ModelOutputError(
                    "The explained output does not depend on the input through autograd: the model (or a "
                    "target callable) detaches it or computes it without gradients.")
            (grad,) = torch.autograd.grad(s.sum(), t)
        return self._numpy(grad, like=x)

    def guided_input_gradients(self, x: np.ndarray, targets: Targets) -> np.ndarray:
        from .torch_guided import guided_relu_gradients

        _check_grad_possible()
        with guided_relu_gradients(self.model):
            return self._in_pieces(self._input_gradients, x, targets)

    # -- layers ----------------------------------------------------------------------------
    def _module(self, layer: Any) -> nn.Module:
        if not isinstance(self.model, nn.Module):
            raise LayerError("Layer methods need an nn.Module model (got a plain callable).")
        if isinstance(self.model, torch.jit.ScriptModule):  # traced too: hooks inside it never fire
            name = repr(layer) if isinstance(layer, str) else type(layer).__name__
            raise LayerError(f"Layer {name} cannot be hooked in a {type(self.model).__name__} (torch.jit.trace "
                             f"or torch.jit.script); layer methods need the Python nn.Module, not a TorchScript one.")
        if isinstance(layer, nn.Module):
            if any(m is layer for m in self.model.modules()):
                return layer
            raise LayerError(f"The layer module {type(layer).__name__} is not part of the model.")
        if not isinstance(layer, str) or not layer:
            raise LayerError(f"A layer is a module path like 'layer4.1' or an nn.Module, got {layer!r}.")
        try:
            return self.model.get_submodule(layer)
        except RuntimeError as exc:  # a TorchScript model
            raise LayerError(f"Layer {layer!r} cannot be looked up in this model ({exc}); layer methods need "
                             f"the Python nn.Module, not a TorchScript one.") from None
        except AttributeError:
            names = [n for n, _ in self.model.named_modules() if n]
            raise LayerError(
                f"The model has no layer {layer!r}.{did_you_mean(layer, names)} Layers: "
                f"{', '.join(names[:40])}{' ...' if len(names) > 40 else ''}."
            ) from None

    def check_layer(self, layer: Any) -> None:
        self._module(layer)

    def layer_values_and_gradients(self, x: np.ndarray, targets: Targets, layer: Any) -> tuple[np.ndarray, np.ndarray]:
        _check_grad_possible()
        module = self._module(layer)
        return self._in_pieces(self._layer_values_and_gradients, x, targets, module, layer)

    def _layer_values_and_gradients(self, x: np.ndarray, targets: Targets, module: nn.Module,
                                    layer: Any) -> tuple[np.ndarray, np.ndarray]:
        captured: list[torch.Tensor] = []
        caller = threading.get_ident()

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            if threading.get_ident() != caller:  # another thread's pass through a shared model
                return None
            first = output[0] if isinstance(output, (tuple, list)) and output else output
            if not isinstance(first, torch.Tensor) or not first.is_floating_point():
                raise LayerError(f"Layer {layer!r} returns {type(output).__name__}; Grad-CAM needs a layer whose "
                                 f"output is a float tensor (or a tuple or list that starts with one).")
            leaf = first.detach().requires_grad_(True)
            captured.append(leaf)
            replaced = leaf.clone()  # a non-leaf copy, so later in-place ops are allowed
            if isinstance(output, tuple) and hasattr(output, "_fields"):  # a namedtuple
                return type(output)(replaced, *output[1:])
            if isinstance(output, (tuple, list)):
                return type(output)([replaced, *output[1:]])
            return replaced

        handle = module.register_forward_hook(hook)
        try:
            with self._frozen():
                s = self._select(self._logits(self._tensor(x).clone()), targets)  # clone: see _outputs
                if not captured and isinstance(module, torch.jit.ScriptModule):  # inside traced/scripted code
                    raise LayerError(f"Layer {layer!r} is TorchScript code (torch.jit.trace or torch.jit.script), "
                                     f"where hooks never run; layer methods need the Python nn.Module.")
                if len(captured) != 1:
                    raise LayerError(f"Layer {layer!r} ran {len(captured)} times in one forward pass; "
                                     f"choose a layer that runs exactly once.")
                if not s.requires_grad:  # nothing after the layer reaches the explained output
                    raise LayerError(f"The explained output does not depend on layer {layer!r}.")
                (grad,) = torch.autograd.grad(s.sum(), captured[0], allow_unused=True)
        finally:
            handle.remove()
        if grad is None:
            raise LayerError(f"The explained output does not depend on layer {layer!r}.")
        return self._numpy(captured[0], like=x), self._numpy(grad, like=x)
