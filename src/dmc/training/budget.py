"""Memory a run will need, known before it trains: what does not fit is refused in one line at the start,
not found out as an out-of-memory kill hours later.

The sample-level OT calibration (`calibration.level=sample`) is the one step whose memory grows with the
product of the benchmark's sizes: its plan is (C_old * S) x N, for C_old old classes, S samples per class
and N training images of the task, in float32, and POT's Sinkhorn keeps about six arrays of that size at
once (measured: 5.2x the plan for balanced OT, 6.2x semi-relaxed). At CIFAR-100 scale (90 old classes x
256 samples vs 5,000 images in the last task) that is 2.7 GB; the class-level calibration (the default)
needs 256 times less.
"""
from __future__ import annotations

import os

import numpy as np

from dmc.config import RunConfig
from dmc.errors import UserError

OT_COPIES = 6.5  # arrays of the plan's size alive at once in POT's Sinkhorn (measured 5.2-6.2), with a margin


def sample_ot_bytes(old_classes: int, samples: int, images: int) -> int:
    """Peak bytes of one sample-level OT calibration: (old_classes * samples) x images, float32."""
    return int(OT_COPIES * old_classes * samples * images * 4)


def free_bytes(device) -> int | None:
    """Memory free for the run on `device` (a torch.device): the GPU's free memory, or the machine's
    available memory; None when it cannot be told."""
    if device.type == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        pages = os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else -1
        return pages * os.sysconf("SC_PAGE_SIZE") if pages > 0 else None


def check_sample_ot(cfg: RunConfig, tasks: list[list[int]], train_labels: np.ndarray, device) -> None:
    """Refuse, in one line, a run whose sample-level OT calibration would not fit in the free memory of its
    device (its largest task: the most old classes times that task's images)."""
    cal = cfg.calibration
    if cal.method != "ot" or cal.level != "sample" or len(tasks) < 2:
        return
    counts = [int(np.isin(train_labels, task).sum()) for task in tasks]
    need, worst = max((sample_ot_bytes(sum(len(k) for k in tasks[:t]), cal.samples_per_class, counts[t]), t)
                      for t in range(1, len(tasks)))
    free = free_bytes(device)
    if free is not None and need > free:
        raise UserError(f"calibration.level=sample needs about {need / 2**30:.1f} GB for its OT plan in task "
                        f"{worst + 1} and {device} has {free / 2**30:.1f} GB free: use calibration.level=class (the "
                        "default), fewer calibration.samples_per_class, or a device with more memory")
