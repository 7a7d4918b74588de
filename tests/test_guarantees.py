"""Property tests of the guarantees of docs/theory.md §5 for the TDLRT step (and its baselines at full rank).

Every test draws its point with ``tucker_ref.testing.strategies`` (seeded, feasible ranks,
core unfoldings of full row rank with a controlled condition number) and its loss from
``tucker_ref.testing.problems`` (known smoothness). The η used in the bounds is the step's
measured ``report.eta``, never ϑ. Tolerances are rounding margins only; each says why.

The space ``V = ⊗ span Û_i`` is rebuilt with ``integrators.steps.augmented_bases`` (the public
substeps, as the step composes them); every test that uses it first checks it is the step's
(``‖G ×_i Û_i^T‖ = proj_grad_norm`` and ``‖Ŷ1 − Y1‖ = η``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from tucker_ref import TuckerTensor, fold, multi_mode_product, unfold
from tucker_ref.integrators.baselines import (
    direct_euler_step,
    full_sgd_step,
    naive_factor_step,
    riemannian_gd_step,
)
from tucker_ref.integrators.steps import augmented_bases, fixed_rank_bug_step, tdlrt_step
from tucker_ref.integrators.substeps import truncate_step
from tucker_ref.manifold import random_tangent_vector, tangent_projection
from tucker_ref.testing.oracles import central_difference, relative_error
from tucker_ref.testing.problems import (
    LinearLoss,
    MovingTarget,
    QuadraticRegression,
    SoftmaxRegression,
    TuckerRegression,
    core_with_mode_spectrum,
    subspace_projection,
)
from tucker_ref.testing.strategies import (
    DrawTally,
    conditioned_core,
    feasible_ranks_for,
    random_orthonormal,
    random_tucker,
    seeds,
    shapes,
    tucker_example,
    tucker_tensors,
    unfolding_condition_numbers,
)
from tucker_ref.truncation import is_feasible, tail_norms

EPS = np.finfo(np.float64).eps

#: Descent is the cheapest guarantee to check and the one most worth many draws: 8× the
#: profile's budget (200 in "ci", 4000 in "dev").
DESCENT_EXAMPLES = 8 * settings.default.max_examples

TAUS = st.sampled_from([0.0, 1e-3, 1e-2, 0.1, 0.3])


def norm(x) -> float:
    return float(np.linalg.norm(x))


def rounding(Y: TuckerTensor, c: float = 10.0) -> float:
    """Relative rounding level of one step at ``Y``: each of the ``d`` mode products with an
    (orthonormal) ``n × k`` matrix adds at most ``~n·eps`` relative error; ``c`` covers the
    handful of such chains a step composes."""
    return c * Y.ndim * max(Y.shape) * EPS


def make_problem(kind: str, shape, seed: int):
    """A cheap loss of known smoothness: least squares with a short random map or softmax regression."""
    rng = np.random.default_rng(seed)
    if kind == "quadratic":
        return QuadraticRegression.random(shape, int(rng.integers(1, 41)), rng)
    return SoftmaxRegression.random(shape, int(rng.integers(1, 31)), rng)


def pre_truncation(Y: TuckerTensor, G, lr, variant="k_step"):
    """``(Û, Ŷ1 = Y − λ G ×_i Û_iÛ_i^T)`` (docs/theory.md §4: SGD with the S-step gradient at ``Y0``)."""
    bases = augmented_bases(Y, G, variant)[0]
    return bases, Y.full() - lr * subspace_projection(G, bases)


def assert_space_is_the_steps(Y, G, lr, bases, Y_hat1, Y1, report):
    """The rebuilt ``V`` is the step's: same ``‖ΠG‖`` and ``‖Ŷ1 − Y1‖ = η`` (both to rounding).

    ``Ŷ1 = Y0 − λΠG`` is computed from terms of size ``‖Y0‖`` and ``λ‖ΠG‖``, so its rounding is
    relative to ``‖Y0‖ + λ‖G‖``, not to ``‖Ŷ1‖``, which may nearly cancel (counterexample:
    a difference of 5.1e-17 against a margin of 2.4e-17 from ``‖Ŷ1‖``).
    """
    tol = rounding(Y)
    proj = norm(multi_mode_product(G, bases, transpose=True))
    assert abs(proj - report.proj_grad_norm) <= tol * norm(G)
    assert abs(norm(Y_hat1 - Y1.full()) - report.eta) <= tol * (norm(Y.full()) + lr * norm(G))


def proper_subspace(report, G) -> bool:
    """``V ≠`` the whole space: ``‖(I − Π)G‖ > 1e-8‖G‖`` (far above rounding). Only then are
    ``P(Y0)G ∈ V`` and ``‖ΠG‖ ≥ ‖P(Y0)G‖`` more than ``G ∈ V`` and ``‖G‖ ≥ ‖P(Y0)G‖``."""
    return report.residual_norm > 1e-8 * norm(G)


def truncated(report, Y, G, lr) -> bool:
    """Something above rounding was truncated: ``η > 1e-10 (‖Y0‖ + λ‖G‖)``."""
    return report.eta > 1e-10 * (norm(Y.full()) + lr * norm(G))


# =======================================================================================
# the test problems themselves
# =======================================================================================
@given(shape=shapes(2, 4, 1, 4), seed=seeds(), kind=st.sampled_from(["quadratic", "softmax"]))
def test_problem_gradients_match_central_differences(shape, seed, kind):
    p = make_problem(kind, shape, seed)
    rng = np.random.default_rng(seed + 1)
    W, V = rng.standard_normal(shape), rng.standard_normal(shape)
    h = 1e-5
    g = p.gradient(W)
    fd = central_difference(p.loss, W, V, h)
    # Quadratic: exact up to the rounding of the two loss values (eps·|L|/h); softmax: plus an
    # O(h²) truncation error, measured against the scale ‖∇L‖‖V‖ of directional derivatives.
    assert abs(fd - np.vdot(g, V)) <= 1e-7 * norm(g) * norm(V) + 100 * EPS * abs(p.loss(W)) / h


@given(shape=shapes(2, 4, 1, 4), seed=seeds(), kind=st.sampled_from(["quadratic", "softmax"]))
def test_problem_smoothness_constant_bounds_gradient_differences(shape, seed, kind):
    p = make_problem(kind, shape, seed)
    rng = np.random.default_rng(seed + 2)
    for _ in range(3):
        W, V = 3 * rng.standard_normal(shape), 3 * rng.standard_normal(shape)
        assert norm(p.gradient(W) - p.gradient(V)) <= p.smoothness * norm(W - V) * (1 + 1e-12)
    if kind == "quadratic":
        # Exact: attained along the top right singular vector of A.
        v = np.linalg.svd(p.A)[2][0].reshape(shape)
        assert relative_error(norm(p.gradient(W + v) - p.gradient(W)), p.smoothness) <= 1e-12
        assert p.smoothness_is_exact and p.convex
    else:
        # The bound ‖X‖²/(2s) holds for the Hessian along its top direction (power iteration
        # on Hessian-vector products from central differences of the gradient).
        v = rng.standard_normal(shape)
        for _ in range(30):
            hv = (p.gradient(W + 1e-5 * v) - p.gradient(W - 1e-5 * v)) / 2e-5
            if norm(hv) == 0:
                break
            v = hv / norm(hv)
        assert norm(hv) <= p.smoothness * (1 + 1e-6)
        assert not p.smoothness_is_exact and p.convex


@given(Y=tucker_tensors(2, 3, 1, 4, min_sigma=0.1), seed=seeds())
def test_tucker_regression_plants_a_unique_minimiser(Y, seed):
    rng = np.random.default_rng(seed)
    N = math.prod(Y.shape)
    p = TuckerRegression(rng.standard_normal((2 * N, N)), Y)
    assert p.loss(Y.full()) <= 1e-20 * max(1.0, norm(p.b) ** 2)
    assert norm(p.gradient(Y.full())) <= 1e-12 * norm(p.A) ** 2 * norm(Y.full())
    assert p.strong_convexity > 0
    svals = [np.linalg.svd(unfold(Y.full(), i), compute_uv=False) for i in range(Y.ndim)]
    expected = min(s[r - 1] for s, r in zip(svals, Y.ranks)) / norm(Y.full())
    assert relative_error(p.tau_bound, expected) <= 1e-12


def test_problem_constructors_reject_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="A must have prod"):
        QuadraticRegression(np.ones((3, 5)), np.ones(3), (2, 3))
    with pytest.raises(ValueError, match="b must have"):
        QuadraticRegression(np.ones((3, 6)), np.ones(4), (2, 3))
    planted = TuckerRegression.random((3, 3), (2, 2), rng).planted
    with pytest.raises(ValueError, match="injective"):
        TuckerRegression(rng.standard_normal((5, 9)), planted)
    with pytest.raises(ValueError, match="injective"):
        TuckerRegression(np.ones((12, 9)), planted)
    with pytest.raises(ValueError, match="oversampling"):
        TuckerRegression.random((3, 3), (2, 2), rng, oversampling=0.5)
    with pytest.raises(ValueError, match="y must hold class indices"):
        SoftmaxRegression(np.ones((4, 6)), np.array([0, 1, 2, 3]), (3, 2, 3))
    with pytest.raises(ValueError, match="X must have"):
        SoftmaxRegression(np.ones((4, 5)), np.zeros(4, dtype=int), (3, 2, 3))
    with pytest.raises(ValueError, match="W must have shape"):
        QuadraticRegression.random((2, 3), 4, rng).loss(np.ones((3, 2)))
    with pytest.raises(ValueError, match="ranks must be feasible"):
        TuckerRegression.random((4, 4, 4), (4, 1, 1), rng)
    with pytest.raises(ValueError, match="skew-symmetric"):
        MovingTarget(np.ones((1, 1)), np.zeros((1, 1)), [np.ones((2, 1)) / np.sqrt(2)] * 2,
                     [np.ones((2, 2))] * 2, 0.1)
    with pytest.raises(ValueError, match="lr must be > 0"):
        MovingTarget.random((3, 3), (1, 1), 0.0, rng)


@given(shape=shapes(2, 4, 2, 5), data=st.data(), seed=seeds())
def test_moving_target_has_fixed_rank_and_one_step_lands_on_the_next_target(shape, data, seed):
    ranks = data.draw(feasible_ranks_for(shape))
    mt = MovingTarget.random(shape, ranks, 0.1, np.random.default_rng(seed), steps=4)
    for k in range(4):
        A = mt.target(k)
        for U in A.factors:
            assert norm(U.T @ U - np.eye(U.shape[1])) <= 1e-13
        for i, r in enumerate(ranks):
            s = np.linalg.svd(unfold(A.core, i), compute_uv=False)
            assert s[r - 1] > 1e-3 * s[0]
        step_loss = mt.step_loss(k)
        assert step_loss.smoothness == 0.0
        landed = A.full() - mt.lr * step_loss.gradient(A.full())
        assert relative_error(landed, mt.target(k + 1).full()) <= 1e-13
    assert isinstance(step_loss, LinearLoss)


# =======================================================================================
# containment (docs/theory.md §3): P(Y0)∇L(Y0) ∈ V, ‖Π∇L‖ ≥ ‖P∇L‖, ‖(I − Π)∇L‖ ≤ ε
# =======================================================================================
#: V fills the whole space (every mode n_i ≤ 2r_i, or full rank) in many unbiased draws.
CONTAINMENT_DRAWS = DrawTally("V is a proper subspace, ||(I - Pi)G|| > 0", minimum=0.6)


@CONTAINMENT_DRAWS.require
@example(Y=tucker_example((7, 6, 5), (3, 2, 2), seed=41), seed=1, scale=0.0)
@example(Y=tucker_example((6, 5, 5, 3), (2, 2, 2, 2), seed=42, min_sigma=1e-2), seed=2, scale=2.0)
@example(Y=tucker_example((7, 5), (2, 2), seed=43, min_sigma=1e-2, spread=0.5), seed=3, scale=-2.0)
@given(Y=tucker_tensors(2, 4, 3, 7, min_sigma=1e-2, min_rank=2, room=True), seed=seeds(), scale=st.floats(-3, 3))
def test_containment_k_step(Y, seed, scale):
    G = 10.0**scale * np.random.default_rng(seed).standard_normal(Y.shape)
    Y1, report = tdlrt_step(Y, G, 0.1)
    bases = augmented_bases(Y, G)[0]
    _, Y_hat1 = pre_truncation(Y, G, 0.1)
    assert_space_is_the_steps(Y, G, 0.1, bases, Y_hat1, Y1, report)
    CONTAINMENT_DRAWS.record(proper_subspace(report, G))
    # P(Y0)G from row-space projectors (accurate at any cond): its part outside V is rounding.
    PG = tangent_projection(Y, G)
    assert norm(PG - subspace_projection(PG, bases)) <= rounding(Y) * norm(G)
    # The step's own diagnostics use manifold.tangent_projection (pseudo-inverse): its
    # rounding grows with cond(Mat_i(C)) (≤ 1/min_sigma here).
    tol = rounding(Y) * max(unfolding_condition_numbers(Y.core)) * norm(G)
    assert report.proj_grad_norm >= report.tangent_grad_norm - tol
    assert report.residual_norm <= report.epsilon + tol


# =======================================================================================
# descent (docs/theory.md §5), many draws, λ up to and beyond 2/L
# =======================================================================================
#: The descent inequality holds for any Galerkin space containing Y0 (even V = span of the old
#: factors); what is step-specific is ‖ΠG‖ ≥ ‖P(Y0)G‖, non-trivial only when V is proper.
DESCENT_DRAWS = DrawTally("V is a proper subspace, ||(I - Pi)G|| > 0", minimum=0.5)


@DESCENT_DRAWS.require
@example(Y=tucker_example((6, 5, 5), (2, 2, 2), seed=51), seed=1, kind="quadratic", lr_factor=1.0, tau=0.1,
         variant="k_step")
@example(Y=tucker_example((5, 6, 4, 3), (2, 2, 2, 2), seed=52), seed=2, kind="softmax", lr_factor=1.5, tau=0.3,
         variant="k_step")
@example(Y=tucker_example((6, 6), (2, 2), seed=53), seed=3, kind="quadratic", lr_factor=2.5, tau=1e-2,
         variant="augmented_gradient")
@settings(max_examples=DESCENT_EXAMPLES)
@given(Y=tucker_tensors(2, 4, 3, 6, min_sigma=1e-2, min_rank=2, room=True), seed=seeds(),
       kind=st.sampled_from(["quadratic", "softmax"]), lr_factor=st.floats(0.01, 3.0), tau=TAUS,
       variant=st.sampled_from(["k_step", "augmented_gradient"]))
def test_descent(Y, seed, kind, lr_factor, tau, variant):
    p = make_problem(kind, Y.shape, seed)
    assume(p.smoothness > 0)
    lr = lr_factor / p.smoothness
    G = p.gradient(Y.full())
    Y1, report = tdlrt_step(Y, G, lr, tau=tau, variant=variant, loss=p.loss_callable)
    bases, Y_hat1 = pre_truncation(Y, G, lr, variant)
    assert_space_is_the_steps(Y, G, lr, bases, Y_hat1, Y1, report)
    DESCENT_DRAWS.record(proper_subspace(report, G), f"eta > 0: {truncated(report, Y, G, lr)}")
    # Containment, the step-specific part: ‖ΠG‖ ≥ ‖P(Y0)G‖ (P from the step's diagnostics, whose
    # rounding grows with cond(Mat_i(C)); augmented_gradient resolves its directions to eps·cond too).
    assert report.proj_grad_norm >= report.tangent_grad_norm - rounding(Y) * max(
        unfolding_condition_numbers(Y.core)) * norm(G)
    L0, L1, Lhat1 = report.loss_before, report.loss_after, p.loss(Y_hat1)
    eta, proj, Ls = report.eta, report.proj_grad_norm, p.smoothness
    grad_hat = norm(p.gradient(Y_hat1))
    if kind == "quadratic":
        # ∇L is affine, so ‖∇L‖ is convex on the segment [Ŷ1, Y1]: B = the larger endpoint norm.
        B = max(grad_hat, norm(p.gradient(Y1.full())))
        slack = B * eta
    else:
        # General L-smooth form: L(Y1) ≤ L(Ŷ1) + ⟨∇L(Ŷ1), Y1 − Ŷ1⟩ + (L/2)η².
        B = grad_hat
        slack = grad_hat * eta + 0.5 * Ls * eta**2
    margin = 1e-12 * (abs(L0) + lr * proj**2 + B * eta)
    assert L1 <= L0 - lr * (1 - lr * Ls / 2) * proj**2 + slack + margin
    assert L1 <= Lhat1 + grad_hat * eta + 0.5 * Ls * eta**2 + margin


# =======================================================================================
# discrete approximation recursion along trajectories, exact first-step identity
# =======================================================================================
@settings(max_examples=max(5, settings.default.max_examples // 2))
@given(Y=tucker_tensors(2, 4, 1, 4, min_sigma=1e-2), seed=seeds(), kind=st.sampled_from(["quadratic", "softmax"]),
       lr_factor=st.floats(0.05, 3.0), tau=TAUS)
def test_approximation_recursion_along_trajectory(Y, seed, kind, lr_factor, tau):
    p = make_problem(kind, Y.shape, seed)
    assume(p.smoothness > 0)
    Ls = p.smoothness
    lr = lr_factor / Ls
    # Convex with λ ≤ 2/L: I − λ∇²L has spectrum in [−1, 1], so the factor is 1.
    factor = 1.0 if (p.convex and lr <= 2 / Ls) else 1.0 + lr * Ls
    W, Yk, e = Y.full(), Y, 0.0
    for k in range(6):
        G, GW = p.gradient(Yk.full()), p.gradient(W)
        Y_next, report = tdlrt_step(Yk, p.grad_callable, lr, tau=tau)
        W_next, _ = full_sgd_step(W, GW, lr)
        e_next = norm(W_next - Y_next.full())
        margin = rounding(Yk) * (norm(W) + norm(Yk.full()) + lr * (norm(G) + norm(GW)))
        assert e_next <= factor * e + lr * report.residual_norm + report.eta + margin
        assert report.residual_norm <= report.epsilon + rounding(Yk) * max(
            unfolding_condition_numbers(Yk.core)) * norm(G)
        if k == 0:
            # W1 − Y1 = −λ(I − Π)G + (Ŷ1 − Y1) with Ŷ1 − Y1 ∈ V ⊥ (I − Π)G.
            exact = math.hypot(lr * report.residual_norm, report.eta)
            assert abs(e_next - exact) <= rounding(Yk) * (norm(Y.full()) + lr * norm(G))
        W, Yk, e = W_next, Y_next, e_next


# =======================================================================================
# exactness (a): ∇L ∈ V ⇒ Ŷ1 = Y − λ∇L;  (b) moving target reproduced
# =======================================================================================
@given(Y=tucker_tensors(2, 4, 1, 6, min_sigma=1e-2), seed=seeds(), lr=st.floats(0.0, 10.0),
       variant=st.sampled_from(["k_step", "augmented_gradient"]))
def test_exactness_for_gradients_in_the_tangent_space(Y, seed, lr, variant):
    G = random_tangent_vector(Y, np.random.default_rng(seed)).to_dense(Y)
    Y1, report = tdlrt_step(Y, G, lr, tau=0.0, variant=variant)
    cond = max(unfolding_condition_numbers(Y.core))
    # ε = 0, so G ∈ V: the new directions are δU_i S_i, whose span is resolved to eps·cond(S_i).
    assert report.residual_norm <= rounding(Y) * cond * norm(G)
    assert norm(Y1.full() - (Y.full() - lr * G)) <= rounding(Y) * cond * (norm(Y.full()) + lr * norm(G))


@settings(max_examples=max(5, settings.default.max_examples // 2))
@given(shape=shapes(2, 4, 2, 5), data=st.data(), seed=seeds(), speed=st.floats(0.1, 3.0))
def test_exactness_moving_target(shape, data, seed, speed):
    ranks = data.draw(feasible_ranks_for(shape))
    lr, steps = 0.05, 5
    mt = MovingTarget.random(shape, ranks, lr, np.random.default_rng(seed), steps=steps, speed=speed)
    Y_bug = Y_ada = mt.target(0)
    for k in range(steps):
        grad = mt.step_loss(k).grad_callable
        Y_bug, _ = fixed_rank_bug_step(Y_bug, grad, lr, diagnostics=False)
        Y_ada, report = tdlrt_step(Y_ada, grad, lr, tau=1e-10, diagnostics=False)
        A = mt.target(k + 1)
        assert Y_ada.ranks == ranks
        # Rounding accumulates over k steps, amplified by cond(Mat_i(C)) ≤ 1/0.3 in the K-step span.
        tol = (k + 1) * rounding(Y_bug) * 10 * norm(A.full())
        assert norm(Y_bug.full() - A.full()) <= tol
        assert norm(Y_ada.full() - A.full()) <= tol


# =======================================================================================
# truncation: η ≤ sqrt(Σ tails²), ranks feasible and within the clamps, τ = 0 keeps all
# =======================================================================================
#: η > 0 (something truncated) is what the certificate η ≤ sqrt(Σ tails²) is about.
CERTIFICATE_DRAWS = DrawTally("eta > 0 (something above rounding truncated)", minimum=0.4)


@CERTIFICATE_DRAWS.require
@example(Y=tucker_example((6, 5, 4), (2, 2, 2), seed=61), seed=1, lr=1.0, tau=0.3, use_theta=False, rmin=1,
         rspan=None)
@example(Y=tucker_example((5, 5, 4, 3), (3, 2, 2, 2), seed=62, spread=0.5), seed=2, lr=0.5, tau=0.1, use_theta=True,
         rmin=1, rspan=1)
@given(Y=tucker_tensors(2, 4, 3, 6, min_sigma=1e-2, min_rank=2, room=True), seed=seeds(), lr=st.floats(0.05, 2.0),
       tau=st.sampled_from([0.3, 0.1, 0.5, 1e-2, 0.0]), use_theta=st.booleans(),
       rmin=st.one_of(st.just(1), st.integers(1, 4)), rspan=st.one_of(st.none(), st.integers(0, 4)))
def test_truncation_certificate_and_clamps(Y, seed, lr, tau, use_theta, rmin, rspan):
    G = np.random.default_rng(seed).standard_normal(Y.shape)
    rmax = None if rspan is None else rmin + rspan
    bases, Y_hat1 = pre_truncation(Y, G, lr)
    kwargs = {"theta": tau * norm(Y_hat1)} if use_theta else {"tau": tau}
    Y1, report = tdlrt_step(Y, G, lr, rmin=rmin, rmax=rmax, **kwargs)
    assert_space_is_the_steps(Y, G, lr, bases, Y_hat1, Y1, report)
    CERTIFICATE_DRAWS.record(truncated(report, Y, G, lr), "clamped" if any(report.clamps.values()) else None)
    tol = rounding(Y) * norm(Y_hat1)  # the truncation's SVDs and η work on Ĉ1, ‖Ĉ1‖ = ‖Ŷ1‖
    assert report.eta <= math.sqrt(sum(t * t for t in report.tails)) + tol
    assert relative_error(report.threshold, tau * norm(Y_hat1)) <= 1e-12 or tau == 0
    assert is_feasible(Y1.ranks) and Y1.ranks == report.ranks_after
    for i, (r, r_hat, n) in enumerate(zip(Y1.ranks, report.ranks_augmented, Y.shape)):
        lo, hi = min(rmin, r_hat, n), r_hat if rmax is None else min(rmax, r_hat)
        assert r <= hi
        assert r >= lo or "feasibility" in report.clamps[i]
        if not report.clamps[i]:
            # The non-strict per-mode rule tail ≤ ϑ, and minimality: one less would violate it.
            s = np.linalg.svd(unfold(Y_hat1, i), compute_uv=False)[:r_hat]
            assert tail_norms(s)[r] <= report.threshold + tol
            assert r == 1 or tail_norms(s)[r - 1] > report.threshold - tol
    if tau == 0 and rmax is None:
        # Every singular value above rounding survives, so nothing of Ŷ1 is lost.
        assert report.eta <= tol
        for i, r in enumerate(Y1.ranks):
            s = np.linalg.svd(unfold(Y_hat1, i), compute_uv=False)
            assert r >= np.count_nonzero(s > 1e3 * rounding(Y) * s[0])


def test_rmin_clamp_cut_by_feasibility_is_reported():
    # Y of shape (1, 2), ranks (1, 1): mode 1 is augmented to r̂_1 = 2, rmin = 2 asks for rank 2,
    # but Mat_1(Ĉ1) is 2 × 1, so the rank stays 1 = r_0 (feasibility), which must be reported.
    Y = TuckerTensor(np.ones((1, 1)), [np.ones((1, 1)), np.array([[1.0], [0.0]])])
    G = np.random.default_rng(0).standard_normal((1, 2))
    Y1, report = tdlrt_step(Y, G, 0.0, tau=0.0, rmin=2)
    assert report.ranks_augmented == (1, 2) and Y1.ranks == (1, 1)
    assert "feasibility" in report.clamps[1]


def test_fixed_clamp_is_recorded_for_a_non_adaptive_mode_truncated_back():
    """Mode 1 is not adaptive and below full rank: augmented to 5 columns, then truncated back
    to 3 whatever its tail (here ~40ϑ). Without the ``"fixed"`` clamp the report would show no
    clamp with η far above ``√(#adaptive)·ϑ`` (η/ϑ = 56 in the first report of this)."""
    rng = np.random.default_rng(0)
    shape, ranks = (6, 5, 3, 3), (2, 3, 3, 3)
    Y = random_tucker(rng, shape, ranks, core=conditioned_core(rng, ranks, 0.1))
    G = rng.standard_normal(shape)
    Y1, report = tdlrt_step(Y, G, 0.1, tau=0.01, adaptive_modes=[0])
    assert report.ranks_augmented[1] == 5 and Y1.ranks[1] == 3
    assert report.clamps == {0: [], 1: ["fixed"], 2: [], 3: []}
    assert report.tails[1] > 10 * report.threshold
    assert report.eta > 10 * report.threshold  # √(#adaptive)·ϑ = ϑ does not bound η here
    assert report.eta <= math.sqrt(sum(t * t for t in report.tails)) * (1 + 1e-12)
    # The same step with mode 1 adaptive: no clamp, and the per-mode bound holds.
    _, adaptive = tdlrt_step(Y, G, 0.1, tau=0.01, adaptive_modes=[0, 1])
    assert not any(adaptive.clamps.values())
    assert adaptive.eta <= math.sqrt(2) * adaptive.threshold * (1 + 1e-12)


def test_without_clamps_the_bound_counts_the_non_adaptive_modes_truncated_back():
    """No clamp recorded does not give ``η ≤ √(#adaptive)·ϑ`` when a non-adaptive mode is
    truncated back with a tail ``≤ ϑ``: that tail counts as well (here η/ϑ = 1.28 with one
    adaptive mode), and the bound is ``√m·ϑ`` with ``m`` = 2 truncated modes."""
    rng = np.random.default_rng(0)
    shape, r_hat = (7, 6, 5), (4, 4, 3)
    C = rng.standard_normal(r_hat) * np.array([1.0, 1.0, 0.3, 0.2])[:, None, None]
    U_hat = [random_orthonormal(rng, n, r) for n, r in zip(shape, r_hat)]
    theta = 1.001 * tail_norms(np.linalg.svd(unfold(C, 1), compute_uv=False))[3]  # mode 1's tail at rank 3 is ≤ ϑ
    Y1, report = truncate_step(C, U_hat, theta=theta, adaptive_modes=[0], fixed_ranks=(None, 3, 3))
    assert Y1.ranks == (3, 3, 3) and not any(report.clamps.values())
    assert report.tails[0] <= theta and report.tails[1] <= theta
    assert report.error > 1.2 * theta
    assert report.error <= math.sqrt(2) * theta * (1 + 1e-12)


#: The "fixed" bookkeeping is exercised only when a non-adaptive mode is truncated back.
CLAMP_DRAWS = DrawTally("a non-adaptive mode below full rank is truncated back", minimum=0.5)


@CLAMP_DRAWS.require
@example(Y=tucker_example((6, 5, 3, 3), (2, 3, 3, 3), seed=71), seed=1, lr=0.1, tau=0.01,
         adaptive=(True, False, False, False), rmax=None)
@example(Y=tucker_example((7, 6, 5), (3, 2, 2), seed=72), seed=2, lr=0.5, tau=0.3,
         adaptive=(False, True, False, False), rmax=None)
@example(Y=tucker_example((6, 5, 5), (2, 2, 2), seed=73), seed=3, lr=1e-3, tau=0.2,
         adaptive=(False, False, False, False), rmax=None)
@given(Y=tucker_tensors(2, 4, 3, 6, min_sigma=1e-2, min_rank=2, room=True), seed=seeds(), lr=st.floats(1e-3, 2.0),
       tau=st.sampled_from([0.01, 0.1, 0.3, 0.0]), adaptive=st.lists(st.booleans(), min_size=4, max_size=4),
       rmax=st.one_of(st.none(), st.integers(1, 4)))
def test_eta_bound_holds_unless_a_tail_clamp_is_recorded(Y, seed, lr, tau, adaptive, rmax):
    """``"fixed"`` is recorded exactly when a non-adaptive mode truncated back drops more than ϑ;
    without ``"rmax"``/``"fixed"`` every tail is ≤ ϑ and η ≤ √m·ϑ (m = adaptive modes + non-adaptive
    modes truncated back); with no clamp and no non-adaptive mode truncated, η ≤ √(#adaptive)·ϑ."""
    G = np.random.default_rng(seed).standard_normal(Y.shape)
    modes = [i for i in range(Y.ndim) if adaptive[i]]
    Y1, report = tdlrt_step(Y, G, lr, tau=tau, adaptive_modes=modes, rmax=rmax)
    _, Y_hat1 = pre_truncation(Y, G, lr)
    theta = tau * norm(Y_hat1)
    if modes:
        assert relative_error(report.threshold, theta) <= 1e-12 or tau == 0
    tol = rounding(Y) * norm(Y_hat1)
    back = [i for i in range(Y.ndim) if i not in modes and report.ranks_augmented[i] > Y.ranks[i]]
    for i in range(Y.ndim):
        if i in modes:
            assert "fixed" not in report.clamps[i]
            if "rmax" not in report.clamps[i]:
                assert report.tails[i] <= theta + tol
        else:
            # truncated back (or frozen at full rank); lower only by a lossless feasibility cut
            assert Y1.ranks[i] == Y.ranks[i] or (Y1.ranks[i] < Y.ranks[i] and "feasibility" in report.clamps[i])
            assert "rmax" not in report.clamps[i] and "rmin" not in report.clamps[i]
            if i not in back and "feasibility" not in report.clamps[i]:
                assert report.clamps[i] == [] and np.array_equal(Y1.factors[i], Y.factors[i])
            elif report.tails[i] > theta + tol:
                assert "fixed" in report.clamps[i]
            elif report.tails[i] < theta - tol:
                assert "fixed" not in report.clamps[i]
    CLAMP_DRAWS.record(bool(back), "fixed recorded" if any("fixed" in c for c in report.clamps.values()) else None)
    assert report.eta <= math.sqrt(sum(t * t for t in report.tails)) + tol
    if not any({"rmax", "fixed"} & set(c) for c in report.clamps.values()):
        assert report.eta <= math.sqrt(len(modes) + len(back)) * theta + tol
        if not back:
            assert report.eta <= math.sqrt(len(modes)) * theta + tol


# =======================================================================================
# the two variants
# =======================================================================================
@given(Y=tucker_tensors(2, 4, 1, 5, min_sigma=1e-4), seed=seeds(), lr=st.floats(0.0, 2.0), tau=TAUS)
def test_variants_agree_for_well_conditioned_cores(Y, seed, lr, tau):
    G = np.random.default_rng(seed).standard_normal(Y.shape)
    _, Y_hat1 = pre_truncation(Y, G, lr)
    # Away from the cutoff: every tail differs from ϑ, and the kept/dropped singular values are
    # separated, by at least 1e-3‖Ŷ1‖ (else a rounding-level change of V may flip a rank).
    theta = tau * norm(Y_hat1)
    gap = math.inf
    for i in range(Y.ndim):
        s = np.linalg.svd(unfold(Y_hat1, i), compute_uv=False)
        t = tail_norms(s)
        r = int(np.flatnonzero(t <= theta)[0])
        gap = min(gap, np.min(np.abs(t - theta)) if tau > 0 else math.inf,
                  (s[r - 1] - (s[r] if r < len(s) else 0.0)) if tau > 0 else math.inf)
    assume(gap >= 1e-3 * norm(Y_hat1))
    Y_k, rep_k = tdlrt_step(Y, G, lr, tau=tau, variant="k_step")
    Y_a, rep_a = tdlrt_step(Y, G, lr, tau=tau, variant="augmented_gradient")
    assert rep_k.ranks_after == rep_a.ranks_after
    cond = max(unfolding_condition_numbers(Y.core))
    scale = norm(Y.full()) + lr * norm(G)
    assert norm(Y_k.full() - Y_a.full()) <= rounding(Y) * cond * scale * max(1.0, scale / min(gap, scale))


def containment_residuals(sigma_min: float, draws: int = 20, seed: int = 0):
    """Relative containment residuals ``‖PG − ΠPG‖/‖G‖`` of both variants at ``σ_min(S_0)``.

    Orders 2 (``C = P diag(σ) R^T``) and 3 (ranks 3, only mode 0 ill conditioned, see
    ``problems.core_with_mode_spectrum``), ``n_i ∈ [7, 9]`` (so ``n_i ≥ 2r_i``: augmentation does
    not fill the whole space and the containment is not trivial), Gaussian ``G``.
    """
    rng = np.random.default_rng(seed)
    out = {"k_step": [], "augmented_gradient": []}
    for _ in range(draws):
        d = int(rng.integers(2, 4))
        shape = tuple(int(n) for n in rng.integers(7, 10, size=d))
        core = core_with_mode_spectrum(rng, np.geomspace(1.0, sigma_min, 3), m=None if d == 2 else 3)
        ranks = core.shape
        Y = random_tucker(rng, shape, ranks, core=core)
        G = rng.standard_normal(shape)
        PG = tangent_projection(Y, G)
        for variant in out:
            bases = augmented_bases(Y, G, variant)[0]
            out[variant].append(norm(PG - subspace_projection(PG, bases)) / norm(G))
    return {k: np.array(v) for k, v in out.items()}


def test_augmented_gradient_loses_containment_as_sigma_min_falls():
    """Where ``augmented_gradient`` loses the containment (docs/theory.md §3, augmented-gradient variant), measured.

    Its new directions ``N_i Mat_i(C)^T = N_i Q_i S_i^T`` carry the core's singular values, so
    the direction tied to ``σ_min`` is resolved only to ``eps/σ_min`` (relative): the residual
    grows like ``σ_min^{-1}``. It is within the ``eps·cond(S_i)`` tolerance at every level (so
    at ``σ_min = 1e-4`` it holds in that sense), but above ``sqrt(eps)`` — the directions are
    no longer in V to half the working precision — in the majority of draws by ``σ_min = 1e-12``
    (measured: all draws from ``1e-10`` on; ``report`` prints the table). The K-step form
    holds to cond-free rounding at every level.
    """
    levels = [1e-4, 1e-8, 1e-10, 1e-12]
    table = {s: containment_residuals(s) for s in levels}
    print("\nsigma_min  k_step(max)  aug(median)  aug(max)  aug>sqrt(eps)")
    for s, res in table.items():
        aug = res["augmented_gradient"]
        print(f"{s:8.0e}  {res['k_step'].max():10.2e}  {np.median(aug):10.2e}  {aug.max():9.2e}  "
              f"{np.mean(aug > math.sqrt(EPS)):5.2f}")
    slope = np.polyfit(np.log(levels), np.log([np.median(t["augmented_gradient"]) for t in table.values()]), 1)[0]
    print(f"fitted exponent of the augmented_gradient residual in sigma_min: {slope:.2f}")
    cond_free = 10 * 3 * 9 * EPS  # rounding(Y) for d ≤ 3, n ≤ 9
    for s, res in table.items():
        assert res["k_step"].max() <= cond_free
        assert res["augmented_gradient"].max() <= cond_free / s
    assert np.mean(table[1e-12]["augmented_gradient"] > math.sqrt(EPS)) > 0.5
    assert -1.3 <= slope <= -0.7


# =======================================================================================
# rank recovery (Tucker regression with a planted rank)
# =======================================================================================
@pytest.mark.parametrize("seed, shape, planted, start", [
    (11, (5, 4, 3), (2, 2, 2), (3, 3, 3)),   # starts above r*: prunes down
    (12, (4, 5, 4), (3, 2, 2), (1, 1, 1)),   # starts below r*: grows through augmentation
])
def test_rank_recovery(seed, shape, planted, start):
    rng = np.random.default_rng(seed)
    p = TuckerRegression.random(shape, planted, rng, oversampling=4.0, min_sigma=0.3)
    Y = TuckerTensor(conditioned_core(rng, start, 0.5), [random_orthonormal(rng, n, r) for n, r in zip(shape, start)])
    tau = 0.5 * p.tau_bound
    lr = 1.0 / p.smoothness
    ranks = []
    for _ in range(300):
        Y, report = tdlrt_step(Y, p.grad_callable, lr, tau=tau, rmin=1, diagnostics=False)
        ranks.append(Y.ranks)
    assert all(r == planted for r in ranks[-50:]), ranks[-50:]
    assert relative_error(Y.full(), p.W_star) <= 1e-6


# =======================================================================================
# full rank: every scheme but naive factor training is full SGD
# =======================================================================================
@given(shape=shapes(2, 4, 1, 4), data=st.data(), seed=seeds(), lr=st.floats(0.0, 2.0))
def test_full_rank_schemes_equal_full_sgd(shape, data, seed, lr):
    assume(is_feasible(shape))
    Y = data.draw(tucker_tensors(shape=shape, ranks=shape, min_sigma=1e-2))
    p = make_problem("quadratic", shape, seed)
    G = p.gradient(Y.full())
    W1, _ = full_sgd_step(Y.full(), G, lr)
    cond = max(unfolding_condition_numbers(Y.core))
    tol = rounding(Y) * cond * (norm(Y.full()) + lr * norm(G))
    results = {
        "tdlrt k_step": tdlrt_step(Y, G, lr, tau=0.0)[0],
        "tdlrt augmented_gradient": tdlrt_step(Y, G, lr, tau=0.0, variant="augmented_gradient")[0],
        "fixed-rank BUG": fixed_rank_bug_step(Y, p.grad_callable, lr)[0],
        "riemannian": riemannian_gd_step(Y, G, lr)[0],
        "direct euler": direct_euler_step(Y, G, lr)[0],
        "direct euler + QR": direct_euler_step(Y, G, lr, reorthonormalize=True)[0],
    }
    for name, Y1 in results.items():
        if name.startswith("direct euler"):
            # δU_i = (I − U_iU_i^T)N_i Mat_i(C)^+ is zero only up to eps·‖G‖/σ_min(C) and is then
            # multiplied by C − λδC (norm up to ‖Y‖ + λ‖G‖): the scheme's own 1/σ_min shows in
            # its rounding, so its tolerance carries λ‖G‖/σ_min on top of cond.
            sigma_min = min(np.linalg.svd(unfold(Y.core, i), compute_uv=False)[-1] for i in range(Y.ndim))
            assert norm(Y1.full() - W1) <= tol * (1 + lr * norm(G) / (cond * sigma_min)), name
        else:
            assert norm(Y1.full() - W1) <= tol, name


@given(shape=shapes(2, 4, 2, 4), data=st.data(), seed=seeds())
def test_full_rank_naive_factor_training_is_not_full_sgd(shape, data, seed):
    """Naive factor training is SGD in the coordinates ``(C, U_i)``, not in ``W``.

    Even at full rank its step is ``Y − λ(G + Σ_i Ten_i(Mat_i(G) Mat_i(Y)^T Mat_i(Y))) + O(λ²)``:
    the factor update ``U_i ← U_i − λ N_i Mat_i(C)^T`` adds, through ``C ×_i (·)``, the term
    ``Mat_i(G) (⊗_{j≠i}U_j) Mat_i(C)^T Mat_i(C) (⊗_{j≠i}U_j)^T = Mat_i(G) Mat_i(Y)^T Mat_i(Y)``
    (Kronecker identity), on top of the core update's ``G ×_i U_iU_i^T = G``. The
    parametrization changes the metric (a ``Y``-dependent preconditioner), plus the ``O(λ²)``
    products of simultaneous factor updates, so no learning rate makes it equal full SGD.
    """
    assume(is_feasible(shape))
    Y = data.draw(tucker_tensors(shape=shape, ranks=shape, min_sigma=1e-2))
    G = make_problem("quadratic", shape, seed).gradient(Y.full())
    assume(norm(G) > 0)
    W = Y.full()
    extra = sum(fold(unfold(G, i) @ unfold(W, i).T @ unfold(W, i), i, shape) for i in range(len(shape)))
    # The step is a polynomial in λ; its first-order coefficient is −(G + extra). The O(λ²)
    # terms relative to it are ~λ‖G‖(‖C‖ + 1/‖C‖): pick λ so that this is 1e-4, and remove
    # the O(λ) part of the difference quotient by Richardson extrapolation (left: ~1e-8).
    c = norm(Y.core)
    lr = 1e-4 / (norm(G) * (c + 1 / c))

    def quotient(step):
        return (naive_factor_step(Y, G, step)[0].full() - W) / step

    first_order = 2 * quotient(lr / 2) - quotient(lr)
    # It is not full SGD's −G: it differs by exactly −extra.
    assert norm(first_order + G) >= 0.5 * norm(extra)
    assert relative_error(first_order + G, -extra) <= 1e-5
