"""A run killed at any point resumes to exactly the accuracy matrix of the run that was never killed.

Two ways to kill. In-process: a hook at a named point (dmc.faults) copies the run directory as it is at
that moment, temporary files included, and stops the run; the copy is what SIGKILL would leave, because
every write is a rename. Real: a `dmc run --smoke` subprocess kills itself with SIGKILL at a named point
(`DMC_KILL_AT`), and the run is resumed. The default suite tries a few points of each kind of work; the
`slow` tests try every point a 3-task run reaches.
"""
import json
import os
import shutil
import subprocess
import sys
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file

from dmc import config, faults
from dmc.engine.loop import run
from dmc.training.runtime import make_runtime

QUIET = make_runtime("cpu", "fp32", progress=False)


class Killed(BaseException):
    """Stops a run like a kill would: nothing in dmc catches a BaseException that is not an Exception."""


SETS = ["vision.batch_size=8", "prompt.batch_size=8"]  # several steps per stage


def smoke_cfg():
    return config.resolve("synthetic", "dmc-ot", sets=SETS, smoke=True)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Every run here uses one torch thread, like the subprocesses: CPU matmuls may round differently with
    another thread count, and the comparisons below are exact."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, one_thread):
    """The uninterrupted run and every point it reaches, in order."""
    reached: list[str] = []
    faults.HOOK = reached.append
    try:
        out = run(smoke_cfg(), out=tmp_path_factory.mktemp("ref") / "run", rt=QUIET)
    finally:
        faults.HOOK = None
    return outcome(out), reached


def outcome(out):
    """The accuracy matrix and the last checkpoint (every trained tensor: tower, prompts, memory)."""
    last = load_file(str(out / "checkpoints" / "task_03.safetensors"))
    return json.loads((out / "summary.json").read_text())["acc_matrix"], {k: v.tolist() for k, v in last.items()}


def occurrences(reached: list[str]) -> list[tuple[str, int]]:
    """(name, k): the k-th time `name` was reached, for every point of a run."""
    seen: Counter[str] = Counter()
    out = []
    for name in reached:
        seen[name] += 1
        out.append((name, seen[name]))
    return out


def kill_in_process(tmp_path, name: str, nth: int):
    """Run until the nth time `name` is reached; return a copy of the run directory as it was then."""
    count, snapshot = Counter(), tmp_path / "killed"

    def hook(point: str) -> None:
        count[point] += 1
        if point == name and count[point] == nth:
            shutil.copytree(tmp_path / "run", snapshot)
            raise Killed(point)

    faults.HOOK = hook
    try:
        with pytest.raises(Killed):
            run(smoke_cfg(), out=tmp_path / "run", rt=QUIET)
    finally:
        faults.HOOK = None
    return snapshot


def resume(path):
    return outcome(run(None, resume=path, rt=QUIET))


# stage 1, the memory step (features under the new encoder), calibration, stage 2, evaluation, writes
POINTS = [("fit:task 2 stage 1", 2), ("encode:task 2 features", 1), ("encode:old-encoder features", 1),
          ("fit:task 3 stage 2", 1), ("predict:task 2 eval", 1), ("write:task_02.safetensors", 1),
          ("write:metrics.jsonl", 3), ("finish", 1)]


@pytest.mark.parametrize("name, nth", POINTS)
def test_killed_in_process_resumes_to_the_same_result(reference, tmp_path, name, nth):
    expected, reached = reference
    assert (name, nth) in occurrences(reached), f"the run never reaches {name} #{nth}"
    assert resume(kill_in_process(tmp_path, name, nth)) == expected


def sigkill_run(out, point: str):
    env = {**os.environ, faults.ENV: point, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "dmc", "run", "--benchmark", "synthetic", "--method", "dmc-ot", "--smoke",
            "--quiet", "--threads", "1", "--out", str(out)] + [a for s in SETS for a in ("--set", s)]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)


def test_sigkill_during_stage_2_then_resume(reference, tmp_path):
    proc = sigkill_run(tmp_path / "run", "fit:task 2 stage 2")
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not (tmp_path / "run" / "summary.json").exists()
    assert resume(tmp_path / "run") == reference[0]


@pytest.mark.slow
def test_every_point_in_process(reference, tmp_path):
    """Every point a 3-task run reaches (each occurrence), killed and resumed in-process."""
    expected, reached = reference
    failed = []
    for i, (name, nth) in enumerate(occurrences(reached)):
        work = tmp_path / str(i)
        work.mkdir()
        if resume(kill_in_process(work, name, nth)) != expected:
            failed.append(f"{name}#{nth}")
        shutil.rmtree(work)
    print(f"in-process kills tried {len(reached)}, survived {len(reached) - len(failed)}")
    assert not failed


@pytest.mark.slow
@pytest.mark.parametrize("point", ["fit:task 1 stage 1#2", "encode:task 2 features", "fit:task 3 stage 2",
                                   "predict:task 3 eval", "write:task_03.safetensors", "write:metrics.jsonl#2"])
def test_sigkill_at_each_kind_of_work(reference, tmp_path, point):
    proc = sigkill_run(tmp_path / "run", point)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert resume(tmp_path / "run") == reference[0]
