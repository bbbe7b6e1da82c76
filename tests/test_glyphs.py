"""The glyph world: classes, fonts, deterministic rendering, caching and the `glyphs` benchmark source."""
from __future__ import annotations

import unicodedata

import numpy as np
import pytest

from dmc.world import glyphs
from dmc.config import DataConfig
from dmc.world.config import WorldConfig
from dmc.data.sources.base import SOURCES
from dmc.errors import DataError

import dmc.world.source  # noqa: F401  (registers the source)


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DMC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_hundred_distinct_class_names():
    names = glyphs.class_names()
    assert len(glyphs.CLASS_CHARS) == 100 and len(set(glyphs.CLASS_CHARS)) == 100
    assert len(set(names)) == 100
    assert names[0] == "latin capital letter a"
    assert "greek small letter final sigma" in names and "cyrillic capital letter shcha" in names
    assert all(n == unicodedata.name(c).lower() for n, c in zip(names, glyphs.CLASS_CHARS))
    assert not {"i", "l", "1", "c", "s"} & set(glyphs.CLASS_CHARS)  # look-alikes stay out


def test_font_sets_disjoint_and_manifest():
    clean = glyphs.font_paths("clean")
    rend = glyphs.font_paths("renditions")
    assert len(clean) == 8 and len(rend) == 8
    assert not {p.name for p in clean} & {p.name for p in rend}
    manifest = glyphs.font_manifest()
    assert len(manifest) == 16
    assert all(len(f["sha256"]) == 64 for f in manifest)
    by_domain = {d: {f["sha256"] for f in manifest if f["domain"] == d} for d in ("clean", "renditions")}
    assert not by_domain["clean"] & by_domain["renditions"]
    assert not any("lastresort" in f["name"].lower() for f in manifest)


def test_cache_dir_follows_env(tmp_cache, monkeypatch):
    assert glyphs.cache_dir() == tmp_cache
    monkeypatch.delenv("DMC_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_cache / "xdg"))
    assert glyphs.cache_dir() == tmp_cache / "xdg" / "dmc"


def test_render_clean_shapes_and_determinism():
    x, y = glyphs.render_clean([0, 5, 99], 4, seed=7)
    assert x.shape == (12, 32, 32, 3) and x.dtype == np.uint8
    assert y.dtype == np.int64 and y.tolist() == [0] * 4 + [5] * 4 + [99] * 4
    x2, _ = glyphs.render_clean([0, 5, 99], 4, seed=7)
    x3, _ = glyphs.render_clean([0, 5, 99], 4, seed=8)
    assert np.array_equal(x, x2)
    assert not np.array_equal(x, x3)
    assert len({im.tobytes() for im in x}) == 12  # every draw is a new image
    grey, _ = glyphs.render_clean([0, 5, 99], 4, seed=7, colour=0.0)
    assert np.array_equal(grey[..., 0], grey[..., 2])  # colour=0: grey copied to RGB


def test_class_streams_do_not_depend_on_the_request():
    both, _ = glyphs.render_clean([3, 7], 5, seed=1)
    alone, _ = glyphs.render_clean([7], 5, seed=1)
    assert np.array_equal(both[5:], alone)
    r_both, _ = glyphs.render_renditions([3, 7], 5, seed=1, severity=0.5)
    r_alone, _ = glyphs.render_renditions([7], 5, seed=1, severity=0.5)
    assert np.array_equal(r_both[5:], r_alone)


def test_renditions_determinism_and_severity():
    x, y = glyphs.render_renditions([1, 2], 6, seed=3, severity=0.25)
    assert x.shape == (12, 32, 32, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    assert np.array_equal(x, glyphs.render_renditions([1, 2], 6, seed=3, severity=0.25)[0])
    assert not np.array_equal(x, glyphs.render_renditions([1, 2], 6, seed=4, severity=0.25)[0])
    assert not np.array_equal(x, glyphs.render_renditions([1, 2], 6, seed=3, severity=0.75)[0])
    assert not np.array_equal(x, glyphs.render_clean([1, 2], 6, seed=3)[0])
    with pytest.raises(ValueError):
        glyphs.render_renditions([1], 1, seed=0, severity=1.5)


def test_split_seeds_differ():
    assert glyphs.split_seed(0, "train") != glyphs.split_seed(0, "test")
    assert glyphs.split_seed(0, "train") != glyphs.split_seed(1, "train")
    with pytest.raises(ValueError):
        glyphs.split_seed(0, "val")


def test_source_contract(tmp_cache):
    src = SOURCES.get("glyphs")
    assert (src.name, src.template) == ("glyphs", "a rendering of the {}.")
    assert (src.default_base, src.default_increment, src.needs_root) == (0, 10, False)
    data = DataConfig(plugged={"world": WorldConfig(train_per_class=2, test_per_class=1)})  # data.world
    assert src.class_names(data) == glyphs.class_names()
    train, test = src.load(data, "train"), src.load(data, "test")
    assert train.items.shape == (200, 32, 32, 3) and train.items.dtype == np.uint8
    assert test.items.shape == (100, 32, 32, 3) and len(test) == 100
    assert train.targets.dtype == np.int64 and train.targets.min() == 0 and train.targets.max() == 99
    assert np.bincount(train.targets).tolist() == [2] * 100
    train_imgs = {im.tobytes() for im in train.items}
    assert not train_imgs & {im.tobytes() for im in test.items}  # disjoint draws
    assert len(list((tmp_cache / "glyphs").glob("*.npz"))) == 2
    again = src.load(data, "train")  # from the cache
    assert np.array_equal(again.items, train.items) and np.array_equal(again.targets, train.targets)
    with pytest.raises(DataError):
        src.load(data, "val")


def test_write_sheet(tmp_path):
    from dmc.world.sheet import write_sheet

    out = write_sheet(tmp_path / "sheet.png", WorldConfig(), n_classes=2, per_class=2)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_render_cache_is_checked_and_rebuilt_when_it_does_not_match(tmp_cache, caplog):
    """Swapped cache files (train for test), a file cut short and changed pixels: each is rendered again
    with one warning line, never used, and never a BadZipFile traceback."""
    src = SOURCES.get("glyphs")
    data = DataConfig(plugged={"world": WorldConfig(train_per_class=2, test_per_class=1)})
    train, test = src.load(data, "train"), src.load(data, "test")
    files = {len(np.load(f)["targets"]): f for f in (tmp_cache / "glyphs").glob("*.npz")}
    train_file, test_file = files[200], files[100]
    swap = train_file.read_bytes()
    train_file.write_bytes(test_file.read_bytes())
    test_file.write_bytes(swap)
    caplog.clear()
    assert np.array_equal(src.load(data, "train").items, train.items)
    assert "swapped?" in caplog.text and "rendering them again" in caplog.text
    test_file.write_bytes(test_file.read_bytes()[:500])  # cut short
    assert np.array_equal(src.load(data, "test").items, test.items)
    assert "unreadable (BadZipFile)" in caplog.text
    with np.load(train_file) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["images"][0, 0, 0] ^= 255  # one changed pixel, the key left as it was
    np.savez(train_file, **arrays)
    caplog.clear()
    assert np.array_equal(src.load(data, "train").items, train.items)
    assert "differ from their recorded sha256" in caplog.text
