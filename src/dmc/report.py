"""Tables and plots from run directories (pure reading: nothing here trains or evaluates)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dmc.files import atomic_path  # noqa: E402
from dmc.rundir import RunDir  # noqa: E402


def plot_run(summary: dict, path: Path) -> None:
    """A_t per task and the accuracy matrix as a heatmap."""
    R = np.array([[np.nan if v is None else v for v in row] for row in summary["acc_matrix"]], dtype=float)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    steps = np.arange(1, len(summary["incremental"]) + 1)
    ax1.plot(steps, summary["incremental"], marker="o")
    ax1.set(xlabel="task", ylabel="A_t (%)", ylim=(0, 100),
            title=f"{summary['method']} on {summary['benchmark']}: Avg {summary['avg']:.1f}, Last {summary['last']:.1f}")
    ax1.grid(alpha=0.3)
    im = ax2.imshow(R, vmin=0, vmax=100, cmap="viridis")
    ax2.set(xlabel="tested task j", ylabel="after task i", title="accuracy matrix R[i][j] (%)")
    fig.colorbar(im, ax=ax2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def _mean_drift(records: list[dict]) -> tuple[float, float] | None:
    rows = [r["drift"] for r in records if isinstance(r.get("drift"), dict)]
    if not rows:
        return None
    return float(np.mean([r["stored"] for r in rows])), float(np.mean([r["calibrated"] for r in rows]))


def _stored(summary: dict) -> str:
    """Images a run kept for replay (exemplars); "–" for runs written before it was recorded."""
    return str(summary["stored_images"]) if "stored_images" in summary else "–"


def compare_table(run_dirs: list[Path]) -> str:
    """Markdown table: one row per run (method, benchmark, seed, Avg, Last, forgetting, BWT, drift, stored
    images: exemplar-based and exemplar-free rows are never confused)."""
    lines = ["| run | method | benchmark | seed | Avg | Last | forgetting | BWT | old/new (last) | drift stored→calibrated | stored images | time (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in run_dirs:
        rd = RunDir(Path(d))
        s, recs = rd.read_summary(), rd.records()
        on = recs[-1] if recs else {}
        old_new = "–" if on.get("old") is None else f"{on['old']:.1f} / {on['new']:.1f}"
        drift = _mean_drift(recs)
        drift_s = "–" if drift is None else f"{drift[0]:.3f} → {drift[1]:.3f}"
        lines.append(f"| {Path(d).name} | {s['method']} | {s['benchmark']} | {s['seed']} | {s['avg']:.2f} | "
                     f"{s['last']:.2f} | {s['forgetting']:.2f} | {s['bwt']:.2f} | {old_new} | {drift_s} | "
                     f"{_stored(s)} | {s['wall_time_s']:.0f} |")
    return "\n".join(lines)


def plot_compare(run_dirs: list[Path], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for d in run_dirs:
        s = RunDir(Path(d)).read_summary()
        ax.plot(np.arange(1, len(s["incremental"]) + 1), s["incremental"], marker="o",
                label=f"{s['method']} (seed {s['seed']})")
    ax.set(xlabel="task", ylabel="A_t (%)", ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def _group_name(path: Path) -> str:
    """Runs of one setting differ only by a trailing `-s<seed>` in their directory names."""
    name = Path(path).name
    head, _, tail = name.rpartition("-s")
    return head if head and tail.isdigit() else name


def _mean_std(values: list[float]) -> str:
    arr = np.asarray(values, dtype=float)
    return f"{arr.mean():.2f} ± {arr.std(ddof=1):.2f}" if len(arr) > 1 else f"{arr.mean():.2f}"


def aggregate_table(run_dirs: list[Path]) -> str:
    """Markdown table over seeds: runs grouped by directory name without its `-s<seed>` suffix."""
    groups: dict[str, list[Path]] = {}
    for d in run_dirs:
        groups.setdefault(_group_name(d), []).append(Path(d))
    lines = ["| setting | method | seeds | Avg | Last | forgetting | \\|new − old\\| (last task) | drift stored → calibrated | stored images | s per task |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, dirs in groups.items():
        summaries = [RunDir(d).read_summary() for d in dirs]
        recs = [RunDir(d).records() for d in dirs]
        gaps = [abs(r[-1]["new"] - r[-1]["old"]) for r in recs if r and r[-1].get("old") is not None]
        drifts = [x for x in (_mean_drift(r) for r in recs) if x is not None]
        drift_s = "–" if not drifts else f"{np.mean([x[0] for x in drifts]):.3f} → {np.mean([x[1] for x in drifts]):.3f}"
        per_task = np.mean([s["wall_time_s"] / s["tasks"] for s in summaries])
        lines.append(f"| {name} | {summaries[0]['method']} | {', '.join(str(s['seed']) for s in summaries)} | "
                     f"{_mean_std([s['avg'] for s in summaries])} | {_mean_std([s['last'] for s in summaries])} | "
                     f"{_mean_std([s['forgetting'] for s in summaries])} | "
                     f"{_mean_std(gaps) if gaps else '–'} | {drift_s} | {_stored(summaries[0])} | {per_task:.1f} |")
    return "\n".join(lines)
