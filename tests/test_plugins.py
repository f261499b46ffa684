"""Plugin manager: built-ins, entry points, isolation, blocking, strict mode, check_pending."""

from __future__ import annotations

import sys
import textwrap

import pytest

import salplug
from salplug.errors import PluginError, PluginLoadWarning, UnknownComponentError


def make_distribution(tmp_path, monkeypatch, dist: str, version: str, module: str, source: str,
                      entry_name: str | None = None):
    """Put a real (unpacked) distribution with a `salplug` entry point on sys.path."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    info = tmp_path / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[salplug]\n{entry_name or module} = {module}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(module, None)


GOOD = """
    import numpy as np
    import salplug

    class Doubled(salplug.Method):
        requires = frozenset({salplug.INPUT_GRADIENTS})
        def explain(self, ctx, x, targets):
            return 2 * ctx.adapter.input_gradients(x, targets)

    @salplug.hookimpl
    def register_methods(register):
        register("doubled", Doubled, requires=Doubled.requires, description="2x gradients")
"""


def test_builtins_register_under_module_names(host):
    assert "salplug.builtin_methods.gradients" in host.plugins
    assert {"gradients", "integrated_gradients", "smoothgrad"} <= set(host.methods.names())
    assert {"torch", "callable"} <= set(host.backends.names())
    assert {"grayscale", "diverging", "heatmap"} <= set(host.visualizers.names())
    comp = host.methods.get("ig")
    assert comp.name == "integrated_gradients" and comp.distribution == "salplug"


def test_factory_returns_fresh_managers():
    a = salplug.get_plugin_manager(autoload=False)
    b = salplug.get_plugin_manager(autoload=False)
    assert a is not b and a.pm is not b.pm and a.methods is not b.methods


def test_entry_point_plugin_loads_with_distribution(tmp_path, monkeypatch):
    make_distribution(tmp_path, monkeypatch, "salplug-doubled", "1.2.3", "sp_doubled", GOOD)
    host = salplug.get_plugin_manager(autoload=True)
    comp = host.methods.get("doubled")
    assert comp.distribution == "salplug-doubled" and comp.version == "1.2.3"
    assert host.plugins["sp_doubled"].hooks == ["register_methods"]


def test_entry_point_method_runs_through_explain(tmp_path, monkeypatch):
    import numpy as np
    from conftest import linear_call_model_function

    make_distribution(tmp_path, monkeypatch, "salplug-doubled", "1.0", "sp_doubled2", GOOD)
    host = salplug.get_plugin_manager(autoload=True)
    w = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    out = salplug.explain(linear_call_model_function(w), w, "doubled", backend="callable", host=host)
    np.testing.assert_allclose(out.values, 2 * w)


def test_plugin_that_fails_to_import_is_a_warning_naming_it(tmp_path, monkeypatch):
    make_distribution(tmp_path, monkeypatch, "salplug-broken", "0.1", "sp_broken", "raise RuntimeError('boom')\n")
    with pytest.warns(PluginLoadWarning, match=r"salplug-broken 0\.1.*boom"):
        host = salplug.get_plugin_manager(autoload=True)
    assert "gradients" in host.methods
    assert "boom" in host.load_errors["sp_broken"]


def test_plugin_whose_hook_raises_is_rolled_back(tmp_path, monkeypatch):
    source = """
        import salplug
        @salplug.hookimpl
        def register_methods(register):
            register("half_registered", salplug.Method)
            raise ValueError("hook exploded")
    """
    make_distribution(tmp_path, monkeypatch, "salplug-raising", "2.0", "sp_raising", source)
    with pytest.warns(PluginLoadWarning, match="salplug-raising 2.0.*hook exploded"):
        host = salplug.get_plugin_manager(autoload=True)
    assert "half_registered" not in host.methods
    assert host.pm.get_plugin("sp_raising") is None


def test_strict_mode_turns_a_broken_plugin_into_an_error(tmp_path, monkeypatch):
    make_distribution(tmp_path, monkeypatch, "salplug-broken", "0.1", "sp_broken2", "import nonexistent_mod\n")
    monkeypatch.setenv("SALPLUG_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="salplug-broken"):
        salplug.get_plugin_manager(autoload=True)


def test_misspelled_hook_is_rejected(tmp_path, monkeypatch):
    source = """
        import salplug
        @salplug.hookimpl
        def register_method(register):  # missing "s"
            pass
    """
    make_distribution(tmp_path, monkeypatch, "salplug-typo", "1.0", "sp_typo", source)
    with pytest.warns(PluginLoadWarning, match="register_method"):
        host = salplug.get_plugin_manager(autoload=True)
    assert host.pm.get_plugin("sp_typo") is None
    with pytest.raises(PluginError, match="register_method"):
        salplug.get_plugin_manager(autoload=True, strict=True)


def test_disable_autoload_and_block(tmp_path, monkeypatch):
    make_distribution(tmp_path, monkeypatch, "salplug-doubled", "1.0", "sp_doubled3", GOOD)
    monkeypatch.setenv("SALPLUG_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "doubled" not in salplug.get_plugin_manager().methods
    monkeypatch.delenv("SALPLUG_DISABLE_PLUGIN_AUTOLOAD")
    assert "doubled" in salplug.get_plugin_manager().methods
    monkeypatch.setenv("SALPLUG_BLOCK_PLUGINS", "sp_doubled3, salplug.builtin_methods.smoothgrad")
    host = salplug.get_plugin_manager()
    assert "doubled" not in host.methods and "smoothgrad" not in host.methods
    assert "gradients" in host.methods


def test_duplicate_names_error_naming_both_plugins(host):
    class P1:
        @salplug.hookimpl
        def register_methods(self, register):
            register("gradients", salplug.Method)

    host.strict = True
    with pytest.raises(PluginError, match=r"registered twice.*salplug.*'p1'"):
        host.add_plugin(P1(), "p1")
    host.strict = False
    with pytest.warns(PluginLoadWarning, match="registered twice"):
        assert host.add_plugin(P1(), "p1b") is False
    assert host.methods.get("gradients").plugin == "salplug.builtin_methods.gradients"


def test_override_replaces_a_builtin(host):
    class Better:
        @salplug.hookimpl
        def register_methods(self, register):
            register("integrated_gradients", "math:sqrt", aliases=("ig",), override=True)

    host.add_plugin(Better(), "better")
    comp = host.methods.get("ig")
    assert comp.plugin == "better" and comp.load() is __import__("math").sqrt


def test_unknown_name_lists_available_and_closest(host):
    with pytest.raises(UnknownComponentError) as info:
        host.methods.get("integrated_gradient")
    text = str(info.value)
    assert "Did you mean 'integrated_gradients'" in text
    assert "Available methods: " in text and "smoothgrad" in text and "may not be installed" in text


def test_lazy_target_is_not_imported_until_used(host):
    class Lazy:
        @salplug.hookimpl
        def register_visualizers(self, register):
            register("lazy_vis", "sp_never_imported_module:render")

    host.add_plugin(Lazy(), "lazy")
    comp = host.visualizers.get("lazy_vis")
    assert comp.is_lazy and "sp_never_imported_module" not in sys.modules
    with pytest.raises(PluginError, match="could not be imported"):
        comp.load()


def test_register_rejects_unknown_keywords(host):
    class Bad:
        @salplug.hookimpl
        def register_methods(self, register):
            register("x", salplug.Method, provides=("scores",))

    with pytest.warns(PluginLoadWarning, match="unknown keyword"):
        assert host.add_plugin(Bad(), "bad") is False
    assert "x" not in host.methods


def test_detect_backend_plugin_can_claim_first(host):
    def mine(x_value_batch, call_model_args=None, expected_keys=None):
        return {}

    def other(x_value_batch, call_model_args=None, expected_keys=None):
        return {}

    mine.is_mine = True
    assert host.detect_backend(mine) == "callable"  # the built-in detector claims it ...

    class Claim:
        @salplug.hookimpl
        def detect_backend(self, model):
            return "my_backend" if getattr(model, "is_mine", False) else None

    host.add_plugin(Claim(), "claim")
    assert host.detect_backend(mine) == "my_backend"  # ... but the plugin answers first
    assert host.detect_backend(other) == "callable"  # the built-in still answers for the rest
    assert host.detect_backend(object()) is None
