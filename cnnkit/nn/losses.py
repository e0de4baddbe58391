"""Losses: softmax cross-entropy, computed stably from logits."""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise ``log(softmax(z))`` without overflow.

    Notes
    -----
    ``log_softmax(z)_k = (z_k - max z) - log(sum_j exp(z_j - max z))``: subtracting the row
    maximum makes every exponent <= 0, so ``exp`` cannot overflow and the sum is >= 1.
    """
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax probabilities, ``exp(log_softmax(z))``."""
    return np.exp(log_softmax(logits))


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) against integer labels, and its gradient.

    Parameters
    ----------
    logits : ndarray, shape (N, K)
        Unnormalised class scores.
    labels : ndarray of int, shape (N,)
        Correct class per row, in ``[0, K)``.

    Returns
    -------
    loss : float
        ``L = -(1/N) sum_n log_softmax(z_n)[y_n]``.
    grad : ndarray, shape (N, K)
        ``dL/dz = (softmax(z) - onehot(y)) / N``.
    """
    n = logits.shape[0]
    logp = log_softmax(logits)
    rows = np.arange(n)
    loss = -float(logp[rows, labels].mean())
    grad = np.exp(logp)
    grad[rows, labels] -= 1
    grad *= logits.dtype.type(1.0 / n)
    return loss, grad


__all__ = ["log_softmax", "softmax", "softmax_cross_entropy"]
