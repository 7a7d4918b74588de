"""Baseline training steps that TDLRT is compared with (docs/algorithms.md#variants).

Same calling convention as the integrator steps of :mod:`.steps`: ``step(Y, grad, lr, …)``
returns ``(Y_new, BaselineReport)``; ``grad`` is the dense gradient at ``Y`` (ndarray), a
gradient oracle at ``Y`` or a callable ``point -> ndarray | oracle`` (:mod:`tucker_ref.gradient_oracle`); a
non-finite gradient or a negative ``lr`` raises ``ValueError`` and leaves ``Y`` unchanged
(no step mutates its input).

* :func:`full_sgd_step` — SGD on the dense tensor, ``W ← W − λ∇L(W)`` (docs/theory.md §2).
* :func:`naive_factor_step` — SGD directly on core and factors ("vanilla Tucker" training),
  factors *not* re-orthonormalized.
* :func:`riemannian_gd_step` — ``Y − λ P(Y)∇L``, retracted by HOSVD to the same ranks, in
  factored form.
* :func:`direct_euler_step` — explicit Euler on the factor equations of the projected flow
  (docs/theory.md §2), the scheme whose ``Mat_i(C)^+`` makes it stiff; by default *without*
  re-orthonormalization (the plain Euler scheme), optionally with a QR after each step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .. import linalg
from ..checks import as_float_array, check_instance
from ..manifold import core_unfolding_pinv
from ..truncation import hosvd
from ..tucker import TuckerTensor, multi_mode_product
from .oracle import (
    as_gradient_oracle,
    check_point,
    checked_core_gradient,
    checked_mode_partial,
    dense_gradient_or_none,
    is_gradient_callable,
    loss_at,
    oracle_at,
    step_label,
)
from .substeps import check_lr, u_gradient


@dataclass
class BaselineReport:
    """What one baseline step did.

    Attributes
    ----------
    method : str
        ``"full_sgd"``, ``"naive_factor"``, ``"riemannian_gd"`` or ``"direct_euler"``.
    ranks_before, ranks_after : tuple of int
        Multilinear ranks (the shape for ``"full_sgd"``); no baseline changes them.
    eta : float
        Retraction error ``‖(Y − λP(Y)∇L) − Y_new‖`` (HOSVD, computed directly) for
        ``"riemannian_gd"``; ``0`` for the others (they do not truncate).
    orthonormality_defect : float
        ``max_i ‖U_i^T U_i − I‖_2`` of the returned factors (``0`` for ``"full_sgd"``): how far
        a scheme without re-orthonormalization has drifted.
    loss_before, loss_after : float or None
        When a ``loss`` callable was given.
    """

    method: str
    ranks_before: tuple
    ranks_after: tuple
    eta: float
    orthonormality_defect: float
    loss_before: float | None
    loss_after: float | None

    def to_dict(self) -> dict:
        """Plain Python types only, for ``json.dumps``."""
        out = asdict(self)
        out["ranks_before"] = [int(r) for r in out["ranks_before"]]
        out["ranks_after"] = [int(r) for r in out["ranks_after"]]
        return out


def _orthonormality_defect(Y: TuckerTensor) -> float:
    return max(float(np.linalg.norm(U.T @ U - np.eye(U.shape[1], dtype=U.dtype), 2)) for U in Y.factors)


def _report(method, Y, Y_new, loss, loss_before, eta=0.0) -> BaselineReport:
    return BaselineReport(method=method, ranks_before=Y.ranks, ranks_after=Y_new.ranks, eta=float(eta),
                          orthonormality_defect=_orthonormality_defect(Y_new), loss_before=loss_before,
                          loss_after=loss_at(loss, Y_new))


def _projected_flow_factors(Y: TuckerTensor, oracle, step: str):
    """Right-hand side of the factor equations of ``Ẏ = −P(Y)∇L(Y)`` (docs/theory.md §2), sign omitted.

    ``δC = G ×_j U_j^T`` and ``δU_i = (I − U_iU_i^T) N_i Mat_i(C)^+`` with
    ``N_i = Mat_i(G ×_{j≠i} U_j^T)`` from the oracle and the pseudo-inverse of
    :func:`tucker_ref.manifold.core_unfolding_pinv`. For orthonormal factors these are the
    factors of ``P(Y)G`` (:func:`tucker_ref.manifold.tangent_vector`, which needs the dense
    ``G``; this form needs only the oracle).
    """
    dcore = checked_core_gradient(oracle, Y.factors, step, Y.dtype)
    dfactors = []
    for i, U in enumerate(Y.factors):
        N = checked_mode_partial(oracle, Y, i, step)
        dfactors.append((N - U @ (U.T @ N)) @ core_unfolding_pinv(Y.core, i))
    return dcore, dfactors


# ---------------------------------------------------------------------------------------
# full training
# ---------------------------------------------------------------------------------------
def full_sgd_step(W, grad, lr, *, loss=None):
    """Plain SGD on the dense tensor: ``W_1 = W − λ∇L(W)``, explicit Euler on ``Ẇ = −∇L`` (docs/theory.md §2).

    Parameters
    ----------
    W : ndarray, shape ``(n_1, …, n_d)``
    grad : ndarray of ``W``'s shape, an oracle with ``dense_gradient()``, or a callable
        ``W -> ndarray | oracle`` (called with the dense ``W``)
    lr : float ``≥ 0``
    loss : callable ``W -> float``, optional

    Returns
    -------
    (ndarray, BaselineReport)
    """
    step = "full_sgd_step"
    W = as_float_array(W, f"{step}: W")
    lr = check_lr(lr)
    g = grad(W) if is_gradient_callable(grad) else grad
    G = g if isinstance(g, np.ndarray) else dense_gradient_or_none(as_gradient_oracle(g, name=f"{step}: grad"))
    if G is None:
        raise ValueError(f"{step}: grad must provide the dense gradient (an ndarray, or an oracle with "
                         f"dense_gradient()), got {type(g).__name__} without it")
    G = as_float_array(G, f"{step}: grad")
    if G.shape != W.shape:
        raise ValueError(f"{step}: grad must have the shape of W, {W.shape}, got {G.shape}")
    loss_before = None if loss is None else float(loss(W))
    W_new = W - lr * G.astype(W.dtype, copy=False)
    return W_new, BaselineReport(method="full_sgd", ranks_before=W.shape, ranks_after=W.shape, eta=0.0,
                                 orthonormality_defect=0.0, loss_before=loss_before,
                                 loss_after=None if loss is None else float(loss(W_new)))


# ---------------------------------------------------------------------------------------
# naive factor training
# ---------------------------------------------------------------------------------------
def naive_factor_step(Y: TuckerTensor, grad, lr, *, loss=None, name: str | None = None):
    """SGD directly on core and factors of ``Y = C ×_i U_i`` ("vanilla Tucker" training).

    The Euclidean gradients of ``(C, U_1, …, U_d) ↦ L(C ×_i U_i)`` (chain rule through the
    Kronecker identity; valid for any, not only orthonormal, factors):

        C ← C − λ G ×_i U_i^T,     U_i ← U_i − λ N_i Mat_i(C)^T   (all from the same ``Y``),

    with ``N_i = Mat_i(G ×_{j≠i} U_j^T)`` and :func:`.substeps.u_gradient`. The factors are
    **not** re-orthonormalized — that is the baseline. Its factor directions move at a rate
    proportional to the core singular values (``∇_{U_i}L = ∇_{K_i}L S_i^T``), which is what
    the robustness tests compare with TDLRT; and it is not full SGD even at full rank (the
    parametrization changes the metric).

    Parameters
    ----------
    Y : TuckerTensor (any factors)
    grad : ndarray | oracle | callable, the gradient at ``Y``
    lr : float ``≥ 0``
    loss : callable point -> float, optional
    name : str, optional — layer name for error messages

    Returns
    -------
    (TuckerTensor, BaselineReport)
    """
    step = step_label("naive_factor_step", name)
    Y = check_instance(Y, TuckerTensor, f"{step}: Y")
    lr = check_lr(lr)
    oracle = oracle_at(grad, Y, step)
    loss_before = loss_at(loss, Y)
    dcore = checked_core_gradient(oracle, Y.factors, step, Y.dtype)
    factors = [U - lr * u_gradient(checked_mode_partial(oracle, Y, i, step), Y.core, i) for i, U in enumerate(Y.factors)]
    Y_new = TuckerTensor(Y.core - lr * dcore, factors)
    return Y_new, _report("naive_factor", Y, Y_new, loss, loss_before)


# ---------------------------------------------------------------------------------------
# Riemannian gradient descent with HOSVD retraction
# ---------------------------------------------------------------------------------------
def riemannian_gd_step(Y: TuckerTensor, grad, lr, *, loss=None, name: str | None = None):
    """``Y_1 = HOSVD_r(Y − λ P(Y)∇L(Y))`` with the ranks ``r`` of ``Y``, in factored form.

    ``Y − λP(Y)G = (C − λδC) ×_i U_i + Σ_i C ×_i (−λδU_i) ×_{j≠i} U_j`` (factors of
    :func:`_projected_flow_factors`) is a Tucker tensor in the bases ``B_i = [U_i, δU_i]``
    (``2r_i`` columns) whose ``2r_1 × ⋯ × 2r_d`` core ``Z`` has ``C − λδC`` in the leading block
    and ``−λC`` in the block that takes the second half of mode ``i`` and the first half of
    the others. With ``B_i = Q_i R_i`` (reduced QR; ``min(n_i, 2r_i)`` columns) the tensor is
    ``(Z ×_i R_i) ×_i Q_i``, and since the ``Q_i`` are orthonormal its HOSVD is that of the
    small core ``Z ×_i R_i`` mapped back by ``Q_i``: factors ``Q_i P_i``, core ``(Z ×_i R_i)
    ×_i P_i^T``. Nothing of size ``∏ n_i`` is formed.

    Parameters
    ----------
    Y : TuckerTensor with orthonormal factors (checked), feasible ranks
    grad : ndarray | oracle | callable, the gradient at ``Y``
    lr : float ``≥ 0``
    loss : callable point -> float, optional
    name : str, optional

    Returns
    -------
    (TuckerTensor, BaselineReport)
        Same ranks as ``Y``; ``report.eta`` is the HOSVD retraction error.
    """
    step = step_label("riemannian_gd_step", name)
    Y = check_point(Y, step)
    lr = check_lr(lr)
    oracle = oracle_at(grad, Y, step)
    loss_before = loss_at(loss, Y)
    dcore, dfactors = _projected_flow_factors(Y, oracle, step)
    r = Y.ranks
    Z = np.zeros(tuple(2 * k for k in r), dtype=Y.dtype)
    Z[tuple(slice(0, k) for k in r)] = Y.core - lr * dcore
    for i, k in enumerate(r):
        Z[tuple(slice(k, 2 * k) if j == i else slice(0, rj) for j, rj in enumerate(r))] = -lr * Y.core
    qrs = [linalg.qr(np.concatenate([U, dU], axis=1)) for U, dU in zip(Y.factors, dfactors)]
    small, trunc = hosvd(multi_mode_product(Z, [R for _, R in qrs]), ranks=r)
    Y_new = TuckerTensor(small.core, [Q @ P for (Q, _), P in zip(qrs, small.factors)])
    return Y_new, _report("riemannian_gd", Y, Y_new, loss, loss_before, eta=trunc.error)


# ---------------------------------------------------------------------------------------
# explicit Euler on the factor equations
# ---------------------------------------------------------------------------------------
def direct_euler_step(Y: TuckerTensor, grad, lr, *, reorthonormalize: bool = False, loss=None,
                      name: str | None = None):
    """Explicit Euler on the factor equations of ``Ẏ = −P(Y)∇L(Y)`` (docs/theory.md §2, the "direct" scheme).

        C ← C − λ G ×_j U_j^T,     U_i ← U_i − λ (I − U_iU_i^T) N_i Mat_i(C)^+

    (all from the same ``Y``; ``Mat_i(C)^+`` by :func:`tucker_ref.manifold.core_unfolding_pinv`).
    The ``1/σ_min(Mat_i(C))`` in the factor update makes the scheme unstable once ``λ`` exceeds
    a few ``σ_min``. **Default: no re-orthonormalization** (plain explicit Euler; the factors
    drift off the Stiefel manifold at ``O(λ²)`` per step, see ``report.orthonormality_defect``,
    and the next step's ``(I − U_iU_i^T)`` is then not a projector). With
    ``reorthonormalize=True`` every factor is replaced by ``Q_i`` of ``U_i = Q_i R_i`` and the
    core by ``C ×_i R_i`` (:meth:`TuckerTensor.orthonormalize`, the tensor is unchanged).

    Parameters
    ----------
    Y : TuckerTensor (any factors; the equations assume orthonormal ones)
    grad : ndarray | oracle | callable, the gradient at ``Y``
    lr : float ``≥ 0``
    reorthonormalize : bool, default False
    loss : callable point -> float, optional
    name : str, optional

    Returns
    -------
    (TuckerTensor, BaselineReport)

    Raises
    ------
    FloatingPointError
        When the update overflows (the unstable regime); ``Y`` is unchanged.
    """
    step = step_label("direct_euler_step", name)
    Y = check_instance(Y, TuckerTensor, f"{step}: Y")
    lr = check_lr(lr)
    if not isinstance(reorthonormalize, bool):
        raise TypeError(f"{step}: reorthonormalize must be a bool, got {reorthonormalize!r}")
    oracle = oracle_at(grad, Y, step)
    loss_before = loss_at(loss, Y)
    dcore, dfactors = _projected_flow_factors(Y, oracle, step)
    core = Y.core - lr * dcore
    factors = [U - lr * dU for U, dU in zip(Y.factors, dfactors)]
    if not (np.all(np.isfinite(core)) and all(np.all(np.isfinite(U)) for U in factors)):
        raise FloatingPointError(f"{step}: the step overflowed (non-finite core or factors); the scheme is "
                                 "unstable for this lr relative to the core's smallest singular values")
    Y_new = TuckerTensor(core, factors)
    if reorthonormalize:
        Y_new = Y_new.orthonormalize()
    return Y_new, _report("direct_euler", Y, Y_new, loss, loss_before)


__all__ = ["BaselineReport", "direct_euler_step", "full_sgd_step", "naive_factor_step", "riemannian_gd_step"]
