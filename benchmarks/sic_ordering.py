"""Does salplug reproduce the published SIC ordering on the demo model?

The XRAI paper (Kapishnikov et al., ICCV 2019; ResNet50-V2 on ImageNet) reports, for PIC on
blurred images: XRAI 0.749 and Grad-CAM 0.760 above IG with black+white baselines 0.575, IG above
plain gradients 0.521, everything above random 0.445 (SIC; AIC in the same order). This script
runs the same comparison with salplug's PIC metric on EfficientNet-Lite0 (ImageNet weights) over
scikit-image sample photos (and square crops of them), and says whether the ordering holds::

    python benchmarks/sic_ordering.py                       # ~10 min on 2 CPU cores
    python benchmarks/sic_ordering.py --sanity              # + the randomisation sanity check
    python benchmarks/sic_ordering.py --full                # upstream defaults (slower)

XRAI's base attribution *is* IG averaged over black and white baselines, so one XRAI run gives
both maps (``return_ig=True``); gradients, Grad-CAM (layer ``_relu1``) and the random baseline run
through ``salplug.evaluate``. Results (CSV, JSON, curves, HTML) go to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

PUBLISHED_SIC = {"xrai": 0.749, "grad_cam": 0.760, "integrated_gradients": 0.575, "gradients": 0.521, "random": 0.445}
PUBLISHED_AIC = {"xrai": 0.728, "grad_cam": 0.727, "integrated_gradients": 0.579, "gradients": 0.532, "random": 0.473}
#: (a, b): a must score above b.
ORDERING = [("xrai", "integrated_gradients"), ("grad_cam", "integrated_gradients"),
            ("integrated_gradients", "gradients"), ("xrai", "random"), ("grad_cam", "random"),
            ("integrated_gradients", "random"), ("gradients", "random")]
#: Photos the demo model classifies with p >= 0.5 (name, crop).
DEFAULT_IMAGES = ("chelsea", "chelsea:left", "chelsea:right", "coffee", "coffee:center", "rocket")
QUICK_THRESHOLDS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.21, 0.34, 0.5, 0.75)


def load_images(specs, size=224):
    """(names, (N, size, size, 3) float32 in [0, 1]) for "name" or "name:left|center|right|top|bottom"."""
    from skimage.transform import resize

    from salplug.runner import load_sample_image

    names, out = [], []
    for spec in specs:
        name, _, crop = spec.partition(":")
        img = load_sample_image(name)
        h, w = img.shape[:2]
        s = min(h, w)
        if crop:
            offsets = {"left": (0, 0), "center": ((h - s) // 2, (w - s) // 2), "right": (0, w - s),
                       "top": (0, 0), "bottom": (h - s, 0)}
            top, left = offsets[crop]
            img = img[top:top + s, left:left + s]
        x = resize(img.astype(np.float32) / 255.0, (size, size), order=1, anti_aliasing=True)
        out.append((np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8))  # the 8-bit photo PIC measures
        names.append(spec)
    return names, np.stack(out).astype(np.float32) / 255.0


def check_order(values: dict[str, float]) -> list[str]:
    return [f"{a} ({values[a]:.3f}) is not above {b} ({values[b]:.3f})"
            for a, b in ORDERING if a in values and b in values and not values[a] > values[b]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", nargs="+", default=list(DEFAULT_IMAGES))
    parser.add_argument("--ig-steps", type=int, default=25, help="IG steps per baseline inside XRAI")
    parser.add_argument("--min-pred", type=float, default=0.5, help="PIC min_pred_value")
    parser.add_argument("--full", action="store_true", help="upstream defaults: 100 IG steps, 13 thresholds")
    parser.add_argument("--sanity", action="store_true", help="also run the randomisation sanity check")
    parser.add_argument("--sanity-images", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="sic-ordering")
    args = parser.parse_args(argv)

    # Busy-waiting OpenMP threads of torch steal the cores from the (single-threaded) PIC blurring.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(args.threads)
    import salplug
    from salplug.evaluate import evaluate
    from salplug.metrics.pic_metric import DEFAULT_THRESHOLDS
    from salplug.models.efficientnet_lite0 import load_efficientnet_lite0, normalise

    started = time.perf_counter()
    model = load_efficientnet_lite0()
    names, images = load_images(args.images)
    host = salplug.get_plugin_manager(autoload=False)
    steps = 100 if args.full else args.ig_steps
    thresholds = DEFAULT_THRESHOLDS if args.full else QUICK_THRESHOLDS

    begin = time.perf_counter()
    xrai = salplug.explain(model, normalise(images), "xrai", steps=steps, return_ig=True, host=host,
                           batch_size=args.batch_size, progress=True)
    xrai_seconds = time.perf_counter() - begin
    ig = xrai.extras["attribution"]  # IG, black and white baselines averaged (channels kept)
    print(f"XRAI + IG (black+white, {steps} steps each): {xrai_seconds:.1f} s for {len(images)} images",
          file=sys.stderr)

    out = Path(args.out)
    result = evaluate(
        model, images, methods=["gradients", {"method": "grad_cam", "params": {"layer": "_relu1"}}],
        maps={"xrai": xrai.canonical, "integrated_gradients": ig},
        metrics={"pic": {"thresholds": list(thresholds), "min_pred_value": args.min_pred}},
        preprocess=normalise, backend="torch", host=host, batch_size=args.batch_size, seed=args.seed,
        names=names, out_dir=out)
    order = ["xrai", "grad_cam", "integrated_gradients", "gradients", "random"]
    lines = ["| method | SIC mean ± std (n) | SIC median curve | AIC mean ± std (n) | AIC median curve |"
             " published SIC / AIC |", "|---|---|---|---|---|---|"]
    stats: dict[str, dict[str, float]] = {"sic": {}, "aic": {}, "sic_median": {}, "aic_median": {}}
    for method in order:
        cells = []
        for kind in ("sic", "aic"):
            v = result.scores(method, kind)
            ok = v[~np.isnan(v)]
            stats[kind][method] = float(ok.mean()) if len(ok) else float("nan")
            summary = result.results[(method, "pic")].summary.get(f"{kind}_median_curve_auc", float("nan"))
            stats[f"{kind}_median"][method] = summary
            spread = f" ± {ok.std(ddof=1):.3f}" if len(ok) > 1 else ""
            cells += [f"{stats[kind][method]:.3f}{spread} ({len(ok)})", f"{summary:.3f}"]
        lines.append(f"| {method} | " + " | ".join(cells) +
                     f" | {PUBLISHED_SIC[method]:.3f} / {PUBLISHED_AIC[method]:.3f} |")
    report = ["# SIC ordering on EfficientNet-Lite0", "",
              f"Images: {', '.join(names)} (224x224); PIC thresholds {list(thresholds)}, min_pred_value "
              f"{args.min_pred}, seed {args.seed}; XRAI/IG {steps} steps per baseline.", "", *lines, ""]
    for key, label in (("sic", "SIC (mean over images)"), ("sic_median", "SIC (median curve, as the paper)"),
                       ("aic", "AIC (mean over images)")):
        broken = check_order(stats[key])
        report.append(f"- {label}: " + ("the published ordering holds." if not broken else
                                        "the published ordering does NOT fully hold: " + "; ".join(broken) + "."))
    if result.notes:
        report += ["", "Notes:", *[f"- {n}" for n in result.notes]]
    seconds = {m: round(info["seconds"] + sum(info["metric_seconds"].values()), 1) for m, info in result.methods.items()}
    report += ["", f"Timings (s, method + PIC): {seconds}; XRAI+IG {xrai_seconds:.1f} s."]

    if args.sanity:
        k = min(args.sanity_images, len(images))
        sanity = evaluate(model, images[:k], methods=["gradients", "guided_backprop",
                                                      {"method": "grad_cam", "params": {"layer": "_relu1"}}],
                          metrics=["model_randomization"], preprocess=normalise, backend="torch", host=host,
                          batch_size=args.batch_size, seed=args.seed, names=names[:k], out_dir=out / "sanity")
        report += ["", "## Cascading randomisation (Spearman of absolute maps, mean over "
                   f"{k} images)", "", sanity.table(), ""]
        for method in sanity.methods:
            curve = sanity.results[(method, "model_randomization")].curves["rank_corr_per_layer"]
            report.append(f"- {method}: " + ", ".join(f"{t} {v:.2f}" for t, v in zip(curve.ticks, curve.mean())))
    report += ["", f"Total {time.perf_counter() - started:.0f} s."]
    text = "\n".join(report)
    (out / "REPORT.md").write_text(text + "\n", encoding="utf-8")
    (out / "ordering.json").write_text(json.dumps(stats, indent=2), encoding="utf-8")
    print(result.table())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
