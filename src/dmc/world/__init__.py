"""The lab on top of the library: the offline glyph world (`glyphs`, `glyphs-shift`: rendering, the benchmark
sources and their settings `data.world`), the toy CLIP that knows it (`toy`, `pretrain`, `shipped`), and what
measures the world (`regime`: the regime and ceiling tables), with their commands (`commands`: `dmc world`,
`dmc pretrain-toy`).

The library never imports this package; it knows the lab's names by where they live (`dmc.catalog.LAB`).
The command line registers them (`dmc.catalog.register_lab`), so the default `dmc run` (glyphs, toy) needs no
flag; importing this package registers them too, for code that uses the lab without the command line.
"""
from dmc.catalog import register_lab

register_lab()
