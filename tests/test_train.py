"""The training loop: reproducibility, checkpoints and resume, NaN stop, Ctrl-C, metrics."""

from __future__ import annotations

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


@pytest.mark.parametrize(
    ("optimizer", "augment"), [("adam", False), ("sgd", False), ("adam", True)]
)
def test_resume_continues_exactly(tmp_path, optimizer, augment):
    full, _, _ = _fit(4, optimizer=optimizer, lr=0.01, augment=augment)
    ckpt = tmp_path / "run.ckpt.npz"
    _fit(2, optimizer=optimizer, lr=0.01, ckpt=ckpt, augment=augment)
    model, opt, cfg, header = tr.load_checkpoint(ckpt)
    assert header["checkpoint"]["epoch"] == 2 and cfg.optimizer == optimizer
    assert cfg.augment == augment
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
        augment=augment,
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
        (dict(batch_size=0), "batch_size"),
        (dict(lr=float("nan")), "lr"),
        (dict(optimizer="rmsprop"), "optimizer"),
        (dict(schedule="warm"), "schedule"),
        (dict(val_fraction=1.0), "val_fraction"),
    ):
        with pytest.raises(ValueError, match=f"^{word} must"):
            tr.TrainConfig(**bad).check()


def test_train_throughput_reports_a_rate():
    out = tr.train_throughput(TINY, 8, steps=3, warmup=1)
    assert out["images_per_s"] > 0 and out["ms_per_step"] > 0 and out["batch_size"] == 8


def _shifted(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Plain-loop oracle: content moved down dy, right dx; uncovered pixels repeat the edge."""
    c, h, w = img.shape
    out = np.empty_like(img)
    for k in range(c):
        for i in range(h):
            for j in range(w):
                out[k, i, j] = img[k, min(max(i - dy, 0), h - 1), min(max(j - dx, 0), w - 1)]
    return out


def _which_shift(img: np.ndarray, source: np.ndarray) -> tuple[int, int] | None:
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if np.array_equal(img, _shifted(source, dy, dx)):
                return dy, dx
    return None


def test_random_shift_is_a_one_pixel_shift_of_each_source_and_repeats_by_seed(rng):
    x = rng.standard_normal((120, 2, 6, 7)).astype(np.float32)
    before = x.copy()
    out = tr.random_shift(x, np.random.default_rng(5))
    np.testing.assert_array_equal(x, before)  # the input is not modified
    assert out.shape == x.shape and out.dtype == x.dtype
    shifts = [_which_shift(out[n], x[n]) for n in range(len(x))]
    assert None not in shifts  # image n is a shift of source n (same order, same label)
    assert len(set(shifts)) == 9  # all offsets -1..1 x -1..1 occur, (0, 0) included
    # the interior also agrees with np.roll, an independent formulation of the same shift
    for n, (dy, dx) in enumerate(shifts):
        rolled = np.roll(x[n], (dy, dx), axis=(1, 2))
        np.testing.assert_array_equal(out[n, :, 1:-1, 1:-1], rolled[:, 1:-1, 1:-1])
    np.testing.assert_array_equal(out, tr.random_shift(x, np.random.default_rng(5)))
    assert not np.array_equal(out, tr.random_shift(x, np.random.default_rng(6)))
    np.testing.assert_array_equal(tr.random_shift(x, np.random.default_rng(5), 0), x)
    sideways = tr.random_shift(x, np.random.default_rng(5), (0, 1))
    assert {_which_shift(sideways[n], x[n])[0] for n in range(len(x))} == {0}
    with pytest.raises(ValueError, match="max_shift"):
        tr.random_shift(x, np.random.default_rng(0), 6)
    with pytest.raises(ValueError, match="N, C, H, W"):
        tr.random_shift(x[0], np.random.default_rng(0))


def test_augmented_training_keeps_labels_and_repeats_exactly(monkeypatch):
    """Every image a training step sees is a shift of a source image with the step's label."""
    x, y = _data()
    x = x.astype(np.float32)  # what the model sees
    seen = []
    real = tr.softmax_cross_entropy

    def spy(logits, labels):
        seen.append(labels.copy())
        return real(logits, labels)

    model = build_model(TINY, seed=7)
    inputs = []
    forward = model.forward

    def record(xb, training=False):
        if training:
            inputs.append(xb.copy())
        return forward(xb, training)

    monkeypatch.setattr(model, "forward", record)
    monkeypatch.setattr(tr, "softmax_cross_entropy", spy)
    cfg = tr.TrainConfig(epochs=2, batch_size=16, seed=7, augment=True)
    tr.fit(model, tr.make_run_optimizer(model, cfg), cfg, x, y)
    monkeypatch.undo()
    # every one-pixel shift of every source, by content: one look-up per image seen
    sources: dict[bytes, set[int]] = {}
    for n in range(len(x)):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                sources.setdefault(_shifted(x[n], dy, dx).tobytes(), set()).add(n)
    moved = 0
    for xb, yb in zip(inputs, seen):
        for img, label in zip(xb, yb):
            matches = sorted(sources.get(img.tobytes(), ()))
            assert len(matches) == 1 and y[matches[0]] == label
            moved += not np.array_equal(img, x[matches[0]])
    assert len(seen) == 2 * 6 and moved > len(x)  # most images were actually moved
    # the same seed repeats the run exactly; without augmentation the weights differ
    a, _, _ = _fit(2, augment=True)
    b, _, _ = _fit(2, augment=True)
    c, _, _ = _fit(2, augment=False)
    np.testing.assert_array_equal(a.flat_params, b.flat_params)
    assert not np.array_equal(a.flat_params, c.flat_params)


def test_resume_needs_an_existing_checkpoint_and_keeps_its_architecture(tmp_path):
    from cnnkit.errors import ParameterError

    with pytest.raises(FileNotFoundError) as missing:
        tr.run(resume=tmp_path / "none.ckpt.npz")
    assert missing.value.filename == str(tmp_path / "none.ckpt.npz")
    ckpt = tmp_path / "a.ckpt.npz"
    ckpt.write_bytes(b"")
    with pytest.raises(ParameterError, match="^arch cannot change a resumed model") as exc:
        tr.run(resume=ckpt, arch="conv 4 k=3; fc 10")
    assert exc.value.params == ("arch", "resume")


def test_predict_and_draw_model_read_a_model_file(tmp_path):
    from pathlib import Path

    from cnnkit.errors import ParameterError
    from cnnkit.nn.serialize import save_model

    model = build_model("input 1 8 8; conv 2 k=3; relu; fc 3", (1, 8, 8), seed=0)
    path = tmp_path / "m.npz"
    save_model(path, model, {"class_names": ["a", "b", "c"], "mean": [0.0], "std": [1.0]})
    image = Path(__file__).resolve().parent.parent / "sample_images" / "lecture_8x8.png"
    (result,) = tr.predict(path, [image], top_k=5)
    ps = [t["p"] for t in result["top"]]
    assert len(ps) == 3 and ps == sorted(ps, reverse=True) and sum(ps) == pytest.approx(1)
    want = model.predict_proba(tr.image_input(image, *load_model(path)))[0]
    assert result["top"][0]["class"] == "abc"[int(np.argmax(want))]
    assert result["top"][0]["p"] == pytest.approx(float(want.max()))
    with pytest.raises(ParameterError, match="^top_k must be >= 1"):
        tr.predict(path, [image], top_k=0)
    figures = (tmp_path / "f.png", tmp_path / "a.png")
    facts = tr.draw_model(path, filters=figures[0], activations=(image, figures[1]))
    assert all(f.stat().st_size > 0 for f in figures)
    assert facts["filters"]["shape"] == [2, 1, 3, 3]
    assert facts["filters"]["max_abs_weight"] == pytest.approx(
        float(np.abs(model.layers[0].w).max())
    )
    assert list(facts["activations"]["probabilities"]) == ["a", "b", "c"]
    with pytest.raises(ParameterError, match="^nothing to draw") as exc:
        tr.draw_model(path)
    assert exc.value.params == ("filters", "activations")
