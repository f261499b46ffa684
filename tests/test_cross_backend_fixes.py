"""Fixes from a cross-backend differential hunt (the same network on torch, tf2, tf1, callable)."""

from __future__ import annotations

import numpy as np
import pytest

import salplug
from salplug.errors import ParameterError, TargetError

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 5)).eval()


def test_xrai_refuses_a_base_attribution_that_reads_both_as_one_chw_sample_and_as_per_image_maps():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(3, 3, 10, 12)).astype(np.float32))  # N == C == 3
    one = torch.from_numpy(rng.normal(size=(3, 10, 12)).astype(np.float32))
    model = small_model()
    with pytest.raises(ParameterError, match=r"ambiguous.*\(1, 3, 10, 12\)"):
        salplug.explain(model, x, "xrai", target=[0, 1, 2], base_attribution=one)
    # the two readings, each said without ambiguity, give what they say
    as_sample = salplug.explain(model, x, "xrai", target=[0, 1, 2], base_attribution=one[None]).canonical
    repeated = one[None].expand(3, -1, -1, -1).clone()
    np.testing.assert_array_equal(
        as_sample, salplug.explain(model, x, "xrai", target=[0, 1, 2], base_attribution=repeated).canonical)
    per_image = salplug.explain(model, x, "xrai", target=[0, 1, 2], base_attribution=one[:, None]).canonical
    for i in range(3):
        alone = salplug.explain(model, x[i:i + 1], "xrai", target=[i], base_attribution=one[i]).canonical
        np.testing.assert_array_equal(per_image[i], alone[0])
    # without the coincidence (N != C) the (N, H, W) reading stays as documented
    two = salplug.explain(model, x[:2], "xrai", target=[0, 1], base_attribution=one[:2]).canonical
    np.testing.assert_array_equal(two, per_image[:2])


def test_tf1_one_column_y_takes_target_zero_as_torch_does():
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    w = np.random.default_rng(1).normal(size=(12, 1)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 2, 2, 3])
        y = tf.matmul(tf.nn.relu(tf.reshape(x, [-1, 12])), w)  # (N, 1)
    model = salplug.TF1Model(graph, v1.Session(graph=graph), x, y)
    xs = np.random.default_rng(2).normal(size=(3, 2, 2, 3)).astype(np.float32)
    expected = salplug.explain(model, xs, "gradients").values
    np.testing.assert_allclose(expected, (xs > 0) * w.reshape(2, 2, 3), rtol=1e-6)
    np.testing.assert_array_equal(salplug.explain(model, xs, "gradients", target=0).values, expected)
    np.testing.assert_array_equal(salplug.explain(model, xs, "gradients", target=[0, 0, 0]).values, expected)
    with pytest.raises(TargetError, match="must be None or 0"):
        salplug.explain(model, xs, "gradients", target=1)


def test_xrai_takes_one_grayscale_chw_base_attribution_for_one_image():
    # one image with one channel: both readings of (1, H, W) are the same map, nothing to refuse
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(2, 3)).eval()
    rng = np.random.default_rng(0)
    attribution = rng.normal(size=(1, 16, 16)).astype(np.float32)
    image = torch.rand(1, 1, 16, 16)
    batched = salplug.explain(model, image, "xrai", target=0, base_attribution=attribution, layout="NCHW").canonical
    single = salplug.explain(model, image[0], "xrai", target=0, base_attribution=attribution, layout="CHW").canonical
    np.testing.assert_array_equal(batched, single)
