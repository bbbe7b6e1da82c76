"""The method contract: every method hands evaluation one classifier per set of seen classes, the engine asks
a method what it needs and never names one, and one run builds its benchmark once and writes its config once."""
import ast
import json
from pathlib import Path

import pytest
import torch

from dmc.engine import loop
from dmc.engine.evaluation import EvalCache, evaluate_task
from dmc.errors import UserError
from dmc.methods import METHODS
from dmc.methods.classifier import Classifier, CosineClassifier, LinearClassifier
from dmc.training.runtime import make_runtime
from tests.helpers import SMOKE, tiny_cfg

QUIET = make_runtime("cpu", "fp32", progress=False)
SRC = Path(__file__).resolve().parents[1] / "src" / "dmc"


def test_the_shared_classifiers_compute_their_rules():
    protos = torch.nn.functional.normalize(torch.randn(4, 6), dim=-1)  # (C, D)
    x = torch.randn(5, 6)  # (B, D)
    cos = CosineClassifier(protos)(x)
    torch.testing.assert_close(cos, torch.nn.functional.cosine_similarity(x[:, None], protos[None], dim=-1))
    adapter = torch.nn.Linear(6, 6, bias=False)
    torch.testing.assert_close(CosineClassifier(protos, adapter)(x), CosineClassifier(protos)(adapter(x)))
    w, b = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    torch.testing.assert_close(LinearClassifier(w, b)(x), (x.double() @ w.T + b).float())


@pytest.mark.parametrize("name", sorted(METHODS.names()))
def test_every_method_hands_evaluation_one_classifier_of_the_seen_classes(name, tmp_path):
    """After a trained task, `classifier(seen)` is a Classifier mapping tower outputs (B, D) to finite scores
    (B, C), and the loop's predictions are its argmax: nothing else of the method is asked."""
    cfg = tiny_cfg(name, rapf__epochs=1, proof__epochs=1, ranpac__dim=64)
    cfg, rt, bench, data, method, rundir = loop.prepare(cfg, tmp_path / "run", None, QUIET)
    with loop.Session(rundir, rt):
        task = loop.make_task(0, bench, data, cfg.seed, method.exemplar_rows())
        method.begin_task(task)
        method.train_task(task)
        preds, labels = evaluate_task(method, task, data["test"], 64, EvalCache())
    with torch.no_grad():
        classifier = method.classifier(task.seen)
        feats = method.encode(data["test"], "test")[0]  # (N, D) of the current tower
        scores = classifier(feats)
    assert isinstance(classifier, Classifier) and scores.shape == (len(feats), len(task.seen))
    assert torch.isfinite(scores).all()
    keep = torch.isin(torch.as_tensor(data["test"].labels), torch.as_tensor(task.seen))
    want = torch.as_tensor(task.seen)[scores[keep].argmax(1)]
    assert (want.numpy() == preds).mean() > 0.95  # argmax ties aside, the loop predicts by the classifier


def test_the_engine_imports_no_method_file_and_names_no_method():
    """The loop asks `needs()` and the classifier; it imports the method table and the base class only."""
    for path in (SRC / "engine").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        methods = {m for m in imported if m.startswith("dmc.methods.")}
        assert methods <= {"dmc.methods.base", "dmc.methods.classifier"}, (path.name, methods)
        assert "isinstance(method," not in path.read_text(), path.name


def test_a_method_that_calibrates_has_its_calibration_checked_whatever_its_class(tmp_path, monkeypatch):
    """cotrain holds a calibration as DMC does: a sample-level OT that would not fit is refused before training
    (the check once went by DMC's class, and skipped cotrain)."""
    from dmc.training import budget

    monkeypatch.setattr(budget, "free_bytes", lambda device: 2**10)
    cfg = tiny_cfg("cotrain", calibration__method="ot", calibration__level="sample")
    with pytest.raises(UserError, match="calibration.level=sample needs about"):
        loop.prepare(cfg, tmp_path / "run", None, QUIET)
    assert METHODS.get("cotrain").needs is METHODS.get("dmc").needs  # the family declares it once


def test_one_run_builds_its_benchmark_once_and_writes_its_config_once(tmp_path, monkeypatch):
    """`dmc run`: the benchmark the command line checked is the run's; config.yaml is written once, with
    what the data and the weights are (the backbone's provenance once was added by a second write)."""
    import importlib

    from dmc import catalog
    from dmc.cli import main

    resolve = importlib.import_module("dmc.config.resolve")  # the module (dmc.config.resolve is also a function)

    built, written = [], []
    make, write, seeded = catalog.make_benchmark, resolve.write_text, loop.seeded_backbone

    def with_provenance(cfg):
        backbone = seeded(cfg)
        backbone.provenance = {"weights": "made here"}
        return backbone

    monkeypatch.setattr(catalog, "make_benchmark", lambda *a, **k: built.append(1) or make(*a, **k))
    monkeypatch.setattr(loop, "make_benchmark", lambda *a, **k: built.append(1) or make(*a, **k))
    monkeypatch.setattr(resolve, "write_text", lambda path, text: written.append(Path(path).name) or write(path, text))
    monkeypatch.setattr(loop, "seeded_backbone", with_provenance)
    assert main([*SMOKE, "--out", str(tmp_path / "run")]) == 0
    assert len(built) == 1 and written.count("config.yaml") == 1
    import yaml

    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["provenance"] == {
        "backbone": {"weights": "made here"}}
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["tasks"] >= 1
