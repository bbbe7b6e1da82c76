"""World v3 (`glyphs-shift`): the renditions of `glyphs` under a grating no pretraining image carries; its
settings are checked, recorded and cached apart; the regime's rows for adapting the encoder."""
from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import torch

from dmc import config
from dmc.data.sources.base import SOURCES
from dmc.errors import UserError
from dmc.world import glyphs, pretrain, regime, source
from dmc.world.config import ShiftConfig, WorldConfig


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DMC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def ring_share(images: np.ndarray, period: float = 4.0, width: float = 0.75) -> np.ndarray:
    """Share of each image's (luminance, mean removed) spectral power on the ring of `period`-pixel waves,
    every orientation: a grating detector."""
    g = images.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # (N, H, W)
    g = g - g.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(g)) ** 2
    f = np.fft.fftfreq(g.shape[1]) * g.shape[1]
    ring = np.abs(np.hypot(*np.meshgrid(f, f, indexing="ij")) - g.shape[1] / period) <= width
    return power[:, ring].sum(1) / power.sum(axis=(1, 2))


def shifted(ids, n, seed, severity=0.2, **shift) -> np.ndarray:
    lay = partial(source._lay, ShiftConfig(**shift))
    return glyphs.render_renditions(ids, n, seed, severity, shift=lay)[0]


def test_no_pretraining_image_carries_the_grating_and_every_shifted_one_does():
    cfg = pretrain.PretrainConfig()  # the shipped recipe, plain_fonts included
    seen = []
    for step in range(2):
        seed = int(np.random.SeedSequence([cfg.seed, step]).generate_state(1)[0])
        seen.append(glyphs.render_pretraining(range(cfg.n_classes), 2, seed, cfg.colour, cfg.nuisance,
                                              cfg.nuisance_max, cfg.style, cfg.plain_fonts)[0])
    pre = ring_share(np.concatenate(seen))
    shift = ring_share(shifted(range(100), 2, glyphs.split_seed(0, "train")))
    plain = ring_share(glyphs.render_renditions(range(100), 2, glyphs.split_seed(0, "train"), 0.2)[0])
    assert pre.max() < 0.2 and plain.max() < 0.2  # measured: at most 0.14 and 0.15
    assert shift.min() > 0.2  # measured: at least 0.27 (the positive control: the detector does fire)


def test_the_grating_is_drawn_whether_or_not_it_is_laid():
    """The shift draws (laid?, orientation, phase) for every image, so the rest of an image's stream (blur,
    noise) is the same whether the grating is laid or not: an image without one is the zero-amplitude one."""
    seed = glyphs.split_seed(0, "test")
    bare = shifted([3, 40], 4, seed, amplitude=0.0)
    assert np.array_equal(shifted([3, 40], 4, seed, fraction=0.0), bare)
    some = shifted([3, 40], 4, seed, fraction=0.5)
    same = [np.array_equal(a, b) for a, b in zip(some, bare)]
    assert 0 < sum(same) < len(same)  # some laid, some not; those not laid are exactly the bare images
    full = shifted([3, 40], 4, seed)
    assert not any(np.array_equal(a, b) for a, b in zip(full, bare))
    assert np.array_equal(full, shifted([3, 40], 4, seed))  # deterministic


def test_benchmark_glyphs_shift_records_and_caches_its_shift(tmp_cache):
    cfg = config.resolve("glyphs-shift", "dmc-ot", None, ["data.world.train_per_class=3",
                                                           "data.world.test_per_class=2"])
    assert cfg.data.world.severity == 0.2 and cfg.replay.per_class == 8  # the preset, on glyphs' recipe
    src = SOURCES.get("glyphs-shift")
    prov = src.provenance(cfg.data)
    assert prov["shift"] == {"kind": "grating", "period": 4.0, "amplitude": 0.25, "fraction": 1.0}
    assert "fonts" in prov and "shift" not in SOURCES.get("glyphs").provenance(cfg.data)
    a = src.load(cfg.data, "train")
    b = SOURCES.get("glyphs").load(cfg.data, "train")  # the same world unshifted: another cache file
    assert a.items.shape == b.items.shape == (300, 32, 32, 3) and np.array_equal(a.targets, b.targets)
    assert not np.array_equal(a.items, b.items)
    assert len(list((tmp_cache / "glyphs").glob("renditions-*.npz"))) == 2
    weaker = WorldConfig(severity=0.2, train_per_class=3, shift=ShiftConfig(amplitude=0.1))
    c = source.renditions_split(weaker, "train", shifted=True)[0]
    assert not np.array_equal(a.items, c) and len(list((tmp_cache / "glyphs").glob("renditions-*.npz"))) == 3
    plain = source.renditions_split(weaker, "train")[0]  # `glyphs` ignores the shift: its cached images
    assert np.array_equal(plain, b.items) and len(list((tmp_cache / "glyphs").glob("renditions-*.npz"))) == 3
    with pytest.raises(UserError, match="data.world.shift.kind"):
        config.resolve("glyphs-shift", None, None, ["data.world.shift.kind=stripes"])


def test_regime_splits_hold_out_the_validation_rows():
    cfg = config.resolve("glyphs-shift", "dmc-ot", None, ["data.world.train_per_class=5", "data.world.test_per_class=2",
                                                           "benchmark.val_fraction=0.4", "eval.split=val"])
    splits = regime.regime_splits(cfg)
    (fit, yfit), (ev, yev) = splits["fit"], splits["eval"]
    assert len(yfit) == 300 and len(yev) == 200  # 3 + 2 of each class's 5 training renditions
    assert np.bincount(yev).tolist() == [2] * 100
    rows = {im.tobytes() for im in fit}
    assert not rows & {im.tobytes() for im in ev}
    test = regime.regime_splits(config.resolve("glyphs-shift", None, None, ["data.world.train_per_class=5",
                                                                            "data.world.test_per_class=2"]))
    assert len(test["fit"][1]) == 500 and len(test["eval"][1]) == 200


def test_first_session_gain_adapts_on_the_first_task_only(monkeypatch):
    """The rows of the regime table: the tower is adapted on each seed's first task only (its 10 classes'
    images), the frozen backbone is left as it was, and the gain is the adapted read-outs minus the frozen."""
    from dmc.models.clip import build_backbone

    cfg = config.resolve("glyphs-shift", "dmc-ot", None, ["data.world.train_per_class=4", "data.world.test_per_class=2",
                                                           "vision.epochs=1"])
    backbone = build_backbone("toy")
    before = {k: v.clone() for k, v in backbone.model.visual.state_dict().items()}
    trained = []
    from dmc.methods import stages

    real = stages.train_vision

    def spy(visual, anchors, classes, task, *args, **kwargs):
        trained.append((list(classes), np.unique(task.train.labels).tolist(), anchors.shape))
        return real(visual, anchors, classes, task, *args, **kwargs)

    monkeypatch.setattr("dmc.methods.stages.train_vision", spy)
    splits = regime.regime_splits(cfg)
    frozen = regime.glyph_regime(backbone, cfg, splits=splits)
    rows = regime.first_session_gain(backbone, cfg, [0, 1], frozen, splits=splits)
    assert [r["seed"] for r in rows] == [0, 1] and rows[0]["classes"] != rows[1]["classes"]
    for (classes, labels, shape), row in zip(trained, rows):
        assert classes == row["classes"] and sorted(labels) == sorted(classes) and shape[0] == 10
        assert -100 < row["ncm"] < 100 and -100 < row["analytic"] < 100
    assert all(torch.equal(v, backbone.model.visual.state_dict()[k]) for k, v in before.items())
    table = regime.regime_table(frozen, "glyphs-shift", rows, joint=frozen["analytic"] + 4.0)
    assert "| first-session gain | 0, 1 |" in table and "| joint - analytic | 0 | - | +4.00" in table


def test_world_regime_command_on_glyphs_shift(capsys):
    from dmc.cli import main

    assert main(["world", "--first-session", "0"]) == 2
    assert "give --regime too" in capsys.readouterr().err
    code = main(["world", "--benchmark", "glyphs-shift", "--regime", "--first-session", "0", "--set",
                 "data.world.train_per_class=5", "--set", "data.world.test_per_class=2", "--set", "vision.epochs=1",
                 "--set", "benchmark.val_fraction=0.2", "--set", "eval.split=val"])
    out = capsys.readouterr().out
    assert code == 0
    assert "| glyphs-shift, severity 0.2, grating period 4 amplitude 0.25 |" in out
    gain = next(line for line in out.splitlines() if line.startswith("| first-session gain | 0 |"))
    ncm, an = (float(cell.split()[0]) for cell in gain.strip("|").split("|")[2:4])
    assert -100 < ncm < 100 and -100 < an < 100
    assert "validation rows of the training split" in out


def test_joint_row_trains_joint_on_the_regimes_world_and_split(monkeypatch):
    """`--joint` runs the `joint` method on the same world (shift included), validation split and evaluation
    split as the regime, and returns that run's accuracy."""
    import dmc.engine.loop as loop

    cfg = config.resolve("glyphs-shift", "dmc-ot", None, ["data.world.train_per_class=3", "data.world.test_per_class=1",
                                                           "data.world.shift.amplitude=0.1",
                                                           "benchmark.val_fraction=0.34", "eval.split=val"])
    seen = {}
    real = loop.run

    def spy(joint, out=None, **kwargs):
        seen["cfg"] = joint
        seen["path"] = real(joint, out=out, **kwargs)
        seen["last"] = json.loads((seen["path"] / "summary.json").read_text())["last"]
        return seen["path"]

    monkeypatch.setattr(loop, "run", spy)
    acc = regime.joint_accuracy(cfg)
    joint = seen["cfg"]
    assert joint.method == "joint" and joint.benchmark.name == "glyphs-shift" and joint.vision.lr == 3e-3
    world = joint.data.world
    assert (world.train_per_class, world.shift.amplitude, world.severity) == (3, 0.1, 0.2)
    assert (joint.benchmark.val_fraction, joint.eval.split) == (0.34, "val")
    assert acc == seen["last"] and 0.0 <= acc <= 100.0
    assert not seen["path"].exists()  # the run lived in a temporary folder
