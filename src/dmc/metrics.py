"""Class-incremental metrics as pure functions of the accuracy matrix (see README, "Metrics").

R[i][j]: top-1 accuracy (percent) on the test samples of task j's classes after training task i (NaN for
j > i). counts[j]: number of test samples of task j. A_t is sample-weighted (PyCIL, continuum).
"""
from __future__ import annotations

import math

import numpy as np


def _check(R: np.ndarray, counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    R = np.asarray(R, dtype=np.float64)
    if R.ndim != 2 or R.shape[0] > R.shape[1]:
        raise ValueError(f"accuracy matrix must be (T, >=T), got {R.shape}")
    c = np.ones(R.shape[1]) if counts is None else np.asarray(counts, dtype=np.float64)
    return R, c


def incremental_accuracies(R, counts) -> list[float]:
    """A_t for each row t: accuracy over all test samples of tasks 0..t, weighted by sample counts."""
    R, c = _check(R, counts)
    return [float(np.dot(R[t, : t + 1], c[: t + 1]) / c[: t + 1].sum()) for t in range(R.shape[0])]


def average_incremental(R, counts) -> float:
    """Avg = (1/T) sum_t A_t, first task included."""
    return float(np.mean(incremental_accuracies(R, counts)))


def last(R, counts) -> float:
    return incremental_accuracies(R, counts)[-1]


def forgetting(R) -> float:
    """(1/(T-1)) sum_{j<T} (max_{l<T} R[l][j] - R[T][j]); 0 for a single task."""
    R, _ = _check(R)
    T = R.shape[0]
    if T < 2:
        return 0.0
    return float(np.mean([np.nanmax(R[j:T - 1, j]) - R[T - 1, j] for j in range(T - 1)]))


def bwt(R) -> float:
    """Backward transfer (1/(T-1)) sum_{j<T} (R[T][j] - R[j][j]); 0 for a single task."""
    R, _ = _check(R)
    T = R.shape[0]
    if T < 2:
        return 0.0
    return float(np.mean([R[T - 1, j] - R[j, j] for j in range(T - 1)]))


def old_new(R, counts, t: int) -> dict[str, float | None]:
    """Accuracy on earlier tasks' classes (sample-weighted), on task t's classes, and their harmonic mean."""
    R, c = _check(R, counts)
    new = float(R[t, t])
    if t == 0:
        return {"old": None, "new": new, "harmonic": None}
    old = float(np.dot(R[t, :t], c[:t]) / c[:t].sum())
    harmonic = 0.0 if old + new == 0 else 2 * old * new / (old + new)
    return {"old": old, "new": new, "harmonic": harmonic}


def summary(R, counts) -> dict:
    acc = incremental_accuracies(R, counts)
    return {"avg": float(np.mean(acc)), "last": acc[-1], "forgetting": forgetting(R), "bwt": bwt(R),
            "incremental": acc}


def nan_to_none(R) -> list[list[float | None]]:
    return [[None if (isinstance(v, float) and math.isnan(v)) else float(v) for v in row] for row in np.asarray(R)]
