"""RanPAC and SimpleCIL on the tiny CLIP: 3-task runs, what each keeps, and exact resumes."""
import json

import torch
from safetensors.torch import load_file

from dmc.analytic import class_means, ncm_predict, one_hot, random_features, random_projection
from dmc.engine.loop import make_task, prepare, run
from dmc.report import compare_table
from dmc.training.runtime import make_runtime
from tests.helpers import killed_copy, tiny_cfg

QUIET = make_runtime("cpu", "fp32", progress=False)


def _records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _train(cfg, tmp_path, tasks: int = 3):
    """A method trained on the first `tasks` tasks by hand (the loop's order of hooks), and its data."""
    cfg, _, bench, data, method, _ = prepare(cfg, tmp_path / "run", None, QUIET)
    for t in range(tasks):
        task = make_task(t, bench, data, cfg.seed, method.exemplar_rows())
        method.begin_task(task)
        method.train_task(task)
    return method, bench, data


def test_simplecil_three_task_run_stores_no_images(tmp_path):
    out = run(tiny_cfg("simplecil"), out=tmp_path / "run", rt=QUIET)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "simplecil" and summary["tasks"] == 3 and 0.0 < summary["last"] <= 100.0
    assert [r["stored_images"] for r in _records(out)] == [0, 0, 0] and summary["stored_images"] == 0
    assert "| simplecil | synthetic |" in compare_table([out])


def test_ranpac_equals_the_ridge_on_all_tasks_at_once(tmp_path):
    cfg = tiny_cfg("ranpac", ranpac__dim=64, ranpac__ridge=0.5)
    ranpac, bench, data = _train(cfg, tmp_path)
    feats, labels = ranpac.encode(data["train_plain"], "all")  # every class of the 3 tasks
    h = random_features(feats, random_projection(feats.shape[1], 64, int(ranpac.readout.seed)))
    y = one_hot(labels, 12)
    w = torch.linalg.solve(h.T @ h + 0.5 * torch.eye(64, dtype=torch.float64), h.T @ y)  # (M, C)
    torch.testing.assert_close(ranpac.readout.weights(), w, rtol=1e-8, atol=1e-10)
    x = feats[:5]
    torch.testing.assert_close(ranpac.scores(x, ranpac.class_features(list(range(12)))), (h[:5] @ w).float())


def test_ranpac_chooses_lambda_per_task_and_resumes_exactly(tmp_path):
    cfg = tiny_cfg("ranpac", ranpac__dim=64, ranpac__text_weight=2.0)
    full = run(cfg, out=tmp_path / "full", rt=QUIET)
    from dmc.analytic import RIDGE_GRID

    assert all(r["ridge"] in RIDGE_GRID and r["stored_images"] == 0 for r in _records(full))
    last = load_file(str(full / "checkpoints" / "task_02.safetensors"))
    assert sorted(last) == ["readout.gram", "readout.lam", "readout.q", "readout.seed"]  # no projection matrix
    assert last["readout.gram"].dtype == torch.float64 and last["readout.q"].shape == (64, 12)
    resumed = run(None, resume=killed_copy(full, tmp_path / "killed", finished_tasks=1), rt=QUIET)
    a, b = (json.loads((d / "summary.json").read_text())["acc_matrix"] for d in (full, resumed))
    assert a == b


def test_ranpac_text_weight_adds_zero_shot_cosines(tmp_path):
    cfg = tiny_cfg("ranpac", ranpac__dim=64, ranpac__text_weight=3.0)
    ranpac, bench, data = _train(cfg, tmp_path, tasks=1)
    classes = bench.tasks[0]
    x = ranpac.encode(data["test"], "test")[0][:6]
    h = ranpac.readout.features(x)
    expected = h @ ranpac.readout.weights()[:, classes] + 3.0 * torch.nn.functional.normalize(x, dim=-1).double() \
        @ ranpac.template_features(classes).double().T
    torch.testing.assert_close(ranpac.scores(x, ranpac.class_features(classes)), expected.float(), rtol=1e-4, atol=1e-4)


def test_ranpac_first_task_adaptation_changes_the_tower_once(tmp_path):
    cfg = tiny_cfg("ranpac", ranpac__dim=64, ranpac__adapt=True)
    cfg_, _, bench, data, ranpac, _ = prepare(cfg, tmp_path / "run", None, QUIET)
    before = {k: v.clone() for k, v in ranpac.model.visual.state_dict().items()}
    towers = []
    for t in range(2):
        task = make_task(t, bench, data, cfg.seed)
        ranpac.begin_task(task)
        info = ranpac.train_task(task)
        towers.append({k: v.clone() for k, v in ranpac.model.visual.state_dict().items()})
        assert ("adapt_loss" in info) == (t == 0)
    assert any(not torch.equal(before[k], towers[0][k]) for k in before)
    assert all(torch.equal(towers[0][k], towers[1][k]) for k in before)
    assert "visual.transformer.resblocks.0.attn.in_proj_weight" in ranpac.learned.state_dict()


def test_simplecil_is_the_nearest_class_mean(tmp_path):
    simplecil, bench, data = _train(tiny_cfg("simplecil"), tmp_path)
    classes = sorted(c for t in bench.tasks for c in t)
    feats, labels = simplecil.encode(data["train_plain"], "train")
    means = class_means(feats, labels, classes)
    torch.testing.assert_close(simplecil.class_features(classes).double(), means, rtol=1e-5, atol=1e-6)
    test = simplecil.encode(data["test"], "test")[0]
    pred = simplecil.scores(test, simplecil.class_features(classes)).argmax(1)
    assert torch.equal(pred, ncm_predict(test, means))
