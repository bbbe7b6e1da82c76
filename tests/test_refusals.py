"""Bad input that used to end in a traceback or a wrong exit: each is one line, exit 2 (or a non-zero
exit where the output is lost), and the checks that need no torch run before torch loads."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dmc.errors import UserError
from tests.helpers import cli

DEEP = "[" * 20000 + "]" * 20000
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))
RUN = ["run", "--benchmark", "synthetic", "--method", "zeroshot", "--smoke", "--quiet", "--set", "model.backbone=tiny"]


def _one_line(code, err, errors, needle):
    assert code == 2 and len(errors) == 1 and needle in errors[0] and "Traceback" not in err, err
    assert len(errors[0]) < 600  # never a document's worth of text


# --------------------------------------------------------------------------- YAML
@pytest.mark.parametrize("text, needle", [(DEEP, "nested deeper than 64 levels"),
                                          (BOMB, "more than 1000000 values once its aliases are expanded")],
                         ids=["deep", "alias-bomb"])
def test_a_deep_or_exploding_yaml_is_refused_in_every_yaml_input(capsys, tmp_path, tiny_dmc_run, text, needle):
    order = tmp_path / "order.yaml"
    order.write_text(text)
    code, _, err, errors = cli(capsys, "plan", "synthetic", "--set", f"benchmark.order_file={order}")
    _one_line(code, err, errors, needle)
    code, _, err, errors = cli(capsys, "plan", "synthetic", "--set", f"benchmark.base={text}")
    _one_line(code, err, errors, needle)
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.yaml").write_text(text)
    code, _, err, errors = cli(capsys, "sweep", "--out", sweep)
    _one_line(code, err, errors, needle)
    run = tmp_path / "run"
    shutil.copytree(tiny_dmc_run, run)
    (run / "summary.json").unlink()
    (run / "config.yaml").write_text(text)
    code, _, err, errors = cli(capsys, "run", "--resume", run)
    _one_line(code, err, errors, needle)


# --------------------------------------------------------------------------- weights, launcher, head
def test_a_weights_file_that_is_not_the_backbones_is_one_line(capsys, tmp_path, tiny_dmc_run):
    import pickle

    pkl = tmp_path / "weights.pkl"
    pkl.write_bytes(pickle.dumps({"not": "weights"}))
    checkpoint = tiny_dmc_run / "checkpoints" / "task_03.safetensors"
    for i, weights in enumerate((pkl, checkpoint)):
        code, _, err, errors = cli(capsys, "run", "--benchmark", "synthetic", "--method", "zeroshot", "--smoke",
                                   "--quiet", "--backbone", "toy", "--set", f"model.pretrained={weights}",
                                   "--out", tmp_path / f"out{i}")
        _one_line(code, err, errors, f"cannot load the weights file {weights} for backbone toy")


def test_slurm_without_slurm_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun here
    code, _, err, errors = cli(capsys, "sweep", "--out", tmp_path / "s", "--benchmarks", "synthetic", "--smoke",
                               "--launcher", "slurm")
    _one_line(code, err, errors, "--launcher slurm needs Slurm")


def test_a_singular_covariance_names_the_setting_to_change():
    from dmc.discriminant import gaussian_factors, lda_weights

    means, covs = torch.randn(3, 4), torch.zeros(3, 4, 4)  # (C, D), (C, D, D): no spread at all
    with pytest.raises(UserError, match="gamma=0.0 .* --set memhead.gamma=0.02"):
        gaussian_factors(means, covs, 0.0)
    with pytest.raises(UserError, match="fsa.gamma"):
        lda_weights(means, covs, 0.0)


# --------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("argv", [["list"], ["plan", "synthetic"]])
def test_list_and_plan_with_stdout_closed_fail(argv):
    cmd = " ".join([sys.executable, "-m", "dmc", *argv]) + " >&-"
    done = subprocess.run(["bash", "-c", cmd], stderr=subprocess.PIPE, text=True, timeout=120)
    errors = [line for line in done.stderr.splitlines() if line.startswith("dmc: error:")]
    assert done.returncode != 0 and len(errors) == 1 and "standard output is closed" in errors[0], done.stderr


def test_predict_takes_one_path_as_it_takes_a_list(tmp_path, tiny_dmc_run):
    import dmc

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    model = dmc.load(tiny_dmc_run)
    alone, listed = model.predict(str(tmp_path / "a.png"), topk=3), model.predict([tmp_path / "a.png"], topk=3)
    assert alone.names() == listed.names() and np.array_equal(alone.scores, listed.scores)


def test_a_run_name_with_a_newline_keeps_the_table_whole(capsys, tmp_path, tiny_dmc_run):
    odd = tmp_path / "a\nb|c"
    shutil.copytree(tiny_dmc_run, odd)
    code, out, err, _ = cli(capsys, "compare", odd)
    rows = [line for line in out.splitlines() if line.strip()]
    assert code == 0 and len(rows) == 3 and all(r.startswith("|") and r.endswith("|") for r in rows), out
    assert "a\\nb\\|c" in rows[2]


# --------------------------------------------------------------------------- before torch
def _imports_torch(argv, cwd) -> tuple[int, bool]:
    code = ("import sys; from dmc.cli import main; code = main(sys.argv[1:]); "
            "print(code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True, cwd=cwd,
                          timeout=120)
    code_, loaded = done.stdout.split()
    return int(code_), loaded == "True"


def test_a_users_folder_and_a_changed_config_are_refused_before_torch_loads(tmp_path, tiny_dmc_run):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    assert _imports_torch([*RUN, "--out", user], tmp_path) == (2, False)
    run = tmp_path / "run"
    shutil.copytree(tiny_dmc_run, run)
    (run / "summary.json").unlink()
    text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(text.replace("seed: ", "seed: 1", 1))
    assert _imports_torch(["run", "--resume", run, "--quiet"], tmp_path) == (2, False)
    assert json.loads((tiny_dmc_run / "summary.json").read_text())  # the reference run is untouched
