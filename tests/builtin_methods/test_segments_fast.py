"""XRAI's fast segment paths equal the straightforward ones: bitset dilation vs per-mask
dilation, atoms vs pixels, the atom-level greedy vs a pixel-level reference."""

from __future__ import annotations

import numpy as np
import pytest

import salplug
from salplug.builtin_methods import _segments


def per_mask_dilation(labels, radius):
    from skimage.morphology import dilation, disk

    lab = labels - labels.min()
    return np.array([dilation(lab == m, disk(radius)) if radius else lab == m for m in range(lab.max() + 1)])


@pytest.mark.parametrize("shape,n_labels,radius", [((23, 31), 5, 5), ((40, 17), 90, 5), ((12, 12), 3, 2),
                                                  ((9, 14), 70, 0)])
def test_bitset_dilation_equals_dilating_each_mask(shape, n_labels, radius):
    rng = np.random.default_rng(n_labels)
    labels = rng.integers(0, n_labels, shape) + 3  # labels need not start at 0; some may be absent
    bits, n = _segments.dilated_label_bits(labels, radius)
    expected = per_mask_dilation(labels, radius)
    assert n == len(expected)
    got = _segments.labels_incidence([labels], shape, radius).csr.toarray().astype(bool)
    np.testing.assert_array_equal(got, expected.reshape(len(expected), -1))


def test_several_label_images_keep_upstream_mask_order():
    rng = np.random.default_rng(1)
    segs = [rng.integers(0, k, (20, 26)) for k in (3, 70, 5)]  # the middle one needs two words
    inc = _segments.labels_incidence(segs, (20, 26), 5)
    expected = np.concatenate([per_mask_dilation(s, 5) for s in segs])
    np.testing.assert_array_equal(inc.csr.toarray().astype(bool), expected.reshape(len(expected), -1))
    for m in (0, 4, 72, len(expected) - 1):
        np.testing.assert_array_equal(inc.mask(m), expected[m])


def test_set_bits_finds_every_bit():
    rng = np.random.default_rng(2)
    words = rng.integers(0, 2**63, (3, 50), dtype=np.uint64) & rng.integers(0, 2**63, (3, 50), dtype=np.uint64)
    words[1, 7] = np.uint64(2**63)  # the top bit
    words[2, :10] = 0
    pos, col = _segments.set_bits(words)
    bitmap = np.unpackbits(words.view(np.uint8).reshape(3, 50, 8).transpose(0, 2, 1).reshape(24, 50), axis=0,
                           bitorder="little")
    expected = set(zip(*np.nonzero(bitmap)))
    assert set(zip(pos.tolist(), col.tolist())) == {(int(a), int(b)) for a, b in expected}
    assert len(pos) == len(expected)


def test_boolean_masks_over_many_words_and_atoms_are_exact(monkeypatch):
    rng = np.random.default_rng(3)
    masks = rng.random((150, 18, 21)) < 0.1
    inc = _segments.masks_incidence(masks)
    np.testing.assert_array_equal(inc.csr.toarray().astype(bool), masks.reshape(150, -1))
    # atoms: pixels of one atom lie in the same masks
    flat = masks.reshape(150, -1)
    for a in range(inc.n_atoms):
        cols = flat[:, inc.atoms == a]
        assert (cols == cols[:, :1]).all()
    # a hash that collides everywhere falls back to exact grouping
    monkeypatch.setattr(_segments, "_column_keys", lambda words: np.zeros(words.shape[1], np.uint64))
    again = _segments.masks_incidence(masks)
    np.testing.assert_array_equal(again.csr.toarray().astype(bool), masks.reshape(150, -1))


def pixel_greedy(attr, masks, area_threshold=1.0, min_pixel_diff=50):
    """The greedy on pixels, every mask rescored at every step: (values, ranks)."""
    covered = np.zeros(attr.shape, bool)
    remaining, picked = list(range(len(masks))), []
    while covered.mean() <= area_threshold:
        new = masks[remaining] & ~covered
        counts = new.reshape(len(remaining), -1).sum(1)
        remaining = [m for m, c in zip(remaining, counts) if c >= max(min_pixel_diff, 1)]
        if not remaining:
            break
        gains = [attr[masks[m] & ~covered].mean() for m in remaining]
        best = int(np.argmax(gains))
        added = masks[remaining[best]] & ~covered
        picked.append((added, gains[best]))
        covered |= added
        del remaining[best]
    values, ranks = np.zeros(attr.shape), np.zeros(attr.shape, int)
    for rank, (added, gain) in enumerate(sorted(picked, key=lambda p: -p[1]), 1):
        values[added], ranks[added] = gain, rank
    if not covered.all():
        values[~covered], ranks[~covered] = attr[~covered].mean(), len(picked) + 1
    return values, ranks


@pytest.mark.parametrize("area_threshold,min_pixel_diff", [(1.0, 50), (0.4, 10), (1.0, 1)])
def test_atom_greedy_equals_the_pixel_greedy(area_threshold, min_pixel_diff):
    rng = np.random.default_rng(4)
    segs = [rng.integers(0, k, (8, 9)).repeat(4, 0).repeat(4, 1) for k in (4, 9, 20)]
    inc = _segments.labels_incidence(segs, (32, 36), 3)
    masks = inc.csr.toarray().astype(bool).reshape(-1, 32, 36)
    attr = rng.normal(size=(32, 36))
    got = _segments.rank_full(attr, inc, area_threshold=area_threshold, min_pixel_diff=min_pixel_diff)
    values, ranks = pixel_greedy(attr, masks, area_threshold, min_pixel_diff)
    np.testing.assert_array_equal(got.ranks(), ranks)
    np.testing.assert_allclose(got.values, values, rtol=1e-12, atol=1e-12)
    assert got.values.sum() == pytest.approx(attr.sum())


def test_xrai_segmentation_running_beside_a_failing_ig_does_not_hang():
    def broken(x, call_model_args=None, expected_keys=None):
        raise RuntimeError("model exploded")

    x = np.random.default_rng(5).uniform(0, 1, (2, 24, 24, 3)).astype(np.float32)
    with pytest.raises(Exception, match="model exploded"):
        salplug.explain(broken, x, "xrai", backend="callable", steps=2)


def test_exact_zero_gains_tie_to_the_earlier_mask_without_rounding_residue():
    # A mask of exact zeros (index 0) ties with the zero pixels left of a mixed mask (index 1)
    # once the positive masks are taken. Sums kept by subtraction left residue like 1e-16 on
    # mask 1, which then won; upstream sums each gain afresh (exactly 0) and keeps mask 0.
    h, w = 10, 30
    masks = np.zeros((4, h, w), bool)
    masks[0][:, 20:] = True
    masks[1][:, :20] = True
    masks[2][:, :5] = True
    masks[3][:, 5:10] = True
    inc = _segments.masks_incidence(masks)
    for seed in range(200):
        attr = np.zeros((h, w))
        attr[:, :10] = np.random.default_rng(seed).uniform(1, 2, size=(h, 10))
        ranking = _segments.rank_full(attr, inc, min_pixel_diff=1)
        third = ranking.regions[2]
        assert ranking.gains[2] == 0.0
        assert set(np.unravel_index(third, (h, w))[1]) == set(range(20, 30)), seed  # mask 0 first
