"""Where and how computation runs: device, mixed precision, data loaders, seeding, progress bars."""
from __future__ import annotations

import contextlib
import hashlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from dmc.errors import UserError


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

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def loader(self, dataset: Dataset, batch_size: int, shuffle: bool = False,
               generator: torch.Generator | None = None):
        if ArrayBatches.supports(dataset):
            return ArrayBatches(dataset, batch_size, shuffle, generator)
        cuda = self.device.type == "cuda"
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                          num_workers=self.num_workers, pin_memory=cuda,
                          persistent_workers=self.num_workers > 0)

    def train_loader(self, dataset: Dataset, batch_size: int, generator: torch.Generator):
        """epoch -> shuffled DataLoader; under torchrun each rank gets its shard (DistributedSampler)."""
        if self.world_size == 1:
            loader = self.loader(dataset, batch_size, shuffle=True, generator=generator)
            return lambda epoch: loader
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        sampler = DistributedSampler(dataset, self.world_size, self.rank, shuffle=True, seed=seed)
        loader = DataLoader(dataset, batch_size=self.local_batch(batch_size), sampler=sampler, num_workers=self.num_workers,
                            pin_memory=self.device.type == "cuda", persistent_workers=self.num_workers > 0)

        def at(epoch: int) -> DataLoader:
            sampler.set_epoch(epoch)
            return loader

        return at

    def local_batch(self, batch_size: int) -> int:
        """Per-rank batch, so that the global batch (and the learning rate's meaning) stays the same."""
        return max(1, -(-batch_size // self.world_size))

    def wrap(self, module: nn.Module) -> nn.Module:
        """DistributedDataParallel over the trainable part under torchrun; the module itself otherwise."""
        if self.world_size == 1:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)

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


class ArrayBatches:
    """Batches of an in-memory uint8 dataset whose transform works on whole batches (the glyph world):
    one tensor op per batch instead of a DataLoader collating per-image tensors (about 10x faster)."""

    def __init__(self, dataset, batch_size: int, shuffle: bool, generator: torch.Generator | None) -> None:
        self.dataset, self.batch_size, self.shuffle, self.generator = dataset, batch_size, shuffle, generator

    @staticmethod
    def supports(dataset) -> bool:
        samples = getattr(dataset, "samples", None)
        return isinstance(getattr(samples, "items", None), np.ndarray) and hasattr(dataset.transform, "batch")

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def __iter__(self):
        n = len(self.dataset)
        order = torch.randperm(n, generator=self.generator).numpy() if self.shuffle else np.arange(n)
        items, labels = self.dataset.samples.items, self.dataset.labels
        for i in range(0, n, self.batch_size):
            idx = np.sort(order[i:i + self.batch_size]) if not self.shuffle else order[i:i + self.batch_size]
            yield self.dataset.transform.batch(items[idx]), torch.from_numpy(labels[idx])


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
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return Runtime(dev, amp, progress, num_workers, rank, world)
