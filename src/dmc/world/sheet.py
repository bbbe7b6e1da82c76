"""A contact sheet of the glyph world: clean glyphs beside renditions of the same classes (`dmc world --sheet`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dmc.files import atomic_path
from dmc.world.config import WorldConfig
from dmc.world.glyphs import CLASS_CHARS, class_names, render_clean, render_renditions, split_seed
from dmc.world.source import shift_of


def write_sheet(path: str | Path, world: WorldConfig, n_classes: int = 10, per_class: int = 6,
                shifted: bool = False) -> Path:
    """A PNG contact sheet: for a few classes, clean samples (left) beside renditions (right; `shifted`:
    with `world.shift` laid over, as glyphs-shift draws them).

    Drawn on a bare Agg `Figure`, so the caller's pyplot backend and state are left alone.
    """
    from matplotlib.figure import Figure

    ids = np.linspace(0, len(CLASS_CHARS) - 1, n_classes).round().astype(int).tolist()
    clean, _ = render_clean(ids, per_class, split_seed(world.seed, "test"))
    rend, _ = render_renditions(ids, per_class, split_seed(world.seed, "test"), world.severity, world.system_fonts,
                                shift=shift_of(world) if shifted else None)
    fig = Figure(figsize=(2 * per_class * 0.7 + 2.5, n_classes * 0.75 + 0.4))
    axes = np.asarray(fig.subplots(n_classes, 2 * per_class)).reshape(n_classes, 2 * per_class)
    for r, cid in enumerate(ids):
        row = np.concatenate([clean[r * per_class:(r + 1) * per_class], rend[r * per_class:(r + 1) * per_class]])
        for c, ax in enumerate(axes[r]):
            ax.imshow(row[c], interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
        axes[r, 0].set_ylabel(class_names()[cid], rotation=0, ha="right", va="center", fontsize=7)
    axes[0, 0].set_title("clean (pretraining)", loc="left", fontsize=8)
    title = f"renditions (severity {world.severity}" + (f", {world.shift.kind})" if shifted else ")")
    axes[0, per_class].set_title(title, loc="left", fontsize=8)
    fig.subplots_adjust(left=2.4 / fig.get_figwidth(), right=0.98, top=0.93, bottom=0.02, wspace=0.05, hspace=0.05)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    return Path(path)
