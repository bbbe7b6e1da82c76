"""Where and how computation runs: device, mixed precision, data loaders, seeding, progress bars."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import sys
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from dmc.data.dataset import ImageDataset
from dmc.errors import UserError
from dmc.training.loading import ArrayBatches, LoaderPool, ShuffledEpoch, in_order

log = logging.getLogger(__name__)


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts (run seed, task index, purpose), independent of Python's hash."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    """The one place that seeds every global random source (python, numpy, torch CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None = None  # bf16 autocast on CUDA
    progress: bool = True
    num_workers: int = 0
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        self.pool = LoaderPool(self.num_workers, pin_memory=self.device.type == "cuda")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def bars(self) -> bool:
        """Live progress bars: only on rank 0, only when asked for, and only on a terminal. Elsewhere (a
        log file, CI) each finished stage and task is one logged line instead of redrawn bars."""
        return self.progress and self.is_main and sys.stderr.isatty()

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def loader(self, dataset: ImageDataset, batch_size: int, shared: bool = False) -> Iterable:
        """Batches (images, labels) of the whole dataset in order (encoding, evaluation); with `shared`,
        only this rank's batches (`shared_batches`). Images from files come with per-sample seeds drawn
        from torch's global stream (seeded per task), so a transform that augments gives the same images
        with any number of processes or loader workers."""
        batches = in_order(len(dataset), batch_size)
        if not ArrayBatches.supports(dataset):
            seeds = torch.randint(2**62, (len(dataset),)).tolist()
            batches = [[(i, seeds[i]) for i in b.tolist()] for b in batches]
        return self._batches(dataset, batches[self.rank::self.world_size] if shared else batches)

    def shared_batches(self, n: int, batch_size: int) -> list[np.ndarray]:
        """The rows of this rank's batches when n items are encoded in batches of `batch_size`: whole
        batches of the single-process order, batch b on rank b % world_size. Each batch is computed as one
        process computes it (same images, same batch), so the features are the single-process ones."""
        return in_order(n, batch_size)[self.rank::self.world_size]

    def gather_rows(self, n: int, rows: list[np.ndarray], values: list[torch.Tensor]) -> torch.Tensor:
        """The (n, D) tensor of which this rank computed `values` at `rows` (one block per batch), on every
        rank: each row is filled by exactly one rank and zero elsewhere, so the all-reduced sum is exact."""
        if self.world_size == 1:
            return torch.cat(values) if values else torch.zeros(0, 0, device=self.device)
        dim = torch.tensor([values[0].shape[1] if values else 0], device=self.device)
        dist.all_reduce(dim, op=dist.ReduceOp.MAX)
        full = torch.zeros(n, int(dim), device=self.device, dtype=torch.float32)  # (n, D)
        if values:
            full[torch.as_tensor(np.concatenate(rows), device=self.device)] = torch.cat(values).float()
        dist.all_reduce(full)
        return full

    def train_loader(self, dataset: ImageDataset, batch_size: int, generator: torch.Generator):
        """epoch -> this rank's share of each global batch of `batch_size` images of a fresh permutation
        (dmc.training.loading): every process count sees the single-process batches."""
        seeded = not ArrayBatches.supports(dataset)  # augmenting transforms draw from per-sample seeds
        return lambda epoch: self._batches(dataset, ShuffledEpoch(len(dataset), batch_size, generator, self.rank,
                                                                  self.world_size, seeded, join_short=True))

    def _batches(self, dataset: ImageDataset, positions) -> Iterable:
        if ArrayBatches.supports(dataset):
            return ArrayBatches(dataset, positions)
        return self.pool.batches(dataset, positions)

    def close(self) -> None:
        """Stop the data loaders' worker processes (the end of a run)."""
        self.pool.close()

    def tf32_towers(self, model: nn.Module) -> None:
        """On CUDA, TF32 for the float32 matmuls of the towers' training forward passes (stage 1, stage 2),
        where a 10-bit mantissa is harmless next to bf16 autocast; never anywhere else (see `tf32_in_training`)."""
        if self.device.type == "cuda":
            for tower in (model.visual, getattr(model, "transformer", None)):
                if tower is not None:
                    tf32_in_training(tower)

    def wrap(self, module: nn.Module) -> nn.Module:
        """DistributedDataParallel over the trainable part under torchrun; the module itself otherwise."""
        if self.world_size == 1:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)

    def share(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch that every rank drew identically (rows r, r + N, ...)."""
        return x if self.world_size == 1 else x[self.rank::self.world_size]

    def global_mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean of per-sample `values` over the global batch, as this rank's term: DDP averages the
        ranks' gradients, so sum_r (sum of rank r's values) * N / total / N is the single-process mean.
        Without torchrun, plain `mean`."""
        if self.world_size == 1:
            return values.mean()
        total = torch.tensor(float(values.numel()), device=values.device)
        dist.all_reduce(total)
        return values.sum() * self.world_size / total

    def mean_over_ranks(self, value: torch.Tensor) -> torch.Tensor:
        """A scalar averaged over the ranks (the global loss of a step, for logging and the NaN check)."""
        if self.world_size == 1:
            return value
        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.world_size

    def all_reduce_sum(self, values: np.ndarray) -> np.ndarray:
        if self.world_size == 1:
            return values
        t = torch.as_tensor(np.asarray(values, dtype=np.float64), device=self.device)
        dist.all_reduce(t)
        return t.cpu().numpy()

    def barrier(self) -> None:
        """Wait for every rank (nothing to wait for without torchrun)."""
        if self.world_size > 1:
            dist.barrier()

    def shard(self, n: int) -> np.ndarray:
        """Indices of this rank's share of n items (all of them without torchrun)."""
        return np.arange(self.rank, n, self.world_size)


def tf32_off_globally() -> None:
    """Full float32 for every matmul and convolution (cuDNN's convolutions default to TF32): TF32 is then
    allowed only where `tf32_in_training` says."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False


def tf32_in_training(module: nn.Module) -> None:
    """Allow TF32 inside `module`'s forward pass while gradients are on (a training step), and restore the
    flags when it returns or raises. Everything else keeps full float32: feature encoding and evaluation
    (no gradients), losses and logits, Gaussian statistics and sampling, OT, analytic solves. TF32 is never
    switched on globally (tests/test_precision.py pins this)."""
    saved: list[tuple[bool, bool]] = []

    def enter(mod, args) -> None:
        saved.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        if torch.is_grad_enabled():
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    def leave(mod, args, out) -> None:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved.pop()

    module.register_forward_pre_hook(enter)
    module.register_forward_hook(leave, always_call=True)


def init_distributed(device: str) -> tuple[int, int, str]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); returns rank, world, device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    elif device == "auto":
        device = "cpu"
    return dist.get_rank(), world, device


def make_runtime(device: str = "auto", precision: str = "auto", progress: bool = True,
                 num_workers: int = 0) -> Runtime:
    """`device` and `precision` as checked by ModelConfig; whether CUDA is there is only known here."""
    rank, world, device = init_distributed(device)
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("model.device asks for CUDA but no GPU is visible; use --set model.device=cpu")
    amp = None
    if precision == "bf16" or (precision == "auto" and dev.type == "cuda"):
        amp = torch.bfloat16
    if dev.type == "cuda":
        tf32_off_globally()
        torch.backends.cudnn.benchmark = True
    return Runtime(dev, amp, progress, loader_workers(num_workers), rank, world)


def cores() -> int:
    """The CPU cores this process may run on (its affinity; a container's share where the OS says so)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def loader_workers(asked: int) -> int:
    """Data-loader workers for `data.num_workers`, sized to the machine: never more than its cores (a
    preset's 8 on a 2-core machine would only compete with training). Workers do not change what is
    computed (every image brings its own seed), so this changes speed only."""
    fit = min(asked, cores())
    if fit < asked:
        log.info("data.num_workers %d > %d cores here: using %d loader workers", asked, cores(), fit)
    return fit
