"""How many CPU threads a run computes with, chosen so that runs started together share the machine.

torch starts with one thread per core. Two runs started together on a 2-core machine then ask for four
threads, and torch's threads wait for each other at every small operation: each run slowed about 4x
instead of 2x. So a `dmc run` that is not told (`--threads`, or `OMP_NUM_THREADS` in its environment)
takes the cores divided by the dmc runs on this machine, itself included, and says so in one line.

Runs on this machine know each other through a registry: each `dmc run` holds an OS lock on a file named
after its process in a folder of the temporary directory (per user), from its start to its end however it
ends; a file whose lock is free was left by a run that is gone. A run registers as it starts and counts
the others a moment later, when torch has loaded, so that runs started together count each other.

Sums on a CPU are split by thread, so the thread count changes results in their last digits: it is
recorded in the run directory (`run.json`, every metrics line), and `--resume` continues with the count
the run started with.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no registry, every run takes every core
    fcntl = None

log = logging.getLogger(__name__)

_HELD: list[int] = []  # this process's registration (kept open: closing it would drop the lock)


def registry() -> Path:
    """The folder where this user's runs on this machine register."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"dmc-{uid}" / "running"


def register(folder: Path | None = None) -> None:
    """Register this process as a running dmc run until it ends (nothing if the registry is unusable)."""
    if fcntl is None or _HELD:
        return
    folder = folder or registry()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / f"{os.getpid()}.run", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return
    _HELD.append(fd)


def others(folder: Path | None = None) -> int:
    """The dmc runs on this machine other than this process (registrations whose lock is held); the
    files of runs that are gone are removed."""
    if fcntl is None:
        return 0
    folder = folder or registry()
    count = 0
    for path in folder.glob("*.run") if folder.is_dir() else []:
        if path.name == f"{os.getpid()}.run":
            continue
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink(missing_ok=True)  # its run is gone
        except OSError:
            count += 1
        finally:
            os.close(fd)
    return count


def choose(cores: int, asked: int | None, recorded: int | None, environment: bool,
           folder: Path | None = None) -> tuple[int | None, str]:
    """The threads of a run and the line that says why: `asked` (--threads) first; then `recorded` (the
    count a resumed run started with); then, when the environment sets none (`environment` false: no
    OMP_NUM_THREADS), the cores shared with the other dmc runs here. None: leave torch's own choice."""
    if asked is not None:
        return asked, f"{_threads(asked)} (--threads)"
    if recorded is not None:
        return recorded, f"{_threads(recorded)}, as the run started with (run.json)"
    if environment:
        return None, "torch threads as OMP_NUM_THREADS says"
    n = others(folder)
    threads = max(1, cores // (n + 1))
    who = "no other dmc run here" if n == 0 else f"{n} other dmc run{'s' * (n > 1)} here"
    return threads, f"{_threads(threads)} ({cores} cores, {who}; --threads N to choose)"


def _threads(n: int) -> str:
    return f"{n} torch thread{'s' * (n != 1)}"
