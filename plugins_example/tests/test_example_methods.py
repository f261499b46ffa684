"""The example plugin's components, tested the way a plugin author would: with salplug.testing,
no framework needed (a numpy analytic model and the ``callable`` backend)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

try:
    import salplug_example  # noqa: F401
except ImportError:  # a plain checkout: test the source next to this folder
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import salplug
from salplug import testing as T
from salplug.types import Targets
from salplug_example import plugin
from salplug_example.rise import MaskSet, interpolation_matrix
from salplug_example.visualizers import top_k_mask

PLUGINS = {"salplug_example": plugin}
RISE_SMALL = {"masks": 24, "grid": 3}


@pytest.fixture
def host():
    """Built-ins, the analytic backend and this plugin only (no other installed plugin)."""
    return T.make_host(PLUGINS)


def test_registration_is_lazy_and_declares_requirements(host):
    for name, requires in [("input_x_gradient", {"input_gradients"}), ("rise", {"scores"})]:
        comp = host.methods.get(name)
        assert comp.is_lazy and comp.metadata["requires"] == requires
        assert comp.plugin == "salplug_example"
    assert host.methods.get("RISE").name == "rise" and host.methods.get("inputxgradient").name == "input_x_gradient"
    assert host.visualizers.get("topk").is_lazy


# -- conformance -----------------------------------------------------------------------------------

def test_input_x_gradient_conforms(host):
    T.check_method("input_x_gradient", host=host)


def test_rise_conforms(host):
    report = T.check_method("rise", host=host, params=RISE_SMALL, bad_params=[
        {"masks": 0}, {"masks": 2.5}, {"grid": 0}, {"grid": 50}, {"keep_prob": 0}, {"keep_prob": 1.5},
        {"seed": "zero"}, {"fill": np.zeros((2, 2))}, {"fill": np.nan},
    ])
    assert report["calls"] == {"scores": math.ceil(3 * 24 / 2)}  # N * masks rows, batch_size 2


def test_top_k_mask_conforms(host):
    T.check_visualizer("top_k_mask", host=host)
    T.check_visualizer("top_k_mask", host=host, params={"fraction": 0.5, "signed": True, "dim": 0.3})


# -- exact values -------------------------------------------------------------------------------------

def test_input_x_gradient_is_x_times_the_analytic_gradient(host):
    model = T.AnalyticModel((6, 5, 3), classes=3)
    x = T.sample_inputs(2, (6, 5, 3))
    att = salplug.explain(model, x, "input_x_gradient", target=[2, 0], host=host, batch_size=1)
    np.testing.assert_allclose(att.values, x * model.input_gradients(x, Targets(np.array([2, 0]))), rtol=1e-5)


def test_input_x_gradient_splits_a_linear_score_exactly(host):
    from salplug.backends.callable import INPUT_OUTPUT_GRADIENTS, OUTPUT_LAYER_VALUES

    w = np.random.default_rng(0).normal(0, 1, (4, 4, 3))

    def linear(x_batch, call_model_args=None, expected_keys=None):
        out = {}
        if INPUT_OUTPUT_GRADIENTS in expected_keys:
            out[INPUT_OUTPUT_GRADIENTS] = np.broadcast_to(w, np.shape(x_batch)).copy()
        if OUTPUT_LAYER_VALUES in expected_keys:
            out[OUTPUT_LAYER_VALUES] = (np.asarray(x_batch) * w).reshape(len(x_batch), -1).sum(1)
        return out

    x = T.sample_inputs(2, (4, 4, 3))
    att = salplug.explain(linear, x, "input_x_gradient", backend="callable", host=host)
    np.testing.assert_allclose(att.values.reshape(2, -1).sum(1), (x * w).reshape(2, -1).sum(1), rtol=1e-5)


def test_rise_with_every_cell_kept_is_the_score_everywhere(host):
    model = T.AnalyticModel((8, 6, 3), classes=2)
    x = T.sample_inputs(2, (8, 6, 3))
    att = salplug.explain(model, x, "rise", target=[1, 0], host=host, masks=5, grid=2, keep_prob=1.0, seed=3)
    scores = model.scores(x, Targets(np.array([1, 0])))
    np.testing.assert_allclose(att.values, np.broadcast_to(scores[:, None, None, None], x.shape), rtol=1e-5)


def test_rise_finds_the_patch_the_score_depends_on(host):
    from salplug.backends.callable import OUTPUT_LAYER_VALUES

    patch = np.zeros((16, 16, 1))
    patch[10:14, 2:6] = 1.0

    def patch_sum(x_batch, call_model_args=None, expected_keys=None):
        return {OUTPUT_LAYER_VALUES: (np.asarray(x_batch) * patch).reshape(len(x_batch), -1).sum(1)}

    x = np.ones((1, 16, 16, 3), np.float32)
    att = salplug.explain(patch_sum, x, "rise", backend="callable", host=host, masks=400, grid=4, seed=0,
                          batch_size=64)
    saliency = att.values[0, ..., 0]
    inside = saliency[patch[..., 0] > 0].mean()
    far = saliency[:6, 10:].mean()  # the opposite corner: about E[score], as for any unrelated pixel
    assert inside > 1.2 * far       # measured 1.27-1.40 over seeds 0-5
    assert patch[np.unravel_index(np.argmax(saliency), saliency.shape)][0] == 1.0


def test_rise_packs_masks_into_model_batches_of_batch_size(host):
    model = T.AnalyticModel((8, 8, 3), classes=2)
    adapter = T.AnalyticAdapter(model)
    ctx = salplug.Context(adapter, host, 7)
    from salplug_example.rise import Rise

    x = T.sample_inputs(2, (8, 8, 3))
    out = Rise().explain(ctx, x, Targets(np.array([0, 1])), masks=10, grid=2, seed=1)
    assert out.shape == x.shape
    assert adapter.calls["scores"] == math.ceil(2 * 10 / 7) and adapter.rows["scores"] == 20


def test_masks_are_smooth_reproducible_and_independent_of_chunking():
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    a = MaskSet(12, 3, 0.5, (10, 7), rng_a)
    b = MaskSet(12, 3, 0.5, (10, 7), rng_b)
    every = a.masks(np.arange(12))
    assert every.shape == (12, 10, 7) and every.min() >= 0 and every.max() <= 1
    np.testing.assert_allclose(np.concatenate([b.masks(np.arange(5)), b.masks(np.arange(5, 12))]), every)
    np.testing.assert_allclose(a.masks(np.array([7, 2])), every[[7, 2]])
    m = interpolation_matrix(3, 12)
    np.testing.assert_allclose(m.sum(1), 1.0)
    assert (np.diff(m @ np.array([0.0, 1.0, 2.0])) >= 0).all()  # linear ramps stay monotone


def test_rise_is_rejected_by_a_backend_without_scores(host):
    model = T.AnalyticModel((6, 6, 3))
    with pytest.raises(salplug.CapabilityError, match="needs scores"):
        salplug.explain(model, T.sample_inputs(2, (6, 6, 3)), "rise", target=0, host=host,
                        backend_options={"provides": ["input_gradients"]})


def test_rise_parameter_errors_say_what_to_do(host):
    model = T.AnalyticModel((6, 6, 3))
    with pytest.raises(salplug.ParameterError, match=r"grid=9 .* choose grid <= 6"):
        salplug.explain(model, T.sample_inputs(2, (6, 6, 3)), "rise", target=0, host=host, grid=9)
    with pytest.raises(salplug.ParameterError, match="Did you mean 'masks'"):
        salplug.explain(model, T.sample_inputs(2, (6, 6, 3)), "rise", target=0, host=host, mask=10)


# -- top_k_mask -----------------------------------------------------------------------------------------

def test_top_k_mask_keeps_exactly_the_largest_pixels():
    values = np.zeros((4, 5, 3))
    values[1, 2] = [1, -1, 1]      # |.| sum 3, signed sum 1
    values[3, 4] = [-2, -2, -2]    # |.| sum 6, signed sum -6
    values[0, 0] = [0.5, 0.5, 0.5]  # 1.5 both ways
    mask = top_k_mask(values, fraction=0.1)  # ceil(2.0) = 2 pixels
    assert mask.sum() == 2 and mask[3, 4] == 1 and mask[1, 2] == 1
    signed = top_k_mask(values, fraction=0.1, signed=True)
    assert signed[0, 0] == 1 and signed[1, 2] == 1 and signed[3, 4] == 0
    image = np.full((4, 5, 3), 200, np.uint8)
    cut = top_k_mask(values, image=image, fraction=0.05, dim=0.5)
    np.testing.assert_allclose(cut[3, 4], 200 / 255)
    np.testing.assert_allclose(cut[0, 0], 100 / 255)


def test_top_k_mask_keeps_a_float_image_that_overshoots_one_a_little():
    image = np.full((2, 2, 3), 0.5)
    image[0, 0] = 1.0001  # a [0, 1] image after resampling, not a 0-255 one
    cut = top_k_mask(np.ones((2, 2, 1)), image=image, fraction=1.0)
    np.testing.assert_allclose(cut[1, 1], 0.5)
    np.testing.assert_allclose(top_k_mask(np.ones((2, 2, 1)), fraction=np.int64(1)), np.ones((2, 2)))


@pytest.mark.parametrize("kwargs, message", [({"fraction": 0}, "fraction"), ({"fraction": 2}, "fraction"),
                                             ({"dim": -1}, "dim"), ({"dim": "x"}, "dim"),
                                             ({"fraction": True}, "fraction")])
def test_top_k_mask_rejects_bad_parameters(kwargs, message):
    with pytest.raises(salplug.ParameterError, match=message):
        top_k_mask(np.ones((3, 3, 1)), **kwargs)
