"""The cross-check kit at work: other implementations checked against the golden files.

This is the worked example of ``docs/crosscheck.md``:

1. PyTorch's ``conv2d`` (autograd for the backward) against the golden conv2d cases;
2. TensorLy-Torch's Tucker convolution (``tltorch.functional.convolution.tucker_conv``, autograd
   for the factored gradients) against the golden Tucker-conv cases;
3. a small TDLRT step written here in PyTorch (float64, autograd for ``∇L``,
   ``torch.linalg.qr``/``svd``) against the golden TDLRT-step case, every intermediate compared
   as a basis-invariant quantity.

The last group tests the public test helpers added for other projects
(``tucker_ref.testing.strategies.conv_configs``, ``tucker_ref.testing.oracles.descent_bound_check``);
it needs no torch.

tltorch switches TensorLy's backend to pytorch when imported; the import restores the previous
backend and tltorch runs only inside ``tensorly.backend_context("pytorch")``.
"""

import math

import numpy as np
import pytest
from hypothesis import find, given
from hypothesis import strategies as st

from tucker_ref.golden import compare_case, load_case
from tucker_ref.integrators import tdlrt_step
from tucker_ref.nn.functional import conv2d, conv2d_backward
from tucker_ref.testing.oracles import descent_bound_check
from tucker_ref.integrators.steps import augmented_bases
from tucker_ref.testing.problems import QuadraticRegression, subspace_projection
from tucker_ref.testing.strategies import conv_configs, seeds, tucker_tensors

CONV_CASES = ["conv2d_basic", "conv2d_stride_pad", "conv2d_mixed"]
TUCKER_CONV_CASES = ["tucker_conv2d_basic", "tucker_conv2d_strided"]


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tltorch_conv(torch):
    tensorly = pytest.importorskip("tensorly")
    previous = tensorly.get_backend()
    try:
        pytest.importorskip("tltorch")
        from tltorch.functional.convolution import tucker_conv
    finally:
        tensorly.set_backend(previous)
    from tensorly.tucker_tensor import TuckerTensor as TensorlyTucker

    def run(x, core, factors, bias, **geo):
        with tensorly.backend_context("pytorch"):
            y = tucker_conv(x, TensorlyTucker((core, factors)), bias=bias, **geo)
            kernel = tensorly.tucker_to_tensor((core, factors))
        return y, kernel

    yield run
    assert tensorly.get_backend() == previous


def leaf(torch, array):
    return torch.tensor(np.asarray(array), dtype=torch.float64, requires_grad=True)


def geometry(inputs) -> dict:
    return {k: tuple(inputs[k]) for k in ("stride", "padding", "dilation")}


# ---------------------------------------------------------------------------------------
# 1. PyTorch conv2d
# ---------------------------------------------------------------------------------------
@pytest.mark.crosscheck
@pytest.mark.parametrize("name", CONV_CASES)
def test_torch_conv2d_matches_golden(torch, name):
    inputs, expected, tolerances = load_case(None, name)
    x, w, b = (leaf(torch, inputs[k]) for k in ("x", "w", "b"))
    y = torch.nn.functional.conv2d(x, w, b, **geometry(inputs))
    (y * torch.from_numpy(inputs["dy"])).sum().backward()
    ours = {"y": y, "dx": x.grad, "dw": w.grad, "db": b.grad}
    result = compare_case({k: v.detach().numpy() for k, v in ours.items()}, expected, tolerances, name=name)
    assert result.ok, result.problems


# ---------------------------------------------------------------------------------------
# 2. TensorLy-Torch Tucker convolution
# ---------------------------------------------------------------------------------------
@pytest.mark.crosscheck
@pytest.mark.parametrize("name", TUCKER_CONV_CASES)
def test_tltorch_tucker_conv_matches_golden(torch, tltorch_conv, name):
    inputs, expected, tolerances = load_case(None, name)
    x, core, b = (leaf(torch, inputs[k]) for k in ("x", "core", "b"))
    factors = [leaf(torch, inputs[f"U_{i}"]) for i in range(4)]
    y, kernel = tltorch_conv(x, core, factors, b, **geometry(inputs))
    assert y.dtype == torch.float64
    (y * torch.from_numpy(inputs["dy"])).sum().backward()
    ours = {"kernel": kernel, "y": y, "dx": x.grad, "dcore": core.grad, "db": b.grad}
    ours.update({f"dU_{i}": U.grad for i, U in enumerate(factors)})
    result = compare_case({k: v.detach().numpy() for k, v in ours.items()}, expected, tolerances, name=name)
    assert result.ok, result.problems


# ---------------------------------------------------------------------------------------
# 3. a TDLRT step in PyTorch (docs/algorithms.md §1–§3), written from the formulas
# ---------------------------------------------------------------------------------------
def t_unfold(torch, X, i):
    """Mat_i(X) in C order (remaining modes increasing, last fastest)."""
    return torch.movedim(X, i, 0).reshape(X.shape[i], -1)


def t_fold(torch, M, i, shape):
    rest = tuple(shape[:i]) + tuple(shape[i + 1:])
    return torch.movedim(M.reshape((shape[i],) + rest), 0, i)


def t_products(torch, X, matrices, transpose=False):
    """X ×_i M_i for every non-None M_i (M_i^T with ``transpose``)."""
    for i, M in enumerate(matrices):
        if M is not None:
            X = torch.movedim(torch.tensordot(X, M.T if transpose else M, dims=([i], [1])), -1, i)
    return X


def torch_tdlrt_step(torch, inputs):
    """One rank-adaptive BUG step (k-step augmentation, Galerkin S-step at Y0, relative τ) and its
    intermediates, as the golden case names them."""
    F = torch.nn.functional
    eps = torch.finfo(torch.float64).eps
    geo = geometry(inputs)
    x, target = torch.from_numpy(inputs["x"]), torch.from_numpy(inputs["target"])
    C0 = torch.from_numpy(inputs["core"])
    d = C0.ndim
    U = [torch.from_numpy(inputs[f"U_{i}"]) for i in range(d)]
    lr, tau = inputs["lr"], inputs["tau"]

    def loss(W):
        return 0.5 * ((F.conv2d(x, W, **geo) - target) ** 2).sum()

    W0 = t_products(torch, C0, U).requires_grad_(True)
    L0 = loss(W0)
    (G,) = torch.autograd.grad(L0, W0)
    out = {"grad": G, "loss_before": L0.detach()}

    # 1. per mode: row space Q_i (QR of Mat_i(C0)^T; full row rank in golden cases), K_i = U_i S_i,
    #    ∇_K L = N_i Q_i, Û_i = [U_i, orth((I − U_iU_i^T)∇_K L)].
    U_hat, M_hat = [], []
    for i in range(d):
        M = t_unfold(torch, C0, i)
        Q, _ = torch.linalg.qr(M.T)
        K = U[i] @ (M @ Q)
        N = t_unfold(torch, t_products(torch, G, [None if j == i else U[j] for j in range(d)], transpose=True), i)
        grad_K = N @ Q
        new = grad_K
        for _ in range(2):
            new = new - U[i] @ (U[i].T @ new)
        V, s, _ = torch.linalg.svd(new, full_matrices=False)
        cutoff = max(new.shape) * eps * torch.linalg.matrix_norm(grad_K, 2)
        V = V[:, : min(int((s > cutoff).sum()), U[i].shape[0] - U[i].shape[1])]
        U_hat.append(torch.cat([U[i], V], dim=1))
        M_hat.append(U_hat[i].T @ U[i])
        out[f"QQt_{i}"] = Q @ Q.T
        out[f"KQt_{i}"] = K @ Q.T
        out[f"grad_K_Qt_{i}"] = grad_K @ Q.T
        out[f"U_hat_projector_{i}"] = U_hat[i] @ U_hat[i].T
    # 2. Galerkin step on the augmented basis, gradient at Y0.
    C_hat0 = t_products(torch, C0, M_hat)
    grad_core = t_products(torch, G, U_hat, transpose=True)
    C_hat1 = C_hat0 - lr * grad_core
    # 3. truncation: per mode, smallest r with ‖(σ_{r+1}, …)‖ ≤ ϑ = τ‖Ĉ1‖.
    theta = tau * torch.linalg.vector_norm(C_hat1)
    P, tails = [], []
    for i in range(d):
        Pi, s, _ = torch.linalg.svd(t_unfold(torch, C_hat1, i), full_matrices=False)
        tail = torch.sqrt(torch.flip(torch.cumsum(torch.flip(s**2, [0]), 0), [0]))
        tail = torch.cat([tail, tail.new_zeros(1)])
        r = max(1, int(torch.nonzero(tail <= theta)[0]))
        P.append(Pi[:, :r])
        tails.append(tail[r])
    ranks = [p.shape[1] for p in P]
    assert all(r <= math.prod(ranks[:i] + ranks[i + 1:]) for i, r in enumerate(ranks)), "feasibility clamp"
    C1 = t_products(torch, C_hat1, P, transpose=True)
    U1 = [Uh @ Pi for Uh, Pi in zip(U_hat, P)]
    Y1 = t_products(torch, C1, U1)
    Y_hat1 = t_products(torch, C_hat1, U_hat)
    # Diagnostics: Π onto ⊗ span Û_i; the tangent projection P(Y0)G with row-space projectors.
    PiG = t_products(torch, grad_core, U_hat)
    PG = t_products(torch, t_products(torch, G, U, transpose=True), U)
    for i in range(d):
        N = t_unfold(torch, t_products(torch, G, [None if j == i else U[j] for j in range(d)], transpose=True), i)
        normal = N - U[i] @ (U[i].T @ N)
        shape = list(C0.shape)
        shape[i] = U[i].shape[0]
        PG = PG + t_products(torch, t_fold(torch, normal @ out[f"QQt_{i}"], i, shape),
                             [None if j == i else U[j] for j in range(d)])
    norm = torch.linalg.vector_norm
    out.update({
        "ranks_augmented": np.array([Uh.shape[1] for Uh in U_hat]),
        "C_hat0_full": t_products(torch, C_hat0, U_hat),
        "C_hat1_full": Y_hat1,
        "ranks_after": np.array(ranks),
        "tails": torch.stack(tails),
        "threshold": theta,
        "eta": norm(Y_hat1 - Y1),
        "Y1_full": Y1,
        "loss_after": loss(Y1),
        "proj_grad_norm": norm(grad_core),
        "tangent_grad_norm": norm(PG),
        "epsilon": norm(G - PG),
        "residual_norm": norm(G - PiG),
    })
    for i in range(d):
        out[f"U1_projector_{i}"] = U1[i] @ U1[i].T
    return {k: (v.detach().numpy() if isinstance(v, torch.Tensor) else v) for k, v in out.items()}


@pytest.mark.crosscheck
def test_torch_tdlrt_step_matches_golden(torch):
    inputs, expected, tolerances = load_case(None, "tdlrt_step_conv")
    result = compare_case(torch_tdlrt_step(torch, inputs), expected, tolerances, name="tdlrt_step_conv")
    assert result.ok, result.problems
    # Not a vacuous comparison: the step changed ranks, and a perturbed step is rejected.
    assert not np.array_equal(expected["ranks_after"], expected["ranks_augmented"])
    wrong = torch_tdlrt_step(torch, {**inputs, "lr": inputs["lr"] * (1 + 1e-6)})
    assert not compare_case(wrong, expected, tolerances).ok


# ---------------------------------------------------------------------------------------
# public test helpers for other projects (no torch needed)
# ---------------------------------------------------------------------------------------
@given(conv_configs())
def test_conv_configs_are_valid_and_reproducible(cfg):
    x, w, b, dy = cfg.arrays()
    y = conv2d(x, w, b, **cfg.kwargs())
    assert y.shape == cfg.out_shape == dy.shape
    for n, k, p, dil in zip(cfg.x_shape[2:], cfg.w_shape[2:], cfg.padding, cfg.dilation):
        assert dil * (k - 1) + 1 <= n + 2 * p
    again = cfg.arrays()
    assert all(np.array_equal(a, c) for a, c in zip((x, w, b, dy), again))
    assert dy.size == 1 or np.ptp(dy) > 0
    assert cfg.arrays(np.float32)[0].dtype == np.float32


def test_conv_configs_reach_the_hard_corners():
    """Unequal stride/padding/dilation pairs, the floor case, batch 1 and one channel are drawn."""
    def floor_case(c):
        return any((n + 2 * p - d * (k - 1) - 1) % s for n, k, s, p, d in
                   zip(c.x_shape[2:], c.w_shape[2:], c.stride, c.padding, c.dilation))

    corners = [
        lambda c: c.stride[0] != c.stride[1] and c.padding[0] != c.padding[1] and c.dilation[0] != c.dilation[1],
        floor_case,
        lambda c: c.x_shape[0] == 1 and c.x_shape[1] == 1 and c.w_shape[0] == 1 and c.w_shape[2] != c.w_shape[3],
    ]
    for corner in corners:
        cfg = find(conv_configs(), corner)
        x, w, _, dy = cfg.arrays()
        dx, dw, _ = conv2d_backward(dy, x, w, **cfg.kwargs())
        assert corner(cfg) and dx.shape == x.shape and dw.shape == w.shape


@given(Y=tucker_tensors(3, 3, 2, 4, min_sigma=1e-2), seed=seeds(), lr_factor=st.floats(0.1, 2.5))
def test_descent_bound_check_on_tdlrt_steps(Y, seed, lr_factor):
    p = QuadraticRegression.random(Y.shape, 2 * math.prod(Y.shape), np.random.default_rng(seed))
    lr = lr_factor / p.smoothness
    Y1, report = tdlrt_step(Y, p.grad_callable, lr, tau=0.1, loss=p.loss_callable)
    G = p.gradient(Y.full())
    Y_hat1 = Y.full() - lr * subspace_projection(G, augmented_bases(Y, G)[0])
    # The space is the step's own: its truncation error is the step's η (to rounding).
    assert abs(np.linalg.norm(Y_hat1 - Y1.full()) - report.eta) <= 1e-12 * np.linalg.norm(Y_hat1)
    # ∇L is affine, so ‖∇L‖ on [Ŷ1, Y1] is at most its larger endpoint value.
    B = max(np.linalg.norm(p.gradient(Y_hat1)), np.linalg.norm(p.gradient(Y1.full())))
    args = (report.loss_before, report.loss_after, lr, report.proj_grad_norm, p.smoothness, B, report.eta)
    slack = descent_bound_check(*args)
    assert slack <= 1e-12
    # A loss after the step 1e-3 (relative) above the bound is reported as exactly that violation.
    scale = abs(report.loss_before) + lr * report.proj_grad_norm**2 + B * report.eta
    claimed = report.loss_after + (1e-3 - slack) * scale
    assert descent_bound_check(report.loss_before, claimed, *args[2:]) == pytest.approx(1e-3, rel=1e-6)


def test_descent_bound_check_rejects_bad_input():
    with pytest.raises(ValueError, match="finite"):
        descent_bound_check(1.0, np.nan, 0.1, 1.0, 1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match=">= 0"):
        descent_bound_check(1.0, 0.5, -0.1, 1.0, 1.0, 1.0, 0.0)
