"""Command line: parse, build the config, call the library. Nothing else lives here.

Everything a command can check without torch (flags, the resolved config, names, run directories, image
files) is checked before the library that needs torch is imported: a typo costs a fraction of a second.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from dmc.errors import UserError, at_least_one
from dmc.world import commands as world_commands  # the lab: its commands; importing it registers its names

log = logging.getLogger("dmc")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """A bad command line ends like any other user error: one line, exit 2."""
        raise UserError(f"{message} (see {self.prog} --help)")


class OutputError(UserError):
    """Standard output cannot be written (a full disk, a closed descriptor)."""


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dmc", description="CLIP-based class-incremental learning: DMC, DMC-OT and baselines.")
    sub = p.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    _look_parsers(sub)
    _sweep_parser(sub)
    _suite_parser(sub)
    _predict_parser(sub)
    _learn_parser(sub)
    world_commands.add_parsers(sub)
    _bench_parsers(sub)
    return p


def _run_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="run a class-incremental experiment (default: DMC-OT on the offline glyph world)")
    r.add_argument("--benchmark", help="benchmark name (dmc list)")
    r.add_argument("--method", help="method name (dmc list)")
    r.add_argument("--backbone", help="tiny, toy, or an open_clip model name")
    r.add_argument("--seed", type=int)
    r.add_argument("--out", type=Path, help="run directory (default runs/<time>-<benchmark>-<method>)")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set vision.lr=1e-4 (repeatable)")
    r.add_argument("--smoke", action="store_true", help="tiny version: 3 tasks, 1 epoch per stage, few images")
    r.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an unfinished run")
    r.add_argument("--quiet", action="store_true", help="no progress bars (bars are only drawn on a terminal)")
    r.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    _log_flags(r)


def _log_flags(p: argparse.ArgumentParser) -> None:
    """--log and --log-dir: the experiment trackers of `dmc run`, `dmc sweep` and `dmc learn`."""
    p.add_argument("--log", action="append", default=[], metavar="TRACKER",
                   help="also log to csv, tensorboard or wandb (repeatable; wandb runs offline without an API key)")
    p.add_argument("--log-dir", type=Path, metavar="DIR", help="where trackers write (default: logs)")


def _trackers(args: argparse.Namespace) -> tuple[list[str], Path]:
    """The trackers asked for (--log, or a sweep's DMC_LOG for its runs), checked before torch loads."""
    from dmc.engine.trackers import check

    names = args.log or [n for n in os.environ.get("DMC_LOG", "").split(",") if n]
    return check(names), args.log_dir or Path(os.environ.get("DMC_LOG_DIR", "logs"))


def _look_parsers(sub: argparse._SubParsersAction) -> None:
    """The commands that read without training: plan, list, compare."""
    pl = sub.add_parser("plan", help="print the class order and each task's classes (no images loaded)")
    pl.add_argument("benchmark")
    pl.add_argument("--seed", type=int)
    pl.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    pl.add_argument("--json", action="store_true")
    sub.add_parser("list", help="list benchmarks, methods and backbones")
    c = sub.add_parser("compare", help="Markdown table of Avg/Last/forgetting (and a plot of A_t curves)")
    c.add_argument("runs", nargs="+", type=Path)
    c.add_argument("--plot", type=Path, help="also write the A_t curves to this PNG file")
    c.add_argument("--by-setting", action="store_true",
                   help="one row per setting: runs named <setting>-s<seed> are averaged (mean ± std over seeds)")
    c.add_argument("--paired", metavar="REF_SETTING",
                   help="also each setting's mean paired difference to REF_SETTING over shared seeds, with its "
                        "95%% confidence interval (implies --by-setting)")
    c.add_argument("--csv", type=Path, help="also write one row per run (setting, seed, Avg, Last, seconds, commit)")


def _predict_parser(sub: argparse._SubParsersAction) -> None:
    pr = sub.add_parser("predict", help="class names and scores of images, from the model a run trained")
    pr.add_argument("run", type=Path, metavar="RUN_DIR")
    pr.add_argument("images", nargs="+", type=Path, metavar="IMAGE_OR_FOLDER", help="folders are searched recursively")
    pr.add_argument("--task", type=int, help="the model after task K (1..T; default: the last)")
    pr.add_argument("--topk", type=int, default=5)
    pr.add_argument("--format", choices=("json", "csv"), default="json",
                    help="json: one object per line and image; csv: one row per image and rank")
    pr.add_argument("--batch", type=int, help="images per batch (default: the run's eval.batch_size)")
    pr.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def _learn_parser(sub: argparse._SubParsersAction) -> None:
    le = sub.add_parser("learn", help="teach a model new classes: FOLDER's classes become its next task")
    le.add_argument("model", type=Path, metavar="MODEL_DIR", help="the model's folder (created by the first call)")
    le.add_argument("folder", type=Path, metavar="FOLDER",
                    help="<class>/<images>, or train/<class>/<images> with an optional test/<class>/<images>")
    le.add_argument("--method", help="first call only: method name (default: dmc-ot-mem)")
    le.add_argument("--backbone", help="first call only: tiny, toy (default) or an open_clip model name")
    le.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="first call only: override a config field (repeatable)")
    le.add_argument("--quiet", action="store_true", help="no progress bars")
    le.add_argument("--threads", type=int, help="CPU threads for torch (default: the model's first call's)")
    _log_flags(le)


def _bench_parsers(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench-ot", help="time OT calibration (100 old classes x 256 samples vs 5000 features)")
    b.add_argument("--dim", type=int, default=512)
    b.add_argument("--device", default="cpu")
    b.add_argument("--repeats", type=int, default=3, help="timed calls; the median is reported")
    b.add_argument("--level", help="what is transported: class or sample (calibration.level; default: the config's)")
    rb = sub.add_parser("bench-ridge", help="time one task of RanPAC's read-out: features, lambda choice, M x M solve")
    rb.add_argument("--dim-in", type=int, default=512, help="feature dimension D (ViT-B/16: 512, toy: 128)")
    rb.add_argument("--dim", type=int, default=10000, help="random features M (ranpac.dim)")
    rb.add_argument("--n", type=int, default=5000, help="training images of the task (CIFAR-100 task: 5000)")
    rb.add_argument("--classes", type=int, default=100)
    rb.add_argument("--device", default="cpu")
    s = sub.add_parser("bench-speed",
                       help="images/s of stage 1 and evaluation, stage-2 steps/s, peak memory (random weights)")
    s.add_argument("--backbone", default="ViT-B-16")
    s.add_argument("--batch", type=int, default=64,
                   help="images per stage-1 step and real features per stage-2 step (stage-2 default: 64)")
    s.add_argument("--classes", type=int, default=100, help="classes whose prompts stage 2 encodes per step")
    s.add_argument("--repeats", type=int, default=3)
    s.add_argument("--trainable", default="all", help="trainable part of the image tower (stage 1)")
    s.add_argument("--device", default="auto")
    s.add_argument("--precision", default="auto")


def _sweep_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("sweep", help="a grid of runs (benchmarks x methods x --set alternatives x seeds) in one "
                                     "folder, then its table over seeds")
    s.add_argument("--out", type=Path, required=True, help="the sweep's folder (run again to continue it)")
    s.add_argument("--benchmarks", nargs="+", metavar="B", help="benchmark names (default: glyphs)")
    s.add_argument("--methods", nargs="+", metavar="M", help="method names (default: dmc-ot)")
    s.add_argument("--seeds", nargs="+", metavar="N", help="seeds, e.g. 1 2 3 or 1,2,3 (default: 1993)")
    s.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override for every run; a key given again is an alternative that varies")
    s.add_argument("--smoke", action="store_true", help="tiny runs (3 tasks, 1 epoch per stage, few images)")
    s.add_argument("--backbone")
    s.add_argument("--jobs", type=int, help="runs at once (default: 1; with slurm: all)")
    s.add_argument("--threads", type=int, help="torch threads per run (default: this machine's cores // jobs)")
    s.add_argument("--launcher", default="process",
                   help="process: child processes here (default); local: submitit's local executor; "
                        "slurm: submitit's Slurm executor")
    s.add_argument("--partition", help="Slurm partition")
    s.add_argument("--gpus-per-run", type=int, default=0, help="GPUs per run (more than one: torchrun)")
    s.add_argument("--cpus-per-run", type=int, help="CPUs per run asked of the scheduler")
    s.add_argument("--time", type=int, default=24 * 60, metavar="MINUTES", help="time limit per run (submitit)")
    _log_flags(s)


def _suite_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("suite", help="the transfer suite: contenders x regimes x seeds on validation rows, then "
                                     "a paired table per regime and the worst case (docs/suite.md)")
    s.add_argument("--out", type=Path, required=True, help="the suite's folder (run again to continue it)")
    s.add_argument("--grid", type=Path, help="a grid file of your own (default: the package's transfer.yaml)")
    s.add_argument("--methods", nargs="+", metavar="C", help="contenders by name (default: all of the grid file)")
    s.add_argument("--regimes", nargs="+", metavar="R", help="regimes by name (default: all of the grid file)")
    s.add_argument("--seeds", nargs="+", metavar="N", help="seeds (default: the grid file's, 0 1 2)")
    s.add_argument("--reference", help="the contender others are paired against (default: the grid file's)")
    s.add_argument("--jobs", type=int, default=1, help="runs at once (default: 1)")
    s.add_argument("--threads", type=int, help="torch threads per run (default: this machine's cores // jobs)")
    s.add_argument("--smoke", action="store_true", help="tiny runs (3 tasks, 1 epoch per stage, few images)")
    s.add_argument("--dry-run", action="store_true", help="print the runs and an estimate of their cost; run nothing")


def _names(values: list[str] | None) -> list[str] | None:
    """`a b` or `a,b` -> [a, b]."""
    return None if values is None else [v for item in values for v in item.split(",") if v]


def cmd_run(args: argparse.Namespace) -> int:
    from dmc import catalog, config
    from dmc.engine.sweep import follow_parent
    from dmc.rundir import RunDir, check_resumable
    from dmc.rundir.own import check_claimable
    from dmc.training import threads

    follow_parent()  # a sweep's child run stops with its sweep
    threads.register()  # other runs starting now count this one (training.threads)
    if args.threads is not None:
        at_least_one(threads=args.threads)
    _trackers(args)
    cfg = bench = None
    if args.resume is not None:
        _resume_alone(args)
        check_resumable(RunDir(args.resume))  # a run's records, before torch loads (its config loads once, later)
        RunDir(args.resume).verify()  # a changed config.yaml or plan.json, before torch loads
    else:
        overrides = {}
        if args.backbone:
            overrides["model.backbone"] = args.backbone
        if args.seed is not None:
            overrides["seed"] = args.seed
        cfg = config.resolve(args.benchmark or catalog.DEFAULT_BENCHMARK, args.method, overrides, args.sets,
                             smoke=args.smoke)
        bench = catalog.check(cfg)  # names, split, data root: before torch loads (the run's benchmark)
        if args.out is not None:
            check_claimable(args.out)  # a user's folder is refused before torch loads
    path = _run(args, cfg, bench)
    if path is None:  # a torchrun worker other than rank 0: rank 0 reports
        return 0
    summary = json.loads((path / "summary.json").read_text())
    _print(f"{summary['method']} on {summary['benchmark']}: Avg {summary['avg']:.2f}  Last {summary['last']:.2f}  "
          f"forgetting {summary['forgetting']:.2f}  ({summary['wall_time_s']:.0f} s)  -> {path}")
    return 0


def _resume_alone(args: argparse.Namespace) -> None:
    """--resume continues a run with the config it started with: flags that would change it are refused
    rather than silently dropped (--quiet changes nothing; --threads only the last digits of what the rest
    of the run computes, recorded in its metrics lines)."""
    given = [flag for flag, value in (("--benchmark", args.benchmark), ("--method", args.method),
                                      ("--backbone", args.backbone), ("--seed", args.seed), ("--out", args.out))
             if value is not None]
    given += ["--set"] * bool(args.sets) + ["--smoke"] * args.smoke
    if given:
        raise UserError(f"--resume continues {args.resume} with its saved config, so {', '.join(given)} cannot "
                        "be used with it; to change settings, start a new run with another --out")


def _run(args: argparse.Namespace, cfg, bench=None) -> Path | None:
    """The run itself (torch and open_clip load here); logged lines print above the live bars."""
    import torch
    from tqdm.contrib.logging import logging_redirect_tqdm

    from dmc.engine.loop import run
    from dmc.engine.trackers import tracking
    from dmc.rundir import RunDir
    from dmc.training.runtime import cores
    from dmc.training.threads import choose

    recorded = RunDir(args.resume).state().get("threads") if args.resume is not None else None
    recorded = recorded if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded >= 1 else None
    count, why = choose(cores(), args.threads, recorded, "OMP_NUM_THREADS" in os.environ)
    if count is not None:
        torch.set_num_threads(count)
    log.info("%s", why)
    with logging_redirect_tqdm(), tracking(*_trackers(args)):
        if args.resume is not None:
            return run(None, resume=args.resume, progress=not args.quiet)
        return run(cfg, out=args.out, progress=not args.quiet, bench=bench)


def cmd_plan(args: argparse.Namespace) -> int:
    from dmc import config
    from dmc.data.benchmark import make_benchmark

    _output_open()
    overrides = {"seed": args.seed} if args.seed is not None else {}
    cfg = config.resolve(args.benchmark, None, overrides, args.sets)
    plan = make_benchmark(cfg, cfg.seed).plan()
    if args.json:
        _print(json.dumps(plan))
        return 0
    _print(f"{cfg.benchmark.name}: {len(plan['class_order'])} classes, {len(plan['tasks'])} tasks, seed {cfg.seed}")
    _print("class order:", " ".join(map(str, plan["class_order"])))
    for i, names in enumerate(plan["tasks"]):
        _print(f"task {i + 1}: {', '.join(names)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    import dmc.data.sources  # noqa: F401
    from dmc.config import METHODS
    from dmc.data.sources.base import SOURCES
    from dmc.models import BACKBONES

    _output_open()
    _print("benchmarks:", ", ".join(SOURCES.names()))
    _print("methods:   ", ", ".join(METHODS.names()))
    _print("backbones: ", ", ".join(BACKBONES.names()), "(or any open_clip model name)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from dmc.report import paired_table, per_seed_csv, plot, plot_formats, read_runs, table

    _output_open()
    if args.plot is not None:
        _writable(args.plot, "the plot", plot_formats())
    if args.csv is not None:
        _writable(args.csv, "the per-seed rows")
    runs = read_runs(args.runs)
    by_setting = args.by_setting or args.paired is not None
    _print(table(runs, by_setting=by_setting))
    if args.paired is not None:
        _print(f"\nPaired by seed against {args.paired}:\n")
        _print(paired_table(runs, args.paired))
    if args.csv is not None:
        per_seed_csv(runs, args.csv)
        _print(f"\nper-seed rows: {args.csv}")
    if args.plot is not None:
        try:
            plot(runs, args.plot, by_setting=by_setting)
        except OSError as exc:
            raise UserError(f"cannot write the plot {args.plot}: {exc.strerror or exc}") from None
        _print(f"\nA_t curves: {args.plot}")
    return 0


def _writable(path: Path, what: str, formats: set[str] | None = None) -> None:
    """`what` can be written at `path`: an image extension when `formats` are given (a plot), and no file
    where a folder must be."""
    if formats is not None and path.suffix.lower().lstrip(".") not in formats:
        raise UserError(f"cannot write {what} {path}: name a file with an image extension "
                        f"(.png, .pdf, .svg; one of {', '.join(sorted(formats))})")
    folder = next((f for f in path.parents if f.exists()), None)
    if folder is not None and not folder.is_dir():
        raise UserError(f"cannot write {what} {path}: {folder} is a file, not a folder")


def _output_open() -> None:
    """A command whose result is its standard output needs one: a closed stdout is refused up front."""
    if sys.stdout is None or sys.stdout.closed:
        raise OutputError("standard output is closed, so the result would be lost; give this command an output "
                        "(a terminal, a file or a pipe)")


def cmd_sweep(args: argparse.Namespace) -> int:
    import signal

    from dmc.engine.sweep import Grid, Launch, open_sweep, run_sweep, summarize

    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C stops it, even if started in the background
    launch = Launch(args.launcher, args.jobs, args.threads, args.gpus_per_run, args.time, args.partition,
                    args.cpus_per_run)
    launch.check()
    names, log_dir = _trackers(args)
    if names:  # the sweep's runs log too, grouped by setting (dmc.engine.trackers)
        os.environ.update(DMC_LOG=",".join(names), DMC_LOG_DIR=str(log_dir.absolute()),
                          DMC_LOG_SWEEP=args.out.absolute().name)
    given = {"benchmarks": _names(args.benchmarks), "methods": _names(args.methods), "seeds": _seeds(args.seeds),
             "sets": args.sets or None, "smoke": args.smoke or None, "backbone": args.backbone}
    given = {k: v for k, v in given.items() if v is not None}
    grid = open_sweep(args.out, Grid(**given) if given else None)
    text, failed = summarize(args.out, run_sweep(args.out, grid, launch))
    _print(text)
    return 1 if failed else 0


def cmd_suite(args: argparse.Namespace) -> int:
    from dmc.engine import suite as st
    from dmc.engine.sweep import Launch, run_sweep

    launch = Launch(jobs=args.jobs, threads=args.threads)
    launch.check()
    suite = st.select(st.load_suite(args.grid), _names(args.methods), _names(args.regimes), _seeds(args.seeds),
                      args.reference)
    grid = st.make_grid(suite, args.smoke, st.dataset_roots(suite))
    if args.dry_run:
        st.check_runs(grid)
        _print(st.estimate(suite, args.out, args.jobs))
        return 0
    st.open_suite(args.out, suite, grid)
    results = run_sweep(args.out, grid, launch)
    rows, missing = st.collect(args.out, suite)
    _print(st.report(rows, suite.reference, list(suite.regimes)))
    failed = [r.point.name for r in results if r.outcome is not None and r.outcome.code != 0]
    if missing:
        _print(f"\n{len(missing)} of {len(results)} runs did not finish (run the suite again to continue): "
               + ", ".join(missing) + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if missing else 0


def _seeds(values: list[str] | None) -> list[int] | None:
    names = _names(values)
    try:
        return None if names is None else [int(v) for v in names]
    except ValueError:
        raise UserError(f"bad value for --seeds: {' '.join(values)}; seeds are integers, e.g. --seeds 1 2 3") from None


def cmd_predict(args: argparse.Namespace) -> int:
    from dmc.config import ModelConfig
    from dmc.data.sources.files import collect_images
    from dmc.engine.model_dir import model_version
    from dmc.rundir import RunDir

    _output_open()
    at_least_one(topk=args.topk, **({} if args.batch is None else {"batch": args.batch}))
    run_dir, task = model_version(args.run, args.task)  # a model of dmc learn: its version K
    task = RunDir(run_dir).trained_task(task)  # run, task and images are checked before torch loads
    images = collect_images(args.images)
    ModelConfig(device=args.device).check()
    from dmc.engine.predict import load, write_predictions

    model = load(run_dir, task, args.device)
    start = time.time()
    out = model.predict(images, args.topk, args.batch)
    seconds = time.time() - start
    _emit(lambda: write_predictions(sys.stdout, images, out, task, args.format))
    log.info("%d images in %.2f s (%.0f images/s), the model after task %d of %s", len(images), seconds,
             len(images) / max(seconds, 1e-9), task, args.run)
    return 0


def cmd_learn(args: argparse.Namespace) -> int:
    import torch
    from tqdm.contrib.logging import logging_redirect_tqdm

    from dmc.engine.learn import Learner
    from dmc.engine.trackers import tracking
    from dmc.engine.model_dir import committed, is_model, version_dir
    from dmc.rundir import RunDir
    from dmc.training.runtime import cores
    from dmc.training.threads import choose

    if args.threads is not None:
        at_least_one(threads=args.threads)
    names, log_dir = _trackers(args)
    learner = Learner(args.model, args.method, args.backbone, args.sets, progress=not args.quiet)
    first = version_dir(args.model, 1)
    recorded = RunDir(first).state().get("threads") if is_model(args.model) and committed(args.model) else None
    recorded = recorded if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded >= 1 else None
    count, why = choose(cores(), args.threads, recorded, "OMP_NUM_THREADS" in os.environ)
    if count is not None:
        torch.set_num_threads(count)
    log.info("%s", why)
    with logging_redirect_tqdm(), tracking(names, log_dir, name=args.model.absolute().name):
        rec = learner.learn(args.folder)
    score = "no test images" if rec["A_t"] != rec["A_t"] else f"A_t {rec['A_t']:.2f}"
    if rec.get("old") is not None and rec["A_t"] == rec["A_t"]:
        score += f" (old {rec['old']:.2f}, new {rec['new']:.2f})"
    _print(f"task {rec['task']}: {rec['classes_seen']} classes, {score}  ({rec['time_s']['total']:.0f} s)  "
           f"-> {args.model}")
    return 0


def cmd_bench_ot(args: argparse.Namespace) -> int:
    from dmc.config import CalibrationConfig

    at_least_one(dim=args.dim, repeats=args.repeats)
    cfg = CalibrationConfig(level=args.level) if args.level else None  # checked before torch loads
    from dmc.bench import bench_ot

    _print(json.dumps(bench_ot(dim=args.dim, device=args.device, repeats=args.repeats, cfg=cfg), indent=1))
    return 0


def cmd_bench_ridge(args: argparse.Namespace) -> int:
    from dmc.bench import bench_ridge

    _print(json.dumps(bench_ridge(args.dim_in, args.dim, args.n, args.classes, device=args.device), indent=1))
    return 0


def cmd_bench_speed(args: argparse.Namespace) -> int:
    from dmc.config import ModelConfig, VisionConfig
    from dmc.bench import bench_speed
    from dmc.training.runtime import make_runtime

    ModelConfig(device=args.device, precision=args.precision)  # the flags are checked as a run's config is
    VisionConfig(trainable=args.trainable)
    at_least_one(batch=args.batch, classes=args.classes, repeats=args.repeats)
    rt = make_runtime(args.device, args.precision, progress=False)
    _print(json.dumps(bench_speed(rt, args.backbone, args.batch, args.classes, args.repeats, args.trainable), indent=1))
    return 0


COMMANDS = {"run": cmd_run, "plan": cmd_plan, "list": cmd_list, "compare": cmd_compare, "sweep": cmd_sweep,
            "suite": cmd_suite, "predict": cmd_predict, "learn": cmd_learn, "bench-ot": cmd_bench_ot,
            "bench-speed": cmd_bench_speed,
            "bench-ridge": cmd_bench_ridge, **world_commands.COMMANDS}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="dmc: %(message)s", stream=sys.stderr)
    try:
        args = _parser().parse_args(argv)
        code = COMMANDS[args.command](args)
        _emit(lambda: None)  # what is still buffered: a full disk (/dev/full) shows here, not at exit
        return code
    except UserError as exc:
        print(f"dmc: error: {exc}", file=sys.stderr)
        if isinstance(exc, OutputError):
            _quiet_stdout()
        return 2
    except KeyboardInterrupt:
        print("dmc: interrupted (an unfinished run can be continued with --resume)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (e.g. `dmc predict ... | head`): stop quietly
        _quiet_stdout()
        return 141


def _emit(write) -> None:
    """Call `write` (which writes to standard output), then flush; an OS error writing it is one line."""
    try:
        write()
        if sys.stdout is not None:
            sys.stdout.flush()
    except BrokenPipeError:
        raise
    except (OSError, ValueError) as exc:  # ValueError: a closed file
        raise OutputError(f"cannot write the output: {getattr(exc, 'strerror', None) or exc}") from None


def _print(*values, **kwargs) -> None:
    """`print` to standard output, through `_emit`."""
    _emit(lambda: print(*values, **kwargs))


def _quiet_stdout() -> None:
    """Point standard output at /dev/null, so that Python's flush at exit raises no second error."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
