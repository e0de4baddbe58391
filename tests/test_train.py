"""The training loop: reproducibility, checkpoints and resume, NaN stop, Ctrl-C, metrics."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cnnkit import train as tr
from cnnkit.nn.model import build_model
from cnnkit.nn.serialize import load_model

TINY = "input 1 8 8; conv 4 k=3 p=1; relu; pool max k=2; dropout 0.2; fc 10"


def _data(n: int = 96, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    # class-dependent means make the task learnable
    x = rng.standard_normal((n, 1, 8, 8)).astype(np.float32) + y[:, None, None, None] / 3
    return x, y


def _fit(epochs, start=0, model=None, opt=None, ckpt=None, history=None, **kw):
    cfg = tr.TrainConfig(epochs=epochs, batch_size=16, seed=7, **kw)
    model = model or build_model(TINY, seed=cfg.seed)
    opt = opt or tr.make_run_optimizer(model, cfg)
    x, y = _data()
    res = tr.fit(
        model, opt, cfg, x, y, x[:20], y[:20], start_epoch=start, checkpoint=ckpt, history=history
    )
    return model, opt, res


def test_same_seed_same_run_and_loss_decreases():
    m1, _, r1 = _fit(3)
    m2, _, r2 = _fit(3)
    np.testing.assert_array_equal(m1.flat_params, m2.flat_params)
    assert [h.train_loss for h in r1.history] == [h.train_loss for h in r2.history]
    assert r1.history[-1].train_loss < r1.history[0].train_loss
    cfg = tr.TrainConfig(epochs=3, batch_size=16, seed=8)
    other = build_model(TINY, seed=8)
    x, y = _data()
    tr.fit(other, tr.make_run_optimizer(other, cfg), cfg, x, y)
    assert not np.array_equal(other.flat_params, m1.flat_params)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_resume_continues_exactly(tmp_path, optimizer):
    full, _, _ = _fit(4, optimizer=optimizer, lr=0.01)
    ckpt = tmp_path / "run.ckpt.npz"
    _fit(2, optimizer=optimizer, lr=0.01, ckpt=ckpt)
    model, opt, cfg, header = tr.load_checkpoint(ckpt)
    assert header["checkpoint"]["epoch"] == 2 and cfg.optimizer == optimizer
    assert len(tr.history_from_header(header)) == 2
    resumed, _, res = _fit(
        4,
        start=2,
        model=model,
        opt=opt,
        ckpt=ckpt,
        history=tr.history_from_header(header),
        optimizer=optimizer,
        lr=0.01,
    )
    np.testing.assert_array_equal(resumed.flat_params, full.flat_params)
    assert [h.epoch for h in res.history] == [1, 2, 3, 4]
    # the checkpoint is also a plain model file
    loaded, _ = load_model(ckpt)
    np.testing.assert_array_equal(loaded.flat_params, full.flat_params)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    ckpt = tmp_path / "c.npz"
    model, opt, _ = _fit(1, ckpt=ckpt)
    good = model.flat_params.copy()
    before = ckpt.read_bytes()
    opt.lr = 1e30  # the next update sends the weights to inf, the loss to NaN
    cfg = tr.TrainConfig(epochs=3, batch_size=16, seed=7, lr=1e30)
    x, y = _data()
    with pytest.raises(tr.TrainingDiverged, match="too high.*last good checkpoint"):
        tr.fit(model, opt, cfg, x, y, start_epoch=1, checkpoint=ckpt)
    assert ckpt.read_bytes() == before
    np.testing.assert_array_equal(model.flat_params, good)


def test_ctrl_c_rolls_back_to_the_last_finished_epoch(tmp_path):
    ckpt = tmp_path / "c.npz"
    cfg = tr.TrainConfig(epochs=5, batch_size=16, seed=7)
    model = build_model(TINY, seed=7)
    opt = tr.make_run_optimizer(model, cfg)
    x, y = _data()
    calls = {"n": 0}

    def interrupt(b, batches, loss):
        calls["n"] += 1
        if calls["n"] == batches + 2:  # inside the second epoch
            raise KeyboardInterrupt

    res = tr.fit(model, opt, cfg, x, y, checkpoint=ckpt, on_batch=interrupt)
    assert res.interrupted and res.epochs_done == 1
    saved, header = load_model(ckpt)
    assert header["checkpoint"]["epoch"] == 1
    np.testing.assert_array_equal(saved.flat_params, model.flat_params)


def test_confusion_matrix_and_report_against_loops(rng):
    y = rng.integers(0, 4, 200)
    p = np.where(rng.random(200) < 0.7, y, rng.integers(0, 4, 200))
    cm = tr.confusion_matrix(y, p, 4)
    for i in range(4):
        for j in range(4):
            assert cm[i, j] == sum(1 for a, b in zip(y, p) if a == i and b == j)
    rep = tr.classification_report(cm)
    assert rep["accuracy"] == pytest.approx(np.mean(y == p))
    for k in range(4):
        assert rep["precision"][k] == pytest.approx(np.sum((p == k) & (y == k)) / np.sum(p == k))
        assert rep["recall"][k] == pytest.approx(np.sum((p == k) & (y == k)) / np.sum(y == k))
    skl = pytest.importorskip("sklearn.metrics")
    np.testing.assert_array_equal(cm, skl.confusion_matrix(y, p))


def test_mismatched_classes_says_the_fix():
    model = build_model(TINY.replace("fc 10", "fc 7"))
    with pytest.raises(ValueError, match="10 classes.*fc 10"):
        tr.check_classes(model, 10)


def test_config_checks():
    for bad, word in (
        (dict(epochs=0), "epochs"),
        (dict(batch_size=0), "batch-size"),
        (dict(lr=float("nan")), "lr"),
        (dict(optimizer="rmsprop"), "optimizer"),
        (dict(schedule="warm"), "schedule"),
        (dict(val_fraction=1.0), "val-fraction"),
    ):
        with pytest.raises(ValueError, match=word):
            tr.TrainConfig(**bad).check()


def test_train_throughput_reports_a_rate():
    out = tr.train_throughput(TINY, 8, steps=3, warmup=1)
    assert out["images_per_s"] > 0 and out["ms_per_step"] > 0 and out["batch_size"] == 8


def test_torch_network_matches_the_model_forward(rng):
    torch = pytest.importorskip("torch")
    from cnnkit import spec

    text = "input 1 9 9; conv 3 k=3 p=same; relu; pool avg k=2; conv 4 k=2; tanh; fc 5"
    model = build_model(text, seed=2, dtype=np.float64)
    net = tr.torch_network(spec.parse(text)).double()
    mine = [m for m in model.layers if m.params]
    theirs = [m for m in net if list(m.parameters())]
    with torch.no_grad():
        for a, b in zip(mine, theirs):
            b.weight.copy_(torch.tensor(a.w))
            b.bias.copy_(torch.tensor(a.b))
    x = rng.standard_normal((3, 1, 9, 9))
    np.testing.assert_allclose(
        model.forward(x), net(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-12
    )


@pytest.mark.slow
def test_default_digits_run_reaches_98_percent(tmp_path):
    """The issue's target: defaults on digits reach >= 98 % test accuracy."""
    start = time.perf_counter()
    out = tr.run("digits", output=tmp_path / "m.npz")
    assert out.test_accuracy >= 0.98
    assert out.result.epochs_done == tr.DATASET_DEFAULTS["digits"]["epochs"]
    # generous bound: the 20 s target is measured cold in the report; CI machines vary
    assert time.perf_counter() - start < 120
