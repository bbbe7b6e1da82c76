"""Run configuration: dataclass sections, YAML presets, typed `--set key.path=value` overrides.

Resolution order (later wins): dataclass defaults -> benchmark preset -> method preset -> the benchmark
preset's `per_method.<method>` block -> CLI flags -> `--set` overrides. The resolved config is saved in
every run directory, so a run can be repeated from its `config.yaml` alone.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dmc.calibration import CalibrationConfig
from dmc.data.sources.base import DataConfig
from dmc.errors import UserError
from dmc.files import write_text
from dmc.memory.gaussian import MemoryConfig
from dmc.methods.rapf import RapfConfig


@dataclass
class BenchmarkConfig:
    name: str = "glyphs"  # registered benchmark (`dmc list`)
    base: int | None = None  # classes in the first task; None: the benchmark's default (0 = same as increment)
    increment: int | None = None  # classes per later task; None: the benchmark's default
    order_file: str | None = None  # YAML/JSON list of native class ids; None: seeded permutation
    order_seed: int | None = None  # seed of the permutation; None: the run seed (PyCIL: 1993)
    max_tasks: int | None = None  # stop after this many tasks (smoke runs)
    train_per_class: int | None = None  # keep at most this many training images per class (smoke runs)
    test_per_class: int | None = None  # keep at most this many test images per class (smoke runs)


@dataclass
class ModelConfig:
    backbone: str = "toy"  # `tiny`, `toy`, or any open_clip model name (e.g. ViT-B-16)
    pretrained: str | None = None  # open_clip pretrained tag; None: the backbone's default (ViT-B-16: openai)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16


@dataclass
class VisionConfig:
    """Stage 1 of DMC and the vision side of `finetune` / `cotrain` / `joint`."""

    enabled: bool = True  # [reconstruction] DMC stage 1 on/off (ablation "stage 1 off")
    trainable: str = "all"  # [reconstruction] all (blocks+ln_post+proj) | last-K | full (incl. patch embed)
    lr: float = 3e-5  # [reconstruction] AdamW learning rate; gentle, chosen by measurement (docs/results.md)
    weight_decay: float = 0.01  # [reconstruction]
    epochs: int = 5  # [reconstruction]
    batch_size: int = 64  # [reconstruction]
    loss_scope: str = "task"  # [reconstruction] task (CE over C_t, measured best) / seen (over all seen classes)
    anchors: str = "prompts"  # [reconstruction] prompts (current prompt learner) | template


@dataclass
class PromptConfig:
    """Stage 2 of DMC, `coop`, `cotrain`: CoOp-style soft prompts."""

    enabled: bool = True  # [reconstruction] DMC stage 2 on/off (ablation "stage 2 off")
    n_ctx: int | None = None  # [reconstruction] shared context tokens; None: the template prefix's length
    init: str = "template"  # [reconstruction] template (word embeddings of the template prefix) | random
    task_tokens: int = 0  # [paper: DMC-OT (b)] learnable tokens per task before the context; 0 = off
    lr: float = 2e-3  # [reconstruction] Adam learning rate
    epochs: int = 5  # [reconstruction] passes over the task's cached features
    batch_size: int = 64  # [reconstruction] real features per step
    views: int = 1  # [reconstruction] cached views per image (>1 adds augmented views)


@dataclass
class ReplayConfig:
    enabled: bool = True  # [paper] replay old classes from Gaussian statistics (ablation "replay off")
    per_class: int = 4  # [reconstruction] pseudo-features per old class in each step


@dataclass
class DmcConfig:
    decoupled: bool = True  # [paper] stage 1 (vision, text frozen) then stage 2 (prompts, vision frozen)


@dataclass
class DiagnosticsConfig:
    drift: bool = False  # measure drift of stored vs calibrated statistics (held-out old data, never trained on)


@dataclass
class CheckpointConfig:
    keep: str = "all"  # all (one per task) | last


@dataclass
class EvalConfig:
    batch_size: int = 256


@dataclass
class RunConfig:
    method: str = "dmc-ot"  # the default `dmc run`: DMC-OT
    seed: int = 1993  # seeds everything (class order too unless benchmark.order_seed is set)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    dmc: DmcConfig = field(default_factory=DmcConfig)
    rapf: RapfConfig = field(default_factory=RapfConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


CHOICES = {
    "vision.loss_scope": ("seen", "task"),
    "vision.anchors": ("prompts", "template"),
    "prompt.init": ("template", "random"),
    "checkpoint.keep": ("all", "last"),
    "model.precision": ("auto", "fp32", "bf16"),
}

SMOKE = {
    "benchmark.max_tasks": 3,
    "benchmark.train_per_class": 8,
    "benchmark.test_per_class": 4,
    "vision.epochs": 1,
    "prompt.epochs": 1,
    "rapf.epochs": 1,
}


# --------------------------------------------------------------------------- typed updates
def _field_types(obj: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(type(obj))
    return {f.name: hints[f.name] for f in dataclasses.fields(obj)}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert a YAML value to the annotated field type; one clear error naming the key."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif origin is list:
        if isinstance(value, list):
            return value
    else:
        return value
    name = getattr(tp, "__name__", str(tp))
    raise UserError(f"bad value for {key}: {value!r} is not a {name}")


def set_key(cfg: RunConfig, key: str, value: Any) -> None:
    """Set a dotted key (e.g. `vision.lr`) with type checking."""
    obj: Any = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        types_ = _field_types(obj)
        if part not in types_:
            where = ".".join(parts[:i]) or "the config"
            valid = ", ".join(sorted(types_))
            raise UserError(f"unknown config key {key!r}: {where} has {valid}")
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(getattr(obj, part)):
                raise UserError(f"config key {key!r} is a section; set one of its fields")
            value = _coerce(value, types_[part], key)
            if key in CHOICES and value not in CHOICES[key]:
                raise UserError(f"bad value for {key}: {value!r}; choose one of: {', '.join(CHOICES[key])}")
            setattr(obj, part, value)
        else:
            obj = getattr(obj, part)
            if not dataclasses.is_dataclass(obj):
                raise UserError(f"unknown config key {key!r}: {'.'.join(parts[: i + 1])} is a value")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def apply_dict(cfg: RunConfig, tree: dict[str, Any]) -> None:
    for key, value in flatten(tree).items():
        set_key(cfg, key, value)


def parse_set(item: str) -> tuple[str, Any]:
    """`key.path=value` -> (key, typed value); the value is read as YAML (1e-3, true, null, [1, 2])."""
    if "=" not in item:
        raise UserError(f"--set expects key.path=value, got {item!r}")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


# --------------------------------------------------------------------------- presets and files
def _preset(kind: str, name: str) -> dict[str, Any]:
    path = resources.files("dmc") / "configs" / kind / f"{name}.yaml"
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text()) or {}


def resolve(
    benchmark: str | None = None,
    method: str | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | None = None,
    smoke: bool = False,
) -> RunConfig:
    """Build the resolved config for a run (see module docstring for the order)."""
    cfg = RunConfig()
    if benchmark is not None:
        cfg.benchmark.name = benchmark
    if method is not None:
        cfg.method = method
    bench_preset = _preset("benchmarks", cfg.benchmark.name)
    per_method = bench_preset.pop("per_method", {}) or {}
    apply_dict(cfg, bench_preset)
    apply_dict(cfg, _preset("methods", cfg.method))
    apply_dict(cfg, per_method.get(cfg.method, {}))
    if smoke:
        for key, value in SMOKE.items():
            set_key(cfg, key, value)
    for key, value in (overrides or {}).items():
        set_key(cfg, key, value)
    for item in sets or []:
        set_key(cfg, *parse_set(item))
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Re-run each section's own checks (`__post_init__`) on the final values; errors name the section."""
    for f in dataclasses.fields(cfg):
        section = getattr(cfg, f.name)
        check = getattr(section, "__post_init__", None)
        if dataclasses.is_dataclass(section) and check is not None:
            try:
                check()
            except ValueError as exc:
                raise UserError(f"bad value in {f.name}: {exc}") from None


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save(cfg: RunConfig, path: Path, provenance: dict[str, Any] | None = None) -> None:
    """Write the resolved config; `provenance` (e.g. the glyph world's font files and hashes) is recorded
    under its own key, which `load` ignores."""
    tree = to_dict(cfg)
    if provenance:
        tree["provenance"] = provenance
    write_text(path, yaml.safe_dump(tree, sort_keys=False, allow_unicode=True))


def load(path: Path) -> RunConfig:
    """Read a saved `config.yaml` back (unknown keys are errors, so a stale file says so)."""
    try:
        tree = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read config {path}: {exc}") from None
    tree.pop("provenance", None)
    cfg = RunConfig()
    apply_dict(cfg, tree)
    validate(cfg)
    return cfg
