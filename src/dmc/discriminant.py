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

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from dmc.errors import UserError


def shrink_to_identity(covs: Tensor, gamma: float | Tensor) -> Tensor:
    """(1 - gamma) Sigma + gamma (tr Sigma / D) I for each covariance: (C, D, D) or (D, D) -> same.
    `gamma` is one weight, or one per class (C,) for a stack (e.g. `oas_intensity`)."""
    if isinstance(gamma, Tensor):
        if gamma.shape != covs.shape[:-2] or not bool(((gamma >= 0) & (gamma <= 1)).all()):
            raise ValueError(f"per-class shrinkage must be {tuple(covs.shape[:-2])} in [0, 1], got {gamma}")
        gamma = gamma.to(covs.dtype)
        tau = torch.diagonal(covs, dim1=-2, dim2=-1).mean(-1)  # (C,)
        out = covs * (1.0 - gamma)[..., None, None]
        torch.diagonal(out, dim1=-2, dim2=-1).add_((gamma * tau)[..., None])
        return out
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1], got {gamma}")
    tau = torch.diagonal(covs, dim1=-2, dim2=-1).mean(-1)  # (C,) or ()
    out = covs * (1.0 - gamma)
    torch.diagonal(out, dim1=-2, dim2=-1).add_((gamma * tau)[..., None])
    return out


def oas_intensity(covs: Tensor, counts: Tensor) -> Tensor:
    """Per-class shrinkage weight toward (tr Sigma / D) I that follows each class's sample count n_c and
    feature width D: the Oracle Approximating Shrinkage intensity (Chen, Wiesel, Eldar and Hero, IEEE TSP
    2010), in the form scikit-learn's `oas` computes it,

        rho_c = min(1, (tr(S^2) + tr(S)^2) / ((n_c + 1) (tr(S^2) - tr(S)^2 / D))),

    which is scale-free (S and 2 S give the same rho). Few samples in many dimensions give a large rho
    (a class with n_c <= D has a singular S and needs it); many samples a small one. A class whose
    spectrum is already flat (S proportional to I, or already shrunk) gets a smaller rho; n_c <= 0
    (unknown) counts as 1 sample, the strongest shrinkage.

    Shapes: covs (C, D, D) (or (D, D)), counts (C,) (or ()) -> (C,) (or ()), float64.
    """
    s = covs.to(torch.float64)
    d = s.shape[-1]
    tr = torch.diagonal(s, dim1=-2, dim2=-1).sum(-1)  # (C,)
    tr2 = (s * s).sum((-2, -1))  # (C,): tr(S^2), S symmetric
    n = counts.to(torch.float64).clamp_min(1.0)  # (C,)
    den = (n + 1.0) * (tr2 - tr * tr / d)  # (C,), >= 0 (Cauchy-Schwarz)
    rho = (tr2 + tr * tr) / den.clamp_min(torch.finfo(torch.float64).tiny)
    return torch.where(den > 0, rho.clamp(max=1.0), torch.ones_like(rho))


def gaussian_factors(means: Tensor, covs: Tensor, gamma: float | Tensor) -> tuple[Tensor, Tensor, Tensor]:
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


REFERENCE_DIM = 128  # the feature width at which `dmc-ot-mem`'s fusion weight was chosen (the glyph worlds)


def scaled_head(head: Tensor, rule: str, dim: int) -> Tensor:
    """A head's scores (N, C) put on a scale that does not grow with the feature width D, before the
    fusion's log-softmax. The Student-t and Gaussian log-densities are sums over D dimensions, so their
    differences between classes (and the head's log-posterior's sharpness) grow about linearly with D,
    while the text's cosines do not: at a fixed text weight the balance of the two would move with D.

    - "none": as they are (the balance chosen at D = 128 holds at D = 128 only).
    - "dim": divided by D / REFERENCE_DIM, a temperature that is 1 at the width the weight was chosen at.
    - "std": standardised per image over the classes (mean 0, standard deviation 1): scale-free at any D
      (and any head), but its log-posterior is much flatter, so the text weight needs choosing again.
    Shapes: head (N, C) scores of features of width `dim` -> (N, C).
    """
    if rule == "none":
        return head
    if rule == "dim":
        return head / (dim / REFERENCE_DIM)
    if rule == "std":
        h = head.double()
        return (h - h.mean(1, keepdim=True)) / h.std(1, keepdim=True).clamp_min(1e-12)
    raise ValueError(f"unknown head scale {rule!r}; choose none, dim or std")


def fused_scores(head: Tensor, cos: Tensor, text_weight: float) -> Tensor:
    """log_softmax(head) + text_weight * cos (N, C), float64: a discriminant head's class log-posterior
    plus the weighted cosines of a text classifier (`dmc-ot-mem`'s classifier)."""
    return F.log_softmax(head.double(), dim=1) + text_weight * cos.double()


class Head(NamedTuple):
    """A discriminant head of C classes, ready to score: `kind` "qda" / "t" (factors: means (C, D),
    Cholesky factors (C, D, D), log-determinants (C,) or None) or "lda" (factors: W (C, D), b (C,))."""

    kind: str
    factors: tuple


def head_shrinkage(covs: Tensor, counts: Tensor | None, rule: str, gamma: float,
                   pooled: bool = False) -> float | Tensor:
    """The shrinkage a head applies: `gamma` itself (rule "fixed"), or the OAS intensity of each class
    from its covariance and sample count (rule "oas", `oas_intensity`; with `pooled`, of the pooled
    covariance, the classes' mean, from all their samples). Shapes: covs (C, D, D), counts (C,)."""
    if rule == "fixed":
        return gamma
    if rule != "oas":
        raise ValueError(f"unknown shrinkage rule {rule!r}; choose fixed or oas")
    if counts is None:
        raise ValueError("the oas shrinkage needs each class's sample count")
    if pooled:
        return oas_intensity(covs.to(torch.float64).mean(0), counts.sum())
    return oas_intensity(covs, counts)


def build_head(means: Tensor, covs: Tensor, kind: str, gamma: float, logdet: bool = True,
               counts: Tensor | None = None, rule: str = "fixed") -> Head:
    """The head `kind` ("qda", "t" or "lda") of class statistics means (C, D) and covs (C, D, D) or
    variances (C, D), shrunk by `head_shrinkage(covs, counts, rule, gamma)`."""
    if kind not in ("qda", "t", "lda"):
        raise ValueError(f"unknown head {kind!r}; choose qda, t or lda")
    if covs.ndim == 2:  # diagonal covariances
        covs = torch.diag_embed(covs)  # (C, D, D)
    g = head_shrinkage(covs, counts, rule, gamma, pooled=kind == "lda")
    if kind == "lda":
        return Head(kind, lda_weights(means, covs, g))
    mu, chol, det = gaussian_factors(means, covs, g)
    return Head(kind, (mu, chol, det if logdet else None))


def head_scores(x: Tensor, head: Head, dof: float) -> Tensor:
    """(N, C) scores of features x (N, D) under `head` (`dof`: the Student-t's degrees of freedom)."""
    if head.kind == "t":
        return student_t_scores(x, *head.factors, dof)
    return qda_scores(x, *head.factors) if head.kind == "qda" else lda_scores(x, *head.factors)
