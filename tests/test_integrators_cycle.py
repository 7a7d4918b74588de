"""The TDLRT cycle taken apart (augment, S-steps, truncate) and the optimizers on the core.

``tdlrt_step`` must stay the one-S-step composition, bit for bit: against the composition
itself and against outputs recorded from the implementation before the cycle was split
(``tests/data/tdlrt_step_reference.npz``; small float64/float32 problems, recorded and
replayed with one BLAS thread: with two, OpenBLAS sums some products in another order and
one case differs by 1e-15 to 7e-14). The float32 case (case 4) was re-recorded when float32
factorizations moved from numpy.linalg, which computes them in float64, to float32 LAPACK
(``tucker_ref.linalg``): its arrays then moved by at most 4e-6 relative, float32 rounding
amplified by the factors' conditioning; the float64 cases were unchanged bit for bit. It was
re-recorded once more when the rank-adaptive step stopped computing ``Q_i`` for a square
``Mat_i(C0)`` (every mode of a matrix; ``augmented_bases``): moved by at most 5e-6 relative.
Case 5 (a float64 matrix, recorded then) pins that path in float64.

The property tests below check what docs/theory.md §6 derives for a cycle of ``K`` S-steps:
every iterate stays in ``V = ⊗ span Û_i`` with the bases fixed, descent per S-step, one
augmentation and one truncation per cycle, the per-cycle approximation recursion against full
SGD, and the optimizer-state transport (zero padding, orthogonal projection, Adam's
square-root rule), plus the error messages of the pieces and the example of
docs/algorithms.md §5.
"""

import copy
import math
import re
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from tucker_ref.integrators import OPTIMIZERS, SGD, Adam, AdamW, HeavyBall, tdlrt_step
from tucker_ref.integrators import steps as steps_module
from tucker_ref.integrators.steps import (
    AugmentedPoint,
    augment,
    galerkin_gradient,
    s_step,
    tdlrt_cycle,
    truncate_cycle,
)
from tucker_ref.manifold import normal_component_norm
from tucker_ref.testing.problems import QuadraticRegression, subspace_projection
from tucker_ref.testing.strategies import conditioned_core, random_tucker, seeds, tucker_tensors
from tucker_ref.tucker import TuckerTensor, multi_mode_product

REFERENCE = Path(__file__).parent / "data" / "tdlrt_step_reference.npz"

#: shape, ranks, variant, momentum, tau, s_step_gradient, adaptive modes, dtype, steps
REFERENCE_CASES = [
    ((6, 5, 4), (2, 2, 2), "k_step", 0.0, 0.05, "same_point", None, "float64", 3),
    ((6, 5, 4), (3, 2, 2), "augmented_gradient", 0.9, 0.1, "same_point", None, "float64", 3),
    ((5, 4, 3, 3), (2, 2, 3, 3), "k_step", 0.9, 0.02, "same_point", (0, 1), "float64", 3),
    ((6, 5, 4), (2, 3, 2), "k_step", 0.5, 0.05, "reevaluate", None, "float64", 3),
    ((7, 6), (3, 3), "k_step", 0.9, 0.1, "same_point", None, "float32", 3),
    ((8, 7), (3, 3), "k_step", 0.9, 0.1, "same_point", None, "float64", 3),
]


def reference_outputs() -> dict:
    """Run the recorded cases with today's ``tdlrt_step``: ``{key: array}`` as in the reference file."""
    out = {}
    for c, (shape, ranks, variant, mom, tau, ssg, adaptive, dtype, steps) in enumerate(REFERENCE_CASES):
        rng = np.random.default_rng(100 + c)
        prob = QuadraticRegression.random(shape, m=3 * int(np.prod(shape)), rng=rng)
        core = conditioned_core(rng, ranks, min_sigma=0.1)
        Y = random_tucker(rng, shape, ranks, core=core)
        Y = TuckerTensor(Y.core.astype(dtype), [U.astype(dtype) for U in Y.factors])
        opt = HeavyBall(mom) if mom > 0 else None
        for k in range(steps):
            grad = prob.grad_callable if ssg == "reevaluate" else (lambda p: prob.grad_callable(p).astype(dtype))
            Y, rep = tdlrt_step(Y, grad, 0.3 / prob.smoothness, tau=tau, variant=variant, adaptive_modes=adaptive,
                                s_step_gradient=ssg, optimizer=opt, diagnostics=False)
            out[f"case{c}/step{k}/core"] = Y.core
            for i, U in enumerate(Y.factors):
                out[f"case{c}/step{k}/U{i}"] = U
            out[f"case{c}/step{k}/eta"] = np.array(rep.eta)
            if opt is not None:
                out[f"case{c}/step{k}/velocity"] = opt.state
    return out


def test_tdlrt_step_is_bit_identical_to_the_recorded_implementation():
    recorded = np.load(REFERENCE)
    with threadpool_limits(limits=1):
        now = reference_outputs()
    assert sorted(now) == sorted(recorded.files)
    different = [k for k in now if now[k].dtype != recorded[k].dtype or not np.array_equal(now[k], recorded[k])]
    assert not different, f"tdlrt_step changed: {different[:5]}"


# =======================================================================================
# Properties of the cycle (docs/theory.md §6, docs/algorithms.md §5). Points and losses as in
# tests/test_guarantees.py: seeded strategies with controlled core conditioning, quadratic
# losses with the exact smoothness constant. `event()` counts the draws in which a property is
# not trivially satisfied (`pytest --hypothesis-show-statistics`); `@example` pins the regimes
# where a bound is attained or the augmentation saturates, so every profile runs them.
# =======================================================================================
EPS = np.finfo(np.float64).eps
#: The two inequalities of docs/theory.md §6 get more draws than the identities: they are
#: where a rounding margin could hide a violation (the whole file stays well under 20 s).
BOUND_EXAMPLES = 4 * settings.default.max_examples
TAUS = st.sampled_from([0.0, 1e-3, 1e-2, 0.1, 0.3])
OPTIMIZER_NAMES = ("sgd", "momentum", "adam", "adamw")
ALGORITHMS_MD = Path(__file__).resolve().parents[1] / "docs" / "algorithms.md"


def norm(x) -> float:
    return float(np.linalg.norm(x))


def rounding(Y: TuckerTensor, c: float = 10.0) -> float:
    """Relative rounding of one chain of ``d`` mode products with orthonormal ``n × k`` matrices
    (``~n·eps`` each); ``c`` covers the handful of such chains a step composes (as in
    tests/test_guarantees.py)."""
    return c * Y.ndim * max(Y.shape) * EPS


def quadratic(shape, seed: int, m: int | None = None) -> QuadraticRegression:
    """``½‖A vec(W) − b‖²`` with ``m`` Gaussian rows (drawn in ``[1, 40]`` from the seed when not given)."""
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 41)) if m is None else m
    return QuadraticRegression.random(shape, m, rng)


def point_for_example(shape, ranks, seed: int, min_sigma: float = 1e-2) -> TuckerTensor:
    """A fixed point for ``@example``: core with ``cond(Mat_i(C)) ≤ 1/min_sigma`` (the whole range used)."""
    rng = np.random.default_rng(seed)
    core = conditioned_core(rng, ranks, min_sigma, spread=1.0)
    return random_tucker(rng, shape, ranks, core=core)


#: Pinned points: full rank (V is the whole space, Π = I), a mode already at full rank next to
#: modes whose augmentation saturates (n_i < 2r_i), rank one, and a matrix.
FULL_RANK = point_for_example((3, 3, 2), (3, 3, 2), 1)
SATURATED = point_for_example((3, 4, 2), (2, 2, 2), 2)
RANK_ONE = point_for_example((5, 5, 5), (1, 1, 1), 3)
MATRIX = point_for_example((6, 5), (2, 2), 4)


def make_optimizer(name: str, weight_decay: float = 0.0):
    return OPTIMIZERS[name](weight_decay=weight_decay)


def random_state(optimizer, shape, rng):
    """A random core state of ``optimizer`` for a core of ``shape`` (``None`` for plain SGD)."""
    if isinstance(optimizer, Adam):
        return {"m": rng.standard_normal(shape), "v": rng.standard_normal(shape) ** 2,
                "t": np.array(int(rng.integers(1, 50)), dtype=np.int64)}
    if type(optimizer) is SGD:
        return None
    return rng.standard_normal(shape)


def states_equal(a, b) -> bool:
    """Bitwise equality of two optimizer states (arrays or Adam's dicts), dtypes included."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(
            np.asarray(a[k]).dtype == np.asarray(b[k]).dtype and np.array_equal(a[k], b[k]) for k in a)
    return a.dtype == b.dtype and np.array_equal(a, b)


def tuckers_equal(A: TuckerTensor, B: TuckerTensor) -> bool:
    return (A.core.dtype == B.core.dtype and np.array_equal(A.core, B.core)
            and all(U.dtype == V.dtype and np.array_equal(U, V) for U, V in zip(A.factors, B.factors)))


def first_moment(state):
    """The linear part of a state: the velocity (HeavyBall) or Adam's ``m``."""
    return state["m"] if isinstance(state, dict) else state


# ---------------------------------------------------------------------------------------
# every iterate stays in V; the bases do not move; each S-step's gradient is taken at its point
# ---------------------------------------------------------------------------------------
@given(Y=tucker_tensors(2, 4, 1, 5, min_sigma=1e-2), seed=seeds(), K=st.integers(1, 5),
       lr_factor=st.floats(0.01, 3.0))
@example(Y=SATURATED, seed=0, K=5, lr_factor=1.0)
@example(Y=RANK_ONE, seed=1, K=5, lr_factor=2.5)
@example(Y=FULL_RANK, seed=2, K=3, lr_factor=1.0)
def test_s_steps_stay_in_the_augmented_space(Y, seed, K, lr_factor):
    p = quadratic(Y.shape, seed)
    lr = lr_factor / p.smoothness
    calls = []

    def grad(point):
        calls.append(point.full())
        return p.grad_callable(point)

    point = augment(Y, grad)
    bases0 = [U.copy() for U in point.bases]
    if point.ranks != Y.ranks:
        event("augmented: V is not the whole space" if point.ranks != Y.shape else "augmented to full rank")
    Yk = point.tucker().full()
    for k in range(K):
        core_before = point.core.copy()
        calls.clear()
        nxt = s_step(point, grad, lr)
        # The gradient was asked for once, at the current point Ŷ_k (not at Y0).
        assert len(calls) == 1 and np.array_equal(calls[0], point.tucker().full())
        assert nxt.s_steps == k + 1 and point.s_steps == k and np.array_equal(point.core, core_before)
        assert all(np.array_equal(U, U0) for U, U0 in zip(nxt.bases, bases0))
        Y_next = nxt.tucker().full()
        # Ŷ_{k+1} ∈ V = ⊗ span Û_i (the cycle's first bases): one chain of mode products each side.
        assert norm(Y_next - subspace_projection(Y_next, bases0)) <= rounding(Y) * norm(Y_next)
        # ... and it is the SGD step of the restricted loss, Ŷ_{k+1} = Ŷ_k − λΠ∇L(Ŷ_k); the
        # difference is the rounding of Ŷ_k, Ŷ_{k+1} and ΠG, each relative to its own norm.
        G = p.gradient(Yk)
        expected = Yk - lr * subspace_projection(G, bases0)
        assert norm(Y_next - expected) <= rounding(Y) * (norm(Yk) + norm(Y_next) + lr * norm(G))
        point, Yk = nxt, Y_next


# ---------------------------------------------------------------------------------------
# descent per S-step (plain SGD, each step's own full gradient, λ ≤ 1/L)
# ---------------------------------------------------------------------------------------
@settings(max_examples=BOUND_EXAMPLES)
@given(Y=tucker_tensors(2, 4, 1, 4, min_sigma=1e-2), seed=seeds(), m=st.integers(1, 40), K=st.integers(1, 4),
       lr_factor=st.floats(0.05, 1.0))
# m = 1 at full rank with λ = 1/L: the rank-one Hessian's direction lies in V, the bound is
# attained with equality and the loss falls to 0 in one S-step; the second S-step then starts
# at the loss's rounding floor (L ≈ 1.5e-31, L_next ≈ 6e-33): the case that needs the floor term.
@example(Y=FULL_RANK, seed=3, m=1, K=2, lr_factor=1.0)
@example(Y=SATURATED, seed=4, m=1, K=4, lr_factor=1.0)
@example(Y=RANK_ONE, seed=5, m=40, K=4, lr_factor=1.0)
def test_descent_per_s_step(Y, seed, m, K, lr_factor):
    p = quadratic(Y.shape, seed, m)
    Ls = p.smoothness
    lr = lr_factor / Ls
    point = augment(Y, p.grad_callable)
    scale_A = norm(p.A)
    for _ in range(K):
        Yk = point.tucker().full()
        Lk = p.loss(Yk)
        g = galerkin_gradient(point, p.grad_callable)
        point = s_step(point, p.grad_callable, lr)
        Y_next = point.tucker().full()
        L_next = p.loss(Y_next)
        decrease = lr * (1 - lr * Ls / 2) * norm(g) ** 2
        # Rounding of the compared terms, relative to |L(Ŷ_k)| and λ‖g‖², plus the floor of a
        # computed loss ½‖r‖²: the residual r = A vec(Ŷ) − b carries an absolute error
        # δr ≲ rounding·(‖A‖‖Ŷ‖ + ‖b‖) (from Ŷ's mode products and the product with A), so L
        # carries ‖r‖δr + δr²/2, which does not shrink with L (at L ≈ 0 it dominates).
        delta_r = rounding(Y) * (scale_A * max(norm(Yk), norm(Y_next)) + norm(p.b))
        floor = (math.sqrt(2 * abs(Lk)) + math.sqrt(2 * abs(L_next))) * delta_r + delta_r**2
        margin = rounding(Y) * (abs(Lk) + lr * norm(g) ** 2) + floor
        assert L_next <= Lk - decrease + margin
        if norm(g) > 0 and decrease > 100 * margin:
            event("descent: the required decrease exceeds the rounding margin 100-fold")


# ---------------------------------------------------------------------------------------
# one augmentation and one truncation per cycle; the composition is the pieces bit for bit
# ---------------------------------------------------------------------------------------
@given(Y=tucker_tensors(2, 4, 1, 5, min_sigma=1e-2), seed=seeds(), K=st.integers(1, 4),
       lr_factor=st.floats(0.01, 2.0), tau=TAUS, opt=st.sampled_from(OPTIMIZER_NAMES),
       weight_decay=st.sampled_from([0.0, 0.1]))
@example(Y=SATURATED, seed=6, K=4, lr_factor=1.0, tau=0.1, opt="adam", weight_decay=0.1)
@example(Y=FULL_RANK, seed=7, K=3, lr_factor=1.0, tau=0.3, opt="momentum", weight_decay=0.0)
def test_cycle_is_augment_s_steps_truncate(Y, seed, K, lr_factor, tau, opt, weight_decay):
    p = quadratic(Y.shape, seed)
    lr = lr_factor / p.smoothness
    G0 = p.gradient(Y.full())
    grads = [G0] + [p.grad_callable] * (K - 1)
    opt_a = make_optimizer(opt, weight_decay)
    opt_a.state = random_state(opt_a, Y.ranks, np.random.default_rng(seed + 1))
    opt_b = copy.deepcopy(opt_a)
    with mock.patch.object(steps_module, "truncate_step", wraps=steps_module.truncate_step) as truncations, \
            mock.patch.object(steps_module, "augmented_bases", wraps=steps_module.augmented_bases) as augmentations:
        Y1, report = tdlrt_cycle(Y, grads, lr, tau=tau, optimizer=opt_a, diagnostics=False)
    assert augmentations.call_count == 1 and truncations.call_count == 1

    point = augment(Y, G0, optimizer=opt_b)
    committed = copy.deepcopy(opt_b.state)
    augmented = point.ranks
    for k, g in enumerate(grads):
        point = s_step(point, g, lr, optimizer=opt_b)
        # Ranks change only at the truncation; the optimizer object is written only there.
        assert point.ranks == augmented and point.s_steps == k + 1
        assert states_equal(opt_b.state, committed)
    Y1_manual, trunc = truncate_cycle(point, tau=tau, optimizer=opt_b)
    assert tuckers_equal(Y1, Y1_manual)
    assert states_equal(opt_a.state, opt_b.state)
    assert report.eta == trunc.error and report.tails == trunc.tails
    assert (report.ranks_before, report.ranks_augmented, report.ranks_after) == (Y.ranks, augmented, Y1.ranks)
    assert report.s_steps == K
    assert report.s_step_gradient == ("same_point" if K == 1 else "reevaluate")
    if Y1.ranks != augmented:
        event("the truncation changed the ranks")


# ---------------------------------------------------------------------------------------
# K = 1 is tdlrt_step with the S-step gradient at Y0, bit for bit, for every optimizer
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("opt", OPTIMIZER_NAMES)
@given(Y=tucker_tensors(2, 4, 1, 5, min_sigma=1e-2), seed=seeds(), lr_factor=st.floats(0.01, 2.0), tau=TAUS,
       warm=st.integers(0, 2), weight_decay=st.sampled_from([0.0, 0.05]), callable_grad=st.booleans(),
       dtype=st.sampled_from(["float64", "float32"]))
def test_one_s_step_cycle_is_tdlrt_step(opt, Y, seed, lr_factor, tau, warm, weight_decay, callable_grad, dtype):
    p = quadratic(Y.shape, seed)
    lr = lr_factor / p.smoothness
    Y = Y.astype(dtype)
    opt_a = make_optimizer(opt, weight_decay)
    for _ in range(warm):  # a state that has been through earlier cycles (None when warm = 0)
        Y, _ = tdlrt_step(Y, p.grad_callable, lr, tau=tau, optimizer=opt_a, diagnostics=False)
    opt_b = copy.deepcopy(opt_a)
    calls = []

    def counted(point):
        calls.append(point)
        return p.grad_callable(point)

    grad = counted if callable_grad else p.gradient(Y.full())
    Y_step, rep_step = tdlrt_step(Y, grad, lr, tau=tau, optimizer=opt_a, s_step_gradient="same_point")
    Y_cycle, rep_cycle = tdlrt_cycle(Y, [grad], lr, tau=tau, optimizer=opt_b)
    # A callable is asked once per call, at Y0 itself: the S-step reuses that gradient (a
    # mini-batch callable asked again would answer with another batch).
    assert all(q is Y for q in calls) and len(calls) == (2 if callable_grad else 0)
    assert tuckers_equal(Y_step, Y_cycle)
    assert states_equal(opt_a.state, opt_b.state)
    assert rep_step.eta == rep_cycle.eta and rep_step.tails == rep_cycle.tails
    assert rep_step.proj_grad_norm == rep_cycle.proj_grad_norm
    assert rep_step.s_steps == rep_cycle.s_steps == 1
    assert rep_cycle.s_step_gradient == "same_point"
    if opt_a.state is not None:
        event("non-trivial optimizer state compared")


# ---------------------------------------------------------------------------------------
# the per-cycle approximation recursion against full SGD (convex quadratic, λ ≤ 2/L)
# ---------------------------------------------------------------------------------------
@settings(max_examples=BOUND_EXAMPLES)
@given(Y=tucker_tensors(2, 4, 1, 4, min_sigma=1e-2), seed=seeds(), K=st.integers(1, 5),
       lr_factor=st.floats(0.05, 2.0), tau=TAUS, offset=st.sampled_from([0.0, 0.0, 1e-3, 0.1, 1.0]))
@example(Y=SATURATED, seed=8, K=5, lr_factor=2.0, tau=0.0, offset=0.0)   # λ = 2/L: the factor-1 boundary
@example(Y=RANK_ONE, seed=9, K=5, lr_factor=1.0, tau=0.1, offset=0.0)
@example(Y=MATRIX, seed=10, K=4, lr_factor=1.5, tau=0.3, offset=0.1)
def test_cycle_approximation_recursion(Y, seed, K, lr_factor, tau, offset):
    p = quadratic(Y.shape, seed)
    Ls = p.smoothness
    lr = lr_factor / Ls  # convex and λ ≤ 2/L: W ↦ W − λ∇L(W) is 1-Lipschitz (factor 1)
    G0 = p.gradient(Y.full())
    point = augment(Y, G0)
    bases = point.bases
    Y_hat = point.tucker().full()
    Y0 = Y_hat.copy()
    D = np.random.default_rng(seed + 1).standard_normal(Y.shape)
    W = Y.full() + offset * norm(Y0) * D / norm(D)
    e0 = e = norm(W - Y_hat)
    r0 = norm(G0 - subspace_projection(G0, bases))
    # Containment at the augmentation point: ‖(I − Π)∇L(Y0)‖ ≤ ε(Y0) (the tangent projection
    # behind ε uses Mat_i(C)^+, whose rounding grows with cond(Mat_i(C)) ≤ 1/min_sigma = 100).
    eps0 = normal_component_norm(Y, G0)
    assert r0 <= eps0 + rounding(Y) * 100 * norm(G0)
    bound, margin, beyond_epsilon = e0, 0.0, False
    for k in range(K):
        Gk = G0 if k == 0 else p.gradient(Y_hat)
        rk = norm(Gk - subspace_projection(Gk, bases))
        # What replaces containment for k ≥ 1: (I − Π) is a contraction and ∇L is L-Lipschitz.
        assert rk <= r0 + Ls * norm(Y_hat - Y0) + rounding(Y) * (norm(Gk) + norm(G0))
        beyond_epsilon |= k >= 1 and rk > 1.01 * eps0
        GW = p.gradient(W)
        point = s_step(point, G0 if k == 0 else p.grad_callable, lr)
        W_next = W - lr * GW
        Y_next = point.tucker().full()
        e_next = norm(W_next - Y_next)
        # Rounding of W, Ŷ and both gradient steps, each relative to its size.
        step_margin = rounding(Y) * (norm(W) + norm(Y_hat) + lr * (norm(GW) + norm(Gk)))
        assert e_next <= e + lr * rk + step_margin
        if k == 0 and offset == 0.0:
            # W_1 − Ŷ_1 = −λ(I − Π)∇L(Y0): exact at the augmentation point.
            assert abs(e_next - lr * r0) <= step_margin
        bound += lr * rk
        margin += step_margin
        W, Y_hat, e = W_next, Y_next, e_next
    Y1, trunc = truncate_cycle(point, tau=tau)
    eK = norm(W - Y1.full())
    # η is measured in core coordinates: its rounding is relative to ‖Ŷ_K‖.
    assert eK <= bound + trunc.error + margin + rounding(Y) * norm(Y_hat)
    if e0 == 0:
        event("e0 = 0")
    if eK >= 0.5 * (bound + trunc.error) and eK > 0:
        event("bound within a factor 2 of e_K (not trivially satisfied)")
    if beyond_epsilon:
        event("some residual with k >= 1 exceeds eps(Y0): no containment after the first S-step")


# ---------------------------------------------------------------------------------------
# optimizer state: zero padding, S-steps in the point, orthogonal projection at truncation
# ---------------------------------------------------------------------------------------
@given(Y=tucker_tensors(2, 4, 1, 5, min_sigma=1e-2), seed=seeds(), opt=st.sampled_from(["momentum", "adam", "adamw"]),
       K=st.integers(1, 3), lr_factor=st.floats(0.01, 1.0), tau=TAUS)
@example(Y=SATURATED, seed=11, opt="adam", K=2, lr_factor=0.5, tau=0.3)
@example(Y=RANK_ONE, seed=12, opt="momentum", K=3, lr_factor=0.5, tau=0.1)
def test_optimizer_state_transport(Y, seed, opt, K, lr_factor, tau):
    p = quadratic(Y.shape, seed)
    lr = lr_factor / p.smoothness
    optimizer = make_optimizer(opt)
    optimizer.state = random_state(optimizer, Y.ranks, np.random.default_rng(seed + 1))
    state0 = copy.deepcopy(optimizer.state)
    m0 = first_moment(state0)
    point = augment(Y, p.grad_callable, optimizer=optimizer)
    assert states_equal(optimizer.state, state0)  # augment reads the state, never writes it
    m_hat = first_moment(point.optimizer_state)
    block = tuple(slice(0, r) for r in Y.ranks)
    outside = np.ones(point.ranks, dtype=bool)
    outside[block] = False
    # Zero padding, exactly: M̂_i = [I; 0], so the old moment is the leading block, zeros elsewhere.
    assert np.array_equal(m_hat[block], m0) and not m_hat[outside].any()
    # The dense moment m ×_i U_i is unchanged (one mode-product chain each side).
    dense0 = multi_mode_product(m0, Y.factors)
    assert norm(multi_mode_product(m_hat, point.bases) - dense0) <= rounding(Y) * norm(m0)
    if isinstance(optimizer, Adam):
        v_hat = point.optimizer_state["v"]
        # (√v)² rounds to within 2 ulp of v; the padding is exactly zero.
        assert np.all(np.abs(v_hat[block] - state0["v"]) <= 4 * EPS * state0["v"])
        assert not v_hat[outside].any() and np.all(v_hat >= 0)
        assert int(point.optimizer_state["t"]) == int(state0["t"])
    for _ in range(K):
        point = s_step(point, p.grad_callable, lr, optimizer=optimizer)
        if isinstance(optimizer, Adam):
            assert np.all(point.optimizer_state["v"] >= 0)
    assert states_equal(optimizer.state, state0)  # S-steps keep the state in the point
    m_K = first_moment(point.optimizer_state)
    dense_K = multi_mode_product(m_K, point.bases)
    Y1, _ = truncate_cycle(point, tau=tau, optimizer=optimizer)
    m1 = first_moment(optimizer.state)
    assert m1.shape == Y1.ranks
    # Truncation: the dense moment is projected orthogonally onto ⊗ span U_i^1.
    projected = subspace_projection(dense_K, Y1.factors)
    assert norm(multi_mode_product(m1, Y1.factors) - projected) <= rounding(Y) * norm(m_K)
    if norm(dense_K - projected) > 1e3 * rounding(Y) * norm(m_K):
        event("truncation removed part of the moment")
    if isinstance(optimizer, Adam):
        assert np.all(optimizer.state["v"] >= 0)
        assert int(optimizer.state["t"]) == int(state0["t"]) + K  # bias correction counts S-steps only


@given(Y=tucker_tensors(2, 4, 1, 5, min_sigma=1e-2), seed=seeds(), lr_factor=st.floats(0.01, 1.0),
       weight_decay=st.sampled_from([0.0, 1e-3, 0.1]), warm=st.booleans())
def test_weight_decay_coupled_and_decoupled(Y, seed, lr_factor, weight_decay, warm):
    p = quadratic(Y.shape, seed)
    lr = lr_factor / p.smoothness
    point = augment(Y, p.grad_callable)
    g = galerkin_gradient(point, p.grad_callable)
    if warm:
        point.optimizer_state = random_state(Adam(), point.ranks, np.random.default_rng(seed + 1))
    coupled = s_step(point, None, lr, core_grad=g, optimizer=Adam(weight_decay=weight_decay))
    decoupled = s_step(point, None, lr, core_grad=g, optimizer=AdamW(weight_decay=weight_decay))
    # Adam's decay is the L2 term added to the gradient before the adaptive scaling ...
    assert np.array_equal(coupled.core, s_step(point, None, lr, core_grad=g + weight_decay * point.core,
                                               optimizer=Adam()).core)
    # ... AdamW's is added to the direction after it, ``Ĉ ← Ĉ − λ(m̂/(√v̂ + ε) + wĈ)``.
    plain = s_step(point, None, lr, core_grad=g, optimizer=Adam())
    expected = plain.core - lr * weight_decay * point.core
    assert norm(decoupled.core - expected) <= 4 * EPS * (norm(point.core) + norm(plain.core - point.core))
    if weight_decay == 0:
        assert np.array_equal(coupled.core, decoupled.core)
        assert states_equal(coupled.optimizer_state, decoupled.optimizer_state)
    elif norm(point.core) > 0:
        # Different unless 1/(√v̂ + ε) = 1 on the core's support: the gap is far above rounding.
        gap = norm(coupled.core - decoupled.core)
        assert gap > 1e3 * EPS * (norm(point.core) + lr * norm(g))
        event("Adam and AdamW differ with weight decay")
    # SGD's decay acts on the weight itself: Ŷ ← (1 − λw)Ŷ − λΠ∇L(Ŷ) (orthonormal bases).
    point.optimizer_state = None
    sgd = s_step(point, None, lr, core_grad=g, optimizer=SGD(weight_decay=weight_decay))
    Y_hat = point.tucker().full()
    expected = (1 - lr * weight_decay) * Y_hat - lr * multi_mode_product(g, point.bases)
    assert norm(sgd.tucker().full() - expected) <= rounding(Y) * (norm(Y_hat) + lr * norm(g))


@given(Y=tucker_tensors(2, 4, 1, 5, min_sigma=1e-2), seed=seeds(), scale=st.floats(0.0, 1.0),
       lr_factor=st.floats(0.01, 1.0))
@example(Y=SATURATED, seed=13, scale=0.25, lr_factor=1.0)
def test_grad_scale_scales_the_s_step_gradient(Y, seed, scale, lr_factor):
    p = quadratic(Y.shape, seed)
    lr = lr_factor / p.smoothness
    point = augment(Y, p.grad_callable)
    g = galerkin_gradient(point, p.grad_callable)
    clipped = s_step(point, p.grad_callable, lr, grad_scale=scale)
    assert np.array_equal(clipped.core, s_step(point, None, lr, core_grad=g * scale).core)
    # With momentum, the scaled gradient is what enters the velocity: v ← βv + c·g (not c·(βv + g)).
    point.optimizer_state = random_state(make_optimizer("momentum"), point.ranks, np.random.default_rng(seed + 1))
    hb = make_optimizer("momentum")
    a = s_step(point, p.grad_callable, lr, grad_scale=scale, optimizer=hb)
    b = s_step(point, None, lr, core_grad=g * scale, optimizer=hb)
    assert np.array_equal(a.core, b.core) and states_equal(a.optimizer_state, b.optimizer_state)
    if scale not in (0.0, 1.0):
        event("clipping active")


def test_adam_second_moment_transport_is_a_heuristic():
    """The square-root rule against the second moment of the transformed gradient (docs/theory.md §6).

    One Adam step with ``g = (1, −1)``, then a 45° rotation ``R`` of the coordinates: the rule
    gives ``v = (1 − β2)·(0, 2)`` where the second moment of ``Rg = (√2, 0)`` is
    ``(1 − β2)·(2, 0)``. For a signed permutation the rule is exact.
    """
    adam = Adam()
    b1, b2 = adam.betas
    g = np.array([1.0, -1.0])
    _, state = adam.direction(g, None)
    c = 1 / math.sqrt(2)
    R = np.array([[c, -c], [c, c]])
    moved = adam.transport(state, [R])
    assert np.allclose(moved["m"], (1 - b1) * np.array([math.sqrt(2), 0.0]), rtol=0, atol=4 * EPS)
    assert np.allclose(moved["v"], (1 - b2) * np.array([0.0, 2.0]), rtol=0, atol=4 * EPS)
    assert np.allclose((1 - b2) * (R @ g) ** 2, (1 - b2) * np.array([2.0, 0.0]), rtol=0, atol=4 * EPS)
    assert int(moved["t"]) == 1
    signed_permutation = np.array([[0.0, -1.0], [1.0, 0.0]])
    exact = adam.transport(state, [signed_permutation])
    # Exact up to the rounding of (√v)² (an ulp or two).
    np.testing.assert_allclose(exact["v"], (1 - b2) * (signed_permutation @ g) ** 2, rtol=4 * EPS, atol=0)
    assert np.array_equal(exact["m"], (1 - b1) * (signed_permutation @ g))


# ---------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------
def test_cycle_pieces_reject_bad_input():
    rng = np.random.default_rng(0)
    p = QuadraticRegression.random((5, 4, 3), 20, rng)
    Y = point_for_example((5, 4, 3), (2, 2, 2), 0)
    G = p.gradient(Y.full())
    point = augment(Y, G)
    g = galerkin_gradient(point, G)
    with pytest.raises(ValueError, match="give exactly one of grad .* and core_grad"):
        s_step(point, G, 0.1, core_grad=g)
    with pytest.raises(ValueError, match="give exactly one of grad .* and core_grad"):
        s_step(point, None, 0.1)
    with pytest.raises(ValueError, match=r"core_grad must have the augmented core's shape \(4, 4, 3\)"):
        s_step(point, None, 0.1, core_grad=np.zeros((2, 2, 2)))
    for piece in (lambda q: s_step(q, G, 0.1), lambda q: galerkin_gradient(q, G), lambda q: truncate_cycle(q)):
        with pytest.raises(TypeError, match="point must be an AugmentedPoint"):
            piece(Y)
    with pytest.raises(TypeError, match=r"grads\[1\] must be a callable"):
        tdlrt_cycle(Y, [G, G], 0.1)
    with pytest.raises(TypeError, match="grads must be a non-empty list"):
        tdlrt_cycle(Y, G, 0.1)
    with pytest.raises(TypeError, match="grads must be a non-empty list"):
        tdlrt_cycle(Y, [], 0.1)
    with pytest.raises(ValueError, match="s_step: .*NaN or Inf"):
        s_step(point, np.full(Y.shape, np.nan), 0.1)
    # Optimizer state of the wrong shape: named, before anything changes.
    hb = make_optimizer("momentum")
    hb.state = np.zeros((3, 2, 2))
    with pytest.raises(ValueError, match=r"augment: optimizer.state has shape \(3, 2, 2\), expected .* \(2, 2, 2\)"):
        augment(Y, G, optimizer=hb)
    with pytest.raises(ValueError, match="tdlrt_cycle: optimizer.state has shape"):
        tdlrt_cycle(Y, [G], 0.1, optimizer=hb)
    adam = Adam()
    adam.state = {"m": np.zeros((2, 2, 2)), "v": np.zeros((2, 2)), "t": np.array(1)}
    with pytest.raises(ValueError, match=r"optimizer.state\['v'\] has shape \(2, 2\)"):
        augment(Y, G, optimizer=adam)
    wrong = AugmentedPoint(point.core, point.bases, point.ranks_before, point.variant,
                           optimizer_state=np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match=r"s_step: optimizer.state has shape \(2, 2, 2\)"):
        s_step(wrong, G, 0.1, optimizer=make_optimizer("momentum"))
    with pytest.raises(ValueError, match="truncate_cycle: optimizer.state has shape"):
        truncate_cycle(wrong, optimizer=make_optimizer("momentum"))
    # A cycle that fails in a later S-step leaves the optimizer's committed state alone.
    hb = make_optimizer("momentum")
    hb.state = rng.standard_normal(Y.ranks)
    before = hb.state.copy()
    with pytest.raises(ValueError, match="tdlrt_cycle: .*NaN or Inf"):
        tdlrt_cycle(Y, [G, lambda q: np.full(Y.shape, np.inf)], 0.1, optimizer=hb)
    assert np.array_equal(hb.state, before)


# ---------------------------------------------------------------------------------------
# the example of docs/algorithms.md §5 runs as printed
# ---------------------------------------------------------------------------------------
def test_algorithms_doc_cycle_example_runs(capsys):
    text = ALGORITHMS_MD.read_text(encoding="utf-8")
    section = text.split("## 5. The cycle", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "docs/algorithms.md §5", "exec"), namespace)
    assert namespace["report"].s_steps == namespace["K"]
    # The block ends with a comment holding its last printed line (4 significant digits).
    expected = code.strip().splitlines()[-1].removeprefix("# ")
    assert capsys.readouterr().out.strip().splitlines()[-1] == expected
