"""Batches of images and of cached features: the same global batches with any number of processes.

Why this is its own module: under torchrun every rank must see its share of the *same* global batch that
one process would see, or the numbers of a run depend on how many GPUs it had. So every epoch draws one
permutation from the task's generator (the same generator, hence the same permutation, on every rank),
cuts it into global batches of `batch_size`, and rank r keeps positions r, r + N, r + 2N, ... of each.
Together the ranks hold exactly the single-process batch; the losses divide by the global count
(`Runtime.global_mean`), so the gradient DDP averages is the single-process gradient.

Two exceptions, both only with N > 1 processes: images are drawn with their own seeds (below), so the
augmentation of a sample does not depend on the process that loads it; and a last global batch of images
with fewer samples than processes is joined to the batch before it (a rank cannot take an empty batch of
images through the tower and still join DDP's gradient exchange). Feature batches have no such limit.

Data loaders with worker processes are built once per base dataset (the training, plain and test sets of
a run) and handed index batches afterwards: the workers start once per run, not once per encode or
evaluation call.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from dmc.errors import DataError

Positions = Iterable  # an iterable of batches; a batch is an int array of positions, or (position, seed) pairs


class ShuffledEpoch:
    """One epoch of this rank's shares of global batches (module docstring); drawn when iterated.

    `seeded`: each position comes with a per-sample seed (one draw of N seeds per epoch, also from the
    generator). `join_short`: a last global batch smaller than `world_size` is joined to the one before.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, rank: int = 0, world_size: int = 1,
                 seeded: bool = False, join_short: bool = False) -> None:
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self.rank, self.world_size, self.seeded = rank, world_size, seeded
        self.starts = list(range(0, n, batch_size))
        if join_short and len(self.starts) > 1 and n - self.starts[-1] < world_size:
            self.starts.pop()

    def __len__(self) -> int:
        return len(self.starts)

    def __iter__(self) -> Iterator:
        perm = torch.randperm(self.n, generator=self.generator)  # (N,)
        seeds = torch.randint(2**62, (self.n,), generator=self.generator) if self.seeded else None
        ends = self.starts[1:] + [self.n]
        for start, end in zip(self.starts, ends):
            pos = perm[start:end][self.rank::self.world_size]
            yield pos.numpy() if seeds is None else list(zip(pos.tolist(), seeds[pos].tolist()))


def in_order(n: int, batch_size: int) -> list[np.ndarray]:
    """Consecutive batches of positions 0..n-1 (encoding, evaluation)."""
    return [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


class ArrayBatches:
    """Batches of an in-memory uint8 dataset whose transform works on whole batches (the glyph world):
    one tensor op per batch instead of a DataLoader collating per-image tensors (about 10x faster)."""

    def __init__(self, dataset, positions: Positions) -> None:
        self.dataset, self.positions = dataset, positions

    @staticmethod
    def supports(dataset) -> bool:
        samples = getattr(dataset, "samples", None)
        return isinstance(getattr(samples, "items", None), np.ndarray) and hasattr(dataset.transform, "batch")

    def __len__(self) -> int:
        return len(self.positions)

    def __iter__(self):
        items, labels = self.dataset.samples.items, self.dataset.labels
        for idx in self.positions:
            yield self.dataset.transform.batch(items[idx]), torch.from_numpy(labels[idx])


class _Mapped:
    """Batches of positions in a dataset as batches of indices in its base dataset (lazily)."""

    def __init__(self, positions: Positions, index: np.ndarray) -> None:
        self.positions, self.index = positions, index

    def __len__(self) -> int:
        return len(self.positions)

    def __iter__(self):
        for batch in self.positions:
            if len(batch) and isinstance(batch[0], tuple):
                yield [(int(self.index[p]), s) for p, s in batch]
            else:
                yield self.index[np.asarray(batch, dtype=np.int64)].tolist()


class _Settable:
    """The batch sampler of a kept DataLoader: whatever batches it is given before each pass."""

    def __init__(self) -> None:
        self.batches: Sequence = []

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


class LoaderPool:
    """DataLoaders over base datasets: without workers, a new one per pass (free); with workers, one per
    base dataset for the whole run, so the worker processes start once (`close` stops them)."""

    def __init__(self, num_workers: int = 0, pin_memory: bool = False) -> None:
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self._kept: dict[int, tuple[object, DataLoader, _Settable, list[bool]]] = {}

    def batches(self, dataset, positions: Positions) -> Iterable:
        """(images, labels) batches of `dataset` (a base dataset or a part of one) at `positions`."""
        base, index = dataset.root()
        indices = _Mapped(positions, index)
        if self.num_workers == 0:
            return self._fresh(base, indices, workers=0)
        if id(base) not in self._kept:
            sampler = _Settable()
            self._kept[id(base)] = (base, self._fresh(base, sampler, self.num_workers, keep=True), sampler, [False])
        return _KeptPass(self, self._kept[id(base)], indices)

    def _fresh(self, base, batch_sampler, workers: int, keep: bool = False) -> DataLoader:
        # a private generator: the base seed a DataLoader draws never consumes a run's random stream
        return DataLoader(base, batch_sampler=batch_sampler, num_workers=workers, pin_memory=self.pin_memory,
                          persistent_workers=keep and workers > 0, generator=torch.Generator())

    def close(self) -> None:
        """Stop every kept loader's workers."""
        self._kept.clear()


class _KeptPass:
    """One pass of a kept DataLoader over the given indices. A pass that starts while another pass of the
    same loader is running (nested use) gets a loader of its own instead of disturbing the running one."""

    def __init__(self, pool: LoaderPool, kept: tuple, indices: _Mapped) -> None:
        self.pool, self.kept, self.indices = pool, kept, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        base, loader, sampler, busy = self.kept
        if busy[0]:
            yield from self.pool._fresh(base, list(self.indices), self.pool.num_workers)
            return
        busy[0] = True
        try:
            sampler.batches = list(self.indices)
            yield from loader
        except DataError as exc:  # raised in a worker: torch wraps it with the worker's traceback
            raise DataError(worker_message(exc)) from None
        finally:
            busy[0] = False


def worker_message(exc: Exception) -> str:
    """The one line a data-loader worker's error was raised with (torch re-raises it in the main process
    as "Caught DataError in DataLoader worker process 0. Original Traceback ...")."""
    lines = str(exc).strip().splitlines()
    name = f"{type(exc).__module__}.{type(exc).__name__}: "
    found = [line[len(name):] for line in lines if line.startswith(name)]
    return found[-1] if found else lines[-1] if lines else type(exc).__name__


class FeatureEpoch:
    """Batches of cached features (N, D) and labels (N,) at the positions of a `ShuffledEpoch`."""

    def __init__(self, feats: torch.Tensor, labels: torch.Tensor, positions: ShuffledEpoch) -> None:
        self.feats, self.labels, self.positions = feats, labels, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __iter__(self):
        for pos in self.positions:
            idx = torch.from_numpy(pos).to(self.feats.device)
            yield self.feats[idx], self.labels[idx]
