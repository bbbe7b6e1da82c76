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

from dmc.world import glyphs
from dmc.data.transforms import ArrayNormalize
from dmc.errors import UserError
from dmc.files import atomic_path, write_text
from dmc.models.clip import Backbone, encode_text_embeddings, template_text_features
from dmc.schedule import cosine_lr

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
_SECONDS_PER_STEP = 0.5  # rough CPU cost of one pretraining step (one thread), for the log line only


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


def build_toy() -> open_clip.CLIP:
    """An untrained toy CLIP from TOY_CONFIG (weights from the current torch seed)."""
    return open_clip.CLIP(**TOY_CONFIG)


def toy_tokenizer() -> open_clip.tokenizer.SimpleTokenizer:
    return open_clip.tokenizer.SimpleTokenizer(context_length=TOY_CONFIG["text_cfg"]["context_length"])


def toy_preprocess() -> ArrayNormalize:
    """Per-image transform (PIL image or uint8 (H, W, 3) array -> normalised (3, H, W)) that also
    transforms whole uint8 batches at once (`.batch`), which the engine uses for in-memory data."""
    return ArrayNormalize(TOY_MEAN, TOY_STD)


def toy_backbone(model: open_clip.CLIP, provenance: dict | None = None) -> Backbone:
    """The toy CLIP with its tokenizer and transforms (no augmentation: the glyph world renders its own)."""
    norm = toy_preprocess()
    return Backbone("toy", model, toy_tokenizer(), norm, norm, provenance or {})


@torch.no_grad()
def encode_images(model: open_clip.CLIP, images: np.ndarray, batch_size: int = 500) -> torch.Tensor:
    """Normalised image embeddings (N, D) of uint8 images (N, H, W, 3)."""
    batch = toy_preprocess().batch
    feats = [model.encode_image(batch(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
    return F.normalize(torch.cat(feats), dim=-1)


def zero_shot_accuracy(
    model: open_clip.CLIP, images: np.ndarray, targets: np.ndarray, class_names: Sequence[str], template: str
) -> float:
    """Top-1 accuracy (0..1) of nearest text prototype; targets index `class_names`."""
    was_training = model.training
    model.eval()
    protos = template_text_features(toy_backbone(model), list(class_names), template)  # (C, D)
    pred = (encode_images(model, images) @ protos.T).argmax(dim=1)  # (N,)
    model.train(was_training)
    return float((pred.numpy() == np.asarray(targets)).mean())


def _param_groups(params: Sequence[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict]:
    """Decay weight matrices only: decaying gains, biases, embeddings or the logit scale hurts CLIP."""
    decay, rest = [], []
    for name, p in params:
        is_matrix = p.ndim >= 2 and "embedding" not in name
        (decay if is_matrix else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _clip_loss(img: torch.Tensor, txt: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between B images and C captions (image b matches caption labels[b])."""
    logits = scale * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T  # (B, C)
    targets_t = F.one_hot(labels, txt.shape[0]).T.float()  # (C, B)
    targets_t = targets_t / targets_t.sum(dim=1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, targets_t))


def _caption_tokens(cfg: PretrainConfig, tokenizer) -> torch.Tensor:
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


def _pretrain(cfg: PretrainConfig, progress: bool) -> tuple[open_clip.CLIP, dict]:
    torch.manual_seed(cfg.seed)
    model, tokenizer = build_toy(), toy_tokenizer()
    n_classes = cfg.n_classes
    captions = _caption_tokens(cfg, tokenizer)  # (T, C, L)
    embed = CaptionEmbedding(model.token_embedding, captions)
    model.token_embedding.weight.requires_grad_(False)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad] + [("caption_embedding", embed.weight)]
    opt = torch.optim.AdamW(_param_groups(named, cfg.weight_decay), lr=cfg.lr, betas=(0.9, cfg.beta2))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s, cfg.steps, cfg.warmup))
    gen = torch.Generator().manual_seed(cfg.seed)
    to_tensor = toy_preprocess().batch
    model.train()
    losses = []
    for step in tqdm(range(cfg.steps), desc="pretrain toy CLIP", disable=not progress):
        seed = int(np.random.SeedSequence([cfg.seed, step]).generate_state(1)[0])
        images, labels = glyphs.render_pretraining(range(n_classes), cfg.images_per_class, seed, cfg.colour,
                                                   cfg.nuisance, cfg.nuisance_max, cfg.style, cfg.plain_fonts)
        pick = torch.randint(len(cfg.templates), (n_classes,), generator=gen)  # (C,)
        tokens = captions[pick, torch.arange(n_classes)]  # (C, L)
        loss = _clip_loss(model.encode_image(to_tensor(images)), _text_features(model, embed, tokens),
                          torch.as_tensor(labels), model.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100.0))
        losses.append(float(loss.detach()))
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


SHIPPED = Path(__file__).parent / "weights" / "toy-clip.safetensors"  # built by `dmc pretrain-toy --ship`


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


def toy_cache_path(cfg: PretrainConfig) -> Path:
    """Checkpoint path in the user cache, keyed by `toy_key`."""
    return glyphs.cache_dir() / "toy" / f"toy-clip-{toy_key(cfg)}.safetensors"


def state_sha256(model: torch.nn.Module) -> str:
    """sha256 of the state dict (names, shapes and float bytes in name order): equal means bit-identical."""
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        digest.update(f"{name}{tuple(value.shape)}{value.dtype}".encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_toy(model: open_clip.CLIP, path: Union[str, Path]) -> Path:
    """Write the state dict as safetensors (atomic replace), with TOY_CONFIG in the metadata."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    return _write(state, Path(path), {"config": json.dumps(TOY_CONFIG, sort_keys=True)})


def _write(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> Path:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return path


def load_toy(path: Union[str, Path]) -> open_clip.CLIP:
    """Rebuild the toy CLIP and load a safetensors state dict exactly (strict)."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise UserError(f"toy CLIP checkpoint not found: {path}")
    model = build_toy()
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval()


def ship_toy(model: open_clip.CLIP, cfg: PretrainConfig, report: dict, path: Path = SHIPPED) -> Path:
    """Write the weights that ship with the package: every tensor but the token embedding, whose trained
    rows (the captions' vocabulary) are stored alone; the other 49,000 rows are exactly their initial values
    (see CaptionEmbedding), which `load_shipped` regenerates from the seed. About 8 MB instead of 34."""
    vocab = torch.unique(_caption_tokens(cfg, toy_tokenizer()))  # (V,)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()
             if k != "token_embedding.weight"}
    state["token_embedding.rows"] = model.token_embedding.weight.detach()[vocab].clone()  # (V, W)
    state["token_embedding.ids"] = vocab
    meta = {"config": json.dumps(TOY_CONFIG, sort_keys=True), "pretrain": json.dumps(asdict(cfg), sort_keys=True),
            "key": toy_key(cfg), "sha256": state_sha256(model),
            "report": json.dumps({k: v for k, v in report.items() if k != "losses"}, sort_keys=True)}
    return _write(state, Path(path), meta)


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


def pretraining_fonts(cfg: PretrainConfig) -> dict[str, list[dict[str, str]]]:
    """The font files (name, sha256) pretraining drew from: clean-style glyphs and renditions-style ones."""
    manifest = glyphs.font_manifest()
    plain = {"clean"} | ({"renditions"} if cfg.plain_fonts == "all" else set())
    return {"clean_style": [f for f in manifest if f["domain"] in plain],
            "renditions_style": [f for f in manifest if f["domain"] == "clean"]}


def build_and_cache(cfg: PretrainConfig) -> tuple[open_clip.CLIP, dict]:
    """Pretrain the toy CLIP now and store it (with its report as JSON) in the user cache."""
    path = toy_cache_path(cfg)
    minutes = cfg.steps * _SECONDS_PER_STEP / 60
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
