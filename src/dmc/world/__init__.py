"""The lab on top of the library: the offline glyph world (`glyphs`, `glyphs-shift`: rendering, the benchmark
sources and their settings `data.world`), the toy CLIP that knows it (`toy`, `pretrain`, `shipped`), and what measures
the world (`regime`: the regime and ceiling tables), with their commands (`commands`: `dmc world`,
`dmc pretrain-toy`).

The library core never imports this package. Importing it registers what it brings, by name only (nothing
heavy loads here): the benchmarks `glyphs` and `glyphs-shift`, the backbone `toy` and the config section `data.world`. The
package root `dmc` imports it, so the default `dmc run` (glyphs, toy) works with no flag.
"""
from dmc.data.sources.base import SOURCES
from dmc.models import BACKBONES
from dmc.world import config  # noqa: F401  (plugs `data.world` into DataConfig)

SOURCES.add("glyphs", "dmc.world.source:GLYPHS")
SOURCES.add("glyphs-shift", "dmc.world.source:GLYPHS_SHIFT")
BACKBONES.add("toy", "dmc.world.shipped:build_toy_backbone")
