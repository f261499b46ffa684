"""RISE (Petsiuk, Das & Saenko 2018): randomized input sampling for black-box explanation.

Each of ``masks`` random masks is a coarse ``grid`` x ``grid`` grid of cells kept with
probability ``keep_prob``, upsampled bilinearly to ``(grid + 1)`` cells of
``ceil(H / grid)`` x ``ceil(W / grid)`` pixels and cropped at a random offset, so the mask
is smooth and its cells are not aligned with the image. The masked input
``x * M + fill * (1 - M)`` is scored, and the saliency of a pixel is the score-weighted
average of the masks::

    S = 1 / (masks * keep_prob) * sum_i f(x * M_i + fill * (1 - M_i)) * M_i

The masks depend only on ``seed`` and the image size, so every image of a batch sees the
same masks and a batch gives the same maps as its images one at a time. Masks are built
for one model batch at a time (memory bounded by ``ctx.batch_size``). Only scores are
needed: RISE runs on any backend, gradients or not.
"""

from __future__ import annotations

import numpy as np

from salplug import SCORES, InputError, Method, ParameterError


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ParameterError(f"{name} must be a positive int, got {value!r}.")
    return int(value)


def make_rng(seed):
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)):
        return np.random.default_rng(seed)
    raise ParameterError(f"seed must be an int, None or a numpy Generator; got {seed!r}.")


def interpolation_matrix(cells: int, size: int) -> np.ndarray:
    """(size, cells) weights of bilinear upsampling from ``cells`` to ``size`` samples.

    Pixel centres are aligned (output pixel u sits at (u + 0.5) * cells / size - 0.5 in
    cell coordinates), and the edges are clamped, like image resizing usually does.
    """
    pos = np.clip((np.arange(size) + 0.5) * cells / size - 0.5, 0, cells - 1)
    low = np.floor(pos).astype(np.int64)
    high = np.minimum(low + 1, cells - 1)
    frac = pos - low
    out = np.zeros((size, cells))
    np.add.at(out, (np.arange(size), low), 1 - frac)
    np.add.at(out, (np.arange(size), high), frac)
    return out


class MaskSet:
    """The masks of one RISE run: coarse grids and shifts drawn once, masks built on demand."""

    def __init__(self, count: int, grid: int, keep_prob: float, shape: tuple[int, int], rng) -> None:
        h, w = shape
        self.shape = shape
        cell_h, cell_w = -(-h // grid), -(-w // grid)
        self.grids = (rng.random((count, grid, grid)) < keep_prob).astype(np.float64)
        self.dy = rng.integers(0, cell_h, count)
        self.dx = rng.integers(0, cell_w, count)
        self.up_h = interpolation_matrix(grid, (grid + 1) * cell_h)
        self.up_w = interpolation_matrix(grid, (grid + 1) * cell_w)

    def masks(self, index: np.ndarray) -> np.ndarray:
        """Masks ``index`` (any int array), (len(index), H, W) in [0, 1]."""
        h, w = self.shape
        rows = self.up_h[self.dy[index][:, None] + np.arange(h)]   # (k, H, grid)
        cols = self.up_w[self.dx[index][:, None] + np.arange(w)]   # (k, W, grid)
        return np.einsum("khg,kgl,kwl->khw", rows, self.grids[index], cols)


def _add_by_row(out: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
    """``out[rows[i]] += values[i]`` for sorted ``rows``, one reduction per run of equal rows."""
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    out[rows[starts]] += np.add.reduceat(values, starts, axis=0)


class Rise(Method):
    """RISE saliency from the scores of randomly masked inputs.

    Parameters
    ----------
    masks : number of random masks (the paper uses 4000-8000 for ImageNet models).
    grid : cells per side of the coarse mask grid (the paper: 7).
    keep_prob : probability that a cell is kept (the paper: 0.5).
    fill : what masked-out pixels become: a scalar, an array in the input's layout (one
        sample or one per sample), or a callable on the canonical batch (e.g. a blur).
    seed : int, numpy Generator or None; the same seed gives the same masks and maps.

    Returns (N, H, W, C): the map repeated over channels.
    """

    requires = frozenset({SCORES})

    def check(self, ctx, x, targets, *, masks=1000, grid=7, keep_prob=0.5, fill=0.0, seed=None):
        if x.ndim != 4:
            raise InputError(f"RISE masks images: the input must be (N, H, W, C) (canonical), got shape {x.shape}.")
        _positive_int(masks, "masks")
        grid = _positive_int(grid, "grid")
        if grid > min(x.shape[1:3]):
            raise ParameterError(f"grid={grid} has more cells than the image has pixels per side "
                                 f"{x.shape[1:3]}; choose grid <= {min(x.shape[1:3])}.")
        if isinstance(keep_prob, bool) or not isinstance(keep_prob, (int, float, np.floating)) \
                or not 0 < keep_prob <= 1:
            raise ParameterError(f"keep_prob must be a number in (0, 1], got {keep_prob!r}.")
        make_rng(seed)
        ctx.as_canonical(fill, x, "fill")

    def explain(self, ctx, x, targets, *, masks=1000, grid=7, keep_prob=0.5, fill=0.0, seed=None):
        n, h, w, c = x.shape
        mask_set = MaskSet(masks, grid, float(keep_prob), (h, w), make_rng(seed))
        filler = ctx.as_canonical(fill, x, "fill")
        total = np.zeros((n, h, w), np.float64)
        # Row r of the job is (sample r // masks, mask r % masks): sample-major, so each
        # sample's masks are contiguous and per-sample targets stay aligned.
        for rows in ctx.chunks(n * masks, "rise"):
            r = np.arange(rows.start, rows.stop)
            samples, k = r // masks, r % masks
            m = mask_set.masks(k)
            m4 = m[..., None].astype(np.float32)
            fill_rows = filler if filler.shape[0] == 1 else filler[samples]
            batch = x[samples] * m4 + fill_rows * (1 - m4)
            scores = np.asarray(ctx.adapter.scores(batch.astype(np.float32, copy=False), targets.take(samples)),
                                np.float64)
            _add_by_row(total, samples, scores[:, None, None] * m)
        total /= masks * float(keep_prob)
        return np.repeat(total[..., None].astype(np.float32), c, axis=-1)
