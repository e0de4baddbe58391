"""``cnnkit train``, ``evaluate``, ``predict`` and ``visualize``: a small CNN, end to end.

Thin commands: parse options, call :mod:`cnnkit.train` / :mod:`cnnkit.nn`, render. Numba and
the training code are imported inside the command functions, so ``cnnkit --help`` and the
arithmetic commands stay fast.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from cnnkit import signals
from cnnkit.cli.common import Failure, console, err_console, friendly_errors, say

TRAIN_EXAMPLES = """\
Examples:

  cnnkit train                                   # digits, the default net, a few seconds

  cnnkit train --dataset shapes --epochs 5 -o shapes.npz

  cnnkit train --arch "input 1 8 8; conv 8 k=3 p=1; relu; pool max k=2; fc 10" --json

  cnnkit train --resume model.ckpt.npz --epochs 40

A checkpoint (MODEL.ckpt.npz next to -o) is written after every epoch; Ctrl-C stops \
with the last finished epoch saved, and --resume continues from it.
"""

EVALUATE_EXAMPLES = """\
Examples:

  cnnkit evaluate model.npz

  cnnkit evaluate model.npz --plot confusion.png --json
"""

PREDICT_EXAMPLES = """\
Examples:

  cnnkit predict model.npz my_digit.png

  cnnkit predict model.npz a.png b.png --top-k 1 --json
"""

VISUALIZE_EXAMPLES = """\
Examples:

  cnnkit visualize model.npz --filters filters.png

  cnnkit visualize model.npz --activations my_digit.png maps.png
"""


def _pct(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f} %"


def _history_table(history: list[Any]) -> Table:
    table = Table(title="training")
    for col in ("epoch", "lr", "loss", "train acc", "val acc", "images/s", "s"):
        table.add_column(col, justify="right")
    for h in history:
        table.add_row(
            str(h.epoch),
            f"{h.lr:.3g}",
            f"{h.train_loss:.4f}",
            _pct(h.train_accuracy),
            _pct(h.val_accuracy),
            f"{h.images_per_s:,.0f}",
            f"{h.seconds:.2f}",
        )
    return table


def _load(model_path: Path) -> tuple[Any, dict]:
    from cnnkit.nn.serialize import load_model

    return load_model(model_path)


def _renormalise(x: Any, ds: Any, header: dict) -> Any:
    """Data normalised with the data set's statistics -> with the model's stored statistics."""
    import numpy as np

    mean = np.asarray(header.get("mean", ds.mean), np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(header.get("std", ds.std), np.float32).reshape(1, -1, 1, 1)
    dmean = np.asarray(ds.mean, np.float32).reshape(1, -1, 1, 1)
    dstd = np.asarray(ds.std, np.float32).reshape(1, -1, 1, 1)
    if mean.shape == dmean.shape and np.allclose(mean, dmean) and np.allclose(std, dstd):
        return x
    return ((x * dstd + dmean) - mean) / std


def register(app: typer.Typer) -> None:
    """Add ``train``, ``evaluate``, ``predict`` and ``visualize`` to the app."""

    @app.command("train", epilog=TRAIN_EXAMPLES)
    @friendly_errors
    def train(
        dataset: str = typer.Option(
            "digits", "--dataset", "-d", help="digits, shapes, mnist, fashion-mnist, folder, npz."
        ),
        arch: str | None = typer.Option(
            None,
            "--arch",
            "-a",
            help="Architecture spec (name, file or inline); "
            "default per dataset (digits: 'digits').",
        ),
        epochs: int | None = typer.Option(None, "--epochs", "-e", help="Total epochs."),
        batch_size: int | None = typer.Option(None, "--batch-size", "-b"),
        lr: float | None = typer.Option(None, "--lr", help="Learning rate."),
        optimizer: str | None = typer.Option(None, "--optimizer", help="sgd or adam."),
        momentum: float | None = typer.Option(None, "--momentum", help="SGD momentum (0.9)."),
        nesterov: bool | None = typer.Option(
            None, "--nesterov/--no-nesterov", help="Nesterov momentum (SGD)."
        ),
        weight_decay: float | None = typer.Option(
            None, "--weight-decay", help="L2 penalty (digits: 5e-4)."
        ),
        schedule: str | None = typer.Option(
            None, "--schedule", help="none, step or cosine (digits: cosine)."
        ),
        seed: int | None = typer.Option(None, "--seed", help="Same seed, same run (0)."),
        init: str | None = typer.Option(
            None, "--init", help="he (He/Glorot) or torch (PyTorch's default; the digits default)."
        ),
        val_fraction: float | None = typer.Option(
            None, "--val-fraction", help="Share held out for validation (digits: 0)."
        ),
        augment: bool | None = typer.Option(
            None,
            "--augment/--no-augment",
            help="Shift each training image sideways by a random -1..1 pixel each epoch "
            "(seeded by --seed). Off by default: on digits it lowered validation accuracy.",
        ),
        data_dir: str | None = typer.Option(
            None, "--data-dir", help="IDX folder (mnist), image folder, or .npz file."
        ),
        output: Path = typer.Option(Path("model.npz"), "--output", "-o", help="Model file."),
        checkpoint: Path | None = typer.Option(
            None, "--checkpoint", help="Checkpoint file (default: MODEL.ckpt.npz)."
        ),
        resume: Path | None = typer.Option(None, "--resume", help="Continue a checkpoint."),
        as_json: bool = typer.Option(False, "--json", help="Print metrics as JSON."),
    ) -> None:
        """Train a CNN on a data set and save the model (default: digits, about 98 % test).

        The digits defaults (Adam 3e-3, batch 32, cosine over 60 epochs, PyTorch init,
        weight decay 5e-4, no augmentation) were chosen on validation splits of the
        training images only; see cnnkit.train.DATASET_DEFAULTS for the numbers.
        """
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        from cnnkit import train as tr

        if resume is not None and not resume.exists():
            raise FileNotFoundError(2, "no such file", str(resume))
        overrides = dict(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            optimizer=optimizer.lower() if optimizer else None,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            schedule=schedule.lower() if schedule else None,
            seed=seed,
            init=init.lower() if init else None,
            val_fraction=val_fraction,
            augment=augment,
        )
        if resume is not None and arch is not None:
            raise ValueError("--arch cannot change a resumed model; drop --arch or --resume")

        progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]}"),
            TextColumn("{task.fields[speed]}"),
            TimeElapsedColumn(),
            console=err_console,
            disable=as_json,
            transient=False,
        )
        state: dict[str, Any] = {}

        def on_start(model: Any, ds: Any, cfg: Any, start: int) -> None:
            state["cfg"] = cfg
            state["epoch"] = start + 1
            state["task"] = progress.add_task(
                "train",
                total=math.ceil(len(ds.y_train) / cfg.batch_size),
                epoch=start + 1,
                epochs=cfg.epochs,
                loss=float("nan"),
                acc="-",
                speed="",
            )
            if not as_json:
                err_console.print(
                    f"{ds.name}: {len(ds.y_train)} train / {len(ds.y_val)} val / "
                    f"{len(ds.y_test)} test images {' x '.join(map(str, ds.input_shape))}, "
                    f"{model.arch.name} ({model.parameter_count():,} parameters), "
                    f"{cfg.optimizer} lr {cfg.lr:g}, batch {cfg.batch_size}"
                )

        def on_batch(b: int, batches: int, loss: float) -> None:
            if b % 8 == 0 or b == batches - 1:
                progress.update(state["task"], completed=b + 1, loss=loss)

        def on_epoch(s: Any) -> None:
            progress.update(
                state["task"],
                completed=progress.tasks[0].total,
                loss=s.train_loss,
                acc=f"{_pct(s.train_accuracy)} val {_pct(s.val_accuracy)}",
                speed=f"{s.images_per_s:,.0f} img/s",
            )
            if s.epoch < state["cfg"].epochs:
                progress.stop_task(state["task"])
                state["task"] = progress.add_task(
                    "train",
                    total=progress.tasks[-1].total,
                    epoch=s.epoch + 1,
                    epochs=state["cfg"].epochs,
                    loss=float("nan"),
                    acc="-",
                    speed="",
                )

        try:
            with progress:
                outcome = tr.run(
                    dataset,
                    arch=arch,
                    output=output,
                    checkpoint=checkpoint,
                    resume=resume,
                    data_dir=data_dir,
                    overrides=overrides,
                    on_start=on_start,
                    on_batch=on_batch,
                    on_epoch=on_epoch,
                )
        except tr.TrainingDiverged as exc:
            raise Failure(str(exc)) from None
        metrics = outcome.metrics()
        if as_json:
            typer.echo(json.dumps(metrics, indent=2))
        else:
            console.print(_history_table(outcome.result.history))
            summary = Table(show_header=False, title="result")
            summary.add_row("test accuracy", _pct(outcome.test_accuracy))
            summary.add_row("test loss", f"{outcome.test_loss:.4f}")
            summary.add_row("epochs", str(outcome.result.epochs_done))
            summary.add_row("wall time", f"{outcome.seconds:.1f} s")
            summary.add_row("model", str(outcome.output) if outcome.result.epochs_done else "-")
            summary.add_row("checkpoint", str(outcome.checkpoint))
            console.print(summary)
        if outcome.result.interrupted:
            done = outcome.result.epochs_done
            if done and outcome.checkpoint.exists():
                say(
                    f"interrupted: {done} epoch(s) saved in {outcome.checkpoint}"
                    + (f" and {outcome.output}" if outcome.output.exists() else "")
                    + f"; continue with: cnnkit train --resume {outcome.checkpoint}"
                )
            else:
                say("interrupted before the first epoch finished: nothing was saved")
            raise typer.Exit(signals.exit_code())

    @app.command("evaluate", epilog=EVALUATE_EXAMPLES)
    @friendly_errors
    def evaluate(
        model_path: Path = typer.Argument(..., metavar="MODEL", help="A model or checkpoint."),
        dataset: str | None = typer.Option(
            None, "--dataset", "-d", help="Default: the data set the model was trained on."
        ),
        data_dir: str | None = typer.Option(None, "--data-dir"),
        split: str = typer.Option("test", "--split", help="test, val or train."),
        plot: Path | None = typer.Option(None, "--plot", help="Confusion matrix PNG."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Accuracy, per-class precision and recall, and the confusion matrix of MODEL."""
        from cnnkit import train as tr
        from cnnkit.data import load_dataset

        if split not in ("test", "val", "train"):
            raise ValueError(f"--split must be test, val or train, got {split!r}")
        model, header = _load(model_path)
        name = dataset or header.get("dataset")
        if not name:
            raise ValueError(f"{model_path} does not record its data set; add --dataset")
        ds = load_dataset(
            name,
            data_dir=data_dir if data_dir is not None else header.get("data_dir"),
            seed=int(header.get("split_seed", 0)),
            val_fraction=float(header.get("val_fraction", 0.1)),
        )
        if tuple(model.input_shape) != tuple(ds.input_shape):
            raise ValueError(
                f"the model takes {' x '.join(map(str, model.input_shape))} inputs but "
                f"{ds.name} images are {' x '.join(map(str, ds.input_shape))}"
            )
        tr.check_classes(model, ds.num_classes, list(ds.class_names))
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        if len(y) == 0:
            raise ValueError(f"the {split} split of {ds.name} is empty")
        pred = model.predict_logits(_renormalise(x, ds, header)).argmax(axis=1)
        cm = tr.confusion_matrix(y, pred, ds.num_classes)
        report = tr.classification_report(cm)
        names = [str(c) for c in ds.class_names]
        if plot is not None:
            from cnnkit.plots import confusion_matrix_figure

            confusion_matrix_figure(
                cm, names, plot, f"{ds.name} {split}: accuracy {_pct(report['accuracy'])}"
            )
        if as_json:
            out = {
                "model": str(model_path),
                "dataset": ds.name,
                "split": split,
                "images": int(len(y)),
                "class_names": names,
                "confusion_matrix": cm.tolist(),
                **report,
            }
            typer.echo(json.dumps(out, indent=2))
            return
        console.print(
            f"{ds.name} {split} ({len(y)} images): accuracy [bold]{_pct(report['accuracy'])}"
        )
        per = Table(title="per class")
        for col in ("class", "precision", "recall", "images"):
            per.add_column(col, justify="right")
        for k, cname in enumerate(names):
            per.add_row(
                escape(cname),
                _pct(report["precision"][k]),
                _pct(report["recall"][k]),
                str(report["support"][k]),
            )
        console.print(per)
        table = Table(title="confusion matrix (rows: true, columns: predicted)")
        table.add_column("", justify="right")
        for cname in names:
            table.add_column(escape(cname), justify="right")
        for k, cname in enumerate(names):
            table.add_row(
                escape(cname),
                *[
                    f"[bold]{v}[/]" if j == k else (str(v) if v else "[dim]·[/]")
                    for j, v in enumerate(cm[k])
                ],
            )
        console.print(table)
        if plot is not None:
            console.print(f"wrote {plot}", markup=False, highlight=False)

    @app.command("predict", epilog=PREDICT_EXAMPLES)
    @friendly_errors
    def predict(
        model_path: Path = typer.Argument(..., metavar="MODEL"),
        images: list[Path] = typer.Argument(..., metavar="IMAGE...", help="Image files."),
        top_k: int = typer.Option(3, "--top-k", "-k", help="Classes to show per image."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Top-k classes with probabilities, each image preprocessed as in training."""
        import numpy as np

        from cnnkit.data import load_image_for_model

        if top_k < 1:
            raise ValueError(f"--top-k must be >= 1, got {top_k}")
        model, header = _load(model_path)
        names = header.get("class_names") or [str(i) for i in range(model.num_outputs)]
        mean = np.asarray(header.get("mean", [0.0]), np.float32)
        std = np.asarray(header.get("std", [1.0]), np.float32)
        results = []
        for path in images:
            x = load_image_for_model(
                path, model.input_shape, mean, std, preprocess=header.get("preprocess") or None
            )
            p = model.predict_proba(x)[0]
            order = np.argsort(-p, kind="stable")[: min(top_k, p.size)]
            results.append(
                {
                    "image": str(path),
                    "top": [
                        {"class": str(names[i]), "index": int(i), "p": float(p[i])} for i in order
                    ],
                }
            )
        if as_json:
            typer.echo(json.dumps(results, indent=2))
            return
        table = Table()
        table.add_column("image")
        for r in range(min(top_k, model.num_outputs)):
            table.add_column(f"#{r + 1}", justify="right")
        for res in results:
            table.add_row(
                escape(Path(res["image"]).name),
                *[f"{escape(t['class'])} ({100 * t['p']:.1f} %)" for t in res["top"]],
            )
        console.print(table)

    @app.command("visualize", epilog=VISUALIZE_EXAMPLES)
    @friendly_errors
    def visualize(
        model_path: Path = typer.Argument(..., metavar="MODEL"),
        filters: Path | None = typer.Option(
            None, "--filters", help="PNG of the first-layer kernels as a grid."
        ),
        activations: tuple[Path, Path] | None = typer.Option(
            None, "--activations", metavar="IMAGE OUT", help="Feature maps of every layer."
        ),
    ) -> None:
        """Look inside a trained model: first-layer kernels and per-layer feature maps."""
        import numpy as np

        from cnnkit import plots
        from cnnkit.data import load_image_for_model

        if filters is None and activations is None:
            raise ValueError(
                "nothing to draw: add --filters OUT.png and/or --activations IMAGE OUT.png"
            )
        model, header = _load(model_path)
        if filters is not None:
            conv = model.first_conv()
            if conv is None:
                raise ValueError(f"{model_path} has no convolution layer: no filters to show")
            plots.filter_grid_figure(conv.w, filters, f"{conv.name}: {conv.w.shape[0]} kernels")
            console.print(f"wrote {filters}", markup=False, highlight=False)
        if activations is not None:
            image, out = activations
            mean = np.asarray(header.get("mean", [0.0]), np.float32)
            std = np.asarray(header.get("std", [1.0]), np.float32)
            x = load_image_for_model(
                image, model.input_shape, mean, std, preprocess=header.get("preprocess") or None
            )
            layers = [(name, a[0]) for name, a in model.activations(x)]
            plots.activations_figure(x[0], layers, out, class_names=header.get("class_names"))
            console.print(f"wrote {out}", markup=False, highlight=False)
