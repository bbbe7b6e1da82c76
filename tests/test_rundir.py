"""Nothing corrupts a run directory: digests, one owner at a time, torn files found on resume, and a run
that finished no task gives way to the next one on the same --out."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from dmc.engine.loop import run
from dmc.errors import UserError
from dmc.rundir import RunDir, RunWriter
from dmc.training.runtime import make_runtime
from tests.helpers import SMOKE, cli, killed_copy, tiny_cfg

QUIET = make_runtime("cpu", "fp32", progress=False)


@pytest.fixture
def full_run(tiny_dmc_run):
    return tiny_dmc_run


def acc_matrix(path):
    return json.loads((path / "summary.json").read_text())["acc_matrix"]


def test_resume_refuses_a_hand_edited_config(capsys, full_run, tmp_path):
    killed = killed_copy(full_run, tmp_path / "r", finished_tasks=1)
    text = (killed / "config.yaml").read_text()
    assert "  increment: null\n" in text
    (killed / "config.yaml").write_text(text.replace("  increment: null\n", "  increment: 6\n"))
    code, _, err, errors = cli(capsys, "run", "--resume", killed, "--quiet")
    assert code == 2 and len(errors) == 1 and "config.yaml was changed after the run started" in errors[0], err
    assert not (killed / "summary.json").exists() and len((killed / "metrics.jsonl").read_text().splitlines()) == 1


def test_resume_refuses_flags_that_would_change_the_run(capsys, full_run, tmp_path):
    killed = killed_copy(full_run, tmp_path / "r", finished_tasks=1)
    code, _, err, errors = cli(capsys, "run", "--resume", killed, "--set", "vision.lr=1e-5", "--method", "dmc-ot")
    assert code == 2 and len(errors) == 1 and "--method, --set cannot be used with it" in errors[0], err
    assert not (killed / "summary.json").exists()


def test_one_owner_at_a_time_and_a_killed_owner_lets_go(tmp_path):
    out = tmp_path / "r"
    first = RunWriter.create(out)
    with pytest.raises(UserError, match=f"in use by another dmc run \\(pid {os.getpid()}\\)"):
        RunWriter.create(out)
    first.close()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); fcntl.lockf(fd, fcntl.LOCK_EX)\n"
        "os.ftruncate(fd, 0); os.write(fd, str(os.getpid()).encode()); print('locked', flush=True)\n"
        "time.sleep(60)\n"),
        str(out / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"in use by another dmc run \\(pid {holder.pid}\\)"):
            RunWriter.create(out)
    finally:
        holder.kill()
        holder.wait()
    RunWriter.create(out).close()  # the lock died with its process


def test_torn_metrics_line_and_checkpoint_fall_back_to_the_last_good_task(caplog, full_run, tmp_path):
    torn_line = killed_copy(full_run, tmp_path / "line", finished_tasks=3)
    lines = (torn_line / "metrics.jsonl").read_text().splitlines()
    (torn_line / "metrics.jsonl").write_text("\n".join(lines[:2] + [lines[2][: len(lines[2]) // 2]]))
    torn_ckpt = killed_copy(full_run, tmp_path / "ckpt", finished_tasks=2)
    ckpt = torn_ckpt / "checkpoints" / "task_02.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    for path, note, after in ((torn_line, "metrics.jsonl line 3 is unreadable", 2),
                              (torn_ckpt, "checkpoint task_02.safetensors is unreadable", 1)):
        caplog.clear()
        resumed = run(None, resume=path, rt=QUIET)
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warned) == 1 and note in warned[0] and f"continuing after task {after}," in warned[0]
        assert acc_matrix(resumed) == acc_matrix(full_run)


def test_a_run_that_finished_no_task_gives_way_and_the_advice_works(capsys, tmp_path):
    out = tmp_path / "r"
    code, _, err, errors = cli(capsys, *SMOKE, "--out", out, "--set", "vision.lr=1e6")
    assert code == 2 and len(errors) == 1 and "--set vision.lr=1e-5" in errors[0], err
    assert "finished no task: the same --out can be used again" in errors[0]
    assert "ERROR error: " in (out / "run.log").read_text()  # the run's own record of why it stopped
    code, _, err, errors = cli(capsys, "run", "--resume", out, "--quiet")  # it is a run: resume says why it fails
    assert code == 2 and "non-finite" in errors[0], err
    code, _, err, _ = cli(capsys, *SMOKE, "--out", out, "--set", "vision.lr=1e-5")
    assert code == 0 and (out / "summary.json").exists(), err


def test_a_run_with_finished_tasks_is_kept(capsys, full_run, tmp_path):
    killed = killed_copy(full_run, tmp_path / "r", finished_tasks=1)
    code, _, err, errors = cli(capsys, *SMOKE, "--out", killed)
    assert code == 2 and "holds an unfinished run (1 tasks done); continue it with --resume" in errors[0], err
    assert len((killed / "metrics.jsonl").read_text().splitlines()) == 1


def test_a_folder_of_other_files_is_left_alone(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err, errors = cli(capsys, *SMOKE, "--out", tmp_path)
    assert code == 2 and "holds files that are not a dmc run (first: notes.txt)" in errors[0], err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_new_run_writes_digests_before_any_image_is_loaded(tmp_path, monkeypatch):
    import dmc.engine.loop as loop

    def stop(*args, **kwargs):
        raise UserError("stopped before loading images")

    monkeypatch.setattr(loop, "load_datasets", stop)
    with pytest.raises(UserError):
        run(tiny_cfg("dmc"), out=tmp_path / "r", rt=QUIET)
    state = json.loads((tmp_path / "r" / "run.json").read_text())
    assert set(state) == {"config_sha256", "plan_sha256", "threads"} and (tmp_path / "r" / "plan.json").exists()
    RunWriter.create(tmp_path / "r").close()  # unlocked after the error, and free to take again


def test_a_config_field_added_later_does_not_look_like_an_edit(tmp_path, monkeypatch):
    """A run made before a field existed (its config.yaml lacks it) resumes after an upgrade."""
    import importlib

    resolve = importlib.import_module("dmc.config.resolve")  # the module (dmc.config.resolve is the function)
    real = resolve.to_dict

    def older(cfg):
        tree = real(cfg)
        del tree["memory"]["shrink_few"]
        return tree

    monkeypatch.setattr(resolve, "to_dict", older)
    full = run(tiny_cfg("dmc"), out=tmp_path / "full", rt=QUIET)
    monkeypatch.setattr(resolve, "to_dict", real)
    assert "shrink_few" not in (full / "config.yaml").read_text()
    killed = killed_copy(full, tmp_path / "killed", finished_tasks=2)
    assert acc_matrix(run(None, resume=killed, rt=QUIET)) == acc_matrix(full)


def test_tasks_are_numbered_from_1_in_files(full_run):
    assert [json.loads(line)["task"] for line in (full_run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert sorted(p.name for p in (full_run / "checkpoints").iterdir()) == [
        "task_01.safetensors", "task_02.safetensors", "task_03.safetensors"]


def old_numbering(run, dest):
    """A copy of a run as runs were written before tasks were numbered from 1 (first task 0)."""
    shutil.copytree(run, dest)
    lines = [json.loads(line) for line in (dest / "metrics.jsonl").read_text().splitlines()]
    older = ({k: v for k, v in r.items() if k not in ("sha256", "checkpoint_sha256")} for r in lines)  # no digests then
    (dest / "metrics.jsonl").write_text("".join(json.dumps({**r, "task": r["task"] - 1}) + "\n" for r in older))
    (dest / ".dmc-run").unlink()  # nor a mark
    for k in range(1, len(lines) + 1):
        checkpoints = dest / "checkpoints"
        (checkpoints / f"task_{k:02d}.safetensors").rename(checkpoints / f"task_{k - 1:02d}.safetensors")
    return dest


def test_a_run_numbered_from_0_is_read_resumed_and_continued_in_its_numbering(full_run, tmp_path):
    old = old_numbering(full_run, tmp_path / "old")
    assert [r["task"] for r in RunDir(old).records()] == [1, 2, 3] and RunDir(old).trained_task() == 3
    killed = killed_copy(old, tmp_path / "killed", finished_tasks=2)
    assert RunDir(killed).done_tasks() == 2
    resumed = run(None, resume=killed, rt=QUIET)
    assert acc_matrix(resumed) == acc_matrix(full_run)
    assert [json.loads(line)["task"] for line in (resumed / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2]
    assert (resumed / "checkpoints" / "task_02.safetensors").exists()
    assert not (resumed / "checkpoints" / "task_03.safetensors").exists()


def test_run_log_keeps_the_console_lines_and_why_a_run_stopped(tmp_path, monkeypatch):
    import dmc.methods.simplecil as simplecil

    train = simplecil.SimpleCIL.train_task

    def boom(self, task):
        if task.index == 1:
            raise RuntimeError("boom in task 2")
        return train(self, task)

    monkeypatch.setattr(simplecil.SimpleCIL, "train_task", boom)
    with pytest.raises(RuntimeError):
        run(tiny_cfg("simplecil"), out=tmp_path / "r", rt=QUIET)
    log = (tmp_path / "r" / "run.log").read_text()
    assert "task 1/3: A_t" in log and "Traceback" in log and "RuntimeError: boom in task 2" in log


def test_resume_reads_the_saved_config_once(capsys, full_run, tmp_path, monkeypatch):
    import dmc.config as config_package
    import dmc.engine.loop as loop

    killed = killed_copy(full_run, tmp_path / "r", finished_tasks=2)
    calls = []
    real = config_package.load
    monkeypatch.setattr(loop.config, "load", lambda path: calls.append(path) or real(path))
    code, _, err, _ = cli(capsys, "run", "--resume", killed, "--quiet")
    assert code == 0 and len(calls) == 1, (calls, err)
