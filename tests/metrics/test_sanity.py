"""Model-parameter randomisation sanity check (Adebayo et al. 2018) on small torch / Keras CNNs."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import salplug
from salplug.errors import CapabilityError, ParameterError
from salplug.evaluate import evaluate
from salplug.metrics.sanity import group_layers, spearman
from salplug.testing import AnalyticModel, make_host

torch = pytest.importorskip("torch")
from conftest import make_cnn  # noqa: E402


@pytest.fixture
def images():
    return np.random.default_rng(0).uniform(0, 1, (3, 16, 16, 3)).astype(np.float32)


@pytest.fixture
def host():
    return salplug.get_plugin_manager(autoload=False)


def corr_curves(result, metric="model_randomization"):
    return {m: result.results[(m, metric)].curves["rank_corr_per_layer"] for m in result.methods}


def test_gradients_and_grad_cam_decorrelate_random_maps_do_not(host, images):
    model = make_cnn(0)
    r = evaluate(model, images, ["gradients", {"method": "grad_cam", "params": {"layer": "relu2"}}],
                 ["model_randomization"], backend="torch", host=host, progress=False, seed=0)
    curves = corr_curves(r)
    assert curves["gradients"].ticks == ["original", "fc", "conv2", "conv1"]
    for method in ("gradients", "grad_cam"):
        y = curves[method].y
        np.testing.assert_array_equal(y[:, 0], 1.0)
        assert np.abs(y[:, -1]).max() < 0.5, (method, y)          # every layer random: decorrelated
        assert abs(r.scores(method, "randomization_corr").mean()) < 0.5
    # the random-map baseline ignores the model: it "passes" nothing, correlation stays 1
    np.testing.assert_allclose(curves["random"].y, 1.0)
    assert "randomization_corr" in r.table() and "random" in r.table()


def test_first_step_equals_a_hand_randomised_copy(host, images):
    """Step 1 re-initialises fc with torch's own reset_parameters under the documented seed
    (``seed * 1009 + k`` for step k: ModelRandomization's docstring, docs/evaluation.md)."""
    from scipy.stats import spearmanr

    model = make_cnn(1)
    seed = 3
    r = evaluate(model, images, ["gradients"], {"model_randomization": {"max_steps": 1}}, backend="torch",
                 host=host, progress=False, seed=seed, include_random=False)
    original = salplug.explain(model, images, "gradients", host=host)
    by_hand = copy.deepcopy(model)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1009 + 1)
        by_hand.fc.reset_parameters()
    randomised = salplug.explain(by_hand, images, "gradients", target=original.target, host=host)
    a = np.abs(original.canonical).sum(-1).reshape(3, -1)
    b = np.abs(randomised.canonical).sum(-1).reshape(3, -1)
    want = [spearmanr(a[i], b[i]).statistic for i in range(3)]
    got = r.results[("gradients", "model_randomization")].curves["rank_corr_per_layer"].y[:, 1]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(spearman(a, b), want, rtol=1e-12)


def test_model_untouched_seeded_and_modes(host, images):
    model = make_cnn(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def run(seed, mode="cascading", layers="blocks"):
        r = evaluate(model, images[:2], ["gradients"], {"model_randomization": {"mode": mode, "layers": layers}},
                     backend="torch", host=host, progress=False, seed=seed, include_random=False)
        return r.results[("gradients", "model_randomization")]

    a, b, c = run(0), run(0), run(1)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    np.testing.assert_array_equal(a.curves["rank_corr_per_layer"].y, b.curves["rank_corr_per_layer"].y)
    assert not np.array_equal(a.curves["rank_corr_per_layer"].y, c.curves["rank_corr_per_layer"].y)
    # independent: only the k-th group random at step k; the last step is then conv1 alone
    ind = run(0, "independent")
    assert ind.extras["mode"] == "independent"
    by_hand = copy.deepcopy(model)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0 * 1009 + 3)
        by_hand.conv1.reset_parameters()
    g0 = salplug.explain(model, images[:2], "gradients", host=host)
    g1 = salplug.explain(by_hand, images[:2], "gradients", target=g0.target, host=host)
    want = spearman(np.abs(g0.canonical).sum(-1).reshape(2, -1), np.abs(g1.canonical).sum(-1).reshape(2, -1))
    np.testing.assert_allclose(ind.curves["rank_corr_per_layer"].y[:, 3], want, rtol=1e-6)
    # explicit groups, from the output end
    explicit = run(0, layers=["fc", "conv1"])
    assert explicit.curves["rank_corr_per_layer"].ticks == ["original", "fc", "conv1"]


def test_layer_grouping():
    leaves = ["_conv_stem", "_bn0", "_blocks.0._depthwise_conv", "_blocks.0._bn1", "_blocks.1._expand_conv",
              "_conv_head", "_fc"]
    assert group_layers(leaves, "blocks") == [("_fc", ["_fc"]), ("_conv_head", ["_conv_head"]),
                                              ("_blocks.1", ["_blocks.1._expand_conv"]),
                                              ("_blocks.0", ["_blocks.0._depthwise_conv", "_blocks.0._bn1"]),
                                              ("_bn0", ["_bn0"]), ("_conv_stem", ["_conv_stem"])]
    assert [g for g, _ in group_layers(leaves, "leaves")][:2] == ["_fc", "_conv_head"]
    assert group_layers(leaves, ["_blocks"]) == [("_blocks", leaves[2:5])]
    with pytest.raises(ParameterError, match="no layer with parameters"):
        group_layers(leaves, ["_blocks.7"])


@pytest.mark.parametrize("params", [{"layers": "all"}, {"layers": []}, {"mode": "random"}, {"absolute": 1},
                                    {"max_steps": 0}, {"reduce": "mean"}])
def test_bad_parameters(host, images, params):
    calls = []
    model = make_cnn(0)
    model.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(ParameterError):
        evaluate(model, images, ["gradients"], {"model_randomization": params}, backend="torch", host=host,
                 progress=False)
    assert calls == []


def test_needs_a_randomisable_backend(images):
    host = make_host()
    model = AnalyticModel((16, 16, 3), classes=3)
    with pytest.raises(CapabilityError, match="torch and tf2"):
        evaluate(model, images, ["gradients"], ["model_randomization"], backend="analytic", host=host,
                 progress=False)


def test_tf2_keras_model(images):
    model = _keras_cnn()
    before = [w.copy() for w in model.get_weights()]
    host = salplug.get_plugin_manager(autoload=False)
    r = evaluate(model, images, ["gradients"], ["model_randomization"], backend="tf2", host=host, progress=False,
                 include_random=False)
    curve = r.results[("gradients", "model_randomization")].curves["rank_corr_per_layer"]
    assert curve.ticks == ["original", "fc", "conv2", "conv1"]
    assert np.abs(curve.y[:, -1]).max() < 0.5
    for w0, w1 in zip(before, model.get_weights()):
        np.testing.assert_array_equal(w0, w1)


def _keras_cnn():
    pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("Keras runs on another backend")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(5, name="fc")(h))


def _keras_curve(model, images, method="gradients"):
    r = evaluate(model, images, [method], ["model_randomization"], backend="tf2", progress=False,
                 include_random=False, host=salplug.get_plugin_manager(autoload=False))
    return list(r.results.values())[0].curves["rank_corr_per_layer"]


def test_tf2_frozen_layers_are_randomised(images):
    """A frozen backbone (trainable=False) is randomised like a trainable one (as torch's requires_grad=False)."""
    model = _keras_cnn()
    trained = _keras_curve(model, images)
    for name in ("conv1", "conv2"):
        model.get_layer(name).trainable = False
    frozen = _keras_curve(model, images)
    assert frozen.ticks == trained.ticks == ["original", "fc", "conv2", "conv1"]
    np.testing.assert_allclose(frozen.y, trained.y, atol=1e-6)  # same seeded draws, frozen or not
    assert np.abs(frozen.y[:, -1]).max() < 0.5
    assert not model.get_layer("conv1").trainable  # the caller's model keeps its settings


def test_tf2_grad_cam_layer_object_maps_onto_the_clone(images):
    """Grad-CAM's layer given as the original model's layer object works on the randomised clone."""
    model = _keras_cnn()
    by_name = _keras_curve(model, images, {"method": "grad_cam", "params": {"layer": "conv2"}})
    by_object = _keras_curve(model, images, {"method": "grad_cam", "params": {"layer": model.get_layer("conv2")}})
    np.testing.assert_allclose(by_object.y, by_name.y, atol=1e-6)
    assert by_object.y[:, -1].max() < 0.9  # the clone's layer (randomised), not the original's
