"""The glyph world's commands: `dmc world` (contact sheet, regime, ceiling) and `dmc pretrain-toy`. The
command line adds them (`add_parsers`, `COMMANDS`); like every command, they check their flags and
settings before torch loads."""
from __future__ import annotations

import argparse
from pathlib import Path

from dmc.data.benchmark import make_benchmark
from dmc.errors import UserError, at_least_one


def add_parsers(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser("world", help="the offline glyph world")
    w.add_argument("--sheet", type=Path, help="write a contact sheet PNG of both domains")
    w.add_argument("--export", type=Path, metavar="DIR",
                   help="write each task's classes as image folders DIR/group_KK/{train,test}/<class>/*.png (the "
                        "class order of the seed, --set seed=S), for dmc learn")
    tables = {"--regime": "zero-shot, nearest class mean and analytic read-out of the frozen toy CLIP, and their "
                          "ratios",
              "--ceiling": "Avg and Last of K cosine prototypes per class fitted on all seen classes after each task "
                           "(frozen toy CLIP, exact features): the ceiling of a text classifier with K prompts per "
                           "class"}
    for flag, text in tables.items():
        w.add_argument(flag, action="store_true", help=text)
    w.add_argument("--prototypes", type=int, nargs="+", default=[1], metavar="K", help="K for --ceiling")
    w.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="S", help="class orders for --ceiling")
    w.add_argument("--benchmark", default="glyphs", choices=("glyphs", "glyphs-shift"),
                   help="which glyph world (default: glyphs)")
    w.add_argument("--first-session", dest="first_session", type=int, nargs="*", metavar="S",
                   help="with --regime: the first-session gain rows for these seeds' class orders (default 0 1 2)")
    w.add_argument("--joint", action="store_true",
                   help="with --regime: train the `joint` method (a full run, minutes) for the joint - analytic row")
    w.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="world, benchmark or stage-1 settings, e.g. --set data.world.severity=0.3; "
                        "--set benchmark.val_fraction=0.2 --set eval.split=val measures on held-out training images")
    t = sub.add_parser("pretrain-toy", help="build (or rebuild) the cached toy CLIP and print its zero-shot accuracy")
    t.add_argument("--force", action="store_true",
                   help="pretrain again (one thread, about 25 min) and check that it reproduces the shipped weights")
    t.add_argument("--ship", action="store_true", help=argparse.SUPPRESS)  # maintainers: rewrite the shipped file


def cmd_world(args: argparse.Namespace) -> int:
    from dmc import config
    from dmc.world.sheet import write_sheet

    if (args.first_session is not None or args.joint) and not args.regime:
        raise UserError("dmc world: --first-session and --joint add rows to --regime; give --regime too")
    if args.sheet is None and args.export is None and not (args.regime or args.ceiling):
        raise UserError("dmc world: give --sheet FILE.png, --export DIR, --regime and/or --ceiling")
    at_least_one(prototypes=min(args.prototypes))
    cfg = config.resolve(args.benchmark, "dmc-ot", None, args.sets)  # dmc-ot: stage 1's recipe (vision.*)
    make_benchmark(cfg, cfg.seed)  # the benchmark's settings (validation split) are checked before torch loads
    world = cfg.data.world
    if args.sheet is not None:
        write_sheet(args.sheet, world, shifted=args.benchmark == "glyphs-shift")
        print(f"contact sheet: {args.sheet}")
    if args.export is not None:
        _export(args, cfg)
    if args.regime:
        _regime(args, cfg)
    if args.ceiling:
        from dmc.models.clip import build_backbone
        from dmc.world.regime import ceiling_table, glyph_ceiling

        print(ceiling_table(glyph_ceiling(build_backbone("toy"), cfg, args.seeds, args.prototypes)))
    return 0


def _export(args: argparse.Namespace, cfg) -> None:
    from dmc.world.export import export_world

    written, order = export_world(args.export, cfg, shifted=args.benchmark == "glyphs-shift")
    groups = sorted(p.name for p in args.export.iterdir() if p.name.startswith("group_"))
    print(f"{written} images of {len(order)} classes in {len(groups)} groups (seed {cfg.seed}): {args.export}/"
          f"group_01 ... {groups[-1]}; teach them with dmc learn MODEL_DIR {args.export}/group_01, then group_02, "
          f"...; the matching run: dmc run --seed {cfg.seed} --set benchmark.order_file={args.export}/class_order.yaml")


def _regime(args: argparse.Namespace, cfg) -> None:
    from dmc.models.clip import build_backbone
    from dmc.world.regime import first_session_gain, glyph_regime, joint_accuracy, regime_splits, regime_table

    backbone = build_backbone("toy")
    splits = regime_splits(cfg)
    frozen = glyph_regime(backbone, cfg, splits=splits)
    seeds = None if args.first_session is None else (args.first_session or [0, 1, 2])
    gains = first_session_gain(backbone, cfg, seeds, frozen, splits=splits) if seeds else None
    joint = joint_accuracy(cfg) if args.joint else None
    where = "validation rows of the training split" if cfg.eval.split == "val" else "test split"
    label = f"{args.benchmark}, severity {cfg.data.world.severity}"
    if args.benchmark == "glyphs-shift":
        shift = cfg.data.world.shift
        label += f", {shift.kind} period {shift.period:g} amplitude {shift.amplitude:g}"
    print(regime_table(frozen, label, gains, joint, where))


def cmd_pretrain_toy(args: argparse.Namespace) -> int:
    from dmc.world import pretrain, shipped, toy

    cfg = pretrain.PretrainConfig()
    meta = shipped.shipped_metadata() or {}
    same_recipe = meta.get("key") == pretrain.toy_key(cfg)
    if not (args.force or args.ship):
        model = shipped.get_toy(cfg)
        where = shipped.toy_cache_path(cfg) if shipped.toy_cache_path(cfg).is_file() else shipped.SHIPPED
        print(f"toy CLIP: {where} (sha256 {toy.state_sha256(model)[:16]}); --force rebuilds it")
        return 0
    model, report = shipped.build_and_cache(cfg)
    digest = toy.state_sha256(model)
    print(f"toy CLIP built: {shipped.toy_cache_path(cfg)} (clean zero-shot {100 * report['clean_zero_shot']:.1f}%, "
          f"sha256 {digest[:16]})")
    if args.ship:
        print(f"shipped weights written: {shipped.ship_toy(model, cfg, report)}")
    elif same_recipe:
        same = digest == meta.get("sha256")
        print("identical to the shipped weights" if same else
              f"differs from the shipped weights (sha256 {meta.get('sha256', '')[:16]}): another torch build or CPU")
    return 0


COMMANDS = {"world": cmd_world, "pretrain-toy": cmd_pretrain_toy}
