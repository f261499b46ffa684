"""SmoothGrad (Smilkov et al. 2017) over any registered method, and VarGrad (Adebayo et al. 2018).

Each input gets ``nsamples`` noisy copies x + N(0, sigma^2), sigma = stdev_spread * (max(x) -
min(x)) per sample (or an absolute ``stdev``); the base method's maps are combined by
``mode``: "mean" (SmoothGrad), "squared" (mean of squares: upstream's magnitude=True) or
"vargrad" (variance). Noise whose float32 copies could overflow (|x| + 10 sigma beyond float32's
maximum) is refused before any model call.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..api import load_method, method_parameters, resolve_params
from ..errors import InputError, ParameterError, did_you_mean
from ..hookspecs import hookimpl
from ..types import Method, MethodOutput
from .integrated_gradients import check_steps
from ._rows import add_by_sample, batch_index, sample_and_step

MODES = ("mean", "squared", "vargrad")
NOISE = ("auto", "host")


def make_rng(seed):
    """A numpy Generator (or the given RandomState) from an int >= 0, None or a generator."""
    if isinstance(seed, (np.random.Generator, np.random.RandomState)):
        return seed
    if seed is None or isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        if seed is not None and seed < 0:
            raise ParameterError(f"seed must be an int >= 0 (numpy seeds are non-negative); got {seed!r}.")
        return np.random.default_rng(seed)
    raise ParameterError(f"seed must be an int, None or a numpy Generator/RandomState; got {seed!r}.")


def _derive_seed(rng) -> int:
    """An int seed for a device generator, drawn from the numpy generator ``rng``."""
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(2**63 - 1))
    return int(rng.randint(0, 2**31 - 1))  # a RandomState


def _non_negative(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0


#: noise draws beyond this many sigma are treated as impossible (P < 1e-22 per draw)
NOISE_SIGMAS = 10.0
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_noise_fits(x, stdev, stdev_spread) -> None:
    """Refuse noise whose float32 copies (|x| + NOISE_SIGMAS sigma) would overflow to inf;
    sigma is computed in float64, so a value range beyond float32's own is caught too."""
    flat = np.asarray(x).reshape(len(x), -1)
    high, low = flat.max(1).astype(np.float64), flat.min(1).astype(np.float64)
    spread = high - low
    if stdev is None and not np.all(spread <= FLOAT32_MAX):
        i = int(np.argmax(spread))
        raise InputError(f"Sample {i}'s value range (max - min = {spread[i]:.3g}) is beyond float32's range "
                         f"({FLOAT32_MAX:.3g}), so SmoothGrad's noise (stdev_spread x range) would overflow. "
                         f"Rescale the input (e.g. divide it by a constant), or pass a small absolute stdev.")
    with np.errstate(over="ignore"):
        sigma = np.full(len(x), float(stdev)) if stdev is not None else float(stdev_spread) * spread
        size = np.maximum(np.abs(high), np.abs(low))
        peak = size + NOISE_SIGMAS * sigma
    if not np.all(peak <= FLOAT32_MAX):
        i = int(np.argmax(peak))
        name, value = ("stdev", stdev) if stdev is not None else ("stdev_spread", stdev_spread)
        raise ParameterError(f"{name}={value!r} gives noise with sigma = {sigma[i]:.3g}: the noisy copies of "
                             f"sample {i} (|x| up to {size[i]:.3g}) would overflow float32 (max {FLOAT32_MAX:.3g}) "
                             f"to inf. Choose a smaller {name}.")


class SmoothGrad(Method):
    """Average a base method's maps over noisy copies of each input.

    Parameters
    ----------
    base : registered method to smooth (default "gradients").
    nsamples : noisy copies per input.
    stdev_spread : noise level relative to each input's value range.
    stdev : absolute noise level (overrides stdev_spread).
    mode : "mean", "squared" or "vargrad".
    seed : int, numpy Generator or RandomState (the same seed gives the same map). A base
        method with a ``seed`` parameter not given gets one drawn from it.
    noise : where and how the noise is drawn. "host": numpy's float64 normals, the same numbers on
        every device (with upstream's RandomState, upstream's draws). "auto" (default): numpy's
        float32 normals from a seed or Generator (half the work; the same on every backend; a
        RandomState draws float64 as "host"), except when
        the backend keeps the work on its device (a torch model on a GPU, or any torch model with
        the backend option ``device_arrays=True``) and the base
        method takes device arrays (gradients, Guided Backprop): then the backend's own
        generator draws it there, seeded from ``seed`` -- the same seed gives the same map on
        that device, but not the numbers a CPU run draws.
    base_params : parameters of the base method (other unknown keywords go there too).
    """

    requires = frozenset()

    def _base(self, ctx, base, base_params, kwargs):
        method = load_method(ctx.host, base, ctx.adapter)
        if isinstance(method, SmoothGrad) or method.name == self.name:  # aliases included
            raise ParameterError(f"SmoothGrad cannot smooth itself (base={base!r}); choose another base method.")
        accepted, var_kw = method_parameters(method)
        for key in kwargs:  # a keyword neither SmoothGrad nor its base takes: name both
            if not var_kw and key not in accepted:
                own = [k for k in method_parameters(self)[0] if k != "base_params"]
                raise ParameterError(
                    f"Method 'smoothgrad' has no parameter {key!r}, and neither has its base {method.name!r}."
                    f"{did_you_mean(key, [*own, *accepted])} SmoothGrad takes: {', '.join(own)}; "
                    f"{method.name!r} takes: {', '.join(accepted) or 'none'}.")
        return method, resolve_params(method, {**(base_params or {}), **kwargs})

    def check(self, ctx, x, targets, *, base="gradients", nsamples=25, stdev_spread=0.15, stdev=None,
              mode="mean", seed=None, noise="auto", base_params=None, **kwargs):
        check_steps(nsamples, "nsamples")
        if mode not in MODES:
            raise ParameterError(f"mode must be one of {', '.join(MODES)}; got {mode!r}.")
        if not isinstance(noise, str) or noise not in NOISE:
            raise ParameterError(f"noise must be one of {', '.join(NOISE)}; got {noise!r}.")
        if stdev is None and not _non_negative(stdev_spread):
            raise ParameterError(f"stdev_spread must be a non-negative number, got {stdev_spread!r}.")
        if stdev is not None and not _non_negative(stdev):
            raise ParameterError(f"stdev must be a non-negative number, got {stdev!r}.")
        _check_noise_fits(x, stdev, stdev_spread)
        make_rng(seed)
        if base_params is not None and not isinstance(base_params, dict):
            raise ParameterError(f"base_params must be a dict of the base method's parameters; got {base_params!r}.")
        method, params = self._base(ctx, base, base_params, kwargs)
        method.check(ctx, x, targets, **params)

    def explain(self, ctx, x, targets, *, base="gradients", nsamples=25, stdev_spread=0.15, stdev=None,
                mode="mean", seed=None, noise="auto", base_params=None, **kwargs):
        method, params = self._base(ctx, base, base_params, kwargs)
        rng = make_rng(seed)
        n = len(x)
        flat = x.reshape(n, -1)
        sigma = np.full(n, float(stdev)) if stdev is not None else stdev_spread * (flat.max(1) - flat.min(1))
        shape = (-1,) + (1,) * (x.ndim - 1)
        total = squares = None  # allocated from the first maps: a base method's maps need not have x's shape
        # One standard-normal draw per noise step, shared by every sample (scaled by its own
        # sigma): a sample's map does not depend on its batch, and one input reproduces
        # upstream's sequential np.random.normal draws exactly.
        # a base method that takes device arrays gets its noisy batches built on the device
        device = ctx.on_device and getattr(method, "device_arrays", False)
        noise_shape = (nsamples,) + x.shape[1:]
        if device and noise == "auto" and hasattr(ctx.adapter, "standard_normal"):
            noises_d = ctx.adapter.standard_normal(noise_shape, seed=_derive_seed(rng))
        elif noise == "auto" and isinstance(rng, np.random.Generator) and not device:
            # float32 normals, and noisy copies built in float32: half the work of float64 ones
            # (a RandomState, e.g. the drop-in's global one, and noise="host" keep float64 draws)
            noises = rng.standard_normal(noise_shape, dtype=np.float32)
        else:
            noises = rng.standard_normal(noise_shape)
            noises_d = ctx.to_device(noises.astype(np.float32)) if device else None
        if seed is not None and "seed" in params and "seed" not in {**(base_params or {}), **kwargs}:
            # a seeded base (RISE, random) is seeded too: drawn after the noise, whose draws stay upstream's
            params = {**params, "seed": _derive_seed(rng)}
        sigma32 = sigma.astype(np.float32)
        if device:
            x_d, sigma_d = ctx.to_device(x), ctx.to_device(sigma32)
        for rows in ctx.chunks(n * nsamples, f"smoothgrad({method.name})"):
            samples, steps = sample_and_step(rows, nsamples)
            if device:
                at, step_at = batch_index(ctx, samples, steps)
                noisy = x_d[at] + noises_d[step_at] * sigma_d[at].reshape(shape)
            elif noises.dtype == np.float32:
                noisy = x[samples] + noises[steps] * sigma32[samples].reshape(shape)
            else:
                noisy = (x[samples] + noises[steps] * sigma[samples].reshape(shape)).astype(np.float32)
            # per-sample parameters of the base (a baseline per image, say) follow their rows
            out = method.explain(ctx.for_rows(samples, n), noisy, targets.take(samples), **params)
            maps = out.values if isinstance(out, MethodOutput) else out
            # the sums go where the base's maps are: a device array also from a base that takes
            # numpy inputs (IG, Grad-CAM finish on the device)
            maps_on_device = ctx.on_device and hasattr(maps, "shape") and not isinstance(maps, np.ndarray)
            if not maps_on_device:
                maps = np.asarray(maps, np.float64)
            elif mode == "vargrad":  # squared in float64 too: E[m^2] - E[m]^2 cancels
                maps = ctx.astype(maps, np.float64)
            if total is None:
                zeros = ctx.zeros if maps_on_device else np.zeros
                total = zeros((n,) + tuple(maps.shape[1:]), np.float64)
                squares = zeros(total.shape, np.float64) if mode != "mean" else None
            if mode != "squared":
                add_by_sample(total, samples, maps)
            if squares is not None:
                add_by_sample(squares, samples, maps * maps)
        mean = total / nsamples  # numpy, or a device array for a caller's device tensor to keep
        if mode == "mean":
            return ctx.astype(mean, np.float32)
        mean_sq = squares / nsamples
        if mode == "squared":
            return ctx.astype(mean_sq, np.float32)
        variance = mean_sq - mean * mean
        if isinstance(variance, np.ndarray):
            return np.maximum(variance, 0.0).astype(np.float32)
        return ctx.astype(variance * (variance > 0), np.float32)


@hookimpl
def register_methods(register):
    register("smoothgrad", SmoothGrad, aliases=("smooth_grad", "noise_tunnel"),
             description="SmoothGrad / squared SmoothGrad / VarGrad over any method")
