"""Robustness to small core singular values (docs/theory.md §2, §3, §5): TDLRT's K-step form against the
direct factor scheme and naive factor training.

* The K-step TDLRT step never divides by a core singular value: with mode singular values
  down to 1e-12 its steps are finite and satisfy the descent and approximation bounds of
  docs/theory.md §5 with the same (σ-free) rounding margins.
* Explicit Euler on the factor equations carries ``Mat_i(C)^+``: its one-step error grows
  like ``σ_min^{-1}`` (fitted and printed) and a few steps diverge once ``σ_min ≤ λ/10``.
* Naive factor training moves the factor direction tied to ``σ_k`` at exactly ``σ_k²`` times
  TDLRT's rate.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from tucker_ref import TuckerTensor, multi_mode_product, tangent_projection, unfold
from tucker_ref.integrators.baselines import direct_euler_step, full_sgd_step, naive_factor_step
from tucker_ref.integrators.oracle import DenseGradient
from tucker_ref.integrators.steps import augmented_bases, tdlrt_step
from tucker_ref.integrators.substeps import k_gradient, k_parametrization, k_step
from tucker_ref.testing.problems import (
    QuadraticRegression,
    core_with_mode_spectrum,
    subspace_projection,
)
from tucker_ref.testing.strategies import DrawTally, random_orthonormal, seeds, tucker_example, tucker_tensors

EPS = np.finfo(np.float64).eps


def norm(x) -> float:
    return float(np.linalg.norm(x))


def rounding(Y: TuckerTensor, c: float = 10.0) -> float:
    """Relative rounding of a chain of ``d`` mode products with orthonormal ``n × k`` matrices
    (``~n·eps`` each), times a small count of such chains. No condition number: the K-step
    form never divides by a core singular value."""
    return c * Y.ndim * max(Y.shape) * EPS


# =======================================================================================
# TDLRT (K-step) with core singular values down to 1e-12
# =======================================================================================
def ill_conditioned_augmented_mode(Y: TuckerTensor, ratio: float = 1e-6):
    """A mode with ``2 ≤ r_i < n_i`` (augmented, with a spectrum) and ``σ_min(Mat_i(C))/‖C‖ < ratio``,
    or ``None``."""
    for i, (n, r) in enumerate(zip(Y.shape, Y.ranks)):
        if 2 <= r < n and np.linalg.svd(unfold(Y.core, i), compute_uv=False)[-1] < ratio * norm(Y.core):
            return i
    return None


#: The claim is about tiny core singular values in a mode the step actually moves.
TINY_SIGMA_DRAWS = DrawTally("a mode with 2 <= r_i < n_i and sigma_min/||C|| < 1e-6", minimum=0.6)


@TINY_SIGMA_DRAWS.require
@example(Y=tucker_example((6, 5, 4), (2, 2, 2), seed=31, min_sigma=1e-12, focus=0), seed=1, lr_factor=1.0, tau=0.0)
@example(Y=tucker_example((5, 5, 4, 3), (2, 3, 2, 2), seed=32, min_sigma=1e-12, focus=1), seed=2, lr_factor=2.0,
         tau=1e-3)
@example(Y=tucker_example((7, 6), (3, 3), seed=33, min_sigma=1e-12, spread=0.7, focus=0), seed=3, lr_factor=0.5,
         tau=0.1)
@settings(max_examples=max(5, settings.default.max_examples))
@given(Y=tucker_tensors(2, 4, 3, 5, min_sigma=1e-12, min_rank=2, spreads=st.floats(0.6, 1.0), focus=True),
       seed=seeds(), lr_factor=st.floats(0.05, 2.5), tau=st.sampled_from([0.0, 1e-8, 1e-3, 0.1]))
def test_k_step_is_finite_and_keeps_its_bounds_for_tiny_core_singular_values(Y, seed, lr_factor, tau):
    mode = ill_conditioned_augmented_mode(Y)
    TINY_SIGMA_DRAWS.record(mode is not None, None if mode is not None else f"ranks {Y.ranks} of shape {Y.shape}")
    rng = np.random.default_rng(seed)
    p = QuadraticRegression.random(Y.shape, int(rng.integers(1, 41)), rng)
    Ls = p.smoothness
    lr = lr_factor / Ls
    factor = 1.0 if lr <= 2 / Ls else 1.0 + lr * Ls  # convex quadratic
    W, Yk, e = Y.full(), Y, 0.0
    for k in range(4):
        G = p.gradient(Yk.full())
        Y1, report = tdlrt_step(Yk, p.grad_callable, lr, tau=tau, loss=p.loss_callable)
        assert np.all(np.isfinite(Y1.core)) and all(np.all(np.isfinite(U)) for U in Y1.factors)
        # V is the step's, and contains P(Y)G to σ-free rounding (P from row-space projectors).
        bases = augmented_bases(Yk, G)[0]
        Y_hat1 = Yk.full() - lr * subspace_projection(G, bases)
        tol = rounding(Yk)
        assert abs(norm(Y_hat1 - Y1.full()) - report.eta) <= tol * norm(Y_hat1)
        PG = tangent_projection(Yk, G)
        assert norm(PG - subspace_projection(PG, bases)) <= tol * norm(G)
        assert report.residual_norm <= norm(G - PG) + tol * norm(G)
        # Descent (quadratic: B = larger endpoint gradient norm on [Ŷ1, Y1]).
        B = max(norm(p.gradient(Y_hat1)), norm(p.gradient(Y1.full())))
        proj, eta = report.proj_grad_norm, report.eta
        margin = 1e-12 * (abs(report.loss_before) + lr * proj**2 + B * eta)
        assert report.loss_after <= report.loss_before - lr * (1 - lr * Ls / 2) * proj**2 + B * eta + margin
        # Approximation recursion against full SGD from the same start.
        W1, _ = full_sgd_step(W, p.gradient(W), lr)
        e1 = norm(W1 - Y1.full())
        margin = tol * (norm(W) + norm(Yk.full()) + lr * (norm(G) + norm(p.gradient(W))))
        assert e1 <= factor * e + lr * report.residual_norm + eta + margin
        if k == 0:
            assert abs(e1 - math.hypot(lr * report.residual_norm, eta)) <= tol * (norm(Y.full()) + lr * norm(G))
        W, Yk, e = W1, Y1, e1


# =======================================================================================
# direct explicit Euler on the factor equations: unstable once σ_min ≤ λ/10
# =======================================================================================
SIGMAS = 10.0 ** np.arange(-0.5, -8.01, -0.5)


def _sweep(seed: int, steps: int):
    """Errors ``‖W_K − Y_K‖`` against full SGD after ``steps`` steps, TDLRT vs direct Euler.

    Shape ``(6, 6, 6)``, ranks ``(3, 3, 3)``, a least-squares loss with ``m = 100`` rows and
    ``λ = 0.5/L``; the core has mode-0 singular values ``geomspace(1, σ, 3)`` and perfectly
    conditioned modes 1 and 2 (``problems.core_with_mode_spectrum``); the factors are fixed
    across the sweep. TDLRT runs at fixed rank (``τ = 0``, ``rmin = rmax = 3``)
    so both schemes approximate in the same manifold. A non-finite direct-Euler iterate
    (overflow, or a step that raised) counts as ``inf``.
    """
    shape, ranks = (6, 6, 6), (3, 3, 3)
    rng = np.random.default_rng(seed)
    p = QuadraticRegression.random(shape, 100, rng)
    lr = 0.5 / p.smoothness
    factors = [random_orthonormal(rng, n, r) for n, r in zip(shape, ranks)]
    rows = []
    for sigma in SIGMAS:
        core = core_with_mode_spectrum(np.random.default_rng(seed + 1000), np.geomspace(1.0, sigma, 3), m=3)
        Y0 = TuckerTensor(core, factors)
        W, Y_t, Y_d, diverged = Y0.full(), Y0, Y0, False
        for _ in range(steps):
            W, _ = full_sgd_step(W, p.gradient(W), lr)
            Y_t, _ = tdlrt_step(Y_t, p.grad_callable, lr, tau=0.0, rmin=3, rmax=3, diagnostics=False)
            if not diverged:
                with np.errstate(over="ignore", invalid="ignore"):
                    try:
                        Y_d, _ = direct_euler_step(Y_d, p.grad_callable, lr)
                    except (FloatingPointError, ValueError):  # overflow, or a non-finite gradient
                        diverged = True
        with np.errstate(over="ignore", invalid="ignore"):
            e_d = math.inf if diverged else norm(W - Y_d.full())
        rows.append((sigma, lr, norm(W - Y_t.full()), e_d if math.isfinite(e_d) else math.inf))
    return rows


def test_direct_euler_diverges_once_sigma_min_is_below_lr_over_10():
    """Assert: non-finite, or error ≥ 10× TDLRT's, after 3 steps whenever ``σ_min ≤ λ/10``.

    Also fits the exponent of the one-step error in ``σ_min``: the cross term
    ``λ² δC ×_0 δU_0`` of ``(C − λδC) ×_0 (U_0 − λδU_0)`` has ``‖δU_0‖ ∝ 1/σ_min``, so in the
    unstable regime (``σ_min ≤ λ/100``) the one-step error is ``∝ σ_min^{-1}``; the fitted
    slope must be within 5 % of −1.
    """
    for seed in (0, 1):
        rows3 = _sweep(seed, steps=3)
        print(f"\nseed {seed}: sigma_min, lr/sigma_min, TDLRT error, direct Euler error (3 steps)")
        for sigma, lr, e_t, e_d in rows3:
            print(f"  {sigma:8.1e} {lr / sigma:9.1e} {e_t:10.3e} {e_d:10.3e}")
            if sigma <= lr / 10:
                assert not math.isfinite(e_d) or e_d >= 10 * e_t
        rows1 = _sweep(seed, steps=1)
        pts = [(s, e_d) for s, lr, _, e_d in rows1 if s <= lr / 100 and math.isfinite(e_d)]
        slope = np.polyfit(np.log([s for s, _ in pts]), np.log([e for _, e in pts]), 1)[0]
        print(f"  one-step direct Euler error ~ sigma_min^{slope:.3f} (sigma_min <= lr/100)")
        assert abs(slope + 1) <= 0.05


# =======================================================================================
# naive factor training: the direction tied to σ_k moves σ_k² times as fast as TDLRT's
# =======================================================================================
@given(Y=tucker_tensors(2, 4, 2, 6, min_sigma=1e-4), seed=seeds(), lr=st.floats(1e-3, 1.0))
def test_naive_factor_rate_is_sigma_squared_times_tdlrt(Y, seed, lr):
    """Exact setting. Take a gradient orthogonal to ``span U_0`` in mode 0,
    ``G = Z ×_0 (I − U_0U_0^T)``: then ``G ×_j U_j^T = 0`` and ``N_j = 0`` for ``j ≠ 0``, so only
    ``U_0`` moves, and ``N_0 ⊥ span U_0``. With ``Mat_0(C) = Σ_k σ_k p_k r_k^T`` (the
    K-parametrization's ``S = PΣ``, ``Q = R``), the direction tied to ``σ_k`` is ``U_0 p_k``:

    * naive: ``U_0' p_k = U_0 p_k − λ σ_k N_0 r_k``  (``∇_U L = N_0 Mat_0(C)^T``);
    * TDLRT: ``K^1 e_k = σ_k U_0 p_k − λ N_0 r_k``  (``∇_K L = N_0 Q``).

    Both displacements are orthogonal to ``span U_0``, so the tangent of the angle between
    each vector and ``span U_0`` is ``λσ_k‖N_0 r_k‖`` (naive) and ``λ‖N_0 r_k‖/σ_k`` (TDLRT):
    their ratio is exactly ``σ_k²`` (absolute singular values; the cores here have
    ``‖C‖ = 10^{±2}`` and ``σ_k/σ_max ≥ 1e-4``, so ``σ_k`` ranges over ~1e-6 … 1e2). Measuring
    "the direction tied to ``σ_k``" is itself conditioned like ``(σ_max/σ_k)²`` (see the
    tolerance), which is why the relative spread stops at 1e-4.
    """
    n0, r0 = Y.shape[0], Y.ranks[0]
    assume(r0 < n0)
    U = Y.factors[0]
    Z = np.random.default_rng(seed).standard_normal(Y.shape)
    G = multi_mode_product(Z, [np.eye(n0) - U @ U.T])
    N = DenseGradient(G, Y).mode_partial_gradient(0)
    Q, S, _ = k_parametrization(Y, 0)
    K1 = k_step(Y, 0, k_gradient(N, Q), lr)
    Y_naive, _ = naive_factor_step(Y, G, lr)
    # Only U_0 moved (the other gradients vanish to rounding).
    assert norm(Y_naive.core - Y.core) <= rounding(Y) * lr * norm(G)
    for U_old, U_new in zip(Y.factors[1:], Y_naive.factors[1:]):
        assert norm(U_new - U_old) <= rounding(Y) * lr * norm(G) * norm(Y.core)

    def tan_angle(x):
        """``tan ∠(x, span U)`` and its relative rounding sensitivity (``‖x‖`` over the smaller of
        the two parts: the cancellation in ``x − UU^Tx`` and in ``U^Tx``)."""
        inside = U.T @ x
        outside = norm(x - U @ inside)
        return outside / norm(inside), norm(x) * (1 / outside + 1 / norm(inside))

    for k in range(r0):
        sigma = norm(S[:, k])
        p_k = S[:, k] / sigma
        moved = norm(N @ Q[:, k])
        assume(moved > 1e-3 * norm(N))  # the direction must actually be pushed
        t_naive, sens_naive = tan_angle(Y_naive.factors[0] @ p_k)
        t_tdlrt, sens_tdlrt = tan_angle(K1[:, k])
        # Plus the SVD: p_k is known to eps·σ_max/σ_k, and the naive update weighs that error
        # by σ_max against σ_k (Mat_0(C)^T p_k), so the measured rate carries eps·(σ_max/σ_k)².
        sens_svd = (norm(S[:, 0]) / sigma) ** 2
        assert abs(t_naive / t_tdlrt / sigma**2 - 1) <= rounding(Y) * (sens_naive + sens_tdlrt + sens_svd)
