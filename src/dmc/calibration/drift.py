"""Drift transfer: move points measured with an old encoder by the drift observed on paired features.

Given paired features of the same images under the old and the new encoder, a_j = f_old(x_j) and
b_j = f_new(x_j), the observed drift is delta_j = b_j - a_j. A point u of the old space (e.g. a sample of
a stored class Gaussian) is moved by a weighted average of the delta_j, u' = u + sum_j w_j delta_j with
sum_j w_j = 1, the weights coming either from an entropic OT plan (DMC-OT, our reconstruction) or from a
Gaussian kernel (mean-shift, as in SDC: Yu et al., "Semantic Drift Compensation for Class-Incremental
Learning", CVPR 2020). Both use POT's or torch's solvers only; every function is pure and device-agnostic.
"""
from __future__ import annotations

import logging
from typing import Any, NamedTuple

import ot
import torch
import torch.nn.functional as F
from torch import Tensor

logger = logging.getLogger(__name__)


def squared_distances(x: Tensor, y: Tensor, normalize: bool = True) -> Tensor:
    """Pairwise squared Euclidean distances ||x_i - y_j||^2, on L2-normalised rows if ``normalize``.

    Shapes: x (n, D), y (m, D) -> (n, m), clamped at 0, in x's dtype.
    """
    if normalize:
        x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)
    if normalize:  # ||x|| = ||y|| = 1: 2 - 2 x.y, one fused product (no extra pass over the (n, m) result)
        return torch.addmm(x.new_full((1, 1), 2.0), x, y.T, alpha=-2.0).clamp_(min=0.0)
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :]  # (n, m)
    return sq.addmm_(x, y.T, alpha=-2.0).clamp_(min=0.0)


class Transport(NamedTuple):
    plan: Tensor  # (n, m), sum_ij P_ij = 1
    niter: int  # Sinkhorn iterations
    err: float  # relative column-marginal error (0 for semi-relaxed OT, whose column marginal is a penalty)


def ot_plan(
    x: Tensor,
    y: Tensor,
    reg: float = 0.05,
    *,
    normalize: bool = True,
    max_iter: int = 1000,
    tol: float = 1e-2,
    solver: str = "sinkhorn",
    relax: float | None = None,
) -> Transport:
    """Entropic OT plan between two uniform point clouds (POT's Sinkhorn, on torch tensors).

    With ``relax`` set, the column marginal is only a KL penalty of weight ``relax`` (semi-relaxed OT,
    ``ot.unbalanced.sinkhorn_unbalanced`` with reg_m = (inf, relax)): every x_i still sends its whole mass,
    but need not spread it over all y_j. relax -> inf recovers the balanced plan; relax -> 0 gives each row
    the softmax of -M/reg (a kernel, like mean-shift).

    Solves  min_P <P, M> - reg * H(P)  s.t.  P 1 = 1/n,  P^T 1 = 1/m,  where
    M_ij = ||x_i - y_j||^2 / max_kl ||x_k - y_l||^2 (rows L2-normalised if ``normalize``), so ``reg`` is
    relative to a cost in [0, 1]. Reference: Cuturi, "Sinkhorn Distances", NeurIPS 2013. Solved by
    ``ot.sinkhorn`` (POT) on the torch tensors: ``method="sinkhorn"`` (scaling iterations on
    K = exp(-M/reg)) or ``"sinkhorn_log"`` (log-domain iterations). Both reach the same plan; the log
    domain is only needed when K would underflow, i.e. reg < SCALING_MIN_REG (exp(-50) is far above
    float32's smallest normal), and costs ~15x more per iteration on CPU (logsumexp vs matvec). Which
    solver is safe at which ``reg`` is the config's check (`CalibrationConfig`), made once, not here.

    Args:
        x: (n, D), y: (m, D), same dtype and device (float32 or float64, CPU or GPU).
        reg: entropic regularisation (> 0; >= SCALING_MIN_REG for "sinkhorn"). max_iter: iteration cap.
        tol: stop when ||P^T 1 - 1/m||_2 <= tol * ||1/m||_2 (POT checks every 10 iterations).
        solver: POT method, "sinkhorn" or "sinkhorn_log".
    Returns:
        The plan P (n, m) with the solver's iterations and marginal error.
    """
    _check_pair(x, y)
    cost = squared_distances(x, y, normalize)  # (n, m)
    # Scaling the cost to max 1 is the same problem as keeping it and scaling reg (and relax) by its max:
    # exp(-(M / s) / reg) = exp(-M / (s reg)). That saves a pass over the (n, m) matrix.
    top = float(cost.max())
    scale = top if top > 0 else 1.0  # an all-zero cost stays 0: the uniform plan
    n, m = cost.shape
    a = torch.full((n,), 1.0 / n, dtype=cost.dtype, device=cost.device)  # (n,)
    b = torch.full((m,), 1.0 / m, dtype=cost.dtype, device=cost.device)  # (m,)
    thr = tol * float(b.norm())
    if relax is not None:
        plan, info = ot.unbalanced.sinkhorn_unbalanced(
            a, b, cost, reg * scale, reg_m=(float("inf"), relax * scale),
            method="sinkhorn_stabilized" if solver == "sinkhorn_log" else solver, numItermax=max_iter,
            stopThr=thr, log=True)
        return Transport(plan, int(info.get("niter", max_iter)), 0.0)
    plan, info = ot.sinkhorn(
        a, b, cost, reg * scale, method=solver, numItermax=max_iter, stopThr=thr, log=True, warn=False
    )
    err = float(info["err"][-1]) / float(b.norm()) if info["err"] else 0.0
    if err > tol:
        logger.warning("Sinkhorn stopped after %d iterations (max_iter=%d) with relative marginal error "
                       "%.2e > tol=%.0e", int(info["niter"]) + 1, max_iter, err, tol)
    return Transport(plan, int(info["niter"]) + 1, err)


def ot_drift(
    u: Tensor, a: Tensor, delta: Tensor, reg: float = 0.05, **plan_kwargs: Any
) -> tuple[Tensor, dict[str, Any]]:
    """Barycentric drift of each u_i under the OT plan P between {u_i} and {a_j}.

    d_i = sum_j P_ij delta_j / sum_j P_ij. Shapes: u (S, D), a (N, D), delta (N, D) -> d (S, D), plus
    the plan's log ({"niter", "err"}). ``plan_kwargs`` go to ``ot_plan``.
    """
    _check_transfer(u, a, delta)
    plan, niter, err = ot_plan(u, a, reg, **plan_kwargs)  # (S, N)
    ones = torch.ones(delta.shape[0], 1, dtype=delta.dtype, device=delta.device)
    moved = plan @ torch.cat([delta, ones], 1)  # (S, D + 1): sum_j P_ij delta_j and sum_j P_ij in one pass
    del plan
    rows = moved[:, -1:].clamp_min(torch.finfo(moved.dtype).tiny)  # (S, 1)
    return moved[:, :-1] / rows, {"niter": niter, "err": err}


def transfer_drift_ot(u: Tensor, a: Tensor, delta: Tensor, reg: float = 0.05, **plan_kwargs: Any) -> Tensor:
    """Move old-space points by their OT-weighted drift: u'_i = u_i + sum_j P_ij delta_j / sum_j P_ij.

    Shapes: u (S, D), a (N, D), delta (N, D) -> u' (S, D). See ``ot_plan`` for P and ``plan_kwargs``.
    """
    return u + ot_drift(u, a, delta, reg, **plan_kwargs)[0]


def mean_shift_drift(u: Tensor, a: Tensor, delta: Tensor, sigma: float, normalize: bool = True) -> Tensor:
    """Kernel-weighted drift (SDC): d_i = sum_j w_ij delta_j, w_ij = softmax_j(-||u_i - a_j||^2 / 2 sigma^2).

    The per-row softmax is the normalised Gaussian kernel exp(-||u_i - a_j||^2 / (2 sigma^2)) / sum_j (...),
    computed stably: a point far from every a_j gets the drift of its nearest ones instead of 0/0.
    Shapes: u (S, D), a (N, D), delta (N, D) -> d (S, D). Distances on L2-normalised rows if ``normalize``.
    """
    _check_transfer(u, a, delta)
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    logits = squared_distances(u, a, normalize).mul_(-0.5 / sigma**2)  # (S, N)
    return torch.softmax(logits, dim=1) @ delta


def transfer_drift_mean_shift(
    u: Tensor, a: Tensor, delta: Tensor, sigma: float = 0.2, normalize: bool = True
) -> Tensor:
    """Move old-space points by their Gaussian-kernel weighted drift (see ``mean_shift_drift``).

    Shapes: u (S, D), a (N, D), delta (N, D) -> u' (S, D).
    """
    return u + mean_shift_drift(u, a, delta, sigma, normalize)


def fit_linear_drift(old: Tensor, new: Tensor, ridge: float) -> tuple[Tensor, Tensor]:
    """A ridge-regularised affine map of the old encoder's features onto the new one's, fitted on paired
    features: new_j ~ A old_j + b (a linear drift map; LDC, Gomez-Villa et al., ECCV 2024, learns such a
    projector by gradient descent, this is its closed form).

    The ridge pulls A toward the identity, not toward 0: what the task's images do not determine stays
    "no change but the shift". With a_j centred (Ac (N, D)) and their drifts delta_j = new_j - old_j
    centred (Dc (N, D)):
        A = I + Dc^T Ac (Ac^T Ac + lam I)^-1,   b = mean(new) - A mean(old),
    lam = ridge * tr(Ac^T Ac) / D (ridge relative to N times the features' mean variance: scale-free). A
    constant drift c gives exactly A = I, b = c; an exact affine map is recovered as ridge -> 0 once the
    features span the space (N > D).

    Shapes: old, new (N, D) -> A (D, D), b (D,), float64 on old's device.
    """
    _check_pair(old, new)
    if old.shape != new.shape:
        raise ValueError(f"old and new features must be paired rows of one shape, got {tuple(old.shape)} "
                         f"and {tuple(new.shape)}")
    if not ridge > 0:
        raise ValueError(f"ridge must be > 0, got {ridge}")
    x, y = old.to(torch.float64), new.to(torch.float64)  # (N, D)
    d = x.shape[1]
    x_mean, y_mean = x.mean(0), y.mean(0)  # (D,)
    xc = x - x_mean  # (N, D)
    dc = (y - x) - (y_mean - x_mean)  # (N, D) centred drifts
    gram = xc.T @ xc  # (D, D)
    tau = float(torch.diagonal(gram).sum()) / d
    lam = ridge * (tau if tau > 0 else 1.0)
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    step = torch.linalg.solve(gram + lam * eye, xc.T @ dc).T  # (D, D): A - I (gram symmetric)
    a = eye + step
    return a, y_mean - a @ x_mean


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"expected x (n, D) and y (m, D), got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] == 0 or y.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"empty point cloud: x {tuple(x.shape)}, y {tuple(y.shape)}")
    if x.dtype != y.dtype or x.device != y.device:
        raise ValueError(f"x and y differ in dtype/device: {x.dtype}/{x.device} vs {y.dtype}/{y.device}")
    if not x.is_floating_point():
        raise ValueError(f"expected floating-point features, got {x.dtype}")


def _check_transfer(u: Tensor, a: Tensor, delta: Tensor) -> None:
    _check_pair(u, a)
    if delta.shape != a.shape:
        raise ValueError(f"delta must match a's shape {tuple(a.shape)}, got {tuple(delta.shape)}")
