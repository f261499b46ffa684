"""The union-find passes of Felzenszwalb segmentation, compiled by numba (see ``_felzenszwalb``).

Every segment's root is its smallest pixel index, so labels numbered by root equal labels
numbered by first pixel whatever order the unions happen in.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _root(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]  # path halving
        i = parent[i]
    return i


@njit(cache=True, nogil=True)
def merge_passes(edges, weights, n_pixels, k, min_size):
    """Labels (n_pixels,) int64 after the threshold pass and the small-segment pass.

    ``edges`` (E, 2) and ``weights`` (E,) are sorted by weight; ``k`` is scale / 255.
    """
    parent = np.arange(n_pixels)
    size = np.ones(n_pixels, np.int64)
    inner = np.zeros(n_pixels)  # largest merge weight inside each segment (at its root)
    for e in range(len(weights)):
        a = _root(parent, edges[e, 0])
        b = _root(parent, edges[e, 1])
        if a == b:
            continue
        ta = np.float32(inner[a] + k / size[a])
        tb = np.float32(inner[b] + k / size[b])
        if weights[e] < min(ta, tb):
            lo, hi = min(a, b), max(a, b)
            parent[hi] = lo
            size[lo] = size[a] + size[b]
            inner[lo] = weights[e]
    for e in range(len(weights)):
        a = _root(parent, edges[e, 0])
        b = _root(parent, edges[e, 1])
        if a != b and (size[a] < min_size or size[b] < min_size):
            lo, hi = min(a, b), max(a, b)
            parent[hi] = lo
            size[lo] = size[a] + size[b]
    labels = np.empty(n_pixels, np.int64)
    count = 0
    for i in range(n_pixels):
        r = _root(parent, i)
        if r == i:
            labels[i] = count
            count += 1
        else:
            labels[i] = labels[r]
    return labels
