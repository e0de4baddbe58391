"""The training loop: mini-batches, per-epoch checkpoints, metrics and throughput.

A run is reproducible: the weights come from ``seed``, the shuffling of epoch ``e`` from
``default_rng([seed, e])``, dropout masks from ``default_rng([seed, e, 1])`` and the
augmentation shifts (``augment``) from ``default_rng([seed, e, 2])``. Because
each epoch's randomness depends only on (seed, epoch), a run resumed from the checkpoint of
epoch ``e`` continues exactly as the uninterrupted run would have.

Checkpoints are complete model files (see :mod:`cnnkit.nn.serialize`) plus the optimiser
state, the epoch and the history; they are written atomically after every epoch, so Ctrl-C
or a crash leaves the previous epoch's checkpoint intact.
"""

from __future__ import annotations

import errno
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit import arch as arch_mod
from cnnkit import plots, signals
from cnnkit.data import Dataset, check_name, load_dataset, load_image_for_model
from cnnkit.errors import ParameterError
from cnnkit.io import check_writable
from cnnkit.kernels.threads import single_threaded_blas
from cnnkit.nn.layers import check_init
from cnnkit.nn.losses import softmax_cross_entropy
from cnnkit.nn.model import Model, build_model
from cnnkit.nn.optim import SCHEDULES, Optimizer, make_optimizer, scheduled_lr
from cnnkit.nn.serialize import load_model, read_model_file, save_model


@dataclass
class TrainConfig:
    """Hyper-parameters of a run (stored in checkpoints, so ``resume`` reuses them)."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 3e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "none"
    seed: int = 0
    init: str = "he"
    val_fraction: float = 0.1
    augment: bool = False

    def check(self) -> TrainConfig:
        """Raise ValueError naming the first out-of-range setting."""
        for name in ("lr", "momentum", "weight_decay", "val_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ParameterError(f"{name} must be a number, got {value!r}", name)
            if not math.isfinite(value):
                raise ParameterError(f"{name} must be a finite number, got {value}", name)
        for name in ("epochs", "batch_size", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ParameterError(f"{name} must be an integer, got {value!r}", name)
        if not 0 <= self.seed < 2**63:
            raise ParameterError(f"seed must be in 0 .. 2**63 - 1, got {self.seed}", "seed")
        if self.epochs < 1:
            raise ParameterError(f"epochs must be >= 1, got {self.epochs}", "epochs")
        if self.batch_size < 1:
            raise ParameterError(f"batch_size must be >= 1, got {self.batch_size}", "batch_size")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ParameterError(f"lr must be a positive number, got {self.lr}", "lr")
        if self.optimizer not in ("sgd", "adam"):
            raise ParameterError(
                f"optimizer must be sgd or adam, got {self.optimizer!r}", "optimizer"
            )
        if self.schedule not in SCHEDULES:
            raise ParameterError(
                f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}",
                "schedule",
            )
        if self.momentum < 0 or self.weight_decay < 0:
            raise ParameterError(
                "momentum and weight_decay must be >= 0", "momentum", "weight_decay"
            )
        check_init(self.init)
        if not 0 <= self.val_fraction < 1:
            raise ParameterError(
                f"val_fraction must be in [0, 1), got {self.val_fraction}", "val_fraction"
            )
        return self


# Defaults per data set: architecture and settings that reach good accuracy quickly. The
# digits recipe was chosen on validation images only (the runs are in docs/PERFORMANCE.md).
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {
        "arch": "digits",
        "epochs": 60,
        "batch_size": 32,
        "lr": 3e-3,
        "schedule": "cosine",
        "init": "torch",
        "weight_decay": 5e-4,
        "augment": False,
        "val_fraction": 0.0,
    },
    # shapes is solved in two epochs; weight decay then wipes the random start out of the
    # first layer, leaving smooth oriented bar, edge and blob detectors to look at
    "shapes": {
        "arch": "shapes",
        "epochs": 20,
        "batch_size": 32,
        "lr": 3e-3,
        "schedule": "cosine",
        "init": "torch",
        "weight_decay": 2e-2,
    },
    "mnist": {"arch": "lenet5", "epochs": 5, "batch_size": 64, "lr": 1e-3},
    "fashion-mnist": {"arch": "lenet5", "epochs": 8, "batch_size": 64, "lr": 1e-3},
}


def random_shift(
    x: np.ndarray, rng: np.random.Generator, max_shift: int | tuple[int, int] = 1
) -> np.ndarray:
    """Shift every image by its own random whole-pixel offset (a new array; ``x`` is kept).

    Parameters
    ----------
    x : ndarray
        Images (N, C, H, W).
    rng : numpy.random.Generator
        Draws the offsets: ``dy`` uniform in ``{-my, ..., my}`` and ``dx`` in
        ``{-mx, ..., mx}``, one pair per image (all channels of an image move together).
    max_shift : int or (my, mx)
        Largest shift in pixels, vertically and horizontally (an int: both), each in
        ``[0, min(H, W))``.

    Returns
    -------
    ndarray
        ``out[n, c, i, j] = x[n, c, clip(i - dy_n, 0, H-1), clip(j - dx_n, 0, W-1)]``: the
        image content moves down by ``dy`` and right by ``dx``; the row/column uncovered at
        the edge repeats the old border (for the digits that is background, and unlike a
        fixed fill value it needs no knowledge of the normalisation).

    Notes
    -----
    The order of the images, and so their labels, is unchanged. Cost: one padded copy and
    ``(2 my + 1)(2 mx + 1)`` fancy-indexed slices per call, a few ms per digits epoch.
    """
    if x.ndim != 4:
        raise ValueError(f"random_shift needs (N, C, H, W) images, got shape {x.shape}")
    h, w = x.shape[2:]
    my, mx = (max_shift, max_shift) if isinstance(max_shift, int) else max_shift
    if not (0 <= my < min(h, w) and 0 <= mx < min(h, w)):
        raise ValueError(f"max_shift must be in [0, {min(h, w) - 1}], got {max_shift}")
    n = len(x)
    dy = rng.integers(-my, my + 1, n)
    dx = rng.integers(-mx, mx + 1, n)
    padded = np.pad(x, ((0, 0), (0, 0), (my, my), (mx, mx)), mode="edge")
    out = np.empty_like(x)
    for sy in range(-my, my + 1):
        for sx in range(-mx, mx + 1):
            idx = np.flatnonzero((dy == sy) & (dx == sx))
            if idx.size:
                # content moves by (+sy, +sx): output row i reads padded row i + my - sy
                out[idx] = padded[idx, :, my - sy : my - sy + h, mx - sx : mx - sx + w]
    return out


# The ``augment`` shift (rows, columns) in pixels. Sideways only: the digits fill their 8x8
# height, and vertical shifts cut off ink (validation numbers at DATASET_DEFAULTS).
AUGMENT_SHIFT: tuple[int, int] = (0, 1)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    params = ("lr",)  # the message advises a smaller lr (see errors.ParameterError)


class OutputTaken(ValueError):
    """``path`` already holds a file that this run would replace: a model (or checkpoint)
    of another run, or something that is not a cnnkit model at all.

    ``what`` describes what is there (``"a model of another run (digits, 60 epochs)"``);
    ``run(..., force=True)`` replaces it.
    """

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = path, what
        super().__init__(f"{path} already holds {what}; pass force=True to replace it")


@dataclass
class EpochStats:
    """What one epoch measured."""

    epoch: int
    lr: float
    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    images_per_s: float
    seconds: float


@dataclass
class TrainResult:
    """The outcome of :func:`fit`."""

    history: list[EpochStats] = field(default_factory=list)
    interrupted: bool = False
    epochs_done: int = 0


def check_classes(model: Model, num_classes: int, class_names: list[str] | None = None) -> None:
    """The model must output one score per class; otherwise say so, with the fix."""
    out = model.output_shapes[-1]
    if model.num_outputs == num_classes:
        return
    shape = " x ".join(map(str, out))
    names = f" ({', '.join(class_names[:12])})" if class_names else ""
    raise ValueError(
        f"the architecture outputs {shape} values per image but the dataset has "
        f"{num_classes} classes{names}; end the spec with 'fc {num_classes}'"
    )


def make_run_optimizer(model: Model, cfg: TrainConfig) -> Optimizer:
    return make_optimizer(
        cfg.optimizer,
        model.flat_params,
        model.flat_grads,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
    )


def evaluate_loss_accuracy(
    model: Model, x: np.ndarray, y: np.ndarray, batch_size: int = 512
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy in evaluation mode."""
    if len(x) == 0:
        return float("nan"), float("nan")
    logits = model.predict_logits(x, batch_size)
    loss, _ = softmax_cross_entropy(logits.astype(np.float64), y)
    return loss, float(np.mean(logits.argmax(axis=1) == y))


def fit(
    model: Model,
    optimizer: Optimizer,
    cfg: TrainConfig,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    *,
    start_epoch: int = 0,
    history: list[EpochStats] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    meta: dict[str, Any] | None = None,
    on_batch: Callable[[int, int, float], None] | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> TrainResult:
    """Train ``model`` for epochs ``start_epoch .. cfg.epochs - 1``.

    OpenBLAS runs on one thread meanwhile: a small CNN's matrices are tiny, and BLAS
    threads would only compete with Numba's for the same cores.

    Parameters
    ----------
    model, optimizer : Model, Optimizer
        The optimiser updates ``model.flat_params``.
    cfg : TrainConfig
        Epochs, batch size, learning rate and schedule, seed.
    x_train, y_train, x_val, y_val : ndarray
        float images (N, C, H, W) and int labels.
    start_epoch : int
        First epoch to run (after ``resume``).
    history : list of EpochStats, optional
        Earlier epochs (stored again in every checkpoint).
    checkpoint : path-like, optional
        Written atomically after every epoch (model, optimiser state, epoch, history).
    meta : dict, optional
        Extra header entries for the checkpoint (dataset, class names, mean/std...).
    on_batch, on_epoch : callable, optional
        Progress callbacks: ``on_batch(batch_index, batches, loss)`` and ``on_epoch(stats)``.

    Returns
    -------
    TrainResult
        ``interrupted`` is True when Ctrl-C or SIGTERM (see :mod:`cnnkit.signals`) stopped
        the run; the model then holds the weights of the last completed epoch, which is also
        what the checkpoint holds.

    Raises
    ------
    TrainingDiverged
        The loss became NaN or infinite. The checkpoint of the last good epoch is kept and
        the model's weights are restored to it.
    """
    result = TrainResult(history=list(history or []), epochs_done=start_epoch)
    x_train = np.ascontiguousarray(x_train, model.dtype)
    y_train = np.asarray(y_train, np.int64)
    good_params = model.flat_params.copy()
    good_buffers = {k: v.copy() for k, v in model.state().items()}
    good_state = (good_params, good_buffers)
    with single_threaded_blas():
        for epoch in range(start_epoch, cfg.epochs):
            lr = scheduled_lr(cfg.schedule, cfg.lr, epoch, cfg.epochs)
            try:
                stats = _train_epoch(
                    model,
                    optimizer,
                    cfg,
                    (x_train, y_train, x_val, y_val),
                    epoch,
                    lr,
                    good_state,
                    checkpoint,
                    on_batch,
                )
            except KeyboardInterrupt:
                # Ctrl-C or SIGTERM: roll back to the end of the last complete epoch, which is
                # what the checkpoint holds (a half-finished epoch cannot be resumed exactly).
                model.flat_params[...] = good_params
                model.load_state(good_buffers)
                result.interrupted = True
                return result
            try:
                _commit_epoch(
                    result, stats, epoch, model, optimizer, cfg, checkpoint, meta, good_state
                )
                if on_epoch is not None:
                    on_epoch(stats)
            except KeyboardInterrupt:
                result.interrupted = True
                return result
    return result


def _commit_epoch(
    result: TrainResult,
    stats: EpochStats,
    epoch: int,
    model: Model,
    optimizer: Optimizer,
    cfg: TrainConfig,
    checkpoint: str | os.PathLike[str] | None,
    meta: dict[str, Any] | None,
    good_state: tuple[np.ndarray, dict[str, np.ndarray]],
) -> None:
    """The epoch is complete: its checkpoint and the bookkeeping that says so (history,
    epochs done, the weights a later Ctrl-C rolls back to) are written as one step; a signal
    in between is delivered right after."""
    good_params, good_buffers = good_state
    with signals.deferred():
        result.history.append(stats)
        result.epochs_done = epoch + 1
        if checkpoint is not None:
            save_checkpoint(checkpoint, model, optimizer, cfg, result, meta)
        good_params[...] = model.flat_params
        for k, v in model.state().items():
            good_buffers[k][...] = v


def _train_epoch(
    model: Model,
    optimizer: Optimizer,
    cfg: TrainConfig,
    data: tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None],
    epoch: int,
    lr: float,
    good: tuple[np.ndarray, dict[str, np.ndarray]],
    checkpoint: str | os.PathLike[str] | None,
    on_batch: Callable[[int, int, float], None] | None,
) -> EpochStats:
    """One pass over the shuffled training images, then validation.

    ``data`` is (x_train, y_train, x_val, y_val); ``good`` the parameters and buffers of the
    last complete epoch, restored when the loss diverges.
    """
    x_train, y_train, x_val, y_val = data
    good_params, good_buffers = good
    n = len(x_train)
    bs = cfg.batch_size
    batches = math.ceil(n / bs)
    optimizer.lr = lr
    order = np.random.default_rng([cfg.seed, epoch]).permutation(n)
    model.set_dropout_rng(np.random.default_rng([cfg.seed, epoch, 1]))
    # One gather per epoch; each batch is then a contiguous slice (no per-step copies).
    xs, ys = x_train[order], y_train[order]
    if cfg.augment:
        xs = random_shift(xs, np.random.default_rng([cfg.seed, epoch, 2]), AUGMENT_SHIFT)
    total_loss = 0.0
    correct = 0
    start = time.perf_counter()
    # overflow on the way to a NaN loss is reported once, below, not as warnings
    with np.errstate(over="ignore", invalid="ignore"):
        for b in range(batches):
            xb, yb = xs[b * bs : (b + 1) * bs], ys[b * bs : (b + 1) * bs]
            logits = model.forward(xb, True)
            loss, grad = softmax_cross_entropy(logits, yb)
            if not math.isfinite(loss):
                model.flat_params[...] = good_params
                model.load_state(good_buffers)
                kept = (
                    f"; the last good checkpoint ({checkpoint}, epoch {epoch}) is kept"
                    if checkpoint is not None and Path(checkpoint).exists()
                    else ""
                )
                raise TrainingDiverged(
                    f"the loss became {loss} in epoch {epoch + 1}, batch {b + 1}: the "
                    f"learning rate {lr:g} is too high; try a smaller lr{kept}"
                )
            model.backward(grad)
            optimizer.step()
            total_loss += loss * len(yb)
            correct += int(np.count_nonzero(logits.argmax(axis=1) == yb))
            if on_batch is not None:
                on_batch(b, batches, loss)
    seconds = time.perf_counter() - start
    if x_val is not None and y_val is not None and len(x_val):
        val_loss, val_acc = evaluate_loss_accuracy(model, x_val, y_val)
    else:
        val_loss = val_acc = None
    return EpochStats(
        epoch=epoch + 1,
        lr=lr,
        train_loss=total_loss / n,
        train_accuracy=correct / n,
        val_loss=val_loss,
        val_accuracy=val_acc,
        images_per_s=n / seconds if seconds > 0 else float("inf"),
        seconds=seconds,
    )


def save_checkpoint(
    path: str | os.PathLike[str],
    model: Model,
    optimizer: Optimizer,
    cfg: TrainConfig,
    result: TrainResult,
    meta: dict[str, Any] | None = None,
) -> None:
    """A model file with the optimiser state, the finished epoch count and the history."""
    info = dict(meta or {})
    info["checkpoint"] = {
        "epoch": result.epochs_done,
        "config": asdict(cfg),
        "optimizer": optimizer.config(),
        "history": [asdict(h) for h in result.history],
    }
    save_model(path, model, info, optimizer.state())


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[Model, Optimizer, TrainConfig, dict]:
    """Rebuild model, optimiser and config from a checkpoint for ``resume``.

    Raises
    ------
    ValueError
        ``path`` is a plain model file without training state, or is unreadable.
    """
    model, header = load_model(path)
    ck = header.get("checkpoint")
    if not isinstance(ck, dict) or "config" not in ck or "optimizer" not in ck:
        raise ParameterError(
            f"{path}: a model file without training state; resume needs a checkpoint "
            "(written next to the model as *.ckpt.npz during training)",
            "resume",
        )
    known = {f for f in TrainConfig.__dataclass_fields__}
    cfg = TrainConfig(**{k: v for k, v in ck["config"].items() if k in known})
    optimizer = make_run_optimizer(model, cfg)
    optimizer.load(header.pop("_optim_arrays"), ck["optimizer"])
    return model, optimizer, cfg, header


def history_from_header(header: dict) -> list[EpochStats]:
    ck = header.get("checkpoint") or {}
    return [EpochStats(**h) for h in ck.get("history", [])]


# ----------------------------------------------------------------------------- metrics


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[i, j]`` = number of images of class ``i`` predicted as class ``j``."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def classification_report(cm: np.ndarray) -> dict[str, Any]:
    """Accuracy and per-class precision/recall from a confusion matrix.

    Notes
    -----
    ``precision_k = cm[k, k] / sum_i cm[i, k]`` (of the images predicted k, the share that
    are k); ``recall_k = cm[k, k] / sum_j cm[k, j]`` (of the images of class k, the share
    found). A class never predicted (or absent) has precision (recall) reported as 0.
    """
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)
    actual = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
    total = cm.sum()
    return {
        "accuracy": float(tp.sum() / total) if total else float("nan"),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "support": actual.tolist(),
    }


def check_input_shape(model: Model, ds: Dataset) -> None:
    """The model must take the data set's images as they are; otherwise say so."""
    if tuple(model.input_shape) != tuple(ds.input_shape):
        raise ValueError(
            f"the model takes {' x '.join(map(str, model.input_shape))} inputs but {ds.name} "
            f"images are {' x '.join(map(str, ds.input_shape))}"
        )


def renormalised(x: np.ndarray, ds: Dataset, header: dict[str, Any]) -> np.ndarray:
    """Data normalised with the data set's statistics -> with the model's stored statistics."""
    mean = np.asarray(header.get("mean", ds.mean), np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(header.get("std", ds.std), np.float32).reshape(1, -1, 1, 1)
    dmean = np.asarray(ds.mean, np.float32).reshape(1, -1, 1, 1)
    dstd = np.asarray(ds.std, np.float32).reshape(1, -1, 1, 1)
    if mean.shape == dmean.shape and np.allclose(mean, dmean) and np.allclose(std, dstd):
        return x
    return ((x * dstd + dmean) - mean) / std


def image_input(path: str | os.PathLike[str], model: Model, header: dict[str, Any]) -> np.ndarray:
    """An image file as a batch of one for ``model``: resized, preprocessed and normalised
    as its model file records (``header`` from :func:`cnnkit.nn.serialize.load_model`)."""
    mean = np.asarray(header.get("mean", [0.0]), np.float32)
    std = np.asarray(header.get("std", [1.0]), np.float32)
    return load_image_for_model(
        path, model.input_shape, mean, std, preprocess=header.get("preprocess") or None
    )


SPLITS = ("test", "val", "train")


@dataclass
class Evaluation:
    """A model tested on one split of a data set: see :func:`evaluate`."""

    dataset: str
    split: str
    images: int
    class_names: list[str]
    confusion: np.ndarray
    report: dict[str, Any]


def evaluate(
    model_path: str | os.PathLike[str],
    dataset: str | None = None,
    split: str = "test",
    data_dir: str | os.PathLike[str] | None = None,
) -> Evaluation:
    """Accuracy, per-class precision and recall, and the confusion matrix of a model file.

    ``dataset`` and ``data_dir`` default to what the model file records; the split is drawn
    with the seed and validation share it was trained with, and the images are normalised
    with the model's statistics (:func:`renormalised`).
    """
    if split not in SPLITS:
        raise ParameterError(f"split must be test, val or train, got {split!r}", "split")
    model, header = load_model(model_path)
    name = dataset or header.get("dataset")
    if not name:
        raise ParameterError(f"{model_path} does not record its data set; add dataset", "dataset")
    ds = load_dataset(
        name,
        data_dir=data_dir if data_dir is not None else header.get("data_dir"),
        seed=int(header.get("split_seed", 0)),
        val_fraction=float(header.get("val_fraction", 0.1)),
    )
    check_input_shape(model, ds)
    check_classes(model, ds.num_classes, list(ds.class_names))
    x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
    if len(y) == 0:
        raise ValueError(f"the {split} split of {ds.name} is empty")
    pred = model.predict_logits(renormalised(x, ds, header)).argmax(axis=1)
    cm = confusion_matrix(y, pred, ds.num_classes)
    names = [str(c) for c in ds.class_names]
    return Evaluation(ds.name, split, int(len(y)), names, cm, classification_report(cm))


def predict(
    model_path: str | os.PathLike[str],
    images: list[str | os.PathLike[str]],
    top_k: int = 3,
) -> list[dict[str, Any]]:
    """The ``top_k`` most probable classes of each image, each image prepared as the
    model's training images were (:func:`image_input`).

    Returns one ``{"image": path, "top": [{"class", "index", "p"}, ...]}`` per image, most
    probable first (at most as many as the model has classes).
    """
    if top_k < 1:
        raise ParameterError(f"top_k must be >= 1, got {top_k}", "top_k")
    model, header = load_model(model_path)
    names = header.get("class_names") or [str(i) for i in range(model.num_outputs)]
    results = []
    for path in images:
        x = image_input(path, model, header)
        p = model.predict_proba(x)[0]
        order = np.argsort(-p, kind="stable")[: min(top_k, p.size)]
        results.append(
            {
                "image": str(path),
                "top": [{"class": str(names[i]), "index": int(i), "p": float(p[i])} for i in order],
            }
        )
    return results


def draw_model(
    model_path: str | os.PathLike[str],
    filters: str | os.PathLike[str] | None = None,
    activations: tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
) -> dict[str, Any]:
    """Look inside a trained model: its first convolution's kernels on one signed colour
    scale (``filters``: the figure's file) and every layer's output for one image
    (``activations``: the image and the figure's file; last layer: class probabilities).

    Returns the facts of what was drawn (files, layer names and shapes, probabilities).
    """
    if filters is None and activations is None:
        raise ParameterError(
            "nothing to draw: add filters OUT.png and/or activations IMAGE OUT.png",
            "filters",
            "activations",
        )
    model, header = load_model(model_path)
    facts: dict[str, Any] = {"model": str(model_path)}
    if filters is not None:
        conv = model.first_conv()
        if conv is None:
            raise ValueError(f"{model_path} has no convolution layer: no filters to show")
        plots.filter_grid_figure(conv.w, filters, f"{conv.name}: {conv.w.shape[0]} kernels")
        facts["filters"] = {
            "file": str(filters),
            "layer": conv.name,
            "shape": list(conv.w.shape),
            "max_abs_weight": float(np.abs(conv.w).max()),
        }
    if activations is not None:
        image, out = activations
        x = image_input(image, model, header)
        layers = [(name, a[0]) for name, a in model.activations(x)]
        probs = model.predict_proba(x)[0]
        names = header.get("class_names") or [str(i) for i in range(probs.size)]
        plots.activations_figure(
            x[0], layers, out, class_names=names, probabilities=probs, title=Path(image).name
        )
        facts["activations"] = {
            "file": str(out),
            "image": str(image),
            "layers": [{"name": n, "shape": list(a.shape)} for n, a in layers],
            "probabilities": {str(c): float(p) for c, p in zip(names, probs)},
        }
    return facts


# ----------------------------------------------------------------------------- throughput


def _random_batch(model: Model, batch_size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch_size, *model.input_shape)).astype(model.dtype)
    y = rng.integers(0, max(model.num_outputs, 1), batch_size)
    return x, y


def train_throughput(
    arch: str,
    batch_size: int,
    steps: int = 50,
    *,
    optimizer: str = "adam",
    lr: float = 3e-3,
    warmup: int = 5,
    input_shape: tuple[int, ...] | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Training images per second of ``arch`` (forward + backward + optimiser step).

    Parameters
    ----------
    arch : str
        A spec for :func:`cnnkit.arch.parse` (a shipped name, a file or inline text).
    batch_size : int
        Images per step; the batch is random data of the spec's input shape.
    steps : int
        Timed steps, after ``warmup`` untimed ones (JIT compilation, caches).
    optimizer : str
        ``"adam"`` or ``"sgd"`` (momentum 0.9).

    Returns
    -------
    dict
        ``images_per_s``, ``ms_per_step`` (median over steps), ``steps``, ``batch_size``.
    """
    model = build_model(arch, input_shape, seed=seed)
    x, y = _random_batch(model, batch_size, seed)
    cfg = TrainConfig(optimizer=optimizer, lr=lr, batch_size=batch_size)
    opt = make_run_optimizer(model, cfg)
    times = []
    with single_threaded_blas():
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            _, grad = softmax_cross_entropy(model.forward(x, True), y)
            model.backward(grad)
            opt.step()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    ms = float(np.median(times)) * 1e3 if times else float("nan")
    return {
        "images_per_s": batch_size / ms * 1e3,
        "ms_per_step": ms,
        "steps": steps,
        "batch_size": batch_size,
    }


@dataclass
class RunOutcome:
    """Everything ``cnnkit train`` reports."""

    model: Model
    dataset: Dataset
    config: TrainConfig
    result: TrainResult
    test_loss: float
    test_accuracy: float
    output: Path
    checkpoint: Path
    seconds: float
    resumed_from: int = 0

    def metrics(self) -> dict[str, Any]:
        last = self.result.history[-1] if self.result.history else None
        return {
            "dataset": self.dataset.name,
            "arch": self.model.arch.name,
            "parameters": self.model.parameter_count(),
            "config": asdict(self.config),
            "epochs_done": self.result.epochs_done,
            "interrupted": self.result.interrupted,
            "resumed_from_epoch": self.resumed_from,
            "train_loss": last.train_loss if last else None,
            "train_accuracy": last.train_accuracy if last else None,
            "val_accuracy": last.val_accuracy if last else None,
            "test_loss": self.test_loss,
            "test_accuracy": self.test_accuracy,
            "images_per_s": (
                float(np.median([h.images_per_s for h in self.result.history]))
                if self.result.history
                else None
            ),
            "seconds": self.seconds,
            "model": str(self.output),
            "checkpoint": str(self.checkpoint),
            "history": [asdict(h) for h in self.result.history],
        }


DEFAULT_OUTPUT = "model.npz"


def declared_input_shape(source: str) -> tuple[int, ...] | None:
    """The input shape a spec's own ``input`` line declares, or None when it has none."""

    try:
        return tuple(arch_mod.parse(source).input_shape)
    except ValueError:
        # no input line, an ONNX file with a dynamic input, or a mistake that building the
        # model reports with the data set's shape
        return None


def _describe_file(path: Path) -> tuple[str | None, str]:
    """(run id, words for what ``path`` holds) of an existing file."""

    try:
        header, _ = read_model_file(path)
    except (ValueError, OSError, KeyError):
        return None, "a file that is not a cnnkit model"
    ck = header.get("checkpoint") or {}
    epochs = ck.get("epoch", len(header.get("history", [])))
    kind = "checkpoint" if ck else "model"
    return header.get("run_id"), (
        f"a {kind} of another run ({header.get('dataset', 'unknown data')}, {epochs} epochs)"
    )


def check_outputs(paths: list[Path], run_id: str, force: bool) -> None:
    """Refuse to replace a file that another run wrote (or that is no model) unless ``force``.

    A resumed run carries the run id of the run it continues, so it may write back to that
    run's model and checkpoint.
    """
    if force:
        return
    for path in paths:
        if path.exists():
            if path.is_dir():
                raise ValueError(f"{path} is a folder; give a file name")
            owner, what = _describe_file(path)
            if owner is None or owner != run_id:
                raise OutputTaken(path, what)


def _resume_state(
    resume: str | os.PathLike[str],
    optimizer: Optimizer,
    cfg: TrainConfig,
    header: dict[str, Any],
    name: str,
    overrides: dict[str, Any],
    data_dir: str | os.PathLike[str] | None,
) -> tuple[Dataset, list[EpochStats], int]:
    """Apply ``overrides`` to a checkpoint's config and reload its data set: the data, the
    history so far and the epoch to continue from. ``data_dir`` is already resolved."""
    for key in ("seed", "val_fraction", "init"):
        if key in overrides and overrides[key] != getattr(cfg, key):
            raise ParameterError(
                f"{key} cannot change when resuming ({resume} used {getattr(cfg, key)}): "
                "it fixes the data split and the random order; drop the option",
                key,
            )
    for key, value in overrides.items():
        setattr(cfg, key, value)
    cfg.check()
    if header.get("dataset") and header["dataset"] != name:
        raise ParameterError(
            f"{resume} was trained on {header['dataset']!r}, not {name!r}; "
            f"add dataset={header['dataset']}",
            "dataset",
        )
    optimizer.lr = cfg.lr
    start_epoch = int(header["checkpoint"]["epoch"])
    if start_epoch >= cfg.epochs:
        raise ParameterError(
            f"{resume} already finished {start_epoch} epochs; ask for more with "
            f"epochs={start_epoch + 5} (the total, not the extra)",
            "epochs",
        )
    ds = load_dataset(name, data_dir=data_dir, seed=cfg.seed, val_fraction=cfg.val_fraction)
    return ds, history_from_header(header), start_epoch


def _fresh_state(
    name: str,
    arch: str | None,
    overrides: dict[str, Any],
    data_dir: str | os.PathLike[str] | None,
) -> tuple[Model, Optimizer, TrainConfig, Dataset]:
    """The data set's defaults with ``overrides``, its data, and a new model and optimiser
    for the spec ``arch`` (or the data set's default architecture)."""
    defaults = DATASET_DEFAULTS.get(name, {"arch": None, "epochs": 10, "batch_size": 64})
    cfg_values = {k: v for k, v in defaults.items() if k != "arch"}
    cfg_values.update(overrides)
    cfg = TrainConfig(**cfg_values).check()
    ds = load_dataset(name, data_dir=data_dir, seed=cfg.seed, val_fraction=cfg.val_fraction)
    spec_source = arch or defaults.get("arch")
    if spec_source is None:
        raise ParameterError(
            f"no default architecture for {name!r}; give one with arch (a shipped name "
            "such as lenet5, a spec file, or text like 'input 3 32 32; conv 16 k=3; ...')",
            "arch",
        )
    declared = declared_input_shape(spec_source)
    if declared is not None and declared != tuple(ds.input_shape):
        raise ValueError(
            f"the spec's input line says {arch_mod.format_shape(declared)} but {name} "
            f"images are {arch_mod.format_shape(ds.input_shape)}; change the input line to "
            f"'input {' '.join(map(str, ds.input_shape))}' or leave it out"
        )
    model = build_model(spec_source, tuple(ds.input_shape), seed=cfg.seed, init=cfg.init)
    return model, make_run_optimizer(model, cfg), cfg, ds


def run(
    dataset: str | None = "digits",
    *,
    arch: str | None = None,
    output: str | os.PathLike[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    on_start: Callable[[Model, Dataset, TrainConfig, int], None] | None = None,
    on_batch: Callable[[int, int, float], None] | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> RunOutcome:
    """Load a data set, build (or resume) a model, train it, test it and save it.

    ``overrides`` holds the TrainConfig fields the user set; the rest come from
    :data:`DATASET_DEFAULTS` (or, with ``resume``, from the checkpoint).

    ``dataset`` None means digits, or with ``resume`` the data set the checkpoint was
    trained on. ``output`` defaults to ``model.npz``; with ``resume`` to the model file of the
    run being resumed (recorded in its checkpoint), so a resumed run finishes where it
    started. The model file holds the full history. An existing ``output`` or
    ``checkpoint`` written by another run, or that is no cnnkit model, raises
    :class:`OutputTaken` unless ``force``.
    A spec whose ``input`` line disagrees with the data set's images raises ValueError.
    """

    t0 = time.perf_counter()
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    start_epoch, history = 0, []
    run_id = uuid.uuid4().hex
    if resume is not None:
        check_resume(resume, arch)
        model, optimizer, cfg, header = load_checkpoint(resume)
        if dataset is None:
            dataset = header.get("dataset") or "digits"
    name = check_name(dataset or "digits")
    if resume is not None:
        run_id = header.get("run_id") or run_id
        if output is None:
            output, checkpoint = _resumed_outputs(resume, header, checkpoint)
    # checked before any data is loaded: finding out after an hour of training is too late
    out, ckpt = check_output_paths(output if output is not None else DEFAULT_OUTPUT, checkpoint)
    check_outputs([out, ckpt], run_id, force)
    if resume is not None:
        data_dir = data_dir if data_dir is not None else header.get("data_dir")
        ds, history, start_epoch = _resume_state(
            resume, optimizer, cfg, header, name, overrides, data_dir
        )
    else:
        model, optimizer, cfg, ds = _fresh_state(name, arch, overrides, data_dir)
    check_input_shape(model, ds)
    check_classes(model, ds.num_classes, list(ds.class_names))
    meta = model_meta(ds, data_dir, cfg.seed, cfg.val_fraction)
    meta["run_id"] = run_id
    # where the model goes, relative to the checkpoint: resume finishes into the same file
    meta["output"] = os.path.relpath(out.resolve(), ckpt.resolve().parent)
    if on_start is not None:
        on_start(model, ds, cfg, start_epoch)
    result = fit(
        model,
        optimizer,
        cfg,
        ds.x_train,
        ds.y_train,
        ds.x_val,
        ds.y_val,
        start_epoch=start_epoch,
        history=history,
        checkpoint=ckpt,
        meta=meta,
        on_batch=on_batch,
        on_epoch=on_epoch,
    )
    test_loss, test_acc = _test_and_save(model, ds, result, out, meta)
    return RunOutcome(
        model=model,
        dataset=ds,
        config=cfg,
        result=result,
        test_loss=test_loss,
        test_accuracy=test_acc,
        output=out,
        checkpoint=ckpt,
        seconds=time.perf_counter() - t0,
        resumed_from=start_epoch,
    )


def check_resume(resume: str | os.PathLike[str], arch: str | None) -> None:
    """A checkpoint to resume must exist, and its architecture is the checkpoint's (``arch``
    must be None). :func:`run` checks this first; a front end may call it earlier."""
    if not Path(resume).exists():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(resume))
    if arch is not None:
        raise ParameterError(
            "arch cannot change a resumed model; drop arch or resume", "arch", "resume"
        )


def _resumed_outputs(
    resume: str | os.PathLike[str],
    header: dict[str, Any],
    checkpoint: str | os.PathLike[str] | None,
) -> tuple[str | os.PathLike[str] | None, str | os.PathLike[str]]:
    """Finish where the resumed run was going: its model file, its checkpoint."""
    output = Path(resume).parent / header["output"] if header.get("output") else None
    return output, checkpoint if checkpoint is not None else resume


def _test_and_save(
    model: Model, ds: Dataset, result: TrainResult, out: Path, meta: dict[str, Any]
) -> tuple[float, float]:
    """Test loss and accuracy (NaN after Ctrl-C), and the model file with the history when
    at least one epoch finished."""
    try:
        test_loss, test_acc = evaluate_loss_accuracy(model, ds.x_test, ds.y_test)
    except KeyboardInterrupt:
        result.interrupted = True
        test_loss = test_acc = float("nan")
    if result.epochs_done > 0:
        try:
            with signals.deferred():  # a second Ctrl-C must not cost the finished model
                save_model(out, model, {**meta, "history": [asdict(h) for h in result.history]})
        except KeyboardInterrupt:
            result.interrupted = True
    return test_loss, test_acc


def model_meta(
    ds: Dataset,
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
) -> dict[str, Any]:
    """The header entries that let ``evaluate`` and ``predict`` treat data as training did.

    ``split_seed`` and ``val_fraction`` fix the train/val/test split, so ``evaluate`` tests
    on the same held-out images the run never trained on.
    """
    return {
        "dataset": ds.name,
        "split_seed": int(seed),
        "val_fraction": float(val_fraction),
        "data_dir": str(data_dir) if data_dir is not None else None,
        "class_names": list(ds.class_names),
        "mean": [float(v) for v in np.atleast_1d(ds.mean)],
        "std": [float(v) for v in np.atleast_1d(ds.std)],
        "preprocess": dict(getattr(ds, "preprocess", {}) or {}),
    }


def check_output_paths(
    output: str | os.PathLike[str], checkpoint: str | os.PathLike[str] | None = None
) -> tuple[Path, Path]:
    """The model and checkpoint paths of a run, checked before any work is done.

    Both must end in ``.npz``, be two different files, and be writable now (the folder
    exists and takes a new file; an existing target is a writable regular file): finding
    that out after an hour of training is too late.
    """

    out = Path(output)
    ckpt = Path(checkpoint) if checkpoint is not None else default_checkpoint_path(out)
    for what, path in (("output", out), ("checkpoint", ckpt)):
        if path.suffix.lower() != ".npz":
            raise ValueError(
                f"{what} {str(path)!r}: model files are .npz archives; give a name ending in .npz"
            )
    if os.path.realpath(out) == os.path.realpath(ckpt):
        raise ValueError(
            f"output and checkpoint are the same file ({out}); the checkpoint holds the "
            "training state and needs a name of its own"
        )
    for path in (out, ckpt):
        check_writable(path)
    return out, ckpt


def default_checkpoint_path(output: str | os.PathLike[str]) -> Path:
    """``model.npz`` -> ``model.ckpt.npz`` (next to the model)."""
    out = Path(output)
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out.with_name(f"{stem}.ckpt{out.suffix or '.npz'}")


__all__ = [
    "DATASET_DEFAULTS",
    "DEFAULT_OUTPUT",
    "SPLITS",
    "EpochStats",
    "Evaluation",
    "OutputTaken",
    "RunOutcome",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "check_classes",
    "check_input_shape",
    "check_output_paths",
    "check_outputs",
    "classification_report",
    "confusion_matrix",
    "declared_input_shape",
    "default_checkpoint_path",
    "evaluate",
    "evaluate_loss_accuracy",
    "fit",
    "image_input",
    "random_shift",
    "load_checkpoint",
    "make_run_optimizer",
    "model_meta",
    "renormalised",
    "run",
    "save_checkpoint",
    "train_throughput",
]
