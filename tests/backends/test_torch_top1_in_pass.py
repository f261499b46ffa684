"""Top-1 targets chosen in the explained pass: for gradients, Guided Backprop and Grad-CAM (their
model rows are the inputs) the torch backend picks each row's top class in the same forward
pass it differentiates, instead of running a forward pass of its own first. The maps and the
recorded targets must equal those of explicit targets, with one forward pass fewer."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_cnn

import salplug
from salplug.types import Targets

torch = pytest.importorskip("torch")

METHODS = [("gradients", {}), ("guided_backprop", {}), ("grad_cam", {"layer": "conv2"})]


class Wrapped(torch.nn.Module):
    """``after(net, x)`` around a small CNN ``net``: a model with one odd habit."""

    def __init__(self, after, seed: int = 0):
        super().__init__()
        self.net, self.after = make_cnn(seed=seed), after

    def forward(self, x):
        return self.after(self.net, x)


def counted(model):
    """``model`` with a counter of its forward passes (``model.calls``: rows per pass)."""
    model.calls = []
    model.register_forward_hook(lambda m, inputs, out: model.calls.append(len(inputs[0])))
    return model


@pytest.mark.parametrize("device_arrays", [False, True])
@pytest.mark.parametrize("method,params", METHODS, ids=[m for m, _ in METHODS])
@pytest.mark.parametrize("batch_size", [5, 2])
def test_maps_and_targets_equal_explicit_top1_with_one_pass_fewer(method, params, batch_size, device_arrays):
    model = counted(make_cnn(seed=0))
    x = 2 * torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    want = model(x).argmax(1).tolist()
    assert len(set(want)) > 1  # the rows really have different classes
    model.calls.clear()
    options = {"device_arrays": device_arrays}
    out = salplug.explain(model, x, method, batch_size=batch_size, backend_options=options, **params)
    assert model.calls == [min(batch_size, 5 - i) for i in range(0, 5, batch_size)]  # no top-1 pass of its own
    explicit = salplug.explain(model, x, method, target=want, batch_size=batch_size, backend_options=options,
                               **params)
    assert out.target == want == explicit.target
    torch.testing.assert_close(out.values, explicit.values)


def test_other_methods_still_choose_first():
    model = counted(make_cnn(seed=3))
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    out = salplug.explain(model, x, "ig", steps=4, batch_size=12)
    assert model.calls == [3, 12]  # a top-1 pass over the inputs, then the path points
    assert out.target == model(x).argmax(1).tolist()


def test_an_out_of_memory_split_records_every_row():
    from test_torch_autotune import OOMAbove

    inner = make_cnn(seed=0)
    x = 2 * torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    want = inner(x).argmax(1).tolist()
    assert len(set(want)) > 1
    with pytest.warns(RuntimeWarning, match="Out of memory"):
        out = salplug.explain(OOMAbove(inner, limit=2), x, "gradients", batch_size=5)
    assert out.target == want
    torch.testing.assert_close(out.values, salplug.explain(inner, x, "gradients", target=want).values)


def test_a_model_with_one_score_per_input_records_no_target():
    x = torch.rand(2, 3, 16, 16)
    out = salplug.explain(Wrapped(lambda net, t: net(t)[:, 4], seed=3), x, "gradients")
    assert out.target is None
    torch.testing.assert_close(out.values, salplug.explain(make_cnn(seed=3), x, "gradients", target=4).values)


def test_pending_top1_targets_record_through_takes_and_refuse_repeats():
    targets = Targets.top1(6)
    assert targets.pending_top1 and targets.rows == 6 and targets.describe() is None
    targets.take(slice(2, 5)).take(np.array([0, 2])).record(np.array([7, 9]))  # rows 2 and 4
    targets.take(slice(0, 2)).record(np.array([1, 1]))
    targets.take(np.array([3, 5])).record(np.array([0, 3]))
    assert targets.resolved().describe() == [1, 1, 7, 0, 9, 3] == targets.describe()
    with pytest.raises(RuntimeError, match="rows_are_inputs"):
        targets.repeat(2)
    assert Targets.top1(2).resolved().indices is None  # nothing chosen: one score per row


def test_a_float64_model_chooses_as_a_separate_float32_pass_would():
    """Two logits equal in float32 but not in float64: the first wins, as before."""
    class NearTie(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones((), dtype=torch.float64))

        def forward(self, x):
            base = x.flatten(1).sum(1, keepdim=True) * self.scale
            return torch.cat([base, base + 1e-12, base - 1.0], 1)

    x = torch.rand(3, 3, 4, 4, dtype=torch.float64)
    assert salplug.explain(NearTie(), x, "gradients").target == [0, 0, 0]


def test_a_model_writing_into_its_input_gets_the_same_map_as_with_explicit_targets():
    def halves(net, x):  # normalises its input in place when it is not differentiated
        return net(x if x.requires_grad else x.mul_(0.5))

    x = 2 * torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    for method, params in [("grad_cam", {"layer": "net.conv2"}), ("ig", {"steps": 4})]:
        auto = salplug.explain(Wrapped(halves), x, method, **params)
        explicit = salplug.explain(Wrapped(halves), x, method, target=auto.target, **params)
        torch.testing.assert_close(auto.values, explicit.values)


def test_a_model_returning_the_wrong_number_of_rows_says_so():
    from salplug.errors import TargetError

    first_row_only = Wrapped(lambda net, x: net(x)[:1])
    with pytest.raises(TargetError, match="returned 1 rows .* for 4 inputs; top-1 targets need one row"):
        salplug.explain(first_row_only, torch.rand(4, 3, 16, 16), "gradients")


def test_a_layer_the_output_does_not_depend_on_is_a_layer_error():
    from salplug.errors import LayerError

    detached = Wrapped(lambda net, x: net(x).detach() + 0.0 * x.sum())
    with pytest.raises(LayerError, match="does not depend on layer 'net.conv2'"):
        salplug.explain(detached, torch.rand(2, 3, 16, 16), "grad_cam", target=1, layer="net.conv2")
