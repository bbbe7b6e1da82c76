"""Owning a run directory: its mark, its lock and its log, from the moment a run takes it to `close`.

- The mark (`.dmc-run`) is written when dmc creates the folder, before anything else. A folder that holds
  files and no mark is the user's: a new run refuses it without writing a byte there.
- The lock is a POSIX record lock on `.lock`: it dies with the process, so a killed run can be resumed at
  once, and data-loader workers forked from the owner do not inherit it; a second process is refused in
  one line. Deleting `.lock` would let a second process lock a new file: the owner checks before every
  write that `.lock` is still the file it locked, and stops instead of writing beside another process.
- The log (`run.log`) keeps what the run logged while the process owned the folder, and why it stopped.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from dmc.errors import UserError
from dmc.files import write_text
from dmc.rundir.layout import LOCK, LOG, MARKER, is_link, open_nofollow

try:
    import fcntl
except ImportError:  # not POSIX: no lock (documented in the README's limits)
    fcntl = None

log = logging.getLogger(__name__)

_HELD: set[Path] = set()  # folders this process has locked (POSIX locks do not exclude their own process)


def take_lock(fd: int, place: Path, holder: str, held: bool = False) -> None:
    """Lock the open file `fd` (a folder's `.lock`) for this process and write its pid there. Another process
    holding it (or `held`: this one already does) is one line naming its pid; `holder` says what kind of dmc
    process owns `place` ("run", "sweep")."""
    try:
        if held:
            raise BlockingIOError
        if fcntl is not None:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise UserError(f"{place} is in use by another dmc {holder} (pid {owner}); wait for it to end or choose "
                        "another --out") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def check_claimable(path: Path) -> bool:
    """Whether `path` is already marked as a run directory (True) or is new or empty (False); a file, or a
    folder holding other files and no mark, is refused in one line. Writes nothing: the command line calls
    it before torch loads."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path} is a file, not a folder; choose a folder for the run")
    if (path / MARKER).is_file() and not is_link(path / MARKER):
        return True
    held = sorted(e.name for e in path.iterdir()) if path.is_dir() else []
    if held:
        raise UserError(f"--out {path} holds files that are not a dmc run (first: {held[0]}); choose a new or "
                        "empty folder (dmc never removes files it did not write)")
    return False


def mark(path: Path) -> None:
    """Claim a new or empty folder for a run: the mark says that dmc created it and may remove what it
    wrote there. A folder that already holds other files and no mark is refused, untouched."""
    if check_claimable(path):
        return
    try:
        write_text(path / MARKER, "a dmc run directory: dmc may remove the files it wrote here, and no others\n")
    except UserError as exc:
        raise UserError(f"cannot create the run directory {path}: {exc}") from None


class Ownership:
    """This process's hold on a run directory: the lock (and, for the writer, `run.log`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None
        self._log: logging.Handler | None = None
        self._level_before: int | None = None

    def acquire(self) -> None:
        """Hold the folder's lock until `close` or the end of the process (one line if another holds it)."""
        try:
            fd = open_nofollow(self.path / LOCK, os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            raise UserError(f"cannot lock the run directory {self.path}: {exc.strerror or exc}") from None
        key = self.path.resolve()
        take_lock(fd, self.path, "run", held=key in _HELD)
        stat = os.fstat(fd)
        self._fd, self._inode = fd, (stat.st_dev, stat.st_ino)
        _HELD.add(key)

    def check(self) -> None:
        """Before a write: `.lock` is still the file this process locked. If it was deleted or replaced,
        another process may have locked a new one and be writing here: stop, without writing."""
        if self._inode is None:
            raise RuntimeError(f"{self.path} is written without holding its lock")
        if not self.holds():
            raise UserError(f"{self.path / LOCK} was removed or replaced while this run owned the folder, so "
                            "another dmc process may be writing there: this run stopped without writing more; "
                            "check that no other run uses the folder")

    def holds(self) -> bool:
        """Whether `.lock` is still the file this process locked (not deleted, replaced or made a link)."""
        try:
            stat = os.lstat(self.path / LOCK)
            return self._inode is not None and (stat.st_dev, stat.st_ino) == self._inode
        except OSError:
            return False

    # ---------------------------------------------------------------- the console log
    def start_log(self) -> None:
        """Append what dmc logs (INFO and up) to `run.log` while this process owns the folder."""
        try:
            fd = open_nofollow(self.path / LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        except OSError as exc:
            raise UserError(f"cannot write {self.path / LOG}: {exc.strerror or exc}") from None
        handler = logging.StreamHandler(os.fdopen(fd, "a", encoding="utf-8"))
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        handler.setLevel(logging.INFO)
        logger = logging.getLogger("dmc")
        if logger.getEffectiveLevel() > logging.INFO:  # a library caller that configured no logging
            self._level_before = logger.level
            logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        self._log = handler

    def log_failure(self, exc: BaseException) -> None:
        """Record in `run.log` (only: the console shows it already) why the run stopped: the one line of
        a user error, or the traceback of anything else."""
        if self._log is None:
            return
        if isinstance(exc, UserError):
            msg, info = f"error: {exc}", None
        elif isinstance(exc, KeyboardInterrupt):
            msg, info = "interrupted", None
        else:
            msg, info = "the run stopped on an internal error", (type(exc), exc, exc.__traceback__)
        self._log.handle(logging.LogRecord("dmc", logging.ERROR, __file__, 0, msg, None, info))

    def close(self) -> None:
        """Stop the log and release the lock (the OS releases it too when the process ends, however it ends)."""
        if self._log is not None:
            logger = logging.getLogger("dmc")
            logger.removeHandler(self._log)
            self._log.close()
            self._log.stream.close()
            self._log = None
            if self._level_before is not None:
                logger.setLevel(self._level_before)
                self._level_before = None
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the process's lock
            self._fd = self._inode = None
            _HELD.discard(self.path.resolve())
