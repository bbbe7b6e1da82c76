"""Using what was trained: `dmc.load` reproduces a run's last accuracy exactly on its test set, `dmc
predict` writes JSON lines or CSV, and bad input ends in one line."""
import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

import dmc
from dmc.cli import main
from dmc.data.benchmark import make_benchmark
from dmc.engine.loop import load_datasets, run, seeded_backbone
from dmc.training.runtime import make_runtime
from tests.helpers import killed_copy, tiny_cfg
from tests.image_files import GARBAGE, write_file

QUIET = make_runtime("cpu", "fp32", progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 3-task run of a method that trains the image tower (dmc-ot)."""
    return run(tiny_cfg("dmc-ot"), out=tmp_path_factory.mktemp("dmc-ot") / "run", rt=QUIET)


def images_of(cfg):
    """The run's test images, in the order its evaluation read them, and their class names."""
    bench = make_benchmark(cfg, cfg.seed)
    test = load_datasets(cfg, bench, seeded_backbone(cfg))["test"]
    return test.samples.items, [bench.class_names[c] for c in test.labels]


# re-encoded tower / frozen tower and cached features / a method with its own `scores` on a re-encoded tower
@pytest.mark.parametrize("method", ["dmc-ot", "simplecil", "dmc-ot-mem"])
def test_a_loaded_run_reproduces_its_last_accuracy_exactly(trained, tmp_path, method):
    cfg = tiny_cfg(method)
    out = trained if method == "dmc-ot" else run(cfg, out=tmp_path / "run", rt=QUIET)
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    model = dmc.load(out)
    images, names = images_of(cfg)
    pred = model.predict(images, topk=3)
    assert model.task == 3 and len(model.classes) == 12 and pred.index.shape == (len(images), 3)
    correct = sum(p[0] == n for p, n in zip(pred.names(), names))
    assert correct == sum(round(a * n / 100) for a, n in zip(last["acc_row"], last["counts"]))
    assert np.all(np.diff(pred.scores, axis=1) <= 0)  # best first


def test_an_earlier_task_knows_only_its_classes(trained):
    model = dmc.load(trained, task=1)
    plan = json.loads((trained / "plan.json").read_text())
    assert model.classes == plan["tasks"][0]
    images = [Image.fromarray(np.full((40, 20, 3), 200, np.uint8))]  # PIL images of any size
    assert model.predict(images, topk=10).index.shape == (1, 4)


def test_predict_command_json_and_csv(capsys, trained, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32, 3), np.uint8)).save(folder / f"{i}.png")
    assert main(["predict", str(trained), str(folder), "--topk", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["image"].rsplit("/", 1)[1] for line in lines] == ["0.png", "1.png", "2.png"]
    assert all(line["task"] == 3 and len(line["top"]) == 2 for line in lines)
    assert main(["predict", str(trained), str(folder / "1.png"), "--format", "csv", "--task", "2", "--topk", "3"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["rank"] for r in rows] == ["1", "2", "3"] and {r["task"] for r in rows} == {"2"}


def test_bad_input_ends_in_one_line(capsys, trained, tmp_path):
    good = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(good)
    bad = write_file(tmp_path / "b.png", GARBAGE)
    unfinished = killed_copy(trained, tmp_path / "killed", finished_tasks=2)
    cases = [([str(tmp_path / "none"), str(good)], "no such run directory"),
             ([str(unfinished), str(good)], "is an unfinished run (2 of 3 tasks done)"),
             ([str(unfinished), str(good), "--task", "3"], "task 3 of"),
             ([str(trained), str(good), "--task", "4"], "task 4 is out of range"),
             ([str(trained), str(bad)], "unreadable image"),
             ([str(trained), str(tmp_path / "nothing.png")], "no such image or folder"),
             ([str(trained), str(good), "--topk", "0"], "bad value for --topk: 0"),
             ([str(trained), str(good), "--device", "gpu"], "bad value for device: 'gpu'")]
    for argv, needle in cases:
        code = main(["predict", *argv])
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("dmc: error:")]
        assert code == 2 and len(errors) == 1 and needle in errors[0] and "Traceback" not in err, (argv, err)
    assert main(["predict", str(unfinished), str(good), "--task", "2"]) == 0  # a finished task of it works
