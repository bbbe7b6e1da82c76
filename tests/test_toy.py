"""The toy CLIP: config, preprocessing, checkpoint round trip, deterministic pretraining, cache."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from dmc.world import glyphs
from dmc.errors import UserError
from dmc.world import pretrain, shipped, toy

# A few steps on 8 classes: the same code path as the real budget, in seconds. So short a run only leaves the
# worse-than-uniform start (contrastive training first collapses to the uniform plateau), which is what we assert.
TINY = pretrain.PretrainConfig(steps=12, warmup=5, lr=2e-3, n_classes=8, images_per_class=2, eval_per_class=2)


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DMC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and spinning threads crawl on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_run(one_thread):
    return pretrain.pretrain_toy(TINY, progress=False)


def test_config_shapes():
    torch.manual_seed(0)
    model = toy.build_toy().eval()
    n_params = sum(p.numel() for p in model.parameters())
    assert 8.0e6 < n_params < 8.8e6
    with torch.no_grad():
        img = model.encode_image(torch.zeros(2, 3, 32, 32))
        txt = model.encode_text(toy.toy_tokenizer()(["a rendering of the digit two.", "x"]))
    assert img.shape == (2, 128) and txt.shape == (2, 128)


def test_preprocess_matches_batch_transform():
    arr = np.zeros((32, 32, 3), np.uint8)
    arr[:, :16] = 255
    pre = toy.toy_preprocess()
    a, b = pre(arr), pre(Image.fromarray(arr))
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert a.min().item() == -1.0 and a.max().item() == 1.0
    assert torch.equal(pre.batch(arr[None])[0], a)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(1)
    model = toy.build_toy().eval()
    path = toy.save_toy(model, tmp_path / "toy.safetensors")
    loaded = toy.load_toy(path)
    ref, got = model.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    images, _ = glyphs.render_clean([0, 1, 2], 2, seed=0)
    tokens = toy.toy_tokenizer()(["a rendering of the digit two.", "the character {}."])
    with torch.no_grad():
        x = toy.toy_preprocess().batch(images)
        assert torch.equal(model.encode_image(x), loaded.encode_image(x))
        assert torch.equal(model.encode_text(tokens), loaded.encode_text(tokens))
    with pytest.raises(UserError):
        toy.load_toy(tmp_path / "missing.safetensors")


def test_pretrain_lowers_loss(tiny_run):
    _, report = tiny_run
    assert len(report["losses"]) == TINY.steps
    assert report["loss_last"] < report["loss_first"] - 0.3
    assert all(np.isfinite(report["losses"]))
    assert 0.0 <= report["clean_zero_shot"] <= 1.0


def test_pretrain_is_deterministic():
    cfg = pretrain.PretrainConfig(**{**TINY.__dict__, "steps": 3})
    a, _ = pretrain.pretrain_toy(cfg, progress=False)
    b, _ = pretrain.pretrain_toy(cfg, progress=False)
    c, _ = pretrain.pretrain_toy(pretrain.PretrainConfig(**{**cfg.__dict__, "seed": 1}), progress=False)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_zero_shot_accuracy_matches_manual(tiny_run):
    model, _ = tiny_run
    names = glyphs.class_names()[:8]
    images, targets = glyphs.render_clean(range(8), 3, seed=5)
    acc = toy.zero_shot_accuracy(model, images, targets, names, "a rendering of the {}.")
    with torch.no_grad():
        protos = torch.nn.functional.normalize(
            model.encode_text(toy.toy_tokenizer()([f"a rendering of the {n}." for n in names])), dim=-1)
    pred = (toy.encode_images(model, images) @ protos.T).argmax(1).numpy()
    assert acc == pytest.approx(float((pred == targets).mean()))
    assert acc in {k / 24 for k in range(25)}


def test_pretraining_leaves_unused_token_rows_at_their_initial_values(tiny_run):
    """Only the captions' rows of the token embedding train (CaptionEmbedding); the rest must be exactly
    the initial weights, which is what lets the shipped file store the trained rows alone."""
    model, _ = tiny_run
    torch.manual_seed(TINY.seed)
    init = toy.build_toy().token_embedding.weight
    vocab = torch.unique(pretrain.caption_tokens(TINY, toy.toy_tokenizer()))
    trained = model.token_embedding.weight.detach()
    unused = torch.ones(len(init), dtype=torch.bool)
    unused[vocab] = False
    assert torch.equal(trained[unused], init[unused])
    assert not torch.equal(trained[vocab], init[vocab])


def test_shipped_format_round_trip_is_bit_exact(tiny_run, tmp_path):
    model, report = tiny_run
    path = shipped.ship_toy(model, TINY, report, tmp_path / "toy-clip.safetensors")
    assert path.stat().st_size < 0.4 * 4 * sum(p.numel() for p in model.parameters())  # no full token table
    meta = shipped.shipped_metadata(path)
    assert json.loads(meta["pretrain"])["steps"] == TINY.steps and meta["key"] == pretrain.toy_key(TINY)
    loaded = shipped.load_shipped(TINY, path)
    assert toy.state_sha256(loaded) == toy.state_sha256(model) == meta["sha256"]
    assert shipped.load_shipped(pretrain.PretrainConfig(**{**TINY.__dict__, "seed": 5}), path) is None  # other recipe


def test_package_ships_the_default_toy_clip():
    """The default `--backbone toy` needs no pretraining on a fresh install: the package carries weights
    built from today's default recipe, and they reproduce their recorded sha256."""
    meta = shipped.shipped_metadata()
    assert meta is not None, "src/dmc/world/weights/toy-clip.safetensors is missing"
    cfg = pretrain.PretrainConfig()
    assert json.loads(meta["pretrain"]) == json.loads(json.dumps(dataclasses.asdict(cfg)))
    assert meta["key"] == pretrain.toy_key(cfg), "the default recipe changed: rebuild with `dmc pretrain-toy --ship`"
    model = shipped.load_shipped(cfg)
    assert toy.state_sha256(model) == meta["sha256"]


def test_cache_path_and_get_toy(tmp_cache):
    cfg = pretrain.PretrainConfig(**{**TINY.__dict__, "steps": 2})
    path = shipped.toy_cache_path(cfg)
    assert tmp_cache in path.parents and path.suffix == ".safetensors"
    assert path != shipped.toy_cache_path(pretrain.PretrainConfig(**{**cfg.__dict__, "seed": 3}))
    with pytest.raises(UserError):
        shipped.get_toy(cfg, build_if_missing=False)
    built = shipped.get_toy(cfg)
    assert path.is_file() and path.with_suffix(".json").is_file()
    cached = shipped.get_toy(cfg, build_if_missing=False)
    assert all(torch.equal(v, cached.state_dict()[k]) for k, v in built.state_dict().items())
