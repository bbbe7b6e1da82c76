"""World v2: the toy CLIP's pretraining never sees the benchmark, runs record what it saw, and the regime
measurement computes what it says."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from dmc.world import glyphs
from dmc.world import regime
from dmc.world import pretrain, shipped, toy


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DMC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _pretraining_batch(cfg: pretrain.PretrainConfig, step: int) -> np.ndarray:
    """The images of one pretraining step, drawn exactly as `pretrain.pretrain_toy` draws them."""
    seed = int(np.random.SeedSequence([cfg.seed, step]).generate_state(1)[0])
    images, _ = glyphs.render_pretraining(range(cfg.n_classes), cfg.images_per_class, seed, cfg.colour,
                                          cfg.nuisance, cfg.nuisance_max, cfg.style, cfg.plain_fonts)
    return images


def test_pretraining_sees_no_benchmark_image(monkeypatch):
    """Pretraining draws the benchmark's typefaces only as clean glyphs and the renditions' style only on
    the other typefaces, so no pretraining image can be a benchmark image; checked on the fonts each real
    draw of the shipped recipe was given (a draw in the renditions' style with a benchmark typeface fails)."""
    cfg = pretrain.PretrainConfig()
    assert cfg.nuisance > 0 and cfg.style > 0 and cfg.plain_fonts == "all"  # the default recipe
    fonts = pretrain.pretraining_fonts(cfg)
    bench = {f["sha256"] for f in glyphs.font_manifest() if f["domain"] == "renditions"}
    assert not bench & {f["sha256"] for f in fonts["renditions_style"]}
    assert bench <= {f["sha256"] for f in fonts["clean_style"]}
    bench_names = {p.name for p in glyphs.font_paths("renditions")}
    given = {"rendition": set(), "clean": set()}
    real_rendition, real_clean = glyphs._one_rendition, glyphs._one_clean

    def rendition(rng, ch, fonts, *args, **kwargs):
        given["rendition"].update(p.name for p in fonts)
        return real_rendition(rng, ch, fonts, *args, **kwargs)

    def clean(rng, ch, fonts, *args, **kwargs):
        given["clean"].update(p.name for p in fonts)
        return real_clean(rng, ch, fonts, *args, **kwargs)

    monkeypatch.setattr(glyphs, "_one_rendition", rendition)
    monkeypatch.setattr(glyphs, "_one_clean", clean)
    _pretraining_batch(cfg, 0)
    assert given["rendition"] and not given["rendition"] & bench_names  # the style, never on set B
    assert bench_names <= given["clean"]  # set B only as clean glyphs (plain_fonts="all")


def test_restyled_letter_forms_change_but_keep_their_ink():
    rng = np.random.default_rng(0)
    font = glyphs.font_paths("clean")[0]
    for ch in glyphs.CLASS_CHARS[::3]:
        mask = glyphs._glyph_mask(font, 44, ch)
        styled = glyphs._restyle(rng, mask)
        ink, styled_ink = np.asarray(mask, float).sum(), np.asarray(styled, float).sum()
        assert 0.25 * ink < styled_ink < 4.0 * ink  # thinner (and narrower) or bolder, never erased
        assert styled.size != mask.size or not np.array_equal(np.asarray(styled), np.asarray(mask))
    plain, _ = glyphs.render_pretraining(range(0, 100, 7), 6, 3, nuisance=0.0, style=0.0)
    styled, _ = glyphs.render_pretraining(range(0, 100, 7), 6, 3, nuisance=0.0, style=1.0)
    assert plain.shape == styled.shape and not np.array_equal(plain, styled)


def test_run_config_records_the_toy_clip_it_used(tmp_path):
    from dmc import config
    from dmc.engine.loop import run

    cfg = config.resolve("glyphs", "zeroshot", {"data.world.train_per_class": 2, "data.world.test_per_class": 1,
                                                "benchmark.max_tasks": 1})
    out = run(cfg, out=tmp_path / "run")
    prov = yaml.safe_load((out / "config.yaml").read_text())["provenance"]
    backbone = prov["backbone"]
    assert backbone["weights"] in ("shipped", "cache", "built")
    assert backbone["pretraining"] == yaml.safe_load(yaml.safe_dump(vars(pretrain.PretrainConfig())))
    fonts = pretrain.pretraining_fonts(pretrain.PretrainConfig())
    assert backbone["pretraining_fonts"] == yaml.safe_load(yaml.safe_dump(fonts))
    assert backbone["sha256"] == toy.state_sha256(shipped.get_toy())
    assert {f["domain"] for f in prov["fonts"]} == {"clean", "renditions"}


def test_regime_on_known_features():
    """Three well-separated classes whose text prototypes are their means: every read-out is perfect; with
    prototypes that point elsewhere, zero-shot drops and the ratio says so."""
    gen = torch.Generator().manual_seed(0)
    centres = torch.eye(3, 8) * 5
    labels = torch.arange(3).repeat_interleave(40)
    feats = centres[labels] + 0.3 * torch.randn(120, 8, generator=gen)
    test_labels = torch.arange(3).repeat_interleave(10)
    test = centres[test_labels] + 0.3 * torch.randn(30, 8, generator=gen)
    good = regime.measure(centres, (feats, labels), (test, test_labels), regime.RegimeSettings(dim=64))
    assert good["zero_shot"] == good["ncm"] == good["analytic"] == 100.0
    assert good["zs_over_analytic"] == good["ncm_over_analytic"] == 1.0
    wrong = regime.measure(centres[[1, 2, 0]], (feats, labels), (test, test_labels), regime.RegimeSettings(dim=64))
    assert wrong["zero_shot"] == 0.0 and wrong["zs_over_analytic"] == 0.0 and wrong["ncm"] == 100.0


def test_world_regime_command(capsys):
    from dmc.cli import main

    code = main(["world", "--regime", "--set", "data.world.train_per_class=6",
                 "--set", "data.world.test_per_class=2"])
    out = capsys.readouterr().out
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("| glyphs"))
    cells = [float(c) for c in row.strip("|").split("|")[1:]]
    assert all(0.0 <= c <= 100.0 for c in cells[:4]) and cells[4] == pytest.approx(cells[0] / cells[3], abs=0.006)


def test_prefix_readouts_need_several_prototypes_for_two_mode_classes():
    """Classes made of two opposite clusters: one cosine prototype per class cannot separate them, two can;
    the accuracies follow the task order, Avg is their mean and Last the accuracy on every class."""
    gen = torch.Generator().manual_seed(0)
    d, n_classes = 8, 4
    modes = torch.eye(d)[:n_classes]  # class c: around +e_c and -e_c (its mean is near 0)

    def draw(per_mode):
        labels = torch.arange(n_classes).repeat_interleave(2 * per_mode)
        signs = torch.tensor([1.0, -1.0]).repeat_interleave(per_mode).repeat(n_classes)
        return modes[labels] * signs[:, None] + 0.1 * torch.randn(len(labels), d, generator=gen), labels

    train, test = draw(20), draw(10)
    tasks = [[2, 0], [3, 1]]
    one = regime.prefix_readouts(train, test, tasks, k=1)
    two = regime.prefix_readouts(train, test, tasks, k=2)
    assert len(two["accs"]) == 2 and two["avg"] == pytest.approx(sum(two["accs"]) / 2)
    assert two["last"] == two["accs"][-1] == 100.0
    assert one["last"] < 80.0


def test_world_ceiling_command(capsys):
    from dmc.cli import main

    code = main(["world", "--ceiling", "--seeds", "0", "1", "--set", "data.world.train_per_class=6",
                 "--set", "data.world.test_per_class=2", "--set", "benchmark.increment=50"])
    out = capsys.readouterr().out
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("| 1 |"))
    seeds, avg, last = [c.strip() for c in row.strip().strip("|").split("|")][1:]
    assert seeds == "0, 1"
    assert 0.0 <= float(last.split("±")[0]) <= float(avg.split("±")[0]) <= 100.0
    assert main(["world", "--ceiling", "--prototypes", "0"]) == 2
