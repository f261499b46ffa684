"""``saliency.core.xrai``: XRAI (the registered ``xrai`` method) with upstream's parameters.

The IG attribution of each baseline comes from the module attribute ``IntegratedGradients``
(instantiated in ``XRAI.__init__``), so replacing ``salplug.core.xrai.IntegratedGradients``
(e.g. with ``mock.patch``) changes what XRAI ranks. The regions are ranked by the registered
``xrai`` method; the map is then painted in float64 from the base attribution.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..errors import ParameterError
from .base import INPUT_OUTPUT_GRADIENTS, CoreSaliency, run
from .integrated_gradients import IntegratedGradients

__all__ = ["XRAI", "XRAIParameters", "XRAIOutput"]


class XRAIParameters:
    """Options of ``XRAI.GetMaskWithDetails``.

    steps : IG steps per baseline.
    area_threshold : 'full' stops ranking once more than this fraction of the image is covered;
        the rest becomes one region (0: only the best mask is ranked; 1 or more: all of them).
        'fast' ignores it.
    return_ig_attributions : fill ``XRAIOutput.ig_attribution`` (one IG map per baseline).
    return_xrai_segments : fill ``XRAIOutput.segments``.
    flatten_xrai_segments : segments as one integer image of ranks 1..N (1 = most important)
        instead of a list of boolean masks, most important first.
    algorithm : 'full' (greedy, overlap-aware) or 'fast' (segments sorted once).
    experimental_params : ``{'min_pixel_diff': 50}``: segments adding fewer new pixels are skipped.
    return_baseline_predictions : accepted for compatibility; unused (as upstream).
    """

    def __init__(self, steps=100, area_threshold=1.0, return_baseline_predictions=False,
                 return_ig_attributions=False, return_xrai_segments=False, flatten_xrai_segments=True,
                 algorithm='full'):
        self.steps = steps
        self.area_threshold = area_threshold
        self.return_ig_attributions = return_ig_attributions
        self.return_xrai_segments = return_xrai_segments
        self.flatten_xrai_segments = flatten_xrai_segments
        self.algorithm = algorithm
        self.experimental_params = {'min_pixel_diff': 50}


class XRAIOutput:
    """What ``XRAI.GetMaskWithDetails`` returns.

    attribution_mask : the XRAI map, the input's shape without its channel axis.
    baselines : the IG baselines used (None with a base_attribution).
    ig_attribution : IG map per baseline (on request; the base_attribution when one was given).
    segments : ranked regions (on request), see ``XRAIParameters.flatten_xrai_segments``.
    """

    def __init__(self, attribution_mask):
        self.attribution_mask = attribution_mask
        self.baselines = None
        self.ig_attribution = None
        self.segments = None


def _as_image(x: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """The input as an (H, W, C) image, and the shape of its attribution map (no channels)."""
    if x.ndim == 3:
        return x, x.shape[:2]
    if x.ndim == 2:
        return x[..., None], x.shape
    if x.ndim == 1:
        return x.reshape(1, -1, 1), x.shape
    raise ValueError(f"XRAI takes an image (H, W, C) or (H, W), or a vector; got an input of shape {x.shape}.")


def _area_threshold(value, algorithm: str) -> float:
    """``area_threshold`` for the registered method, which takes (0, 1]: upstream's 0 ranks one
    mask (as the smallest positive fraction does), and any value from 1 up ranks them all."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ParameterError(f"area_threshold must be a number >= 0 (the fraction of the image to rank; "
                             f"1 ranks all of it); got {value!r}.")
    if algorithm == "fast" or value >= 1:
        return 1.0
    return float(value) if value > 0 else float(np.nextafter(0.0, 1.0))


def _masks(segments, map_shape: tuple[int, ...], hw: tuple[int, int]) -> list[np.ndarray]:
    """The caller's masks as (H, W) bool. Each must have the map's shape or one that broadcasts
    to it (upstream broadcasts them); a transposed or flattened mask is refused."""
    masks = []
    for i, segment in enumerate(segments):
        mask = np.asarray(segment)
        try:
            fits = np.broadcast_shapes(mask.shape, map_shape) == tuple(map_shape)
        except ValueError:
            fits = False
        if not fits:
            raise ParameterError(f"segments[{i}] has shape {mask.shape}; each XRAI segment must be a "
                                 f"boolean mask of the image's shape {tuple(map_shape)} (H, W).")
        masks.append(np.broadcast_to(mask.astype(bool), map_shape).reshape(hw))
    return masks


class XRAI(CoreSaliency):
    """XRAI (Kapishnikov et al. 2019): regions ranked by their density of IG attribution."""

    expected_keys = [INPUT_OUTPUT_GRADIENTS]

    def __init__(self):
        super().__init__()
        self._integrated_gradients = IntegratedGradients()

    def _make_baselines(self, x_value, x_baselines):
        if x_baselines is None:
            return [np.min(x_value) * np.ones_like(x_value), np.max(x_value) * np.ones_like(x_value)]
        for baseline in x_baselines:
            if np.shape(baseline) != x_value.shape:
                raise ValueError(f"Baseline size {np.shape(baseline)} does not match input size {x_value.shape}")
        return x_baselines

    def GetMask(self, x_value, call_model_function, call_model_args=None, baselines=None, segments=None,
                base_attribution=None, batch_size=1, extra_parameters=None):
        """The XRAI map of one input (see ``GetMaskWithDetails``)."""
        return self.GetMaskWithDetails(x_value, call_model_function, call_model_args=call_model_args,
                                       baselines=baselines, segments=segments,
                                       base_attribution=base_attribution, batch_size=batch_size,
                                       extra_parameters=extra_parameters).attribution_mask

    def GetMaskWithDetails(self, x_value, call_model_function, call_model_args=None, baselines=None,
                           segments=None, base_attribution=None, batch_size=1, extra_parameters=None):
        """XRAI of one input, with the baselines, IG maps and segments on request.

        baselines : list of IG baselines of the input's shape (default: constant images at the
            input's min and max).
        segments : list of boolean masks of the map's shape (default: Felzenszwalb at six
            scales, each segment dilated). An empty list ('full' only) gives one region, the
            whole image, as upstream.
        base_attribution : an attribution of the input's shape to rank instead of IG.
        batch_size : IG path points per model call.
        extra_parameters : an ``XRAIParameters``.
        """
        params = XRAIParameters() if extra_parameters is None else extra_parameters
        if params.algorithm not in ("full", "fast"):
            raise ValueError(f"Unknown algorithm type: {params.algorithm}")
        x = np.asarray(x_value)
        if base_attribution is not None:
            base_attribution = np.asarray(base_attribution)
            if base_attribution.shape != x.shape:
                raise ValueError(
                    f"The base attribution shape should be the same as the shape of `x_value`. "
                    f"Expected {x.shape}, got {base_attribution.shape}")
            used_baselines, igs, attr = None, base_attribution, base_attribution
        else:
            used_baselines = self._make_baselines(x, baselines)
            igs = [self._integrated_gradients.GetMask(x, call_model_function, call_model_args=call_model_args,
                                                      x_baseline=baseline, x_steps=params.steps,
                                                      batch_size=batch_size)
                   for baseline in used_baselines]
            attr = np.mean(igs, axis=0)
        attr = np.asarray(attr, dtype=np.float64)
        if attr.ndim > 2:
            attr = attr.max(axis=-1)

        image, map_shape = _as_image(x)
        hw = image.shape[:2]
        area_threshold = _area_threshold(params.area_threshold, params.algorithm)
        masks = None if segments is None else _masks(segments, map_shape, hw)
        if masks is not None and not masks:
            if params.algorithm == "fast":  # upstream fails to unpack its empty sorted list
                raise ParameterError("segments is empty; XRAI's 'fast' algorithm needs at least one mask "
                                     "(or segments=None for Felzenszwalb).")
            ranks = np.ones(hw, dtype=int)  # as upstream's 'full': nothing ranked, one region
        else:
            _, extras = run("xrai", image, None, None, batch_size=1,
                            base_attribution=attr.reshape(hw), segments=masks, algorithm=params.algorithm,
                            area_threshold=area_threshold,
                            min_pixel_diff=int(params.experimental_params.get('min_pixel_diff', 50)),
                            flatten_segments=True, return_segments=True)
            ranks = np.asarray(extras["segments"])[0]
        # Paint each region with its mean attribution in float64 (the public API rounds to float32).
        sums = np.bincount(ranks.ravel(), weights=attr.ravel())
        counts = np.bincount(ranks.ravel())
        means = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
        result = XRAIOutput(means[ranks].reshape(map_shape))
        result.baselines = used_baselines
        if params.return_xrai_segments:
            ranks = ranks.reshape(map_shape)
            result.segments = ranks if params.flatten_xrai_segments else [ranks == r for r in range(1, ranks.max() + 1)]
        if params.return_ig_attributions:
            result.ig_attribution = igs
        return result
