"""Co-training: the image tower and the soft prompts learn from one loss at the same time, what DMC
decouples. The same prompts, memory, replay and losses as DMC; the prompts are their own optimiser group
with stage 2's settings, so co-training differs from DMC in the schedule only."""
from __future__ import annotations

import torch
from torch import nn

from dmc.methods.prompt_replay import PromptReplay
from dmc.methods.stages import train_vision
from dmc.training.features import label_lut
from dmc.training.losses import cross_entropy
from dmc.training.task import Task


class CoTrain(PromptReplay):
    def stage1(self, task: Task, before: nn.Module | None) -> dict:
        """Both modalities at once: vision and prompts receive gradients from the same loss. The prompt
        prototypes of all seen classes are computed once per step and serve both loss terms."""
        scope = task.seen if self.cfg.vision.loss_scope == "seen" else task.classes
        learner, replay = self.rt.wrap(self.prompts), self.replay_fn(task)
        cols = torch.as_tensor([task.seen.index(c) for c in scope], device=self.rt.device)
        step: dict = {}

        def anchors() -> torch.Tensor:
            step["protos"] = learner(task.seen)  # (C_seen, D)
            return step["protos"][cols]

        def extra() -> torch.Tensor:
            feats, labels = replay()
            lut = label_lut(task.seen, feats.device)
            return cross_entropy(self.logits(feats, step["protos"]), lut[labels], self.rt)

        loss = train_vision(self.model.visual, anchors, scope, task, self.cfg.vision, self.rt, self.scale(),
                            extra_group=self.prompt_group(), extra_loss=extra if replay is not None else None,
                            desc="co-training")
        return {"cotrain_loss": loss}

    def prompt_group(self) -> dict:
        """The prompts as an optimiser group with stage 2's settings (lr `prompt.lr`, no weight decay)."""
        return {"params": list(self.prompts.parameters()), "lr": self.cfg.prompt.lr, "weight_decay": 0.0}
