"""Gaussian discriminant read-outs of class statistics: LDA (one pooled covariance) and class-wise
Mahalanobis / QDA (each class's own covariance), both with shrinkage.

Given class means mu_c (C, D) and covariances Sigma_c (C, D, D) of image features (what the Gaussian
memory keeps, exemplar-free), the Gaussian class-conditional log-likelihood of a feature x is

    log N(x; mu_c, Sigma_c) = -1/2 [(x - mu_c)^T Sigma_c^-1 (x - mu_c) + log det Sigma_c] + const.

- QDA / class-wise Mahalanobis (FeCAM: Goswami et al., NeurIPS 2023) scores x with each class's own
  shrunk covariance, log-determinant included (`logdet=False` leaves it out: FeCAM's plain Mahalanobis
  distance).
- Student-t (the heavy-tailed counterpart of QDA): the multivariate t log-density with nu degrees of
  freedom, location mu_c and scale Sigma_c, -(nu + D)/2 log(1 + d_c^2 / nu) - 1/2 log det Sigma_c + const,
  with d_c^2 the Mahalanobis distance; a point far from every class loses less than under the Gaussian,
  so a few covariance directions that are badly estimated (classes of ~100 samples in D >= 128) weigh
  less. nu -> infinity gives QDA.
- LDA (the head of FSA: Panos et al., ICCV 2023) shares one covariance, the mean of the classes'
  covariances (each class weighs the same, whatever its sample count), shrunk; the scores are then linear
  in x: w_c^T x + b_c with w_c = Sigma^-1 mu_c, b_c = -1/2 mu_c^T Sigma^-1 mu_c.

Shrinkage toward the scaled identity, Sigma' = (1 - g) Sigma + g (tr Sigma / D) I, keeps the trace and
makes every covariance invertible (a class with fewer samples than dimensions has a singular sample
covariance). Everything is computed in float64; scores are returned in float32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dmc.errors import UserError


def shrink_to_identity(covs: Tensor, gamma: float) -> Tensor:
    """(1 - gamma) Sigma + gamma (tr Sigma / D) I for each covariance: (C, D, D) or (D, D) -> same."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1], got {gamma}")
    tau = torch.diagonal(covs, dim1=-2, dim2=-1).mean(-1)  # (C,) or ()
    out = covs * (1.0 - gamma)
    torch.diagonal(out, dim1=-2, dim2=-1).add_((gamma * tau)[..., None])
    return out


def gaussian_factors(means: Tensor, covs: Tensor, gamma: float) -> tuple[Tensor, Tensor, Tensor]:
    """The pieces of class-wise scoring: means (C, D), lower Cholesky factors L_c of the shrunk
    covariances (C, D, D) and their log-determinants (C,), float64."""
    if covs.ndim != 3 or covs.shape[0] != means.shape[0] or covs.shape[1:] != (means.shape[1],) * 2:
        raise ValueError(f"expected means (C, D) and covs (C, D, D), got {tuple(means.shape)}, {tuple(covs.shape)}")
    shrunk = shrink_to_identity(covs.to(torch.float64), gamma)
    chol = _cholesky(shrunk, gamma)  # (C, D, D)
    logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (C,)
    return means.to(torch.float64), chol, logdet


def mahalanobis(x: Tensor, means: Tensor, chol: Tensor) -> Tensor:
    """Squared Mahalanobis distances (N, C), float64, of features x (N, D) to each class of
    `gaussian_factors` (means, Cholesky factors). One triangular solve per class."""
    x = x.to(torch.float64)
    diff = x[None, :, :] - means[:, None, :]  # (C, N, D)
    white = torch.linalg.solve_triangular(chol, diff.transpose(1, 2), upper=False)  # (C, D, N)
    return white.pow(2).sum(1).T  # (N, C)


def qda_scores(x: Tensor, means: Tensor, chol: Tensor, logdet: Tensor | None) -> Tensor:
    """-1/2 [(x - mu_c)^T Sigma_c^-1 (x - mu_c) + log det Sigma_c] (N, C) for features x (N, D), from
    `gaussian_factors` (logdet None: the Mahalanobis term alone)."""
    maha = mahalanobis(x, means, chol)
    scores = -0.5 * (maha + logdet[None, :]) if logdet is not None else -0.5 * maha
    return scores.float()


def student_t_scores(x: Tensor, means: Tensor, chol: Tensor, logdet: Tensor | None, dof: float) -> Tensor:
    """-(dof + D)/2 log(1 + d_c^2 / dof) - 1/2 log det Sigma_c (N, C): the multivariate Student-t
    log-density with `dof` degrees of freedom, location mu_c and scale Sigma_c (from `gaussian_factors`),
    up to a constant shared by every class (logdet None: without the log-determinant)."""
    if not dof > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {dof}")
    maha = mahalanobis(x, means, chol)  # (N, C)
    scores = -0.5 * (dof + means.shape[1]) * torch.log1p(maha / dof)
    if logdet is not None:
        scores = scores - 0.5 * logdet[None, :]
    return scores.float()


def _cholesky(shrunk: Tensor, gamma: float) -> Tensor:
    """Lower Cholesky factor(s) of shrunk covariance(s) (..., D, D). A covariance that is not positive
    definite (too few samples for the dimension, and no shrinkage to make up for it) is a UserError in
    one line saying which setting to change, not torch's LinAlgError."""
    try:
        return torch.linalg.cholesky(shrunk)
    except torch.linalg.LinAlgError:
        raise UserError(f"a class covariance is singular with shrinkage gamma={gamma} (fewer samples than "
                        "feature dimensions, or constant features); raise the head's shrinkage above 0, e.g. "
                        "--set memhead.gamma=0.02 (or fsa.gamma=0.01 for FSA)") from None


def lda_weights(means: Tensor, covs: Tensor, gamma: float) -> tuple[Tensor, Tensor]:
    """Linear discriminant (W (C, D), b (C,)) of the pooled covariance (the mean of `covs`, shrunk):
    scores = x W^T + b, W_c = Sigma^-1 mu_c, b_c = -1/2 mu_c^T Sigma^-1 mu_c; float64."""
    pooled = shrink_to_identity(covs.to(torch.float64).mean(0), gamma)  # (D, D)
    mu = means.to(torch.float64)  # (C, D)
    w = torch.cholesky_solve(mu.T, _cholesky(pooled, gamma)).T  # (C, D)
    return w, -0.5 * (w * mu).sum(1)


def lda_scores(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """x (N, D) -> (N, C) linear discriminant scores, float32."""
    return (x.to(torch.float64) @ w.T + b[None, :]).float()


def fused_scores(head: Tensor, cos: Tensor, text_weight: float) -> Tensor:
    """log_softmax(head) + text_weight * cos (N, C), float64: a discriminant head's class log-posterior
    plus the weighted cosines of a text classifier (`dmc-ot-mem`'s classifier)."""
    return F.log_softmax(head.double(), dim=1) + text_weight * cos.double()
