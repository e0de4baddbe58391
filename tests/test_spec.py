"""The spec parser and shape inference, against counting, real forward passes and PyTorch."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from cnnkit import arch as spec
from cnnkit.arch import SpecError

# ----------------------------------------------------------------------------- helpers


def random_spec(seed: int, max_size: int = 11) -> spec.Architecture:
    """A small random 2-D spec that infers without error: conv/pool/relu stacks with strides,
    dilation, every padding form, groups and ceil-mode pools. Used by test_receptive too."""
    rnd = random.Random(seed)
    while True:
        channels = rnd.choice([1, 2])
        h, w = rnd.randint(4, max_size), rnd.randint(4, max_size)
        lines = [f"input {channels} {h} {w}"]
        c = channels
        for _ in range(rnd.randint(1, 3)):
            choice = rnd.random()
            if choice < 0.55:
                k = f"{rnd.randint(1, 3)}x{rnd.randint(1, 3)}" if rnd.random() < 0.3 else None
                k = k or str(rnd.randint(1, 3))
                s = rnd.choice(["1", "1", "2", "3", "1x2"])
                d = rnd.choice(["1", "1", "2", "2x1"])
                p = rnd.choice(["0", "1", "2", "1x0", "same", "valid", "full"])
                out = rnd.choice([1, 2, 3])
                g = c if c > 1 and out % c == 0 and rnd.random() < 0.5 else 1
                lines.append(f"conv {out} k={k} s={s} d={d} p={p} groups={g}")
                c = out
            elif choice < 0.9:
                k = rnd.randint(1, 3)
                s = rnd.randint(1, 3)
                p = rnd.randint(0, k // 2)
                mode = rnd.choice(["max", "avg"])
                ceil = rnd.choice(["true", "false"])
                lines.append(f"pool {mode} k={k} s={s} p={p} ceil={ceil}")
            else:
                lines.append("relu")
        arch = spec.parse("\n".join(lines))
        try:
            spec.infer(arch)
        except SpecError:
            continue
        return arch


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
