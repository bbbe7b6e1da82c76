"""The library without the lab: `import dmc`, `dmc.config` and `dmc.load` of a run that used no part of the
lab never import `dmc.world`; the library's defaults name no lab entry; the command line registers the lab
(its default run is the glyph world on the toy CLIP), and a glyph run still loads with `dmc.load` in a fresh
process, the lab's names being known by where they live (`dmc.catalog.LAB`)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from dmc import catalog, config
from dmc.data.sources.base import SOURCES
from dmc.errors import UserError

SRC = str(Path(catalog.__file__).resolve().parents[1])


def _image_folder(root: Path, classes: int = 4, per_class: int = 3) -> Path:
    """`train/<class>/*.png` and `test/<class>/*.png` of random pixels: a user's own folder in miniature."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(classes):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), np.uint8)).save(folder / f"{i}.png")
    return root


def test_the_librarys_defaults_name_no_part_of_the_lab():
    cfg = config.RunConfig()
    lab = {name for names in catalog.LAB.values() for name in names}
    assert cfg.benchmark.name == "imagefolder" and cfg.model.backbone == "ViT-B-16"
    assert not {cfg.benchmark.name, cfg.model.backbone} & lab
    assert "world" not in config.to_dict(cfg)["data"]  # plugged by name: joins a config only when used
    assert catalog.DEFAULT_BENCHMARK == "glyphs" and config.resolve("glyphs").model.backbone == "toy"


def test_a_section_plugged_by_name_joins_a_config_only_when_read_or_set():
    cfg = config.resolve("synthetic")
    assert config.lazy_plugs(cfg.data) == ["world"] and "world" not in config.to_dict(cfg)["data"]
    with pytest.raises(UserError, match=r"unknown config key 'data\.wrld\.seed': data has .*root.*world"):
        config.set_key(cfg, "data.wrld.seed", 1)
    config.set_key(cfg, "data.world.severity", 0.4)  # set: it joins, checked and saved like any section
    assert config.to_dict(cfg)["data"]["world"]["severity"] == 0.4 and config.lazy_plugs(cfg.data) == []
    with pytest.raises(UserError, match="data.world.severity"):
        config.resolve("synthetic", sets=["data.world.severity=2"])
    other = config.resolve("synthetic")
    assert other.data.world.seed == 0 and "world" in config.to_dict(other)["data"]  # read: it joins too


def test_registering_the_lab_again_changes_nothing():
    SOURCES.get("glyphs")  # the name now holds the imported source
    catalog.register_lab()
    assert SOURCES.get("glyphs").name == "glyphs"
    with pytest.raises(ValueError, match="registered twice"):
        SOURCES.add("glyphs", "dmc.world.source:GLYPHS_SHIFT")


def _fresh_python(script: str) -> subprocess.CompletedProcess:
    """`script` in a new interpreter on this checkout: nothing registered or imported by other tests (a method
    registered from outside the package, say) reaches it."""
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)


def test_an_image_folder_run_loads_without_the_lab_and_a_glyph_run_with_it(tmp_path):
    root = _image_folder(tmp_path / "data")
    folder_run, glyph_run = tmp_path / "folder", tmp_path / "glyphs"
    folder = ["run", "--benchmark", "imagefolder", "--backbone", "tiny", "--smoke", "--quiet", "--threads", "1",
              "--set", f"data.root={root}", "--set", "benchmark.increment=2", "--set", "model.pretrained=random",
              "--out", str(folder_run)]
    glyph = ["run", "--method", "zeroshot", "--smoke", "--quiet", "--threads", "1", "--set", "benchmark.max_tasks=1",
             "--set", "data.world.train_per_class=2", "--set", "data.world.test_per_class=2",
             "--out", str(glyph_run)]  # no --benchmark: the command line's default, the glyph world
    done = _fresh_python(f"from dmc.cli import main; assert main({folder!r}) == main({glyph!r}) == 0")
    assert done.returncode == 0, done.stderr
    saved = {p: yaml.safe_load((p / "config.yaml").read_text()) for p in (folder_run, glyph_run)}
    assert "world" not in saved[folder_run]["data"] and saved[folder_run]["model"]["backbone"] == "tiny"
    assert saved[glyph_run]["benchmark"]["name"] == "glyphs" and saved[glyph_run]["model"]["backbone"] == "toy"
    assert saved[glyph_run]["data"]["world"]["train_per_class"] == 2
    image = next((root / "test" / "class_1").iterdir())
    script = f"""
import json, sys
import dmc, dmc.config
lab = lambda: sorted(m for m in sys.modules if m.split(".")[:2] in (["dmc", "world"], ["dmc", "bench"]))
out = {{"after_import": lab()}}
model = dmc.load({str(folder_run)!r})
out["tasks"], out["predicted"] = model.task, len(model.predict([{str(image)!r}]).names())
out["after_folder_run"] = lab()
out["glyph_classes"] = len(dmc.load({str(glyph_run)!r}).classes)
out["after_glyph_run"] = lab()
print(json.dumps(out))
"""
    done = _fresh_python(script)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["after_import"] == [] and out["after_folder_run"] == [], out
    assert out["tasks"] == 2 and out["predicted"] == 1
    assert out["glyph_classes"] == 10 and "dmc.world.config" in out["after_glyph_run"]
