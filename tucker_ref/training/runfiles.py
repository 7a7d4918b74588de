"""Files of a run directory: atomic writes, JSON and JSON-lines records.

Records are plain dicts. :func:`to_jsonable` turns NumPy scalars and arrays, tuples and
objects with a ``to_dict()`` (such as the integrators' ``StepReport``) into JSON types.
Non-finite floats become ``None``: strict JSON has no NaN/Infinity and tools such as ``jq``
reject them; the only place that produces them (a diverging loss) says so in its message.

Every whole-file write goes through :func:`write_atomic` (temporary file in the same
directory, ``fsync``, ``os.replace``), so a reader never sees half a file; the JSON files,
checkpoints and the PNG plots of a run all do. The temporary file is named
``.<name>.<random>.tmp`` (:func:`temp_file_pattern`); an interruption between its creation
and the ``os.replace`` can leave it behind, and the next run that takes the directory removes
it. A failed write raises an ``OSError`` that names the file and says what to do (for
example, a full disk).
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import tempfile
from pathlib import Path

import numpy as np

#: Suffix of the temporary files of :func:`write_atomic`.
TEMP_SUFFIX = ".tmp"

_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space, then continue the run with --resume",
    errno.EDQUOT: "the disk quota is exhausted: free some space, then continue the run with --resume",
    errno.EACCES: "the directory is not writable: fix its permissions or choose another --out",
    errno.EPERM: "the directory is not writable: fix its permissions or choose another --out",
    errno.EROFS: "the file system is read-only: choose another --out",
}


def write_error(exc: OSError, path, action: str = "write") -> OSError:
    """An ``OSError`` of the same type and errno as ``exc`` whose message names ``path`` and,
    for the usual causes (full disk, no permission, read-only file system), what to do."""
    reason = exc.strerror or str(exc)
    advice = _ADVICE.get(exc.errno)
    message = f"cannot {action} {path}: {reason}" + (f"; {advice}" if advice else "")
    named = type(exc)(exc.errno, message) if exc.errno is not None else type(exc)(message)
    named.filename = os.fspath(path)
    return named


def temp_file_pattern(name: str) -> re.Pattern:
    """The names :func:`write_atomic` gives its temporary files for a target named ``name``
    (a regular expression; ``name`` itself may be a regular expression)."""
    return re.compile(rf"^\.{name}\.[A-Za-z0-9_]+{re.escape(TEMP_SUFFIX)}$")


def write_atomic(path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically (temporary file beside it, fsync, ``os.replace``).

    Raises ``OSError`` naming ``path`` (see :func:`write_error`); ``path`` is then unchanged
    and the temporary file removed.
    """
    path = Path(path)
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except OSError as exc:
        raise write_error(exc, path) from exc
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)


def to_jsonable(value):
    """Recursively convert ``value`` to JSON types (dict keys become ``str``)."""
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return to_jsonable(value.to_dict())
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"value of type {type(value).__name__} is not JSON-serialisable: {value!r}")


def dumps(record) -> str:
    """One compact, strict JSON line for ``record``."""
    return json.dumps(to_jsonable(record), allow_nan=False, separators=(",", ":"))


def write_json(path, record) -> None:
    """Write ``record`` as indented strict JSON to ``path``, atomically."""
    write_atomic(path, (json.dumps(to_jsonable(record), indent=2, allow_nan=False) + "\n").encode())


def append_jsonl(path, record) -> None:
    """Append ``record`` as one line to ``path`` (created if missing); ``OSError`` names ``path``."""
    line = dumps(record) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line)
    except OSError as exc:
        raise write_error(exc, path, "append to") from exc


def read_jsonl(path) -> list[dict]:
    """All records of a JSON-lines file (``[]`` if it does not exist).

    Text after the last newline is an append cut short by an interruption and is ignored;
    any other malformed line (or bytes that are not UTF-8) raises ``ValueError`` naming the
    file and the line.
    """
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for number, raw in enumerate(path.read_bytes().split(b"\n")[:-1], start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: line {number} is not UTF-8 text ({exc})") from None
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: line {number} is not valid JSON ({exc})") from None
    return records


def keep_jsonl(path, keep) -> None:
    """Rewrite ``path`` (atomically) with only the records for which ``keep(record)`` is true.

    Used by ``--resume``: lines that the interrupted run logged after its last checkpoint are
    dropped, so that the resumed run's files equal those of an uninterrupted run.
    """
    path = Path(path)
    if path.is_file():
        write_atomic(path, "".join(dumps(r) + "\n" for r in read_jsonl(path) if keep(r)).encode())
