"""Batches under torchrun are shares of the single-process batches; loaders with workers start once."""
import os

import numpy as np
import pytest
import torch

from dmc.data.dataset import ImageDataset, select
from dmc.data.sources.base import Samples
from dmc.training.features import feature_batches
from dmc.training.loading import ShuffledEpoch
from dmc.training.runtime import Runtime
from tests.image_files import PNG, write_file


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("n, batch, world", [(32, 12, 2), (33, 8, 3), (10, 16, 4), (7, 3, 2)])
def test_rank_shares_make_the_single_process_batches(n, batch, world):
    one = [list(b) for b in ShuffledEpoch(n, batch, _gen(), seeded=True)]
    shares = [list(ShuffledEpoch(n, batch, _gen(), r, world, seeded=True)) for r in range(world)]
    assert all(len(s) == len(one) for s in shares)  # every rank takes the same number of steps
    for step, batch_one in enumerate(one):
        union = [pair for s in shares for pair in s[step]]
        assert sorted(union) == sorted(batch_one)  # same samples, same per-sample seeds


def test_a_short_last_image_batch_joins_the_one_before():
    epoch = ShuffledEpoch(13, 4, _gen(), rank=0, world_size=2, join_short=True)  # 4 + 4 + 4 + 1
    assert len(epoch) == 3 and sum(len(b) for b in epoch) == 7  # rank 0: 2 + 2 + 3
    assert len(ShuffledEpoch(13, 4, _gen(), join_short=True)) == 4  # one process: nothing to join


def test_feature_shares_make_the_single_process_batches():
    feats, labels = torch.randn(23, 5), torch.arange(23)

    class Rank:
        def __init__(self, rank):
            self.rank, self.world_size = rank, 2

    one = list(feature_batches(feats, labels, 8, _gen(3))(0))
    shares = [list(feature_batches(feats, labels, 8, _gen(3), Rank(r))(0)) for r in (0, 1)]
    for step, (f, y) in enumerate(one):
        y_union = torch.cat([shares[0][step][1], shares[1][step][1]])
        assert sorted(y_union.tolist()) == sorted(y.tolist())
        assert torch.equal(torch.cat([shares[0][step][0], shares[1][step][0]])[y_union.argsort()], f[y.argsort()])


def _noisy(img) -> torch.Tensor:
    return torch.rand(3)  # an augmentation: all its randomness comes from torch's global generator


def test_an_augmented_sample_depends_on_its_seed_only():
    ds = ImageDataset(Samples(np.zeros((2, 4, 4, 3), np.uint8), np.zeros(2, np.int64)), np.zeros(2), _noisy)
    torch.manual_seed(1)
    a = ds[(1, 1234)][0]
    torch.manual_seed(2)
    state = torch.get_rng_state()
    b = ds[(1, 1234)][0]
    assert torch.equal(a, b) and torch.equal(state, torch.get_rng_state())  # the global stream is untouched
    assert not torch.equal(a, ds[(1, 99)][0])


def _pid(img) -> torch.Tensor:
    return torch.tensor(os.getpid())


def test_loaders_with_workers_are_built_once_per_dataset(tmp_path):
    paths = [str(write_file(tmp_path / f"{i}.png", PNG)) for i in range(12)]
    base = ImageDataset(Samples(paths, np.arange(12) % 3), np.arange(12) % 3, _pid)
    rt = Runtime(torch.device("cpu"), num_workers=2)
    try:
        pids = set()
        for classes in ([0], [1, 2], [0, 1, 2]):  # three tasks' parts of one dataset, and an evaluation
            for x, y in rt.loader(select(base, classes), 4):
                pids.update(x.tolist())
        for epoch in range(2):
            for x, _ in rt.train_loader(select(base, [1]), 2, _gen())(epoch):
                pids.update(x.tolist())
        assert len(pids) == 2 and os.getpid() not in pids  # the same two workers served every pass
    finally:
        rt.close()
