"""ONNX files read as architectures: PyTorch models exported to ONNX give the figures of the
matching cnnkit spec and PyTorch's own parameter count; ``cnnkit shape`` and
``cnnkit receptive-field`` accept ``.onnx`` files.

The networks are built here from plain ``torch.nn`` (torchvision's layouts, not its code) and
exported with PyTorch's TorchScript exporter, which needs nothing beyond torch and onnx.
Batch norm is kept as its own node (``TrainingMode.PRESERVE`` on an eval-mode model), so the
parameter counts are PyTorch's.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cnnkit import arch
from cnnkit.cli.app import app

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
nn = torch.nn


# -- networks in plain torch.nn (the layouts of He et al. 2016 and Sandler et al. 2018) ------


class Basic(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.downsample = _shortcut(cin, planes, stride)

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(y + (self.downsample(x) if self.downsample is not None else x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # stride on the 3x3
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU()
        self.downsample = _shortcut(cin, out, stride)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (self.downsample(x) if self.downsample is not None else x))


def _shortcut(cin: int, cout: int, stride: int):
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNet(nn.Module):
    def __init__(self, block, counts, classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, cin = [], 64
        for i, n in enumerate(counts):
            planes = 64 * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(cin, planes, 2 if (j == 0 and i > 0) else 1))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)]
    layers.append(nn.BatchNorm2d(cout))
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class Inverted(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers = [_conv_bn(cin, hidden, 1)] if expand != 1 else []
        layers += [
            _conv_bn(hidden, hidden, 3, stride, groups=hidden),
            _conv_bn(hidden, cout, 1, act=False),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1)]  # fmt: skip

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        layers, cin = [_conv_bn(3, 32, 3, 2)], 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(Inverted(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def _export(model, shape, path: Path, dynamic: bool = False) -> Path:
    model.eval()
    kwargs = {}
    if dynamic:
        kwargs["dynamic_axes"] = {"x": {0: "N", 2: "H", 3: "W"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, *shape),),
            str(path),
            input_names=["x"],
            output_names=["y"],
            dynamo=False,
            training=torch.onnx.TrainingMode.PRESERVE,  # keep batch norm as its own node
            do_constant_folding=False,
            **kwargs,
        )
    return path


def _torch_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _figures(graph) -> tuple[dict, Counter]:
    """Totals, and the multiset of (kind, output shape, params, MACs) of the nodes."""
    infos = arch.infer(graph)
    rows = Counter((i.kind, i.output_shape, i.params, i.macs) for i in infos)
    return arch.totals(infos), rows


def _final_field(graph) -> tuple:
    """Receptive field, effective stride and padding of the last node with spatial output."""
    f = [f for f in arch.receptive.fields(graph) if f.spatial][-1]
    return f.output_shape, f.receptive_field, f.effective_stride, f.effective_padding, f.aligned


NETWORKS = {
    "resnet18": (lambda: ResNet(Basic, [2, 2, 2, 2]), 11_689_512),
    "resnet50": (lambda: ResNet(Bottleneck, [3, 4, 6, 3]), 25_557_032),
    "mobilenet_v2": (lambda: MobileNetV2(), 3_504_872),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[Path, int]]:
    folder = tmp_path_factory.mktemp("onnx")
    out = {}
    for name, (build, _) in NETWORKS.items():
        torch.manual_seed(0)
        model = build()
        out[name] = (_export(model, (3, 224, 224), folder / f"{name}.onnx"), _torch_params(model))
    return out


@pytest.mark.parametrize("name", list(NETWORKS))
def test_pytorch_networks_give_the_figures_of_the_shipped_spec(exported, name: str) -> None:
    path, torch_params = exported[name]
    published = NETWORKS[name][1]
    assert torch_params == published
    graph = arch.parse(str(path))
    totals, rows = _figures(graph)
    assert totals["total_params"] == torch_params
    spec_totals, spec_rows = _figures(arch.parse(name))
    # PyTorch's exporter leaves inference-time dropout (MobileNetV2's classifier) out of the
    # file: no parameters, no MACs, one activation buffer fewer.
    dropped = Counter({row: n for row, n in spec_rows.items() if row[0] == "dropout"})
    spec_rows -= dropped
    elements = sum(math.prod(row[1]) * n for row, n in dropped.items())
    spec_totals["total_activations"] -= elements
    spec_totals["total_activation_bytes"] -= 4 * elements
    assert totals == spec_totals
    assert rows == spec_rows
    assert _final_field(graph) == _final_field(arch.parse(name))
    names = {node.name for node in graph.nodes}
    proto = onnx.load(str(path))
    assert names <= {n.name for n in proto.graph.node}  # the ONNX node names, as they are


def test_cli_shape_of_resnet18_onnx(exported) -> None:
    path, _ = exported["resnet18"]
    runner = CliRunner()
    done = runner.invoke(app, ["shape", str(path), "--json"])
    assert done.exit_code == 0, done.output
    data = json.loads(done.output)
    assert data["total_params"] == 11_689_512
    spec = json.loads(runner.invoke(app, ["shape", "resnet18", "--json"]).output)
    for key in ("total_params", "total_macs", "total_activation_bytes"):
        assert data[key] == spec[key], key
    assert data["layers"][0]["name"] == "/conv1/Conv"
    table = runner.invoke(app, ["shape", str(path)], env={"COLUMNS": "80"})
    assert table.exit_code == 0 and "11,689,512" in table.output
    # ONNX names keep their capitals: --layer finds them as written
    unit = ["--layer", "/layer2/layer2.0/relu_1/Relu", "--unit", "2,2"]
    done = runner.invoke(app, ["receptive-field", str(path), *unit])
    assert done.exit_code == 0, done.output
    rf = runner.invoke(app, ["receptive-field", str(path), "--json"])
    assert rf.exit_code == 0, rf.output
    rf_spec = runner.invoke(app, ["receptive-field", "resnet18", "--json"])
    ours, theirs = json.loads(rf.output), json.loads(rf_spec.output)
    assert ours["layers"][-1]["receptive_field"] == theirs["layers"][-1]["receptive_field"]


def test_dynamic_input_needs_an_input_shape(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 4))  # fmt: skip
    path = _export(model, (3, 32, 32), tmp_path / "dyn.onnx", dynamic=True)
    runner = CliRunner()
    done = runner.invoke(app, ["shape", str(path)])
    assert done.exit_code == 2 and "no fixed shape" in done.output
    assert "give the input shape" in done.output
    done = runner.invoke(app, ["shape", str(path), "--input", "3x64x48", "--json"])
    assert done.exit_code == 0, done.output
    layers = json.loads(done.output)["layers"]
    assert layers[0]["output_shape"] == [8, 32, 24]
    assert json.loads(done.output)["total_params"] == _torch_params(model)


def _random_torch_graph(rng: np.random.Generator):
    """A random residual/concat network and its input shape, in plain torch.nn."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c = int(rng.integers(2, 6))
            self.shape = (c, int(rng.integers(12, 25)), int(rng.integers(12, 25)))
            width = int(rng.integers(2, 5)) * 2
            self.stem = nn.Conv2d(c, width, 3, 1, 1, bias=bool(rng.random() < 0.5))
            self.a = nn.Sequential(
                nn.Conv2d(width, width, 3, 1, 2, dilation=2, groups=2), nn.BatchNorm2d(width)
            )
            self.b = nn.Conv2d(width, width // 2, 1)
            self.c = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(width, 3, 1))
            self.pool = (nn.AvgPool2d(2, ceil_mode=True) if rng.random() < 0.5
                         else nn.MaxPool2d(3, 2, 1))  # fmt: skip
            self.act = nn.LeakyReLU(0.1) if rng.random() < 0.5 else nn.Tanh()
            self.fc = nn.Linear(width + width // 2 + 3, int(rng.integers(2, 9)))

        def forward(self, x):
            x = self.act(self.stem(x))
            x = torch.relu(x + self.a(x))
            x = torch.cat([x, self.b(x), self.c(x)], 1)
            x = self.pool(x)
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    return Net()


def _spec_of(net) -> str:
    """The same network written as a cnnkit spec."""
    stem, a, b, c, pool, act = net.stem, net.a[0], net.b, net.c[1], net.pool, net.act
    act_text = "leakyrelu 0.1" if isinstance(act, nn.LeakyReLU) else "tanh"
    if isinstance(pool, nn.AvgPool2d):
        pool_text = "pool avg k=2 ceil=true"
    else:
        pool_text = "pool max k=3 s=2 p=1"
    return "\n".join(
        [
            "input " + " ".join(map(str, net.shape)),
            f"conv {stem.out_channels} k=3 p=1 bias={str(stem.bias is not None).lower()}",
            act_text,
            f"residual {{ conv {a.out_channels} k=3 p=2 d=2 groups=2; bn }}",
            "relu",
            f"concat {{ conv {b.out_channels} k=1 }} {{ pool max k=3 s=1 p=1; "
            f"conv {c.out_channels} k=1 }} {{ }}",
            pool_text,
            "gap",
            f"fc {net.fc.out_features}",
        ]
    )


@pytest.mark.parametrize("seed", range(4))
def test_random_graphs_match_their_spec_and_pytorch(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    net = _random_torch_graph(rng)
    path = _export(net, net.shape, tmp_path / "net.onnx")
    graph = arch.parse(str(path))
    totals, rows = _figures(graph)
    assert totals["total_params"] == _torch_params(net)
    spec_totals, spec_rows = _figures(arch.parse(_spec_of(net)))
    assert totals == spec_totals and rows == spec_rows
    assert _final_field(graph) == _final_field(arch.parse(_spec_of(net)))
    # PyTorch's own output shape
    out = net.eval()(torch.zeros(1, *net.shape))
    assert arch.infer(graph)[-1].output_shape == tuple(out.shape[1:])


@pytest.mark.parametrize("seed", range(4))
def test_random_chains_match_pytorch(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(50 + seed)
    torch.manual_seed(seed)
    c, h = int(rng.integers(1, 4)), int(rng.integers(10, 30))
    layers, spec, ch = [], [f"input {c} {h} {h}"], c
    for _ in range(int(rng.integers(1, 4))):
        out, k = int(rng.integers(2, 9)), int(rng.integers(1, 5))
        s, p = int(rng.integers(1, 3)), int(rng.integers(0, k))
        layers += [nn.Conv2d(ch, out, k, s, p), nn.ReLU6()]
        spec += [f"conv {out} k={k} s={s} p={p}", "relu6"]
        ch = out
    layers += [nn.Flatten(), nn.LazyLinear(5)]
    net = nn.Sequential(*layers)
    net(torch.zeros(1, c, h, h))  # materialise the lazy layer
    spec.append("fc 5")
    path = _export(net, (c, h, h), tmp_path / "chain.onnx")
    graph = arch.parse(str(path))
    assert _figures(graph) == _figures(arch.parse("\n".join(spec)))
    assert arch.totals(arch.infer(graph))["total_params"] == _torch_params(net)


def test_one_dimensional_network_matches_its_spec(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv1d(2, 8, 5, stride=2, padding=2),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(8, 4, 3, dilation=2),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    path = _export(net, (2, 100), tmp_path / "signal.onnx")
    spec = "input 2 100; conv 8 k=5 s=2 p=2; relu; pool max k=2; conv 4 k=3 d=2; gap; fc 3"
    graph = arch.parse(str(path))
    assert _figures(graph) == _figures(arch.parse(spec))
    assert _figures(graph)[0]["total_params"] == _torch_params(net)
    assert _final_field(graph) == _final_field(arch.parse(spec))


class _ViewNet(nn.Module):
    """Flattens with ``x.view(x.size(0), -1)``: with a dynamic batch, PyTorch computes the
    target shape in the graph (Shape, Gather, Unsqueeze, Concat) instead of storing it."""

    def __init__(self, keep_channels: bool = False) -> None:
        super().__init__()
        self.keep_channels = keep_channels
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 2)

    def forward(self, x):
        x = self.conv(x)
        if self.keep_channels:
            x = x.view(x.size(0), x.size(1), -1).flatten(1)
        return self.fc(x.view(x.size(0), -1))


def test_a_flatten_computed_from_the_batch_size_is_followed(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _ViewNet()
    path = tmp_path / "view.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net.eval(), (torch.zeros(1, 3, 8, 8),), str(path), input_names=["x"],
            dynamic_axes={"x": {0: "N"}}, dynamo=False,
        )  # fmt: skip
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Shape", "Gather", "Reshape"} <= ops
    graph = arch.parse(str(path))
    assert _figures(graph) == _figures(arch.parse("input 3 8 8; conv 4 k=3; fc 2"))
    other = tmp_path / "channels.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _ViewNet(keep_channels=True).eval(), (torch.zeros(1, 3, 8, 8),), str(other),
            input_names=["x"], dynamic_axes={"x": {0: "N"}}, dynamo=False,
        )  # fmt: skip
    with pytest.raises(ValueError, match="other than the batch|not followed|not supported"):
        arch.parse(str(other))


def test_train_from_a_dynamic_shape_pytorch_export(tmp_path: Path) -> None:
    """The data set gives the input shape the file leaves open; weights start fresh."""
    from cnnkit.nn.serialize import load_model

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU6(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(8 * 4 * 4, 10))  # fmt: skip
    path = _export(net, (1, 8, 8), tmp_path / "net.onnx", dynamic=True)
    out = tmp_path / "net.npz"
    done = CliRunner().invoke(app, ["train", "--arch", str(path), "--epochs", "1", "-o", str(out)])
    assert done.exit_code == 0, done.output
    model, header = load_model(out)
    assert model.parameter_count() == _torch_params(net)
    assert json.loads(header["spec"])["layers"][0]["name"] == "/0/Conv"


def test_zero_padding_layers_fold_into_the_layer_that_reads_them(tmp_path: Path) -> None:
    """nn.ZeroPad2d exports as Pad, its amounts computed from constants by PyTorch."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.ZeroPad2d(1), nn.Conv2d(3, 4, 3), nn.ReLU(), nn.ZeroPad2d((1, 2, 0, 3)),
        nn.Conv2d(4, 2, 3, stride=2), nn.ZeroPad2d(1), nn.MaxPool2d(3, 2),
    )  # fmt: skip
    path = _export(net, (3, 9, 9), tmp_path / "pad.onnx")
    graph = arch.parse(str(path))
    infos = arch.infer(graph)
    assert [i.pads for i in infos if i.kind in ("conv", "pool")] == [
        ((1, 1), (1, 1)),
        ((0, 3), (1, 2)),
        ((1, 1), (1, 1)),
    ]
    assert infos[-1].output_shape == tuple(net.eval()(torch.zeros(1, 3, 9, 9)).shape[1:])
    assert arch.totals(infos)["total_params"] == _torch_params(net)
    spec = "input 3 9 9; conv 4 k=3 p=1; relu"
    assert _figures(arch.parse(spec))[1] <= _figures(graph)[1]
    # what a network trained from this file stores reads back to the same figures
    assert _figures(arch.parse(arch.source_text(str(path)))) == _figures(graph)
    reflect = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(3, 4, 3))
    path = _export(reflect, (3, 9, 9), tmp_path / "reflect.onnx")
    with pytest.raises(ValueError, match="only zero padding"):
        arch.parse(str(path))


def _randomise_batch_norms(net, seed: int) -> None:
    """Running statistics and affine parameters of a trained network, not the defaults."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.2)


@pytest.mark.parametrize("seed", range(3))
def test_imported_pytorch_weights_give_pytorchs_outputs(tmp_path: Path, seed: int) -> None:
    """cnnkit import: the model file computes what onnxruntime and PyTorch compute."""
    from cnnkit.nn.serialize import load_model

    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    net = _random_torch_graph(rng)
    _randomise_batch_norms(net, seed)
    path = _export(net, net.shape, tmp_path / "net.onnx", dynamic=True)
    out = tmp_path / "net.npz"
    shape = "x".join(map(str, net.shape))
    done = CliRunner().invoke(app, ["import", str(path), str(out), "--input", shape])
    assert done.exit_code == 0, done.output
    model, header = load_model(out)
    assert model.parameter_count() == _torch_params(net)
    assert header["class_names"] == [str(i) for i in range(net.fc.out_features)]
    x = rng.normal(size=(8, *net.shape)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x})[0]
    np.testing.assert_allclose(model.predict_logits(x), expected, atol=1e-4)
    with torch.no_grad():
        np.testing.assert_allclose(model.predict_logits(x), net.eval()(torch.from_numpy(x)),
                                   atol=1e-4)  # fmt: skip
