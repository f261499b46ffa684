"""The torch device path in detail: the memory format batches reach the model in, inputs checked
and made canonical on the device, results checked there and copied to the host only when read,
and the model frozen and in eval mode for a whole explain() call. Runs on the CPU by forcing
``device_arrays=True``; test_torch_cuda.py repeats the essentials on a GPU."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_cnn

import salplug
from salplug.errors import InputError, ModelOutputError, ParameterError, TargetError

torch = pytest.importorskip("torch")

from salplug.backends.torch import TorchAdapter, choose_memory_format  # noqa: E402

ON = {"device_arrays": True}


def _x(n=2, seed=0):
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def _seen_by_first_conv(model):
    """Inputs the first convolution receives, recorded by a forward pre-hook."""
    seen = []
    model.conv1.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    return seen


# -- memory format ---------------------------------------------------------------------------------
@pytest.mark.parametrize("choice,contiguous", [("auto", False), ("channels_last", False),
                                               (torch.channels_last, False), ("contiguous", True),
                                               (torch.contiguous_format, True)])
@pytest.mark.parametrize("device_arrays", [True, False])
def test_batches_reach_the_model_in_the_chosen_memory_format(choice, contiguous, device_arrays):
    model = make_cnn(seed=1)
    seen = _seen_by_first_conv(model)
    out = salplug.explain(model, _x(), "ig", target=1, steps=3, batch_size=2,
                          backend_options={"memory_format": choice, "device_arrays": device_arrays})
    assert seen and all(t.is_contiguous() is contiguous for t in seen)
    assert all(t.is_contiguous(memory_format=torch.channels_last) is not contiguous for t in seen)
    want = salplug.explain(model, _x(), "ig", target=1, steps=3, batch_size=2)
    torch.testing.assert_close(out.values, want.values, rtol=1e-5, atol=1e-7)


def test_auto_follows_the_first_convolutions_weights_on_an_accelerator():
    model = make_cnn(seed=1)
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert choose_memory_format("auto", cpu, model.conv1) is torch.channels_last  # the fast CPU layout
    assert choose_memory_format("auto", cuda, model.conv1) is torch.contiguous_format
    model.to(memory_format=torch.channels_last)
    assert choose_memory_format("auto", cuda, model.conv1) is torch.channels_last
    assert choose_memory_format(None, cuda, None) is torch.contiguous_format  # no convolution: plain


@pytest.mark.parametrize("bad", ["nchw", 3, [torch.channels_last], torch.preserve_format])
def test_a_bad_memory_format_is_refused(bad):
    with pytest.raises(ParameterError, match="memory_format must be 'auto', 'channels_last' or 'contiguous'"):
        TorchAdapter(make_cnn(), memory_format=bad)


@pytest.mark.parametrize("choice", ["contiguous", "channels_last"])
def test_the_device_copy_of_the_input_is_what_the_model_gets_no_copy_per_batch(choice):
    model = make_cnn(seed=1)
    seen = _seen_by_first_conv(model)
    ex = salplug.Explainer(model, device_arrays=True, memory_format=choice)
    held = []
    inner = ex.adapter.to_canonical
    ex.adapter.to_canonical = lambda x, layout=None: (lambda r: held.append(r[1].device_values) or r)(
        inner(x, layout))
    ex.explain(_x(), "gradients", target=1)
    assert seen[0].untyped_storage().data_ptr() == held[0].untyped_storage().data_ptr()


# -- inputs checked on the device ------------------------------------------------------------------
def _never_called(model):
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize("x,match", [
    (torch.full((1, 3, 8, 8), float("nan")).index_fill(0, torch.tensor([0]), 0.5).index_put_(
        (torch.tensor([0, 0]), torch.tensor([0, 1]), torch.tensor([0, 0]), torch.tensor([0, 0])),
        torch.tensor([float("nan"), float("inf")])), "contains 2 NaN or infinite value"),
    (torch.zeros(0, 3, 8, 8), "is empty"),
    (torch.zeros(1, 3, 8, 8, dtype=torch.complex64), "dtype torch.complex64; pass real numbers"),
    (torch.zeros(1, 4, 8, 8), "expects 3 input channels"),
    (torch.zeros(3, 8), "must be one image"),
])
def test_bad_device_inputs_are_refused_before_any_model_call(x, match):
    model = make_cnn(seed=1)
    calls = _never_called(model)
    with pytest.raises(InputError, match=match):
        salplug.explain(model, x, "gradients", target=1, backend_options=ON)
    assert calls == []


@pytest.mark.parametrize("dtype", [torch.float64, torch.bool, torch.int64, torch.float16])
def test_other_dtypes_give_the_numpy_paths_maps(dtype):
    x = (_x() * 3).to(dtype)
    on = salplug.explain(make_cnn(seed=1), x, "gradients", target=2, backend_options=ON)
    off = salplug.explain(make_cnn(seed=1), x, "gradients", target=2)
    torch.testing.assert_close(on.values, off.values)
    np.testing.assert_array_equal(on.canonical, off.canonical)


def test_a_single_chw_image_and_an_explicit_nhwc_tensor():
    x = _x(1)[0]
    on = salplug.explain(make_cnn(seed=1), x, "gradients", target=2, backend_options=ON)
    assert on.values.shape == x.shape and on.canonical.shape == (1, 16, 16, 3)
    nhwc = x.permute(1, 2, 0)[None].contiguous()
    on2 = salplug.explain(make_cnn(seed=1), nhwc, "gradients", target=2, layout="NHWC",
                          backend_options={**ON, "memory_format": "contiguous"})
    np.testing.assert_allclose(on2.canonical, on.canonical, rtol=1e-6, atol=1e-9)
    assert on2.values.shape == nhwc.shape


# -- results checked on the device, copied to the host when read -----------------------------------
def test_canonical_is_read_from_the_device_on_first_use():
    out = salplug.explain(make_cnn(seed=1), _x(), "ig", target=1, steps=4, backend_options=ON)
    assert callable(out.__dict__["_canonical"])  # nothing copied to the host yet
    want = salplug.explain(make_cnn(seed=1), _x(), "ig", target=1, steps=4)
    np.testing.assert_allclose(out.canonical, want.canonical, rtol=1e-5, atol=1e-8)
    assert isinstance(out.__dict__["_canonical"], np.ndarray) and out.canonical.dtype == np.float32
    assert "canonical=array(" in repr(salplug.explain(make_cnn(seed=1), _x(), "ig", target=1, steps=4,
                                                      backend_options=ON))


class _Dense(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(x)


def test_writing_into_values_before_reading_canonical_changes_nothing():
    x = torch.rand(3, 6, generator=torch.Generator().manual_seed(1))  # layout N...: no permutation
    out = salplug.explain(_Dense(), x, "gradients", target=1, backend_options=ON)
    out.values.add_(100.0)
    want = salplug.explain(_Dense(), x, "gradients", target=1)
    np.testing.assert_array_equal(out.canonical, want.canonical)


def test_non_finite_results_are_caught_on_the_device():
    class NaNGradients(torch.nn.Module):
        def forward(self, x):
            return (x.flatten(1) * 0).sqrt()[:, :4]  # d sqrt(0) = inf

    with pytest.raises(ModelOutputError, match="returned NaN or infinite values"):
        salplug.explain(NaNGradients(), torch.rand(2, 3, 4, 4), "gradients", target=0, backend_options=ON)


# -- the model is frozen and in eval mode for the whole call ---------------------------------------
def test_parameters_stay_frozen_and_modules_in_eval_for_the_call_and_come_back():
    model = make_cnn(seed=1).train()
    states = []

    def target(out):
        states.append((model.training, model.conv1.weight.requires_grad))
        return out[:, 1]

    salplug.explain(model, _x(4), "ig", target=target, steps=3, batch_size=2, backend_options=ON)
    assert len(states) == 6 and set(states) == {(False, False)}
    assert model.training and model.conv1.training and model.conv1.weight.requires_grad


def test_an_error_in_a_later_batch_puts_the_model_back():
    model = make_cnn(seed=1).train()
    model.fc.bias.requires_grad_(False)  # the user's own choice: kept

    def target(out, calls=[]):  # noqa: B006 - counts calls
        calls.append(1)
        if len(calls) == 3:
            raise TargetError("third batch fails")
        return out[:, 1]

    with pytest.raises(TargetError, match="third batch fails"):
        salplug.explain(model, _x(4), "ig", target=target, steps=3, batch_size=2, backend_options=ON)
    assert all(m.training for m in model.modules())
    assert model.conv1.weight.requires_grad and not model.fc.bias.requires_grad
    assert model.conv1.weight.grad is None


# -- one target for every row: a column of the output ----------------------------------------------
def test_one_class_for_all_rows_and_one_per_row_agree():
    model = make_cnn(seed=1)
    x = _x(3)
    same = salplug.explain(model, x, "gradients", target=4, backend_options=ON).canonical
    listed = salplug.explain(model, x, "gradients", target=[4, 4, 4], backend_options=ON).canonical
    mixed = salplug.explain(model, x, "gradients", target=[4, 1, 4], backend_options=ON).canonical
    np.testing.assert_array_equal(same, listed)
    np.testing.assert_array_equal(mixed[[0, 2]], same[[0, 2]])
    one = salplug.explain(model, x[1:2], "gradients", target=1, backend_options=ON).canonical
    np.testing.assert_allclose(mixed[1:2], one, rtol=1e-6, atol=1e-9)


# -- evaluate() runs each method and metric as one call of the backend --------------------------
def test_evaluate_walks_the_model_once_per_method_and_metric_not_per_batch(monkeypatch):
    walks = []
    inner = TorchAdapter._walk
    monkeypatch.setattr(TorchAdapter, "_walk", lambda self: walks.append(1) or inner(self))
    model = make_cnn(seed=1).train()
    images = np.random.default_rng(0).random((4, 16, 16, 3), dtype=np.float32)
    salplug.evaluate(model, images, methods=["gradients"], metrics=["deletion"], batch_size=2,
                     include_random=False, progress=False)
    # deletion scores many perturbed batches: per batch this was 208 walks; now one per method run
    # and metric evaluation, plus the top-1 pass outside them
    assert 2 <= len(walks) <= 4, len(walks)
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_a_copied_adapter_has_calls_of_its_own():
    import copy

    adapter = TorchAdapter(make_cnn(seed=1).train())
    twin = copy.copy(adapter)
    twin.model = make_cnn(seed=2).train()
    with adapter.call_scope():
        assert not adapter.model.training and adapter._listed is not None
        assert twin._listed is None  # its own calls freeze and evaluate its own model
        twin.input_gradients(np.zeros((1, 8, 8, 3), np.float32), salplug.types.Targets(np.array([1])))
        assert twin.model.training  # put back after its call, while the first scope still holds
    assert adapter.model.training


class _Pooled(torch.nn.Module):
    """One output row for the whole batch: not one row of class scores per input."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(x).mean(0, keepdim=True)


@pytest.mark.parametrize("target", [2, [2, 2, 2], [2, 1, 2]])
@pytest.mark.parametrize("device_arrays", [True, False])
def test_a_model_returning_the_wrong_number_of_rows_is_a_target_error(target, device_arrays):
    with pytest.raises(TargetError, match=r"returned 1 rows \(output shape \(1, 4\)\) for 3 inputs"):
        salplug.explain(_Pooled(), torch.rand(3, 6), "gradients", target=target,
                        backend_options={"device_arrays": device_arrays})


def test_threads_sharing_a_model_never_see_it_put_back_mid_call():
    import threading
    import time

    seen: dict[str, list] = {}

    class Slow(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv, self.bn = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4)
            self.fc = torch.nn.Linear(4 * 8 * 8, 5)

        def forward(self, x):
            seen.setdefault(threading.current_thread().name, []).append(
                (self.bn.training, self.fc.weight.requires_grad))
            time.sleep(0.001)
            return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))

    model = Slow().train()
    ex = salplug.Explainer(model, batch_size=4)

    def run(delay, steps):
        time.sleep(delay)
        ex.explain(torch.rand(2, 3, 8, 8), "integrated_gradients", target=1, steps=steps)

    threads = [threading.Thread(target=run, name=name, args=args)
               for name, args in (("A", (0, 40)), ("B", (0.01, 120)), ("C", (0.02, 20)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == ["A", "B", "C"]
    assert all(state == (False, False) for states in seen.values() for state in states)
    assert model.training and model.bn.training and all(p.requires_grad for p in model.parameters())


class _OnlyTheBasics:
    """A device adapter with only the members every device adapter must have (docs/plugins.md):
    no zeros / astype / dtype_kind / all_finite."""

    OPTIONAL = {"zeros", "astype", "dtype_kind", "all_finite"}

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        if name in self.OPTIONAL:
            raise AttributeError(name)
        return getattr(self._inner, name)


@pytest.mark.parametrize("method,params", [("gradients", {}), ("integrated_gradients", {"steps": 3}),
                                           ("smoothgrad", {"nsamples": 2, "noise": "host", "seed": 0,
                                                           "mode": "vargrad"}),
                                           ("grad_cam", {"layer": "conv2"})])
@pytest.mark.parametrize("inputs", ["tensor", "numpy"])
def test_a_device_adapter_without_the_optional_helpers_still_works(method, params, inputs):
    x = _x()
    xi = x if inputs == "tensor" else x.permute(0, 2, 3, 1).numpy().copy()
    ex = salplug.Explainer(make_cnn(seed=1), device_arrays=True)
    ex.adapter = _OnlyTheBasics(ex.adapter)
    got = ex.explain(xi, method, target=1, **params)
    want = salplug.explain(make_cnn(seed=1), xi, method, target=1, **params)
    scale = float(np.abs(want.canonical).max())
    np.testing.assert_allclose(got.canonical, want.canonical, rtol=1e-5, atol=1e-6 * scale)
    assert type(got.values) is type(want.values)


class _TutorialNet(torch.nn.Module):
    """PyTorch's tutorial CNN: it flattens with ``x.view(-1, 16 * 5 * 5)``, which refuses
    channels-last memory."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2 = torch.nn.Conv2d(3, 6, 5), torch.nn.Conv2d(6, 16, 5)
        self.pool = torch.nn.MaxPool2d(2, 2)
        self.fc = torch.nn.Linear(16 * 5 * 5, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc(x.view(-1, 16 * 5 * 5))


@pytest.mark.parametrize("method,params", [("gradients", {}), ("integrated_gradients", {"steps": 4}),
                                           ("grad_cam", {"layer": "conv2"}), ("guided_backprop", {}),
                                           ("occlusion", {"size": 8, "stride": 8})])
@pytest.mark.parametrize("target", [1, None])
@pytest.mark.parametrize("device_arrays", [False, True])
def test_a_model_that_flattens_with_view_gets_plain_nchw(method, params, target, device_arrays):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ex = salplug.Explainer(_TutorialNet(), device_arrays=device_arrays)
    got = ex.explain(x, method, target=target, **params)
    assert ex.adapter.memory_format == torch.contiguous_format  # learned once, kept
    want = salplug.explain(_TutorialNet(), x, method, target=target, backend_options={"memory_format": "contiguous"},
                           **params)
    np.testing.assert_allclose(got.canonical, want.canonical, rtol=1e-5, atol=1e-7)


def test_an_explicit_channels_last_is_kept_even_when_the_model_refuses_it():
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        salplug.explain(_TutorialNet(), torch.rand(1, 3, 32, 32), "gradients", target=1,
                        backend_options={"memory_format": "channels_last"})


def test_the_refusal_is_learned_once_per_model_and_changes_nothing_in_eval_mode():
    """One refused pass per model (also across salplug.explain() calls, each a new adapter); in
    eval mode (the default) it changes no BatchNorm statistics."""

    class WithNorm(_TutorialNet):
        def __init__(self):
            super().__init__()
            self.bn = torch.nn.BatchNorm2d(6)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            x = self.pool(torch.relu(self.bn(self.conv1(x))))
            x = self.pool(torch.relu(self.conv2(x)))
            return self.fc(x.view(-1, 16 * 5 * 5))

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    auto, plain = WithNorm().train(), WithNorm().train()
    for _ in range(3):
        a = salplug.explain(auto, x, "gradients", target=1)
        p = salplug.explain(plain, x, "gradients", target=1, backend_options={"memory_format": "contiguous"})
        np.testing.assert_allclose(a.canonical, p.canonical, rtol=1e-6)
    assert auto.calls == plain.calls + 1  # one refused pass, then plain NCHW for every call
    torch.testing.assert_close(auto.bn.running_mean, plain.bn.running_mean)
    assert int(auto.bn.num_batches_tracked) == int(plain.bn.num_batches_tracked) == 0


def test_a_view_error_that_is_not_about_the_layout_keeps_channels_last():
    class Broken(_TutorialNet):
        def forward(self, x):
            return super().forward(x).view(-1, 7)  # wrong in any layout

    ex = salplug.Explainer(Broken())
    with pytest.raises(RuntimeError):
        ex.explain(torch.rand(2, 3, 32, 32), "gradients", target=1)
    assert ex.adapter.memory_format == torch.channels_last


def test_threads_sharing_an_explainer_over_a_view_model_all_succeed():
    import threading

    ex = salplug.Explainer(_TutorialNet())
    barrier, errors = threading.Barrier(4), []

    def run():
        barrier.wait()
        try:
            ex.explain(torch.rand(2, 3, 32, 32), "gradients", target=1)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_an_eval_mode_call_is_in_eval_even_while_a_train_mode_call_holds_the_model():
    import threading

    model = make_cnn(seed=1)
    model.drop = torch.nn.Dropout(0.5)
    model.forward = lambda x, m=model: m.fc(m.drop(m.gap(m.relu2(m.conv2(m.pool(m.relu1(m.conv1(x)))))).flatten(1)))
    model.train()
    inside, release = threading.Event(), threading.Event()
    modes = []

    def slow_target(out):  # holds the train-mode call open
        inside.set()
        release.wait(5)
        return out[:, 1]

    t = threading.Thread(target=lambda: salplug.explain(model, _x(), "gradients", target=slow_target,
                                                        backend_options={"eval_mode": False}))
    t.start()
    inside.wait(5)
    hook = model.drop.register_forward_pre_hook(lambda m, _a: modes.append(m.training))
    got = salplug.explain(model, _x(), "gradients", target=1).canonical
    hook.remove()
    release.set()
    t.join()
    assert modes == [False]
    want = salplug.explain(model.eval(), _x(), "gradients", target=1).canonical
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_a_callable_model_that_cannot_be_weakly_referenced():
    class Slotted:  # a plain callable without __weakref__
        __slots__ = ("w",)

        def __init__(self):
            self.w = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))

        def __call__(self, x):
            return x.reshape(len(x), -1) @ self.w

    x = torch.rand(2, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    out = salplug.explain(Slotted(), x, "gradients", target=1, backend="torch")
    want = Slotted().w[:, 1].reshape(3, 2, 2)
    torch.testing.assert_close(out.values, want.expand(2, 3, 2, 2))
