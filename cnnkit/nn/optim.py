"""Optimisers (SGD with momentum/Nesterov/weight decay, Adam) and learning-rate schedules.

The update rules are PyTorch's (``torch.optim.SGD`` and ``torch.optim.Adam``), so a step here
matches a step there for the same weights and batch. An optimiser updates the model's flat
parameter array in place, with a few whole-network numpy calls per step.
"""

from __future__ import annotations

import math

import numpy as np

from cnnkit.errors import ParameterError


class Optimizer:
    """Base: holds the flat parameter/gradient arrays and the learning rate."""

    name = "base"

    def __init__(self, params: np.ndarray, grads: np.ndarray, lr: float) -> None:
        if not lr > 0 or not math.isfinite(lr):
            raise ValueError(f"learning rate must be a positive number, got {lr}")
        self.params = params
        self.grads = grads
        self.lr = float(lr)
        self.t = 0

    def step(self) -> None:
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        """Arrays to store in a checkpoint."""
        return {}

    def config(self) -> dict[str, float | int | bool | str]:
        """Scalars to store in a checkpoint (JSON)."""
        return {"name": self.name, "lr": self.lr, "t": self.t}

    def load(self, arrays: dict[str, np.ndarray], config: dict) -> None:
        self.t = int(config.get("t", 0))
        for key, target in self.state().items():
            if key not in arrays or arrays[key].shape != target.shape:
                raise ValueError(f"the checkpoint's optimiser state {key!r} does not fit")
            target[...] = arrays[key]


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, Nesterov momentum and weight decay.

    Notes
    -----
    PyTorch's rule, with gradient ``g``, weight decay ``wd``, momentum ``mu``::

        g = g + wd * p
        b = g                 (first step)      b = mu * b + g       (later steps)
        d = g + mu * b        (nesterov)        d = b                (otherwise)
        p = p - lr * d
    """

    name = "sgd"

    def __init__(
        self,
        params: np.ndarray,
        grads: np.ndarray,
        lr: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, grads, lr)
        if momentum < 0 or weight_decay < 0:
            raise ValueError("momentum and weight decay must be >= 0")
        if nesterov and momentum <= 0:
            raise ParameterError("nesterov needs momentum > 0", "nesterov", "momentum")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay)
        self.buf = np.zeros_like(params)
        self._tmp = np.empty_like(params)
        self._tmp2 = np.empty_like(params)

    def step(self) -> None:
        g = self.grads
        if self.weight_decay:
            g = np.multiply(self.params, self.weight_decay, out=self._tmp)
            g += self.grads
        if self.momentum:
            if self.t == 0:
                self.buf[...] = g
            else:
                self.buf *= self.momentum
                self.buf += g
            if self.nesterov:
                d = np.multiply(self.buf, self.momentum, out=self._tmp2)
                d += g
                g = d
            else:
                g = self.buf
        self.t += 1
        self.params -= self.lr * g

    def state(self) -> dict[str, np.ndarray]:
        return {"momentum_buffer": self.buf}

    def config(self) -> dict:
        out = super().config()
        out.update(momentum=self.momentum, nesterov=self.nesterov, weight_decay=self.weight_decay)
        return out


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) as PyTorch implements it, with L2 weight decay.

    Notes
    -----
    With gradient ``g`` and step ``t`` (from 1)::

        g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g^2
        p = p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """

    name = "adam"

    def __init__(
        self,
        params: np.ndarray,
        grads: np.ndarray,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, grads, lr)
        if weight_decay < 0:
            raise ValueError("weight decay must be >= 0")
        self.b1, self.b2 = (float(b) for b in betas)
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.m = np.zeros_like(params)
        self.v = np.zeros_like(params)
        self._tmp = np.empty_like(params)
        self._tmp2 = np.empty_like(params)

    def step(self) -> None:
        g = self.grads
        if self.weight_decay:
            g = np.multiply(self.params, self.weight_decay, out=self._tmp2)
            g += self.grads
        self.t += 1
        b1, b2, tmp = self.b1, self.b2, self._tmp
        self.m *= b1
        np.multiply(g, 1 - b1, out=tmp)
        self.m += tmp
        self.v *= b2
        np.multiply(g, g, out=tmp)
        tmp *= 1 - b2
        self.v += tmp
        bc1 = 1 - b1**self.t
        bc2 = 1 - b2**self.t
        np.sqrt(self.v, out=tmp)
        tmp *= 1 / math.sqrt(bc2)
        tmp += self.eps
        np.divide(self.m, tmp, out=tmp)
        tmp *= self.lr / bc1
        self.params -= tmp

    def state(self) -> dict[str, np.ndarray]:
        return {"exp_avg": self.m, "exp_avg_sq": self.v}

    def config(self) -> dict:
        out = super().config()
        out.update(beta1=self.b1, beta2=self.b2, eps=self.eps, weight_decay=self.weight_decay)
        return out


def make_optimizer(
    name: str,
    params: np.ndarray,
    grads: np.ndarray,
    *,
    lr: float,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> Optimizer:
    """``"sgd"`` or ``"adam"`` by name (the CLI's ``--optimizer``)."""
    key = name.lower()
    if key == "sgd":
        return SGD(params, grads, lr, momentum, nesterov, weight_decay)
    if key == "adam":
        return Adam(params, grads, lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose sgd or adam")


SCHEDULES = ("none", "step", "cosine")


def scheduled_lr(
    schedule: str,
    base_lr: float,
    epoch: int,
    epochs: int,
    *,
    step_size: int | None = None,
    gamma: float = 0.1,
) -> float:
    """Learning rate for ``epoch`` (0-based) of ``epochs``.

    Notes
    -----
    - ``none``: ``lr``.
    - ``step``: ``lr * gamma ** (epoch // step_size)``; ``step_size`` defaults to a third of
      the epochs (PyTorch's StepLR).
    - ``cosine``: ``lr * (1 + cos(pi * epoch / epochs)) / 2`` (CosineAnnealingLR with
      ``T_max = epochs`` and ``eta_min = 0``, stepped once per epoch).
    """
    if schedule == "none":
        return base_lr
    if schedule == "step":
        size = step_size or max(1, epochs // 3)
        return base_lr * gamma ** (epoch // size)
    if schedule == "cosine":
        return base_lr * 0.5 * (1 + math.cos(math.pi * epoch / max(epochs, 1)))
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


__all__ = ["SCHEDULES", "SGD", "Adam", "Optimizer", "make_optimizer", "scheduled_lr"]
