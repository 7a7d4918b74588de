"""Tucker conv2d, low-rank dense and their gradient oracles (docs/algorithms.md §0) against the dense kernels.

Oracles: the dense conv / linear of :mod:`tucker_ref.nn.functional` with the reconstructed
weight ``T.full()``, the chain rule through ``W = C ×_i U_i`` written out with dense
tensors, and central differences. The layer output is linear in each block (x, C, U_i, b)
separately, so a central difference along one block is exact up to rounding.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tucker_ref.nn.functional import conv2d, conv2d_backward, linear, linear_backward
from tucker_ref.nn.layers import TuckerConv2d
from tucker_ref.nn.tucker_functional import (
    LowRankLinearGradient,
    TuckerConvGradient,
    check_tucker_weight,
    low_rank_linear,
    low_rank_linear_backward,
    low_rank_linear_backward_from_cache,
    low_rank_linear_forward,
    tucker_conv2d,
    tucker_conv2d_backward,
    tucker_conv2d_forward,
    tucker_conv2d_input_backward,
    tucker_conv2d_parameter_backward,
)
from tucker_ref.truncation import feasible_ranks
from tucker_ref.tucker import TuckerTensor, multi_mode_product, unfold

# Chain-rule and projection identities: both sides are short sums of products of O(1)
# Gaussian numbers, so they agree to a few hundred ulps in float64.
EXACT = 1e-12
# Central differences of a function linear in the perturbed block: exact up to rounding of
# the two evaluations (see assert_directional for the absolute part).
FD_TOL = 1e-10


def rel(a, b) -> float:
    """Normwise relative error ``‖a − b‖ / ‖b‖`` (0 when both vanish)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    den = np.linalg.norm(b)
    num = np.linalg.norm(a - b)
    return float(num / den) if den > 0 else float(num)


def random_tucker(rng, shape, ranks, orthonormal) -> TuckerTensor:
    factors = [rng.standard_normal((n, r)) for n, r in zip(shape, ranks)]
    if orthonormal:
        factors = [np.linalg.qr(U)[0] for U in factors]
    return TuckerTensor(rng.standard_normal(ranks), factors)


@st.composite
def conv_cases(draw):
    """A Tucker conv configuration: geometry (incl. floor case, batch 1, channel 1), feasible ranks, data."""
    n = draw(st.integers(1, 3))
    c_in, c_out = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    kh = draw(st.integers(1, 4))
    # Square kernels half the time: they expose a swap of the two spatial modes.
    kernel = (kh, kh if draw(st.booleans()) else draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    # Smallest input the dilated kernel fits in, plus a few rows (floor cases included).
    size = tuple(max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 5))
                 for k, p, d in zip(kernel, padding, dilation))
    shape = (c_out, c_in) + kernel
    ranks = feasible_ranks(draw(st.integers(1, m)) for m in shape)
    seed = draw(st.integers(0, 2**32 - 1))
    orthonormal = draw(st.booleans())
    rng = np.random.default_rng(seed)
    T = random_tucker(rng, shape, ranks, orthonormal)
    x = rng.standard_normal((n, c_in) + size)
    b = rng.standard_normal(c_out)
    geo = dict(stride=stride, padding=padding, dilation=dilation)
    dy = rng.standard_normal(conv2d(x, T.full(), **geo).shape)
    return dict(T=T, x=x, b=b, dy=dy, geo=geo, rng=rng)


def mode_partials(T: TuckerTensor, G) -> list:
    """``N_i = Mat_i(G ×_{j≠i} U_j^T)`` for every mode."""
    return [unfold(multi_mode_product(G, [None if j == i else U for j, U in enumerate(T.factors)], transpose=True), i)
            for i in range(T.ndim)]


def assert_core_gradient_matches_projection(dcore, T, G):
    """``dC`` against ``G ×_i U_i^T``, with the rounding measured against ``‖G‖ ∏ ‖U_i‖_2``.

    The projection cancels as the factor gradients do (dev-profile counterexample: a 1×1 core
    gradient of -2.3e-5 of a rank-1 dense layer from O(1) terms, relative error 1.3e-12 against
    itself); a wrong formula is off by the size of the terms.
    """
    expected = multi_mode_product(G, T.factors, transpose=True)
    scale = np.linalg.norm(G) * np.prod([np.linalg.norm(U, 2) for U in T.factors])
    assert np.linalg.norm(dcore - expected) <= EXACT * scale


def assert_factor_gradients_match_chain_rule(dfactors, T, G):
    """``dU_i`` against the chain rule of docs/theory.md §2, ``N_i Mat_i(C)^T``, with the rounding
    measured against ``‖N_i‖ ‖Mat_i(C)‖``. (The core's is ``dC = G ×_i U_i^T``.)

    The product can cancel far below the size of its terms (dev-profile counterexamples: a 1×1
    spatial factor gradient of 1.7e-4 from O(1) terms, relative error 2e-12 against itself), so
    its own norm is no yardstick; a wrong formula is off by the size of the terms.
    """
    assert len(dfactors) == T.ndim
    for i, (got, N) in enumerate(zip(dfactors, mode_partials(T, G))):
        C_i = unfold(T.core, i)
        assert np.linalg.norm(got - N @ C_i.T) <= EXACT * np.linalg.norm(N) * np.linalg.norm(C_i)


def random_bases(rng, T: TuckerTensor, kinds):
    """One basis per mode: ``None`` (identity), a random ``n_i × k_i`` or ``n_i × n_i`` matrix, or an augmented
    basis ``[U_i, orth(new)]`` with ``min(2 r_i, n_i)`` orthonormal columns."""
    bases = []
    for (n, r), U, kind in zip(zip(T.shape, T.ranks), T.factors, kinds):
        if kind == "none":
            bases.append(None)
        elif kind == "random":
            bases.append(rng.standard_normal((n, int(rng.integers(1, n + 1)))))
        elif kind == "square":
            bases.append(rng.standard_normal((n, n)))
        else:
            Q = np.linalg.qr(U)[0]
            new = rng.standard_normal((n, min(2 * r, n) - r))
            new -= Q @ (Q.T @ new)
            bases.append(np.linalg.qr(np.hstack([Q, new]))[0])
    return bases


BASIS_KINDS = ["none", "random", "square", "augmented"]
basis_kinds = st.lists(st.sampled_from(BASIS_KINDS), min_size=4, max_size=4)


# ---------------------------------------------------------------------------------------
# Tucker conv: forward, backward, finite differences
# ---------------------------------------------------------------------------------------
@given(conv_cases())
def test_tucker_conv_forward_equals_dense_conv(case):
    T, x, b, geo = case["T"], case["x"], case["b"], case["geo"]
    assert rel(tucker_conv2d(x, T, b, **geo), conv2d(x, T.full(), b, **geo)) <= EXACT
    assert rel(tucker_conv2d(x, T, **geo), conv2d(x, T.full(), **geo)) <= EXACT


@given(conv_cases())
def test_tucker_conv_backward_equals_chain_rule_of_dense_backward(case):
    T, x, dy, geo = case["T"], case["x"], case["dy"], case["geo"]
    dx_ref, G, db_ref = conv2d_backward(dy, x, T.full(), **geo)
    dx, dcore, dfactors, db = tucker_conv2d_backward(dy, x, T, **geo)
    assert rel(dx, dx_ref) <= EXACT
    assert rel(db, db_ref) <= EXACT
    assert_core_gradient_matches_projection(dcore, T, G)
    assert_factor_gradients_match_chain_rule(dfactors, T, G)
    no_dx = tucker_conv2d_backward(dy, x, T, need_dx=False, **geo)
    assert no_dx[0] is None
    assert rel(no_dx[1], dcore) == 0.0


def assert_same_gradients(got, want):
    """Equal tuples ``(…, dcore, dfactors, db)``-like: arrays, lists of arrays or None, entry by entry."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if w is None:
            assert g is None
        elif isinstance(w, list):
            assert len(g) == len(w) and all(np.array_equal(a, b) for a, b in zip(g, w))
        else:
            np.testing.assert_array_equal(g, w)


@given(conv_cases(), st.booleans())
def test_tucker_conv_cache_kernels_equal_the_plain_kernels(case, need_dx):
    """The cache-taking kernels run the same arithmetic as tucker_conv2d(_backward): equal bit for bit."""
    T, x, b, dy, geo = case["T"], case["x"], case["b"], case["dy"], case["geo"]
    y, cache = tucker_conv2d_forward(x, T, b, **geo)
    np.testing.assert_array_equal(y, tucker_conv2d(x, T, b, **geo))
    dx, dcore, dfactors, db = tucker_conv2d_backward(dy, x, T, need_dx=need_dx, **geo)
    # Without the input pass, the parameter backward computes dv and dz itself (the plain kernel's path).
    assert_same_gradients(tucker_conv2d_parameter_backward(dy, cache), (dcore, dfactors, db))
    through_input = tucker_conv2d_input_backward(dy, cache)
    if need_dx:
        np.testing.assert_array_equal(through_input.dx, dx)
    # With it, dK is the weight backward alone: the same GEMM on the same operands.
    assert_same_gradients(tucker_conv2d_parameter_backward(dy, cache, through_input), (dcore, dfactors, db))


def assert_directional(f, f_abs, point, grad, delta):
    """The central difference of ``f`` along ``delta`` equals ``⟨grad, delta⟩``.

    ``f`` is linear in this argument, so the difference is exact for any step; what is left is
    rounding of the two values of ``f``, ~eps·Σ|terms|, bounded by ``f_abs`` (the same sum over
    the absolute values of every input) at ``|point| + |delta|``. A test relative to
    ``|⟨grad, delta⟩|`` alone fails when that derivative cancels (dev-profile counterexample: a
    factor gradient of -2.5e-6 from terms of size 1).
    """
    fd = (f(point + delta) - f(point - delta)) / 2.0
    exact = float(np.vdot(grad, delta))
    floor = 10 * np.finfo(np.float64).eps * f_abs(np.abs(point) + np.abs(delta))
    assert abs(fd - exact) <= FD_TOL * abs(exact) + floor, (fd, exact, floor)


@given(conv_cases())
def test_tucker_conv_gradients_match_central_differences(case):
    T, x, b, dy, geo, rng = case["T"], case["x"], case["b"], case["dy"], case["geo"], case["rng"]
    dx, dcore, dfactors, db = tucker_conv2d_backward(dy, x, T, **geo)

    def loss(x_=x, core=T.core, factors=T.factors, b_=b, dy_=dy):
        return float(np.vdot(dy_, tucker_conv2d(x_, TuckerTensor(core, factors), b_, **geo)))

    absolute = dict(x_=np.abs(x), core=np.abs(T.core), factors=[np.abs(U) for U in T.factors], b_=np.abs(b),
                    dy_=np.abs(dy))

    def with_factor(i, values):
        return lambda U: loss(**{**values, "factors": [U if j == i else V for j, V in enumerate(values["factors"])]})

    for name, point, grad in [("x_", x, dx), ("core", T.core, dcore), ("b_", b, db)]:
        assert_directional(lambda v, n=name: loss(**{n: v}), lambda v, n=name: loss(**{**absolute, n: v}), point,
                           grad, rng.standard_normal(point.shape))
    for i, U in enumerate(T.factors):
        assert_directional(with_factor(i, dict(factors=T.factors)), with_factor(i, absolute), U, dfactors[i],
                           rng.standard_normal(U.shape))


# ---------------------------------------------------------------------------------------
# Tucker conv gradient oracle
# ---------------------------------------------------------------------------------------
@given(conv_cases(), st.integers(0, 2), st.integers(0, 2))
def test_conv_oracle_s_step_gradient_from_kept_products(case, k_out, k_in):
    # After mode partials at factors U, a core gradient at bases [U, V] is assembled from the
    # kept channel products (plus one conv of the V_out × V_in block): it must equal the direct
    # projection of G for any number of new columns (0 included), with both products kept or
    # only G ×_2 U_in^T (the mode-1 partial alone, as for a conv with a frozen input mode);
    # bases that do not extend U (first column changed) take the direct path.
    T, x, dy, geo, rng = case["T"], case["x"], case["dy"], case["geo"], case["rng"]
    G = conv2d_backward(dy, x, T.full(), need_dx=False, **geo)[1]
    factors = [rng.standard_normal(U.shape) for U in T.factors]
    extended = [np.concatenate([U, rng.standard_normal((U.shape[0], k))], axis=1)
                for U, k in zip(factors[:2], (k_out, k_in))] + [rng.standard_normal(U.shape) for U in T.factors[2:]]
    other = [B.copy() for B in extended]
    other[1][:, 0] += 1.0
    both, only_in = TuckerConvGradient(x, dy, T, **geo), TuckerConvGradient(x, dy, T, **geo)
    both.mode_partial_gradients(factors)
    only_in.mode_partial_gradient(0, factors)
    assert set(both._products) == {"in", "out"} and set(only_in._products) == {"in"}
    for bases in (extended, other, [extended[0], None, *extended[2:]]):
        want = multi_mode_product(G, bases, transpose=True)
        for oracle in (both, only_in, TuckerConvGradient(x, dy, T, **geo)):
            assert rel(oracle.core_gradient(bases), want) <= EXACT
    assert both._kept_prefix("in", extended[1]) is not None
    assert both._kept_prefix("in", other[1]) is None


@given(conv_cases(), basis_kinds)
def test_conv_oracle_core_gradient_equals_projected_dense_gradient(case, kinds):
    T, x, dy, geo, rng = case["T"], case["x"], case["dy"], case["geo"], case["rng"]
    oracle = TuckerConvGradient(x, dy, T, **geo)
    G = conv2d_backward(dy, x, T.full(), need_dx=False, **geo)[1]
    assert rel(oracle.dense_gradient(), G) <= EXACT
    for bases in (random_bases(rng, T, kinds), random_bases(rng, T, ["square"] * 4)):
        got = oracle.core_gradient(bases)
        want = multi_mode_product(G, bases, transpose=True)
        assert got.shape == tuple(n if B is None else B.shape[1] for n, B in zip(T.shape, bases))
        assert rel(got, want) <= EXACT


@given(conv_cases())
def test_conv_oracle_mode_partial_gradient(case):
    T, x, dy, geo, rng = case["T"], case["x"], case["dy"], case["geo"], case["rng"]
    oracle = TuckerConvGradient(x, dy, T, **geo)
    G = oracle.dense_gradient()
    factors = [rng.standard_normal(U.shape) for U in T.factors]
    dfactors = tucker_conv2d_backward(dy, x, T, need_dx=False, **geo)[2]
    all_modes = oracle.mode_partial_gradients(factors)
    for mode in range(4):
        others = [None if j == mode else U for j, U in enumerate(factors)]
        want = unfold(multi_mode_product(G, others, transpose=True), mode)
        got = oracle.mode_partial_gradient(mode, factors)
        assert got.shape == (T.shape[mode], int(np.prod([r for j, r in enumerate(T.ranks) if j != mode])))
        assert rel(got, want) <= EXACT
        assert rel(all_modes[mode], want) <= EXACT
        # Default factors are the point's; N_i Mat_i(C)^T is the factor gradient of the backward.
        # The product can cancel (dev-profile counterexample: a 1×1 result of -6.8e-4 from
        # terms of size 5), so its rounding is measured against ‖N_i‖‖Mat_i(C)‖.
        N, C_i = oracle.mode_partial_gradient(mode), unfold(T.core, mode)
        assert np.linalg.norm(N @ C_i.T - dfactors[mode]) <= EXACT * np.linalg.norm(N) * np.linalg.norm(C_i)


def oracle_queries(oracle, T, other):
    """Every query whose channel product uses the input factor, at ``T.factors`` and at ``other``."""
    return ([oracle.mode_partial_gradient(mode) for mode in range(4)]
            + [oracle.core_gradient(T.factors), oracle.core_gradient([None, T.factors[1], None, None])]
            + [oracle.mode_partial_gradient(mode, other) for mode in range(4)]
            + [oracle.core_gradient(other), oracle.dense_gradient()])


@given(conv_cases())
def test_conv_oracle_with_forward_cache_equals_the_oracle_without(case):
    """The kept im2col of z = U_in^T x is the matrix the oracle would build: the same values bit for
    bit, at the forward's U_in; at another U_in (other values, or a copy in another memory
    layout, whose GEMM may round differently) the oracle computes as without the cache."""
    T, x, dy, geo, rng = case["T"], case["x"], case["dy"], case["geo"], case["rng"]
    _, cache = tucker_conv2d_forward(x, T, **geo)
    other = [U.copy() for U in T.factors]
    other[1] = rng.standard_normal(other[1].shape)
    for factors in (other, [*T.factors[:1], np.asfortranarray(T.factors[1]), *T.factors[2:]]):
        got = oracle_queries(TuckerConvGradient(x, dy, T, forward_cache=cache, **geo), T, factors)
        want = oracle_queries(TuckerConvGradient(x, dy, T, **geo), T, factors)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


def test_layer_oracle_uses_the_forward_cache_and_equals_the_plain_oracle():
    """TuckerConv2d hands its forward cache to the oracle; the gradients do not change."""
    for dtype in (np.float64, np.float32):
        T, x, dy, _ = _small_conv(dtype)
        layer = TuckerConv2d(T, stride=(1, 2), padding=1)
        dy = np.random.default_rng(3).standard_normal(layer.forward(x).shape).astype(dtype)
        layer.backward(dy, need_dx=False)
        oracle = layer.gradient_oracle()
        plain = TuckerConvGradient(x, dy, T, stride=(1, 2), padding=1)
        for got, want in zip(oracle_queries(oracle, T, T.factors), oracle_queries(plain, T, T.factors)):
            assert got.dtype == dtype
            np.testing.assert_array_equal(got, want)


def test_conv_oracle_rejects_a_forward_cache_of_another_call():
    T, x, dy, _ = _small_conv()
    _, cache = tucker_conv2d_forward(x, T)
    with pytest.raises(TypeError, match="forward_cache must be the TuckerConvCache returned by tucker_conv2d_forward"):
        TuckerConvGradient(x, dy, T, forward_cache=cache.conv)
    with pytest.raises(ValueError, match="forward_cache must be the cache of the forward pass that took x"):
        TuckerConvGradient(x + 1, dy, T, forward_cache=cache)
    with pytest.raises(ValueError, match="forward_cache must be the cache of the forward pass that took x"):
        TuckerConvGradient(x.astype(np.float32), dy, T, forward_cache=cache)
    _, padded = tucker_conv2d_forward(x, T, padding=1)
    with pytest.raises(ValueError, match=r"forward_cache must have the geometry of this oracle .* got \(\(3, 2\), "
                                         r"\(1, 1\), \(1, 1\), \(1, 1\)\)"):
        TuckerConvGradient(x, dy, T, forward_cache=padded)
    # an equal copy of x is the same input
    copy = TuckerConvGradient(x.copy(), dy, T, forward_cache=cache)
    np.testing.assert_array_equal(copy.mode_partial_gradient(2), TuckerConvGradient(x, dy, T).mode_partial_gradient(2))


# ---------------------------------------------------------------------------------------
# low-rank dense
# ---------------------------------------------------------------------------------------
@st.composite
def linear_cases(draw):
    """Low-rank dense configuration; the algebra holds for any ranks, so ``r_out ≠ r_in`` is drawn too."""
    n, out, inp = draw(st.integers(1, 4)), draw(st.integers(1, 7)), draw(st.integers(1, 7))
    ranks = (draw(st.integers(1, out)), draw(st.integers(1, inp)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    T = random_tucker(rng, (out, inp), ranks, draw(st.booleans()))
    return dict(T=T, x=rng.standard_normal((n, inp)), b=rng.standard_normal(out),
                dy=rng.standard_normal((n, out)), rng=rng)


@given(linear_cases())
def test_low_rank_linear_forward_and_backward_equal_dense(case):
    T, x, b, dy = case["T"], case["x"], case["b"], case["dy"]
    assert rel(low_rank_linear(x, T, b), linear(x, T.full(), b)) <= EXACT
    dx_ref, G, db_ref = linear_backward(dy, x, T.full())
    dx, dcore, dfactors, db = low_rank_linear_backward(dy, x, T)
    assert rel(dx, dx_ref) <= EXACT and rel(db, db_ref) <= EXACT
    assert_core_gradient_matches_projection(dcore, T, G)
    assert_factor_gradients_match_chain_rule(dfactors, T, G)
    assert low_rank_linear_backward(dy, x, T, need_dx=False)[0] is None
    y, cache = low_rank_linear_forward(x, T, b)
    np.testing.assert_array_equal(y, low_rank_linear(x, T, b))
    for need_dx in (True, False):
        assert_same_gradients(low_rank_linear_backward_from_cache(dy, cache, need_dx),
                              low_rank_linear_backward(dy, x, T, need_dx))


@given(linear_cases())
def test_low_rank_linear_gradients_match_central_differences(case):
    T, x, b, dy, rng = case["T"], case["x"], case["b"], case["dy"], case["rng"]
    dx, dcore, (dU, dV), db = low_rank_linear_backward(dy, x, T)
    U, V = T.factors

    def loss(x_=x, core=T.core, U_=U, V_=V, b_=b, dy_=dy):
        return float(np.vdot(dy_, low_rank_linear(x_, TuckerTensor(core, [U_, V_]), b_)))

    absolute = dict(x_=np.abs(x), core=np.abs(T.core), U_=np.abs(U), V_=np.abs(V), b_=np.abs(b), dy_=np.abs(dy))
    for name, point, grad in [("x_", x, dx), ("core", T.core, dcore), ("U_", U, dU), ("V_", V, dV), ("b_", b, db)]:
        assert_directional(lambda v, n=name: loss(**{n: v}), lambda v, n=name: loss(**{**absolute, n: v}), point,
                           grad, rng.standard_normal(point.shape))


@given(linear_cases(), st.sampled_from(BASIS_KINDS), st.sampled_from(BASIS_KINDS), st.integers(0, 1))
def test_linear_oracle(case, kind_out, kind_in, mode):
    T, x, dy, rng = case["T"], case["x"], case["dy"], case["rng"]
    oracle = LowRankLinearGradient(x, dy, T)
    G = dy.T @ x
    assert rel(oracle.dense_gradient(), G) <= EXACT
    bases = random_bases(rng, T, [kind_out, kind_in])
    assert rel(oracle.core_gradient(bases), multi_mode_product(G, bases, transpose=True)) <= EXACT
    other = T.factors[1 - mode]
    want = G @ other if mode == 0 else G.T @ other
    assert rel(oracle.mode_partial_gradient(mode), want) <= EXACT
    assert rel(oracle.mode_partial_gradients()[mode], want) <= EXACT
    # Without a point, the factors must be given.
    bare = LowRankLinearGradient(x, dy)
    assert rel(bare.mode_partial_gradient(mode, T.factors), want) <= EXACT
    with pytest.raises(ValueError, match="factors is required"):
        bare.mode_partial_gradient(mode)


# ---------------------------------------------------------------------------------------
# dtype and bad input
# ---------------------------------------------------------------------------------------
def _small_conv(dtype=np.float64):
    rng = np.random.default_rng(7)
    T = random_tucker(rng, (4, 3, 3, 2), (2, 2, 2, 2), True).astype(dtype)
    x = rng.standard_normal((2, 3, 6, 5)).astype(dtype)
    dy = rng.standard_normal((2, 4, 4, 4)).astype(dtype)
    return T, x, dy, rng


def test_float32_stays_float32():
    T, x, dy, rng = _small_conv(np.float32)
    b = np.ones(4, np.float32)
    assert tucker_conv2d(x, T, b).dtype == np.float32
    dx, dcore, dfactors, db = tucker_conv2d_backward(dy, x, T)
    assert {a.dtype for a in [dx, dcore, db, *dfactors]} == {np.dtype(np.float32)}
    _, cache = tucker_conv2d_forward(x, T, b)
    assert cache.conv.cols.dtype == np.float32
    for oracle in (TuckerConvGradient(x, dy, T), TuckerConvGradient(x, dy, T, forward_cache=cache)):
        assert oracle.core_gradient(T.factors).dtype == np.float32
        assert all(oracle.mode_partial_gradient(mode).dtype == np.float32 for mode in range(4))
        assert oracle.dense_gradient().dtype == np.float32
    L = random_tucker(rng, (5, 3), (2, 2), True).astype(np.float32)
    xl = rng.standard_normal((2, 3)).astype(np.float32)
    dyl = rng.standard_normal((2, 5)).astype(np.float32)
    assert low_rank_linear(xl, L).dtype == np.float32
    dx, dcore, dfactors, db = low_rank_linear_backward(dyl, xl, L)
    assert {a.dtype for a in [dx, dcore, db, *dfactors]} == {np.dtype(np.float32)}
    assert LowRankLinearGradient(xl, dyl, L).core_gradient(L.factors).dtype == np.float32


def test_conv_oracle_float32_matches_float64():
    # The float32 oracle computes the same quantity; single precision, so compare at a
    # float32 tolerance (~80 ulps of 1.2e-7; measured ~1e-7), not at EXACT.
    T, x, dy, _ = _small_conv()
    got = TuckerConvGradient(x.astype(np.float32), dy.astype(np.float32), T.astype(np.float32)).mode_partial_gradient(1)
    want = TuckerConvGradient(x, dy, T).mode_partial_gradient(1)
    assert rel(got, want) <= 1e-5


def test_bad_input_names_the_argument():
    T, x, dy, _ = _small_conv()
    with pytest.raises(TypeError, match="T must be a TuckerTensor"):
        tucker_conv2d(x, T.full())
    with pytest.raises(ValueError, match="T must be a 4-way"):
        tucker_conv2d(x, TuckerTensor(np.ones((2, 2)), [np.ones((3, 2)), np.ones((3, 2))]))
    with pytest.raises(ValueError, match="x must have shape"):
        tucker_conv2d(x[:, :2], T)
    with pytest.raises(ValueError, match="x must have ndim=4"):
        tucker_conv2d(x[0], T)
    with pytest.raises(ValueError, match="b must have shape"):
        tucker_conv2d(x, T, np.ones(3))
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="x contains NaN"):
        tucker_conv2d(bad, T)
    with pytest.raises(ValueError, match="stride"):
        tucker_conv2d(x, T, stride=0)
    with pytest.raises(ValueError, match="dy must have"):
        tucker_conv2d_backward(dy[:, :, :3], x, T)
    with pytest.raises(ValueError, match="dy must have"):
        TuckerConvGradient(x, dy[:, :, :3], T)
    with pytest.raises(ValueError, match="dy must have shape"):
        TuckerConvGradient(x, dy[:, :3], T)
    oracle = TuckerConvGradient(x, dy, T)
    with pytest.raises(ValueError, match="bases must have one entry per mode"):
        oracle.core_gradient(T.factors[:3])
    with pytest.raises(ValueError, match=r"bases\[1\] must be None or a matrix with n_1 = 3 rows"):
        oracle.core_gradient([None, np.ones((4, 2)), None, None])
    with pytest.raises(TypeError, match="bases must be a list"):
        oracle.core_gradient(np.ones((4, 2)))
    with pytest.raises(ValueError, match="mode must be in"):
        oracle.mode_partial_gradient(4)
    L = TuckerTensor(np.eye(2), [np.eye(5, 2), np.eye(3, 2)])
    with pytest.raises(ValueError, match="x must have shape"):
        low_rank_linear(np.ones((2, 4)), L)
    with pytest.raises(ValueError, match="dy must have the batch size"):
        low_rank_linear_backward(np.ones((3, 5)), np.ones((2, 3)), L)
    with pytest.raises(ValueError, match="T must have shape"):
        LowRankLinearGradient(np.ones((2, 3)), np.ones((2, 4)), L)
    _, cache = tucker_conv2d_forward(x, T)
    with pytest.raises(TypeError, match="cache must be the TuckerConvCache"):
        tucker_conv2d_input_backward(dy, (x, T))
    with pytest.raises(ValueError, match="dy must have"):
        tucker_conv2d_parameter_backward(dy[:, :, :3], cache)
    with pytest.raises(TypeError, match="through_input must be the TuckerConvInputBackward"):
        tucker_conv2d_parameter_backward(dy, cache, (None, dy, x))
    _, linear_cache = low_rank_linear_forward(np.ones((2, 3)), L)
    with pytest.raises(TypeError, match="cache must be the LowRankLinearCache"):
        low_rank_linear_backward_from_cache(np.ones((2, 5)), (np.ones((2, 3)), L))
    with pytest.raises(ValueError, match="dy must have the batch size"):
        low_rank_linear_backward_from_cache(np.ones((3, 5)), linear_cache)
    with pytest.raises(ValueError, match="weight must be a 2-way TuckerTensor"):
        check_tucker_weight(T, 2, "weight")
