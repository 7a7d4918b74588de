"""Well-posedness of golden cases, re-verified whenever a case is computed (docs/crosscheck.md §2).

Every core has full-row-rank unfoldings with ``cond(Mat_i(C)) ≤`` :data:`MAX_CORE_CONDITION`
(no rank-deficient cores), subspaces are taken across relative spectral gaps ``≥``
:data:`MIN_RELATIVE_GAP`, and every rank decision ``tail ≤ ϑ`` has every tail at least a factor
:data:`DECISION_MARGIN` away from ``ϑ``: the stored ranks cannot flip under rounding in another
implementation. The thresholds a decision is checked against are the ones
:mod:`tucker_ref.truncation` reports having applied, so the check follows its rule.
"""

from __future__ import annotations

import numpy as np

from ..truncation import tail_norms
from ..tucker import unfold
from .files import GoldenError

__all__ = [
    "DECISION_MARGIN",
    "MAX_CORE_CONDITION",
    "MIN_RELATIVE_GAP",
    "check_core",
    "check_decision",
    "check_gap",
]

#: Largest condition number of a core unfolding ``Mat_i(C)`` allowed in a golden case.
MAX_CORE_CONDITION = 100.0
#: Smallest relative gap ``(σ_r − σ_{r+1})/σ_1`` across which a case takes a subspace (HOSVD
#: factors, truncated bases, the span of the augmentation's new directions).
MIN_RELATIVE_GAP = 1e-3
#: Every tail of a rank decision lies outside ``[ϑ/DECISION_MARGIN, ϑ·DECISION_MARGIN]``.
DECISION_MARGIN = 2.0


def check_core(core: np.ndarray, what: str) -> None:
    """Every unfolding ``Mat_i(core)`` has condition number ``≤ MAX_CORE_CONDITION``."""
    for i in range(core.ndim):
        s = np.linalg.svd(unfold(core, i), compute_uv=False)
        if s[-1] * MAX_CORE_CONDITION < s[0]:
            raise GoldenError(f"{what}: core unfolding Mat_{i}(C) has condition number "
                              f"{s[0] / s[-1]:.3g} > MAX_CORE_CONDITION = {MAX_CORE_CONDITION:g}")


def check_gap(s: np.ndarray, r: int, dim: int, what: str) -> None:
    """The span of the leading ``r`` left singular vectors (of a matrix with ``dim`` rows, singular
    values ``s``) is separated from the rest by a relative gap ``≥ MIN_RELATIVE_GAP``. Beyond
    ``len(s)`` the singular values are zero; ``r = dim`` is the whole space (nothing to check)."""
    if r == dim:
        return
    following = s[r] if r < len(s) else 0.0
    if s[r - 1] - following < MIN_RELATIVE_GAP * s[0]:
        raise GoldenError(f"{what}: relative gap (σ_{r} − σ_{r + 1})/σ_1 = {(s[r - 1] - following) / s[0]:.3g} "
                          f"< MIN_RELATIVE_GAP = {MIN_RELATIVE_GAP:g}")


def check_decision(s: np.ndarray, threshold: float, what: str) -> None:
    """No tail ``‖(s_{r+1}, …)‖`` lies within a factor ``DECISION_MARGIN`` of ``threshold``."""
    t = tail_norms(s)
    close = (t > threshold / DECISION_MARGIN) & (t < threshold * DECISION_MARGIN)
    if np.any(close):
        raise GoldenError(f"{what}: tail {t[close][0]:.6g} within a factor {DECISION_MARGIN:g} of the "
                          f"threshold {threshold:.6g}; the rank decision is not robust")
