"""Drift diagnostics: how far stored / calibrated statistics are from the truth under the new encoder.

Observers of the loop, not branches of a method: the loop attaches them (`observers`) when the run's
`diagnostics` section asks, and a method with a Gaussian memory tells them when old classes' statistics
were calibrated (`Method.observe("calibrated", ...)`). Measurement only: the "true" statistics come from
old classes' training images, which a replay-free method may not train on; they are never fed back into
training, except by `diagnostics.oracle_stats`, the calibration ceiling, which is a diagnostic and never a
method.
"""
from __future__ import annotations

import torch

from dmc.config import MemoryConfig, RunConfig
from dmc.memory.gaussian import fit_gaussian


def _rel(err: torch.Tensor, ref: torch.Tensor) -> float:
    return float(err.norm() / ref.norm().clamp_min(1e-12))


def drift_errors(stored_means: torch.Tensor, stored_covs: torch.Tensor, cal_means: torch.Tensor,
                 cal_covs: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor, classes: list[int],
                 memory: MemoryConfig) -> dict[str, float]:
    """Mean over classes of ||mu - mu_true|| / ||mu_true|| (and the same for covariances, Frobenius)."""
    rows = {"stored": [], "calibrated": [], "cov_stored": [], "cov_calibrated": []}
    for i, c in enumerate(classes):
        mask = labels == c
        if int(mask.sum()) < 2:
            continue
        mu, cov = fit_gaussian(feats[mask], memory)
        mu, cov = mu.to(stored_means.device), cov.to(stored_means.device)
        rows["stored"].append(_rel(stored_means[i] - mu, mu))
        rows["calibrated"].append(_rel(cal_means[i] - mu, mu))
        rows["cov_stored"].append(_rel(stored_covs[i] - cov, cov))
        rows["cov_calibrated"].append(_rel(cal_covs[i] - cov, cov))
    return {k: float(sum(v) / len(v)) if v else float("nan") for k, v in rows.items()}


class MemoryDiagnostics:
    """After the calibration of task t >= 2: the drift errors of the stored and calibrated statistics
    against the true ones (the metrics line's `drift`), measured on old classes' training images under the
    current tower; with `oracle`, the true statistics then replace the stored ones."""

    def __init__(self, memory: MemoryConfig, oracle: bool = False) -> None:
        self.memory, self.oracle = memory, oracle

    def calibrated(self, method, task, stored: tuple[torch.Tensor, torch.Tensor]) -> dict:
        """`method` has a Gaussian `bank`; `stored`: old classes' means and covariances before calibration."""
        if task.reference is None:
            return {}
        old, bank = task.old, method.bank
        true_feats, true_labels = method.encode(task.reference(old), "drift diagnostics")
        drift = drift_errors(*stored, bank.means(old), bank.covs(old), true_feats, true_labels, old, self.memory)
        if self.oracle:  # the calibration ceiling: the true statistics under the current encoder
            for c in old:
                bank.add(c, true_feats[true_labels == c])
        return {"drift": drift}


def observers(cfg: RunConfig) -> list:
    """The observers the run's `diagnostics` section asks for."""
    d = cfg.diagnostics
    return [MemoryDiagnostics(cfg.memory, oracle=d.oracle_stats)] if d.drift or d.oracle_stats else []
