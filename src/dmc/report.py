"""Tables and plots from run directories (pure reading: nothing here trains or evaluates).

Rows and legend entries are named after their run directory (or, with `by_setting`, their setting: the
directory name without `-s<seed>`), the config keys that differ between the runs are columns of the table,
runs of different benchmarks get a table and a panel each, and a directory that is not a finished run is
reported (one logged line) and left out.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dmc.config import saved_tree  # noqa: E402
from dmc.config.resolve import flatten  # noqa: E402
from dmc.errors import UserError  # noqa: E402
from dmc import stats  # noqa: E402
from dmc.files import atomic_path, write_text  # noqa: E402
from dmc.rundir import CONFIG, SUMMARY, RunDir  # noqa: E402

log = logging.getLogger(__name__)
SHOWN = ("method", "seed", "benchmark.name")  # config keys that have columns of their own
NEEDED = ("method", "benchmark", "seed", "tasks", "avg", "last", "forgetting", "bwt", "incremental", "wall_time_s")
NUMBERS = ("seed", "tasks", "avg", "last", "forgetting", "bwt", "incremental", "wall_time_s")  # tables format these


def _numbers(value) -> bool:
    """A number (not a bool), or a non-empty list of them: what a table or a plot can show."""
    if isinstance(value, list):
        return bool(value) and all(_numbers(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plot_formats() -> set[str]:
    """The file extensions matplotlib can write a figure as (png, pdf, svg, ...)."""
    from matplotlib.backend_bases import FigureCanvasBase

    return set(FigureCanvasBase.get_supported_filetypes())


def plot_run(summary: dict, path: Path) -> None:
    """`accuracy.png`: A_t per task and the accuracy matrix as a heatmap with its values."""
    _save(run_figure(summary), path)


def run_figure(summary: dict):
    """The figure of one run, tasks numbered 1..T on every axis."""
    R = np.array([[np.nan if v is None else v for v in row] for row in summary["acc_matrix"]], dtype=float)
    T = len(R)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    steps = np.arange(1, len(summary["incremental"]) + 1)
    ax1.plot(steps, summary["incremental"], marker="o")
    ax1.set(xlabel="task", ylabel="A_t (%)", ylim=(0, 100), xticks=steps,
            title=f"{summary['method']} on {summary['benchmark']}: Avg {summary['avg']:.1f}, "
                  f"Last {summary['last']:.1f}")
    ax1.grid(alpha=0.3)
    im = ax2.imshow(R, vmin=0, vmax=100, cmap="viridis", extent=(0.5, T + 0.5, T + 0.5, 0.5))
    ticks = np.arange(1, T + 1)
    ax2.set(xlabel="tested task j", ylabel="after task i", title="accuracy matrix R[i][j] (%)",
            xticks=ticks, yticks=ticks)
    size = max(4, 10 - T // 3)  # values stay legible up to about 20 tasks
    for i, j in zip(*np.nonzero(~np.isnan(R))):
        ax2.text(j + 1, i + 1, f"{R[i, j]:.0f}", ha="center", va="center", fontsize=size,
                 color="white" if R[i, j] < 60 else "black")
    fig.colorbar(im, ax=ax2)
    fig.tight_layout()
    return fig


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------- reading runs
@dataclass
class Run:
    """A finished run as tables and plots see it."""

    path: Path
    name: str  # its row and legend label
    summary: dict
    records: list[dict]
    config: dict  # flattened `key.path -> value` of its config.yaml ({} if that is unreadable)

    @property
    def setting(self) -> str:
        """The directory name without its trailing `-s<seed>`: runs of one setting differ only there."""
        head, _, tail = self.name.rpartition("-s")
        return head if head and tail.isdigit() else self.name


def read_runs(paths: list[Path]) -> list[Run]:
    """The finished runs among `paths`, in order; every other path is logged in one line and left out
    (none at all is a user error). Runs are named by folder, with parents added where names repeat."""
    runs: list[Run] = []
    skipped: list[str] = []
    for path in map(Path, paths):
        try:
            rd = RunDir(path)
            summary = rd.read_summary()
            missing = [k for k in NEEDED if k not in summary]
            if missing:
                raise UserError(f"{path / SUMMARY} lacks {', '.join(missing)}")
            odd = [k for k in NUMBERS if not _numbers(summary[k])]
            if odd:
                raise UserError(f"{path / SUMMARY}: {odd[0]} is not a number ({summary[odd[0]]!r:.40})")
            records = rd.records()
        except (UserError, OSError, ValueError) as exc:
            skipped.append(str(exc) if str(path) in str(exc) else f"{path}: {exc}")
            log.warning("skipped %s", skipped[-1])
            continue
        try:
            config = flatten(saved_tree(path / CONFIG))
        except UserError:
            config = {}
        runs.append(Run(path, path.name, summary, records, config))
    if not runs:
        raise UserError(f"none of the {len(skipped)} folders is a finished run (first: {skipped[0]})")
    _unique_names(runs)
    return runs


def _unique_names(runs: list[Run]) -> None:
    """Runs with the same folder name are told apart by as many parent folders as it takes."""
    for depth in range(2, 1 + max(len(r.path.resolve().parts) for r in runs)):
        names = [r.name for r in runs]
        clash = {n for n in names if names.count(n) > 1}
        if not clash:
            return
        for r in runs:
            if r.name in clash:
                r.name = "/".join(r.path.resolve().parts[-depth:])


def group_by_benchmark(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs grouped by benchmark, in order of first appearance: they are never averaged or drawn together."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.summary["benchmark"], []).append(r)
    return groups


def differing_keys(configs: list[dict]) -> list[str]:
    """Config keys (besides method, seed and benchmark) whose values are not the same in every config."""
    keys = sorted({k for c in configs for k in c} - set(SHOWN))
    return [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]


def _value(v) -> str:
    return "–" if v is None else _cell(str(v))


def _cell(text: str) -> str:
    """Text as one Markdown table cell: a newline or a `|` (in a folder name, a path) would break the
    table, so they are written escaped (`\\n`, `\\|`)."""
    return (text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "\\r").replace("\n", "\\n"))


# --------------------------------------------------------------------------- one row per run
def _mean_drift(records: list[dict]) -> tuple[float, float] | None:
    rows = [r["drift"] for r in records if isinstance(r.get("drift"), dict)]
    if not rows:
        return None
    return float(np.mean([r["stored"] for r in rows])), float(np.mean([r["calibrated"] for r in rows]))


def _stored(summary: dict) -> str:
    """Images a run kept for replay (exemplars); "–" for runs written before it was recorded."""
    return str(summary["stored_images"]) if "stored_images" in summary else "–"


def _sections(groups: dict[str, list], render) -> str:
    """One table per benchmark, each under a heading when there are several."""
    if len(groups) == 1:
        return render(next(iter(groups.values())))
    return "\n\n".join(f"### {bench}\n\n{render(items)}" for bench, items in groups.items())


def table(runs: list[Run], by_setting: bool = False) -> str:
    """Markdown, one table per benchmark: a row per run, or with `by_setting` per setting (mean ± std
    over its seeds); the config keys that differ between the rows are columns."""
    return _sections(group_by_benchmark(runs), _setting_rows if by_setting else _run_rows)


def compare_table(run_dirs: list[Path]) -> str:
    """A row per run (method, benchmark, seed, Avg, Last, forgetting, BWT, drift, stored images:
    exemplar-based and exemplar-free rows are never confused), then the config keys that differ."""
    return table(read_runs(run_dirs))


def _run_rows(runs: list[Run]) -> str:
    keys = differing_keys([r.config for r in runs])
    lines = ["| run | method | benchmark | seed | Avg | Last | forgetting | BWT | old/new (last) | "
             "drift stored→calibrated | stored images | time (s) |" + "".join(f" {k} |" for k in keys),
             "|---" * (12 + len(keys)) + "|"]
    for r in runs:
        s, on = r.summary, (r.records[-1] if r.records else {})
        old_new = "–" if on.get("old") is None else f"{on['old']:.1f} / {on['new']:.1f}"
        drift = _mean_drift(r.records)
        drift_s = "–" if drift is None else f"{drift[0]:.3f} → {drift[1]:.3f}"
        lines.append(f"| {_cell(r.name)} | {s['method']} | {s['benchmark']} | {s['seed']} | {s['avg']:.2f} | "
                     f"{s['last']:.2f} | {s['forgetting']:.2f} | {s['bwt']:.2f} | {old_new} | {drift_s} | "
                     f"{_stored(s)} | {s['wall_time_s']:.0f} |"
                     + "".join(f" {_value(r.config.get(k))} |" for k in keys))
    return "\n".join(lines)


# --------------------------------------------------------------------------- one row per setting
def _mean_std(values: list[float]) -> str:
    arr = np.asarray(values, dtype=float)
    return f"{arr.mean():.2f} ± {arr.std(ddof=1):.2f}" if len(arr) > 1 else f"{arr.mean():.2f}"


def group_by_setting(runs: list[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.setting, []).append(r)
    return groups


def _setting_rows(runs: list[Run]) -> str:
    groups = group_by_setting(runs)
    common = {name: _common(g) for name, g in groups.items()}
    keys = differing_keys(list(common.values()))
    lines = ["| setting | method | seeds | Avg | Last | forgetting | \\|new − old\\| (last task) | "
             "drift stored → calibrated | stored images | s per task |" + "".join(f" {k} |" for k in keys),
             "|---" * (10 + len(keys)) + "|"]
    notes = []
    for name, group in groups.items():
        summaries = [r.summary for r in group]
        gaps = [abs(r.records[-1]["new"] - r.records[-1]["old"]) for r in group
                if r.records and r.records[-1].get("old") is not None]
        drifts = [x for x in (_mean_drift(r.records) for r in group) if x is not None]
        drift_s = ("–" if not drifts
                   else f"{np.mean([x[0] for x in drifts]):.3f} → {np.mean([x[1] for x in drifts]):.3f}")
        per_task = np.mean([s["wall_time_s"] / s["tasks"] for s in summaries])
        lines.append(f"| {_cell(name)} | {summaries[0]['method']} | {', '.join(str(s['seed']) for s in summaries)} | "
                     f"{_mean_std([s['avg'] for s in summaries])} | {_mean_std([s['last'] for s in summaries])} | "
                     f"{_mean_std([s['forgetting'] for s in summaries])} | "
                     f"{_mean_std(gaps) if gaps else '–'} | {drift_s} | {_stored(summaries[0])} | {per_task:.1f} |"
                     + "".join(f" {_value(common[name].get(k, 'mixed'))} |" for k in keys))
        mixed = differing_keys([r.config for r in group]) + ["method"] * (len({s["method"] for s in summaries}) > 1)
        if mixed:
            notes.append(f"note: the runs of {_cell(name)} differ in more than the seed ({', '.join(mixed)})")
    return "\n".join(lines + ([""] + notes if notes else []))


def _common(group: list[Run]) -> dict:
    """The config values shared by every run of a group (keys whose values differ are left out)."""
    first = group[0].config
    return {k: v for k, v in first.items() if all(r.config.get(k, object()) == v for r in group[1:])}


# --------------------------------------------------------------------------- plots
def plot(runs: list[Run], path: Path, by_setting: bool = False) -> None:
    """A_t curves, one panel per benchmark: one curve per run, or per setting its mean over seeds with a
    band of ± one standard deviation."""
    groups = group_by_benchmark(runs)
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4), squeeze=False)
    for ax, (bench, runs) in zip(axes[0], groups.items()):
        curves = ({name: [r.summary["incremental"] for r in g] for name, g in group_by_setting(runs).items()}
                  if by_setting else {r.name: [r.summary["incremental"]] for r in runs})
        for label, rows in curves.items():
            n = min(len(row) for row in rows)
            arr = np.array([row[:n] for row in rows], dtype=float)  # (seeds, T)
            steps = np.arange(1, n + 1)
            mean = arr.mean(axis=0)
            line, = ax.plot(steps, mean, marker="o", label=label + (f" ({len(rows)} seeds)" if by_setting else ""))
            if len(rows) > 1:
                std = arr.std(axis=0, ddof=1)
                ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        T = max(len(r.summary["incremental"]) for r in runs)
        ax.set(xlabel="task", ylabel="A_t (%)", ylim=(0, 100), xticks=np.arange(1, T + 1), title=bench)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


# --------------------------------------------------------------------------- paired statistics
def paired_table(runs: list[Run], reference: str, level: float = 0.95) -> str:
    """Markdown, per benchmark: each setting's mean paired difference to the setting `reference` over the
    seeds both have, with its `level` Student-t interval, for Avg and Last (`dmc.stats`). "within noise"
    says whether the interval contains 0."""
    return _sections(group_by_benchmark(runs), lambda items: _paired_rows(items, reference, level))


def _paired_rows(runs: list[Run], reference: str, level: float) -> str:
    groups = group_by_setting(runs)
    if reference not in groups:
        raise UserError(f"no setting named {reference!r} among the runs; settings: {', '.join(groups)}")
    ref = {metric: {r.summary["seed"]: r.summary[metric] for r in groups[reference]} for metric in ("avg", "last")}
    pct = f"{100 * level:.0f} %"
    lines = [f"| setting | paired seeds | Avg − {reference} [{pct} CI] | Last − {reference} [{pct} CI] "
             "| within noise (Avg / Last) |",
             "|---|---|---|---|---|"]
    for name, group in groups.items():
        if name == reference:
            continue
        mine = {metric: {r.summary["seed"]: r.summary[metric] for r in group} for metric in ("avg", "last")}
        seeds = sorted(set(mine["avg"]) & set(ref["avg"]))
        if not seeds:
            lines.append(f"| {_cell(name)} | none | – | – | – |")
            continue
        avg, last = (stats.paired(mine[m], ref[m], level) for m in ("avg", "last"))
        noise = " / ".join({True: "yes", False: "no", None: "–"}[p.within_noise] for p in (avg, last))
        lines.append(f"| {_cell(name)} | {', '.join(map(str, seeds))} | {avg} | {last} | {noise} |")
    return "\n".join(lines)


CSV_FIELDS = ("setting", "method", "benchmark", "seed", "eval_split", "avg", "last", "forgetting", "seconds",
              "seconds_per_task", "commit")


def per_seed_csv(runs: list[Run], path: Path) -> None:
    """One row per run (setting, seed, Avg, Last, seconds, the commit of the code that ran, ...), so anyone
    can check a published row by re-running one seed."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in runs:
        s = r.summary
        writer.writerow([r.setting, s["method"], s["benchmark"], s["seed"], s.get("eval_split", "test"),
                         f"{s['avg']:.4f}", f"{s['last']:.4f}", f"{s['forgetting']:.4f}", f"{s['wall_time_s']:.1f}",
                         f"{s['wall_time_s'] / s['tasks']:.2f}", s.get("versions", {}).get("dmc_commit", "unknown")])
    write_text(path, buf.getvalue())
