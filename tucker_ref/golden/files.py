"""The on-disk golden set: manifest schema, npz and JSON reading and writing (docs/crosscheck.md §2).

A golden set is a directory with one ``.npz`` file per case and a JSON manifest
(:data:`MANIFEST_NAME`, fields in :data:`MANIFEST_FIELDS`). Each npz holds the case's input
arrays under ``input/<name>`` and the outputs tucker_ref computed from them under
``output/<name>``; non-array settings (stride, learning rate, ``tau``) are the case's ``params``
in the manifest. The canonical set ships in ``tucker_ref/golden_data`` (:func:`default_golden_dir`).

Reading validates everything it returns: the manifest's schema and version, every entry's
fields and types, its tolerances (bounds of :mod:`.compare`), the npz file's SHA-256, and each
array's presence, shape and dtype; anything else raises :class:`GoldenError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from importlib import resources
from pathlib import Path

import numpy as np

from .. import __version__
from .compare import COMPARISONS, MAX_ATOL, MAX_RTOL, Tolerance

__all__ = [
    "MANIFEST_FIELDS",
    "MANIFEST_NAME",
    "SCHEMA",
    "SCHEMA_VERSION",
    "GoldenError",
    "check_entry",
    "default_golden_dir",
    "entry_name",
    "file_sha256",
    "load_case",
    "load_manifest",
    "read_case",
    "tolerances",
    "write_case",
    "write_manifest",
]

#: Identifies a tucker_ref golden manifest (its ``schema`` field).
SCHEMA = "tucker_ref.golden"
#: Version of the manifest layout; :func:`~tucker_ref.golden.command.check_golden` rejects any other version.
SCHEMA_VERSION = 1
#: File name of the manifest inside a golden directory.
MANIFEST_NAME = "manifest.json"

#: The manifest's fields (schema version 1). ``inputs``/``outputs`` map an array name to its
#: description; an npz key is ``input/<name>`` or ``output/<name>``.
MANIFEST_FIELDS = {
    "schema": f"always {SCHEMA!r}",
    "schema_version": "int, the layout version (this module reads exactly SCHEMA_VERSION)",
    "tucker_ref_version": "version of tucker_ref that wrote the set",
    "numpy_version": "version of numpy that wrote the set (information only)",
    "conventions": "dict: the unfolding order, mode numbering and tucker_ref's sign conventions",
    "comparisons": "dict: the meaning of each comparison kind",
    "cases": "list of cases, each with the fields below",
    "cases[].name": "unique case name; the npz file is <name>.npz",
    "cases[].kind": "which computation the case exercises (unfold_fold, mode_products, hosvd, "
                    "tangent_projection, conv2d, tucker_conv2d, tdlrt_step)",
    "cases[].description": "what the case computes, in formulas",
    "cases[].file": "npz file name, relative to the manifest",
    "cases[].sha256": "hex SHA-256 of the npz file's bytes",
    "cases[].seed": "seed of numpy.random.default_rng that drew the inputs",
    "cases[].params": "dict of non-array settings (JSON numbers, lists, booleans)",
    "cases[].inputs": "{name: {shape: list of int, dtype: str}}",
    "cases[].outputs": "{name: {shape, dtype, rtol, atol, comparison, description}}",
}

_CONVENTIONS = {
    "unfolding": "Mat_i(X) = moveaxis(X, i, 0).reshape(n_i, -1) (C order: remaining modes increasing, "
                 "last fastest); Mat_i(C x_j U_j) = U_i Mat_i(C) (U_1 kron ... U_{i-1} kron U_{i+1} ... U_d)^T",
    "modes": "numbered from 0; conv kernels are (out, in, kh, kw), inputs (N, C, H, W) as in PyTorch",
    "mode_product": "X x_i M with M of shape (J, n_i): Mat_i(X x_i M) = M Mat_i(X)",
    "signs": "tucker_ref flips each left singular vector so its largest-magnitude entry is positive, takes "
             "QR with diag(R) >= 0, and augments U first (U_hat = [U, V]); golden outputs do not depend on "
             "these choices (projectors and dense tensors only)",
    "conv": "cross-correlation with zero padding, PyTorch's conv2d semantics (stride, padding, dilation)",
}


class GoldenError(ValueError):
    """A golden set or case that cannot be used: bad manifest, unknown schema version, an
    altered or missing file, an unknown case, or a case whose data are not well posed."""


def default_golden_dir() -> Path:
    """Directory of the canonical golden set shipped with the package (``tucker_ref/golden_data``)."""
    return Path(str(resources.files("tucker_ref") / "golden_data"))


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (the manifest's ``sha256`` of an npz file)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------
def _json_value(value):
    if isinstance(value, (tuple, list)):
        return [_json_value(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    return float(value)


def write_case(directory: Path, spec, arrays: dict, params: dict, outputs: dict) -> dict:
    """Save one case as ``<spec.name>.npz`` in ``directory`` and return its manifest entry.

    ``spec`` is a :class:`~tucker_ref.golden.cases.CaseSpec`, ``arrays`` its inputs (saved as
    float64), ``params`` its non-array settings, ``outputs`` the
    :class:`~tucker_ref.golden.cases.Output` of each computed output.
    """
    path = directory / f"{spec.name}.npz"
    np.savez(path, **{f"input/{k}": np.asarray(v, dtype=np.float64) for k, v in arrays.items()},
             **{f"output/{k}": o.value for k, o in outputs.items()})
    return {
        "name": spec.name,
        "kind": spec.kind,
        "description": spec.description,
        "file": path.name,
        "sha256": file_sha256(path),
        "seed": spec.seed,
        "params": {k: _json_value(v) for k, v in params.items()},
        "inputs": {k: {"shape": list(np.shape(v)), "dtype": "float64"} for k, v in arrays.items()},
        "outputs": {k: {"shape": list(o.value.shape), "dtype": str(o.value.dtype), "rtol": o.tolerance.rtol,
                        "atol": o.tolerance.atol, "comparison": o.tolerance.comparison,
                        "description": o.description}
                    for k, o in outputs.items()},
    }


def write_manifest(directory: Path, cases: list) -> dict:
    """Write the manifest listing the entries ``cases`` (from :func:`write_case`) and return it."""
    manifest = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "tucker_ref_version": __version__,
        "numpy_version": np.__version__,
        "conventions": _CONVENTIONS,
        "comparisons": COMPARISONS,
        "cases": cases,
    }
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
    return manifest


# ---------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------
def load_manifest(directory=None) -> dict:
    """Read and validate the manifest of a golden set (default: the shipped set).

    Raises
    ------
    FileNotFoundError
        No manifest in ``directory``.
    GoldenError
        Not a tucker_ref golden manifest, or a ``schema_version`` other than :data:`SCHEMA_VERSION`.
    """
    directory = default_golden_dir() if directory is None else Path(directory)
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no golden manifest (is {directory} a golden directory? write one with "
                                "`tucker-ref golden write DIR`)")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise GoldenError(f"{path} is not UTF-8 text ({exc}); the manifest is damaged: restore it or write the set "
                          "again") from None
    except json.JSONDecodeError as exc:
        raise GoldenError(f"{path} is not valid JSON: {exc}; the manifest is damaged: restore it or write the set "
                          "again") from None
    except OSError as exc:
        raise GoldenError(f"{path} cannot be read: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise GoldenError(f"{path} is not a tucker_ref golden manifest (expected schema {SCHEMA!r})")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise GoldenError(f"{path} has schema_version {version!r}; this tucker_ref ({__version__}) reads "
                          f"schema_version {SCHEMA_VERSION} only")
    if not isinstance(manifest.get("cases"), list):
        raise GoldenError(f"{path} has no list of cases")
    return manifest


def _find_case(manifest: dict, name: str) -> dict:
    cases = [c for c in manifest["cases"] if isinstance(c, dict)]
    for case in cases:
        if case.get("name") == name:
            return case
    raise GoldenError(f"no case named {name!r}; the set has {[c.get('name') for c in cases]}")


def entry_name(case, index: int) -> str:
    """The name of a manifest entry for reports (``cases[i]`` when it has none)."""
    name = case.get("name") if isinstance(case, dict) else None
    return name if isinstance(name, str) and name else f"cases[{index}]"


def check_entry(case, index: int) -> None:
    """Raise :class:`GoldenError` unless manifest entry ``index`` has every field with its type."""
    where = f"manifest entry cases[{index}]"
    if not isinstance(case, dict):
        raise GoldenError(f"{where} is a JSON {type(case).__name__}, not an object")
    kinds = {"name": str, "kind": str, "file": str, "sha256": str, "params": dict, "inputs": dict, "outputs": dict}
    for key, kind in kinds.items():
        if not isinstance(case.get(key), kind):
            raise GoldenError(f"{where} ({case.get('name', '?')}): field {key!r} must be a "
                              f"{'string' if kind is str else 'JSON object'}, got {case.get(key)!r}")
    if Path(case["file"]).name != case["file"] or not case["file"].endswith(".npz"):
        raise GoldenError(f"{where}: file must be a plain .npz file name beside the manifest, got {case['file']!r}")
    for group in ("inputs", "outputs"):
        for key, meta in case[group].items():
            shape = meta.get("shape") if isinstance(meta, dict) else None
            if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape) \
                    or not isinstance(meta.get("dtype"), str):
                raise GoldenError(f"{where}: {group}[{key!r}] must be an object with a shape (list of integers) "
                                  f"and a dtype, got {meta!r}")
    tolerances(case)


def _tolerance(key: str, meta: dict) -> Tolerance:
    """The :class:`~tucker_ref.golden.compare.Tolerance` of one output entry, checked against
    :data:`~tucker_ref.golden.compare.MAX_RTOL` / :data:`~tucker_ref.golden.compare.MAX_ATOL`."""
    comparison = meta.get("comparison")
    if comparison not in COMPARISONS:
        raise GoldenError(f"output {key}: comparison {comparison!r} is not one of {sorted(COMPARISONS)}")
    values = {}
    for name, bound in (("rtol", MAX_RTOL), ("atol", MAX_ATOL)):
        value = meta.get(name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
                or not 0 <= value <= bound:
            raise GoldenError(f"output {key}: {name} must be a finite number in [0, {bound:g}], got {value!r}")
        values[name] = float(value)
    if comparison == "exact" and (values["rtol"] or values["atol"]):
        raise GoldenError(f"output {key}: an exact comparison has rtol = atol = 0, got {values}")
    return Tolerance(values["rtol"], values["atol"], comparison)


def tolerances(case: dict) -> dict:
    """Per output of a manifest entry, its validated :class:`~tucker_ref.golden.compare.Tolerance`."""
    return {k: _tolerance(k, v if isinstance(v, dict) else {}) for k, v in case["outputs"].items()}


def read_case(directory: Path, case: dict, verify: bool = True):
    """``(inputs with params, outputs)`` of a manifest entry, after checking file, hash, keys and shapes."""
    path = directory / case["file"]
    if not path.is_file():
        raise GoldenError(f"missing file {path}")
    digest = file_sha256(path) if verify else case["sha256"]
    if digest != case["sha256"]:
        raise GoldenError(f"sha256 mismatch for {path.name}: the file was altered "
                          f"(manifest {case['sha256'][:12]}…, file {digest[:12]}…)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except Exception as exc:  # noqa: BLE001 - BadZipFile, EOFError, ValueError, zlib.error, ...
        raise GoldenError(f"{path.name} cannot be read as an npz file ({type(exc).__name__}: {exc}); "
                          "restore it or write the set again") from None
    inputs, outputs = {}, {}
    for group, spec, target in (("input", case["inputs"], inputs), ("output", case["outputs"], outputs)):
        for key, meta in spec.items():
            value = arrays.get(f"{group}/{key}")
            if value is None:
                raise GoldenError(f"{path.name} has no array {group}/{key}")
            if list(value.shape) != list(meta["shape"]) or str(value.dtype) != meta["dtype"]:
                raise GoldenError(f"{path.name}: {group}/{key} is {value.dtype}{list(value.shape)}, the manifest "
                                  f"says {meta['dtype']}{meta['shape']}")
            target[key] = value
    inputs.update(case.get("params", {}))
    return inputs, outputs


def load_case(directory, name: str, *, verify: bool = True):
    """Load one golden case for checking an implementation against it.

    Parameters
    ----------
    directory : path or None
        The golden set (``None``: the shipped one, :func:`default_golden_dir`).
    name : str
        A case name (see the manifest or :func:`~tucker_ref.golden.cases.case_names`).
    verify : bool
        Check the npz file's SHA-256 against the manifest (default); shapes and dtypes are
        always checked.

    Returns
    -------
    inputs : dict
        Input arrays (float64 ndarrays) and the case's params (JSON values: ints, floats,
        lists, booleans) under their names, e.g. ``inputs["x"]``, ``inputs["stride"]``.
    outputs : dict
        Expected outputs (ndarrays; 0-d for scalars, int64 for ranks).
    tolerances : dict
        Per output, a :class:`~tucker_ref.golden.compare.Tolerance` for
        :func:`~tucker_ref.golden.compare.compare_case`.

    Raises
    ------
    GoldenError
        Unknown case, missing or altered file, or arrays that do not match the manifest.
    """
    directory = default_golden_dir() if directory is None else Path(directory)
    manifest = load_manifest(directory)
    case = _find_case(manifest, name)
    check_entry(case, manifest["cases"].index(case))
    inputs, outputs = read_case(directory, case, verify)
    return inputs, outputs, tolerances(case)
