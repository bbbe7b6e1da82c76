"""Run configuration: dataclass sections, YAML presets, typed `--set key.path=value` overrides.

The config owns the description of every section (fields, defaults, provenance, accepted values) and the
method table (`table.py`: each method's class, own section and preset), and imports nothing of the library
above it, so methods, the loop and the CLI can all take a `RunConfig`, and a name or a value is checked
before torch loads.
"""
from dmc.config.checks import BadValue, Section, fields_of, lazy_plugs, plug
from dmc.config.data import BenchmarkConfig, DataConfig
from dmc.config.methods import CALIBRATIONS, SOLVERS, CalibrationConfig, MemoryConfig, ReplayConfig
from dmc.config.model import ModelConfig, PromptConfig, VisionConfig
from dmc.config.resolve import (
    SMOKE, apply_dict, load, parse_set, resolve, save, saved_tree, set_key, smoke_settings, to_dict,
    validate,
)
from dmc.config.run import CheckpointConfig, DiagnosticsConfig, EvalConfig, RunConfig
from dmc.config.table import METHODS, FsaConfig, MemHeadConfig, MethodSpec, ProofConfig, RanpacConfig, RapfConfig

__all__ = [
    "CALIBRATIONS", "METHODS", "SMOKE", "SOLVERS", "BadValue", "BenchmarkConfig", "CalibrationConfig",
    "CheckpointConfig", "DataConfig", "DiagnosticsConfig", "EvalConfig", "FsaConfig", "MemHeadConfig", "MemoryConfig",
    "MethodSpec", "ModelConfig", "PromptConfig", "ProofConfig", "RanpacConfig", "RapfConfig", "ReplayConfig",
    "RunConfig", "Section", "VisionConfig", "apply_dict", "fields_of", "lazy_plugs", "load", "parse_set", "plug",
    "resolve", "save", "saved_tree", "set_key", "smoke_settings", "to_dict", "validate",
]
