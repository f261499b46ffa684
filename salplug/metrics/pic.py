"""Performance Information Curves (Kapishnikov et al., ICCV 2019): SIC and AIC.

The names and semantics are those of the upstream ``saliency.metrics.pic`` module, on NumPy 2.

A PIC curve follows a model's prediction as an image is rebuilt from a blurred version by
revealing its most salient pixels first. The x axis is the information in the partly revealed
image (the size of its lossless WebP encoding, normalised between the fully blurred and the
original image), the y axis the model's prediction normalised the same way: softmax for SIC,
0/1 correctness for AIC. The area under the curve scores the saliency map.

Per image: ``generate_random_mask`` (the seed pixels of the fully blurred image; keep it fixed
across the methods compared), then ``compute_pic_metric`` (it raises ``ComputePicMetricError``
for images that cannot be scored: skip those), then ``aggregate_individual_pic_results`` over
all images of one saliency method. Pillow and SciPy are imported when first needed.
``reveal`` and ``pic_curve`` (salplug additions, not in ``__all__``) are the same steps for callers
that batch the model calls (the PIC metric plugin).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

__all__ = [
    "AggregateMetricResult", "ComputePicMetricError", "PicMetricResult", "aggregate_individual_pic_results",
    "compute_pic_metric", "create_blurred_image", "estimate_image_entropy", "generate_random_mask",
]


class ComputePicMetricError(Exception):
    """The image cannot be scored (prediction too low, or blurring does not remove information
    or prediction); leave it out of the aggregate."""


class PicMetricResult(NamedTuple):
    """The PIC curve of one image."""

    curve_x: Sequence[float]  # normalised information, num_data_points + 1 points from 0 to 1
    curve_y: Sequence[float]  # normalised prediction at each curve_x
    blurred_images: Sequence[np.ndarray]  # fully blurred image, one per threshold, original image
    predictions: Sequence[float]  # the model's raw prediction on each of blurred_images
    thresholds: Sequence[float]  # 0.0, the saliency thresholds, 1.0
    auc: float  # area under the curve


class AggregateMetricResult(NamedTuple):
    """The PIC curve of one saliency method over many images."""

    curve_x: Sequence[float]
    curve_y: Sequence[float]
    auc: float


def create_blurred_image(full_img: np.ndarray, pixel_mask: np.ndarray, method: str = 'linear') -> np.ndarray:
    """Rebuild ``full_img`` from the pixels where ``pixel_mask`` is True (the four corners always
    count), interpolating the rest.

    Parameters
    ----------
    full_img : (H, W, C) or (H, W) image.
    pixel_mask : (H, W) bool, the pixels kept.
    method : ``scipy.interpolate.griddata`` method, 'linear' (recommended) or 'nearest'.

    Returns an image of the same shape and dtype (integer images are rounded).
    """
    img = np.asarray(full_img)
    keep = np.array(pixel_mask, dtype=bool, copy=True)
    if keep.ndim != 2 or keep.shape != img.shape[:2]:
        raise ValueError(f"pixel_mask must be (H, W) = {img.shape[:2]}; got shape {keep.shape}.")
    keep[[0, 0, -1, -1], [0, -1, 0, -1]] = True
    if keep.all():
        return img.copy()
    from scipy.interpolate import griddata

    channels = img if img.ndim == 3 else img[..., None]
    out = channels * keep[..., None].astype(np.float32)
    known, unknown = np.argwhere(keep), np.argwhere(~keep)
    # One triangulation for all channels; outside the hull (never, with the corners kept) the
    # image's mean colour.
    values = griddata(known, channels[keep].astype(np.float64), unknown, method=method, fill_value=np.nan)
    values = np.where(np.isnan(values), channels.mean(axis=(0, 1)), values)
    out[~keep] = values
    if img.ndim == 2:
        out = out[..., 0]
    if np.issubdtype(img.dtype, np.integer):
        out = np.round(out)
    return out.astype(img.dtype)


def generate_random_mask(image_height: int, image_width: int, fraction=0.01, seed=None) -> np.ndarray:
    """An (H, W) bool mask with ``int(H * W * fraction)`` True pixels chosen at random.

    ``seed`` (a salplug addition): None draws from NumPy's global random state, as upstream
    (``np.random.seed`` reproduces a mask); an int or a ``numpy.random.Generator`` draws from that.
    """
    size = int(image_height) * int(image_width)
    count = int(size * fraction)
    if seed is None:
        picked = np.random.choice(size, replace=False, size=count)
    else:
        rng = seed if isinstance(seed, (np.random.Generator, np.random.RandomState)) else np.random.default_rng(seed)
        picked = rng.choice(size, replace=False, size=count)
    mask = np.zeros(size, dtype=bool)
    mask[picked] = True
    return mask.reshape(int(image_height), int(image_width))


def estimate_image_entropy(image: np.ndarray) -> int:
    """The information in a uint8 image ((H, W, C) or (H, W)): its lossless WebP size in bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image)).save(buffer, format='webp', lossless=True, quality=100)
    return len(buffer.getvalue())


def _predict(pred_func: Callable, image: np.ndarray):
    return pred_func(image[np.newaxis, ...])[0]


def reveal(img: np.ndarray, saliency_map: np.ndarray, random_mask: np.ndarray, threshold: float) -> np.ndarray:
    """``img`` blurred but for its ``threshold`` fraction of most salient pixels and ``random_mask``."""
    revealed = (saliency_map >= np.quantile(saliency_map, 1 - threshold)) | random_mask
    return create_blurred_image(full_img=img, pixel_mask=revealed)


def _check_original(original_pred, min_pred_value: float) -> None:
    if original_pred < min_pred_value:
        raise ComputePicMetricError(
            f"The model's prediction on the original image, {original_pred}, is lower than "
            f"min_pred_value = {min_pred_value}. Skip this image or lower min_pred_value.")


def _check_blurred(original_entropy, blurred_entropy, original_pred, blurred_pred) -> None:
    if blurred_entropy >= original_entropy:
        raise ComputePicMetricError(
            f"The fully blurred image does not hold less information than the original "
            f"(entropy {blurred_entropy} vs {original_entropy}); leave this image out.")
    if blurred_pred >= original_pred:
        raise ComputePicMetricError(
            f"The model's prediction on the fully blurred image, {blurred_pred}, is not lower than "
            f"on the original, {original_pred}; leave this image out.")


def _curve(entropies: Sequence, predictions: Sequence, keep_monotonous: bool,
           num_data_points: int) -> tuple[np.ndarray, np.ndarray]:
    """(curve_x, curve_y) from the entropies and predictions of [original, fully blurred, one per threshold]."""
    from scipy.interpolate import interp1d

    original_entropy, blurred_entropy, *levels = entropies
    original_pred, blurred_pred, *preds = predictions
    points, best = [], 0.0
    for entropy, pred in zip(levels, preds):
        info = np.clip((entropy - blurred_entropy) / (original_entropy - blurred_entropy), 0.0, 1.0)
        score = np.clip((pred - blurred_pred) / (original_pred - blurred_pred), 0.0, 1.0)
        best = max(best, score)
        points.append((info, best if keep_monotonous else score))
    points += [(0.0, 0.0), (1.0, 1.0)]
    xs, ys = zip(*points)
    curve_x = np.linspace(0.0, 1.0, num=num_data_points, endpoint=False)
    curve_y = np.append(np.asarray(interp1d(x=xs, y=ys)(curve_x), dtype=np.float64), 1.0)
    return np.append(curve_x, 1.0), curve_y


def pic_curve(entropies: Sequence, predictions: Sequence, *, min_pred_value: float = 0.8,
              keep_monotonous: bool = True, num_data_points: int = 1000) -> tuple[np.ndarray, np.ndarray, float]:
    """(curve_x, curve_y, auc) of ``compute_pic_metric`` from values computed beforehand (a salplug
    addition, for callers that batch the model calls).

    ``entropies`` and ``predictions`` are those of [original, fully blurred, one image per
    threshold]; raises ``ComputePicMetricError`` like ``compute_pic_metric``.
    """
    _check_original(predictions[0], min_pred_value)
    _check_blurred(entropies[0], entropies[1], predictions[0], predictions[1])
    curve_x, curve_y = _curve(entropies, predictions, keep_monotonous, num_data_points)
    return curve_x, curve_y, float(np.trapezoid(curve_y, curve_x))


def compute_pic_metric(img: np.ndarray, saliency_map: np.ndarray, random_mask: np.ndarray,
                       pred_func: Callable[[np.ndarray], Sequence[float]], saliency_thresholds: Sequence[float],
                       min_pred_value: float = 0.8, keep_monotonous: bool = True,
                       num_data_points: int = 1000) -> PicMetricResult:
    """The PIC curve (SIC or AIC, depending on ``pred_func``) of one image and saliency map.

    Parameters
    ----------
    img : uint8 image, (H, W, C) or (H, W).
    saliency_map : (H, W); higher means more important (apply ``abs`` first if wanted).
    random_mask : (H, W) bool from ``generate_random_mask``: the pixels every blurred image keeps.
    pred_func : uint8 batch (1, H, W[, C]) -> sequence with the prediction of the explained class
        (softmax for SIC; 1.0 if correct else 0.0 for AIC).
    saliency_thresholds : ascending fractions of the most salient pixels to reveal.
    min_pred_value : images whose prediction is below this raise ComputePicMetricError.
    keep_monotonous : make the curve non-decreasing (as in the paper).
    num_data_points : curve points before the final point at x = 1.

    Raises
    ------
    ComputePicMetricError : the original image's prediction is below ``min_pred_value``, or the
        fully blurred image does not have less information or a lower prediction than the original.
    """
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"The `img` array that holds the input image should be of type uint8; got {img.dtype}.")
    saliency_map = np.asarray(saliency_map)
    random_mask = np.asarray(random_mask, dtype=bool)

    original_entropy = estimate_image_entropy(img)
    blurred = create_blurred_image(full_img=img, pixel_mask=random_mask)
    blurred_entropy = estimate_image_entropy(blurred)
    original_pred = _predict(pred_func, img)
    _check_original(original_pred, min_pred_value)
    blurred_pred = _predict(pred_func, blurred)
    _check_blurred(original_entropy, blurred_entropy, original_pred, blurred_pred)

    images, predictions, entropies = [blurred], [blurred_pred], [original_entropy, blurred_entropy]
    for threshold in saliency_thresholds:
        image = reveal(img, saliency_map, random_mask, threshold)
        predictions.append(_predict(pred_func, image))
        entropies.append(estimate_image_entropy(image))
        images.append(image)
    curve_x, curve_y = _curve(entropies, [original_pred, *predictions], keep_monotonous, num_data_points)
    images.append(img)
    predictions.append(original_pred)
    return PicMetricResult(curve_x=curve_x, curve_y=curve_y, blurred_images=images, predictions=predictions,
                           thresholds=[0.0, *saliency_thresholds, 1.0], auc=np.trapezoid(curve_y, curve_x))


def aggregate_individual_pic_results(compute_pic_metrics_results: list[PicMetricResult],
                                     method: str = 'median') -> AggregateMetricResult:
    """Aggregate the curves of many images (one saliency method) pointwise: 'median' or 'mean'.

    Every result must have the same ``curve_x`` (the same ``num_data_points``).
    """
    results = list(compute_pic_metrics_results)
    if not results:
        raise ValueError("The list of results should have at least one element.")
    if method not in ('mean', 'median'):
        raise ValueError(f"Unknown method {method}; use 'mean' or 'median'.")
    if len({len(r.curve_x) for r in results} | {len(r.curve_y) for r in results}) != 1:
        raise ValueError("Individual results have different x-axis data points (curves of different lengths).")
    curve_xs = np.asarray([r.curve_x for r in results], dtype=np.float64)
    curve_ys = np.asarray([r.curve_y for r in results], dtype=np.float64)
    if not np.array_equal(curve_xs, np.broadcast_to(curve_xs[0], curve_xs.shape)):
        raise ValueError("Individual results have different x-axis data points.")
    curve_y = np.mean(curve_ys, axis=0) if method == 'mean' else np.median(curve_ys, axis=0)
    return AggregateMetricResult(curve_x=curve_xs[0], curve_y=curve_y, auc=np.trapezoid(curve_y, curve_xs[0]))
