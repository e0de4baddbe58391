"""Reading ONNX files: every operator cnnkit knows resolves to its layer kind, and every bad
file (truncated, corrupt, not ONNX, cycles, missing initializers, unknown opsets, domains and
operators, external data outside the folder) is a one-line OnnxError naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from cnnkit.onnx.reader import OnnxError, read_onnx  # noqa: E402
from cnnkit.onnx.resolve import resolve  # noqa: E402


def _init(name: str, *shape: int, value: float | None = None) -> TensorProto:
    rng = np.random.default_rng(len(name))
    data = np.full(shape, value, np.float32) if value is not None else rng.normal(size=shape)
    return numpy_helper.from_array(np.asarray(data, np.float32), name)


def _model(nodes, inits, shape=(1, 3, 8, 8), out="y", opset=17, inputs=None, **kw):
    graph = helper.make_graph(
        nodes,
        "g",
        inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", "K"])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], **kw)


def _save(tmp_path: Path, model, name: str = "m.onnx") -> Path:
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return path


def _conv_relu():
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    return _model(nodes, [_init("w", 4, 3, 3, 3), _init("b", 4)])


def test_every_known_operator_resolves(tmp_path: Path) -> None:
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1"], ["a"], name="c1", strides=[2, 2], auto_pad="SAME_UPPER"),
        n("BatchNormalization", ["a", "s", "bb", "m", "v"], ["b"], name="bn", epsilon=1e-3),
        n("Clip", ["b", "lo", "hi"], ["c"], name="r6"),
        n(
            "Conv",
            ["c", "w2", "b2"],
            ["d"],
            name="dw",
            group=8,
            dilations=[2, 2],
            pads=[2, 2, 2, 2],
        ),
        n("LeakyRelu", ["d"], ["e"], name="lr", alpha=0.2),
        n("Add", ["e", "c"], ["f"], name="add"),
        n("Concat", ["f", "c"], ["g"], name="cat", axis=1),
        n(
            "MaxPool",
            ["g"],
            ["h"],
            name="mp",
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
        ),
        n(
            "AveragePool",
            ["h"],
            ["i"],
            name="ap",
            kernel_shape=[2, 2],
            ceil_mode=1,
            count_include_pad=1,
        ),
        n("Sigmoid", ["i"], ["j"], name="sig"),
        n("Tanh", ["j"], ["k"], name="tanh"),
        n("Identity", ["k"], ["k2"], name="id"),
        n("GlobalAveragePool", ["k2"], ["l"], name="gap"),
        n("Reshape", ["l", "shape"], ["m1"], name="reshape"),
        n("MatMul", ["m1", "wm"], ["m2"], name="mm"),
        n("Add", ["m2", "bm"], ["m3"], name="mm_bias"),
        n("Dropout", ["m3"], ["m4"], name="drop", ratio=0.25),
        n("Gemm", ["m4", "wg", "bg"], ["m5"], name="fc", transB=1),
        n("Flatten", ["m5"], ["m6"], name="flat"),
        n("Softmax", ["m6"], ["y"], name="soft", axis=1),
    ]
    inits = [
        _init("w1", 8, 3, 3, 3),
        _init("s", 8),
        _init("bb", 8),
        _init("m", 8),
        _init("v", 8, value=1.0),
        _init("lo", value=0.0),
        _init("hi", value=6.0),
        _init("w2", 8, 1, 3, 3),
        _init("b2", 8),
        _init("wm", 16, 10),
        _init("bm", 10),
        _init("wg", 5, 10),
        _init("bg", 5),
        numpy_helper.from_array(np.array([0, -1], np.int64), "shape"),
    ]
    model = _model(nodes, inits, opset=11)  # opset 11: Dropout's ratio is an attribute
    graph = read_onnx(_save(tmp_path, model))
    assert graph.input_shape == (1, 3, 8, 8) and graph.opset == 11
    layers = {layer.name: layer for layer in resolve(graph)}
    kinds = [(name, layer.kind) for name, layer in layers.items()]
    assert kinds == [
        ("c1", "conv"),
        ("bn", "bn"),
        ("r6", "relu6"),
        ("dw", "conv"),
        ("lr", "leakyrelu"),
        ("add", "add"),
        ("cat", "concat"),
        ("mp", "pool"),
        ("ap", "pool"),
        ("sig", "sigmoid"),
        ("tanh", "tanh"),
        ("gap", "gap"),
        ("reshape", "flatten"),
        ("mm", "fc"),
        ("drop", "dropout"),
        ("fc", "fc"),
        ("flat", "flatten"),
        ("soft", "softmax"),
    ]
    assert layers["c1"].settings["padding"] == "same" and layers["c1"].inputs == ("input",)
    assert layers["dw"].settings["groups"] == 8 and layers["dw"].settings["dilation"] == (2, 2)
    assert layers["dw"].settings["padding"] == ((2, 2), (2, 2))
    assert layers["add"].inputs == ("lr", "r6") and layers["cat"].inputs == ("add", "r6")
    assert layers["gap"].inputs == ("tanh",)  # Identity disappears
    assert layers["mm"].settings == {"units": 10, "in_features": 16, "bias": True}
    assert layers["drop"].inputs == ("mm",) and layers["drop"].settings["rate"] == 0.25
    assert layers["ap"].settings["ceil"] and layers["ap"].settings["count_include_pad"]
    assert layers["mp"].settings["stride"] == (2, 2)
    assert layers["lr"].settings["slope"] == pytest.approx(0.2)
    assert layers["bn"].settings["eps"] == pytest.approx(1e-3)
    assert layers["fc"].settings["units"] == 5


def _error(tmp_path: Path, data: bytes | object) -> str:
    path = tmp_path / "bad.onnx"
    path.write_bytes(data if isinstance(data, bytes) else data.SerializeToString())
    with pytest.raises(OnnxError) as info:
        resolve(read_onnx(path))
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_not_onnx_truncated_and_corrupt_files(tmp_path: Path) -> None:
    good = _conv_relu().SerializeToString()
    assert "empty" in _error(tmp_path, b"")
    assert "not an ONNX model" in _error(tmp_path, b"hello, this is a text file\n" * 5)
    assert "not an ONNX model" in _error(tmp_path, np.arange(300, dtype=np.uint8).tobytes())
    for cut in (len(good) // 3, len(good) // 2, len(good) - 7):
        _error(tmp_path, good[:cut])
    rng = np.random.default_rng(0)
    for _ in range(30):  # random byte flips: an error or a readable graph, never a crash
        data = bytearray(good)
        for i in rng.integers(0, len(data), 4):
            data[i] = int(rng.integers(0, 256))
        path = tmp_path / "flip.onnx"
        path.write_bytes(bytes(data))
        try:
            resolve(read_onnx(path))
        except OnnxError as exc:
            assert "\n" not in str(exc)


def test_cycle_is_named(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Add", ["x", "b"], ["a"], name="first"),
        helper.make_node("Relu", ["a"], ["b"], name="second"),
        helper.make_node("Relu", ["b"], ["y"], name="third"),
    ]
    assert "cycle" in _error(tmp_path, _model(nodes, []))


def test_missing_initializer_is_named(tmp_path: Path) -> None:
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")]
    message = _error(tmp_path, _model(nodes, []))
    assert "conv" in message and "'w'" in message and "missing initializer" in message


def test_weights_given_as_a_second_input_are_refused(tmp_path: Path) -> None:
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
        helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3, 3, 3]),
    ]
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")]
    assert "one data input" in _error(tmp_path, _model(nodes, [], inputs=inputs))


def test_unknown_opset_domain_and_operators(tmp_path: Path) -> None:
    newest = onnx.defs.onnx_opset_version()
    assert "newer than the installed onnx" in _error(
        tmp_path, _model([helper.make_node("Relu", ["x"], ["y"])], [], opset=newest + 5)
    )
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [])
    model.opset_import[0].domain = "com.example"
    assert "no ai.onnx opset" in _error(tmp_path, model)
    nodes = [
        helper.make_node("Resize", ["x"], ["a"], name="up"),
        helper.make_node("Relu", ["a"], ["b"], name="ok"),
        helper.make_node("LSTM", ["b"], ["c"], name="rnn"),
        helper.make_node("FusedConv", ["c"], ["y"], name="fused", domain="com.microsoft"),
    ]
    message = _error(tmp_path, _model(nodes, []))
    assert "Resize (up)" in message and "LSTM (rnn)" in message
    assert "com.microsoft.FusedConv (fused)" in message and "ok" not in message.split(":")[-1]


def test_conv_transpose_is_refused_clearly(tmp_path: Path) -> None:
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up")]
    assert "ConvTranspose" in _error(tmp_path, _model(nodes, [_init("w", 3, 4, 2, 2)]))


def test_operators_used_in_ways_cnnkit_does_not_model(tmp_path: Path) -> None:
    n = helper.make_node
    clip = _model(
        [n("Clip", ["x", "lo", "hi"], ["y"], name="clip")],
        [_init("lo", value=-1.0), _init("hi", value=1.0)],
    )
    assert "Clip(0, 6)" in _error(tmp_path, clip)
    cat = _model([n("Concat", ["x", "x"], ["y"], name="cat", axis=3)], [])
    assert "axis=1" in _error(tmp_path, cat)
    reshape = _model(
        [n("Reshape", ["x", "s"], ["y"], name="rs")],
        [numpy_helper.from_array(np.array([1, 3, 64], np.int64), "s")],
    )
    assert "(N, -1)" in _error(tmp_path, reshape)


def test_external_data_outside_the_folder_is_refused_and_never_read(tmp_path: Path) -> None:
    model = _conv_relu()
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    assert "outside" in _error(tmp_path, model)
    entry.value = "/etc/passwd"
    assert "outside" in _error(tmp_path, model)
    # Inside the folder: accepted without being opened (the file does not even exist); the
    # weight's shape comes from the model file itself.
    entry.value = "weights.bin"
    path = _save(tmp_path, model, "ext.onnx")
    layers = resolve(read_onnx(path))
    assert layers[0].weights["w"] == (4, 3, 3, 3)


def test_unnamed_nodes_get_unique_names(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Relu", ["a"], ["b"], name="r"),
        helper.make_node("Relu", ["b"], ["y"], name="r"),
    ]
    names = [layer.name for layer in resolve(read_onnx(_save(tmp_path, _model(nodes, []))))]
    assert names == ["Relu_0", "r", "r_2"]


def test_missing_and_folder_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_onnx(tmp_path / "none.onnx")
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(OnnxError):
        read_onnx(tmp_path / "dir.onnx")


@pytest.mark.parametrize("command", ["shape", "receptive-field"])
def test_cli_errors_are_one_line_with_exit_2(tmp_path: Path, command: str, monkeypatch) -> None:
    import sys

    from typer.testing import CliRunner

    from cnnkit.cli.app import app

    runner = CliRunner()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07" + b"\xff" * 50)
    cycle = _save(
        tmp_path,
        _model(
            [
                helper.make_node("Relu", ["x", "b"], ["a"], name="first"),
                helper.make_node("Relu", ["a"], ["b"], name="second"),
                helper.make_node("Relu", ["b"], ["y"], name="third"),
            ],
            [],
        ),
        "cycle.onnx",
    )
    good = _save(tmp_path, _conv_relu(), "good.onnx")
    for path, words in ((bad, "not an ONNX model"), (cycle, "cycle")):
        done = runner.invoke(app, [command, str(path)])
        assert done.exit_code == 2 and words in done.output, done.output
        assert done.output.strip().count("\n") == 0 and "Traceback" not in done.output
    done = runner.invoke(app, [command, str(good), "--input", "5x8x8"])
    assert done.exit_code == 2 and "input channels" in done.output
    assert runner.invoke(app, [command, str(good)]).exit_code == 0
    monkeypatch.setitem(sys.modules, "onnx", None)
    done = runner.invoke(app, [command, str(good)])
    assert done.exit_code == 2 and "onnx extra" in done.output


def test_pad_amounts_computed_from_constants_and_their_limits(tmp_path: Path) -> None:
    n = helper.make_node
    i64 = TensorProto.INT64

    def const(name: str, values, dtype=i64):
        return n(
            "Constant", [], [name], value=helper.make_tensor(name, dtype, [len(values)], values)
        )

    # pads = concat(zeros(4), [1, 2, 1, 2])[0:8], computed as exporters compute them
    nodes = [
        const("n4", [4]),
        n("ConstantOfShape", ["n4"], ["zeros"]),
        const("spatial", [1, 2, 1, 2]),
        n("Concat", ["zeros", "spatial"], ["all"], axis=0),
        n("Slice", ["all", "s0", "s1"], ["pads"]),
        n("Pad", ["x", "pads"], ["padded"], name="pad"),
        n("Conv", ["padded", "w"], ["y"], name="conv"),
    ]
    inits = [
        _init("w", 4, 3, 3, 3),
        numpy_helper.from_array(np.array([0], np.int64), "s0"),
        numpy_helper.from_array(np.array([8], np.int64), "s1"),
    ]
    model = _model(nodes, inits)
    from cnnkit.arch import infer
    from cnnkit.onnx.to_graph import onnx_graph

    # ONNX order is all begins (N, C, H, W), then all ends: ends (1, 2, 1, 2) pad the batch
    # and channel axes, which is refused.
    path = _save(tmp_path, model)
    with pytest.raises(OnnxError, match="spatial dimensions"):
        onnx_graph(path)
    nodes[2] = const("spatial", [0, 0, 1, 2])
    nodes[0] = const("n4", [2, 2])
    nodes[1] = n("ConstantOfShape", ["n4"], ["zeros2"])
    nodes.insert(2, n("Reshape", ["zeros2", "flat"], ["zeros"]))
    inits.append(numpy_helper.from_array(np.array([-1], np.int64), "flat"))
    # zeros(2, 2) flattened: begins (0, 0, 0, 0), ends (0, 0, 1, 2)
    infos = infer(onnx_graph(_save(tmp_path, _model(nodes, inits), "ok.onnx")))
    assert infos[0].pads == ((0, 1), (0, 2)) and infos[0].output_shape == (4, 7, 8)
    # a ConstantOfShape asking for a huge tensor is refused before anything is allocated
    nodes[0] = const("n4", [10**9, 10**9])
    message = _error(tmp_path, _model(nodes, inits))
    assert "ConstantOfShape" in message and "small constant" in message


@pytest.mark.parametrize(
    ("auto_pad", "pads"),
    [("SAME_UPPER", ((0, 1), (0, 1))), ("SAME_LOWER", ((1, 0), (1, 0))), ("VALID", ((0, 0),) * 2)],
)
def test_auto_pad_resolves_to_explicit_pads(tmp_path: Path, auto_pad: str, pads) -> None:
    from cnnkit.arch import infer
    from cnnkit.onnx.to_graph import onnx_graph

    nodes = [
        helper.make_node("Conv", ["x", "w"], ["y"], name="c", strides=[2, 2], auto_pad=auto_pad)
    ]
    info = infer(onnx_graph(_save(tmp_path, _model(nodes, [_init("w", 4, 3, 3, 3)]))))[0]
    assert info.pads == pads
    # ONNX: SAME gives ceil(8 / 2) = 4 outputs, VALID floor((8 - 3) / 2) + 1 = 3
    assert info.output_shape == ((4, 3, 3) if auto_pad == "VALID" else (4, 4, 4))


def test_constant_arithmetic_that_would_grow_large_is_refused(tmp_path: Path) -> None:
    n = helper.make_node
    a = numpy_helper.from_array(np.zeros((4096, 1), np.float32), "a")
    b = numpy_helper.from_array(np.zeros((1, 4096), np.float32), "b")
    nodes = [
        n("Mul", ["a", "b"], ["big"], name="outer"),
        n("Reshape", ["x", "big"], ["y"], name="rs"),
    ]
    message = _error(tmp_path, _model(nodes, [a, b]))
    assert "outer" in message and "not a small constant" in message
    nodes[0] = n("Div", ["a", "zero"], ["big"], name="div")
    message = _error(tmp_path, _model(nodes, [a, _init("zero", value=0.0)]))
    assert "division by zero" in message


def test_shape_arithmetic_beyond_the_batch_entry_is_a_clear_error(tmp_path: Path) -> None:
    n = helper.make_node
    idx = numpy_helper.from_array(np.array(0, np.int64), "i0")
    nodes = [
        n("Shape", ["x"], ["s"], name="shape"),
        n("Gather", ["s", "i0"], ["batch"], name="batch"),
        n("Gather", ["s", "batch"], ["odd"], name="gather_by_batch"),  # the batch as an index
        n("Reshape", ["x", "odd"], ["y"], name="rs"),
    ]
    message = _error(tmp_path, _model(nodes, [idx]))
    assert "gather_by_batch" in message and "shape" in message


def test_weights_that_do_not_fit_their_input_are_named(tmp_path: Path) -> None:
    from cnnkit.onnx.to_graph import onnx_graph

    n = helper.make_node
    bn = n("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], name="bn")
    model = _model([bn], [_init("s", 3), _init("b", 3), _init("m", 4), _init("v", 3)])
    with pytest.raises(OnnxError, match=r"node bn .*'m' has shape \(4,\) for 3 channels"):
        onnx_graph(_save(tmp_path, model, "bn.onnx"))
    fc = [n("Flatten", ["x"], ["f"], name="flat"), n("Gemm", ["f", "w"], ["y"], name="fc")]
    model = _model(fc, [_init("w", 100, 5)])  # x is 3x8x8 = 192 features
    with pytest.raises(OnnxError, match="node fc .*takes 100 features, input has 192"):
        onnx_graph(_save(tmp_path, model, "fc.onnx"))


def test_tensorflow_same_pooling_reads_as_ceil_mode_with_the_same_windows(tmp_path: Path) -> None:
    """SAME_UPPER pads the end only; where cnnkit writes it as ceil mode, onnxruntime's
    output shape and values equal cnnkit's own max pool with those settings."""
    ort = pytest.importorskip("onnxruntime")
    import cnnkit
    from cnnkit.arch import infer
    from cnnkit.onnx.to_graph import onnx_graph

    for size in range(5, 14):
        for kernel, stride in ((2, 2), (3, 2), (3, 1), (4, 2)):
            node = helper.make_node(
                "MaxPool", ["x"], ["y"], name="mp", kernel_shape=[kernel] * 2,
                strides=[stride] * 2, auto_pad="SAME_UPPER",
            )  # fmt: skip
            path = _save(tmp_path, _model([node], [], shape=(1, 2, size, size)), "mp.onnx")
            x = np.random.default_rng(size).normal(size=(1, 2, size, size)).astype(np.float32)
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            expected = session.run(None, {"x": x})[0]
            graph = onnx_graph(path)
            node = graph.nodes[-1]
            assert infer(graph)[-1].output_shape == expected.shape[1:]
            ours = cnnkit.max_pool2d(
                x, node.kernel, stride=node.stride, padding=node.padding, ceil_mode=node.ceil
            )
            np.testing.assert_array_equal(ours, expected)
    # extra padding at the start (SAME_LOWER) has no such spelling
    node = helper.make_node(
        "MaxPool", ["x"], ["y"], name="mp", kernel_shape=[2, 2], strides=[2, 2],
        auto_pad="SAME_LOWER",
    )  # fmt: skip
    with pytest.raises(OnnxError, match=r"uneven pooling pads \[\(1, 0\), \(1, 0\)\]"):
        onnx_graph(_save(tmp_path, _model([node], [], shape=(1, 2, 5, 5)), "lower.onnx"))


def test_import_refuses_what_cnnkit_would_compute_differently(tmp_path: Path) -> None:
    from cnnkit.onnx.weights import import_onnx

    n = helper.make_node
    conv = n("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1])
    weights = [_init("w", 4, 3, 3, 3)]
    cases = {
        "Mul by a constant": (
            [conv, n("Mul", ["c", "k"], ["y"], name="scale")], [*weights, _init("k", value=2.0)]
        ),
        "leaves padding out": (
            [conv, n("AveragePool", ["c"], ["y"], name="ap", kernel_shape=[2, 2],
                     pads=[1, 1, 1, 1])],  # count_include_pad defaults to 0 in ONNX
            weights,
        ),
        "epsilon 0.001": (
            [conv, n("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], name="bn",
                     epsilon=1e-3)],
            [*weights, _init("s", 4), _init("b", 4), _init("m", 4), _init("v", 4, value=1.0)],
        ),
        "in front of a max pool": (
            [n("Pad", ["x", "pads"], ["p"], name="pad"),
             n("MaxPool", ["p"], ["y"], name="mp", kernel_shape=[2, 2])],
            [numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")],
        ),
    }  # fmt: skip
    for words, (nodes, inits) in cases.items():
        path = _save(tmp_path, _model(nodes, inits), "case.onnx")
        with pytest.raises(OnnxError, match=f"{words}.*cannot be imported"):
            import_onnx(path, tmp_path / "out.npz")
        assert not (tmp_path / "out.npz").exists()
    # weights in another file are never opened
    model = _model([conv, n("GlobalAveragePool", ["c"], ["y"], name="gap")], weights)
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "weights.bin"
    with pytest.raises(OnnxError, match="stored in another file"):
        import_onnx(_save(tmp_path, model, "ext.onnx"), tmp_path / "out.npz")
    good = _save(tmp_path, _model([conv, n("Relu", ["c"], ["y"], name="relu")], weights))
    with pytest.raises(OnnxError, match="4x8x8 map, not one score per class"):
        import_onnx(good, tmp_path / "out.npz")
    before = good.read_bytes()
    with pytest.raises(ValueError, match="the ONNX file itself"):
        import_onnx(good, good)
    assert good.read_bytes() == before
