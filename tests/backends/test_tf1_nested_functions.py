"""tf1 graphs whose y runs through a nested ``tf.function`` (a PartitionedCall op).

TensorFlow differentiates such a call by rewriting the forward op (refused once the session has
run it) or, in an imported copy, by a SymbolicGradient op that gives zeros through a while loop
inside the function. salplug differentiates these graphs in a copy with the functions inlined.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import salplug
from salplug.errors import ModelOutputError

tf = pytest.importorskip("tensorflow", reason="the tf1 backend needs TensorFlow: pip install 'salplug[tf]'")
from salplug.backends.tf1_model import TF1Model  # noqa: E402

v1 = tf.compat.v1
W = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
XS = np.random.default_rng(1).normal(size=(3, 6)).astype(np.float32)


def nested_graph(loop: bool, variable: bool = False):
    """y = [g(x), -g(x)] with g = relu(x W) (twice 1.1 relu(h) in a while loop with ``loop``) a
    tf.function called twice; W a variable the function captures with ``variable``."""
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 6], name="x")
        w = tf.Variable(W) if variable else tf.constant(W)

        @tf.function
        def g(v):
            h = tf.matmul(v, w)
            if loop:
                h = tf.while_loop(lambda i, a: i < 2, lambda i, a: (i + 1, tf.nn.relu(a) * 1.1), (0, h))[1]
            return tf.nn.relu(h)

        y = tf.concat([g(x), -g(x)], axis=1, name="y")
        session = v1.Session(graph=graph)
        session.run(v1.global_variables_initializer())
    return TF1Model(graph, session, x, y), w


def expected_gradient(loop: bool, weights=W):
    """d y[:, k] / d x for k = 1 (the positive half) and k = 5 (its negative)."""
    h = XS @ weights
    slope = (h > 0) * (1.21 if loop else 1.0)
    return weights[:, 1] * slope[:, 1:2], -weights[:, 1] * slope[:, 1:2]


@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("state", ["fresh", "ran", "finalized"])
def test_gradients_through_a_nested_tf_function(loop, state):
    model, _ = nested_graph(loop)
    if state != "fresh":
        model.session.run(model.y, {model.x: XS})  # the user ran y: its call op cannot gain outputs
    if state == "finalized":
        model.graph.finalize()
    up, down = expected_gradient(loop)
    np.testing.assert_allclose(salplug.explain(model, XS, "gradients", target=1).values, up, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(salplug.explain(model, XS, "gradients", target=5).values, down, rtol=1e-5, atol=1e-6)
    ig = salplug.explain(model, XS, "integrated_gradients", target=1, steps=64)
    scores = model.session.run(model.y, {model.x: XS})[:, 1]
    np.testing.assert_allclose(ig.values.sum(axis=1), scores, rtol=0.05, atol=1e-3)  # completeness


@pytest.mark.parametrize("loop", [False, True])
def test_guided_backprop_guides_the_relus_of_a_nested_tf_function(loop):
    model, _ = nested_graph(loop)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        up = salplug.explain(model, XS, "guided_backprop", target=1).values
        down = salplug.explain(model, XS, "guided_backprop", target=5).values
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []
    # y[:, 1] = relu(...): a positive gradient reaches every ReLU, as plain; y[:, 5] = -relu(...):
    # the negative gradient reaching the last ReLU is cut (plain gradients would pass -W).
    np.testing.assert_allclose(up, expected_gradient(loop)[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(down, 0)


def test_a_variable_captured_by_the_nested_function_is_read_on_every_run():
    model, w = nested_graph(loop=True, variable=True)
    model.session.run(model.y, {model.x: XS})
    np.testing.assert_allclose(salplug.explain(model, XS, "gradients", target=1).values,
                               expected_gradient(True)[0], rtol=1e-5, atol=1e-6)
    with model.graph.as_default():
        model.session.run(w.assign(2 * W))
    np.testing.assert_allclose(salplug.explain(model, XS, "gradients", target=1).values,
                               expected_gradient(True, 2 * W)[0], rtol=1e-5, atol=1e-6)


def test_a_function_that_cannot_be_inlined_is_refused_when_it_holds_a_loop(monkeypatch):
    from tensorflow.python.grappler import tf_optimizer

    def fail(*args, **kwargs):
        raise RuntimeError("grappler unavailable")

    monkeypatch.setattr(tf_optimizer, "OptimizeGraph", fail)
    model, _ = nested_graph(loop=True)
    with pytest.raises(ModelOutputError, match="tf.function .* control flow"):
        salplug.explain(model, XS, "gradients", target=1)
    plain, _ = nested_graph(loop=False)  # without a loop, TensorFlow's own gradient is right
    np.testing.assert_allclose(salplug.explain(plain, XS, "gradients", target=1).values,
                               expected_gradient(False)[0], rtol=1e-5, atol=1e-6)


def conv_loop_model():
    """y = mean(loop(conv(x))): a while loop after a conv layer, the session already run."""
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 6, 5, 3], name="x")
        w = v1.get_variable("w", initializer=np.random.RandomState(0).normal(size=(3, 3, 3, 4)).astype(np.float32))
        conv = tf.nn.conv2d(x, w, 1, "SAME")
        _, h = tf.while_loop(lambda i, a: i < 2, lambda i, a: (i + 1, tf.nn.relu(a) * 0.9 + 0.1 * a),
                             [tf.constant(0), conv])
        y = tf.reduce_mean(h, [1, 2, 3])
        session = v1.Session(graph=graph)
        session.run(v1.global_variables_initializer())
    images = np.random.RandomState(1).uniform(size=(2, 6, 5, 3)).astype(np.float32)
    session.run(y, {x: images})
    return TF1Model(graph, session, x, y, conv_layer=conv), images


def test_a_while_loop_copy_takes_a_second_gradient_after_its_session_ran():
    # each new gradient adds outputs to the copied loop's op: the copy's session is renewed
    model, images = conv_loop_model()
    gradients = salplug.explain(model, images, "gradients").values
    cam = salplug.explain(model, images, "grad_cam").values
    np.testing.assert_array_equal(salplug.explain(model, images, "gradients").values, gradients)
    fresh, _ = conv_loop_model()  # the other order on a fresh graph gives the same maps
    np.testing.assert_allclose(salplug.explain(fresh, images, "grad_cam").values, cam, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(salplug.explain(fresh, images, "gradients").values, gradients, rtol=1e-6, atol=1e-7)
    assert np.abs(cam).max() > 0 and np.abs(gradients).max() > 0
