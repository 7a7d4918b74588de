"""Ownership of a run directory: one process at a time, nothing of the user's replaced.

:class:`RunDirectory` is what :func:`~tucker_ref.training.trainer.train` holds while it works
in ``--out``:

* **One run at a time.** Taking the directory takes an exclusive ``fcntl.flock`` on
  :data:`LOCK_NAME` inside it, before anything else is written. The operating system drops
  the lock when the process ends, however it ends (``SIGKILL`` included), so there is no
  stale lock to clean up. A second run fails at once with :class:`RunDirectoryBusy`, whose
  message names the holder (pid, host, start time, recorded in the lock file).
* **Nothing of the user's replaced.** A fresh run starts only in a directory that is missing,
  empty, or holds nothing but the files of an earlier tucker-ref run that stopped before its
  first checkpoint and summary (so that it has nothing to resume and nothing to report).
  Anything else is refused with a ``FileExistsError`` that lists the files: a committed
  checkpoint (continue it with ``--resume``), the results of a finished run, files of the
  user's. ``overwrite=True`` (``--overwrite``) replaces the files a run writes
  (:data:`RUN_FILES`, checkpoint arrays) and leaves every other file alone; like the files of
  an interrupted run, they are removed only once every check has passed (:meth:`started`).
  ``--resume`` never creates a directory: a mistyped ``--out`` leaves nothing behind.
* **Stale temporary files removed.** ``.<name>.<random>.tmp`` files of a run's own files,
  left by a process killed inside an atomic write, are deleted when the directory is taken.
* **A failed start leaves nothing behind.** If the run fails before it writes its first
  file (bad data, a checkpoint that fails its checks, changed settings), the lock file it
  created and the directories it created are removed again.

Error messages name the directory and say what to do.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import tempfile
import time
from pathlib import Path

from .checkpoint import CHECKPOINT_JSON, NPZ_PATTERN
from .runfiles import TEMP_SUFFIX, temp_file_pattern, write_error

#: The lock file inside a run directory (its content: the holder's pid, host and start time).
LOCK_NAME = ".tucker-ref.lock"
#: Files a run writes besides the checkpoint arrays (``checkpoint-<step>.npz``).
RUN_FILES = ("steps.jsonl", "metrics.jsonl", "summary.json", CHECKPOINT_JSON, "curves.png", "ranks.png",
             "core_spectra.png")
#: Files an interrupted run may leave before its first checkpoint; a fresh run replaces them
#: when the directory's lock file shows that a tucker-ref run wrote them.
INTERRUPTED_RUN_FILES = ("steps.jsonl", "metrics.jsonl")

_TEMP = temp_file_pattern("(?:" + "|".join(n.replace(".", r"\.") for n in RUN_FILES) + r"|checkpoint-\d+\.npz)")
_SHOWN = 6


class RunDirectoryBusy(OSError):
    """Another process holds the run directory's lock."""


def _is_run_file(name: str) -> bool:
    return name in RUN_FILES or bool(NPZ_PATTERN.match(name)) or bool(_TEMP.match(name))


def _listing(names) -> str:
    names = sorted(names)
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


class RunDirectory:
    """The run directory ``path``, taken for one run (a context manager).

    Parameters
    ----------
    path : path-like
    resume : bool
        Continue the run in ``path``: it must exist and hold a ``checkpoint.json``.
    overwrite : bool
        A fresh run may replace the run files in ``path`` (never together with ``resume``).

    ``with RunDirectory(path, resume=…, overwrite=…) as run_dir:`` takes the lock and checks
    the directory (module docstring); leaving the block releases the lock. Call
    :meth:`started` once the run is about to write its first file: before that, an exception
    leaving the block removes what taking the directory created.
    """

    def __init__(self, path, *, resume: bool = False, overwrite: bool = False):
        if resume and overwrite:
            raise ValueError("overwrite starts a fresh run and cannot be combined with resume")
        self.path = Path(path)
        self.resume = resume
        self.overwrite = overwrite
        self.removed: list[str] = []
        self._to_remove: list[str] = []
        self._fd = None
        self._created_dirs: list[Path] = []
        self._created_lock = False
        self._writing = False

    # -- taking and releasing ------------------------------------------------------------
    def __enter__(self) -> "RunDirectory":
        self._prepare_path()
        try:
            self._lock()
            self._remove_stale_temp_files()
            if not self.resume:
                self._check_fresh()
        except BaseException:
            self._undo()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and not self._writing:
            self._undo()
        else:
            self._release()

    def started(self) -> None:
        """The run begins to write: the files that a fresh run replaces (``overwrite``, or those
        of an interrupted run) are removed now, and from now on the run's files stay, whatever
        happens."""
        self._writing = True
        for name in self._to_remove:
            (self.path / name).unlink(missing_ok=True)
            self.removed.append(name)
        self._to_remove = []

    def _prepare_path(self) -> None:
        p = self.path
        if p.exists() and not p.is_dir():
            raise NotADirectoryError(f"--out {p} is a file, not a directory; choose a directory for the run")
        if self.resume:
            if not p.is_dir():
                raise FileNotFoundError(f"{p / CHECKPOINT_JSON}: no checkpoint to resume from, {p} does not exist "
                                        "(check --out, or train without --resume first)")
            if not (p / CHECKPOINT_JSON).is_file():
                raise FileNotFoundError(f"{p / CHECKPOINT_JSON}: no checkpoint to resume from (train without "
                                        "--resume first)")
            return
        missing = []
        for parent in (p, *p.parents):
            if parent.exists():
                break
            missing.append(parent)
        try:
            p.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise NotADirectoryError(f"--out {p}: a part of the path is a file; choose a directory for the "
                                     "run") from None
        except OSError as exc:
            raise write_error(exc, p, "create the run directory") from exc
        self._created_dirs = [d for d in missing if d.is_dir()]

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - POSIX only
            raise OSError("run directories are locked with fcntl.flock, which this platform lacks") from None
        lock = self.path / LOCK_NAME
        while True:
            existed = lock.exists()
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise write_error(exc, lock, "create the lock file") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_holder(fd)
                os.close(fd)
                raise RunDirectoryBusy(f"{self.path} is in use by another run ({holder}); wait for it to end "
                                       "or choose another --out") from None
            # The file may have been removed (a failed start cleaning up) between open and
            # flock: then this lock protects nothing; take the file that is there now.
            try:
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd = fd
        self._created_lock = not existed
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError as exc:
            raise write_error(exc, lock) from exc

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the flock
            self._fd = None

    def _undo(self) -> None:
        """Remove what taking the directory created (the lock file, new directories), then release."""
        if self._fd is not None and self._created_lock:
            (self.path / LOCK_NAME).unlink(missing_ok=True)
        self._release()
        for directory in self._created_dirs:  # innermost first
            try:
                directory.rmdir()
            except OSError:
                break  # not empty (another process put something there) or gone

    # -- checks ------------------------------------------------------------------------
    def _remove_stale_temp_files(self) -> None:
        for entry in self.path.iterdir():
            if _TEMP.match(entry.name) and entry.is_file():
                entry.unlink(missing_ok=True)
                self.removed.append(entry.name)

    def _check_fresh(self) -> None:
        names = {entry.name for entry in self.path.iterdir()} - {LOCK_NAME}
        if not names:
            return
        if self.overwrite:
            self._to_remove = sorted(n for n in names if _is_run_file(n) and (self.path / n).is_file())
            return
        if CHECKPOINT_JSON in names:
            raise FileExistsError(f"{self.path} already holds a checkpoint; pass --resume to continue it, "
                                  "--overwrite to start over, or choose another --out")
        interrupted = not self._created_lock and all(
            n in INTERRUPTED_RUN_FILES or NPZ_PATTERN.match(n) for n in names)
        if interrupted:
            # An earlier run of ours stopped before its first checkpoint: nothing to resume.
            self._to_remove = sorted(names)
            return
        finished = "summary.json" in names
        raise FileExistsError(f"{self.path} is not empty: it holds {_listing(names)}"
                              + (" (the results of a finished run)" if finished else "")
                              + "; a fresh run starts only in a new or empty directory: choose another --out, "
                              "or pass --overwrite to replace the files a run writes (any other file is left "
                              "alone)")

    def check_writable(self, paths=()) -> None:
        """Fail now, naming the file, if the directory or one of ``paths`` cannot be written:
        a file is created, written, synced and removed in the directory, and each existing
        file of ``paths`` is opened for appending."""
        probe = None
        try:
            # Named like a temporary file of summary.json, so a kill here leaves nothing that
            # the next run would not remove.
            fd, probe = tempfile.mkstemp(prefix=".summary.json.", suffix=TEMP_SUFFIX, dir=self.path)
            with os.fdopen(fd, "wb") as fh:
                fh.write(b"probe")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise write_error(exc, self.path, "write into") from exc
        finally:
            if probe is not None:
                Path(probe).unlink(missing_ok=True)
        for path in paths:
            path = Path(path)
            if path.exists():
                try:
                    with open(path, "ab"):
                        pass
                except OSError as exc:
                    raise write_error(exc, path, "append to") from exc


def _read_holder(fd: int, wait: float = 1.0) -> str:
    """``pid …, host …, started …`` from a lock file's content. The holder writes it right after
    taking the lock, so an empty or partial content is read again for up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
            return f"pid {info['pid']} on host {info['host']}, started {info['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            if time.monotonic() > deadline:
                return "its pid is not recorded in the lock file"
            time.sleep(0.01)
