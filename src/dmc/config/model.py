"""Config sections of the CLIP model and its two trainable sides: the image tower and the soft prompts."""
from __future__ import annotations

from dataclasses import dataclass

from dmc.config.checks import Section, at_least, matches, one_of, positive, stage_epochs, within

TRAINABLE = r"none|all|full|last-[1-9][0-9]*"  # the depth limit of last-K needs the backbone (models.clip)


@dataclass
class ModelConfig(Section):
    backbone: str = "ViT-B-16"  # any open_clip model name, `tiny` (tests), or a registered one (the lab's `toy`); a benchmark preset names its own
    pretrained: str | None = None  # open_clip pretrained tag or weights file; None: the backbone's default (ViT-B-16: openai); random: no weights (dry runs)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16

    def check(self) -> None:
        matches(self, "device", r"auto|cpu|cuda(:[0-9]+)?", "auto, cpu, cuda, cuda:N")
        one_of(self, "precision", ("auto", "fp32", "bf16"))


@dataclass
class VisionConfig(Section):
    """Stage 1 of DMC and the vision side of `finetune` / `cotrain` / `joint`."""

    enabled: bool = True  # [reconstruction] DMC stage 1 on/off (ablation "stage 1 off")
    trainable: str = "all"  # [reconstruction] all (blocks+ln_post+proj) | last-K | full (incl. patch embed)
    lr: float = 3e-5  # [reconstruction] AdamW learning rate; gentle, chosen by measurement (docs/results.md)
    weight_decay: float = 0.01  # [reconstruction]
    epochs: int = 5  # [reconstruction]
    batch_size: int = 64  # [reconstruction]
    loss_scope: str = "task"  # [reconstruction] task (CE over C_t, measured best) / seen (over all seen classes)
    anchors: str = "prompts"  # [reconstruction] prompts (current prompt learner) | template
    distill: float = 0.0  # [reconstruction] weight of feature distillation to the tower before the stage (0 = off)
    average: float = 1.0  # [reconstruction] after the stage, keep this share of the new weights (WiSE-FT; 1 = off)

    def check(self) -> None:
        matches(self, "trainable", TRAINABLE, "none, all, full, last-K (K = 1..blocks)")
        one_of(self, "loss_scope", ("task", "seen"))
        one_of(self, "anchors", ("prompts", "template"))
        at_least(self, 0, "distill")
        within(self, "average", 0.0, 1.0)
        positive(self, "lr")
        at_least(self, 0, "weight_decay")
        at_least(self, 1, "batch_size")
        stage_epochs(self, "vision.enabled=false")


@dataclass
class PromptConfig(Section):
    """Stage 2 of DMC, `coop`, `cotrain`: CoOp-style soft prompts."""

    enabled: bool = True  # [reconstruction] DMC stage 2 on/off (ablation "stage 2 off")
    n_ctx: int | None = None  # [reconstruction] context tokens (per class or shared); None: the template prefix's length
    init: str = "template"  # [reconstruction] template (word embeddings of the template prefix) | random
    task_tokens: int = 0  # [paper: DMC-OT (b)] learnable tokens per task before the context; 0 = off
    task_init: str = "random"  # [reconstruction] a new task's tokens: random (N(0, 0.02^2)) | zeros | previous (a copy of the last task's trained tokens)
    context: str = "class"  # [reconstruction] class (CoOp's class-specific context; measured best, docs/results.md) | shared (CoOp's unified context)
    scale: float | None = None  # [reconstruction] logit scale of stage 2; None: CLIP's own
    lr: float = 2e-3  # [reconstruction] Adam learning rate
    epochs: int = 5  # [reconstruction] passes over the task's cached features
    batch_size: int = 64  # [reconstruction] real features per step
    views: int = 1  # [reconstruction] cached views per image (>1 adds augmented views)

    def check(self) -> None:
        one_of(self, "init", ("template", "random"))
        one_of(self, "task_init", ("random", "zeros", "previous"))
        one_of(self, "context", ("shared", "class"))
        positive(self, "scale")
        positive(self, "lr")
        at_least(self, 0, "n_ctx", "task_tokens")
        at_least(self, 1, "batch_size", "views")
        stage_epochs(self, "prompt.enabled=false")
