"""RanPAC, SimpleCIL, PROOF and FSA on the tiny CLIP: 3-task runs, what each keeps, and exact resumes."""
import json

import numpy as np
import torch
from safetensors.torch import load_file

from dmc.analytic import class_means, ncm_predict, one_hot, random_features, random_projection
from dmc.cli import main
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
    torch.testing.assert_close(ranpac.classifier(list(range(12)))(x), (h[:5] @ w).float())


def test_ranpac_chooses_lambda_per_task_and_resumes_exactly(tmp_path):
    cfg = tiny_cfg("ranpac", ranpac__dim=64, ranpac__text_weight=2.0)
    full = run(cfg, out=tmp_path / "full", rt=QUIET)
    from dmc.analytic import RIDGE_GRID

    assert all(r["ridge"] in RIDGE_GRID and r["stored_images"] == 0 for r in _records(full))
    last = load_file(str(full / "checkpoints" / "task_03.safetensors"))
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
    torch.testing.assert_close(ranpac.classifier(classes)(x), expected.float(), rtol=1e-4, atol=1e-4)


def _towers_per_task(method, bench, data, seed, n):
    """The image tower's weights before training and after each of the first n tasks; asserts that only the
    first task reports an adaptation loss."""
    before = {k: v.clone() for k, v in method.model.visual.state_dict().items()}
    towers = []
    for t in range(n):
        task = make_task(t, bench, data, seed)
        method.begin_task(task)
        assert ("adapt_loss" in method.train_task(task)) == (t == 0)
        towers.append({k: v.clone() for k, v in method.model.visual.state_dict().items()})
    return before, towers


def test_ranpac_first_task_adaptation_changes_the_tower_once(tmp_path):
    cfg = tiny_cfg("ranpac", ranpac__dim=64, ranpac__adapt=True)
    cfg_, _, bench, data, ranpac, _ = prepare(cfg, tmp_path / "run", None, QUIET)
    before, towers = _towers_per_task(ranpac, bench, data, cfg.seed, 2)
    assert any(not torch.equal(before[k], towers[0][k]) for k in before)
    assert all(torch.equal(towers[0][k], towers[1][k]) for k in before)
    assert "visual.transformer.resblocks.0.attn.in_proj_weight" in ranpac.learned.state_dict()


def test_simplecil_is_the_nearest_class_mean(tmp_path):
    simplecil, bench, data = _train(tiny_cfg("simplecil"), tmp_path)
    classes = sorted(c for t in bench.tasks for c in t)
    feats, labels = simplecil.encode(data["train_plain"], "train")
    means = class_means(feats, labels, classes)
    classifier = simplecil.classifier(classes)
    torch.testing.assert_close(classifier.prototypes.double(), means, rtol=1e-5, atol=1e-6)
    test = simplecil.encode(data["test"], "test")[0]
    pred = classifier(test).argmax(1)
    assert torch.equal(pred, ncm_predict(test, means))


def test_fsa_adapts_once_and_is_the_lda_of_the_frozen_features(tmp_path):
    """FSA: the tower changes on the first task only; then its scores are the Gaussian log-densities of the
    classes' exact statistics under one pooled shrunk covariance (up to one constant for every class)."""
    gamma = 0.1
    cfg = tiny_cfg("fsa", fsa__gamma=gamma)
    _, _, bench, data, fsa, _ = prepare(cfg, tmp_path / "run", None, QUIET)
    before, towers = _towers_per_task(fsa, bench, data, cfg.seed, 3)
    assert any(not torch.equal(before[k], towers[0][k]) for k in before)
    assert all(torch.equal(towers[0][k], towers[2][k]) for k in before)
    classes = sorted(c for t in bench.tasks for c in t)
    feats, labels = fsa.encode(data["train_plain"], "train")
    means = torch.stack([feats[labels == c].double().mean(0) for c in classes])  # (C, D)
    torch.testing.assert_close(fsa.bank.means(classes).double(), means, rtol=1e-5, atol=1e-5)
    covs = fsa.bank.covs(classes).double()
    pooled = covs.mean(0)
    pooled = (1 - gamma) * pooled + gamma * pooled.diagonal().mean() * torch.eye(len(pooled), dtype=torch.float64)
    x = fsa.encode(data["test"], "test")[0][:9]
    want = torch.stack([torch.distributions.MultivariateNormal(m, pooled).log_prob(x.double()) for m in means], 1)
    got = fsa.classifier(classes)(x).double()
    quad = -0.5 * torch.einsum("nd,de,ne->n", x.double(), torch.linalg.inv(pooled), x.double())  # same for all c
    torch.testing.assert_close(got + quad[:, None] - want, (got + quad[:, None] - want)[:, :1].expand_as(got),
                               rtol=0, atol=1e-2)  # float32 scores of size ~100
    assert torch.equal(got.argmax(1), want.argmax(1))


def test_proof_keeps_earlier_projections_prompts_and_prototypes_bit_identical(tmp_path):
    cfg, _, bench, data, proof, _ = prepare(tiny_cfg("proof", proof__epochs=2, proof__lr=0.05), tmp_path / "run",
                                            None, QUIET)
    first = make_task(0, bench, data, cfg.seed)
    proof.begin_task(first)
    proof.train_task(first)
    old = {k: v.clone() for k, v in proof.net.state_dict().items()}
    second = make_task(1, bench, data, cfg.seed, proof.exemplar_rows())
    assert len(second.train) == len(make_task(1, bench, data, cfg.seed).train) + 4 * 8  # 20 per class, 8 there
    proof.begin_task(second)
    fresh = {k: v.clone() for k, v in proof.net.state_dict().items()}
    proof.train_task(second)
    now = proof.net.state_dict()
    frozen = [k for k in old if k.startswith(("image.maps.0.", "text.maps.0.", "fusion.context.0"))]
    assert len(frozen) == 5 and all(torch.equal(now[k], old[k]) for k in frozen)
    assert torch.equal(now["prototypes"][first.classes], old["prototypes"][first.classes])
    assert not torch.equal(now["image.maps.1.weight"], fresh["image.maps.1.weight"])  # the new pair learns
    assert not torch.equal(now["fusion.out.weight"], old["fusion.out.weight"])  # the fusion layer is shared
    assert now["fusion.context.1"].shape == (3, now["prototypes"].shape[1])


def test_proof_fusion_is_per_image_and_grows_per_task():
    from dmc.methods.proof import ProofHead

    torch.manual_seed(0)
    head = ProofHead(16, heads=2, dropout=0.1)
    head.add_task(6, 3)
    head.eval()
    z, text, protos = torch.randn(5, 16), torch.randn(6, 16), torch.randn(6, 16)
    img, txt, by_text, by_proto = head(z, text, protos)
    assert img.shape == (5, 16) and txt.shape == (6, 16) and by_text.shape == by_proto.shape == (5, 6)
    alone = head(z[2:3], text, protos)  # an image's scores do not depend on the rest of its batch
    torch.testing.assert_close(alone[2], by_text[2:3])
    torch.testing.assert_close(alone[3], by_proto[2:3])
    assert head.fusion(img, torch.cat([txt, txt])).shape == (5, 1 + 12 + 3, 16)
    head.add_task(9, 3)
    assert [p.requires_grad for p in head.fusion.context] == [False, True]
    assert [m.weight.requires_grad for m in head.image.maps] == [False, True] and len(head.prototypes) == 9


def test_proof_resume_restores_exemplars_and_selects_nothing_again(tmp_path, monkeypatch):
    import dmc.methods.base as base

    cfg = tiny_cfg("proof", proof__epochs=2, memory__exemplars_per_class=3)
    full = run(cfg, out=tmp_path / "full", rt=QUIET)
    killed = killed_copy(full, tmp_path / "killed", finished_tasks=2)
    kept = load_file(str(killed / "checkpoints" / "task_02.safetensors"))
    calls = []
    herding = base.herding
    monkeypatch.setattr(base, "herding", lambda f, m: calls.append(len(f)) or herding(f, m))
    resumed = run(None, resume=killed, rt=QUIET)
    assert len(calls) == 4  # only task 3's four new classes were selected
    a, b = (json.loads((d / "summary.json").read_text()) for d in (full, resumed))
    assert a["acc_matrix"] == b["acc_matrix"] and b["stored_images"] == 36 and b["tasks"] == 3
    assert [r["stored_images"] for r in _records(resumed)] == [12, 24, 36]  # 3 per class
    assert "| proof | synthetic |" in compare_table([resumed]) and "| 36 |" in compare_table([resumed])
    last = load_file(str(resumed / "checkpoints" / "task_03.safetensors"))
    again = load_file(str(full / "checkpoints" / "task_03.safetensors"))
    assert last.keys() == again.keys() and all(torch.equal(last[k], again[k]) for k in last)
    ex = [k for k in kept if k.startswith("exemplars.rows.")]
    assert len(ex) == 8 and all(torch.equal(last[k], kept[k]) for k in ex)
    assert np.all(np.diff([len(kept[k]) for k in ex]) == 0)


def test_list_shows_the_peers(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(m in out for m in ("ranpac", "simplecil", "proof", "fsa", "dmc-ot-mem"))
