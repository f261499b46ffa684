"""Per-call costs on a device: salplug vs raw torch loops, piece by piece (ms, medians).

``python -m benchmarks.per_call [resnet] [efficientnet] [--profile]`` (CUDA when available, else
CPU). Where ``python -m benchmarks`` gives ratios, this shows the milliseconds behind them: each
method through a reused Explainer and through ``salplug.explain`` (a new adapter per call), the
raw loops (Guided Backprop both as an autograd function and as output hooks), ``to_canonical``
alone and an Explainer's construction. ``--profile`` adds a cProfile of one ResNet call.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time

import numpy as np
import torch

import salplug

from .models import load_models, photo, photos
from .peers import (frozen, noise_for, raw_grad_cam, raw_guided_backprop, raw_ig, raw_smoothgrad,
                    smoothgrad_sigma)


def raw_gradients(model, x, target):
    with frozen(model):
        p = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(p)[:, target].sum(), p)
    return g


def raw_guided_hooks(model, x, target):
    """Guided Backprop as a hook on each nn.ReLU / nn.ReLU6 output (negative gradients cleared)."""
    def on_output(_module, _inputs, out):
        out.register_hook(lambda g: g.clamp_min(0))

    handles = [m.register_forward_hook(on_output) for m in model.modules()
               if isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6))]
    try:
        return raw_gradients(model, x, target)
    finally:
        for h in handles:
            h.remove()


def main(argv=None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    profile = "--profile" in args
    names = tuple(a for a in args if not a.startswith("--")) or ("resnet", "efficientnet")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    repeats = 15 if dev == "cuda" else 3
    host = salplug.get_plugin_manager(autoload=False)

    def ms(fn):
        fn()
        fn()
        sync()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
        return float(np.median(times)) * 1000

    for mc in load_models(dev, names=names):
        model, tgt, layer_name, layer = mc.model, mc.target, mc.layer, mc.module()
        img = photo(mc.size)
        x1 = torch.from_numpy(img).permute(2, 0, 1)[None].to(dev)
        xn = torch.from_numpy(photos(4, mc.size)).permute(0, 3, 1, 2).contiguous().to(dev)
        noise = noise_for(x1, 25, smoothgrad_sigma(img))
        ex = salplug.Explainer(model, host=host)

        def both(label, *a, **k):
            return {f"salplug {label} (Explainer)": lambda: ex.explain(*a, **k),
                    f"salplug.explain {label}": lambda: salplug.explain(model, *a, host=host, **k)}

        rows = {"raw gradients, 4 images": lambda: raw_gradients(model, xn, tgt),
                **both("gradients", xn, "gradients", target=tgt, batch_size=4),
                "raw Guided Backprop (autograd function)": lambda: raw_guided_backprop(model, xn, tgt, 4),
                "raw Guided Backprop (output hooks)": lambda: raw_guided_hooks(model, xn, tgt),
                **both("Guided Backprop", xn, "guided_backprop", target=tgt, batch_size=4),
                "raw Grad-CAM": lambda: raw_grad_cam(model, layer, xn, tgt, 4),
                **both("Grad-CAM", xn, "grad_cam", target=tgt, layer=layer_name, batch_size=4),
                "raw IG, batch 5": lambda: raw_ig(model, x1, tgt, 25, 5),
                **both("IG", x1, "ig", target=tgt, steps=25, batch_size=5),
                "raw SmoothGrad, batch 5": lambda: raw_smoothgrad(model, x1, tgt, noise, 5),
                **both("SmoothGrad", x1, "smoothgrad", target=tgt, nsamples=25, mode="squared", batch_size=5,
                       seed=0),
                "to_canonical, 4 images": lambda: ex.adapter.to_canonical(xn),
                "Explainer() construction": lambda: salplug.Explainer(model, host=host)}
        where = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
        print(f"== {mc.name} on {dev} ({where}), ms, medians of {repeats}")
        for label, fn in rows.items():
            print(f"  {label:44s} {ms(fn):9.3f}")
        if profile and mc.name == "resnet":
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(repeats):
                ex.explain(xn, "guided_backprop", target=tgt, batch_size=4)
            sync()
            prof.disable()
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(20)
            print(out.getvalue())


if __name__ == "__main__":
    main()
