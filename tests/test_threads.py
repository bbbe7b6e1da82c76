"""Threads: runs started together share the cores (each takes cores // runs), the choice is one logged line
and recorded in the run directory, and a resumed run continues with the count it started with."""
import json
import subprocess
import sys

import pytest
import torch

from dmc.cli import main
from dmc.training import threads

HOLD = ("import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); fcntl.lockf(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True); time.sleep(120)\n")


def test_runs_here_share_the_cores(tmp_path):
    folder = tmp_path / "running"
    folder.mkdir()
    (folder / "999999.run").write_text("")  # a run that is gone: its file is dropped
    assert threads.choose(2, None, None, False, folder) == (2, "2 torch threads (2 cores, no other dmc run here; "
                                                                "--threads N to choose)")
    assert not (folder / "999999.run").exists()
    holders = [subprocess.Popen([sys.executable, "-c", HOLD, str(folder / f"{i}.run")], stdout=subprocess.PIPE,
                                text=True) for i in range(3)]
    try:
        assert all(h.stdout.readline().strip() == "held" for h in holders)
        assert threads.others(folder) == 3
        assert threads.choose(8, None, None, False, folder)[0] == 2  # 8 cores, 4 runs
        count, why = threads.choose(2, None, None, False, folder)
        assert count == 1 and why == "1 torch thread (2 cores, 3 other dmc runs here; --threads N to choose)"
        assert threads.choose(2, 4, None, False, folder) == (4, "4 torch threads (--threads)")
        assert threads.choose(2, None, 3, False, folder)[0] == 3  # a resumed run: as it started
        assert threads.choose(2, None, None, True, folder)[0] is None  # OMP_NUM_THREADS decides
    finally:
        for h in holders:
            h.kill()
            h.wait()
    assert threads.others(folder) == 0


def test_the_count_is_said_recorded_and_kept_on_resume(capsys, caplog, tmp_path, monkeypatch):
    import logging

    from tests.helpers import killed_copy

    caplog.set_level(logging.INFO)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "registry", lambda: tmp_path / "running")
    monkeypatch.setattr("dmc.training.runtime.cores", lambda: 3)
    before = torch.get_num_threads()
    try:
        argv = ["run", "--benchmark", "synthetic", "--method", "simplecil", "--smoke", "--quiet"]
        assert main([*argv, "--out", str(tmp_path / "r")]) == 0
        assert "3 torch threads (3 cores, no other dmc run here; --threads N to choose)" in caplog.text
        assert json.loads((tmp_path / "r" / "run.json").read_text())["threads"] == 3
        lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
        assert {json.loads(line)["threads"] for line in lines} == {3}
        assert json.loads((tmp_path / "r" / "summary.json").read_text())["threads"] == 3
        killed = killed_copy(tmp_path / "r", tmp_path / "k", finished_tasks=1)
        state = json.loads((killed / "run.json").read_text())
        (killed / "run.json").write_text(json.dumps({**state, "threads": 1}))
        caplog.clear()
        assert main(["run", "--resume", str(killed), "--quiet"]) == 0
        assert "1 torch thread, as the run started with (run.json)" in caplog.text and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    capsys.readouterr()


@pytest.mark.parametrize("value", ["0", "two"])
def test_bad_thread_counts(capsys, value):
    assert main(["run", "--threads", value]) == 2
    assert "--threads" in capsys.readouterr().err


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    import time

    from dmc.rundir import default_out

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda fmt: "20250101-000000")
    first, second = default_out("glyphs", "dmc-ot"), default_out("glyphs", "dmc-ot")
    assert first.name == "20250101-000000-glyphs-dmc-ot" and second.name == "20250101-000000-glyphs-dmc-ot-2"
    assert first.is_dir() and second.is_dir() and not any(first.iterdir())
