"""HOSVD, ST-HOSVD, truncation of Tucker tensors, rank-revealing orthonormal bases.

Two tolerance rules live here, and they must not be confused (docs/conventions.md §7):

* :func:`hosvd` with ``tol`` guarantees the **total** error, ``‖X − X̂‖ ≤ ϑ``.
  HOSVD splits the budget equally, each mode keeping the smallest rank whose tail is
  ``≤ ϑ/√d``; ST-HOSVD spends it sequentially (mode k may use what earlier modes left,
  spread over the remaining modes: ``tail_k² ≤ (ϑ² − Σ_{j<k} tail_j²)/(d − k)``).
* :func:`truncate` (the integrator's truncation, docs/algorithms.md §3) applies the paper's
  **per-mode** rule: each mode keeps the smallest rank whose discarded tail is ``≤ ϑ``, so the
  total error is only bounded by ``√d·ϑ`` (by ``√(#truncated modes)·ϑ`` exactly).

In both, the threshold is ``ϑ = tol·‖·‖_F`` when ``relative`` (of ``X`` for :func:`hosvd`, of
the core for :func:`truncate`) and ``ϑ = tol`` otherwise, and the rule is always ``tail ≤ ϑ``
(non-strict), so ``tol = 0`` keeps every nonzero singular value. ``tol``/``relative`` is the
older spelling; the integrator's names (docs/algorithms.md §3) are ``tau`` (relative,
``ϑ = τ‖C‖_F``) and ``theta`` (``ϑ = θ``). :func:`truncate`'s tolerance and rank bounds are a
:class:`TruncationRule`, validated once when it is made and passed on unchecked by the steps.

Sign convention (pinned so that golden files are reproducible): every left singular vector
is flipped so that its entry of largest absolute value is positive (first such entry on ties).

Feasibility (docs/theory.md §1, docs/conventions.md §6): a multilinear rank needs
``r_i ≤ ∏_{j≠i} r_j``. Every function that chooses ranks returns feasible ones, recompressing
the core losslessly when needed.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from . import linalg
from .checks import (as_float_array, check_fraction, check_instance, check_mode, check_nonneg, check_rank_bound_spec,
                     check_ranks, check_tolerance, eps_of)
from .checks import per_mode  # noqa: F401  (public here before the checks moved to tucker_ref.checks)
from .tucker import TuckerTensor, multi_mode_product, mode_product, unfold

#: Relative cutoff of :func:`orth`, in units of ``max(shape)·eps`` (the LAPACK/NumPy
#: ``matrix_rank`` convention): singular values below it are rounding noise.
ORTH_RCOND_FACTOR = 1.0

#: A tolerance ``ϑ`` below ``TOL_FLOOR_FACTOR·eps·‖X‖`` cannot be certified in the dtype:
#: rounding in the projections alone is of that size. :func:`hosvd` warns below it.
TOL_FLOOR_FACTOR = 10.0


# ---------------------------------------------------------------------------------------
# small building blocks
# ---------------------------------------------------------------------------------------
def fix_signs(U: np.ndarray) -> np.ndarray:
    """Flip columns of ``U`` so that each column's largest-magnitude entry is positive."""
    if U.size == 0:
        return U
    idx = np.argmax(np.abs(U), axis=0)
    signs = np.sign(U[idx, np.arange(U.shape[1])])
    signs[signs == 0] = 1
    return U * signs


def left_singular(A: np.ndarray):
    """Left singular vectors and values of a matrix, sign-fixed: ``A = P diag(s) R^T``.

    Returns ``(P, s)`` with ``P`` of shape ``(m, min(m, n))``.
    """
    P, s = linalg.left_svd(A)
    return fix_signs(P), s


def unfolding_svds(C: np.ndarray) -> list:
    """``[(P_i, s_i)]``: :func:`left_singular` of every unfolding ``Mat_i(C)``.

    For a matrix (``d = 2``) ``Mat_1(C) = C^T``, so one SVD ``C = P diag(s) R^T`` gives both
    modes (``P`` and ``R``, each sign-fixed): half the cost of the rank-adaptive step of a
    dense layer.
    """
    if C.ndim == 2:
        P, s, Rt = linalg.svd(C)
        return [(fix_signs(P), s), (fix_signs(Rt.T), s)]
    return [left_singular(unfold(C, i)) for i in range(C.ndim)]


def tail_norms(s: np.ndarray) -> np.ndarray:
    """``t[r] = ‖(s_{r+1}, s_{r+2}, …)‖_2`` for ``r = 0 … len(s)`` (``t[len(s)] = 0``).

    Summed from the smallest value upwards so that small tails are not swamped.
    """
    s = np.asarray(s, dtype=np.float64)
    sq = np.cumsum((s[::-1]) ** 2)[::-1]
    return np.sqrt(np.append(sq, 0.0))


def rank_for_tolerance(s: np.ndarray, theta: float) -> int:
    """Smallest ``r`` with ``‖(s_{r+1}, …)‖ ≤ ϑ`` (non-strict rule of docs/algorithms.md §3).

    ``theta`` is the threshold ``ϑ`` in absolute terms (``τ‖C‖_F`` for a relative tolerance).

    Examples
    --------
    >>> from tucker_ref.truncation import rank_for_tolerance
    >>> s = np.array([4.0, 2.0, 1.0, 0.75])
    >>> rank_for_tolerance(s, 1.25)  # the tail after r = 2 is ‖(1, 0.75)‖ = 1.25 ≤ ϑ: kept out
    2
    >>> rank_for_tolerance(s, 1.2), rank_for_tolerance(s, 0.0), rank_for_tolerance(s, 10.0)
    (3, 4, 0)
    """
    t = tail_norms(s)
    return int(np.flatnonzero(t <= theta)[0])


def rank_from_fraction(fraction: float, n: int) -> int:
    """``max(1, ⌈fraction·n⌉)``: the rank that keeps a fraction of a mode of size ``n`` (at least 1).

    The one rule behind ``lenet5(init_rank_fraction=…)`` and the trainer's ``--init-rank F``.
    """
    return max(1, math.ceil(check_fraction(fraction, "fraction") * n))


def feasible_ranks(ranks) -> tuple[int, ...]:
    """Largest ranks ``≤ ranks`` with ``r_i ≤ ∏_{j≠i} r_j`` for every mode.

    Reducing one rank can make another infeasible, so iterate to the fixed point (ranks only
    decrease, hence it terminates). For an order-2 tensor this equalises the two ranks.
    """
    r = list(int(x) for x in ranks)
    changed = True
    while changed:
        changed = False
        for i in range(len(r)):
            others = math.prod(r[:i] + r[i + 1:])
            if r[i] > others:
                r[i] = others
                changed = True
    return tuple(r)


def is_feasible(ranks) -> bool:
    """``r_i ≤ ∏_{j≠i} r_j`` for every mode (docs/theory.md §1)."""
    return tuple(ranks) == feasible_ranks(ranks)


def orth(A, *, rcond: float | None = None, reference: float | None = None) -> np.ndarray:
    """Rank-revealing orthonormal basis of ``range(A)``.

    Left singular vectors of ``A`` (sign-fixed) whose singular values exceed
    ``rcond·reference``; ``reference`` defaults to ``σ_max(A)`` and ``rcond`` to
    ``ORTH_RCOND_FACTOR·max(A.shape)·eps``. Passing ``reference`` lets a caller measure the
    cutoff against the norm of the data *before* a projection (the augmentation step does).
    An all-zero or empty ``A`` gives a ``(m, 0)`` basis.
    """
    A = as_float_array(A, "A", ndim=2)
    m, n = A.shape
    if m == 0 or n == 0:
        return np.zeros((m, 0), dtype=A.dtype)
    if rcond is None:
        rcond = ORTH_RCOND_FACTOR * max(m, n) * eps_of(A.dtype)
    rcond = check_nonneg(rcond, "rcond", allow_none=False)
    if reference is not None:
        reference = check_nonneg(reference, "reference", allow_none=False)
    P, s = left_singular(A)
    ref = s[0] if reference is None else reference
    keep = int(np.count_nonzero(s > rcond * ref)) if ref > 0 else 0
    return np.ascontiguousarray(P[:, :keep])


# ---------------------------------------------------------------------------------------
# HOSVD
# ---------------------------------------------------------------------------------------
@dataclass
class TruncationReport:
    """What a truncation did, with its error certificate.

    Attributes
    ----------
    ranks : tuple of int
        The returned (feasible) multilinear ranks.
    singular_values : list of ndarray
        Per mode, the singular values the rank choice looked at (of ``Mat_i(X)`` for HOSVD,
        of the partially projected tensor for ST-HOSVD, of ``Mat_i(C)`` for :func:`truncate`).
    tails : tuple of float
        Per mode, the norm of the singular values discarded in that mode.
    certificate : float
        ``sqrt(Σ_i tails_i²)``: an upper bound of the error (an equality for ST-HOSVD and for
        single-mode truncation).
    error : float
        ``‖X − X̂‖_F``, computed directly from the difference (never by cancellation).
    threshold : float or None
        ``ϑ`` in absolute terms, when a tolerance was given.
    rule : str
        Which rule chose the ranks.
    clamps : dict
        Per mode, the list of clamps that changed the tolerance rank (``"rmin"``, ``"rmax"``,
        ``"feasibility"``); empty lists when none bit. The integrator's
        :func:`~tucker_ref.integrators.substeps.truncate_step` adds ``"fixed"`` for a
        non-adaptive mode truncated back to its rank with a tail above ``ϑ``. A tail exceeds
        ``ϑ`` only under ``"rmax"`` or ``"fixed"``.
    mode_thresholds : tuple of (float or None)
        Per mode, the bound ``tail ≤ ·`` the rank rule applied: ``ϑ/√d`` (HOSVD), the remaining
        budget's share (ST-HOSVD), ``ϑ`` (:func:`truncate`), ``0`` without a tolerance (every
        nonzero singular value kept); ``None`` where the rank was given, not chosen.
    """

    ranks: tuple
    singular_values: list
    tails: tuple
    certificate: float
    error: float
    threshold: float | None = None
    rule: str = ""
    clamps: dict = field(default_factory=dict)
    mode_thresholds: tuple = ()


def _parse_tol(tol, ranks):
    if ranks is not None and tol is not None:
        raise ValueError("give exactly one of ranks and tol, not both")
    return check_nonneg(tol, "tol")


def _warn_if_unreachable(threshold: float, norm: float, dtype) -> None:
    floor = TOL_FLOOR_FACTOR * eps_of(dtype) * norm
    if 0 < threshold < floor:
        warnings.warn(
            f"tolerance {threshold:.3e} is below what {np.dtype(dtype).name} can certify "
            f"(~{floor:.1e} for this tensor): the ranks are chosen by the rule, but the error "
            "is limited by rounding",
            RuntimeWarning,
            stacklevel=3,
        )


def _check_requested_ranks(ranks, shape):
    ranks = check_ranks(ranks, shape)
    for i, r in enumerate(ranks):
        others = math.prod(shape[:i] + shape[i + 1:])
        if r > others:
            raise ValueError(
                f"ranks[{i}] = {r} exceeds prod of the other dimensions ({others}); no tensor of shape "
                f"{tuple(shape)} has mode-{i} rank above that"
            )
    return ranks


def recompress_to_feasible(core: np.ndarray, factors: list):
    """Losslessly reduce ranks until ``r_i ≤ ∏_{j≠i} r_j`` (docs/theory.md §1).

    If ``r_i > ∏_{j≠i} r_j``, ``Mat_i(C)`` has rank at most ``∏_{j≠i} r_j``: an SVD
    ``Mat_i(C) = P Σ R^T`` keeps its range exactly, ``C ← C ×_i P^T`` and ``U_i ← U_i P``.
    Returns ``(core, factors, dropped)`` where ``dropped[i]`` is the norm of the singular values
    discarded in mode ``i`` (zero in exact arithmetic; rounding in practice).
    """
    factors = list(factors)
    dropped = [0.0] * core.ndim
    target = feasible_ranks(core.shape)
    while core.shape != target:
        i = next(k for k in range(core.ndim) if core.shape[k] > target[k])
        P, s = left_singular(unfold(core, i))
        r = target[i]
        dropped[i] = float(np.hypot(dropped[i], tail_norms(s)[r]))
        core = mode_product(core, P[:, :r].T, i)
        factors[i] = factors[i] @ P[:, :r]
    return core, factors, dropped


def hosvd(X, ranks=None, tol=None, relative: bool = True, sequential: bool = False):
    """(Truncated) higher-order SVD, or sequentially truncated HOSVD.

    Parameters
    ----------
    X : ndarray, d-way
    ranks : int or sequence of int, optional
        Target multilinear rank; ``r_i ≤ n_i`` and ``r_i ≤ ∏_{j≠i} n_j`` (else ``ValueError``).
        Requested ranks that are mutually infeasible (``r_i > ∏_{j≠i} r_j``) are reduced by
        lossless recompression and the report's ``clamps`` says so.
    tol : float, optional
        Total error budget (see module docstring): ``‖X − X̂‖ ≤ ϑ`` with ``ϑ = tol·‖X‖_F``
        (``relative=True``) or ``ϑ = tol``. Exactly one of ``ranks`` and ``tol``; neither gives
        the exact HOSVD (every nonzero singular value kept). ``tol``/``relative`` is the older
        spelling of ``τ`` (relative) or ``ϑ`` (absolute), here a total budget, not
        :class:`TruncationRule`'s per-mode one.
    sequential : bool
        ST-HOSVD: modes processed in order ``0 … d-1``, each SVD taken of the tensor already
        projected in the earlier modes (cheaper; same quasi-optimality ``‖X − X̂‖ ≤ √d‖X − X_best‖``).

    Returns
    -------
    (TuckerTensor, TruncationReport)
        Orthonormal factors; the core is ``X ×_i U_i^T``. ``report.certificate =
        sqrt(Σ tail_i²)`` bounds the error (HOSVD: ``max_i tail_i ≤ error ≤ certificate``;
        ST-HOSVD: error = certificate up to rounding).

    Examples
    --------
    A tensor of multilinear rank ``(2, 2, 2)`` plus noise: the tolerance finds the rank, and the
    reported error is within the certificate, which is within the budget ``ϑ = tol·‖X‖``:

    >>> from tucker_ref import hosvd
    >>> from tucker_ref.tucker import random_tucker
    >>> rng = np.random.default_rng(0)
    >>> X = random_tucker(rng, (6, 5, 4), (2, 2, 2)).full() + 1e-6 * rng.standard_normal((6, 5, 4))
    >>> T, report = hosvd(X, tol=1e-3)
    >>> T.ranks, report.error <= report.certificate <= report.threshold
    ((2, 2, 2), True)
    >>> bool(np.isclose(report.error, np.linalg.norm(X - T.full())))
    True

    ST-HOSVD (``sequential=True``) spends the budget mode after mode; its certificate is the error:

    >>> T, report = hosvd(X, tol=1e-3, sequential=True)
    >>> T.ranks, bool(np.isclose(report.error, report.certificate))
    ((2, 2, 2), True)
    >>> hosvd(X, ranks=(1, 2, 2))[0].ranks  # or fix the ranks
    (1, 2, 2)
    """
    X = as_float_array(X, "X")
    if X.ndim < 1:
        raise ValueError("X must have ndim >= 1")
    d = X.ndim
    tol = _parse_tol(tol, ranks)
    if ranks is not None:
        ranks = _check_requested_ranks(ranks, X.shape)
    norm_x = float(np.linalg.norm(X))
    threshold = None
    if tol is not None:
        threshold = tol * norm_x if relative else tol
        _warn_if_unreachable(threshold, norm_x, X.dtype)

    factors, svals, tails, shares = [], [], [], []
    work = X
    spent_sq = 0.0
    for i in range(d):
        P, s = left_singular(unfold(work if sequential else X, i))
        t = tail_norms(s)
        share = None
        if ranks is not None:
            r = ranks[i]
        elif threshold is not None:
            share = threshold / math.sqrt(d) if not sequential else math.sqrt(
                max(threshold**2 - spent_sq, 0.0) / (d - i))
            r = rank_for_tolerance(s, share)
        else:
            share = 0.0
            r = rank_for_tolerance(s, share)
        shares.append(share)
        r = max(r, 1)  # a zero tensor still gets a (zero) rank-1 representation
        factors.append(np.ascontiguousarray(P[:, :r]))
        svals.append(s)
        tails.append(float(t[min(r, len(s))]))
        spent_sq += tails[-1] ** 2
        if sequential:
            work = mode_product(work, factors[-1].T, i)
    core = work if sequential else multi_mode_product(X, factors, transpose=True)
    chosen = core.shape
    core, factors, dropped = recompress_to_feasible(core, factors)
    clamps = {i: (["feasibility"] if core.shape[i] < chosen[i] else []) for i in range(d)}
    T = TuckerTensor(core, factors)
    rule = ("ranks" if ranks is not None else
            "exact" if threshold is None else
            "st-hosvd sequential budget" if sequential else "hosvd equal split theta/sqrt(d)")
    report = TruncationReport(
        ranks=T.ranks,
        singular_values=svals,
        tails=tuple(float(np.hypot(a, b)) for a, b in zip(tails, dropped)),
        certificate=float(np.sqrt(sum(a * a + b * b for a, b in zip(tails, dropped)))),
        error=float(np.linalg.norm(X - T.full())),
        threshold=threshold,
        rule=rule,
        clamps=clamps,
        mode_thresholds=tuple(shares),
    )
    return T, report


# ---------------------------------------------------------------------------------------
# truncation of a Tucker tensor (the integrator's step 3)
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TruncationRule:
    """The rank-adaptive truncation rule of docs/algorithms.md §3, validated once, when it is made.

    A mode chosen by the rule keeps the smallest rank whose discarded tail is ``≤ ϑ``, clamped
    to its rank bounds. Made once at a public entry point (:func:`truncate`,
    :func:`~tucker_ref.integrators.steps.tdlrt_step`, …, or
    :meth:`TrainConfig.validated <tucker_ref.training.config.TrainConfig.validated>` for a run)
    and passed down as ``rule=``: nothing below re-checks it.

    Attributes
    ----------
    tau, theta : float or None
        The relative tolerance ``τ`` (``ϑ = τ‖C‖_F``) or the absolute threshold ``θ``
        (``ϑ = θ``): after construction exactly one is set (neither given means ``τ = 0``,
        every nonzero singular value kept); both given is an error.
    rmin, rmax : int or tuple
        Rank bounds: scalars (any tensor order) or one entry per mode; ``rmax`` ``None`` (or a
        ``None`` entry) is no cap. ``rmin ≤ rmax``.
    rmax_fraction : float in (0, 1] or None
        Also caps mode ``i`` at ``max(1, ⌊f·n_i⌋)``: one rule for tensors of different shapes
        (``--rmax-fraction`` of the trainer).
    ndim : int or None
        The order that per-mode bounds are for (set from their length); ``None`` for scalars.
    """

    tau: float | None = None
    theta: float | None = None
    rmin: int | tuple = 1
    rmax: int | tuple | None = None
    rmax_fraction: float | None = None
    ndim: int | None = None

    def __post_init__(self):
        value, relative = check_tolerance(self.tau, self.theta)
        rmin, rmax, ndim = check_rank_bound_spec(self.rmin, self.rmax, self.ndim)
        fraction = None if self.rmax_fraction is None else check_fraction(self.rmax_fraction, "rmax_fraction")
        for name, v in (("tau", value if relative else None), ("theta", None if relative else value), ("rmin", rmin),
                        ("rmax", rmax), ("rmax_fraction", fraction), ("ndim", ndim)):
            object.__setattr__(self, name, v)

    def threshold(self, core_norm: float) -> float:
        """``ϑ`` in absolute terms for a core of Frobenius norm ``core_norm``."""
        return self.theta if self.tau is None else self.tau * core_norm

    def rank_bounds(self, shape) -> tuple[list, list]:
        """Per-mode ``(rmin_i, rmax_i)`` lists for a tensor of ``shape``.

        ``rmax_i = min(rmax_i, max(1, ⌊rmax_fraction·n_i⌋), n_i)`` (each bound when set) and
        ``rmin_i = min(rmin_i, rmax_i)``: a cap below ``rmin`` wins. ``shape`` must have
        :attr:`ndim` modes when it is set (:func:`as_truncation_rule` checks it).
        """
        d = len(shape)
        lo = self.rmin if self.ndim is not None else (self.rmin,) * d
        hi = self.rmax if self.ndim is not None else (self.rmax,) * d
        caps = []
        for n, r in zip(shape, hi):
            if self.rmax_fraction is not None:
                f_cap = max(1, math.floor(self.rmax_fraction * n))
                r = f_cap if r is None else min(r, f_cap)
            caps.append(n if r is None else min(r, n))
        return [min(r, c) for r, c in zip(lo, caps)], caps


def as_truncation_rule(rule=None, *, tau=None, theta=None, rmin=1, rmax=None, ndim: int | None = None,
                       where: str = "") -> TruncationRule:
    """The :class:`TruncationRule` of a public entry point: ``rule`` itself, or one made of the loose values.

    ``rule`` excludes ``tau``/``theta``/``rmin``/``rmax`` (the rule is given once). Loose
    bounds are made per mode when ``ndim`` is known; a given rule must fit ``ndim``.
    ``where`` (a step's name) prefixes the messages.
    """
    if rule is None:
        return TruncationRule(tau=tau, theta=theta, rmin=rmin, rmax=rmax, ndim=ndim)
    prefix = f"{where}: " if where else ""
    if not isinstance(rule, TruncationRule):
        raise TypeError(f"{prefix}rule must be a TruncationRule, got {type(rule).__name__}")
    default_rmin = isinstance(rmin, numbers.Integral) and rmin == 1
    if tau is not None or theta is not None or rmax is not None or not default_rmin:
        raise ValueError(f"{prefix}give the truncation rule once: rule, or tau/theta with rmin/rmax, not both")
    if ndim is not None and rule.ndim not in (None, ndim):
        raise ValueError(f"{prefix}rule has rank bounds for {rule.ndim} modes, the tensor has {ndim}")
    return rule


def truncate(T: TuckerTensor, ranks=None, tol=None, relative: bool = True, rmin=1, rmax=None,
             modes=None, *, tau=None, theta=None, rule: TruncationRule | None = None):
    """Truncate a Tucker tensor with orthonormal factors through SVDs of its core unfoldings.

    Implements docs/algorithms.md §3: for each truncated mode ``i``, ``Mat_i(C) = P_i Σ_i R_i^T``;
    keep the smallest ``r`` whose discarded tail ``‖(σ_{i,r+1}, …)‖ ≤ ϑ`` (**per-mode rule**,
    ``ϑ = tol·‖C‖_F`` when ``relative`` else ``tol``; total error ``≤ √(#modes)·ϑ``), clamp to
    ``[min(rmin, r̂_i, n_i), min(rmax, r̂_i)]`` (``r̂_i`` the current rank), truncate
    ``C ← C ×_i P_i[:, :r_i]^T``, ``U_i ← U_i P_i[:, :r_i]``, then enforce
    ``r_i ≤ ∏_{j≠i} r_j`` by lossless recompression of the truncated core
    (:func:`recompress_to_feasible`; its rounding-level drop is added to the mode's tail).

    Parameters
    ----------
    T : TuckerTensor with orthonormal factors (checked; non-orthonormal input is
        orthonormalized first, which leaves the tensor unchanged).
    ranks : sequence, optional
        Fixed target rank per mode; an entry ``None`` means "choose by the tolerance" in that
        mode. Fixed targets are not clamped by ``rmin``/``rmax`` but must not exceed the current rank.
    tol : float, optional
        The per-mode tolerance for the modes chosen by tolerance, in the older spelling
        (``tol`` with ``relative``). ``ranks=None`` without a tolerance keeps every nonzero
        singular value (``tol = 0``).
    tau, theta : float, optional
        The same tolerance in the integrator's names: ``tau`` is ``tol`` with ``relative=True``,
        ``theta`` is ``tol`` with ``relative=False``. At most one of ``tol``, ``tau``, ``theta``.
    rmin, rmax : int or sequence, optional
        Clamp interval for tolerance-chosen ranks (per mode or one for all).
    rule : TruncationRule, optional
        Tolerance and rank bounds at once, already validated (instead of ``tol``/``tau``/
        ``theta``/``rmin``/``rmax``); its ``rmax_fraction`` also caps ``rmax``.
    modes : sequence of int, optional
        Modes to truncate (default all); the others keep their factors and rank untouched
        (except for feasibility recompression).

    Returns
    -------
    (TuckerTensor, TruncationReport)
        ``report.error`` (``η``) is computed directly as ``‖C − C_new ×_i P_i‖`` in the core's
        coordinates, exact because the factors are orthonormal.

    Examples
    --------
    Mode 0 of this core has a negligible third direction; the per-mode rule drops it alone:

    >>> from tucker_ref import truncate
    >>> from tucker_ref.tucker import random_tucker
    >>> rng = np.random.default_rng(0)
    >>> core = rng.standard_normal((3, 3, 3))
    >>> core[2] *= 1e-6
    >>> T = random_tucker(rng, (6, 5, 4), (3, 3, 3), core=core)
    >>> T1, report = truncate(T, tau=1e-3)  # ϑ = 1e-3·‖C‖ per mode
    >>> T1.ranks, report.error <= report.threshold
    ((2, 3, 3), True)
    >>> bool(np.isclose(report.error, np.linalg.norm(T.full() - T1.full())))
    True
    >>> truncate(T, ranks=(2, 2, 2))[0].ranks
    (2, 2, 2)
    """
    check_instance(T, TuckerTensor, "T")
    d = T.ndim
    if not T.has_orthonormal_factors():
        T = T.orthonormalize()
    modes_set = set(range(d)) if modes is None else _parse_modes(modes, d)
    tolerance_given = rule is not None or any(v is not None for v in (tol, tau, theta))
    tau, theta, tol_name = _tolerance(tol, relative, tau, theta)
    if rule is not None:
        tol_name = "rule"
    rule = as_truncation_rule(rule, tau=tau, theta=theta, rmin=rmin, rmax=rmax, ndim=d)
    if ranks is not None:
        ranks = _parse_fixed_ranks(ranks, d)
        if tolerance_given and all(r is not None for r in ranks):
            raise ValueError(f"give exactly one of ranks and {tol_name}, not both (use None entries in ranks to mix)")
    rmin_l, rmax_l = rule.rank_bounds(T.shape)

    C = T.core
    norm_c = float(np.linalg.norm(C))
    threshold = rule.threshold(norm_c)
    keep, svals, tails, clamps, requested, bounds = [], [], [], {}, [], []
    for i, (P, s) in enumerate(_mode_spectra(C, modes_set)):
        r_hat = C.shape[i]
        clamps[i] = []
        bounds.append(None)
        if i not in modes_set:
            r = r_hat
        elif ranks is not None and ranks[i] is not None:
            r = ranks[i]
            if r > r_hat:
                raise ValueError(f"ranks[{i}] = {r} must be in [1, {r_hat}] (the current rank of mode {i})")
        else:
            r = rank_for_tolerance(s, threshold)
            bounds[i] = threshold
            lo = min(rmin_l[i], r_hat)
            hi = min(rmax_l[i], r_hat)
            if r < lo:
                r = lo
                clamps[i].append("rmin")
            elif r > hi:
                r = hi
                clamps[i].append("rmax")
        # A frozen mode keeps its basis (identity in core coordinates).
        keep.append(np.ascontiguousarray(P[:, :r]) if i in modes_set else np.eye(r_hat, dtype=C.dtype))
        svals.append(s)
        tails.append(float(tail_norms(s)[min(r, len(s))]))
        requested.append(r)
    # Feasibility is enforced on the truncated core, where it is lossless (docs/algorithms.md §3):
    # Mat_i of the truncated core has rank <= prod_{j!=i} r_j. Cutting the original core's
    # mode-i basis to the feasible rank instead would discard tails above the threshold.
    new_core, keep, dropped = recompress_to_feasible(multi_mode_product(C, keep, transpose=True), keep)
    # P_i has only min(r̂_i, ∏_{j≠i} r̂_j) columns, so a rank above that is cut here already;
    # either way the cut is feasibility's, measured against the rank the rule asked for.
    for i in range(d):
        if new_core.shape[i] < requested[i]:
            clamps[i].append("feasibility")
    tails = tuple(float(np.hypot(t, b)) for t, b in zip(tails, dropped))
    eta = float(np.linalg.norm(C - multi_mode_product(new_core, keep)))
    new_factors = [U.copy() if (i not in modes_set and new_core.shape[i] == requested[i]) else U @ B
                   for i, (U, B) in enumerate(zip(T.factors, keep))]
    out = TuckerTensor(new_core, new_factors)
    report = TruncationReport(
        ranks=out.ranks,
        singular_values=svals,
        tails=tails,
        certificate=float(np.sqrt(sum(t * t for t in tails))),
        error=eta,
        threshold=threshold if (tolerance_given or ranks is None) else None,
        rule="per-mode tail <= theta" if ranks is None or any(r is None for r in ranks) else "ranks",
        clamps=clamps,
        mode_thresholds=tuple(bounds),
    )
    return out, report


def _mode_spectra(C: np.ndarray, modes) -> list:
    """:func:`unfolding_svds` of ``C`` for the modes in ``modes``; ``(None, s)`` for the others.

    A mode :func:`truncate` leaves alone needs its singular values for the report only, and
    those come without the singular vectors at a fraction of the cost (a frozen 5 x 5 spatial
    mode of a conv core is a 5 x 5000 unfolding, most of whose SVD time is its right vectors).
    An order-2 core gets both modes from one SVD as soon as one of them is truncated.
    """
    if C.ndim == 2 and modes:
        return unfolding_svds(C)
    return [left_singular(unfold(C, i)) if i in modes else (None, linalg.singular_values(unfold(C, i)))
            for i in range(C.ndim)]


def _tolerance(tol, relative, tau, theta):
    """``(tau, theta, name)`` of the one tolerance given as ``tol`` (the older spelling), ``tau`` or ``theta``."""
    if tol is None:
        return tau, theta, "tau" if theta is None else "theta"
    if tau is not None or theta is not None:
        raise ValueError("give the tolerance once: tol (with relative), tau or theta")
    # checked here to name the argument the caller used; TruncationRule checks tau/theta
    tol = check_nonneg(tol, "tol")
    return (tol, None, "tol") if relative else (None, tol, "tol")


def _parse_fixed_ranks(ranks, d):
    if isinstance(ranks, numbers.Integral) and not isinstance(ranks, bool):
        ranks = [ranks] * d
    try:
        ranks = list(ranks)
    except TypeError:
        raise TypeError(f"ranks must be an int or a sequence of {d} entries (int or None), got {ranks!r}") from None
    if len(ranks) != d:
        raise ValueError(f"ranks must have one entry per mode ({d}), got {len(ranks)}")
    for i, r in enumerate(ranks):
        if r is None:
            continue
        if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r < 1:
            raise ValueError(f"ranks[{i}] must be a positive integer or None, got {r!r}")
        ranks[i] = int(r)
    return ranks


def _parse_modes(modes, d):
    if isinstance(modes, (str, bytes)) or not isinstance(modes, Iterable):
        raise TypeError(f"modes must be a sequence of mode indices in [-{d}, {d}), got {modes!r}")
    return {check_mode(m, d, f"modes[{k}]") for k, m in enumerate(modes)}
