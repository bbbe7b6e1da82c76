"""The command line: plans, listings, and one clear line + exit 2 for every kind of bad input."""
import json
import subprocess
import sys

import numpy as np
import pytest

from dmc.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_cifar100_matches_pycil_permutation(capsys):
    code, out, _ = run_cli(capsys, "plan", "cifar100", "--json")
    assert code == 0
    plan = json.loads(out)
    np.random.seed(1993)
    assert plan["class_order"] == np.random.permutation(100).tolist()
    assert len(plan["tasks"]) == 10 and all(len(t) == 10 for t in plan["tasks"])
    from dmc.config import DataConfig
    from dmc.data.sources.base import SOURCES

    names = SOURCES.get("cifar100").class_names(DataConfig())
    assert plan["tasks"][0] == [names[c] for c in plan["class_order"][:10]]
    assert "aquarium fish" in names and len(set(names)) == 100


def test_plan_split_override_and_seed(capsys):
    code, out, _ = run_cli(capsys, "plan", "cifar100", "--json", "--seed", "0",
                           "--set", "benchmark.base=50", "--set", "benchmark.increment=5")
    plan = json.loads(out)
    assert code == 0 and len(plan["tasks"]) == 11 and len(plan["tasks"][0]) == 50
    np.random.seed(0)
    assert plan["class_order"] == np.random.permutation(100).tolist()


def test_list_shows_registries(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for name in ("glyphs", "cifar100", "imagefolder", "dmc", "dmc-ot", "coop", "finetune", "joint", "tiny", "toy"):
        assert name in out


@pytest.mark.parametrize("argv, needle", [
    (["run", "--benchmark", "nope"], "unknown benchmark 'nope'; choose one of:"),
    (["run", "--benchmark", "synthetic", "--method", "nope"], "unknown method 'nope'; choose one of:"),
    (["run", "--benchmark", "synthetic", "--set", "vision.nope=1"], "unknown config key 'vision.nope'"),
    (["run", "--benchmark", "synthetic", "--set", "vision.lr=fast"], "bad value for vision.lr"),
    (["run", "--benchmark", "synthetic", "--set", "vision.epochs=1.5"], "bad value for vision.epochs"),
    (["run", "--benchmark", "synthetic", "--set", "novalue"], "--set expects key.path=value"),
    (["run", "--benchmark", "imagefolder", "--backbone", "tiny"], "data.root"),
    (["run", "--resume", "no/such/run"], "not a run directory"),
    (["run", "--benchmark", "synthetic", "--backbone", "no-such-net"], "unknown backbone"),
    (["plan", "cifar100", "--set", "benchmark.increment=0"], "bad value for benchmark.increment: 0; must be >= 1"),
    (["plan", "cifar100", "--set", "benchmark.base=120"], "bad split B120-Inc10"),
])
def test_user_errors_are_one_line_and_exit_2(capsys, tmp_path, argv, needle):
    out_dir = ["--out", str(tmp_path / "r")] if argv[0] == "run" and "--resume" not in argv else []
    code, out, err = run_cli(capsys, *argv, *out_dir)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("dmc: error:")]
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "r" / "summary.json").exists()


def test_missing_pretrained_weights_offline_is_a_user_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run_cli(capsys, "run", "--benchmark", "synthetic", "--backbone", "ViT-B-16",
                           "--out", str(tmp_path / "r"), "--quiet")
    assert code == 2
    assert "HF_HUB_OFFLINE=1" in err and "Traceback" not in err


def test_smoke_run_end_to_end_and_compare(capsys, tmp_path):
    code, out, err = run_cli(capsys, "run", "--benchmark", "synthetic", "--method", "dmc", "--smoke",
                             "--out", str(tmp_path / "a"), "--quiet")
    assert code == 0, err
    assert "Avg" in out and (tmp_path / "a" / "summary.json").exists()
    code, out, _ = run_cli(capsys, "compare", str(tmp_path / "a"), "--plot", str(tmp_path / "c.png"))
    assert code == 0 and "| dmc | synthetic |" in out and (tmp_path / "c.png").exists()


@pytest.mark.parametrize("item, needle", [
    ("vision.trainable=lats-2", "bad value for vision.trainable: 'lats-2'; "
                                "choose one of: none, all, full, last-K (K = 1..blocks)"),
    ("vision.trainable=last-0", "bad value for vision.trainable: 'last-0'"),
    ("calibration.method=magic", "bad value for calibration.method: 'magic'; choose one of: none, mean-shift, ot"),
    ("calibration.reg=0.01", "bad value for calibration.reg: 0.01; solver 'sinkhorn' needs reg >= 0.02"),
    ("memory.covariance=sparse", "bad value for memory.covariance: 'sparse'; choose one of: full, diag"),
    ("vision.loss_scope=everything", "bad value for vision.loss_scope"),
    ("prompt.init=zeros", "bad value for prompt.init: 'zeros'; choose one of: template, random"),
    ("model.device=gpu", "bad value for model.device: 'gpu'; choose one of: auto, cpu, cuda, cuda:N"),
    ("model.precision=fp16", "bad value for model.precision: 'fp16'; choose one of: auto, fp32, bf16"),
    ("data.world.severity=1.5", "bad value for data.world.severity: 1.5; must be in [0.0, 1.0]"),
    ("data.world.train_per_class=0", "bad value for data.world.train_per_class: 0; must be >= 1"),
    ("checkpoint.keep=some", "bad value for checkpoint.keep: 'some'; choose one of: all, last"),
])
def test_section_checks_run_on_overrides(capsys, tmp_path, monkeypatch, item, needle):
    """A bad value fails in one line when the config is resolved, before any backbone or data is loaded."""
    import dmc.engine.loop as loop

    monkeypatch.setattr(loop, "prepare", lambda *a, **k: pytest.fail("the run started despite a bad value"))
    code, _, err = run_cli(capsys, "run", "--benchmark", "glyphs", "--set", item, "--out", str(tmp_path / "r"))
    assert code == 2 and needle in err and "Traceback" not in err, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv, needle", [
    (["run", "--set", "vision.epochs=-1"], "bad value for vision.epochs: -1; must be >= 1"),
    (["run", "--set", "vision.epochs=0"], "to skip this stage on purpose: vision.enabled=false"),
    (["run", "--set", "rapf.epochs=0"], "bad value for rapf.epochs: 0; must be >= 1"),
    (["run", "--set", "prompt.batch_size=0"], "bad value for prompt.batch_size: 0; must be >= 1"),
    (["run", "--set", "benchmark.order_file=ORDER"], "'two' is not an integer"),
    (["run", "--out", "FILE"], "is a file, not a folder"),
    (["run", "--out", "FILE/run"], "cannot create the run directory"),
    (["run", "--threads", "0"], "bad value for --threads: 0; must be >= 1"),
    (["compare", "RUN", "--plot", "FILE/c.png"], "cannot write the plot"),
    (["bench-speed", "--backbone", "tiny", "--batch", "0"], "bad value for --batch: 0; must be >= 1"),
    (["bench-ot", "--repeats", "0"], "bad value for --repeats: 0; must be >= 1"),
])
def test_values_that_make_no_sense_end_in_one_line(capsys, tmp_path, argv, needle):
    """Each ends in one line and exit 2 before any training, and leaves nothing behind."""
    (tmp_path / "FILE").write_text("a file")
    (tmp_path / "ORDER").write_text("[3, 1, two, 0]")
    if "RUN" in argv:
        from dmc.engine.loop import run
        from dmc.training.runtime import make_runtime
        from tests.helpers import tiny_cfg

        run(tiny_cfg("zeroshot", benchmark__max_tasks=1), out=tmp_path / "RUN",
            rt=make_runtime("cpu", "fp32", progress=False))
    argv = [str(tmp_path / a) if a.split("/")[0] in ("FILE", "ORDER", "RUN") else a for a in argv]
    argv = [f"benchmark.order_file={tmp_path / 'ORDER'}" if a.endswith("=ORDER") else a for a in argv]
    if argv[0] == "run":
        argv += ["--benchmark", "synthetic", "--smoke", "--quiet"]
        argv += [] if "--out" in argv else ["--out", str(tmp_path / "r")]
    code, _, err = run_cli(capsys, *argv)
    lines = [line for line in err.splitlines() if line.startswith("dmc: error:")]
    assert code == 2 and len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "r" / "config.yaml").exists()


def test_set_values_are_typed():
    from dmc import config

    cfg = config.resolve("synthetic", "dmc", sets=["vision.lr=1e-5", "replay.enabled=false", "prompt.n_ctx=null",
                                                   "benchmark.increment=3", "data.world.severity=0.5"])
    assert cfg.vision.lr == 1e-5 and cfg.replay.enabled is False and cfg.prompt.n_ctx is None
    assert cfg.benchmark.increment == 3 and cfg.data.world.severity == 0.5


def test_compare_by_setting_averages_seeds(capsys, tmp_path):
    for seed in (0, 1):
        code, _, err = run_cli(capsys, "run", "--benchmark", "synthetic", "--method", "zeroshot", "--smoke",
                               "--seed", str(seed), "--out", str(tmp_path / f"zs-s{seed}"), "--quiet")
        assert code == 0, err
    code, out, _ = run_cli(capsys, "compare", "--by-setting", str(tmp_path / "zs-s0"), str(tmp_path / "zs-s1"),
                           "--plot", str(tmp_path / "c.png"))
    assert code == 0
    row = [line for line in out.splitlines() if line.startswith("| zs |")]
    assert len(row) == 1 and "| 0, 1 |" in row[0] and "±" in row[0]


def test_config_errors_come_before_torch_loads(tmp_path):
    """A typo costs a fraction of a second: every command checks what it can before torch or open_clip
    is imported (names, values, run directories, images)."""
    script = ("import json, sys\nfrom dmc.cli import main\n"
              "for argv in json.loads(sys.argv[1]):\n"
              "    print(main(argv), 'torch' in sys.modules or 'open_clip' in sys.modules)\n")
    cases = [["run", "--method", "nope"], ["run", "--benchmark", "synthetic", "--backbone", "no-such-net"],
             ["run", "--set", "vision.lr=fast"], ["run", "--benchmark", "imagefolder"], ["run", "--threads", "0"],
             ["run", "--resume", str(tmp_path)], ["run", "--bogus"],
             ["sweep", "--out", str(tmp_path / "s"), "--methods", "nope"],
             ["sweep", "--out", str(tmp_path / "s"), "--jobs", "0"],
             ["predict", str(tmp_path), str(tmp_path)], ["compare", str(tmp_path)]]
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(cases)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.stdout.split("\n")[:-1] == ["2 False"] * len(cases), proc.stdout + proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("dmc: error:")]) == len(cases)


def test_every_name_the_catalog_knows_is_a_registered_class():
    """The catalog checks names against the registries themselves (no copy of them): every method of the
    table and every backbone resolves to what it names, and open_clip's model names are read right."""
    from dmc import catalog
    from dmc.methods import METHODS, Method
    from dmc.models import BACKBONES

    assert catalog.METHODS is METHODS and catalog.BACKBONES is BACKBONES
    assert set(METHODS.names()) >= {"dmc", "dmc-ot", "cotrain", "zeroshot", "rapf", "ranpac", "proof"}
    assert all(issubclass(METHODS.get(name), Method) for name in METHODS.names())
    assert {"tiny", "toy", "ViT-B-16"} <= set(BACKBONES.names())
    assert all(callable(BACKBONES.get(name)) for name in BACKBONES.names())
    import open_clip

    assert catalog.open_clip_models() == set(open_clip.list_models())


def test_output_to_a_file_is_one_line_per_stage_and_task_and_run_log_keeps_it(tmp_path):
    """Not a terminal: no bar redraws, one line per finished stage (epochs, loss, seconds) and per task."""
    argv = [sys.executable, "-m", "dmc", "run", "--benchmark", "synthetic", "--method", "dmc", "--smoke",
            "--threads", "1", "--out", str(tmp_path / "r")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\r" not in proc.stderr and "\x1b[" not in proc.stderr
    lines = [line.removeprefix("dmc: ") for line in proc.stderr.splitlines()]
    stages = [line for line in lines if " stage " in line and "epoch" in line and "loss" in line]
    tasks = [line for line in lines if line.startswith("task ") and "A_t" in line]
    assert len(stages) == 6 and len(tasks) == 3 and tasks[0].startswith("task 1/3: A_t")
    logged = (tmp_path / "r" / "run.log").read_text()
    assert all(line in logged for line in stages + tasks) and "finished: Avg" in logged


def test_a_closed_pipe_ends_quietly():
    """`dmc predict ... | head`: the reader goes away while dmc still writes; no traceback, exit 141."""
    import subprocess
    import sys

    flood = ("import sys, dmc.cli as c; c.COMMANDS['list'] = lambda a: [print('x' * 100) for _ in range(10**5)] "
             "and 0; sys.exit(c.main(['list']))")  # 10 MB: far more than a pipe holds
    proc = subprocess.Popen([sys.executable, "-c", flood], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.read(1)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err
