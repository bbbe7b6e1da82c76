"""The method table: every method dmc knows, by name, with its own options, without importing torch.

One line per method says where its class is ("package.module:Class", imported when a run first needs it),
the config section of its own options (plugged into every `RunConfig`, so `--set rapf.lr=1e-4` is checked
before torch loads, saved in config.yaml and read back on --resume), its preset (what the method *is*: keys
of the shared sections, never a learning rate or an epoch count, which are a benchmark's recipe and live in
its preset's `per_method` block) and what `--smoke` shortens in its own section. A method's options (a
`Section` dataclass) stand right under its line, decorated by it (`METHODS.options`), so that the method's
class and this entry are all there is of a method in the package (docs/extending.md).

The method registry (`dmc.methods.METHODS` is this table), the command line's name check (`dmc.catalog`),
`RunConfig`'s method sections and `config.smoke_settings` all read it. A method outside the package adds
its own line with `METHODS.register` (docs/extending.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from dmc.config.checks import BadValue, Section, at_least, one_of, plug, positive, stage_epochs
from dmc.config.run import RunConfig
from dmc.registry import Registry


@dataclass(frozen=True)
class MethodSpec:
    target: Any  # "package.module:Class", or the class itself (a method registered at run time)
    section: str | None = None  # the name of its own config section, if it has options (`rapf`)
    options: type[Section] | None = None  # that section's class (`RapfConfig`)
    preset: Mapping[str, Any] = field(default_factory=dict)  # "section.field" -> value: what the method is
    smoke: Mapping[str, Any] = field(default_factory=dict)  # field of its own section -> value under --smoke

    def __post_init__(self) -> None:
        if (self.section is None) != (self.options is None):
            raise ValueError("a method's own config section needs both its name and its class")


class MethodTable:
    """The methods by name: their specs, read without torch, and on `get` their classes."""

    def __init__(self) -> None:
        self._specs: dict[str, MethodSpec] = {}
        self._classes: Registry = Registry("method")

    def add(self, name: str, spec: MethodSpec) -> None:
        """One line of the table; the method's own section joins every RunConfig built from now on."""
        self._classes.add(name, spec.target)  # a second, different method under one name is an error
        if spec.section is not None:
            plug(RunConfig, spec.section, spec.options)
        self._specs[name] = spec

    def register(self, name: str, section: str | None = None, options: type[Section] | None = None,
                 preset: Mapping[str, Any] | None = None, smoke: Mapping[str, Any] | None = None) -> Callable:
        """Class decorator: the table line of a method defined outside the package (the class is the target)."""

        def deco(cls: type) -> type:
            self.add(name, MethodSpec(cls, section, options, preset or {}, smoke or {}))
            return cls

        return deco

    def options(self, name: str, target: str, section: str, preset: Mapping[str, Any] | None = None,
                smoke: Mapping[str, Any] | None = None) -> Callable:
        """Class decorator on a method's options: the method's line in the table, its class at `target`
        ("package.module:Class"), its own section `section` of the decorated class."""

        def deco(options: type[Section]) -> type[Section]:
            self.add(name, MethodSpec(target, section, options, preset or {}, smoke or {}))
            return options

        return deco

    def get(self, name: str) -> type:
        """The method's class (its module is imported now); unknown names fail with the list of valid ones."""
        return self._classes.get(name)

    def preset(self, name: str) -> Mapping[str, Any]:
        """What the method is, as "section.field" -> value ({} for a name not in the table)."""
        spec = self._specs.get(name)
        return spec.preset if spec is not None else {}

    def section(self, name: str) -> str | None:
        """The name of the method's own config section (None: it has no options of its own)."""
        spec = self._specs.get(name)
        return spec.section if spec is not None else None

    def smoke(self) -> dict[str, Any]:
        """What `--smoke` sets in the methods' own sections, as "section.field" -> value."""
        return {f"{s.section}.{key}": value for s in self._specs.values() for key, value in s.smoke.items()}

    def names(self) -> list[str]:
        return self._classes.names()

    def __contains__(self, name: str) -> bool:
        return name in self._specs


METHODS = MethodTable()

# ---- the baselines, DMC and its kin (their settings are the shared sections)
METHODS.add("zeroshot", MethodSpec("dmc.methods.baselines:ZeroShot"))  # frozen CLIP, template prompts
METHODS.add("finetune", MethodSpec("dmc.methods.baselines:Finetune"))  # the image tower, sequentially
# the upper bound: every class in one task; its glyph-world lr is in configs/benchmarks/glyphs.yaml
METHODS.add("joint", MethodSpec("dmc.methods.baselines:Joint"))
METHODS.add("coop", MethodSpec("dmc.methods.baselines:CoOp"))  # sequential task prompts, earlier ones frozen
# DMC: decoupled two-stage training, Gaussian replay from stored statistics (no calibration)
METHODS.add("dmc", MethodSpec("dmc.methods.dmc:DMC", preset={"calibration.method": "none", "prompt.task_tokens": 0}))
# DMC-OT: DMC + OT calibration of old classes' statistics (of the class means, semi-relaxed: see
# calibration.level / relax) + task-specific prompt tokens, which stage 1's anchors leave out
DMC_OT = {"calibration.method": "ot", "prompt.task_tokens": 2, "vision.anchors": "template"}
METHODS.add("dmc-ot", MethodSpec("dmc.methods.dmc:DMCOT", preset=DMC_OT))
# both modalities trained at once (what DMC decouples); everything else as DMC
METHODS.add("cotrain", MethodSpec("dmc.methods.cotrain:CoTrain", preset={"calibration.method": "none"}))
METHODS.add("simplecil", MethodSpec("dmc.methods.simplecil:SimpleCIL"))  # nearest class mean of frozen features


# ---- [beyond the paper] DMC-OT + a discriminant head on its calibrated Gaussian memory, fused with the text
# classifier; the paper's DMC-OT is the line above and does not change
@METHODS.options("dmc-ot-mem", "dmc.methods.dmc_mem:DMCOTMem", "memhead", preset=DMC_OT)
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


# ---- RAPF (ECCV 2024): adapter on a frozen CLIP, Gaussian replay with RAPF's shrinkage and absolute ridge
@METHODS.options("rapf", "dmc.methods.rapf:RAPF", "rapf", smoke={"epochs": 1},
                 preset={"memory.shrink": True, "memory.relative_ridge": False, "memory.ridge": 1e-4})
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


# ---- RanPAC (NeurIPS 2023): ridge read-out of random ReLU features; G is M x M float64, so every benchmark
# keeps its last checkpoint only (`per_method` blocks)
@METHODS.options("ranpac", "dmc.methods.ranpac:RanPAC", "ranpac")
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


# ---- PROOF (TPAMI 2025): projections and fusion on a frozen CLIP, 20 exemplars per class chosen by herding
@METHODS.options("proof", "dmc.methods.proof:Proof", "proof", smoke={"epochs": 1},
                 preset={"memory.exemplars_per_class": 20, "memory.exemplar_selection": "herding"})
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


# ---- FSA (ICCV 2023): first-session adaptation, then an LDA head on the frozen tower's class statistics
@METHODS.options("fsa", "dmc.methods.fsa:FSA", "fsa")
@dataclass
class FsaConfig(Section):
    """FSA's first-session adaptation and LDA head (Panos et al., ICCV 2023)."""

    adapt: bool = True  # [paper: FSA] adapt the image tower on the first task (the vision.* recipe against template text), then freeze it
    gamma: float = 0.01  # [reconstruction] shrinkage of the pooled covariance toward tr/D * I, in [0, 1); chosen on validation (v2 and v3, seeds 0-2; adapt=true also chosen there)

    def check(self) -> None:
        if not 0.0 <= self.gamma < 1.0:
            raise BadValue("gamma", self.gamma, "must be in [0, 1)")
