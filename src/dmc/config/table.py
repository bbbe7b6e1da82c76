"""The method table: every method dmc knows, by name, without importing torch.

One line per method says where its class is ("package.module:Class", imported when a run first needs it),
the config section of its own options (plugged into every `RunConfig`, so `--set rapf.lr=1e-4` is checked
before torch loads, saved in config.yaml and read back on --resume), its preset (what the method *is*: keys
of the shared sections, never a learning rate or an epoch count, which are a benchmark's recipe and live in
its preset's `per_method` block) and what `--smoke` shortens in its own section.

The method registry (`dmc.methods.METHODS` is this table), the command line's name check (`dmc.catalog`),
`RunConfig`'s method sections and `config.smoke_settings` all read it. A method outside the package adds
its own line with `METHODS.register` (docs/extending.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from dmc.config.checks import Section, plug
from dmc.config.methods import FsaConfig, MemHeadConfig, ProofConfig, RanpacConfig, RapfConfig
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
BUILTIN = {  # name -> where the class is, its own options, what it is, what --smoke shortens
    "zeroshot": MethodSpec("dmc.methods.baselines:ZeroShot"),  # frozen CLIP, template prompts
    "finetune": MethodSpec("dmc.methods.baselines:Finetune"),  # the image tower, sequentially
    # the upper bound: every class in one task; its glyph-world lr is in configs/benchmarks/glyphs.yaml
    "joint": MethodSpec("dmc.methods.baselines:Joint"),
    "coop": MethodSpec("dmc.methods.baselines:CoOp"),  # sequential task prompts, earlier ones frozen
    # DMC: decoupled two-stage training, Gaussian replay from stored statistics (no calibration)
    "dmc": MethodSpec("dmc.methods.dmc:DMC", preset={"calibration.method": "none", "prompt.task_tokens": 0}),
    # DMC-OT: DMC + OT calibration of old classes' statistics (of the class means, semi-relaxed: see
    # calibration.level / relax) + task-specific prompt tokens, which stage 1's anchors leave out
    "dmc-ot": MethodSpec("dmc.methods.dmc:DMCOT", preset={"calibration.method": "ot", "prompt.task_tokens": 2,
                                                          "vision.anchors": "template"}),
    # [beyond the paper] DMC-OT + a discriminant head on its calibrated Gaussian memory, fused with the text
    # classifier; the paper's DMC-OT is the line above and does not change
    "dmc-ot-mem": MethodSpec("dmc.methods.dmc_mem:DMCOTMem", "memhead", MemHeadConfig,
                             preset={"calibration.method": "ot", "prompt.task_tokens": 2,
                                     "vision.anchors": "template"}),
    # both modalities trained at once (what DMC decouples); everything else as DMC
    "cotrain": MethodSpec("dmc.methods.cotrain:CoTrain", preset={"calibration.method": "none"}),
    # RAPF (ECCV 2024): adapter on a frozen CLIP, Gaussian replay with RAPF's shrinkage and absolute ridge
    "rapf": MethodSpec("dmc.methods.rapf:RAPF", "rapf", RapfConfig, smoke={"epochs": 1},
                       preset={"memory.shrink": True, "memory.relative_ridge": False, "memory.ridge": 1e-4}),
    # RanPAC (NeurIPS 2023): ridge read-out of random ReLU features; G is M x M float64, so every benchmark
    # keeps its last checkpoint only (`per_method` blocks)
    "ranpac": MethodSpec("dmc.methods.ranpac:RanPAC", "ranpac", RanpacConfig),
    # PROOF (TPAMI 2025): projections and fusion on a frozen CLIP, 20 exemplars per class chosen by herding
    "proof": MethodSpec("dmc.methods.proof:Proof", "proof", ProofConfig, smoke={"epochs": 1},
                        preset={"memory.exemplars_per_class": 20, "memory.exemplar_selection": "herding"}),
    # FSA (ICCV 2023): first-session adaptation, then an LDA head on the frozen tower's class statistics
    "fsa": MethodSpec("dmc.methods.fsa:FSA", "fsa", FsaConfig),
    "simplecil": MethodSpec("dmc.methods.simplecil:SimpleCIL"),  # nearest class mean of frozen features
}
for _name, _spec in BUILTIN.items():
    METHODS.add(_name, _spec)
