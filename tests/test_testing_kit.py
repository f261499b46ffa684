"""salplug.testing: the analytic backend is exact, the built-ins pass the conformance checks,
and each check catches the mistake it is for, with a message that says what is wrong."""

from __future__ import annotations

import importlib.util
import textwrap

import numpy as np
import pytest

import salplug
from salplug import testing as T
from salplug.types import Targets

# Small parameters so every built-in runs in well under a second on the 9x7x3 sample batch.
SEGMENTS = (np.arange(9)[:, None] // 3 * 3 + np.arange(7)[None, :] // 3).astype(np.int64)  # 9 blocks
PARAMS = {
    "integrated_gradients": {"steps": 4},
    "smoothgrad": {"nsamples": 3},
    "occlusion": {"size": 3, "stride": 2},
    "grad_cam": {"layer": "features"},
    "guided_grad_cam": {"layer": "features"},
    "blur_ig": {"steps": 4, "max_sigma": 2.0},
    "guided_ig": {"steps": 4},
    "xrai": {"steps": 3, "segments": SEGMENTS, "min_pixel_diff": 1},
}
BAD_PARAMS = {
    "integrated_gradients": [{"steps": 0}, {"rule": "simpson"}, {"baseline": np.zeros((2, 2))}],
    "smoothgrad": [{"nsamples": 0}, {"mode": "median"}, {"seed": "zero"}],
    "occlusion": [{"size": 100}, {"aggregate": "max"}, {"stride": 0}],
    "grad_cam": [{"layer": "no_such_layer"}, {"relu": "yes"}],
    "blur_ig": [{"steps": -1}],
    "guided_ig": [{"steps": 0}],
}
# Maps that are known not to be a stack of single-input maps (none: every built-in is batch independent).
NOT_BATCH_INDEPENDENT: set[str] = set()


def _builtin_names(kind: str) -> list[str]:
    host = salplug.get_plugin_manager(autoload=False)
    registry = host.registries[kind]
    return [c.name for c in registry if c.distribution == "salplug"]


@pytest.fixture(scope="module")
def kit_host():
    return T.make_host()


# -- the analytic model ------------------------------------------------------------------------------

@pytest.mark.parametrize("relu", [True, False])
def test_analytic_model_derivatives_are_exact(relu):
    model = T.AnalyticModel((4, 3, 2), classes=3, features=5, relu=relu, seed=1)
    x = np.random.default_rng(2).normal(0, 1, (2, 4, 3, 2))
    targets = Targets(np.array([2, 0]))
    grad = model.input_gradients(x, targets)
    eps = 1e-6
    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape[1:]):
        step = np.zeros_like(x)
        step[(slice(None), *i)] = eps
        numeric[(slice(None), *i)] = (model.scores(x + step, targets) - model.scores(x - step, targets)) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)
    # layer gradients: d score / d h by central differences, perturbing h itself (the model's own
    # head runs on h + step: its features() is replaced on this instance)
    h = model.features(x)
    g_h = model.layer_gradients(x, targets)
    numeric_h = np.zeros_like(h)
    for i in np.ndindex(h.shape[1:]):
        step = np.zeros_like(h)
        step[(slice(None), *i)] = eps
        model.features = lambda _x, s=step: h + s
        up = model.scores(x, targets)
        model.features = lambda _x, s=step: h - s
        numeric_h[(slice(None), *i)] = (up - model.scores(x, targets)) / (2 * eps)
    del model.features
    np.testing.assert_allclose(g_h, numeric_h, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("relu", "plain", "guided"), [(True, [1.0, -4.0], [2.0, -2.0]),
                                                       (False, [-1.75, -1.25], [-0.75, 0.75])])
def test_analytic_model_guided_gradients_by_hand(relu, plain, guided):
    # One position, C = 2 channels, D = 3 features, one class, x = (1, 0.5):
    #   p = [[1, -1, 1], [2, 1, -1]]  ->  z = x @ p = (1 + 1, -1 + 0.5, 1 - 0.5) = (2, -0.5, 0.5)
    #   f = sum(w h) + 0.5 sum(q h^2) with w = (-2, 3, 1), q = (0.5, 0.5, 2), so d f / d h = w + q h
    #   d f / d x_c = sum_d g_d p[c, d] for the backpropagated g (channel 0: g0 - g1 + g2,
    #   channel 1: 2 g0 + g1 - g2)
    # relu: h = (2, 0, 0.5), d f / d h = (-2 + 1, 3 + 0, 1 + 1) = (-1, 3, 2), [z > 0] = (1, 0, 1)
    #   plain:  g = (-1, 3, 2) * (1, 0, 1) = (-1, 0, 2)          -> (-1 + 2, -2 - 2) = (1, -4)
    #   guided: g = max((-1, 3, 2), 0) * (1, 0, 1) = (0, 0, 2)   -> (2, -2)
    # no relu: h = z, d f / d h = (-2 + 1, 3 - 0.25, 1 + 1) = (-1, 2.75, 2), nothing masked
    #   plain:  g = (-1, 2.75, 2)   -> (-1 - 2.75 + 2, -2 + 2.75 - 2) = (-1.75, -1.25)
    #   guided: g = (0, 2.75, 2)    -> (-2.75 + 2, 2.75 - 2) = (-0.75, 0.75)
    model = T.AnalyticModel((1, 2), classes=1, relu=relu, p=[[1, -1, 1], [2, 1, -1]],
                            w=[[[-2, 3, 1]]], q=[[[0.5, 0.5, 2]]])
    x = np.array([[[1.0, 0.5]]])
    targets = Targets(np.array([0]))
    np.testing.assert_allclose(model.input_gradients(x, targets)[0, 0], plain, atol=1e-12)
    np.testing.assert_allclose(model.guided_input_gradients(x, targets)[0, 0], guided, atol=1e-12)


def test_analytic_backend_through_explain_and_detect(kit_host):
    model = T.AnalyticModel((6, 5, 3), classes=4)
    x = T.sample_inputs(2, (6, 5, 3))
    assert kit_host.detect_backend(model) == "analytic"
    att = salplug.explain(model, x, "gradients", target=[3, 1], host=kit_host)
    assert att.backend == "analytic"
    np.testing.assert_allclose(att.values, model.input_gradients(x, Targets(np.array([3, 1]))), rtol=1e-5)
    top1 = salplug.explain(model, x[0], "gradients", host=kit_host)  # one HWC image, top-1 target
    assert top1.values.shape == (6, 5, 3) and top1.target == [int(np.argmax(model.outputs(x[:1])))]


def test_analytic_adapter_counts_and_narrows_capabilities(kit_host):
    adapter = T.AnalyticAdapter(T.AnalyticModel((6, 5, 3)), provides=[salplug.SCORES])
    with pytest.raises(salplug.CapabilityError, match="input_gradients"):
        salplug.Explainer(adapter.model, "analytic", host=kit_host, provides=["scores"]).explain(
            T.sample_inputs(2, (6, 5, 3)), "gradients", target=0)
    x = T.sample_inputs(2, (6, 5, 3))
    adapter.scores(x, Targets(np.array([0, 1])))
    assert adapter.calls == {"scores": 1} and adapter.rows == {"scores": 2}


# -- built-ins pass the checks -------------------------------------------------------------------------

@pytest.mark.parametrize("name", _builtin_names("method"))
def test_builtin_method_conforms(kit_host, name):
    report = T.check_method(name, host=kit_host, params=PARAMS.get(name, {}),
                            bad_params=BAD_PARAMS.get(name, ()), check_batch=name not in NOT_BATCH_INDEPENDENT)
    assert report["shape"][:3] == (3, 9, 7)
    if name != "random":  # the random-map baseline ignores the model by design
        assert report["calls"], "the method made no model call"


def test_smoothgrad_batch_equals_stack_of_singles(kit_host):
    T.check_method("smoothgrad", host=kit_host, params=PARAMS["smoothgrad"])


def test_composed_method_may_use_what_its_base_requires(kit_host):
    # smoothgrad requires nothing itself; its base's capabilities are allowed through the registry
    T.check_method("smoothgrad", host=kit_host, params={"nsamples": 2, "base": "guided_backprop"}, check_batch=False)


@pytest.mark.parametrize("name", _builtin_names("visualizer"))
def test_builtin_visualizer_conforms(kit_host, name):
    report = T.check_visualizer(name, host=kit_host)
    assert all(shape[:2] == (9, 7) for shape in report["shapes"])


def test_analytic_backend_conforms():
    model = T.AnalyticModel((9, 7, 3), classes=4)
    x = T.sample_inputs()
    report = T.check_backend(T.AnalyticAdapter(model), x, layer="features", native=x[:, ::-1][:, ::-1])
    assert report["checked"] == ["layout", "scores", "input_gradients", "layer_values_and_gradients",
                                 "guided_input_gradients"]
    assert report["max_fd_error"] < 1e-2


def test_callable_backend_conforms(kit_host):
    from salplug.api import create_adapter

    model = T.AnalyticModel((9, 7, 3), classes=4)
    adapter = create_adapter(kit_host, model.call_model_function, "callable", target_arg="target", num_classes=4)
    report = T.check_backend(adapter, T.sample_inputs(), layer=None)
    assert set(report["checked"]) == {"scores", "input_gradients", "layer_values_and_gradients"}


def test_torch_backend_conforms(kit_host):
    torch = pytest.importorskip("torch")
    from conftest import make_cnn

    from salplug.api import create_adapter

    adapter = create_adapter(kit_host, make_cnn(seed=3), "torch")
    x = T.sample_inputs(3, (12, 12, 3), seed=4)
    native = torch.from_numpy(x).permute(0, 3, 1, 2)
    report = T.check_backend(adapter, x, layer="conv2", native=native)
    assert report["checked"] == ["layout", "scores", "input_gradients", "layer_values_and_gradients",
                                 "guided_input_gradients"]


def test_tf2_backend_conforms(kit_host):
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    from salplug.api import create_adapter

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Conv2D(4, 3, padding="same", name="conv"),
                              keras.layers.ReLU(name="relu"), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(5)])
    x = T.sample_inputs(3, (12, 12, 3), seed=4)
    report = T.check_backend(create_adapter(kit_host, model, "tf2"), x, layer="conv", native=tf.constant(x))
    assert len(report["checked"]) == 5


def test_tf1_backend_conforms(kit_host):
    tf = pytest.importorskip("tensorflow")
    from salplug.api import create_adapter
    from salplug.backends.tf1_model import TF1Model

    v1 = tf.compat.v1
    rng = np.random.default_rng(0)
    graph = tf.Graph()
    with graph.as_default():
        images = v1.placeholder(tf.float32, [None, 12, 12, 3], name="x")
        kernel = tf.constant(rng.normal(0, 0.5, (3, 3, 3, 4)), tf.float32)
        dense = tf.constant(rng.normal(0, 0.5, (4, 5)), tf.float32)
        hidden = tf.nn.relu(tf.nn.conv2d(images, kernel, 1, "SAME"), name="relu")
        logits = tf.matmul(tf.reduce_mean(hidden, axis=[1, 2]), dense, name="logits")
    bundle = TF1Model(graph, v1.Session(graph=graph), images, logits)
    x = T.sample_inputs(3, (12, 12, 3), seed=4)
    report = T.check_backend(create_adapter(kit_host, bundle, "tf1"), x, layer="relu:0", native=x)
    assert len(report["checked"]) == 5


def test_builtin_methods_on_the_torch_backend(kit_host):
    pytest.importorskip("torch")
    from conftest import make_cnn

    from salplug.api import create_adapter

    adapter = create_adapter(kit_host, make_cnn(seed=1), "torch")
    x = T.sample_inputs(2, (12, 12, 3), seed=5)
    for name, params in [("gradients", {}), ("grad_cam", {"layer": "conv2"}), ("guided_backprop", {}),
                         ("occlusion", {"size": 4, "stride": 4})]:
        T.check_method(name, host=kit_host, adapter=adapter, x=x, params=params, rtol=1e-4, atol=1e-6)


# -- the checks catch mistakes ------------------------------------------------------------------------

class _Grad(salplug.Method):
    requires = frozenset({salplug.INPUT_GRADIENTS})

    def _grads(self, ctx, x, targets):
        return np.concatenate([ctx.adapter.input_gradients(x[r], targets.take(r)) for r in ctx.chunks(len(x))])


class ChannelsFirst(_Grad):
    def explain(self, ctx, x, targets):
        return self._grads(ctx, x, targets).transpose(0, 3, 1, 2)


class BatchNormalised(_Grad):
    def explain(self, ctx, x, targets):
        g = self._grads(ctx, x, targets)
        return g / np.abs(g).max()


class ChunkDependent(_Grad):
    def explain(self, ctx, x, targets):
        out = np.empty_like(x)
        for rows in ctx.chunks(len(x)):
            g = ctx.adapter.input_gradients(x[rows], targets.take(rows))
            out[rows] = g / np.abs(g).max()
        return out


class Undeclared(salplug.Method):
    requires = frozenset({salplug.SCORES})

    def explain(self, ctx, x, targets):
        return ctx.adapter.input_gradients(x, targets)


class Swallowing(Undeclared):
    def explain(self, ctx, x, targets):
        try:
            return ctx.adapter.input_gradients(x, targets)
        except Exception:  # noqa: BLE001
            return np.zeros_like(x)


class GlobalNoise(_Grad):
    def explain(self, ctx, x, targets):
        return self._grads(ctx, x, targets) + np.random.normal(size=x.shape)


class SeedButGlobal(_Grad):
    def explain(self, ctx, x, targets, *, seed=None):
        return self._grads(ctx, x, targets) + np.random.normal(size=x.shape)


class SeedIgnored(_Grad):
    def explain(self, ctx, x, targets, *, seed=None):
        return self._grads(ctx, x, targets)


class NoCheck(_Grad):
    def explain(self, ctx, x, targets, *, steps=3):
        g = self._grads(ctx, x, targets)
        if steps < 1:
            raise salplug.ParameterError("steps must be positive")
        return g


class Accepting(_Grad):
    def explain(self, ctx, x, targets, *, steps=3):
        return self._grads(ctx, x, targets)


class NaNs(_Grad):
    def explain(self, ctx, x, targets):
        return self._grads(ctx, x, targets) * np.nan


class OneBigCall(_Grad):
    def explain(self, ctx, x, targets):
        return ctx.adapter.input_gradients(x, targets)  # no ctx.chunks: every row in one call


class ClipsItsInput(_Grad):
    def explain(self, ctx, x, targets):
        np.clip(x, 0.1, 0.9, out=x)
        return self._grads(ctx, x, targets)


class FirstClassOnly(_Grad):
    def explain(self, ctx, x, targets):
        return self._grads(ctx, x, salplug.types.Targets(np.zeros(len(x), np.int64)))


class SeedsTheGlobalState(_Grad):
    def explain(self, ctx, x, targets, *, seed=0):
        np.random.seed(seed)
        return self._grads(ctx, x, targets) + np.random.normal(size=x.shape[1:])


@pytest.mark.parametrize("cls, kwargs, message", [
    (ChannelsFirst, {}, r"\(N, H, W\) or \(N, H, W, k\), channels last"),
    (OneBigCall, {}, "rows in one adapter call with batch_size=2"),
    (ClipsItsInput, {}, "changed its input x in place"),
    (FirstClassOnly, {}, "the same maps for other targets"),
    (SeedsTheGlobalState, {}, "never from the global numpy state"),
    (BatchNormalised, {}, "differs from its map computed alone"),
    (ChunkDependent, {"check_batch": True}, "must not depend on the other samples|batching must not change"),
    (Undeclared, {}, r"called the adapter's input_gradients\(\) but does not declare 'input_gradients'"),
    (Swallowing, {}, "swallowed the error"),
    (GlobalNoise, {"check_batch": False}, "a method with randomness needs a 'seed' parameter"),
    (SeedButGlobal, {"check_batch": False}, "never from the global numpy state"),
    (SeedIgnored, {}, "the seed seems to be ignored"),
    (NoCheck, {"bad_params": [{"steps": 0}]}, r"only after 2 model call\(s\); validate them in check\(\)"),
    (Accepting, {"bad_params": [{"steps": 0}]}, "were accepted; they should raise ParameterError"),
    (NaNs, {}, "NaN or infinite"),
])
def test_check_method_catches(cls, kwargs, message):
    with pytest.raises(AssertionError, match=message) as info:
        T.check_method(cls, **kwargs)
    assert str(info.value).startswith(f"method 'checked_{cls.__name__.lower()}': ")


def test_check_method_leaves_the_callers_inputs_alone():
    x = T.sample_inputs()
    kept = x.copy()
    with pytest.raises(AssertionError):
        T.check_method(ClipsItsInput, x=x)
    np.testing.assert_array_equal(x, kept)


def test_check_method_catches_requires_mismatch():
    class Plugin:
        @salplug.hookimpl
        def register_methods(self, register):
            register("mismatch", _Grad, requires=("scores",))

    with pytest.raises(AssertionError, match="differ; declare the same capabilities"):
        T.check_method("mismatch", plugins={"mismatch": Plugin()})


def test_check_method_catches_a_framework_import(tmp_path):
    source = textwrap.dedent("""
        import numpy as np
        import salplug

        class Framed(salplug.Method):
            requires = frozenset({salplug.INPUT_GRADIENTS})

            def explain(self, ctx, x, targets):
                import torch  # never executed here, but a method module must not do this
                return ctx.adapter.input_gradients(x, targets)
    """)
    path = tmp_path / "kit_framed_method.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("kit_framed_method", path)
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.modules["kit_framed_method"] = module
    try:
        spec.loader.exec_module(module)
        assert T.framework_imports(module.Framed) == ["torch"]
        with pytest.raises(AssertionError, match="imports torch; methods use numpy only"):
            T.check_method(module.Framed)
    finally:
        sys.modules.pop("kit_framed_method", None)


def test_framework_imports_ignores_type_checking_blocks():
    import salplug.api
    import salplug.builtin_methods.gradients

    assert T.framework_imports(salplug.api) == []
    assert T.framework_imports(salplug.builtin_methods.gradients) == []
    import salplug.backends.torch  # a backend does import its framework

    assert T.framework_imports(salplug.backends.torch.TorchAdapter) == ["torch"]


class _Wrong(T.AnalyticAdapter):
    pass


class FlippedGradients(_Wrong):
    def input_gradients(self, x, targets):
        return -super().input_gradients(x, targets)


class RowMixing(_Wrong):
    def scores(self, x, targets):
        s = super().scores(x, targets)
        return s + s.mean()


class WrongLayerGradients(_Wrong):
    def layer_values_and_gradients(self, x, targets, layer):
        values, grads = super().layer_values_and_gradients(x, targets, layer)
        return values, grads * 2


class BadGuidedShape(_Wrong):
    def guided_input_gradients(self, x, targets):
        return super().guided_input_gradients(x, targets)[..., 0]


class UnknownCapability(_Wrong):
    provides = frozenset({"scores", "hessians"})


@pytest.mark.parametrize("cls, message", [
    (FlippedGradients, "input_gradients disagrees with central finite differences"),
    (RowMixing, "scores on the batch differs from stacking single-row calls|scores\\(\\) are not outputs"),
    (WrongLayerGradients, r"layer_values_and_gradients \(layer 'features', chain rule\) disagrees"),
    (BadGuidedShape, r"guided_input_gradients\(x, targets\) returned shape \(3, 9, 7\), expected \(3, 9, 7, 3\)"),
    (UnknownCapability, r"provides unknown capabilities \['hessians'\]"),
])
def test_check_backend_catches(cls, message):
    with pytest.raises(AssertionError, match=message):
        T.check_backend(cls(T.AnalyticModel((9, 7, 3))), T.sample_inputs(), layer="features")


def _out_of_range(values, image=None):
    return np.abs(np.asarray(values)).sum(axis=2)


def _nan_on_zero(values, image=None):
    v = np.abs(np.asarray(values)).sum(axis=2)
    return v / v.max()


def _mutating(values, image=None):
    values /= np.abs(values).max() + 1
    return np.clip(np.abs(values).sum(axis=2), 0, 1)


def _ignores_image_shape(values, image=None):
    v = np.clip(np.abs(np.asarray(values)).sum(axis=2), 0, 1)
    return v if image is None else np.asarray(image, np.float64)[..., :2]


@pytest.mark.parametrize("fn, message", [
    (_out_of_range, r"clip to \[0, 1\]"),
    (_nan_on_zero, "NaN or infinite values for an all-zero map"),
    (_mutating, "modified its input"),
    (_ignores_image_shape, r"returned shape \(9, 7, 2\) for an RGB image"),
])
def test_check_visualizer_catches(fn, message):
    with np.errstate(all="ignore"), pytest.raises(AssertionError, match=message):
        T.check_visualizer(fn)


# -- the author's guide ---------------------------------------------------------------------------------

def test_guide_documents_the_register_keywords_and_the_testing_kit():
    from pathlib import Path

    from salplug.plugins import _METADATA_KEYS

    guide = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    for keyword in sorted({k for keys in _METADATA_KEYS.values() for k in keys} | {"aliases", "override"}):
        assert f"`{keyword}`" in guide or f"{keyword}=" in guide, keyword
    for name in ("make_host", "AnalyticModel", "AnalyticAdapter", "check_method", "check_backend",
                 "check_visualizer"):
        assert name in T.__all__, name
        assert f"{name}(" in guide, name  # the guide shows it called (in backticks or a code block)
    for section in ("## Naming", "## Testing", "## Publishing", "## Lazy targets", "## Capabilities"):
        assert section in guide
    from salplug.types import CAPABILITIES

    for capability in sorted(CAPABILITIES):
        assert f"`{capability}`" in guide


class _ScoresAndGradientsOnly:
    """A legal backend without layer gradients, so without check_layer()."""

    name, default_batch_size, supports_targets = "minimal", 8, True
    provides = frozenset({salplug.SCORES, salplug.INPUT_GRADIENTS})

    def __init__(self, model):
        self.inner = T.AnalyticAdapter(model)

    def __getattr__(self, attr):
        if attr in ("to_canonical", "from_canonical", "num_outputs", "outputs", "scores", "input_gradients"):
            return getattr(self.inner, attr)
        raise AttributeError(attr)


def test_check_backend_accepts_a_backend_without_layer_gradients():
    x = T.sample_inputs()
    T.check_backend(_ScoresAndGradientsOnly(T.AnalyticModel(x.shape[1:], classes=4)), x)
