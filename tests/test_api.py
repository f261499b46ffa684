"""Public API: backend detection, targets, layouts, Attribution, and errors before any model call."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import linear_call_model_function, make_cnn

import salplug
from salplug.errors import (
    CapabilityError,
    InputError,
    LayerError,
    ParameterError,
    SalplugError,
    TargetError,
    UnknownComponentError,
)

torch = pytest.importorskip("torch")
nn = torch.nn


class Counting(nn.Module):
    """Wraps a model and counts forward calls."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


@pytest.fixture
def counted():
    return Counting(make_cnn(seed=7))


BAD_INPUTS = [
    ("wrong rank", dict(x=np.zeros((2, 2, 8, 8, 3), np.float32)), InputError, "must be one image"),
    ("rank 2", dict(x=np.zeros((8, 8), np.float32)), InputError, "must be one image"),
    ("channels", dict(x=torch.zeros(2, 4, 8, 8)), InputError, "expects 3 input channels"),
    ("channels numpy", dict(x=np.zeros((8, 8, 1), np.float32)), InputError, "has 1"),
    ("nan", dict(x=np.full((8, 8, 3), np.nan, np.float32)), InputError, "NaN"),
    ("inf", dict(x=torch.full((1, 3, 8, 8), float("inf"))), InputError, "infinite"),
    ("dtype", dict(x=np.array([["a"]])), InputError, "must be one image"),
    ("target range", dict(target=10), TargetError, r"out of range.*0\.\.9"),
    ("negative target", dict(target=-1), TargetError, "out of range"),
    ("target list length", dict(target=[1, 2, 3]), TargetError, "3 entries but the batch has 2"),
    ("target type", dict(target=1.5), TargetError, "must be an int"),
    ("unknown method", dict(method="integrated_gradient"), UnknownComponentError, "Did you mean"),
    ("unknown param", dict(method="ig", params={"step": 3}), ParameterError, "Did you mean 'steps'"),
    ("bad steps", dict(method="ig", params={"steps": 0}), ParameterError, "positive int"),
    ("bad rule", dict(method="ig", params={"rule": "simpson"}), ParameterError, "Unknown rule"),
    ("bad baseline", dict(method="ig", params={"baseline": np.zeros((5, 5, 3))}), ParameterError, "baseline"),
    ("baseline shape", dict(method="ig", params={"baseline": torch.zeros(3, 5, 5)}), ParameterError, "does not fit"),
    ("bad mode", dict(method="smoothgrad", params={"mode": "max"}), ParameterError, "mode must be"),
    ("bad base param", dict(method="smoothgrad", params={"base": "ig", "stepz": 2}), ParameterError, "stepz"),
    ("unknown base", dict(method="smoothgrad", params={"base": "nope"}), UnknownComponentError, "Unknown method"),
    ("batch size", dict(batch_size=0), ParameterError, "batch_size"),
    ("smoothgrad of itself", dict(method="smoothgrad", params={"base": "smoothgrad"}), ParameterError, "itself"),
    ("smoothgrad of an alias", dict(method="smoothgrad", params={"base": "noise_tunnel"}), ParameterError, "itself"),
    ("smoothgrad of alias 2", dict(method="smoothgrad", params={"base": "smooth_grad"}), ParameterError, "itself"),
]


@pytest.mark.parametrize("case,kwargs,error,match", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_rejected_before_any_model_call(counted, case, kwargs, error, match):
    x = kwargs.get("x", torch.rand(2, 3, 8, 8))
    with pytest.raises(error, match=match):
        salplug.explain(counted, x, kwargs.get("method", "gradients"), target=kwargs.get("target", 0),
                        batch_size=kwargs.get("batch_size"), **kwargs.get("params", {}))
    assert counted.calls == 0
    assert issubclass(error, SalplugError)


def test_unknown_backend_lists_backends(counted):
    with pytest.raises(UnknownComponentError, match=r"Available backends: callable, .*torch"):
        salplug.explain(counted, torch.rand(1, 3, 8, 8), backend="jax")


def test_undetectable_model_says_which_backends_exist():
    with pytest.raises(SalplugError, match="Pass backend= one of"):
        salplug.explain(object(), np.zeros((4, 4, 3)))


def test_capability_mismatch_fails_before_work():
    calls = []

    def fn(x, call_model_args=None, expected_keys=None):
        calls.append(1)
        return {}

    class NeedsGuided(salplug.Method):
        requires = frozenset({salplug.GUIDED_GRADIENTS})

        def explain(self, ctx, x, targets):
            raise AssertionError("must not run")

    class Plugin:
        @salplug.hookimpl
        def register_methods(self, register):
            register("needs_guided", NeedsGuided, requires=NeedsGuided.requires)

    host = salplug.get_plugin_manager(autoload=False, plugins={"p": Plugin()})
    with pytest.raises(CapabilityError, match="guided_input_gradients.*callable"):
        salplug.explain(fn, np.zeros((4, 4, 3)), "needs_guided", backend="callable", host=host)
    assert calls == []


def test_registry_helpers_serve_methods_and_metrics():
    from salplug.registry import Component, instantiate, keyword_parameters, resolve_keywords

    class Thing:
        requires = frozenset({"b"})

        def evaluate(self, ctx, x, *, size, mode="abs"):
            pass

    class Adapter:
        name = "fake"
        provides = frozenset({"a", "b"})

    thing = instantiate(Component("metric", "thing", Thing, "p", metadata={"requires": ("a",)}), Adapter())
    assert isinstance(thing, Thing) and thing.name == "thing"
    Adapter.provides = frozenset({"b"})
    with pytest.raises(CapabilityError, match=r"^Metric 'thing' needs a, which the 'fake' backend does not "
                                              r"provide \(it provides: b\)\. Use another backend or metric\.$"):
        instantiate(Component("metric", "thing", Thing, "p", metadata={"requires": ("a",)}), Adapter())
    assert keyword_parameters(thing.evaluate)[0]["mode"] == "abs"
    assert resolve_keywords(thing.evaluate, {"size": 2}, "Metric 'thing'") == {"mode": "abs", "size": 2}
    with pytest.raises(ParameterError, match=r"^Metric 'thing' needs parameter\(s\): size\.$"):
        resolve_keywords(thing.evaluate, {}, "Metric 'thing'")
    with pytest.raises(ParameterError, match="Metric 'thing' has no parameter 'mod'. Did you mean 'mode'"):
        resolve_keywords(thing.evaluate, {"size": 1, "mod": "x"}, "Metric 'thing'")


def test_top1_target_is_recorded(counted):
    x = torch.rand(3, 3, 8, 8)
    out = salplug.explain(counted, x, "gradients")
    assert out.target == counted(x).argmax(1).tolist()
    assert out.method == "gradients" and out.backend == "torch"


def test_callable_target_on_model_output():
    model = make_cnn(seed=8)
    x = torch.rand(2, 3, 8, 8)
    by_fn = salplug.explain(model, x, "gradients", target=lambda out: out[:, 3] - out[:, 5])
    a = salplug.explain(model, x, "gradients", target=3).values
    b = salplug.explain(model, x, "gradients", target=5).values
    torch.testing.assert_close(by_fn.values, a - b, rtol=1e-5, atol=1e-7)
    assert by_fn.target == "<lambda>"


def test_target_as_tensor_per_sample():
    model = make_cnn(seed=8)
    x = torch.rand(2, 3, 8, 8)
    out = salplug.explain(model, x, "gradients", target=torch.tensor([4, 2]))
    assert out.target == [4, 2]


class _ArrayLike:
    """A tensor of another framework (a tf.Tensor, a JAX array): readable through __array__."""

    def __init__(self, values):
        self.values = np.asarray(values)

    def __array__(self, dtype=None, copy=None):
        return self.values


def test_target_as_another_frameworks_tensor():
    model = make_cnn(seed=8)
    x = torch.rand(2, 3, 8, 8)
    assert salplug.explain(model, x, "gradients", target=_ArrayLike([4, 2])).target == [4, 2]
    assert salplug.explain(model, x, "gradients", target=_ArrayLike(3)).target == [3, 3]  # as a 0-d tensor
    with pytest.raises(TargetError, match="out of range"):
        salplug.explain(model, x, "gradients", target=_ArrayLike([4, 99]))


def test_layouts_round_trip():
    model = make_cnn(seed=9)
    x = torch.rand(2, 3, 8, 10)
    t = salplug.explain(model, x, "gradients", target=1)
    assert isinstance(t.values, torch.Tensor) and t.values.shape == x.shape and t.canonical.shape == (2, 8, 10, 3)
    nhwc = x.permute(0, 2, 3, 1).numpy()
    n = salplug.explain(model, nhwc, "gradients", target=1)
    assert isinstance(n.values, np.ndarray) and n.values.shape == nhwc.shape
    np.testing.assert_allclose(n.values, t.values.permute(0, 2, 3, 1).numpy(), rtol=1e-6)
    single = salplug.explain(model, nhwc[0], "gradients", target=1)
    assert single.values.shape == (8, 10, 3) and single.batched is False
    chw = salplug.explain(model, x[0], "gradients", target=1)
    assert chw.values.shape == (3, 8, 10)
    explicit = salplug.explain(model, x.numpy(), "gradients", target=1, layout="NCHW")
    np.testing.assert_allclose(explicit.values, t.values.numpy(), rtol=1e-6)


def test_explainer_reuses_adapter_and_visualizes(tmp_path):
    model = make_cnn(seed=10)
    explainer = salplug.Explainer(model, batch_size=4)
    assert explainer.backend == "torch"
    a = explainer.explain(torch.rand(2, 3, 8, 8), "ig", steps=4)
    b = explainer.explain(torch.rand(1, 3, 8, 8), "gradients")
    assert len(a) == 2 and len(b) == 1
    img = a.visualize("grayscale", index=1)
    assert img.shape == (8, 8) and 0 <= img.min() and img.max() <= 1
    path = a.save(str(tmp_path / "x" / "ig.png"), kind="heatmap", image=np.ones((8, 8, 3)))
    from PIL import Image

    assert Image.open(path).size == (8, 8)


def test_callable_backend_detected_and_checked():
    w = np.ones((4, 4, 3), np.float32)
    out = salplug.explain(linear_call_model_function(w), np.zeros((4, 4, 3)), "gradients")
    assert out.backend == "callable" and out.target is None
    with pytest.raises(TargetError, match="takes no target"):
        salplug.explain(linear_call_model_function(w), np.zeros((4, 4, 3)), "gradients", target=3)


def test_unknown_layer_on_torch_adapter():
    from salplug.backends.torch import TorchAdapter
    from salplug.types import Targets

    adapter = TorchAdapter(make_cnn())
    with pytest.raises(LayerError, match="Did you mean 'conv2'"):
        adapter.check_layer("conv3")
    with pytest.raises(LayerError, match="not part of the model"):
        adapter.check_layer(nn.Conv2d(1, 1, 1))
    values, grads = adapter.layer_values_and_gradients(np.random.rand(2, 8, 8, 3).astype(np.float32),
                                                        Targets(np.array([1, 2])), "conv2")
    assert values.shape == grads.shape == (2, 4, 4, 16)


@pytest.mark.parametrize("batch_size", [0, -3, 2.7, "4", True])
def test_explainer_explain_checks_its_batch_size_before_any_model_call(counted, batch_size):
    ex = salplug.Explainer(counted)
    with pytest.raises(ParameterError, match="batch_size must be a positive int"):
        ex.explain(torch.rand(2, 3, 8, 8), "gradients", target=0, batch_size=batch_size)
    assert counted.calls == 0


class _Returns:
    """A plugin method that returns ``fn(x)``."""

    def __init__(self, fn):
        self.fn = fn

    def explain(self, ctx, x, targets, *, should_resize=True):
        return self.fn(x)


BAD_METHOD_OUTPUTS = [
    ("wrong_hw", lambda x: np.zeros((len(x), 3, 3, 3), np.float32), "shape \\(2, 3, 3, 3\\)"),
    ("per_row_scalar", lambda x: np.zeros(len(x), np.float32), "shape \\(2,\\)"),
    ("extra_dim", lambda x: x[:, None], "shape \\(2, 1, 8, 8, 3\\)"),
    ("odd_channels", lambda x: np.zeros((*x.shape[:3], 5), np.float32), "k in \\[1, 3\\]"),
    ("all_nan", lambda x: np.full(x.shape, np.nan, np.float32), "NaN or infinite"),
    ("one_inf", lambda x: np.where(np.arange(x.size).reshape(x.shape) == 5, np.inf, 0.0), "NaN or infinite"),
]


def _returning_host(fns):
    class Plugin:
        @salplug.hookimpl
        def register_methods(self, register):
            for name, fn in fns.items():
                register(name, _Returns(fn))

    return salplug.get_plugin_manager(autoload=False, plugins={"shapes": Plugin()})


@pytest.mark.parametrize("name,fn,match", BAD_METHOD_OUTPUTS, ids=[c[0] for c in BAD_METHOD_OUTPUTS])
def test_method_output_of_the_wrong_shape_or_not_finite_is_a_model_output_error(name, fn, match):
    host = _returning_host({name: fn})
    with pytest.raises(salplug.ModelOutputError, match=f"^Method '{name}' \\(from shapes\\).*{match}"):
        salplug.explain(make_cnn(seed=1), torch.rand(2, 3, 8, 8), name, target=0, host=host)


def test_method_output_shapes_the_built_ins_use_are_accepted():
    host = _returning_host({
        "hw": lambda x: np.ones(x.shape[:3], np.float32),
        "hw1": lambda x: np.ones((*x.shape[:3], 1), np.float32),
        "hwc": lambda x: np.ones(x.shape, np.float32),
        "coarse": lambda x: np.ones((len(x), 2, 2), np.float32),
    })
    model, x = make_cnn(seed=1), torch.rand(2, 3, 8, 8)
    assert tuple(salplug.explain(model, x, "hw", target=0, host=host).values.shape) == (2, 8, 8)
    assert tuple(salplug.explain(model, x, "hw1", target=0, host=host).values.shape) == (2, 1, 8, 8)
    assert tuple(salplug.explain(model, x, "hwc", target=0, host=host).values.shape) == (2, 3, 8, 8)
    # a coarser map only when the method was asked not to resize (Grad-CAM's should_resize=False)
    with pytest.raises(salplug.ModelOutputError, match="shape \\(2, 2, 2\\)"):
        salplug.explain(model, x, "coarse", target=0, host=host)
    assert salplug.explain(model, x, "coarse", target=0, host=host, should_resize=False).values.shape[1:] == (2, 2)
    cam = salplug.explain(model, x, "grad_cam", target=0, layer="conv2", should_resize=False, three_dims=False)
    assert tuple(cam.values.shape) == (2, 4, 4)


def test_attribution_visualizes_with_the_host_that_made_it(tmp_path):
    class Plugin:
        @salplug.hookimpl
        def register_visualizers(self, register):
            register("half", lambda values, image=None: np.full(values.shape[:2], 0.5))

    host = salplug.get_plugin_manager(autoload=False, plugins={"vis": Plugin()})
    a = salplug.Explainer(make_cnn(seed=2), host=host).explain(torch.rand(1, 3, 8, 8), target=0)
    b = salplug.explain(make_cnn(seed=2), torch.rand(1, 3, 8, 8), target=0, host=host)
    np.testing.assert_array_equal(a.visualize("half"), np.full((8, 8), 0.5))
    assert b.save(str(tmp_path / "half.png"), kind="half").endswith("half.png")
    with pytest.raises(UnknownComponentError, match="'half'"):  # an explicit host= still wins
        a.visualize("half", host=salplug.get_plugin_manager(autoload=False))
    plain = salplug.explain(make_cnn(seed=2), torch.rand(1, 3, 8, 8), target=0)
    with pytest.raises(UnknownComponentError, match="'half'"):
        plain.visualize("half")


def test_unknown_backend_option_is_a_parameter_error_listing_the_options(counted):
    with pytest.raises(ParameterError, match=r"'torch' backend has no option 'devcie'\. Did you mean 'device'\?.*"
                                             r"Accepted: device, output, num_classes, eval_mode"):
        salplug.Explainer(counted, devcie="cpu")
    with pytest.raises(ParameterError, match="no option 'foo'"):
        salplug.explain(counted, torch.rand(1, 3, 16, 16), backend_options={"foo": 1})
    assert counted.calls == 0


def test_backend_option_given_to_explain_says_where_it_belongs(counted):
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ParameterError, match=r"'eval_mode' is an option of the 'torch' backend.*"
                                             r"Explainer\(model, eval_mode=\.\.\.\).*backend_options"):
        salplug.explain(counted, x, "gradients", eval_mode=False)
    with pytest.raises(ParameterError, match="'device' is an option of the 'torch' backend"):
        salplug.Explainer(counted).explain(x, "integrated_gradients", steps=2, device="cpu")
    assert counted.calls == 0
    # where the README points: both spellings run the model as it is
    salplug.explain(counted, x, "gradients", target=0, backend_options={"eval_mode": False})
    salplug.Explainer(counted, eval_mode=False).explain(x, "gradients", target=0)
    assert counted.calls == 2


def test_backend_option_names_reads_the_adapter_signature():
    from salplug.api import backend_option_names

    class Fixed:
        def __init__(self, model, scale=1.0, *, device=None):
            pass

    class Open:
        def __init__(self, model, **options):
            pass

    assert backend_option_names(Fixed) == (["scale", "device"], False)
    assert backend_option_names(Open) == ([], True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1", 0])
def test_cuda_device_without_cuda_is_refused_up_front(counted, device):
    with pytest.raises(ParameterError, match=r"asks for CUDA, but .*Available here: cpu"):
        salplug.Explainer(counted, device=device)
    assert counted.calls == 0


@pytest.mark.parametrize("device", ["bogus", 1.5, True])
def test_malformed_device_is_a_parameter_error(counted, device):
    with pytest.raises(ParameterError, match=r"device.*Available here: cpu"):
        salplug.Explainer(counted, device=device)


def test_cuda_device_index_past_the_gpus_is_refused():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    with pytest.raises(ParameterError, match="only .* CUDA device"):
        salplug.Explainer(make_cnn(), device=f"cuda:{torch.cuda.device_count()}")
    assert salplug.Explainer(make_cnn(), device="cuda").adapter.device.type == "cuda"


def test_cpu_device_is_accepted(counted):
    explainer = salplug.Explainer(counted, device="cpu")
    assert explainer.adapter.device == torch.device("cpu")
    assert explainer.explain(torch.rand(1, 3, 16, 16), target=0).values.shape == (1, 3, 16, 16)


def test_a_result_pickles_and_deep_copies():
    import copy
    import pickle

    out = salplug.explain(make_cnn(seed=3), torch.rand(2, 3, 8, 8), "gradients", target=1)
    for clone in (pickle.loads(pickle.dumps(out)), copy.deepcopy(out)):
        np.testing.assert_array_equal(clone.canonical, out.canonical)
        assert torch.equal(clone.values, out.values) and clone.target == out.target
        assert clone.visualize("grayscale").shape == (8, 8)


def test_numpy_values_are_not_the_canonical_array():
    # values is the caller's to change: visualizers and metrics read canonical
    x = np.random.default_rng(0).random((2, 8, 8, 3), np.float32)
    for inp in (x, x[0]):
        out = salplug.explain(make_cnn(seed=3), inp, "gradients", target=1)
        before = out.canonical.copy()
        out.values *= 0
        np.testing.assert_array_equal(out.canonical, before)


def test_save_refuses_what_it_cannot_write_clearly(tmp_path):
    out = salplug.explain(make_cnn(seed=3), torch.rand(2, 3, 8, 8), "gradients", target=1)
    (tmp_path / "a_file").write_text("")
    for kwargs, words in (({"path": tmp_path / "map.jpg"}, ".png"), ({"path": tmp_path / "m.png", "index": 2}, "index"),
                          ({"path": tmp_path / "a_file" / "m.png"}, "could not write")):
        with pytest.raises(ParameterError, match=words):
            out.save(**kwargs)
    assert out.save(tmp_path / "m.png").endswith("m.png")


@pytest.mark.parametrize("progress", ["yes", 2, "no"])
def test_progress_must_be_a_boolean(progress):
    with pytest.raises(ParameterError, match="progress"):
        salplug.explain(make_cnn(seed=3), torch.rand(1, 3, 8, 8), "gradients", target=1, progress=progress)


def test_copies_of_a_result_keep_its_host_and_their_own_arrays():
    import copy

    host = salplug.get_plugin_manager(autoload=False)
    out = salplug.explain(make_cnn(seed=3), torch.rand(1, 3, 8, 8), "gradients", target=1, host=host)
    shallow, deep = copy.copy(out), copy.deepcopy(out)
    assert shallow.host is host and deep.host is host
    deep.canonical[...] = 0
    assert out.canonical.any()
