"""PyTorch backend: devices, frozen parameters, hooks, output selectors, batching."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_cnn

import salplug
from salplug.errors import LayerError, ModelOutputError, TargetError
from salplug.types import Targets

torch = pytest.importorskip("torch")
nn = torch.nn


def test_parameters_never_accumulate_gradients_and_flags_are_restored():
    model = make_cnn(seed=1)
    frozen = model.conv1.bias
    frozen.requires_grad_(False)
    salplug.explain(model, torch.rand(2, 3, 8, 8), "ig", steps=3)
    salplug.explain(model, torch.rand(2, 3, 8, 8), "gradients")
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == [p is not frozen for p in model.parameters()]


def test_works_inside_no_grad_and_leaves_input_untouched():
    model = make_cnn(seed=1)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        out = salplug.explain(model, x, "gradients", target=0)
    assert out.values.abs().sum() > 0 and not x.requires_grad and x.grad is None


class Counting(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.batches = inner, []

    def forward(self, x):
        self.batches.append(x.shape[0])
        return self.inner(x)


@pytest.mark.parametrize("batch_size,expected", [(1, [1] * 10), (4, [4, 4, 2]), (64, [10])])
def test_inner_work_is_packed_into_batches(batch_size, expected):
    model = Counting(make_cnn(seed=2))
    salplug.explain(model, torch.rand(2, 3, 8, 8), "ig", target=[1, 2], steps=5, batch_size=batch_size)
    assert model.batches == expected


def test_default_batch_size_follows_the_input():
    """With no batch_size, rows per call come from adapter.batch_size_for(x): 8 rows of 224² on
    a CPU, every row at once for tiny inputs; a batch_size given anywhere wins."""
    model = Counting(make_cnn(seed=2))
    ex = salplug.Explainer(model)
    ex.explain(torch.rand(1, 3, 224, 224), "ig", target=1, steps=20)
    assert model.batches == [8, 8, 4]
    assert ex.adapter.batch_size_for(np.zeros((1, 224, 224, 3), np.float32)) == 8
    model.batches.clear()
    ex.explain(torch.rand(1, 3, 8, 8), "ig", target=1, steps=40)
    assert model.batches == [40]
    model.batches.clear()
    salplug.Explainer(model, batch_size=5).explain(torch.rand(1, 3, 8, 8), "ig", target=1, steps=40)
    assert max(model.batches) == 5 and sum(model.batches) == 40
    model.batches.clear()
    ex.explain(torch.rand(1, 3, 8, 8), "ig", target=1, steps=40, batch_size=3)
    assert max(model.batches) == 3 and sum(model.batches) == 40


def test_layer_hooks_are_removed_even_after_errors():
    from salplug.backends.torch import TorchAdapter
    from salplug.types import Targets

    model = make_cnn(seed=3)
    adapter = TorchAdapter(model)
    x = np.random.rand(2, 8, 8, 3).astype(np.float32)
    adapter.layer_values_and_gradients(x, Targets(np.array([0, 1])), model.conv1)
    with pytest.raises(TargetError):
        adapter.layer_values_and_gradients(x, Targets(np.array([0, 99])), "conv1")
    assert all(not m._forward_hooks for m in model.modules())


def test_layer_gradients_are_exact_for_a_linear_head():
    # logits = fc(flatten(gap(x))): d logit_k / d gap-output = fc.weight[k].
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 5)).eval()
    from salplug.backends.torch import TorchAdapter
    from salplug.types import Targets

    adapter = TorchAdapter(model)
    x = np.random.rand(3, 4, 4, 2 + 1).astype(np.float32)
    values, grads = adapter.layer_values_and_gradients(x, Targets(np.array([0, 3, 4])), "1")
    assert values.shape == (3, 1, 1, 2)
    np.testing.assert_allclose(grads[:, 0, 0, :], model[3].weight.detach().numpy()[[0, 3, 4]], rtol=1e-6)


def test_inplace_relu_after_hooked_layer_is_fine():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.LazyLinear(3))
    model(torch.rand(1, 3, 6, 6))
    from salplug.backends.torch import TorchAdapter
    from salplug.types import Targets

    values, grads = TorchAdapter(model).layer_values_and_gradients(
        np.random.rand(1, 6, 6, 3).astype(np.float32), Targets(np.array([1])), "0")
    assert (values < 0).any()  # the captured activation is taken before the in-place ReLU


class TupleModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = make_cnn(seed=4)

    def forward(self, x):
        logits = self.net(x)
        return logits, logits * 0 + 1


class DictModel(TupleModel):
    def forward(self, x):
        logits = self.net(x)
        return {"aux": logits * 2, "scores": logits}


def test_tuple_and_dict_outputs_are_handled():
    x = torch.rand(2, 3, 8, 8)
    ref = salplug.explain(make_cnn(seed=4), x, "gradients", target=1).values
    torch.testing.assert_close(salplug.explain(TupleModel(), x, "gradients", target=1).values, ref)
    with pytest.raises(ModelOutputError, match="keys.*aux.*scores"):
        salplug.explain(DictModel(), x, "gradients", target=1)
    for output in ("scores", lambda out: out["scores"]):
        out = salplug.explain(DictModel(), x, "gradients", target=1, backend_options={"output": output})
        torch.testing.assert_close(out.values, ref)


def test_a_plain_callable_returning_logits():
    net = make_cnn(seed=5)
    x = torch.rand(2, 3, 8, 8)
    out = salplug.explain(lambda t: net(t) * 2, x, "gradients", target=2, backend="torch")
    torch.testing.assert_close(out.values, 2 * salplug.explain(net, x, "gradients", target=2).values)


def test_unknown_layer_name_is_a_layer_error():
    with pytest.raises(LayerError, match="no layer 'layer4.1'"):
        salplug.Explainer(make_cnn()).adapter.check_layer("layer4.1")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_tensors_come_back_on_their_device():  # pragma: no cover - needs a GPU
    model = make_cnn().cuda()
    x = torch.rand(2, 3, 8, 8, device="cuda")
    out = salplug.explain(model, x, "ig", steps=4)
    assert out.values.device == x.device


# -- the model's mode, class counts, scalar outputs ------------------------------------------
def _bn_dropout_model():
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))


def test_a_model_in_train_mode_is_explained_in_eval_mode_and_given_back_as_it_was():
    model = _bn_dropout_model()
    model[1].running_mean.uniform_(-0.5, 0.5)
    x = torch.rand(2, 3, 9, 9)
    reference = salplug.explain(model.eval(), x, "ig", target=1, steps=8, batch_size=8).values
    model.train()
    model[3].eval()  # one module in its own mode: it must come back exactly so
    stats = {k: v.clone() for k, v in model[1].state_dict().items()}
    for batch_size in (1, 8):
        out = salplug.explain(model, x, "ig", target=1, steps=8, batch_size=batch_size).values
        torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-7)  # no dropout, running statistics
    salplug.explain(model, x, "grad_cam", target=1, layer="0")
    salplug.explain(model, x, "guided_backprop", target=1)
    assert all(torch.equal(v, model[1].state_dict()[k]) for k, v in stats.items())  # BatchNorm not updated
    assert [m.training for m in model] == [True, True, True, False, True, True, True]


def test_eval_mode_false_runs_the_model_as_it_is():
    model = _bn_dropout_model().train()
    before = model[1].num_batches_tracked.item()
    salplug.explain(model, torch.rand(2, 3, 9, 9), "gradients", target=1, backend_options={"eval_mode": False})
    assert model[1].num_batches_tracked.item() > before  # train-mode BatchNorm ran and updated itself
    with pytest.raises(salplug.errors.ParameterError, match="eval_mode"):
        salplug.Explainer(model, eval_mode="yes")


class AuxHead(nn.Module):
    """10 classes, with an auxiliary Linear registered after the classifier."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(8, 10)
        self.aux = nn.Linear(8, 4)

    def forward(self, x):
        return self.classifier(self.body(x))


def test_a_guessed_class_count_names_the_way_out_and_gives_way_to_the_real_one():
    x = torch.rand(1, 3, 8, 8)
    ex = salplug.Explainer(AuxHead())
    with pytest.raises(TargetError, match="0..3 .*guess .*num_classes"):
        ex.explain(x, "gradients", target=7)
    assert salplug.explain(AuxHead(), x, "gradients", target=7, backend_options={"num_classes": 10}).target == [7]
    ex.explain(x, "gradients")  # a forward pass shows 10 outputs
    assert ex.adapter.num_outputs() == 10
    assert ex.explain(x, "gradients", target=7).target == [7]


def test_one_score_per_image_needs_no_target():
    class Score(nn.Module):  # (N,) scores: class 3's logit
        def __init__(self):
            super().__init__()
            self.cnn = make_cnn(seed=2)

        def forward(self, t):
            return self.cnn(t)[:, 3]

    model, scalar = nn.Sequential(make_cnn(seed=2), nn.Flatten(0)), Score()  # N * 10 values; N values
    x = torch.rand(2, 3, 8, 8)
    expected = salplug.explain(make_cnn(seed=2), x, "gradients", target=3).values
    for target in (None, "top1"):
        torch.testing.assert_close(salplug.explain(scalar, x, "gradients", target=target).values, expected)
    with pytest.raises(TargetError):  # not one score per image: still asks for a target class
        salplug.explain(model, x, "gradients", target=None)


def test_zero_dimensional_targets_are_one_class_for_all():
    model, x = make_cnn(seed=4), torch.rand(2, 3, 8, 8)
    expected = salplug.explain(model, x, "gradients", target=6).values
    for target in (torch.tensor(6), np.array(6), np.int64(6)):
        torch.testing.assert_close(salplug.explain(model, x, "gradients", target=target).values, expected)


def test_a_one_dimensional_convolutional_network_takes_batches_of_signals():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 3))
    x = torch.rand(5, 2, 16, requires_grad=True)
    model(x)[:, 1].sum().backward()
    out = salplug.explain(model, x.detach(), "gradients", target=1)
    assert out.values.shape == (5, 2, 16)
    torch.testing.assert_close(out.values, x.grad)


def test_a_model_swapped_into_an_adapter_is_the_one_frozen_and_put_in_eval_mode():
    """The adapter lists modules and parameters once per model (not per batch); a new model
    (as the sanity metric's randomised copy) is listed afresh."""
    adapter = salplug.Explainer(_bn_dropout_model()).adapter
    other = _bn_dropout_model().train()
    adapter.model = other
    seen = []
    other[1].register_forward_hook(lambda m, i, o: seen.append((m.training, other[6].weight.requires_grad)))
    adapter.input_gradients(np.random.default_rng(0).random((2, 9, 9, 3), dtype=np.float32), Targets(np.array([0, 1])))
    assert seen == [(False, False)] and other[1].training and other[6].weight.requires_grad


def test_a_module_added_after_the_explainer_was_made_is_put_in_eval_mode_too():
    model = make_cnn(seed=2)
    explainer = salplug.Explainer(model)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    explainer.explain(x, "gradients", target=1)
    model.fc = nn.Sequential(nn.Dropout(0.5), nn.Linear(256, 10))  # a new head
    model.train()
    first = explainer.explain(x, "gradients", target=1).values
    torch.testing.assert_close(explainer.explain(x, "gradients", target=1).values, first)  # no dropout
    assert model.fc[0].training and model.fc[1].weight.requires_grad  # given back as it was
