"""Two processes (gloo, CPU) give the single-process run: the same losses, the same accuracy matrix.

Both runs see the same global batches of images, features and replayed samples (dmc.training.loading),
every loss is a mean over the global batch, and DDP averages the ranks' gradients, so the two runs compute
the same steps; what differs is the order of float32 sums (each rank sums its share, gloo adds the two
partial gradients; matmuls of half the rows round differently). That is a relative error of ~1e-7 per
step; through a few dozen Adam steps and three tasks it stays far below 1e-4, the bound on every loss of
every epoch. Predictions are argmaxes: the accuracy matrix is equal unless two logits of a test image lie
within that error of each other, and the bound of 0.5 points is less than one test image (6.25 points on
16 images), so it asks for equal matrices.

The processes are forked from the test process (no second import of torch), with one torch thread each.
"""
import json
import multiprocessing as mp
import os
import socket
import traceback

import numpy as np
import pytest
import torch

from dmc.engine.loop import run
from dmc.training.runtime import make_runtime
from tests.helpers import tiny_cfg

# uneven shares everywhere: 32 images in global batches of 12 (6 + 6, ..., 4 + 4), features in batches of
# 15 (8 + 7, ..., 1 + 1), 3 replayed features per old class, every old/new pair a hinge pair, images encoded
# in batches of 12 (3 batches: 2 on rank 0, 1 on rank 1)
SETTINGS = {
    "dmc-ot": dict(vision__batch_size=12, prompt__batch_size=15, replay__per_class=3, eval__batch_size=12),
    "rapf": dict(rapf__batch_size=15, rapf__epochs=2, replay__per_class=3, rapf__hinge_threshold=2.0,
                 rapf__hinge_per_pair=3, eval__batch_size=12),
}


def _record_memory(where: str) -> dict:
    """After every task, write the sha256 of the method's Gaussian memory and how many batches this process
    encoded (`where`-<method>.json): what each rank holds, to compare ranks and process counts."""
    import hashlib

    import dmc.engine.loop as loop
    from dmc import faults

    encoded = {"batches": 0}
    current = {"method": None}
    faults.HOOK = lambda point: encoded.__setitem__("batches", encoded["batches"] + point.startswith("encode:"))
    real = loop.run_task

    def run_task(method, task, *args):
        record = real(method, task, *args)
        state = method.learned["memory"].state_dict()
        h = hashlib.sha256(b"".join(k.encode() + state[k].numpy().tobytes() for k in sorted(state)))
        path = f"{where}-{current['method']}.json"
        seen = json.load(open(path)) if os.path.exists(path) else []
        json.dump(seen + [{"task": task.index + 1, "memory": h.hexdigest(), "batches": encoded["batches"]}],
                  open(path, "w"))
        return record

    loop.run_task = run_task
    return current  # the caller names the method it runs next


def _worker(rank: int, port: int, out: str, errors) -> None:
    try:
        torch.set_num_threads(1)
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                          WORLD_SIZE="2")
        current = _record_memory(os.path.join(out, f"rank{rank}"))
        rt = make_runtime("cpu", "fp32", progress=False)
        for method, extra in SETTINGS.items():
            current["method"] = method
            run(tiny_cfg(method, **extra), out=os.path.join(out, method), rt=rt)
        torch.distributed.destroy_process_group()
    except BaseException:
        errors.put(f"rank {rank}: {traceback.format_exc()}")
        raise


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(path) -> list[float]:
    """Every recorded loss of every epoch of every task, in order."""
    out = []
    for line in (path / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        for key in sorted(k for k in rec if "loss" in k):
            out += list(rec[key])
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(two-process run, one-process run) per method."""
    ddp, one = tmp_path_factory.mktemp("ddp"), tmp_path_factory.mktemp("one")
    ctx = mp.get_context("fork")
    errors = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(rank, port, str(ddp), errors)) for rank in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert all(p.exitcode == 0 for p in procs), errors.get() if not errors.empty() else "a rank timed out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    import dmc.engine.loop as loop
    from dmc import faults

    real = loop.run_task
    try:
        current = _record_memory(str(one / "rank0"))
        rt = make_runtime("cpu", "fp32", progress=False)
        for method, extra in SETTINGS.items():
            current["method"] = method
            run(tiny_cfg(method, **extra), out=one / method, rt=rt)
    finally:
        torch.set_num_threads(threads)
        loop.run_task, faults.HOOK = real, None
    return {m: (ddp / m, one / m) for m in SETTINGS}


def _memory(folder, rank: int, method: str) -> list[dict]:
    return json.loads((folder.parent / f"rank{rank}-{method}.json").read_text())


@pytest.mark.parametrize("method", list(SETTINGS))
def test_every_rank_encodes_its_share_and_holds_the_same_memory(runs, method):
    """Each rank encodes half the batches, the ranks combine them exactly, and so every rank holds the same
    Gaussian memory after every task. With the frozen tower of RAPF it is the one-process memory, bit for
    bit; DMC-OT's stage 1 trains the tower with gradients summed across ranks (equal to 1e-4, not bitwise),
    so its memory is compared between the ranks."""
    ddp, one = runs[method]
    rank0, rank1, single = _memory(ddp, 0, method), _memory(ddp, 1, method), _memory(one, 0, method)
    assert [r["memory"] for r in rank0] == [r["memory"] for r in rank1]
    if method == "rapf":
        assert [r["memory"] for r in rank0] == [r["memory"] for r in single]
    for a, b, c in zip(rank0, rank1, single):  # the batches split between the ranks, none encoded twice
        assert a["batches"] + b["batches"] == c["batches"]
    assert rank0[-1]["batches"] > 0 and rank1[-1]["batches"] > 0


@pytest.mark.parametrize("method", list(SETTINGS))
def test_two_processes_match_one(runs, method):
    ddp, one = runs[method]
    a, b = (json.loads((p / "summary.json").read_text()) for p in (ddp, one))
    assert a["counts"] == b["counts"]  # every test image counted once across the ranks
    la, lb = _losses(ddp), _losses(one)
    assert len(la) == len(lb) >= 6
    np.testing.assert_allclose(la, lb, rtol=1e-4)
    R_a, R_b = (np.array(s["acc_matrix"], dtype=float) for s in (a, b))
    np.testing.assert_allclose(R_a, R_b, atol=0.5)
    assert sorted(p.name for p in ddp.iterdir()) == sorted(p.name for p in one.iterdir())
