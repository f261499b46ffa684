"""Segments and region ranking for XRAI (Kapishnikov et al. ICCV 2019), numpy/scipy only
(Felzenszwalb itself: ``_felzenszwalb``).

Masks are stored by *atoms*: the sets of pixels that lie in exactly the same masks. Every
pixel's masks form one bitset (a column of uint64 words). Felzenszwalb segments are dilated as
bitsets of their label image -- a shift-and-OR over the rows of the disk, one pass per scale
for every label at once -- and pixels with equal bitsets make one atom. The greedy ranking
works on the few thousand atoms instead of every pixel, keeping each mask's remaining pixel
count and attribution sum up to date through the atom-to-mask incidence, so a step costs only
the atoms it newly covers.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from . import _felzenszwalb

FELZENSZWALB_SCALES = (50, 100, 150, 250, 500, 1200)
FELZENSZWALB_SIGMA = 0.8
FELZENSZWALB_MIN_SIZE = 150
SEGMENTATION_SIZE = (224, 224)
DILATION_RADIUS = 5

_WORD = 64


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


def resize_labels(seg: np.ndarray, shape) -> np.ndarray:
    """A label image resized to ``shape`` by nearest neighbour (as upstream), or as it is."""
    from skimage.transform import resize

    if seg.shape == tuple(shape):
        return seg
    return resize(seg, shape, order=0, preserve_range=True, mode="constant", anti_aliasing=False).astype(int)


def scale_groups(scales=FELZENSZWALB_SCALES) -> list[tuple]:
    """The scales of one image, split into segmentation jobs: one job when the compiled passes
    share the edge sort, else one per scale (scikit-image's function releases the GIL)."""
    if _felzenszwalb.shares_edges():
        return [tuple(scales)]
    return [(s,) for s in scales]


def felzenszwalb_labels(image: np.ndarray, scales=FELZENSZWALB_SCALES, sigma: float = FELZENSZWALB_SIGMA,
                        min_size: int = FELZENSZWALB_MIN_SIZE, size=SEGMENTATION_SIZE) -> list[np.ndarray]:
    """Felzenszwalb label images (H, W) of ``image`` (H, W, C), one per scale.

    The segmentation runs on the image normalised by :func:`normalize_for_segmentation`;
    labels are resized back to H x W by nearest neighbour.
    """
    normalized = normalize_for_segmentation(image, size)
    segs = _felzenszwalb.felzenszwalb_scales(normalized, scales, sigma, min_size)
    return [resize_labels(seg, image.shape[:2]) for seg in segs]


def disk_offsets(radius: int) -> np.ndarray:
    """(K, 2) integer offsets (dy, dx) of a digital disk of ``radius`` (skimage ``disk``)."""
    r = np.arange(-radius, radius + 1)
    dy, dx = np.meshgrid(r, r, indexing="ij")
    inside = dy * dy + dx * dx <= radius * radius
    return np.stack([dy[inside], dx[inside]], axis=1)


def _shift_or(dst: np.ndarray, src: np.ndarray, axis: int, step: int) -> None:
    """``dst |= src`` shifted by ``step`` (positive and negative) along ``axis``, zeros outside."""
    lo = [slice(None)] * src.ndim
    hi = [slice(None)] * src.ndim
    lo[axis], hi[axis] = slice(step, None), slice(None, -step)
    dst[tuple(lo)] |= src[tuple(hi)]
    dst[tuple(hi)] |= src[tuple(lo)]


def label_bits(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """One-hot bitsets of a label image: (words, H, W) uint64 and the number of labels.

    Label ``m`` (counted from ``labels.min()``, every value up to the maximum, so absent
    labels give empty masks) is bit ``m % 64`` of word ``m // 64``.
    """
    lab = np.asarray(labels, np.int64)
    lab = (lab - lab.min()).ravel()
    n_labels = int(lab.max()) + 1
    words = -(-n_labels // _WORD)
    bits = np.zeros((words, lab.size), np.uint64)
    bits[lab >> 6, np.arange(lab.size)] = np.left_shift(np.uint64(1), (lab & 63).astype(np.uint64))
    return bits.reshape((words,) + labels.shape), n_labels


def dilate_bits(bits: np.ndarray, radius: int = DILATION_RADIUS) -> np.ndarray:
    """Bitsets (words, H, W) dilated by a disk of ``radius``: every label's mask at once.

    A pixel gets every label found within the disk around it: rows of the disk are horizontal
    runs, so the runs' ORs are built once per half-width and then ORed over the rows.
    """
    if radius <= 0:
        return bits
    offsets = disk_offsets(radius)
    half = [int(offsets[offsets[:, 0] == dy, 1].max()) for dy in range(radius + 1)]
    runs, cur = {0: bits}, bits
    for r in range(1, max(half) + 1):
        cur = cur.copy()
        _shift_or(cur, bits, 2, r)
        runs[r] = cur
    out = runs[half[0]].copy()
    for dy in range(1, radius + 1):
        _shift_or(out, runs[half[dy]], 1, dy)
    return out


def dilated_label_bits(labels: np.ndarray, radius: int = DILATION_RADIUS) -> tuple[np.ndarray, int]:
    """Every label's mask dilated by a disk of ``radius``, as bitsets (words, H * W)."""
    bits, n_labels = label_bits(labels)
    return dilate_bits(bits, radius).reshape(len(bits), -1), n_labels


# -- atoms -------------------------------------------------------------------------------------
def _column_keys(words: np.ndarray) -> np.ndarray:
    """One uint64 per column of ``words`` (K, P): the word itself, or a mixing hash of all K."""
    if len(words) == 1:
        return words[0]
    rng = np.random.default_rng(0x5A1)
    mult = rng.integers(1, 2**63, size=len(words), dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    key = np.zeros(words.shape[1], np.uint64)
    for w, m in zip(words, mult):
        key ^= (w ^ (w >> np.uint64(31))) * m
        key = (key << np.uint64(7)) | (key >> np.uint64(57))
    return key


def atoms_of(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group equal columns of ``words`` (K, P): (atom index per column, one column of each atom).

    Atoms are numbered in the order of their column keys (as ``np.unique`` would number them).
    """
    keys = _column_keys(words)
    order = np.argsort(keys)
    ordered = keys[order]
    starts = np.empty(len(keys), bool)
    starts[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    inverse = np.empty(len(keys), np.int64)
    inverse[order] = np.cumsum(starts) - 1
    first = order[starts]
    if len(words) > 1 and not np.array_equal(words[:, first[inverse]], words):  # a hash collision
        _, first, inverse = np.unique(words.T, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
    return inverse, first


@dataclass
class Incidence:
    """Masks over an H x W image, by atoms (pixels that lie in exactly the same masks).

    atoms : (H * W,) atom of each pixel (C order).
    masks : CSR (n_masks x n_atoms), the atoms of each mask.
    """

    atoms: np.ndarray
    masks: object
    shape: tuple[int, int]
    timings: dict = field(default_factory=dict)
    _by_atom: object = field(default=None, repr=False)
    _csr: object = field(default=None, repr=False)

    @property
    def n_masks(self) -> int:
        return self.masks.shape[0]

    @property
    def n_atoms(self) -> int:
        return self.masks.shape[1]

    @property
    def atom_masks(self):
        """CSC of ``masks``: the masks holding each atom."""
        if self._by_atom is None:
            self._by_atom = self.masks.tocsc()
            self._by_atom.sort_indices()
        return self._by_atom

    @property
    def csr(self):
        """CSR (n_masks x pixels) of the masks themselves."""
        if self._csr is None:
            from scipy import sparse

            n = self.atoms.size
            onehot = sparse.csr_matrix((np.ones(n), (self.atoms, np.arange(n))), shape=(self.n_atoms, n))
            self._csr = (self.masks @ onehot).tocsr()
            self._csr.sort_indices()
        return self._csr

    def mask(self, m: int) -> np.ndarray:
        """Boolean H x W image of mask ``m``."""
        inside = np.zeros(self.n_atoms, bool)
        inside[self.masks.indices[self.masks.indptr[m]:self.masks.indptr[m + 1]]] = True
        return inside[self.atoms].reshape(self.shape)

    def pixels(self, m: int) -> np.ndarray:
        return np.flatnonzero(self.mask(m))


def set_bits(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bit position, column) of every set bit of ``words`` (K, A) uint64; position = word * 64 + bit."""
    positions, columns = [], []
    for k, word in enumerate(words):
        cols = np.flatnonzero(word)
        w = word[cols]
        while len(cols):
            low = w & (~w + np.uint64(1))                   # the lowest set bit
            positions.append(k * _WORD + np.log2(low.astype(np.float64)).astype(np.int64))
            columns.append(cols)
            w = w ^ low
            keep = w != 0
            cols, w = cols[keep], w[keep]
    if not positions:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(positions), np.concatenate(columns)


def incidence_from_bits(words: np.ndarray, rows: np.ndarray, shape) -> Incidence:
    """An :class:`Incidence` from per-pixel bitsets ``words`` (K, P) uint64.

    ``rows`` lists, in mask order, the bit position (word * 64 + bit) of every mask.
    """
    from scipy import sparse

    atoms, first = atoms_of(words)
    positions, columns = set_bits(words[:, first])
    mask_of = np.full(len(words) * _WORD, -1, np.int64)
    mask_of[np.asarray(rows)] = np.arange(len(rows))
    masks = mask_of[positions]
    keep = masks >= 0
    entries = np.sort(masks[keep] * len(first) + columns[keep])  # by mask, then atom
    indptr = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(np.bincount(entries // len(first), minlength=len(rows)), out=indptr[1:])
    mask_atoms = sparse.csr_matrix((np.ones(len(entries)), entries % len(first), indptr),
                                   shape=(len(rows), len(first)))
    mask_atoms.has_sorted_indices = True
    return Incidence(atoms, mask_atoms, tuple(shape))


def labels_incidence(segs, shape, radius: int = DILATION_RADIUS) -> Incidence:
    """The dilated masks of several label images (H, W) of one image, numbered label image
    by label image, then label by label (upstream's order)."""
    return _combine([dilated_label_bits(seg, radius) for seg in segs], shape)


def _combine(parts, shape) -> Incidence:
    """One incidence from per-label-image bitsets [(words (K_i, P), n_labels_i), ...]."""
    words, rows, offset = [], [], 0
    for bits, n_labels in parts:
        words.append(bits)
        rows.append(offset * _WORD + np.arange(n_labels))
        offset += len(bits)
    return incidence_from_bits(np.concatenate(words), np.concatenate(rows), shape)


def start_felzenszwalb(images: np.ndarray, radius: int = DILATION_RADIUS, pool=None,
                       scales=FELZENSZWALB_SCALES):
    """Start XRAI's default segmentation of ``images`` (N, H, W, C); returns ``finish()``, which
    waits for it and returns one :class:`Incidence` per image.

    Each (image, :func:`scale_groups` entry) -- Felzenszwalb and the dilation of its labels --
    is one job of ``pool``, so the work runs while the caller does something else (XRAI's IG);
    without a pool it all runs inside ``finish()``. ``timings`` records the seconds of each stage.
    """
    shape = images.shape[1:3]
    normalized = [normalize_for_segmentation(im) for im in images]
    groups = scale_groups(scales)

    def job(item):
        i, group = item
        t0 = time.perf_counter()
        segs = _felzenszwalb.felzenszwalb_scales(normalized[i], group, FELZENSZWALB_SIGMA, FELZENSZWALB_MIN_SIZE)
        t1 = time.perf_counter()
        bits = [dilated_label_bits(resize_labels(seg, shape), radius) for seg in segs]
        return bits, t1 - t0, time.perf_counter() - t1

    jobs = [(i, g) for i in range(len(images)) for g in groups]
    futures = [pool.submit(job, j) for j in jobs] if pool is not None else None

    def finish() -> list[Incidence]:
        done = [f.result() for f in futures] if futures is not None else [job(j) for j in jobs]
        out, k = [], len(groups)
        for i in range(len(images)):
            part = done[i * k:(i + 1) * k]
            start = time.perf_counter()
            inc = _combine([bits for p in part for bits in p[0]], shape)
            inc.timings = {"felzenszwalb": sum(p[1] for p in part), "dilation": sum(p[2] for p in part),
                           "atoms": time.perf_counter() - start}
            out.append(inc)
        return out

    return finish


def felzenszwalb_incidences(images: np.ndarray, radius: int = DILATION_RADIUS, pool=None,
                            scales=FELZENSZWALB_SCALES) -> list[Incidence]:
    """XRAI's default segments of each image of ``images`` (N, H, W, C): Felzenszwalb at six
    scales, each segment dilated by a disk of ``radius`` (see :func:`start_felzenszwalb`)."""
    return start_felzenszwalb(images, radius, pool, scales)()


def felzenszwalb_incidence(image: np.ndarray, radius: int = DILATION_RADIUS, pool=None) -> Incidence:
    """:func:`felzenszwalb_incidences` for one image (H, W, C)."""
    return felzenszwalb_incidences(image[None], radius, pool)[0]


def masks_incidence(masks: np.ndarray) -> Incidence:
    """An :class:`Incidence` from boolean masks (M, H, W), used as given (no dilation)."""
    masks = np.asarray(masks, bool)
    m = len(masks)
    packed = np.packbits(masks.reshape(m, -1), axis=0, bitorder="little")      # (ceil(m / 8), P)
    words = -(-m // _WORD)
    padded = np.zeros((words * 8, packed.shape[1]), np.uint8)
    padded[:len(packed)] = packed
    bits = np.ascontiguousarray(padded.reshape(words, 8, -1).transpose(0, 2, 1)).view(np.uint64)[..., 0]
    return incidence_from_bits(bits, np.arange(m), masks.shape[1:])


def label_image_incidence(labels: np.ndarray) -> Incidence:
    """An :class:`Incidence` with one mask per distinct value of an integer label image (H, W),
    in increasing label order, used as given (no dilation)."""
    from scipy import sparse

    values, inverse = np.unique(np.asarray(labels), return_inverse=True)
    n = len(values)
    return Incidence(inverse.ravel(), sparse.identity(n, format="csr", dtype=np.float64), tuple(labels.shape))


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


def _atom_weights(flat: np.ndarray, inc: Incidence) -> tuple[np.ndarray, np.ndarray]:
    """(pixel count, attribution sum) of every atom."""
    counts = np.bincount(inc.atoms, minlength=inc.n_atoms).astype(np.int64)
    sums = np.bincount(inc.atoms, weights=flat, minlength=inc.n_atoms)
    return counts, sums


def _mask_totals(inc: Incidence, a_counts: np.ndarray, a_sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    csr = inc.masks
    rows = np.repeat(np.arange(inc.n_masks), np.diff(csr.indptr))
    counts = np.bincount(rows, weights=a_counts[csr.indices], minlength=inc.n_masks).astype(np.int64)
    sums = np.bincount(rows, weights=a_sums[csr.indices], minlength=inc.n_masks)
    return counts, sums


def _finish(attr: np.ndarray, inc: Incidence, covered: np.ndarray, picked: list, gains: list) -> Ranking:
    """Paint each picked region (a list of atoms) with its gain, give the rest its own mean,
    sort by gain; regions come back as pixel indices."""
    flat = attr.ravel()
    ranked = np.argsort(-np.asarray(gains, np.float64), kind="stable")
    region_of_atom = np.full(inc.n_atoms, len(ranked))            # the uncovered rest: last
    atom_value = np.empty(inc.n_atoms, np.float64)
    for r, i in enumerate(ranked):
        region_of_atom[picked[i]] = r
        atom_value[picked[i]] = gains[i]
    out_gains = [gains[i] for i in ranked]
    pix_region = region_of_atom[inc.atoms]
    order = np.argsort(pix_region, kind="stable")
    starts = np.searchsorted(pix_region[order], np.arange(len(ranked) + 2))
    regions = [order[starts[r]:starts[r + 1]] for r in range(len(ranked))]
    values = atom_value[inc.atoms]
    rest = order[starts[len(ranked)]:]
    if rest.size:
        g = flat[rest].mean()
        values[rest] = g
        regions.append(rest)
        out_gains.append(g)
    return Ranking(values.reshape(attr.shape), regions, np.asarray(out_gains, np.float64))


def _gather(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column indices of the nonzeros in ``rows`` of a CSR/CSC structure, and the row of each."""
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    total = int(lengths.sum())
    within = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return indices[np.repeat(starts, lengths) + within], np.repeat(np.arange(len(rows)), lengths)


def _exact_sums(inc: Incidence, covered: np.ndarray, a_sums: np.ndarray, masks: np.ndarray,
                sums: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """The attribution sums of ``masks`` over their uncovered atoms, summed afresh where not
    ``exact`` yet (no residue from subtracting: a mask of exact zeros sums to exactly 0);
    stored into ``sums``, and marked ``exact`` until a subtraction touches them again."""
    stale = masks[~exact[masks]]
    if len(stale):
        atoms, row = _gather(inc.masks.indptr, inc.masks.indices, stale)
        keep = ~covered[atoms]
        sums[stale] = np.bincount(row[keep], weights=a_sums[atoms[keep]], minlength=len(stale))
        exact[stale] = True
    return sums[masks]


def rank_full(attr: np.ndarray, inc: Incidence, area_threshold: float = 1.0,
              min_pixel_diff: int = 50) -> Ranking:
    """Greedy XRAI: repeatedly add the mask with the highest mean attribution over its
    not-yet-covered pixels; masks adding fewer than ``min_pixel_diff`` new pixels are dropped;
    the loop goes on while the covered fraction is at most ``area_threshold``. Ties go to the
    earlier mask.
    """
    flat = np.asarray(attr, np.float64).ravel()
    a_counts, a_sums = _atom_weights(flat, inc)
    counts, sums = _mask_totals(inc, a_counts, a_sums)
    csr, csc = inc.masks, inc.atom_masks
    n_masks, n_pixels = inc.n_masks, flat.size
    alive = np.ones(n_masks, bool)
    covered = np.zeros(inc.n_atoms, bool)
    n_covered = 0
    threshold = max(int(min_pixel_diff), 1)
    picked, gains = [], []
    gain = np.empty(n_masks)
    tie = 1e-9 * float(np.abs(flat).max(initial=0.0))
    exact = np.ones(n_masks, bool)  # sums with no subtraction residue (summed afresh)
    while n_covered / n_pixels <= area_threshold:
        alive &= counts >= threshold
        if not alive.any():
            break
        gain.fill(-np.inf)
        np.divide(sums, counts, out=gain, where=alive)
        best = int(np.argmax(gain))
        # masks tied with the best up to the rounding residue that the subtractions below leave
        # (or a best gain of about 0, which may be an exact 0) are summed afresh: exact ties then
        # go to the earlier mask, as upstream's do, and an exact 0 stays 0
        near = np.flatnonzero(gain >= gain[best] - tie)
        if len(near) > 1 or abs(gain[best]) <= tie:
            best = int(near[np.argmax(_exact_sums(inc, covered, a_sums, near, sums, exact) / counts[near])])
        atoms = csr.indices[csr.indptr[best]:csr.indptr[best + 1]]
        new = atoms[~covered[atoms]]
        covered[new] = True
        n_covered += int(a_counts[new].sum())
        picked.append(new)
        gains.append(float(sums[best] / counts[best]))
        alive[best] = False
        hit, col = _gather(csc.indptr, csc.indices, new)
        counts -= np.bincount(hit, weights=a_counts[new][col], minlength=n_masks).astype(np.int64)
        sums -= np.bincount(hit, weights=a_sums[new][col], minlength=n_masks)
        exact[hit] = False
    return _finish(flat.reshape(attr.shape), inc, covered, picked, gains)


def rank_fast(attr: np.ndarray, inc: Incidence, min_pixel_diff: int = 50) -> Ranking:
    """Approximate XRAI: masks sorted once by mean attribution (ties keep their order), each
    adding its not-yet-covered pixels unless fewer than ``min_pixel_diff``."""
    flat = np.asarray(attr, np.float64).ravel()
    a_counts, a_sums = _atom_weights(flat, inc)
    counts, sums = _mask_totals(inc, a_counts, a_sums)
    gain = np.full(inc.n_masks, -np.inf)
    np.divide(sums, counts, out=gain, where=counts > 0)
    csr = inc.masks
    covered = np.zeros(inc.n_atoms, bool)
    threshold = max(int(min_pixel_diff), 1)
    picked, gains = [], []
    for m in np.argsort(-gain, kind="stable"):
        atoms = csr.indices[csr.indptr[m]:csr.indptr[m + 1]]
        new = atoms[~covered[atoms]]
        count = int(a_counts[new].sum())
        if count < threshold:
            continue
        covered[new] = True
        picked.append(new)
        gains.append(float(a_sums[new].sum() / count))
    return _finish(flat.reshape(attr.shape), inc, covered, picked, gains)


def default_pool(jobs: int, threads: int | None = None, concurrent: bool = False):
    """A thread pool for ``jobs`` independent segmentations (at most ``threads`` workers; None:
    one per CPU core), or None when the calling thread will do: ``threads == 1``, or a single
    worker while the caller has nothing else to do (``concurrent``: it has, e.g. XRAI's IG)."""
    workers = min(jobs, threads or os.cpu_count() or 1)
    if threads == 1 or workers < 1 or (workers == 1 and not concurrent):
        return None
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(workers)
