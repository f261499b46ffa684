"""A broken third-party plugin never takes the host down, never removes a built-in, and is named."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import counting, linear_call_model_function
from test_plugins import make_distribution

import salplug
from salplug.errors import PluginError, PluginLoadWarning

IG_PLUGIN = "salplug.builtin_methods.integrated_gradients"
GRAD_PLUGIN = "salplug.builtin_methods.gradients"


class Zero(salplug.Method):
    def explain(self, ctx, x, targets):
        return np.zeros_like(x)


def _plugin(hook: str, body):
    """A plugin object whose ``hook`` calls ``body(register)``."""

    class P:
        pass

    def impl(self, register):
        body(register)

    impl.__name__ = hook
    setattr(P, hook, salplug.hookimpl(impl))
    return P()


def _add(host, name, hook, body):
    """add_plugin, returning (loaded?, warning messages)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ok = host.add_plugin(_plugin(hook, body), name)
    return ok, [str(w.message) for w in caught if issubclass(w.category, PluginLoadWarning)]


# -- bug 5: rollback restores what an override replaced -----------------------------------------

def test_failed_plugin_that_overrode_builtins_gets_them_back(host):
    def body(register):
        register("gradients", Zero, override=True)
        register("integrated_gradients", Zero, override=True)
        raise RuntimeError("boom after override")

    ok, messages = _add(host, "bad_override", "register_methods", body)
    assert not ok and any("boom after override" in m for m in messages)
    assert host.methods.get("gradients").plugin == GRAD_PLUGIN
    assert host.methods.get("integrated_gradients").plugin == IG_PLUGIN
    assert host.methods.get("ig").plugin == IG_PLUGIN
    assert "ig" in host.methods.get("integrated_gradients").aliases


def test_failed_plugin_that_took_an_alias_gives_it_back(host):
    def body(register):
        register("my_ig", Zero, aliases=("ig",), override=True)
        raise RuntimeError("late failure")

    before = host.methods.get("integrated_gradients").aliases
    assert "ig" in before
    _add(host, "bad_alias", "register_methods", body)
    assert "my_ig" not in host.methods
    assert host.methods.get("ig").plugin == IG_PLUGIN
    assert host.methods.get("integrated_gradients").aliases == before


# -- bug 6: a plugin name that is taken ----------------------------------------------------------

def _named_dist(tmp_path, monkeypatch, sub, dist, module, entry_name, body):
    folder = tmp_path / sub
    folder.mkdir()
    source = f"""
        import salplug
        @salplug.hookimpl
        def {body}
    """
    make_distribution(folder, monkeypatch, dist, "0.1", module, source, entry_name=entry_name)


def test_entry_point_named_like_a_builtin_is_refused(tmp_path, monkeypatch):
    _named_dist(tmp_path, monkeypatch, "c", "salplug-clash", "sp_clash_c", "salplug.backends",
                "register_visualizers(register):\n            register('vis_c', lambda v, image=None: v)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        host = salplug.get_plugin_manager(autoload=True)
    messages = [str(w.message) for w in caught if issubclass(w.category, PluginLoadWarning)]
    assert len(messages) == 1 and len(messages[0]) < 600
    assert "salplug-clash" in messages[0] and "built into salplug" in messages[0]
    assert {"torch", "callable"} <= set(host.backends.names())
    assert "vis_c" not in host.visualizers
    holder = host.plugins["salplug.backends"]
    assert holder.builtin and holder.error is None and holder.distribution == "salplug"
    refused = [i for i in host.plugins.values() if i.distribution == "salplug-clash"]
    assert len(refused) == 1 and "already has the name" in refused[0].error
    w = np.ones((2, 2, 3), np.float32)
    assert salplug.explain(linear_call_model_function(w), w, host=host).values.shape == w.shape


def test_two_distributions_with_one_entry_point_name(tmp_path, monkeypatch):
    _named_dist(tmp_path, monkeypatch, "a", "salplug-aaa", "sp_shared_a", "sp_shared",
                "register_methods(register):\n            register('method_a', 'x:Y', requires=('scores',))")
    _named_dist(tmp_path, monkeypatch, "b", "salplug-bbb", "sp_shared_b", "sp_shared",
                "register_methods(register):\n            register('method_b', 'x:Y', requires=('scores',))")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        host = salplug.get_plugin_manager(autoload=True)
    messages = [str(w.message) for w in caught if issubclass(w.category, PluginLoadWarning)]
    assert len(messages) == 1 and "salplug-aaa" in messages[0] and "salplug-bbb" in messages[0]
    assert "SALPLUG_BLOCK_PLUGINS" not in messages[0]  # blocking the name would block both
    loaded = [m for m in ("method_a", "method_b") if m in host.methods]
    assert len(loaded) == 1
    winner = host.methods.get(loaded[0]).distribution
    assert host.plugins["sp_shared"].distribution == winner and host.plugins["sp_shared"].error is None
    loser = "salplug-bbb" if winner == "salplug-aaa" else "salplug-aaa"
    assert any(i.distribution == loser and i.error for i in host.plugins.values())


def test_add_plugin_under_a_taken_name_leaves_the_holder_alone(host):
    ok, messages = _add(host, GRAD_PLUGIN, "register_methods", lambda r: r("other", Zero))
    assert not ok and len(messages) == 1 and len(messages[0]) < 600
    assert host.methods.get("gradients").plugin == GRAD_PLUGIN
    assert host.pm.get_plugin(GRAD_PLUGIN) is not None and host.plugins[GRAD_PLUGIN].error is None
    assert "other" not in host.methods


def test_same_module_under_a_second_name_is_refused(host):
    import salplug.backends as builtin_backends

    with pytest.warns(PluginLoadWarning, match="same object") as record:
        assert host.add_plugin(builtin_backends, "second_name") is False
    assert len(str(record[0].message)) < 600
    assert host.plugins["salplug.backends"].error is None and "torch" in host.backends


# -- bug 7: a detect_backend hook that raises -----------------------------------------------------

class _RaisingDetector:
    @salplug.hookimpl
    def detect_backend(self, model):
        return model.attribute_only_my_models_have


def test_raising_detector_is_skipped_with_one_warning_naming_it(host):
    host.add_plugin(_RaisingDetector(), "raising_detector")
    w = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    model = linear_call_model_function(w)
    with pytest.warns(PluginLoadWarning, match=r"'raising_detector'.*detect_backend.*AttributeError"):
        out = salplug.explain(model, w, "gradients", host=host)
    np.testing.assert_allclose(out.values, w)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert host.detect_backend(model) == "callable"  # warned once per plugin


def test_raising_detector_is_an_error_in_strict_mode(host):
    host.add_plugin(_RaisingDetector(), "raising_detector")
    host.strict = True
    with pytest.raises(PluginError, match="raising_detector"):
        host.detect_backend(linear_call_model_function(np.ones((2, 2, 3))))


# -- bug 8: override semantics for names and aliases ----------------------------------------------

def test_override_of_an_alias_repoints_only_the_alias(host):
    _add(host, "fancy", "register_methods", lambda r: r("my_fancy_ig", Zero, aliases=("ig",), override=True))
    assert host.methods.get("ig").name == "my_fancy_ig"
    ig = host.methods.get("integrated_gradients")
    assert ig.plugin == IG_PLUGIN and "ig" not in ig.aliases
    w = np.ones((8, 8, 3), np.float32)
    out = salplug.explain(linear_call_model_function(w), w, "xrai", host=host, steps=2)
    assert out.values.shape[:2] == (8, 8)


def test_override_by_name_keeps_the_old_aliases(host):
    before = host.methods.get("integrated_gradients").aliases
    assert "ig" in before
    _add(host, "better", "register_methods", lambda r: r("integrated_gradients", Zero, override=True))
    comp = host.methods.get("ig")
    assert comp.plugin == "better" and comp.aliases == before
    assert all(host.methods.get(alias) is comp for alias in before)


def test_alias_that_is_another_components_name_is_refused(host):
    ok, messages = _add(host, "greedy", "register_methods",
                        lambda r: r("mine", Zero, aliases=("gradients",), override=True))
    assert not ok and "is the name of the method 'gradients'" in messages[0]
    assert host.methods.get("gradients").plugin == GRAD_PLUGIN and "mine" not in host.methods


# -- bug 10: sys.exit() in a plugin ---------------------------------------------------------------

def test_plugin_calling_sys_exit_at_import_is_a_load_error(tmp_path, monkeypatch):
    make_distribution(tmp_path, monkeypatch, "salplug-exits", "0.1", "sp_exits",
                      "import sys\nsys.exit('missing licence file')\n")
    with pytest.warns(PluginLoadWarning, match=r"salplug-exits 0\.1.*sys\.exit\('missing licence file'\)"):
        host = salplug.get_plugin_manager(autoload=True)
    assert "sys.exit" in host.load_errors["sp_exits"] and "gradients" in host.methods


def test_plugin_calling_sys_exit_in_a_hook_is_rolled_back(host):
    def body(register):
        register("before_exit", Zero)
        raise SystemExit(3)

    ok, messages = _add(host, "exiting", "register_methods", body)
    assert not ok and "sys.exit(3)" in messages[0] and "before_exit" not in host.methods


def test_keyboard_interrupt_in_a_plugin_still_interrupts(tmp_path, monkeypatch):
    make_distribution(tmp_path, monkeypatch, "salplug-ctrlc", "0.1", "sp_ctrlc", "raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        salplug.get_plugin_manager(autoload=True)


# -- bug 11: a str where a tuple is expected ------------------------------------------------------

def test_single_string_aliases_and_requires_are_one_item(host):
    _add(host, "strings", "register_methods",
         lambda r: r("my_method", Zero, requires="input_gradients", aliases="mine"))
    comp = host.methods.get("my_method")
    assert comp.aliases == ("mine",) and comp.metadata["requires"] == frozenset({"input_gradients"})
    assert host.methods.get("mine") is comp and "m" not in host.methods


def test_non_string_aliases_are_an_error_naming_the_plugin(host):
    ok, messages = _add(host, "numbers", "register_methods", lambda r: r("my_method", Zero, aliases=3))
    assert not ok and "numbers" in messages[0] and "aliases=" in messages[0]


# -- bug 13: targets salplug could never use ------------------------------------------------------

class _NeedsArg(salplug.Method):
    def __init__(self, cfg):
        self.cfg = cfg

    def explain(self, ctx, x, targets):
        return x


def _plain_metric(ctx, x, targets, attributions):
    return None


@pytest.mark.parametrize("kind_hook, target, expected", [
    ("register_methods", 42, "explain()"),
    ("register_methods", _NeedsArg, "without arguments"),
    ("register_metrics", _plain_metric, "evaluate()"),
    ("register_visualizers", 3, "callable"),
])
def test_unusable_targets_are_refused_at_registration(host, kind_hook, target, expected):
    ok, messages = _add(host, "odd_plugin", kind_hook, lambda r: r("odd", target))
    assert not ok and len(messages) == 1
    assert "odd_plugin" in messages[0] and "'odd'" in messages[0] and expected in messages[0]


@pytest.mark.parametrize("target, expected", [
    ("collections:UserString", "without arguments"),
    ("collections:OrderedDict", "explain()"),
])
def test_unusable_lazy_targets_fail_before_any_model_call(host, target, expected):
    _add(host, "lazy_plugin", "register_methods", lambda r: r("lazy_odd", target))
    w = np.ones((2, 2, 3), np.float32)
    model, calls = counting(linear_call_model_function(w))
    with pytest.raises(PluginError, match=rf"'lazy_odd' \(from lazy_plugin\).*{expected}"):
        salplug.explain(model, w, "lazy_odd", backend="callable", host=host)
    assert calls == []


# -- bug 12: the list and plugins commands in strict mode -----------------------------------------

@pytest.mark.parametrize("command", ["list", "plugins"])
def test_strict_cli_listing_prints_one_error_line(tmp_path, monkeypatch, command):
    from salplug.cli import main

    make_distribution(tmp_path, monkeypatch, "salplug-broken", "0.1", "sp_broken_cli", "import not_there_mod\n")
    monkeypatch.delenv("SALPLUG_DISABLE_PLUGIN_AUTOLOAD")
    monkeypatch.setenv("SALPLUG_STRICT_PLUGINS", "1")
    result = CliRunner().invoke(main, [command])
    assert result.exit_code == 2, result.output
    assert "error: " in result.output and "salplug-broken" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


# -- the Python API: a plugin's check(), adapter constructor and detector ---------------------------

class _CheckRaises(salplug.Method):
    requires = frozenset({"input_gradients"})

    def check(self, ctx, x, targets):
        raise KeyError("a bug in the plugin's check")

    def explain(self, ctx, x, targets):
        return np.zeros(x.shape, np.float32)


class _AdapterRaises:
    def __init__(self, model):
        raise ZeroDivisionError("a bug in the plugin's adapter")


class _BrokenPieces:
    @salplug.hookimpl
    def register_methods(self, register):
        register("check_raises", _CheckRaises, requires=("input_gradients",))

    @salplug.hookimpl
    def register_backends(self, register):
        register("adapter_raises", _AdapterRaises, provides=("scores", "input_gradients"))


class _NonsenseDetector:
    @salplug.hookimpl(tryfirst=True)
    def detect_backend(self, model):
        return "no_such_backend"


def test_explain_reports_a_plugins_failing_check_and_adapter_as_plugin_errors(host):
    host.add_plugin(_BrokenPieces(), "broken_pieces")
    w = np.ones((2, 2, 3), np.float32)
    model, calls = counting(linear_call_model_function(w))
    with pytest.raises(PluginError, match=r"'check_raises'.*check\(\).*KeyError"):
        salplug.explain(model, w, "check_raises", backend="callable", host=host)
    with pytest.raises(PluginError, match=r"'adapter_raises'.*ZeroDivisionError"):
        salplug.explain(model, w, "gradients", backend="adapter_raises", host=host)
    assert calls == []


def test_explain_skips_a_detector_naming_an_unknown_backend(host):
    host.add_plugin(_NonsenseDetector(), "nonsense_detector")
    w = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    with pytest.warns(PluginLoadWarning, match=r"'nonsense_detector'.*no_such_backend"):
        out = salplug.explain(linear_call_model_function(w), w, "gradients", host=host)
    np.testing.assert_allclose(out.values, w)


class _SaysUnavailable(salplug.Method):
    def __init__(self):
        raise salplug.errors.BackendUnavailableError("needs the optional package foo: pip install foo")

    def explain(self, ctx, x, targets):
        raise AssertionError("never made")


class _UnavailablePlugin:
    @salplug.hookimpl
    def register_methods(self, register):
        register("says_unavailable", _SaysUnavailable)


def test_a_salplug_error_a_plugin_raises_when_created_passes_as_it_is(host):
    host.add_plugin(_UnavailablePlugin(), "unavailable")
    w = np.ones((2, 2, 3), np.float32)
    with pytest.raises(salplug.errors.BackendUnavailableError, match="pip install foo"):
        salplug.explain(linear_call_model_function(w), w, "says_unavailable", backend="callable", host=host)
