"""Calibration of stored class Gaussians after the vision encoder has changed (DMC-OT, part a).

The memory's statistics were measured with the encoder of an earlier task; after stage 1 of task t they
are stale ("distributional drift"). A calibration moves them by the drift observed on task-t images, whose
features under the old and the new encoder are paired (see ``drift``). Each calibration is a strategy
registered by name (`dmc.config.CALIBRATIONS`, `calibration.method`), built from the config section and
called once per task; what differs between them is only how a point's drift is weighed from the observed
ones (`Calibration.drift`), and the base moves from it, at `calibration.level`, either the class means
alone (`class`, the default: covariances stay as stored) or S samples per class, whose re-estimated mean and
covariance replace the stored ones (`sample`). `linear` and `ot+linear` move covariances in closed form.

Design choices (all ``[reconstruction]``):
- One problem between all C*S samples and the N task-t features, not C problems of S x N. Same cost, but
  per class the uniform column marginal of OT forces every class to spread over *all* N features, so each
  class's mean drift would be exactly the global mean drift (sum_i P_ij = 1/N for every j): the per-class
  variant cannot tell classes apart. Jointly, classes compete for the features.
- No sampling noise in the re-estimate (``gaussians.moved_covariance``): a constant drift gives exactly
  mu + c and Sigma, whatever the samples.
- ``level="class"`` transports the C class means instead of C*S samples: the plan is C x N instead of
  C*S x N (S times less work, no sampling), each class moves by one drift and keeps its covariance. The
  balanced marginal then makes classes share the task's features like a soft assignment; ``relax`` loosens
  it as for samples.
- The eigenvalue floor ``min_eig``, half the memory's default relative ridge, never touches statistics the
  memory produced and leaves repaired ones about as well conditioned (they must survive float32 storage).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from dmc.calibration.drift import fit_linear_drift, mean_shift_drift, ot_drift
from dmc.calibration.gaussians import check_feats, check_stats, draw, mapped_covariance, moved_covariance
from dmc.config import CALIBRATIONS, CalibrationConfig


class Calibrated(NamedTuple):
    means: Tensor  # (C, D), in the statistics' dtype
    covs: Tensor  # (C, D, D) or (C, D), the form they came in
    info: dict[str, Any]  # {"niter", "err"} of an OT plan, "n_repaired": covariances made positive definite again


class Calibration:
    """Moves old classes' Gaussians along the encoder's drift: `calibration(means, covs, old_feats, new_feats,
    generator)`. A subclass says how a point of the old space drifts (`drift`); this class moves the
    statistics from it, at `cfg.level`.

    For each class c at level "sample": draw u_ci ~ N(mu_c, Sigma_c), i < S (from ``generator``); drift each
    sample against a_j = old_feats, delta_j = new_feats - old_feats (one joint problem over all C*S samples);
    mu'_c = mu_c + mean_i d_ci; Sigma'_c = Sigma_c + (Cov(u + d) - Cov(u)). At level "class" the means
    themselves are moved (mu'_c = mu_c + d_c) and Sigma'_c = Sigma_c.
    """

    needs_features = True  # it reads the task's images under the encoder before the update

    def __init__(self, cfg: CalibrationConfig) -> None:
        self.level, self.samples, self.min_eig = cfg.level, cfg.samples_per_class, cfg.min_eig

    def drift(self, points: Tensor, old_feats: Tensor, delta: Tensor) -> tuple[Tensor, dict[str, Any]]:
        """The drift (P, D) of old-space points (P, D), given the features a (N, D) and their drifts
        delta (N, D), and what the solver reports."""
        raise NotImplementedError

    def __call__(self, means: Tensor, covs: Tensor, old_feats: Tensor, new_feats: Tensor,
                 generator: torch.Generator | None) -> Calibrated:
        """means (C, D), covs (C, D, D) or (C, D); old_feats, new_feats (N, D), row j = the same image under
        the old / new encoder; generator: the samples' random source, on means' device."""
        check_stats(means, covs)
        check_feats(means, old_feats, new_feats)
        info: dict[str, Any] = {"niter": 0, "err": 0.0, "n_repaired": 0}
        if means.shape[0] == 0:
            return Calibrated(means.clone(), covs.clone(), info)
        c, d = means.shape
        delta = new_feats - old_feats  # (N, D)
        if self.level == "class":
            moved, solved = self.drift(means, old_feats, delta)  # (C, D)
            return Calibrated(means + moved, covs.clone(), {**info, **solved})
        u = draw(means, covs, self.samples, generator)  # (C, S, D)
        moved, solved = self.drift(u.reshape(c * self.samples, d), old_feats, delta)
        moved = moved.reshape(c, self.samples, d)  # (C, S, D)
        new_covs, repaired = moved_covariance(covs, u, moved, self.min_eig)
        return Calibrated(means + moved.mean(1), new_covs, {**info, **solved, "n_repaired": repaired})


class NoCalibration(Calibration):
    """DMC: the statistics stay as they were stored (copies)."""

    needs_features = False

    def __call__(self, means: Tensor, covs: Tensor, old_feats: Tensor | None = None,
                 new_feats: Tensor | None = None, generator: torch.Generator | None = None) -> Calibrated:
        check_stats(means, covs)
        return Calibrated(means.clone(), covs.clone(), {"niter": 0, "err": 0.0, "n_repaired": 0})


class MeanShift(Calibration):
    """SDC's drift (Yu et al., CVPR 2020): a Gaussian-kernel average of the observed drifts."""

    def __init__(self, cfg: CalibrationConfig) -> None:
        super().__init__(cfg)
        self.sigma, self.normalize = cfg.sigma, cfg.normalize_cost

    def drift(self, points: Tensor, old_feats: Tensor, delta: Tensor) -> tuple[Tensor, dict[str, Any]]:
        return mean_shift_drift(points, old_feats, delta, self.sigma, self.normalize), {}


class OptimalTransport(Calibration):
    """DMC-OT (a): the barycentric drift under the entropic OT plan between the points and the features."""

    def __init__(self, cfg: CalibrationConfig) -> None:
        super().__init__(cfg)
        self.plan = {"reg": cfg.reg, "normalize": cfg.normalize_cost, "max_iter": cfg.max_iter, "tol": cfg.tol,
                     "solver": cfg.solver, "relax": cfg.relax}

    def drift(self, points: Tensor, old_feats: Tensor, delta: Tensor) -> tuple[Tensor, dict[str, Any]]:
        return ot_drift(points, old_feats, delta, **self.plan)


class LinearMap(Calibration):
    """[beyond the paper] The whole Gaussian through a linear drift map: new ~ A old + b fitted by ridge
    regression on the task's paired features (`drift.fit_linear_drift`, `calibration.linear_ridge`), then
    in closed form mu' = A mu + b and Sigma' = A Sigma A^T (eigenvalues floored at ``min_eig`` x tr/D).
    No sampling and no plan; ``level`` does not apply. A constant drift c gives exactly mu + c, Sigma."""

    def __init__(self, cfg: CalibrationConfig) -> None:
        super().__init__(cfg)
        self.ridge = cfg.linear_ridge

    def moved_means(self, means: Tensor, a: Tensor, b: Tensor, old_feats: Tensor,
                    new_feats: Tensor) -> tuple[Tensor, dict[str, Any]]:
        """The new means (C, D) in means' dtype: A mu + b here."""
        return (means.to(torch.float64) @ a.T + b).to(means.dtype), {}

    def __call__(self, means: Tensor, covs: Tensor, old_feats: Tensor, new_feats: Tensor,
                 generator: torch.Generator | None = None) -> Calibrated:
        check_stats(means, covs)
        check_feats(means, old_feats, new_feats)
        info: dict[str, Any] = {"niter": 0, "err": 0.0, "n_repaired": 0}
        if means.shape[0] == 0:
            return Calibrated(means.clone(), covs.clone(), info)
        a, b = fit_linear_drift(old_feats, new_feats, self.ridge)  # (D, D), (D,)
        moved, solved = self.moved_means(means, a, b, old_feats, new_feats)  # (C, D)
        new_covs, repaired = mapped_covariance(covs, a, self.min_eig)
        return Calibrated(moved, new_covs, {**info, **solved, "n_repaired": repaired})


class OTLinear(LinearMap):
    """[beyond the paper] DMC-OT's class-level transport for the means (each class moves by the OT
    plan's drift of its mean, as `ot` at level "class") and the linear drift map's A for the covariances,
    Sigma' = A Sigma A^T: the means keep the local, class-by-class drift the plan finds, the shapes follow
    the global linear part that a per-class drift cannot carry."""

    def __init__(self, cfg: CalibrationConfig) -> None:
        super().__init__(cfg)
        self.transport = OptimalTransport(cfg)

    def moved_means(self, means: Tensor, a: Tensor, b: Tensor, old_feats: Tensor,
                    new_feats: Tensor) -> tuple[Tensor, dict[str, Any]]:
        drift, solved = self.transport.drift(means, old_feats, new_feats - old_feats)  # (C, D)
        return means + drift, solved


def make_calibration(cfg: CalibrationConfig) -> Calibration:
    """The calibration `cfg.method` names, with its settings."""
    return CALIBRATIONS.get(cfg.method)(cfg)


def calibrate_gaussians(means: Tensor, covs: Tensor, old_feats: Tensor, new_feats: Tensor, cfg: CalibrationConfig,
                        generator: torch.Generator | None) -> Calibrated:
    """Re-align old class Gaussians with the new encoder by the calibration `cfg` describes (one call of
    `make_calibration(cfg)`; see `Calibration` for the shapes)."""
    return make_calibration(cfg)(means, covs, old_feats, new_feats, generator)
