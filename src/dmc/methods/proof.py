"""PROOF: task-specific projections on frozen CLIP and a cross-modal fusion of image, visual prototypes,
class text and context prompts, with exemplar replay.

Reconstructed from Zhou, Zhang, Wang, Ning, Ye, Zhan, Liu, "Learning without Forgetting for
Vision-Language Models" (TPAMI 2025, arXiv 2305.19270), with the hyper-parameters of the authors' released
configs (``proof.*``, ``memory.exemplar_*`` in the presets; provenance in docs/method.md).

Model. Both CLIP towers are frozen. Image features z and the template text features w_c (both L2-normalised)
pass through expandable projections P_i, P_t (one linear map D -> D per task, outputs summed, the maps of
earlier tasks frozen). Each class also has a visual prototype p_c, the normalised mean of its training
images' features, computed when the class arrives and kept (D floats, not images). With hats for
L2-normalised vectors, the fusion layer (``models.fusion.ContextFusion``: self-attention with residual and
LayerNorm) reads, per image, the sequence [P_i(z)^; P_t(w_1..C)^; P_i(p_1..C)^; context prompts] and
returns fused features q (the image), t_c (texts) and r_c (prototypes); ``proof.context_per_task`` learnable
prompts join per task, earlier ones frozen; the fusion layer itself is shared and keeps training.

Training on task t, on the task's images plus the exemplars of old classes (the harness' exemplar memory;
``memory.exemplars_per_class`` / ``memory.exemplar_budget``, herding), cross-entropy over all seen classes:

    L = CE(<q, t_c>, y) + CE(<q, r_c>, y) + L_clip(P_i(z)^, P_t(w_y)^),

the image-text and image-prototype matching of the fused features (raw dot products of LayerNorm outputs,
as the released code) and the symmetric CLIP contrastive loss between each image and its class text in the
batch (scale: CLIP's logit scale). Inference: argmax_c of cos(P_i(z), P_t(w_c)) + <q, t_c> + <q, r_c>.
After training, herding picks the new classes' exemplars on frozen CLIP features.

[reconstruction] choices: the fusion runs per image, so the fused class tokens t_c, r_c are each image's
own (the released code averages them over the batch, which makes a test prediction depend on its batch);
projections read normalised features on both sides and the image feature is normalised at test time as in
training (the released code projects raw features and tests unnormalised ones); features are encoded once
per task with the evaluation transform and cached (the code re-encodes augmented images every epoch);
one template (the benchmark's) instead of an ensemble at test time; CLIP's logit scale stays frozen (the
code trains it); the old text projections are frozen, as the paper says (the code keeps training them);
the shared ``fit`` loop, whose cosine schedule steps per batch rather than per epoch.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dmc.analytic import class_means
from dmc.methods.base import Method
from dmc.methods.classifier import Classifier
from dmc.models.fusion import ContextFusion, ExpandableProjection
from dmc.training.features import feature_batches, label_lut
from dmc.training.fit import fit
from dmc.training.losses import cross_entropy
from dmc.training.task import Task


def clip_loss(img: Tensor, txt: Tensor, scale: float) -> Tensor:
    """Symmetric InfoNCE of CLIP: img (B, D) and txt (B, D) normalised, row b of each is a pair. Under
    torchrun the pairs contrast within each rank's share of the batch (as PROOF's own multi-GPU code)."""
    logits = scale * img @ txt.t()  # (B, B)
    target = torch.arange(len(img), device=img.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


class ProofHead(nn.Module):
    """Projections, fusion layer and visual prototypes (one row per remapped label) of PROOF."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.image, self.text = ExpandableProjection(dim), ExpandableProjection(dim)
        self.fusion = ContextFusion(dim, heads, dropout)
        self.register_buffer("prototypes", torch.zeros(0, dim))

    def add_task(self, n_labels: int, n_context: int) -> None:
        """A new projection pair and n_context prompts; prototype rows for every label below n_labels."""
        self.image.add(self.prototypes.device)
        self.text.add(self.prototypes.device)
        self.fusion.add_context(n_context)
        if len(self.prototypes) < n_labels:
            pad = self.prototypes.new_zeros(n_labels - len(self.prototypes), self.prototypes.shape[1])
            self.prototypes = torch.cat([self.prototypes, pad])

    def forward(self, z: Tensor, text: Tensor, protos: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """z (B, D) image features, text (C, D) and protos (C, D) of the classes -> P_i(z)^ (B, D),
        P_t(w)^ (C, D), <q, t_c> (B, C) and <q, r_c> (B, C)."""
        img = F.normalize(self.image(F.normalize(z, dim=-1)), dim=-1)  # (B, D)
        txt = F.normalize(self.text(text), dim=-1)  # (C, D)
        pro = F.normalize(self.image(protos), dim=-1)  # (C, D)
        fused = self.fusion(img, torch.cat([txt, pro]))  # (B, 1 + 2C + K, D)
        c = len(txt)
        q, t, r = fused[:, :1], fused[:, 1:1 + c], fused[:, 1 + c:1 + 2 * c]
        return img, txt, (q * t).sum(-1), (q * r).sum(-1)


class Proof(Method):
    uses = ("memory",)  # how many exemplars, chosen how (`memory.exemplar_*`)
    uses_exemplars = True
    frozen_image_encoder = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        p = self.opts
        self.net = ProofHead(int(self.model.visual.output_dim), p.heads, p.dropout).to(self.rt.device).eval()
        self.learned["proof"] = self.net

    def begin_task(self, task: Task) -> None:
        self.net.add_task(max(task.seen) + 1, self.opts.context_per_task)

    def train_task(self, task: Task) -> dict:
        clock = time.time()
        feats, labels = self.encode(task.train_plain, f"task {task.index + 1} features")  # new + exemplars
        new = torch.isin(labels, torch.as_tensor(task.classes, device=labels.device))
        self.net.prototypes[task.classes] = class_means(feats[new], labels[new], task.classes).to(feats.dtype)
        info: dict = {"time_s": {"features": time.time() - clock}}
        clock = time.time()
        info["loss"] = self._train(task, feats, labels)
        info["time_s"]["fit"] = time.time() - clock
        clock = time.time()
        self.remember_exemplars(task, feats, labels)
        info["time_s"]["exemplars"] = time.time() - clock
        return info

    def _train(self, task: Task, feats: Tensor, labels: Tensor) -> list[float]:
        p, dev = self.opts, self.rt.device
        text, protos = self.template_features(task.seen), self.net.prototypes[task.seen]  # (C, D) each
        lut, scale = label_lut(task.seen, dev), self.scale()
        net = self.rt.wrap(self.net)  # DistributedDataParallel under torchrun

        def loss_fn(batch) -> Tensor:
            z, y = batch  # (B, D), (B,)
            target = lut[y]
            img, txt, by_text, by_proto = net(z, text, protos)
            return (cross_entropy(by_text, target, self.rt) + cross_entropy(by_proto, target, self.rt)
                    + clip_loss(img, txt[target], scale))

        batches = feature_batches(feats, labels, p.batch_size, task.generator, self.rt)
        self.net.train()
        try:
            return fit(list(self.net.parameters()), batches, loss_fn, p.epochs, p.lr, self.rt,
                       weight_decay=p.weight_decay, desc=f"task {task.index + 1} proof",
                       hint="lower proof.lr (e.g. --set proof.lr=1e-4)", optimizer=p.optimizer)
        finally:
            self.net.eval()

    # ---- evaluation
    @torch.no_grad()
    def classifier(self, classes: list[int]) -> ProofClassifier:
        return ProofClassifier(self.net, self.template_features(classes), self.net.prototypes[classes])


class ProofClassifier(Classifier):
    """PROOF's inference rule, cos(P_i(z), P_t(w_c)) + <q, t_c> + <q, r_c> (B, C), through the fusion
    network with each class's template text w_c and visual prototype p_c."""

    def __init__(self, net: ProofHead, text: Tensor, prototypes: Tensor, chunk: int = 256) -> None:
        super().__init__()
        self.net, self.chunk = net, chunk
        self.register_buffer("text", text.float())  # (C, D) template text features
        self.register_buffer("prototypes", prototypes.float())  # (C, D) visual prototypes

    @torch.no_grad()
    def forward(self, feats: Tensor) -> Tensor:
        out = []
        for z in feats.split(self.chunk):  # (b, D) chunks of images
            img, txt, by_text, by_proto = self.net(z, self.text, self.prototypes)
            out.append(img @ txt.t() + by_text + by_proto)  # (b, C)
        return torch.cat(out)
