"""Exemplar memory: herding on a hand-made case, the memory as checkpoint state, the loop's mixing of
exemplars into a task, budgets that shrink classes to their best rows."""
import numpy as np
import pytest
import torch

from dmc.engine.loop import make_task, prepare
from dmc.memory.exemplars import ExemplarMemory, herding, random_exemplars
from dmc.methods import Method
from dmc.training.runtime import make_runtime
from tests.helpers import tiny_cfg

QUIET = make_runtime("cpu", "fp32", progress=False)


def test_herding_hand_made():
    # unit vectors a=(1,0), b=(0,1), c=(.6,.8), d=(-.6,.8); class mean mu = (.25, .65).
    # k=1: ||mu - x||^2 = .985, .185, .145, .745 -> c.  k=2: ||mu - (c + x)/2||^2 = .365, .065, -, .085 -> b.
    # k=3: ||mu - (c + b + x)/3||^2 = .083 (a), .109 (d) -> a; then d.
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-0.6, 0.8]])
    assert herding(x, 4).tolist() == [2, 1, 0, 3]
    scaled = x * torch.tensor([[3.0], [0.5], [7.0], [2.0]])  # features are normalised first
    assert herding(scaled, 4).tolist() == [2, 1, 0, 3]
    assert herding(x, 2).tolist() == [2, 1]  # the first m rows of a longer selection are the selection of m
    assert herding(x, 9).tolist() == [2, 1, 0, 3]  # never more rows than there are


def test_herding_follows_the_mean_better_than_chance():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(200, 16, generator=g) + 1.0, dim=-1)
    mu = x.mean(0)
    err_herding = (x[herding(x, 10)].mean(0) - mu).norm()
    err_random = [(x[random_exemplars(200, 10, g)].mean(0) - mu).norm() for _ in range(20)]
    assert err_herding < min(err_random)


def test_random_exemplars_are_distinct_and_seeded():
    a = random_exemplars(50, 10, torch.Generator().manual_seed(3))
    assert len(set(a.tolist())) == 10 and int(a.max()) < 50
    assert torch.equal(a, random_exemplars(50, 10, torch.Generator().manual_seed(3)))
    assert len(random_exemplars(4, 10, None)) == 4


def test_memory_round_trips_through_its_state_dict():
    mem = ExemplarMemory()
    mem.set(3, [30, 31, 32])
    mem.set(1, np.array([10, 11]))
    assert len(mem) == 5 and mem.classes() == [1, 3] and mem.rows().tolist() == [10, 11, 30, 31, 32]
    state = mem.state_dict()
    assert sorted(state) == ["rows.1", "rows.3"] and state["rows.3"].dtype == torch.int64
    again = ExemplarMemory()
    again.set(7, [70])  # replaced by the load
    again.load_state_dict(state)
    assert again.rows().tolist() == [10, 11, 30, 31, 32] and again.rows([3]).tolist() == [30, 31, 32]
    mem.truncate(1)
    assert mem.rows().tolist() == [10, 30] and len(mem) == 2
    with pytest.raises(ValueError, match="rows"):
        again.load_state_dict({"cols.1": torch.tensor([1])})


def test_the_loop_adds_exemplar_rows_to_a_task(tmp_path):
    cfg, _, bench, data, _, _ = prepare(tiny_cfg("zeroshot"), tmp_path / "run", None, QUIET)
    plain = make_task(1, bench, data, cfg.seed)
    old = np.nonzero(np.isin(data["train"].labels, bench.tasks[0]))[0][::3]  # some rows of task 1's classes
    mixed = make_task(1, bench, data, cfg.seed, exemplars=old)
    assert len(mixed.train) == len(plain.train) + len(old) == len(mixed.train_plain) == len(mixed.train_index)
    assert np.array_equal(mixed.train.labels, data["train"].labels[mixed.train_index])
    assert set(np.unique(mixed.train.labels)) == set(bench.tasks[1]) | set(data["train"].labels[old])
    assert np.array_equal(mixed.train_index[len(plain.train):], old)
    assert np.array_equal(plain.train.labels, mixed.train.labels[:len(plain.train)])  # task images first


def test_a_budget_shrinks_old_classes_to_their_first_rows(tmp_path):
    cfg, rt, bench, data, zeroshot, _ = prepare(tiny_cfg("zeroshot", memory__exemplar_budget=12), tmp_path / "run",
                                                None, QUIET)
    replay = type("Replay", (Method,), {"name": "replay", "uses_exemplars": True})(cfg, zeroshot.backbone, bench, rt)
    assert "exemplars" in replay.learned and zeroshot.exemplar_rows() is None and zeroshot.stored_images() == 0
    sizes, first = [], {}
    for t in range(3):
        task = make_task(t, bench, data, cfg.seed, replay.exemplar_rows())
        feats, labels = replay.encode(task.train_plain, "features")
        replay.remember_exemplars(task, feats, labels)
        sizes.append(replay.stored_images())
        first.update({c: replay.exemplars.rows([c]) for c in task.classes})
        assert np.isin(data["train"].labels[replay.exemplar_rows()], task.seen).all()
    assert sizes == [12, 8, 12]  # 12 // 4 = 3 per class, then 12 // 8 = 1, then 12 // 12 = 1
    for c, rows in first.items():  # each class kept a prefix of what it was given
        kept = replay.exemplars.rows([c])
        assert len(kept) == 1 and kept[0] == rows[0]
