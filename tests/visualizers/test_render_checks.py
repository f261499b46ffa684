"""render() checks what a visualizer returns and names the visualizer when it is wrong."""

from __future__ import annotations

import numpy as np
import pytest

import salplug
from salplug.errors import ModelOutputError, SalplugError
from salplug.visualizers import render

BAD = [
    ("a_string", lambda v, image=None: "garbage", "returned str"),
    ("four_d", lambda v, image=None: np.zeros((2, 4, 4, 3)), r"shape \(2, 4, 4, 3\)"),
    ("two_channels", lambda v, image=None: np.zeros((4, 4, 2)), r"shape \(4, 4, 2\)"),
    ("too_big", lambda v, image=None: np.full(v.shape[:2], 1000.0), r"values in \[1000, 1000\]"),
    ("negative", lambda v, image=None: np.full(v.shape[:2], -0.5), r"values in \[-0.5, -0.5\]"),
    ("nan", lambda v, image=None: np.full(v.shape[:2], np.nan), "NaN or infinite"),
    ("int64", lambda v, image=None: np.ones(v.shape[:2], np.int64), "ndarray of int64"),
]


def _host(visualizers):
    class Plugin:
        @salplug.hookimpl
        def register_visualizers(self, register):
            for name, fn in visualizers.items():
                register(name, fn)

    return salplug.get_plugin_manager(autoload=False, plugins={"vis": Plugin()})


@pytest.mark.parametrize("name,fn,match", BAD, ids=[b[0] for b in BAD])
def test_bad_visualizer_output_is_a_model_output_error_naming_it(name, fn, match, tmp_path):
    host = _host({name: fn})
    with pytest.raises(ModelOutputError, match=f"^Visualizer '{name}' \\(from vis\\).*{match}"):
        render(name, np.ones((4, 4, 3)), host=host)
    att = salplug.Attribution(np.ones((1, 4, 4, 3)), np.ones((1, 4, 4, 3), np.float32), "m", {}, None, "b",
                              host=host)
    with pytest.raises(ModelOutputError, match=f"Visualizer '{name}'"):
        att.save(str(tmp_path / "out.png"), kind=name)
    assert not (tmp_path / "out.png").exists()


def test_a_lazy_target_that_is_not_callable_is_named():
    with pytest.raises(SalplugError, match="Visualizer 'pi' \\(from vis\\) is a float, not a callable"):
        render("pi", np.ones((4, 4, 3)), host=_host({"pi": "math:pi"}))


def test_good_visualizer_outputs_pass_and_uint8_reads_as_0_to_255():
    host = _host({
        "flat": lambda v, image=None: np.full(v.shape[:2], 0.25, np.float32),
        "rgba": lambda v, image=None: np.ones((*v.shape[:2], 4)),
        "bytes": lambda v, image=None: np.full((*v.shape[:2], 3), 51, np.uint8),
    })
    values = np.ones((4, 5, 3))
    np.testing.assert_array_equal(render("flat", values, host=host), np.full((4, 5), 0.25))
    assert render("rgba", values, host=host).shape == (4, 5, 4)
    np.testing.assert_allclose(render("bytes", values, host=host), np.full((4, 5, 3), 0.2))
