"""Cross-check of the dense kernels against PyTorch (float64, autograd), 1e-12 relative.

Uses the conv-geometry strategy of tests/test_nn_functional.py, so both files cover the
same hypothesis-drawn configurations.
"""

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from test_nn_functional import (
    BATCH1_CHANNEL1,
    FLOOR_CASE,
    ONE_BY_ONE_INPUT,
    conv_arrays,
    conv_configs,
    conv_kwargs,
    pool_configs,
    rel_err,
)
from tucker_ref.nn import functional as F

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # deterministic reductions in CI

pytestmark = pytest.mark.crosscheck

TOL = 1e-12


def _leaf(a):
    return torch.tensor(np.ascontiguousarray(a), dtype=torch.float64, requires_grad=True)


@given(conv_configs())
@example(FLOOR_CASE)
@example(BATCH1_CHANNEL1)
@example(ONE_BY_ONE_INPUT)
def test_conv2d_forward_and_gradients_match_torch(cfg):
    x, w, b, dy = conv_arrays(cfg)
    kw = conv_kwargs(cfg)
    xt, wt, bt = _leaf(x), _leaf(w), _leaf(b)
    yt = torch.nn.functional.conv2d(xt, wt, bt, **kw)
    yt.backward(torch.from_numpy(dy))
    # Every output and gradient entry is a signed sum; the same sums over |inputs| bound its
    # terms, which rounding scales with (dev-profile counterexample: a bias gradient of -6.3e-5
    # summed from terms of size 1 differs by 1.8e-12 relative, and both sides are right).
    y_scale = F.conv2d(np.abs(x), np.abs(w), np.abs(b), **kw)
    dx_scale, dw_scale, db_scale = F.conv2d_backward(np.abs(dy), np.abs(x), np.abs(w), **kw)
    dx, dw, db = F.conv2d_backward(dy, x, w, **kw)
    for theirs, ours, scale in [(yt.detach(), F.conv2d(x, w, b, **kw), y_scale), (xt.grad, dx, dx_scale),
                                (wt.grad, dw, dw_scale), (bt.grad, db, db_scale)]:
        assert np.linalg.norm(theirs.numpy() - ours) <= TOL * np.linalg.norm(scale)


@given(pool_configs())
def test_max_pool_with_ties_matches_torch(cfg):
    rng = np.random.default_rng(cfg["seed"])
    # integer values in {0, 1, 2}: most windows hold a tied maximum
    x = rng.integers(0, 3, size=(cfg["n"], cfg["c"], cfg["h"], cfg["w"])).astype(np.float64)
    y, cache = F.max_pool2d(x, cfg["kernel"], cfg["stride"])
    xt = _leaf(x)
    yt = torch.nn.functional.max_pool2d(xt, cfg["kernel"], cfg["stride"])
    dy = rng.standard_normal(y.shape)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_array_equal(yt.detach().numpy(), y)
    assert rel_err(xt.grad.numpy(), F.max_pool2d_backward(dy, cache)) <= TOL


@given(st.integers(1, 6), st.integers(2, 12), st.floats(0.1, 100.0), st.integers(0, 2**32 - 1))
def test_cross_entropy_matches_torch(n, c, scale, seed):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, c)) * scale
    labels = rng.integers(0, c, size=n)
    zt = _leaf(z)
    lt = torch.nn.functional.cross_entropy(zt, torch.from_numpy(labels))
    lt.backward()
    loss, dz = F.softmax_cross_entropy(z, labels)
    # Both sides compute logsumexp(z) − z_y and softmax − onehot: absolute rounding of
    # ~eps·max|z| in the loss and ~eps in each gradient entry, which is not small relative to
    # a saturated loss (dev-profile counterexample: loss 2.8e-5 from logits of size 50).
    eps = np.finfo(np.float64).eps
    assert abs(loss - lt.item()) <= TOL * abs(lt.item()) + 4 * eps * np.abs(z).max()
    assert np.linalg.norm(zt.grad.numpy() - dz) <= TOL * np.linalg.norm(dz) + 4 * eps * np.sqrt(c)


@given(st.integers(0, 2**32 - 1))
def test_relu_including_zero_matches_torch(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=(3, 4, 5)).astype(np.float64)  # many exact zeros
    dy = rng.standard_normal(x.shape)
    xt = _leaf(x)
    yt = torch.relu(xt)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_array_equal(yt.detach().numpy(), F.relu(x))
    np.testing.assert_array_equal(xt.grad.numpy(), F.relu_backward(dy, x))


@given(st.integers(1, 5), st.integers(1, 8), st.integers(1, 8), st.integers(0, 2**32 - 1))
def test_linear_matches_torch(n, d_in, d_out, seed):
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((n, d_in)), rng.standard_normal((d_out, d_in)), rng.standard_normal(d_out)
    dy = rng.standard_normal((n, d_out))
    xt, wt, bt = _leaf(x), _leaf(w), _leaf(b)
    yt = torch.nn.functional.linear(xt, wt, bt)
    yt.backward(torch.from_numpy(dy))
    assert rel_err(yt.detach().numpy(), F.linear(x, w, b)) <= TOL
    dx, dw, db = F.linear_backward(dy, x, w)
    assert rel_err(xt.grad.numpy(), dx) <= TOL
    assert rel_err(wt.grad.numpy(), dw) <= TOL
    assert rel_err(bt.grad.numpy(), db) <= TOL
