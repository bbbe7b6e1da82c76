"""docs/extending.md's examples are real code: the example method is the files extending.md says (its class,
its torch-free table entry), runs three tasks, resumes exactly and predicts; the example benchmark reads a
folder of images."""
import importlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from dmc import config
from dmc.config import BadValue
from dmc.engine.loop import run
from dmc.training.runtime import make_runtime
from tests.helpers import killed_copy, tiny_cfg
from tests.image_files import PNG, write_file

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
QUIET = make_runtime("cpu", "fp32", progress=False)


def example(name: str):
    """Import docs/examples/NAME.py once per session (it registers itself)."""
    module = f"dmc_example_{name}"
    if module not in sys.modules:
        spec = importlib.util.spec_from_file_location(module, EXAMPLES / f"{name}.py")
        sys.modules[module] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[module])
    return sys.modules[module]


def text_mean_entry():
    """The example method's table entry (docs/examples/text_mean_entry.py), imported as a method's entry is;
    the table imports the class (docs/examples/text_mean.py) when a run first asks for `text-mean`."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module("text_mean_entry")


def test_a_method_is_the_files_extending_md_says_and_its_entry_loads_no_torch():
    """docs/extending.md states how many files a method is; the example is that many (its class, its entry
    with options and table line), and its entry, like config/table.py, is read without torch: its options
    are checked before torch loads."""
    said = re.search(r"A method in the package is (\w+) files", (EXAMPLES.parent / "extending.md").read_text())
    assert said and said.group(1) == "three"  # the method's module, its table entry, its rows in docs/method.md
    assert sorted(p.name for p in EXAMPLES.glob("text_mean*.py")) == ["text_mean.py", "text_mean_entry.py"]
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import text_mean_entry; from dmc import config; "
             "cfg = config.resolve('synthetic', 'text-mean', {}, ['text_mean.alpha=0.3']); "
             "assert cfg.text_mean.alpha == 0.3; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe, str(EXAMPLES)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_example_method_runs_three_tasks_resumes_exactly_and_predicts(tmp_path):
    import dmc

    entry = text_mean_entry()
    full = run(tiny_cfg("text-mean"), out=tmp_path / "full", rt=QUIET)
    summary = json.loads((full / "summary.json").read_text())
    assert summary["method"] == "text-mean" and summary["tasks"] == 3 and 0 <= summary["last"] <= 100
    resumed = run(None, resume=killed_copy(full, tmp_path / "killed", finished_tasks=1), rt=QUIET)
    assert json.loads((resumed / "summary.json").read_text())["acc_matrix"] == summary["acc_matrix"]
    model = dmc.load(full, device="cpu")  # its classifier is all that predicting needs
    images = torch.randint(0, 255, (3, 32, 32, 3), dtype=torch.uint8).numpy()
    assert model.predict(images, topk=2).index.shape == (3, 2)
    with pytest.raises(BadValue, match="bad value for alpha: 1.5; must be in"):
        entry.TextMeanConfig(alpha=1.5)


def test_a_method_from_outside_the_package_takes_set_options_that_a_resume_reads_back(tmp_path, capsys):
    """Its own section joins the config: `--set text_mean.alpha=...` is checked, saved in config.yaml, and
    the resumed run reads it back from there (and gives the uninterrupted run's accuracy matrix)."""
    from dmc.cli import main

    text_mean_entry()
    argv = ["run", "--benchmark", "synthetic", "--method", "text-mean", "--backbone", "tiny", "--smoke", "--quiet",
            "--set", "text_mean.alpha=0.25"]
    assert main([*argv, "--out", str(tmp_path / "full")]) == 0
    saved = yaml.safe_load((tmp_path / "full" / "config.yaml").read_text())
    assert saved["text_mean"] == {"alpha": 0.25}
    assert config.load(tmp_path / "full" / "config.yaml").text_mean.alpha == 0.25
    other = run(tiny_cfg("text-mean", text_mean__alpha=1.0, benchmark__max_tasks=3), out=tmp_path / "zs", rt=QUIET)
    full = json.loads((tmp_path / "full" / "summary.json").read_text())["acc_matrix"]
    assert json.loads((other / "summary.json").read_text())["acc_matrix"] != full  # the option acts
    killed = killed_copy(tmp_path / "full", tmp_path / "killed", finished_tasks=1)
    assert main(["run", "--resume", str(killed), "--quiet"]) == 0
    assert json.loads((killed / "summary.json").read_text())["acc_matrix"] == full
    assert main([*argv[:-1], "text_mean.alpha=2", "--out", str(tmp_path / "bad")]) == 2
    assert "bad value for text_mean.alpha: 2" in capsys.readouterr().err


def test_the_example_benchmark_reads_an_image_folder(tmp_path):
    example("flowers")
    for split in ("train", "test"):
        for flower in ("daisy", "sweet_pea", "tulip", "rose", "iris", "lily"):
            for i in range(2):
                write_file(tmp_path / split / flower / f"{i}.png", PNG)
    cfg = config.resolve("flowers", "zeroshot", {"model.backbone": "tiny", "data.root": str(tmp_path)})
    out = run(cfg, out=tmp_path / "run", rt=QUIET)
    plan = json.loads((out / "plan.json").read_text())
    assert [len(t) for t in plan["tasks"]] == [5, 1] and "sweet pea" in plan["tasks"][0] + plan["tasks"][1]
    assert torch.isfinite(torch.tensor(json.loads((out / "summary.json").read_text())["incremental"])).all()
