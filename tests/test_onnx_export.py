"""``cnnkit export``: onnxruntime gives the logits cnnkit gives, and onnx.checker accepts the file.

The reference side is what ``cnnkit predict`` runs: ``load_model`` and the model's logits on
images normalised with the stored statistics. The ONNX side gets the same images before
normalisation, because the file folds ``(x - mean) / std`` into its graph.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cnnkit import arch
from cnnkit.cli.app import app

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-4


def _session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _randomise_statistics(model, rng: np.random.Generator) -> None:
    """Batch-norm layers with the statistics and affine parameters of a trained network."""
    for layer in model.layers:
        if layer.kind == "bn":
            c = layer.gamma.size
            layer.gamma[...] = rng.uniform(0.5, 1.5, c)
            layer.beta[...] = rng.normal(0, 0.2, c)
            layer.buffers["running_mean"][...] = rng.normal(0, 0.3, c)
            layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, c)


def _save(tmp_path: Path, spec: str, mean, std, seed: int = 0, name: str = "m") -> Path:
    from cnnkit.nn import build_model, save_model

    model = build_model(spec, seed=seed)
    _randomise_statistics(model, np.random.default_rng(seed))
    k = model.num_outputs
    meta = {
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "class_names": [f"c{i}" for i in range(k)],
        "dataset": "test",
        "split_seed": 7,
        "val_fraction": 0.1,
    }
    path = tmp_path / f"{name}.npz"
    save_model(path, model, meta)
    return path


def _compare(model_path: Path, onnx_path: Path, x_normalised: np.ndarray) -> float:
    """Largest |onnxruntime - cnnkit| logit difference on ``x_normalised`` images."""
    from cnnkit.nn.serialize import load_model

    model, header = load_model(model_path)
    c = x_normalised.shape[1]
    mean = np.broadcast_to(np.asarray(header["mean"], np.float32), (c,)).reshape(1, c, 1, 1)
    std = np.broadcast_to(np.asarray(header["std"], np.float32), (c,)).reshape(1, c, 1, 1)
    raw = (x_normalised * std + mean).astype(np.float32)
    ours = model.predict_logits(x_normalised)
    theirs = _session(onnx_path).run(["logits"], {"input": raw})[0]
    assert theirs.shape == ours.shape
    return float(np.abs(theirs - ours).max())


def _digits():
    from cnnkit.data import load_dataset

    return load_dataset("digits")


@pytest.mark.parametrize("name", ["digits", "shapes", "lenet5", "resnet-digits"])
def test_shipped_training_architectures_round_trip(tmp_path: Path, name: str) -> None:
    shape = arch.parse(name).input_shape
    rng = np.random.default_rng(1)
    if shape == (1, 8, 8):
        ds = _digits()
        x, mean, std = ds.x_test, ds.mean, ds.std
    else:
        x = rng.normal(size=(64, *shape)).astype(np.float32)
        mean, std = [0.2], [0.3]
    path = _save(tmp_path, name, mean, std)
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(app, ["export", str(path), str(out)])
    assert result.exit_code == 0, result.output
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    assert _compare(path, out, x) < TOL


def test_trained_digits_model_from_the_cli_matches_predict(tmp_path: Path) -> None:
    """End to end: cnnkit train, cnnkit export, and predict's own image pipeline."""
    from cnnkit.data import load_image_for_model
    from cnnkit.data.images import image_file_to_raw
    from cnnkit.nn.serialize import load_model

    runner = CliRunner()
    model_path = tmp_path / "d.npz"
    done = runner.invoke(app, ["train", "--epochs", "2", "-o", str(model_path)])
    assert done.exit_code == 0, done.output
    out = tmp_path / "d.onnx"
    done = runner.invoke(
        app, ["export", str(model_path), str(out), "--json-file", str(tmp_path / "e.json")]
    )
    assert done.exit_code == 0, done.output
    assert "wrote" in done.output  # the human summary stays on stdout
    info = json.loads((tmp_path / "e.json").read_text())
    assert info["opset"] == 17 and info["classes"] == [str(i) for i in range(10)]
    assert _compare(model_path, out, _digits().x_test) < TOL

    model, header = load_model(model_path)
    image = next(p for p in sorted((ROOT / "sample_images").iterdir()) if p.suffix == ".png")
    mean, std = np.asarray(header["mean"]), np.asarray(header["std"])
    pre = header.get("preprocess")
    x = load_image_for_model(image, model.input_shape, mean, std, preprocess=pre)
    raw = image_file_to_raw(image, model.input_shape, pre)[None].astype(np.float32)
    theirs = _session(out).run(["logits"], {"input": raw})[0]
    assert np.abs(theirs - model.predict_logits(x)).max() < TOL

    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["cnnkit.class_names"]) == [str(i) for i in range(10)]
    assert json.loads(meta["cnnkit.mean"]) == pytest.approx(header["mean"])
    assert meta["cnnkit.spec"] == header["spec"]


EVERY_KIND = """
input 3 13 11
conv 6 k=3 p=same d=2 bias=false
bn
leakyrelu 0.2
conv 6 k=3 s=2 p=1 groups=3
sigmoid
pool avg k=3 s=2 p=1 ceil=true
conv 8 k=2 p=valid
tanh
pool max k=2 s=1 ceil=true
dropout 0.3
flatten
fc 12 bias=false
bn
relu
fc 5
"""


@pytest.mark.parametrize(
    "spec_text",
    [
        EVERY_KIND,
        "input 2 9 9; conv 4 k=4 p=same; relu; gap; fc 3",
        "input 1 7 7; conv 4 k=3; relu; conv 3 k=5",  # conv output (3, 1, 1) as logits
        "input 1 6 6; pool max k=3 s=2 p=1 ceil=true; fc 4",
        "input 2 7 9; conv 3 k=3 s=2 p=0+1x2+1; relu6; conv 4 k=2 p=same; fc 3",
    ],
)
def test_every_trainable_layer_kind_round_trips(tmp_path: Path, spec_text: str) -> None:
    shape = arch.parse(spec_text).input_shape
    x = np.random.default_rng(2).normal(size=(16, *shape)).astype(np.float32)
    path = _save(tmp_path, spec_text, [0.1] * shape[0], [2.0] * shape[0], seed=3)
    out = tmp_path / "m.onnx"
    from cnnkit.onnx.writer import export_onnx

    export_onnx(path, out)
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    assert _compare(path, out, x) < TOL


def _random_chain(rng: np.random.Generator) -> str:
    c, h = int(rng.integers(1, 4)), int(rng.integers(8, 17))
    lines = [f"input {c} {h} {h}"]
    for _ in range(int(rng.integers(1, 4))):
        k = int(rng.integers(1, 4))
        lines.append(f"conv {int(rng.integers(1, 4)) * 2} k={k} p={int(rng.integers(0, k))}")
        lines.append(str(rng.choice(["relu", "tanh", "sigmoid", "leakyrelu 0.1", "bn"])))
        if rng.random() < 0.5:
            lines.append(f"pool {rng.choice(['max', 'avg'])} k=2 ceil={rng.random() < 0.5}")
    lines.append(f"fc {int(rng.integers(2, 7))}")
    return "\n".join(lines)


@pytest.mark.parametrize("seed", range(6))
def test_random_chains_round_trip(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    text = _random_chain(rng)
    shape = arch.parse(text).input_shape
    x = rng.normal(size=(8, *shape)).astype(np.float32)
    path = _save(tmp_path, text, [0.5], [0.25], seed=seed)
    out = tmp_path / "m.onnx"
    from cnnkit.onnx.writer import export_onnx

    export_onnx(path, out)
    assert _compare(path, out, x) < TOL, text


def test_newest_opset_runs_too(tmp_path: Path) -> None:
    from cnnkit.onnx.writer import export_onnx

    path = _save(tmp_path, "digits", [1.0], [2.0])
    newest = onnx.defs.onnx_opset_version()
    x = _digits().x_test[:32]
    for opset in (18, newest):
        out = tmp_path / f"m{opset}.onnx"
        export_onnx(path, out, opset=opset)
        proto = onnx.load(str(out))
        assert proto.opset_import[0].version == opset
        onnx.checker.check_model(proto, full_check=True)
        try:
            _session(out)
        except Exception as exc:  # onnxruntime may lag the onnx package by an opset
            if opset == newest and "opset" in str(exc).lower():
                continue
            raise
        assert _compare(path, out, x) < TOL


@pytest.mark.parametrize("opset", ["16", "999", "x"])
def test_bad_opset_is_one_line_and_writes_nothing(tmp_path: Path, opset: str) -> None:
    path = _save(tmp_path, "digits", [0.0], [1.0])
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(app, ["export", str(path), str(out), "--opset", opset])
    assert result.exit_code == 2
    if opset != "x":
        assert result.output.strip().count("\n") == 0
        assert "--opset must be between 17 and" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_export_failure_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    from cnnkit.onnx import writer

    path = _save(tmp_path, "digits", [0.0], [1.0])
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous")

    def broken(*args, **kwargs):
        raise ValueError("the exported graph fails onnx.checker at opset 17: test")

    monkeypatch.setattr(writer, "model_to_onnx", broken)
    result = CliRunner().invoke(app, ["export", str(path), str(out)])
    assert result.exit_code == 2 and "fails onnx.checker" in result.output
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz", "m.onnx"]


def test_bad_model_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    result = CliRunner().invoke(app, ["export", str(bad), str(tmp_path / "x.onnx")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert not (tmp_path / "x.onnx").exists()


def test_without_the_extra_the_command_names_it(tmp_path: Path, monkeypatch) -> None:
    path = _save(tmp_path, "digits", [0.0], [1.0])
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    result = CliRunner().invoke(app, ["export", str(path), str(tmp_path / "x.onnx")])
    assert result.exit_code == 2
    assert 'onnx extra: pip install "cnnkit[onnx]"' in result.output
    assert not (tmp_path / "x.onnx").exists()


def _random_graph(rng: np.random.Generator) -> str:
    """A random residual/concat network in the spec's block syntax."""
    c, h, w = int(rng.integers(1, 4)), int(rng.integers(8, 15)), int(rng.integers(2, 5)) * 2
    act = str(rng.choice(["relu", "relu6", "leakyrelu 0.1", "tanh"]))
    lines = [f"input {c} {h} {h}", f"conv {w} k=3 p=1", act]
    for _ in range(int(rng.integers(1, 3))):
        lines.append(f"residual {{ conv {w} k=3 p=1 bias=false; bn; {act}; conv {w} k=3 p=1; bn }}")
        lines.append("relu")
    lines.append(
        f"residual {{ conv {2 * w} k=3 s=2 p=1 groups=2; bn }} "
        f"shortcut {{ conv {2 * w} k=1 s=2 bias=false; bn }}"
    )
    lines.append(
        f"concat {{ conv {int(rng.integers(1, 5))} k=1 }} "
        f"{{ pool max k=3 s=1 p=1; conv {int(rng.integers(1, 5))} k=1; relu6 }} {{ }}"
    )
    if rng.random() < 0.5:
        lines += ["pool avg k=2 ceil=true", "dropout 0.2"]
    lines.append(str(rng.choice(["gap", "flatten"])))
    lines.append(f"fc {int(rng.integers(2, 8))}")
    return "\n".join(lines)


@pytest.mark.parametrize("seed", range(6))
def test_random_graph_networks_round_trip(tmp_path: Path, seed: int) -> None:
    from cnnkit.onnx.writer import export_onnx

    rng = np.random.default_rng(200 + seed)
    text = _random_graph(rng)
    shape = arch.parse(text).input_shape
    x = rng.normal(size=(8, *shape)).astype(np.float32)
    path = _save(tmp_path, text, [0.3] * shape[0], [0.7] * shape[0], seed=seed)
    out = tmp_path / "m.onnx"
    export_onnx(path, out)
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    assert _compare(path, out, x) < TOL, text
    # and back: the exported file reads as the same architecture (an explicit flatten
    # before an fc is folded into the fc on import, so memory may differ by that one row)
    back = arch.totals(arch.infer(arch.parse(str(out))))
    ours = arch.totals(arch.infer(arch.parse(text)))
    for key in ("total_params", "total_macs", "total_other_ops"):
        assert back[key] == ours[key], key


def test_train_starts_a_fresh_network_from_an_onnx_architecture(tmp_path: Path) -> None:
    from cnnkit.nn.serialize import load_model

    path = _save(tmp_path, "digits", [0.0], [1.0])
    out = tmp_path / "arch.onnx"
    assert CliRunner().invoke(app, ["export", str(path), str(out)]).exit_code == 0
    trained = tmp_path / "fresh.npz"
    done = CliRunner().invoke(
        app, ["train", "--arch", str(out), "--epochs", "1", "-o", str(trained)]
    )
    assert done.exit_code == 0, done.output
    fresh, _ = load_model(trained)
    original, _ = load_model(path)
    assert fresh.parameter_count() == original.parameter_count()
    assert [type(a) for a in fresh.layers] == [type(b) for b in original.layers]
    assert not np.allclose(fresh.flat_params, original.flat_params)  # weights not imported


def test_every_trainable_kind_has_an_onnx_form() -> None:
    from cnnkit.arch.kinds import KINDS, Kind
    from cnnkit.onnx.writer import EMITTERS

    trainable = {name for name, kind in KINDS.items() if type(kind).build is not Kind.build}
    assert trainable and trainable <= set(EMITTERS)


def test_export_never_overwrites_the_model_or_writes_into_a_folder(tmp_path: Path) -> None:
    path = _save(tmp_path, "digits", [0.0], [1.0])
    before = path.read_bytes()
    runner = CliRunner()
    for target in (path, tmp_path / "." / path.name, tmp_path):
        done = runner.invoke(app, ["export", str(path), str(target)])
        assert done.exit_code == 2 and done.output.startswith("error:"), done.output
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_verify_runs_the_file_and_refuses_a_mismatch(tmp_path: Path, monkeypatch) -> None:
    from cnnkit.nn.model import Model

    path = _save(tmp_path, "resnet-digits", [0.5], [2.0])
    out = tmp_path / "m.onnx"
    runner = CliRunner()
    done = runner.invoke(app, ["export", str(path), str(out), "--verify", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["verified_max_abs_diff"] < TOL
    out.unlink()
    real = Model.predict_logits
    monkeypatch.setattr(Model, "predict_logits", lambda self, x: real(self, x) + 0.01)
    done = runner.invoke(app, ["export", str(path), str(out), "--verify"])
    assert done.exit_code == 1 and "differ from cnnkit's" in done.output
    assert not out.exists()


@pytest.mark.parametrize("spec_text", ["digits", "resnet-digits", EVERY_KIND])
def test_export_then_import_gives_the_same_model(tmp_path: Path, spec_text: str) -> None:
    from cnnkit.nn.serialize import load_model

    shape = arch.parse(spec_text).input_shape
    path = _save(tmp_path, spec_text, [0.2] * shape[0], [1.5] * shape[0], seed=5)
    out = tmp_path / "m.onnx"
    back = tmp_path / "back.npz"
    runner = CliRunner()
    assert runner.invoke(app, ["export", str(path), str(out)]).exit_code == 0
    done = runner.invoke(app, ["import", str(out), str(back), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["normalised"]
    original, header = load_model(path)
    imported, header_back = load_model(back)
    assert header_back["mean"] == pytest.approx(header["mean"])
    assert header_back["std"] == pytest.approx(header["std"])
    assert header_back["class_names"] == header["class_names"]
    assert header_back["split_seed"] == header["split_seed"] == 7
    x = np.random.default_rng(6).normal(size=(16, *shape)).astype(np.float32)
    np.testing.assert_array_equal(imported.predict_logits(x), original.predict_logits(x))
