"""``cnnkit train``, ``evaluate``, ``predict`` and ``visualize``: a small CNN, end to end.

Thin commands: parse options, call :mod:`cnnkit.train` / :mod:`cnnkit.nn`, render. Numba and
the training code are imported inside the command functions, so ``cnnkit --help`` and the
arithmetic commands stay fast.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from cnnkit import signals
from cnnkit.cli.common import (
    JSON_FILE_HELP,
    JSON_HELP,
    Failure,
    UsageError,
    check_json_file,
    console,
    emit_json,
    err_console,
    flag_words,
    friendly_errors,
    say,
)
from cnnkit.geometry import format_shape

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID

    from cnnkit.data import Dataset
    from cnnkit.nn.model import Model
    from cnnkit.train import EpochStats, RunOutcome, TrainConfig

TRAIN_EXAMPLES = """\
Examples:

  cnnkit train                          # digits, the default net, a few seconds

  cnnkit train --dataset shapes --epochs 5 -o shapes.npz

  cnnkit train --resume shapes.ckpt.npz --epochs 8

  cnnkit train --arch "conv 8 k=3 p=1; relu; pool max k=2; fc 10" \\
      -o small.npz --json

A checkpoint (MODEL.ckpt.npz next to -o) is written after every epoch; Ctrl-C stops with the
last finished epoch saved, and --resume continues from it into the same model file. The model
file keeps the full history (--json prints it). -o never replaces a model of another run
without --force.
"""

EVALUATE_EXAMPLES = """\
Examples:

  cnnkit evaluate model.npz

  cnnkit evaluate model.npz --plot confusion.png --json-file eval.json

MODEL is a model file or a checkpoint; the data set and its split come from the file.
"""

PREDICT_EXAMPLES = """\
Examples:

  cnnkit predict model.npz my_digit.png

  cnnkit predict model.npz a.png b.png --top-k 1 --json

Each image is prepared as the training images were (size, gray levels, dark or light ink).
"""

VISUALIZE_EXAMPLES = """\
Examples:

  cnnkit visualize model.npz --filters filters.png

  cnnkit visualize model.npz --activations my_digit.png maps.png

The kernels share one signed colour scale; the feature maps have one scale per layer.
"""


def _pct(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f} %"


class EpochDisplay:
    """What ``cnnkit train`` shows while it runs, on stderr: a header line, one line per
    finished epoch, and (on a terminal) a bar for the epoch under way.

    The bar shows the running mean loss of the batches done so far, nothing before the first
    one; validation appears only when there is a validation set.
    """

    def __init__(self, console_: Console, quiet: bool) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console_
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console_,
            disable=quiet,
            transient=True,
        )
        self.task: TaskID | None = None
        self.epochs = 0
        self.loss_sum = 0.0
        self.seen = 0

    def __enter__(self) -> EpochDisplay:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def start(self, model: Model, ds: Dataset, cfg: TrainConfig, start: int) -> None:
        self.epochs = cfg.epochs
        batches = math.ceil(len(ds.y_train) / cfg.batch_size)
        if not self.quiet:
            self._header(model, ds, cfg, start)
        self.task = self.progress.add_task(
            "train", total=batches, epoch=start + 1, epochs=cfg.epochs, status=""
        )

    def _header(self, model: Model, ds: Dataset, cfg: TrainConfig, start: int) -> None:
        val = f"{len(ds.y_val):,} val / " if len(ds.y_val) else ""
        resumed = f", resuming after epoch {start}" if start else ""
        self.console.print(
            f"{ds.name}: {len(ds.y_train):,} train / {val}{len(ds.y_test):,} test images "
            f"{format_shape(ds.input_shape)}; {model.arch.name} "
            f"({model.parameter_count():,} parameters); {cfg.optimizer} lr {cfg.lr:g}, "
            f"batch {cfg.batch_size}, {cfg.epochs} epochs{resumed}",
            highlight=False,
            soft_wrap=True,
        )

    def batch(self, b: int, batches: int, loss: float) -> None:
        self.loss_sum += loss
        self.seen += 1
        if b % 8 == 0 or b == batches - 1:
            status = f"loss {self.loss_sum / self.seen:.4f}"
            self.progress.update(self.task, completed=b + 1, status=status)

    def epoch(self, s: EpochStats) -> None:
        self.loss_sum, self.seen = 0.0, 0
        if not self.quiet:
            self.progress.console.print(epoch_line(s, self.epochs), highlight=False)
        self.progress.reset(self.task, epoch=s.epoch + 1, epochs=self.epochs, status="")


def epoch_line(s: EpochStats, epochs: int) -> str:
    """One finished epoch in a line of at most 80 characters."""
    width = len(str(epochs))
    val = f"  val {_pct(s.val_accuracy)}" if s.val_accuracy is not None else ""
    return (
        f"epoch {s.epoch:>{width}}/{epochs}  loss {s.train_loss:.4f}  "
        f"train {_pct(s.train_accuracy)}{val}  lr {s.lr:.2g}  "
        f"{s.images_per_s:,.0f} img/s  {s.seconds:.1f} s"
    )


@friendly_errors
def train(
    dataset: str | None = typer.Option(
        None,
        "--dataset",
        "-d",
        metavar="NAME",
        help="digits (default; with --resume: the checkpoint's), shapes, mnist, "
        "fashion-mnist, folder, npz.",
    ),
    arch: str | None = typer.Option(
        None,
        "--arch",
        "-a",
        help="Architecture spec (name, file or inline); default per dataset (digits: 'digits').",
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", "-e", metavar="N", help="Total epochs (digits: 60)."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", "-b", metavar="N", help="Images per step (digits: 32)."
    ),
    lr: float | None = typer.Option(
        None, "--lr", metavar="RATE", help="Learning rate (digits: 3e-3)."
    ),
    optimizer: str | None = typer.Option(
        None, "--optimizer", metavar="NAME", help="sgd or adam (default adam)."
    ),
    momentum: float | None = typer.Option(
        None, "--momentum", metavar="M", help="SGD momentum (0.9)."
    ),
    nesterov: bool | None = typer.Option(
        None, "--nesterov/--no-nesterov", help="Nesterov momentum (SGD)."
    ),
    weight_decay: float | None = typer.Option(
        None, "--weight-decay", metavar="L2", help="L2 penalty (digits: 5e-4)."
    ),
    schedule: str | None = typer.Option(
        None, "--schedule", metavar="NAME", help="none, step or cosine (digits: cosine)."
    ),
    seed: int | None = typer.Option(None, "--seed", metavar="N", help="Same seed, same run (0)."),
    init: str | None = typer.Option(
        None,
        "--init",
        metavar="NAME",
        help="he (He/Glorot) or torch (PyTorch's default; the digits default).",
    ),
    val_fraction: float | None = typer.Option(
        None,
        "--val-fraction",
        metavar="F",
        help="Share held out for validation (digits: 0).",
    ),
    augment: bool | None = typer.Option(
        None,
        "--augment/--no-augment",
        help="Shift each training image sideways by a random -1..1 pixel each epoch "
        "(seeded by --seed). Off by default: on digits it lowered validation accuracy.",
    ),
    data_dir: str | None = typer.Option(
        None,
        "--data-dir",
        metavar="PATH",
        help="IDX folder (mnist), image folder, or .npz file.",
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        metavar="FILE",
        help="Model file (default model.npz; with --resume: the resumed run's).",
    ),
    checkpoint: Path | None = typer.Option(
        None,
        "--checkpoint",
        metavar="FILE",
        help="Checkpoint file (default: MODEL.ckpt.npz).",
    ),
    resume: Path | None = typer.Option(
        None,
        "--resume",
        metavar="CKPT",
        help="Continue the run of this checkpoint (into its own model file).",
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace a model or checkpoint file of another run."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    json_file: str | None = typer.Option(None, "--json-file", metavar="PATH", help=JSON_FILE_HELP),
) -> None:
    """Train a CNN on a data set and save the model (default: digits, about 98 % test).

    The digits defaults (Adam 3e-3, batch 32, cosine over 60 epochs, PyTorch init,
    weight decay 5e-4, no augmentation) were chosen on validation splits of the
    training images only; see cnnkit.train.DATASET_DEFAULTS for the numbers.
    """
    from cnnkit import train as tr

    check_json_file(json_file)
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
    if resume is not None:
        tr.check_resume(resume, arch)  # before the progress display starts
    quiet = as_json or json_file == "-"
    display = EpochDisplay(err_console, quiet)
    try:
        with display:
            outcome = tr.run(
                dataset,
                arch=arch,
                output=output,
                checkpoint=checkpoint,
                resume=resume,
                data_dir=data_dir,
                overrides=overrides,
                force=force,
                on_start=display.start,
                on_batch=display.batch,
                on_epoch=display.epoch,
            )
    except tr.TrainingDiverged as exc:
        raise Failure(flag_words(exc)) from None
    except tr.OutputTaken as exc:
        raise UsageError(
            f"{exc.path} already holds {exc.what}; choose another -o (and --checkpoint) "
            "or add --force to replace it"
        ) from None
    if not emit_json(outcome.metrics(), as_json, json_file):
        console.print(_summary_table(outcome))
    if outcome.result.interrupted:
        _say_interrupted(outcome)
        raise typer.Exit(signals.exit_code())


def _summary_table(outcome: RunOutcome) -> Table:
    summary = Table(show_header=False, title="result")
    summary.add_column(no_wrap=True)
    summary.add_column(overflow="fold")
    summary.add_row("test accuracy", _pct(outcome.test_accuracy))
    summary.add_row("test loss", f"{outcome.test_loss:.4f}")
    summary.add_row("epochs", str(outcome.result.epochs_done))
    summary.add_row("wall time", f"{outcome.seconds:.1f} s")
    summary.add_row("model", str(outcome.output) if outcome.result.epochs_done else "-")
    summary.add_row("checkpoint", str(outcome.checkpoint))
    return summary


def _say_interrupted(outcome: RunOutcome) -> None:
    """What was saved, and how to continue."""
    done = outcome.result.epochs_done
    if done and outcome.checkpoint.exists():
        say(
            f"interrupted: {done} epoch(s) saved in {outcome.checkpoint}"
            + (f" and {outcome.output}" if outcome.output.exists() else "")
            + f"; continue with: cnnkit train --resume {outcome.checkpoint}"
        )
    else:
        say("interrupted before the first epoch finished: nothing was saved")


@friendly_errors
def evaluate(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="A model or checkpoint."),
    dataset: str | None = typer.Option(
        None, "--dataset", "-d", help="Default: the data set the model was trained on."
    ),
    data_dir: str | None = typer.Option(
        None,
        "--data-dir",
        metavar="PATH",
        help="Where the data set's files are (default: as in training).",
    ),
    split: str = typer.Option("test", "--split", metavar="SPLIT", help="test, val or train."),
    plot: Path | None = typer.Option(
        None, "--plot", metavar="PNG", help="Write the confusion matrix as a figure."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    json_file: str | None = typer.Option(None, "--json-file", metavar="PATH", help=JSON_FILE_HELP),
) -> None:
    """Accuracy, per-class precision and recall, and the confusion matrix of MODEL."""
    from cnnkit import train as tr

    check_json_file(json_file)
    ev = tr.evaluate(model_path, dataset, split, data_dir)
    cm, report, names = ev.confusion, ev.report, ev.class_names
    if plot is not None:
        from cnnkit.plots import confusion_matrix_figure

        confusion_matrix_figure(
            cm, names, plot, f"{ev.dataset} {split}: accuracy {_pct(report['accuracy'])}"
        )
    out = {
        "model": str(model_path),
        "dataset": ev.dataset,
        "split": split,
        "images": ev.images,
        "class_names": names,
        "confusion_matrix": cm.tolist(),
        **report,
    }
    if emit_json(out, as_json, json_file):
        return
    console.print(
        f"{ev.dataset} {split} ({ev.images} images): accuracy [bold]{_pct(report['accuracy'])}"
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


@friendly_errors
def predict(
    model_path: Path = typer.Argument(
        ..., metavar="MODEL", help="A model file written by cnnkit train."
    ),
    images: list[Path] = typer.Argument(..., metavar="IMAGE...", help="Image files."),
    top_k: int = typer.Option(3, "--top-k", "-k", metavar="K", help="Classes to show per image."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    json_file: str | None = typer.Option(None, "--json-file", metavar="PATH", help=JSON_FILE_HELP),
) -> None:
    """Top-k classes with probabilities, each image preprocessed as in training."""
    from cnnkit import train as tr

    check_json_file(json_file)
    results = tr.predict(model_path, images, top_k)
    if emit_json(results, as_json, json_file):
        return
    console.print(_predictions_table(results, max(len(r["top"]) for r in results)))


def _predictions_table(results: list[dict[str, Any]], ranks: int) -> Table:
    """One row per image with its top classes side by side; when those columns would not fit
    the terminal, one row per (image, rank) instead, so no probability is ever cut."""
    cells = [
        [f"{escape(t['class'])} ({100 * t['p']:.1f} %)" for t in res["top"]] for res in results
    ]
    widths = [max(len(row[r]) for row in cells if r < len(row)) for r in range(ranks)]
    # each column adds 3 characters of border and padding; leave 12 for the image names
    wide = sum(w + 3 for w in widths) + 12 + 4 <= console.width
    table = Table()
    table.add_column("image", overflow="fold")
    if wide:
        for r in range(ranks):
            table.add_column(f"#{r + 1}", justify="right", no_wrap=True)
        for res, row in zip(results, cells):
            table.add_row(escape(Path(res["image"]).name), *row)
        return table
    table.add_column("rank", justify="right", no_wrap=True)
    table.add_column("class (probability)", justify="right", no_wrap=True)
    for res, row in zip(results, cells):
        name = escape(Path(res["image"]).name)
        for r, cell in enumerate(row):
            table.add_row(name if r == 0 else "", f"#{r + 1}", cell, end_section=r == len(row) - 1)
    return table


@friendly_errors
def visualize(
    model_path: Path = typer.Argument(
        ..., metavar="MODEL", help="A model file written by cnnkit train."
    ),
    filters: Path | None = typer.Option(
        None,
        "--filters",
        metavar="PNG",
        help="Draw the first-layer kernels on one signed colour scale.",
    ),
    activations: tuple[Path, Path] | None = typer.Option(
        None,
        "--activations",
        metavar="IMAGE OUT",
        help="Draw every layer's output for IMAGE (last layer: class probabilities).",
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    json_file: str | None = typer.Option(None, "--json-file", metavar="PATH", help=JSON_FILE_HELP),
) -> None:
    """Look inside a trained model: first-layer kernels and per-layer feature maps."""
    from cnnkit import train as tr

    check_json_file(json_file)
    facts = tr.draw_model(model_path, filters, activations)
    if emit_json(facts, as_json, json_file):
        return
    for key in ("filters", "activations"):
        if key in facts:
            console.print(f"wrote {facts[key]['file']}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``train``, ``evaluate``, ``predict`` and ``visualize`` to the app."""
    app.command("train", epilog=TRAIN_EXAMPLES)(train)
    app.command("evaluate", epilog=EVALUATE_EXAMPLES)(evaluate)
    app.command("predict", epilog=PREDICT_EXAMPLES)(predict)
    app.command("visualize", epilog=VISUALIZE_EXAMPLES)(visualize)
