"""The arithmetic of calibrating stored class Gaussians: sampling them, moving a covariance by the drift of
its samples without cancellation, and restoring positive definiteness where a contraction lost it.

Why the covariance moves as it does: with u_i the samples of a class and d_i their drifts,
mu' = mu + mean_i d_i and Sigma' = Sigma + [Cov(u + d) - Cov(u)] = Sigma + Y + Y^T,
Y = (1/(S-1)) sum_i (u_i - u_bar + (d_i - d_bar)/2)(d_i - d_bar)^T. The stored Sigma (ridge included) is
kept and only the change implied by the drift is added, so a constant drift c gives exactly mu + c and
Sigma (d_i - d_bar = 0), whatever the samples; re-fitting Cov(u') instead would replace Sigma by a noisy
rank-S estimate (S < D). Sigma + Y + Y^T can lose positive definiteness when the drift contracts a class:
covariances whose smallest eigenvalue falls below ``min_eig`` * mean variance (found by one batched
Cholesky of Sigma' - floor*I) get their eigenvalues clipped there.
"""
from __future__ import annotations

import torch
from torch import Tensor


def draw(means: Tensor, covs: Tensor, s: int, generator: torch.Generator | None) -> Tensor:
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


def moved_covariance(covs: Tensor, u: Tensor, drift: Tensor, min_eig: float) -> tuple[Tensor, int]:
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


def mapped_covariance(covs: Tensor, a: Tensor, min_eig: float) -> tuple[Tensor, int]:
    """The covariances of A u for u ~ (mu, Sigma): A Sigma A^T, exactly symmetric, PD restored (eigenvalues
    floored at ``min_eig`` x tr/D) where a contracting A lost it. A diagonal Sigma (variances) stays
    diagonal: the variances of A u, diag(A Sigma A^T) = (A * A) sigma.

    Shapes: covs (C, D, D) or (C, D), a (D, D) -> (covs' in covs' dtype, number of repaired classes).
    Computed in float64.
    """
    a64 = a.to(torch.float64)  # (D, D)
    c64 = covs.to(torch.float64)
    if covs.ndim == 2:
        new = c64 @ (a64 * a64).T  # (C, D)
        floor = min_eig * new.mean(1, keepdim=True).clamp_min(torch.finfo(new.dtype).tiny)  # (C, 1)
        bad = new < floor
        return torch.where(bad, floor.expand_as(new), new).to(covs.dtype), int(bad.any(1).sum())
    new = a64 @ c64 @ a64.T  # (C, D, D)
    new = 0.5 * (new + new.transpose(1, 2))
    fixed, repaired = _repair_pd(new, min_eig)
    return fixed.to(covs.dtype), repaired


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


def check_stats(means: Tensor, covs: Tensor) -> None:
    if means.ndim != 2:
        raise ValueError(f"means must be (C, D), got {tuple(means.shape)}")
    c, d = means.shape
    if tuple(covs.shape) not in ((c, d, d), (c, d)):
        raise ValueError(f"covs must be (C, D, D) = {(c, d, d)} or (C, D) = {(c, d)}, got {tuple(covs.shape)}")
    if not means.is_floating_point() or covs.dtype != means.dtype:
        raise ValueError(f"means and covs must share one float dtype, got {means.dtype} and {covs.dtype}")


def check_feats(means: Tensor, old: Tensor, new: Tensor) -> None:
    d = means.shape[1]
    if old.ndim != 2 or old.shape != new.shape or old.shape[1] != d:
        raise ValueError(
            f"old_feats and new_feats must both be (N, D={d}), got {tuple(old.shape)} and {tuple(new.shape)}"
        )
    if old.shape[0] == 0:
        raise ValueError("no paired features: the drift cannot be estimated from 0 images")
    if old.dtype != means.dtype or new.dtype != means.dtype:
        raise ValueError(f"features must have the statistics' dtype {means.dtype}, got {old.dtype}, {new.dtype}")
