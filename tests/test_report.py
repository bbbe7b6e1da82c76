"""Tables and plots people can read: rows named by run or setting, the config keys that differ, unreadable
runs skipped, benchmarks never mixed, the plot only when asked, tasks 1..T with values in the heatmap."""
import json
import logging
import shutil

import pytest

from dmc.cli import main
from dmc.engine.loop import run
from dmc.errors import UserError
from dmc.report import read_runs, run_figure, table
from dmc.training.runtime import make_runtime
from tests.helpers import tiny_cfg

QUIET = make_runtime("cpu", "fp32", progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two seeds of one setting, one seed of another (eval.batch_size), and a copy of the first that
    claims another benchmark."""
    root = tmp_path_factory.mktemp("runs")
    for name, seed, extra in (("zs-s1", 1, {}), ("zs-s2", 2, {}), ("zs-bs64-s1", 1, {"eval__batch_size": 64})):
        run(tiny_cfg("zeroshot", seed=seed, **extra), out=root / name, rt=QUIET)
    shutil.copytree(root / "zs-s1", root / "other" / "zs-s1")
    from dmc.rundir import digest

    summary = json.loads((root / "other" / "zs-s1" / "summary.json").read_text())
    summary = {k: v for k, v in summary.items() if k != "sha256"} | {"benchmark": "other"}
    (root / "other" / "zs-s1" / "summary.json").write_text(json.dumps({**summary, "sha256": digest(summary)}))
    return root


def rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]


def test_rows_are_named_by_run_with_the_keys_that_differ(runs):
    out = table(read_runs([runs / "zs-s1", runs / "zs-s2", runs / "zs-bs64-s1"]))
    header, *body = rows(out)
    assert header[0] == "run" and header[-1] == "eval.batch_size" and "seed" not in header[12:]
    assert [r[0] for r in body] == ["zs-s1", "zs-s2", "zs-bs64-s1"] and [r[-1] for r in body] == ["256", "256", "64"]


def test_by_settingaverages_seeds_and_notes_runs_that_differ_in_more(runs):
    out = table(read_runs([runs / "zs-s1", runs / "zs-s2", runs / "zs-bs64-s1"]), by_setting=True)
    header, *body = rows(out)
    assert [(r[0], r[2], r[-1]) for r in body] == [("zs", "1, 2", "256"), ("zs-bs64", "1", "64")]
    assert "±" in body[0][3] and "note" not in out
    mixed = table(read_runs([runs / "zs-s1", runs / "zs-bs64-s1"]), by_setting=True)
    assert len(rows(mixed)) == 3  # names without -s<seed> differ: two settings, nothing mixed


def test_unreadable_runs_are_skipped_and_benchmarks_kept_apart(runs, tmp_path, caplog):
    (tmp_path / "empty").mkdir()
    with caplog.at_level(logging.WARNING):
        found = read_runs([runs / "zs-s1", tmp_path / "empty", runs / "other" / "zs-s1"])
    assert [r.name for r in found] == [f"{runs.name}/zs-s1", "other/zs-s1"]  # same folder name: parents added
    assert any("skipped" in m and "empty" in m for m in caplog.messages)
    out = table(found)
    assert "### synthetic" in out and "### other" in out and len(rows(out)) == 4  # a header and a row each
    with pytest.raises(UserError, match="none of the 1 folders is a finished run"):
        read_runs([tmp_path / "empty"])


def test_compare_writes_the_plot_only_when_asked(runs, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.chdir(tmp_path)
    assert main(["compare", str(runs / "zs-s1"), str(runs / "zs-s2"), str(tmp_path)]) == 0
    assert "| zs-s2 | zeroshot |" in capsys.readouterr().out and not list(tmp_path.glob("*.png"))
    assert [m for m in caplog.messages if m.startswith(f"skipped {tmp_path} has no readable summary.json")]
    assert main(["compare", str(runs / "zs-s1"), str(runs / "zs-s2"), "--by-setting", "--plot", "p/c.png"]) == 0
    assert "| zs | zeroshot | 1, 2 |" in capsys.readouterr().out and (tmp_path / "p" / "c.png").stat().st_size > 1000


def test_the_run_plot_numbers_tasks_from_1_and_writes_the_values(runs):
    summary = json.loads((runs / "zs-s1" / "summary.json").read_text())
    curve, heat = run_figure(summary).axes[:2]
    assert list(curve.get_xticks()) == [1, 2, 3] and list(heat.get_xticks()) == [1, 2, 3]
    assert list(heat.get_yticks()) == [1, 2, 3] and len(heat.texts) == 6  # the lower triangle of R
    assert heat.texts[0].get_text() == f"{summary['acc_matrix'][0][0]:.0f}"
