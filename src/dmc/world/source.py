"""Benchmarks `glyphs`: 100 character classes as renditions (the offline stand-in for ImageNet-R), and
`glyphs-shift`: the same renditions under a domain shift the toy CLIP never saw (`data.world.shift`).

Images are generated from `data.world` (`dmc.world.config`), so the benchmark needs no root folder and no
download; the rendered arrays are cached in `dmc.world.glyphs.cache_dir()` (`renditions_split`). The library knows
it by name (`dmc.catalog.LAB`).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from functools import partial
from typing import Callable

import numpy as np

from dmc.config import DataConfig
from dmc.data.sources.base import Samples, SourceDefaults
from dmc.errors import DataError
from dmc.files import atomic_path
from dmc.world import glyphs
from dmc.world.config import WorldConfig

log = logging.getLogger(__name__)


class GlyphSource(SourceDefaults):
    name = "glyphs"
    template = "a rendering of the {}."
    needs_root = False  # rendered, never read from a folder

    def class_names(self, data: DataConfig) -> list[str]:
        return glyphs.class_names()

    def provenance(self, data: DataConfig) -> dict:
        """What the run config records: the font files (name + sha256) each domain was rendered from."""
        return {"fonts": glyphs.font_manifest(data.world.system_fonts)}

    shifted = False  # glyphs-shift lays data.world.shift over the renditions

    def load(self, data: DataConfig, split: str) -> Samples:
        """Renditions of all 100 classes: uint8 (N, 32, 32, 3) items and native ids as targets."""
        if split not in ("train", "test"):
            raise DataError(f"{self.name}: split must be 'train' or 'test', got {split!r}")
        try:
            images, targets = renditions_split(data.world, split, shifted=self.shifted)
        except FileNotFoundError as err:
            raise DataError(f"{self.name}: {err}") from err
        return Samples(items=images, targets=targets)


class ShiftedGlyphSource(GlyphSource):
    """The renditions of `glyphs` (the same draws) with `data.world.shift` laid over each one: a world where
    adapting the image encoder pays, as it does on CIFAR-100 and ImageNet-R (docs/results.md, World v3)."""

    name = "glyphs-shift"
    shifted = True

    def provenance(self, data: DataConfig) -> dict:
        return {**super().provenance(data), "shift": asdict(data.world.shift),
                "shift_recipe": "sinusoidal grating added to the RGB composite before blur and noise; "
                                "orientation uniform in [0, pi), phase uniform in [0, 2 pi), per image"}


GLYPHS = GlyphSource()
GLYPHS_SHIFT = ShiftedGlyphSource()


def _cached(settings: dict, make: Callable[[], tuple]) -> tuple[np.ndarray, np.ndarray]:
    """Load arrays rendered with exactly these settings (and font files) or render and store them. The
    file records its key and the sha256 of its arrays: a file cut short, swapped for another key's or
    changed is rendered again (one warning line), never used."""
    key = dict(settings, version=glyphs.RENDER_VERSION, fonts=glyphs.font_manifest(settings.get("system_fonts", False)))
    key_text = json.dumps(key, sort_keys=True)
    digest = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    path = glyphs.cache_dir() / "glyphs" / f"{settings['domain']}-{digest}.npz"
    if path.is_file():
        found, why = _read_cache(path, key_text)
        if found is not None:
            return found
        log.warning("rendered glyphs %s %s; rendering them again", path, why)
    else:
        log.info("rendering %s glyphs once; cached at %s", settings["domain"], path)
    images, targets = make()
    with atomic_path(path) as tmp:
        np.savez(tmp, images=images, targets=targets, key=np.array(key_text),
                 sha256=np.array(_arrays_sha256(images, targets)))
    return images, targets


def _arrays_sha256(images: np.ndarray, targets: np.ndarray) -> str:
    """sha256 of the arrays' dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for a in (images, targets):
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _read_cache(path, key_text: str) -> tuple[tuple[np.ndarray, np.ndarray] | None, str]:
    """The cached arrays if the file is whole, holds this key and its arrays match their sha256; else
    (None, why not)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "key" not in z.files or "sha256" not in z.files:
                return None, "were cached without their key and digest"
            if str(z["key"]) != key_text:
                return None, "hold other settings than their name says (swapped?)"
            images, targets, sha = z["images"], z["targets"], str(z["sha256"])
    except Exception as exc:  # noqa: BLE001 - a cut or foreign file: zipfile, numpy and OS errors alike
        return None, f"are unreadable ({type(exc).__name__})"
    if _arrays_sha256(images, targets) != sha:
        return None, "differ from their recorded sha256 (damaged or changed)"
    return (images, targets), ""


def renditions_split(world: WorldConfig, split: str, shifted: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The benchmark split (all 100 classes) of a world, cached as .npz in glyphs.cache_dir(); `shifted`:
    with `world.shift` laid over (glyphs-shift)."""
    n = world.train_per_class if split == "train" else world.test_per_class
    seed = glyphs.split_seed(world.seed, split)
    ids = list(range(len(glyphs.CLASS_CHARS)))
    settings = dict(domain="renditions", n=n, seed=seed, severity=world.severity, system_fonts=world.system_fonts)
    shift = shift_of(world) if shifted else None
    if shift is not None:
        settings["shift"] = asdict(world.shift)  # the unshifted renditions keep their cache key
    return _cached(settings, lambda: glyphs.render_renditions(ids, n, seed, world.severity, world.system_fonts,
                                                               shift=shift))


def shift_of(world: WorldConfig) -> Callable | None:
    """`world.shift` as a function (rng, float image) -> float image for `render_renditions`; None for none."""
    return None if world.shift.kind == "none" else partial(_lay, world.shift)


def _lay(shift, rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """`data.world.shift` on one float composite (H, W, 3) in [0, 1]."""
    return glyphs.grating(rng, image, shift.period, shift.amplitude, shift.fraction)

