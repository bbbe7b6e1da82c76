"""What dmc, dmc-ot and cotrain share: soft prompts for every seen class, a Gaussian memory of every class's
image features, and the memory step between what trains the image tower and what trains after it.

Per task t: (1) `stage1` trains the image tower (DMC's stage 1; co-training trains the prompts with it);
(2) the memory step: the calibration (`calibration.method`, a strategy of dmc.calibration) moves the stored
statistics of old classes across that update, the loop's observers see them (drift diagnostics), and the
new classes' statistics are stored under the adapted tower; (3) `stage2` trains what is left (DMC's
prompts, on cached features plus pseudo-features of old classes drawn from the memory).
"""
from __future__ import annotations

import copy
import time
from typing import Callable

import torch
from torch import nn

from dmc.calibration import make_calibration
from dmc.memory.gaussian import GaussianBank
from dmc.methods.base import Method, Needs
from dmc.methods.classifier import CosineClassifier
from dmc.models.prompts import PromptLearner
from dmc.training.task import Task

Replay = Callable[[], tuple[torch.Tensor, torch.Tensor]]


class PromptReplay(Method):
    uses = ("vision", "prompt", "replay", "memory", "calibration")
    frozen_image_encoder = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        p = self.cfg.prompt
        self.prompts = PromptLearner(self.backbone, self.template, n_ctx=p.n_ctx, init=p.init,
                                     n_task=p.task_tokens, task_init=p.task_init,
                                     context=p.context).to(self.rt.device)
        self.bank = GaussianBank(self.cfg.memory, device=self.rt.device)
        self.calibration = make_calibration(self.cfg.calibration)
        self.learned.update({"prompt": self.prompts, "memory": self.bank})

    def begin_task(self, task: Task) -> None:
        self.prompts.add_task(task.names)

    def train_task(self, task: Task) -> dict:
        info: dict = {"time_s": {}}
        clock = time.time()
        before = self.tower_before(task)
        info.update(self.stage1(task, before))
        info["time_s"]["stage1"] = time.time() - clock
        clock = time.time()
        feats, labels = self.encode(task.train_plain, f"task {task.index + 1} features")
        info.update(self.remember(task, before, feats, labels))
        info["time_s"]["memory"] = time.time() - clock
        clock = time.time()
        info.update(self.stage2(task, feats, labels))
        info["time_s"]["stage2"] = time.time() - clock
        return info

    # ---- what a method of the family trains, before and after the memory step
    def stage1(self, task: Task, before: nn.Module | None) -> dict:
        """Train the image tower (`before`: its frozen copy from before the task, when one was kept)."""
        return {}

    def stage2(self, task: Task, feats: torch.Tensor, labels: torch.Tensor) -> dict:
        """Train on the task's cached features (N, D) and labels (N,), after the memory step."""
        return {}

    def keeps_tower(self) -> bool:
        """Whether stage 1 itself compares the tower with its copy from before the task."""
        return False

    def adapts_tower(self, task: Task) -> bool:
        """Whether `stage1` may change the image tower in this task; when it cannot, the stored statistics
        are still exact and nothing is calibrated (a method that adapts on some tasks only says so here)."""
        return True

    # ---- the memory step
    def tower_before(self, task: Task) -> nn.Module | None:
        """A frozen copy of the image tower before this task trains it, kept when something compares with
        it: the calibration (the task's images under the old tower) or stage 1 (`keeps_tower`)."""
        if task.index == 0 or not self.adapts_tower(task) or not (self.calibration.needs_features
                                                                   or self.keeps_tower()):
            return None
        return copy.deepcopy(self.model.visual).eval()

    def remember(self, task: Task, before: nn.Module | None, feats: torch.Tensor, labels: torch.Tensor) -> dict:
        """Old classes' statistics follow the tower's update (the calibration) and the observers see them;
        then the new classes' statistics are stored. Returns what the observers measured."""
        out: dict = {}
        if task.index > 0:
            old = task.old
            stored = self.bank.means(old), self.bank.covs(old)  # (O, D), (O, D, D) or (O, D)
            paired = None  # the task's features under the old and the new tower, when calibrated
            if self.calibration.needs_features and self.adapts_tower(task):
                old_feats, _ = self.encode(task.train_plain, "old-encoder features", visual=before)
                paired = (old_feats, feats)
                means, covs, _ = self.calibration(*stored, old_feats, feats, task.generator_on(self.rt.device))
                for i, c in enumerate(old):
                    self.bank.set_stats(c, means[i], covs[i])
            out = self.observe("calibrated", task, stored=stored, paired=paired)
        for c in task.classes:
            self.bank.add(c, feats[labels == c])
        return out

    def replay_fn(self, task: Task) -> Replay | None:
        """Per step, `replay.per_class` pseudo-features of every old class. Every rank draws the whole
        global replay batch from the same generator (what one process draws) and keeps its share, so the
        ranks' union is exactly the single-process batch and the real/replayed ratio does not depend on
        the number of processes."""
        if not (self.cfg.replay.enabled and task.old):
            return None
        old, n = task.old, self.cfg.replay.per_class
        gen = task.generator_on(self.rt.device)

        def draw() -> tuple[torch.Tensor, torch.Tensor]:
            feats, labels = self.bank.sample(old, n, gen)  # (O*n, D), (O*n,): the global replay batch
            return self.rt.share(feats).to(self.rt.device), self.rt.share(labels).to(self.rt.device)

        return draw

    # ---- evaluation
    @torch.no_grad()
    def classifier(self, classes: list[int]) -> CosineClassifier:
        return CosineClassifier(self.prompts(classes))  # (C, D) prompt features

    def needs(self) -> Needs:
        return Needs(calibration=True)
