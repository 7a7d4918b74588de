"""Dense layer kernels: conv2d against a naive loop oracle, every backward against central
finite differences (float64, random upstream gradients), adjoint identities, dtype
preservation, the max-pool tie rule and the input validation.

``conv_configs`` (the hypothesis strategy over conv geometries) and ``naive_conv2d`` are
also used by tests/test_crosscheck_torch_functional.py.
"""

import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from tucker_ref.nn import functional as F

# ----------------------------------------------------------------------------------------
# Shared strategy and oracle
# ----------------------------------------------------------------------------------------


def _int_or_pair(lo, hi):
    values = st.integers(lo, hi)
    return st.one_of(values, st.tuples(values, values))


def _as_pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


@st.composite
def conv_configs(draw):
    """A valid conv2d case: N, C_in, C_out in 1..3, H, W in 1..9, kh, kw in 1..4, stride 1..3,
    padding 0..2, dilation 1..3 (each an int or a pair), and an RNG seed.

    Cases whose dilated kernel does not fit into the padded input are rejected with assume().
    """
    cfg = dict(
        n=draw(st.integers(1, 3)),
        c_in=draw(st.integers(1, 3)),
        c_out=draw(st.integers(1, 3)),
        h=draw(st.integers(1, 9)),
        w=draw(st.integers(1, 9)),
        kh=draw(st.integers(1, 4)),
        kw=draw(st.integers(1, 4)),
        stride=draw(_int_or_pair(1, 3)),
        padding=draw(_int_or_pair(0, 2)),
        dilation=draw(_int_or_pair(1, 3)),
        seed=draw(st.integers(0, 2**32 - 1)),
    )
    for n, k, p, d in zip((cfg["h"], cfg["w"]), (cfg["kh"], cfg["kw"]), _as_pair(cfg["padding"]), _as_pair(cfg["dilation"])):
        assume(d * (k - 1) + 1 <= n + 2 * p)
    return cfg


# Edge cases pinned as explicit examples so they run in every CI profile.
FLOOR_CASE = dict(n=2, c_in=2, c_out=3, h=8, w=7, kh=3, kw=2, stride=(2, 3), padding=0, dilation=1, seed=1)
BATCH1_CHANNEL1 = dict(n=1, c_in=1, c_out=1, h=5, w=9, kh=4, kw=1, stride=1, padding=(2, 0), dilation=(1, 2), seed=2)
ONE_BY_ONE_INPUT = dict(n=3, c_in=3, c_out=2, h=1, w=1, kh=3, kw=1, stride=3, padding=(1, 0), dilation=1, seed=3)


def conv_kwargs(cfg):
    return dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"])


def conv_arrays(cfg, dtype=np.float64):
    """Random x, w, b and an upstream gradient dy (never all ones) for a config."""
    rng = np.random.default_rng(cfg["seed"])
    x = rng.standard_normal((cfg["n"], cfg["c_in"], cfg["h"], cfg["w"])).astype(dtype)
    w = rng.standard_normal((cfg["c_out"], cfg["c_in"], cfg["kh"], cfg["kw"])).astype(dtype)
    b = rng.standard_normal(cfg["c_out"]).astype(dtype)
    (sh, sw), (ph, pw), (dh, dw) = (_as_pair(cfg[k]) for k in ("stride", "padding", "dilation"))
    ho = (cfg["h"] + 2 * ph - dh * (cfg["kh"] - 1) - 1) // sh + 1
    wo = (cfg["w"] + 2 * pw - dw * (cfg["kw"] - 1) - 1) // sw + 1
    dy = rng.standard_normal((cfg["n"], cfg["c_out"], ho, wo)).astype(dtype)
    return x, w, b, dy


def naive_conv2d(x, w, b, *, stride, padding, dilation):
    """Oracle: one explicit window gather and dot product per output pixel."""
    (sh, sw), (ph, pw), (dh, dw) = _as_pair(stride), _as_pair(padding), _as_pair(dilation)
    n, _, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, c_out, ho, wo), dtype=np.result_type(x, w))
    rows, cols = np.arange(kh) * dh, np.arange(kw) * dw
    for i in range(n):
        for o in range(c_out):
            for p in range(ho):
                for q in range(wo):
                    window = xp[i][:, sh * p + rows[:, None], sw * q + cols[None, :]]
                    y[i, o, p, q] = np.sum(window * w[o]) + (0 if b is None else b[o])
    return y


def rel_err(a, b):
    """Normwise relative error ||a - b|| / ||a|| (||b|| when a is zero)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.linalg.norm(a) or np.linalg.norm(b) or 1.0
    return np.linalg.norm(a - b) / scale


def directional_fd_error(f, arg, grad, direction, h):
    """|central difference of f along `direction` - <grad, direction>| / (||grad|| ||direction||).

    The scale is the Cauchy-Schwarz bound of the directional derivative, so a small
    derivative along an unlucky direction does not inflate the error by cancellation.
    """
    fd = (f(arg + h * direction) - f(arg - h * direction)) / (2 * h)
    exact = np.sum(grad * direction)
    # A gradient that is exactly zero (every window in the padding) must give fd = 0 exactly.
    scale = max(np.linalg.norm(grad) * np.linalg.norm(direction), np.finfo(np.float64).tiny)
    return abs(fd - exact) / scale


# ----------------------------------------------------------------------------------------
# conv2d
# ----------------------------------------------------------------------------------------


@given(conv_configs())
@example(FLOOR_CASE)
@example(BATCH1_CHANNEL1)
@example(ONE_BY_ONE_INPUT)
def test_conv2d_matches_naive_loop(cfg):
    x, w, b, _ = conv_arrays(cfg)
    kw = conv_kwargs(cfg)
    assert rel_err(naive_conv2d(x, w, b, **kw), F.conv2d(x, w, b, **kw)) <= 1e-13
    assert rel_err(naive_conv2d(x, w, None, **kw), F.conv2d(x, w, **kw)) <= 1e-13


@given(conv_configs())
@example(FLOOR_CASE)
@example(BATCH1_CHANNEL1)
@example(ONE_BY_ONE_INPUT)
def test_conv2d_backward_matches_central_differences(cfg):
    # L(x, w, b) = <conv2d(x, w, b), dy> is linear in each argument separately, so the
    # central difference is exact for any step; h = 1 keeps rounding relative to L small.
    x, w, b, dy = conv_arrays(cfg)
    kw = conv_kwargs(cfg)
    dx, dw, db = F.conv2d_backward(dy, x, w, **kw)
    rng = np.random.default_rng(cfg["seed"] + 1)
    for _ in range(2):
        vx, vw, vb = (rng.standard_normal(a.shape) for a in (x, w, b))
        assert directional_fd_error(lambda t: np.sum(F.conv2d(t, w, b, **kw) * dy), x, dx, vx, 1.0) <= 1e-10
        assert directional_fd_error(lambda t: np.sum(F.conv2d(x, t, b, **kw) * dy), w, dw, vw, 1.0) <= 1e-10
        assert directional_fd_error(lambda t: np.sum(F.conv2d(x, w, t, **kw) * dy), b, db, vb, 1.0) <= 1e-10


@given(conv_configs())
@example(FLOOR_CASE)
@example(BATCH1_CHANNEL1)
def test_conv2d_adjoint_identities(cfg):
    # Dot-product test: |<A u, y> - <u, A^T y>| relative to ||A u|| ||y|| + ||u|| ||A^T y||.
    x, w, _, y = conv_arrays(cfg)
    kw = conv_kwargs(cfg)
    ax = F.conv2d(x, w, **kw)
    lhs = np.sum(ax * y)
    at_y_x = F.conv2d_input_backward(y, w, x.shape, **kw)
    at_y_w = F.conv2d_weight_backward(y, x, (cfg["kh"], cfg["kw"]), **kw)
    scale_x = np.linalg.norm(ax) * np.linalg.norm(y) + np.linalg.norm(x) * np.linalg.norm(at_y_x)
    scale_w = np.linalg.norm(ax) * np.linalg.norm(y) + np.linalg.norm(w) * np.linalg.norm(at_y_w)
    assert abs(lhs - np.sum(x * at_y_x)) <= 1e-12 * scale_x
    assert abs(lhs - np.sum(w * at_y_w)) <= 1e-12 * scale_w
    # conv2d_backward is made of the same two linear pieces
    dx, dw, db = F.conv2d_backward(y, x, w, **kw)
    np.testing.assert_array_equal(dx, at_y_x)
    np.testing.assert_array_equal(dw, at_y_w)
    # db is a sum of N·P·Q terms per channel: rounding scales with Σ|terms|, not with the sum
    # (dev-profile counterexample: a channel summing to -1e-3 from terms of size 1).
    assert np.linalg.norm(db - y.sum(axis=(0, 2, 3))) <= 1e-13 * np.linalg.norm(np.abs(y).sum(axis=(0, 2, 3)))
    assert F.conv2d_backward(y, x, w, need_dx=False, **kw)[0] is None


@given(conv_configs(), st.booleans(), st.integers(1, 3))
@example(FLOOR_CASE, True, 2)
@example(BATCH1_CHANNEL1, False, 1)
@example(ONE_BY_ONE_INPUT, True, 3)
def test_conv2d_cache_kernels_equal_the_plain_kernels(cfg, need_dx, other_c_out):
    """conv2d_forward / *_from_cache run the same GEMMs on the same operands as the plain kernels: equal bit for bit."""
    x, w, b, dy = conv_arrays(cfg)
    kw = conv_kwargs(cfg)
    y, cache = F.conv2d_forward(x, w, b, **kw)
    np.testing.assert_array_equal(y, F.conv2d(x, w, b, **kw))
    assert y.strides == F.conv2d(x, w, b, **kw).strides  # the same batch-last view
    got = F.conv2d_backward_from_cache(dy, cache, need_dx=need_dx)
    want = F.conv2d_backward(dy, x, w, need_dx=need_dx, **kw)
    for g, v in zip(got, want):
        if v is None:
            assert g is None
        else:
            np.testing.assert_array_equal(g, v)
    # the weight gradient takes an output gradient of any channel count (the oracles' projected dy)
    dy_other = np.random.default_rng(cfg["seed"] + 1).standard_normal((dy.shape[0], other_c_out) + dy.shape[2:])
    np.testing.assert_array_equal(F.conv2d_weight_backward_from_cache(dy_other, cache),
                                  F.conv2d_weight_backward(dy_other, x, w.shape[2:], **kw))


@pytest.mark.parametrize("x_dtype, w_dtype, dy_dtype", [
    (np.float32, np.float32, np.float32), (np.float32, np.float64, np.float32),
    (np.float64, np.float32, np.float32), (np.float32, np.float32, np.float64),
])
def test_conv2d_cache_kernels_keep_the_plain_dtypes(x_dtype, w_dtype, dy_dtype):
    """The kept im2col matrix has the dtype of x; the backward casts it as the plain kernel casts x."""
    cfg = dict(FLOOR_CASE, padding=1)
    x, w, b, dy = conv_arrays(cfg)
    x, w, b, dy = x.astype(x_dtype), w.astype(w_dtype), b.astype(w_dtype), dy.astype(dy_dtype)
    kw = conv_kwargs(cfg)
    y, cache = F.conv2d_forward(x, w, b, **kw)
    assert cache.cols.dtype == x_dtype
    want_y = F.conv2d(x, w, b, **kw)
    assert y.dtype == want_y.dtype == np.result_type(x, w)
    np.testing.assert_array_equal(y, want_y)
    for got, want in zip(F.conv2d_backward_from_cache(dy, cache), F.conv2d_backward(dy, x, w, **kw)):
        assert got.dtype == want.dtype == np.result_type(dy, x, w)
        np.testing.assert_array_equal(got, want)
    got = F.conv2d_weight_backward_from_cache(dy, cache)
    want = F.conv2d_weight_backward(dy, x, w.shape[2:], **kw)
    assert got.dtype == want.dtype == np.result_type(dy, x)
    np.testing.assert_array_equal(got, want)


def test_conv2d_cache_kernels_reject_bad_caches():
    y, cache = F.conv2d_forward(_X, _W)
    with pytest.raises(TypeError, match="cache must be the ConvCache returned by conv2d_forward, got tuple"):
        F.conv2d_backward_from_cache(_DY, (_X, _W))
    with pytest.raises(TypeError, match="cache must be the ConvCache returned by conv2d_forward, got MaxPoolCache"):
        F.conv2d_weight_backward_from_cache(_DY, F.max_pool2d(_X, 2)[1])
    with pytest.raises(ValueError, match=r"dy must have shape \(N, C_out, H_out, W_out\) = \(2, 4, 4, 3\)"):
        F.conv2d_backward_from_cache(_DY[:, :3], cache)  # the forward had 4 output channels
    with pytest.raises(ValueError, match=r"dy must have shape \(N, C_out, H_out, W_out\) = \(2, 3, 4, 3\)"):
        F.conv2d_weight_backward_from_cache(_DY[:, :3, :, :2], cache)  # any C_out, but the forward's pixels
    with pytest.raises(ValueError, match="dy contains NaN or Inf"):
        F.conv2d_backward_from_cache(_with_nan(_DY), cache)


def test_conv2d_floor_case_uncovered_input_gets_zero_gradient():
    # H = 8, kh = 3, stride 2: outputs read rows 0..6; row 7 is never used.
    # W = 7, kw = 2, stride 3: outputs read columns 0..1 and 3..4; columns 2, 5, 6 never.
    cfg = FLOOR_CASE
    x, w, b, dy = conv_arrays(cfg)
    kw = conv_kwargs(cfg)
    dx, dw, _ = F.conv2d_backward(dy, x, w, **kw)
    assert dy.shape[2:] == (3, 2)
    assert np.all(dx[:, :, 7, :] == 0)
    assert np.all(dx[:, :, :, [2, 5, 6]] == 0)
    assert np.all(dx[:, :, :7, [0, 1, 3, 4]] != 0)
    x2 = x.copy()
    x2[:, :, 7, :] = 1e3
    x2[:, :, :, [2, 5, 6]] = -1e3
    np.testing.assert_array_equal(F.conv2d(x2, w, b, **kw), F.conv2d(x, w, b, **kw))
    np.testing.assert_array_equal(F.conv2d_backward(dy, x2, w, **kw)[1], dw)


def test_conv2d_accepts_its_own_batch_last_output():
    # Outputs are transposed views of batch-last buffers; chaining must give the same
    # values as contiguous inputs.
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 2, 9, 8))
    w1, w2 = rng.standard_normal((3, 2, 3, 3)), rng.standard_normal((5, 3, 2, 2))
    y1 = F.conv2d(x, w1, padding=1)
    assert not y1.flags.c_contiguous
    y2 = F.conv2d(y1, w2, stride=2)
    np.testing.assert_array_equal(y2, F.conv2d(np.ascontiguousarray(y1), w2, stride=2))
    dy = rng.standard_normal(y2.shape)
    for a, b in zip(F.conv2d_backward(dy, y1, w2, stride=2), F.conv2d_backward(dy, np.ascontiguousarray(y1), w2, stride=2)):
        np.testing.assert_array_equal(a, b)


def _batch_last_copy(a):
    """Same values and shape, memory laid out as (C, H, W, N) like the conv outputs."""
    return np.ascontiguousarray(a.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)


@pytest.mark.parametrize("x_last, dy_last", [(False, True), (True, False), (True, True)])
def test_elementwise_and_pool_results_do_not_depend_on_memory_layout(x_last, dy_last):
    rng = np.random.default_rng(13)
    x = rng.permutation(2 * 3 * 7 * 6).reshape(2, 3, 7, 6) * 0.25 - 10.0
    dy = rng.standard_normal(x.shape)
    xl = _batch_last_copy(x) if x_last else x
    dyl = _batch_last_copy(dy) if dy_last else dy
    np.testing.assert_array_equal(F.relu(xl), F.relu(x))
    np.testing.assert_array_equal(F.relu_backward(dyl, xl), F.relu_backward(dy, x))
    for kernel, stride in [(2, None), (3, (2, 3))]:
        y, cache = F.max_pool2d(x, kernel, stride)
        yl, cachel = F.max_pool2d(xl, kernel, stride)
        dyp = rng.standard_normal(y.shape)
        dypl = _batch_last_copy(dyp) if dy_last else dyp
        np.testing.assert_array_equal(yl, y)
        np.testing.assert_array_equal(F.max_pool2d_backward(dypl, cachel), F.max_pool2d_backward(dyp, cache))


# ----------------------------------------------------------------------------------------
# linear
# ----------------------------------------------------------------------------------------


@given(st.integers(1, 4), st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_linear_forward_and_central_differences(n, d_in, d_out, seed):
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((n, d_in)), rng.standard_normal((d_out, d_in)), rng.standard_normal(d_out)
    dy = rng.standard_normal((n, d_out))
    y = F.linear(x, w, b)
    expected = np.array([[sum(x[i, k] * w[o, k] for k in range(d_in)) + b[o] for o in range(d_out)] for i in range(n)])
    assert rel_err(expected, y) <= 1e-13
    dx, dw, db = F.linear_backward(dy, x, w)
    vx, vw, vb = (rng.standard_normal(a.shape) for a in (x, w, b))
    assert directional_fd_error(lambda t: np.sum(F.linear(t, w, b) * dy), x, dx, vx, 1.0) <= 1e-10
    assert directional_fd_error(lambda t: np.sum(F.linear(x, t, b) * dy), w, dw, vw, 1.0) <= 1e-10
    assert directional_fd_error(lambda t: np.sum(F.linear(x, w, t) * dy), b, db, vb, 1.0) <= 1e-10
    assert F.linear_backward(dy, x, w, need_dx=False)[0] is None


# ----------------------------------------------------------------------------------------
# relu, max-pool, flatten, cross-entropy
# ----------------------------------------------------------------------------------------


@given(st.integers(0, 2**32 - 1))
def test_relu_central_differences_away_from_zero(seed):
    rng = np.random.default_rng(seed)
    # keep |x| >= 0.1 so that a step of 1e-3 never crosses the kink
    x = rng.choice([-1.0, 1.0], size=(3, 4, 5)) * rng.uniform(0.1, 2.0, size=(3, 4, 5))
    dy = rng.standard_normal(x.shape)
    dx = F.relu_backward(dy, x)
    np.testing.assert_array_equal(F.relu(x), np.where(x > 0, x, 0.0))
    v = rng.standard_normal(x.shape)
    assert directional_fd_error(lambda t: np.sum(F.relu(t) * dy), x, dx, v, 1e-3) <= 1e-7


def test_relu_derivative_at_zero_is_zero():
    x = np.array([[-1.0, 0.0, 2.0], [0.0, 0.0, -0.0]])
    dy = np.array([[3.0, 5.0, 7.0], [11.0, 13.0, 17.0]])
    np.testing.assert_array_equal(F.relu_backward(dy, x), [[0.0, 0.0, 7.0], [0.0, 0.0, 0.0]])


@st.composite
def pool_configs(draw):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = draw(st.one_of(st.none(), _int_or_pair(1, 3)))
    kernel = draw(st.sampled_from([kh, (kh, kw)])) if kh == kw else (kh, kw)
    h, w = draw(st.integers(kh, 8)), draw(st.integers(kw, 8))
    return dict(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 3)), h=h, w=w, kernel=kernel,
                stride=stride, seed=draw(st.integers(0, 2**32 - 1)))


def naive_max_pool(x, kernel, stride):
    kh, kw = _as_pair(kernel)
    sh, sw = _as_pair(kernel if stride is None else stride)
    n, c, h, w = x.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    y = np.empty((n, c, ho, wo))
    dx_route = np.zeros((n, c, ho, wo, 2), dtype=int)
    for i in range(n):
        for j in range(c):
            for p in range(ho):
                for q in range(wo):
                    window = x[i, j, sh * p : sh * p + kh, sw * q : sw * q + kw]
                    a = int(np.argmax(window))  # first maximum in row-major order
                    y[i, j, p, q] = window.flat[a]
                    dx_route[i, j, p, q] = (sh * p + a // kw, sw * q + a % kw)
    return y, dx_route


@given(pool_configs())
def test_max_pool_matches_naive_and_central_differences(cfg):
    rng = np.random.default_rng(cfg["seed"])
    shape = (cfg["n"], cfg["c"], cfg["h"], cfg["w"])
    # distinct values 0.5 apart: no ties, and a step of 1e-3 never changes an argmax
    x = rng.permutation(np.prod(shape)).reshape(shape) * 0.5
    y, cache = F.max_pool2d(x, cfg["kernel"], cfg["stride"])
    y_ref, route = naive_max_pool(x, cfg["kernel"], cfg["stride"])
    np.testing.assert_array_equal(y, y_ref)
    dy = rng.standard_normal(y.shape)
    dx = F.max_pool2d_backward(dy, cache)
    dx_ref = np.zeros_like(x)
    for idx in np.ndindex(*y.shape):
        dx_ref[idx[0], idx[1], route[idx][0], route[idx][1]] += dy[idx]
    assert rel_err(dx_ref, dx) <= 1e-15
    v = rng.standard_normal(x.shape)
    loss = lambda t: np.sum(F.max_pool2d(t, cfg["kernel"], cfg["stride"])[0] * dy)  # noqa: E731
    assert directional_fd_error(loss, x, dx, v, 1e-3) <= 1e-7


def test_max_pool_ties_go_to_first_maximum_in_row_major_order():
    x = np.array([[[[1.0, 3.0, 5.0, 5.0],
                    [3.0, 2.0, 5.0, 5.0],
                    [0.0, 0.0, 4.0, 1.0],
                    [0.0, 0.0, 2.0, 4.0]]]])
    dy = np.array([[[[2.0, 3.0], [5.0, 7.0]]]])
    y, cache = F.max_pool2d(x, 2)
    np.testing.assert_array_equal(y, [[[[3.0, 5.0], [0.0, 4.0]]]])
    expected = np.zeros_like(x)
    expected[0, 0, 0, 1] = 2.0  # tie 3 at (0,1) and (1,0): first in row-major order
    expected[0, 0, 0, 2] = 3.0  # four-way tie: top-left
    expected[0, 0, 2, 0] = 5.0  # all zeros: top-left
    expected[0, 0, 2, 2] = 7.0  # tie 4 on the diagonal: (0,0) of the window
    np.testing.assert_array_equal(F.max_pool2d_backward(dy, cache), expected)
    # overlapping windows (stride 1): a shared maximum collects the gradient of every window
    y1, cache1 = F.max_pool2d(x[:, :, :2, :3], 2, stride=1)
    np.testing.assert_array_equal(y1, [[[[3.0, 5.0]]]])
    dx1 = F.max_pool2d_backward(np.array([[[[2.0, 3.0]]]]), cache1)
    np.testing.assert_array_equal(dx1, [[[[0.0, 2.0, 3.0], [0.0, 0.0, 0.0]]]])


def test_flatten_round_trip():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 2, 4, 5))
    y = F.flatten(x)
    assert y.shape == (3, 40)
    np.testing.assert_array_equal(y[1], x[1].ravel())
    dy = rng.standard_normal(y.shape)
    dx = F.flatten_backward(dy, x.shape)
    # flatten is a permutation-free reshape, so its adjoint is the inverse reshape
    assert np.sum(y * dy) == pytest.approx(np.sum(x * dx), rel=1e-14)
    np.testing.assert_array_equal(F.flatten(dx), dy)


@given(st.integers(1, 5), st.integers(2, 6), st.integers(0, 2**32 - 1))
def test_softmax_cross_entropy_value_and_central_differences(n, c, seed):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, c)) * 3
    labels = rng.integers(0, c, size=n)
    loss, dz = F.softmax_cross_entropy(z, labels)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(n), labels])), rel=1e-13)
    v = rng.standard_normal(z.shape)
    # smooth: central-difference truncation O(h^2) ~ 1e-10 of the gradient scale; the loss
    # values carry an absolute rounding error ~eps·(max|z| + log c), so the difference quotient
    # carries one of ~eps·(max|z| + log c)/h. That floor matters only when the loss saturates and the
    # gradient is tiny (dev-profile counterexample: logits (6.1, -7.7), gradient norm 1.5e-6).
    h = 1e-5
    fd = (F.softmax_cross_entropy(z + h * v, labels)[0] - F.softmax_cross_entropy(z - h * v, labels)[0]) / (2 * h)
    rounding = 4 * np.finfo(np.float64).eps * (np.abs(z).max() + np.log(c)) / h
    assert abs(fd - np.sum(dz * v)) <= 1e-7 * np.linalg.norm(dz) * np.linalg.norm(v) + rounding


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    z = np.array([[1000.0, 0.0, -1000.0], [-5e4, 5e4, 0.0]])
    labels = np.array([0, 0])
    loss, dz = F.softmax_cross_entropy(z, labels)
    # sample 0: log-sum-exp = 1000 + log(1 + e^-1000 + ...) -> loss 0; sample 1: 1e5
    assert loss == pytest.approx((0.0 + 1e5) / 2, rel=1e-15)
    np.testing.assert_allclose(dz, [[0.0, 0.0, 0.0], [-0.5, 0.5, 0.0]], atol=1e-300)


# ----------------------------------------------------------------------------------------
# dtypes
# ----------------------------------------------------------------------------------------


def test_float32_in_float32_out():
    rng = np.random.default_rng(5)
    f32 = np.float32
    x = rng.standard_normal((2, 3, 8, 7)).astype(f32)
    w = rng.standard_normal((4, 3, 3, 2)).astype(f32)
    b = rng.standard_normal(4).astype(f32)
    kw = dict(stride=(1, 2), padding=1, dilation=(2, 1))
    y = F.conv2d(x, w, b, **kw)
    dy = rng.standard_normal(y.shape).astype(f32)
    outputs = [y, *F.conv2d_backward(dy, x, w, **kw), F.conv2d_input_backward(dy, w, x.shape, **kw),
               F.conv2d_weight_backward(dy, x, (3, 2), **kw)]
    y_cached, conv_cache = F.conv2d_forward(x, w, b, **kw)
    outputs += [y_cached, *F.conv2d_backward_from_cache(dy, conv_cache),
                F.conv2d_weight_backward_from_cache(dy, conv_cache)]
    xl, wl, bl = x.reshape(2, -1), rng.standard_normal((5, 168)).astype(f32), rng.standard_normal(5).astype(f32)
    dyl = rng.standard_normal((2, 5)).astype(f32)
    outputs += [F.linear(xl, wl, bl), *F.linear_backward(dyl, xl, wl)]
    outputs += [F.relu(x), F.relu_backward(x, x)]
    yp, cache = F.max_pool2d(x, 2)
    outputs += [yp, F.max_pool2d_backward(yp, cache), F.flatten(x), F.flatten_backward(xl, x.shape)]
    outputs += list(F.softmax_cross_entropy(dyl, np.array([1, 4])))
    for k, out in enumerate(outputs):
        assert out.dtype == f32, f"output {k} has dtype {out.dtype}"
    # float32 result agrees with float64 to float32 accuracy
    y64 = F.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), **kw)
    assert rel_err(y64, y) <= 1e-5


# ----------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------

_X = np.zeros((2, 3, 6, 5))
_W = np.zeros((4, 3, 3, 3))
_DY = np.zeros((2, 4, 4, 3))


def _with_nan(a):
    a = a.copy()
    a.flat[3] = np.nan
    return a


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: F.conv2d(_X[0], _W), "x must have ndim=4"),
        (lambda: F.conv2d(_X, _W[0]), "w must have ndim=4"),
        (lambda: F.conv2d(_X, np.zeros((4, 2, 3, 3))), r"x.shape\[1\] == w.shape\[1\]"),
        (lambda: F.conv2d(_X, _W, np.zeros(3)), r"b must have shape \(C_out,\)"),
        (lambda: F.conv2d(_X, np.zeros((4, 3, 4, 3)), dilation=2), "dilated kernel height"),
        (lambda: F.conv2d(_X, np.zeros((4, 3, 3, 6))), "dilated kernel width"),
        (lambda: F.conv2d(_X, np.zeros((4, 3, 0, 2))), r"w.shape\[2:\] must be a positive int"),
        (lambda: F.conv2d(_X, _W, stride=0), "stride must be a positive int"),
        (lambda: F.conv2d(_X, _W, stride=(1, -2)), "stride must be a positive int"),
        (lambda: F.conv2d(_X, _W, stride=(1, 2, 3)), "stride must be a positive int or a pair"),
        (lambda: F.conv2d(_X, _W, dilation=0), "dilation must be a positive int"),
        (lambda: F.conv2d(_X, _W, padding=-1), "padding must be a non-negative int"),
        (lambda: F.conv2d(_with_nan(_X), _W), "x contains NaN or Inf"),
        (lambda: F.conv2d(_X, np.full_like(_W, np.inf)), "w contains NaN or Inf"),
        (lambda: F.conv2d_backward(_DY[:, :, :3], _X, _W), r"dy must have shape \(N, C_out, H_out, W_out\)"),
        (lambda: F.conv2d_backward(_with_nan(_DY), _X, _W), "dy contains NaN or Inf"),
        (lambda: F.conv2d_backward(_DY, _X, np.zeros((4, 2, 3, 3))), r"x.shape\[1\] == w.shape\[1\]"),
        (lambda: F.conv2d_input_backward(_DY, _W, (2, 3, 6)), r"x_shape must be a tuple \(N, C_in, H, W\)"),
        (lambda: F.conv2d_input_backward(_DY, _W, (2, 2, 6, 5)), r"x_shape.shape\[1\] == w.shape\[1\]"),
        (lambda: F.conv2d_weight_backward(_DY, _X, 0), "kernel_size must be a positive int"),
        (lambda: F.conv2d_weight_backward(_DY, _X, (2, 3)), r"dy must have shape"),
        (lambda: F.linear(np.zeros((2, 3)), np.zeros((4, 5))), r"expected x of shape \(N, in\)"),
        (lambda: F.linear(np.zeros(3), np.zeros((4, 3))), "x must have ndim=2"),
        (lambda: F.linear(np.zeros((2, 3)), np.zeros((4, 3)), np.zeros(3)), r"b must have shape \(out,\)"),
        (lambda: F.linear_backward(np.zeros((2, 5)), np.zeros((2, 3)), np.zeros((4, 3))), r"dy must have shape \(N, out\)"),
        (lambda: F.relu(np.array([1.0, np.inf])), "x contains NaN or Inf"),
        (lambda: F.relu_backward(np.zeros(3), np.zeros(4)), "dy must have the shape of x"),
        (lambda: F.max_pool2d(_X[0]), "x must have ndim=4"),
        (lambda: F.max_pool2d(_X, 2, padding=1), "padding must be 0"),
        (lambda: F.max_pool2d(_X, 0), "kernel_size must be a positive int"),
        (lambda: F.max_pool2d(_X, 2, stride=0), "stride must be a positive int"),
        (lambda: F.max_pool2d(_X, 7), "exceeds the padded input height"),
        (lambda: F.max_pool2d(_with_nan(_X)), "x contains NaN or Inf"),
        (lambda: F.max_pool2d_backward(np.zeros((2, 3, 2, 2)), F.max_pool2d(_X, 2)[1]), "dy must have the pooled shape"),
        (lambda: F.flatten(np.zeros(3)), "x must have ndim >= 2"),
        (lambda: F.flatten_backward(np.zeros((2, 5)), (2, 3, 2)), r"dy must have shape \(N, prod"),
        (lambda: F.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3])), r"labels must lie in \[0, C\)"),
        (lambda: F.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, -1])), r"labels must lie in \[0, C\)"),
        (lambda: F.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1, 2])), r"labels must have shape \(N,\)"),
        (lambda: F.softmax_cross_entropy(np.zeros(3), np.array([0])), "logits must have ndim=2"),
        (lambda: F.softmax_cross_entropy(np.array([[0.0, np.nan]]), np.array([0])), "logits contains NaN"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: F.conv2d(_X, _W, stride=1.5), "stride must be a positive int"),
        (lambda: F.conv2d(_X, _W, padding="same"), "padding must be a non-negative int"),
        (lambda: F.conv2d_input_backward(_DY, _W, None), "x_shape must be a tuple"),
        (lambda: F.softmax_cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0])), "labels must be an integer array"),
        (lambda: F.max_pool2d_backward(np.zeros((2, 3, 3, 2)), None), "cache must be the MaxPoolCache"),
    ],
)
def test_bad_input_type_raises_type_error_naming_the_argument(call, match):
    with pytest.raises(TypeError, match=match):
        call()


@pytest.mark.parametrize("kernel, stride", [(2, None), (3, 2), ((2, 3), (1, 2))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_max_pool2d_equals_relu_then_max_pool(kernel, stride, dtype):
    rng = np.random.default_rng(7)
    # rounded values: ties inside windows, windows that are all <= 0, and exact zeros
    x = np.round(rng.standard_normal((3, 4, 9, 10)) * 2).astype(dtype)
    x[0, 0] = -1.0
    y_ref, cache_ref = F.max_pool2d(F.relu(x), kernel, stride)
    y, cache = F.relu_max_pool2d(x, kernel, stride)
    assert y.dtype == dtype and np.array_equal(y, y_ref)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx_ref = F.relu_backward(F.max_pool2d_backward(dy, cache_ref), x)
    dx = F.max_pool2d_backward(dy, cache)
    assert dx.dtype == dtype and np.array_equal(dx, dx_ref)
    assert not dx[0, 0].any()


def test_relu_max_pool2d_widens_argmax_for_large_windows():
    x = -np.ones((1, 1, 16, 16))
    x[0, 0, 15, 15] = 1.0
    y, cache = F.relu_max_pool2d(x, 16)
    assert y.ravel().tolist() == [1.0] and cache.argmax.ravel().tolist() == [255]
    y, cache = F.relu_max_pool2d(-x - 2, 16)  # every entry <= 0: the 257th tap index 256
    assert y.ravel().tolist() == [0.0] and cache.argmax.ravel().tolist() == [256]
    assert not F.max_pool2d_backward(np.ones_like(y), cache).any()
