"""What a run may name, known without loading torch or open_clip: the command line checks a resolved config
here, so a typo in a method, a backbone, a benchmark or its data root costs a fraction of a second instead
of the seconds that importing the engine takes.

The names are the registries' own: the method table (`dmc.config.table`) and `dmc.models.BACKBONES` know
theirs without importing what they name. Benchmarks are checked by building the benchmark itself
(`dmc.data`, which needs no torch): its name, split, class order file and data root.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from dmc.config import METHODS, RunConfig
from dmc.data.benchmark import Benchmark, make_benchmark
from dmc.errors import UserError
from dmc.models import BACKBONES


def open_clip_models() -> set[str] | None:
    """The model names open_clip knows (its bundled model configs), read without importing it; None when
    they cannot be found (the backbone is then checked when it is built)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model_configs"
    names = {p.stem for p in folder.glob("*.json")}
    return names or None


def check_method(name: str) -> None:
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; choose one of: {', '.join(METHODS.names())}")


def check_backbone(name: str) -> None:
    known = open_clip_models()
    if name in BACKBONES or known is None or name in known:
        return
    own = ", ".join(n for n in BACKBONES.names() if n not in known)
    raise UserError(f"unknown backbone {name!r}; choose {own} or an open_clip model name "
                    f"(open_clip lists {len(known)}, e.g. ViT-B-16, ViT-L-14)")


def check(cfg: RunConfig) -> Benchmark:
    """Everything about a resolved config that can be checked before the engine loads: method, backbone,
    and the benchmark with its split, class order and data root (one line, exit 2, as any config error).
    Returns the benchmark, which the run then uses (it is built once)."""
    check_method(cfg.method)
    check_backbone(cfg.model.backbone)
    return make_benchmark(cfg, cfg.seed)
