"""Geometry of the fixed-rank Tucker manifold (spec §1).

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

from ._checks import as_float_array, check_ranks, eps_of
from .tucker import TuckerTensor, multi_mode_product, unfold

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
    if not isinstance(Y, TuckerTensor):
        raise TypeError(f"Y must be a TuckerTensor, got {type(Y).__name__}")
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


def tangent_vector(Y: TuckerTensor, Z) -> TangentVector:
    """Factors ``(δC, δU_i)`` of the orthogonal projection ``P(Y)Z`` (formulas in the module docstring)."""
    Z = _check_point(Y, Z)
    dcore = Y.project(Z)
    dfactors = []
    for i, U in enumerate(Y.factors):
        mats = list(Y.factors)
        mats[i] = None
        N = unfold(multi_mode_product(Z, mats, transpose=True), i)
        N = N - U @ (U.T @ N)
        dfactors.append(N @ core_unfolding_pinv(Y.core, i))
    return TangentVector(dcore, dfactors)


def tangent_projection(Y: TuckerTensor, Z) -> np.ndarray:
    """Orthogonal projection ``P(Y)Z`` onto the tangent space at ``Y``, as a dense tensor."""
    return tangent_vector(Y, Z).to_dense(Y)


def normal_component_norm(Y: TuckerTensor, Z) -> float:
    """``ε = ‖(I − P(Y))Z‖``, computed from the difference ``Z − P(Y)Z``."""
    Z = _check_point(Y, Z)
    return float(np.linalg.norm(Z - tangent_projection(Y, Z)))


def manifold_dim(shape, ranks) -> int:
    """``∏ r_i + Σ r_i (n_i − r_i)``: the dimension of the manifold of tensors of ``shape`` with
    multilinear rank ``ranks`` (feasible ranks, full-rank core unfoldings)."""
    shape = tuple(int(n) for n in shape)
    ranks = check_ranks(ranks, shape)
    return math.prod(ranks) + sum(r * (n - r) for n, r in zip(shape, ranks))


def random_tangent_vector(Y: TuckerTensor, rng: np.random.Generator) -> TangentVector:
    """A random tangent vector at ``Y`` (Gaussian ``δC``, Gaussian ``δU_i`` projected to ``U_i^⊥``)."""
    _check_point(Y)
    if not isinstance(rng, np.random.Generator):
        raise TypeError("rng must be a numpy.random.Generator (seed it for reproducibility)")
    dcore = rng.standard_normal(Y.ranks).astype(Y.dtype)
    dfactors = []
    for U in Y.factors:
        V = rng.standard_normal(U.shape).astype(Y.dtype)
        dfactors.append(V - U @ (U.T @ V))
    return TangentVector(dcore, dfactors)
