"""Tolerances of golden outputs and the comparison of one case (docs/crosscheck.md §2).

Comparison (per output): ``normwise`` means ``‖actual − expected‖_F ≤ atol + rtol·‖expected‖_F``
(shapes must match); ``exact`` means equal integers (ranks). A manifest's tolerances must be
finite with ``0 ≤ rtol ≤`` :data:`MAX_RTOL` and ``0 ≤ atol ≤`` :data:`MAX_ATOL` (``rtol = atol =
0`` for ``exact``); the manifest reader (:mod:`.files`) fails a case with any other tolerance,
so an edited manifest cannot make garbage pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "COMPARISONS",
    "MAX_ATOL",
    "MAX_RTOL",
    "RTOL_ALGEBRA",
    "RTOL_SPECTRAL",
    "CaseResult",
    "Tolerance",
    "compare_case",
]

#: Comparison kinds of an output.
COMPARISONS = {
    "normwise": "‖actual − expected‖_F ≤ atol + rtol·‖expected‖_F, shapes equal",
    "exact": "integer arrays, equal entry by entry, shapes equal",
}

#: rtol of products and convolutions of O(1) random data: different summation orders (BLAS,
#: PyTorch, JAX) differ by ~sqrt(K)·eps relative for K-term sums, ≤ 1e-14 at these sizes.
RTOL_ALGEBRA = 1e-12
#: rtol of quantities from SVD/QR (projectors, singular values, truncations): perturbation
#: theory bounds their error by ~eps·‖input‖/gap, ≤ ~1e-12 for relative gaps ≥ MIN_RELATIVE_GAP
#: and cores with cond ≤ MAX_CORE_CONDITION; 1e-10 leaves room for other LAPACKs.
RTOL_SPECTRAL = 1e-10
#: Largest ``rtol`` a manifest may give an output: 10^4 × :data:`RTOL_SPECTRAL`, room for any
#: float64 implementation, far below what a wrong one produces.
MAX_RTOL = 1e-6
#: Largest ``atol`` a manifest may give an output (the shipped set's largest is below 1e-7; its
#: arrays are O(1) to O(10^3)).
MAX_ATOL = 1e-6


@dataclass(frozen=True)
class Tolerance:
    """How one output is compared: see :data:`COMPARISONS`."""

    rtol: float
    atol: float
    comparison: str = "normwise"

    def allowed(self, expected: np.ndarray) -> float:
        """``atol + rtol·‖expected‖_F`` (the largest accepted ``‖actual − expected‖_F``)."""
        return self.atol + self.rtol * float(np.linalg.norm(np.ravel(expected)))


@dataclass
class CaseResult:
    """Outcome of comparing one case.

    Attributes
    ----------
    name : str
    ok : bool
        ``True`` iff every compared output is within its tolerance and nothing else failed.
    max_rel_error : float
        Max over the compared outputs of ``‖actual − expected‖_F / ‖expected‖_F`` (the absolute
        error where ``expected`` is zero); ``inf`` when the case could not be compared.
    worst_output : str or None
        The output attaining ``max_rel_error``.
    errors : dict
        Per compared output, its relative error as above.
    problems : list of str
        Why the case failed (empty when ``ok``).
    """

    name: str
    ok: bool
    max_rel_error: float
    worst_output: str | None = None
    errors: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)

    def line(self) -> str:
        """One line: name, max relative error, ``ok`` or ``FAIL`` with the first problem."""
        worst = f" ({self.worst_output})" if self.worst_output and self.max_rel_error > 0 else ""
        status = "ok" if self.ok else "FAIL: " + "; ".join(self.problems)
        return f"{self.name:<32} max rel err {self.max_rel_error:9.2e}{worst:<22} {status}"


def compare_case(actual: Mapping, expected: Mapping, tolerances: Mapping, *, name: str = "",
                 require_all: bool = True) -> CaseResult:
    """Compare an implementation's outputs with a golden case's.

    Parameters
    ----------
    actual : mapping name -> array-like
        Your outputs (anything ``numpy.asarray`` accepts, e.g. ``tensor.detach().numpy()``).
    expected, tolerances : mappings from :func:`~tucker_ref.golden.files.load_case`
    name : str
        Case name for the report.
    require_all : bool
        ``True``: every expected output must be present in ``actual``. ``False``: compare only
        the outputs you computed (at least one; names unknown to the case always fail).

    Returns
    -------
    CaseResult
        ``ok`` iff every compared output has the expected shape and is within its tolerance
        (:data:`COMPARISONS`).
    """
    problems, errors = [], {}
    unknown = sorted(set(actual) - set(expected))
    if unknown:
        problems.append(f"outputs {unknown} are not in the case")
    missing = sorted(set(expected) - set(actual))
    if require_all and missing:
        problems.append(f"missing outputs {missing}")
    keys = [k for k in expected if k in actual]
    if not keys:
        problems.append("no output to compare")
    for key in keys:
        exp = np.asarray(expected[key])
        got = np.asarray(actual[key])
        tol = tolerances[key]
        if got.shape != exp.shape:
            problems.append(f"{key}: shape {got.shape}, expected {exp.shape}")
            errors[key] = math.inf
            continue
        if tol.comparison == "exact":
            diff = float(np.linalg.norm(np.ravel(got.astype(np.float64) - exp.astype(np.float64))))
            passed = bool(np.array_equal(got, exp))
        else:
            diff = float(np.linalg.norm(np.ravel(got.astype(np.float64) - exp)))
            passed = diff <= tol.allowed(exp)  # NaN fails here
        norm = float(np.linalg.norm(np.ravel(exp.astype(np.float64))))
        errors[key] = diff / norm if norm > 0 else diff
        if not passed:
            problems.append(f"{key}: error {diff:.3g} > allowed {tol.allowed(exp):.3g}" if tol.comparison != "exact"
                            else f"{key}: {got.tolist()} != expected {exp.tolist()}")
    worst = max(errors, key=lambda k: (errors[k] if errors[k] == errors[k] else math.inf), default=None)
    max_err = math.inf if (worst is None or errors[worst] != errors[worst]) else errors[worst]
    return CaseResult(name=name, ok=not problems, max_rel_error=max_err, worst_output=worst, errors=errors,
                      problems=problems)
