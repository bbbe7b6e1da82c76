"""Sweeps: grid expansion and names, a recorded grid, skipping and resuming, child processes at once and
submitit's local executor (the path a Slurm cluster takes)."""
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from dmc.engine.sweep import Grid, Launch, open_sweep, status
from dmc.errors import UserError
from tests.helpers import killed_copy

TINY = ["--benchmarks", "synthetic", "--smoke", "--set", "model.backbone=tiny"]


def test_grid_names_runs_by_what_varies():
    grid = Grid(["synthetic"], ["dmc", "simplecil"], [1, 2],
                ["vision.lr=1e-5", "vision.lr=1e-4", "replay.enabled=false", "data.root=/a b/c"])
    names = [p.name for p in grid.points()]
    assert len(names) == 8 and names[0] == "synthetic-dmc-vision.lr=1e-5-s1"
    assert "synthetic-simplecil-vision.lr=1e-4-s2" in names
    assert grid.points()[0].sets == ["vision.lr=1e-5", "replay.enabled=false", "data.root=/a b/c"]
    assert [p.name for p in Grid(["synthetic"], ["dmc"], [3]).points()] == ["synthetic-dmc-s3"]


def test_the_grid_is_recorded_checked_and_kept(tmp_path):
    grid = Grid(["synthetic"], ["dmc"], [1, 2], ["vision.lr=1e-5"], smoke=True)
    assert open_sweep(tmp_path, grid) == grid and open_sweep(tmp_path, None) == grid
    assert yaml.safe_load((tmp_path / "sweep.yaml").read_text())["seeds"] == [1, 2]
    with pytest.raises(UserError, match="holds another sweep"):
        open_sweep(tmp_path, Grid(["synthetic"], ["dmc", "dmc-ot"], [1, 2], ["vision.lr=1e-5"], smoke=True))
    for bad, needle in ((Grid(["synthetic"], ["nope"], [1]), "unknown method 'nope'"),
                        (Grid(["nope"], ["dmc"], [1]), "unknown benchmark 'nope'"),
                        (Grid(["synthetic"], ["dmc"], [1], ["vision.lr=fast"]), "bad value for vision.lr")):
        with pytest.raises(UserError, match=needle):
            open_sweep(tmp_path / "other", bad)
    assert not (tmp_path / "other" / "sweep.yaml").exists()
    with pytest.raises(UserError, match="must be >= 1"):
        Launch(jobs=0).check()


def sweep(folder, *argv):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "dmc", "sweep", "--out", str(folder), *argv]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_finished_runs_are_skipped_and_unfinished_ones_resumed(tmp_path):
    from dmc.engine.loop import run
    from dmc.engine.sweep import run_sweep
    from dmc.training.runtime import make_runtime

    grid = open_sweep(tmp_path, Grid(["synthetic"], ["zeroshot"], [1, 2], ["model.backbone=tiny"], smoke=True))
    first, second = (tmp_path / p.name for p in grid.points())
    run(grid.points()[0].config(grid), out=first, rt=make_runtime("cpu", "fp32", progress=False))
    killed_copy(first, second, finished_tasks=1)
    assert status(first) == "finished" and status(second) == "unfinished" and status(tmp_path / "x") == "new"
    assert grid.points()[1].argv(grid, tmp_path, 2) == ["run", "--resume", str(second), "--quiet", "--threads", "2"]
    shutil.rmtree(second)
    assert "--seed" in grid.points()[1].argv(grid, tmp_path, None)
    shutil.copytree(first, second)
    results = run_sweep(tmp_path, grid, Launch(launcher="slurm"))  # nothing left to run: no launcher is started
    assert [r.status for r in results] == ["finished", "finished"] and all(r.outcome is None for r in results)


def test_a_sweep_through_submitits_local_executor(tmp_path):
    """The path a cluster takes (submitit), on this machine: one tiny run, then the table."""
    folder = tmp_path / "sweep"
    proc = sweep(folder, *TINY, "--methods", "zeroshot", "--seeds", "1", "--launcher", "local")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| synthetic-zeroshot | zeroshot | 1 |" in proc.stdout and (folder / "compare.png").exists()
    assert (folder / "synthetic-zeroshot-s1" / "summary.json").exists() and list((folder / ".submitit").iterdir())


@pytest.mark.slow
def test_a_sweep_runs_at_once_then_skips_and_resumes_through_submitit(tmp_path):
    folder = tmp_path / "sweep"
    proc = sweep(folder, *TINY, "--methods", "zeroshot", "simplecil", "--seeds", "1", "--jobs", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| synthetic-simplecil | simplecil | 1 |" in proc.stdout and (folder / "compare.png").exists()
    assert "\r" not in proc.stderr and "[2/2]" in proc.stderr
    run = folder / "synthetic-simplecil-s1"
    shutil.move(run, tmp_path / "full")
    killed_copy(tmp_path / "full", run, finished_tasks=1)
    assert status(run) == "unfinished" and status(folder / "synthetic-zeroshot-s1") == "finished"
    proc = sweep(folder, "--launcher", "local")  # the recorded grid, through submitit's local executor
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 finished, 1 to resume, 0 to start" in proc.stderr and "synthetic-simplecil-s1 resumed" in proc.stderr
    assert (run / "summary.json").exists() and list((folder / ".submitit").iterdir())


@pytest.mark.parametrize("edit, needle", [
    (lambda t: t.pop("seeds"), "lacks seeds (cut short or edited?)"),
    (lambda t: t.update(smoke="yes"), "has a bad smoke"),
    (lambda t: t.update(methods=[]), "has a bad methods"),
    (lambda t: t.update(extra=1), "has unknown keys extra"),
])
def test_a_recorded_grid_must_be_whole(tmp_path, edit, needle):
    """A sweep.yaml cut short or edited is refused: never completed with defaults (which would start a
    different experiment, e.g. a full 10-task run, in the sweep's folder)."""
    grid = Grid(["synthetic"], ["dmc"], [1, 2], ["vision.lr=1e-5"], smoke=True)
    open_sweep(tmp_path, grid)
    tree = yaml.safe_load((tmp_path / "sweep.yaml").read_text())
    edit(tree)
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(tree))
    with pytest.raises(UserError, match=re.escape(needle)):
        open_sweep(tmp_path, None)
    (tmp_path / "sweep.yaml").write_text("benchmarks: [synthetic]\nmethods: [dmc]\n")  # a file cut short
    with pytest.raises(UserError, match="lacks seeds, sets, smoke, backbone"):
        open_sweep(tmp_path, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".dmc-sweep", ".lock", "sweep.yaml"]


def test_a_sweep_refuses_a_folder_it_did_not_make(tmp_path):
    """`dmc sweep --out` refuses a folder holding files and no mark, as `dmc run --out` does: nothing
    written there (the user's compare.png is not overwritten)."""
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "compare.png").write_bytes(b"my plot")
    with pytest.raises(UserError, match="holds files that are not a dmc sweep"):
        open_sweep(tmp_path, Grid(["synthetic"], ["zeroshot"], [1], ["model.backbone=tiny"], smoke=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compare.png", "notes.txt"]
    assert (tmp_path / "compare.png").read_bytes() == b"my plot"


def test_a_sweep_adopts_only_a_run_with_its_own_config(tmp_path, tiny_dmc_run):
    """A finished run of another config found under one of the sweep's run names is refused in one line,
    never averaged into the sweep's table; the sweep's own finished run is skipped as before."""
    grid = Grid(["synthetic"], ["zeroshot"], [1], ["model.backbone=tiny"], smoke=True)
    open_sweep(tmp_path, grid)
    shutil.copytree(tiny_dmc_run, tmp_path / grid.points()[0].name)
    with pytest.raises(UserError, match="holds a run whose config is not the one this sweep gives it"):
        open_sweep(tmp_path, None)


def test_two_sweeps_on_one_folder(tmp_path):
    """While one sweep holds the folder, a second one stops at once in one line, exit 2."""
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from dmc.engine.grid import take_folder; take_folder(Path(sys.argv[1]), False); "
                               "print('held', flush=True); time.sleep(60)", str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        done = sweep(tmp_path, *TINY, "--methods", "zeroshot", "--seeds", "1")
    finally:
        holder.kill()
        holder.wait()
    errors = [line for line in done.stderr.splitlines() if line.startswith("dmc: error:")]
    assert done.returncode == 2 and len(errors) == 1 and "in use by another dmc sweep" in errors[0], done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "synthetic-zeroshot-s1").exists()


def test_a_run_finished_meanwhile_by_another_process_is_not_failed(tmp_path):
    """A run that another process held (and finished) while the sweep tried it: finished, not failed."""
    from dmc.engine.loop import run
    from dmc.engine.sweep import Outcome, Result, summarize
    from dmc.training.runtime import make_runtime

    grid = open_sweep(tmp_path, Grid(["synthetic"], ["zeroshot"], [1, 2], ["model.backbone=tiny"], smoke=True))
    first, second = grid.points()
    run(first.config(grid), out=tmp_path / first.name, rt=make_runtime("cpu", "fp32", progress=False))
    busy = Outcome(2, f"dmc: error: {tmp_path / first.name} is in use by another dmc run (pid 1); wait for it")
    text, failed = summarize(tmp_path, [Result(first, "unfinished", busy), Result(second, "new", busy)])
    assert failed == 1 and "failed" not in text and "1 of 2 runs are still running in other processes" in text
    assert f"| {first.name.rsplit('-s', 1)[0]} |" in text


def test_killing_the_sweep_stops_its_runs(tmp_path):
    """SIGKILL of the sweep's own process: its child run stops within seconds, as Ctrl-C stops it (resumable),
    instead of running on unseen and holding its folder."""
    import time

    folder = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "dmc", "sweep", "--out", str(folder), *TINY, "--methods", "dmc", "--seeds", "1",
            "--set", "vision.epochs=500"]
    parent = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = folder / "synthetic-dmc-s1" / ".lock"
    deadline = time.time() + 120
    while time.time() < deadline and not (lock.exists() and lock.read_text().strip()):
        time.sleep(0.5)
    child = int(lock.read_text())
    time.sleep(2)
    parent.kill()
    parent.wait()
    killed = time.time()
    deadline = killed + 120  # the child's own clean stop (run.log, loaders) needs CPU time on a loaded machine
    while time.time() < deadline and os.path.exists(f"/proc/{child}") and _state(child) != "Z":
        time.sleep(0.5)
    assert not os.path.exists(f"/proc/{child}") or _state(child) == "Z", "the run outlived its sweep"
    print(f"the run stopped {time.time() - killed:.1f} s after its sweep was killed")
    assert "interrupted" in (folder / "synthetic-dmc-s1" / "run.log").read_text()


@pytest.mark.parametrize("group", [False, True], ids=["sweep-pid", "process-group"])
def test_one_ctrl_c_stops_the_sweep(tmp_path, group):
    """One SIGINT (to the sweep's pid, or to its process group as a terminal's Ctrl-C sends it): the running
    run stops (interrupted, resumable), no queued run starts, the sweep exits 130."""
    import signal
    import time

    folder = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "dmc", "sweep", "--out", str(folder), *TINY, "--methods", "dmc", "--seeds", "1",
            "2", "3", "--set", "vision.epochs=500"]
    sweep_ = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    lock = folder / "synthetic-dmc-s1" / ".lock"
    deadline = time.time() + 120
    while time.time() < deadline and not (lock.exists() and lock.read_text().strip()):
        time.sleep(0.5)
    time.sleep(1)
    try:
        if group:
            os.killpg(sweep_.pid, signal.SIGINT)
        else:
            sweep_.send_signal(signal.SIGINT)
        _, err = sweep_.communicate(timeout=120)
    finally:
        if sweep_.poll() is None:
            os.killpg(sweep_.pid, signal.SIGKILL)
    assert sweep_.returncode == 130, err
    assert "interrupted" in (folder / "synthetic-dmc-s1" / "run.log").read_text()
    assert not (folder / "synthetic-dmc-s2").exists() and not (folder / "synthetic-dmc-s3").exists()
    assert status(folder / "synthetic-dmc-s1") != "finished"
    assert open_sweep(folder, None).seeds == [1, 2, 3]  # let go: the same sweep can be run again


def _state(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
