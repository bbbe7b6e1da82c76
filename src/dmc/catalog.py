"""What a run may name, known without loading torch or open_clip: the command line checks a resolved config
here, so a typo in a method, a backbone, a benchmark or its data root costs a fraction of a second instead
of the seconds that importing the engine takes.

The names are the registries' own: the method table (`dmc.config.table`) and `dmc.models.BACKBONES` know
theirs without importing what they name. Benchmarks are checked by building the benchmark itself
(`dmc.data`, which needs no torch): its name, split, class order file and data root.

The lab on top of the library (`dmc.world`: the glyph worlds and the toy CLIP) is known here by where its
parts live, never imported: `register_lab` adds its names, and a run imports the lab only when it names one.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from dmc.config import METHODS, DataConfig, RunConfig, plug
from dmc.data.benchmark import Benchmark, make_benchmark
from dmc.data.sources.base import SOURCES
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


DEFAULT_BENCHMARK = "glyphs"  # what the command line runs when none is named (`dmc run`, `plan`, `sweep`): the lab's
# glyph world, whose preset names the toy CLIP; the library's own default (`benchmark.name`) is a folder of images
LAB = {  # what the lab brings, by where it lives (imported when a run first uses it)
    "benchmark": {"glyphs": "dmc.world.source:GLYPHS", "glyphs-shift": "dmc.world.source:GLYPHS_SHIFT"},
    "backbone": {"toy": "dmc.world.shipped:build_toy_backbone"},
    "data section": {"world": "dmc.world.config:WorldConfig"},
}


def register_lab() -> None:
    """Make the lab's names known: the benchmarks `glyphs` and `glyphs-shift`, the backbone `toy` and the
    section `data.world`. Nothing of `dmc.world` is imported here, so a run that names none of them never
    loads it. The command line calls this (its default run is the glyph world), as do `dmc.load` (a saved
    run may name them) and `import dmc.world`; calling it again changes nothing."""
    for name, target in LAB["benchmark"].items():
        SOURCES.add(name, target)
    for name, target in LAB["backbone"].items():
        BACKBONES.add(name, target)
    for name, target in LAB["data section"].items():
        plug(DataConfig, name, target)
