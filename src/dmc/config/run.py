"""The whole run's config: every shared section, in the order a run is resolved; each method's own options
join it from the method table (`dmc.config.table`)."""
from __future__ import annotations

from dataclasses import dataclass, field

from dmc.config.checks import Section, at_least, one_of
from dmc.config.data import BenchmarkConfig, DataConfig
from dmc.config.methods import CalibrationConfig, MemoryConfig, ReplayConfig
from dmc.config.model import ModelConfig, PromptConfig, VisionConfig


@dataclass
class DiagnosticsConfig(Section):
    drift: bool = False  # measure drift of stored vs calibrated statistics (held-out old data, never trained on)
    oracle_stats: bool = False  # replace old classes' statistics by the true ones under the current encoder (uses old training images: the calibration ceiling, a diagnostic, never a method)
    head_stats: bool = False  # after each task, score the evaluated images with dmc-ot-mem's head under old classes' statistics stored / means-only OT / linear map / OT + linear map / oracle (metrics line `head_stats`; changes nothing trained or predicted)


@dataclass
class CheckpointConfig(Section):
    keep: str = "all"  # all (one per task) | last

    def check(self) -> None:
        one_of(self, "keep", ("all", "last"))


@dataclass
class EvalConfig(Section):
    batch_size: int = 256
    split: str = "test"  # test | val: the held-out share of the training images (needs benchmark.val_fraction > 0); choose settings on val, report test

    def check(self) -> None:
        at_least(self, 1, "batch_size")
        one_of(self, "split", ("test", "val"))


@dataclass
class RunConfig(Section):
    """Fields in the order a run is resolved: the seed; the benchmark and what its preset sets (data,
    model); the method and the shared sections that method presets tune; the harness around every method.
    Then, in `plugged`, the own options of every method in the method table (`cfg.rapf`, `cfg.proof`, ...),
    read as attributes like the fields above: a method brings its section without this file naming it."""

    seed: int = 1993  # seeds everything (class order too unless benchmark.order_seed is set)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: str = "dmc-ot"  # the default `dmc run`: DMC-OT
    vision: VisionConfig = field(default_factory=VisionConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    plugged: dict[str, Section] = field(default_factory=dict)  # each method's own options, by section name
