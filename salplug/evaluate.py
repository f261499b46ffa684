"""``salplug.evaluate``: every method x every metric on a set of images, as a table and plots.

Example::

    from salplug.models.efficientnet_lite0 import load_efficientnet_lite0, normalise
    result = salplug.evaluate(load_efficientnet_lite0(), photos,          # (N, 224, 224, 3) in [0, 1]
                              methods=["gradients", {"method": "grad_cam", "params": {"layer": "_relu1"}}],
                              metrics=["insertion", "deletion", "pic"], preprocess=normalise,
                              out_dir="evaluation")
    print(result.table())       # mean ± std per method and score; the random baseline included

The metric protocol is in :mod:`salplug.metrics.base`; docs/evaluation.md describes both.
Matplotlib is imported only to draw the plots.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, ParameterError, SalplugError, TargetError, model_failure
from .registry import call_plugin, instantiate, resolve_keywords

__all__ = ["DEFAULT_METHODS", "DEFAULT_METRICS", "EvaluationResult", "evaluate", "evaluate_config"]

DEFAULT_METHODS = ("gradients", "integrated_gradients")
DEFAULT_METRICS = ("insertion", "deletion")
RANDOM = "random"
PROBABILITIES_NOTE = ("The model's outputs are already probabilities (every image's outputs are non-negative and "
                      "sum to 1): the metrics use them as they are, without another softmax.")


# ---------------------------------------------------------------------------------------------
# Specs
# ---------------------------------------------------------------------------------------------

def _specs(value: Any, key: str, what: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, registered name, params) from names, (name, params) pairs, dicts or a mapping."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if isinstance(value, Mapping):
        value = [{key: name, "params": dict(params or {})} for name, params in value.items()]
    out = []
    for item in value:
        if isinstance(item, str):
            out.append((item, item, {}))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            out.append((item[0], item[0], dict(item[1] or {})))
        elif isinstance(item, Mapping) and isinstance(item.get(key), str):
            extra = set(item) - {key, "params", "name"}
            if extra:
                raise ParameterError(f"A {what} entry takes {key!r}, 'params' and 'name'; got {sorted(extra)}.")
            out.append((item.get("name") or item[key], item[key], dict(item.get("params") or {})))
        else:
            raise ParameterError(f"Each {what} is a name, a (name, params) pair or a dict with {key!r}; got {item!r}.")
    labels = [label for label, _, _ in out]
    dup = {label for label in labels if labels.count(label) > 1}
    if dup:
        raise ParameterError(f"Two {what}s are called {sorted(dup)[0]!r}; give them distinct 'name's.")
    return out


def load_metric(host: Any, name: str, adapter: Any) -> Any:
    """Instantiate metric ``name`` after checking the adapter provides what it requires."""
    return instantiate(host.metrics.get(name), adapter)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist()) if value.size <= 64 else f"array{list(value.shape)}"
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if callable(value):
        return getattr(value, "__name__", type(value).__name__)
    return repr(value)


# ---------------------------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class EvaluationResult:
    """Scores of every method under every metric.

    results : (method label, metric label) -> :class:`~salplug.metrics.base.MetricResult`.
    methods : method label -> {"method", "params", "seconds"}; metrics : label -> {"metric", "params"}.
    attributions : method label -> canonical maps (N, H, W[, C]).
    """

    methods: dict[str, dict[str, Any]]
    metrics: dict[str, dict[str, Any]]
    results: dict[tuple[str, str], Any]
    attributions: dict[str, np.ndarray]
    targets: Any
    names: list[str]
    seed: int
    backend: str
    notes: list[str] = dataclasses.field(default_factory=list)
    files: dict[str, str] = dataclasses.field(default_factory=dict)

    # -- numbers ---------------------------------------------------------------------------
    def score_names(self) -> list[str]:
        """Every score column, in metric order (e.g. insertion, deletion, sic, aic)."""
        out: list[str] = []
        for (_, _), result in self.results.items():
            for name in result.scores:
                if name not in out:
                    out.append(name)
        return out

    def summary_names(self) -> list[str]:
        out: list[str] = []
        for result in self.results.values():
            for name in result.summary:
                if name not in out:
                    out.append(name)
        return out

    def scores(self, method: str, score: str) -> np.ndarray:
        """Per-image values of ``score`` for ``method`` (NaN where an image was not scored)."""
        for (label, _), result in self.results.items():
            if label == method and score in result.scores:
                return np.asarray(result.scores[score], np.float64)
        raise KeyError(f"No score {score!r} for method {method!r}.")

    def higher_is_better(self, score: str) -> bool:
        for result in self.results.values():
            if score in result.higher_is_better:
                return bool(result.higher_is_better[score])
        raise KeyError(score)

    def rows(self) -> list[dict[str, Any]]:
        """One record per (method, score): mean, std, sem, n and the per-image values."""
        out = []
        for label in self.methods:
            for (m, metric), result in self.results.items():
                if m != label:
                    continue
                for score, values in result.scores.items():
                    v = np.asarray(values, np.float64)
                    ok = v[~np.isnan(v)]
                    n = len(ok)
                    std = float(ok.std(ddof=1)) if n > 1 else float("nan")
                    out.append({
                        "method": label, "metric": metric, "score": score,
                        "mean": float(ok.mean()) if n else float("nan"), "std": std,
                        "sem": std / math.sqrt(n) if n > 1 else float("nan"), "n": n, "n_images": len(v),
                        "higher_is_better": bool(result.higher_is_better.get(score, True)),
                        "values": [None if np.isnan(a) else float(a) for a in v],
                    })
                for name, value in result.summary.items():
                    out.append({"method": label, "metric": metric, "score": name, "mean": float(value),
                                "std": float("nan"), "sem": float("nan"), "n": None, "n_images": None,
                                "higher_is_better": True, "values": None})
        return out

    def table(self, digits: int = 3) -> str:
        """A text table: one row per method, ``mean ± std`` per score (arrows: which way is better)."""
        scores, summaries = self.score_names(), self.summary_names()
        header = ["method"] + [f"{s} {'↑' if self.higher_is_better(s) else '↓'}" for s in scores] + summaries
        lines = [header]
        for label in self.methods:
            row = [label]
            for s in scores:
                try:
                    v = self.scores(label, s)
                except KeyError:
                    row.append("-")
                    continue
                ok = v[~np.isnan(v)]
                if not len(ok):
                    row.append("n/a")
                    continue
                cell = f"{ok.mean():.{digits}f}"
                if len(ok) > 1:
                    cell += f" ± {ok.std(ddof=1):.{digits}f}"
                if len(ok) < len(v):
                    cell += f" (n={len(ok)})"
                row.append(cell)
            for s in summaries:
                vals = [r.summary[s] for (m, _), r in self.results.items() if m == label and s in r.summary]
                row.append(f"{vals[0]:.{digits}f}" if vals else "-")
            lines.append(row)
        widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
        text = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in lines]
        text.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(text)

    def __str__(self) -> str:
        return self.table()

    # -- files -----------------------------------------------------------------------------
    def to_csv(self, path: str | Path) -> str:
        import csv

        path = Path(path)
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["method", "metric", "score", "mean", "std", "sem", "n", "n_images", "higher_is_better"])
            for r in self.rows():
                writer.writerow([r["method"], r["metric"], r["score"], _fmt(r["mean"]), _fmt(r["std"]),
                                 _fmt(r["sem"]), r["n"] if r["n"] is not None else "",
                                 r["n_images"] if r["n_images"] is not None else "", r["higher_is_better"]])
        return str(path)

    def to_dict(self) -> dict[str, Any]:
        from . import __version__

        curves: dict[str, Any] = {}
        for (label, _), result in self.results.items():
            for name, curve in result.curves.items():
                curves.setdefault(label, {})[name] = {
                    "x": _jsonable(np.asarray(curve.x, np.float64).round(6).tolist()),
                    "mean": _jsonable(np.asarray(curve.mean(), np.float64).round(6).tolist()),
                    "ticks": curve.ticks, "xlabel": curve.xlabel, "ylabel": curve.ylabel}
        skipped = {f"{label}/{metric}": _jsonable(result.extras["skipped"])
                   for (label, metric), result in self.results.items() if result.extras.get("skipped")}
        return {
            "salplug": __version__, "seed": self.seed, "backend": self.backend, "images": self.names,
            "targets": _jsonable(self.targets), "methods": _jsonable(self.methods), "metrics": _jsonable(self.metrics),
            "rows": _jsonable(self.rows()), "curves": curves, "skipped": skipped, "notes": self.notes,
        }

    def to_json(self, path: str | Path) -> str:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        return str(path)

    def plots(self, folder: str | Path) -> dict[str, str]:
        """One PNG per curve kind (a line per method, mean ± std band); returns name -> path."""
        from matplotlib.figure import Figure

        folder = Path(folder)
        kinds: dict[str, list[tuple[str, Any]]] = {}
        for (label, _), result in self.results.items():
            for name, curve in result.curves.items():
                kinds.setdefault(name, []).append((label, curve))
        out = {}
        taken: set[str] = set()
        for name, entries in kinds.items():
            ticks = entries[0][1].ticks
            fig = Figure(figsize=(max(6.4, 0.28 * len(ticks)) if ticks else 6.4, 4.8 if not ticks else 5.6))
            ax = fig.add_subplot()
            for label, curve in entries:
                y = np.asarray(curve.y, np.float64)
                y = y[~np.isnan(y).all(axis=1)]
                if not len(y):
                    continue
                mean = y.mean(axis=0)
                style = {"linestyle": "--", "color": "0.4"} if label == RANDOM else {}
                line = ax.plot(curve.x, mean, label=label, marker="o" if ticks else None, markersize=3, **style)[0]
                if len(y) > 1:
                    std = y.std(axis=0, ddof=1)
                    ax.fill_between(curve.x, mean - std, mean + std, alpha=0.12, color=line.get_color())
            first = entries[0][1]
            ax.set_xlabel(first.xlabel)
            ax.set_ylabel(first.ylabel)
            ax.set_title(name)
            if ticks:
                ax.set_xticks(first.x)
                ax.set_xticklabels(ticks, rotation=90, fontsize=7)
                ax.axhline(0.0, color="0.7", linewidth=0.8)
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:  # no line (no image scored): no legend, no warning
                ax.legend(fontsize=8)
            fig.tight_layout()
            path = folder / f"curve_{_file_safe(name, taken)}.png"
            fig.savefig(path, dpi=110)
            out[name] = str(path)
        return out

    def html(self, plots: Mapping[str, str] | None = None, links: Mapping[str, str] | None = None) -> str:
        """An HTML page with the table, the notes and the plots (paths relative to the page)."""
        scores, summaries = self.score_names(), self.summary_names()
        head = "".join(f"<th>{html.escape(s)} {'&uarr;' if self.higher_is_better(s) else '&darr;'}</th>"
                       for s in scores) + "".join(f"<th>{html.escape(s)}</th>" for s in summaries)
        body = []
        for label in self.methods:
            cells = [f"<td>{html.escape(label)}</td>"]
            for s in scores:
                try:
                    v = self.scores(label, s)
                    ok = v[~np.isnan(v)]
                    cell = f"{ok.mean():.3f} &plusmn; {ok.std(ddof=1):.3f}" if len(ok) > 1 else \
                        (f"{ok.mean():.3f}" if len(ok) else "n/a")
                    if 0 < len(ok) < len(v):
                        cell += f" (n={len(ok)})"
                except KeyError:
                    cell = "-"
                cells.append(f"<td>{cell}</td>")
            for s in summaries:
                vals = [r.summary[s] for (m, _), r in self.results.items() if m == label and s in r.summary]
                cells.append(f"<td>{vals[0]:.3f}</td>" if vals else "<td>-</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        methods = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v['method'])} "
                          f"{html.escape(json.dumps(_jsonable(v['params'])))} ({v['seconds']:.2f} s)</li>"
                          for k, v in self.methods.items())
        figures = "".join(f'<figure><img src="{_href(Path(p).name)}" alt="{html.escape(n)}">'
                          f"<figcaption>{html.escape(n)}</figcaption></figure>" for n, p in (plots or {}).items())
        files = " · ".join(f'<a href="{_href(Path(p).name)}">{html.escape(k)}</a>' for k, p in (links or {}).items())
        return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>salplug evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} td:first-child{{text-align:left}}
figure{{display:inline-block;margin:1em}} img{{max-width:720px}}</style></head><body>
<h1>salplug evaluation</h1>
<p>{len(self.names)} image(s): {html.escape(", ".join(self.names))}; backend {html.escape(self.backend)};
seed {self.seed}. Mean &plusmn; standard deviation over images; &uarr; higher is better, &darr; lower is better.</p>
<table><tr><th>method</th>{head}</tr>
{"".join(body)}</table>
<p>{files}</p>
<h2>Methods</h2><ul>{methods}</ul>
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
<h2>Plots</h2>{figures}
</body></html>
"""

    def save(self, out_dir: str | Path, formats: Sequence[str] = ("csv", "json", "png", "html"), *,
             overwrite: bool = True) -> dict[str, str]:
        """Write the table (CSV, JSON), the plots (PNG) and an HTML page linking them into ``out_dir``.

        As ``salplug run`` writes: into a hidden folder moved into place at the end; an existing
        ``out_dir`` is replaced only when salplug wrote it (and ``overwrite``), else ParameterError.
        """
        return self._save(out_dir, formats, overwrite=overwrite, where="out_dir", overwrite_key="overwrite",
                          error=ParameterError)

    def _save(self, out_dir: str | Path, formats: Sequence[str], *, overwrite: bool, where: str,
              overwrite_key: str, error: type, claim_parent: bool = False) -> dict[str, str]:
        from .outputs import Staging, check_destination

        final = check_destination(out_dir, overwrite=overwrite, where=where, overwrite_key=overwrite_key,
                                  error=error)
        staging = Staging(final, where, claim_parent=claim_parent, error=error)
        try:
            folder = staging.path
            files: dict[str, str] = {}
            if "csv" in formats:
                files["csv"] = self.to_csv(folder / "evaluation.csv")
            if "json" in formats:
                files["json"] = self.to_json(folder / "evaluation.json")
            plots = self.plots(folder) if "png" in formats else {}
            files.update({f"plot:{k}": v for k, v in plots.items()})
            if "html" in formats:
                page = folder / "index.html"
                page.write_text(self.html(plots, {k: v for k, v in files.items() if k in ("csv", "json")}),
                                encoding="utf-8")
                files["html"] = str(page)
            staging.commit()
        except OSError as exc:  # a full disk, a name the file system refuses, a folder gone
            staging.discard()
            raise error(f"{where}: writing {str(final)!r} failed: {exc}; nothing was written.") from exc
        except BaseException:
            staging.discard()
            raise
        files = {k: str(final / Path(v).name) for k, v in files.items()}
        self.files.update(files)
        return files


def _relabel(result: Any, label: str, name: str) -> Any:
    """Score names of a metric used under its own ``label``: "label" for a single score named
    like the metric, else "label.score" (so two settings of one metric get distinct columns)."""
    if label == name:
        return result

    def key(score: str) -> str:
        return label if len(result.scores) == 1 and score in (name, *result.scores) else f"{label}.{score}"

    mapping = {s: key(s) for s in result.scores}
    return dataclasses.replace(
        result, scores={mapping[k]: v for k, v in result.scores.items()},
        higher_is_better={mapping.get(k, k): v for k, v in result.higher_is_better.items()},
        curves={mapping.get(k, f"{label}.{k}"): v for k, v in result.curves.items()},
        summary={f"{label}.{k}": v for k, v in result.summary.items()})


def _file_safe(name: str, taken: set[str]) -> str:
    """``name`` as part of a file name: characters file systems refuse become ``_``, at most 100
    bytes, distinct from the names in ``taken`` (which it joins)."""
    safe = "".join("_" if c in '/\\:*?"<>|' or ord(c) < 32 else c for c in name) or "_"
    while len(safe.encode("utf-8")) > 100:
        safe = safe[:-1]
    base, n = safe, 2
    while safe.lower() in taken:
        safe, n = f"{base}_{n}", n + 1
    taken.add(safe.lower())
    return safe


def _href(name: str) -> str:
    """A file name as an attribute value: URL-quoted (``#``, ``?``, ``%``), then HTML-escaped."""
    from urllib.parse import quote

    return html.escape(quote(name, safe="/"))


def _fmt(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.6g}"


# ---------------------------------------------------------------------------------------------
# evaluate()
# ---------------------------------------------------------------------------------------------

def _check_metric(component: Any, metric: Any, label: str, ctx: Any, x: np.ndarray, targets: Any,
                  params: dict[str, Any]) -> None:
    """The metric's own check of its parameter values (if it has one), its failures named."""
    if not hasattr(metric, "check"):
        return
    try:
        call_plugin(component, "checking the parameters (its check())", metric.check, ctx, x, targets, **params)
    except ParameterError as exc:
        raise ParameterError(f"Metric {label!r}: {exc}") from None


def _probe(ctx: Any, plan_methods: list[tuple[str, str, dict[str, Any]]]) -> Any:
    """The context a metric's check sees: the first method's name (for metrics that rerun it)."""
    if not plan_methods:
        return ctx
    return dataclasses.replace(ctx, method_name=plan_methods[0][1], method_params=plan_methods[0][2])


class _Recording:
    """An adapter that keeps the outputs of its ``outputs`` calls (the top-1 pass, reused)."""

    def __init__(self, adapter: Any):
        self._adapter = adapter
        self.seen: list[np.ndarray] = []

    def outputs(self, x: Any) -> Any:
        out = self._adapter.outputs(x)
        self.seen.append(np.asarray(out))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._adapter, name)


def _images_to_canonical(adapter: Any, images: Any, layout: str | None,
                         for_model: bool = True) -> tuple[np.ndarray, Any]:
    """Canonical float32 images in [0, 1] (uint8 divided by 255). ``for_model=False`` (a
    ``preprocess`` makes the model input): read as images, without the model's checks."""
    dtype = str(getattr(images, "dtype", ""))
    is_uint8 = dtype in ("uint8", "torch.uint8", "<dtype: 'uint8'>")
    if for_model:
        canonical, info = adapter.to_canonical(images, layout)
    else:
        from .layout import default_layout, numpy_to_canonical, read_array

        if hasattr(images, "detach"):  # a torch tensor: channels first by default, as the torch backend reads it
            arr, channels_first = images.detach().cpu().numpy(), True
        elif hasattr(images, "numpy") and not isinstance(images, np.ndarray):  # a TensorFlow tensor
            arr, channels_first = np.asarray(images.numpy()), False
        else:
            arr, channels_first = read_array(images), False
        canonical, info = numpy_to_canonical(arr, layout or default_layout(arr.ndim, channels_first))
    canonical = np.asarray(canonical, np.float32)
    if is_uint8:
        canonical = canonical / np.float32(255.0)
    return canonical, info


def _checked_result(result: Any, n: int, who: str) -> Any:
    """``result`` if it is a MetricResult a table can be made of (scores of ``n`` values, each
    with a direction), its scores as float64 arrays; else ModelOutputError saying what is wrong."""
    from .errors import ModelOutputError
    from .metrics.base import Curve, MetricResult

    def bad(what: str) -> ModelOutputError:
        return ModelOutputError(f"{who} {what}. A metric returns MetricResult(scores={{name: one value per "
                                f"image}}, higher_is_better={{name: bool}}, ...); see docs/evaluation.md.")

    if not isinstance(result, MetricResult):
        raise bad(f"returned {type(result).__name__}, not a salplug.metrics.base.MetricResult")
    fields = {"scores": result.scores, "higher_is_better": result.higher_is_better, "curves": result.curves,
              "summary": result.summary, "extras": result.extras}
    for key, value in fields.items():
        if not isinstance(value, Mapping) or not all(isinstance(k, str) and k for k in value):
            raise bad(f"returned {key} as {type(value).__name__}, not a mapping from names (strings)")
    scores = {}
    for name, values in result.scores.items():
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise bad(f"returned score {name!r} as {type(values).__name__}, not numbers") from None
        if arr.shape != (n,):
            raise bad(f"returned {arr.size} value(s) (shape {arr.shape}) for score {name!r} of {n} image(s); "
                      f"give one value per image (NaN for one that could not be scored)")
        if np.isinf(arr).any():
            raise bad(f"returned infinite values for score {name!r}")
        scores[name] = arr
        direction = result.higher_is_better.get(name)
        if not isinstance(direction, (bool, np.bool_)):
            raise bad(f"says nothing about score {name!r} in higher_is_better" if direction is None else
                      f"returned higher_is_better[{name!r}] = {direction!r}, not True or False")
    for name, value in result.summary.items():
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise bad(f"returned summary {name!r} = {value!r}, not a number")
    for name, curve in result.curves.items():
        if not isinstance(curve, Curve):
            raise bad(f"returned curve {name!r} as {type(curve).__name__}, not a salplug.metrics.base.Curve")
        try:
            x, y = np.asarray(curve.x, np.float64).shape, np.asarray(curve.y, np.float64).shape
        except (TypeError, ValueError):
            raise bad(f"returned curve {name!r} whose x or y is not a rectangular array of numbers (a ragged "
                      f"list, or values that are not numbers)") from None
        if len(x) != 1 or y != (n, x[0]):
            raise bad(f"returned curve {name!r} with x of shape {x} and y of shape {y}; y is one row per "
                      f"image, one column per x value ({n}, P)")
    skipped = result.extras.get("skipped") or {}
    if not isinstance(skipped, Mapping) or not all(
            isinstance(per, Mapping) and all(isinstance(i, (int, np.integer)) and 0 <= i < n for i in per)
            for per in skipped.values()):
        raise bad("returned extras['skipped'] that is not {name: {image index: reason}}")
    return dataclasses.replace(result, scores=scores)


def _check_score_names(result: Any, mlabel: str, owners: dict[str, str]) -> None:
    """Two metrics giving a column of the same name would hide one; say which and what to do."""
    for name in (*result.scores, *result.summary):
        owner = owners.setdefault(name, mlabel)
        if owner != mlabel:
            raise ParameterError(f"Metrics {owner!r} and {mlabel!r} both give a score called {name!r}, so one "
                                 f"would hide the other in the table; give one of them another 'name'.")


def evaluate(model: Any, images: Any, methods: Any = DEFAULT_METHODS, metrics: Any = DEFAULT_METRICS, *,
             backend: str = "auto", target: Any = None, preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
             batch_size: int | None = None, seed: int = 0, out_dir: str | Path | None = None,
             include_random: bool = True, progress: bool = True, names: Sequence[str] | None = None,
             maps: Mapping[str, Any] | None = None,
             layout: str | None = None, host: Any = None, backend_options: Mapping[str, Any] | None = None,
             formats: Sequence[str] = ("csv", "json", "png", "html")) -> EvaluationResult:
    """Score saliency methods with metrics on the same images.

    Parameters
    ----------
    model : anything a backend runs (torch module, Keras model, call_model_function, ...).
    images : the images metrics perturb: numpy (N, H, W, C) / (H, W, C), uint8 or float (RGB in
        [0, 1] for PIC), or what the backend accepts (a torch NCHW tensor).
    methods : method names, ``(name, params)`` pairs, dicts ``{"method", "params", "name"}``, or a
        mapping name -> params. The random-map baseline is added unless ``include_random=False``.
    metrics : metric names (``salplug list`` shows them: insertion, deletion, pic,
        model_randomization), pairs, dicts ``{"metric", "params", "name"}`` or a mapping.
    backend, backend_options, layout, host : as for :func:`salplug.explain`.
    target : class index, one per image, or None (each image's top-1 class).
    preprocess : canonical images -> canonical model input (e.g. the model's normalisation);
        methods explain ``preprocess(images)``, metrics perturb ``images``.
    batch_size : rows per model call (methods and metrics).
    seed : every random choice (random maps, PIC masks, ties, re-initialisation) derives from it.
    out_dir : write evaluation.csv, evaluation.json, curve_*.png and index.html there.
    progress : progress bars.
    names : a name per image for the report.
    maps : precomputed maps to score too, label -> (N, H, W) or (N, H, W, C) canonical arrays
        (metrics that recompute maps, like the randomisation check, skip them with a note).

    Returns
    -------
    EvaluationResult (``print(result.table())``).
    """
    from .api import (DEFAULT_BATCH_SIZE, check_progress, create_adapter, load_method, method_parameters,
                      resolve_params, resolve_targets, run_method)
    from .metrics.base import MetricContext, are_probabilities
    from .plugins import get_host
    from .types import Targets

    host = host or get_host()
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError(f"seed must be an int >= 0; got {seed!r}.")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                   or batch_size < 1):
        raise ParameterError(f"batch_size must be a positive int; got {batch_size!r}.")
    if preprocess is not None and not callable(preprocess):
        raise ParameterError(f"preprocess must be a function of a canonical image batch; got {preprocess!r}.")
    method_specs = _specs(methods, "method", "method")
    metric_specs = _specs(metrics, "metric", "metric")
    added_random = include_random and not any(label == RANDOM or name in (RANDOM, "random_baseline")
                                              for label, name, _ in method_specs)
    if added_random:
        method_specs.append((RANDOM, RANDOM, {"seed": int(seed)}))
    maps = dict(maps or {})
    clash = set(maps) & {label for label, _, _ in method_specs}
    if clash:
        raise ParameterError(f"maps and methods both use the label {sorted(clash)[0]!r}; rename one.")
    if not (method_specs or maps) or not metric_specs:
        raise ParameterError("evaluate needs at least one method and one metric.")

    if out_dir is not None:
        from .outputs import check_destination

        check_destination(out_dir, where="out_dir", overwrite_key="overwrite", error=ParameterError)
    adapter = create_adapter(host, model, backend, **dict(backend_options or {}))
    size = int(batch_size or getattr(adapter, "default_batch_size", DEFAULT_BATCH_SIZE))
    x, info = _images_to_canonical(adapter, images, layout, for_model=preprocess is None)
    if x.ndim != 4:
        raise ParameterError(f"evaluate scores image maps: give images (N, H, W, C); got canonical shape {x.shape}.")
    n = len(x)
    if names is not None and len(names) != n:
        raise ParameterError(f"names has {len(names)} entries for {n} images.")
    names = list(names) if names is not None else [f"image {i}" for i in range(n)]
    ctx = MetricContext(adapter, host, size, check_progress(progress), info, preprocess=preprocess, seed=int(seed))
    try:
        x_in = ctx.model_input(x)
    except SalplugError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's function may raise anything
        raise ParameterError(f"preprocess(images) raised {type(exc).__name__}: {exc}") from exc
    if x_in.shape[:3] != x.shape[:3]:
        raise ParameterError(f"preprocess changed the images' size from {x.shape[1:3]} to {x_in.shape[1:3]}; "
                             f"metrics perturb pixels of the maps' size: resize before evaluate().")
    if preprocess is not None:  # what the model gets must fit it (channels, rank; a named layout: as given)
        try:
            adapter.to_canonical(x_in, None if layout is None else "NHWC")
        except InputError as exc:
            raise InputError(f"preprocess(images) gives the model inputs of shape {x_in.shape}, which it cannot "
                             f"take: {exc}") from None

    given = {}
    for label, values in maps.items():
        from .metrics.base import saliency_2d

        arr = np.asarray(values.detach().cpu().numpy() if hasattr(values, "detach") else values, np.float32)
        try:
            saliency_2d(arr, x, "abs")
        except Exception as exc:  # noqa: BLE001 - shape or NaN: say which map
            raise ParameterError(f"maps[{label!r}]: {exc}") from None
        given[label] = arr

    # 1. every check before any model call
    plan_methods = []
    for label, name, params in method_specs:
        method = load_method(host, name, adapter)
        if "seed" in method_parameters(method)[0] and "seed" not in params:  # as a config run does
            params = {**params, "seed": int(seed)}
        full = resolve_params(method, params)
        if hasattr(method, "check"):
            call_plugin(host.methods.get(method.name), "checking the parameters (its check())", method.check,
                        ctx, x_in, Targets.none(), **full)
        plan_methods.append((label, method.name, full))
    plan_metrics = []
    for label, name, params in metric_specs:
        component = host.metrics.get(name)
        metric = load_metric(host, name, adapter)
        if label == name:  # no label of its own: the registered name, whatever alias was typed
            label = metric.name
        if any(label == other for other, _, _ in plan_metrics):
            raise ParameterError(f"Two metrics are called {label!r}{f' ({name!r} is {label!r})' if name != label else ''}; "
                                 f"to run a metric twice, give each entry a distinct 'name'.")
        full = resolve_keywords(metric.evaluate, params, f"Metric {name!r}")
        _check_metric(component, metric, label, _probe(ctx, plan_methods), x, None, full)
        plan_metrics.append((label, metric, full))
    for label, metric, _ in plan_metrics:  # a label that is another metric's name or alias: the same column
        for other, other_metric, _ in plan_metrics:
            taken = host.metrics.get(other_metric.name)
            if other_metric.name != metric.name and label in (taken.name, *taken.aliases):
                raise ParameterError(f"The metric entry called {label!r} ({metric.name}) takes the name of the "
                                     f"metric {taken.name!r}, whose scores it would hide in the table; give it "
                                     f"another 'name'.")

    # 2. targets (a forward pass for top-1), then the checks that need them
    recorder = _Recording(adapter)
    try:
        targets = resolve_targets(recorder, x_in, target, size)
    except SalplugError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's model may raise anything
        raise model_failure("predicting the images' classes", exc) from exc
    notes_first: list[str] = []
    if targets.indices is not None:  # class targets: are the outputs probabilities already? (once, all images)
        try:
            outputs = recorder.seen or [adapter.outputs(x_in[s:s + size]) for s in range(0, n, size)]
        except SalplugError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's model may raise anything
            raise model_failure("predicting the images' classes", exc) from exc
        ctx.probabilities = all(are_probabilities(o) for o in outputs)
        if ctx.probabilities:
            notes_first.append(PROBABILITIES_NOTE)
        width = min(np.asarray(o).reshape(len(o), -1).shape[1] for o in outputs) if outputs else None
        if width is not None and int(targets.indices.max(initial=0)) >= width:  # the backend could not tell before
            raise TargetError(f"target {int(targets.indices.max())} is out of range: the model gives {width} "
                              f"outputs per image (classes 0..{width - 1}).")
    for mlabel, metric, full in plan_metrics:
        _check_metric(host.metrics.get(metric.name), metric, mlabel, _probe(ctx, plan_methods), x, targets, full)

    # 3. the work; each method run and each metric evaluation is one call of the backend's
    # (its call_scope: torch lists, freezes and sets eval mode once; tf1 reads weights once)
    scope = getattr(adapter, "call_scope", None)

    def in_scope() -> Any:
        return scope() if scope is not None else contextlib.nullcontext()

    results: dict[tuple[str, str], Any] = {}
    attributions: dict[str, np.ndarray] = {}
    method_info: dict[str, dict[str, Any]] = {}
    skipped_runs: list[str] = []
    owners: dict[str, str] = {}  # score name -> the metric label giving it
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=(len(plan_methods) + len(given)) * (1 + len(plan_metrics)), desc="evaluate", unit="step",
                   file=sys.stderr)
    try:
        todo = [(label, name, full) for label, name, full in plan_methods] + \
            [(label, None, None) for label in given]
        if added_random:  # the reference row goes last
            todo.append(todo.pop(len(plan_methods) - 1))
        for label, name, full in todo:
            if bar is not None:
                bar.set_postfix_str(label)
            begin = time.perf_counter()
            if name is None:
                attributions[label] = given[label]
            else:
                try:
                    with in_scope():
                        out = run_method(ctx, name, x_in, targets, full, checked=True)
                except SalplugError as exc:  # say which method, keep the type
                    where = f"method {label!r}" + (f" ({name})" if name != label else "")
                    exc.args = (f"{where}: {exc}", *exc.args[1:])
                    raise
                except Exception as exc:  # noqa: BLE001 - the user's model may raise anything
                    raise model_failure(f"method {label!r} ({name})", exc) from exc
                attributions[label] = np.asarray(out.values, np.float32)
            method_info[label] = {"method": name or "(given map)", "params": full or {},
                                  "seconds": time.perf_counter() - begin, "metric_seconds": {}}
            if bar is not None:
                bar.update(1)
            mctx = dataclasses.replace(ctx, method_name=name, method_params=full or {})
            mctx.cache = ctx.cache  # shared across methods (replace() copies the reference anyway)
            for mlabel, metric, mparams in plan_metrics:
                if name is None and getattr(metric, "needs_method", False):
                    skipped_runs.append(f"{label} / {mlabel}: not run (the metric recomputes maps; "
                                        f"{label!r} is a given map)")
                    if bar is not None:
                        bar.update(1)
                    continue
                if bar is not None:
                    bar.set_postfix_str(f"{label} / {mlabel}")
                begin = time.perf_counter()
                try:
                    with in_scope():
                        result = metric.evaluate(mctx, x, targets, attributions[label], **mparams)
                except SalplugError as exc:  # say which metric and method, keep the type
                    exc.args = (f"metric {mlabel!r} on method {label!r}: {exc}", *exc.args[1:])
                    raise
                except Exception as exc:  # noqa: BLE001 - the user's model may raise anything
                    raise model_failure(f"metric {mlabel!r} on method {label!r}", exc) from exc
                who = f"Metric {mlabel!r} (from {host.metrics.get(metric.name).provider}) on method {label!r}"
                result = _relabel(_checked_result(result, n, who), mlabel, metric.name)
                _check_score_names(result, mlabel, owners)
                results[(label, mlabel)] = result
                method_info[label]["metric_seconds"][mlabel] = time.perf_counter() - begin
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    notes = notes_first + list(skipped_runs)
    for (label, mlabel), result in results.items():
        for kind, skipped in (result.extras.get("skipped") or {}).items():
            if skipped:
                which = ", ".join(f"{names[i]} ({why})" for i, why in sorted(skipped.items()))
                notes.append(f"{label} / {kind}: {len(skipped)} of {n} image(s) not scored: {which}")
    evaluation = EvaluationResult(
        methods=method_info,
        metrics={label: {"metric": metric.name, "params": params} for label, metric, params in plan_metrics},
        results=results, attributions=attributions, targets=targets.describe(), names=names, seed=int(seed),
        backend=adapter.name, notes=notes)
    if out_dir is not None:
        evaluation.save(out_dir, formats)
    return evaluation


# ---------------------------------------------------------------------------------------------
# From a config file (``salplug evaluate CONFIG``)
# ---------------------------------------------------------------------------------------------

def evaluate_config(config: Any, *, host: Any = None, quiet: bool = False, metrics: Any = None,
                    out_dir: str | Path | None = None, source: str | None = None) -> EvaluationResult:
    """Evaluate the explanations of a validated :class:`~salplug.config.Config`.

    The model, photos, target, seed and methods (``explanations``) come from the config,
    checked and prepared as ``salplug run`` does (errors name ``source``, the config file, and
    the key); the metrics from its ``evaluation`` section when the config model has one
    (``metrics``, ``folder``, ``include_random``, ``batch_size``) or from ``metrics``; results
    go to ``out_dir`` (default: ``<outputs.folder>/evaluation``), checked before the model
    loads and written as ``salplug run`` writes its folder (staged, marked, never over a
    folder salplug did not write). The metrics perturb the photos as shown (resized), and
    the model gets them through the config's preprocessing, as in ``salplug run``.
    """
    from .runner import config_folder_on_path

    with config_folder_on_path(getattr(config, "base_dir", None)):  # as during salplug run
        return _evaluate_config(config, host=host, quiet=quiet, metrics=metrics, out_dir=out_dir, source=source)


def _evaluate_config(config: Any, *, host: Any, quiet: bool, metrics: Any, out_dir: str | Path | None,
                     source: str | None) -> EvaluationResult:
    from .config import ConfigError
    from .outputs import check_destination
    from .plugins import get_host
    from .runner import _located, plan_run

    host = host or get_host()
    section = getattr(config, "evaluation", None)
    section = section.model_dump() if hasattr(section, "model_dump") else dict(section or {})
    chosen = metrics if metrics is not None else section.get("metrics") or list(DEFAULT_METRICS)
    where = "--metric" if metrics is not None else "evaluation.metrics"
    from .registry import create

    try:
        specs = _specs(chosen, "metric", "metric")
    except SalplugError as exc:
        raise _located(exc, where, source) from None
    for i, (_, name, params) in enumerate(specs):  # names, plugins and parameter names: before the model loads
        try:
            metric = create(host.metrics.get(name))
            resolve_keywords(metric.evaluate, params, f"Metric {name!r}")
        except SalplugError as exc:
            raise _located(exc, f"{where}[{i}]", source) from exc.__cause__
    inside_run = not (out_dir or section.get("folder"))  # the default: <outputs.folder>/evaluation
    folder = out_dir or (config.path(section["folder"]) if section.get("folder") else
                         config.path(config.outputs.folder) / "evaluation")
    overwrite = config.outputs.overwrite
    try:  # --out or the file
        folder = check_destination(folder, overwrite=overwrite, where="evaluation.folder")
    except ConfigError as exc:
        raise ConfigError(str(exc), source) from None
    plan = plan_run(config, host=host, quiet=quiet, source=source, destination=False)
    loaded = plan.loaded
    shapes = {shown.shape for _, shown in plan.prepared}
    if len(shapes) != 1:
        raise ConfigError(f"model.preprocessing: evaluate needs photos of one size (set model.preprocessing.size); "
                          f"got {sorted(shapes)}.", source)
    images = np.stack([shown for _, shown in plan.prepared])  # uint8, what the metrics perturb
    methods = [{"method": exp.method, "name": exp.name or exp.method, "params": params}
               for exp, _, params, _ in plan.steps]
    target = config.model.target
    target = None if target == "top1" else target
    result = evaluate(loaded.model, images, methods, chosen, backend=loaded.backend, target=target,
                      preprocess=loaded.model_input, batch_size=section.get("batch_size") or config.model.batch_size,
                      seed=config.seed, include_random=section.get("include_random", True),
                      progress=not quiet, names=[p.name for p in plan.images], host=host,
                      backend_options=loaded.options, layout="NHWC")  # NHWC, as run gives the model
    try:
        result._save(folder, ("csv", "json", "png", "html"), overwrite=overwrite, where="evaluation.folder",
                     overwrite_key="outputs.overwrite", error=ConfigError, claim_parent=inside_run)
    except ConfigError as exc:
        raise ConfigError(str(exc), source) from None
    return result
