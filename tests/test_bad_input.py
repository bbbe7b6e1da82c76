"""Every bad input ends in one line and exit 2 (or, from Python, a UserError), never a traceback: values
that are not finite, seeds outside [0, 2**32), files that are not UTF-8, outputs that cannot be written,
images cut short, arguments of `dmc.load` that are not what it takes."""
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dmc
from dmc import config
from dmc.cli import main
from dmc.engine.loop import run
from dmc.errors import UserError
from dmc.training.runtime import make_runtime
from tests.helpers import SMOKE, killed_copy, tiny_cfg
from tests.image_files import write_file

QUIET = make_runtime("cpu", "fp32", progress=False)


def one_line(capsys, needle, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("dmc: error:")]
    assert code == 2 and len(errors) == 1 and needle in errors[0] and "Traceback" not in err, err
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return run(tiny_cfg("simplecil"), out=tmp_path_factory.mktemp("done") / "run", rt=QUIET)


@pytest.mark.parametrize("item", ["vision.lr=nan", "memory.ridge=nan", "vision.lr=inf", "calibration.sigma=inf",
                                  "prompt.lr=.nan"])
def test_values_that_are_not_finite(capsys, tmp_path, item):
    one_line(capsys, f"bad value for {item.split('=')[0]}", *SMOKE, "--set", item, "--out", tmp_path / "r")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv, needle", [
    (["run", "--seed", "-1"], "bad value for seed: -1"),
    (["run", "--seed", str(2**32)], f"bad value for seed: {2**32}; seeds are whole numbers in [0, 2**32)"),
    (["run", "--set", "benchmark.order_seed=-5"], "bad value for benchmark.order_seed: -5"),
    (["run", "--set", "data.world.seed=99999999999"], "bad value for data.world.seed"),
    (["plan", "cifar100", "--seed", "-1"], "bad value for seed: -1"),
    (["sweep", "--seeds", "1", str(2**40)], f"bad value for seed: {2**40}"),
])
def test_seeds_outside_the_range_numpy_takes(capsys, tmp_path, argv, needle):
    extra = {"run": SMOKE[1:] + ["--out", tmp_path / "r"], "sweep": ["--out", tmp_path / "s", "--smoke"]}
    one_line(capsys, needle, *argv, *extra.get(argv[0], []))
    assert not (tmp_path / "s" / "sweep.yaml").exists()


def test_files_that_are_not_utf8(capsys, finished, tmp_path):
    latin = "classe: \xe9t\xe9\n".encode("latin-1")
    order = write_file(tmp_path / "order.yaml", latin)
    one_line(capsys, "is not UTF-8 text", *SMOKE, "--set", f"benchmark.order_file={order}", "--out", tmp_path / "r")
    for name, command in (("config.yaml", ["run", "--resume"]), ("plan.json", ["run", "--resume"]),
                          ("metrics.jsonl", ["run", "--resume"])):
        killed = killed_copy(finished, tmp_path / name, finished_tasks=2)
        (killed / name).write_bytes(latin)
        code = main([*command, str(killed), "--quiet"])
        out, err = capsys.readouterr()
        assert code in (0, 2) and "Traceback" not in err, (name, err)
        if name != "metrics.jsonl":  # an unreadable metrics line is a cut file: resumed from the start
            assert code == 2 and ("not UTF-8" in err or "unreadable" in err), (name, err)
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "sweep.yaml").write_bytes(latin)
    one_line(capsys, "it is not UTF-8 text", "sweep", "--out", tmp_path / "sweep")


def test_compare_refuses_a_plot_without_an_image_extension_before_printing(capsys, finished, tmp_path):
    out = one_line(capsys, "name a file with an image extension", "compare", finished, "--plot", tmp_path / "table")
    assert out == "" and not (tmp_path / "table").exists()


def test_a_summary_with_a_non_number_is_skipped(capsys, caplog, finished, tmp_path):
    import shutil

    odd = tmp_path / "odd"
    shutil.copytree(finished, odd)
    summary = json.loads((odd / "summary.json").read_text())
    summary.pop("sha256")  # unsealed, as summaries written before seals (a sealed one is refused as edited)
    (odd / "summary.json").write_text(json.dumps({**summary, "avg": "high"}))
    one_line(capsys, "avg is not a number", "compare", odd)
    assert main(["compare", str(odd), str(finished)]) == 0
    out, err = capsys.readouterr()
    assert "| run |" in out and "skipped" in caplog.text and "avg is not a number" in caplog.text


def _dmc(*argv, redirect: str = "") -> subprocess.CompletedProcess:
    """dmc in a shell, stdout redirected (`> /dev/full`, `>&-`)."""
    cmd = " ".join([sys.executable, "-m", "dmc", *map(str, argv)]) + " " + redirect
    return subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("redirect, needle", [("> /dev/full", "cannot write the output: No space left on device"),
                                              (">&-", "standard output is closed")])
def test_predict_and_compare_to_an_output_that_cannot_be_written(finished, tmp_path, redirect, needle):
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    for argv in (["compare", finished], ["predict", finished, image]):
        proc = _dmc(*argv, redirect=redirect)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("dmc: error:")]
        assert proc.returncode == 2 and len(errors) == 1 and needle in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr


def test_a_full_disk_during_a_checkpoint_write_stops_in_one_line_and_resume_is_exact(capsys, tmp_path, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    real = safetensors.torch.save_file

    def full(state, path, metadata=None):
        if "task_02" in path:
            raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                                  '"No space left on device" })')
        return real(state, path, metadata=metadata)

    out, two = tmp_path / "r", ["--set", "benchmark.max_tasks=2"]
    monkeypatch.setattr(safetensors.torch, "save_file", full)
    one_line(capsys, "task_02.safetensors: No space left on device (tasks 1-1 are kept", *SMOKE, *two, "--out", out)
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    assert main([*SMOKE, *two, "--out", str(tmp_path / "full")]) == 0
    capsys.readouterr()
    acc = [json.loads((p / "summary.json").read_text())["acc_matrix"] for p in (out, tmp_path / "full")]
    assert acc[0] == acc[1]


def test_a_sweep_on_a_full_or_read_only_disk_stops_in_one_line(capsys, tmp_path, monkeypatch):
    real = Path.write_text

    def fail(self, *args, **kwargs):
        if "sweep" in str(self):
            raise OSError(errno.EROFS, "Read-only file system")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", fail)
    one_line(capsys, ".dmc-sweep: Read-only file system", "sweep", "--out", tmp_path / "sweep", "--benchmarks",
             "synthetic", "--methods", "zeroshot", "--smoke")


def _folder_tree(root: Path, classes: int = 4, per_class: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(classes):
            for i in range(per_class):
                folder = root / split / f"class_{c}"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (40, 40, 3), np.uint8)).save(folder / f"{i}.jpg", quality=90)
    return root


def test_a_truncated_image_with_an_intact_header(capsys, tmp_path):
    root = _folder_tree(tmp_path / "data")
    cut = root / "test" / "class_1" / "2.jpg"
    cut.write_bytes(cut.read_bytes()[: len(cut.read_bytes()) // 2])
    Image.open(cut)  # the header reads: only decoding finds it
    argv = ["run", "--benchmark", "imagefolder", "--backbone", "tiny", "--method", "zeroshot", "--quiet",
            "--set", f"data.root={root}", "--set", "benchmark.increment=2", "--set", "data.num_workers=1",
            "--set", "eval.batch_size=4"]
    code = main([*argv, "--out", str(tmp_path / "r")])
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("dmc: error:")]
    assert code == 2 and len(errors) == 1 and str(cut) in errors[0] and "data.skip_corrupt=true" in errors[0], err
    assert "Traceback" not in err and "DataLoader worker" not in err
    code = main([*argv, "--set", "data.skip_corrupt=true", "--out", str(tmp_path / "skipped")])
    out, err = capsys.readouterr()
    assert code == 0 and "skipping 1 unreadable images" in err, err
    one_line(capsys, "unreadable image", "predict", tmp_path / "skipped", cut)


def test_load_takes_only_what_it_documents(finished):
    model = dmc.load(finished)
    for bad, needle in ((lambda: dmc.load(finished, task="2"), "task must be a whole number"),
                        (lambda: dmc.load(finished, task=2.0), "task must be a whole number"),
                        (lambda: model.predict([Image.new("RGB", (0, 0))]), "has no pixels"),
                        (lambda: model.predict(np.zeros((1, 0, 0, 3), np.uint8)), "must have pixels"),
                        (lambda: model.predict(np.zeros((0, 32, 32, 3), np.uint8)), "no images to predict"),
                        (lambda: model.predict([]), "no images to predict"),
                        (lambda: model.predict([42]), "must be a file path or a PIL image")):
        with pytest.raises(UserError, match=needle):
            bad()
    assert dmc.load(finished, task=np.int64(2)).task == 2


def test_a_relative_order_file_resumes_from_another_folder(capsys, tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "order.yaml").write_text(json.dumps(list(range(11, -1, -1))))
    monkeypatch.chdir(tmp_path / "a")
    assert main([*SMOKE, "--set", "benchmark.order_file=order.yaml", "--set", "benchmark.max_tasks=2",
                 "--out", str(tmp_path / "full")]) == 0
    saved = config.load(tmp_path / "full" / "config.yaml").benchmark.order_file
    assert saved == str(tmp_path / "a" / "order.yaml")
    killed = killed_copy(tmp_path / "full", tmp_path / "killed", finished_tasks=1)
    monkeypatch.chdir(tmp_path / "b")
    assert main(["run", "--resume", str(killed), "--quiet"]) == 0
    capsys.readouterr()
    acc = [json.loads((p / "summary.json").read_text())["acc_matrix"] for p in (tmp_path / "full", killed)]
    assert acc[0] == acc[1]


def test_a_backbone_on_the_command_line_brings_its_own_weights_and_recipe(capsys, tmp_path):
    for bench in ("cub200", "imagefolder"):
        cfg = config.resolve(bench, "dmc-ot", {"model.backbone": "toy"})
        defaults = config.resolve("glyphs-shift", "dmc-ot")  # the glyph recipe (glyphs adds its own tuning)
        assert cfg.model.pretrained is None and cfg.vision.lr == defaults.vision.lr == 3e-5  # the toy's, not ViT-B/16's
        assert cfg.checkpoint.keep == "all" and cfg.data.num_workers == 0
    assert config.resolve("cub200", "dmc-ot").model.pretrained == "openai"  # the preset's, without --backbone
    assert config.resolve("cub200", "dmc-ot", {"model.backbone": "ViT-B-16"}).vision.lr == 1e-5
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    given = config.resolve("cub200", "dmc-ot", {"model.backbone": "toy"}, [f"model.pretrained={weights}"])
    assert given.model.pretrained == str(weights)
    root = _folder_tree(tmp_path / "data")
    assert main(["run", "--benchmark", "imagefolder", "--backbone", "toy", "--method", "zeroshot", "--quiet",
                 "--set", f"data.root={root}", "--set", "benchmark.increment=2", "--out", str(tmp_path / "r")]) == 0


def test_loader_workers_are_sized_to_the_machine(caplog, monkeypatch):
    import logging

    import dmc.training.runtime as runtime

    caplog.set_level(logging.INFO)
    monkeypatch.setattr(runtime, "cores", lambda: 2)
    assert config.resolve("imagefolder", "dmc-ot").data.num_workers == 8
    assert runtime.loader_workers(8) == 2 and runtime.loader_workers(1) == 1
    assert "data.num_workers 8 > 2 cores here: using 2 loader workers" in caplog.text


def test_a_sample_level_ot_that_would_not_fit_is_refused_before_training(capsys, tmp_path, monkeypatch):
    from dmc.training import budget

    cifar = budget.sample_ot_bytes(90, 256, 5000)  # the last task of CIFAR-100 B0-Inc10
    assert 2.5 * 2**30 < cifar < 3.0 * 2**30
    monkeypatch.setattr(budget, "free_bytes", lambda device: 2**20)
    one_line(capsys, "calibration.level=sample needs about 0.0 GB for its OT plan in task 3", *SMOKE,
             "--method", "dmc-ot", "--set", "calibration.level=sample", "--out", tmp_path / "r")
    assert not (tmp_path / "r" / "metrics.jsonl").exists()
    assert main([*SMOKE, "--method", "dmc-ot", "--out", str(tmp_path / "class")]) == 0  # the class level fits
