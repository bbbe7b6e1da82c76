"""Benchmark `glyphs`: 100 character classes as renditions (the offline stand-in for ImageNet-R).

Images are generated from `data.world` (`dmc.world.config`), so the benchmark needs no root folder and no
download; the rendered arrays are cached in `dmc.world.glyphs.cache_dir()`. `dmc.world` registers it.
"""
from __future__ import annotations

from dmc.config import DataConfig
from dmc.data.sources.base import Samples
from dmc.errors import DataError
from dmc.world import glyphs


class GlyphSource:
    name = "glyphs"
    template = "a rendering of the {}."
    default_base = 0
    default_increment = 10
    needs_root = False

    def class_names(self, data: DataConfig) -> list[str]:
        return glyphs.class_names()

    def provenance(self, data: DataConfig) -> dict:
        """What the run config records: the font files (name + sha256) each domain was rendered from."""
        return {"fonts": glyphs.font_manifest(data.world.system_fonts)}

    def load(self, data: DataConfig, split: str) -> Samples:
        """Renditions of all 100 classes: uint8 (N, 32, 32, 3) items and native ids as targets."""
        if split not in ("train", "test"):
            raise DataError(f"glyphs: split must be 'train' or 'test', got {split!r}")
        try:
            images, targets = glyphs.renditions_split(data.world, split)
        except FileNotFoundError as err:
            raise DataError(f"glyphs: {err}") from err
        return Samples(items=images, targets=targets)


GLYPHS = GlyphSource()
