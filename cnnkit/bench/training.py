"""Training throughput against PyTorch: one network builder from cnnkit's own spec, so both
sides train the same network by construction, and the PyTorch side of the measurement.

cnnkit's side is :func:`cnnkit.train.train_throughput`, called with its own parameters.
PyTorch is imported only in the worker process that times it.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnkit import arch as spec_mod
from cnnkit.bench import timing
from cnnkit.bench.machine import busy_note, machine_info
from cnnkit.bench.peers import missing_peers, thread_choices
from cnnkit.bench.report import TRAIN_TARGETS
from cnnkit.bench.suite import SCHEMA, close_sides, start_sides

if TYPE_CHECKING:
    import torch

    from cnnkit.arch import Graph


@dataclass(frozen=True)
class TrainNet:
    """A training-throughput case: a shipped spec and the reference run's optimiser settings."""

    spec: str
    batch: int
    optimizer: str
    lr: float
    steps: int
    quick_steps: int


TRAIN_NETS = {
    "digits": TrainNet("digits", 32, "adam", 3e-3, steps=100, quick_steps=30),
    "lenet5": TrainNet("lenet5", 64, "sgd", 1e-2, steps=40, quick_steps=12),
}
# Untimed steps before each round (JIT, caches, PyTorch's first-call set-up).
TRAIN_WARMUP = 5


def torch_network(arch: Graph) -> torch.nn.Sequential:
    """A ``torch.nn.Sequential`` equivalent of a parsed 2-D architecture.

    Parameters
    ----------
    arch : cnnkit.arch.Graph
        From :func:`cnnkit.arch.parse`; every layer kind cnnkit trains (conv, pool, gap,
        activations, bn, dropout, flatten, fc) maps to its PyTorch module, with the padding
        :func:`cnnkit.arch.infer` resolved (asymmetric padding becomes a ``ZeroPad2d``).

    Returns
    -------
    torch.nn.Sequential
    """
    import torch

    nn = torch.nn
    mods: list[Any] = []
    for info in spec_mod.infer(arch):
        lay, shape = info.layer, info.input_shape
        if lay.kind == "conv":
            pads = info.pads
            if any(lo != hi for lo, hi in pads):
                mods.append(nn.ZeroPad2d((pads[1][0], pads[1][1], pads[0][0], pads[0][1])))
                padding: Any = 0
            else:
                padding = tuple(p[0] for p in pads)
            mods.append(
                nn.Conv2d(
                    shape[0],
                    lay.out_channels,
                    lay.kernel,
                    lay.stride,
                    padding,
                    lay.dilation,
                    lay.groups,
                    lay.bias,
                )
            )
        elif lay.kind == "pool":
            padding = tuple(p[0] for p in info.pads)
            cls = nn.MaxPool2d if lay.mode == "max" else nn.AvgPool2d
            mods.append(cls(lay.kernel, lay.stride, padding, ceil_mode=lay.ceil))
        elif lay.kind == "gap":
            mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        elif lay.kind == "relu":
            mods.append(nn.ReLU())
        elif lay.kind == "leakyrelu":
            mods.append(nn.LeakyReLU(lay.slope))
        elif lay.kind == "tanh":
            mods.append(nn.Tanh())
        elif lay.kind == "sigmoid":
            mods.append(nn.Sigmoid())
        elif lay.kind == "dropout":
            mods.append(nn.Dropout(lay.rate))
        elif lay.kind == "bn":
            mods.append(nn.BatchNorm2d(shape[0]) if len(shape) > 1 else nn.BatchNorm1d(shape[0]))
        elif lay.kind == "flatten":
            mods.append(nn.Flatten())
        elif lay.kind == "fc":
            if len(shape) > 1:
                mods.append(nn.Flatten())
            mods.append(nn.Linear(int(np.prod(shape)), lay.units, lay.bias))
    return nn.Sequential(*mods)


def torch_train_throughput(
    arch: str,
    batch_size: int,
    steps: int,
    *,
    optimizer: str = "adam",
    lr: float = 3e-3,
    warmup: int = TRAIN_WARMUP,
    seed: int = 0,
) -> dict[str, float]:
    """PyTorch's training images/s on ``arch``, measured as :func:`cnnkit.train.train_throughput`
    measures cnnkit's: a random batch, forward + cross-entropy + backward + optimiser step,
    ``warmup`` untimed steps, then the median step time over ``steps``.

    PyTorch's thread count is whatever the caller set (``torch.set_num_threads``).
    """
    import torch

    torch.manual_seed(seed)
    parsed = spec_mod.parse(arch)
    net = torch_network(parsed)
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.standard_normal((batch_size, *parsed.input_shape)), dtype=torch.float32)
    classes = spec_mod.infer(parsed)[-1].output_shape[0]
    y = torch.tensor(rng.integers(0, classes, batch_size))
    if optimizer == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=lr)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    ms = float(np.median(times)) * 1e3
    return {"images_per_s": batch_size / ms * 1e3, "ms_per_step": ms}


def cnnkit_train_throughput(net: TrainNet, steps: int) -> dict[str, float]:
    """cnnkit's training images/s on ``net`` (:func:`cnnkit.train.train_throughput`)."""
    from cnnkit import train

    out = train.train_throughput(
        net.spec,
        net.batch,
        steps,
        optimizer=net.optimizer,
        lr=net.lr,
        warmup=TRAIN_WARMUP,
    )
    return {"images_per_s": out["images_per_s"], "ms_per_step": out["ms_per_step"]}


def _net_row(
    name: str,
    net: TrainNet,
    steps: int,
    sides: dict[str, Any],
    threads: int,
    repeat: int,
    key: str,
    pids: list[int],
) -> dict[str, Any]:
    """One network's rounds: cnnkit and PyTorch (at each thread count) alternating, and the
    ratio to PyTorch's better thread count."""
    variants = [("cnnkit", threads)]
    if "torch" in sides:
        variants += [("torch", t) for t in thread_choices("torch", threads)]
    rounds: dict[tuple[str, int], list[float]] = {v: [] for v in variants}
    for _ in range(repeat):
        for library, t in variants:
            timing.wait_quiet(pids)
            got = sides[library].call("train", net=name, threads=t, steps=steps)
            rounds[(library, t)].append(got[key])
    ours = rounds[("cnnkit", threads)]
    torch_rows = {t: rounds[("torch", t)] for lib, t in variants if lib == "torch"}
    best_t = max(torch_rows, key=lambda t: statistics.median(torch_rows[t]), default=None)
    per_round = [a / b for a, b in zip(ours, torch_rows[best_t])] if best_t else []
    stats = timing.ratio_stats(per_round)
    return {
        "net": name,
        "spec": net.spec,
        "batch": net.batch,
        "optimizer": net.optimizer,
        "steps": steps,
        "cnnkit_images_per_s": statistics.median(ours),
        "cnnkit_rounds": ours,
        "torch_images_per_s": {str(t): statistics.median(v) for t, v in torch_rows.items()},
        "torch_rounds": {str(t): v for t, v in torch_rows.items()},
        "torch_best_threads": best_t,
        "ratio": stats["median"] if stats else None,
        "ratio_spread": [stats["min"], stats["max"]] if stats else None,
        "target": TRAIN_TARGETS.get(name),
        "ok": bool(stats and stats["median"] >= TRAIN_TARGETS.get(name, 0)),
    }


def train_report(
    threads: int,
    *,
    quick: bool = False,
    repeat: int | None = None,
    clock: str = "wall",
    sides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``--train`` report: images/s of cnnkit and PyTorch, each in a fresh process.

    One worker process per side (cnnkit; PyTorch, timed at 1 and ``threads`` threads);
    ``repeat`` rounds (default 3) alternate (cnnkit, PyTorch 1 thread, PyTorch N threads, then
    again), each round
    a full :func:`cnnkit.train.train_throughput` measurement (``warmup`` untimed steps, the
    median step of the rest). The ratio is cnnkit / PyTorch's better thread count, per round:
    median and min-max spread. With ``clock="cpu"`` (one thread only) the figures are
    images per second of each worker's CPU time over the timed steps
    (:meth:`cnnkit.bench.worker.Host.train`).
    """
    timing.check_settings(threads, repeat, clock)
    repeat = repeat or 3
    key = "cpu_images_per_s" if clock == "cpu" else "images_per_s"
    missing = {} if sides is not None else missing_peers(["torch"])
    own = sides is None
    if sides is None:
        sides = start_sides(["cnnkit", *(["torch"] if not missing else [])], threads)
    pids = [pid for side in sides.values() for pid in side.pids]
    rows = []
    try:
        for name, net in TRAIN_NETS.items():
            steps = net.quick_steps if quick else net.steps
            rows.append(_net_row(name, net, steps, sides, threads, repeat, key, pids))
        versions = {lib: side.info.get("version", "") for lib, side in sides.items()}
    finally:
        if own:
            close_sides(sides)
    machine = machine_info(threads, versions)
    notes = [f"peer {p} missing: {why}" for p, why in missing.items()]
    busy = busy_note(machine, clock)
    if busy:
        notes.append(busy)
    notes.append(
        "each side in its own fresh process; synthetic batches (random images and labels): "
        f"throughput does not depend on the data; {TRAIN_WARMUP} warm-up steps excluded"
    )
    return {
        "schema": SCHEMA,
        "machine": machine,
        "settings": {"threads": threads, "quick": quick, "repeat": repeat, "clock": clock},
        "train": rows,
        "notes": notes,
    }
