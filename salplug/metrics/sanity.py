"""Model-parameter randomisation sanity check (Adebayo et al., NeurIPS 2018).

A saliency map that explains the model must change when the model's learned parameters are
destroyed. *Cascading* randomisation re-initialises the layers one group at a time from the
output end (logits first) down to the input, recomputing the map after each step; the Spearman
rank correlation between the original and the randomised map (on absolute values by default,
as in the paper) should fall towards 0. *Independent* randomisation re-initialises one group at
a time, the others kept trained. Gradients and Grad-CAM pass (their maps decorrelate); guided
backprop is the paper's known failure (its maps stay close to the original, an edge detector
of the input).

Layers: the model's modules with parameters, in the order a forward pass runs them, grouped
by their parent (``layers="blocks"``: ``_blocks.15._project_conv`` belongs to ``_blocks.15``),
one group per module (``"leaves"``), or an explicit list of module paths from the output end.
Re-initialisation puts a layer back in its state before training: convolution and dense layers
get their framework's initialiser (PyTorch's ``reset_parameters``; Glorot-uniform kernels and
zero biases for Keras), normalisation layers scale 1, shift 0, running mean 0 and variance 1
(with the trained running statistics kept under random weights, the demo model's Grad-CAM map
stopped changing after a few blocks); every draw is seeded. Frozen layers (Keras
``trainable=False``, torch ``requires_grad=False``, as in a fine-tuned backbone) are randomised
too: the check is about the weights, not about what training may change. Layer objects among
the method's parameters (Grad-CAM's ``layer``) are mapped onto the copy's layers.
Backends: torch (the model is copied with ``copy.deepcopy``) and tf2 (Keras models are cloned
with ``keras.models.clone_model``). The caller's model is never modified.
"""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import CapabilityError, ParameterError
from ..types import Context
from .base import REDUCTIONS, Curve, Metric, MetricContext, MetricResult, check_choice, saliency_2d

MODES = ("cascading", "independent")


def _parent(path: str) -> str:
    parts = re.split(r"[./]", path)
    return path if len(parts) == 1 else path[: len(path) - len(parts[-1]) - 1]


def group_layers(leaves: list[str], layers: Any) -> list[tuple[str, list[str]]]:
    """Groups (name, leaf paths) from the output end; ``leaves`` are in forward order."""
    if layers == "leaves":
        groups = [(leaf, [leaf]) for leaf in leaves]
    elif layers == "blocks":
        groups: list[tuple[str, list[str]]] = []
        index: dict[str, int] = {}
        for leaf in leaves:
            key = _parent(leaf)
            if key not in index:
                index[key] = len(groups)
                groups.append((key, []))
            groups[index[key]][1].append(leaf)
    else:
        out = []
        for name in layers:
            members = [leaf for leaf in leaves if leaf == name or leaf.startswith(name + ".")
                       or leaf.startswith(name + "/")]
            if not members:
                raise ParameterError(f"layers: {name!r} holds no layer with parameters. Layers with parameters: "
                                     f"{', '.join(leaves[:30])}{' ...' if len(leaves) > 30 else ''}.")
            out.append((name, members))
        return out
    return groups[::-1]


# ---------------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------------

class _TorchModel:
    """A deep copy of a torch adapter's model that can be randomised layer by layer."""

    def __init__(self, adapter: Any, x_input: np.ndarray):
        import torch
        from torch import nn

        if not isinstance(adapter.model, nn.Module):
            raise CapabilityError("The sanity check randomises an nn.Module's parameters; this torch model is a "
                                  "plain callable.")
        self.torch = torch
        self.model = copy.deepcopy(adapter.model)
        self.adapter = copy.copy(adapter)
        self.adapter.model = self.model
        modules = dict(self.model.named_modules())
        with_params = {name for name, m in modules.items()
                       if name and any(True for _ in m.parameters(recurse=False))}
        order: list[str] = []
        hooks = [modules[name].register_forward_hook(lambda _m, _i, _o, name=name: order.append(name))
                 for name in with_params]
        try:
            self.adapter.outputs(x_input[:1])
        finally:
            for h in hooks:
                h.remove()
        seen = dict.fromkeys(order)  # first call order
        self.leaves = list(seen) + sorted(with_params - set(seen))  # unused modules last
        self.modules = modules
        self.original = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self._by_id = {id(m): name for name, m in adapter.model.named_modules()}

    def translate(self, params: dict[str, Any]) -> dict[str, Any]:
        """Method parameters with modules of the original model replaced by the copy's."""
        return _translate(params, {key: self.modules[name] for key, name in self._by_id.items()})

    def randomize(self, names: list[str], seed: int) -> None:
        torch = self.torch
        # only the generators the parameters are drawn from are forked and seeded (torch.manual_seed
        # would reseed every CUDA device, and start CUDA for a CPU model)
        cuda = sorted({p.device.index or 0 for p in self.model.parameters() if p.device.type == "cuda"})
        with torch.no_grad(), torch.random.fork_rng(devices=cuda):
            torch.random.default_generator.manual_seed(seed)
            for index in cuda:
                torch.cuda.default_generators[index].manual_seed(seed)
            for name in names:
                m = self.modules[name]
                if hasattr(m, "reset_parameters"):  # normalisation layers: running statistics too
                    m.reset_parameters()
                else:
                    for p in m.parameters(recurse=False):
                        p.copy_(torch.randn_like(p) * (p.std() if p.numel() > 1 else 1.0))

    def restore(self) -> None:
        self.model.load_state_dict(self.original)


class _KerasModel:
    """A clone of a tf2 adapter's Keras model that can be randomised layer by layer."""

    def __init__(self, adapter: Any, x_input: np.ndarray):
        from ..backends.tf2 import _children, is_keras_layer, keras_layers

        model = adapter.model
        if not is_keras_layer(model):
            raise CapabilityError("The sanity check randomises a Keras model's weights; this tf2 model is not a "
                                  "Keras model.")
        keras = sys.modules.get("keras") if type(model).__module__.split(".")[0] != "tf_keras" else sys.modules["tf_keras"]
        try:
            clone = keras.models.clone_model(model)
        except Exception as exc:  # noqa: BLE001 - subclassed models cannot be cloned
            raise CapabilityError(f"The sanity check clones the Keras model and could not: {exc}. Use a functional "
                                  f"or Sequential model.") from exc
        clone.set_weights(model.get_weights())
        self.model = clone
        self.adapter = type(adapter)(clone, output=adapter.output, num_classes=adapter.num_outputs())
        self.layers = {path: layer for path, layer in keras_layers(clone) if not _children(layer) and layer.weights}
        self.leaves = list(self.layers)
        self.original = clone.get_weights()
        cloned = dict(keras_layers(clone))  # the clone keeps the original's layer names, so its paths
        self._by_id = {id(layer): cloned[path] for path, layer in keras_layers(model) if path in cloned}

    def translate(self, params: dict[str, Any]) -> dict[str, Any]:
        """Method parameters with layers of the original model replaced by the clone's."""
        return _translate(params, self._by_id)

    def randomize(self, names: list[str], seed: int) -> None:
        rng = np.random.default_rng(seed)
        for name in names:
            layer = self.layers[name]
            norm = "Normalization" in type(layer).__name__
            for v in layer.weights:
                short = (getattr(v, "path", None) or v.name).split("/")[-1].split(":")[0]
                shape = tuple(v.shape)
                if norm:  # the initial state: scale 1, shift 0, moving mean 0, moving variance 1
                    if short in ("gamma", "scale", "moving_variance"):
                        v.assign(np.ones(shape, np.float32))
                    elif short in ("beta", "offset", "moving_mean"):
                        v.assign(np.zeros(shape, np.float32))
                    continue
                if "float" not in str(getattr(v.dtype, "name", v.dtype)):
                    continue  # integer state (counters), not a weight; frozen (trainable=False) weights are randomised
                if len(shape) >= 2:
                    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
                    fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
                    limit = np.sqrt(6.0 / (fan_in + fan_out))
                    v.assign(rng.uniform(-limit, limit, shape).astype(np.float32))
                else:
                    v.assign(np.zeros(shape, np.float32))

    def restore(self) -> None:
        self.model.set_weights(self.original)


def _translate(params: dict[str, Any], by_id: dict[int, Any]) -> dict[str, Any]:
    """``params`` with objects found in ``by_id`` (by identity, also inside lists) replaced."""
    def swap(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [swap(a) for a in v] if isinstance(v, list) else tuple(swap(a) for a in v)
        return by_id.get(id(v), v) if not isinstance(v, (str, int, float)) else v

    return {k: swap(v) for k, v in params.items()}


def randomizable(adapter: Any, x_input: np.ndarray) -> _TorchModel | _KerasModel:
    """A randomisable copy of the adapter's model (torch or tf2 backends)."""
    module = type(adapter).__module__
    if module.endswith("backends.torch"):
        return _TorchModel(adapter, x_input)
    if module.endswith("backends.tf2"):
        return _KerasModel(adapter, x_input)
    raise CapabilityError(f"The model-randomisation sanity check runs on the torch and tf2 backends; this "
                          f"model runs on {getattr(adapter, 'name', module)!r}.")


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation per row of two (N, P) arrays (0 where a row is constant)."""
    from scipy.stats import spearmanr

    out = np.zeros(len(a))
    for i in range(len(a)):
        if np.ptp(a[i]) == 0 or np.ptp(b[i]) == 0:
            continue  # no ranking to share
        out[i] = spearmanr(a[i], b[i]).statistic
    return out


class ModelRandomization(Metric):
    """Cascading (or independent) model-parameter randomisation; lower correlation is better.

    Parameters
    ----------
    layers : "blocks", "leaves" or a list of module paths (each a group, from the output end).
    mode : "cascading" (the paper's main test) or "independent".
    absolute : rank the absolute values of the (reduced) maps, as in the paper.
    reduce : maps with channels to one value per pixel ("abs", "sum", "max", "none").
    max_steps : randomise at most this many groups (None: all).

    Seeds: step ``k`` (1 = the group nearest the output; in both modes) draws from
    ``seed * 1009 + k``, ``seed`` being the evaluation's seed. On torch the step's modules are
    re-initialised in order after ``torch.manual_seed(seed * 1009 + k)``, inside
    ``torch.random.fork_rng`` (the caller's global generator is left as it was); on Keras the
    Glorot-uniform kernels come from ``numpy.random.default_rng(seed * 1009 + k)``.

    Scores (lower is better): ``randomization_corr``, the Spearman correlation averaged over
    the randomisation steps (the area under the per-layer curve: a map that ignores the top
    layers, like guided backprop, scores high even if it decorrelates at the very end), and
    ``randomization_corr_last``, the correlation after the last step (every group randomised,
    in cascading mode). The curve ``rank_corr_per_layer`` starts at "original" (1.0).
    """

    requires = frozenset()
    needs_method = True

    def check(self, ctx: MetricContext, x, targets, *, layers: Any = "blocks", mode: str = "cascading",
              absolute: bool = True, reduce: str = "abs", max_steps: int | None = None) -> None:
        if isinstance(layers, str):
            check_choice(layers, ("blocks", "leaves"), "layers")
        elif not (isinstance(layers, (list, tuple)) and layers and all(isinstance(s, str) for s in layers)):
            raise ParameterError(f"layers must be 'blocks', 'leaves' or a list of module paths; got {layers!r}.")
        check_choice(mode, MODES, "mode")
        if not isinstance(absolute, (bool, np.bool_)):
            raise ParameterError(f"absolute must be True or False; got {absolute!r}.")
        check_choice(reduce, REDUCTIONS, "reduce")
        if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
            raise ParameterError(f"max_steps must be None or an int >= 1; got {max_steps!r}.")
        if ctx.method_name is None:
            raise ParameterError("The randomisation sanity check recomputes the maps: it needs the method's name "
                                 "(run it through salplug.evaluate).")
        module = type(ctx.adapter).__module__
        if not (module.endswith("backends.torch") or module.endswith("backends.tf2")):
            raise CapabilityError(f"The model-randomisation sanity check runs on the torch and tf2 backends; this "
                                  f"model runs on {getattr(ctx.adapter, 'name', module)!r}.")

    def evaluate(self, ctx: MetricContext, x, targets, attributions, *, layers: Any = "blocks",
                 mode: str = "cascading", absolute: bool = True, reduce: str = "abs",
                 max_steps: int | None = None) -> MetricResult:
        from ..api import run_method

        x = np.asarray(x, np.float32)
        n = len(x)
        x_input = ctx.model_input(x)
        prepare: Callable[[np.ndarray], np.ndarray] = (lambda m: np.abs(m)) if absolute else (lambda m: m)
        original = prepare(saliency_2d(attributions, x, reduce)).reshape(n, -1)
        copy_ = randomizable(ctx.adapter, x_input)
        groups = group_layers(copy_.leaves, layers)
        if max_steps is not None:
            groups = groups[:max_steps]
        inner = Context(copy_.adapter, ctx.host, ctx.batch_size, False, ctx.input_info)
        params = copy_.translate(dict(ctx.method_params))
        corr = np.ones((n, len(groups) + 1))
        steps = enumerate(groups, start=1)
        if ctx.progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, total=len(groups), desc=f"randomising ({ctx.method_name})", unit="layer", leave=False)
        for k, (_name, members) in steps:
            if mode == "independent":
                copy_.restore()
            copy_.randomize(members, seed=int(ctx.seed) * 1009 + k)
            out = run_method(inner, ctx.method_name, x_input, targets, params, checked=True)
            randomized = prepare(saliency_2d(out.values, x, reduce)).reshape(n, -1)
            corr[:, k] = spearman(original, randomized)
        ticks = ["original", *[name for name, _ in groups]]
        return MetricResult(
            scores={"randomization_corr": corr[:, 1:].mean(axis=1), "randomization_corr_last": corr[:, -1]},
            higher_is_better={"randomization_corr": False, "randomization_corr_last": False},
            curves={"rank_corr_per_layer": Curve(np.arange(len(groups) + 1, dtype=np.float64), corr,
                                                 f"{mode} randomisation, from the output layer",
                                                 "Spearman rank correlation" + (" (absolute maps)" if absolute else ""),
                                                 ticks)},
            extras={"layers": [(name, members) for name, members in groups], "mode": mode},
        )
