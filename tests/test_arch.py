"""The spec parser and shape inference, against counting, real forward passes and PyTorch."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from random_specs import random_graph_spec, random_spec

from cnnkit import arch as spec
from cnnkit.arch import SpecError

# ----------------------------------------------------------------------------- helpers


def windows_by_counting(n: int, span: int, stride: int, lo: int, hi: int) -> int:
    """Output length by walking the window along the padded input (no formula)."""
    count, start = 0, 0
    while start + span <= n + lo + hi:
        count += 1
        start += stride
    return count


# ----------------------------------------------------------------------------- parsing


def test_text_spec_fields():
    arch = spec.parse(
        "input 3 32 32  # rgb\n"
        "conv 16 k=3x5 s=2 p=1x2 d=1x2 groups=1 bias=false\n"
        "\n"
        "pool avg k=2 s=1 p=1 ceil=true\n"
        "leakyrelu 0.2\n"
        "dropout 0.25\n"
        "bn\nflatten\nfc 10\n"
    )
    assert arch.input_shape == (3, 32, 32)
    conv, pool, lrelu, drop, bn, flat, fc = arch.layers
    assert (conv.kind, conv.out_channels, conv.kernel, conv.stride) == ("conv", 16, (3, 5), (2, 2))
    assert (conv.padding, conv.dilation, conv.bias, conv.line) == ((1, 2), (1, 2), False, 2)
    assert conv.text == "conv 16 k=3x5 s=2 p=1x2 d=1x2 groups=1 bias=false"
    assert (pool.mode, pool.kernel, pool.stride, pool.padding, pool.ceil) == (
        "avg",
        (2, 2),
        (1, 1),
        (1, 1),
        True,
    )
    assert pool.line == 4  # the blank line still counts
    assert lrelu.slope == 0.2 and drop.rate == 0.25
    assert [bn.kind, flat.kind, fc.kind, fc.units, fc.bias] == ["bn", "flatten", "fc", 10, True]


def test_pool_stride_defaults_to_kernel():
    (pool,) = spec.parse("input 1 8 8; pool max k=3").layers
    assert pool.stride == (3, 3)


def _fields(arch):
    return [
        {k: v for k, v in vars(layer).items() if k not in ("line", "text")} for layer in arch.layers
    ]


def test_every_form_gives_the_same_architecture(tmp_path):
    text = "input 1 28 28\nconv 6 k=5 p=2\ntanh\npool avg k=2\nconv 16 k=5\nfc 10 bias=false"
    from_text = spec.parse(text)
    inline = spec.parse(text.replace("\n", "; "))
    path = tmp_path / "net.txt"
    path.write_text(text)
    from_file = spec.parse(str(path))
    as_json = [
        {"layer": "input", "shape": [1, 28, 28]},
        {"layer": "conv", "out_channels": 6, "k": 5, "p": 2},
        {"type": "tanh"},
        {"layer": "pool", "mode": "avg", "kernel_size": [2, 2]},
        {"layer": "conv2d", "filters": 16, "k": "5x5"},
        {"layer": "linear", "units": 10, "bias": False},
    ]
    from_json = spec.parse(json.dumps(as_json))
    json_path = tmp_path / "net.json"
    json_path.write_text(json.dumps({"name": "mine", "layers": as_json}))
    from_json_file = spec.parse(str(json_path))
    round_trip = spec.parse(spec.to_text(from_json))
    assert spec.source_text(str(path)) == text
    assert spec.parse(spec.source_text("lenet5")).layers == spec.parse("lenet5").layers
    expected = _fields(from_text)
    for other in (inline, from_file, from_json, from_json_file, round_trip):
        assert _fields(other) == expected
        assert other.input_shape == (1, 28, 28)
    assert from_file.name == "net" and from_json_file.name == "mine"
    assert inline.where == "item" and from_file.where == "line"
    assert inline.layers[2].line == 4 and from_file.layers[2].line == 4


def test_aliases():
    a = spec.parse("input 2 9 9; maxpool k=2; avgpool k=2; dense 4")
    b = spec.parse("input 2 9 9; pool max k=2; pool avg k=2; fc 4")
    assert _fields(a) == _fields(b)
    c = spec.parse("input 2 9 9; batchnorm; lrelu slope=0.3; globalavgpool; linear out_features=3")
    assert [layer.kind for layer in c.layers] == ["bn", "leakyrelu", "gap", "fc"]
    assert c.layers[1].slope == 0.3
    assert spec.parse("input 1 4 4; dropout p=0.3").layers[0].rate == 0.3


def test_input_override_replaces_and_can_supply_the_input_line():
    arch = spec.parse("vgg16", input_shape=(3, 32, 32))
    assert arch.input_shape == (3, 32, 32)
    assert spec.infer(arch)[-2].input_shape == (4096,)
    headless = spec.parse("conv 4 k=3; relu", input_shape=(1, 5, 5))
    assert spec.infer(headless)[0].output_shape == (4, 3, 3)
    assert spec.parse_shape("3x224x224") == (3, 224, 224)
    assert spec.parse_shape("1 8") == (1, 8)


def test_shipped_names_all_parse():
    names = spec.shipped()
    for required in ("lenet5", "alexnet", "vgg16", "digits", "shapes", "lecture-valid"):
        assert required in names
    for name in names:
        assert spec.infer(spec.parse(name))


@pytest.mark.parametrize(
    "source, fragments",
    [
        ("input 1 8 8; cnov 4 k=3", ["item 2", "'cnov'", "did you mean 'conv'"]),
        ("input 1 8 8; conv 4 k=3 strid=2", ["item 2", "'strid'", "did you mean 'stride'"]),
        ("input 1 8 8; conv k=3", ["item 2", "output channels"]),
        ("input 1 8 8; conv 4", ["item 2", "kernel size"]),
        ("input 1 8 8; conv 4 k=", ["item 2", "k= has no value"]),
        ("input 1 8 8; conv 4 k=abc", ["item 2", "'abc'"]),
        ("input 1 8 8; conv 0 k=3", ["item 2", "output channels must be >= 1, got 0"]),
        ("input 1 8 8; conv 4 k=-3", ["item 2", "kernel size k must be >= 1, got -3"]),
        ("input 1 8 8; conv 4 k=3 s=0", ["item 2", "stride s must be >= 1, got 0"]),
        ("input 1 8 8; conv 4 k=3 p=-1", ["item 2", "padding p must be >= 0, got -1"]),
        ("input 1 8 8; conv 4 k=3 p=sme", ["item 2", "'sme'"]),
        ("input 1 8 8; conv 4 k=3x3x3", ["item 2", "3 sizes", "2 spatial"]),
        ("input 1 8 8; conv 4 k=3 bias=maybe", ["item 2", "'maybe'"]),
        ("conv 4 k=3; input 1 8 8", ["item 1", "layer before input"]),
        ("input 1 8 8; relu; input 1 8 8", ["item 3", "second input"]),
        ("input 0 8 8; relu", ["item 1", "0"]),
        ("input 1 -8 8; relu", ["item 1", "-8"]),
        ("input 1; relu", ["item 1", "spatial"]),
        ("input 1 8 8", ["no layers"]),
        ("input 1 8 8; pool k=2", ["item 2", "max or avg"]),
        ("input 1 8 8; pool min k=2", ["item 2", "'min'"]),
        ("input 1 8 8; pool max k=2 p=2", ["item 2", "p=2", "half the kernel"]),
        ("input 1 8 8; pool max k=2 p=same", ["item 2", "'same'"]),
        ("input 1 8 8; fc", ["item 2", "number of units"]),
        ("input 1 8 8; fc 0", ["item 2", "units must be >= 1, got 0"]),
        ("input 1 8 8; dropout 1.5", ["item 2", "1.5"]),
        ("input 1 8 8; relu 3", ["item 2", "takes no values"]),
        ("input 1 8 8; fc 10 20", ["item 2", "one value"]),
        ("input 1 8 8\ncnov 4 k=3", ["line 2", "did you mean 'conv'"]),
        ('[{"layer": "input", "shape": [1, 8, 8]}, {"k": 3}]', ["item 2", "layer name"]),
        ('[{"layer": "input", "shape": [1, 8, 8]}, {"layer": "conv", "k": 3}]', ["item 2"]),
        ("[1, 2", ["not valid JSON"]),
        ("lenett5", ["did you mean 'lenet5'"]),
    ],
)
def test_parse_errors_name_the_line_and_value(source, fragments):
    with pytest.raises(SpecError) as info:
        spec.parse(source)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_missing_file_is_a_file_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        spec.parse(str(tmp_path / "nope.txt"))


@pytest.mark.parametrize(
    "source, fragments",
    [
        (
            "input 1 8 8; conv 4 k=3; conv 4 k=7",
            ["conv2", "item 3", "'conv 4 k=7'", "height 6", "kernel span 7", "empty"],
        ),
        ("input 1 5 5; conv 1 k=3 d=3", ["conv1", "kernel span 7", "k=3, d=3"]),
        ("input 1 3 3; pool max k=4", ["pool1", "height 3", "kernel span 4"]),
        ("input 3 8 8; conv 4 k=3 groups=2", ["conv1", "groups=2", "(3)", "(4)"]),
        ("input 1 8 8; fc 10; conv 4 k=3", ["conv1", "flat", "10"]),
        ("input 1 8 8; gap; pool max k=2", ["pool1", "flat"]),
    ],
)
def test_infer_errors_name_the_layer_and_numbers(source, fragments):
    with pytest.raises(SpecError) as info:
        spec.infer(spec.parse(source))
    for fragment in fragments:
        assert fragment in str(info.value)


def test_layer_written_for_other_dimensions_is_refused():
    arch = spec.parse("input 1 8 8; conv 2 k=3x3")
    with pytest.raises(SpecError, match="2 spatial dimension"):
        spec.infer(spec.with_input(arch, (1, 8)))


# ----------------------------------------------------------------------------- arithmetic


def test_shipped_published_figures():
    """Parameter counts as published (torchvision for AlexNet/VGG16, LeCun 1998 for LeNet-5),
    the lecture's figures, and VGG16's well-known ~15.5 G multiply-adds."""
    expected = {
        "lenet5": 61_706,
        "alexnet": 61_100_840,
        "vgg16": 138_357_544,
        "lecture-fc": 270_000,
        "lecture-valid": 9,
        "lecture-3x3x2": 18,
        "lecture-5x5": 25,
    }
    for name, params in expected.items():
        assert spec.totals(spec.infer(spec.parse(name)))["total_params"] == params, name
    vgg = spec.totals(spec.infer(spec.parse("vgg16")))
    assert 15.4e9 < vgg["total_macs"] < 15.6e9
    alex = spec.infer(spec.parse("alexnet"))
    assert [i.output_shape for i in alex if i.kind == "pool"] == [
        (64, 27, 27),
        (192, 13, 13),
        (256, 6, 6),
    ]
    assert spec.infer(spec.parse("lecture-valid"))[0].output_shape == (1, 6, 6)
    assert spec.infer(spec.parse("lecture-1d"))[-1].output_shape == (1, 1)


def test_counts_from_first_principles():
    arch = spec.parse("input 4 10 12; conv 6 k=3x5 s=2 p=1 groups=2; bn; pool max k=2; fc 7")
    conv, bn, pool, fc = spec.infer(arch)
    oh, ow = (10 + 2 - 3) // 2 + 1, (12 + 2 - 5) // 2 + 1
    assert conv.output_shape == (6, oh, ow)
    assert conv.params == 6 * 2 * 15 + 6
    assert conv.macs == 6 * oh * ow * 2 * 15
    assert bn.params == 12 and bn.macs == 0
    assert pool.output_shape == (6, oh // 2, ow // 2)
    assert pool.other_ops == 6 * (oh // 2) * (ow // 2) * 4 and pool.macs == 0
    flat = 6 * (oh // 2) * (ow // 2)
    assert fc.params == flat * 7 + 7 and fc.macs == flat * 7
    assert fc.activation_bytes == 7 * 4


@pytest.mark.parametrize("seed", range(40))
def test_output_sizes_by_counting_windows(seed):
    arch = random_spec(seed)
    for info in spec.infer(arch):
        layer = info.layer
        if info.kind == "conv":
            sizes = info.input_shape[1:]
            for i, n in enumerate(sizes):
                span = layer.dilation[i] * (layer.kernel[i] - 1) + 1
                lo, hi = info.pads[i]
                assert info.output_shape[1 + i] == windows_by_counting(
                    n, span, layer.stride[i], lo, hi
                )
                # "same" padding keeps ceil(n / stride) positions (TensorFlow's definition).
                if layer.padding == "same":
                    assert info.output_shape[1 + i] == math.ceil(n / layer.stride[i])
                    assert 0 <= hi - lo <= 1
                # "full": every placement that overlaps the input by at least one tap.
                if layer.padding == "full" and layer.stride[i] == 1:
                    assert info.output_shape[1 + i] == n + span - 1


def test_dropped_and_border_notes_by_enumeration():
    arch = spec.parse("input 1 8 9; conv 1 k=3 s=2; conv 1 k=2 p=1 s=1")
    strided, padded = spec.infer(arch)
    # Windows start at 0, 2, 4 (height 8): the last covers rows 4..6, so row 7 is dropped;
    # width 9: starts 0, 2, 4, 6 cover columns 0..8, nothing dropped.
    covered = {start + t for start in range(0, 8 - 2, 2) for t in range(3)}
    assert strided.dropped == (8 - len(covered), 0)
    assert any("drops the last 1 input row" in note for note in strided.notes)
    assert padded.border_lost == (0, 0)  # k=2 with p=1 grows the map: nothing lost
    valid = spec.infer(spec.parse("lecture-valid"))[0]
    assert valid.border_lost == (2, 2)
    assert any("8 -> 6" in note for note in valid.notes)


def _torch_model(arch):
    """The architecture as torch.nn modules on the meta device (shapes only, no memory)."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    modules = []
    shape = arch.input_shape
    ndim = len(shape) - 1
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[ndim]
    pools = {
        "max": {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[ndim],
        "avg": {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}[ndim],
    }
    for info in spec.infer(arch):
        layer = info.layer
        c = info.input_shape[0]
        if info.kind == "conv":
            pads = info.pads
            pad_mod = None
            if any(lo != hi for lo, hi in pads):
                flat = [v for lo_hi in reversed(pads) for v in lo_hi]
                pad_mod = nn.ZeroPad2d(flat) if ndim == 2 else None
            if pad_mod is not None:
                modules.append(pad_mod)
                padding = 0
            else:
                padding = tuple(lo for lo, _ in pads)
            modules.append(
                conv(
                    c,
                    layer.out_channels,
                    layer.kernel,
                    layer.stride,
                    padding,
                    layer.dilation,
                    layer.groups,
                    layer.bias,
                    device="meta",
                )
            )
        elif info.kind == "pool":
            modules.append(
                pools[layer.mode](layer.kernel, layer.stride, layer.padding, ceil_mode=layer.ceil)
            )
        elif info.kind == "fc":
            modules.append(nn.Flatten())
            modules.append(
                nn.Linear(math.prod(info.input_shape), layer.units, layer.bias, device="meta")
            )
        elif info.kind == "bn":
            bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm1d, 3: nn.BatchNorm2d, 4: nn.BatchNorm3d}[
                len(info.input_shape)
            ]
            modules.append(bn(c, device="meta"))
        elif info.kind == "gap":
            modules.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
        elif info.kind == "flatten":
            modules.append(nn.Flatten())
        else:
            modules.append(nn.Identity())
    return torch, nn.Sequential(*modules)


@pytest.mark.parametrize(
    "name", ["lenet5", "alexnet", "vgg16", "digits", "shapes", "lecture-3x3x2", "lecture-5x5"]
)
def test_shipped_against_torch(name):
    arch = spec.parse(name)
    torch, model = _torch_model(arch)
    infos = spec.infer(arch)
    assert sum(p.numel() for p in model.parameters()) == spec.totals(infos)["total_params"]
    x = torch.empty((1, *arch.input_shape), device="meta")
    assert tuple(model(x).shape[1:]) == infos[-1].output_shape


@pytest.mark.parametrize("seed", range(40))
def test_random_specs_against_torch(seed):
    arch = random_spec(seed)
    torch, model = _torch_model(arch)
    x = torch.empty((1, *arch.input_shape), device="meta")
    infos = spec.infer(arch)
    shapes = []
    # Walk module by module; skip the explicit pads that stand in for asymmetric "same".
    for module in model:
        x = module(x)
        if not isinstance(module, torch.nn.ZeroPad2d):
            shapes.append(tuple(x.shape[1:]))
    assert shapes == [i.output_shape for i in infos]
    assert sum(p.numel() for p in model.parameters()) == spec.totals(infos)["total_params"]


@pytest.mark.parametrize("seed", range(12))
def test_random_specs_against_cnnkit_ops(seed):
    """Output shapes against real forward passes of the core ops."""
    ops = pytest.importorskip("cnnkit.ops")
    arch = random_spec(seed + 100)
    x = np.zeros((1, *arch.input_shape))
    for info in spec.infer(arch):
        layer = info.layer
        if info.kind == "conv":
            w = np.zeros((layer.out_channels, x.shape[1] // layer.groups, *layer.kernel))
            x = ops.conv2d(
                x,
                w,
                stride=layer.stride,
                padding=layer.padding,
                dilation=layer.dilation,
                groups=layer.groups,
            )
        elif info.kind == "pool":
            pool = ops.max_pool2d if layer.mode == "max" else ops.avg_pool2d
            x = pool(x, layer.kernel, layer.stride, layer.padding, ceil_mode=layer.ceil)
        assert x.shape[1:] == info.output_shape, info.name


def test_one_dimensional_specs_against_cnnkit_ops():
    ops = pytest.importorskip("cnnkit.ops")
    arch = spec.parse("input 2 13; conv 3 k=3 d=2 p=same; pool avg k=3 s=2 ceil=true; conv 1 k=2")
    x = np.zeros((1, *arch.input_shape))
    for info in spec.infer(arch):
        layer = info.layer
        if info.kind == "conv":
            w = np.zeros((layer.out_channels, x.shape[1], *layer.kernel))
            x = ops.conv1d(
                x, w, stride=layer.stride, padding=layer.padding, dilation=layer.dilation
            )
        else:
            x = ops.avg_pool1d(x, layer.kernel, layer.stride, layer.padding, ceil_mode=layer.ceil)
        assert x.shape[1:] == info.output_shape


def test_three_dimensional_spec_against_torch_and_ops():
    arch = spec.parse("input 2 5 9 8; conv 4 k=3x3x2 s=1x2x2 p=1; pool max k=2 ceil=true; bn; gap")
    infos = spec.infer(arch)
    assert [i.output_shape for i in infos] == [(4, 5, 5, 5), (4, 3, 3, 3), (4, 3, 3, 3), (4,)]
    torch, model = _torch_model(spec.parse(spec.to_text(arch).replace("gap\n", "")))
    x = torch.empty((1, *arch.input_shape), device="meta")
    assert tuple(model(x).shape[1:]) == infos[1].output_shape
    assert sum(p.numel() for p in model.parameters()) == spec.totals(infos)["total_params"]
    ops = pytest.importorskip("cnnkit.ops")
    conv = infos[0].layer
    y = ops.conv3d(
        np.zeros((1, *arch.input_shape)),
        np.zeros((4, 2, *conv.kernel)),
        stride=conv.stride,
        padding=conv.padding,
    )
    assert y.shape[1:] == infos[0].output_shape


def test_spec_module_imports_no_numpy():
    import subprocess
    import sys

    code = (
        "import sys, cnnkit.arch; "
        "print(any(m.split('.')[0] in ('numpy', 'numba') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_shipped_training_nets_fit_their_datasets():
    shapes_data = pytest.importorskip("cnnkit.data.shapes")
    images, _ = shapes_data.generate_shapes(count=4)
    shapes = spec.parse("shapes")
    assert shapes.input_shape == images.shape[1:]
    assert spec.infer(shapes)[-1].output_shape == (len(shapes_data.SHAPE_CLASSES),)
    digits = spec.parse("digits")
    assert digits.input_shape == (1, 8, 8)
    assert spec.infer(digits)[-1].output_shape == (10,)


# ----------------------------------------------------------------------------- graphs


RESIDUAL = """input 8 16 16
residual {               # y = body(x) + x
  conv 8 k=3 p=1 bias=false; bn; relu
  conv 8 k=3 p=1 bias=false; bn
}
relu
residual {
  conv 16 k=3 s=2 p=1 bias=false; bn; relu
  conv 16 k=3 p=1 bias=false; bn
} shortcut {             # a projection where the shapes differ
  conv 16 k=1 s=2 bias=false; bn
}
concat {
  conv 4 k=1
} {
  conv 2 k=1; relu; conv 4 k=5 p=2
} {
  pool max k=3 s=1 p=1; conv 2 k=1
} {
}
repeat 3 {
  conv 26 k=3 p=1 groups=26; relu6
}
gap
fc 10
"""


def test_graph_spec_nodes_inputs_and_shapes():
    arch = spec.parse(RESIDUAL)
    infos = {i.name: i for i in spec.infer(arch)}
    assert not arch.is_chain and arch.output == "fc1"
    assert infos["add1"].inputs == ("bn2", "input")
    assert infos["add2"].inputs == ("bn4", "shortcut.bn1")
    assert infos["shortcut.conv1"].inputs == ("relu2",)
    assert infos["add2"].output_shape == (16, 8, 8)
    assert infos["concat1"].inputs == (
        "concat1.0.conv1",
        "concat1.1.conv2",
        "concat1.2.conv1",
        "add2",
    )
    assert infos["concat1"].output_shape == (4 + 4 + 2 + 16, 8, 8)
    assert [n for n in infos if n.startswith("repeat1.")] == [
        f"repeat1.{i}.{k}" for i in range(3) for k in ("conv1", "relu6_1")
    ]
    assert infos["repeat1.2.conv1"].params == 26 * 9 + 26
    assert (infos["add1"].layer.text, infos["concat1"].layer.text) == ("residual", "concat")
    # the add does (inputs - 1) * elements additions, no MACs, no parameters
    assert (infos["add1"].macs, infos["add1"].other_ops, infos["add1"].params) == (0, 8 * 256, 0)
    # every node's input is an earlier node's output
    names = ["input"]
    for info in infos.values():
        assert set(info.inputs) <= set(names)
        names.append(info.name)


def test_graph_text_json_and_writers_agree():
    arch = spec.parse(RESIDUAL)

    def structure(a):
        index = {"input": -1, **{n.name: i for i, n in enumerate(a.nodes)}}
        return [(n.kind, dict(n.attrs), tuple(index[i] for i in n.inputs)) for n in a.nodes]

    blocks = [
        {"layer": "input", "shape": [8, 16, 16]},
        {
            "layer": "residual",
            "body": [
                {"layer": "conv", "out": 8, "k": 3, "p": 1, "bias": False},
                {"layer": "bn"},
                {"layer": "relu"},
                {"layer": "conv", "out": 8, "k": 3, "p": 1, "bias": False},
                {"layer": "bn"},
            ],
        },
        {"layer": "relu"},
        {
            "layer": "residual",
            "body": [
                {"layer": "conv", "out": 16, "k": 3, "s": 2, "p": 1, "bias": False},
                {"layer": "bn"},
                {"layer": "relu"},
                {"layer": "conv", "out": 16, "k": 3, "p": 1, "bias": False},
                {"layer": "bn"},
            ],
            "shortcut": [
                {"layer": "conv", "out": 16, "k": 1, "s": 2, "bias": False},
                {"layer": "bn"},
            ],
        },
        {
            "layer": "concat",
            "branches": [
                [{"layer": "conv", "out": 4, "k": 1}],
                [
                    {"layer": "conv", "out": 2, "k": 1},
                    {"layer": "relu"},
                    {"layer": "conv", "out": 4, "k": 5, "p": 2},
                ],
                [{"layer": "maxpool", "k": 3, "s": 1, "p": 1}, {"layer": "conv", "out": 2, "k": 1}],
                [],
            ],
        },
        {
            "layer": "repeat",
            "times": 3,
            "body": [
                {"layer": "conv", "out": 26, "k": 3, "p": 1, "groups": 26},
                {"layer": "relu6"},
            ],
        },
        {"layer": "gap"},
        {"layer": "fc", "units": 10},
    ]
    from_blocks = spec.parse(json.dumps(blocks))
    assert structure(from_blocks) == structure(arch)
    assert [n.name for n in from_blocks.nodes] == [n.name for n in arch.nodes]
    round_text = spec.parse(spec.to_text(arch))
    assert sorted(map(str, structure(round_text))) == sorted(map(str, structure(arch)))
    as_json = spec.parse(json.dumps(spec.to_json(arch)))
    assert structure(as_json) == structure(arch)
    assert [n.name for n in as_json.nodes] == [n.name for n in arch.nodes]
    assert spec.to_text(spec.parse("lenet5")) == spec.to_text(
        spec.parse(spec.to_text(spec.parse("lenet5")))
    )


def test_builder_makes_the_same_graph_as_the_parser():
    b = spec.Builder("block", (8, 16, 16))
    b.add("conv", out_channels=8, k=3, p=1, bias=False)
    b.add("bn")
    x = b.add("relu")
    b.add("conv", inputs=[x], out_channels=8, k=3, p=1, bias=False)
    y = b.add("bn")
    b.add("add", inputs=[y, "input"], name="add1")
    b.add("relu")
    built = b.build()
    parsed = spec.parse(
        "input 8 16 16; residual { conv 8 k=3 p=1 bias=false; bn; relu; "
        "conv 8 k=3 p=1 bias=false; bn }; relu"
    )
    assert [(n.kind, n.name, n.inputs, n.attrs) for n in built.nodes] == [
        (n.kind, n.name, n.inputs, n.attrs) for n in parsed.nodes
    ]
    with pytest.raises(SpecError, match="earlier node"):
        spec.Builder("x", (1, 4, 4)).add("relu", inputs=["nope"])
    with pytest.raises(SpecError, match="never used"):
        b2 = spec.Builder("x", (1, 4, 4))
        b2.add("relu", name="a")
        b2.add("relu", inputs=["input"], name="b")
        b2.build()
    with pytest.raises(SpecError, match="two or more"):
        spec.Builder("x", (1, 4, 4)).add("add")


@pytest.mark.parametrize(
    "source, fragments",
    [
        (
            "input 4 8 8\nresidual {\n  conv 8 k=3 p=1\n}\n",
            ["add1", "line 2", "'residual'", "add needs equal shapes", "8x8x8", "4x8x8"],
        ),
        (
            "input 4 8 8; residual { conv 4 k=3 s=2 p=1 } shortcut { conv 4 k=1 }",
            ["item 2", "residual", "4x4x4", "4x8x8"],
        ),
        (
            "input 4 8 8\nconcat {\n  conv 2 k=1\n} {\n  pool max k=2\n}\n",
            ["concat1", "line 2", "equal spatial sizes", "2x8x8", "4x4x4"],
        ),
    ],
)
def test_branch_merge_errors_name_the_block_and_both_shapes(source, fragments):
    with pytest.raises(SpecError) as info:
        spec.infer(spec.parse(source))
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "source, fragments",
    [
        ("input 1 8 8; residual { relu", ["never closed"]),
        ("input 1 8 8; relu }", ["without a matching"]),
        ("input 1 8 8; relu { relu }", ["'relu' cannot open"]),
        ("input 1 8 8; residual", ["needs a { ... } group"]),
        ("input 1 8 8; shortcut { relu }", ["shortcut"]),
        ("input 1 8 8; concat { relu }", ["two or more branches"]),
        ("input 1 8 8; repeat { relu }", ["repeat needs a count"]),
        ("input 1 8 8; repeat 0 { relu }", ["repeat count must be >= 1"]),
        ("input 1 8 8; residual { }", ["at least one layer"]),
        ("input 1 8 8; residual k=3 { relu }", ["unknown option 'k'"]),
        ("input 1 8 8; add", ["two or more inputs", "residual"]),
        ("input 1 8 8; relu name=a; relu name=a", ["'a' is used twice"]),
        ("input 1 8 8\nresidual {\n  cnov 4 k=3\n}", ["line 3", "did you mean 'conv'"]),
        ('[{"layer": "input", "shape": [1, 4, 4]}, {"layer": "relu", "inputs": ["x"]}]', ["'x'"]),
    ],
)
def test_graph_parse_errors(source, fragments):
    with pytest.raises(SpecError) as info:
        spec.infer(spec.parse(source))
    assert "\n" not in str(info.value)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_shipped_graphs_published_figures():
    """torchvision's parameter counts exactly; multiply-adds within 0.5 % of the published
    1.81 G (ResNet-18), 4.09 G (ResNet-50) and 0.30 G (MobileNetV2)."""
    for name, params, macs in (
        ("resnet18", 11_689_512, 1.81e9),
        ("resnet50", 25_557_032, 4.09e9),
        ("mobilenet_v2", 3_504_872, 0.30e9),
    ):
        totals = spec.totals(spec.infer(spec.parse(name)))
        assert totals["total_params"] == params, name
        assert abs(totals["total_macs"] / macs - 1) < 0.005, (name, totals["total_macs"])
    assert spec.infer(spec.parse("resnet-digits"))[-1].output_shape == (10,)


def _torch_graph(arch):
    """The graph as torch.nn modules on the meta device, run by walking the nodes."""
    torch = pytest.importorskip("torch")
    infos = spec.infer(arch)
    nn = torch.nn
    mods = []
    for info in infos:
        layer, c = info.layer, info.input_shape[0]
        if info.kind == "conv":
            pad = [v for lo_hi in reversed(info.pads) for v in lo_hi]
            conv = nn.Conv2d(
                c,
                layer.out_channels,
                layer.kernel,
                layer.stride,
                0,
                layer.dilation,
                layer.groups,
                layer.bias,
                device="meta",
            )
            mods.append(nn.Sequential(nn.ZeroPad2d(pad), conv))
        elif info.kind == "pool":
            cls = nn.MaxPool2d if layer.mode == "max" else nn.AvgPool2d
            mods.append(cls(layer.kernel, layer.stride, layer.padding, ceil_mode=layer.ceil))
        elif info.kind == "bn":
            mods.append(
                nn.BatchNorm2d(c, device="meta")
                if len(info.input_shape) > 1
                else nn.BatchNorm1d(c, device="meta")
            )
        elif info.kind == "fc":
            mods.append(
                nn.Sequential(
                    nn.Flatten(),
                    nn.Linear(math.prod(info.input_shape), layer.units, layer.bias, device="meta"),
                )
            )
        elif info.kind == "gap":
            mods.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
        elif info.kind == "flatten":
            mods.append(nn.Flatten())
        else:
            mods.append(nn.Identity())
    holder = nn.ModuleList(mods)

    def run(x):
        values = {"input": x}
        shapes = []
        for info, mod in zip(infos, holder):
            args = [values[s] for s in info.inputs]
            if info.kind == "add":
                y = sum(args[1:], args[0])
            elif info.kind == "concat":
                y = torch.cat(args, dim=1)
            else:
                y = mod(args[0])
            values[info.name] = y
            shapes.append(tuple(y.shape[1:]))
        return shapes

    return torch, holder, run


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2", "resnet-digits"])
def test_shipped_graphs_against_torch(name):
    arch = spec.parse(name)
    torch, holder, run = _torch_graph(arch)
    infos = spec.infer(arch)
    assert sum(p.numel() for p in holder.parameters()) == spec.totals(infos)["total_params"]
    shapes = run(torch.empty((1, *arch.input_shape), device="meta"))
    assert shapes == [i.output_shape for i in infos]


@pytest.mark.parametrize("seed", range(20))
def test_random_graphs_against_torch(seed):
    arch = spec.parse(random_graph_spec(seed))
    torch, holder, run = _torch_graph(arch)
    infos = spec.infer(arch)
    shapes = run(torch.empty((2, *arch.input_shape), device="meta"))
    assert shapes == [i.output_shape for i in infos]
    assert sum(p.numel() for p in holder.parameters()) == spec.totals(infos)["total_params"]


def test_asymmetric_conv_padding_pairs():
    """ONNX-style (before, after) pads: text 0+1x1+0, JSON [[0, 1], [1, 0]], Builder alike."""
    text = spec.parse("input 1 7 7; conv 2 k=2 s=2 p=0+1x1+0")
    as_json = spec.parse(
        json.dumps(
            [
                {"layer": "input", "shape": [1, 7, 7]},
                {"layer": "conv", "out": 2, "k": 2, "s": 2, "p": [[0, 1], [1, 0]]},
            ]
        )
    )
    assert text.nodes[0].padding == as_json.nodes[0].padding == ((0, 1), (1, 0))
    (info,) = spec.infer(text)
    assert info.pads == ((0, 1), (1, 0))
    assert info.output_shape[1:] == (
        windows_by_counting(7, 2, 2, 0, 1),
        windows_by_counting(7, 2, 2, 1, 0),
    )
    assert spec.parse(spec.to_text(text)).nodes[0].padding == ((0, 1), (1, 0))
    assert receptive_start(text) == (0, -1)
    with pytest.raises(SpecError, match="before\\+after"):
        spec.parse("input 1 7 7; conv 2 k=2 p=0+1+2")
    with pytest.raises(SpecError, match="one \\(before, after\\) pair"):
        spec.parse(
            '[{"layer": "input", "shape": [1, 7, 7]}, {"layer": "conv", "out": 1, '
            '"k": 2, "p": [[0, 1]]}]'
        )


def receptive_start(arch):
    return spec.receptive.fields(arch)[0].start
