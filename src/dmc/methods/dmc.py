"""DMC and DMC-OT: decoupled modality training with a class-wise Gaussian memory.

Per task t: (1) adapt the image tower against frozen text anchors (stage 1); (2) the memory step of
`PromptReplay`: calibrate the stored statistics of old classes across that encoder update (DMC-OT), store
the new classes' statistics under the adapted encoder; (3) learn the soft prompts against the frozen image
tower on cached features of task t plus pseudo-features of old classes drawn from the memory (stage 2).
`cotrain` trains both modalities at once instead (methods/cotrain.py).
"""
from __future__ import annotations

import torch
from torch import nn

from dmc.methods.prompt_replay import PromptReplay
from dmc.methods.stages import average_weights, train_prompts, train_vision
from dmc.training.task import Task


class DMC(PromptReplay):
    """DMC: no calibration, no task tokens (its line in the method table)."""

    def anchors(self, classes: list[int]) -> torch.Tensor:
        """Frozen text anchors of stage 1: the current prompts (template prompts before any training)."""
        if self.cfg.vision.anchors == "template":
            return self.template_features(classes)
        with torch.no_grad():
            return self.prompts(classes)

    def keeps_tower(self) -> bool:
        """Stage 1's restraints compare with the tower before it: feature distillation, weight averaging."""
        return self.cfg.vision.distill > 0 or self.cfg.vision.average < 1

    def stage1(self, task: Task, before: nn.Module | None) -> dict:
        """The image tower against frozen text anchors, restrained toward `before` if asked."""
        v = self.cfg.vision
        if not v.enabled:
            return {}
        scope = task.seen if v.loss_scope == "seen" else task.classes
        teacher = before if v.distill > 0 else None
        loss = train_vision(self.model.visual, self.anchors(scope), scope, task, v, self.rt, self.scale(),
                            teacher=teacher)
        if before is not None and v.average < 1:
            average_weights(self.model.visual, before, v.average)
        return {"stage1_loss": loss}

    def stage2(self, task: Task, feats: torch.Tensor, labels: torch.Tensor) -> dict:
        """The prompts against the frozen tower, on the cached features plus replayed old classes."""
        p = self.cfg.prompt
        if not p.enabled:
            return {}
        feats, labels = self._stage2_features(task, feats, labels)
        loss = train_prompts(self.prompts, feats, labels, task.seen, task, p, self.rt, p.scale or self.scale(),
                             replay=self.replay_fn(task))
        return {"stage2_loss": loss}

    def _stage2_features(self, task: Task, feats: torch.Tensor, labels: torch.Tensor):
        """The feature cache of stage 2: the plain view plus `prompt.views - 1` augmented views."""
        views_f, views_l = [feats], [labels]
        for v in range(self.cfg.prompt.views - 1):
            f, y = self.encode(task.train, f"task {task.index + 1} view {v + 2}")
            views_f.append(f)
            views_l.append(y)
        return torch.cat(views_f), torch.cat(views_l)


class DMCOT(DMC):
    """DMC-OT: DMC with (a) the OT calibration of old classes' statistics and (b) task-specific prompt
    tokens, both of DMC's code, set by its line in the method table (`calibration.method=ot`,
    `prompt.task_tokens=2`, and stage 1's anchors leave the new task's untrained tokens out)."""
