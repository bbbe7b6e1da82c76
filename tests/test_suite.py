"""The transfer suite: its grid file, the tables and worst case computed from known rows, a tiny suite run
end to end (resumed, recorded, refused when a definition changes), and the digits image folder."""
import os
import sys
from typing import NamedTuple

import pytest

from dmc import catalog
from dmc.engine import suite as st
from dmc.errors import UserError

REGIMES = {"v2", "v3", "v2-n8", "v2-n30", "v3-n8", "v3-n30", "v2-sev0.5", "v2-b50", "v2-inc20", "digits"}
CONTENDERS = ["dmc-ot-mem", "dmc-ot", "dmc", "ranpac", "ranpac-adapt", "fsa", "rapf", "simplecil"]


def _has_sklearn() -> bool:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- the grid file
def test_the_grid_file_parses_and_every_regime_resolves_on_validation_rows():
    suite = st.load_suite()
    assert set(suite.regimes) == REGIMES and list(suite.contenders) == CONTENDERS
    assert suite.reference == "dmc-ot-mem" and suite.seeds == [0, 1, 2]
    assert suite.contenders["ranpac-adapt"].method == "ranpac"
    assert suite.contenders["ranpac-adapt"].sets == ("ranpac.adapt=true",)
    assert suite.regimes["digits"].scale_of("ranpac") > suite.regimes["digits"].scale_of("dmc") > 0  # dmc: the default
    assert suite.regimes["v2"].scale_of("fsa") == 1.0
    chosen = st.select(suite, None, None if _has_sklearn() else sorted(REGIMES - {"digits"}), [0])
    grid = st.make_grid(chosen, roots=st.dataset_roots(chosen))
    assert len(grid.points()) == len(chosen.regimes) * len(CONTENDERS)
    seen = {}
    for p in grid.points():
        cfg = p.config(grid)
        catalog.check(cfg)
        assert cfg.eval.split == "val" and cfg.benchmark.val_fraction == 0.2 and cfg.seed == 0
        seen[p.name] = cfg
    assert seen["v2-n8-dmc-s0"].benchmark.train_per_class == 8
    assert seen["v3-n30-fsa-s0"].benchmark.train_per_class == 30
    assert seen["v3-n30-fsa-s0"].benchmark.name == "glyphs-shift"
    assert seen["v2-sev0.5-rapf-s0"].data.world.severity == 0.5
    assert seen["v2-dmc-s0"].data.world.severity == 0.3  # the regime changes only its run
    assert (seen["v2-b50-ranpac-s0"].benchmark.base, seen["v2-b50-ranpac-s0"].benchmark.increment) == (50, 10)
    assert (seen["v2-inc20-dmc-ot-s0"].benchmark.base, seen["v2-inc20-dmc-ot-s0"].benchmark.increment) == (0, 20)
    assert seen["v2-ranpac-adapt-s0"].ranpac.adapt is True and seen["v2-ranpac-s0"].ranpac.adapt is False
    if _has_sklearn():
        digits = seen["digits-simplecil-s0"]
        assert digits.benchmark.name == "imagefolder" and digits.model.backbone == "toy"
        assert digits.data.root == os.path.join(os.environ["DMC_CACHE"], "datasets", "digits-32px")


CONTENDERS_TINY = """
  simplecil: {method: simplecil, cost_s: 10}
  zeroshot: {method: zeroshot, cost_s: 4}"""
TINY = """
  syn:
    benchmark: synthetic
    set: [model.backbone=tiny]
  syn-b8:
    benchmark: synthetic
    set: [model.backbone=tiny, benchmark.base=8, benchmark.increment=2]
    scale: 0.5"""


def write_grid(path, regimes: str) -> None:
    path.write_text("validation: [benchmark.val_fraction=0.25, eval.split=val]\nseeds: [0]\nreference: simplecil\n"
                    f"contenders:{CONTENDERS_TINY}\nregimes:{regimes}\n")


@pytest.mark.parametrize("edit, needle", [
    (lambda t: t.replace("seeds: [0]", "seeds: [zero]"), "seeds must be a list of integers"),
    (lambda t: t.replace("reference: simplecil", "reference: nope"), "reference 'nope' is not a contender"),
    (lambda t: t.replace("syn-b8:", "Syn B8:"), "bad name 'Syn B8'"),
    (lambda t: t.replace("scale: 0.5", "scael: 0.5"), "unknown keys scael"),
    (lambda t: t.replace("scale: 0.5", "scale: {zeroshot: fast}"), "scale must be a number >= 0"),
    (lambda t: t.replace("seeds: [0]\n", ""), "must be a mapping of exactly"),
    (lambda t: t.replace("benchmark: synthetic\n    set: [model.backbone=tiny]\n", "set: [x=1]\n", 1),
     "syn must be a mapping with at least benchmark"),
])
def test_bad_grid_files_are_refused_in_one_line(tmp_path, edit, needle):
    path = tmp_path / "grid.yaml"
    write_grid(path, TINY)
    assert st.load_suite(path).regimes["syn-b8"].scale == 0.5
    path.write_text(edit(path.read_text()))
    with pytest.raises(UserError, match=needle):
        st.load_suite(path)


def test_select_names_what_is_unknown():
    suite = st.load_suite()
    with pytest.raises(UserError, match="unknown regime 'v9'"):
        st.select(suite, None, ["v2", "v9"], None)
    with pytest.raises(UserError, match="unknown contender 'ranpak'"):
        st.select(suite, ["ranpak"], None, None)
    picked = st.select(suite, ["fsa", "rapf"], ["v3"], [4], reference="rapf")
    assert list(picked.contenders) == ["fsa", "rapf"] and picked.seeds == [4] and picked.reference == "rapf"


# --------------------------------------------------------------------------- tables from known rows
ROWS = [st.Row("a", "ref", s, avg, last, 10.0) for s, avg, last in ((0, 90, 80), (1, 91, 82), (2, 92, 84))] + \
       [st.Row("a", "x", s, avg, last, 20.0) for s, avg, last in ((0, 89, 81), (1, 91, 82), (2, 92, 86))] + \
       [st.Row("b", "ref", s, 70.0, last) for s, last in ((0, 60), (1, 62))] + \
       [st.Row("b", "x", s, 71.0, last) for s, last in ((0, 58), (1, 59))] + \
       [st.Row("b", "y", 0, 75.0, 63.0)]


def test_regime_table_pairs_by_seed_with_the_student_t_interval():
    text = st.regime_table([r for r in ROWS if r.regime == "a"], "ref")
    lines = text.splitlines()
    assert lines[0].startswith("| contender | seeds | Avg | Last | Avg − ref [95 % CI] | Last − ref [95 % CI]")
    assert lines[2] == "| ref | 0, 1, 2 | 91.00 ± 1.00 | 82.00 ± 2.00 | reference | reference | 10 |"
    # Last differences 1, 0, 2: mean 1, sd 1, t(0.975, 2) = 4.3027 -> half width 2.484
    # Avg differences -1, 0, 0: mean -1/3, sd 0.577 -> half width 1.434
    assert lines[3] == ("| x | 0, 1, 2 | 90.67 ± 1.53 | 83.00 ± 2.65 | -0.33 [-1.77, +1.10] | +1.00 [-1.48, +3.48] "
                        "| 20 |")


def test_worst_case_is_the_lowest_margin_to_the_best_other_contender():
    worst = {w.contender: w for w in st.worst_cases(ROWS)}
    # a: ref 82, x 83; b: ref 61, x 58.5, y 63
    assert worst["ref"].regime == "b" and worst["ref"].best_other == "y" and worst["ref"].margin == pytest.approx(-2.0)
    assert worst["x"].regime == "b" and worst["x"].margin == pytest.approx(-4.5) and worst["x"].regimes == 2
    assert worst["y"].regime == "b" and worst["y"].best_other == "ref" and worst["y"].margin == pytest.approx(2.0)
    assert worst["y"].regimes == 1
    text = st.report(ROWS, "ref", ["b", "a"])
    assert text.index("### b") < text.index("### a") and "| x | -4.50 | b | y | 2 |" in text
    assert "| y | 0 | 75.00 | 63.00 | +5.00 | +3.00 | nan |" in text  # one seed: no interval
    assert st.worst_cases([st.Row("a", "alone", 0, 1.0, 1.0)]) == []


# --------------------------------------------------------------------------- a tiny suite end to end
class Ended(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def suite(capsys, *argv) -> Ended:
    """`dmc suite ARGV` in this process (its runs are child processes, as always)."""
    from dmc.cli import main

    capsys.readouterr()
    code = main(["suite", *argv])
    out = capsys.readouterr()
    return Ended(code, out.out, out.err)


def test_a_tiny_suite_runs_continues_and_reports(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    grid, out = tmp_path / "grid.yaml", tmp_path / "suite"
    write_grid(grid, TINY)
    flags = ["--out", str(out), "--grid", str(grid), "--smoke", "--threads", "1"]
    dry = suite(capsys, *flags, "--dry-run", "--jobs", "2")
    assert dry.returncode == 0, dry.stderr
    assert "syn-b8-zeroshot-s0: new, about 2 s" in dry.stdout and "| simplecil | 2 | 0 min |" in dry.stdout
    assert "total: 0 min of one thread; with --jobs 2 (one thread each, 2 free cores) about 0 min" in dry.stdout
    assert not out.exists()
    done = suite(capsys, *flags)
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert names == ["syn-b8-simplecil-s0", "syn-b8-zeroshot-s0", "syn-simplecil-s0", "syn-zeroshot-s0"]
    rows, missing = st.collect(out, st.load_suite(grid))
    assert not missing and {(r.regime, r.contender) for r in rows} == {(a, b) for a in ("syn", "syn-b8")
                                                                         for b in ("simplecil", "zeroshot")}
    assert done.stdout == st.report(rows, "simplecil", ["syn", "syn-b8"]) + "\n"
    assert "### syn\n" in done.stdout and "### syn-b8\n" in done.stdout and "### worst case" in done.stdout
    from dmc.config import saved_tree
    assert saved_tree(out / "syn-b8-zeroshot-s0" / "config.yaml")["eval"]["split"] == "val"
    assert saved_tree(out / "syn-b8-zeroshot-s0" / "config.yaml")["benchmark"]["base"] == 8
    stamp = (out / "syn-zeroshot-s0" / "summary.json").stat().st_mtime_ns
    again = suite(capsys, *flags, "--regimes", "syn")
    assert again.returncode == 0 and (out / "syn-zeroshot-s0" / "summary.json").stat().st_mtime_ns == stamp
    assert "### syn-b8" not in again.stdout and "### syn\n" in again.stdout
    assert "syn-zeroshot-s0: finished" in suite(capsys, *flags, "--dry-run").stdout
    write_grid(grid, TINY.replace("benchmark.increment=2", "benchmark.increment=4"))
    changed = suite(capsys, *flags, "--regimes", "syn-b8")
    assert changed.returncode == 2 and "holds runs of regime syn-b8 defined otherwise" in changed.stderr
    assert changed.stderr.startswith("dmc: error:") and changed.stderr.count("\n") == 1


# --------------------------------------------------------------------------- the digits image folder
def test_digits_are_written_once_as_an_image_folder_with_world_names(tmp_path):
    pytest.importorskip("sklearn")
    from dmc.config import DataConfig
    from dmc.data import digits
    from dmc.data.sources.imagefolder import ImageFolderSource

    root = digits.export_digits(tmp_path / "digits", size=16)
    counts = {split: {c.name: len(list(c.iterdir())) for c in (root / split).iterdir()} for split in ("train", "test")}
    assert sorted(counts["train"]) == sorted(counts["test"]) == sorted(digits.folder_names())
    assert len(counts["train"]) == 10 and "digit_zero" in counts["train"]
    train, test = sum(counts["train"].values()), sum(counts["test"].values())
    assert train + test == 1797 and test == pytest.approx(0.25 * 1797, abs=10)
    assert all(40 <= n <= 50 for n in counts["test"].values())
    from PIL import Image
    first = next((root / "train" / "digit_seven").iterdir())
    assert Image.open(first).size == (16, 16) and Image.open(first).mode == "RGB"
    names = ImageFolderSource().class_names(DataConfig(root=str(root)))
    assert names[:3] == ["digit eight", "digit five", "digit four"] and "digit zero" in names
    stamp = first.stat().st_mtime_ns
    assert digits.export_digits(root, size=16) == root and first.stat().st_mtime_ns == stamp


def test_digits_without_scikit_learn_name_the_extra(monkeypatch):
    from dmc.data import digits

    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(UserError, match=r'pip install "dmc\[suite\]"'):
        digits.load()


@pytest.mark.parametrize("argv, needle", [
    (["--jobs", "0"], "bad value for --jobs: 0"),
    (["--regimes", "v9"], "unknown regime 'v9'"),
    (["--methods", "simplecil,nope"], "unknown contender 'nope'"),
    (["--seeds", "one"], "bad value for --seeds"),
    (["--reference", "zeroshot"], "unknown contender 'zeroshot' for --reference"),
    (["--grid", "missing.yaml"], "cannot read the suite's grid file missing.yaml"),
    (["--regimes", "v2", "--seeds", str(2**40)], "bad value for seed"),
])
def test_bad_suite_commands_end_in_one_line(tmp_path, capsys, argv, needle):
    ended = suite(capsys, "--out", str(tmp_path / "s"), "--methods", "simplecil", *argv)
    assert ended.returncode == 2 and needle in ended.stderr and ended.stderr.count("\n") == 1
    assert not (tmp_path / "s").exists()


def test_a_file_as_the_suite_folder_is_refused(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    ended = suite(capsys, "--out", str(tmp_path / "f"), "--methods", "simplecil", "--regimes", "v2")
    assert ended.returncode == 2 and "is a file, not a folder" in ended.stderr
