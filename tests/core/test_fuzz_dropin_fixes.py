"""Drop-in differences a differential fuzz against upstream ``saliency`` found (each now as upstream)."""

from __future__ import annotations

import numpy as np
import pytest
import saliency.core as up

import salplug
import salplug.core as sp
from salplug.core.blur_ig import gaussian_blur

RNG = np.random.default_rng(0)
X = (RNG.integers(0, 256, (8, 8, 3)) / 256.0)  # exact in float32: both packages see the same numbers
W = RNG.normal(size=X.size) * 1e-4


def large_constant_score(batch, call_model_args=None, expected_keys=None):
    """1000 + a tiny linear part, in float64: float32 keeps only ~6e-5 of the differences."""
    b = np.asarray(batch, np.float64)
    return {sp.OUTPUT_LAYER_VALUES: 1000.0 + b.reshape(len(b), -1) @ W}


def test_occlusion_subtracts_float64_scores_in_float64():
    ours = sp.Occlusion().GetMask(X, large_constant_score, size=3)
    theirs = up.Occlusion().GetMask(X, large_constant_score, size=3)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-12)
    assert (ours != 0).all() and (theirs != 0).all()


def test_occlusion_of_a_float64_torch_model_keeps_its_digits():
    torch = pytest.importorskip("torch")
    w = torch.from_numpy(W.reshape(8, 8, 3)).permute(2, 0, 1)  # the same weights, CHW

    class Model(torch.nn.Module):
        def forward(self, x):
            return (1000.0 + (x * w).flatten(1).sum(1))[:, None]

    x = torch.from_numpy(X).permute(2, 0, 1)[None]  # float64
    out = salplug.explain(Model().double(), x, "occlusion", size=3, target=0).values
    exact = up.Occlusion().GetMask(X, large_constant_score, size=3)[..., 0]  # in float64
    np.testing.assert_allclose(out[0, 0].numpy(), exact, rtol=1e-5, atol=1e-12)


def test_format_and_check_call_model_output_raises_keyerror_for_a_missing_key():
    out = {sp.OUTPUT_LAYER_VALUES: np.zeros(2)}
    with pytest.raises(KeyError, match=sp.INPUT_OUTPUT_GRADIENTS):
        sp.CoreSaliency().format_and_check_call_model_output(out, (2, 4), [sp.INPUT_OUTPUT_GRADIENTS])


def test_grad_cam_takes_flags_that_are_ints_like_upstream():
    wc = RNG.normal(size=(X.size, 18))

    def cam(batch, call_model_args=None, expected_keys=None):
        a = np.tanh(np.asarray(batch, np.float64).reshape(len(batch), -1) @ wc).reshape(len(batch), 3, 3, 2)
        return {sp.CONVOLUTION_LAYER_VALUES: a, sp.CONVOLUTION_OUTPUT_GRADIENTS: 1 - a}

    ours = sp.GradCam().GetMask(X, cam, should_resize=0, three_dims=1)
    np.testing.assert_array_equal(ours, sp.GradCam().GetMask(X, cam, should_resize=False, three_dims=True))
    np.testing.assert_allclose(ours, up.GradCam().GetMask(X, cam, should_resize=0, three_dims=1), rtol=1e-5)


@pytest.mark.parametrize("name", ["VisualizeImageGrayscale", "VisualizeImageDiverging"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_visualizations_keep_the_maps_float_type(name, dtype):
    m = RNG.normal(size=(5, 5, 3)).astype(dtype)
    ours, theirs = getattr(sp, name)(m), getattr(up, name)(m)
    assert ours.dtype == theirs.dtype == dtype
    # upstream's diverging clips to [-1, 1], a bug salplug fixes (docs/migration.md): compare in [0, 1]
    np.testing.assert_allclose(ours, np.clip(theirs, 0, 1), rtol=1e-6, atol=1e-7)


def test_gaussian_blur_keeps_float32():
    from saliency.core.blur_ig import gaussian_blur as up_blur

    image = X.astype(np.float32)
    ours, theirs = gaussian_blur(image, 2.0), up_blur(image, 2.0)
    assert ours.dtype == theirs.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, kwargs", [("GradientSaliency", {}), ("IntegratedGradients", {"x_steps": 5})])
def test_a_scalar_input_gives_a_scalar_map(name, kwargs):
    def square(batch, call_model_args=None, expected_keys=None):
        return {sp.INPUT_OUTPUT_GRADIENTS: 2 * np.asarray(batch, np.float64)}

    x = np.float64(0.75)
    ours, theirs = getattr(sp, name)().GetMask(x, square, **kwargs), getattr(up, name)().GetMask(x, square, **kwargs)
    assert np.shape(ours) == np.shape(theirs) == ()
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
