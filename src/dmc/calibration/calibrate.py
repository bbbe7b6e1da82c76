"""Calibration of stored class Gaussians after the vision encoder has changed (DMC-OT, part a).

The memory's statistics were measured with the encoder of an earlier task; after stage 1 of task t they
are stale ("distributional drift"). We move S samples of each old class by the drift observed on task-t
images (see ``drift``) and re-estimate each class's mean and covariance from the moves.

Design choices (all ``[reconstruction]``):
- One OT problem between all C*S samples and the N task-t features, not C problems of S x N. Same cost,
  but per class the uniform column marginal forces every class to spread over *all* N features, so each
  class's mean drift would be exactly the global mean drift (sum_i P_ij = 1/N for every j): the
  per-class variant cannot tell classes apart. Jointly, classes compete for the features.
- No sampling noise in the re-estimate. With u_i the samples and d_i their drifts:
  mu' = mu + mean_i d_i and Sigma' = Sigma + [Cov(u + d) - Cov(u)] = Sigma + Y + Y^T,
  Y = (1/(S-1)) sum_i (u_i - u_bar + (d_i - d_bar)/2)(d_i - d_bar)^T.
  The stored Sigma (ridge included) is kept and only the change implied by the drift is added, so a
  constant drift c gives exactly mu + c and Sigma (d_i - d_bar = 0), whatever the samples. Re-fitting
  Cov(u') instead would replace Sigma by a noisy rank-S estimate (S < D).
- ``level="class"`` transports the C class means instead of C*S samples: the plan is C x N instead of
  C*S x N (S times less work, no sampling), each class moves by one drift and keeps its covariance (a
  constant drift leaves Sigma unchanged, as above). The balanced marginal then makes classes share the
  task's features like a soft assignment; ``relax`` loosens it as for samples.
- Sigma + Y + Y^T can lose positive definiteness when the drift contracts a class; covariances whose
  smallest eigenvalue falls below ``min_eig`` * mean variance (detected by one batched Cholesky of
  Sigma' - floor*I) get their eigenvalues clipped there. The default, half the memory's default relative
  ridge, never touches statistics the memory produced and leaves repaired ones about as well conditioned
  (they must survive float32 storage).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from dmc.calibration.drift import mean_shift_drift, ot_drift
from dmc.config import CalibrationConfig

def calibrate_gaussians(
    means: Tensor,
    covs: Tensor,
    old_feats: Tensor,
    new_feats: Tensor,
    cfg: CalibrationConfig,
    generator: torch.Generator | None,
    *,
    log: bool = False,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, dict[str, Any]]:
    """Re-align old class Gaussians with the new encoder, using paired features of the current images.

    For each class c: draw u_ci ~ N(mu_c, Sigma_c), i < S (from ``generator``); drift each sample with
    ``cfg.method`` against a_j = old_feats, delta_j = new_feats - old_feats (one joint problem over all
    C*S samples); mu'_c = mu_c + mean_i d_ci; Sigma'_c = Sigma_c + (Cov(u + d) - Cov(u)) (see module doc).
    With ``cfg.level == "class"`` the means themselves are moved (mu'_c = mu_c + d_c) and Sigma'_c = Sigma_c.

    Args:
        means: (C, D). covs: (C, D, D) full or (C, D) diagonal; the output keeps the form.
        old_feats, new_feats: (N, D), row j = the same image under the old / new encoder.
        cfg: calibration config; "none" returns copies of the inputs.
        generator: random source for the samples, on means' device.
        log: also return {"niter", "err", "n_repaired"}.
    Returns:
        means' (C, D) and covs' (same shape as covs), in means' dtype; and the log if ``log``.
    """
    _check_stats(means, covs)
    info: dict[str, Any] = {"niter": 0, "err": 0.0, "n_repaired": 0}
    if cfg.method != "none":
        _check_feats(means, old_feats, new_feats)
    if cfg.method == "none" or means.shape[0] == 0:
        return (means.clone(), covs.clone(), info) if log else (means.clone(), covs.clone())
    c, d = means.shape
    delta = new_feats - old_feats  # (N, D)
    if cfg.level == "class":
        drift = _drift(means, old_feats, delta, cfg, info)  # (C, D)
        return (means + drift, covs.clone(), info) if log else (means + drift, covs.clone())
    s = cfg.samples_per_class
    u = _draw(means, covs, s, generator)  # (C, S, D)
    drift = _drift(u.reshape(c * s, d), old_feats, delta, cfg, info).reshape(c, s, d)  # (C, S, D)
    new_means = means + drift.mean(1)  # (C, D)
    new_covs, info["n_repaired"] = _moved_covariance(covs, u, drift, cfg.min_eig)
    return (new_means, new_covs, info) if log else (new_means, new_covs)


def _drift(points: Tensor, old_feats: Tensor, delta: Tensor, cfg: CalibrationConfig, info: dict) -> Tensor:
    """The drift (P, D) of old-space points (P, D) by ``cfg.method``; the OT plan's log goes into ``info``."""
    if cfg.method == "ot":
        drift, plan_info = ot_drift(points, old_feats, delta, cfg.reg, normalize=cfg.normalize_cost,
                                    max_iter=cfg.max_iter, tol=cfg.tol, solver=cfg.solver, relax=cfg.relax)
        info.update(plan_info)
        return drift
    return mean_shift_drift(points, old_feats, delta, cfg.sigma, cfg.normalize_cost)


def _draw(means: Tensor, covs: Tensor, s: int, generator: torch.Generator | None) -> Tensor:
    """S samples per class: u = mu + L xi (full) or mu + std * xi (diag). Shapes -> (C, S, D)."""
    c, d = means.shape
    xi = torch.randn(c, s, d, generator=generator, dtype=means.dtype, device=means.device)  # (C, S, D)
    if covs.ndim == 2:
        if not bool((covs > 0).all()):
            raise ValueError("variances must be > 0")
        return means[:, None, :] + xi * covs.sqrt()[:, None, :]
    factor, bad = _cholesky(covs)  # (C, D, D), (B,)
    if bad.numel():
        raise ValueError(f"covariances of classes {bad.tolist()} are not positive definite")
    return means[:, None, :] + xi @ factor.transpose(1, 2)


def _cholesky(covs: Tensor) -> tuple[Tensor, Tensor]:
    """Batched lower Cholesky in covs' dtype, redone in float64 where that fails.

    Shapes: covs (C, D, D) -> factors (C, D, D) in covs' dtype, indices (B,) of the matrices that are
    not positive definite even in float64 (their factors are meaningless).
    """
    factor, info = torch.linalg.cholesky_ex(covs)  # (C, D, D), (C,)
    retry = torch.nonzero(info > 0).flatten()
    if retry.numel() == 0:
        return factor, retry
    f64, info64 = torch.linalg.cholesky_ex(covs[retry].to(torch.float64))
    factor[retry] = f64.to(covs.dtype)
    return factor, retry[info64 > 0]


def _moved_covariance(covs: Tensor, u: Tensor, drift: Tensor, min_eig: float) -> tuple[Tensor, int]:
    """Sigma + Cov(u + d) - Cov(u), computed without cancellation; PD restored if lost.

    Shapes: covs (C, D, D) or (C, D); u, drift (C, S, D). Returns (covs', number of repaired classes).
    """
    s = u.shape[1]
    dc = drift - drift.mean(1, keepdim=True)  # (C, S, D)
    w = u - u.mean(1, keepdim=True) + 0.5 * dc  # (C, S, D)
    if covs.ndim == 2:
        new = covs + 2.0 * (w * dc).sum(1) / (s - 1)  # (C, D)
        floor = min_eig * new.mean(1, keepdim=True).clamp_min(torch.finfo(new.dtype).tiny)  # (C, 1)
        bad = new < floor
        return torch.where(bad, floor.expand_as(new), new), int(bad.any(1).sum())
    y = w.transpose(1, 2) @ dc  # (C, D, D): (s - 1) Y
    new = (y + y.transpose(1, 2)).div_(s - 1).add_(covs)  # (C, D, D), exactly symmetric
    return _repair_pd(new, min_eig)


def _repair_pd(covs: Tensor, min_eig: float) -> tuple[Tensor, int]:
    """Clip eigenvalues at min_eig * tr/D for the covariances whose smallest eigenvalue is below it."""
    tau = torch.diagonal(covs, dim1=1, dim2=2).mean(1)  # (C,) mean variance
    floor = min_eig * tau.clamp_min(torch.finfo(covs.dtype).tiny)  # (C,)
    shifted = covs.clone()
    torch.diagonal(shifted, dim1=1, dim2=2).sub_(floor[:, None])
    _, bad = _cholesky(shifted)  # fails iff lambda_min <= floor
    del shifted
    if bad.numel() == 0:
        return covs, 0
    evals, evecs = torch.linalg.eigh(covs[bad].to(torch.float64))  # (B, D), (B, D, D)
    evals = torch.maximum(evals, floor[bad, None].to(torch.float64))
    fixed = (evecs * evals[:, None, :]) @ evecs.transpose(1, 2)  # (B, D, D)
    out = covs.clone()
    out[bad] = (0.5 * (fixed + fixed.transpose(1, 2))).to(covs.dtype)
    return out, int(bad.numel())


def _check_stats(means: Tensor, covs: Tensor) -> None:
    if means.ndim != 2:
        raise ValueError(f"means must be (C, D), got {tuple(means.shape)}")
    c, d = means.shape
    if tuple(covs.shape) not in ((c, d, d), (c, d)):
        raise ValueError(f"covs must be (C, D, D) = {(c, d, d)} or (C, D) = {(c, d)}, got {tuple(covs.shape)}")
    if not means.is_floating_point() or covs.dtype != means.dtype:
        raise ValueError(f"means and covs must share one float dtype, got {means.dtype} and {covs.dtype}")


def _check_feats(means: Tensor, old: Tensor, new: Tensor) -> None:
    d = means.shape[1]
    if old.ndim != 2 or old.shape != new.shape or old.shape[1] != d:
        raise ValueError(
            f"old_feats and new_feats must both be (N, D={d}), got {tuple(old.shape)} and {tuple(new.shape)}"
        )
    if old.shape[0] == 0:
        raise ValueError("no paired features: the drift cannot be estimated from 0 images")
    if old.dtype != means.dtype or new.dtype != means.dtype:
        raise ValueError(f"features must have the statistics' dtype {means.dtype}, got {old.dtype}, {new.dtype}")
