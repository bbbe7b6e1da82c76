"""Config sections of how the methods learn: replay, the memory (Gaussian statistics, exemplars), drift
calibration (and the calibrations there are), and the own options of the peers RAPF, RanPAC and PROOF."""
from __future__ import annotations

from dataclasses import dataclass

from dmc.config.checks import BadValue, Section, at_least, one_of, positive, stage_epochs
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


@dataclass
class RapfConfig(Section):
    """RAPF's adapter training; replay amount is ``replay.per_class``, statistics follow ``memory``."""

    lr: float = 1e-3  # adapter learning rate (AdamW, cosine) [reconstruction] (RAPF's released configs: Adam 1e-3)
    weight_decay: float = 0.0  # adapter weight decay [reconstruction] (RAPF's released code: 0)
    epochs: int = 15  # passes over the task's cached features [reconstruction] (RAPF's released configs: 15)
    batch_size: int = 100  # real features per step [reconstruction] (RAPF's released CIFAR-100 config: 100)
    hinge: bool = True  # [paper] adaptive representation adjustment: hinge on neighbouring old/new class pairs
    hinge_threshold: float = 0.55  # neighbours if ||t_old - t_new|| < this (unit text embeddings) [reconstruction] (released: CIFAR-100 0.55, ImageNet-R 0.6, set by its preset)
    hinge_margin: float = 0.1  # m: required cos(own text) - cos(neighbour's text) [reconstruction] (released code: 0.1)
    hinge_weight: float = 1.0  # weight of L_hinge next to the cross-entropy [reconstruction] (released code: 1)
    hinge_per_pair: int = 8  # pseudo-features of the old class per neighbour pair per step [reconstruction]
    hinge_pairs: str = "all"  # all (every pair under the threshold) | nearest (old class's nearest new one) [reconstruction]
    fusion: bool = True  # [paper] decomposed parameter fusion of old and new adapter weights after each task
    fusion_bias: float = 0.6  # b in lambda = min(1, Delta/max Delta + b); 1 keeps W_new [reconstruction] (released: CIFAR-100 0.6, ImageNet-R 0.7, set by its preset)

    def check(self) -> None:
        one_of(self, "hinge_pairs", ("all", "nearest"))
        positive(self, "lr")
        at_least(self, 0, "weight_decay", "hinge_threshold", "hinge_weight", "hinge_per_pair", "fusion_bias")
        at_least(self, 1, "batch_size")
        stage_epochs(self, "--method zeroshot")


@dataclass
class RanpacConfig(Section):
    """RanPAC's analytic read-out on frozen features (McDonnell et al., NeurIPS 2023)."""

    dim: int = 5000  # M, random features; the ridge solve is O(M^3) time, M^2 float64 memory (docs/peers.md) [reconstruction] (RanPAC's paper and released configs: 10000 on ViT)
    projection_seed: int | None = None  # seed of the random projection (kept as the seed, not a matrix); None: derived from the run seed
    ridge: float | None = None  # lambda; None: chosen per task on held-out training features, grid 1e-6..1e6 [paper: RanPAC] (released code: 1e-8..1e8)
    holdout: float = 0.2  # [released: RanPAC] share of the task's features held out to choose lambda (its code: 0.2)
    text_weight: float = 0.0  # w: adds w * cos(x, template text) to the ridge scores; 0 = image features only [reconstruction]
    adapt: bool = False  # [paper: RanPAC] first-task adaptation of the image tower (the vision.* recipe against template text), then frozen

    def check(self) -> None:
        at_least(self, 1, "dim")
        positive(self, "ridge")
        at_least(self, 0, "text_weight")
        if not 0.0 < self.holdout < 1.0:
            raise BadValue("holdout", self.holdout, "must be in (0, 1)")


@dataclass
class MemHeadConfig(Section):
    """`dmc-ot-mem` [beyond the paper]: DMC-OT whose Gaussian memory (new classes' exact statistics, old
    classes' calibrated ones) is also a classifier, fused with the text classifier (methods/dmc_mem.py)."""

    kind: str = "t"  # [beyond the paper] qda: each class's own shrunk covariance (FeCAM-style) | t: the same statistics read as Student-t densities (memhead.dof) | lda: one pooled covariance (FSA's head) | none: text only (DMC-OT's classifier); t chosen on validation (v2 and v3, seeds 0-2)
    gamma: float = 0.02  # [beyond the paper] shrinkage toward tr/D * I of the head's covariances, in [0, 1); chosen on validation (v2 and v3, seeds 0-2)
    dof: float = 20.0  # [beyond the paper] degrees of freedom of memhead.kind=t (large: QDA); 10-50 level on validation
    logdet: bool = True  # [beyond the paper] the qda and t heads keep each class's log-determinant (false: the Mahalanobis term only)
    text_weight: float = 64.0  # [beyond the paper] lambda: scores = log_softmax(head) + lambda * cos(x, prompt_c); 0: head only; chosen on validation (v2 and v3, seeds 0-2)
    stage1: str = "every"  # [beyond the paper] when stage 1 adapts the image tower: every task | first (then frozen) | none
    shrink: str = "fixed"  # [beyond the paper] fixed: every class shrunk by memhead.gamma | oas: each class by its OAS intensity from its sample count n_c, D and covariance (discriminant.oas_intensity; memhead.gamma unused)
    head_scale: str = "none"  # [beyond the paper] the head's scores before the fusion: none | dim: divided by D/128, so the fusion's balance does not move with the feature width | std: standardised per image (text_weight then needs choosing again)

    def check(self) -> None:
        one_of(self, "kind", ("qda", "t", "lda", "none"))
        one_of(self, "shrink", ("fixed", "oas"))
        one_of(self, "head_scale", ("none", "dim", "std"))
        if not self.dof > 0:
            raise BadValue("dof", self.dof, "must be > 0")
        one_of(self, "stage1", ("every", "first", "none"))
        at_least(self, 0, "text_weight")
        if not 0.0 <= self.gamma < 1.0:
            raise BadValue("gamma", self.gamma, "must be in [0, 1)")
        if self.kind == "none" and self.text_weight == 0:
            raise BadValue("text_weight", self.text_weight, "memhead.kind=none classifies by text: needs text_weight > 0")


@dataclass
class FsaConfig(Section):
    """FSA's first-session adaptation and LDA head (Panos et al., ICCV 2023)."""

    adapt: bool = True  # [paper: FSA] adapt the image tower on the first task (the vision.* recipe against template text), then freeze it
    gamma: float = 0.01  # [reconstruction] shrinkage of the pooled covariance toward tr/D * I, in [0, 1); chosen on validation (v2 and v3, seeds 0-2; adapt=true also chosen there)

    def check(self) -> None:
        if not 0.0 <= self.gamma < 1.0:
            raise BadValue("gamma", self.gamma, "must be in [0, 1)")


@dataclass
class ProofConfig(Section):
    """PROOF's projections and fusion (Zhou et al., TPAMI 2025); exemplars follow ``memory.exemplar_*``."""

    lr: float = 1e-3  # [released: PROOF] learning rate (exps/*.json: 0.001)
    optimizer: str = "sgd"  # [released: PROOF] sgd (momentum 0.9) | adamw
    weight_decay: float = 0.05  # [released: PROOF]
    epochs: int = 5  # [released: PROOF] passes over the task's data (CIFAR-100 5; ImageNet-R, CUB, UCF 10)
    batch_size: int = 64  # [released: PROOF] (ImageNet-R 48)
    context_per_task: int = 3  # [released: PROOF] learnable context prompts added per task (code default)
    heads: int = 1  # [released: PROOF] attention heads of the fusion layer
    dropout: float = 0.1  # [released: PROOF] dropout of the fusion layer

    def check(self) -> None:
        one_of(self, "optimizer", ("sgd", "adamw"))
        positive(self, "lr")
        at_least(self, 0, "weight_decay", "context_per_task")
        stage_epochs(self, "--method zeroshot")
        at_least(self, 1, "batch_size", "heads")
        if not 0.0 <= self.dropout < 1.0:
            raise BadValue("dropout", self.dropout, "must be in [0, 1)")
