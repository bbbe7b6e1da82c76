"""`dmc learn`: a model folder taught one folder of new classes per call, through the engine of `dmc run`.

Each call must equal the task a run would train (the same class order, the same seed); a call killed at
any point must leave the earlier versions usable, and the same call run again must finish to the same
result; bad input must change nothing and end in one line.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

import dmc
from dmc import config, faults
from dmc.engine.learn import Learner
from dmc.engine.loop import run
from dmc.engine.model_dir import committed, version_dir
from dmc.rundir import RunDir
from dmc.training.runtime import make_runtime
from tests.helpers import cli
from tests.image_files import GARBAGE, write_file

QUIET = make_runtime("cpu", "fp32", progress=False)
SETS = ["vision.epochs=1", "vision.batch_size=8", "prompt.epochs=2", "prompt.batch_size=8",
        "calibration.samples_per_class=16", "checkpoint.keep=all"]
GROUPS = {"a": ["red_fox", "green_tree", "blue_sky"], "b": ["cat", "dog"], "c": ["owl", "bee"]}
ALL = sorted(c for group in GROUPS.values() for c in group)  # the folder order of an image-folder run


class Killed(BaseException):
    """Stops a call like a kill would: nothing in dmc catches a BaseException that is not an Exception."""


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the comparisons below are exact
    yield
    torch.set_num_threads(threads)


def write_classes(root: Path, names: list[str], split: bool = True, n_train: int = 8, n_test: int = 4) -> Path:
    """Class folders of noisy colour fields, one colour per class. File names number the images across
    all classes (in folder order), as `dmc world --export` does, so a run reads them in the same order."""
    for name in names:
        c = ALL.index(name) if name in ALL else len(ALL)
        rng = np.random.default_rng(c)
        colour = rng.integers(0, 256, 3)
        for part, n in (("train", n_train), ("test", n_test)):
            if not split and part == "test":
                continue
            folder = root / part / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.clip(colour + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{c * 100 + i:05d}.png")
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("arrivals")
    return {g: write_classes(root / g, names) for g, names in GROUPS.items()}


def learner(path, first: bool = True) -> Learner:
    return Learner(path, backbone="tiny", sets=SETS, rt=QUIET) if first else Learner(path, rt=QUIET)


def outcome(model: Path, task: int):
    """Version `task`'s accuracy matrix and checkpoint (every trained tensor)."""
    version = version_dir(model, task)
    ckpt = load_file(str(version / "checkpoints" / f"task_{task:02d}.safetensors"))
    summary = json.loads((version / "summary.json").read_text())
    return summary["acc_matrix"], {k: v.tolist() for k, v in ckpt.items()}


@pytest.fixture(scope="module")
def taught(tmp_path_factory, folders):
    """A model taught groups a, b and c in three calls."""
    model = tmp_path_factory.mktemp("model") / "m"
    records = [learner(model).learn(folders["a"])]
    records += [learner(model, first=False).learn(folders[g]) for g in ("b", "c")]
    return model, records


def test_learn_three_times_then_predict(taught, folders, capsys):
    model, records = taught
    assert [r["task"] for r in records] == [1, 2, 3] and committed(model) == 3
    assert [r["classes_seen"] for r in records] == [3, 5, 7]
    assert all(r["counts"] == [12, 8, 8][: r["task"]] for r in records)  # every learned class is tested
    last = dmc.load(model)
    assert last.task == 3 and last.classes == ["blue sky", "green tree", "red fox", "cat", "dog", "bee", "owl"]
    assert dmc.load(model, task=1).classes == ["blue sky", "green tree", "red fox"]
    # the loaded model's predictions on the kept test images give the accuracies the call recorded
    for k, record in enumerate(records, 1):
        model_k = dmc.load(model, task=k)
        tests = sorted((model / "images").glob("task_0[1-%d]/test/*/*.png" % k))
        truth = np.asarray([model_k.classes.index(p.parent.name.replace("_", " ")) for p in tests])
        pred = model_k.predict([str(p) for p in tests], topk=1).index[:, 0]
        bounds = np.cumsum([0, 3, 2, 2][: k + 1])
        accs = [100 * float(np.mean(pred[(truth >= lo) & (truth < hi)] == truth[(truth >= lo) & (truth < hi)]))
                for lo, hi in zip(bounds[:-1], bounds[1:])]
        assert accs == pytest.approx(record["acc_row"], abs=1e-9)
    image = str(next((folders["b"] / "test" / "dog").iterdir()))
    code, out, _, errors = cli(capsys, "predict", model, image, "--topk", "2")
    assert code == 0 and not errors and json.loads(out)["task"] == 3
    code, out, _, _ = cli(capsys, "predict", model, image, "--task", "1")
    assert code == 0 and {c["class"] for c in json.loads(out)["top"]} <= {"blue sky", "green tree", "red fox"}
    code, _, _, errors = cli(capsys, "predict", model, image, "--task", "4")
    assert code == 2 and len(errors) == 1 and "versions 1..3" in errors[0]


WORLD = ["data.world.train_per_class=8", "data.world.test_per_class=4", "benchmark.max_tasks=2"]


def test_calls_equal_the_run_of_the_glyph_world_with_the_same_class_order(tmp_path, capsys):
    """`dmc world --export`, then a call per group = `dmc run` of the glyph world in the order the calls
    give its classes (class_order.yaml), the same seed: the same accuracy matrix and trained tensors."""
    code, out, err, _ = cli(capsys, "world", "--export", tmp_path / "world", *[a for s in WORLD for a in ("--set", s)])
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "world").iterdir()) == ["class_order.yaml", "group_01", "group_02"]
    model = tmp_path / "m"
    learner(model).learn(tmp_path / "world" / "group_01")
    learner(model, first=False).learn(tmp_path / "world" / "group_02")
    cfg = config.resolve("glyphs", "dmc-ot-mem", {"model.backbone": "tiny"},
                         SETS + WORLD + [f"benchmark.order_file={tmp_path / 'world' / 'class_order.yaml'}"])
    ran = run(cfg, out=tmp_path / "run", rt=QUIET)
    assert json.loads((ran / "summary.json").read_text())["acc_matrix"] == outcome(model, 2)[0]
    tensors = {k: v.tolist() for k, v in load_file(str(ran / "checkpoints" / "task_02.safetensors")).items()}
    assert tensors == outcome(model, 2)[1]
    assert json.loads((ran / "plan.json").read_text())["tasks"] == RunDir(version_dir(model, 2)).plan()["tasks"]


def test_export_writes_the_renditions_of_each_task(tmp_path, capsys):
    from dmc.data.benchmark import make_benchmark
    from dmc.world.source import renditions_split

    cfg = config.resolve("glyphs", None, None, WORLD + ["seed=5"])
    code, _, err, _ = cli(capsys, "world", "--export", tmp_path / "w", *[a for s in WORLD + ["seed=5"]
                                                                        for a in ("--set", s)])
    assert code == 0, err
    bench = make_benchmark(cfg, 5)
    images, targets = renditions_split(cfg.data.world, "test")
    for t, task in enumerate(bench.tasks):
        folders = sorted(p.name for p in (tmp_path / "w" / f"group_{t + 1:02d}" / "test").iterdir())
        assert folders == sorted(bench.class_names[c].replace(" ", "_") for c in task)
    some = next((tmp_path / "w" / "group_02" / "test" / folders[0]).iterdir())
    assert np.array_equal(np.asarray(Image.open(some)), images[int(some.stem)])  # lossless, its own row
    code, _, _, errors = cli(capsys, "world", "--export", tmp_path / "w")
    assert code == 2 and "not an empty folder" in errors[0]


# ---------------------------------------------------------------- killed calls
@pytest.fixture(scope="module")
def two_calls(tmp_path_factory, folders):
    """An uninterrupted model of two calls, and every kill point its second call reaches."""
    model = tmp_path_factory.mktemp("ref") / "m"
    learner(model).learn(folders["a"])
    reached: list[str] = []
    faults.HOOK = reached.append
    try:
        learner(model, first=False).learn(folders["b"])
    finally:
        faults.HOOK = None
    return outcome(model, 2), reached


def kill_second_call(tmp_path, folders, name: str, nth: int) -> Path:
    """A model after call 1, its call 2 killed the nth time `name` is reached: a copy of the folder then."""
    model, snapshot, count = tmp_path / "m", tmp_path / "killed", Counter()
    learner(model).learn(folders["a"])

    def hook(point: str) -> None:
        count[point] += 1
        if point == name and count[point] == nth:
            shutil.copytree(model, snapshot, symlinks=True)
            raise Killed(point)

    faults.HOOK = hook
    try:
        with pytest.raises(Killed):
            learner(model, first=False).learn(folders["b"])
    finally:
        faults.HOOK = None
    return snapshot


def occurrences(reached: list[str]) -> list[tuple[str, int]]:
    seen: Counter[str] = Counter()
    return [(name, seen.update([name]) or seen[name]) for name in reached]


POINTS = [("write:images/task_02", 1), ("write:versions/task_02", 1), ("fit:task 2 stage 1", 1),
          ("encode:task 2 features", 1), ("fit:task 2 stage 2", 2), ("eval:task 2", 1),
          ("write:task_02.safetensors", 1), ("write:metrics.jsonl", 1), ("finish", 1)]


@pytest.mark.parametrize("name, nth", POINTS)
def test_a_killed_call_keeps_the_last_version_and_finishes_when_run_again(two_calls, folders, tmp_path, name, nth):
    expected, reached = two_calls
    assert (name, nth) in occurrences(reached), f"the call never reaches {name} #{nth}"
    killed = kill_second_call(tmp_path, folders, name, nth)
    assert committed(killed) == 1 and dmc.load(killed).task == 1  # the version before is whole and used
    record = learner(killed, first=False).learn(folders["b"])
    assert record["task"] == 2 and committed(killed) == 2
    assert outcome(killed, 2) == expected


@pytest.mark.slow
def test_every_kill_point_of_a_call(two_calls, folders, tmp_path):
    expected, reached = two_calls
    failed = []
    for i, (name, nth) in enumerate(occurrences(reached)):
        work = tmp_path / str(i)
        work.mkdir()
        killed = kill_second_call(work, folders, name, nth)
        learner(killed, first=False).learn(folders["b"])
        if outcome(killed, 2) != expected:
            failed.append(f"{name}#{nth}")
        shutil.rmtree(work)
    assert not failed


def test_sigkill_during_a_call_then_the_same_call(two_calls, folders, tmp_path):
    model = tmp_path / "m"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = [sys.executable, "-m", "dmc", "learn", str(model), str(folders["a"]), "--quiet", "--threads", "1",
             "--backbone", "tiny", *[a for s in SETS for a in ("--set", s)]]  # a config of this process's sections
    assert subprocess.run(first, capture_output=True, text=True, env=env, timeout=600).returncode == 0
    argv = [sys.executable, "-m", "dmc", "learn", str(model), str(folders["b"]), "--quiet", "--threads", "1"]
    proc = subprocess.run(argv, capture_output=True, text=True, env={**env, faults.ENV: "fit:task 2 stage 2#2"},
                          timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert committed(model) == 1 and not (version_dir(model, 2) / "summary.json").exists()
    learner(model, first=False).learn(folders["b"])
    assert outcome(model, 2) == two_calls[0]


def test_a_changed_folder_after_a_kill_replaces_the_unfinished_call(folders, tmp_path):
    killed = kill_second_call(tmp_path, folders, "fit:task 2 stage 1", 1)
    record = learner(killed, first=False).learn(folders["c"])  # another folder: the unfinished call is dropped
    assert record["task"] == 2 and dmc.load(killed).classes[3:] == ["bee", "owl"]


# ---------------------------------------------------------------- bad input: one line, nothing changed
def tree(path: Path) -> dict[str, str]:
    """Every file under `path` with the sha256 of its bytes (the lock file aside: taking it is not a change)."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and p.name != ".lock"} if path.exists() else {}


@pytest.fixture(scope="module")
def one_call(tmp_path_factory, folders):
    model = tmp_path_factory.mktemp("one") / "m"
    learner(model).learn(folders["a"])
    return model


def bad_folder(tmp_path: Path, kind: str) -> Path:
    root = tmp_path / kind
    if kind == "known":
        write_classes(root, ["Red_Fox", "owl"])
    elif kind == "empty":
        root.mkdir()
    elif kind == "no images":
        write_classes(root, ["owl"])
        (root / "train" / "bee").mkdir()
    elif kind == "unreadable":
        write_classes(root, ["owl"])
        write_file(root / "train" / "owl" / "broken.png", GARBAGE)
    elif kind == "collide":
        write_classes(root, ["snow_owl", "snow owl"], split=False)
    elif kind == "collide case":
        write_classes(root, ["Bee", "bee"], split=False)
    elif kind == "test only":
        write_classes(root, ["owl"])
        write_classes(root / "x", ["bee"])
        shutil.move(root / "x" / "test" / "bee", root / "test" / "bee")
    return root


BAD = [("known", "'red fox'"), ("empty", "no class folders"), ("no images", "train/bee"),
       ("unreadable", "broken.png"), ("collide", "both read as class 'snow owl'"),
       ("collide case", "both read as class"), ("test only", "test/bee"), ("missing", "no such folder")]


@pytest.mark.parametrize("kind, says", BAD)
def test_bad_folder_is_one_line_and_changes_nothing(one_call, tmp_path, capsys, kind, says):
    folder = bad_folder(tmp_path, kind)
    before = tree(one_call)
    code, _, err, errors = cli(capsys, "learn", one_call, folder, "--threads", "1")
    assert code == 2 and len(errors) == 1 and says in errors[0], err
    assert "Traceback" not in err and tree(one_call) == before


def test_bad_folder_creates_no_model(tmp_path, capsys):
    code, _, _, errors = cli(capsys, "learn", tmp_path / "new", bad_folder(tmp_path, "empty"))
    assert code == 2 and len(errors) == 1 and not (tmp_path / "new").exists()


def test_a_benchmark_run_cannot_learn(tiny_dmc_run, folders, capsys):
    before = tree(tiny_dmc_run)
    code, _, _, errors = cli(capsys, "learn", tiny_dmc_run, folders["b"])
    assert code == 2 and len(errors) == 1 and "benchmark run" in errors[0] and "dmc learn NEW_DIR" in errors[0]
    assert tree(tiny_dmc_run) == before


def test_later_calls_take_no_training_flags(one_call, folders, capsys):
    before = tree(one_call)
    code, _, _, errors = cli(capsys, "learn", one_call, folders["b"], "--method", "simplecil", "--set", "seed=3")
    assert code == 2 and len(errors) == 1 and "--method, --set" in errors[0]
    assert tree(one_call) == before


def test_a_folder_that_is_no_model_is_refused(tmp_path, folders, capsys):
    write_file(tmp_path / "mine" / "notes.txt", b"mine")
    code, _, _, errors = cli(capsys, "learn", tmp_path / "mine", folders["a"])
    assert code == 2 and "not a dmc model" in errors[0] and os.listdir(tmp_path / "mine") == ["notes.txt"]


def test_a_method_that_stores_images_replays_the_kept_copies(tmp_path):
    """PROOF stores images: the model keeps copies, so a later call works after the earlier folder is gone."""
    first = write_classes(tmp_path / "first", ["cat", "dog"], split=False)
    model = tmp_path / "m"
    Learner(model, method="proof", backbone="tiny", sets=["proof.epochs=1", "proof.batch_size=8"],
            rt=QUIET).learn(first)
    shutil.rmtree(first)
    record = Learner(model, rt=QUIET).learn(write_classes(tmp_path / "second", ["owl"], split=False))
    assert record["task"] == 2 and record["stored_images"] > 0
    assert len(list((model / "images" / "task_01" / "train" / "cat").glob("*.png"))) == 8


def test_a_call_without_test_images_learns_and_records_no_accuracy(tmp_path, capsys):
    model = tmp_path / "m"
    folder = write_classes(tmp_path / "plain", ["cat", "dog"], split=False)
    code, out, err, _ = cli(capsys, "learn", model, folder, "--backbone", "tiny", "--threads", "1", "--quiet",
                            *[a for s in SETS for a in ("--set", s)])
    assert code == 0, err
    assert "task 1: 2 classes, no test images" in out
    assert dmc.load(model).classes == ["cat", "dog"]


def test_a_first_call_records_what_the_backbone_is(folders, tmp_path):
    """The toy CLIP's recipe and sha256 join the first version's config.yaml (written once), as a run's do."""
    model = tmp_path / "m"
    Learner(model, method="simplecil", backbone="toy", rt=QUIET).learn(folders["b"])
    saved = yaml.safe_load((version_dir(model, 1) / "config.yaml").read_text())
    assert saved["provenance"]["backbone"]["sha256"]
    assert committed(model) == 1
