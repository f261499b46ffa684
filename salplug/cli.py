"""The ``salplug`` command line. Heavy imports happen inside the commands that need them.

Errors a user can fix (a bad config, a missing file, an unknown method or layer) print one
paragraph on stderr and exit with status 2, without a traceback and without partial output.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

from . import __version__
from .errors import SalplugError

EXIT_USAGE = 2


def _host():
    from .plugins import get_host

    return get_host()


def _user_errors(func):
    """Turn a SalplugError into ``error: <one paragraph>`` on stderr and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SalplugError as exc:
            message = " ".join(str(exc).split())
            click.secho(f"error: {message}", fg="red", err=True)
            sys.exit(EXIT_USAGE)

    return wrapper


def _common_run_options(func):
    """--backend/--device/--batch-size/--seed/--quiet, shared by run, explain and demo."""
    for option in reversed([
        click.option("--backend", default=None, help="Backend: torch, tf2, tf1 or a plugin's (overrides the config)."),
        click.option("--device", default=None, help="Device for the backend, e.g. cpu or cuda:0."),
        click.option("--batch-size", type=int, default=None, help="Rows per model call for inner work."),
        click.option("--seed", type=int, default=None, help="Seed for random methods (SmoothGrad noise)."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bars or notes."),
    ]):
        func = option(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="salplug")
def main() -> None:
    """Saliency maps for image models, on any framework, extensible by plugins."""
    # OpenMP threads that busy-wait between parallel regions fight every other process for the
    # cores; on a shared 2-core machine that made `salplug demo` 7x slower (125 s vs 18 s).
    # Frameworks are imported later, inside the commands, so this still takes effect.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@main.command("list")
@click.option("--kind", type=click.Choice(["method", "backend", "visualizer", "metric"]), default=None,
              help="Show one kind only.")
@_user_errors
def list_components(kind: str | None) -> None:
    """Every registered method, backend, visualizer and metric, with who provides it."""
    host = _host()
    for k, registry in host.registries.items():
        if kind and k != kind:
            continue
        click.secho(f"{k}s ({len(registry)})", bold=True)
        if not len(registry):
            click.echo("  (none registered)")
        for c in registry:
            aliases = f" [{', '.join(c.aliases)}]" if c.aliases else ""
            extra = ""
            if c.metadata.get("requires"):
                extra = f" requires: {', '.join(sorted(c.metadata['requires']))}"
            elif c.metadata.get("provides"):
                extra = f" provides: {', '.join(sorted(c.metadata['provides']))}"
            click.echo(f"  {c.name:<24} {c.provider:<26} {c.metadata.get('description', '')}{aliases}{extra}")
    _report_errors(host)


@main.command("plugins")
@_user_errors
def list_plugins() -> None:
    """Loaded plugins: distribution, version, hooks, and load errors."""
    host = _host()
    for info in host.plugins.values():
        origin = "built-in" if info.builtin else f"{info.distribution or '?'} {info.version or ''}".strip()
        status = click.style(f"NOT LOADED: {info.error}", fg="red") if info.error else ", ".join(info.hooks)
        click.echo(f"{info.name:<44} {origin:<22} {status}")


def _report_errors(host) -> None:
    for name, error in host.load_errors.items():
        if error != "blocked":
            click.secho(f"plugin {name!r} was not loaded: {error}", fg="yellow", err=True)


def _config_file(config: Path | None) -> Path:
    """CONFIG, or the config found in the working folder when none is given."""
    from .config import ConfigError, find_config

    if config is None:
        config = find_config(".")
        if config is None:
            raise ConfigError("no CONFIG given and no salplug.toml, salplug.yaml or pyproject.toml with "
                              "[tool.salplug] here; pass a config file (see examples/demo.toml).")
    return config


def _overrides(backend, device, batch_size, seed, target, layer) -> dict:
    """The config keys that the shared flags set (None: the flag was not given)."""
    return {"model.backend": backend, "model.device": device, "model.batch_size": batch_size, "seed": seed,
            "model.target": target, "model.layer": layer}


def _absolute(out_dir) -> str | None:
    """--out relative to the working folder, not to the config file."""
    if not out_dir:
        return None
    try:
        return str(Path(out_dir).absolute())
    except FileNotFoundError:  # the working folder was deleted
        raise click.UsageError(f"--out {out_dir!r} is relative, but the working folder no longer exists; "
                               f"give an absolute path or cd to a folder that exists.") from None


def _finish(result_index, folder, quiet: bool) -> None:
    if not quiet:
        click.echo(f"wrote {result_index if result_index is not None else folder}")


@main.command("run")
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", default=None, help="Output folder (overrides outputs.folder).")
@click.option("--target", default=None, help='Class index, "top1", or comma-separated indices, one per image.')
@click.option("--layer", default=None, help="Layer for Grad-CAM style methods (overrides model.layer).")
@_common_run_options
@_user_errors
def run_config(config, out_dir, target, layer, backend, device, batch_size, seed, quiet) -> None:
    """Run the explanations a config file describes (TOML, YAML or pyproject.toml [tool.salplug]).

    Without CONFIG, uses salplug.toml / salplug.yaml in the working folder, else the
    [tool.salplug] table of ./pyproject.toml. Flags beat SALPLUG_* variables, which beat the file.
    """
    from .config import load_config
    from .runner import run

    config = _config_file(config)
    host = _host()
    overrides = {"outputs.folder": _absolute(out_dir), **_overrides(backend, device, batch_size, seed, target, layer)}
    cfg = load_config(config, overrides=overrides, host=host)
    result = run(cfg, host=host, quiet=quiet, source=str(config))
    _finish(result.index, result.folder, quiet)


@main.command("evaluate")
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--metric", "metrics", multiple=True,
              help="Metric (repeatable; default: the config's evaluation.metrics, else insertion and deletion).")
@click.option("--out", "out_dir", default=None, help="Output folder (overrides evaluation.folder).")
@click.option("--target", default=None, help='Class index, "top1", or comma-separated indices, one per image.')
@click.option("--layer", default=None, help="Layer for Grad-CAM style methods (overrides model.layer).")
@_common_run_options
@_user_errors
def evaluate_command(config, metrics, out_dir, target, layer, backend, device, batch_size, seed, quiet) -> None:
    """Score a config's explanations with metrics (insertion, deletion, pic, model_randomization).

    Prints the table (mean ± std over the photos, the random baseline included) and writes
    evaluation.csv, evaluation.json, curve plots and index.html (see docs/evaluation.md).
    """
    from .config import load_config
    from .evaluate import evaluate_config

    config = _config_file(config)
    host = _host()
    overrides = {"evaluation.folder": _absolute(out_dir),
                 **_overrides(backend, device, batch_size, seed, target, layer)}
    cfg = load_config(config, overrides=overrides, host=host)
    result = evaluate_config(cfg, host=host, quiet=quiet, metrics=list(metrics) or None, source=str(config))
    click.echo(result.table())
    for note in [] if quiet else result.notes:
        click.secho(f"note: {note}", fg="yellow", err=True)
    _finish(result.files.get("html"), None, quiet)


@main.command("explain")
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("--sample", "samples", multiple=True, help="A scikit-image sample photo (repeatable), e.g. chelsea.")
@click.option("--method", "-m", "methods", multiple=True, help="Method (repeatable; default: gradients).")
@click.option("--model", default=None, help='Built-in model name or "package.module:attribute" (default: the demo model).')
@click.option("--target", default=None, help='Class index, "top1" (default), or comma-separated indices per image.')
@click.option("--layer", default=None, help="Layer for Grad-CAM style methods.")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
              help="Method parameter (repeatable), e.g. steps=50 or integrated_gradients.steps=50.")
@click.option("--visualizer", "visualizers", multiple=True, help="Visualizer for the PNGs (repeatable; default auto).")
@click.option("--out", "out_dir", default=None, help="Output folder [default: salplug-explain].")
@_common_run_options
@_user_errors
def explain_images(images, samples, methods, model, target, layer, params, visualizers, out_dir, backend, device,
                   batch_size, seed, quiet) -> None:
    """Explain IMAGE files (and --sample photos) with one or more methods; writes PNGs, .npz, summary.json."""
    from .config import ConfigError, load_config
    from .runner import run

    if not images and not samples:
        raise ConfigError("give at least one IMAGE file or --sample NAME (e.g. --sample chelsea).")
    methods = list(methods) or ["gradients"]
    host = _host()
    per_method: dict[str, dict] = {m: {} for m in methods}
    for item in params:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param {item!r}: write KEY=VALUE, e.g. steps=50.")
        value = _parse_value(raw)
        method, dot, name = key.rpartition(".")
        chosen = [_same_method(host, method, methods)] if dot else methods
        if chosen == [None]:
            raise ConfigError(f"--param {item!r}: {method!r} is not one of the --method values ({', '.join(methods)}).")
        for m in chosen:
            per_method[m][name] = value
    # the defaults form the "file" layer: SALPLUG_* variables beat them, flags beat both
    data = {
        "model": {"source": "efficientnet_lite0"},
        "inputs": {"files": [str(Path(p).absolute()) for p in images], "samples": list(samples)},
        "explanations": [{"method": m, "params": per_method[m]} for m in methods],
        "outputs": {"folder": "salplug-explain", "visualizers": list(visualizers) or ["auto"]},
    }
    overrides = {"model.source": model, "outputs.folder": _absolute(out_dir),
                 **_overrides(backend, device, batch_size, seed, target, layer)}
    cfg = load_config(data=data, overrides=overrides, host=host)
    result = run(cfg, host=host, quiet=quiet)
    _finish(result.index, result.folder, quiet)


def _same_method(host, name: str, methods: list[str]) -> str | None:
    """The --method value that ``name`` (a method name or alias) stands for, or None."""
    if name in methods:
        return name

    def canonical(n: str) -> str | None:
        try:
            return host.methods.get(n).name
        except SalplugError:  # unknown: reported later, with the closest names
            return None

    wanted = canonical(name)
    return next((m for m in methods if wanted is not None and canonical(m) == wanted), None)


def _parse_value(raw: str):
    """A --param value: TOML scalar/array syntax (50, 0.5, true, "x", [1, 2]), else the plain string."""
    import tomllib

    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


@main.command("demo")
@click.option("--out", "out_dir", default=None, help="Output folder [default: salplug-demo].")
@click.option("--images", default=None,
              help="Comma-separated scikit-image sample photos [default: chelsea,coffee] (e.g. add astronaut,rocket).")
@click.option("--methods", default=None, help="Comma-separated methods (default: every built-in one).")
@click.option("--steps", default=None, type=int,
              help="Path steps for IG-style methods and SmoothGrad samples (more = slower, smoother).")
@_common_run_options
@_user_errors
def demo(out_dir, images, methods, steps, backend, device, batch_size, seed, quiet) -> None:
    """Explain EfficientNet-Lite0 on sample photos with every method; writes PNG grids and index.html."""
    from .demo import run_demo

    index = run_demo(out_dir, images=[s.strip() for s in images.split(",") if s.strip()] if images else None,
                     methods=[m.strip() for m in methods.split(",") if m.strip()] if methods else None,
                     steps=steps, batch_size=batch_size, device=device, seed=seed, quiet=quiet, backend=backend)
    _finish(index, None, quiet)


if __name__ == "__main__":  # pragma: no cover
    main()
