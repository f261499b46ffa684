"""XRAI (Kapishnikov et al. ICCV 2019): region attribution over Integrated Gradients.

The base attribution is the registered ``integrated_gradients`` method (so a plugin that
replaces IG changes XRAI too), averaged over the baselines (default: constant images at each
sample's min and max value), then the max over channels. The image is over-segmented by
Felzenszwalb at six scales, each segment dilated by a disk of radius 5. Regions are ranked by
attribution density: 'full' greedily adds the segment with the highest mean attribution over
its not-yet-covered pixels; 'fast' sorts segments once. Each region's pixels take the region's
mean attribution and the pixels left over take their own mean, so the map sums to the base
attribution's total.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..errors import ParameterError
from ..hookspecs import hookimpl
from ..types import INPUT_GRADIENTS, Method, MethodOutput
from . import _segments
from .integrated_gradients import check_steps

ALGORITHMS = ("full", "fast")
IG_METHOD = "integrated_gradients"


def _to_numpy(value):
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    elif hasattr(value, "numpy") and not isinstance(value, np.ndarray):  # a tf tensor
        value = value.numpy()
    return np.asarray(value)


def _is_2d_mask(value) -> bool:
    return isinstance(value, np.ndarray) and value.ndim == 2 and value.dtype == bool


def _segment_spec(value, hw, where: str):
    """One sample's segments as ('masks', (M, H, W) bool) or ('labels', (H, W) int)."""
    if isinstance(value, (list, tuple)):
        masks = [_to_numpy(m) for m in value]
        if not masks or not all(_is_2d_mask(m) for m in masks):
            raise ParameterError(
                f"{where} must be boolean masks of shape {hw} (a list, or an (M, H, W) bool "
                f"array) or an integer label image of shape {hw}."
            )
        bad = [m.shape for m in masks if m.shape != hw]
        if bad:
            raise ParameterError(f"{where} holds a mask of shape {bad[0]}; the images are {hw} (H, W).")
        value = np.stack(masks)
    value = _to_numpy(value)
    if value.ndim == 3 and value.dtype == bool:
        if value.shape[1:] != hw or len(value) == 0:
            raise ParameterError(
                f"{where} has masks of shape {value.shape[1:]} (count {len(value)}); give at least "
                f"one mask of the images' shape {hw} (H, W)."
            )
        return "masks", value
    if value.ndim == 2 and (value.dtype == bool or value.dtype.kind in "iu"):
        if value.shape != hw:
            raise ParameterError(f"{where} is a label image of shape {value.shape}; the images are {hw} (H, W).")
        return "labels", value
    raise ParameterError(
        f"{where} has shape {value.shape} and dtype {value.dtype}; give boolean masks (a list "
        f"of {hw} arrays or an (M, H, W) bool array) or an integer label image of shape {hw}."
    )


def parse_segments(segments, n: int, hw: tuple[int, int]) -> list | None:
    """Per-sample segment specs (see ``_segment_spec``), or None for Felzenszwalb.

    Accepted: a list of boolean (H, W) masks or an (M, H, W) bool array (shared by the
    batch); an integer (H, W) label image (shared); an integer (N, H, W) array (one label
    image per sample); a list of N per-sample entries, each one of the above.
    """
    if segments is None:
        return None
    if isinstance(segments, (list, tuple)):
        if not segments:
            raise ParameterError("segments is empty; give at least one mask, or None for Felzenszwalb.")
        items = [s if isinstance(s, (list, tuple)) else _to_numpy(s) for s in segments]
        if all(_is_2d_mask(s) for s in items):
            return [_segment_spec(items, hw, "segments")] * n
        if len(items) != n:
            raise ParameterError(
                f"segments has {len(items)} entries, but they are not all boolean (H, W) masks "
                f"and the batch has {n} images: give boolean masks shared by the batch, or one "
                f"entry (masks or a label image) per image."
            )
        return [_segment_spec(s, hw, f"segments[{i}]") for i, s in enumerate(items)]
    value = _to_numpy(segments)
    if value.ndim == 3 and value.dtype.kind in "iu":
        if len(value) != n:
            raise ParameterError(
                f"segments as an integer array of shape {value.shape} means one label image per "
                f"image, but the batch has {n} images."
            )
        return [_segment_spec(v, hw, f"segments[{i}]") for i, v in enumerate(value)]
    return [_segment_spec(value, hw, "segments")] * n


def parse_base_attribution(ctx, value, x: np.ndarray) -> np.ndarray:
    """The caller's attribution as (N, H, W) or canonical (N, H, W, C) float64."""
    n, h, w = ctx.sample_count(x), *x.shape[1:3]
    if callable(value) and not hasattr(value, "shape"):
        out = ctx.as_canonical(value, x, "base_attribution")
        return np.broadcast_to(out, x.shape).astype(np.float64)
    arr = _to_numpy(value)
    if n > 1 and arr.ndim == 3 and arr.shape == (n, h, w) and arr.shape == _sample_shape(ctx, x):
        raise ParameterError(
            f"base_attribution of shape {arr.shape} is ambiguous: one sample in the input's layout, or "
            f"one (H, W) map per image of the {n}. Give one sample with a batch axis (shape "
            f"{(1, *arr.shape)}), or one map per image with a channel axis of 1.")
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape == (n, h, w)):
        if arr.shape[-2:] != (h, w):
            raise ParameterError(f"base_attribution of shape {arr.shape} does not fit images of size {(h, w)}.")
        if arr.dtype.kind not in "biuf" or not np.isfinite(arr).all():
            raise ParameterError("base_attribution must hold finite real numbers.")
        if arr.ndim == 3:
            arr = ctx.rows_of(arr)
        return np.broadcast_to(arr.astype(np.float64), (len(x), h, w))
    out = ctx.as_canonical(value, x, "base_attribution")
    return np.broadcast_to(out, x.shape).astype(np.float64)


def _sample_shape(ctx, x: np.ndarray) -> tuple[int, ...] | None:
    """One sample's shape in the caller's image layout (None when it is not NHWC/NCHW)."""
    layout = getattr(ctx.input_info, "layout", None)
    if x.ndim != 4 or layout not in ("NHWC", "HWC", "NCHW", "CHW"):
        return None
    h, w, c = x.shape[1:]
    return (c, h, w) if layout in ("NCHW", "CHW") else (h, w, c)


def make_baselines(ctx, baselines, x: np.ndarray) -> np.ndarray:
    """Baselines as a canonical (N, B, H, W, C) float32 array."""
    if baselines is None:
        flat = x.reshape(len(x), -1)
        lo = np.broadcast_to(flat.min(1).reshape(-1, 1, 1, 1), x.shape)
        hi = np.broadcast_to(flat.max(1).reshape(-1, 1, 1, 1), x.shape)
        return np.stack([lo, hi], axis=1).astype(np.float32)
    if not isinstance(baselines, (list, tuple)) or not baselines:
        raise ParameterError(
            "baselines must be a non-empty list of baselines (scalars or arrays in the input's "
            f"layout, one sample or one per sample), or None for min/max images; got {type(baselines).__name__}."
        )
    out = [np.broadcast_to(ctx.as_canonical(b, x, f"baselines[{i}]"), x.shape) for i, b in enumerate(baselines)]
    return np.stack(out, axis=1).astype(np.float32)


class XRAI(Method):
    """XRAI region attribution over Integrated Gradients.

    Parameters
    ----------
    baselines : list of IG baselines (scalars or arrays in the input's layout, one sample or
        one per sample); None: constant images at each sample's min and max.
    segments : None (Felzenszwalb, dilated), boolean masks (a list of (H, W), or (M, H, W)),
        an integer label image (H, W), or a list with one of these per image; custom
        segments are used as given.
    base_attribution : skip IG and rank this attribution ((H, W), (N, H, W), or in the
        input's layout with channels; a shape that is both (N, H, W) and one sample, as (3, H, W)
        for 3 CHW images, is refused as ambiguous).
    steps : IG steps per baseline.
    area_threshold : 'full' stops once more than this fraction of the image is covered; the
        rest becomes one region. In (0, 1].
    algorithm : "full" (greedy, overlap-aware) or "fast" (sorted once, ignores area_threshold).
    min_pixel_diff : segments that would add fewer new pixels than this are dropped.
    flatten_segments : extras["segments"] as ranks (N, H, W), 1 = most important; else, per
        image, boolean masks (K, H, W), most important first.
    return_ig : put the per-baseline IG maps and their mean into extras.
    return_segments : put the ranked regions into extras.
    ig_params : further parameters for the IG method (e.g. ``{"rule": "trapezoid"}``).
    threads : threads that run the Felzenszwalb scales (while IG runs); None: one per CPU
        core, 1: all in the calling thread.

    Returns the attribution (N, H, W); extras hold ``baselines`` (canonical, (N, B, H, W, C),
    None with base_attribution), and on request ``ig_attribution`` (N, B, H, W, C),
    ``attribution`` (the map that was ranked, before the max over channels) and ``segments``.
    """

    requires = frozenset({INPUT_GRADIENTS})

    def _validate(self, ctx, x, *, segments, base_attribution, steps, area_threshold, algorithm,
                  min_pixel_diff, flags, ig_params, threads=None):
        if x.ndim != 4:
            raise ParameterError(
                f"XRAI segments images: it needs one image (H, W, C) or a batch (N, H, W, C) "
                f"(canonical, channels last); got canonical shape {x.shape}."
            )
        if algorithm not in ALGORITHMS:
            raise ParameterError(f"algorithm must be one of {', '.join(ALGORITHMS)}; got {algorithm!r}.")
        if (isinstance(area_threshold, bool) or not isinstance(area_threshold, numbers.Real)
                or not 0 < area_threshold <= 1):
            raise ParameterError(
                f"area_threshold must be a fraction of the image area in (0, 1]; got {area_threshold!r}.")
        if (isinstance(min_pixel_diff, bool) or not isinstance(min_pixel_diff, numbers.Integral)
                or min_pixel_diff < 0):
            raise ParameterError(f"min_pixel_diff must be a non-negative int; got {min_pixel_diff!r}.")
        for name, value in flags.items():
            if not isinstance(value, (bool, np.bool_)):
                raise ParameterError(f"{name} must be True or False; got {value!r}.")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, numbers.Integral)
                                    or threads < 1):
            raise ParameterError(f"threads must be a positive int or None (one per CPU core); got {threads!r}.")
        if ig_params is not None and not isinstance(ig_params, dict):
            raise ParameterError(f"ig_params must be a dict of IG parameters; got {type(ig_params).__name__}.")
        clash = {"baseline", "steps"} & set(ig_params or {})
        if clash:
            raise ParameterError(
                f"Set {', '.join(sorted(clash))} through XRAI's own baselines/steps, not ig_params.")
        if base_attribution is None:
            check_steps(steps)
        specs = parse_segments(segments, ctx.sample_count(x), x.shape[1:3])
        specs = None if specs is None else ctx.rows_of(specs)  # under SmoothGrad: per noisy row
        base = None if base_attribution is None else parse_base_attribution(ctx, base_attribution, x)
        return specs, base

    def check(self, ctx, x, targets, *, baselines=None, segments=None, base_attribution=None, steps=100,
              area_threshold=1.0, algorithm="full", min_pixel_diff=50, flatten_segments=True,
              return_ig=False, return_segments=False, ig_params=None, threads=None):
        _, base = self._validate(ctx, x, segments=segments, base_attribution=base_attribution, steps=steps,
                                 area_threshold=area_threshold, algorithm=algorithm,
                                 min_pixel_diff=min_pixel_diff, ig_params=ig_params, threads=threads,
                                 flags={"flatten_segments": flatten_segments, "return_ig": return_ig,
                                        "return_segments": return_segments})
        if base is None:
            make_baselines(ctx, baselines, x)
            from ..api import resolve_params

            ig = ctx.method(IG_METHOD)
            if hasattr(ig, "check"):
                ig.check(ctx, x, targets, **resolve_params(ig, {"steps": steps, **(ig_params or {})}))

    def explain(self, ctx, x, targets, *, baselines=None, segments=None, base_attribution=None, steps=100,
                area_threshold=1.0, algorithm="full", min_pixel_diff=50, flatten_segments=True,
                return_ig=False, return_segments=False, ig_params=None, threads=None):
        specs, base = self._validate(ctx, x, segments=segments, base_attribution=base_attribution, steps=steps,
                                     area_threshold=area_threshold, algorithm=algorithm,
                                     min_pixel_diff=min_pixel_diff, ig_params=ig_params, threads=threads, flags={})
        n = len(x)
        extras = {"baselines": None}
        pool = None
        if specs is None:  # segment while IG runs: the two are independent
            pool = _segments.default_pool(n * len(_segments.scale_groups()), threads, concurrent=base is None)
            finish_segments = _segments.start_felzenszwalb(x, pool=pool)
        try:
            return self._explain(ctx, x, targets, specs, base, extras, baselines=baselines, steps=steps,
                                 area_threshold=area_threshold, algorithm=algorithm, min_pixel_diff=min_pixel_diff,
                                 flatten_segments=flatten_segments, return_ig=return_ig,
                                 return_segments=return_segments, ig_params=ig_params,
                                 pending=finish_segments if specs is None else None)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _explain(self, ctx, x, targets, specs, base, extras, *, baselines, steps, area_threshold, algorithm,
                 min_pixel_diff, flatten_segments, return_ig, return_segments, ig_params, pending):
        n = len(x)
        if base is None:
            bases = make_baselines(ctx, baselines, x)
            k = bases.shape[1]
            rows = np.ascontiguousarray(bases.reshape((n * k,) + x.shape[1:]))
            out = ctx.run(IG_METHOD, np.repeat(x, k, axis=0), targets.repeat(k),
                          baseline=lambda _: rows, steps=steps, **(ig_params or {}))
            igs = np.asarray(out.values).reshape((n, k) + x.shape[1:])
            base = igs.mean(axis=1, dtype=np.float64)
            extras["baselines"] = bases
            if return_ig:
                extras["ig_attribution"] = igs
        if return_ig:
            extras["attribution"] = base.astype(np.float32)
        attr = base.max(axis=-1) if base.ndim == 4 else base

        incidences = pending() if pending is not None else self._incidences(specs)
        rank = _segments.rank_full if algorithm == "full" else _segments.rank_fast
        kwargs = {"area_threshold": float(area_threshold)} if algorithm == "full" else {}
        results = [rank(attr[i], inc, min_pixel_diff=int(min_pixel_diff), **kwargs)
                   for i, inc in enumerate(incidences)]
        values = np.stack([r.values for r in results]).astype(np.float32)
        if return_segments:
            extras["segments"] = (np.stack([r.ranks() for r in results]) if flatten_segments
                                  else [r.masks() for r in results])
        return MethodOutput(values, extras)

    @staticmethod
    def _incidences(specs):
        """One segment incidence per image, from the caller's segments."""
        cache = {}
        out = []
        for kind, value in specs:
            key = id(value)
            if key not in cache:
                cache[key] = (_segments.masks_incidence(value) if kind == "masks"
                              else _segments.label_image_incidence(value))
            out.append(cache[key])
        return out


@hookimpl
def register_methods(register):
    register("xrai", XRAI, requires=XRAI.requires,
             description="XRAI region attribution over Integrated Gradients (Kapishnikov et al. 2019)")
