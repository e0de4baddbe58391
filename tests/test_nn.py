"""Layers, losses, optimisers and model files of cnnkit.nn.

Every gradient is checked against central finite differences in float64; forward passes of
the numpy-only layers against their formulas written out independently; optimiser steps and
a whole training step against PyTorch when it is installed.
"""

from __future__ import annotations

import math
import zipfile

import numpy as np
import pytest

from cnnkit.nn import layers as L
from cnnkit.nn.losses import log_softmax, softmax_cross_entropy
from cnnkit.nn.model import build_model
from cnnkit.nn.optim import SGD, Adam, scheduled_lr
from cnnkit.nn.serialize import load_model, read_model_file, save_model

# ----------------------------------------------------------------------------- helpers


def numeric_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar ``f()`` with respect to ``x`` (modified in place)."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return g


def check_layer(layer: L.Layer, x: np.ndarray, rng, training: bool = True, tol=1e-6) -> None:
    """Compare a layer's backward with finite differences of ``sum(forward(x) * r)``."""
    y = layer.forward(x, training)
    r = rng.standard_normal(y.shape)

    def loss() -> float:
        return float(np.sum(layer.forward(x, training) * r))

    layer.forward(x, training)
    gx = layer.backward(r)
    analytic_params = [g.copy() for g in layer.grads]
    np.testing.assert_allclose(gx, numeric_grad(loss, x), rtol=tol, atol=tol)
    for p, g in zip(layer.params, analytic_params):
        np.testing.assert_allclose(g, numeric_grad(loss, p), rtol=tol, atol=tol)


def away_from_kinks(x: np.ndarray, margin: float = 1e-3) -> np.ndarray:
    """Push values away from 0 so relu-like kinks do not fall between x - eps and x + eps."""
    return np.where(np.abs(x) < margin, margin * 10 * np.sign(x + 1e-12), x)


# ----------------------------------------------------------------------------- layers


def test_linear_forward_matches_formula_and_gradients(rng):
    layer = L.Linear(12, 5, rng=rng, dtype=np.float64)
    layer.b[:] = rng.standard_normal(5)
    x = rng.standard_normal((4, 3, 2, 2))
    expected = np.array(
        [
            [sum(xf[i] * layer.w[o, i] for i in range(12)) + layer.b[o] for o in range(5)]
            for xf in x.reshape(4, -1)
        ]
    )
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12)
    check_layer(layer, x, rng)


@pytest.mark.parametrize(
    "layer",
    [L.ReLU(), L.LeakyReLU(0.1), L.Tanh(), L.Sigmoid(), L.Flatten()],
    ids=["relu", "leakyrelu", "tanh", "sigmoid", "flatten"],
)
def test_activation_gradients(layer, rng):
    x = away_from_kinks(rng.standard_normal((3, 2, 4, 4)))
    check_layer(layer, x, rng)


def test_activation_forward_formulas(rng):
    x = rng.standard_normal((5, 7)) * 30  # large values: sigmoid must not overflow
    np.testing.assert_array_equal(L.ReLU().forward(x), np.where(x > 0, x, 0))
    np.testing.assert_allclose(L.LeakyReLU(0.2).forward(x), np.where(x > 0, x, 0.2 * x))
    with np.errstate(over="ignore"):
        np.testing.assert_allclose(L.Sigmoid().forward(x), 1 / (1 + np.exp(-x)), rtol=1e-12)
    np.testing.assert_allclose(L.Tanh().forward(x), np.tanh(x))


def test_dropout_scales_survivors_and_is_identity_in_eval(rng):
    layer = L.Dropout(0.25)
    layer.rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 50))
    np.testing.assert_array_equal(layer.forward(x, False), x)
    y = layer.forward(x, True)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / 0.75)
    assert abs(kept.mean() - 0.75) < 0.01
    g = rng.standard_normal(x.shape)
    np.testing.assert_allclose(layer.backward(g), np.where(kept, g / 0.75, 0))


@pytest.mark.parametrize("shape", [(6, 3, 4, 5), (8, 5)], ids=["2d", "1d"])
def test_batchnorm_gradients_and_running_stats(shape, rng):
    c = shape[1]
    layer = L.BatchNorm(c, dtype=np.float64)
    layer.gamma[:] = rng.uniform(0.5, 1.5, c)
    layer.beta[:] = rng.standard_normal(c)
    x = rng.standard_normal(shape) * 2 + 1
    axes = (0, *range(2, len(shape)))
    bshape = (1, c) + (1,) * (len(shape) - 2)
    y = layer.forward(x, True)
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    expected = (x - mean.reshape(bshape)) / np.sqrt(var.reshape(bshape) + 1e-5)
    expected = expected * layer.gamma.reshape(bshape) + layer.beta.reshape(bshape)
    np.testing.assert_allclose(y, expected, rtol=1e-10)
    m = x.size // c
    np.testing.assert_allclose(layer.buffers["running_mean"], 0.1 * mean)
    np.testing.assert_allclose(layer.buffers["running_var"], 0.9 + 0.1 * var * m / (m - 1))
    # evaluation uses the running statistics
    rm, rv = layer.buffers["running_mean"], layer.buffers["running_var"]
    ev = layer.forward(x, False)
    np.testing.assert_allclose(
        ev,
        (x - rm.reshape(bshape)) / np.sqrt(rv.reshape(bshape) + 1e-5) * layer.gamma.reshape(bshape)
        + layer.beta.reshape(bshape),
    )
    # the finite differences run forward in training mode, which moves the running stats;
    # the gradient does not depend on them.
    check_layer(layer, x, rng, tol=1e-5)


def test_batchnorm_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((4, 3, 5, 5))
    layer = L.BatchNorm(3, dtype=np.float64)
    ref = torch.nn.BatchNorm2d(3).double()
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    g = rng.standard_normal(x.shape)
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(layer.forward(x, True), yt.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(layer.backward(g), xt.grad.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(layer.buffers["running_var"], ref.running_var.numpy())


def test_conv_layer_gradients(rng):
    layer = L.Conv2d(
        4,
        6,
        (3, 2),
        stride=(2, 1),
        pads=((1, 1), (0, 1)),
        dilation=(1, 2),
        groups=2,
        rng=rng,
        dtype=np.float64,
    )
    layer.b[:] = rng.standard_normal(6)
    x = rng.standard_normal((2, 4, 6, 5))
    check_layer(layer, x, rng)


@pytest.mark.parametrize("cls", [L.MaxPool2d, L.AvgPool2d], ids=["max", "avg"])
def test_pool_layer_gradients(cls, rng):
    layer = cls((2, 2), (2, 2), (0, 0))
    # distinct values keep each window's maximum unique under the finite-difference nudge
    x = rng.permutation(2 * 3 * 6 * 6).reshape(2, 3, 6, 6).astype(np.float64) / 10
    check_layer(layer, x, rng)
    layer3 = cls((3, 3), (2, 2), (1, 1), ceil_mode=True)
    check_layer(layer3, x, rng)


def test_global_avg_pool_gradients(rng):
    layer = L.GlobalAvgPool()
    x = rng.standard_normal((2, 3, 4, 5))
    np.testing.assert_allclose(layer.forward(x), x.mean(axis=(2, 3)))
    check_layer(layer, x, rng)


def test_initialisation_statistics():
    rng = np.random.default_rng(0)
    he = L.he_normal(rng, (400, 50), 50)
    assert abs(he.std() - np.sqrt(2 / 50)) < 0.01
    gl = L.glorot_uniform(rng, (400, 50), 50, 400)
    a = np.sqrt(6 / 450)
    assert gl.max() <= a and gl.min() >= -a and gl.max() > 0.95 * a


# ----------------------------------------------------------------------------- loss


def test_softmax_cross_entropy_value_gradient_and_stability(rng):
    z = rng.standard_normal((5, 4))
    y = rng.integers(0, 4, 5)
    loss, grad = softmax_cross_entropy(z, y)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(5), y])), rel=1e-12)

    def f() -> float:
        return softmax_cross_entropy(z, y)[0]

    np.testing.assert_allclose(grad, numeric_grad(f, z), rtol=1e-6, atol=1e-9)
    huge = np.array([[1000.0, 0.0, -1000.0]])
    loss, grad = softmax_cross_entropy(huge, np.array([2]))
    assert loss == pytest.approx(2000.0) and np.isfinite(grad).all()
    np.testing.assert_allclose(np.exp(log_softmax(huge)).sum(), 1.0)


# ----------------------------------------------------------------------------- whole model

SMALL = (
    "input 2 6 6; conv 3 k=3 p=1; bn; leakyrelu 0.1; pool avg k=2; conv 4 k=2 s=1 d=1; tanh; "
    "fc 5; sigmoid; fc 3"
)
DIGITS = (
    "input 1 8 8; conv 16 k=3 p=1; relu; pool max k=2; conv 32 k=3 p=1; relu; pool max k=2; fc 10"
)


def test_whole_network_gradient(rng):
    model = build_model(SMALL, seed=1, dtype=np.float64)
    model.layers[0].need_input_grad = True
    x = rng.standard_normal((3, 2, 6, 6))
    y = rng.integers(0, 3, 3)

    def loss() -> float:
        return softmax_cross_entropy(model.forward(x, True), y)[0]

    _, g = softmax_cross_entropy(model.forward(x, True), y)
    model.flat_grads[:] = 0
    model.backward(g)
    analytic = model.flat_grads.copy()
    numeric = numeric_grad(loss, model.flat_params)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_model_shapes_come_from_the_spec():
    from cnnkit import arch as spec

    text = DIGITS
    model = build_model(text)
    infos = spec.infer(spec.parse(text))
    assert model.parameter_count() == sum(i.params for i in infos)
    out = model.forward(np.zeros((2, 1, 8, 8), np.float32))
    assert out.shape == (2, 10) and out.dtype == np.float32
    assert [lay.name for lay in model.layers] == [i.name for i in infos]
    # He init before relu, Glorot on the last (linear) layer
    assert isinstance(model.layers[0], L.Conv2d) and model.layers[-1].w.std() < 0.3


def test_unsupported_specs_are_clear_errors():
    with pytest.raises(ValueError, match="2-D image inputs"):
        build_model("input 1 16; conv 4 k=3; fc 2")
    with pytest.raises(ValueError, match="init"):
        build_model(DIGITS, init="xavier")


def test_torch_init_matches_pytorch_bounds():
    model = build_model(DIGITS, seed=0, init="torch")
    conv2, fc = model.layers[3], model.layers[-1]
    bound = 1 / np.sqrt(16 * 9)
    assert np.abs(conv2.w).max() <= bound and np.abs(conv2.b).max() <= bound
    assert np.abs(conv2.w).max() > 0.95 * bound and np.abs(conv2.b).max() > 0
    assert np.abs(fc.w).max() <= 1 / np.sqrt(128)


def test_overfits_twenty_samples(rng):
    model = build_model("input 1 8 8; conv 8 k=3 p=1; relu; pool max k=2; fc 16; relu; fc 4")
    x = rng.standard_normal((20, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 4, 20)
    opt = Adam(model.flat_params, model.flat_grads, lr=1e-2)
    for _ in range(300):
        loss, g = softmax_cross_entropy(model.forward(x, True), y)
        model.backward(g)
        opt.step()
    assert loss < 1e-2
    assert (model.predict_logits(x).argmax(1) == y).all()


# ----------------------------------------------------------------------------- optimisers


def _torch_step(torch, params, grads, make, steps):
    ps = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    opt = make(ps)
    for grads_t in grads[:steps]:
        for p, g in zip(ps, grads_t):
            p.grad = torch.tensor(g)
        opt.step()
    return np.concatenate([p.detach().numpy().ravel() for p in ps])


@pytest.mark.parametrize(
    "cfg",
    [
        dict(name="sgd", momentum=0.0, nesterov=False, weight_decay=0.0),
        dict(name="sgd", momentum=0.9, nesterov=False, weight_decay=1e-2),
        dict(name="sgd", momentum=0.9, nesterov=True, weight_decay=1e-2),
        dict(name="adam", weight_decay=0.0),
        dict(name="adam", weight_decay=1e-2),
    ],
    ids=["sgd", "momentum-wd", "nesterov-wd", "adam", "adam-wd"],
)
def test_optimisers_match_torch(cfg, rng):
    torch = pytest.importorskip("torch")
    shapes = [(3, 4), (4,)]
    params = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(4)]
    flat_p = np.concatenate([p.ravel() for p in params])
    flat_g = np.zeros_like(flat_p)
    if cfg["name"] == "sgd":
        opt = SGD(flat_p, flat_g, 0.1, cfg["momentum"], cfg["nesterov"], cfg["weight_decay"])

        def make(ps):
            return torch.optim.SGD(
                ps,
                lr=0.1,
                momentum=cfg["momentum"],
                nesterov=cfg["nesterov"],
                weight_decay=cfg["weight_decay"],
            )
    else:
        opt = Adam(flat_p, flat_g, 0.01, weight_decay=cfg["weight_decay"])

        def make(ps):
            return torch.optim.Adam(ps, lr=0.01, weight_decay=cfg["weight_decay"])

    for step in grads:
        flat_g[:] = np.concatenate([g.ravel() for g in step])
        opt.step()
    expected = _torch_step(torch, params, grads, make, 4)
    np.testing.assert_allclose(flat_p, expected, rtol=1e-10, atol=1e-12)


def test_schedules_match_torch():
    torch = pytest.importorskip("torch")
    for schedule, make in (
        ("step", lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.1)),
        ("cosine", lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10)),
    ):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
        sched = make(opt)
        for epoch in range(10):
            assert scheduled_lr(schedule, 0.5, epoch, 10, step_size=3) == pytest.approx(
                opt.param_groups[0]["lr"], rel=1e-9
            )
            opt.step()
            sched.step()
    assert scheduled_lr("none", 0.3, 5, 10) == 0.3
    with pytest.raises(ValueError, match="schedule"):
        scheduled_lr("warm", 0.1, 0, 1)


def test_bad_optimiser_settings():
    p = np.zeros(3)
    with pytest.raises(ValueError, match="learning rate"):
        Adam(p, p, lr=-1)
    with pytest.raises(ValueError, match="^nesterov needs momentum > 0"):
        SGD(p, p, lr=0.1, momentum=0, nesterov=True)


def _torch_digits(torch, model):
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(128, 10),
    ).double()
    mine = [m for m in model.layers if m.params]
    theirs = [m for m in net if list(m.parameters())]
    with torch.no_grad():
        for a, b in zip(mine, theirs):
            b.weight.copy_(torch.tensor(a.w))
            b.bias.copy_(torch.tensor(a.b))
    return net


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_one_training_step_matches_torch(optimizer, rng):
    torch = pytest.importorskip("torch")
    model = build_model(DIGITS, seed=3, dtype=np.float64)
    net = _torch_digits(torch, model)
    x = rng.standard_normal((8, 1, 8, 8))
    y = rng.integers(0, 10, 8)
    if optimizer == "sgd":
        opt = SGD(model.flat_params, model.flat_grads, 0.05, 0.9, False, 1e-3)
        topt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    else:
        opt = Adam(model.flat_params, model.flat_grads, 3e-3)
        topt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(2):
        loss, g = softmax_cross_entropy(model.forward(x, True), y)
        model.backward(g)
        opt.step()
        topt.zero_grad()
        tloss = torch.nn.functional.cross_entropy(net(torch.tensor(x)), torch.tensor(y))
        tloss.backward()
        topt.step()
        assert loss == pytest.approx(tloss.item(), rel=1e-10)
    theirs = np.concatenate([p.detach().numpy().ravel() for p in net.parameters()])
    np.testing.assert_allclose(model.flat_params, theirs, rtol=1e-8, atol=1e-10)


# ----------------------------------------------------------------------------- model files


def test_save_load_round_trip(tmp_path, rng):
    model = build_model(SMALL, seed=4)
    model.layers[1].buffers["running_mean"][:] = rng.standard_normal(3)
    path = tmp_path / "m.npz"
    save_model(path, model, {"class_names": ["a", "b", "c"], "mean": [0.5], "std": [2.0]})
    loaded, header = load_model(path)
    np.testing.assert_array_equal(loaded.flat_params, model.flat_params)
    np.testing.assert_array_equal(
        loaded.layers[1].buffers["running_mean"], model.layers[1].buffers["running_mean"]
    )
    assert header["class_names"] == ["a", "b", "c"] and header["spec"] == SMALL
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict_logits(x), model.predict_logits(x))
    # the model file is a plain npz with no pickled objects
    with np.load(path, allow_pickle=False) as data:
        assert all(data[k].dtype != object for k in data.files)
    # any file name works, not only *.npz
    save_model(tmp_path / "model.bin", model)
    assert (tmp_path / "model.bin").exists() and not (tmp_path / "model.bin.npz").exists()


def test_corrupt_truncated_and_incompatible_files(tmp_path):
    model = build_model(SMALL, seed=4)
    good = tmp_path / "good.npz"
    save_model(good, model)
    data = good.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "garbage": b"this is not a model",
        "empty": b"",
    }
    for name, content in cases.items():
        path = tmp_path / f"{name}.npz"
        path.write_bytes(content)
        with pytest.raises(ValueError, match="not a readable cnnkit model file"):
            load_model(path)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(ValueError, match="no header"):
        load_model(other)
    # a header that describes a different architecture than the arrays
    with np.load(good, allow_pickle=False) as d:
        arrays = {k: d[k] for k in d.files}
    import json

    header = json.loads(str(arrays["header"]))
    header["spec"] = SMALL.replace("fc 5", "fc 7")
    arrays["header"] = np.array(json.dumps(header))
    bad = tmp_path / "mismatch.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ValueError, match="incompatible model file"):
        load_model(bad)
    header["format_version"] = 99
    arrays["header"] = np.array(json.dumps(header))
    np.savez(bad, **arrays)
    with pytest.raises(ValueError, match="newer"):
        read_model_file(bad)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.npz")
    assert zipfile.is_zipfile(good)


# ----------------------------------------------------------------------------- graphs


def test_relu6_forward_and_gradient(rng):
    x = rng.standard_normal((3, 2, 4, 4)) * 5
    x = np.where(np.abs(x - 6) < 1e-3, 6.5, away_from_kinks(x))
    np.testing.assert_array_equal(L.ReLU6().forward(x), np.minimum(np.maximum(x, 0), 6))
    check_layer(L.ReLU6(), x, rng)


@pytest.mark.parametrize("cls", [L.Add, L.Concat])
def test_merge_layers_forward_and_gradients(cls, rng):
    xs = [rng.standard_normal((2, 3, 4, 5)) for _ in range(3)]
    layer = cls()
    y = layer.forward(xs, True)
    if cls is L.Add:
        np.testing.assert_allclose(y, xs[0] + xs[1] + xs[2])
    else:
        assert y.shape == (2, 9, 4, 5)
        for i, x in enumerate(xs):
            np.testing.assert_array_equal(y[:, 3 * i : 3 * i + 3], x)
    r = rng.standard_normal(y.shape)
    grads = layer.backward(r)
    for i, x in enumerate(xs):

        def loss() -> float:
            return float(np.sum(layer.forward(xs, True) * r))

        np.testing.assert_allclose(grads[i], numeric_grad(loss, x), rtol=1e-6, atol=1e-8)


def test_graph_network_gradient_by_finite_differences(rng):
    text = (
        "input 2 5 5; conv 3 k=3 p=1; bn; relu6; "
        "residual { conv 3 k=3 p=1; bn; leakyrelu 0.1; conv 3 k=3 p=1 groups=3 } ; tanh; "
        "concat { conv 2 k=1 } { pool avg k=3 s=1 p=1 } { } ; "
        "residual { conv 4 k=3 s=2 p=1; tanh } shortcut { conv 4 k=1 s=2 }; gap; fc 3"
    )
    model = build_model(text, seed=1, dtype=np.float64)
    x = rng.standard_normal((3, 2, 5, 5))
    y = rng.integers(0, 3, 3)

    def loss() -> float:
        return softmax_cross_entropy(model.forward(x, True), y)[0]

    _, g = softmax_cross_entropy(model.forward(x, True), y)
    model.backward(g)
    np.testing.assert_allclose(
        model.flat_grads, numeric_grad(loss, model.flat_params), rtol=1e-5, atol=1e-8
    )


def torch_twin(model):
    """The same network in PyTorch with the model's weights: one module per node, run by
    walking the graph (float64). Written from the spec, independently of cnnkit.nn."""
    torch = pytest.importorskip("torch")
    from cnnkit.arch import infer

    nn = torch.nn
    infos = infer(model.arch)
    mods = []
    for info, layer in zip(infos, model.layers):
        node, c = info.layer, info.input_shape[0]
        if info.kind == "conv":
            conv = nn.Conv2d(
                c,
                node.out_channels,
                node.kernel,
                node.stride,
                0,
                node.dilation,
                node.groups,
                node.bias,
            ).double()
            pad = [v for lo_hi in reversed(info.pads) for v in lo_hi]
            mod = nn.Sequential(nn.ZeroPad2d(pad), conv)
            params = [conv.weight] + ([conv.bias] if node.bias else [])
        elif info.kind == "pool":
            cls = nn.MaxPool2d if node.mode == "max" else nn.AvgPool2d
            mod, params = cls(node.kernel, node.stride, node.padding, ceil_mode=node.ceil), []
        elif info.kind == "bn":
            bn = (nn.BatchNorm2d if len(info.input_shape) > 1 else nn.BatchNorm1d)(c).double()
            mod, params = bn, [bn.weight, bn.bias]
        elif info.kind == "fc":
            lin = nn.Linear(math.prod(info.input_shape), node.units, node.bias).double()
            mod = nn.Sequential(nn.Flatten(), lin)
            params = [lin.weight] + ([lin.bias] if node.bias else [])
        else:
            simple = {
                "relu": nn.ReLU(),
                "relu6": nn.ReLU6(),
                "tanh": nn.Tanh(),
                "sigmoid": nn.Sigmoid(),
                "gap": nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
                "flatten": nn.Flatten(),
                "dropout": nn.Identity(),
                "add": None,
                "concat": None,
            }
            if info.kind == "leakyrelu":
                simple["leakyrelu"] = nn.LeakyReLU(node.slope)
            mod, params = simple[info.kind], []
        with torch.no_grad():
            for mine, theirs in zip(layer.params, params):
                theirs.copy_(torch.tensor(mine))
        mods.append((info, mod, params))

    def forward(x):
        values = {"input": x}
        for info, mod, _ in mods:
            args = [values[s] for s in info.inputs]
            if info.kind == "add":
                y = sum(args[1:], args[0])
            elif info.kind == "concat":
                y = torch.cat(args, dim=1)
            else:
                y = mod(args[0])
            values[info.name] = y
        return values[infos[-1].name]

    return torch, forward, [p for _, _, params in mods for p in params], mods


def test_asymmetric_padding_matches_torch(rng):
    model = build_model(
        "input 2 7 6; conv 3 k=2 s=2 p=0+1x1+0; relu; conv 2 k=3 p=same; gap; fc 2",
        dtype=np.float64,
        init="torch",
    )
    torch, forward, _, _ = torch_twin(model)
    x = rng.standard_normal((2, 2, 7, 6))
    np.testing.assert_allclose(
        model.forward(x), forward(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("seed", range(12))
def test_random_graph_networks_match_torch(seed):
    """Forward pass, every parameter gradient, output shape, parameter and MAC counts of a
    random residual/concat network against the same network in PyTorch (float64)."""
    from random_specs import random_graph_spec

    from cnnkit.arch import infer, totals

    text = random_graph_spec(seed)
    model = build_model(text, seed=seed, dtype=np.float64, init="torch")
    torch, forward, params, mods = torch_twin(model)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, *model.input_shape))
    r = rng.standard_normal((4, model.num_outputs))
    # MACs counted from what PyTorch computes: conv out * C/groups * k*k, linear in * out.
    macs = []
    hooks = []
    for info, mod, _ in mods:
        if info.kind in ("conv", "fc"):
            inner = mod[1]

            def hook(m, inputs, out, macs=macs):
                if isinstance(m, torch.nn.Conv2d):
                    taps = m.in_channels // m.groups * math.prod(m.kernel_size)
                    macs.append(out[0].numel() * taps)
                else:
                    macs.append(m.in_features * m.out_features)

            hooks.append(inner.register_forward_hook(hook))
    xt = torch.tensor(x)
    out = forward(xt)
    for h in hooks:
        h.remove()
    mine = model.forward(x, True)
    infos = infer(model.arch)
    assert tuple(out.shape[1:]) == infos[-1].output_shape
    assert sum(macs) == totals(infos)["total_macs"]
    assert (
        sum(p.numel() for p in params) == model.parameter_count() == totals(infos)["total_params"]
    )
    np.testing.assert_allclose(mine, out.detach().numpy().reshape(4, -1), rtol=1e-9, atol=1e-11)
    (out.reshape(4, -1) * torch.tensor(r)).sum().backward()
    model.backward(r)
    theirs = iter(params)
    for layer in model.layers:
        for name, grad in zip(("weight", "bias"), layer.grads):
            expected = next(theirs).grad.numpy()
            np.testing.assert_allclose(
                grad, expected, rtol=1e-8, atol=1e-10, err_msg=f"{layer.name} {name}"
            )


def test_model_walks_the_graph_in_order():
    model = build_model(
        "input 3 8 8; conv 4 k=3 p=1; residual { conv 4 k=3 p=1; relu } ; "
        "concat { conv 2 k=1 } { }; gap; fc 5"
    )
    assert model.inputs == [
        ("input",),
        ("conv1",),
        ("conv2",),
        ("relu1", "conv1"),
        ("add1",),
        ("concat1.0.conv1", "add1"),
        ("concat1",),
        ("gap1",),
    ]
    assert isinstance(model.layers[3], L.Add) and isinstance(model.layers[5], L.Concat)
    assert [name for name, _ in model.activations(np.zeros((1, 3, 8, 8), np.float32))][-1] == "fc1"
    assert model.forward(np.zeros((2, 3, 8, 8), np.float32)).shape == (2, 5)


def test_graph_model_saves_and_loads(tmp_path, rng):
    model = build_model("resnet-digits", seed=3)
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    path = tmp_path / "res.npz"
    save_model(path, model)
    again = load_model(path)[0]
    np.testing.assert_array_equal(again.forward(x), model.forward(x))


@pytest.mark.slow
def test_resnet_digits_trains_to_98_5_percent(tmp_path):
    """The issue's target: `cnnkit train --arch resnet-digits` with the default recipe."""
    import json

    from typer.testing import CliRunner

    from cnnkit.cli.app import app

    out = tmp_path / "res.npz"
    result = CliRunner().invoke(app, ["train", "--arch", "resnet-digits", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["arch"] == "resnet-digits" and out.exists()
    assert metrics["test_accuracy"] >= 0.985
