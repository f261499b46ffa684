"""The random-map baseline: a saliency "method" that ignores the model.

Every evaluation table includes it for reference: a method that scores no better than random
maps carries no information about the model. One uniform value per pixel, optionally smoothed
by a Gaussian (``sigma`` > 0 gives blob-shaped random regions). The draws come from ``seed``
and the image's content, so the same image always gets the same map, in any batch, and the
map never depends on the model (which is why it fails the randomisation sanity check, as it
should).
"""

from __future__ import annotations

import numpy as np

from ..types import Method
from .base import check_int, check_number, sample_rng


class RandomBaseline(Method):
    """Random saliency, (N, H, W).

    Parameters
    ----------
    seed : the random seed (with each image's content).
    sigma : Gaussian smoothing in pixels (0: independent pixels).
    """

    requires = frozenset()

    def check(self, ctx, x, targets, *, seed=0, sigma=0.0):
        check_int(seed, "seed", 0)
        check_number(sigma, "sigma", 0.0)
        if x.ndim < 3:
            from ..errors import ParameterError

            raise ParameterError(f"The random baseline makes maps for images (N, H, W, C); got shape {x.shape}.")

    def explain(self, ctx, x, targets, *, seed=0, sigma=0.0):
        hw = x.shape[1:3]
        maps = np.stack([sample_rng(seed, image, "random-map").random(hw) for image in x])
        if sigma > 0:
            from scipy.ndimage import gaussian_filter

            maps = gaussian_filter(maps, sigma=(0, sigma, sigma), mode="reflect")
        return maps.astype(np.float32)
