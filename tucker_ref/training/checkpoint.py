"""Atomic, validated training checkpoints: one ``.npz`` of arrays plus one ``checkpoint.json``.

Layout of a run directory's checkpoint (both written by :func:`save_checkpoint`)::

    checkpoint-<step>.npz   every array: parameters (a Tucker layer's core and factors at its
                            current ranks), optimizer state (velocities, Adam moments)
    checkpoint.json         everything else: epoch, step, RNG state, running sums, the run's
                            arguments, the data fingerprint, the name and SHA-256 of the npz it
                            belongs to, and a checksum over all of it

The ``.json`` file is the commit point. The ``.npz`` is written first under a temporary name
and moved into place with ``os.replace``; only then is ``checkpoint.json`` replaced the same
way, and only after that are older ``.npz`` files removed. An interruption at any moment
therefore leaves either the previous checkpoint or the new one, complete, never a mixture
(``os.replace`` is atomic within one file system).

Validation (:func:`load_checkpoint`): ``checkpoint.json`` must be UTF-8 JSON holding an
object; ``format`` must be :data:`FORMAT_VERSION` (or the legacy ``1``); ``arrays_file``
must be a ``checkpoint-<step>.npz`` in the same directory whose SHA-256 equals
``arrays_sha256``; ``checksum`` must equal :func:`content_checksum` of every other field
(so an edit of any value, the RNG state or the step included, is detected; since
``arrays_sha256`` is one of those fields, the checksum covers the arrays too). Every failure
raises :class:`CheckpointError` naming the file, saying what is wrong and what to do. The
caller checks its own fields with :func:`check_fields` (the trainer's schema is
:data:`~tucker_ref.training.runstate.CHECKPOINT_FIELDS`).

Format 1 (written before checksums existed) is still read: its ``arrays_sha256`` is checked,
its other fields are covered by no checksum.

NumPy random generators are checkpointed through ``Generator.bit_generator.state``, a dict of
Python ints and strings that JSON stores exactly (Python's ``json`` has arbitrary-precision
integers; the 128-bit PCG64 state survives the round trip).
"""

from __future__ import annotations

import hashlib
import io
import json
import numbers
import re
from pathlib import Path

import numpy as np

from ..checks import check_rng
from .runfiles import to_jsonable, write_atomic

#: Name of the commit file inside a run directory.
CHECKPOINT_JSON = "checkpoint.json"
#: Names of the array files (``checkpoint-<step>.npz``, the step zero-padded to 9 digits).
NPZ_PATTERN = re.compile(r"^checkpoint-\d+\.npz$")
#: Layout version written by :func:`save_checkpoint`; bumped whenever the layout changes
#: incompatibly (2: ``checksum`` over the content).
FORMAT_VERSION = 2
#: Older layouts :func:`load_checkpoint` still reads.
LEGACY_FORMATS = (1,)
#: Keys of ``checkpoint.json`` that :func:`save_checkpoint` sets itself.
RESERVED_KEYS = ("format", "arrays_file", "arrays_sha256", "checksum")
_REPAIR = ("restore the run directory from a copy, or start the run over with --overwrite (or in another "
           "--out)")


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted: unreadable, not of the schema, altered, or not
    matching its array file. The message names the file and what to do."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_checksum(record: dict) -> str:
    """SHA-256 of the canonical JSON of ``record`` without its ``checksum`` key (sorted keys,
    compact separators): the same for a record and its JSON round trip."""
    body = {k: v for k, v in record.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def save_checkpoint(directory, arrays: dict, meta: dict) -> Path:
    """Write a checkpoint atomically and return the path of ``checkpoint.json``.

    Parameters
    ----------
    directory : path-like, existing directory
    arrays : dict ``str -> ndarray``
        Saved bit for bit (``np.savez``, no pickling); keys may contain ``.`` and ``/``.
    meta : dict
        JSON-serialisable after :func:`~tucker_ref.training.runfiles.to_jsonable`; must hold
        an integer ``"step"`` (it names the ``.npz``). :data:`RESERVED_KEYS` are set here.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"directory {directory} does not exist; create the run directory first")
    step = meta.get("step")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"meta['step'] must be a non-negative integer, got {step!r}")
    reserved = set(RESERVED_KEYS) & set(meta)
    if reserved:
        raise ValueError(f"meta must not set the reserved keys {sorted(reserved)}")
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray) or value.dtype == object:
            raise TypeError(f"arrays[{key!r}] must be a numeric ndarray, got {type(value).__name__}")

    npz = directory / f"checkpoint-{int(step):09d}.npz"
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(npz, buffer.getvalue())
    record = {"format": FORMAT_VERSION, "arrays_file": npz.name, "arrays_sha256": _sha256(npz),
              **to_jsonable(meta)}
    record["checksum"] = content_checksum(record)
    target = directory / CHECKPOINT_JSON
    write_atomic(target, json.dumps(record, indent=1, allow_nan=False).encode())
    for stale in directory.iterdir():
        if NPZ_PATTERN.match(stale.name) and stale.name != npz.name:
            stale.unlink(missing_ok=True)
    return target


def has_checkpoint(directory) -> bool:
    """Whether ``directory`` holds a committed checkpoint (a ``checkpoint.json``)."""
    return (Path(directory) / CHECKPOINT_JSON).is_file()


def read_checkpoint_json(path) -> dict:
    """The validated record of one ``checkpoint.json`` (reserved keys included).

    Checks the encoding, the JSON syntax, that it is an object, the format, the types of the
    reserved keys and (format 2) the content checksum; raises :class:`CheckpointError`.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
        record = json.loads(text)
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{path}: not UTF-8 text ({exc}); the file is damaged: {_REPAIR}") from None
    except json.JSONDecodeError as exc:
        what = "empty" if not text.strip() else f"not valid JSON ({exc})"
        raise CheckpointError(f"{path}: {what}; the file is damaged or was cut short: {_REPAIR}") from None
    if not isinstance(record, dict):
        raise CheckpointError(f"{path}: holds a JSON {type(record).__name__}, a checkpoint is a JSON object; "
                              f"{_REPAIR}")
    version = record.get("format")
    if version != FORMAT_VERSION and version not in LEGACY_FORMATS:
        raise CheckpointError(f"{path}: checkpoint format {version!r}; this version of tucker_ref reads "
                              f"{', '.join(map(str, (FORMAT_VERSION, *LEGACY_FORMATS)))}; resume it with the "
                              "tucker_ref that wrote it, or start over with --overwrite")
    arrays_file, sha = record.get("arrays_file"), record.get("arrays_sha256")
    if not isinstance(arrays_file, str) or not NPZ_PATTERN.match(arrays_file):
        raise CheckpointError(f"{path}: arrays_file must name a checkpoint-<step>.npz beside it, got "
                              f"{arrays_file!r}; {_REPAIR}")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise CheckpointError(f"{path}: arrays_sha256 must be a 64-digit hex SHA-256, got {sha!r}; {_REPAIR}")
    if version == FORMAT_VERSION:
        checksum = record.get("checksum")
        if not isinstance(checksum, str) or checksum != content_checksum(record):
            raise CheckpointError(f"{path}: checksum mismatch, the file was edited or damaged after it was "
                                  f"written (any changed value, e.g. the step or the RNG state, would resume a "
                                  f"different run); {_REPAIR}")
    return record


def load_checkpoint(directory) -> tuple[dict, dict]:
    """Read the committed checkpoint of ``directory``: ``(arrays, meta)``.

    ``meta`` is the record without :data:`RESERVED_KEYS`. Raises ``FileNotFoundError`` when
    there is no ``checkpoint.json`` or its array file is missing, :class:`CheckpointError`
    (a ``ValueError``) when either file fails the checks of the module docstring.
    """
    directory = Path(directory)
    path = directory / CHECKPOINT_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from (train without --resume first)")
    record = read_checkpoint_json(path)
    npz = directory / record["arrays_file"]
    if not npz.is_file():
        raise FileNotFoundError(f"{npz}: array file named by {path} is missing; {_REPAIR}")
    if _sha256(npz) != record["arrays_sha256"]:
        raise CheckpointError(f"{npz}: SHA-256 does not match {path}; the checkpoint is corrupt: {_REPAIR}")
    try:
        with np.load(npz, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except Exception as exc:  # noqa: BLE001 - any failure to parse the (hash-verified) file
        raise CheckpointError(f"{npz}: cannot be read as an npz file ({type(exc).__name__}: {exc}); "
                              f"{_REPAIR}") from None
    meta = {k: v for k, v in record.items() if k not in RESERVED_KEYS}
    return arrays, meta


def stale_array_files(directory) -> list[Path]:
    """The ``checkpoint-<step>.npz`` files of ``directory`` that its committed ``checkpoint.json``
    does not name: left by a process killed after writing new arrays but before the commit, or
    after the commit but before the older arrays were removed. ``--resume`` removes them."""
    directory = Path(directory)
    committed = read_checkpoint_json(directory / CHECKPOINT_JSON)["arrays_file"]
    return sorted(p for p in directory.iterdir() if NPZ_PATTERN.match(p.name) and p.name != committed)


def check_fields(meta: dict, fields: dict, source) -> None:
    """Check ``meta`` against a schema ``{key: kind}``; raise :class:`CheckpointError` naming
    ``source`` and the first key that is missing or of the wrong kind.

    Kinds: ``"count"`` (an integer ``>= 0``), ``"number"`` (a finite real ``>= 0``),
    ``"object"`` (a JSON object), ``"string"``; a kind ending in ``"?"`` may be absent.
    """
    for key, kind in fields.items():
        optional = kind.endswith("?")
        kind = kind.rstrip("?")
        if key not in meta:
            if optional:
                continue
            raise CheckpointError(f"{source}: lacks the field {key!r}; {_REPAIR}")
        value = meta[key]
        if kind == "count":
            ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0
        elif kind == "number":
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value) \
                and value >= 0
        elif kind == "object":
            ok = isinstance(value, dict)
        elif kind == "string":
            ok = isinstance(value, str)
        else:
            raise ValueError(f"unknown field kind {kind!r}")
        if not ok:
            raise CheckpointError(f"{source}: field {key!r} must be {_KIND_TEXT[kind]}, got {value!r}; {_REPAIR}")


_KIND_TEXT = {"count": "an integer >= 0", "number": "a finite number >= 0", "object": "a JSON object",
              "string": "a string"}


def rng_state(rng: np.random.Generator) -> dict:
    """The JSON-storable state of a generator (``bit_generator.state``)."""
    return check_rng(rng).bit_generator.state


def restore_rng(state: dict) -> np.random.Generator:
    """A generator continuing exactly where the one whose :func:`rng_state` was saved stopped."""
    if not isinstance(state, dict) or "bit_generator" not in state:
        raise ValueError(f"state must be a dict from Generator.bit_generator.state, got {state!r}")
    name = state["bit_generator"]
    bit_generator_cls = getattr(np.random, name, None) if isinstance(name, str) else None
    if bit_generator_cls is None or not isinstance(bit_generator_cls, type) \
            or not issubclass(bit_generator_cls, np.random.BitGenerator):
        raise ValueError(f"state names an unknown bit generator {name!r}")
    bit_generator = bit_generator_cls()
    try:
        bit_generator.state = state
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"state is not a valid {name} state ({type(exc).__name__}: {exc})") from None
    return np.random.Generator(bit_generator)


def model_state(model) -> dict:
    """Every parameter of ``model`` as ``{"param/<layer>.<name>": array}`` (a factorized layer's
    core and factors at their current ranks)."""
    return {f"param/{key}": value for key, value in model.parameters().items()}


def load_model_state(model, arrays: dict) -> None:
    """Put the parameters saved by :func:`model_state` back into a model of the same architecture.

    A factorized layer gets a new :class:`~tucker_ref.tucker.TuckerTensor` with the saved
    core and factors (its ranks may differ from the freshly built model's); dense weights and
    biases are replaced. Missing or surplus entries raise ``ValueError``.
    """
    from ..tucker import TuckerTensor

    expected = set()
    for name, layer in model.named_layers():
        params = layer.parameters()
        if not params:
            continue
        if "core" in params:
            ndim = layer.weight.ndim
            keys = [f"param/{name}.core"] + [f"param/{name}.factors.{i}" for i in range(ndim)]
            _require(arrays, keys)
            layer.weight = TuckerTensor(arrays[keys[0]], [arrays[k] for k in keys[1:]])
            expected.update(keys)
        elif "weight" in params:
            layer.weight = _like(arrays, f"param/{name}.weight", layer.weight)
            expected.add(f"param/{name}.weight")
        if "bias" in params:
            layer.bias = _like(arrays, f"param/{name}.bias", layer.bias)
            expected.add(f"param/{name}.bias")
    surplus = {k for k in arrays if k.startswith("param/")} - expected
    if surplus:
        raise ValueError(f"checkpoint holds parameters the model does not have: {sorted(surplus)}")


def _require(arrays: dict, keys) -> None:
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise ValueError(f"checkpoint lacks the parameters {missing}; was it written for another --method?")


def _like(arrays: dict, key: str, current: np.ndarray) -> np.ndarray:
    """``arrays[key]``, checked to have the shape and dtype of the parameter it replaces."""
    _require(arrays, [key])
    value = arrays[key]
    if value.shape != current.shape or value.dtype != current.dtype:
        raise ValueError(f"checkpoint entry {key} has shape {value.shape} and dtype {value.dtype}, the model "
                         f"expects {current.shape} {current.dtype}")
    return value
