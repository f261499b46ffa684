"""``salplug demo``: EfficientNet-Lite0 (ImageNet) on scikit-image photos with every built-in method.

The demo is an ordinary config (:func:`demo_config`, the same as ``examples/demo.toml``) run by
:func:`salplug.runner.run`. Defaults are chosen to finish in under two minutes on two CPU cores;
``steps`` raises quality. A method of the table that is not registered, or that the backend
cannot run, is skipped with a note; other built-in methods run with their defaults; methods of
third-party plugins run only when named in ``methods``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: (method, parameters at demo size) in display order; visualizers are chosen per method ("auto").
DEMO_METHODS: list[tuple[str, dict[str, Any]]] = [
    ("gradients", {}),
    ("smoothgrad", {"nsamples": 10}),
    ("integrated_gradients", {"steps": 16}),
    ("guided_backprop", {}),
    ("occlusion", {"size": 48, "stride": 16}),
    ("grad_cam", {}),
    ("guided_grad_cam", {}),
    ("blur_ig", {"steps": 16}),
    ("guided_ig", {"steps": 16}),
    ("xrai", {"steps": 8}),
]

#: The parameter ``--steps`` sets, per method.
STEP_PARAMS = {"integrated_gradients": "steps", "blur_ig": "steps", "guided_ig": "steps", "xrai": "steps",
               "smoothgrad": "nsamples"}

DEFAULT_IMAGES = ("chelsea", "coffee")


def _canonical_methods(methods: list[str], host: Any) -> list[str]:
    """``methods`` by their registered names (``ig`` -> ``integrated_gradients``), in the given
    order, each once; a name the host does not know is kept as given (it is skipped with a note)."""
    from .errors import UnknownComponentError

    if host is None:
        from .plugins import get_host

        host = get_host()
    names: list[str] = []
    for name in methods:
        try:
            name = host.methods.get(name).name
        except UnknownComponentError:
            pass
        if name not in names:
            names.append(name)
    return names


def demo_config(*, out_dir: str | Path = "salplug-demo", images: list[str] | None = None,
                methods: list[str] | None = None, steps: int | None = None, backend: str = "torch",
                batch_size: int | None = None, device: str | None = None, seed: int = 0,
                host: Any = None) -> dict[str, Any]:
    """The demo as a raw config mapping (validate it with :func:`salplug.config.load_config`).

    ``methods`` (default: the table, in its order) may use aliases; they are resolved with
    ``host`` (default: the process-wide host) and run in the order given, with the table's
    demo-size parameters where the table has the method, else with their defaults.
    """
    if methods is None:
        chosen = [(m, dict(p)) for m, p in DEMO_METHODS]
    else:
        table = dict(DEMO_METHODS)
        chosen = [(m, dict(table.get(m, {}))) for m in _canonical_methods(methods, host)]
    explanations = []
    for method, params in chosen:
        if steps is not None and method in STEP_PARAMS:
            params[STEP_PARAMS[method]] = steps
        explanations.append({"method": method, "params": params})
    model: dict[str, Any] = {"backend": backend, "source": "efficientnet_lite0", "target": "top1"}
    if batch_size is not None:
        model["batch_size"] = batch_size
    if device is not None:
        model["device"] = device
    return {
        "model": model,
        "inputs": {"samples": list(images or DEFAULT_IMAGES)},
        "explanations": explanations,
        "outputs": {"folder": str(out_dir), "visualizers": ["auto"], "formats": ["png", "npz", "json", "grid", "html"]},
        "seed": seed,
    }


def available_methods(data: dict[str, Any], host: Any, note: Callable[[str], None]) -> list[dict[str, str]]:
    """Drop (in place) explanations whose method is not registered or not runnable on the backend.

    Returns the skipped ones as ``{"method", "reason"}`` records; ``note`` prints each.
    """
    backend_name = data["model"]["backend"]
    try:
        backend = host.backends.get(backend_name)
        provides = frozenset(backend.metadata.get("provides", ()))
    except Exception:  # noqa: BLE001 - an unknown backend is reported by the config check
        provides = None
    kept, skipped = [], []
    for exp in data["explanations"]:
        name = exp["method"]
        if name not in host.methods:
            reason = "not registered (its plugin is not installed yet)"
        else:
            component = host.methods.get(name)
            missing = frozenset(component.metadata.get("requires", ())) - provides if provides is not None else ()
            reason = f"the {backend_name} backend does not provide {', '.join(sorted(missing))}" if missing else None
        if reason is None:
            kept.append(exp)
        else:
            skipped.append({"method": name, "reason": reason})
            note(f"note: skipping {name}: {reason}")
    data["explanations"] = kept
    return skipped


def _other_methods(data: dict[str, Any], host: Any, note: Callable[[str], None]) -> list[dict[str, str]]:
    """Append built-in methods missing from DEMO_METHODS (default parameters); note plugins' methods.

    A third-party plugin's method may be slow at its defaults, so it runs only when named in
    ``--methods``; it is listed as skipped with that hint.
    """
    known = {m for m, _ in DEMO_METHODS}
    skipped = []
    for component in host.methods.components():
        if component.name in known:
            continue
        info = host.plugins.get(component.plugin)
        if info is not None and info.builtin:
            data["explanations"].append({"method": component.name, "params": {}})
        else:
            reason = f"from the plugin {component.provider}; name it in --methods to run it"
            skipped.append({"method": component.name, "reason": reason})
            note(f"note: skipping {component.name}: {reason}")
    return skipped


def run_demo(out_dir: str | Path | None = None, images: list[str] | None = None,
             methods: list[str] | None = None, steps: int | None = None, batch_size: int | None = None,
             device: str | None = None, seed: int | None = None, quiet: bool = False, backend: str | None = None,
             host: Any = None, env: dict[str, str] | None = None) -> Path:
    """Run the demo; returns the path of the HTML index page.

    Arguments left as None come from ``SALPLUG_*`` environment variables (``env``, default
    ``os.environ``), else from the demo defaults (``salplug-demo``, torch, seed 0).
    """
    from .config import ConfigError, apply_overrides, validate_config
    from .plugins import get_host
    from .runner import run

    host = host or get_host()
    note = (lambda _m: None) if quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    data = demo_config(images=images, methods=methods, steps=steps, host=host)
    merged = apply_overrides(data, {"outputs.folder": None if out_dir is None else str(out_dir),
                                    "model.backend": backend, "model.batch_size": batch_size,
                                    "model.device": device, "seed": seed}, env)
    extra = []
    if methods is None:
        extra = _other_methods(merged, host, note)
    skipped = available_methods(merged, host, note) + extra
    if not merged["explanations"]:
        raise ConfigError("none of the demo methods is registered; `salplug list` shows what is installed.")
    config = validate_config(merged, base_dir=Path.cwd(), host=host)
    result = run(config, host=host, quiet=quiet, skipped=skipped,
                 title=f"salplug demo: EfficientNet-Lite0 (ImageNet) on {config.model.backend}")
    return result.index
