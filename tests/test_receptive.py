"""Receptive fields: closed forms, published figures, and a brute-force trace through the
real convolution and pooling ops (and PyTorch's autograd as a second witness)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from random_specs import random_spec

from cnnkit import arch as spec
from cnnkit.arch import SpecError, receptive


def final_field(name_or_text, layer=None):
    arch = spec.parse(name_or_text)
    fields = receptive.fields(arch)
    if layer is None:
        return fields[-1]
    return next(f for f in fields if f.name == layer)


# ----------------------------------------------------------------------------- closed forms


def test_lecture_figures():
    # 8x8 -> 3x3 valid conv -> 6x6, each unit sees 3x3.
    valid = final_field("lecture-valid")
    assert valid.output_shape == (1, 6, 6) and valid.receptive_field == (3, 3)
    # Two stacked 3x3 see what one 5x5 sees.
    assert final_field("lecture-3x3x2").receptive_field == (5, 5)
    assert final_field("lecture-5x5").receptive_field == (5, 5)
    # conv-pool-conv in 1-D: the last unit sees all 8 input samples.
    arch = spec.parse("lecture-1d")
    assert [f.receptive_field for f in receptive.fields(arch) if f.kind != "relu"] == [
        (3,),
        (4,),
        (8,),
    ]
    region = receptive.unit_region(arch, (0,))
    assert region.positions == (tuple(range(8)),) and region.padding == 0


def test_published_alexnet_and_vgg16():
    """Araujo, Norris & Sim (Distill 2019), table of receptive fields: alexnet_v2 r=195,
    effective stride 32 (at pool5); vgg_16 r=212, stride 32, effective padding 90 (pool5).
    conv5 of AlexNet sees 163 and conv5_3 of VGG16 196 (one pool stride less)."""
    alex = receptive.fields(spec.parse("alexnet"))
    pools = [f for f in alex if f.kind == "pool"]
    convs = [f for f in alex if f.kind == "conv"]
    assert pools[-1].receptive_field == (195, 195)
    assert pools[-1].effective_stride == (32, 32)
    assert convs[-1].receptive_field == (163, 163)
    vgg = receptive.fields(spec.parse("vgg16"))
    pool5 = [f for f in vgg if f.kind == "pool"][-1]
    assert pool5.output_shape == (512, 7, 7)
    assert (pool5.receptive_field, pool5.effective_stride, pool5.effective_padding) == (
        (212, 212),
        (32, 32),
        (90, 90),
    )
    assert [f for f in vgg if f.kind == "conv"][-1].receptive_field == (196, 196)


def _closed_form(arch):
    """Araujo et al.'s unrolled sums over the conv/pool layers (eq. 2, 6 and 8 of the paper),
    written independently of the recurrence in cnnkit.arch.receptive."""
    infos = [i for i in spec.infer(arch) if i.kind in ("conv", "pool")]
    ndim = len(arch.input_shape) - 1
    r, j, p = [], [], []
    for dim in range(ndim):
        kernels, strides, pads = [], [], []
        for info in infos:
            k = info.layer.kernel[dim]
            d = info.layer.dilation[dim] if info.kind == "conv" else 1
            kernels.append(d * (k - 1) + 1)
            strides.append(info.layer.stride[dim])
            pads.append(info.pads[dim][0])
        r.append(1 + sum((kernels[l] - 1) * math.prod(strides[:l]) for l in range(len(kernels))))
        j.append(math.prod(strides))
        p.append(sum(pads[l] * math.prod(strides[:l]) for l in range(len(pads))))
    return tuple(r), tuple(j), tuple(p)


@pytest.mark.parametrize("seed", range(60))
def test_recurrence_matches_closed_form(seed):
    arch = random_spec(seed)
    last = receptive.fields(arch)[-1]
    r, j, p = _closed_form(arch)
    assert last.receptive_field == r
    assert last.effective_stride == j
    assert last.effective_padding == p
    assert last.start == tuple(-v for v in p)
    assert last.center == tuple(-pv + (rv - 1) / 2 for pv, rv in zip(p, r))


def test_dilation_enlarges_the_field_without_parameters():
    plain = spec.parse("input 1 32 32; conv 1 k=3; conv 1 k=3")
    dilated = spec.parse("input 1 32 32; conv 1 k=3; conv 1 k=3 d=4")
    assert receptive.fields(plain)[-1].receptive_field == (5, 5)
    assert receptive.fields(dilated)[-1].receptive_field == (11, 11)
    assert (
        spec.totals(spec.infer(plain))["total_params"]
        == spec.totals(spec.infer(dilated))["total_params"]
    )


def test_flat_layers_see_the_whole_input():
    for text in (
        "input 1 8 8; conv 2 k=3; gap; fc 3",
        "input 1 8 8; conv 2 k=3; flatten; dropout; fc 3",
        "input 1 8 8; conv 2 k=3; fc 3",
    ):
        fields = receptive.fields(spec.parse(text))
        last = fields[-1]
        # conv field 3 plus the 6 output positions at stride 1: 3 + 5 = 8, the whole input.
        assert last.receptive_field == (8, 8), text


# ----------------------------------------------------------------------------- unit regions


def test_region_padding_and_clipping():
    arch = spec.parse("lecture-3x3x2")
    corner = receptive.unit_region(arch, (0, 0), "conv2")
    assert corner.box == ((-2, 2), (-2, 2))
    assert corner.clipped == ((0, 2), (0, 2))
    assert (corner.field_size, corner.inside, corner.padding, corner.seen) == (25, 9, 16, 9)
    middle = receptive.unit_region(arch, (4, 4), 3)
    assert middle.box == ((2, 6), (2, 6)) and middle.padding == 0


def test_region_with_holes():
    # k=2 with dilation 3: taps at 0 and 3; 4 positions in the box but only 2 pixels reach.
    arch = spec.parse("input 1 10; conv 1 k=2 d=3")
    region = receptive.unit_region(arch, (1,))
    assert region.box == ((1, 4),)
    assert region.positions == ((1, 4),)
    assert region.seen == 2 and region.inside == 4


@pytest.mark.parametrize(
    "unit, layer, fragment",
    [
        ((9, 0), None, "height index 9 must be in 0..5"),
        ((0,), None, "1 index(es)"),
        ((0, 0), "7", "layers are numbered 1-1"),
        ((0, 0), "conv9", "no layer named 'conv9'"),
    ],
)
def test_region_errors(unit, layer, fragment):
    arch = spec.parse("lecture-valid")
    with pytest.raises(SpecError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        receptive.unit_region(arch, unit, layer)


def test_region_on_flat_layer_is_refused():
    arch = spec.parse("digits")
    with pytest.raises(SpecError, match="flat output"):
        receptive.unit_region(arch, (0,), "fc1")


# ----------------------------------------------------------------------------- brute force


def trace_with_ops(arch):
    """reach[i, c, *unit] > 0 iff input pixel i (flattened) reaches the unit, computed by
    pushing one impulse per input pixel through the real cnnkit ops with all-ones kernels.
    Inputs and weights are non-negative, so a sum or a max is positive exactly when some
    pixel in the window carries the impulse."""
    ops = pytest.importorskip("cnnkit.ops")
    c, *sizes = arch.input_shape
    count = math.prod(sizes)
    x = np.zeros((count, c, *sizes))
    for i, position in enumerate(itertools.product(*(range(n) for n in sizes))):
        x[(i, slice(None), *position)] = 1.0
    conv = {1: ops.conv1d, 2: ops.conv2d}[len(sizes)]
    pools = {
        ("max", 1): ops.max_pool1d,
        ("max", 2): ops.max_pool2d,
        ("avg", 1): ops.avg_pool1d,
        ("avg", 2): ops.avg_pool2d,
    }
    for info in spec.infer(arch):
        layer = info.layer
        if info.kind == "conv":
            w = np.ones((layer.out_channels, x.shape[1] // layer.groups, *layer.kernel))
            x = conv(
                x,
                w,
                stride=layer.stride,
                padding=layer.padding,
                dilation=layer.dilation,
                groups=layer.groups,
            )
        elif info.kind == "pool":
            pool = pools[(layer.mode, len(sizes))]
            x = pool(x, layer.kernel, layer.stride, layer.padding, ceil_mode=layer.ceil)
        elif info.kind == "relu":
            x = np.maximum(x, 0)
        # Normalise so deep all-ones stacks cannot overflow; only the sign pattern matters.
        x = x / max(x.max(), 1.0)
    return x > 0


def _check_against_trace(arch, reach):
    sizes = arch.input_shape[1:]
    pixels = list(itertools.product(*(range(n) for n in sizes)))
    infos = spec.infer(arch)
    last = len(infos)
    field = receptive.fields(arch, infos)[-1]
    contiguous = all(
        info.kind != "conv" or max(info.layer.dilation) == 1 for info in infos
    ) and all(
        s <= (k if info.kind == "pool" else d * (k - 1) + 1)
        for info in infos
        if info.kind in ("conv", "pool")
        for s, k, d in zip(
            info.layer.stride, info.layer.kernel, info.layer.dilation or (1,) * len(sizes)
        )
    )
    for unit in itertools.product(*(range(n) for n in infos[-1].output_shape[1:])):
        seen = {pixels[i] for i in np.flatnonzero(reach[(slice(None), 0, *unit)])}
        region = receptive.unit_region(arch, unit, last, infos)
        expected = set(itertools.product(*region.positions))
        assert seen == expected, (unit, region)
        # The exact set always lies inside Araujo et al.'s box ...
        for dim, (lo, hi) in enumerate(region.box):
            assert hi - lo + 1 == field.receptive_field[dim]
            assert all(lo <= p[dim] <= hi for p in seen)
        # ... and fills its clipped part when nothing leaves holes.
        if contiguous:
            box = set(
                itertools.product(
                    *(range(c[0], c[1] + 1) if c else range(0) for c in region.clipped)
                )
            )
            assert seen == box, (unit, region)


@pytest.mark.parametrize("seed", range(30))
def test_random_specs_against_impulse_trace(seed):
    arch = random_spec(seed + 1000, max_size=9)
    _check_against_trace(arch, trace_with_ops(arch))


@pytest.mark.parametrize(
    "text",
    [
        "lecture-1d",
        "lecture-3x3x2",
        "lecture-5x5",
        "input 1 9 9; conv 1 k=3 d=2 p=1; conv 1 k=2 s=3",
        "input 1 11 7; conv 2 k=3 s=2 p=same; pool max k=3 s=2 p=1 ceil=true; conv 1 k=2 d=2",
        "input 2 12; conv 2 k=3 d=3 p=full groups=2; pool avg k=2 ceil=true; conv 1 k=3 s=2",
    ],
)
def test_chosen_specs_against_impulse_trace(text):
    arch = spec.parse(text)
    _check_against_trace(arch, trace_with_ops(arch))


@pytest.mark.parametrize("seed", range(10))
def test_random_specs_against_torch_gradients(seed):
    """Second witness: the pixels with a non-zero gradient of a unit under PyTorch, with
    random positive weights (max pool routes a gradient to one pixel per window, so max pools
    become average pools here: same windows, every pixel gets a share)."""
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    arch = random_spec(seed + 2000, max_size=9)
    infos = spec.infer(arch)
    gen = torch.Generator().manual_seed(seed)
    x = torch.zeros((1, *arch.input_shape), dtype=torch.float64, requires_grad=True)
    y = x
    for info in infos:
        layer = info.layer
        if info.kind == "conv":
            shape = (layer.out_channels, y.shape[1] // layer.groups, *layer.kernel)
            w = torch.rand(shape, generator=gen, dtype=torch.float64) + 0.5
            lo = [p for pair in reversed(info.pads) for p in pair]
            y = functional.conv2d(
                functional.pad(y, lo), w, None, layer.stride, 0, layer.dilation, layer.groups
            )
        elif info.kind == "pool":
            y = functional.avg_pool2d(
                y, layer.kernel, layer.stride, layer.padding, ceil_mode=layer.ceil
            )
    assert tuple(y.shape[1:]) == infos[-1].output_shape
    for unit in itertools.product(*(range(n) for n in infos[-1].output_shape[1:])):
        (grad,) = torch.autograd.grad(y[(0, 0, *unit)], x, retain_graph=True)
        seen = {tuple(int(v) for v in p) for p in np.argwhere(grad[0, 0].numpy() != 0)}
        region = receptive.unit_region(arch, unit, len(infos), infos)
        assert seen == set(itertools.product(*region.positions)), unit


def test_growth_is_monotone():
    regions = receptive.growth(spec.parse("vgg16"))
    sizes = [r.box[0][1] - r.box[0][0] + 1 for r in regions]
    assert sizes == sorted(sizes) and sizes[-1] == 212
    assert len(regions) == 13 + 5


def test_compare_summary():
    two = receptive.summary(spec.parse("lecture-3x3x2"))
    one = receptive.summary(spec.parse("lecture-5x5"))
    assert two["receptive_field"] == one["receptive_field"] == [5, 5]
    assert (two["params"], one["params"]) == (18, 25)
    assert two["macs"] < one["macs"]
    assert (two["nonlinearities"], one["nonlinearities"]) == (2, 1)


def test_docstring_examples():
    import doctest

    import cnnkit.arch
    from cnnkit.arch import read

    for module in (read, receptive, cnnkit.arch):
        failed, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert tried > 0 and failed == 0, module.__name__


# ----------------------------------------------------------------------------- graphs


def test_union_over_paths_and_alignment():
    # identity shortcut: the body's field; projection: the wider of the two
    res = final_field("input 1 16 16; residual { conv 1 k=3 p=1; conv 1 k=3 p=1 }")
    assert (res.receptive_field, res.effective_padding, res.aligned) == ((5, 5), (2, 2), True)
    # paths centred differently: k=3 p=1 sees -1..1, k=2 "same" (extra pad after) sees 0..1
    cat = final_field("input 1 8 8; concat { conv 1 k=3 p=1 } { conv 1 k=2 p=same }")
    assert cat.receptive_field == (3, 3) and cat.start == (-1, -1) and not cat.aligned
    after = final_field(
        "input 1 8 8; concat { conv 1 k=3 p=1 } { conv 1 k=2 p=same }; conv 1 k=3 p=1"
    )
    assert not after.aligned  # stays unaligned downstream
    with pytest.raises(SpecError, match="different effective strides"):
        receptive.fields(spec.parse("input 1 8 8; concat { conv 1 k=1 s=2 } { conv 1 k=5 }"))


def _last_spatial(infos):
    return max(k for k, info in enumerate(infos) if len(info.output_shape) > 1)


def trace_graph_with_model(arch):
    """reach[name][i, c, *unit] > 0 iff input pixel i reaches channel c of the unit: one impulse per
    pixel through cnnkit's own Model with positive weights and no biases. Every activation
    here keeps 0 at 0 and positives positive, so the sign pattern is the reach."""
    nn_model = pytest.importorskip("cnnkit.nn.model")
    model = nn_model.Model(arch, dtype=np.float64)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if layer.params:
            layer.params[0][...] = rng.uniform(0.5, 1.5, layer.params[0].shape)
            for extra in layer.params[1:]:
                extra[...] = 0
    c, *sizes = arch.input_shape
    count = math.prod(sizes)
    x = np.zeros((count, c, *sizes))
    for i, position in enumerate(itertools.product(*(range(n) for n in sizes))):
        x[(i, slice(None), *position)] = 1.0
    return dict(model.activations(x))


@pytest.mark.parametrize("seed", range(16))
def test_random_graphs_against_impulse_trace(seed):
    from random_specs import random_graph_spec

    arch = spec.parse(random_graph_spec(seed, batch_norm=False))
    infos = spec.infer(arch)
    reach = trace_graph_with_model(arch)
    pixels = list(itertools.product(*(range(n) for n in arch.input_shape[1:])))
    all_fields = receptive.fields(arch, infos)
    for index in {_last_spatial(infos), len(infos) // 2}:
        info = infos[index]
        if len(info.output_shape) <= 1:
            continue
        for unit in itertools.product(*(range(n) for n in info.output_shape[1:])):
            # a unit is a position: concat puts different paths in different channels
            hits = reach[info.name][(slice(None), slice(None), *unit)].max(axis=1)
            seen = {pixels[i] for i in np.flatnonzero(hits)}
            region = receptive.unit_region(arch, unit, index + 1, infos)
            assert seen == region.pixels(), (info.name, unit)
            assert region.seen == len(seen)
            for dim, (lo, hi) in enumerate(region.box):
                assert hi - lo + 1 == all_fields[index].receptive_field[dim]
                assert all(lo <= p[dim] <= hi for p in seen)
                assert region.positions[dim] == tuple(sorted({p[dim] for p in seen}))


def _torch_reach(arch, infos, index, units, dtype="float64"):
    """Pixels with a non-zero input gradient of each unit of node ``index`` under PyTorch,
    with random positive weights (bn and activations as identities, max pools as average
    pools: the same windows, every pixel gets a share)."""
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    dt = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(0)
    x = torch.ones((1, *arch.input_shape), dtype=dt, requires_grad=True)
    values = {"input": x}
    for info in infos[: index + 1]:
        node = info.layer
        args = [values[s] for s in node.inputs]
        y = args[0]
        if info.kind == "conv":
            shape = (node.out_channels, y.shape[1] // node.groups, *node.kernel)
            fan = math.prod(shape[1:])
            w = (torch.rand(shape, generator=gen, dtype=dt) + 0.5) / fan
            pad = [p for pair in reversed(info.pads) for p in pair]
            y = functional.conv2d(
                functional.pad(y, pad), w, None, node.stride, 0, node.dilation, node.groups
            )
        elif info.kind == "pool":
            y = functional.avg_pool2d(y, node.kernel, node.stride, node.padding, node.ceil)
        elif info.kind == "add":
            y = sum(args[1:], args[0])
        elif info.kind == "concat":
            y = torch.cat(args, dim=1)
        values[info.name] = y
    out = values[infos[index].name]
    assert tuple(out.shape[1:]) == infos[index].output_shape
    seen = []
    for unit in units:
        # a unit is a position: concat puts different paths in different channels
        (grad,) = torch.autograd.grad(out[(0, slice(None), *unit)].sum(), x, retain_graph=True)
        seen.append({tuple(int(v) for v in p) for p in np.argwhere(grad[0, 0].numpy() != 0)})
    return seen


@pytest.mark.parametrize("seed", range(8))
def test_random_graphs_against_torch_gradients(seed):
    from random_specs import random_graph_spec

    arch = spec.parse(random_graph_spec(seed + 50))
    infos = spec.infer(arch)
    index = _last_spatial(infos)
    units = list(itertools.product(*(range(n) for n in infos[index].output_shape[1:])))
    for unit, seen in zip(units, _torch_reach(arch, infos, index, units)):
        region = receptive.unit_region(arch, unit, index + 1, infos)
        assert seen == region.pixels(), unit


@pytest.mark.parametrize(
    "name, layer",
    [
        ("resnet18", "layer2.relu4"),
        ("resnet18", "layer4.relu4"),
        ("resnet50", "layer2.more.2.relu3"),
        ("mobilenet_v2", "features.6"),
        ("mobilenet_v2", "features.18.relu6_1"),
    ],
)
def test_shipped_graph_fields_against_torch_gradients(name, layer):
    """The exact field of a corner unit and a centre unit of the shipped graphs: the input
    pixels PyTorch's autograd finds, one output unit at a time."""
    arch = spec.parse(name)
    infos = spec.infer(arch)
    index = [i.name for i in infos].index(layer)
    sizes = infos[index].output_shape[1:]
    units = [(0, 0), tuple((n - 1) // 2 for n in sizes)]
    field = receptive.fields(arch, infos)[index]
    for unit, seen in zip(units, _torch_reach(arch, infos, index, units, "float32")):
        region = receptive.unit_region(arch, unit, index + 1, infos)
        assert seen == region.pixels(), unit
        # these layouts leave no holes: the pixels fill the field's part inside the image
        assert len(seen) == region.inside
        for dim, (lo, hi) in enumerate(region.box):
            assert hi - lo + 1 == field.receptive_field[dim]


def test_shipped_graph_fields():
    """Fields from the recurrences through every path: ResNet-18's last block sees 435
    pixels (torchvision layout; TF-slim's resnet_v1 layout in Araujo et al.'s table differs),
    stride 32 everywhere at the end, and every shipped graph is aligned."""
    expected = {
        "resnet18": ((435, 435), (32, 32), (217, 217)),
        "resnet50": ((427, 427), (32, 32), (213, 213)),
        "mobilenet_v2": ((491, 491), (32, 32), (245, 245)),
    }
    for name, (r, j, p) in expected.items():
        fields = receptive.fields(spec.parse(name))
        last = [f for f in fields if f.spatial][-1]
        assert (last.receptive_field, last.effective_stride, last.effective_padding) == (r, j, p)
        assert all(f.aligned for f in fields)


def test_growth_nests_along_the_widest_path():
    arch = spec.parse("resnet18")
    regions = receptive.growth(arch, unit=(3, 3))
    assert regions[-1].layer == "layer4.relu4" and regions[-1].unit == (3, 3)
    assert not any("shortcut" in r.layer for r in regions)
    for inner, outer in zip(regions, regions[1:]):
        for (a, b), (c, d) in zip(inner.box, outer.box):
            assert c <= a and b <= d, (inner.layer, outer.layer)
