"""HOSVD, ST-HOSVD, truncate, orth, feasibility (docs/theory.md §1, docs/conventions.md §6–§7)."""

import itertools
import math
import warnings

import numpy as np
import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from tucker_ref import TuckerTensor, feasible_ranks, hosvd, is_feasible, orth, truncate
from tucker_ref import truncation
from tucker_ref.truncation import (
    TruncationRule,
    fix_signs,
    left_singular,
    rank_for_tolerance,
    recompress_to_feasible,
    tail_norms,
    unfolding_svds,
)
from tucker_ref.tucker import multi_mode_product, unfold
from tucker_ref.testing.oracles import relative_error
from tucker_ref.testing.strategies import (
    DrawTally,
    feasible_ranks_for,
    planted_tensors,
    random_orthonormal,
    random_tucker,
    seeds,
    tucker_example,
    tucker_tensors,
)

EPS = np.finfo(np.float64).eps
EPS32 = float(np.finfo(np.float32).eps)
#: Rounding margin of the error bounds, in units of eps·‖X‖: a handful of SVDs and mode
#: products on tensors of at most 6^4 entries (backward errors ~ sqrt(size)·eps each).
C_ROUND = 200.0

TOLS = st.sampled_from([0.0, 1e-12, 1e-6, 1e-3, 1e-2, 0.05, 0.2, 0.5, 1.0])


def _svals(M):
    return np.linalg.svd(M, compute_uv=False)


def _tail(s, r):
    return float(np.linalg.norm(np.asarray(s)[r:]))


def _orthonormal(U, tol):
    return np.linalg.norm(U.T @ U - np.eye(U.shape[1]), 2) <= tol


# -- small building blocks ------------------------------------------------------------------------
def test_tail_norms_are_accurate_for_tiny_tails():
    """Summing from the small end: the tail 1e-10 next to 1 is exact, where sqrt(Σ − cumsum) is 0."""
    s = np.array([1.0, 1e-9, 1e-10, 0.0])
    t = tail_norms(s)
    assert t.shape == (5,)
    assert t[-1] == 0.0 and t[-2] == 0.0
    assert t[2] == 1e-10
    assert abs(t[1] - math.hypot(1e-9, 1e-10)) <= 2 * EPS * t[1]
    naive = np.sqrt(np.maximum(np.sum(s**2) - np.cumsum(s**2), 0.0))
    assert naive[0] == 0.0  # the cancelling formula loses the tail entirely


@given(seeds(), st.integers(1, 8))
def test_tail_norms_match_direct_norms(seed, k):
    s = np.sort(np.random.default_rng(seed).uniform(0, 1, size=k))[::-1] * 10.0 ** np.arange(0, -k, -1)
    t = tail_norms(s)
    for r in range(k + 1):
        assert abs(t[r] - _tail(s, r)) <= 4 * EPS * max(t[r], 1e-300)


def test_rank_for_tolerance_is_non_strict_and_keeps_nonzeros_at_zero_tol():
    s = np.array([4.0, 3.0, 0.0])
    assert list(tail_norms(s)) == [5.0, 3.0, 0.0, 0.0]
    assert rank_for_tolerance(s, 3.0) == 1  # tail == threshold is accepted (non-strict)
    assert rank_for_tolerance(s, np.nextafter(3.0, 0.0)) == 2
    assert rank_for_tolerance(s, 0.0) == 2  # every nonzero singular value kept
    assert rank_for_tolerance(s, 5.0) == 0


def test_fix_signs_makes_largest_entry_positive_first_on_ties():
    U = np.array([[0.6, -0.5, 0.0], [-0.8, 0.5, 0.0], [0.0, -0.1, 0.0]])
    V = fix_signs(U)
    np.testing.assert_array_equal(V[:, 0], [-0.6, 0.8, 0.0])
    # tie |−0.5| = |0.5|: the first one (row 0) is made positive
    np.testing.assert_array_equal(V[:, 1], [0.5, -0.5, 0.1])
    np.testing.assert_array_equal(V[:, 2], U[:, 2])  # zero column untouched


@given(seeds(), st.integers(1, 6), st.integers(1, 6))
def test_left_singular_sign_rule_and_factorization(seed, m, n):
    A = np.random.default_rng(seed).standard_normal((m, n))
    P, s = left_singular(A)
    assert P.shape == (m, min(m, n))
    idx = np.argmax(np.abs(P), axis=0)
    assert np.all(P[idx, np.arange(P.shape[1])] > 0)
    assert relative_error(s, _svals(A)) <= 10 * EPS
    # P spans the column space with the right weights: ‖P^T A‖ rows have norms s
    assert relative_error(np.linalg.norm(P.T @ A, axis=1), s) <= 100 * EPS



@given(seeds(), st.lists(st.integers(1, 6), min_size=2, max_size=3))
def test_unfolding_svds_match_left_singular_per_mode(seed, shape):
    # For a matrix both modes come from one SVD (the right vectors serve mode 1): the same
    # singular values and, with distinct values, the same sign-fixed vectors as an SVD of C^T.
    C = np.random.default_rng(seed).standard_normal(shape)
    got = unfolding_svds(C)
    assert len(got) == C.ndim
    for i, (P, s) in enumerate(got):
        P_want, s_want = left_singular(unfold(C, i))
        assert P.shape == P_want.shape
        assert relative_error(s, s_want) <= 10 * EPS
        assert relative_error(np.linalg.norm(P.T @ unfold(C, i), axis=1), s) <= 100 * EPS
        gaps = np.diff(s_want)
        if gaps.size == 0 or np.min(np.abs(gaps)) > 1e-6 * s_want[0]:
            assert relative_error(P, P_want) <= 1e-8

# -- feasibility ------------------------------------------------------------------------------------
@given(st.lists(st.integers(1, 5), min_size=1, max_size=3))
def test_feasible_ranks_is_the_greatest_feasible_tuple_below(r):
    f = feasible_ranks(r)
    assert is_feasible(f)
    assert all(a <= b for a, b in zip(f, r))
    # brute force: every feasible g <= r is <= f componentwise
    for g in itertools.product(*[range(1, x + 1) for x in r]):
        if is_feasible(g):
            assert all(a <= b for a, b in zip(g, f)), (g, f)
    assert is_feasible(r) == (tuple(r) == f)


def test_feasible_ranks_examples():
    assert feasible_ranks((2, 2, 5)) == (2, 2, 4)
    assert feasible_ranks((3, 5)) == (3, 3)
    assert feasible_ranks((2, 1, 3)) == (2, 1, 2)
    assert feasible_ranks((3, 1, 1)) == (1, 1, 1)
    assert not is_feasible((1, 1, 2)) and is_feasible((2, 2, 4))


@given(seeds(), st.sampled_from([(2, 2, 5), (1, 3, 2), (2, 3, 6, 1), (4, 1), (2, 2, 2, 9)]))
def test_recompress_to_feasible_is_lossless(seed, ranks):
    rng = np.random.default_rng(seed)
    core = rng.standard_normal(ranks)
    factors = [random_orthonormal(rng, r + 2, r) for r in ranks]
    before = multi_mode_product(core, factors)
    new_core, new_factors, dropped = recompress_to_feasible(core, factors)
    assert new_core.shape == feasible_ranks(ranks)
    assert relative_error(multi_mode_product(new_core, new_factors), before) <= 100 * EPS
    assert max(dropped) <= 100 * EPS * np.linalg.norm(core)
    for U in new_factors:
        assert _orthonormal(U, 100 * EPS)


# -- HOSVD ---------------------------------------------------------------------------------------
@given(planted_tensors(), st.booleans())
def test_hosvd_without_truncation_is_exact(p, sequential):
    X = p.X
    T, rep = hosvd(X, sequential=sequential)
    nx = np.linalg.norm(X)
    assert rep.error <= C_ROUND * EPS * nx
    assert abs(rep.error - np.linalg.norm(X - T.full())) <= C_ROUND * EPS * nx
    assert is_feasible(T.ranks) and rep.ranks == T.ranks and rep.rule == "exact"
    assert T.has_orthonormal_factors()
    if is_feasible(X.shape):  # explicitly full rank
        T2, rep2 = hosvd(X, ranks=X.shape, sequential=sequential)
        assert T2.ranks == X.shape and rep2.error <= C_ROUND * EPS * nx
        assert rep2.certificate <= C_ROUND * EPS * nx


@given(planted_tensors(min_order=2, max_order=2, max_dim=7), st.data())
def test_hosvd_of_a_matrix_is_the_truncated_svd(p, data):
    """d = 2: HOSVD is the truncated SVD (Eckart–Young) — when that is unique, σ_r > σ_{r+1}.

    With a tie the two modes pick their rank-r bases independently inside the tied
    subspaces, and the error can exceed the tail (up to the certificate √2·tail): the strategy
    draws exactly tied spectra (a scaled orthogonal core) on purpose, and the test checks
    only the bounds there.
    """
    X = p.X
    W, s, Vt = np.linalg.svd(X, full_matrices=False)
    r = data.draw(st.integers(1, len(s)))
    T, rep = hosvd(X, ranks=(r, r))
    nx = np.linalg.norm(X)
    margin = C_ROUND * EPS * nx
    tail = _tail(s, r)
    assert abs(rep.tails[0] - tail) <= margin and abs(rep.tails[1] - tail) <= margin
    assert abs(rep.certificate - math.sqrt(2) * tail) <= margin
    assert tail - margin <= rep.error <= math.sqrt(2) * tail + margin
    gap = (s[r - 1] - s[r]) if r < len(s) else s[r - 1]
    if gap > 1e-6 * s[0]:
        # subspace perturbation ~ eps‖X‖/gap
        best = (W[:, :r] * s[:r]) @ Vt[:r]
        assert np.linalg.norm(T.full() - best) <= margin * (s[0] / gap)
        assert abs(rep.error - tail) <= margin * (s[0] / gap)  # Eckart–Young: error = tail


@given(planted_tensors(), st.data())
def test_hosvd_error_lies_between_max_tail_and_certificate(p, data):
    X = p.X
    ranks = data.draw(feasible_ranks_for(X.shape))
    T, rep = hosvd(X, ranks=ranks)
    nx = np.linalg.norm(X)
    margin = C_ROUND * EPS * nx
    assert T.ranks == tuple(ranks)  # feasible request: nothing recompressed
    # the report's tails are the tails of the unfoldings' singular values
    for i in range(X.ndim):
        s = _svals(unfold(X, i))
        assert np.max(np.abs(rep.singular_values[i] - s)) <= margin
        assert abs(rep.tails[i] - _tail(s, ranks[i])) <= margin
    assert abs(rep.error - np.linalg.norm(X - T.full())) <= margin
    # lower bound: Eckart–Young on each unfolding (X̂ has mode-i rank r_i); upper: HOSVD bound
    assert max(rep.tails) <= rep.error + margin
    assert rep.error <= rep.certificate + margin
    assert abs(rep.certificate - math.sqrt(sum(t * t for t in rep.tails))) <= 4 * EPS * rep.certificate
    assert T.has_orthonormal_factors()
    assert relative_error(T.core, T.project(X)) <= C_ROUND * EPS


@given(planted_tensors(), st.data())
def test_st_hosvd_error_equals_its_certificate(p, data):
    X = p.X
    ranks = data.draw(feasible_ranks_for(X.shape))
    T, rep = hosvd(X, ranks=ranks, sequential=True)
    nx = np.linalg.norm(X)
    assert T.ranks == tuple(ranks)
    assert abs(rep.error - rep.certificate) <= C_ROUND * EPS * nx
    assert abs(rep.error - np.linalg.norm(X - T.full())) <= C_ROUND * EPS * nx
    # mode 0 sees X itself
    assert np.max(np.abs(rep.singular_values[0] - _svals(unfold(X, 0)))) <= C_ROUND * EPS * nx


def _rule_ranks(svals, threshold, sequential):
    """The documented hosvd rule, replayed on the report's singular values."""
    d = len(svals)
    spent_sq, ranks, shares = 0.0, [], []
    for i, s in enumerate(svals):
        share = threshold / math.sqrt(d) if not sequential else math.sqrt(max(threshold**2 - spent_sq, 0.0) / (d - i))
        t = tail_norms(s)
        r = max(int(np.flatnonzero(t <= share)[0]), 1)
        ranks.append(r)
        shares.append(share)
        spent_sq += t[min(r, len(s))] ** 2
    return ranks, shares


@st.composite
def tolerances_for(draw, X):
    """A tolerance from a fixed list, or one placed at (or a hair around) a tail of some
    unfolding's spectrum, so that the rule's boundaries are exercised, not just the gaps."""
    if draw(st.booleans()):
        return draw(TOLS)
    i = draw(st.integers(0, X.ndim - 1))
    t = tail_norms(_svals(unfold(X, i)))
    k = draw(st.integers(0, len(t) - 1))
    factor = draw(st.sampled_from([1.0, 1 - 1e-9, 1 + 1e-9, 0.7, 1.4]))
    return float(t[k] * factor * math.sqrt(X.ndim) / max(np.linalg.norm(X), 1e-300))


@given(planted_tensors(), st.data(), st.booleans())
def test_hosvd_tolerance_returns_smallest_ranks_of_the_rule(p, data, sequential):
    X = p.X
    d = X.ndim
    tol = data.draw(tolerances_for(X))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # tol=1e-12 is below reach; tested separately
        T, rep = hosvd(X, tol=tol, sequential=sequential)
    nx = np.linalg.norm(X)
    theta = tol * nx
    assert rep.threshold == pytest.approx(theta, rel=1e-15, abs=0)
    # the singular values the rule saw are the right ones (independent SVDs). ST-HOSVD's later
    # spectra depend on the subspace kept in earlier modes, which is not unique when the cut
    # falls inside a cluster of equal singular values (planted spectra can be flat): the
    # replay stops at such a cut (dev-profile counterexample: mode-1 values all 0.5, rank 1).
    work = X
    for i in range(d):
        s = _svals(unfold(work if sequential else X, i))
        assert np.max(np.abs(rep.singular_values[i] - s)) <= C_ROUND * EPS * nx
        if sequential:
            W, _, _ = np.linalg.svd(unfold(work, i), full_matrices=False)
            r_i = _rule_ranks(rep.singular_values, theta, True)[0][i]
            work = multi_mode_product(work, [W[:, :r_i]], modes=[i], transpose=True)
            if r_i < len(s) and s[r_i - 1] - s[r_i] <= 1e-6 * s[0]:
                break
    rule, shares = _rule_ranks(rep.singular_values, theta, sequential)
    assert rep.ranks == T.ranks == feasible_ranks(rule)
    for i in range(d):
        t = tail_norms(rep.singular_values[i])
        if rep.ranks[i] == rule[i]:
            assert rep.clamps[i] == []
            r = rep.ranks[i]
            assert t[r] <= shares[i]  # the rule holds ...
            if r > 1:
                assert t[r - 1] > shares[i]  # ... and r − 1 violates it: r is the smallest
        else:
            # feasibility recompression lowered the rank below the rule's (losslessly)
            assert rep.ranks[i] < rule[i] and rep.clamps[i] == ["feasibility"]
    assert is_feasible(T.ranks)
    assert rep.error <= theta + C_ROUND * EPS * nx  # the total budget is met
    assert rep.error <= rep.certificate + C_ROUND * EPS * nx
    assert abs(rep.error - np.linalg.norm(X - T.full())) <= C_ROUND * EPS * nx


def test_st_hosvd_spends_the_budget_left_by_earlier_modes():
    """Superdiagonal σ = (1, 0.3, 0.1) (rotated), ϑ = 0.16 absolute.

    HOSVD: every share is ϑ/√3 = 0.092 < 0.1, so nothing is dropped. ST-HOSVD: mode 0 keeps 3
    (0.1 > 0.092, nothing spent); mode 1's share is ϑ/√2 = 0.113 ≥ 0.1, so it drops 0.1; mode 2
    then has sqrt(ϑ² − 0.1²) = 0.125 < 0.3 and keeps 2 — ranks (3, 2, 2), error 0.1.
    """
    rng = np.random.default_rng(12)
    S = np.zeros((3, 3, 3))
    S[0, 0, 0], S[1, 1, 1], S[2, 2, 2] = 1.0, 0.3, 0.1
    X = multi_mode_product(S, [random_orthonormal(rng, 3, 3) for _ in range(3)])
    T, rep = hosvd(X, tol=0.16, relative=False)
    assert T.ranks == (3, 3, 3) and rep.error <= 100 * EPS
    T, rep = hosvd(X, tol=0.16, relative=False, sequential=True)
    assert T.ranks == (3, 2, 2)
    assert abs(rep.error - 0.1) <= 100 * EPS and abs(rep.certificate - 0.1) <= 100 * EPS
    assert rep.tails == pytest.approx((0.0, 0.1, 0.0), abs=100 * EPS)


def test_hosvd_feasibility_clamp_happens_and_is_lossless():
    """A tensor whose tolerance ranks (1, 1, 2) are infeasible: the result is rank (1, 1, 1)."""
    e = np.eye(2)
    a = 0.1
    X = (np.einsum("i,j,k->ijk", e[0], e[0], e[0]) + a * np.einsum("i,j,k->ijk", e[1], e[0], e[1])
         + a * np.einsum("i,j,k->ijk", e[0], e[1], e[1]))
    # mode spectra: modes 0, 1: (sqrt(1 + a²), a); mode 2: (1, a·√2). Budget per mode theta/√3.
    nx = np.linalg.norm(X)
    tol = 1.2 * a * math.sqrt(3) / nx  # share 1.2a: modes 0, 1 drop a, mode 2 cannot drop a√2
    T, rep = hosvd(X, tol=tol)
    assert _rule_ranks(rep.singular_values, tol * nx, False)[0] == [1, 1, 2]
    assert T.ranks == (1, 1, 1)
    assert rep.clamps == {0: [], 1: [], 2: ["feasibility"]}
    assert abs(rep.error - math.sqrt(2) * a) <= 100 * EPS
    assert rep.error <= tol * nx


def test_hosvd_warns_below_dtype_reach():
    X = np.random.default_rng(0).standard_normal((3, 4, 5))
    with pytest.warns(RuntimeWarning, match=r"below what float64 can certify"):
        hosvd(X, tol=1e-17)
    with pytest.warns(RuntimeWarning, match=r"below what float64 can certify"):
        hosvd(X, tol=1e-16 * np.linalg.norm(X), relative=False)
    with pytest.warns(RuntimeWarning, match=r"below what float32 can certify"):
        hosvd(X.astype(np.float32), tol=1e-7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hosvd(X, tol=1e-10)
        hosvd(X, tol=0.0)
        hosvd(X.astype(np.float32), tol=1e-4)


@given(planted_tensors(dtype=np.float32), st.sampled_from([None, 1e-2, 0.2]), st.booleans())
def test_float32_stays_float32_in_hosvd_and_truncate(p, tol, sequential):
    X = p.X
    assert X.dtype == np.float32
    T, rep = hosvd(X, tol=tol, sequential=sequential)
    assert T.dtype == np.float32 and T.core.dtype == np.float32
    assert all(U.dtype == np.float32 for U in T.factors)
    nx = float(np.linalg.norm(X.astype(np.float64)))
    theta = 0.0 if tol is None else tol * nx
    err64 = float(np.linalg.norm(X.astype(np.float64) - T.full().astype(np.float64)))
    assert err64 <= theta + C_ROUND * EPS32 * nx
    assert abs(rep.error - err64) <= C_ROUND * EPS32 * nx
    T2, rep2 = truncate(T, tol=0.1)
    assert T2.dtype == np.float32 and all(U.dtype == np.float32 for U in T2.factors)
    assert orth(unfold(X, 0)).dtype == np.float32


@given(planted_tensors(min_order=1, max_order=1))
def test_hosvd_of_a_vector(p):
    T, rep = hosvd(p.X, tol=0.5)
    assert T.ranks == (1,)
    assert rep.error <= C_ROUND * EPS * np.linalg.norm(p.X)


def test_hosvd_of_zero_tensor_gives_zero_rank_one():
    T, rep = hosvd(np.zeros((2, 3, 4)), tol=0.1)
    assert T.ranks == (1, 1, 1) and rep.error == 0.0 and rep.certificate == 0.0
    assert not np.any(T.full())


def test_hosvd_rejects_bad_input():
    X = np.random.default_rng(1).standard_normal((2, 3, 4))
    with pytest.raises(ValueError, match=r"ranks\[1\] = 4 exceeds the dimension n_1 = 3"):
        hosvd(X, ranks=(2, 4, 4))
    with pytest.raises(ValueError, match=r"ranks\[2\] = 5 exceeds prod of the other dimensions \(4\)"):
        hosvd(np.zeros((2, 2, 5)), ranks=(2, 2, 5))
    with pytest.raises(ValueError, match=r"ranks\[0\] must be a positive integer"):
        hosvd(X, ranks=(0, 1, 1))
    with pytest.raises(ValueError, match=r"ranks\[0\] must be a positive integer"):
        hosvd(X, ranks=(1.5, 1, 1))
    with pytest.raises(ValueError, match=r"ranks must have one entry per mode \(3\)"):
        hosvd(X, ranks=(1, 1))
    with pytest.raises(ValueError, match=r"tol must be a finite number >= 0"):
        hosvd(X, tol=-1e-3)
    with pytest.raises(ValueError, match=r"tol must be a finite number >= 0"):
        hosvd(X, tol=np.nan)
    with pytest.raises(TypeError, match=r"tol must be a non-negative real number"):
        hosvd(X, tol="0.1")
    with pytest.raises(ValueError, match=r"exactly one of ranks and tol"):
        hosvd(X, ranks=(1, 1, 1), tol=0.1)
    with pytest.raises(ValueError, match=r"X contains NaN or Inf"):
        hosvd(np.where(X > 1, np.nan, X))
    with pytest.raises(ValueError, match=r"X contains NaN or Inf"):
        hosvd(np.where(X > 1, -np.inf, X))
    with pytest.raises(ValueError, match=r"X must have ndim >= 1"):
        hosvd(np.float64(3.0))
    with pytest.raises(TypeError, match=r"X must be a numeric array"):
        hosvd(np.array([{}, {}]))


# -- truncate --------------------------------------------------------------------------------------
def _tail_rule(s, t, theta):
    """The documented rule: the smallest ``r`` with ``tail_r ≤ ϑ`` (non-strict)."""
    return int(np.flatnonzero(t <= theta)[0])


#: Plausible wrong rules: a draw is non-trivial for the rule test when one of them would give
#: other ranks than the tail rule (after the same clamps and feasibility).
WRONG_RULES = {
    "keep sigma > theta": lambda s, t, theta: int(np.count_nonzero(s > theta)),
    "strict tail < theta": lambda s, t, theta: int(np.flatnonzero(np.append(t[:-1] < theta, True))[0]),
}


def _window_theta(s, k):
    """A ``ϑ`` with ``σ_{k+1} ≤ ϑ < tail_k`` (geometric mean of the two): the values from index ``k``
    on are each ``≤ ϑ`` but their norm is not, so "keep σ > ϑ" keeps at most ``k`` and the tail
    rule more than ``k``. Needs two nonzero values from index ``k`` on."""
    return float(math.sqrt(s[k] * tail_norms(s)[k]))


def _window_ks(s):
    """The ``k`` whose window (:func:`_window_theta`) is not empty (a relative width of 1 % at least)."""
    t = tail_norms(s)
    return [k for k in range(len(s) - 1) if t[k] > 1.01 * s[k] > 0]


@st.composite
def truncate_cases(draw):
    """``(T, tol, relative, modes, rmin, rmax, fixed)`` for :func:`truncate`.

    The tolerance is placed in one of three ways: from the fixed list ``TOLS``; inside the
    *window* of one mode where the tail rule and "keep σ > ϑ" disagree (:func:`_window_theta`,
    relative or absolute); or exactly *at* one of its tails, absolute (there the non-strict
    rule keeps one value less than a strict ``<`` would). The singular values are those
    ``truncate`` computes itself (``unfolding_svds``, bit for bit), so the boundary is exact.
    Ranks ``≥ 2`` where the shape allows (a rank-1 mode has no tail to place ``ϑ`` in); the mode
    whose spectrum placed ``ϑ`` is truncated by tolerance (in ``modes``, not fixed).
    """
    T = draw(tucker_tensors(min_dim=2, min_sigma=1e-3, min_rank=2))
    d = T.ndim
    nc = float(np.linalg.norm(T.core))
    relative = draw(st.booleans())
    placement = draw(st.sampled_from(["window", "boundary", "list"]))
    svals = [s for _, s in unfolding_svds(T.core)]
    pick = draw(st.integers(0, 5))
    # "σ > ϑ" keeps 0 at k = 0, which rmin = 1 lifts to the tail rule's 1: a window needs k ≥ 1.
    windows = [i for i in range(d) if any(k >= 1 for k in _window_ks(svals[i]))]
    mode = draw(st.integers(0, d - 1))
    if placement == "window" and windows:
        mode = windows[pick % len(windows)]
        ks = [k for k in _window_ks(svals[mode]) if k >= 1]
        theta = _window_theta(svals[mode], ks[pick % len(ks)])
        tol = theta / nc if relative else theta
    elif placement != "list" and len(svals[mode]) >= 2:
        t = tail_norms(svals[mode])
        tol, relative, placement = float(t[1 + pick % (len(t) - 2)]), False, "boundary"
    else:
        tol, placement = draw(TOLS) * (1.0 if relative else nc), "list"
    modes = draw(st.one_of(st.none(), st.lists(st.integers(0, d - 1), unique=True, max_size=d)))
    # An rmin above both rules' ranks would hide the placed ϑ: rmin > 1 only with list tolerances.
    rmin = draw(st.one_of(st.just(1), st.integers(1, 4), st.lists(st.integers(1, 4), min_size=d, max_size=d))
                if placement == "list" else st.just(1))
    rmax = draw(st.one_of(st.none(), st.integers(4, 6), st.lists(st.integers(4, 6), min_size=d, max_size=d)))
    fixed = draw(st.one_of(st.none(), st.lists(st.one_of(st.none(), st.integers(1, 6)), min_size=d, max_size=d)))
    if fixed is not None:
        fixed = [None if r is None else min(r, rh) for r, rh in zip(fixed, T.ranks)]
    if placement != "list":
        modes = None if modes is None else sorted(set(modes) | {mode})
        if fixed is not None:
            fixed[mode] = None
    return T, tol, relative, modes, rmin, rmax, fixed


def _per_mode(v, d):
    return [v] * d if v is None or isinstance(v, int) else list(v)


def _clustered_tucker(seed=21):
    """Core with mode spectra ``(1, 0.3, 0.3)`` in every mode (a rotated superdiagonal core)."""
    rng = np.random.default_rng(seed)
    S = np.zeros((3, 3, 3))
    S[0, 0, 0], S[1, 1, 1], S[2, 2, 2] = 1.0, 0.3, 0.3
    core = multi_mode_product(S, [random_orthonormal(rng, 3, 3) for _ in range(3)])
    return random_tucker(rng, (5, 4, 6), (3, 3, 3), core=core)


_CLUSTERED = _clustered_tucker()
_ORDER4 = tucker_example((6, 5, 4, 3), (3, 3, 2, 2), seed=22, min_sigma=1e-3)
_ORDER4_S0 = unfolding_svds(_ORDER4.core)[0][1]

#: Draws on which a wrong rule would give other ranks (WRONG_RULES).
TRUNCATE_RULE_DRAWS = DrawTally("a wrong rule (keep sigma > theta, strict <) gives other ranks", minimum=0.4)


@TRUNCATE_RULE_DRAWS.require
# Every mode has spectrum (1, .3, .3): ϑ = 0.35 keeps 2 by the tail rule, 1 by "σ > ϑ".
@example(case=(_CLUSTERED, 0.35, False, None, 1, None, None))
# ϑ exactly at mode 0's tail after 2 values: the non-strict rule keeps 2, a strict one 3.
@example(case=(_CLUSTERED, float(tail_norms(unfolding_svds(_CLUSTERED.core)[0][1])[2]), False, None, 1, None, None))
# Order 4, relative ϑ in mode 0's window, modes 0 and 2 truncated, mode 3 fixed at rank 1.
@example(case=(_ORDER4, _window_theta(_ORDER4_S0, 1) / np.linalg.norm(_ORDER4.core), True,
               [0, 2], 1, None, [None, None, None, 1]))
@given(truncate_cases())
def test_truncate_follows_the_per_mode_rule_and_reports_honestly(case):
    T, tol, relative, modes, rmin, rmax, fixed = case
    d = T.ndim
    if fixed is not None and all(r is not None for r in fixed):
        tol = None  # all ranks fixed: no tolerance allowed
    out, rep = truncate(T, ranks=fixed, tol=tol, relative=relative, rmin=rmin, rmax=rmax, modes=modes)
    C = T.core
    nc = np.linalg.norm(C)
    margin = C_ROUND * EPS * nc
    theta = (0.0 if tol is None else tol) * (nc if relative else 1.0)
    active = set(range(d)) if modes is None else set(modes)
    rmin_l, rmax_l = _per_mode(rmin, d), _per_mode(rmax, d)

    def outcome(rule):
        """Per mode: the rank before feasibility and the clamps expected, with ``rule`` choosing."""
        chosen, expects = [], []
        for i in range(d):
            s = rep.singular_values[i]
            r_hat = T.ranks[i]
            if i not in active:
                r, expect = r_hat, []
            elif fixed is not None and fixed[i] is not None:
                r, expect = fixed[i], []
            else:
                r = rule(s, tail_norms(s), theta)
                lo = min(rmin_l[i], r_hat, T.shape[i])
                hi = r_hat if rmax_l[i] is None else min(rmax_l[i], r_hat)
                expect = ["rmin"] if r < lo else ["rmax"] if r > hi else []
                r = min(max(r, lo), hi)
            chosen.append(r)
            expects.append(expect)
        return chosen, expects

    if tol is not None:  # the report states the ϑ it used: tol·‖C‖_F (relative) or tol
        assert rep.threshold == pytest.approx(theta, rel=1e-14, abs=0)
    chosen, expects = outcome(_tail_rule)
    for i in range(d):
        assert np.max(np.abs(rep.singular_values[i] - _svals(unfold(C, i)))) <= margin  # independent SVD
        assert [c for c in rep.clamps[i] if c != "feasibility"] == expects[i]
    target = feasible_ranks(chosen)
    wrong = [name for name, rule in WRONG_RULES.items() if feasible_ranks(outcome(rule)[0]) != target]
    TRUNCATE_RULE_DRAWS.record(bool(wrong), "; ".join(f"{name} differs" for name in wrong) or None)
    assert rep.ranks == out.ranks == target
    for i in range(d):
        assert ("feasibility" in rep.clamps[i]) == (target[i] < chosen[i])
        # tails: the singular values dropped in that mode (+ rounding of a lossless recompression)
        assert abs(rep.tails[i] - tail_norms(rep.singular_values[i])[min(chosen[i], len(rep.singular_values[i]))]) \
            <= margin
        if i in active and set(rep.clamps[i]) <= {"feasibility"} and (fixed is None or fixed[i] is None):
            assert rep.tails[i] <= theta + margin  # the per-mode rule (feasibility is lossless)
    # η is the true error, and it is certified
    true_err = np.linalg.norm(T.full() - out.full())
    assert abs(rep.error - true_err) <= margin
    assert rep.error <= rep.certificate + margin
    if fixed is None and not any(set(c) - {"feasibility"} for c in rep.clamps.values()):
        assert rep.error <= math.sqrt(len(active)) * theta + margin
    # frozen modes are untouched unless feasibility forced a (lossless) reduction
    for j in set(range(d)) - active:
        if "feasibility" not in rep.clamps[j]:
            np.testing.assert_array_equal(out.factors[j], T.factors[j])
    assert out.has_orthonormal_factors()
    assert np.linalg.norm(out.core - out.project(T.full())) <= margin  # core = coefficients in the new bases


@given(T=tucker_tensors(min_dim=2, min_sigma=1e-3, min_rank=2), bound=st.integers(1, 3),
       which=st.sampled_from(["rmax", "rmin"]))
# Every mode keeps 3 values at τ = 0: rmax = 2 must cut each to 2; at τ = 2 the rule keeps 0, and
# rmin = 2 must lift each to 2.
@example(T=_CLUSTERED, bound=2, which="rmax")
@example(T=_CLUSTERED, bound=2, which="rmin")
def test_truncate_clamps_to_the_rank_bounds_and_records_it(T, bound, which):
    """A bound that binds changes the rank and is named in ``clamps``; one that does not, neither.

    ``τ = 0`` keeps every nonzero singular value, so a cap ``rmax`` binds wherever ``r̂_i > rmax``;
    ``τ = 2`` keeps none (``ϑ = 2‖C‖``; at ``τ = 1`` the whole spectrum's norm, computed from the
    SVD, can exceed ``‖C‖`` by an ulp), so ``rmin`` binds in every mode.
    """
    if which == "rmax":
        out, rep = truncate(T, tau=0.0, rmax=bound)
        rule_ranks = [int(np.count_nonzero(s)) for s in rep.singular_values]
        chosen = [min(r, bound) for r in rule_ranks]
    else:
        out, rep = truncate(T, tau=2.0, rmin=bound)
        rule_ranks = [0] * T.ndim
        chosen = [min(bound, r_hat) for r_hat in T.ranks]
    assert out.ranks == rep.ranks == feasible_ranks(chosen)
    binds = [c != r for c, r in zip(chosen, rule_ranks)]
    for i in range(T.ndim):
        assert (which in rep.clamps[i]) == binds[i], (i, rep.clamps[i], chosen, rule_ranks)
    if any(binds):
        event(f"{which} binds in a mode")


def test_truncate_feasibility_is_lossless_on_the_truncated_core():
    """Per-mode ranks (1, 1, 2) are infeasible; cutting the original mode-2 basis would drop a·√2 more."""
    e = np.eye(2)
    a = 0.1
    C = (np.einsum("i,j,k->ijk", e[0], e[0], e[0]) + a * np.einsum("i,j,k->ijk", e[1], e[0], e[1])
         + a * np.einsum("i,j,k->ijk", e[0], e[1], e[1]))
    rng = np.random.default_rng(5)
    T = TuckerTensor(C, [random_orthonormal(rng, 4, 2) for _ in range(3)])
    out, rep = truncate(T, tol=1.2 * a, relative=False)
    assert out.ranks == (1, 1, 1)
    assert rep.clamps == {0: [], 1: [], 2: ["feasibility"]}
    assert max(rep.tails) <= 1.2 * a
    assert abs(rep.error - math.sqrt(2) * a) <= 100 * EPS  # only the two a-terms are lost
    assert abs(rep.error - np.linalg.norm(T.full() - out.full())) <= 100 * EPS


def test_truncate_orthonormalizes_general_factors_without_changing_the_result():
    rng = np.random.default_rng(2)
    T = TuckerTensor(np.einsum("i,j,k->ijk", [3.0, 1.0, 1e-3], [2.0, 1e-3], [1.0, 0.5, 1e-3]),
                     [random_orthonormal(rng, n, r) for n, r in ((4, 3), (3, 2), (5, 3))])
    T = TuckerTensor(T.core + 1e-4 * rng.standard_normal(T.ranks), T.factors)
    R = [np.triu(rng.uniform(0.5, 2.0, size=(r, r))) for r in T.ranks]
    G = TuckerTensor(multi_mode_product(T.core, [np.linalg.inv(Ri) for Ri in R]),
                     [U @ Ri for U, Ri in zip(T.factors, R)])
    assert not G.has_orthonormal_factors()
    assert relative_error(G.full(), T.full()) <= 100 * EPS
    out_t, rep_t = truncate(T, tol=1e-2)
    out_g, rep_g = truncate(G, tol=1e-2)
    assert out_g.ranks == out_t.ranks
    assert relative_error(out_g.full(), out_t.full()) <= 1e-10
    assert abs(rep_g.error - np.linalg.norm(G.full() - out_g.full())) <= 100 * EPS * T.norm()


@pytest.mark.parametrize("kwargs, error, message", [
    ({"tau": -0.1}, ValueError, r"tau must be a finite number >= 0, got -0.1"),
    ({"tau": float("nan")}, ValueError, r"tau must be a finite number >= 0, got nan"),
    ({"theta": float("inf")}, ValueError, r"theta must be a finite number >= 0"),
    ({"tau": "0.1"}, TypeError, r"tau must be a non-negative real number"),
    ({"tau": 0.1, "theta": 0.1}, ValueError, r"at most one of tau .* and theta .* not both"),
    ({"rmin": 5, "rmax": 2}, ValueError, r"rmax \(2\) must be >= rmin \(5\)"),
    ({"rmin": (1, 3), "rmax": (2, 2)}, ValueError, r"rmin \(3\) must not exceed rmax \(2\) in mode 1"),
    ({"rmin": 3, "rmax": 2, "ndim": 3}, ValueError, r"rmin \(3\) must not exceed rmax \(2\) in mode 0"),
    ({"rmin": 1.5}, ValueError, r"rmin must be a positive integer, got 1.5"),
    ({"rmax": 0}, ValueError, r"rmax must be a positive integer, got 0"),
    ({"rmin": (1, 2.5)}, ValueError, r"rmin\[1\] must be a positive integer"),
    ({"rmin": (1, 1), "rmax": (2, 2, 2)}, ValueError, r"rmax must be an int or one entry per mode \(2\)"),
    ({"rmax_fraction": 0.0}, ValueError, r"rmax_fraction must be a number in \(0, 1\]"),
    ({"rmax_fraction": float("nan")}, ValueError, r"rmax_fraction must be a number in \(0, 1\]"),
])
def test_truncation_rule_rejects_bad_values_naming_the_argument(kwargs, error, message):
    with pytest.raises(error, match=message):
        TruncationRule(**kwargs)


def test_truncation_rule_normalizes_and_is_immutable():
    assert TruncationRule() == TruncationRule(tau=0)  # neither tolerance: keep every nonzero singular value
    rule = TruncationRule(theta=2, rmin=(1, 2), rmax=(None, 3))
    assert (rule.tau, rule.theta, rule.rmin, rule.rmax, rule.ndim) == (None, 2.0, (1, 2), (None, 3), 2)
    assert rule.threshold(10.0) == 2.0 and TruncationRule(tau=0.1).threshold(10.0) == 0.1 * 10.0
    with pytest.raises(AttributeError):
        rule.tau = 0.1
    # rmax_fraction caps each mode at max(1, floor(f n_i)); a cap below rmin wins
    assert TruncationRule(rmin=3, rmax_fraction=0.5).rank_bounds((20, 1, 5)) == ([3, 1, 2], [10, 1, 2])


def test_truncate_with_a_rule_equals_loose_values_and_checks_the_rule_once(monkeypatch):
    rng = np.random.default_rng(8)
    T = random_tucker(rng, (6, 5, 4), (4, 4, 3), core=rng.standard_normal((4, 4, 3)) * np.logspace(0, -2, 4)[:, None, None])
    loose, rep_loose = truncate(T, tau=0.05, rmin=2, rmax=3)
    ruled, rep_ruled = truncate(T, rule=TruncationRule(tau=0.05, rmin=2, rmax=3))
    assert ruled.ranks == loose.ranks and np.array_equal(ruled.core, loose.core)
    assert rep_ruled.threshold == rep_loose.threshold and rep_ruled.clamps == rep_loose.clamps
    calls = []
    checked = truncation.check_tolerance
    monkeypatch.setattr(truncation, "check_tolerance", lambda *a: calls.append(a) or checked(*a))
    rule = TruncationRule(theta=0.1)
    truncate(T, rule=rule)
    truncate(T, rule=rule, modes=[0])
    assert len(calls) == 1
    with pytest.raises(ValueError, match=r"give the truncation rule once"):
        truncate(T, tau=0.1, rule=rule)
    with pytest.raises(ValueError, match=r"give the truncation rule once"):
        truncate(T, tol=0.1, rule=rule)
    with pytest.raises(ValueError, match=r"rule has rank bounds for 2 modes, the tensor has 3"):
        truncate(T, rule=TruncationRule(rmin=(1, 1)))
    with pytest.raises(TypeError, match=r"rule must be a TruncationRule, got dict"):
        truncate(T, rule={"tau": 0.1})


def test_truncate_rejects_bad_input():
    rng = np.random.default_rng(4)
    T = random_tucker(rng, (4, 4, 4), (2, 2, 3))
    with pytest.raises(TypeError, match=r"T must be a TuckerTensor"):
        truncate(T.full(), tol=0.1)
    with pytest.raises(ValueError, match=r"tol must be a finite number >= 0"):
        truncate(T, tol=-0.1)
    with pytest.raises(ValueError, match=r"exactly one of ranks and tol"):
        truncate(T, ranks=(1, 1, 1), tol=0.1)
    with pytest.raises(ValueError, match=r"ranks\[2\] = 4 must be in \[1, 3\]"):
        truncate(T, ranks=(1, 1, 4))
    with pytest.raises(ValueError, match=r"ranks\[0\] must be a positive integer or None"):
        truncate(T, ranks=(1.5, 1, 1))
    with pytest.raises(ValueError, match=r"ranks\[1\] must be a positive integer or None"):
        truncate(T, ranks=(1, 0, 1))
    with pytest.raises(ValueError, match=r"ranks must have one entry per mode \(3\)"):
        truncate(T, ranks=(1, 1))
    with pytest.raises(TypeError, match=r"ranks must be an int or a sequence"):
        truncate(T, ranks=1.0)
    with pytest.raises(ValueError, match=r"rmin \(3\) must not exceed rmax \(2\) in mode 0"):
        truncate(T, tol=0.1, rmin=3, rmax=2)
    with pytest.raises(ValueError, match=r"rmin\[1\] must be a positive integer"):
        truncate(T, tol=0.1, rmin=[1, 0, 1])
    with pytest.raises(ValueError, match=r"rmax must be an int or one entry per mode \(3\)"):
        truncate(T, tol=0.1, rmax=[2, 2])
    with pytest.raises(TypeError, match=r"rmin must be an int or a sequence"):
        truncate(T, tol=0.1, rmin=2.0)
    with pytest.raises(TypeError, match=r"modes must be a sequence of mode indices"):
        truncate(T, tol=0.1, modes=1)
    with pytest.raises(ValueError, match=r"modes\[1\] must be in \[-3, 3\)"):
        truncate(T, tol=0.1, modes=[0, 3])
    # an integer ranks is one rank for all modes
    assert truncate(T, ranks=1)[0].ranks == (1, 1, 1)


# -- orth ------------------------------------------------------------------------------------------
@given(seeds(), st.integers(1, 8), st.integers(1, 8), st.data())
def test_orth_is_rank_revealing(seed, m, n, data):
    k = data.draw(st.integers(0, min(m, n)))
    rng = np.random.default_rng(seed)
    s = np.sort(10.0 ** rng.uniform(-6, 0, size=k))[::-1] * 10.0 ** data.draw(st.integers(-3, 3))
    B = random_orthonormal(rng, m, k)
    A = (B * s) @ random_orthonormal(rng, n, k).T  # rank k; rounding adds ~eps‖A‖ singular values
    Q = orth(A)
    assert Q.shape == (m, k)
    assert Q.dtype == np.float64
    na = np.linalg.norm(A)
    if k:
        assert _orthonormal(Q, 100 * EPS)
        assert np.linalg.norm(A - Q @ (Q.T @ A)) <= 100 * EPS * na  # spans range(A)
        # and nothing else: sin of the largest principal angle to range(B), ~ eps·cond
        assert np.linalg.norm(Q - B @ (B.T @ Q), 2) <= 100 * EPS * s[0] / s[-1]


def test_orth_cutoffs_zero_and_reference():
    assert orth(np.zeros((3, 2))).shape == (3, 0)
    assert orth(np.zeros((3, 0))).shape == (3, 0)
    A = np.diag([1.0, 1e-3, 1e-9])
    assert orth(A).shape == (3, 3)
    assert orth(A, rcond=1e-6).shape == (3, 2)
    # measured against a larger reference (the norm before a projection), 1e-3 is noise too
    assert orth(A, rcond=1e-6, reference=1e4).shape == (3, 1)
    Q = orth(np.array([[1.0, 1.0], [1.0, 1.0 + 1e-17]]))  # numerically rank one
    assert Q.shape == (2, 1) and Q[0, 0] > 0
    with pytest.raises(ValueError, match=r"A must have ndim=2"):
        orth(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match=r"A contains NaN or Inf"):
        orth(np.array([[np.nan]]))
    with pytest.raises(ValueError, match=r"rcond must be a finite number >= 0"):
        orth(A, rcond=-1.0)
    with pytest.raises(ValueError, match=r"reference must be a finite number >= 0"):
        orth(A, reference=np.inf)


@settings(max_examples=10)
@given(seeds())
def test_orth_float32(seed):
    A = np.random.default_rng(seed).standard_normal((6, 3)).astype(np.float32)
    A = np.concatenate([A, A[:, :1] + A[:, 1:2]], axis=1)  # rank 3 in exact arithmetic
    Q = orth(A)
    assert Q.dtype == np.float32 and Q.shape == (6, 3)


def test_rank_from_fraction_is_the_ceiling_with_a_floor_of_one():
    from tucker_ref.truncation import rank_from_fraction

    assert [rank_from_fraction(0.2, n) for n in (1, 5, 20, 50, 500)] == [1, 1, 4, 10, 100]
    assert rank_from_fraction(1.0, 7) == 7 and rank_from_fraction(0.5, 1) == 1
    for bad in (0, -0.1, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match="fraction must be a number in"):
            rank_from_fraction(bad, 5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reported_mode_thresholds_are_the_bounds_the_rank_rule_applied(seed):
    """``TruncationReport.mode_thresholds`` is what golden's well-posedness check reads instead of
    re-deriving the rule, so it must be the bound each mode's rank was actually chosen against:
    the chosen rank is the smallest whose tail stays within it."""
    rng = np.random.default_rng(seed)
    shape, d = (9, 8, 7), 3
    # Graded spectra in every mode: each bound then falls between two singular values and
    # decides the rank (a planted low-rank-plus-noise tensor would give the same ranks for any
    # bound between the noise floor and the signal).
    decay = [0.7 ** np.arange(n) for n in shape]
    core = rng.standard_normal(shape) * np.einsum("i,j,k->ijk", *decay)
    X = random_tucker(rng, shape, shape, core=core).full()
    theta = 0.1 * np.linalg.norm(X)

    def smallest_rank_within(s, bound):
        return next(r for r in range(1, s.size + 1) if np.linalg.norm(s[r:]) <= bound)

    _, rep = hosvd(X, tol=0.1)
    assert rep.threshold == pytest.approx(theta)
    assert rep.mode_thresholds == pytest.approx((theta / math.sqrt(d),) * d)
    for s, bound, r in zip(rep.singular_values, rep.mode_thresholds, rep.ranks):
        assert r == smallest_rank_within(s, bound)
    assert rep.ranks != shape

    _, rep = hosvd(X, tol=0.1, sequential=True)
    spent = 0.0
    for i, (s, bound, r, tail) in enumerate(zip(rep.singular_values, rep.mode_thresholds, rep.ranks, rep.tails)):
        assert bound == pytest.approx(math.sqrt((theta**2 - spent) / (d - i)))
        assert r == smallest_rank_within(s, bound)
        spent += tail**2
    assert spent <= theta**2

    T = random_tucker(rng, shape, (6, 6, 6), core=rng.standard_normal((6, 6, 6)) * np.logspace(0, -3, 6))
    _, rep = truncate(T, tol=0.1)
    assert rep.mode_thresholds == pytest.approx((rep.threshold,) * d)
    for s, bound, r in zip(rep.singular_values, rep.mode_thresholds, rep.ranks):
        assert r == smallest_rank_within(s, bound)

    assert hosvd(X, ranks=(4, 3, 3))[1].mode_thresholds == (None, None, None)
    assert hosvd(X)[1].mode_thresholds == (0.0, 0.0, 0.0)
