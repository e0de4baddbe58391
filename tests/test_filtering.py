"""``cnnkit.filtering``: one input through the filter command's library call, without the CLI.

The results themselves are checked against scipy in test_filter_cli.py and test_filters.py;
here: the settings' checks name parameters, the facts describe what was written, and an
output that cannot hold the result is refused before anything is written.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reference import conv_reference

from cnnkit.errors import ParameterError
from cnnkit.filtering import FilterSettings, filter_file, input_dims, map_names, output_kind

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"


def test_settings_name_the_parameters_they_refuse():
    with pytest.raises(ParameterError, match="^display must be auto, abs") as exc:
        FilterSettings(kernels=("box",), display="loud")
    assert exc.value.params == ("display",)
    with pytest.raises(ParameterError, match="^pool_stride needs pool") as exc:
        FilterSettings(kernels=("box",), pool_stride=2)
    assert exc.value.params == ("pool_stride", "pool")
    with pytest.raises(ParameterError, match="^pool_size and pool_stride must be >= 1"):
        FilterSettings(kernels=("box",), pool="max", pool_size=0)


def test_kernel_and_padding_mistakes_are_found_before_reading(tmp_path):
    with pytest.raises(ValueError, match="nope"):
        FilterSettings(kernels=("nope",)).check_kernels({2})
    with pytest.raises(ParameterError, match="^padding must be"):
        FilterSettings(kernels=("box",), padding="1,2").check_kernels({1, 2})


def test_filter_file_writes_the_response_and_returns_its_facts(tmp_path):
    out = tmp_path / "y.npy"
    f = filter_file(SAMPLES / "lecture_8x8.png", FilterSettings(kernels=("1,0,-1",)), out)
    y = np.load(out)
    x = np.asarray(Image.open(SAMPLES / "lecture_8x8.png"), dtype=np.float64)
    ref = conv_reference(x[None, None], np.array([[[[1.0, 0.0, -1.0]]]]))[0, 0]
    np.testing.assert_allclose(y, ref)
    assert f["output_shape"] == list(y.shape) and f["maps"] == 1
    assert f["output"] == str(out) and f["compare"] is None
    assert f["values"] == y[None].tolist()  # a small result carries its values
    assert (f["min"], f["max"]) == (float(y.min()), float(y.max()))


def test_an_output_that_cannot_hold_the_result_is_refused_before_writing(tmp_path):
    settings = FilterSettings(kernels=("box:3",))
    with pytest.raises(ValueError, match="1-D signal cannot be saved as an image"):
        filter_file(SAMPLES / "signal.csv", settings, tmp_path / "s.png")
    with pytest.raises(ValueError, match="output is for 1-D signals"):
        filter_file(SAMPLES / "lecture_8x8.png", settings, tmp_path / "s.csv")
    sound = tmp_path / "in.wav"
    with wave.open(str(sound), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(np.arange(16, dtype="<i2").tobytes())
    with pytest.raises(ParameterError, match="one kernel") as exc:
        filter_file(sound, FilterSettings(kernels=("box:3", "box:5")), tmp_path / "s.wav")
    assert exc.value.params == ("combine",)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_output_kinds_dims_and_map_names():
    assert output_kind(Path("a.PNG")) == "image" and output_kind(Path("a.npy")) == "npy"
    with pytest.raises(ValueError, match="unknown output format"):
        output_kind(Path("a.xyz"))
    assert input_dims(Path("s.wav")) == 1 and input_dims(Path("a.png")) == 2
    assert map_names(["k"], 1) == ["filtered"]
    assert map_names(["a", "b"], 2) == ["a_ch0", "a_ch1", "b_ch0", "b_ch1"]
