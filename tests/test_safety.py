"""What dmc writes is its own and what it shows was checked: no symbolic link followed in a run directory,
metrics lines appended once and never rewritten, a sealed summary checked against them."""
import json
import os

import pytest

from dmc.errors import UserError
from dmc.rundir import RunDir, RunWriter
from tests.helpers import cli, killed_copy


# --------------------------------------------------------------------------- symbolic links
def test_a_lock_that_is_a_link_is_refused_and_its_target_untouched(tmp_path):
    mine = tmp_path / "mine.txt"
    mine.write_text("precious\n")
    out = tmp_path / "run"
    out.mkdir()
    (out / ".dmc-run").write_text("a dmc run directory\n")
    os.symlink(mine, out / ".lock")
    with pytest.raises(UserError, match=r"\.lock is a symbolic link"):
        RunWriter.create(out)
    assert mine.read_text() == "precious\n"


def test_a_run_log_that_is_a_link_is_refused(tmp_path, tiny_dmc_run):
    killed = killed_copy(tiny_dmc_run, tmp_path / "r", finished_tasks=1)
    mine = tmp_path / "mine.log"
    mine.write_text("mine\n")
    (killed / "run.log").unlink(missing_ok=True)
    os.symlink(mine, killed / "run.log")
    with pytest.raises(UserError, match=r"run\.log is a symbolic link"):
        RunWriter.resume(killed)
    assert mine.read_text() == "mine\n"


def test_a_checkpoints_link_is_refused_on_resume_and_on_take_over(tmp_path, tiny_dmc_run):
    user = tmp_path / "user"
    user.mkdir()
    (user / "task_03.safetensors").write_bytes(b"the user's file")
    killed = killed_copy(tiny_dmc_run, tmp_path / "r", finished_tasks=2)
    for ckpt in (killed / "checkpoints").iterdir():
        ckpt.rename(user / ckpt.name)
    (killed / "checkpoints").rmdir()
    os.symlink(user, killed / "checkpoints")
    with pytest.raises(UserError, match=r"checkpoints is a symbolic link"):
        RunWriter.resume(killed)
    failed = tmp_path / "failed"  # a run that finished no task: a new run takes it over
    failed.mkdir()
    (failed / ".dmc-run").write_text("a dmc run directory\n")
    (failed / "config.yaml").write_text("seed: 1\n")
    os.symlink(user, failed / "checkpoints")
    with pytest.raises(UserError, match=r"checkpoints is a symbolic link"):
        RunWriter.create(failed)
    assert (user / "task_03.safetensors").read_bytes() == b"the user's file"


def test_checkpoints_replaced_by_a_file_gives_advice_that_works(tmp_path, tiny_dmc_run):
    """The advice of the refusal (move the file away) is then accepted by --resume."""
    killed = killed_copy(tiny_dmc_run, tmp_path / "r", finished_tasks=2)
    writer = RunWriter.resume(killed)
    try:
        saved = tmp_path / "saved"
        (killed / "checkpoints").rename(saved)
        (killed / "checkpoints").write_text("not a folder")
        with pytest.raises(UserError, match="checkpoints is not a folder .* move it out"):
            writer.write_summary({"tasks": 3})
    finally:
        writer.close()
    (killed / "checkpoints").unlink()  # the advice: move it away (here: the folder comes back)
    saved.rename(killed / "checkpoints")
    RunWriter.resume(killed).close()


# --------------------------------------------------------------------------- metrics lines
def test_metrics_lines_are_appended_never_rewritten(tmp_path, monkeypatch):
    """After each task, the file holds the earlier bytes unchanged, in the same file (inode): a finished
    line is never read back and written again."""
    from dmc.engine.loop import run
    from dmc.training.runtime import make_runtime
    from tests.helpers import tiny_cfg

    seen = []
    finish = RunWriter.finish_task

    def watched(self, record, state, keep="all"):
        finish(self, record, state, keep)
        f = self.path / "metrics.jsonl"
        seen.append((os.stat(f).st_ino, f.read_bytes()))

    monkeypatch.setattr(RunWriter, "finish_task", watched)
    run(tiny_cfg("simplecil"), out=tmp_path / "run", rt=make_runtime("cpu", "fp32", progress=False))
    assert len(seen) == 3
    for (ino_a, a), (ino_b, b) in zip(seen, seen[1:]):
        assert ino_a == ino_b and b.startswith(a) and len(b) > len(a)


def test_a_torn_last_line_is_cut_on_resume_and_the_earlier_lines_kept(tmp_path, tiny_dmc_run):
    killed = killed_copy(tiny_dmc_run, tmp_path / "r", finished_tasks=2)
    good = (killed / "metrics.jsonl").read_bytes()
    third = (tiny_dmc_run / "metrics.jsonl").read_bytes()[len(good):]
    with open(killed / "metrics.jsonl", "ab") as f:
        f.write(third[: len(third) // 2])  # a crash in the middle of the append
    ino = os.stat(killed / "metrics.jsonl").st_ino
    with RunWriter.resume(killed) as writer:
        assert [r["task"] for r in writer.keep_tasks(2)] == [1, 2]
    assert (killed / "metrics.jsonl").read_bytes() == good and os.stat(killed / "metrics.jsonl").st_ino == ino


# --------------------------------------------------------------------------- summary.json
def _edit_summary(path, **changes):
    tree = json.loads((path / "summary.json").read_text())
    (path / "summary.json").write_text(json.dumps({**tree, **changes}))


def test_the_summary_is_sealed_and_an_edit_is_refused_everywhere(capsys, tmp_path, tiny_dmc_run):
    import shutil

    assert "sha256" in json.loads((tiny_dmc_run / "summary.json").read_text())
    run = tmp_path / "run"
    shutil.copytree(tiny_dmc_run, run)
    _edit_summary(run, avg=99.0, last=99.0)
    with pytest.raises(UserError, match="summary.json was changed after it was written"):
        RunDir(run).read_summary()
    with pytest.raises(UserError, match="summary.json was changed"):
        RunDir(run).trained_task()  # what dmc.load and dmc predict check first
    code, out, err, errors = cli(capsys, "compare", run)
    assert code == 2 and len(errors) == 1 and "summary.json was changed" in errors[0] and "99.00" not in out


def test_a_summary_that_disagrees_with_the_metrics_lines_is_refused(capsys, tmp_path, tiny_dmc_run):
    """Unsealed (as older runs are) and edited, or a metrics line deleted: not listed as finished."""
    import shutil

    edited = tmp_path / "edited"
    shutil.copytree(tiny_dmc_run, edited)
    tree = json.loads((edited / "summary.json").read_text())
    tree.pop("sha256")
    (edited / "summary.json").write_text(json.dumps({**tree, "last": tree["last"] + 5}))
    with pytest.raises(UserError, match="disagrees with metrics.jsonl .Last"):
        RunDir(edited).read_summary()
    cut = tmp_path / "cut"
    shutil.copytree(tiny_dmc_run, cut)
    lines = (cut / "metrics.jsonl").read_text().splitlines(keepends=True)
    (cut / "metrics.jsonl").write_text("".join(lines[:-1]))
    code, _, err, errors = cli(capsys, "compare", cut)
    assert code == 2 and len(errors) == 1 and "disagrees with metrics.jsonl" in errors[0], err


def test_resume_of_a_garbage_summary_says_so(capsys, tmp_path, tiny_dmc_run):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_dmc_run, run)
    (run / "summary.json").write_bytes(b"\x00garbage{")
    code, _, err, errors = cli(capsys, "run", "--resume", run, "--quiet")
    assert code == 2 and len(errors) == 1 and "summary.json is unreadable" in errors[0], err
    assert "already finished" not in err


def test_after_the_lock_was_deleted_no_advice_to_reuse_the_folder(tmp_path, monkeypatch):
    """`.lock` deleted mid-run: the run stops in one line that does not say the same --out can be used
    again (another process may have taken the folder)."""
    from dmc import faults
    from dmc.engine.loop import run
    from dmc.training.runtime import make_runtime
    from tests.helpers import tiny_cfg

    out = tmp_path / "run"

    def delete_lock(name):
        if name == "eval:task 1" and (out / ".lock").exists():
            (out / ".lock").unlink()

    monkeypatch.setattr(faults, "HOOK", delete_lock)
    with pytest.raises(UserError) as caught:
        run(tiny_cfg("simplecil"), out=out, rt=make_runtime("cpu", "fp32", progress=False))
    assert ".lock was removed or replaced" in str(caught.value)
    assert "can be used again" not in str(caught.value) and "--resume" not in str(caught.value)
