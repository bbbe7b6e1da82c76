"""DMC and DMC-OT: decoupled modality training with a class-wise Gaussian memory.

Per task t: (1) adapt the image tower against frozen text anchors (stage 1); (2) calibrate the stored
statistics of old classes across that encoder update (DMC-OT; `calibration.method`); (3) store the new
classes' Gaussian statistics under the adapted encoder; (4) learn the soft prompts against the frozen
image tower on cached features of task t plus pseudo-features of old classes drawn from the memory
(stage 2). `dmc.decoupled=false` trains both modalities at once instead (the `cotrain` ablation).
"""
from __future__ import annotations

import copy
import time

import torch

from dmc.calibration import calibrate_gaussians
from dmc.memory.gaussian import GaussianBank
from dmc.methods.base import METHODS, Method
from dmc.methods.diagnostics import drift_errors
from dmc.methods.stages import average_weights, train_prompts, train_vision
from dmc.models.prompts import PromptLearner
from dmc.training.features import label_lut
from dmc.training.losses import cross_entropy
from dmc.training.task import Task


@METHODS.register("dmc")
class DMC(Method):
    name = "dmc"
    frozen_image_encoder = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        p = self.cfg.prompt
        self.prompts = PromptLearner(self.backbone, self.template, n_ctx=p.n_ctx, init=p.init,
                                     n_task=p.task_tokens, task_init=p.task_init,
                                     context=p.context).to(self.rt.device)
        self.bank = GaussianBank(self.cfg.memory, device=self.rt.device)
        self.learned.update({"prompt": self.prompts, "memory": self.bank})

    def begin_task(self, task: Task) -> None:
        self.prompts.add_task(task.names)

    # ---- stages
    def anchors(self, classes: list[int]) -> torch.Tensor:
        """Frozen text anchors of stage 1: the current prompts (template prompts before any training)."""
        if self.cfg.vision.anchors == "template":
            return self.template_features(classes)
        with torch.no_grad():
            return self.prompts(classes)

    def replay_fn(self, task: Task):
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

    def train_task(self, task: Task) -> dict:
        info: dict = {"time_s": {}}
        clock = time.time()
        scope = task.seen if self.cfg.vision.loss_scope == "seen" else task.classes
        v, diag = self.cfg.vision, self.cfg.diagnostics
        keep_old = task.index > 0 and (self.cfg.calibration.method != "none" or diag.drift or v.distill > 0
                                       or v.average < 1 or diag.oracle_stats)
        old_visual = copy.deepcopy(self.model.visual).eval() if keep_old else None
        if not self.cfg.dmc.decoupled:
            info["cotrain_loss"] = self._cotrain(task, scope)
        elif v.enabled:
            teacher = old_visual if v.distill > 0 else None
            info["stage1_loss"] = train_vision(self.model.visual, self.anchors(scope), scope, task, v, self.rt,
                                               self.scale(), teacher=teacher)
            if old_visual is not None and v.average < 1:
                average_weights(self.model.visual, old_visual, v.average)
        info["time_s"]["stage1"] = time.time() - clock
        clock = time.time()
        feats, labels = self.encode(task.train_plain, f"task {task.index + 1} features")
        if old_visual is not None:
            info.update(self._calibrate(task, old_visual, feats))
        for c in task.classes:
            self.bank.add(c, feats[labels == c])
        info["time_s"]["memory"] = time.time() - clock
        clock = time.time()
        if self.cfg.dmc.decoupled and self.cfg.prompt.enabled:
            feats, labels = self._stage2_features(task, feats, labels)
            info["stage2_loss"] = train_prompts(self.prompts, feats, labels, task.seen, task, self.cfg.prompt,
                                                self.rt, self.cfg.prompt.scale or self.scale(),
                                                replay=self.replay_fn(task))
        info["time_s"]["stage2"] = time.time() - clock
        return info

    def _stage2_features(self, task: Task, feats: torch.Tensor, labels: torch.Tensor):
        """The feature cache of stage 2: the plain view plus `prompt.views - 1` augmented views."""
        views_f, views_l = [feats], [labels]
        for v in range(self.cfg.prompt.views - 1):
            f, y = self.encode(task.train, f"task {task.index + 1} view {v + 2}")
            views_f.append(f)
            views_l.append(y)
        return torch.cat(views_f), torch.cat(views_l)

    def _cotrain(self, task: Task, scope: list[int]) -> list[float]:
        """Both modalities at once: vision and prompts receive gradients from the same loss. The prompt
        prototypes of all seen classes are computed once per step and serve both loss terms."""
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

        return train_vision(self.model.visual, anchors, scope, task, self.cfg.vision, self.rt, self.scale(),
                            extra_group=self.prompt_group(),
                            extra_loss=extra if replay is not None else None, desc="co-training")

    def prompt_group(self) -> dict:
        """The prompts as an optimiser group with stage 2's settings (lr `prompt.lr`, no weight decay), so
        that co-training differs from DMC in the schedule only, not in how the prompts are optimised."""
        return {"params": list(self.prompts.parameters()), "lr": self.cfg.prompt.lr, "weight_decay": 0.0}

    def _calibrate(self, task: Task, old_visual: torch.nn.Module, new_feats: torch.Tensor) -> dict:
        """DMC-OT (a): move old classes' statistics along the drift seen on task t's images."""
        old_classes = task.old
        stored_means, stored_covs = self.bank.means(old_classes), self.bank.covs(old_classes)
        out: dict = {}
        if self.cfg.calibration.method != "none":
            old_feats, _ = self.encode(task.train_plain, "old-encoder features", visual=old_visual)
            means, covs = calibrate_gaussians(stored_means, stored_covs, old_feats, new_feats,
                                              self.cfg.calibration, task.generator_on(self.rt.device))
            for i, c in enumerate(old_classes):
                self.bank.set_stats(c, means[i], covs[i])
        diag = self.cfg.diagnostics
        if (diag.drift or diag.oracle_stats) and task.reference is not None:
            true_feats, true_labels = self.encode(task.reference(old_classes), "drift diagnostics")
            cal_means, cal_covs = self.bank.means(old_classes), self.bank.covs(old_classes)
            out["drift"] = drift_errors(stored_means, stored_covs, cal_means, cal_covs, true_feats, true_labels,
                                        old_classes, self.cfg.memory)
            if diag.oracle_stats:  # the calibration ceiling: the true statistics under the current encoder
                for c in old_classes:
                    self.bank.add(c, true_feats[true_labels == c])
        return out

    # ---- evaluation
    @torch.no_grad()
    def class_features(self, classes: list[int]) -> torch.Tensor:
        return self.prompts(classes)


METHODS.register("dmc-ot")(type("DMCOT", (DMC,), {"name": "dmc-ot"}))
METHODS.register("cotrain")(type("CoTrain", (DMC,), {"name": "cotrain"}))
