"""Drift diagnostics: how far stored / calibrated statistics are from the truth under the new encoder.

Measurement only: the "true" statistics come from old classes' training images, which a replay-free
method may not train on; they are never fed back into training.
"""
from __future__ import annotations

import torch

from dmc.config import MemoryConfig
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
