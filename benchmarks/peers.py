"""The contenders salplug is measured against: hand-written torch loops, upstream ``saliency``
(through a call_model_function over the same torch model) and Captum.

The raw loops are what a careful user would write by hand: parameters frozen, one
forward/backward pass per batch, results accumulated on the device. They are the limit.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CL = torch.channels_last


# -- helpers ---------------------------------------------------------------------------------
@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Parameters stop requiring grad for the block (restored afterwards)."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def channels_last_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with channels-last parameters (the user's model stays as it is)."""
    return copy.deepcopy(model).to(memory_format=CL)


def _layout(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return t.contiguous(memory_format=CL) if channels_last else t.contiguous()


def batch_sizes(total: int, candidates=(1, 2, 4, 8, 16, 32)) -> list[int]:
    return sorted({min(b, total) for b in candidates})


# -- raw torch loops -------------------------------------------------------------------------
def raw_ig(model, x: torch.Tensor, target: int, steps: int, batch: int, channels_last: bool = False):
    """IG from a zero baseline, upstream's Riemann rule, ``batch`` path points per pass (x: one image)."""
    alphas = torch.linspace(0, 1, steps, device=x.device)
    total = torch.zeros_like(x)
    with frozen(model):
        for s in range(0, steps, batch):
            pts = _layout(x * alphas[s:s + batch].view(-1, 1, 1, 1), channels_last).requires_grad_(True)
            (g,) = torch.autograd.grad(model(pts)[:, target].sum(), pts)
            total += g.sum(0, keepdim=True)
    return x * total / steps


def raw_smoothgrad(model, x: torch.Tensor, target: int, noise: torch.Tensor, batch: int,
                   channels_last: bool = False):
    """Mean squared gradient over x + noise[k] (x: one image, noise: (K, C, H, W) already scaled)."""
    total = torch.zeros_like(x)
    with frozen(model):
        for s in range(0, len(noise), batch):
            pts = _layout(x + noise[s:s + batch], channels_last).requires_grad_(True)
            (g,) = torch.autograd.grad(model(pts)[:, target].sum(), pts)
            total += (g * g).sum(0, keepdim=True)
    return total / len(noise)


class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, upper):
        ctx.save_for_backward(x)
        ctx.upper = upper
        return x.clamp(0, upper) if upper is not None else x.clamp_min(0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        keep = (x > 0) & (g > 0)
        if ctx.upper is not None:
            keep &= x < ctx.upper
        return g * keep, None


@contextlib.contextmanager
def guided_modules(model: nn.Module) -> Iterator[None]:
    """nn.ReLU / nn.ReLU6 modules run a guided ReLU for the block (forward replaced per instance)."""
    patched = []
    for m in model.modules():
        if isinstance(m, (nn.ReLU, nn.ReLU6)):
            upper = 6.0 if isinstance(m, nn.ReLU6) else None
            m.forward = (lambda u: (lambda t: _GuidedReLU.apply(t, u)))(upper)
            patched.append(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward


def raw_guided_backprop(model, x: torch.Tensor, target: int, batch: int, channels_last: bool = False):
    out = torch.empty_like(x)
    with frozen(model), guided_modules(model):
        for s in range(0, len(x), batch):
            pts = _layout(x[s:s + batch], channels_last).requires_grad_(True)
            (out[s:s + batch],) = torch.autograd.grad(model(pts)[:, target].sum(), pts)
    return out


def raw_grad_cam(model, layer: nn.Module, x: torch.Tensor, target: int, batch: int,
                 channels_last: bool = False):
    """ReLU(sum_k mean(dS/dA_k) A_k), divided by its max, bilinear resize to the input size."""
    maps = []
    captured = []
    handle = layer.register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        with frozen(model):
            for s in range(0, len(x), batch):
                captured.clear()
                pts = _layout(x[s:s + batch], channels_last).requires_grad_(True)  # graph through the layer
                score = model(pts)[:, target].sum()
                (g,) = torch.autograd.grad(score, captured[0])
                cam = F.relu((captured[0].detach() * g.mean((2, 3), keepdim=True)).sum(1, keepdim=True))
                cam = cam / cam.amax((2, 3), keepdim=True).clamp_min(1e-12)
                maps.append(F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False))
    finally:
        handle.remove()
    return torch.cat(maps)


def raw_occlusion(model, x: torch.Tensor, target: int, size: int, batch: int, channels_last: bool = False):
    """Score drop for every stride-1 window of ``size`` (zeros), summed over covered pixels."""
    _, c, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h - size + 1), torch.arange(w - size + 1), indexing="ij")
    starts = torch.stack([ys.reshape(-1), xs.reshape(-1)], 1).to(x.device)
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    with torch.no_grad():
        base = model(_layout(x, channels_last))[:, target]
        diffs = []
        for s in range(0, len(starts), batch):
            st = starts[s:s + batch]
            rows = (ar_h >= st[:, :1]) & (ar_h < st[:, :1] + size)
            cols = (ar_w >= st[:, 1:]) & (ar_w < st[:, 1:] + size)
            keep = ~(rows[:, :, None] & cols[:, None, :])
            pts = _layout(x * keep[:, None].to(x.dtype), channels_last)
            diffs.append(base - model(pts)[:, target])
    d = torch.cat(diffs).view(1, 1, h - size + 1, w - size + 1)
    return F.conv_transpose2d(d, torch.ones(1, 1, size, size, device=x.device))  # sum over windows


# -- upstream saliency -----------------------------------------------------------------------
def upstream_call_model_function(model: nn.Module, target: int, device, layer: nn.Module | None = None):
    """An upstream-style call_model_function over a torch model: NHWC numpy in, numpy out."""
    from saliency.core import base

    def call(x_batch, call_model_args=None, expected_keys=None):
        t = torch.as_tensor(np.asarray(x_batch, np.float32), device=device).permute(0, 3, 1, 2)
        if set(expected_keys) == {base.OUTPUT_LAYER_VALUES}:  # scores only (occlusion): no autograd graph
            with torch.inference_mode():
                return {base.OUTPUT_LAYER_VALUES: model(t)[:, target].cpu().numpy()}
        t.requires_grad_(True)
        captured = []
        handle = layer.register_forward_hook(lambda m, i, o: captured.append(o)) if layer is not None else None
        try:
            score = model(t)[:, target]
        finally:
            if handle is not None:
                handle.remove()
        out = {}
        if base.OUTPUT_LAYER_VALUES in expected_keys:
            out[base.OUTPUT_LAYER_VALUES] = score.detach().cpu().numpy()
        if base.INPUT_OUTPUT_GRADIENTS in expected_keys:
            (g,) = torch.autograd.grad(score.sum(), t)
            out[base.INPUT_OUTPUT_GRADIENTS] = g.permute(0, 2, 3, 1).cpu().numpy()
        if base.CONVOLUTION_LAYER_VALUES in expected_keys:
            (g,) = torch.autograd.grad(score.sum(), captured[0])
            out[base.CONVOLUTION_LAYER_VALUES] = captured[0].detach().permute(0, 2, 3, 1).cpu().numpy()
            out[base.CONVOLUTION_OUTPUT_GRADIENTS] = g.permute(0, 2, 3, 1).cpu().numpy()
        return out

    return call


def upstream_available() -> bool:
    try:
        import saliency.core  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


def captum_available() -> bool:
    try:
        import captum.attr  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


def smoothgrad_sigma(x: np.ndarray, spread: float = 0.15) -> float:
    return float(spread * (x.max() - x.min()))


def noise_for(x: torch.Tensor, n: int, sigma: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn((n,) + tuple(x.shape[1:]), generator=g) * sigma).to(x.device)


def chunks(total: int, size: int) -> int:
    return math.ceil(total / size)
