"""The validation split (held-out training images) and paired statistics over seeds."""
import json
import math

import numpy as np
import pytest

from dmc import config
from dmc.cli import main
from dmc.data.benchmark import make_benchmark, val_rows
from dmc.engine.loop import load_datasets, run
from dmc.errors import UserError
from dmc.models.clip import build_backbone
from dmc.stats import paired, paired_difference
from dmc.training.runtime import make_runtime
from tests.helpers import tiny_cfg

QUIET = make_runtime("cpu", "fp32", progress=False)


def test_val_rows_are_a_seeded_share_of_each_class():
    targets = np.repeat(np.arange(5), [10, 20, 3, 2, 40])
    rows = val_rows(targets, 0.1, seed=0)
    per_class = np.bincount(targets[rows], minlength=5)
    assert per_class.tolist() == [1, 2, 1, 1, 4]  # round(0.1 n), at least 1, at most n - 1
    assert len(set(rows.tolist())) == len(rows) and (np.diff(rows) > 0).all()
    assert np.array_equal(val_rows(targets, 0.1, seed=0), rows)  # deterministic
    assert not np.array_equal(val_rows(targets, 0.1, seed=1), rows)  # the seed decides which
    assert len(val_rows(targets, 0.0, seed=0)) == 0


def test_a_class_held_out_rows_do_not_depend_on_other_classes_or_their_order():
    targets = np.repeat(np.arange(4), 30)
    rows = val_rows(targets, 0.2, seed=3)
    shuffled = np.random.default_rng(0).permutation(len(targets))  # the same images listed in another order
    other = shuffled[val_rows(targets[shuffled], 0.2, seed=3)]
    for c in range(4):  # class c keeps the same share, from its own stream
        assert len(rows[targets[rows] == c]) == len(other[targets[other] == c]) == 6
    only_two = targets[targets >= 2]
    kept = val_rows(only_two, 0.2, seed=3) + int(np.sum(targets < 2))
    assert np.array_equal(kept, rows[targets[rows] >= 2])


def _datasets(**sets):
    cfg = tiny_cfg("zeroshot", benchmark__train_per_class=None, benchmark__test_per_class=None, **sets)
    bench = make_benchmark(cfg, cfg.seed)
    return cfg, bench, load_datasets(cfg, bench, build_backbone("tiny"))


def _image_keys(ds) -> set[bytes]:
    return {ds.samples.items[i].tobytes() for i in range(len(ds))}


def test_validation_images_are_disjoint_from_training_and_test_images():
    _, bench, plain = _datasets()
    _, _, held = _datasets(benchmark__val_fraction=0.25, eval__split="val")
    train_all, test = _image_keys(plain["train"]), _image_keys(plain["test"])
    train, val = _image_keys(held["train"]), _image_keys(held["test"])  # "test" is the evaluated split
    assert val and train and not (val & train) and not (val & test)
    assert val | train == train_all  # the held-out share comes out of the training images only
    assert len(held["train"]) == len(plain["train"]) * 3 // 4  # 16 per class -> 12 train, 4 held out
    assert np.bincount(held["test"].labels).tolist() == [4] * bench.n_classes
    assert np.array_equal(held["train"].labels, held["train_plain"].labels)


def test_the_validation_split_does_not_move_with_the_run_seed_or_class_order():
    a = _datasets(benchmark__val_fraction=0.25, eval__split="val", seed=1)[2]["test"]
    b = _datasets(benchmark__val_fraction=0.25, eval__split="val", seed=2)[2]["test"]
    assert _image_keys(a) == _image_keys(b)  # same images; labels follow each run's class order


def test_eval_split_val_needs_a_validation_fraction():
    with pytest.raises(UserError, match="val_fraction"):
        make_benchmark(tiny_cfg("zeroshot", eval__split="val"), 0)
    with pytest.raises(UserError, match="val_fraction"):
        tiny_cfg("zeroshot", benchmark__val_fraction=1.0)
    with pytest.raises(UserError, match="eval.split"):
        tiny_cfg("zeroshot", eval__split="train")


def test_a_validation_run_records_its_split_and_tests_on_it(tmp_path):
    cfg = tiny_cfg("simplecil", benchmark__val_fraction=0.25, eval__split="val", benchmark__test_per_class=None)
    out = run(cfg, out=tmp_path / "run", rt=QUIET)
    plan = json.loads((out / "plan.json").read_text())
    assert plan["val"] == {"fraction": 0.25, "seed": 0}
    recorded = json.loads((out / "val_rows.json").read_text())
    assert recorded["fraction"] == 0.25 and len(recorded["rows"]) == 4 * 12
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval_split"] == "val"
    assert sum(summary["counts"]) == 4 * 12  # the 4 held-out images per class, not the 8 test images
    resumed_cfg = config.load(out / "config.yaml")
    assert resumed_cfg.eval.split == "val" and resumed_cfg.benchmark.val_fraction == 0.25


def test_paired_difference_matches_a_hand_computation():
    diffs = [1.0, 2.0, 4.0]  # mean 7/3, sd sqrt(7/3), t_{0.975, 2} = 4.302653
    p = paired_difference(diffs)
    half = 4.302653 * math.sqrt(7 / 3) / math.sqrt(3)
    assert p.n == 3 and p.mean == pytest.approx(7 / 3)
    assert p.low == pytest.approx(7 / 3 - half, abs=1e-5) and p.high == pytest.approx(7 / 3 + half, abs=1e-5)
    assert p.within_noise is True  # the interval [-1.46, 6.13] contains 0
    tight = paired_difference([1.0, 1.1, 0.9, 1.0, 1.05])
    assert tight.within_noise is False and tight.low > 0
    single = paired_difference([0.5])
    assert single.within_noise is None and math.isnan(single.low)
    with pytest.raises(ValueError):
        paired_difference([])


def test_paired_uses_only_the_seeds_both_settings_have():
    p = paired({0: 80.0, 1: 82.0, 2: 81.0, 7: 99.0}, {0: 79.0, 1: 80.0, 2: 80.0, 3: 50.0})
    assert p.n == 3 and p.mean == pytest.approx(4 / 3)


def _fake_run(root, name, seed, avg, last, method="dmc"):
    run_dir = root / name
    (run_dir / "checkpoints").mkdir(parents=True)
    summary = {"method": method, "benchmark": "glyphs", "seed": seed, "tasks": 2, "avg": avg, "last": last,
               "forgetting": 1.0, "bwt": -1.0, "incremental": [avg, last], "wall_time_s": 10.0,
               "versions": {"dmc_commit": "abc"}}
    summary["incremental"] = [2 * avg - last, last]  # what Avg and Last are made of, as the metrics lines say
    (run_dir / "summary.json").write_text(json.dumps(summary))
    lines = [{"task": t, "A_t": a, "acc_row": [a] * t} for t, a in enumerate(summary["incremental"], start=1)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (run_dir / "config.yaml").write_text(f"seed: {seed}\nmethod: {method}\n")
    return run_dir


def test_compare_paired_prints_intervals_and_writes_per_seed_rows(tmp_path, capsys):
    runs = [_fake_run(tmp_path, f"ref-s{s}", s, 80.0 + s, 70.0 + s) for s in range(3)]
    runs += [_fake_run(tmp_path, f"new-s{s}", s, 81.0 + s + 0.1 * s, 70.0 + s + (s - 1)) for s in range(3)]
    assert main(["compare", *map(str, runs), "--paired", "ref", "--csv", str(tmp_path / "rows.csv")]) == 0
    out = capsys.readouterr().out
    paired_part = out.split("Paired by seed against ref")[1]
    row = next(line for line in paired_part.splitlines() if line.startswith("| new |"))
    avg = paired_difference([1.0, 1.1, 1.2])
    assert f"{avg}" in row and "no / yes" in row  # Avg +1.10 excludes 0; Last (-1, 0, +1) contains it
    lines = (tmp_path / "rows.csv").read_text().splitlines()
    assert lines[0].startswith("setting,method,benchmark,seed") and len(lines) == 7
    assert lines[1].split(",")[0] == "ref" and lines[1].endswith(",abc")
    assert main(["compare", *map(str, runs), "--paired", "nope"]) == 2
