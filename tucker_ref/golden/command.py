"""Whole golden sets: :func:`write_golden`, :func:`check_golden`, and ``tucker-ref golden`` (:func:`run_command`).

Faults (:func:`check_golden`): each case fails on its own (a missing, altered, truncated or
unreadable npz, a manifest entry that is not an object or lacks a field, a bad tolerance, a
duplicate name, an error while recomputing) with the reason in its ``problems``; every case of
:func:`~tucker_ref.golden.cases.case_names` that the manifest does not list fails as missing, so
a cut manifest does not pass; a manifest that cannot be read at all (not UTF-8, not JSON, wrong
schema) raises one :class:`~tucker_ref.golden.files.GoldenError` naming the file.
``tucker-ref golden check`` prints the report to stdout and every error to stderr.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from .cases import CASES, case_names, compute_case
from .compare import CaseResult, compare_case
from .files import (MANIFEST_NAME, GoldenError, check_entry, default_golden_dir, entry_name, load_manifest, read_case,
                    tolerances, write_case, write_manifest)

__all__ = ["check_golden", "run_command", "write_golden"]


def write_golden(directory) -> dict:
    """Write the canonical golden set into ``directory`` (created if needed) and return its manifest.

    For each case: inputs drawn by ``numpy.random.default_rng(seed)``, outputs computed with
    this tucker_ref (float64), both saved in ``<name>.npz``; the manifest (schema
    :data:`~tucker_ref.golden.files.SCHEMA_VERSION`, fields
    :data:`~tucker_ref.golden.files.MANIFEST_FIELDS`) records shapes, dtypes, tolerances,
    params, the seed and the file's SHA-256. Existing files of the same names are overwritten.

    Raises
    ------
    GoldenError
        If a case's data are not well posed (:mod:`~tucker_ref.golden.wellposed`); the manifest
        is then not written, so a set with a fragile case cannot be checked.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cases = []
    for spec in CASES:
        arrays, params = spec.make(np.random.default_rng(spec.seed))
        clash = set(arrays) & set(params)
        if clash:
            raise GoldenError(f"case {spec.name}: params {sorted(clash)} collide with input array names")
        outputs = compute_case(spec.kind, {**arrays, **params}, spec.name)
        cases.append(write_case(directory, spec, arrays, params, outputs))
    return write_manifest(directory, cases)


def check_golden(directory=None) -> list[CaseResult]:
    """Recompute every case of a golden set with the installed tucker_ref and compare.

    Parameters
    ----------
    directory : path or None — the set (default: the shipped one)

    Returns
    -------
    list of CaseResult, one per manifest entry, then one per case of
    :func:`~tucker_ref.golden.cases.case_names` that the manifest lacks. A manifest entry that is
    not an object or lacks a field, a bad tolerance, a duplicate name, a missing, altered or
    unreadable file, arrays that do not match the manifest, an unknown kind or any error while
    recomputing fail that case (with the reason in ``problems``) without stopping the others; a
    case missing from the manifest fails as such.

    Raises
    ------
    FileNotFoundError, GoldenError
        No manifest, or one that cannot be read (not UTF-8 or JSON, wrong schema or schema
        version).
    """
    directory = default_golden_dir() if directory is None else Path(directory)
    manifest = load_manifest(directory)
    results = []
    seen = set()
    for index, case in enumerate(manifest["cases"]):
        name = entry_name(case, index)
        duplicate = name in seen
        seen.add(name)
        try:
            if duplicate:
                raise GoldenError(f"a second manifest entry named {name!r} (cases[{index}])")
            check_entry(case, index)
            inputs, expected = read_case(directory, case)
            computed = compute_case(case["kind"], inputs, name)
            results.append(compare_case({k: o.value for k, o in computed.items()}, expected, tolerances(case),
                                        name=name))
        except Exception as exc:  # noqa: BLE001 - one case's failure, whatever it is, fails that case only
            results.append(CaseResult(name=name, ok=False, max_rel_error=math.inf,
                                      problems=[f"{type(exc).__name__}: {exc}"]))
    for name in case_names():
        if name not in seen:
            results.append(CaseResult(name=name, ok=False, max_rel_error=math.inf,
                                      problems=[f"missing from the manifest {directory / MANIFEST_NAME} (a set "
                                                "written by `tucker-ref golden write` has every case)"]))
    return results


def run_command(action: str, directory=None, out=None, err=None) -> int:
    """``tucker-ref golden write DIR`` / ``check [DIR]``: print a report, return the exit code.

    ``write`` prints one line per written case (exit 1 if the directory cannot be written or a
    case is not well posed); ``check`` one line per case (name, max relative
    error, ``ok``/``FAIL``) and a summary, and returns 1 if any case failed or the set could not be
    read (missing or unreadable manifest, unknown schema version), else 0. The report goes to
    ``out`` (default stdout); errors, one line per problem of each failed case, go to ``err``
    (default stderr).
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    if action == "write":
        if directory is None:
            raise ValueError("directory is required for 'write'")
        try:
            manifest = write_golden(directory)
        except (OSError, GoldenError) as exc:
            print(f"golden write: error: {exc}", file=err)
            return 1
        for case in manifest["cases"]:
            print(f"wrote {case['file']:<36} {len(case['outputs']):3d} outputs  sha256 {case['sha256'][:12]}", file=out)
        print(f"{len(manifest['cases'])} cases, manifest {Path(directory) / MANIFEST_NAME}", file=out)
        return 0
    if action != "check":
        raise ValueError(f"action must be 'write' or 'check', got {action!r}")
    try:
        results = check_golden(directory)
    except (OSError, GoldenError) as exc:
        print(f"golden check: error: {exc}", file=err)
        return 1
    for result in results:
        print(result.line(), file=out)
        for problem in result.problems:
            print(f"golden check: {result.name}: {problem}", file=err)
    failed = [r.name for r in results if not r.ok]
    print(f"{len(results)} cases, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""), file=out)
    return 1 if failed or not results else 0
