"""Files of a run directory: atomic writes, JSON and JSON-lines records.

Records are plain dicts. :func:`to_jsonable` turns NumPy scalars and arrays, tuples and
objects with a ``to_dict()`` (such as the integrators' ``StepReport``) into JSON types.
Non-finite floats become ``None``: strict JSON has no NaN/Infinity and tools such as ``jq``
reject them; the only place that produces them (a diverging loss) says so in its message.

Every whole-file write goes through :func:`write_atomic` (temporary file in the same
directory, ``fsync``, ``os.replace``), so a reader never sees half a file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np


def write_atomic(path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically (temporary file beside it, fsync, ``os.replace``)."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    finally:
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
    """Append ``record`` as one line to ``path`` (created if missing)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(dumps(record) + "\n")


def read_jsonl(path) -> list[dict]:
    """All records of a JSON-lines file (``[]`` if it does not exist).

    Text after the last newline is an append cut short by an interruption and is ignored;
    any other malformed line raises ``ValueError`` naming the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n")[:-1], start=1):
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
