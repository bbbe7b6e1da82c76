"""Where the toy CLIP a run uses comes from: the user cache, else the weights shipped with the package,
else pretrained now (and cached); what a run records about it; and the backbone `toy` itself, which
`dmc.world` registers.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import open_clip
import torch

from dmc.errors import UserError
from dmc.files import write_text
from dmc.models.clip import Backbone
from dmc.world import glyphs
from dmc.world.pretrain import (SECONDS_PER_STEP, PretrainConfig, caption_tokens, pretrain_toy, pretraining_fonts,
                                toy_key)
from dmc.world.toy import (TOY_CONFIG, build_toy, load_toy, save_toy, state_sha256, toy_backbone, toy_tokenizer,
                           write_state)

log = logging.getLogger(__name__)

SHIPPED = Path(__file__).parent / "weights" / "toy-clip.safetensors"  # built by `dmc pretrain-toy --ship`


def toy_cache_path(cfg: PretrainConfig) -> Path:
    """Checkpoint path in the user cache, keyed by `toy_key`."""
    return glyphs.cache_dir() / "toy" / f"toy-clip-{toy_key(cfg)}.safetensors"


def ship_toy(model: open_clip.CLIP, cfg: PretrainConfig, report: dict, path: Path = SHIPPED) -> Path:
    """Write the weights that ship with the package: every tensor but the token embedding, whose trained
    rows (the captions' vocabulary) are stored alone; the other 49,000 rows are exactly their initial values
    (see CaptionEmbedding), which `load_shipped` regenerates from the seed. About 8 MB instead of 34."""
    vocab = torch.unique(caption_tokens(cfg, toy_tokenizer()))  # (V,)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()
             if k != "token_embedding.weight"}
    state["token_embedding.rows"] = model.token_embedding.weight.detach()[vocab].clone()  # (V, W)
    state["token_embedding.ids"] = vocab
    meta = {"config": json.dumps(TOY_CONFIG, sort_keys=True), "pretrain": json.dumps(asdict(cfg), sort_keys=True),
            "key": toy_key(cfg), "sha256": state_sha256(model),
            "report": json.dumps({k: v for k, v in report.items() if k != "losses"}, sort_keys=True)}
    return write_state(state, Path(path), meta)


def shipped_metadata(path: Path = SHIPPED) -> dict[str, str] | None:
    """The metadata of the shipped weights (None if the package carries none)."""
    from safetensors import safe_open

    if not Path(path).is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_shipped(cfg: PretrainConfig, path: Path = SHIPPED) -> open_clip.CLIP | None:
    """The shipped toy CLIP if it was built from `cfg` (same `toy_key`), else None. Rebuilds the initial token
    embedding from the seed, then loads every stored tensor; checks the result's sha256."""
    from safetensors.torch import load_file

    meta = shipped_metadata(path)
    if meta is None or meta.get("key") != toy_key(cfg):
        return None
    state = load_file(str(path))
    rows, ids = state.pop("token_embedding.rows"), state.pop("token_embedding.ids")
    torch.manual_seed(cfg.seed)
    model = build_toy()  # the same initial weights as pretraining's first step
    table = model.token_embedding.weight.detach().clone()
    table[ids] = rows
    model.load_state_dict({**state, "token_embedding.weight": table}, strict=True)
    if state_sha256(model) != meta.get("sha256"):
        raise UserError(f"shipped toy CLIP {path} does not reproduce its recorded sha256; reinstall dmc, or "
                        "rebuild the weights with `dmc pretrain-toy --force`")
    return model.eval()


def get_toy(cfg: PretrainConfig = PretrainConfig(), build_if_missing: bool = True) -> open_clip.CLIP:
    """The pretrained toy CLIP: from the user cache, else the weights shipped with the package, else
    pretrained now (and cached)."""
    return locate_toy(cfg, build_if_missing)[0]


def locate_toy(cfg: PretrainConfig = PretrainConfig(), build_if_missing: bool = True) -> tuple[open_clip.CLIP, str]:
    """`get_toy`, also saying where the weights came from: "cache", "shipped" or "built"."""
    path = toy_cache_path(cfg)
    if path.is_file():
        return load_toy(path), "cache"
    shipped = load_shipped(cfg)
    if shipped is not None:
        return shipped, "shipped"
    if not build_if_missing:
        raise UserError(f"toy CLIP not built yet (expected at {path}); run `dmc pretrain-toy`")
    return build_and_cache(cfg)[0], "built"


def provenance(model: open_clip.CLIP, cfg: PretrainConfig | None, weights: str) -> dict:
    """What a run records about its toy CLIP: where the weights came from, their sha256, and (for the
    default weights) the pretraining recipe and the font files pretraining drew from."""
    out: dict = {"weights": weights, "sha256": state_sha256(model)}
    if cfg is not None:
        out["pretraining"] = asdict(cfg)
        out["pretraining_fonts"] = pretraining_fonts(cfg)
    return out


def build_and_cache(cfg: PretrainConfig) -> tuple[open_clip.CLIP, dict]:
    """Pretrain the toy CLIP now and store it (with its report as JSON) in the user cache."""
    path = toy_cache_path(cfg)
    minutes = cfg.steps * SECONDS_PER_STEP / 60
    log.info("building the toy CLIP (about %.0f min on one thread); cached at %s", max(1.0, minutes), path)
    model, report = pretrain_toy(cfg)
    save_toy(model, path)
    summary = {k: v for k, v in report.items() if k != "losses"}
    write_text(path.with_suffix(".json"), json.dumps(summary, indent=2, sort_keys=True))
    log.info("toy CLIP ready: clean zero-shot %.1f%%", 100 * report["clean_zero_shot"])
    return model, report


def build_toy_backbone(pretrained: str | None = None) -> Backbone:
    """The project's own CLIP, pretrained on the clean glyph domain (shipped, or built once and cached);
    `pretrained` may name another toy checkpoint file (e.g. one built with other pretraining settings)."""
    if pretrained:
        model = load_toy(pretrained)
        return toy_backbone(model, provenance(model, None, str(pretrained)))
    cfg = PretrainConfig()
    model, where = locate_toy(cfg)
    return toy_backbone(model, provenance(model, cfg, where))

