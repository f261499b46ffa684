"""The ``salplug`` command line. Heavy imports happen inside the commands that need them."""

from __future__ import annotations

import sys

import click

from . import __version__
from .errors import SalplugError


def _host():
    from .plugins import get_host

    return get_host()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="salplug")
def main() -> None:
    """Saliency maps for image models, on any framework, extensible by plugins."""


@main.command("list")
@click.option("--kind", type=click.Choice(["method", "backend", "visualizer", "metric"]), default=None,
              help="Show one kind only.")
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


@main.command("demo")
@click.option("--out", "out_dir", default="salplug-demo", show_default=True, help="Output folder.")
@click.option("--images", default="chelsea,coffee", show_default=True,
              help="Comma-separated scikit-image sample photos (e.g. chelsea,coffee,astronaut).")
@click.option("--methods", default=None, help="Comma-separated methods (default: every built-in).")
@click.option("--steps", default=None, type=int, help="Path steps for IG-style methods (more = slower, smoother).")
@click.option("--batch-size", default=None, type=int, help="Rows per model call.")
@click.option("--device", default=None, help="torch device, e.g. cpu or cuda.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--quiet", is_flag=True, help="No progress output.")
def demo(out_dir, images, methods, steps, batch_size, device, seed, quiet) -> None:
    """Explain EfficientNet-Lite0 on sample photos with every method; writes PNG grids and index.html."""
    from .demo import run_demo

    try:
        index = run_demo(out_dir, images=[s for s in images.split(",") if s],
                         methods=methods.split(",") if methods else None, steps=steps,
                         batch_size=batch_size, device=device, seed=seed, quiet=quiet)
    except SalplugError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    click.echo(f"wrote {index}")


if __name__ == "__main__":  # pragma: no cover
    main()
