"""Composite steps (tdlrt_step, fixed_rank_bug_step), StepReport, optimizers and schedules:
the mechanics. The paper's guarantees are tested by the integrator property tests."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tucker_ref import TuckerTensor, multi_mode_product, unfold
from tucker_ref.integrators import (
    SGD,
    DenseGradient,
    HeavyBall,
    augment_basis,
    augmented_bases,
    constant_lr,
    cosine_lr,
    fixed_rank_bug_step,
    k_gradient,
    k_parametrization,
    tdlrt_cycle,
    tdlrt_step,
)
from tucker_ref.testing.oracles import relative_error
from tucker_ref.testing.strategies import (
    conditioned_core,
    random_tucker,
    seeds,
    tucker_tensors,
)
from tucker_ref.truncation import is_feasible

EPS = np.finfo(np.float64).eps


def projector(A):
    """Orthogonal projector onto range(A), from an SVD with the numpy rank cutoff (independent of
    the library's orth/augment_basis)."""
    P, s, _ = np.linalg.svd(A, full_matrices=False)
    rank = int(np.sum(s > max(A.shape) * EPS * s[0])) if s.size and s[0] > 0 else 0
    return P[:, :rank] @ P[:, :rank].T


def augmented_projectors(Y, G):
    """Π_i onto span[U_i, N_i Mat_i(C0)^T] = span Û_i (full-row-rank core unfoldings)."""
    out = []
    for i, U in enumerate(Y.factors):
        mats = list(Y.factors)
        mats[i] = None
        N = unfold(multi_mode_product(G, mats, transpose=True), i)
        out.append(projector(np.hstack([U, N @ unfold(Y.core, i).T])))
    return out


class CountingOracle:
    """A protocol implementation that is not a DenseGradient (duck typing), counting queries."""

    def __init__(self, G, poison=None):
        self.inner = DenseGradient(G)
        self.shape = G.shape
        self.calls = []
        self.poison = poison

    def core_gradient(self, bases):
        self.calls.append("core")
        out = self.inner.core_gradient(bases)
        return out * np.nan if self.poison == "core" else out

    def mode_partial_gradient(self, mode, factors=None):
        self.calls.append(mode)
        out = self.inner.mode_partial_gradient(mode, factors)
        return out * np.inf if self.poison == "partial" else out


# ---------------------------------------------------------------------------------------
# tdlrt_step
# ---------------------------------------------------------------------------------------
@given(Y=tucker_tensors(max_order=4, max_dim=5), seed=seeds(), lr=st.floats(0.0, 2.0))
def test_pre_truncation_iterate(Y, seed, lr):
    """With τ = 0 the truncation is lossless, so Y1 = Ŷ1 = Y0 − λ G ×_i Û_iÛ_i^T (dense check
    against projectors built independently from span[U_i, N_i Mat_i(C0)^T])."""
    rng = np.random.default_rng(seed)
    G = rng.standard_normal(Y.shape)
    Y1, rep = tdlrt_step(Y, G, lr, tau=0.0)
    expected = Y.full() - lr * multi_mode_product(G, augmented_projectors(Y, G))
    scale = np.linalg.norm(Y.full()) + lr * np.linalg.norm(G)
    # Rounding of the projectors scales with cond(Mat_i(C0)) (≤ 100 for this strategy).
    assert np.linalg.norm(Y1.full() - expected) <= 1e-12 * scale
    assert rep.eta <= 1e-13 * scale
    assert all(ra <= min(n, 2 * r) for ra, n, r in zip(rep.ranks_augmented, Y.shape, Y.ranks))
    assert rep.proj_grad_norm == pytest.approx(np.linalg.norm(multi_mode_product(G, augmented_projectors(Y, G))),
                                               rel=1e-12)


@given(Y=tucker_tensors(max_order=4, max_dim=5), seed=seeds(), tau=st.floats(0.0, 0.5))
@settings(max_examples=15)
def test_ndarray_callable_and_oracle_inputs_agree_exactly(Y, seed, tau):
    G = np.random.default_rng(seed).standard_normal(Y.shape)
    reference, rep0 = tdlrt_step(Y, G, 0.1, tau=tau)
    for grad in (lambda P: G, DenseGradient(G, Y), CountingOracle(G), lambda P: DenseGradient(G, P)):
        Y1, rep = tdlrt_step(Y, grad, 0.1, tau=tau)
        assert np.array_equal(Y1.core, reference.core)
        assert all(np.array_equal(a, b) for a, b in zip(Y1.factors, reference.factors))
        assert rep.ranks_after == rep0.ranks_after and rep.eta == rep0.eta


@given(seed=seeds(), min_sigma=st.sampled_from([1e-1, 1e-2, 1e-3, 1e-4]), lr=st.floats(0.01, 1.0))
@settings(max_examples=20)
def test_variants_agree_when_s_is_well_conditioned(seed, min_sigma, lr):
    """k_step and augmented_gradient span the same Û_i when cond(S_i) ≤ 1e4; at τ = 0 (no
    singular value at a cutoff) their steps differ by rounding ∝ eps·cond(S_i)."""
    rng = np.random.default_rng(seed)
    shape, ranks = (5, 6, 4), (2, 3, 2)
    C = conditioned_core(rng, ranks, min_sigma)
    Y = random_tucker(rng, shape, ranks, core=C)
    G = rng.standard_normal(shape)
    cond = max(np.linalg.cond(unfold(C, i)) for i in range(3))
    a, rep_a = tdlrt_step(Y, G, lr, tau=0.0)
    b, rep_b = tdlrt_step(Y, G, lr, tau=0.0, variant="augmented_gradient")
    assert rep_a.variant == "k_step" and rep_b.variant == "augmented_gradient"
    assert rep_a.ranks_after == rep_b.ranks_after
    # Measured over 80 draws: at most 2.4·eps·cond relative (plus ~2e-15 of plain rounding).
    assert relative_error(a.full(), b.full()) <= 20 * EPS * max(cond, 10.0)


@given(Y=tucker_tensors(max_order=4, max_dim=5), seed=seeds(), tau=st.floats(0.0, 0.5),
       rmin=st.integers(1, 3), extra=st.one_of(st.none(), st.integers(0, 2)))
@settings(max_examples=20)
def test_step_report_is_consistent(Y, seed, tau, rmin, extra):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal(Y.shape)

    def loss(P):
        return 0.5 * float(np.sum((P.full() - A) ** 2))

    G = Y.full() - A
    rmax = None if extra is None else rmin + extra
    Y1, rep = tdlrt_step(Y, G, 0.2, tau=tau, rmin=rmin, rmax=rmax, loss=loss)
    assert rep.ranks_before == Y.ranks and rep.ranks_after == Y1.ranks and is_feasible(Y1.ranks)
    assert rep.s_step_gradient == "same_point" and rep.variant == "k_step"
    assert rep.eta <= math.sqrt(sum(t * t for t in rep.tails)) * (1 + 1e-12) + 1e-14 * np.linalg.norm(Y1.core)
    for i, r in enumerate(Y1.ranks):
        r_hat, n = rep.ranks_augmented[i], Y.shape[i]
        assert Y.ranks[i] <= r_hat <= min(n, 2 * Y.ranks[i])
        # Clamp interval of docs/algorithms.md §3, then feasibility r_i ≤ ∏_{j≠i} r_j of the final ranks.
        others = math.prod(Y1.ranks) // r
        assert min(rmin, r_hat, n, others) <= r <= (r_hat if rmax is None else min(rmax, r_hat)), (i, rep, Y.core.tolist(), [U.tolist() for U in Y.factors], seed)
    assert rep.loss_before == loss(Y) and rep.loss_after == loss(Y1)
    # containment of docs/theory.md §3 (k_step, all modes augmented): ‖(I − Π)G‖ ≤ ε and ‖ΠG‖ ≥ ‖P(Y0)G‖
    scale = EPS * 1e3 * np.linalg.norm(G)
    assert rep.residual_norm <= rep.epsilon + scale
    assert rep.proj_grad_norm >= rep.tangent_grad_norm - scale
    d = rep.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert set(d["timings"]) >= {"gradient", "galerkin", "truncate", "diagnostics"}


def test_threshold_is_relative_to_the_augmented_core():
    rng = np.random.default_rng(11)
    Y = random_tucker(rng, (5, 4, 6), (2, 2, 2), core=conditioned_core(rng, (2, 2, 2), 0.1))
    G = rng.standard_normal(Y.shape)
    _, rep = tdlrt_step(Y, G, 0.3, tau=0.2)
    Y_hat1, rep_full = tdlrt_step(Y, G, 0.3, tau=0.0)  # the same Ĉ1 kept whole: ‖Ŷ1‖ = ‖Ĉ1‖_F
    _, rep_theta = tdlrt_step(Y, G, 0.3, theta=0.05)
    assert rep.threshold == pytest.approx(0.2 * Y_hat1.norm(), rel=1e-12)
    assert rep_full.threshold == 0.0 and rep_theta.threshold == 0.05


def test_diagnostics_off_and_oracle_without_dense_gradient():
    rng = np.random.default_rng(2)
    Y = random_tucker(rng, (4, 5, 6), (2, 2, 3), core=conditioned_core(rng, (2, 2, 3), 0.1))
    G = rng.standard_normal(Y.shape)
    _, rep = tdlrt_step(Y, G, 0.1, diagnostics=False)
    assert rep.epsilon is None and rep.tangent_grad_norm is None and rep.residual_norm is None
    assert rep.proj_grad_norm is not None and "diagnostics" not in rep.timings
    oracle = CountingOracle(G)  # no dense_gradient(): diagnostics requested but unavailable
    _, rep = tdlrt_step(Y, oracle, 0.1)
    assert rep.epsilon is None and rep.residual_norm is None
    # one N_i per mode, one core gradient (same point)
    assert oracle.calls == [0, 1, 2, "core"]


def test_reevaluate_calls_the_callable_at_the_augmented_point():
    rng = np.random.default_rng(3)
    Y = random_tucker(rng, (5, 4, 6), (2, 2, 2), core=conditioned_core(rng, (2, 2, 2), 0.1))
    G0, G1 = rng.standard_normal(Y.shape), rng.standard_normal(Y.shape)
    points = []

    def minibatch(P):  # another batch on the second call
        points.append(P)
        return G0 if len(points) == 1 else G1

    Y1, rep = tdlrt_step(Y, minibatch, 0.2, tau=0.0, s_step_gradient="reevaluate")
    assert rep.s_step_gradient == "reevaluate" and len(points) == 2
    assert points[0] is Y and points[1].ranks == rep.ranks_augmented
    assert relative_error(points[1].full(), Y.full()) <= 1e-14
    # Ŷ1 = Y0 − λ G1 ×_i Û_iÛ_i^T with Û built from G0
    U_hat = points[1].factors
    expected = Y.full() - 0.2 * multi_mode_product(G1, [U @ U.T for U in U_hat])
    assert relative_error(Y1.full(), expected) <= 1e-13
    assert rep.proj_grad_norm == pytest.approx(np.linalg.norm(multi_mode_product(G0, U_hat, transpose=True)))
    # a callable that returns the same gradient: identical to "same_point"
    a, _ = tdlrt_step(Y, lambda P: G0, 0.2, tau=0.1, s_step_gradient="reevaluate")
    b, _ = tdlrt_step(Y, G0, 0.2, tau=0.1)
    assert np.array_equal(a.full(), b.full())


@given(seed=seeds(), fixed=st.booleans())
@settings(max_examples=15)
def test_non_adaptive_modes(seed, fixed):
    rng = np.random.default_rng(seed)
    shape, ranks = (6, 5, 3, 3), (2, 3, 3, 3)  # spatial-like modes 2, 3 at full rank
    Y = random_tucker(rng, shape, ranks, core=conditioned_core(rng, ranks, 0.1))
    G = rng.standard_normal(shape)
    adaptive = [0] if fixed else [0, 1]
    oracle = CountingOracle(G)
    Y1, rep = tdlrt_step(Y, oracle, 0.1, tau=0.05, adaptive_modes=adaptive)
    # frozen full-rank modes: not queried, basis untouched
    assert oracle.calls == [0, 1, "core"]
    assert all(np.array_equal(Y1.factors[i], Y.factors[i]) for i in (2, 3))
    assert rep.ranks_augmented[2:] == (3, 3)
    # a non-adaptive mode below full rank is augmented, then truncated back to its rank
    assert rep.ranks_augmented[1] > ranks[1]
    if fixed:
        assert Y1.ranks[1] == ranks[1]


@given(Y=tucker_tensors(max_order=3, max_dim=5, dtype=np.float32), seed=seeds())
@settings(max_examples=10)
def test_float32_is_kept(Y, seed):
    G = np.random.default_rng(seed).standard_normal(Y.shape)
    for grad in (G.astype(np.float32), G):
        Y1, _ = tdlrt_step(Y, grad, 0.1, tau=0.01)
        assert Y1.dtype == np.float32 and all(U.dtype == np.float32 for U in Y1.factors)
        assert Y1.has_orthonormal_factors()
    Y2, _ = fixed_rank_bug_step(Y, lambda P: G.astype(np.float32), 0.1)
    assert Y2.dtype == np.float32


def test_bad_input_raises_and_leaves_state_unchanged():
    rng = np.random.default_rng(4)
    Y = random_tucker(rng, (5, 4, 6), (2, 2, 2), core=conditioned_core(rng, (2, 2, 2), 0.1))
    Y_copy = Y.copy()
    G = rng.standard_normal(Y.shape)
    opt = HeavyBall(0.9)
    opt.state = rng.standard_normal(Y.ranks)
    state_copy = opt.state.copy()
    bad_grads = [
        (G * np.nan, "tdlrt_step: grad contains NaN"),
        (lambda P: G * np.inf, r"tdlrt_step: grad\(point\) contains NaN"),
        (CountingOracle(G, poison="partial"), r"tdlrt_step\[conv1\]: the gradient oracle returned a non-finite N_0"),
        (CountingOracle(G, poison="core"), r"tdlrt_step\[conv1\]: the gradient oracle returned a non-finite core"),
    ]
    for grad, message in bad_grads:
        with pytest.raises(ValueError, match=message):
            tdlrt_step(Y, grad, 0.1, optimizer=opt, name="conv1" if "conv1" in message else None)
        assert np.array_equal(opt.state, state_copy)
        assert np.array_equal(Y.core, Y_copy.core) and all(
            np.array_equal(a, b) for a, b in zip(Y.factors, Y_copy.factors))
    cases = [
        ({"lr": -0.1}, "lr must be a finite number >= 0"),
        ({"tau": -1e-3}, "tau must be a finite number >= 0"),
        ({"theta": -1.0}, "theta must be a finite number >= 0"),
        ({"tau": 0.1, "theta": 0.1}, "at most one of tau"),
        ({"rmin": 3, "rmax": 2}, r"rmin \(3\) must not exceed rmax \(2\)"),
        ({"adaptive_modes": [3]}, r"adaptive_modes entries must be integers in \[0, 3\)"),
        ({"variant": "parallel"}, "variant must be one of"),
        ({"s_step_gradient": "fresh"}, "s_step_gradient must be one of"),
        ({"s_step_gradient": "reevaluate"}, "s_step_gradient='reevaluate' needs grad to be a callable"),
    ]
    for kwargs, message in cases:
        args = {"lr": 0.1}
        args.update(kwargs)
        with pytest.raises(ValueError, match=message):
            tdlrt_step(Y, G, args.pop("lr"), **args)
    with pytest.raises(ValueError, match="s_step_gradient='reevaluate' needs grad to be a callable"):
        tdlrt_step(Y, DenseGradient(G, Y), 0.1, s_step_gradient="reevaluate")
    with pytest.raises(ValueError, match="grad must have the shape of the point"):
        tdlrt_step(Y, G[:4], 0.1)
    with pytest.raises(ValueError, match="Y must have orthonormal factors"):
        tdlrt_step(TuckerTensor(Y.core, [2.0 * U for U in Y.factors]), G, 0.1)
    with pytest.raises(TypeError, match="Y must be a TuckerTensor"):
        tdlrt_step(Y.full(), G, 0.1)
    opt.state = np.zeros((3, 2, 2))
    with pytest.raises(ValueError, match="optimizer.state has shape"):
        tdlrt_step(Y, G, 0.1, optimizer=opt)


# ---------------------------------------------------------------------------------------
# fixed-rank BUG
# ---------------------------------------------------------------------------------------
@given(Y=tucker_tensors(max_order=4, max_dim=5), seed=seeds(), lr=st.floats(0.0, 1.0))
@settings(max_examples=20)
def test_fixed_rank_bug_step(Y, seed, lr):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal(Y.shape)
    points = []

    def grad(P):  # quadratic loss ½‖W − A‖²: the gradient depends on the point
        points.append(P)
        return P.full() - A

    Y1, rep = fixed_rank_bug_step(Y, grad, lr)
    assert Y1.ranks == Y.ranks and rep.variant == "fixed_rank_bug" and rep.s_step_gradient == "reevaluate"
    assert Y1.has_orthonormal_factors() and len(points) == 2
    U1 = points[1].factors
    assert all(np.array_equal(a, b) for a, b in zip(U1, Y1.factors))
    projectors = [U @ U.T for U in U1]
    # Ỹ = Y0 ×_i U_i^1U_i^1T and Y1 = Ỹ − λ ∇L(Ỹ) ×_i U_i^1U_i^1T (dense checks)
    Y_tilde = multi_mode_product(Y.full(), projectors)
    scale = np.linalg.norm(Y.full()) + lr * np.linalg.norm(Y.full() - A)
    assert np.linalg.norm(points[1].full() - Y_tilde) <= 1e-13 * scale
    expected = Y_tilde - lr * multi_mode_product(Y_tilde - A, projectors)
    assert np.linalg.norm(Y1.full() - expected) <= 1e-13 * scale
    # span U_i^1 ⊇ span K_i^1 = span of Mat_i((Y0 − λG) ×_{j≠i} U_j^T) restricted to the row space of Mat_i(C0)
    G = Y.full() - A
    for i, U in enumerate(Y.factors):
        mats = list(Y.factors)
        mats[i] = None
        N = unfold(multi_mode_product(G, mats, transpose=True), i)
        M = unfold(Y.core, i)
        K1 = U @ M - lr * N @ np.linalg.pinv(M) @ M
        assert np.linalg.norm(K1 - projectors[i] @ K1) <= 1e-12 * (np.linalg.norm(M) + lr * np.linalg.norm(N))


def test_fixed_rank_bug_step_requires_a_callable():
    rng = np.random.default_rng(6)
    Y = random_tucker(rng, (5, 4, 6), (2, 2, 2), core=conditioned_core(rng, (2, 2, 2), 0.1))
    G = rng.standard_normal(Y.shape)
    for grad in (G, DenseGradient(G, Y)):
        with pytest.raises(ValueError, match="fixed_rank_bug_step: grad must be a callable .* not at Y0"):
            fixed_rank_bug_step(Y, grad, 0.1)
    with pytest.raises(ValueError, match=r"fixed_rank_bug_step\[fc\]: grad\(point\) contains NaN"):
        fixed_rank_bug_step(Y, lambda P: G * np.nan, 0.1, name="fc")
    with pytest.raises(ValueError, match="lr must be a finite number >= 0"):
        fixed_rank_bug_step(Y, lambda P: G, -1.0)


# ---------------------------------------------------------------------------------------
# optimizers
# ---------------------------------------------------------------------------------------
@given(Y=tucker_tensors(max_order=3, max_dim=5), seed=seeds())
@settings(max_examples=15)
def test_heavy_ball_with_zero_momentum_is_sgd(Y, seed):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal(Y.shape)
    sgd, hb = SGD(), HeavyBall(momentum=0.0)
    a, b = Y, Y
    for _ in range(3):
        a, _rep = tdlrt_step(a, a.full() - A, 0.3, tau=0.1, optimizer=sgd)
        b, _rep = tdlrt_step(b, b.full() - A, 0.3, tau=0.1, optimizer=hb)
        assert np.array_equal(a.core, b.core) and all(np.array_equal(u, v) for u, v in zip(a.factors, b.factors))
        assert hb.state.shape == b.ranks and sgd.state is None
    # first heavy-ball step (no velocity yet) is an SGD step for any momentum
    c, _ = tdlrt_step(Y, Y.full() - A, 0.3, tau=0.1, optimizer=HeavyBall(0.9))
    d, _ = tdlrt_step(Y, Y.full() - A, 0.3, tau=0.1)
    assert np.array_equal(c.full(), d.full())


@given(Y=tucker_tensors(max_order=4, max_dim=5), seed=seeds(), beta=st.floats(0.0, 0.99), tau=st.floats(0.0, 0.4))
@settings(max_examples=20)
def test_momentum_transport_projects_the_dense_velocity(Y, seed, beta, tau):
    """m_new ×_i U_i^1 = Π_1(β m0 ×_i U_i^0 + G ×_i Û_iÛ_i^T) and Y1 = Π_1(Y0 − λ(β m0 ×_i U_i^0 + ΠG))
    (Π_1 onto the new bases): the dense velocity is carried, then projected at truncation."""
    rng = np.random.default_rng(seed)
    G = rng.standard_normal(Y.shape)
    m0 = rng.standard_normal(Y.ranks)
    opt = HeavyBall(beta)
    opt.state = m0.copy()
    Y1, _ = tdlrt_step(Y, G, 0.2, tau=tau, optimizer=opt)
    Pi_hat = augmented_projectors(Y, G)
    Pi_new = [U @ U.T for U in Y1.factors]
    dense_velocity = beta * multi_mode_product(m0, Y.factors) + multi_mode_product(G, Pi_hat)
    expected = multi_mode_product(dense_velocity, Pi_new)
    assert np.linalg.norm(multi_mode_product(opt.state, Y1.factors) - expected) <= 1e-12 * np.linalg.norm(
        dense_velocity)
    # the truncation is the orthogonal projection of Ŷ1 = Y0 − λ·velocity onto the new bases
    Y_hat1 = Y.full() - 0.2 * dense_velocity
    assert np.linalg.norm(Y1.full() - multi_mode_product(Y_hat1, Pi_new)) <= 1e-12 * np.linalg.norm(Y_hat1)


@given(seed=seeds(), beta=st.floats(0.0, 0.99), lr=st.floats(0.0, 1.0))
def test_dense_step(seed, beta, lr):
    rng = np.random.default_rng(seed)
    p, g1, g2 = (rng.standard_normal((4, 3)) for _ in range(3))
    q, state = SGD().dense_step(p, g1, None, lr)
    assert np.array_equal(q, p - lr * g1) and state is None
    hb = HeavyBall(beta)
    q1, m1 = hb.dense_step(p, g1, None, lr)
    q2, m2 = hb.dense_step(q1, g2, m1, lr)
    assert np.array_equal(m1, g1) and np.array_equal(m2, beta * g1 + g2)
    assert np.array_equal(q2, (p - lr * g1) - lr * (beta * g1 + g2))
    z, _ = HeavyBall(0.0).dense_step(q1, g2, m1, lr)
    assert np.array_equal(z, SGD().dense_step(q1, g2, None, lr)[0])
    with pytest.raises(ValueError, match="grad must have the shape of param"):
        hb.dense_step(p, g1[:2], None, lr)
    with pytest.raises(ValueError, match="grad contains NaN"):
        hb.dense_step(p, g1 * np.nan, None, lr)
    with pytest.raises(ValueError, match="momentum must be a real number in"):
        HeavyBall(1.0)


def test_schedules():
    assert [constant_lr(0.1)(k) for k in (0, 7)] == [0.1, 0.1]
    c = cosine_lr(1.0, total_steps=10, lr_min=0.1)
    assert c(0) == 1.0 and c(10) == pytest.approx(0.1, abs=1e-15) and c(20) == c(10)
    assert c(5) == pytest.approx(0.55, abs=1e-15)
    assert all(c(k + 1) < c(k) for k in range(10))
    with pytest.raises(ValueError, match="step must be an integer >= 0"):
        c(-1)
    with pytest.raises(ValueError, match="lr_min .* must not exceed lr"):
        cosine_lr(0.1, 10, lr_min=0.2)
    with pytest.raises(ValueError, match="total_steps must be a positive integer"):
        cosine_lr(0.1, 0)


def test_composite_steps_check_the_truncation_rule_once_per_call(monkeypatch):
    """tdlrt_step / tdlrt_cycle make (or take) one TruncationRule; truncate_cycle, truncate_step
    and truncate below them only pass it on; a given rule is never re-checked."""
    from tucker_ref import truncation
    from tucker_ref.truncation import TruncationRule

    rng = np.random.default_rng(21)
    Y = random_tucker(rng, (5, 4, 6), (2, 2, 2), core=conditioned_core(rng, (2, 2, 2), 0.1))
    G = rng.standard_normal(Y.shape)
    calls = []
    checked = truncation.check_tolerance
    monkeypatch.setattr(truncation, "check_tolerance", lambda *a: calls.append(a) or checked(*a))
    Y_loose, _ = tdlrt_step(Y, G, 0.1, tau=0.2, rmin=2, rmax=3)
    assert len(calls) == 1
    tdlrt_cycle(Y, [G, lambda point: G], 0.1, tau=0.2, rmin=2, rmax=3)
    assert len(calls) == 2
    rule = TruncationRule(tau=0.2, rmin=2, rmax=3)
    Y_rule, _ = tdlrt_step(Y, G, 0.1, rule=rule)
    tdlrt_cycle(Y, [G], 0.1, rule=rule)
    assert len(calls) == 3  # the rule's own construction only
    assert Y_rule.ranks == Y_loose.ranks and np.array_equal(Y_rule.core, Y_loose.core)
    with pytest.raises(ValueError, match=r"tdlrt_step: give the truncation rule once"):
        tdlrt_step(Y, G, 0.1, rule=rule, rmax=4)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape, ranks", [((30, 40), (6, 6)), ((9, 5, 4), (4, 2, 2)), ((9, 5, 4), (3, 2, 2))])
def test_augmented_bases_span_the_k_step_directions(dtype, shape, ranks):
    """``augmented_bases`` equals ``augment_basis(U_i, N_i Q_i)`` mode by mode: exactly where it computes
    ``Q_i``, to rounding where ``Mat_i(C0)`` is square and ``N_i`` stands in for ``N_i Q_i``."""
    rng = np.random.default_rng(5)
    Y = random_tucker(rng, shape, ranks).astype(dtype)
    G = rng.standard_normal(shape).astype(dtype)
    U_hats, _ = augmented_bases(Y, DenseGradient(G, Y))
    eps = np.finfo(dtype).eps
    for i, U in enumerate(Y.factors):
        N = unfold(multi_mode_product(G, [None if j == i else V for j, V in enumerate(Y.factors)], transpose=True), i)
        Q, _, _ = k_parametrization(Y, i)
        expected, _ = augment_basis(U, k_gradient(N, Q))
        assert U_hats[i].shape == expected.shape
        if ranks[i] ** 2 != math.prod(ranks):
            assert np.array_equal(U_hats[i], expected)
            continue
        # the projected directions' condition number bounds how far rounding can turn their span
        s = np.linalg.svd(N - U @ (U.T @ N), compute_uv=False)
        tol = 100 * max(shape) * eps * s[0] / s[U_hats[i].shape[1] - ranks[i] - 1]
        assert np.linalg.norm(U_hats[i].T @ U_hats[i] - np.eye(U_hats[i].shape[1])) <= 100 * max(shape) * eps
        assert np.linalg.norm(U_hats[i] @ U_hats[i].T - expected @ expected.T, 2) <= tol
