"""How the runner reads photos (EXIF orientation, float TIFFs, huge files), finds them (globs
under odd folder names) and names their output folders (never a name the run writes itself)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from salplug.config import ConfigError, load_config
from salplug.runner import resolve_inputs


def _inputs(*files, globs=(), base=None):
    data = {"inputs": {"files": [str(f) for f in files], "globs": list(globs)},
            "explanations": [{"method": "gradients"}]}
    if base is None:
        return resolve_inputs(load_config(data=data, env={}))
    path = base / "run.toml"
    path.write_text(f"[inputs]\nglobs = {json.dumps(list(globs))}\n[[explanations]]\nmethod = \"gradients\"\n")
    return resolve_inputs(load_config(path, env={}))


def test_exif_orientation_turns_the_photo_upright(tmp_path):
    from PIL import Image

    pixels = np.zeros((20, 30, 3), np.uint8)
    pixels[:2, :2] = 255  # a white corner, top left as stored
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    image.save(tmp_path / "phone.png", exif=exif)
    shown = resolve_inputs(load_config(data={"inputs": {"files": [str(tmp_path / "phone.png")]},
                                             "explanations": [{"method": "gradients"}]}, env={}))[0].pixels
    assert shown.shape == (30, 20, 3)  # portrait, as a viewer shows it
    np.testing.assert_array_equal(shown, np.rot90(pixels, k=-1))  # the corner moved to the top right
    assert shown[0, -1, 0] == 255 and shown[0, 0, 0] == 0


def test_float_tiff_in_0_1_keeps_its_range(tmp_path):
    from PIL import Image

    ramp = np.linspace(0, 1, 16 * 16, dtype=np.float32).reshape(16, 16)
    Image.fromarray(ramp, mode="F").save(tmp_path / "f.tif")
    pixels = _inputs(tmp_path / "f.tif")[0].pixels
    expected = np.floor(ramp.astype(np.float64) * 255 + 0.5).astype(np.uint8)
    assert pixels.dtype == np.uint8 and pixels.shape == (16, 16, 3)
    np.testing.assert_array_equal(pixels, np.repeat(expected[..., None], 3, axis=2))
    assert (pixels.min(), pixels.max()) == (0, 255)


def test_float_tiff_with_nan_is_an_error(tmp_path):
    from PIL import Image

    Image.fromarray(np.array([[0.5, np.nan]], np.float32), mode="F").save(tmp_path / "nan.tif")
    with pytest.raises(ConfigError, match=r"inputs.files\[0\].*NaN"):
        _inputs(tmp_path / "nan.tif")


def test_a_decompression_bomb_is_a_clean_error(tmp_path, monkeypatch):
    from PIL import Image

    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1600 pixels > 2 x 100: Pillow raises
    with pytest.raises(ConfigError, match=r"inputs.files\[0\].*huge.png.*too large.*MAX_IMAGE_PIXELS"):
        _inputs(tmp_path / "huge.png")


def test_globs_under_a_folder_with_brackets(tmp_path):
    from PIL import Image

    folder = tmp_path / "run[1]"
    folder.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / "a.png")
    found = _inputs(globs=["*.png"], base=folder)
    assert [img.name for img in found] == ["a"]


@pytest.mark.parametrize("stem, expected", [
    ("index.html", "index.html_"), ("summary.json", "summary.json_"), ("evaluation", "evaluation_"),
    (".", "image"), ("..", "image"), (".salplug-output", "salplug-output"), ("CON", "CON_"), ("nul.x", "nul.x_"),
    ("cat", "cat"),
])
def test_photo_names_never_take_reserved_names(stem, expected):
    from salplug.runner import _file_safe

    assert _file_safe(stem) == expected


def test_names_differing_only_in_case_get_distinct_folders(tmp_path):
    from PIL import Image

    for name in ("Cat.png", "cat.jpg"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / name)
    found = _inputs(tmp_path / "Cat.png", tmp_path / "cat.jpg")
    assert [img.name for img in found] == ["Cat", "cat_2"]


def test_explain_a_photo_called_index_html(tmp_path):
    pytest.importorskip("torch")
    from PIL import Image
    from click.testing import CliRunner

    from salplug.cli import main
    from test_config import TINY_MODEL

    (tmp_path / "tiny_model.py").write_text(TINY_MODEL)
    for name in ("index.html.png", "..png"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / name, format="PNG")
    out = tmp_path / "o"
    result = CliRunner().invoke(main, ["explain", str(tmp_path / "index.html.png"), str(tmp_path / "..png"),
                                       "--model", f"{tmp_path / 'tiny_model.py'}:build", "--target", "1",
                                       "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert [e["image"] for e in summary["images"]] == ["index.html_", "image"]
    assert (out / "index.html").is_file() and (out / "index.html_" / "gradients.npz").is_file()
