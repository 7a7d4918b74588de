"""Atomic training checkpoints: one ``.npz`` of arrays plus one ``checkpoint.json``.

Layout of a run directory's checkpoint (both written by :func:`save_checkpoint`)::

    checkpoint-<step>.npz   every array: parameters (a Tucker layer's core and factors at its
                            current ranks), optimizer state (velocities)
    checkpoint.json         everything else: epoch, step, RNG state, running sums, the run's
                            arguments, the name and SHA-256 of the npz it belongs to

The ``.json`` file is the commit point. The ``.npz`` is written first under a temporary name
and moved into place with ``os.replace``; only then is ``checkpoint.json`` replaced the same
way, and only after that are older ``.npz`` files removed. An interruption at any moment
therefore leaves either the previous checkpoint or the new one, complete, never a mixture
(``os.replace`` is atomic within one file system). :func:`load_checkpoint` verifies the
SHA-256 before trusting the arrays.

NumPy random generators are checkpointed through ``Generator.bit_generator.state``, a dict of
Python ints and strings that JSON stores exactly (Python's ``json`` has arbitrary-precision
integers; the 128-bit PCG64 state survives the round trip).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np

from .runfiles import to_jsonable, write_atomic

#: Name of the commit file inside a run directory.
CHECKPOINT_JSON = "checkpoint.json"
_NPZ_PATTERN = re.compile(r"^checkpoint-\d+\.npz$")
#: Bumped whenever the layout of the checkpoint changes incompatibly.
FORMAT_VERSION = 1


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(directory, arrays: dict, meta: dict) -> Path:
    """Write a checkpoint atomically and return the path of ``checkpoint.json``.

    Parameters
    ----------
    directory : path-like, existing directory
    arrays : dict ``str -> ndarray``
        Saved bit for bit (``np.savez``, no pickling); keys may contain ``.`` and ``/``.
    meta : dict
        JSON-serialisable after :func:`~tucker_ref.training.runfiles.to_jsonable`; must hold
        an integer ``"step"`` (it names the ``.npz``). Keys ``format``, ``arrays_file`` and
        ``arrays_sha256`` are reserved.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"directory {directory} does not exist; create the run directory first")
    step = meta.get("step")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"meta['step'] must be a non-negative integer, got {step!r}")
    reserved = {"format", "arrays_file", "arrays_sha256"} & set(meta)
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
    target = directory / CHECKPOINT_JSON
    write_atomic(target, json.dumps(record, indent=1, allow_nan=False).encode())
    for stale in directory.iterdir():
        if _NPZ_PATTERN.match(stale.name) and stale.name != npz.name:
            stale.unlink(missing_ok=True)
    return target


def has_checkpoint(directory) -> bool:
    """Whether ``directory`` holds a committed checkpoint (a ``checkpoint.json``)."""
    return (Path(directory) / CHECKPOINT_JSON).is_file()


def load_checkpoint(directory) -> tuple[dict, dict]:
    """Read the committed checkpoint of ``directory``: ``(arrays, meta)``.

    Raises ``FileNotFoundError`` when there is none, ``ValueError`` when the ``.npz`` does
    not match the SHA-256 recorded in ``checkpoint.json`` or the format is unknown.
    """
    directory = Path(directory)
    path = directory / CHECKPOINT_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from (train without --resume first)")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {meta.get('format')!r}, this version reads {FORMAT_VERSION}")
    npz = directory / meta.pop("arrays_file")
    expected = meta.pop("arrays_sha256")
    meta.pop("format")
    if not npz.is_file():
        raise FileNotFoundError(f"{npz}: array file named by {path} is missing")
    if _sha256(npz) != expected:
        raise ValueError(f"{npz}: SHA-256 does not match {path}; the checkpoint is corrupt")
    with np.load(npz, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    return arrays, meta


def rng_state(rng: np.random.Generator) -> dict:
    """The JSON-storable state of a generator (``bit_generator.state``)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng.bit_generator.state


def restore_rng(state: dict) -> np.random.Generator:
    """A generator continuing exactly where the one whose :func:`rng_state` was saved stopped."""
    if not isinstance(state, dict) or "bit_generator" not in state:
        raise ValueError(f"state must be a dict from Generator.bit_generator.state, got {state!r}")
    name = state["bit_generator"]
    bit_generator_cls = getattr(np.random, name, None)
    if bit_generator_cls is None or not isinstance(bit_generator_cls, type) \
            or not issubclass(bit_generator_cls, np.random.BitGenerator):
        raise ValueError(f"state names an unknown bit generator {name!r}")
    bit_generator = bit_generator_cls()
    bit_generator.state = state
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
