"""The callable backend: upstream call_model_function keys and shape checks."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import linear_call_model_function

import salplug
from salplug.backends.callable import INPUT_OUTPUT_GRADIENTS, OUTPUT_LAYER_VALUES
from salplug.errors import ModelOutputError, ParameterError, TargetError


def test_missing_key_and_bad_shapes_are_reported():
    x = np.zeros((4, 4, 3), np.float32)

    def no_key(x_batch, call_model_args=None, expected_keys=None):
        return {"OTHER": 1}

    with pytest.raises(ModelOutputError, match="did not return key 'INPUT_OUTPUT_GRADIENTS'"):
        salplug.explain(no_key, x, "gradients", backend="callable")

    def wrong_shape(x_batch, call_model_args=None, expected_keys=None):
        return {INPUT_OUTPUT_GRADIENTS: np.zeros((len(x_batch), 4, 4, 1))}

    with pytest.raises(ModelOutputError, match="same|shape"):
        salplug.explain(wrong_shape, x, "gradients", backend="callable")

    def not_a_dict(x_batch, call_model_args=None, expected_keys=None):
        return [1]

    with pytest.raises(ModelOutputError, match="must return a dict"):
        salplug.explain(not_a_dict, x, "gradients", backend="callable")


def test_call_model_args_passed_unchanged_and_batches_respected():
    seen = []
    args = {"class_idx": 3}

    def fn(x_batch, call_model_args=None, expected_keys=None):
        seen.append((x_batch.shape, dict(call_model_args), list(expected_keys)))
        return {INPUT_OUTPUT_GRADIENTS: np.ones_like(x_batch)}

    out = salplug.explain(fn, np.ones((2, 2, 1)), "ig", backend="callable", steps=5, batch_size=2,
                          backend_options={"call_model_args": args})
    assert [s[0][0] for s in seen] == [2, 2, 1]
    assert all(s[1] == {"class_idx": 3} and s[2] == [INPUT_OUTPUT_GRADIENTS] for s in seen)
    assert args == {"class_idx": 3}
    np.testing.assert_allclose(out.values, np.ones((2, 2, 1)))


def test_target_arg_passes_per_row_targets():
    w = np.stack([np.full((2, 2, 1), k, np.float32) for k in range(4)])  # class k has gradient k

    def fn(x_batch, call_model_args=None, expected_keys=None):
        out = {}
        if INPUT_OUTPUT_GRADIENTS in expected_keys:
            cls = np.broadcast_to(np.asarray(call_model_args["cls"]), (len(x_batch),))
            out[INPUT_OUTPUT_GRADIENTS] = w[cls]
        if OUTPUT_LAYER_VALUES in expected_keys:
            out[OUTPUT_LAYER_VALUES] = np.tile(np.arange(4.0), (len(x_batch), 1))
        return out

    x = np.ones((3, 2, 2, 1), np.float32)
    out = salplug.explain(fn, x, "gradients", backend="callable", target=[1, 3, 2], layout="N...",
                          backend_options={"target_arg": "cls", "num_classes": 4})
    assert [float(v.mean()) for v in out.values] == [1.0, 3.0, 2.0]
    top = salplug.explain(fn, x, "gradients", backend="callable", layout="N...",
                          backend_options={"target_arg": "cls"})
    assert top.target == [3, 3, 3]


def test_batched_input_layout():
    w = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    fn = linear_call_model_function(w)
    out = salplug.explain(fn, np.zeros((5, 1, 2, 3)), "gradients", backend="callable")
    assert out.values.shape == (5, 1, 2, 3)


def _per_class(calls=None, scores_shape=(4,)):
    """Class k has gradient k (target through call_model_args['cls']); scores 0..3 per example."""
    w = np.stack([np.full((2, 2, 1), k, np.float32) for k in range(4)])

    def fn(x_batch, call_model_args=None, expected_keys=None):
        if calls is not None:
            calls.append(len(x_batch))
        out = {}
        if INPUT_OUTPUT_GRADIENTS in expected_keys:
            cls = np.broadcast_to(np.asarray(call_model_args["cls"]), (len(x_batch),))
            out[INPUT_OUTPUT_GRADIENTS] = w[cls]
        if OUTPUT_LAYER_VALUES in expected_keys:
            out[OUTPUT_LAYER_VALUES] = np.broadcast_to(np.arange(float(np.prod(scores_shape))).reshape(scores_shape),
                                                       (len(x_batch), *scores_shape)).copy()
        return out
    return fn


def test_a_target_callable_is_refused_before_any_call_not_ignored():
    # target_arg passes class indices; a callable on the output cannot travel that way (it was
    # accepted, then ignored: the map explained the function's default class)
    calls = []
    with pytest.raises(TargetError, match="target callable"):
        salplug.explain(_per_class(calls), np.ones((2, 2, 2, 1), np.float32), "gradients", backend="callable",
                        layout="N...", target=lambda out: out[:, 3], backend_options={"target_arg": "cls"})
    assert calls == []


def test_target_past_the_functions_outputs_is_a_target_error():
    x = np.ones((2, 2, 2, 1), np.float32)
    with pytest.raises(TargetError, match="out of range"):
        salplug.explain(_per_class(), x, "occlusion", backend="callable", layout="N...", size=1, target=7,
                        backend_options={"target_arg": "cls"})


def test_target_arg_needs_dict_call_model_args():
    with pytest.raises(ParameterError, match="dict"):
        salplug.explain(_per_class(), np.ones((1, 2, 2, 1), np.float32), "gradients", backend="callable",
                        layout="N...", target=1, backend_options={"target_arg": "cls", "call_model_args": ("a", 1)})


def test_top1_needs_one_row_of_scores_per_example():
    # (N, 4, 4) outputs were flattened and argmax'ed into "classes" 15 that the function never had
    with pytest.raises(ModelOutputError, match=r"\(N, classes\)"):
        salplug.explain(_per_class(scores_shape=(4, 4)), np.ones((2, 2, 2, 1), np.float32), "gradients",
                        backend="callable", layout="N...", backend_options={"target_arg": "cls"})
