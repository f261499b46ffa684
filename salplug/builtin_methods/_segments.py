"""Segments and region ranking for XRAI (Kapishnikov et al. ICCV 2019), numpy/scipy only.

Every set of segments is a sparse mask-by-pixel incidence matrix (``scipy.sparse`` CSR, one row
per mask, columns are pixels of the H x W image in C order). Felzenszwalb segments are dilated
from their label images in one vectorised pass per scale rather than one mask at a time, and
the greedy ranking keeps per-mask remaining pixel counts and attribution sums up to date
through the pixel-to-mask incidence, so a step costs only the pixels it newly covers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

FELZENSZWALB_SCALES = (50, 100, 150, 250, 500, 1200)
FELZENSZWALB_SIGMA = 0.8
FELZENSZWALB_MIN_SIZE = 150
SEGMENTATION_SIZE = (224, 224)
DILATION_RADIUS = 5

# Largest (label x pixel) bitmap used at once while deduplicating dilated labels.
_BITMAP_LIMIT = 1 << 24


# -- segmentation ------------------------------------------------------------------------------
def normalize_for_segmentation(image: np.ndarray, size=SEGMENTATION_SIZE) -> np.ndarray:
    """``image`` (H, W, C) rescaled to [-1, 1] and resized to ``size`` (bicubic), as upstream."""
    from skimage.transform import resize

    lo, hi = np.min(image), np.max(image)
    span = hi - lo
    im = (image - lo) / span if span > 0 else np.zeros_like(image)
    im = im * 2.0 - 1.0
    if size is not None:
        im = resize(im, size, order=3, mode="constant", preserve_range=True, anti_aliasing=True)
    return im


def felzenszwalb_labels(image: np.ndarray, scales=FELZENSZWALB_SCALES, sigma: float = FELZENSZWALB_SIGMA,
                        min_size: int = FELZENSZWALB_MIN_SIZE, size=SEGMENTATION_SIZE,
                        pool=None) -> list[np.ndarray]:
    """Felzenszwalb label images (H, W) of ``image`` (H, W, C), one per scale.

    The segmentation runs on the image normalised by :func:`normalize_for_segmentation`;
    labels are resized back to H x W by nearest neighbour. ``pool`` (an executor) runs the
    scales concurrently (scikit-image releases the GIL there).
    """
    return felzenszwalb_label_batch(image[None], scales, sigma, min_size, size, pool)[0]


def felzenszwalb_label_batch(images: np.ndarray, scales=FELZENSZWALB_SCALES, sigma: float = FELZENSZWALB_SIGMA,
                             min_size: int = FELZENSZWALB_MIN_SIZE, size=SEGMENTATION_SIZE,
                             pool=None) -> list[list[np.ndarray]]:
    """:func:`felzenszwalb_labels` for each image of ``images`` (N, H, W, C)."""
    from skimage.segmentation import felzenszwalb
    from skimage.transform import resize

    shape = images.shape[1:3]
    normalized = [normalize_for_segmentation(im, size) for im in images]

    def one(job):
        i, scale = job
        seg = felzenszwalb(normalized[i], scale=scale, sigma=sigma, min_size=min_size)
        if seg.shape != shape:
            seg = resize(seg, shape, order=0, preserve_range=True, mode="constant",
                         anti_aliasing=False).astype(int)
        return seg

    jobs = [(i, s) for i in range(len(images)) for s in scales]
    segs = list(pool.map(one, jobs)) if pool is not None else [one(j) for j in jobs]
    k = len(scales)
    return [segs[i * k:(i + 1) * k] for i in range(len(images))]


def disk_offsets(radius: int) -> np.ndarray:
    """(K, 2) integer offsets (dy, dx) of a digital disk of ``radius`` (skimage ``disk``)."""
    r = np.arange(-radius, radius + 1)
    dy, dx = np.meshgrid(r, r, indexing="ij")
    inside = dy * dy + dx * dx <= radius * radius
    return np.stack([dy[inside], dx[inside]], axis=1)


def dilated_label_pairs(labels: np.ndarray, radius: int = DILATION_RADIUS) -> tuple[np.ndarray, np.ndarray, int]:
    """(mask, pixel) pairs of every label's mask dilated by a disk of ``radius``.

    Mask ``m`` is label ``labels.min() + m``, for every value up to ``labels.max()`` (absent
    labels give empty masks). Pixel p lies in dilated mask L when some pixel of label L lies
    within the disk around p. A pixel whose square neighbourhood holds one label only gets
    that label; the others look at each disk offset once (neighbours clamped into the image,
    which keeps them inside the disk), marking (label, pixel) in a label-major bitmap, so the
    pairs come out deduplicated and sorted by mask, then pixel.

    Returns
    -------
    masks, pixels : int64 arrays of the pairs (pixels flat, C order); n_masks.
    """
    from scipy import ndimage

    h, w = labels.shape
    n_pixels = h * w
    lab = np.asarray(labels, np.int64)
    lab = lab - lab.min()
    n_masks = int(lab.max()) + 1
    if radius <= 0:
        order = np.argsort(lab.ravel(), kind="stable")
        return lab.ravel()[order], order, n_masks
    size = 2 * radius + 1
    small = lab.astype(np.int32) if n_masks < 2**31 else lab
    single = (ndimage.maximum_filter(small, size=size, mode="nearest")
              == ndimage.minimum_filter(small, size=size, mode="nearest")).ravel()
    padded_w = w + 2 * radius
    padded = np.pad(lab, radius, mode="edge").ravel()
    flat = lab.ravel()
    offsets = disk_offsets(radius)
    steps = offsets[:, 0] * padded_w + offsets[:, 1]
    chunk = max(1, _BITMAP_LIMIT // n_masks)
    masks, pixels = [], []
    for start in range(0, n_pixels, chunk):
        n = min(chunk, n_pixels - start)
        seen = np.zeros(n_masks * n, bool)
        one = np.flatnonzero(single[start:start + n])
        seen[flat[start + one] * n + one] = True
        many = np.flatnonzero(~single[start:start + n])
        ys, xs = np.divmod(many + start, w)
        centre = (ys + radius) * padded_w + xs + radius
        scaled = padded * n
        for step in steps:
            key = np.take(scaled, centre + step)
            key += many
            seen[key] = True
        keys = np.flatnonzero(seen)
        m, p = np.divmod(keys, n)
        masks.append(m)
        pixels.append(p + start)
    masks, pixels = np.concatenate(masks), np.concatenate(pixels)
    if chunk < n_pixels:  # chunks are each sorted by mask: merge them
        order = np.argsort(masks, kind="stable")
        masks, pixels = masks[order], pixels[order]
    return masks, pixels, n_masks


@dataclass
class Incidence:
    """Masks as a sparse incidence: ``csr`` (mask x pixel) and ``csc`` (the same, by pixel)."""

    csr: object
    csc: object
    shape: tuple[int, int]
    timings: dict = field(default_factory=dict)

    @property
    def n_masks(self) -> int:
        return self.csr.shape[0]

    def mask(self, m: int) -> np.ndarray:
        """Boolean H x W image of mask ``m``."""
        out = np.zeros(self.csr.shape[1], bool)
        out[self.pixels(m)] = True
        return out.reshape(self.shape)

    def pixels(self, m: int) -> np.ndarray:
        return self.csr.indices[self.csr.indptr[m]:self.csr.indptr[m + 1]]


def incidence_from_pairs(masks: np.ndarray, pixels: np.ndarray, n_masks: int, shape) -> Incidence:
    """An :class:`Incidence` from deduplicated (mask, pixel) pairs sorted by mask, then pixel."""
    from scipy import sparse

    n_pixels = int(shape[0] * shape[1])
    indptr = np.zeros(n_masks + 1, np.int64)
    np.cumsum(np.bincount(masks, minlength=n_masks), out=indptr[1:])
    csr = sparse.csr_matrix((np.ones(len(pixels)), pixels, indptr), shape=(n_masks, n_pixels))
    csr.has_sorted_indices = True
    csc = csr.tocsc()
    csc.has_sorted_indices = True
    return Incidence(csr, csc, tuple(shape))


def labels_incidence(segs, shape, radius: int = DILATION_RADIUS) -> Incidence:
    """The dilated masks of several label images (H, W) of one image, numbered label image
    by label image, then label by label (upstream's order)."""
    all_masks, all_pixels, offset = [], [], 0
    for seg in segs:
        masks, pixels, n_masks = dilated_label_pairs(seg, radius)
        all_masks.append(masks + offset)
        all_pixels.append(pixels)
        offset += n_masks
    return incidence_from_pairs(np.concatenate(all_masks), np.concatenate(all_pixels), offset, shape)


def felzenszwalb_incidences(images: np.ndarray, radius: int = DILATION_RADIUS, pool=None) -> list[Incidence]:
    """XRAI's default segments of each image of ``images`` (N, H, W, C): Felzenszwalb at six
    scales, each segment dilated by a disk of ``radius``. ``timings`` records the two stages."""
    import time

    t0 = time.perf_counter()
    batch = felzenszwalb_label_batch(images, pool=pool)
    t1 = time.perf_counter()
    out = []
    for segs in batch:
        start = time.perf_counter()
        inc = labels_incidence(segs, images.shape[1:3], radius)
        inc.timings = {"felzenszwalb": (t1 - t0) / len(images), "incidence": time.perf_counter() - start}
        out.append(inc)
    return out


def felzenszwalb_incidence(image: np.ndarray, radius: int = DILATION_RADIUS, pool=None) -> Incidence:
    """:func:`felzenszwalb_incidences` for one image (H, W, C)."""
    return felzenszwalb_incidences(image[None], radius, pool)[0]


def masks_incidence(masks: np.ndarray) -> Incidence:
    """An :class:`Incidence` from boolean masks (M, H, W), used as given (no dilation)."""
    masks = np.asarray(masks, bool)
    m, p = np.nonzero(masks.reshape(len(masks), -1))
    return incidence_from_pairs(m, p, len(masks), masks.shape[1:])


def label_image_incidence(labels: np.ndarray) -> Incidence:
    """An :class:`Incidence` with one mask per distinct value of an integer label image (H, W),
    in increasing label order, used as given (no dilation)."""
    values, inverse = np.unique(np.asarray(labels), return_inverse=True)
    inverse = inverse.ravel()
    pixels = np.argsort(inverse, kind="stable")
    return incidence_from_pairs(inverse[pixels], pixels, len(values), labels.shape)


# -- ranking -----------------------------------------------------------------------------------
@dataclass
class Ranking:
    """XRAI's result for one image.

    values : (H, W) float64 attribution, constant on each region.
    regions : flat pixel indices of each region, most important first (the uncovered rest last).
    gains : each region's value (mean attribution), in the same order.
    """

    values: np.ndarray
    regions: list
    gains: np.ndarray

    def ranks(self) -> np.ndarray:
        """(H, W) int: 1 for the most important region, ..., N for the least."""
        out = np.zeros(self.values.size, np.int64)
        for i, pix in enumerate(self.regions):
            out[pix] = i + 1
        return out.reshape(self.values.shape)

    def masks(self) -> np.ndarray:
        """(N, H, W) bool, most important first."""
        out = np.zeros((len(self.regions), self.values.size), bool)
        for i, pix in enumerate(self.regions):
            out[i, pix] = True
        return out.reshape((len(self.regions),) + self.values.shape)


def _finish(attr: np.ndarray, covered: np.ndarray, picked: list, gains: list) -> Ranking:
    """Paint each picked region with its gain, give the rest its own mean, sort by gain."""
    flat = attr.ravel()
    values = np.empty(flat.size, np.float64)
    for pix, g in zip(picked, gains):
        values[pix] = g
    order = np.argsort(-np.asarray(gains, np.float64), kind="stable")
    regions = [picked[i] for i in order]
    out_gains = [gains[i] for i in order]
    rest = np.flatnonzero(~covered)
    if rest.size:
        g = flat[rest].mean()
        values[rest] = g
        regions.append(rest)
        out_gains.append(g)
    return Ranking(values.reshape(attr.shape), regions, np.asarray(out_gains, np.float64))


def _gather_columns(csc, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the nonzeros in ``columns`` of ``csc``, and the column of each."""
    starts = csc.indptr[columns]
    lengths = csc.indptr[columns + 1] - starts
    total = int(lengths.sum())
    within = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return csc.indices[np.repeat(starts, lengths) + within], np.repeat(np.arange(len(columns)), lengths)


def rank_full(attr: np.ndarray, inc: Incidence, area_threshold: float = 1.0,
              min_pixel_diff: int = 50) -> Ranking:
    """Greedy XRAI: repeatedly add the mask with the highest mean attribution over its
    not-yet-covered pixels; masks adding fewer than ``min_pixel_diff`` new pixels are dropped;
    the loop goes on while the covered fraction is at most ``area_threshold``. Ties go to the
    earlier mask.
    """
    flat = np.asarray(attr, np.float64).ravel()
    csr, csc = inc.csr, inc.csc
    n_masks, n_pixels = csr.shape
    counts = np.diff(csr.indptr).astype(np.int64)
    rows = np.repeat(np.arange(n_masks), counts)
    sums = np.bincount(rows, weights=flat[csr.indices], minlength=n_masks)
    alive = np.ones(n_masks, bool)
    covered = np.zeros(n_pixels, bool)
    n_covered = 0
    threshold = max(int(min_pixel_diff), 1)
    picked, gains = [], []
    while n_covered / n_pixels <= area_threshold:
        alive &= counts >= threshold
        if not alive.any():
            break
        gain = np.full(n_masks, -np.inf)
        np.divide(sums, counts, out=gain, where=alive)
        best = int(np.argmax(gain))
        pix = inc.pixels(best)
        new = pix[~covered[pix]]
        covered[new] = True
        n_covered += len(new)
        picked.append(new)
        gains.append(float(gain[best]))
        alive[best] = False
        hit, col = _gather_columns(csc, new)
        counts -= np.bincount(hit, minlength=n_masks)
        sums -= np.bincount(hit, weights=flat[new][col], minlength=n_masks)
    return _finish(flat.reshape(attr.shape), covered, picked, gains)


def rank_fast(attr: np.ndarray, inc: Incidence, min_pixel_diff: int = 50) -> Ranking:
    """Approximate XRAI: masks sorted once by mean attribution (ties keep their order), each
    adding its not-yet-covered pixels unless fewer than ``min_pixel_diff``."""
    flat = np.asarray(attr, np.float64).ravel()
    csr = inc.csr
    n_masks, n_pixels = csr.shape
    counts = np.diff(csr.indptr)
    sums = np.bincount(np.repeat(np.arange(n_masks), counts), weights=flat[csr.indices], minlength=n_masks)
    gain = np.full(n_masks, -np.inf)
    np.divide(sums, counts, out=gain, where=counts > 0)
    covered = np.zeros(n_pixels, bool)
    threshold = max(int(min_pixel_diff), 1)
    picked, gains = [], []
    for m in np.argsort(-gain, kind="stable"):
        pix = inc.pixels(m)
        new = pix[~covered[pix]]
        if len(new) < threshold:
            continue
        covered[new] = True
        picked.append(new)
        gains.append(float(flat[new].mean()))
    return _finish(flat.reshape(attr.shape), covered, picked, gains)


def default_pool(jobs: int):
    """A thread pool for ``jobs`` independent segmentations, or None when one thread will do."""
    workers = min(jobs, os.cpu_count() or 1)
    if workers <= 1:
        return None
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(workers)
