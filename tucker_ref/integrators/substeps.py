"""The substeps of one rank-adaptive BUG step (docs/algorithms.md §1–§3), each a public, inspectable function.

Notation: ``Y0 = C0 ×_i U_i`` with orthonormal ``U_i`` (``n_i × r_i``), ``G = ∇L(Y0)``,
``N_i = Mat_i(G ×_{j≠i} U_j^T)`` (from a gradient oracle, see :mod:`tucker_ref.gradient_oracle`), learning rate
``λ``. One step is::

    Q_i, S_i, K_i = k_parametrization(Y0, i)            # 1a  Mat_i(C0) = S_i Q_i^T, K_i = U_i S_i
    ∇_K = k_gradient(N_i, Q_i)                          # 1b  ∇_{K_i}L = N_i Q_i
    Û_i, M̂_i = augment_basis(U_i, ∇_K)                  # 1c  span[U_i, K_i^1] = span[U_i, ∇_{K_i}L]
    Ĉ0 = C0 ×_i M̂_i                                     #     zero padding: Ĉ0 ×_i Û_i = Y0
    Ĉ1 = galerkin_step(Ĉ0, G ×_i Û_i^T, λ)              # 2
    Y1, report = truncate_step(Ĉ1, Û, tau=…)            # 3

:func:`k_step` (``K_i^1 = K_i^0 − λ∇_{K_i}L``) is what fixed-rank BUG orthonormalizes; the
rank-adaptive step only needs the span, which :func:`augment_basis` builds from ``∇_{K_i}L``
directly. :func:`u_gradient` (``∇_{U_i}L = N_i Mat_i(C0)^T``) feeds the ``augmented_gradient``
variant and naive factor training.
"""

from __future__ import annotations

import numbers

import numpy as np

from .. import linalg
from ..checks import as_float_array, check_instance, check_mode, check_nonneg, check_rank_bounds, check_tolerance
from ..truncation import TruncationRule, as_truncation_rule, fix_signs, orth, truncate
from ..tucker import TuckerTensor, unfold


def check_lr(lr, name: str = "lr") -> float:
    """Validate a learning rate: a finite real number ``≥ 0``."""
    return check_nonneg(lr, name, allow_none=False)


# ---------------------------------------------------------------------------------------
# step 1a-b: K-parametrization and the K-step
# ---------------------------------------------------------------------------------------
def k_parametrization(Y: TuckerTensor, mode: int):
    """Row-space basis of the core unfolding and the K factor (docs/algorithms.md §1a, docs/theory.md §3).

    Rule (rank-revealing, valid also when ``Mat_i(C0)`` is rank deficient): take the SVD
    ``Mat_i(C0) = P Σ R^T`` (``R`` with ``r_i`` columns, which needs the feasibility
    ``r_i ≤ ∏_{j≠i} r_j``) and set ``Q = R`` with each column's largest-magnitude entry made
    positive. Then ``Q`` has ``r_i`` orthonormal columns containing the row space, so
    ``Mat_i(C0) = S Q^T`` exactly with ``S = Mat_i(C0) Q = P Σ``; columns of ``Q`` for zero
    singular values are an arbitrary orthonormal completion and get zero columns in ``S``.

    Parameters
    ----------
    Y : TuckerTensor, ``Y0 = C0 ×_i U_i`` with orthonormal factors
    mode : int

    Returns
    -------
    Q : ndarray, shape ``(∏_{j≠i} r_j, r_i)``, orthonormal columns
    S : ndarray, shape ``(r_i, r_i)``, ``S = Mat_i(C0) Q``
    K : ndarray, shape ``(n_i, r_i)``, ``K = U_i S`` so that
        ``Y0 = Ten_i(K Q^T (⊗_{j≠i} U_j)^T)``
    """
    Y = check_instance(Y, TuckerTensor, "Y")
    mode = check_mode(mode, Y.ndim)
    M = unfold(Y.core, mode)
    r, others = M.shape
    if r > others:
        raise ValueError(
            f"Y has infeasible ranks {Y.ranks}: r_{mode} = {r} exceeds the product of the other ranks "
            f"({others}); recompress it (tucker_ref.truncation.recompress_to_feasible) first"
        )
    _, _, Rt = linalg.svd(M)
    Q = np.ascontiguousarray(fix_signs(Rt.T))
    S = M @ Q
    return Q, S, Y.factors[mode] @ S


def k_gradient(N, Q) -> np.ndarray:
    """``∇_{K_i}L = N_i Q_i`` (docs/algorithms.md §1b), shape ``(n_i, r_i)``.

    ``N`` is ``(n_i, ∏_{j≠i} r_j)`` from ``oracle.mode_partial_gradient``; ``Q`` from
    :func:`k_parametrization`.
    """
    N = as_float_array(N, "N", ndim=2)
    Q = as_float_array(Q, "Q", ndim=2)
    if N.shape[1] != Q.shape[0]:
        raise ValueError(f"N must have {Q.shape[0]} columns (the rows of Q, ∏_(j≠i) r_j), got shape {N.shape}")
    return N @ Q


def u_gradient(N, C, mode: int) -> np.ndarray:
    """``∇_{U_i}L = N_i Mat_i(C)^T`` (docs/algorithms.md#variants), shape ``(n_i, r_i)``.

    The gradient of ``L(C ×_j U_j)`` with respect to the factor ``U_i``; it equals
    ``∇_{K_i}L S_i^T``, i.e. the K-step directions scaled by the core's singular values.
    """
    N = as_float_array(N, "N", ndim=2)
    C = as_float_array(C, "C")
    mode = check_mode(mode, C.ndim)
    M = unfold(C, mode)
    if N.shape[1] != M.shape[1]:
        raise ValueError(
            f"N must have {M.shape[1]} columns (∏_(j≠{mode}) r_j of C with shape {C.shape}), got shape {N.shape}"
        )
    return N @ M.T


def k_step(Y: TuckerTensor, mode: int, grad_K, lr) -> np.ndarray:
    """Explicit Euler K-step ``K_i^1 = K_i^0 − λ ∇_{K_i}L`` (docs/algorithms.md §1b), shape ``(n_i, r_i)``.

    ``K_i^0 = U_i S_i`` from :func:`k_parametrization` (deterministic, so ``grad_K`` computed
    with the ``Q_i`` of that function refers to the same parametrization).
    """
    Y = check_instance(Y, TuckerTensor, "Y")
    lr = check_lr(lr)
    _, _, K0 = k_parametrization(Y, mode)
    grad_K = as_float_array(grad_K, "grad_K", ndim=2)
    if grad_K.shape != K0.shape:
        raise ValueError(f"grad_K must have the shape of K_{mode}, {K0.shape}, got {grad_K.shape}")
    return K0 - lr * grad_K


def orthonormal_basis(K) -> np.ndarray:
    """``Q`` of the reduced QR ``K = Q R`` with ``diag(R) ≥ 0`` (pinned signs), shape of ``K``.

    Not rank revealing: ``K`` (``n × r``, ``r ≤ n``) always gets ``r`` orthonormal columns. Used by
    fixed-rank BUG (``U_i^1 = orth(K_i^1)``, docs/algorithms.md#variants) and to re-orthogonalize in
    :func:`augment_basis`.
    """
    K = as_float_array(K, "K", ndim=2)
    if K.shape[1] > K.shape[0]:
        raise ValueError(f"K must have at most as many columns as rows, got shape {K.shape}")
    Q, R = linalg.qr(K)
    return Q * np.where(np.diag(R) < 0, -1, 1).astype(Q.dtype)


# ---------------------------------------------------------------------------------------
# step 1c: augmentation
# ---------------------------------------------------------------------------------------
def _spectral_norm(W) -> float:
    """``‖W‖_2`` from the largest eigenvalue of the smaller Gram matrix.

    Only the cutoff reference of :func:`augment_basis` uses it: the largest eigenvalue of
    ``W^T W`` has relative error ``O(eps)``, so the norm does too, at a fraction of the cost
    of an SVD of the tall ``W`` (which ``np.linalg.norm(W, 2)`` computes).
    """
    scale = float(np.abs(W).max(initial=0.0))
    if scale == 0.0:
        return 0.0
    W = W / scale  # the Gram matrix of W itself could overflow where W does not
    gram = W.T @ W if W.shape[0] >= W.shape[1] else W @ W.T
    return scale * float(np.sqrt(max(linalg.eigvalsh(gram)[-1], 0.0)))


def augment_basis(U, new_directions, *, rcond: float | None = None):
    """Augmented orthonormal basis ``Û = [U, V]`` of ``span[U, new_directions]`` (docs/algorithms.md §1c).

    Construction:

    1. ``W ← (I − UU^T) W`` applied twice: one projection leaves a span-``U`` residue of size
       ``eps·‖W‖``; the second reduces it to ``eps·‖(I − UU^T)W‖`` ("twice is enough").
    2. ``V = orth(W, rcond, reference=‖W_before‖_2)``: left singular vectors whose singular value
       exceeds ``rcond·‖new_directions‖_2`` (default ``rcond = max(n, m)·eps`` of the dtype), so
       directions lying in span ``U`` (their projection is rounding noise relative to the
       original norm) and rank-deficient combinations are dropped. At most ``n − r`` are kept.
    3. ``V ← qr((I − UU^T) V)`` (R with non-negative diagonal): the SVD amplifies the residual
       span-``U`` component of a kept direction by ``σ_max/σ_k`` of the projected directions,
       up to ``1/max(n, m)``; one more projection of the orthonormal ``V`` brings it to ``eps``.

    Parameters
    ----------
    U : ndarray, shape ``(n, r)``, orthonormal columns
    new_directions : ndarray, shape ``(n, m)``
        ``∇_{K_i}L`` (K-step form) or ``∇_{U_i}L`` (augmented-gradient form).
    rcond : float, optional
        Relative cutoff of step 2.

    Returns
    -------
    U_hat : ndarray, shape ``(n, r + k)``, ``k ≤ min(m, n − r)``; ``U_hat[:, :r]`` is ``U`` exactly
    M_hat : ndarray, shape ``(r + k, r)``, ``M̂ = Û^T U = [I_r; 0]`` returned exactly (to rounding
        this is what ``Û^T U`` computes), so ``C ×_i M̂`` is zero padding.
    """
    U = as_float_array(U, "U", ndim=2)
    W = as_float_array(new_directions, "new_directions", ndim=2)
    n, r = U.shape
    if r > n:
        raise ValueError(f"U must have at most as many columns as rows (orthonormal basis), got shape {U.shape}")
    if W.shape[0] != n:
        raise ValueError(f"new_directions must have n = {n} rows (those of U), got shape {W.shape}")
    dtype = np.result_type(U, W)
    U = U.astype(dtype, copy=False)
    reference = _spectral_norm(W)
    for _ in range(2):
        W = W - U @ (U.T @ W)
    V = orth(W, rcond=rcond, reference=reference).astype(dtype, copy=False)
    # Rank of the projected directions is at most n − r; a rounding-level extra direction sits last.
    V = V[:, : n - r]
    if V.shape[1]:
        V = orthonormal_basis(V - U @ (U.T @ V))
    U_hat = np.concatenate([U, V], axis=1)
    M_hat = np.zeros((U_hat.shape[1], r), dtype=dtype)
    M_hat[:r] = np.eye(r, dtype=dtype)
    return U_hat, M_hat


# ---------------------------------------------------------------------------------------
# step 2: Galerkin (S-) step
# ---------------------------------------------------------------------------------------
def galerkin_step(C_hat0, grad_core, lr) -> np.ndarray:
    """Explicit Euler S-step on the augmented core, ``Ĉ1 = Ĉ0 − λ ∇L ×_i Û_i^T`` (docs/algorithms.md §2).

    ``grad_core`` (same shape as ``C_hat0``) is the gradient of ``Ĉ ↦ L(Ĉ ×_i Û_i)`` at ``Ĉ0``,
    i.e. ``oracle.core_gradient(Û)``; with momentum it is the optimizer's direction.
    """
    C_hat0 = as_float_array(C_hat0, "C_hat0")
    grad_core = as_float_array(grad_core, "grad_core")
    lr = check_lr(lr)
    if grad_core.shape != C_hat0.shape:
        raise ValueError(f"grad_core must have the shape of C_hat0, {C_hat0.shape}, got {grad_core.shape}")
    return C_hat0 - lr * grad_core


# ---------------------------------------------------------------------------------------
# step 3: truncation
# ---------------------------------------------------------------------------------------
def check_adaptive_modes(adaptive_modes, ndim: int) -> tuple[int, ...]:
    """Validate ``adaptive_modes`` (``None`` = all modes) and return the sorted mode indices."""
    if adaptive_modes is None:
        return tuple(range(ndim))
    if isinstance(adaptive_modes, (numbers.Integral, str, bytes)):
        raise TypeError(f"adaptive_modes must be None or a sequence of mode indices, got {adaptive_modes!r}")
    modes = set()
    for m in adaptive_modes:
        if isinstance(m, bool) or not isinstance(m, numbers.Integral) or not 0 <= m < ndim:
            raise ValueError(f"adaptive_modes entries must be integers in [0, {ndim}), got {m!r}")
        modes.add(int(m))
    return tuple(sorted(modes))


def truncate_step(C_hat, U_hat, *, tau=None, theta=None, rmin=1, rmax=None, adaptive_modes=None,
                  fixed_ranks=None, rule: TruncationRule | None = None):
    """Rank-adaptive truncation of ``Ĉ1 ×_i Û_i`` (docs/algorithms.md §3), via :func:`truncation.truncate`.

    Adaptive mode ``i``: SVD ``Mat_i(Ĉ1) = P_i Σ_i R_i^T``, keep the smallest ``r`` with
    ``‖(σ_{i,r+1}, …)‖ ≤ ϑ`` (``ϑ = τ‖Ĉ1‖_F`` or the absolute ``θ``), clamp to
    ``[min(rmin, r̂_i, n_i), min(rmax, r̂_i)]``, then feasibility ``r_i ≤ ∏_{j≠i} r_j``;
    ``U_i^1 = Û_i P_i[:, :r_i]``, ``C1 = Ĉ1 ×_i P_i[:, :r_i]^T``.
    Non-adaptive mode ``i``: truncated to ``fixed_ranks[i]`` (its pre-step rank) by the same
    SVD; when it already has that rank (a frozen full-rank mode) it is left untouched. Its
    tail is whatever the step put outside the old rank, not bounded by ``ϑ``: when it exceeds
    ``ϑ`` the report records the clamp ``"fixed"`` for that mode.

    Error bound (docs/algorithms.md §3): always ``η ≤ sqrt(Σ_i tails_i²)``. A mode's tail exceeds
    ``ϑ`` only under an ``"rmax"`` or ``"fixed"`` clamp (``"rmin"`` keeps more, ``"feasibility"``
    drops only rounding), so without those two ``η ≤ √m·ϑ``, ``m`` = the number of adaptive
    modes plus the non-adaptive modes truncated back; ``η ≤ √(#adaptive)·ϑ`` when, besides no
    ``"rmax"``, every non-adaptive mode is at full rank (no clamp recorded is not enough).

    Parameters
    ----------
    C_hat : ndarray, shape ``(r̂_1, …, r̂_d)``
    U_hat : list of d orthonormal ``(n_i × r̂_i)`` matrices
    tau, theta : float, optional — at most one; neither means ``τ = 0``
    rmin, rmax : int or per-mode sequence
    adaptive_modes : sequence of int, optional (``None`` = all)
    fixed_ranks : sequence of int, optional
        Target ranks of the non-adaptive modes (entries of adaptive modes are ignored);
        ``None`` leaves non-adaptive modes at their current rank.
    rule : TruncationRule, optional
        ``tau``/``theta``/``rmin``/``rmax`` as one object validated where it was made (the
        composite steps pass theirs); excludes the loose arguments.

    Returns
    -------
    (TuckerTensor, TruncationReport)
        ``report.error`` is ``η = ‖Ĉ1 ×_i Û_i − Y1‖`` computed directly, ``report.threshold`` is
        ``ϑ`` (``None`` when no mode is adaptive), ``report.clamps`` lists the clamps that bit per
        mode (``"rmin"``, ``"rmax"``, ``"feasibility"``, ``"fixed"``).
    """
    C_hat = as_float_array(C_hat, "C_hat")
    if isinstance(U_hat, np.ndarray) or not isinstance(U_hat, (list, tuple)):
        raise TypeError(f"U_hat must be a list of {C_hat.ndim} matrices, got {type(U_hat).__name__}")
    d = C_hat.ndim
    rule = as_truncation_rule(rule, tau=tau, theta=theta, rmin=rmin, rmax=rmax, ndim=d)
    adaptive = check_adaptive_modes(adaptive_modes, d)
    T = TuckerTensor(C_hat, list(U_hat))
    if fixed_ranks is not None and (isinstance(fixed_ranks, (numbers.Integral, str, bytes)) or len(fixed_ranks) != d):
        raise ValueError(f"fixed_ranks must be None or one entry per mode ({d}), got {fixed_ranks!r}")
    ranks = [None] * d
    modes = list(adaptive)
    for i in range(d):
        if i in adaptive:
            continue
        target = C_hat.shape[i] if fixed_ranks is None else fixed_ranks[i]
        if isinstance(target, bool) or not isinstance(target, numbers.Integral) or not 1 <= target <= C_hat.shape[i]:
            raise ValueError(f"fixed_ranks[{i}] must be an integer in [1, {C_hat.shape[i]}], got {target!r}")
        if target < C_hat.shape[i]:
            ranks[i] = int(target)
            modes.append(i)
    out, report = truncate(T, ranks=ranks, modes=modes, rule=rule if adaptive else None)
    # A non-adaptive mode truncated back to its rank is not held to ϑ: record when it exceeds it
    # (the same ϑ as the report's; computed here too when no mode is adaptive).
    theta = report.threshold if report.threshold is not None else rule.threshold(float(np.linalg.norm(C_hat)))
    for i in range(d):
        if ranks[i] is not None and report.tails[i] > theta:
            report.clamps[i].append("fixed")
    return out, report


__all__ = [
    "augment_basis",
    "check_adaptive_modes",
    "check_lr",
    "check_rank_bounds",
    "check_tolerance",
    "galerkin_step",
    "k_gradient",
    "k_parametrization",
    "k_step",
    "orthonormal_basis",
    "truncate_step",
    "u_gradient",
]
