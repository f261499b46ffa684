"""Grad-CAM and Guided Grad-CAM: hand-computed maps, upstream ``saliency`` and Captum agreement,
per-sample targets, layer selection and errors, hook clean-up."""

from __future__ import annotations

import numpy as np
import pytest

import salplug
from conftest import make_cnn, torch_call_model_function
from salplug.errors import LayerError, ParameterError, TargetError

torch = pytest.importorskip("torch")
nn = torch.nn


class TinyCam(nn.Module):
    """1x1 conv (1 -> 2 channels, A0 = x, A1 = 1 - 2x) and a linear head on the 2x2 map."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.head = nn.Linear(8, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -2.0]).view(2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([0.0, 1.0]))
            # class 0: channel 0 weights [[1, 2], [3, 4]] (mean 2.5), channel 1 [[0, 0], [0, 6]] (mean 1.5)
            # class 1: the negation
            v = torch.tensor([1.0, 2, 3, 4, 0, 0, 0, 6])
            self.head.weight.copy_(torch.stack([2 * v, -2 * v]))
            self.head.bias.zero_()

    def forward(self, x):
        return self.head(self.conv(x).flatten(1))


def count_forward(model):
    calls = []
    handle = model.register_forward_pre_hook(lambda m, i: calls.append(1))
    return calls, handle


def all_hooks(model):
    return [(n, m) for n, m in model.named_modules()
            if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks]


# -- exact values --------------------------------------------------------------------------------

def test_hand_computed_tiny_layer(host):
    model = TinyCam()
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    # A0 = x, A1 = 1 - 2x; d score / dA = 2 * head weights; channel weights 2 * (2.5, 1.5) = (5, 3)
    # cam = 5 * A0 + 3 * A1 = [[2, 1], [0, -1]]
    cam = np.array([[2.0, 1.0], [0.0, -1.0]])

    def run(**p):
        return salplug.explain(model, x, "grad_cam", target=0, layer="conv", host=host, **p).values

    out = run(relu=False, should_resize=False, three_dims=False)
    assert torch.is_tensor(out) and out.shape == (1, 2, 2)
    np.testing.assert_allclose(out[0].numpy(), cam, atol=1e-6)
    np.testing.assert_allclose(run(should_resize=False, three_dims=False)[0].numpy(), np.maximum(cam, 0), atol=1e-6)
    np.testing.assert_allclose(run(relu=False, should_resize=False, three_dims=False, normalize=True)[0].numpy(),
                               cam / 2, atol=1e-6)
    # defaults: ReLU, divided by the max, resized (2x2 -> 2x2 is a no-op), tiled to 3 channels (NCHW)
    out = run()
    assert out.shape == (1, 3, 2, 2)
    for k in range(3):
        np.testing.assert_allclose(out[0, k].numpy(), np.maximum(cam, 0) / 2, atol=1e-6)
    # class 1 is the negation: the map flips sign
    neg = salplug.explain(model, x, "grad_cam", target=1, layer="conv", host=host, relu=False,
                          should_resize=False, three_dims=False).values
    np.testing.assert_allclose(neg[0].numpy(), -cam, atol=1e-6)


def test_all_zero_map_stays_zero(host):
    model = TinyCam()
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    with torch.no_grad():
        model.head.weight[0, :4] = 0.0  # class 0 now depends on channel 1 only, weight 12 / 4 = 3
    # cam = 3 * (1 - 2x) < 0 everywhere: ReLU leaves zeros; normalising must not make NaNs
    out = salplug.explain(model, x, "grad_cam", target=0, layer="conv", host=host).values
    assert torch.isfinite(out).all() and (out == 0).all()


@pytest.mark.parametrize("shape,out", [((3, 7, 7), (224, 224)), ((2, 10, 6), (20, 3)), ((2, 50, 40), (20, 17))])
def test_stack_resize_matches_skimage_per_map(shape, out):
    from skimage.transform import resize

    from salplug.builtin_methods.grad_cam import resize_maps

    maps = np.random.default_rng(0).normal(size=shape)
    expected = np.stack([resize(m, out, order=1) for m in maps])  # upsampling, mixed, shrinking
    np.testing.assert_allclose(resize_maps(maps, out), expected, rtol=0, atol=1e-12)


# -- agreement with the upstream package -------------------------------------------------------

@pytest.mark.parametrize("should_resize,three_dims", [(True, True), (False, False), (True, False), (False, True)])
def test_matches_upstream_gradcam(host, should_resize, three_dims):
    core = pytest.importorskip("saliency.core")
    model = make_cnn()
    x = np.random.default_rng(0).random((3, 20, 20, 3)).astype(np.float32)
    targets = [3, 1, 7]
    ours = salplug.explain(model, x, "grad_cam", target=targets, layer=model.conv2, host=host,
                           should_resize=should_resize, three_dims=three_dims).values
    for i, t in enumerate(targets):
        upstream = core.GradCam().GetMask(x[i], torch_call_model_function(model, t, layer=model.conv2),
                                          should_resize=should_resize, three_dims=three_dims)
        assert ours[i].shape == upstream.shape
        # same float32 activations/gradients; float64 here vs float32 upstream in the weighted sum
        np.testing.assert_allclose(ours[i], upstream, rtol=1e-5, atol=1e-6 * np.abs(upstream).max())


def test_callable_backend_gives_the_same_map(host):
    model = make_cnn()
    x = np.random.default_rng(1).random((20, 20, 3)).astype(np.float32)
    fn = torch_call_model_function(model, 4, layer=model.conv2)
    via_fn = salplug.explain(fn, x, "grad_cam", backend="callable", host=host).values
    via_torch = salplug.explain(model, x, "grad_cam", target=4, layer="conv2", host=host).values
    np.testing.assert_allclose(via_fn, via_torch, rtol=1e-5, atol=1e-6)
    with pytest.raises(LayerError, match="layer=None"):
        salplug.explain(fn, x, "grad_cam", backend="callable", host=host, layer="conv2")


# -- agreement with Captum --------------------------------------------------------------------

@pytest.mark.parametrize("relu", [False, True])
def test_matches_captum_layer_gradcam(host, relu):
    captum_attr = pytest.importorskip("captum.attr")
    model = make_cnn()
    torch.manual_seed(0)
    x = torch.rand(3, 3, 24, 24)
    targets = [0, 5, 9]
    expected = captum_attr.LayerGradCam(model, model.conv2).attribute(x, target=targets, relu_attributions=relu)
    ours = salplug.explain(model, x, "grad_cam", target=targets, layer="conv2", host=host, relu=relu,
                           should_resize=False, three_dims=False).values
    assert expected.shape == (3, 1, 12, 12) and ours.shape == (3, 12, 12)
    np.testing.assert_allclose(ours.numpy(), expected[:, 0].detach().numpy(), rtol=1e-5, atol=1e-7)


# -- batching, layers, errors, hooks ----------------------------------------------------------

def test_batch_with_per_sample_targets_equals_single_calls(host):
    model = make_cnn()
    x = np.random.default_rng(2).random((5, 16, 16, 3)).astype(np.float32)
    targets = [0, 3, 3, 9, 1]
    calls, handle = count_forward(model)
    batch = salplug.explain(model, x, "grad_cam", target=targets, layer="conv1", host=host, batch_size=2).values
    handle.remove()
    assert len(calls) == 3  # ceil(5 / 2) model calls
    for i, t in enumerate(targets):
        single = salplug.explain(model, x[i], "grad_cam", target=t, layer="conv1", host=host).values
        np.testing.assert_allclose(batch[i], single, rtol=1e-5, atol=1e-6)


def test_layer_as_module_or_name(host):
    model = make_cnn()
    x = torch.rand(2, 3, 16, 16)
    by_name = salplug.explain(model, x, "gradcam", target=2, layer="conv2", host=host).values
    by_module = salplug.explain(model, x, "grad_cam", target=2, layer=model.conv2, host=host).values
    assert torch.equal(by_name, by_module)
    assert by_name.shape == (2, 3, 16, 16)


@pytest.mark.parametrize("layer,words", [
    ("conv3", "Did you mean 'conv2'"),
    (None, "module path"),
    (nn.Conv2d(3, 3, 1), "not part of the model"),
])
def test_bad_layer_raises_before_any_model_call(host, layer, words):
    model = make_cnn()
    calls, handle = count_forward(model)
    try:
        with pytest.raises(LayerError, match=words):
            salplug.explain(model, torch.rand(1, 3, 16, 16), "grad_cam", target=1, layer=layer, host=host)
    finally:
        handle.remove()
    assert calls == []


@pytest.mark.parametrize("params", [{"relu": "no"}, {"should_resize": 1}, {"three_dims": None},
                                    {"normalize": "max"}])
def test_bad_flags_raise_before_any_model_call(host, params):
    model = make_cnn()
    calls, handle = count_forward(model)
    try:
        with pytest.raises(ParameterError, match="True or False"):
            salplug.explain(model, torch.rand(1, 3, 16, 16), "grad_cam", target=1, layer="conv2", host=host,
                            **params)
    finally:
        handle.remove()
    assert calls == []


def test_hooks_removed_after_success_and_error(host):
    model = make_cnn()
    x = torch.rand(2, 3, 16, 16)
    salplug.explain(model, x, "grad_cam", target=1, layer="conv2", host=host)
    assert all_hooks(model) == []

    def broken_target(out):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        salplug.explain(model, x, "grad_cam", target=broken_target, layer="conv2", host=host)
    assert all_hooks(model) == []

    with pytest.raises(TargetError):
        salplug.explain(model, x, "grad_cam", target=lambda out: out, layer="conv2", host=host)
    assert all_hooks(model) == []


def test_layer_run_twice_is_rejected_and_unhooked(host):
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(self.conv(self.conv(x)).mean((2, 3)))

    model = Twice()
    with pytest.raises(LayerError, match="2 times"):
        salplug.explain(model, torch.rand(1, 3, 8, 8), "grad_cam", target=0, layer="conv", host=host)
    assert all_hooks(model) == []


# -- Guided Grad-CAM -------------------------------------------------------------------------

def test_guided_grad_cam_is_the_product_of_its_parts(host):
    model = make_cnn()
    x = torch.rand(3, 3, 16, 16)
    targets = [2, 6, 2]
    guided = salplug.explain(model, x, "guided_grad_cam", target=targets, layer="conv2", host=host,
                             batch_size=2).values
    cam = salplug.explain(model, x, "grad_cam", target=targets, layer="conv2", host=host,
                          three_dims=False).values
    backprop = salplug.explain(model, x, "guided_backprop", target=targets, host=host).values
    assert guided.shape == x.shape
    np.testing.assert_allclose(guided.numpy(), (backprop * cam[:, None]).numpy(), rtol=1e-6, atol=1e-9)
    assert all_hooks(model) == []


def test_guided_grad_cam_checks_layer_first(host):
    model = make_cnn()
    calls, handle = count_forward(model)
    try:
        with pytest.raises(LayerError, match="Did you mean 'conv2'"):
            salplug.explain(model, torch.rand(1, 3, 16, 16), "guided_grad_cam", target=0, layer="conv22",
                            host=host)
    finally:
        handle.remove()
    assert calls == []
