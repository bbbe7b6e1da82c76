"""A user's files are never lost to `--out`, and a run directory whose records disagree (a damaged or
swapped checkpoint, an edited plan or metrics line, a missing run.json, a lock deleted mid-run) is never
presented as a finished run: it is refused in one line, or resumed from the last task that is good."""
import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

import dmc
from dmc import faults
from dmc.engine.loop import run
from dmc.errors import UserError
from dmc.rundir import RunDir
from dmc.training.runtime import make_runtime
from tests.helpers import SMOKE, cli, killed_copy, tiny_cfg

QUIET = make_runtime("cpu", "fp32", progress=False)


def one_line(capsys, needle, *argv):
    code, _, err, errors = cli(capsys, *argv)
    assert code == 2 and len(errors) == 1 and needle in errors[0] and "Traceback" not in err, err
    return errors[0]


def tree(folder):
    """Every file under `folder` with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def full_run(tiny_dmc_run):
    return tiny_dmc_run


def acc_matrix(path):
    return json.loads((path / "summary.json").read_text())["acc_matrix"]


# ---------------------------------------------------------------- nothing deleted that dmc did not write
@pytest.mark.parametrize("files", [
    {"config.yaml": b"seed: 1\n", "checkpoints/model.pt": b"my weights"},  # looked like a run that finished no task
    {"checkpoints/epoch=3.ckpt": b"my weights"},  # was wiped without a word
    {".x.tmp.bak": b"mine"},  # looked like a temporary file of dmc's
])
def test_a_folder_dmc_did_not_create_is_refused_untouched(capsys, tmp_path, files):
    out = tmp_path / "mine"
    for name, data in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    one_line(capsys, "holds files that are not a dmc run", *SMOKE, "--out", out)
    assert tree(out) == files  # not one byte written there either (no lock, no mark)


def test_a_run_that_finished_no_task_gives_way_only_with_what_dmc_wrote(capsys, tmp_path):
    out = tmp_path / "r"
    one_line(capsys, "finished no task", *SMOKE, "--out", out, "--set", "vision.lr=1e6")
    (out / "checkpoints" / "epoch=3.ckpt").write_bytes(b"mine")
    (out / ".notes.tmp.txt").write_bytes(b"mine too")
    one_line(capsys, "holds files dmc did not write (first: .notes.tmp.txt)", *SMOKE, "--out", out)
    assert (out / "checkpoints" / "epoch=3.ckpt").read_bytes() == b"mine"
    (out / ".notes.tmp.txt").unlink()
    one_line(capsys, "holds files dmc did not write (first: checkpoints/epoch=3.ckpt)", *SMOKE, "--out", out)
    shutil.move(out / "checkpoints" / "epoch=3.ckpt", tmp_path / "kept.ckpt")
    code, _, err, _ = cli(capsys, *SMOKE, "--out", out, "--set", "benchmark.max_tasks=1")
    assert code == 0 and (out / "summary.json").exists(), err


def test_resume_removes_only_what_dmc_wrote(full_run, tmp_path):
    killed = killed_copy(full_run, tmp_path / "r", finished_tasks=1)
    mine = {".x.tmp": b"a", "checkpoints/.y.tmp.safetensors": b"b", "notes.txt": b"c"}
    for name, data in mine.items():
        (killed / name).write_bytes(data)
    (killed / ".metrics.4242.tmp.jsonl").write_text("a killed run's temporary file")
    resumed = run(None, resume=killed, rt=QUIET)
    assert acc_matrix(resumed) == acc_matrix(full_run)
    assert all((killed / name).read_bytes() == data for name, data in mine.items())
    assert not (killed / ".metrics.4242.tmp.jsonl").exists()


def test_an_unfinished_run_that_lost_its_metrics_keeps_its_checkpoints(capsys, full_run, tmp_path):
    killed = killed_copy(full_run, tmp_path / "r", finished_tasks=2)
    (killed / "metrics.jsonl").unlink()
    before = tree(killed / "checkpoints")
    one_line(capsys, "holds the checkpoint of task 2 but no finished task: its records disagree", *SMOKE,
             "--out", killed)
    one_line(capsys, "has the checkpoint of task 2 but metrics lines for only 0 tasks", "run", "--resume", killed)
    assert tree(killed / "checkpoints") == before


# ---------------------------------------------------------------- damaged or swapped checkpoints
def damage(path, offset_share=0.5):
    """Zero a stretch in the middle of a file (the header intact: it still loads)."""
    data = bytearray(path.read_bytes())
    start = int(len(data) * offset_share)
    data[start:start + max(64, len(data) // 8)] = bytes(max(64, len(data) // 8))
    path.write_bytes(bytes(data[:len(path.read_bytes())]))


def test_a_damaged_checkpoint_falls_back_on_resume_and_is_refused_by_predict_and_load(capsys, caplog, full_run,
                                                                                      tmp_path):
    killed = killed_copy(full_run, tmp_path / "r", finished_tasks=2)
    damage(killed / "checkpoints" / "task_02.safetensors")
    load_file(str(killed / "checkpoints" / "task_02.safetensors"))  # it loads: only the digest tells
    resumed = run(None, resume=killed, rt=QUIET)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("task_02.safetensors differs from the one written after task 2" in w for w in warned)
    assert acc_matrix(resumed) == acc_matrix(full_run)  # not the silent wrong result

    done = tmp_path / "done"
    shutil.copytree(full_run, done)
    damage(done / "checkpoints" / "task_03.safetensors")
    image = tmp_path / "a.png"
    from PIL import Image
    Image.new("RGB", (8, 8)).save(image)
    one_line(capsys, "task_03.safetensors differs from the one written after task 3", "predict", done, image)
    with pytest.raises(UserError, match="damaged or replaced"):
        dmc.load(done)
    assert dmc.load(done, task=2).task == 2  # the tasks before are good


def test_a_checkpoint_of_other_shapes_falls_back_on_resume_and_is_refused_by_load(capsys, caplog, full_run, tmp_path):
    """A run made before checkpoints had digests, its checkpoint swapped for one of another shape."""
    killed = killed_copy(full_run, tmp_path / "r", finished_tasks=2)
    lines = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    (killed / "metrics.jsonl").write_text("".join(
        json.dumps({k: v for k, v in r.items() if k not in ("sha256", "checkpoint_sha256")}) + "\n" for r in lines))
    ckpt = killed / "checkpoints" / "task_02.safetensors"
    state = load_file(str(ckpt))
    key = next(k for k in state if k.startswith("visual.") and state[k].ndim == 2)
    save_file({**state, key: state[key][:, :-1].contiguous()}, str(ckpt))
    other = tmp_path / "other"
    shutil.copytree(killed, other)
    resumed = run(None, resume=killed, rt=QUIET)
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "task_02.safetensors does not fit the model" in warned and "falling back" in warned
    assert acc_matrix(resumed) == acc_matrix(full_run)
    with pytest.raises(UserError, match="task_02.safetensors does not fit the model its run's config builds"):
        dmc.load(other, task=2)
    from PIL import Image
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    one_line(capsys, "task_02.safetensors does not fit the model", "predict", other, tmp_path / "a.png", "--task", "2")


def test_a_non_finite_checkpoint_is_never_loaded(full_run, tmp_path):
    done = tmp_path / "done"
    shutil.copytree(full_run, done)
    lines = [json.loads(line) for line in (done / "metrics.jsonl").read_text().splitlines()]
    (done / "metrics.jsonl").write_text("".join(
        json.dumps({k: v for k, v in r.items() if k not in ("sha256", "checkpoint_sha256")}) + "\n" for r in lines))
    ckpt = done / "checkpoints" / "task_03.safetensors"
    state = load_file(str(ckpt))
    key = next(k for k, v in state.items() if v.is_floating_point())
    save_file({**state, key: state[key] * float("nan")}, str(ckpt))
    with pytest.raises(UserError, match="holds NaN or infinite values"):
        dmc.load(done)


# ---------------------------------------------------------------- records that disagree
def test_records_that_disagree_are_refused_in_one_line(capsys, full_run, tmp_path):
    def case(name, edit):
        path = killed_copy(full_run, tmp_path / name, finished_tasks=2)
        edit(path)
        return path

    no_state = case("state", lambda p: (p / "run.json").unlink())
    one_line(capsys, "has no readable run.json", "run", "--resume", no_state)
    with pytest.raises(UserError, match="has no readable run.json"):
        dmc.load(no_state, task=1)
    listed = case("list", lambda p: (p / "run.json").write_text("[1, 2]"))
    one_line(capsys, "run.json is not what dmc wrote", "run", "--resume", listed)

    def edit_plan(p):
        plan = json.loads((p / "plan.json").read_text())
        plan["tasks"][0][0], plan["tasks"][0][1] = plan["tasks"][0][1], plan["tasks"][0][0]
        (p / "plan.json").write_text(json.dumps(plan))

    plan = case("plan", edit_plan)
    one_line(capsys, "plan.json was changed after the run started", "run", "--resume", plan)
    with pytest.raises(UserError, match="plan.json was changed"):
        dmc.load(plan, task=1)

    def edit_row(p):
        lines = (p / "metrics.jsonl").read_text().splitlines()
        rec = json.loads(lines[1])
        rec["acc_row"][0] = 99.0
        (p / "metrics.jsonl").write_text("\n".join([lines[0], json.dumps(rec)]) + "\n")

    row = case("row", edit_row)
    one_line(capsys, "metrics.jsonl line 2 (task 2) was changed after it was written", "run", "--resume", row)
    assert len((row / "metrics.jsonl").read_text().splitlines()) == 2 and not (row / "summary.json").exists()


def test_a_copied_config_is_not_a_run(capsys, full_run, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    shutil.copy(full_run / "config.yaml", folder / "config.yaml")
    one_line(capsys, "has no readable run.json", "run", "--resume", folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml"]


def test_a_lock_deleted_mid_run_stops_the_writer(capsys, tmp_path):
    out = tmp_path / "r"

    def hook(point):
        if point == "eval:task 2":
            (out / ".lock").unlink()

    faults.HOOK = hook
    try:
        with pytest.raises(UserError, match=".lock was removed or replaced while this run owned the folder"):
            run(tiny_cfg("simplecil"), out=out, rt=QUIET)
    finally:
        faults.HOOK = None
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1 and not (out / "summary.json").exists()
    assert RunDir(out).done_tasks() == 1
