"""Where and how computation runs: device, mixed precision, data loaders, seeding, progress bars."""
from __future__ import annotations

import contextlib
import hashlib
import random
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

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
               generator: torch.Generator | None = None) -> DataLoader:
        cuda = self.device.type == "cuda"
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                          num_workers=self.num_workers, pin_memory=cuda,
                          persistent_workers=self.num_workers > 0)


def make_runtime(device: str = "auto", precision: str = "auto", progress: bool = True,
                 num_workers: int = 0) -> Runtime:
    if device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise UserError(f"bad value for model.device: {device!r}; use auto, cpu or cuda[:N]") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UserError("model.device asks for CUDA but no GPU is visible; use --set model.device=cpu")
    if precision not in ("auto", "fp32", "bf16"):
        raise UserError(f"bad value for model.precision: {precision!r}; use auto, fp32 or bf16")
    amp = None
    if precision == "bf16" or (precision == "auto" and dev.type == "cuda"):
        amp = torch.bfloat16
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return Runtime(dev, amp, progress, num_workers)
