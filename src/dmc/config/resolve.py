"""Resolving a run's config: YAML presets, typed `--set key.path=value` overrides, checks, files.

Resolution order (later wins): dataclass defaults -> method preset (its line in the method table,
`dmc.config.table`) -> benchmark preset -> the benchmark preset's `per_method.<method>` block -> `--smoke`
-> CLI flags -> `--set` overrides. Every section's checks then run on the final values.

Why the benchmark preset comes after the method preset: a method preset says what the method *is*
(calibration off for DMC, RAPF's shrinkage) and holds no learning rate or epoch count; the benchmark preset
states the recipe for its backbone and data, and a method's recipe on one benchmark goes in that
benchmark's `per_method` block. So a generic method preset can never override the recipe of a real
benchmark (tests/test_presets.py pins the resolved rates and epochs of every pair). The resolved config is saved
in every run directory, so a run can be repeated from its `config.yaml` alone.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dmc import yamlio
from dmc.config.checks import BadValue, fields_of, lazy_plugs
from dmc.config.run import RunConfig
from dmc.config.table import METHODS
from dmc.errors import UserError
from dmc.files import write_text

SMOKE = {  # --smoke in the shared sections; each method's own section says its part in the method table
    "benchmark.max_tasks": 3,
    "benchmark.train_per_class": 8,
    "benchmark.test_per_class": 4,
    "vision.epochs": 1,
    "prompt.epochs": 1,
}


def smoke_settings() -> dict[str, Any]:
    """Everything `--smoke` sets: 3 tasks, few images, one epoch per stage of every method."""
    return {**SMOKE, **METHODS.smoke()}


# --------------------------------------------------------------------------- typed updates
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
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "1e-5" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):  # nan or inf would pass every `>` check and break a run much later
                raise UserError(f"bad value for {key}: {value!r}; must be a finite number")
            return number
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
        if part in lazy_plugs(obj):
            getattr(obj, part)  # a section plugged by name joins the config when it is set
        types_ = fields_of(obj)
        if part not in types_:
            where = ".".join(parts[:i]) or "the config"
            valid = ", ".join(sorted([*types_, *lazy_plugs(obj)]))
            raise UserError(f"unknown config key {key!r}: {where} has {valid}")
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(getattr(obj, part)):
                raise UserError(f"config key {key!r} is a section; set one of its fields")
            setattr(obj, part, _coerce(value, types_[part], key))
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
        value = yamlio.loads(raw, f"--set {key.strip()}") if raw.strip() else ""
    except yamlio.YAMLRefused:
        raise
    except UserError:  # not YAML: the text itself
        value = raw
    return key.strip(), value


# --------------------------------------------------------------------------- presets and files
def _preset(kind: str, name: str) -> dict[str, Any]:
    """A preset's tree ({} if there is none). `extends: BASE` starts from configs/bases/BASE.yaml, which
    the preset's own keys then override, field by field, so presets that share a recipe state it once."""
    path = resources.files("dmc") / "configs" / kind / f"{name}.yaml"
    if not path.is_file():
        return {}
    tree = yamlio.loads(path.read_text(encoding="utf-8"), f"preset {kind}/{name}") or {}
    base = tree.pop("extends", None)
    if base is None:
        return tree
    if not (resources.files("dmc") / "configs" / "bases" / f"{base}.yaml").is_file():
        raise UserError(f"preset {kind}/{name} extends {base!r}, which is not in configs/bases/")
    return _merge(_preset("bases", base), tree)


def _benchmark_preset(name: str, backbone: str | None) -> dict[str, Any]:
    """The benchmark preset's tree. A `backbone` given on the command line that is not the one the preset
    names brings its own model choice: the preset's `model.backbone` and `model.pretrained` are dropped
    (the backbone's default weights apply unless `--set model.pretrained` says otherwise) and the preset's
    base recipe (`extends`) is replaced by that backbone's (the base that names it), or by none: the
    defaults of the config, which are the toy CLIP's recipe. The preset's own keys (its split, its
    per-dataset settings) still apply."""
    path = resources.files("dmc") / "configs" / "benchmarks" / f"{name}.yaml"
    if backbone is None or not path.is_file():
        return _preset("benchmarks", name)
    tree = yamlio.loads(path.read_text(encoding="utf-8"), f"preset benchmarks/{name}") or {}
    named = _preset("benchmarks", name).get("model", {}).get("backbone")
    if backbone == named:
        return _preset("benchmarks", name)
    tree.pop("extends", None)
    model = {k: v for k, v in (tree.pop("model", None) or {}).items() if k not in ("backbone", "pretrained")}
    tree = {**tree, "model": model} if model else tree
    base = next((p.name.removesuffix(".yaml") for p in (resources.files("dmc") / "configs" / "bases").iterdir()
                 if p.name.endswith(".yaml") and _preset("bases", p.name.removesuffix(".yaml"))
                 .get("model", {}).get("backbone") == backbone), None)
    return _merge(_preset("bases", base), tree) if base else tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`base` with `over` on top; nested mappings are merged key by key rather than replaced."""
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both else value
    return out


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
    bench_preset = _benchmark_preset(cfg.benchmark.name, (overrides or {}).get("model.backbone"))
    per_method = bench_preset.pop("per_method", {}) or {}
    for key, value in METHODS.preset(cfg.method).items():
        set_key(cfg, key, value)
    apply_dict(cfg, bench_preset)
    apply_dict(cfg, per_method.get(cfg.method, {}))
    if smoke:
        for key, value in smoke_settings().items():
            set_key(cfg, key, value)
    for key, value in (overrides or {}).items():
        set_key(cfg, key, value)
    for item in sets or []:
        set_key(cfg, *parse_set(item))
    validate(cfg)
    _absolute_paths(cfg)
    return cfg


def _absolute_paths(cfg: RunConfig) -> None:
    """Files and folders named relative to the working directory are stored as absolute paths, so the
    saved config means the same from anywhere (`--resume` from another folder, a sweep's child runs)."""
    for section, name in ((cfg.benchmark, "order_file"), (cfg.data, "split_file"), (cfg.data, "root")):
        value = getattr(section, name)
        if value:
            setattr(section, name, os.path.abspath(os.path.expanduser(value)))
    weights = cfg.model.pretrained  # a tag (openai) or a weights file
    if weights and os.path.isfile(os.path.expanduser(weights)):
        cfg.model.pretrained = os.path.abspath(os.path.expanduser(weights))


SEED_RANGE = 2**32  # numpy's seeds (PyCIL's class order) are 32-bit: 0 <= seed < 2**32


def validate(cfg: Any, path: str = "") -> None:
    """Run every section's `check` on the final values (nested sections too); the error names the key.
    Every seed (`seed`, `*_seed`) is checked here too, once for all sections."""
    for name in fields_of(cfg):
        section = getattr(cfg, name)
        if (name == "seed" or name.endswith("_seed")) and isinstance(section, int):
            if not 0 <= section < SEED_RANGE:
                raise UserError(f"bad value for {path}{name}: {section}; seeds are whole numbers in [0, 2**32)")
        if not dataclasses.is_dataclass(section):
            continue
        try:
            section.check()
        except BadValue as exc:
            raise exc.under(path + name) from None
        validate(section, f"{path}{name}.")


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The config as nested mappings, plugged sections included (what config.yaml holds)."""
    return _tree(cfg)


def _tree(section: Any) -> dict[str, Any]:
    """A section as a mapping, its sub-sections (plugged ones too) as mappings in turn."""
    out = {}
    for name in fields_of(section):
        value = getattr(section, name)
        out[name] = _tree(value) if dataclasses.is_dataclass(value) else copy.deepcopy(value)
    return out


def save(cfg: RunConfig, path: Path, provenance: dict[str, Any] | None = None) -> None:
    """Write the resolved config; `provenance` (e.g. the glyph world's font files and hashes) is recorded
    under its own key, which `load` ignores."""
    tree = to_dict(cfg)
    if provenance:
        tree["provenance"] = provenance
    write_text(path, yaml.safe_dump(tree, sort_keys=False, allow_unicode=True))


def saved_tree(path: Path) -> dict[str, Any]:
    """The values a saved `config.yaml` holds (its provenance left out): what a run directory's digest is
    taken of, so that a field added to the config later does not make older runs look edited."""
    tree = yamlio.read(path, f"config {path}") or {}
    if not isinstance(tree, dict):
        raise UserError(f"cannot read config {path}: not a mapping of sections")
    tree.pop("provenance", None)
    return tree


def upgrade(tree: dict[str, Any]) -> dict[str, Any]:
    """A saved config tree in today's keys. `dmc.decoupled` was the co-training switch before `cotrain`
    became a method of its own: runs written then (decoupled for dmc / dmc-ot, not for cotrain) read on."""
    section = tree.get("dmc")
    if isinstance(section, dict) and "decoupled" in section:
        decoupled = section.pop("decoupled")
        if decoupled is not (tree.get("method") != "cotrain"):
            raise UserError(f"this run sets dmc.decoupled={decoupled} with method {tree.get('method')!r}, which "
                            "today's dmc cannot repeat (co-training is `--method cotrain`)")
        if not section:
            tree.pop("dmc")
    return tree


def load(path: Path) -> RunConfig:
    """Read a saved `config.yaml` back (unknown keys are errors, so a stale file says so; keys renamed
    since are read as today's, `upgrade`)."""
    tree = upgrade(saved_tree(path))
    cfg = RunConfig()
    apply_dict(cfg, tree)
    validate(cfg)
    return cfg
