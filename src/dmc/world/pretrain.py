"""How the toy CLIP learns the glyph world: contrastive pretraining on freshly rendered glyphs of every
class, through the library's one optimisation loop (`dmc.training.fit`).

Pretraining is budgeted in steps rather than seconds so that one seed gives bit-identical weights on a
given CPU setup (one thread: float reductions then have one order). Its recipe, in `fit`'s terms: AdamW
with CLIP's beta2 and weight decay on weight matrices only (a second parameter group), a linear warm-up
before the cosine decay, CLIP's logit scale clamped to [0, log 100] after every step (`after_step`), and
the captions' rows of the token embedding trained in place of the whole table (`CaptionEmbedding`); one
epoch of `steps` batches, each rendered when it is drawn.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from typing import Iterator, Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from dmc.models.clip import encode_text_embeddings
from dmc.training.fit import fit
from dmc.training.runtime import Runtime
from dmc.world import glyphs
from dmc.world.toy import TOY_CONFIG, build_toy, toy_preprocess, toy_tokenizer, zero_shot_accuracy

log = logging.getLogger(__name__)

TEMPLATES = ("a rendering of the {}.", "a photo of the {}.", "a glyph of the {}.", "the character {}.", "{}.")
SECONDS_PER_STEP = 0.5  # rough CPU cost of one pretraining step (one thread), for the log line only


@dataclass
class PretrainConfig:
    """The toy CLIP's pretraining recipe (world v2; docs/results.md says what each part moved)."""

    steps: int = 2000  # optimiser steps; each batch holds one image and one caption per class
    lr: float = 1e-3  # peak AdamW learning rate (2e-3 collapsed in the feasibility runs)
    warmup: int = 50  # linear warmup steps before the cosine decay to zero
    weight_decay: float = 0.05  # AdamW decay on weight matrices only (not biases, norms, embeddings)
    beta2: float = 0.98  # AdamW second-moment decay, as in CLIP
    images_per_class: int = 1  # images per class per batch; captions are per class, so no false negatives
    n_classes: int = 100  # pretrain on the first n classes (all 100 by default; tests use a few)
    colour: float = 0.75  # fraction of clean-style images in random colours (see glyphs.render_clean)
    nuisance: float = 0.5  # fraction of images in the renditions' style, on font set A only (glyphs.render_pretraining)
    nuisance_max: float = 0.4  # their severity is drawn from U(0, nuisance_max)
    style: float = 0.5  # fraction of letter forms restyled (stroke weight, slant, width, warp)
    plain_fonts: str = "all"  # fonts of the clean-style images: clean (set A) | all (sets A and B)
    templates: tuple[str, ...] = TEMPLATES  # caption templates, one drawn per class per step
    seed: int = 0  # seeds torch (init, template draws) and the online renderer
    eval_per_class: int = 20  # clean test images per class for the zero-shot figure in the report


def _decayed(params: Sequence[tuple[str, torch.nn.Parameter]]) -> tuple[list, list]:
    """(weight matrices, the rest): decaying gains, biases, embeddings or the logit scale hurts CLIP."""
    decay, rest = [], []
    for name, p in params:
        is_matrix = p.ndim >= 2 and "embedding" not in name
        (decay if is_matrix else rest).append(p)
    return decay, rest


def _clip_loss(img: torch.Tensor, txt: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between B images and C captions (image b matches caption labels[b])."""
    logits = scale * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T  # (B, C)
    targets_t = F.one_hot(labels, txt.shape[0]).T.float()  # (C, B)
    targets_t = targets_t / targets_t.sum(dim=1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, targets_t))


def caption_tokens(cfg: PretrainConfig, tokenizer) -> torch.Tensor:
    """Tokens of every (template, class) caption: (T, C, L)."""
    names = glyphs.class_names()[: cfg.n_classes]
    return torch.stack([tokenizer([t.format(n) for n in names]) for t in cfg.templates])


class CaptionEmbedding(torch.nn.Module):
    """The rows of the token embedding that the captions use, trained in place of the whole table.

    The other rows get exactly zero gradients, and AdamW without weight decay leaves such rows exactly as
    they are, so training the used rows only gives the same model at a fraction of the cost (the table has
    49,408 rows; the captions use a few hundred). `write_back` copies the trained rows into the table.
    """

    def __init__(self, table: torch.nn.Embedding, tokens: torch.Tensor) -> None:
        super().__init__()
        self.vocab = torch.unique(tokens)  # (V,) sorted ids
        lut = torch.zeros(table.num_embeddings, dtype=torch.long)
        lut[self.vocab] = torch.arange(len(self.vocab))
        self.register_buffer("lut", lut, persistent=False)
        self.weight = torch.nn.Parameter(table.weight.detach()[self.vocab].clone())  # (V, W)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.weight[self.lut[tokens]]  # (C, L, W)

    @torch.no_grad()
    def write_back(self, table: torch.nn.Embedding) -> None:
        table.weight[self.vocab] = self.weight


def pretrain_toy(cfg: PretrainConfig, progress: bool = True) -> tuple[open_clip.CLIP, dict]:
    """Contrastive pretraining on freshly rendered glyphs of all classes; returns (model, report).

    Runs on one CPU thread: float reductions then have one order, so every machine with the same torch
    build gets bit-identical weights (and the published glyph-world figures), whatever its core count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _pretrain(cfg, progress)
    finally:
        torch.set_num_threads(threads)


def _text_features(model: open_clip.CLIP, embed: CaptionEmbedding, tokens: torch.Tensor) -> torch.Tensor:
    """Caption features (C, D), positions after the batch's last end-of-text token trimmed (exact)."""
    tokens = tokens[:, : int(tokens.argmax(dim=1).max()) + 1]  # (C, L')
    return encode_text_embeddings(model, embed(tokens), tokens)


class Steps:
    """The batches of pretraining, each rendered when it is drawn: step s holds `images_per_class` images of
    every class (rendered from the seed (cfg.seed, s)) and one caption per class, its template drawn from a
    generator seeded with cfg.seed. Items: images (B, 3, 32, 32), caption tokens (C, L), labels (B,)."""

    def __init__(self, cfg: PretrainConfig, captions: torch.Tensor) -> None:
        self.cfg, self.captions = cfg, captions  # (T, C, L)

    def __len__(self) -> int:
        return self.cfg.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        cfg, n = self.cfg, self.cfg.n_classes
        gen = torch.Generator().manual_seed(cfg.seed)
        to_tensor = toy_preprocess().batch
        for step in range(cfg.steps):
            seed = int(np.random.SeedSequence([cfg.seed, step]).generate_state(1)[0])
            images, labels = glyphs.render_pretraining(range(n), cfg.images_per_class, seed, cfg.colour, cfg.nuisance,
                                                       cfg.nuisance_max, cfg.style, cfg.plain_fonts)
            pick = torch.randint(len(cfg.templates), (n,), generator=gen)  # (C,)
            yield to_tensor(images), self.captions[pick, torch.arange(n)], torch.as_tensor(labels)


def _pretrain(cfg: PretrainConfig, progress: bool) -> tuple[open_clip.CLIP, dict]:
    torch.manual_seed(cfg.seed)
    model, tokenizer = build_toy(), toy_tokenizer()
    captions = caption_tokens(cfg, tokenizer)  # (T, C, L)
    embed = CaptionEmbedding(model.token_embedding, captions)
    model.token_embedding.weight.requires_grad_(False)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad] + [("caption_embedding", embed.weight)]
    decay, rest = _decayed(named)
    losses: list[float] = []

    def loss_fn(batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, tokens, labels = batch
        return _clip_loss(model.encode_image(images), _text_features(model, embed, tokens), labels,
                          model.logit_scale.exp())

    def after_step(loss: float) -> None:
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100.0))
        losses.append(loss)

    model.train()
    fit(decay, lambda epoch: Steps(cfg, captions), loss_fn, 1, cfg.lr, Runtime(torch.device("cpu"), progress=progress),
        weight_decay=cfg.weight_decay, desc="pretrain toy CLIP", groups=[{"params": rest, "weight_decay": 0.0}],
        betas=(0.9, cfg.beta2), warmup=cfg.warmup, after_step=after_step)
    embed.write_back(model.token_embedding)
    model.token_embedding.weight.requires_grad_(True)
    model.eval()
    return model, _report(model, cfg, losses)


def _report(model: open_clip.CLIP, cfg: PretrainConfig, losses: list[float]) -> dict:
    """Loss curve summary and zero-shot accuracy on held-out clean glyphs (seed never used in training)."""
    seed = glyphs.split_seed(cfg.seed, "test")
    images, targets = glyphs.render_clean(range(cfg.n_classes), cfg.eval_per_class, seed, cfg.colour)
    names = glyphs.class_names()[: cfg.n_classes]
    acc = zero_shot_accuracy(model, images, targets, names, TEMPLATES[0])
    k = max(1, min(20, len(losses) // 5))
    return {
        "steps": cfg.steps,
        "loss_first": float(np.mean(losses[:k])) if losses else None,
        "loss_last": float(np.mean(losses[-k:])) if losses else None,
        "losses": losses,
        "logit_scale": float(model.logit_scale.detach().exp()),
        "clean_zero_shot": acc,
    }


def toy_key(cfg: PretrainConfig) -> str:
    """Digest of everything the pretrained weights depend on: model and pretraining configs, the rendering
    recipe and its font files, and torch's version (float results differ across builds)."""
    key = {
        "model": TOY_CONFIG,
        "pretrain": asdict(cfg),
        "render_version": glyphs.RENDER_VERSION,
        "fonts": pretraining_fonts(cfg),
        "torch": torch.__version__.split("+")[0],
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def pretraining_fonts(cfg: PretrainConfig) -> dict[str, list[dict[str, str]]]:
    """The font files (name, sha256) pretraining drew from: clean-style glyphs and renditions-style ones."""
    manifest = glyphs.font_manifest()
    plain = {"clean"} | ({"renditions"} if cfg.plain_fonts == "all" else set())
    return {"clean_style": [f for f in manifest if f["domain"] in plain],
            "renditions_style": [f for f in manifest if f["domain"] == "clean"]}

