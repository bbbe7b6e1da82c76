"""A thin wrapper over open_clip: build by name, freeze/unfreeze towers, encode text from embeddings.

Nothing of CLIP is re-implemented here: the towers are open_clip's modules and text encoding from token
embeddings follows open_clip's own `encode_text` (positional embedding, transformer with the causal mask,
ln_final, pooling with `text_global_pool`, projection).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from typing import Callable

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict
from open_clip.transformer import text_global_pool
from torch import nn

from dmc.data.transforms import ArrayNormalize, pil_then
from dmc.errors import UserError
from dmc.models import BACKBONES

log = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class Backbone:
    """A CLIP model with its tokenizer and image transforms."""

    name: str
    model: nn.Module  # open_clip.CLIP
    tokenizer: Callable[[list[str]], torch.Tensor]
    preprocess: Callable  # eval transform: PIL or uint8 array -> (3, H, W)
    preprocess_train: Callable  # training transform
    provenance: dict = field(default_factory=dict)  # what a run records about the weights (toy: recipe, sha256)


TINY_CONFIG = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=32, patch_size=8, width=32, layers=2, head_width=16),
    text_cfg=dict(context_length=32, vocab_size=49408, width=32, heads=2, layers=2),
)


def build_tiny(pretrained: str | None = None) -> Backbone:
    """Randomly initialised, very small CLIP for tests (seeded by the caller's global seed)."""
    model = open_clip.CLIP(**TINY_CONFIG)
    tok = open_clip.tokenizer.SimpleTokenizer(context_length=TINY_CONFIG["text_cfg"]["context_length"])
    norm = ArrayNormalize(OPENAI_MEAN, OPENAI_STD, size=TINY_CONFIG["vision_cfg"]["image_size"])
    return Backbone("tiny", model, tok, norm, norm)


DEFAULT_TAGS = {"ViT-B-16": "openai", "ViT-B-32": "openai", "ViT-L-14": "openai"}


def build_vit_b16(pretrained: str | None = None) -> Backbone:
    """CLIP ViT-B/16, OpenAI's weights unless `pretrained` names others: the paper's backbone."""
    return build_open_clip("ViT-B-16", pretrained)


def build_open_clip(name: str, pretrained: str | None) -> Backbone:
    """Any open_clip model by name and pretrained tag (or weights file; `random`: no weights, for dry runs
    at real scale). OpenAI weights need QuickGELU."""
    tag = pretrained if pretrained is not None else DEFAULT_TAGS.get(name)
    tag = None if tag == "random" else tag
    if name not in open_clip.list_models():
        raise UserError(f"unknown backbone {name!r}; choose tiny, toy or an open_clip model name "
                        f"(open_clip lists {len(open_clip.list_models())}, e.g. ViT-B-16, ViT-L-14)")
    quick = tag == "openai" and not name.endswith("-quickgelu")
    try:
        model = open_clip.create_model(name, pretrained=tag, force_quick_gelu=quick, require_pretrained=tag is not None)
    except (RuntimeError, OSError, ValueError) as exc:
        raise UserError(_weights_hint(name, tag, exc)) from None
    train_tf, eval_tf = image_transforms(model, name, tag)
    return Backbone(name, model, open_clip.get_tokenizer(name), pil_then(eval_tf), pil_then(train_tf))


def image_transforms(model: nn.Module, name: str, tag: str | None) -> tuple[Callable, Callable]:
    """Training and evaluation transforms of the pretrained tag: its own mean, std, interpolation and
    resize mode from open_clip's pretrained config (SigLIP's 0.5 / 0.5, not OpenAI's for every tag), at the
    image tower's input size. Weights given as a file have no config: the model config's (OpenAI's)."""
    cfg = merge_preprocess_dict(getattr(model.visual, "preprocess_cfg", None) or PreprocessCfg(),
                                open_clip.get_pretrained_cfg(name, tag) if tag else {})
    cfg["size"] = model.visual.image_size
    pp = PreprocessCfg(**cfg)
    return image_transform_v2(pp, is_train=True), image_transform_v2(pp, is_train=False)


def _weights_hint(name: str, tag: str | None, exc: Exception) -> str:
    if tag and os.path.isfile(tag):
        return _file_hint(name, tag, exc)
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    where = ("HF_HUB_OFFLINE=1 is set, so nothing is downloaded; " if offline else "")
    return (f"cannot load weights {tag!r} for {name}: {where}run once on a machine with internet to fill the "
            f"Hugging Face cache (or pass --set model.pretrained=/path/to/weights.bin); "
            f"{str(exc).splitlines()[0][:160]}")


def build_backbone(name: str, pretrained: str | None = None) -> Backbone:
    """The backbone `name` with weights `pretrained` (a tag or a file). A weights file that is not one for
    this backbone (a pickle of something else, a run's checkpoint, bytes of no format) is a UserError in
    one line, whatever the loader raised."""
    try:
        backbone = BACKBONES.get(name)(pretrained) if name in BACKBONES else build_open_clip(name, pretrained)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - pickle, safetensors and torch raise their own kinds
        if not (pretrained and os.path.isfile(pretrained)):
            raise
        raise UserError(_file_hint(name, pretrained, exc)) from None
    return at_input_size(backbone)


def _file_hint(name: str, path: str, exc: Exception) -> str:
    """The one line of a weights file that does not load into backbone `name`."""
    reason = (str(exc).strip().splitlines() or [""])[0][:160]
    return (f"cannot load the weights file {path} for backbone {name} ({type(exc).__name__}: {reason}); give "
            f"weights made for {name} (a dmc run's checkpoint holds what a method trained, not a backbone)")


def input_size(visual: nn.Module) -> int:
    """The side of the square images the image tower takes (open_clip stores an int or a pair)."""
    size = visual.image_size
    return int(size if isinstance(size, int) else size[0])


def at_input_size(backbone: Backbone) -> Backbone:
    """Every transform brings images to the tower's input size: array transforms built without a size
    (the toy CLIP's) get it here; open_clip's transforms resize already."""
    size = input_size(backbone.model.visual)

    def fix(tf: Callable) -> Callable:
        return tf.sized(size) if isinstance(tf, ArrayNormalize) and tf.size is None else tf

    return dataclasses.replace(backbone, preprocess=fix(backbone.preprocess),
                               preprocess_train=fix(backbone.preprocess_train))


def require_token_embedding(backbone: Backbone) -> None:
    """Prompt learning feeds learned vectors to the text tower's token embedding layer, which only
    open_clip's `CLIP` class exposes (OpenAI, LAION, DataComp, MetaCLIP, EVA... ViT and ResNet CLIPs).
    Models with a custom text tower (SigLIP, CoCa, HF text encoders: `CustomTextCLIP`) stop in one line."""
    model = backbone.model
    if not all(hasattr(model, a) for a in ("token_embedding", "positional_embedding", "transformer", "ln_final")):
        raise UserError(f"backbone {backbone.name!r} ({type(model).__name__}) has no text token embedding, which "
                        "prompt learning needs: use an open_clip CLIP with the built-in text transformer (OpenAI, "
                        "LAION, DataComp, MetaCLIP ViT / ResNet), not a custom text tower (SigLIP, CoCa, HF text); "
                        "methods without prompts (zeroshot, finetune, rapf) take any")


# --------------------------------------------------------------------------- freezing
def vision_trainable_params(visual: nn.Module, trainable: str) -> list[nn.Parameter]:
    """Parameters of the image tower trained in stage 1.

    trainable (as checked by VisionConfig): "none"; "last-K" (last K transformer blocks + ln_post + proj);
    "all" (every block + ln_post + proj; patch embedding, class/positional embedding and ln_pre stay
    frozen); "full". Only the depth limit of last-K needs the tower, so only it is checked here.
    """
    if trainable == "none":
        return []
    if trainable == "full":
        return list(visual.parameters())
    blocks = list(visual.transformer.resblocks)
    k = len(blocks) if trainable == "all" else int(trainable.removeprefix("last-"))
    if k > len(blocks):
        raise UserError(f"bad value for vision.trainable: {trainable!r}; the tower has {len(blocks)} blocks")
    params = [p for b in blocks[len(blocks) - k:] for p in b.parameters()]
    params += list(visual.ln_post.parameters())
    if isinstance(visual.proj, nn.Parameter):
        params.append(visual.proj)
    return params


def set_trainable(params: list[nn.Parameter]) -> None:
    for p in params:
        p.requires_grad_(True)


# --------------------------------------------------------------------------- encoding
def encode_text_embeddings(model: nn.Module, emb: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """open_clip's encode_text, starting from token embeddings (C, L, W) instead of ids.

    `ids` (C, L) are the token ids the embeddings stand for; they only locate the pooled (EOT) token.
    L may be shorter than the context length: with the causal mask, positions after the last EOT never
    influence the pooled token, so callers may trim them (exact, and 2-4x cheaper for short prompts).
    Returns unnormalised text features (C, D).
    """
    cast = model.transformer.get_cast_dtype()
    n = emb.shape[1]
    x = emb.to(cast) + model.positional_embedding[:n].to(cast)  # (C, L, W)
    mask = model.attn_mask[:n, :n] if model.attn_mask is not None else None
    x = model.transformer(x, attn_mask=mask)
    x = model.ln_final(x)
    x = text_global_pool(x, ids, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if isinstance(model.text_projection, nn.Linear):
        return model.text_projection(x)
    return x @ model.text_projection if model.text_projection is not None else x


@torch.no_grad()
def template_text_features(backbone: Backbone, names: list[str], template: str,
                           device: torch.device | str = "cpu") -> torch.Tensor:
    """Normalised text features (C, D) of `template.format(name)` for each class name."""
    ids = backbone.tokenizer([template.format(n) for n in names]).to(device)
    return F.normalize(backbone.model.encode_text(ids), dim=-1)
