"""Config sections that several methods share: replay, the memory (Gaussian statistics, exemplars), drift
calibration (and the calibrations there are). A method's own options are beside its line in the method
table (`dmc.config.table`)."""
from __future__ import annotations

from dataclasses import dataclass

from dmc.config.checks import BadValue, Section, at_least, one_of, positive
from dmc.registry import Registry

SOLVERS = ("sinkhorn", "sinkhorn_log")  # POT's entropic OT methods that calibration may use
SCALING_MIN_REG = 0.02  # below it, exp(-cost/reg) (cost <= 1) may underflow: use "sinkhorn_log"


@dataclass
class ReplayConfig(Section):
    enabled: bool = True  # [paper] replay old classes from Gaussian statistics (ablation "replay off")
    per_class: int = 4  # [reconstruction] pseudo-features per old class in each step

    def check(self) -> None:
        at_least(self, 0, "per_class")


@dataclass
class MemoryConfig(Section):
    """How class statistics are estimated (S = unbiased empirical covariance, then shrink, then ridge), and
    how many training images a method that replays images (``uses_exemplars``) keeps.

    A class with fewer samples than feature dimensions (CUB: ~30 images, D = 512) has a rank-deficient S;
    the ridge alone keeps it positive definite but leaves a condition number near 1e5. `shrink_few` (on by
    default, for every method) shrinks exactly those classes (memory/gaussian.py: `oas_shrink`)."""

    covariance: str = "full"  # [reconstruction] full: (D, D) Sigma | diag: (D,) variances, 1/D of the memory
    ridge: float = 1e-4  # [reconstruction] eps of the ridge eps*tau*I; keeps classes with N < D positive definite
    relative_ridge: bool = True  # [reconstruction] tau = mean variance tr/D (scale-free); false: tau = 1 (RAPF)
    shrink: bool = False  # [reconstruction] RAPF's shrinkage toward mean diagonal / off-diagonal values
    shrink_few: bool = True  # [reconstruction] classes with N <= D samples: OAS shrinkage toward tr/D*I (full covariance; unless `shrink`)
    shrink_diag: float = 1.0  # [reconstruction] alpha0, weight of mean(diag S)*I (RAPF's code: 1)
    shrink_offdiag: float = 1.0  # [reconstruction] alpha1, weight of mean(offdiag S)*(1 - I) (RAPF: 1; <= alpha0)
    normalize: bool = False  # [reconstruction] L2-normalise features before fitting (METHOD.md: unnormalised)
    exemplars_per_class: int = 0  # training images kept per class, as row indices (methods that replay images; PROOF's preset: 20)
    exemplar_selection: str = "herding"  # herding (iCaRL / PyCIL: running mean closest to the class mean) | random
    exemplar_budget: int | None = None  # total images shared by the seen classes, older ones cut to their best rows (PyCIL's fixed_memory=false); None: exemplars_per_class each

    def check(self) -> None:
        one_of(self, "covariance", ("full", "diag"))
        one_of(self, "exemplar_selection", ("herding", "random"))
        positive(self, "ridge")  # keeps covariances positive definite
        at_least(self, 0, "shrink_diag", "shrink_offdiag", "exemplars_per_class")
        at_least(self, 1, "exemplar_budget")


def check_solver(solver: str, reg: float) -> None:
    """Raise BadValue unless `solver` is one of SOLVERS and safe at entropic regularisation `reg`."""
    if solver not in SOLVERS:
        raise BadValue("solver", solver, f"choose one of: {', '.join(SOLVERS)}")
    if reg <= 0:
        raise BadValue("reg", reg, "must be > 0")
    if solver == "sinkhorn" and reg < SCALING_MIN_REG:
        raise BadValue("reg", reg, f"solver 'sinkhorn' needs reg >= {SCALING_MIN_REG} (underflow); "
                                   "use 'sinkhorn_log'")


# The calibrations, by name (`calibration.method`): strategies in dmc.calibration, imported on first use, so
# that a name is checked here without torch. Each is built from a CalibrationConfig.
CALIBRATIONS: Registry = Registry("calibration")
CALIBRATIONS.add("none", "dmc.calibration.calibrate:NoCalibration")  # DMC: the statistics as stored
CALIBRATIONS.add("mean-shift", "dmc.calibration.calibrate:MeanShift")  # SDC's kernel-weighted drift
CALIBRATIONS.add("ot", "dmc.calibration.calibrate:OptimalTransport")  # DMC-OT (a): the OT plan's drift
CALIBRATIONS.add("linear", "dmc.calibration.calibrate:LinearMap")  # [beyond the paper] ridge affine map: means and covariances
CALIBRATIONS.add("ot+linear", "dmc.calibration.calibrate:OTLinear")  # [beyond the paper] OT's means, the linear map's covariances


@dataclass
class CalibrationConfig(Section):
    """How stored Gaussians follow the encoder's drift (DMC-OT (a) is ``[paper]``; its form is ours)."""

    method: str = "ot"  # [paper: DMC-OT (a)] none (DMC, stats as stored) | mean-shift (SDC-style) | ot | linear (beyond the paper: b = A a + b0 fitted on the task's paired features, mu' = A mu + b0, Sigma' = A Sigma A^T) | ot+linear (beyond the paper: OT's class-level means, the linear map's covariances)
    samples_per_class: int = 256  # [reconstruction] S samples per old class that carry the drift (>= 2)
    reg: float = 0.05  # [reconstruction] entropic epsilon, relative to the cost scaled to max 1
    sigma: float = 0.2  # [reconstruction] mean-shift kernel width, in (by default L2-normalised) feature units
    max_iter: int = 1000  # [reconstruction] Sinkhorn iteration cap
    tol: float = 1e-2  # [reconstruction] Sinkhorn stop: column-marginal L2 error relative to ||1/N||_2
    solver: str = "sinkhorn"  # [reconstruction] POT method: sinkhorn (scaling; reg >= 0.02) | sinkhorn_log
    normalize_cost: bool = True  # [reconstruction] OT cost and mean-shift kernel on L2-normalised features
    level: str = "class"  # [reconstruction] class (the class means are transported: one drift per class, covariance kept; measured, docs/results.md) | sample (S samples per class)
    relax: float | None = 0.03  # None: balanced OT; a float: column marginal as a KL penalty of this weight (semi-relaxed OT) [reconstruction]
    min_eig: float = 5e-5  # [reconstruction] eigenvalue floor (x tr/D) for calibrated covariances; half the ridge
    linear_ridge: float = 0.1  # [beyond the paper] ridge of the linear / ot+linear drift map toward A = I, relative to the old features' mean variance x N (scale-free); larger: closer to a pure shift

    def check(self) -> None:
        one_of(self, "method", tuple(CALIBRATIONS))
        one_of(self, "level", ("sample", "class"))
        check_solver(self.solver, self.reg)
        at_least(self, 2, "samples_per_class")  # a covariance change needs two samples
        at_least(self, 1, "max_iter")
        positive(self, "sigma", "tol", "min_eig", "relax", "linear_ridge")
