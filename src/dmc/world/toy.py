"""The toy CLIP (about 8.4M parameters): an open_clip `CLIP` built from a small config, its tokenizer and
image transform, and its weights as files.

It stands in for ViT-B/16 when no weights can be downloaded, so every code path (towers, tokenizer, logit
scale, locking) is the real one. How it learns the glyph world is `pretrain`; where the weights a run uses
come from (shipped with the package, the user cache, or pretrained now) is `shipped`.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from dmc.data.transforms import ArrayNormalize
from dmc.errors import UserError
from dmc.files import atomic_path
from dmc.models.clip import Backbone, template_text_features

TOY_CONFIG: dict = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 128, "layers": 6, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 4},
}
# Maps [0, 1] to [-1, 1] per channel: the glyph world has no natural-image colour statistics to match.
TOY_MEAN = (0.5, 0.5, 0.5)
TOY_STD = (0.5, 0.5, 0.5)


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
    return write_state(state, Path(path), {"config": json.dumps(TOY_CONFIG, sort_keys=True)})


def write_state(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> Path:
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

