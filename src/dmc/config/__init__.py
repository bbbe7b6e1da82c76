"""Run configuration: dataclass sections, YAML presets, typed `--set key.path=value` overrides.

The config owns the description of every section (fields, defaults, provenance, accepted values) and
imports nothing of the library above it, so methods, the loop and the CLI can all take a `RunConfig`.
"""
from dmc.config.checks import BadValue, Section
from dmc.config.data import BenchmarkConfig, DataConfig, WorldConfig
from dmc.config.methods import (SOLVERS, CalibrationConfig, DmcConfig, MemoryConfig, ProofConfig, RanpacConfig,
                                RapfConfig, ReplayConfig)
from dmc.config.model import ModelConfig, PromptConfig, VisionConfig
from dmc.config.resolve import (
    SMOKE, add_provenance, apply_dict, load, parse_set, resolve, save, saved_tree, set_key, to_dict, validate,
)
from dmc.config.run import CheckpointConfig, DiagnosticsConfig, EvalConfig, RunConfig

__all__ = [
    "SMOKE", "SOLVERS", "BadValue", "BenchmarkConfig", "CalibrationConfig", "CheckpointConfig", "DataConfig",
    "DiagnosticsConfig", "DmcConfig", "EvalConfig", "MemoryConfig", "ModelConfig", "PromptConfig",
    "ProofConfig", "RanpacConfig", "RapfConfig", "ReplayConfig", "RunConfig", "Section", "VisionConfig",
    "WorldConfig", "add_provenance", "apply_dict", "load", "parse_set", "resolve", "save", "saved_tree", "set_key", "to_dict",
    "validate",
]
