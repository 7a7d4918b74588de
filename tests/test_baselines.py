"""The baseline steps (tucker_ref.integrators.baselines): formulas, factored forms against
dense references, input handling. Their comparison with TDLRT is in test_guarantees.py
(full rank) and test_robustness.py (small singular values)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tucker_ref import TuckerTensor, multi_mode_product, unfold
from tucker_ref.integrators.baselines import (
    BaselineReport,
    direct_euler_step,
    full_sgd_step,
    naive_factor_step,
    riemannian_gd_step,
)
from tucker_ref.integrators.oracle import DenseGradient
from tucker_ref.manifold import tangent_projection, tangent_vector
from tucker_ref.testing.problems import QuadraticRegression
from tucker_ref.testing.strategies import seeds, tucker_tensors, unfolding_condition_numbers
from tucker_ref.truncation import hosvd

EPS = np.finfo(np.float64).eps
STEPS = [naive_factor_step, riemannian_gd_step, direct_euler_step]


def norm(x) -> float:
    return float(np.linalg.norm(x))


def rounding(Y: TuckerTensor, c: float = 10.0) -> float:
    """Relative rounding of a few chains of ``d`` mode products with ``n × k`` orthonormal
    matrices (``~n·eps`` each)."""
    return c * Y.ndim * max(Y.shape) * EPS


def kron_others(factors, i):
    """``⊗_{j≠i} U_j`` in increasing mode order (the Kronecker identity of the C-order unfolding)."""
    out = np.ones((1, 1))
    for j, U in enumerate(factors):
        if j != i:
            out = np.kron(out, U)
    return out


# =======================================================================================
# full SGD
# =======================================================================================
@given(Y=tucker_tensors(2, 4, 1, 4), seed=seeds(), lr=st.floats(0.0, 3.0))
def test_full_sgd_is_explicit_euler_for_every_gradient_form(Y, seed, lr):
    p = QuadraticRegression.random(Y.shape, 7, np.random.default_rng(seed))
    W = Y.full()
    G = p.gradient(W)
    expected = W - lr * G
    for grad in (G, p.gradient, DenseGradient(G)):
        W1, report = full_sgd_step(W, grad, lr, loss=p.loss)
        assert np.array_equal(W1, expected)
        assert report.method == "full_sgd" and report.loss_before == p.loss(W) and report.loss_after == p.loss(W1)


# =======================================================================================
# naive factor training
# =======================================================================================
@given(Y=tucker_tensors(2, 4, 1, 4), seed=seeds(), lr=st.floats(0.0, 1.0), distort=st.floats(0.0, 0.5))
def test_naive_factor_step_is_sgd_on_core_and_factors(Y, seed, lr, distort):
    """Explicit Kronecker formulas ``∂/∂C = G ×_i U_i^T``, ``∂/∂U_i = Mat_i(G)(⊗_{j≠i}U_j)Mat_i(C)^T``,
    checked also as the gradient of ``(C, U) ↦ L(C ×_i U_i)`` by a central difference, for
    factors that are *not* orthonormal (after a naive step they are not)."""
    rng = np.random.default_rng(seed)
    Y = TuckerTensor(Y.core, [U + distort * rng.standard_normal(U.shape) for U in Y.factors])
    p = QuadraticRegression.random(Y.shape, 7, rng)
    G = p.gradient(Y.full())
    dC = multi_mode_product(G, Y.factors, transpose=True)
    dU = [unfold(G, i) @ kron_others(Y.factors, i) @ unfold(Y.core, i).T for i in range(Y.ndim)]
    Y1, report = naive_factor_step(Y, p.grad_callable, lr)
    scale = norm(Y.core) * max(1.0, max(norm(U) for U in Y.factors)) ** Y.ndim
    assert norm(Y1.core - (Y.core - lr * dC)) <= rounding(Y) * (norm(Y.core) + lr * norm(dC))
    for U, U1, g in zip(Y.factors, Y1.factors, dU):
        assert norm(U1 - (U - lr * g)) <= rounding(Y) * (norm(U) + lr * norm(g))
    # Central difference of φ(C, U) = L(C ×_i U_i) along a random direction: L is quadratic in
    # W and W multilinear in (C, U), so φ is a polynomial; h = 1e-5 leaves an O(h²) error.
    dirs = [rng.standard_normal(Y.core.shape)] + [rng.standard_normal(U.shape) for U in Y.factors]

    def phi(t):
        return p.loss(multi_mode_product(Y.core + t * dirs[0], [U + t * V for U, V in zip(Y.factors, dirs[1:])]))

    h = 1e-5
    fd = (phi(h) - phi(-h)) / (2 * h)
    analytic = np.vdot(dC, dirs[0]) + sum(np.vdot(g, V) for g, V in zip(dU, dirs[1:]))
    assert abs(fd - analytic) <= 1e-6 * (abs(analytic) + scale * norm(G) + 1.0)
    assert report.method == "naive_factor" and report.ranks_after == Y.ranks


# =======================================================================================
# Riemannian GD, factored, against the dense formula
# =======================================================================================
@given(Y=tucker_tensors(2, 4, 1, 5, min_sigma=1e-2), seed=seeds(), lr=st.floats(0.0, 2.0))
def test_riemannian_step_equals_dense_hosvd_of_projected_step(Y, seed, lr):
    G = np.random.default_rng(seed).standard_normal(Y.shape)
    X = Y.full() - lr * tangent_projection(Y, G)
    reference, ref_report = hosvd(X, ranks=Y.ranks)
    # The retraction is well defined (and both computations agree) only with a gap after r_i.
    gap = math.inf
    for i, r in enumerate(Y.ranks):
        s = np.linalg.svd(unfold(X, i), compute_uv=False)
        gap = min(gap, (s[r - 1] - (s[r] if r < len(s) else 0.0)) / s[0])
    assume(gap >= 1e-6)
    Y1, report = riemannian_gd_step(Y, G, lr)
    cond = max(unfolding_condition_numbers(Y.core))
    tol = rounding(Y) * cond * (norm(Y.full()) + lr * norm(G)) / gap
    assert norm(Y1.full() - reference.full()) <= tol
    assert abs(report.eta - norm(X - Y1.full())) <= tol
    assert Y1.ranks == Y.ranks
    assert report.orthonormality_defect <= rounding(Y)


# =======================================================================================
# direct Euler on the factor equations
# =======================================================================================
@given(Y=tucker_tensors(2, 4, 1, 5, min_sigma=1e-2), seed=seeds(), lr=st.floats(0.0, 1.0))
def test_direct_euler_step_uses_the_tangent_vector_factors(Y, seed, lr):
    G = np.random.default_rng(seed).standard_normal(Y.shape)
    tv = tangent_vector(Y, G)
    cond = max(unfolding_condition_numbers(Y.core))
    Y1, report = direct_euler_step(Y, G, lr)
    assert norm(Y1.core - (Y.core - lr * tv.dcore)) <= rounding(Y) * (norm(Y.core) + lr * norm(G))
    for U, U1, dU in zip(Y.factors, Y1.factors, tv.dfactors):
        assert norm(U1 - (U - lr * dU)) <= rounding(Y) * cond * (1 + lr * norm(dU))
    # Re-orthonormalized: the same tensor with orthonormal factors (QR, R into the core).
    Y1q, report_q = direct_euler_step(Y, G, lr, reorthonormalize=True)
    assert report_q.orthonormality_defect <= rounding(Y)
    assert norm(Y1q.full() - Y1.full()) <= rounding(Y) * cond * norm(Y1.full())
    # Without it the factors drift off the Stiefel manifold by λ²‖δU_i^TδU_i‖ (U^T δU = 0), on
    # top of the input's own rounding-level defect. U1^T U1 is a product of two factors of norm
    # up to 1 + λ‖δU‖, so its rounding scales with the square (dev-profile counterexample: a
    # drift of 9480 computed to 4e-16 relative, 2e-12 absolute).
    # U^T δU = 0 holds to the rounding of δU, so the cross term 2λ‖U^T δU‖ is added as
    # measured (dev-profile counterexample: at full rank δU is pure rounding, ~4e-15, and the
    # cross term is all of the defect).
    defect0 = max(norm(U.T @ U - np.eye(U.shape[1])) for U in Y.factors)
    drift = max(norm(dU.T @ dU) for dU in tv.dfactors) * lr**2
    cross = max(2 * lr * norm(U.T @ dU) for U, dU in zip(Y.factors, tv.dfactors))
    assert report.orthonormality_defect <= defect0 + drift + cross + rounding(Y) * cond * (
        1 + lr * max(norm(d) for d in tv.dfactors)) ** 2


@given(Y=tucker_tensors(2, 4, 2, 5, min_sigma=1e-2), seed=seeds())
def test_direct_euler_and_riemannian_agree_to_first_order(Y, seed):
    """Both follow ``−P(Y)∇L`` to first order: their difference from ``Y − λPG`` is ``O(λ²)``
    (halving λ divides it by 4), while the Riemannian step's is the retraction error."""
    G = np.random.default_rng(seed).standard_normal(Y.shape)
    PG = tangent_projection(Y, G)
    assume(norm(PG) > 1e-3 * norm(G))
    # The manifold's curvature is ~1/σ_min, so the O(λ³) terms are λ‖G‖/σ_min times the O(λ²)
    # ones: λ is scaled by σ_min to stay in the quadratic regime (with λ ∝ ‖Y‖ a dev-profile
    # draw with σ_min ≈ 1e-2 halved the error by only 3.0).
    sigma_min = min(np.linalg.svd(unfold(Y.core, i), compute_uv=False)[-1] for i in range(Y.ndim))
    lr = 1e-3 * sigma_min / norm(G)
    errs = []
    for step in (lr, lr / 2):
        linear = Y.full() - step * PG
        errs.append([norm(direct_euler_step(Y, G, step)[0].full() - linear),
                     norm(riemannian_gd_step(Y, G, step)[0].full() - linear)])
    errs = np.array(errs)
    assume(np.all(errs > 1e3 * rounding(Y) * norm(Y.full())))  # above rounding
    ratios = errs[0] / errs[1]
    assert np.all((ratios > 3.5) & (ratios < 4.5)), ratios


# =======================================================================================
# dtype, reports, bad input
# =======================================================================================
@pytest.mark.parametrize("step", STEPS)
def test_float32_is_kept(step):
    rng = np.random.default_rng(3)
    Y = TuckerTensor(rng.standard_normal((2, 2, 2)), [np.linalg.qr(rng.standard_normal((4, 2)))[0]] * 3)
    Y = Y.orthonormalize().astype(np.float32)
    Y1, _ = step(Y, rng.standard_normal(Y.shape).astype(np.float32), 0.1)
    assert Y1.dtype == np.float32
    W1, _ = full_sgd_step(Y.full(), rng.standard_normal(Y.shape).astype(np.float32), 0.1)
    assert W1.dtype == np.float32


def test_report_to_dict_is_json_ready():
    rng = np.random.default_rng(0)
    Y = TuckerTensor(rng.standard_normal((2, 2)), [np.linalg.qr(rng.standard_normal((3, 2)))[0]] * 2)
    p = QuadraticRegression.random(Y.shape, 5, rng)
    for step in STEPS:
        _, report = step(Y, p.grad_callable, 0.1, loss=p.loss_callable)
        assert isinstance(report, BaselineReport)
        data = json.loads(json.dumps(report.to_dict()))
        assert data["ranks_before"] == [2, 2] and data["loss_after"] == report.loss_after


def _point():
    rng = np.random.default_rng(1)
    return TuckerTensor(rng.standard_normal((2, 2)), [np.linalg.qr(rng.standard_normal((3, 2)))[0]] * 2)


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_gradient_raises_and_leaves_y_unchanged(step, bad):
    Y = _point()
    before = Y.copy()
    G = np.ones(Y.shape)
    G[1, 0] = bad
    for grad in (G, lambda point: G):
        with pytest.raises(ValueError, match=f"{step.__name__}.*grad"):
            step(Y, grad, 0.1)
        assert np.array_equal(Y.core, before.core)
        assert all(np.array_equal(U, V) for U, V in zip(Y.factors, before.factors))
    with pytest.raises(ValueError, match="full_sgd_step: grad"):
        full_sgd_step(Y.full(), G, 0.1)


@pytest.mark.parametrize("step", STEPS)
def test_negative_lr_and_wrong_shapes_raise(step):
    Y = _point()
    with pytest.raises(ValueError, match="lr"):
        step(Y, np.ones(Y.shape), -0.1)
    with pytest.raises(ValueError, match="shape"):
        step(Y, np.ones((3, 4)), 0.1)
    with pytest.raises(TypeError, match="Y must be a TuckerTensor"):
        step(Y.full(), np.ones(Y.shape), 0.1)
    with pytest.raises(ValueError, match="lr"):
        full_sgd_step(Y.full(), np.ones(Y.shape), -1.0)
    with pytest.raises(ValueError, match="shape of W"):
        full_sgd_step(Y.full(), np.ones((3, 4)), 0.1)


def test_riemannian_requires_orthonormal_factors():
    Y = _point()
    Y = TuckerTensor(Y.core, [2 * U for U in Y.factors])
    with pytest.raises(ValueError, match="orthonormal"):
        riemannian_gd_step(Y, np.ones(Y.shape), 0.1)


def test_full_sgd_needs_a_dense_gradient():
    class NoDense:
        def core_gradient(self, bases):
            raise AssertionError("not used")

        def mode_partial_gradient(self, mode, factors=None):
            raise AssertionError("not used")

    with pytest.raises(ValueError, match="dense gradient"):
        full_sgd_step(np.ones((2, 2)), NoDense(), 0.1)


def test_direct_euler_overflow_raises_floating_point_error_and_leaves_y_unchanged():
    Y = TuckerTensor(np.diag([1.0, 1e-10]), [np.eye(3)[:, :2], np.eye(3)[:, :2]])
    before = Y.copy()
    G = np.zeros((3, 3))
    G[2, 1] = 1e300  # pushes U_0 along e_3 through Mat_0(C)^+ ~ 1e10: overflows
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(FloatingPointError, match="direct_euler_step"):
        direct_euler_step(Y, G, 1.0)
    assert np.array_equal(Y.core, before.core)
    assert all(np.array_equal(U, V) for U, V in zip(Y.factors, before.factors))
    with pytest.raises(TypeError, match="reorthonormalize"):
        direct_euler_step(Y, G, 0.1, reorthonormalize="yes")
