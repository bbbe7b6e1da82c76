"""CoOp-style prompt learner with optional task-specific tokens (DMC-OT (b)).

Class c's text input is  [SOS] T_{k(c)} V_1..V_M  <name_c><suffix> [EOS]  where T_k are `n_task` tokens
owned by task k (the task that introduced c), the suffix is the template's text after "{}" (usually ".")
and the context V is shared by all classes (`context="shared"`, CoOp's unified context) or owned by each
class (`context="class"`, CoOp's class-specific context: V_c). Token-id buffers are derived from the class
list and rebuilt when classes are added; only the learnable vectors are checkpointed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dmc.errors import UserError
from dmc.models.clip import Backbone, encode_text_embeddings, require_token_embedding

PLACEHOLDER = "X"


class PromptLearner(nn.Module):
    def __init__(self, backbone: Backbone, template: str, n_ctx: int | None = None, init: str = "template",
                 n_task: int = 0, task_init: str = "random", context: str = "shared") -> None:
        super().__init__()
        if template.count("{}") != 1:
            raise UserError(f"prompt template must contain one '{{}}': {template!r}")
        require_token_embedding(backbone)
        self.backbone = [backbone]  # a list, so the CLIP weights are not registered as submodule
        self.prefix, self.suffix = template.split("{}")
        prefix_emb = self._prefix_embedding()  # (P, W)
        self.n_ctx = prefix_emb.shape[0] if n_ctx is None else n_ctx
        self.n_task, self.task_init, self.init, self.context = n_task, task_init, init, context
        shared = self._init_vectors(self.n_ctx, init, prefix_emb) if context == "shared" else prefix_emb[:0]
        # (M, W) shared context; (0, W) with class-specific contexts. Empty vectors never train (DDP requires
        # every trainable parameter to receive a gradient).
        self.ctx = nn.Parameter(shared, requires_grad=shared.numel() > 0)
        self.task_ctx = nn.ParameterList()  # one (n_task, W) per task
        self.class_ctx = nn.ParameterList()  # context="class": one (C_k, M, W) per task
        self.names: list[str] = []
        self.task_of: list[int] = []  # task index of each class (position in `names`)
        self.slot_of: list[int] = []  # position of each class within its task
        self.register_buffer("ids", torch.zeros(0, 0, dtype=torch.long), persistent=False)

    @property
    def model(self) -> nn.Module:
        return self.backbone[0].model

    def _prefix_embedding(self) -> torch.Tensor:
        ids = self.backbone[0].tokenizer([self.prefix.strip()])[0]
        n = int((ids > 0).sum()) - 2  # drop SOS/EOS
        with torch.no_grad():
            return self.model.token_embedding(ids[1:1 + n]).detach().clone()

    def _init_vectors(self, n: int, init: str, prefix_emb: torch.Tensor) -> torch.Tensor:
        """(n, W) vectors: "random" (N(0, 0.02^2)) or "template" (the prefix's word embeddings, which
        needs n equal to the prefix length: only known with the tokenizer, so checked here)."""
        if init == "random":
            return torch.randn(n, self.model.token_embedding.weight.shape[1]) * 0.02
        if n != prefix_emb.shape[0]:
            raise UserError(f"prompt.init=template needs n_ctx equal to the template prefix length "
                            f"({prefix_emb.shape[0]} tokens for {self.prefix!r}); got {n}")
        return prefix_emb.clone()

    def add_task(self, names: list[str]) -> int:
        """Register a new task's classes (and its task tokens / class contexts); returns the task index."""
        task = len(self.task_ctx)
        vec = self._task_vectors(task)
        self.task_ctx.append(nn.Parameter(vec, requires_grad=vec.numel() > 0))
        if self.context == "class":
            one = self._init_vectors(self.n_ctx, self.init, self._prefix_embedding())  # (M, W)
            self.class_ctx.append(nn.Parameter(one.expand(len(names), -1, -1).clone().to(self.ctx.device)))
        self.names += list(names)
        self.task_of += [task] * len(names)
        self.slot_of += list(range(len(names)))
        self._rebuild()
        return task

    def _task_vectors(self, task: int) -> torch.Tensor:
        """The new task's tokens (n_task, W): random N(0, 0.02^2), zeros, or a copy of the previous task's
        trained tokens ("previous"; zeros for the first task)."""
        width = self.ctx.shape[1]
        if not self.n_task:
            return torch.zeros(0, width, device=self.ctx.device)
        if self.task_init == "random":
            return self._init_vectors(self.n_task, "random", self._prefix_embedding()).to(self.ctx.device)
        if self.task_init == "previous" and task > 0:
            return self.task_ctx[task - 1].detach().clone()
        return torch.zeros(self.n_task, width, device=self.ctx.device)

    def _rebuild(self) -> None:
        slots = " ".join([PLACEHOLDER] * (self.n_task + self.n_ctx))
        texts = [f"{slots} {name}{self.suffix}".strip() for name in self.names]
        self.ids = self.backbone[0].tokenizer(texts).to(self.ctx.device)  # (C, L)

    def freeze_task_tokens(self, before: int) -> None:
        """Stop gradients to the task tokens of tasks < before (coop: earlier prompts frozen)."""
        for k, p in enumerate(self.task_ctx):
            p.requires_grad_(k >= before and p.numel() > 0)

    def forward(self, classes: torch.Tensor | list[int] | None = None) -> torch.Tensor:
        """Normalised text features (C, D) of the given class positions (default: all)."""
        idx = torch.arange(len(self.names)) if classes is None else torch.as_tensor(classes)
        ids = self.ids[idx.to(self.ids.device)]  # (C, L)
        if getattr(self.model, "text_pool_type", "argmax") == "argmax":
            ids = ids[:, : int(ids.argmax(dim=1).max()) + 1]  # trim after the last EOT (causal mask: exact)
        emb = self.model.token_embedding(ids)  # (C, L', W)
        n_slots = self.n_task + self.n_ctx
        if n_slots:
            learned = [torch.cat([self.task_ctx[self.task_of[c]], self._context(c)], 0) for c in idx.tolist()]
            emb = torch.cat([emb[:, :1], torch.stack(learned).to(emb.dtype), emb[:, 1 + n_slots:]], 1)
        return F.normalize(encode_text_embeddings(self.model, emb, ids), dim=-1)

    def _context(self, c: int) -> torch.Tensor:
        """Class c's context vectors (M, W): the shared ones, or its own."""
        if self.context == "shared":
            return self.ctx
        return self.class_ctx[self.task_of[c]][self.slot_of[c]]
