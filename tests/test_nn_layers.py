"""Layer modules, Sequential and the LeNet5 builder.

The modules are thin wrappers over the functional kernels, so each is checked against its
kernel; the whole network's backward is checked against central differences of the loss
(nonlinear: ReLU and max-pool kinks are away from the tiny steps used, so ≤ 1e-7 holds).
"""

import math

import numpy as np
import pytest

from tucker_ref.nn.functional import conv2d_backward, linear_backward, max_pool2d, softmax_cross_entropy
from tucker_ref.nn.layers import (
    Conv2d,
    Flatten,
    Linear,
    LowRankLinear,
    MaxPool2d,
    ReLU,
    Sequential,
    TuckerConv2d,
)
from tucker_ref.nn.models import LENET5_WEIGHT_SHAPES, lenet5, pytorch_default_init
from tucker_ref.nn.tucker_functional import (
    LowRankLinearGradient,
    TuckerConvGradient,
    low_rank_linear_backward,
    tucker_conv2d_backward,
)
from tucker_ref.truncation import hosvd
from tucker_ref.tucker import TuckerTensor, unfold

# Module vs its functional kernel: the same arithmetic in the same order.
SAME = 1e-14
# Exact reconstructions (full-rank HOSVD, chain rule) in float64.
EXACT = 1e-12
# Central differences of a nonlinear loss: O(h²) truncation plus eps·|L|/h rounding.
FD_TOL = 1e-7
FD_STEP = 1e-6

CONV_ARGS = dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2))


def rel(a, b) -> float:
    den = np.linalg.norm(b)
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / den) if den > 0 else float(np.linalg.norm(a))


def _tucker(rng, shape, ranks):
    return TuckerTensor(rng.standard_normal(ranks), [np.linalg.qr(rng.standard_normal((n, r)))[0]
                                                     for n, r in zip(shape, ranks)])


# ---------------------------------------------------------------------------------------
# single modules
# ---------------------------------------------------------------------------------------
def test_conv2d_and_linear_modules_match_kernels():
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(4)
    conv = Conv2d(w, b, **CONV_ARGS)
    x = rng.standard_normal((2, 3, 7, 6))
    y = conv.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = conv.backward(dy)
    dx_ref, dw_ref, db_ref = conv2d_backward(dy, x, w, **CONV_ARGS)
    assert rel(dx, dx_ref) <= SAME and rel(conv.grads["weight"], dw_ref) <= SAME
    assert rel(conv.grads["bias"], db_ref) <= SAME
    assert set(conv.parameters()) == {"weight", "bias"} and conv.parameters()["weight"] is w
    assert conv.backward(dy, need_dx=False) is None

    lin = Linear(rng.standard_normal((5, 3)))
    xl = rng.standard_normal((4, 3))
    dyl = rng.standard_normal(lin.forward(xl).shape)
    dxl = lin.backward(dyl)
    ref = linear_backward(dyl, xl, lin.weight)
    assert rel(dxl, ref[0]) <= SAME and rel(lin.grads["weight"], ref[1]) <= SAME
    assert set(lin.parameters()) == {"weight"} and set(lin.grads) == {"weight"}


def test_tucker_conv_module_grads_and_oracle():
    rng = np.random.default_rng(1)
    T = _tucker(rng, (4, 3, 3, 2), (3, 2, 2, 2))
    layer = TuckerConv2d(T, rng.standard_normal(4), **CONV_ARGS)
    x = rng.standard_normal((2, 3, 7, 6))
    dy = rng.standard_normal(layer.forward(x).shape)
    dx = layer.backward(dy)
    dx_ref, dcore, dfactors, db = tucker_conv2d_backward(dy, x, T, **CONV_ARGS)
    # The core and factor gradients are computed on first read, not by the backward pass.
    assert not layer.grads.computed
    assert rel(layer.grads["bias"], db) <= SAME and not layer.grads.computed
    assert rel(dx, dx_ref) <= SAME and rel(layer.grads["core"], dcore) <= SAME
    assert layer.grads.computed
    for i in range(4):
        assert rel(layer.grads[f"factors.{i}"], dfactors[i]) <= SAME
    # Without dx the lazy gradients compute dz themselves: the same values.
    layer.forward(x)
    assert layer.backward(dy, need_dx=False) is None
    assert rel(layer.grads["core"], dcore) <= SAME and rel(layer.grads["bias"], db) <= SAME
    for i in range(4):
        assert rel(layer.grads[f"factors.{i}"], dfactors[i]) <= SAME
    assert set(layer.parameters()) == set(layer.grads) == {"core", "factors.0", "factors.1", "factors.2",
                                                          "factors.3", "bias"}
    oracle = layer.gradient_oracle()
    assert isinstance(oracle, TuckerConvGradient) and oracle.point is T
    for i in range(4):
        N, C_i = oracle.mode_partial_gradient(i), unfold(T.core, i)
        assert np.linalg.norm(N @ C_i.T - dfactors[i]) <= EXACT * np.linalg.norm(N) * np.linalg.norm(C_i)


def test_low_rank_linear_module_grads_and_oracle():
    rng = np.random.default_rng(2)
    T = _tucker(rng, (6, 5), (3, 2))
    layer = LowRankLinear(T, rng.standard_normal(6))
    x = rng.standard_normal((4, 5))
    dy = rng.standard_normal((4, 6))
    layer.forward(x)
    dx = layer.backward(dy)
    dx_ref, dcore, (dU, dV), db = low_rank_linear_backward(dy, x, T)
    assert rel(dx, dx_ref) <= SAME and rel(layer.grads["core"], dcore) <= SAME
    assert rel(layer.grads["factors.0"], dU) <= SAME and rel(layer.grads["factors.1"], dV) <= SAME
    oracle = layer.gradient_oracle()
    assert isinstance(oracle, LowRankLinearGradient)
    assert rel(oracle.dense_gradient(), dy.T @ x) <= EXACT


def test_factorized_weight_can_change_ranks():
    rng = np.random.default_rng(3)
    layer = TuckerConv2d(_tucker(rng, (4, 3, 3, 3), (2, 2, 2, 2)))
    x = rng.standard_normal((2, 3, 5, 5))
    layer.backward(rng.standard_normal(layer.forward(x).shape))
    new = _tucker(rng, (4, 3, 3, 3), (4, 3, 3, 2))
    layer.weight = new
    assert layer.weight is new and layer.grads == {}
    with pytest.raises(RuntimeError, match="gradient_oracle needs a forward and a backward"):
        layer.gradient_oracle()
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(np.ones((2, 4, 3, 3)))
    y = layer.forward(x)
    layer.backward(rng.standard_normal(y.shape))
    assert layer.grads["core"].shape == (4, 3, 3, 2)
    assert layer.gradient_oracle().mode_partial_gradient(0).shape == (4, 18)
    with pytest.raises(ValueError, match="weight must keep the shape"):
        layer.weight = _tucker(rng, (4, 3, 3, 2), (2, 2, 2, 2))
    with pytest.raises(TypeError, match="weight must have the module dtype"):
        layer.weight = new.astype(np.float32)
    with pytest.raises(ValueError, match="dy must have the shape"):
        layer.backward(np.ones((2, 4, 3, 2)))
    with pytest.raises(ValueError, match="x must have shape"):
        layer.forward(x[:, :2])
    with pytest.raises(TypeError, match="bias must have the dtype"):
        TuckerConv2d(new, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="bias must have shape"):
        Linear(np.ones((3, 2)), np.ones(2))


def test_parameterless_modules_and_sequential():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 4, 6))
    net = Sequential([ReLU(), MaxPool2d(2), Flatten()], names=["act", "pool", "flat"])
    y = net.forward(x)
    assert y.shape == (2, 3 * 2 * 3) and net.parameters() == {} and net.grads == {}
    dy = rng.standard_normal(y.shape)
    dx = net.backward(dy)
    # Each input gets the upstream gradient of the output it is the (positive) max of.
    pooled = np.maximum(x, 0).reshape(2, 3, 2, 2, 3, 2).max(axis=(3, 5))
    expected = np.zeros_like(x)
    d = dy.reshape(pooled.shape)
    for n, c, p, q in np.ndindex(*pooled.shape):
        win = np.maximum(x[n, c, 2 * p:2 * p + 2, 2 * q:2 * q + 2], 0)
        i, j = np.unravel_index(np.argmax(win), win.shape)
        if win[i, j] > 0:
            expected[n, c, 2 * p + i, 2 * q + j] = d[n, c, p, q]
    assert np.array_equal(dx, expected)
    assert net["pool"] is net[1] and len(net) == 3
    with pytest.raises(KeyError, match="no layer named"):
        net["conv"]
    with pytest.raises(ValueError, match="names must be unique"):
        Sequential([ReLU(), ReLU()], names=["a", "a"])
    with pytest.raises(TypeError, match=r"layers\[1\] must be a Module"):
        Sequential([ReLU(), np.ones(2)])


# ---------------------------------------------------------------------------------------
# LeNet5
# ---------------------------------------------------------------------------------------
VARIANTS = {
    "dense": dict(),
    "tucker+lowrank": dict(tucker_conv=True, low_rank_dense=True,
                           ranks={"conv1": (6, 1, 3, 4), "conv2": (8, 5, 3, 3), "fc1": 12}),
    "tucker-fraction": dict(tucker_conv=True, init_rank_fraction=0.25),
}


def _batch(rng, n=2):
    return rng.random((n, 1, 28, 28)), rng.integers(0, 10, n)


def _loss_and_pattern(model, x, labels):
    """Loss and the activation pattern (ReLU masks, max-pool argmaxes) of a forward pass."""
    pattern = []
    h = x
    for layer in model.layers:
        if isinstance(layer, ReLU):
            pattern.append(h > 0)
        elif isinstance(layer, MaxPool2d):
            pattern.append(max_pool2d(h, layer.kernel_size, layer.stride)[1].argmax)
        h = layer.forward(h)
    return float(softmax_cross_entropy(h, labels)[0]), pattern


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_lenet5_backward_matches_finite_differences(variant):
    model = lenet5(seed=11, **VARIANTS[variant])
    rng = np.random.default_rng(12)
    x, labels = _batch(rng)
    loss, dlogits = softmax_cross_entropy(model.forward(x), labels)
    dx = model.backward(dlogits)
    params = model.parameters()
    grads = model.grads
    assert set(grads) == set(params)
    _, pattern0 = _loss_and_pattern(model, x, labels)

    def loss_at(t, direction, dxdir):
        saved = {k: p.copy() for k, p in params.items()}
        for k, p in params.items():
            p += t * direction[k]
        value, pattern = _loss_and_pattern(model, x + t * dxdir, labels)
        for k, p in params.items():
            p[...] = saved[k]
        same = all(np.array_equal(a, b) for a, b in zip(pattern, pattern0))
        return value, same

    checked = 0
    for _ in range(20):
        # Each block moves by about FD_STEP of its own size, so no block dominates.
        direction = {k: rng.standard_normal(p.shape) * np.sqrt(np.mean(p**2)) for k, p in params.items()}
        dxdir = rng.standard_normal(x.shape) * 0.5
        (plus, same_plus), (minus, same_minus) = loss_at(FD_STEP, direction, dxdir), loss_at(-FD_STEP, direction, dxdir)
        if not (same_plus and same_minus):
            # A ReLU or max-pool kink lies within the step: the loss is not smooth there
            # (a near-tie of two pool inputs, ~1e-7 apart, happens in some draws).
            continue
        exact = sum(float(np.vdot(grads[k], direction[k])) for k in params) + float(np.vdot(dx, dxdir))
        fd = (plus - minus) / (2 * FD_STEP)
        assert abs(fd - exact) <= FD_TOL * abs(exact), (fd, exact)
        checked += 1
        if checked == 3:
            break
    assert checked == 3, "fewer than 3 of 20 directions kept the activation pattern"
    assert softmax_cross_entropy(model.forward(x), labels)[0] == loss  # parameters restored


def test_lenet5_float32_stays_float32():
    model = lenet5(tucker_conv=True, low_rank_dense=True, init_rank_fraction=0.3, dtype=np.float32, seed=5)
    assert all(p.dtype == np.float32 for p in model.parameters().values()) and model.dtype == np.float32
    x, labels = _batch(np.random.default_rng(6))
    logits = model.forward(x)  # float64 input is cast to the parameter dtype
    assert logits.dtype == np.float32
    loss, dlogits = softmax_cross_entropy(logits, labels)
    assert dlogits.dtype == np.float32
    model.backward(dlogits, need_dx=False)
    assert all(g.dtype == np.float32 for g in model.grads.values())
    for layer in model.tucker_layers().values():
        oracle = layer.gradient_oracle()
        assert oracle.mode_partial_gradient(0).dtype == np.float32
        assert oracle.core_gradient(layer.weight.factors).dtype == np.float32


def test_lenet5_structure_and_initialization():
    dense = lenet5(seed=3)
    assert dense.names == ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten", "fc1", "relu3", "fc2"]
    assert dense.tucker_layers() == {}
    n_params = sum(p.size for p in dense.parameters().values())
    assert n_params == 430500 + 20 + 50 + 500 + 10  # weights (the DLRT paper's count) + biases
    for name, shape in LENET5_WEIGHT_SHAPES.items():
        bound = 1 / math.sqrt(math.prod(shape[1:]))
        for p in (dense[name].weight, dense[name].bias):
            assert np.abs(p).max() <= bound
            # U(-bound, bound): max is close to the bound for these sizes.
            assert np.abs(p).max() >= 0.8 * bound
    assert np.array_equal(lenet5(seed=3).parameters()["fc1.weight"], dense.parameters()["fc1.weight"])
    assert not np.array_equal(lenet5(seed=4).parameters()["fc1.weight"], dense.parameters()["fc1.weight"])

    fact = lenet5(tucker_conv=True, low_rank_dense=True, ranks={"conv1": 4, "conv2": (10, 8, 4, 5)},
                  init_rank_fraction=0.1, seed=3)
    assert list(fact.tucker_layers()) == ["conv1", "conv2", "fc1"]
    assert fact["conv1"].weight.ranks == (4, 1, 4, 4)  # int rank capped by n_2 = 1
    assert fact["conv2"].weight.ranks == (10, 8, 4, 5)
    assert fact["fc1"].weight.ranks == (50, 50)  # ceil(0.1 n_i), then feasible (equal for d = 2)
    for name, layer in fact.tucker_layers().items():
        T = layer.weight
        for U in T.factors:
            assert np.linalg.norm(U.T @ U - np.eye(U.shape[1])) <= EXACT
        # Core scaled to the norm of the same seed's dense draw; biases shared with it.
        assert abs(np.linalg.norm(T.full()) - np.linalg.norm(dense[name].weight)) <= EXACT * np.linalg.norm(
            dense[name].weight)
        assert np.array_equal(layer.bias, dense[name].bias)
    assert np.array_equal(fact["fc2"].weight, dense["fc2"].weight)


def test_pytorch_default_init_bound():
    w, b = pytorch_default_init(np.random.default_rng(0), (7, 3, 2, 2))
    assert w.shape == (7, 3, 2, 2) and b.shape == (7,)
    assert max(np.abs(w).max(), np.abs(b).max()) <= 1 / math.sqrt(12)


def test_lenet5_from_dense_by_hosvd():
    dense = lenet5(seed=8)
    x, _ = _batch(np.random.default_rng(9))
    # Exact HOSVD (no ranks): the factorized network is the dense one.
    full = lenet5(tucker_conv=True, from_dense=dense)
    assert rel(full.forward(x), dense.forward(x)) <= EXACT
    ranks = {"conv1": (5, 1, 3, 3), "conv2": (12, 6, 4, 4), "fc1": (30, 30)}
    low = lenet5(tucker_conv=True, low_rank_dense=True, ranks=ranks, from_dense=dense, dtype=np.float32)
    for name, r in ranks.items():
        T = low[name].weight
        assert T.ranks == r and T.dtype == np.float32
        W = dense[name].weight
        if name == "fc1":
            # For a matrix the truncated HOSVD is the truncated SVD (Eckart-Young).
            P, s, Qt = np.linalg.svd(W, full_matrices=False)
            ref = (P[:, :30] * s[:30]) @ Qt[:30]
        else:
            ref = hosvd(W, ranks=r)[0].full()
        assert rel(T.full(), ref) <= 1e-6  # float32 storage of the float64 HOSVD
    assert np.array_equal(low["fc2"].weight, dense["fc2"].weight.astype(np.float32))


def test_lenet5_bad_arguments():
    with pytest.raises(ValueError, match="ranks has an entry for 'fc1'"):
        lenet5(tucker_conv=True, ranks={"fc1": 3})
    with pytest.raises(ValueError, match=r"ranks\['conv2'\] = \(50, 1, 5, 5\) is not feasible"):
        lenet5(tucker_conv=True, ranks={"conv2": (50, 1, 5, 5)})
    with pytest.raises(ValueError, match=r"ranks\['conv1'\]\[1\] = 2 exceeds"):
        lenet5(tucker_conv=True, ranks={"conv1": (4, 2, 2, 2)})
    with pytest.raises(ValueError, match="init_rank_fraction must be a number in"):
        lenet5(tucker_conv=True, init_rank_fraction=0)
    with pytest.raises(TypeError, match="dtype must be float64 or float32"):
        lenet5(dtype=np.float16)
    with pytest.raises(TypeError, match="from_dense must be"):
        lenet5(tucker_conv=True, from_dense={"conv1": None})
    with pytest.raises(ValueError, match=r"from_dense\['conv1'\] must be a dense layer"):
        lenet5(tucker_conv=True, from_dense=lenet5(tucker_conv=True))
