"""Baselines on the shared loop: zeroshot, finetune, joint, coop."""
from __future__ import annotations

import torch

from dmc.methods.base import Method
from dmc.methods.classifier import CosineClassifier
from dmc.methods.stages import train_prompts, train_vision
from dmc.models.prompts import PromptLearner
from dmc.training.task import Task


class ZeroShot(Method):
    """Frozen CLIP with the benchmark's template prompts: the base method as it is."""

    frozen_image_encoder = True


class Finetune(Method):
    """Sequential adaptation of the image tower against frozen template text (no replay)."""

    uses = ("vision",)
    frozen_image_encoder = False

    def train_task(self, task: Task) -> dict:
        scope = task.seen if self.cfg.vision.loss_scope == "seen" else task.classes
        anchors = self.template_features(scope)
        loss = train_vision(self.model.visual, anchors, scope, task, self.cfg.vision, self.rt, self.scale(),
                            desc="finetune")
        return {"stage1_loss": loss}


class Joint(Finetune):
    """Upper bound: every class in one task, same trainable part and recipe as `finetune`."""

    single_task = True


class CoOp(Method):
    """Sequential task-specific soft prompts, each trained on its own task only, vision frozen, earlier
    prompts frozen: the classifier-bias baseline of the paper's abstract."""

    uses = ("prompt",)
    frozen_image_encoder = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        n_prefix = PromptLearner(self.backbone, self.template).n_ctx
        self.prompts = PromptLearner(self.backbone, self.template, n_ctx=0, init="random",
                                     n_task=self.cfg.prompt.n_ctx or n_prefix,
                                     task_init=self.cfg.prompt.init).to(self.rt.device)
        self.learned["prompt"] = self.prompts

    def begin_task(self, task: Task) -> None:
        self.prompts.add_task(task.names)
        self.prompts.freeze_task_tokens(before=task.index)

    def train_task(self, task: Task) -> dict:
        feats, labels = self.encode(task.train_plain, f"task {task.index + 1} features")
        losses = train_prompts(self.prompts, feats, labels, task.classes, task, self.cfg.prompt, self.rt,
                               self.scale(), desc="coop")
        return {"stage2_loss": losses}

    @torch.no_grad()
    def classifier(self, classes: list[int]) -> CosineClassifier:
        return CosineClassifier(self.prompts(classes))  # (C, D) prompt features
