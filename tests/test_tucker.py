"""Tucker algebra: unfoldings, the Kronecker identity, mode products, TuckerTensor.

Conventions: docs/conventions.md §1–§3; the Tucker format: docs/theory.md §1.
"""

import doctest
import itertools
import math
import string
from functools import reduce
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tucker_ref import TuckerTensor, fold, is_feasible, mode_product, multi_mode_product, unfold
from tucker_ref.testing.oracles import (
    adjoint_check,
    central_difference,
    derivative_slope,
    directional_derivative_check,
    relative_error,
)
from tucker_ref.testing.strategies import (
    conditioned_core,
    planted_tensors,
    random_orthonormal,
    seeds,
    shapes,
    tucker_tensors,
    unfolding_condition_numbers,
)

EPS = np.finfo(np.float64).eps
DOCS = Path(__file__).resolve().parents[1] / "docs" / "conventions.md"


@st.composite
def dense_with_mode(draw, min_order=1, max_order=4, max_dim=5):
    shape = draw(shapes(min_order, max_order, 1, max_dim))
    X = np.random.default_rng(draw(seeds())).standard_normal(shape)
    return X, draw(st.integers(-len(shape), len(shape) - 1))


def _einsum_mode_product(X, M, mode):
    letters = string.ascii_lowercase[: X.ndim]
    out = letters[:mode] + "Z" + letters[mode + 1:]
    return np.einsum(f"{letters},Z{letters[mode]}->{out}", X, M)


# -- unfold / fold ------------------------------------------------------------------------
@given(dense_with_mode())
def test_fold_inverts_unfold_exactly(case):
    X, mode = case
    M = unfold(X, mode)
    assert M.shape == (X.shape[mode], X.size // X.shape[mode])
    np.testing.assert_array_equal(fold(M, mode, X.shape), X)
    # and the other way round: unfold(fold(M)) == M
    np.testing.assert_array_equal(unfold(fold(M, mode, X.shape), mode), M)


@given(dense_with_mode(max_order=4, max_dim=4))
def test_unfold_column_index_is_c_order_of_remaining_modes(case):
    """Entry X[k] sits in column ravel_multi_index((k_j)_{j≠i}, C order) of Mat_i(X)."""
    X, mode = case
    mode %= X.ndim
    M = unfold(X, mode)
    rest = X.shape[:mode] + X.shape[mode + 1:]
    for k in np.ndindex(*X.shape):
        others = k[:mode] + k[mode + 1:]
        col = np.ravel_multi_index(others, rest, order="C") if rest else 0
        assert M[k[mode], col] == X[k]


def test_conventions_doc_examples_run_as_printed(run_doctests):
    """docs/conventions.md prints the unfoldings the code computes; keep them in sync."""
    test = doctest.DocTestParser().get_doctest(DOCS.read_text(encoding="utf-8"), {}, DOCS.name, str(DOCS), 0)
    assert run_doctests([test], doctest.NORMALIZE_WHITESPACE) > 0


@st.composite
def tucker_with_general_factors(draw, shape=None):
    """A Tucker tensor whose factors are *not* orthonormal (well-conditioned, cond ≤ 4)."""
    T = draw(tucker_tensors(min_order=2, max_order=4, max_dim=5, min_sigma=0.1, shape=shape))
    rng = np.random.default_rng(draw(seeds()))
    factors = []
    for U in T.factors:
        r = U.shape[1]
        scales = rng.uniform(0.5, 2.0, size=r)
        factors.append(U @ (random_orthonormal(rng, r, r) * scales) @ random_orthonormal(rng, r, r).T)
    return TuckerTensor(T.core, factors)


@given(tucker_with_general_factors(), st.data())
def test_kronecker_identity_in_increasing_mode_order(T, data):
    mode = data.draw(st.integers(0, T.ndim - 1))
    others = [U for j, U in enumerate(T.factors) if j != mode]
    kron = reduce(np.kron, others)
    rhs = T.factors[mode] @ unfold(T.core, mode) @ kron.T
    # Each side is a product of well-conditioned factors: rounding of order eps·‖·‖.
    assert relative_error(unfold(T.full(), mode), rhs) <= 100 * EPS


def test_kronecker_identity_order_is_distinguishable():
    """The reversed Kronecker order gives a different matrix on a 2×3×2 example, so the test above can fail."""
    rng = np.random.default_rng(7)
    C = rng.standard_normal((2, 3, 2))
    U = [rng.standard_normal((n, n)) for n in (2, 3, 2)]
    X = multi_mode_product(C, U)
    right = U[0] @ unfold(C, 0) @ np.kron(U[1], U[2]).T
    wrong = U[0] @ unfold(C, 0) @ np.kron(U[2], U[1]).T
    assert relative_error(unfold(X, 0), right) <= 100 * EPS
    assert relative_error(unfold(X, 0), wrong) > 0.1


# -- mode products --------------------------------------------------------------------------
@given(dense_with_mode(), st.integers(1, 5), seeds())
def test_mode_product_matches_einsum(case, J, seed):
    X, mode = case
    M = np.random.default_rng(seed).standard_normal((J, X.shape[mode]))
    Y = mode_product(X, M, mode)
    m = mode % X.ndim
    assert Y.shape == X.shape[:m] + (J,) + X.shape[m + 1:]
    assert relative_error(Y, _einsum_mode_product(X, M, m)) <= 100 * EPS
    # Mat_i(X ×_i M) = M Mat_i(X), the documented convention
    assert relative_error(unfold(Y, m), M @ unfold(X, m)) <= 100 * EPS


@given(dense_with_mode(min_order=2), st.data())
def test_multi_mode_product_keeps_the_users_order(case, data):
    X, _ = case
    d = X.ndim
    modes = data.draw(st.permutations(range(d)))
    k = data.draw(st.integers(1, d))
    modes = list(modes[:k])
    rng = np.random.default_rng(data.draw(seeds()))
    # distinct output sizes per entry, so a sorted pairing would not even have matching shapes
    mats = [rng.standard_normal((2 + j, X.shape[m])) for j, m in enumerate(modes)]
    expected = X
    for M, m in zip(mats, modes):
        expected = _einsum_mode_product(expected, M, m)
    got = multi_mode_product(X, mats, modes=modes)
    assert got.shape == expected.shape
    assert relative_error(got, expected) <= 100 * EPS
    # transpose=True applies M_k^T: same result from the transposed list
    got_t = multi_mode_product(X, [M.T for M in mats], modes=modes, transpose=True)
    np.testing.assert_array_equal(got_t, got)
    # None entries are identities in their mode
    free = [m for m in range(d) if m not in modes]
    if free:
        got_none = multi_mode_product(X, [None] + mats, modes=[free[0]] + modes)
        np.testing.assert_array_equal(got_none, got)


def test_multi_mode_product_negative_modes_and_defaults():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((2, 3, 4))
    A, B = rng.standard_normal((5, 4)), rng.standard_normal((6, 2))
    np.testing.assert_array_equal(multi_mode_product(X, [A, B], modes=[-1, 0]),
                                  mode_product(mode_product(X, A, 2), B, 0))
    np.testing.assert_array_equal(multi_mode_product(X, [B, None, A]),
                                  mode_product(mode_product(X, B, 0), A, 2))


# -- TuckerTensor ---------------------------------------------------------------------------------
@given(tucker_with_general_factors(), st.data())
def test_factored_norm_and_inner_match_dense(T, data):
    X = T.full()
    nx = np.linalg.norm(X)
    assert abs(T.norm() - nx) <= 1e-12 * nx
    assert abs(T.inner(T) - nx**2) <= 1e-12 * nx**2
    # a second tensor of the same shape, with its own (generally different) ranks
    S = data.draw(tucker_with_general_factors(shape=T.shape))
    Y = S.full()
    # inner can be ~0; its natural scale is ‖X‖‖Y‖ (Cauchy–Schwarz)
    scale = nx * np.linalg.norm(Y)
    assert abs(T.inner(S) - np.vdot(X, Y)) <= 1e-12 * scale
    assert abs(T.inner(S) - S.inner(T)) <= 1e-12 * scale


def test_factored_norm_and_inner_never_form_the_full_tensor(monkeypatch):
    """Every intermediate of norm()/inner() is smaller than the 4×5×3 full tensor."""
    import tucker_ref.tucker as tucker_module

    rng = np.random.default_rng(11)
    T = TuckerTensor(rng.standard_normal((2, 3, 2)), [rng.standard_normal((n, r)) for n, r in ((4, 2), (5, 3), (3, 2))])
    full_size = int(np.prod(T.shape))
    expected_norm, expected_inner = np.linalg.norm(T.full()), np.vdot(T.full(), T.full())
    original = tucker_module.mode_product

    def small_mode_product(X, M, mode):
        out = original(X, M, mode)
        assert out.size < full_size, "an intermediate as large as the full tensor was formed"
        return out

    monkeypatch.setattr(tucker_module, "mode_product", small_mode_product)
    assert abs(T.norm() - expected_norm) <= 1e-12 * expected_norm
    assert abs(T.inner(T) - expected_inner) <= 1e-12 * expected_inner
    with pytest.raises(AssertionError, match="as large as the full tensor"):
        T.full()  # the guard does fire when the full tensor is formed


@given(tucker_with_general_factors())
def test_orthonormalize_keeps_the_tensor(T):
    Q = T.orthonormalize()
    assert Q.ranks == T.ranks and Q.shape == T.shape
    assert Q.has_orthonormal_factors()
    for U in Q.factors:
        assert np.linalg.norm(U.T @ U - np.eye(U.shape[1])) <= 100 * EPS
    assert relative_error(Q.full(), T.full()) <= 100 * EPS


@given(tucker_tensors())
def test_tucker_properties(T):
    assert T.ndim == len(T.factors) == len(T.shape)
    assert T.ranks == T.core.shape
    assert T.shape == T.full().shape
    assert T.n_params == int(np.prod(T.ranks)) + sum(n * r for n, r in zip(T.shape, T.ranks))
    assert T.has_orthonormal_factors()
    X = T.full()
    assert relative_error(T.project(X), T.core) <= 100 * EPS
    c = T.copy()
    c.core[(0,) * c.ndim] += 1.0
    assert c.core[(0,) * c.ndim] != T.core[(0,) * T.ndim]


@given(tucker_tensors(dtype=np.float32))
def test_float32_stays_float32_in_the_algebra(T):
    assert T.dtype == np.float32
    X = T.full()
    assert X.dtype == np.float32
    assert unfold(X, 0).dtype == np.float32
    assert fold(unfold(X, 0), 0, X.shape).dtype == np.float32
    assert mode_product(X, np.eye(X.shape[0], dtype=np.float32), 0).dtype == np.float32
    Q = T.orthonormalize()
    assert Q.dtype == np.float32 and all(U.dtype == np.float32 for U in Q.factors)
    assert T.project(X).dtype == np.float32
    assert T.astype(np.float64).dtype == np.float64
    eps32 = np.finfo(np.float32).eps
    assert abs(T.norm() - np.linalg.norm(X.astype(np.float64))) <= 100 * eps32 * T.norm()


def test_integers_are_promoted_to_float64():
    T = TuckerTensor(np.ones((1, 1), dtype=np.int64), [np.ones((2, 1), dtype=np.int32), np.ones((3, 1), dtype=int)])
    assert T.dtype == np.float64


# -- bad input -------------------------------------------------------------------------------------
def test_tucker_tensor_rejects_bad_input():
    rng = np.random.default_rng(0)
    C = rng.standard_normal((2, 3))
    U0, U1 = rng.standard_normal((4, 2)), rng.standard_normal((5, 3))
    with pytest.raises(ValueError, match=r"factors must have one matrix per mode of core"):
        TuckerTensor(C, [U0])
    with pytest.raises(ValueError, match=r"factors\[1\] must have shape \(n_1, 3\)"):
        TuckerTensor(C, [U0, rng.standard_normal((5, 2))])
    with pytest.raises(ValueError, match=r"factors\[0\] must have shape"):
        TuckerTensor(C, [rng.standard_normal(4), U1])  # wrong ndim
    with pytest.raises(ValueError, match=r"core contains NaN or Inf"):
        TuckerTensor(np.full((2, 3), np.nan), [U0, U1])
    with pytest.raises(ValueError, match=r"factors\[1\] contains NaN or Inf"):
        TuckerTensor(C, [U0, np.where(U1 > 0, np.inf, U1)])
    with pytest.raises(TypeError, match=r"factors must be a list or tuple"):
        TuckerTensor(C, np.stack([U0, U0]))
    with pytest.raises(ValueError, match=r"core must have ndim >= 1"):
        TuckerTensor(np.float64(1.0), [])
    with pytest.raises(TypeError, match=r"core must be an array of real numbers"):
        TuckerTensor("abc", [U0])
    T = TuckerTensor(C, [U0, U1])
    with pytest.raises(TypeError, match=r"other must be a TuckerTensor"):
        T.inner(T.full())
    with pytest.raises(ValueError, match=r"other must have shape \(4, 5\)"):
        T.inner(TuckerTensor(C, [U0, rng.standard_normal((6, 3))]))
    with pytest.raises(ValueError, match=r"X must have shape \(4, 5\)"):
        T.project(np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"factors\[0\] has more columns"):
        TuckerTensor(rng.standard_normal((3, 1)), [rng.standard_normal((2, 3)), np.ones((1, 1))]).orthonormalize()


def test_free_functions_reject_bad_input():
    X = np.zeros((2, 3, 4))
    with pytest.raises(ValueError, match=r"mode must be in \[-3, 3\)"):
        unfold(X, 3)
    with pytest.raises(TypeError, match=r"mode must be an integer"):
        unfold(X, 1.0)
    with pytest.raises(ValueError, match=r"X must have ndim >= 1"):
        unfold(np.float64(2.0), 0)
    with pytest.raises(ValueError, match=r"M must have shape \(3, 8\)"):
        fold(np.zeros((3, 7)), 1, X.shape)
    with pytest.raises(ValueError, match=r"M must have shape"):
        fold(np.zeros(24), 1, X.shape)  # wrong ndim
    with pytest.raises(ValueError, match=r"M must be a matrix of shape \(J, 3\)"):
        mode_product(X, np.zeros((2, 4)), 1)
    with pytest.raises(ValueError, match=r"M must be a matrix of shape \(J, 3\)"):
        mode_product(X, np.zeros(3), 1)
    with pytest.raises(ValueError, match=r"modes must have one entry per matrix"):
        multi_mode_product(X, [np.eye(2)], modes=[0, 1])
    with pytest.raises(ValueError, match=r"modes must not repeat a mode"):
        multi_mode_product(X, [np.eye(2), np.eye(2)], modes=[0, -3])
    with pytest.raises(ValueError, match=r"modes\[1\] must be in \[-3, 3\)"):
        multi_mode_product(X, [np.eye(2), np.eye(2)], modes=[0, 5])
    with pytest.raises(ValueError, match=r"matrices must have at most X.ndim = 3 entries"):
        multi_mode_product(X, [None] * 4)


def test_every_mode_of_a_small_example_round_trips():
    """Deterministic companion of the hypothesis tests: all modes of a 2×3×2 tensor, incl. negative ones."""
    X = np.arange(12.0).reshape(2, 3, 2)
    for mode in itertools.chain(range(3), range(-3, 0)):
        np.testing.assert_array_equal(fold(unfold(X, mode), mode, X.shape), X)


# -- tucker_ref.testing: strategies and oracles --------------------------------------------------
@given(tucker_tensors(min_sigma=1e-3))
def test_tucker_tensors_strategy_controls_what_it_claims(T):
    assert is_feasible(T.ranks)
    assert all(r <= n for r, n in zip(T.ranks, T.shape))
    assert T.has_orthonormal_factors()
    assert max(unfolding_condition_numbers(T.core)) <= 1e3
    assert 1e-2 * (1 - 1e-12) <= np.linalg.norm(T.core) <= 1e2 * (1 + 1e-12)


@given(planted_tensors())
def test_planted_tensors_have_the_drawn_noise_level(p):
    L = p.low_rank.full()
    assert abs(np.linalg.norm(p.X - L) - p.noise_level * np.linalg.norm(L)) <= 100 * EPS * np.linalg.norm(L)


def test_conditioned_core_validates_and_reaches_the_bound():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"ranks must be positive and feasible"):
        conditioned_core(rng, (1, 1, 2), 0.1)
    with pytest.raises(ValueError, match=r"min_sigma must be in \(0, 0.5\]"):
        conditioned_core(rng, (2, 2), 0.9)
    C = conditioned_core(rng, (3, 3, 3), 1e-4, spread=1.0, norm=2.0)
    conds = unfolding_condition_numbers(C)
    assert max(conds) <= 1e4 and max(conds) > 1e2  # spread = 1 uses the range
    assert abs(np.linalg.norm(C) - 2.0) <= 10 * EPS


def test_relative_error_oracle():
    assert relative_error([3.0, 4.0], [0.0, 0.0]) == 1.0
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_error(2.0, 1.0) == relative_error(1.0, 2.0) == 0.5
    assert relative_error(np.float32(1.0), 1.0 + 1e-12) < 1e-11  # computed in float64
    with pytest.raises(ValueError, match=r"a and b must have the same shape"):
        relative_error(np.zeros(2), np.zeros(3))


@given(seeds(), st.integers(1, 6))
def test_derivative_oracles_accept_right_and_reject_wrong_derivatives(seed, n):
    rng = np.random.default_rng(seed)
    B = rng.standard_normal((n, n))
    A = B @ B.T + 3 * np.eye(n)  # Hessian A − diag(cos y) ⪰ 2I: the curvature term never vanishes
    b = rng.standard_normal(n)
    x, v = rng.standard_normal(n), rng.standard_normal(n)
    v /= np.linalg.norm(v)

    def f(y):
        return 0.5 * y @ A @ y + b @ y + np.sum(np.cos(y))

    def grad(y):
        return A @ y + b - np.sin(y)

    offset = 1.0 + np.linalg.norm(grad(x))  # larger than the true directional derivative

    def wrong_grad(y):
        return grad(y) + offset * v  # off along the probing direction

    d, h = np.vdot(grad(x), v), 1e-5
    # central difference: truncation h²/6·|∂³f| ≤ h²/6 (‖v‖ = 1; only the cosines have a
    # third derivative) plus rounding ~eps·|f|/h; the oracle's error is relative to |d|
    allowed = h**2 / 6 + 10 * EPS * (abs(f(x)) + 1) / h
    assert directional_derivative_check(f, x, v, h, d) * abs(d) <= allowed
    assert directional_derivative_check(f, x, v, 1e-5, np.vdot(wrong_grad(x), v)) > 0.1
    assert abs(derivative_slope(f, grad, x, v, np.logspace(-1, -4, 7)) - 2.0) <= 0.1
    # small steps, where the wrong linear term h·offset dominates the curvature term
    assert abs(derivative_slope(f, wrong_grad, x, v, np.logspace(-4, -6, 5)) - 1.0) <= 0.1
    # vector-valued f: a JVP
    M = rng.standard_normal((3, n))
    jvp = (1 - np.tanh(M @ x) ** 2) * (M @ v)
    assert directional_derivative_check(lambda y: np.tanh(M @ y), x, v, h, jvp) * np.linalg.norm(jvp) <= \
        h**2 * np.linalg.norm(M, 2) ** 3 + 10 * EPS * math.sqrt(3) / h
    assert central_difference(lambda y: M @ y, x, v, 0.5).shape == (3,)


def test_derivative_oracles_validate():
    x = np.zeros(2)
    with pytest.raises(ValueError, match=r"a Taylor remainder is exactly zero"):
        derivative_slope(lambda y: float(np.sum(y)), lambda y: np.ones(2), x, np.ones(2), [1e-1, 1e-2])
    with pytest.raises(ValueError, match=r"hs must be at least two distinct positive steps"):
        derivative_slope(lambda y: 0.0, lambda y: y, x, x, [1e-1])
    with pytest.raises(ValueError, match=r"direction must have the shape of x"):
        central_difference(np.sum, x, np.zeros(3), 1e-3)
    with pytest.raises(ValueError, match=r"h must be > 0"):
        central_difference(np.sum, x, x, 0.0)


@given(dense_with_mode(), st.integers(1, 4), seeds())
def test_adjoint_oracle_on_the_mode_product(case, J, seed):
    """⟨X ×_i M, Y⟩ = ⟨X, Y ×_i M^T⟩; a wrong transpose is caught."""
    X, mode = case
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((J, X.shape[mode]))
    Y = rng.standard_normal(mode_product(X, M, mode).shape)
    assert adjoint_check(lambda Z: mode_product(Z, M, mode), lambda W: mode_product(W, M.T, mode), X, Y) <= 100 * EPS
    if J == X.shape[mode] and J > 1:
        assert adjoint_check(lambda Z: mode_product(Z, M, mode), lambda W: mode_product(W, M, mode), X, Y) > 1e-6
    with pytest.raises(ValueError, match=r"y must have the shape of A\(x\)"):
        adjoint_check(lambda Z: mode_product(Z, M, mode), lambda W: mode_product(W, M.T, mode), X, Y[None])
