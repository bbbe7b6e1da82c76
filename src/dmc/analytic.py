"""Closed-form read-outs of frozen features: random-feature ridge regression and nearest class mean.

Random-feature ridge (the analytic classifier of RanPAC, McDonnell et al., NeurIPS 2023): a fixed random
projection P (D, M) with entries N(0, 1) and a ReLU map a feature x to h = relu(norm(x) P) (M,). Targets are
one-hot rows y (C,). The ridge solution W = (G + lambda I)^-1 Q uses only the sums G = sum h h^T (M, M) and
Q = sum h y^T (M, C), so it can be accumulated task by task without keeping any feature: after the last task
it equals the solve on all data at once, whatever the task order. Everything here is float64.

Nearest class mean (NCM, SimpleCIL): cosine between a normalised feature and the normalised mean of each
class's normalised features.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

RIDGE_GRID = tuple(10.0 ** k for k in range(-6, 7))  # candidate lambdas (RanPAC searches 1e-8 .. 1e8)


def random_projection(dim_in: int, dim_out: int, seed: int, device: str | torch.device = "cpu") -> Tensor:
    """The fixed projection P (dim_in, dim_out), entries N(0, 1), a pure function of `seed` (stored as the seed)."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(dim_in, dim_out, generator=gen, dtype=torch.float64).to(device)


def random_features(x: Tensor, proj: Tensor) -> Tensor:
    """h = relu(norm(x) @ P): (N, D) features -> (N, M) float64 random features."""
    return torch.relu(F.normalize(x.to(torch.float64), dim=-1) @ proj.to(x.device))


def one_hot(labels: Tensor, n_classes: int) -> Tensor:
    """(N,) int labels in [0, n_classes) -> (N, C) float64 one-hot rows."""
    return F.one_hot(labels.long(), n_classes).to(torch.float64)


def ridge_sums(h: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """G = h^T h (M, M) and Q = h^T y (M, C) of random features h (N, M) and targets y (N, C)."""
    h, y = h.to(torch.float64), y.to(torch.float64)
    return h.T @ h, h.T @ y


def ridge_solve(gram: Tensor, q: Tensor, lam: float) -> Tensor:
    """W = (G + lam I)^-1 Q (M, C), by Cholesky (G + lam I is positive definite for lam > 0)."""
    shifted = gram.clone()  # (M, M); the shift goes on the diagonal in place: no M x M identity
    shifted.diagonal().add_(lam)
    chol = torch.linalg.cholesky(shifted)
    del shifted
    return torch.cholesky_solve(q, chol)


def select_ridge(h: Tensor, y: Tensor, grid: tuple[float, ...] = RIDGE_GRID, holdout: float = 0.2,
                 generator: torch.Generator | None = None) -> tuple[float, list[float]]:
    """The lambda of `grid` with the lowest mean squared error on a held-out share of (h, y).

    h (N, M) random features, y (N, C) one-hot targets. The held-out rows are a random `holdout` share (from
    `generator`); the ridge is fitted on the rest. RanPAC's criterion (MSE on held-out training data).
    Every candidate is solved at once from one eigendecomposition (`ridge_path`), not one M x M solve each.
    Returns the chosen lambda and the error of every candidate.
    """
    n = h.shape[0]
    perm = torch.randperm(n, generator=generator).to(h.device)
    n_val = max(1, int(round(holdout * n)))
    val, fit = perm[:n_val], perm[n_val:]
    yv = y[val].to(torch.float64)
    errors = [float(((pred - yv) ** 2).mean()) for pred in ridge_path(h[fit], y[fit], h[val], grid)]
    best = min(range(len(grid)), key=lambda i: errors[i])
    return grid[best], errors


def ridge_path(h: Tensor, y: Tensor, h_eval: Tensor, grid: tuple[float, ...]) -> list[Tensor]:
    """Predictions h_eval W(lam) (E, C) of the ridge W(lam) = (h^T h + lam I)^-1 h^T y for every lam of `grid`.

    h (N, M), y (N, C), h_eval (E, M). One eigendecomposition of the smaller Gram matrix serves every
    candidate: for N <= M, h h^T = U S U^T and W(lam) = h^T U diag(1 / (s + lam)) U^T y (the dual form);
    otherwise h^T h = U S U^T and W(lam) = U diag(1 / (s + lam)) U^T h^T y. Both are the ridge solution
    exactly; the cost is O(N M min(N, M) + min(N, M)^3), mostly matrix products. float64 throughout.
    """
    h, y, h_eval = h.to(torch.float64), y.to(torch.float64), h_eval.to(torch.float64)
    if h.shape[0] <= h.shape[1]:
        s, u = torch.linalg.eigh(h @ h.T)  # (N,), (N, N)
        a, b = (h_eval @ h.T) @ u, u.T @ y  # (E, N), (N, C)
    else:
        s, u = torch.linalg.eigh(h.T @ h)  # (M,), (M, M)
        a, b = h_eval @ u, u.T @ (h.T @ y)  # (E, M), (M, C)
    s = s.clamp_min(0.0)  # a Gram matrix is PSD; rounding may leave tiny negative eigenvalues
    return [(a / (s + lam)) @ b for lam in grid]


def class_means(x: Tensor, labels: Tensor, classes: list[int]) -> Tensor:
    """Normalised means (C, D) of the normalised features of each class in `classes`."""
    x = F.normalize(x.to(torch.float64), dim=-1)
    means = torch.stack([x[labels == c].mean(0) for c in classes])
    return F.normalize(means, dim=-1)


def ncm_predict(x: Tensor, means: Tensor) -> Tensor:
    """Index (N,) of the nearest class mean by cosine; means (C, D) normalised."""
    return (F.normalize(x.to(means.dtype), dim=-1) @ means.T).argmax(dim=1)


def linear_probe(x: Tensor, labels: Tensor, n_classes: int, scale: float = 20.0, steps: int = 300,
                 lr: float = 0.05, weight_decay: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """A cosine classifier fitted on all classes at once: prototypes W (C, D), normalised, minimising the
    cross-entropy of scale * cos(x, w_c) by full-batch Adam from the class means (a reference read-out: the
    best that text prototypes, which are also cosine prototypes, can do on these features)."""
    return prototype_probe(x, labels, n_classes, 1, scale, steps, lr, weight_decay, generator)[:, 0]


def prototype_probe(x: Tensor, labels: Tensor, n_classes: int, k: int = 1, scale: float = 20.0, steps: int = 300,
                    lr: float = 0.05, weight_decay: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """K cosine prototypes per class (C, K, D), normalised, fitted on all classes at once: class c scores
    scale * max_k cos(x, w_ck), cross-entropy by full-batch Adam. K = 1 starts from the class means (the
    linear probe); K > 1 from K features of each class (drawn from `generator`) refined by 10 spherical
    k-means steps. Needs at least K features per class."""
    x = F.normalize(x.float(), dim=-1)  # (N, D)
    if k == 1:
        w = class_means(x, labels, list(range(n_classes))).float()[:, None]  # (C, 1, D)
    else:
        w = torch.stack([_spherical_kmeans(x[labels == c], k, generator) for c in range(n_classes)])  # (C, K, D)
    w = w.clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.cross_entropy(scale * prototype_scores(x, w), labels.long())
            opt.zero_grad()
            loss.backward()
            opt.step()
    return F.normalize(w.detach(), dim=-1)


def prototype_scores(x: Tensor, protos: Tensor) -> Tensor:
    """max_k cos(x_n, w_ck): (N, C) from features (N, D) and prototypes (C, K, D)."""
    return torch.einsum("nd,ckd->nck", F.normalize(x.float(), dim=-1), F.normalize(protos.float(), dim=-1)).amax(-1)


def _spherical_kmeans(x: Tensor, k: int, generator: torch.Generator | None, steps: int = 10) -> Tensor:
    """K unit centres (K, D) of unit features (N, D), N >= K: K drawn features, then `steps` assignments."""
    centres = x[torch.randperm(len(x), generator=generator)[:k]].clone()
    for _ in range(steps):
        nearest = (x @ centres.T).argmax(1)
        for j in range(k):
            if bool((nearest == j).any()):
                centres[j] = F.normalize(x[nearest == j].mean(0), dim=0)
    return centres
