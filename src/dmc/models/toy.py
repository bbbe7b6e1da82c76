"""A toy CLIP (about 8.4M parameters) pretrained in minutes on CPU on the clean glyph domain.

It stands in for ViT-B/16 when no weights can be downloaded: an open_clip `CLIP` built from a small config,
so every code path (towers, tokenizer, logit scale, locking) is the real one. Pretraining is budgeted in
steps rather than seconds so that one seed gives bit-identical weights on a given CPU setup.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dmc.data import glyphs
from dmc.data.transforms import ArrayNormalize
from dmc.errors import UserError
from dmc.files import atomic_path, write_text

log = logging.getLogger(__name__)

TOY_CONFIG: dict = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 128, "layers": 6, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 4},
}
# Maps [0, 1] to [-1, 1] per channel: the glyph world has no natural-image colour statistics to match.
TOY_MEAN = (0.5, 0.5, 0.5)
TOY_STD = (0.5, 0.5, 0.5)
TEMPLATES = ("a rendering of the {}.", "a photo of the {}.", "a glyph of the {}.", "the character {}.", "{}.")
_SECONDS_PER_STEP = 0.3  # rough CPU cost of one pretraining step (2 cores), for the log line only


@dataclass
class PretrainConfig:
    steps: int = 800  # optimiser steps; each batch holds one clean image and one caption per class
    lr: float = 1e-3  # peak AdamW learning rate (2e-3 collapsed in the feasibility runs)
    warmup: int = 50  # linear warmup steps before the cosine decay to zero
    weight_decay: float = 0.05  # AdamW decay on weight matrices only (not biases, norms, embeddings)
    beta2: float = 0.98  # AdamW second-moment decay, as in CLIP
    images_per_class: int = 1  # images per class per batch; captions are per class, so no false negatives
    n_classes: int = 100  # pretrain on the first n classes (all 100 by default; tests use a few)
    colour: float = 0.75  # fraction of clean images in random colours (see glyphs.render_clean)
    templates: tuple[str, ...] = TEMPLATES  # caption templates, one drawn per class per step
    seed: int = 0  # seeds torch (init, template draws) and the online renderer
    eval_per_class: int = 20  # clean test images per class for the zero-shot figure in the report


def build_toy() -> open_clip.CLIP:
    """An untrained toy CLIP from TOY_CONFIG (weights from the current torch seed)."""
    return open_clip.CLIP(**TOY_CONFIG)


def toy_tokenizer() -> open_clip.tokenizer.SimpleTokenizer:
    return open_clip.tokenizer.SimpleTokenizer(context_length=TOY_CONFIG["text_cfg"]["context_length"])


def images_to_tensor(images: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
    """Batch transform: uint8 (N, H, W, 3) -> normalised float (N, 3, H, W)."""
    x = torch.tensor(np.asarray(images)).permute(0, 3, 1, 2).float() / 255.0  # (N, 3, H, W)
    mean = torch.tensor(TOY_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(TOY_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def toy_preprocess() -> ArrayNormalize:
    """Per-image transform (PIL image or uint8 (H, W, 3) array -> normalised (3, H, W)) that also
    transforms whole uint8 batches at once (`.batch`), which the engine uses for in-memory data."""
    return ArrayNormalize(TOY_MEAN, TOY_STD)


@torch.no_grad()
def text_prototypes(model: open_clip.CLIP, tokenizer, class_names: Sequence[str], template: str) -> torch.Tensor:
    """Normalised text embeddings (C, D) of one template filled with each class name."""
    tokens = tokenizer([template.format(n) for n in class_names])  # (C, L)
    return F.normalize(model.encode_text(tokens), dim=-1)


@torch.no_grad()
def encode_images(model: open_clip.CLIP, images: np.ndarray, batch_size: int = 500) -> torch.Tensor:
    """Normalised image embeddings (N, D) of uint8 images (N, H, W, 3)."""
    feats = [model.encode_image(images_to_tensor(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
    return F.normalize(torch.cat(feats), dim=-1)


def zero_shot_accuracy(
    model: open_clip.CLIP, tokenizer, images: np.ndarray, targets: np.ndarray, class_names: Sequence[str], template: str
) -> float:
    """Top-1 accuracy (0..1) of nearest text prototype; targets index `class_names`."""
    was_training = model.training
    model.eval()
    protos = text_prototypes(model, tokenizer, class_names, template)  # (C, D)
    pred = (encode_images(model, images) @ protos.T).argmax(dim=1)  # (N,)
    model.train(was_training)
    return float((pred.numpy() == np.asarray(targets)).mean())


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay weight matrices only: decaying gains, biases, embeddings or the logit scale hurts CLIP."""
    decay, rest = [], []
    for name, p in model.named_parameters():
        is_matrix = p.ndim >= 2 and "embedding" not in name
        (decay if is_matrix else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _lr_factor(step: int, cfg: PretrainConfig) -> float:
    """Linear warmup, then cosine decay to zero at cfg.steps."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.5 * (1.0 + np.cos(np.pi * progress))


def _clip_loss(img: torch.Tensor, txt: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between B images and C captions (image b matches caption labels[b])."""
    logits = scale * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T  # (B, C)
    targets_t = F.one_hot(labels, txt.shape[0]).T.float()  # (C, B)
    targets_t = targets_t / targets_t.sum(dim=1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, targets_t))


def _encode_text_trimmed(model: open_clip.CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """CLIP.encode_text on tokens cut after the batch's last non-pad position: the same features, because
    the text attention is causal and pooling reads the end-of-text token, at about half the cost."""
    length = int((tokens != 0).any(dim=0).nonzero().max()) + 1
    tokens = tokens[:, :length]  # (C, L')
    x = model.token_embedding(tokens) + model.positional_embedding[:length]  # (C, L', W)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:length, :length]))
    x = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)]  # (C, W) at the end-of-text token
    return x @ model.text_projection  # (C, D)


def _caption_tokens(cfg: PretrainConfig, tokenizer) -> torch.Tensor:
    """Tokens of every (template, class) caption: (T, C, L)."""
    names = glyphs.class_names()[: cfg.n_classes]
    return torch.stack([tokenizer([t.format(n) for n in names]) for t in cfg.templates])


def pretrain_toy(cfg: PretrainConfig, progress: bool = True) -> tuple[open_clip.CLIP, dict]:
    """Contrastive pretraining on freshly rendered clean glyphs of all classes; returns (model, report).

    Runs on one CPU thread: float reductions then have one order, so every machine with the same torch
    build gets bit-identical weights (and the published glyph-world figures), whatever its core count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _pretrain(cfg, progress)
    finally:
        torch.set_num_threads(threads)


def _pretrain(cfg: PretrainConfig, progress: bool) -> tuple[open_clip.CLIP, dict]:
    torch.manual_seed(cfg.seed)
    model, tokenizer = build_toy(), toy_tokenizer()
    n_classes = cfg.n_classes
    captions = _caption_tokens(cfg, tokenizer)  # (T, C, L)
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, cfg.beta2))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    losses = []
    for step in tqdm(range(cfg.steps), desc="pretrain toy CLIP", disable=not progress):
        seed = int(np.random.SeedSequence([cfg.seed, step]).generate_state(1)[0])
        images, labels = glyphs.render_clean(range(n_classes), cfg.images_per_class, seed, cfg.colour)
        pick = torch.randint(len(cfg.templates), (n_classes,), generator=gen)  # (C,)
        tokens = captions[pick, torch.arange(n_classes)]  # (C, L)
        loss = _clip_loss(
            model.encode_image(images_to_tensor(images)), _encode_text_trimmed(model, tokens),
            torch.as_tensor(labels), model.logit_scale.exp(),
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100.0))
        losses.append(float(loss.detach()))
    model.eval()
    return model, _report(model, tokenizer, cfg, losses)


def _report(model: open_clip.CLIP, tokenizer, cfg: PretrainConfig, losses: list[float]) -> dict:
    """Loss curve summary and zero-shot accuracy on held-out clean glyphs (seed never used in training)."""
    seed = glyphs.split_seed(cfg.seed, "test")
    images, targets = glyphs.render_clean(range(cfg.n_classes), cfg.eval_per_class, seed, cfg.colour)
    names = glyphs.class_names()[: cfg.n_classes]
    acc = zero_shot_accuracy(model, tokenizer, images, targets, names, TEMPLATES[0])
    k = max(1, min(20, len(losses) // 5))
    return {
        "steps": cfg.steps,
        "loss_first": float(np.mean(losses[:k])) if losses else None,
        "loss_last": float(np.mean(losses[-k:])) if losses else None,
        "losses": losses,
        "logit_scale": float(model.logit_scale.detach().exp()),
        "clean_zero_shot": acc,
    }


def toy_cache_path(cfg: PretrainConfig) -> Path:
    """Checkpoint path keyed by the model config, the pretraining config and the clean fonts/recipe."""
    key = {
        "model": TOY_CONFIG,
        "pretrain": asdict(cfg),
        "render_version": glyphs.RENDER_VERSION,
        "fonts": [f for f in glyphs.font_manifest() if f["domain"] == "clean"],
        "torch": torch.__version__.split("+")[0],
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return glyphs.cache_dir() / "toy" / f"toy-clip-{digest}.safetensors"


def save_toy(model: open_clip.CLIP, path: Union[str, Path]) -> Path:
    """Write the state dict as safetensors (atomic replace), with TOY_CONFIG in the metadata."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"config": json.dumps(TOY_CONFIG, sort_keys=True)})
    return Path(path)


def load_toy(path: Union[str, Path]) -> open_clip.CLIP:
    """Rebuild the toy CLIP and load a safetensors state dict exactly (strict)."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise UserError(f"toy CLIP checkpoint not found: {path}")
    model = build_toy()
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval()


def get_toy(cfg: PretrainConfig = PretrainConfig(), build_if_missing: bool = True) -> open_clip.CLIP:
    """The pretrained toy CLIP from the cache, pretraining (and caching) it on first use."""
    path = toy_cache_path(cfg)
    if path.is_file():
        return load_toy(path)
    if not build_if_missing:
        raise UserError(f"toy CLIP not built yet (expected at {path}); run once with building allowed")
    minutes = cfg.steps * _SECONDS_PER_STEP / 60
    log.info("building the toy CLIP once (about %.0f min); cached at %s", max(1.0, minutes), path)
    model, report = pretrain_toy(cfg)
    save_toy(model, path)
    summary = {k: v for k, v in report.items() if k != "losses"}
    write_text(path.with_suffix(".json"), json.dumps(summary, indent=2, sort_keys=True))
    log.info("toy CLIP ready: clean zero-shot %.1f%%", 100 * report["clean_zero_shot"])
    return model
