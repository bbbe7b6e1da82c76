"""The glyph world as folders of image files (`dmc world --export DIR`), for `dmc learn` on a fresh machine.

Group k holds the classes of task k of `dmc run` on the glyph world with the same seed and settings:
`DIR/group_KK/train/<class>/<row>.png` and `test/<class>/<row>.png`, the very renditions the run trains
and tests on (lossless PNG; `<row>` is the image's row in the world's split, so file names sort in the
run's order). `DIR/class_order.yaml` is the class order `dmc learn` gives the groups (each group's classes
by folder name): `dmc run --set benchmark.order_file=DIR/class_order.yaml` is the run that ten `dmc learn`
calls reproduce.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from dmc.config import RunConfig
from dmc.data.benchmark import make_benchmark
from dmc.errors import UserError
from dmc.files import write_text
from dmc.world.glyphs import class_names
from dmc.world.source import renditions_split


def folder_name(name: str) -> str:
    """"latin small letter a" -> "latin_small_letter_a" (dmc learn reads underscores as spaces)."""
    return name.replace(" ", "_")


def export_world(out: Path, cfg: RunConfig, shifted: bool = False) -> tuple[int, list[int]]:
    """Write the world's tasks as class folders under `out` (new or empty); returns (images written,
    the class order `dmc learn` gives them, as native ids: every class, those of no exported task last)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--export {out} exists and is not an empty folder; choose a new folder")
    bench = make_benchmark(cfg, cfg.seed)
    names = class_names()
    splits = {s: renditions_split(cfg.data.world, s, shifted=shifted) for s in ("train", "test")}
    limits = {"train": cfg.benchmark.train_per_class, "test": cfg.benchmark.test_per_class}
    written, order = 0, []
    try:
        for t, task in enumerate(bench.tasks):
            natives = sorted((bench.class_order[c] for c in task), key=lambda n: folder_name(names[n]))
            order += natives
            for split, (images, targets) in splits.items():
                for native in natives:
                    rows = np.nonzero(targets == native)[0][: limits[split]]
                    folder = out / f"group_{t + 1:02d}" / split / folder_name(names[native])
                    folder.mkdir(parents=True, exist_ok=True)
                    for row in rows.tolist():
                        Image.fromarray(images[row]).save(folder / f"{row:05d}.png")  # (32, 32, 3) uint8
                    written += len(rows)
    except OSError as exc:
        raise UserError(f"cannot write the images in {out}: {exc.strerror or exc}") from None
    order += [n for n in bench.class_order if n not in set(order)]  # classes of tasks cut off by max_tasks
    write_text(out / "class_order.yaml", "# dmc learn's class order for group_01, group_02, ... in turn (native "
               "ids of the glyph world)\n" + yaml.safe_dump({"class_order": order}, default_flow_style=True))
    return written, order
