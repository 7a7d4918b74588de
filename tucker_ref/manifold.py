"""Geometry of the fixed-rank Tucker manifold (docs/theory.md §2).

At ``Y = C ×_1 U_1 ⋯ ×_d U_d`` (orthonormal ``U_i``, core unfoldings of full row rank) the
tangent space consists of

    δY = δC ×_i U_i + Σ_i C ×_i δU_i ×_{j≠i} U_j,   U_i^T δU_i = 0,

and the orthogonal projection of an ambient tensor ``Z`` has the factors

    δC = Z ×_i U_i^T,
    δU_i = (I − U_i U_i^T) Mat_i(Z ×_{j≠i} U_j^T) Mat_i(C)^+.

``ε(Y) = ‖(I − P(Y)) ∇L(Y)‖`` is computed from the difference ``Z − P(Y)Z``, never as
``sqrt(‖Z‖² − ‖PZ‖²)`` (which cancels below ~1e-8‖Z‖).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import linalg
from .checks import as_float_array, check_instance, check_ranks, check_rng, eps_of
from .truncation import is_feasible
from .tucker import TuckerTensor, fold, multi_mode_product, unfold

#: ``rcond`` of the pseudo-inverse ``Mat_i(C)^+`` in the projection, in units of
#: ``max(Mat_i(C).shape)·eps``: singular values of the core unfolding below
#: ``PINV_RCOND_FACTOR·max(shape)·eps·σ_max`` are treated as zero.
PINV_RCOND_FACTOR = 1.0


@dataclass
class TangentVector:
    """Factored tangent vector ``(δC, [δU_i])`` at a point ``Y`` (gauge ``U_i^T δU_i = 0``)."""

    dcore: np.ndarray
    dfactors: list

    def to_dense(self, Y: TuckerTensor) -> np.ndarray:
        """``δC ×_i U_i + Σ_i C ×_i δU_i ×_{j≠i} U_j``."""
        out = multi_mode_product(self.dcore, Y.factors)
        for i, dU in enumerate(self.dfactors):
            mats = list(Y.factors)
            mats[i] = dU
            out = out + multi_mode_product(Y.core, mats)
        return out


def _check_point(Y, Z=None):
    check_instance(Y, TuckerTensor, "Y")
    # The projection formulas assume U_i^T U_i = I; with other factors they return a
    # non-projection without any other sign of trouble.
    if not Y.has_orthonormal_factors():
        raise ValueError("Y must have orthonormal factors (U_i^T U_i = I); call Y.orthonormalize() first")
    if Z is None:
        return None
    Z = as_float_array(Z, "Z")
    if Z.shape != Y.shape:
        raise ValueError(f"Z must have the shape of Y, {Y.shape}, got {Z.shape}")
    return Z


def core_unfolding_pinv(C: np.ndarray, mode: int) -> np.ndarray:
    """``Mat_i(C)^+`` with the library's documented cutoff (``PINV_RCOND_FACTOR``)."""
    M = unfold(C, mode)
    rcond = PINV_RCOND_FACTOR * max(M.shape) * eps_of(M.dtype)
    return np.linalg.pinv(M, rcond=rcond)


def _normal_factor_parts(Y: TuckerTensor, Z):
    """Per mode, ``(I − U_iU_i^T) N_i`` with ``N_i = Mat_i(Z ×_{j≠i} U_j^T)``."""
    parts = []
    for i, U in enumerate(Y.factors):
        mats = list(Y.factors)
        mats[i] = None
        N = unfold(multi_mode_product(Z, mats, transpose=True), i)
        parts.append(N - U @ (U.T @ N))
    return parts


def core_row_space(C: np.ndarray, mode: int) -> np.ndarray:
    """Orthonormal basis ``Q_i`` of the row space of ``Mat_i(C)``, so ``Mat_i(C)^+ Mat_i(C) = Q_iQ_i^T``.

    Right singular vectors whose singular values pass the same cutoff as
    :func:`core_unfolding_pinv`.
    """
    M = unfold(C, mode)
    _, s, Vt = linalg.svd(M)
    cutoff = PINV_RCOND_FACTOR * max(M.shape) * eps_of(M.dtype) * (s[0] if s.size else 0.0)
    return Vt[s > cutoff].T


def tangent_vector(Y: TuckerTensor, Z) -> TangentVector:
    """Factors ``(δC, δU_i)`` of the orthogonal projection ``P(Y)Z`` (formulas in the module docstring).

    ``δU_i`` carries ``Mat_i(C)^+``, so its accuracy degrades like ``eps·cond(Mat_i(C))``; the
    dense :func:`tangent_projection` avoids that.
    """
    Z = _check_point(Y, Z)
    parts = _normal_factor_parts(Y, Z)
    return TangentVector(Y.project(Z), [F @ core_unfolding_pinv(Y.core, i) for i, F in enumerate(parts)])


def tangent_projection(Y: TuckerTensor, Z) -> np.ndarray:
    """Orthogonal projection ``P(Y)Z`` onto the tangent space at ``Y``, as a dense tensor.

    The factor terms ``C ×_i δU_i ×_{j≠i} U_j`` are formed as
    ``Ten_i((I − U_iU_i^T) N_i Q_iQ_i^T) ×_{j≠i} U_j`` with ``Q_i`` the row-space basis of
    ``Mat_i(C)`` (:func:`core_row_space`), which equals the pseudo-inverse formula
    (``Mat_i(C)^+ Mat_i(C) = Q_iQ_i^T``) but does not multiply ``1/σ_min`` back by ``σ_min``:
    it is accurate to rounding for any core conditioning (the pseudo-inverse route loses
    ``eps·cond(Mat_i(C))``: 1e-6 relative at cond 1e12, measured).

    Examples
    --------
    >>> from tucker_ref import tangent_projection
    >>> from tucker_ref.tucker import random_tucker
    >>> rng = np.random.default_rng(0)
    >>> Y = random_tucker(rng, (5, 4, 3), (2, 2, 2))
    >>> Z = rng.standard_normal(Y.shape)
    >>> PZ = tangent_projection(Y, Z)
    >>> bool(np.allclose(tangent_projection(Y, PZ), PZ))  # a projection: P(Y)² = P(Y)
    True
    >>> bool(np.isclose(np.vdot(Z - PZ, PZ), 0.0))  # orthogonal: the normal part is ⟂ to the tangent part
    True
    >>> bool(np.allclose(tangent_projection(Y, Y.full()), Y.full()))  # Y lies in its own tangent space
    True
    """
    Z = _check_point(Y, Z)
    out = multi_mode_product(Y.project(Z), Y.factors)
    for i, F in enumerate(_normal_factor_parts(Y, Z)):
        Q = core_row_space(Y.core, i)
        term_shape = Y.ranks[:i] + (Y.shape[i],) + Y.ranks[i + 1:]
        mats = list(Y.factors)
        mats[i] = None
        out = out + multi_mode_product(fold((F @ Q) @ Q.T, i, term_shape), mats)
    return out


def normal_component_norm(Y: TuckerTensor, Z) -> float:
    """``ε = ‖(I − P(Y))Z‖``, computed from the difference ``Z − P(Y)Z``."""
    Z = _check_point(Y, Z)
    return float(np.linalg.norm(Z - tangent_projection(Y, Z)))


def manifold_dim(shape, ranks) -> int:
    """``∏ r_i + Σ r_i (n_i − r_i)``: the dimension of the manifold of tensors of ``shape`` with
    multilinear rank ``ranks``; ``ValueError`` unless ``r_i ≤ n_i`` and the ranks are feasible."""
    shape = tuple(int(n) for n in shape)
    ranks = check_ranks(ranks, shape)
    if not is_feasible(ranks):
        raise ValueError(f"ranks must be feasible (r_i <= prod_(j!=i) r_j, docs/theory.md §1), got {ranks}: "
                         "no tensor has that multilinear rank")
    return math.prod(ranks) + sum(r * (n - r) for n, r in zip(shape, ranks))


def random_tangent_vector(Y: TuckerTensor, rng: np.random.Generator) -> TangentVector:
    """A random tangent vector at ``Y`` (Gaussian ``δC``, Gaussian ``δU_i`` projected to ``U_i^⊥``)."""
    _check_point(Y)
    check_rng(rng)
    dcore = rng.standard_normal(Y.ranks).astype(Y.dtype)
    dfactors = []
    for U in Y.factors:
        V = rng.standard_normal(U.shape).astype(Y.dtype)
        dfactors.append(V - U @ (U.T @ V))
    return TangentVector(dcore, dfactors)
