"""salplug side by side with its peers: ``python -m benchmarks`` (see benchmarks/README.md).

Every case runs its contenders on the same model, input, parameters and thread count,
interleaved round by round, and reports medians (and minima) of wall-clock seconds and the
ratio salplug / peer from the same run. Ratios below 1 mean salplug is faster.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np


@dataclass
class Row:
    """One line of the final table: a target, its measured ratio and whether it is met."""

    target: str
    case: str
    ratio: float
    goal: str
    met: bool | None
    note: str = ""


ROWS: list[Row] = []
LOG: list[dict] = []


def fmt(t: float) -> str:
    if t != t:  # nan
        return "   n/a"
    return f"{t:8.3f}" if t >= 0.01 else f"{t * 1000:6.2f}ms"


def report(title: str, timings: dict, baseline: str = "salplug", per: int = 1) -> None:
    """Print each contender's median and min (seconds, per item when ``per`` > 1) and salplug's ratio."""
    print(f"\n== {title}" + (f" (seconds per item, {per} items)" if per > 1 else " (seconds)"))
    base = timings.get(baseline)
    for name, t in timings.items():
        if t.error:
            print(f"  {name:34s} failed: {t.error}")
            continue
        ratio = ""
        if base is not None and name != baseline and not base.error and t.times:
            ratio = f"  salplug/this = {base.median / t.median:6.3f} (median)  {base.min / t.min:6.3f} (min)"
        print(f"  {name:34s} median {fmt(t.median / per)}  min {fmt(t.min / per)}  n={len(t.times)}{ratio}")
        LOG.append({"case": title, "contender": name, "median_s": t.median, "min_s": t.min, "n": len(t.times)})


def add(target: str, case: str, ratio: float, goal: str, ok: bool | None, note: str = "") -> None:
    ROWS.append(Row(target, case, ratio, goal, ok, note))


def ratio_of(timings, a: str, b: str) -> float:
    ta, tb = timings.get(a), timings.get(b)
    if ta is None or tb is None or ta.error or tb.error or not ta.times or not tb.times:
        return float("nan")
    return ta.median / tb.median


# -- cases -----------------------------------------------------------------------------------
def case_xrai_segments(args) -> None:
    """XRAI after IG (segmentation + ranking, 'full'), salplug vs upstream, same ranking."""
    import salplug
    from salplug.builtin_methods import _segments

    from .models import photo
    from .timing import interleaved

    img = photo(224)
    yy, xx = np.mgrid[0:224, 0:224] / 224
    a = np.sin(6 * xx) * np.cos(4 * yy) + 0.5 * xx + 0.05 * np.random.default_rng(0).standard_normal((224, 224))
    attr = np.stack([a, 0.5 * a + 0.1 * yy, -a], axis=-1).astype(np.float32)

    def never(*_a, **_k):
        raise AssertionError("no model call expected")

    host = salplug.get_plugin_manager(autoload=False)
    contenders = {"salplug": lambda: salplug.explain(never, img, "xrai", backend="callable", host=host,
                                                     base_attribution=attr, return_segments=True),
                  # upstream segments in one thread; this row shows what salplug's pool adds
                  "salplug, threads=1": lambda: salplug.explain(never, img, "xrai", backend="callable", host=host,
                                                                base_attribution=attr, return_segments=True,
                                                                threads=1)}
    if args.upstream:
        import saliency.core as upstream

        params = upstream.XRAIParameters(return_xrai_segments=True)
        contenders["upstream saliency"] = lambda: upstream.XRAI().GetMaskWithDetails(
            img, never, base_attribution=attr, extra_parameters=params)
    t = interleaved(contenders, args.repeats, "cpu")
    report("XRAI segmentation + ranking after IG, 224x224, full", t)
    same = None
    if "upstream saliency" in t and not t["upstream saliency"].error and not t["salplug"].error:
        ours, theirs = t["salplug"].result, t["upstream saliency"].result
        same = bool(np.array_equal(ours.extras["segments"][0], theirs.segments)
                    and np.allclose(ours.canonical[0], theirs.attribution_mask, rtol=1e-5, atol=1e-6))
        print(f"  same ranking and map as upstream: {same}")
    # where the time goes (one run)
    t0 = time.perf_counter()
    labels = _segments.felzenszwalb_labels(img)
    t1 = time.perf_counter()
    inc = _segments.labels_incidence(labels, (224, 224))
    t2 = time.perf_counter()
    _segments.rank_full(attr.max(-1).astype(np.float64), inc)
    t3 = time.perf_counter()
    print(f"  salplug breakdown (one run): felzenszwalb x6 {t1 - t0:.3f} s, dilated incidence "
          f"{t2 - t1:.3f} s ({inc.n_masks} masks), greedy ranking {t3 - t2:.3f} s")
    r = ratio_of(t, "salplug", "upstream saliency")
    add("XRAI seg+rank after IG, 224², full", "vs upstream", r, "≤ 0.05 (≥20× faster), same ranking",
        None if r != r else bool(r <= 0.05 and same), f"same ranking: {same}; {os.cpu_count()} segmentation threads")
    r1 = ratio_of(t, "salplug, threads=1", "upstream saliency")
    add("XRAI seg+rank after IG, 224², full, threads=1", "vs upstream", r1, "(one thread, like upstream)", None)


def _explainer_with_gradient_clock(model, device, **kwargs):
    """An Explainer whose adapter records the seconds spent in input_gradients."""
    import salplug

    from .timing import synchronizer

    ex = salplug.Explainer(model, **kwargs)
    sync = synchronizer(device)
    inner = ex.adapter.input_gradients
    clock = {"s": 0.0, "calls": 0}

    def timed(x, targets):
        sync()
        start = time.perf_counter()
        out = inner(x, targets)
        sync()
        clock["s"] += time.perf_counter() - start
        clock["calls"] += 1
        return out

    ex.adapter.input_gradients = timed
    return ex, clock


def case_xrai_end_to_end(args, mc) -> None:
    """XRAI with default parameters: what salplug spends beyond its IG gradient evaluations."""
    import torch

    from .models import photo
    from .peers import upstream_call_model_function
    from .timing import interleaved

    img = photo(mc.size)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].to(args.device)
    ex, clock = _explainer_with_gradient_clock(mc.model, args.device)
    beyond = []

    def ours():
        clock["s"] = 0.0
        start = time.perf_counter()
        out = ex.explain(x, "xrai", target=mc.target)
        total = time.perf_counter() - start
        beyond.append(total - clock["s"])
        return out

    contenders = {"salplug (defaults)": ours}
    if args.upstream and args.upstream_e2e:
        import saliency.core as upstream

        cmf = upstream_call_model_function(mc.model, mc.target, args.device)
        contenders["upstream saliency (defaults)"] = lambda: upstream.XRAI().GetMask(img, cmf)
    t = interleaved(contenders, max(1, args.repeats // 2), args.device, warmup=1)
    report(f"XRAI end to end, default parameters, {mc.name}", t, baseline="salplug (defaults)")
    b = float(np.median(beyond[1:] or beyond))
    print(f"  salplug beyond its IG gradient evaluations: median {b:.3f} s (min {min(beyond[1:] or beyond):.3f} s), "
          f"{clock['calls']} gradient batches per call")
    add(f"XRAI e2e beyond IG gradients ({mc.name}, {args.device})", "seconds", b, "≤ 0.5 s (CPU)",
        bool(b <= 0.5) if args.device == "cpu" else None)
    r = ratio_of(t, "salplug (defaults)", "upstream saliency (defaults)")
    if r == r:
        add(f"XRAI e2e defaults vs upstream defaults ({mc.name}, {args.device})", "vs upstream", r,
            "≤ 0.2 on a GPU (≥5× faster)", bool(r <= 0.2) if args.device != "cpu" else None,
            "GPU target; CPU for information")


def case_occlusion(args) -> None:
    import torch

    import salplug

    from .models import photos, small_cnn
    from .peers import raw_occlusion, upstream_call_model_function
    from .timing import interleaved

    size = 32 if args.quick else 64
    window, batch, target = 16, 64, 3
    model = small_cnn(args.device)
    img = photos(1, size)[0]
    x = torch.from_numpy(img).permute(2, 0, 1)[None].to(args.device)
    host = salplug.get_plugin_manager(autoload=False)
    contenders = {
        "salplug": lambda: salplug.explain(model, x, "occlusion", target=target, size=window, batch_size=batch,
                                           host=host),
        "salplug (default batch size)": lambda: salplug.explain(model, x, "occlusion", target=target, size=window,
                                                                host=host),
        "raw torch loop": lambda: raw_occlusion(model, x, target, window, batch),
    }
    if args.captum:
        from captum.attr import Occlusion

        occ = Occlusion(model)
        contenders["captum"] = lambda: occ.attribute(x, sliding_window_shapes=(3, window, window), strides=(3, 1, 1),
                                                     baselines=0, target=target, perturbations_per_eval=batch)
    if args.upstream:
        import saliency.core as upstream

        cmf = upstream_call_model_function(model, target, args.device)
        contenders["upstream saliency"] = lambda: upstream.Occlusion().GetMask(img, cmf, size=window, value=0)
    t = interleaved(contenders, args.repeats, args.device)
    windows = (size - window + 1) ** 2
    report(f"Occlusion, small CNN {size}x{size}, window {window}, stride 1 ({windows} windows, batch {batch})", t)
    if "upstream saliency" in t and not t["upstream saliency"].error:
        ours = t["salplug"].result.canonical[0, :, :, 0]
        theirs = np.asarray(t["upstream saliency"].result)[:, :, 0]
        print(f"  same map as upstream (sum over windows): {np.allclose(ours, theirs, rtol=1e-4, atol=1e-4)}")
    r = ratio_of(t, "salplug", "upstream saliency")
    add("Occlusion, same window and stride", "vs upstream", r, "≤ 0.125 (≥8× faster)",
        None if r != r else bool(r <= 0.125))
    r = ratio_of(t, "salplug", "captum")
    add("Occlusion, same window and stride", "vs Captum", r, "≤ 1.0", None if r != r else bool(r <= 1.0))
    r = ratio_of(t, "salplug (default batch size)", "salplug")
    add("default batch size (occlusion, small CNN)", f"vs fixed batch {batch}", r, "≤ 1.1",
        None if r != r else bool(r <= 1.1))


def _best_raw(fn_for, configs, device, repeats=1):
    """Time every (batch, channels_last) config once; return the fastest config's label and fn."""
    from .timing import interleaved

    t = interleaved({f"bs={b} {'channels_last' if cl else 'NCHW'}": fn_for(b, cl) for b, cl in configs},
                    repeats, device, warmup=1)
    ok = {k: v for k, v in t.items() if not v.error and v.times}
    best = min(ok, key=lambda k: ok[k].median)
    return best, t


def case_gradients(args, mc) -> None:
    """IG, SmoothGrad, Guided Backprop, Grad-CAM: salplug vs the raw loop, Captum and upstream."""
    import torch

    import salplug

    from .models import photo, photos
    from .peers import (batch_sizes, channels_last_copy, noise_for, raw_grad_cam, raw_guided_backprop, raw_ig,
                        raw_smoothgrad, smoothgrad_sigma, upstream_call_model_function)
    from .timing import interleaved

    model, dev, tgt = mc.model, args.device, mc.target
    cl_model = channels_last_copy(model)
    host = salplug.get_plugin_manager(autoload=False)
    img = photo(mc.size)
    x1 = torch.from_numpy(img).permute(2, 0, 1)[None].to(dev)
    n_img = 4 if args.quick else 8
    imgs = photos(n_img, mc.size)
    xn = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous().to(dev)
    steps, bs = args.steps, args.batch_size
    grid_b = [1, bs, steps] if args.quick else batch_sizes(steps, (1, 2, 4, 5, 8, 16, 25, 32))

    def raw_pick(m, cl):
        return cl_model if cl else m

    # -- Integrated Gradients ---------------------------------------------------------------
    best, grid = _best_raw(lambda b, cl: (lambda: raw_ig(raw_pick(model, cl), x1, tgt, steps, b, cl)),
                           [(b, cl) for b in grid_b for cl in (False, True)], dev)
    bb, bcl = int(best.split()[0][3:]), best.endswith("channels_last")
    contenders = {
        "salplug": lambda: salplug.explain(model, x1, "ig", target=tgt, steps=steps, batch_size=bs, host=host),
        f"raw torch loop bs={bs}": lambda: raw_ig(model, x1, tgt, steps, bs),
        f"raw torch loop best ({best})": lambda: raw_ig(raw_pick(model, bcl), x1, tgt, steps, bb, bcl),
    }
    if args.captum:
        from captum.attr import IntegratedGradients

        ig = IntegratedGradients(model)
        contenders["captum"] = lambda: ig.attribute(x1, baselines=x1 * 0, target=tgt, n_steps=steps,
                                                    method="riemann_trapezoid", internal_batch_size=bs)
    if args.upstream:
        import saliency.core as upstream

        cmf = upstream_call_model_function(model, tgt, dev)
        contenders["upstream saliency"] = lambda: upstream.IntegratedGradients().GetMask(
            img, cmf, x_steps=steps, batch_size=bs)
    t = interleaved(contenders, args.repeats, dev)
    report(f"Integrated Gradients, {mc.name}, {steps} steps, batch {bs}, one image", t)
    _gradient_rows("IG", mc.name, t, bs, best)

    # -- SmoothGrad (squared, over gradients) -----------------------------------------------
    sigma = smoothgrad_sigma(img)
    noise = noise_for(x1, steps, sigma)
    contenders = {
        "salplug": lambda: salplug.explain(model, x1, "smoothgrad", target=tgt, nsamples=steps, mode="squared",
                                           batch_size=bs, seed=0, host=host),
        f"raw torch loop bs={bs}": lambda: raw_smoothgrad(model, x1, tgt, noise, bs),
        f"raw torch loop best ({best})": lambda: raw_smoothgrad(raw_pick(model, bcl), x1, tgt, noise, bb, bcl),
    }
    if args.captum:
        from captum.attr import NoiseTunnel, Saliency

        nt = NoiseTunnel(Saliency(model))
        contenders["captum"] = lambda: nt.attribute(x1, nt_type="smoothgrad_sq", nt_samples=steps, stdevs=sigma,
                                                    nt_samples_batch_size=bs, target=tgt, abs=False)
    if args.upstream:
        import saliency.core as upstream

        cmf = upstream_call_model_function(model, tgt, dev)
        contenders["upstream saliency (no batching)"] = lambda: upstream.GradientSaliency().GetSmoothedMask(
            img, cmf, stdev_spread=0.15, nsamples=steps, magnitude=True)
    t = interleaved(contenders, args.repeats, dev)
    report(f"SmoothGrad (squared), {mc.name}, {steps} samples, batch {bs}, one image", t)
    _gradient_rows("SmoothGrad", mc.name, t, bs, best, upstream="upstream saliency (no batching)")

    # -- Guided Backprop (n images in one batch) --------------------------------------------
    contenders = {
        "salplug": lambda: salplug.explain(model, xn, "guided_backprop", target=tgt, batch_size=n_img, host=host),
        f"raw torch loop bs={n_img}": lambda: raw_guided_backprop(model, xn, tgt, n_img),
        f"raw torch loop bs={n_img} channels_last": lambda: raw_guided_backprop(cl_model, xn, tgt, n_img, True),
    }
    if args.captum:
        from captum.attr import GuidedBackprop

        gbp = GuidedBackprop(model)
        contenders["captum (nn.ReLU modules only)"] = lambda: gbp.attribute(xn, target=tgt)
    t = interleaved(contenders, args.repeats, dev)
    report(f"Guided Backprop, {mc.name}, {n_img} images", t, per=n_img)
    _gradient_rows("Guided Backprop", mc.name, t, n_img, f"bs={n_img} channels_last",
                   captum="captum (nn.ReLU modules only)", best_name=f"raw torch loop bs={n_img} channels_last")

    # -- Grad-CAM ---------------------------------------------------------------------------
    layer = mc.module()
    cl_layer = cl_model.get_submodule(mc.layer)
    contenders = {
        "salplug": lambda: salplug.explain(model, xn, "grad_cam", target=tgt, layer=mc.layer, batch_size=n_img,
                                           host=host),
        f"raw torch loop bs={n_img}": lambda: raw_grad_cam(model, layer, xn, tgt, n_img),
        f"raw torch loop bs={n_img} channels_last": lambda: raw_grad_cam(cl_model, cl_layer, xn, tgt, n_img, True),
    }
    if args.captum:
        from captum.attr import LayerAttribution, LayerGradCam

        lgc = LayerGradCam(model, layer)
        contenders["captum"] = lambda: LayerAttribution.interpolate(
            lgc.attribute(xn, target=tgt, relu_attributions=True), xn.shape[2:], "bilinear")
    if args.upstream:
        import saliency.core as upstream

        cmf = upstream_call_model_function(model, tgt, dev, layer=layer)
        contenders["upstream saliency"] = lambda: [upstream.GradCam().GetMask(im, cmf) for im in imgs]
    t = interleaved(contenders, args.repeats, dev)
    report(f"Grad-CAM ({mc.layer}), {mc.name}, {n_img} images", t, per=n_img)
    _gradient_rows("Grad-CAM", mc.name, t, n_img, f"bs={n_img} channels_last",
                   best_name=f"raw torch loop bs={n_img} channels_last")


def _gradient_rows(method, model, t, bs, best, upstream="upstream saliency", captum="captum", best_name=None):
    r = ratio_of(t, "salplug", f"raw torch loop bs={bs}")
    add(f"{method} ({model})", f"vs raw loop, same batch ({bs})", r, "≤ 1.05", None if r != r else bool(r <= 1.05))
    name = best_name or f"raw torch loop best ({best})"
    r = ratio_of(t, "salplug", name)
    add(f"{method} ({model})", f"vs raw loop best ({best})", r, "(the limit)", None)
    r = ratio_of(t, "salplug", captum)
    add(f"{method} ({model})", "vs Captum, same steps/batch", r, "≤ 1.0", None if r != r else bool(r <= 1.0))
    r = ratio_of(t, "salplug", upstream)
    if r == r:
        add(f"{method} ({model})", "vs upstream, same steps/batch", r, "≤ 1.0", bool(r <= 1.0))


def case_defaults(args, mc) -> None:
    """IG with salplug's default batch size and layout vs every fixed choice."""
    import torch

    import salplug

    from .models import photo
    from .peers import channels_last_copy
    from .timing import interleaved

    model, dev, tgt, steps = mc.model, args.device, mc.target, args.steps
    cl_model = channels_last_copy(model)
    x1 = torch.from_numpy(photo(mc.size)).permute(2, 0, 1)[None].to(dev)
    grid_b = [1, 5, steps] if args.quick else [1, 2, 4, 5, 8, 16, steps]
    first = {}

    def default_call():
        return salplug.explain(model, x1, "ig", target=tgt, steps=steps)

    start = time.perf_counter()
    default_call()
    first["s"] = time.perf_counter() - start
    rows = _auto_rows(model, x1)
    contenders = {f"salplug default (batch_size_for(x) = {rows})": default_call}
    for b in grid_b:
        contenders[f"salplug bs={b}"] = (lambda b=b: salplug.explain(model, x1, "ig", target=tgt, steps=steps,
                                                                     batch_size=b))
        contenders[f"salplug bs={b} channels_last model"] = (
            lambda b=b: salplug.explain(cl_model, x1.contiguous(memory_format=torch.channels_last), "ig",
                                        target=tgt, steps=steps, batch_size=b))
    t = interleaved(contenders, args.repeats, dev, warmup=0)
    default = next(iter(contenders))
    report(f"IG {steps} steps, {mc.name}: default batch size and layout vs fixed choices", t, baseline=default)
    print(f"  first call of the default (includes any tuning): {first['s']:.3f} s")
    fixed = {k: v for k, v in t.items() if k.startswith("salplug bs=") and not v.error and v.times}
    best = min(fixed, key=lambda k: fixed[k].median)
    r = ratio_of(t, default, best)
    add(f"default batch size/layout ({mc.name})", f"vs best fixed ({best})", r, "≤ 1.1",
        None if r != r else bool(r <= 1.1))


def _auto_rows(model, x):
    """The torch adapter's batch_size_for(x), or None when it has none."""
    import salplug

    adapter = salplug.Explainer(model).adapter
    if not hasattr(adapter, "batch_size_for"):
        return None
    canonical, _ = adapter.to_canonical(x)
    return int(adapter.batch_size_for(canonical))


def case_memory(args) -> None:
    results = {}
    for steps in (32, 1000):
        cmd = [sys.executable, "-m", "benchmarks.memory", "--steps", str(steps), "--batch-size", "32",
               "--device", args.device] + (["--threads", str(args.threads)] if args.threads else [])
        # glibc raises its mmap threshold after big blocks are freed and then keeps them in the
        # heap, so peak RSS would depend on allocation history; a fixed threshold returns them.
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        if out.returncode:
            print(out.stderr[-2000:])
            continue
        results[steps] = json.loads(out.stdout.strip().splitlines()[-1])
    print("\n== IG peak memory, small CNN 224x224, batch_size 32 (fresh process each)")
    for steps, r in results.items():
        print(f"  {steps:5d} steps: peak RSS growth {r['rss_mb']:7.1f} MB, numpy/Python peak (tracemalloc) "
              f"{r['tracemalloc_mb']:7.1f} MB" + (f", CUDA peak {r['cuda_peak_mb']} MB" if "cuda_peak_mb" in r else ""))
    if len(results) == 2:
        a, b = results[32], results[1000]
        key = "cuda_peak_mb" if "cuda_peak_mb" in a else "rss_mb"
        ratio = b[key] / max(a[key], 1e-9)
        same = b["tracemalloc_mb"] <= 1.1 * a["tracemalloc_mb"] + 1 and b[key] <= 1.1 * a[key] + 8
        add("IG 1000 vs 32 steps, batch 32", f"peak memory ratio ({key})", ratio, "same peak (≤ 1.1× + noise)",
            bool(same))


def case_throughput(args) -> None:
    """64 images through one explain() call vs 64 single calls."""
    import torch

    import salplug

    from .models import load_models, photos, small_cnn
    from .timing import interleaved

    host = salplug.get_plugin_manager(autoload=False)
    model = small_cnn(args.device)
    x = torch.from_numpy(photos(64, 32)).permute(0, 3, 1, 2).contiguous().to(args.device)
    rows = _auto_rows(model, x)  # what one explain() call uses per model call
    for method, params in (("gradients", {}), ("integrated_gradients", {"steps": 8})):
        contenders = {
            f"one call, 64 images (batch {rows})": lambda: salplug.explain(model, x, method, host=host, **params),
            "64 single calls": lambda: [salplug.explain(model, x[i:i + 1], method, host=host, **params)
                                        for i in range(len(x))],
        }
        t = interleaved(contenders, args.repeats, args.device)
        one = next(iter(contenders))
        report(f"{method}: 64 images 32x32, small CNN, one call vs single calls", t, baseline=one)
        r = ratio_of(t, "64 single calls", one)
        add(f"64 images via explain(), small CNN 32², {method}", "throughput gain (singles/batched time)", r,
            "≥ 3", None if r != r else bool(r >= 3))
    demo = load_models(args.device, names=("efficientnet",))
    if demo:
        mc = demo[0]
        n = 16 if args.quick else 64
        xd = torch.from_numpy(photos(n, mc.size)).permute(0, 3, 1, 2).contiguous().to(args.device)
        contenders = {
            f"one call, {n} images": lambda: salplug.explain(mc.model, xd, "gradients", host=host),
            f"{n} single calls": lambda: [salplug.explain(mc.model, xd[i:i + 1], "gradients", host=host)
                                          for i in range(n)],
        }
        t = interleaved(contenders, max(1, args.repeats // 2), args.device)
        report(f"gradients: {n} images 224x224, EfficientNet-Lite0, one call vs single calls", t,
               baseline=f"one call, {n} images")
        r = ratio_of(t, f"{n} single calls", f"one call, {n} images")
        add(f"{n} images via explain(), EfficientNet-Lite0", "throughput gain (singles/batched time)", r, "≥ 1.0",
            None if r != r else bool(r >= 1.0))


CASES = ("xrai", "occlusion", "gradients", "defaults", "memory", "throughput", "xrai_e2e")


def print_table() -> None:
    print("\n" + "=" * 100)
    print("Targets (ratios are salplug ÷ peer, medians from this run)")
    print(f"{'target':52s} {'measure':34s} {'value':>8s}  {'goal':34s} met")
    for r in ROWS:
        met = "yes" if r.met else ("NO" if r.met is False else "-")
        value = "n/a" if r.ratio != r.ratio else f"{r.ratio:8.3f}"
        print(f"{r.target:52s} {r.case:34s} {value:>8s}  {r.goal:34s} {met}  {r.note}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads for every contender (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller grids and inputs")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per case (default 5, quick 2)")
    parser.add_argument("--only", default=",".join(CASES), help=f"comma-separated cases from: {', '.join(CASES)}")
    parser.add_argument("--models", default="resnet,efficientnet", help="resnet and/or efficientnet")
    parser.add_argument("--steps", type=int, default=25, help="IG steps / SmoothGrad samples (default 25)")
    parser.add_argument("--batch-size", type=int, default=5, help="fixed batch size for the equal-batch rows")
    parser.add_argument("--no-upstream-e2e", dest="upstream_e2e", action="store_false",
                        help="skip upstream's XRAI with default parameters (slow on a CPU)")
    parser.add_argument("--tf32", action="store_true",
                        help="on CUDA, keep torch's TF32 defaults (default: full float32 for every contender, "
                             "so the maps can be compared)")
    parser.add_argument("--json", default=None, help="also write every timing and the table to this file")
    args = parser.parse_args(argv)

    import torch

    from .models import load_models
    from .peers import captum_available, upstream_available

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not args.tf32:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.upstream, args.captum = upstream_available(), captum_available()
    if args.quick and args.device == "cpu":
        args.upstream_e2e = False
    cases = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s) {sorted(unknown)}; choose from {', '.join(CASES)}")
    print(f"salplug benchmark: device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}; upstream saliency: {args.upstream}, "
          f"captum: {args.captum}; repeats {args.repeats}"
          + (f"; TF32 convolutions {torch.backends.cudnn.allow_tf32}" if args.device.startswith("cuda") else ""))
    torch.manual_seed(0)
    models = load_models(args.device, tuple(m.strip() for m in args.models.split(",")))
    start = time.perf_counter()
    with torch.inference_mode(False):
        if "xrai" in cases:
            case_xrai_segments(args)
        if "occlusion" in cases:
            case_occlusion(args)
        for mc in models:
            if "gradients" in cases:
                case_gradients(args, mc)
            if "defaults" in cases:
                case_defaults(args, mc)
            if "xrai_e2e" in cases:
                case_xrai_end_to_end(args, mc)
        if "memory" in cases:
            case_memory(args)
        if "throughput" in cases:
            case_throughput(args)
    print_table()
    print(f"\n(total {time.perf_counter() - start:.0f} s; load average now "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"timings": LOG, "rows": [r.__dict__ for r in ROWS], "args": vars(args)}, fh, indent=1)


if __name__ == "__main__":
    main()
