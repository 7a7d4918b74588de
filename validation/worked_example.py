"""One TDLRT step worked by hand: every intermediate of docs/algorithms.md §1–§3, printed with 4 significant digits.

    python validation/worked_example.py --out DIR [--quick] [--seed S]

Problem: ``L(W) = ½‖W − X‖²`` on ``6×5×5`` tensors (``∇L(W) = W − X``, smoothness ``L = 1``),
``X`` a Gaussian Tucker tensor of rank ``(2, 2, 2)`` plus Gaussian noise of entry size 0.05;
start ``Y0 = C0 ×_i U_i`` of multilinear rank ``(2, 2, 2)`` (Gaussian core, Haar factors, other
than those of ``X``); learning rate ``λ = 0.3``, relative tolerance ``τ = 0.15``. (A ``4×3×3``
tensor of rank ``(2, 2, 2)`` is too small: its augmented bases span every mode and the
truncation has nothing to drop.) The step is
composed from the public substeps (``k_parametrization``, ``k_gradient``, ``k_step``,
``augment_basis``, ``galerkin_step``, ``truncate_step``) in the order of
``docs/algorithms.md``, then checked against ``tdlrt_step`` (same ``Y1``, same ``η``).

Writes ``worked_example.txt`` (the printed output), ``worked_example.json`` (the scalar
results) and ``worked_example.png`` (singular values of ``Mat_i(Ĉ1)`` against ``ϑ``) into
``--out``. ``--quick`` changes nothing (the example is already tiny); it is accepted so that
every script has the same command line.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fmt, new_figure, parse_args, save_figure, write_json  # noqa: E402

from tucker_ref.integrators.oracle import DenseGradient  # noqa: E402
from tucker_ref.integrators.steps import tdlrt_step  # noqa: E402
from tucker_ref.integrators.substeps import (  # noqa: E402
    augment_basis,
    galerkin_step,
    k_gradient,
    k_parametrization,
    k_step,
    truncate_step,
)
from tucker_ref.manifold import normal_component_norm, tangent_projection  # noqa: E402
from tucker_ref.testing.strategies import random_orthonormal  # noqa: E402
from tucker_ref.tucker import TuckerTensor, multi_mode_product, unfold  # noqa: E402

SHAPE = (6, 5, 5)
RANKS = (2, 2, 2)
NOISE = 0.05
LR = 0.3
TAU = 0.15


def show(name: str, A) -> None:
    """Print an array with 4 significant digits (3-way arrays slice by slice along mode 0)."""
    A = np.asarray(A)
    opts = {"formatter": {"float_kind": lambda x: f"{x: .4g}"}, "max_line_width": 110}
    if A.ndim <= 2:
        print(f"{name}  {A.shape}:\n{np.array2string(A, **opts)}")
        return
    print(f"{name}  {A.shape}, slices [k, :, :]:")
    for k in range(A.shape[0]):
        print(f"  [{k}]\n{np.array2string(A[k], **opts)}")


#: Checks that hold exactly in exact arithmetic print as "< 1e-12" below this, so that the
#: printed output (pasted into docs/algorithms.md) does not depend on the machine's rounding.
ROUNDING = 1e-12


def relation(x: float) -> str:
    """``"< 1e-12"`` for a check that is zero up to rounding, else ``"= x"`` with 4 digits."""
    return f"< {ROUNDING:g}" if abs(x) < ROUNDING else f"= {fmt(x)}"


def random_tucker(rng) -> TuckerTensor:
    """Gaussian core of shape ``RANKS``, Haar factors."""
    return TuckerTensor(rng.standard_normal(RANKS), [random_orthonormal(rng, n, r) for n, r in zip(SHAPE, RANKS)])


def loss(W, X) -> float:
    return 0.5 * float(np.sum((W - X) ** 2))


def worked_step(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    X = random_tucker(rng).full() + NOISE * rng.standard_normal(SHAPE)
    Y0 = random_tucker(rng)
    G = Y0.full() - X
    oracle = DenseGradient(G, Y0)
    d = Y0.ndim
    print(f"Problem: L(W) = 1/2 ||W - X||^2, X = rank-{RANKS} tensor + {NOISE} * noise, shape {SHAPE}, "
          f"Y0 of ranks {RANKS}, lr = {LR}, tau = {TAU}, seed {seed}")
    print(f"L(Y0) = {fmt(loss(Y0.full(), X))},  ||G|| = ||grad L(Y0)|| = {fmt(np.linalg.norm(G))}")
    show("C0", Y0.core)
    for i, U in enumerate(Y0.factors):
        show(f"U_{i}", U)

    print("\n== Step 1: per mode, K-parametrization, K-step and augmentation (all from C0, U^0) ==")
    U_hats, M_hats = [], []
    for i, U in enumerate(Y0.factors):
        print(f"\n-- mode {i} --")
        Q, S, K = k_parametrization(Y0, i)
        N = oracle.mode_partial_gradient(i)
        grad_K = k_gradient(N, Q)
        K1 = k_step(Y0, i, grad_K, LR)
        U_hat, M_hat = augment_basis(U, grad_K)
        show(f"Q_{i} (row space of Mat_{i}(C0))", Q)
        show(f"S_{i} = Mat_{i}(C0) Q_{i}", S)
        print(f"check ||Mat_{i}(C0) - S_{i} Q_{i}^T|| {relation(np.linalg.norm(unfold(Y0.core, i) - S @ Q.T))}")
        show(f"K_{i} = U_{i} S_{i}", K)
        show(f"N_{i} = Mat_{i}(G x_(j!={i}) U_j^T)", N)
        show(f"grad_K_{i} = N_{i} Q_{i}", grad_K)
        show(f"K_{i}^1 = K_{i} - lr grad_K_{i}", K1)
        show(f"U_hat_{i} = [U_{i}, orth((I - U U^T) grad_K_{i})]", U_hat)
        proj = U_hat @ U_hat.T
        print(f"rank of U_hat_{i}: {U_hat.shape[1]} (at most min(n_{i}, 2 r_{i}) = {min(U.shape[0], 2 * U.shape[1])});"
              f" ||(I - U_hat U_hat^T) K_{i}^1|| {relation(np.linalg.norm(K1 - proj @ K1))}")
        show(f"M_hat_{i} = U_hat_{i}^T U_{i}", M_hat)
        U_hats.append(U_hat)
        M_hats.append(M_hat)

    C_hat0 = multi_mode_product(Y0.core, M_hats)
    print("\n== Augmented core: C_hat0 = C0 x_i M_hat_i (zero padding) ==")
    show("C_hat0", C_hat0)
    padding_error = np.linalg.norm(TuckerTensor(C_hat0, U_hats).full() - Y0.full())
    print(f"check ||C_hat0 x_i U_hat_i - Y0|| {relation(padding_error)}")

    print("\n== Step 2: Galerkin S-step on the augmented basis ==")
    grad_core = oracle.core_gradient(U_hats)
    C_hat1 = galerkin_step(C_hat0, grad_core, LR)
    show("G x_i U_hat_i^T (core gradient)", grad_core)
    show("C_hat1 = C_hat0 - lr G x_i U_hat_i^T", C_hat1)

    print("\n== Step 3: truncation, per mode tail <= theta = tau ||C_hat1|| ==")
    Y1, trunc = truncate_step(C_hat1, U_hats, tau=TAU)
    print(f"||C_hat1|| = {fmt(np.linalg.norm(C_hat1))}, theta = {fmt(trunc.threshold)}")
    for i in range(d):
        print(f"mode {i}: singular values of Mat_{i}(C_hat1) = {[fmt(s) for s in trunc.singular_values[i]]}; "
              f"chosen rank {trunc.ranks[i]}, tail {fmt(trunc.tails[i])}, clamps {trunc.clamps[i] or 'none'}")
    show("C1", Y1.core)
    for i, U in enumerate(Y1.factors):
        show(f"U_{i}^1 = U_hat_{i} P_{i}[:, :r_{i}]", U)
    Y_hat1 = TuckerTensor(C_hat1, U_hats).full()
    eta_direct = float(np.linalg.norm(Y_hat1 - Y1.full()))
    print(f"eta = ||Y_hat1 - Y1|| = {fmt(trunc.error)} (dense recomputation: difference "
          f"{relation(eta_direct - trunc.error)}); sqrt(sum tails^2) = {fmt(trunc.certificate)}; "
          f"sqrt({d}) theta = {fmt(np.sqrt(d) * trunc.threshold)}")

    print("\n== Descent and containment terms (docs/theory.md §3, §5) ==")
    Lc = 1.0  # smoothness of 1/2 ||W - X||^2
    proj_grad = float(np.linalg.norm(grad_core))
    residual = float(np.linalg.norm(G - TuckerTensor(grad_core, U_hats).full()))
    PG = tangent_projection(Y0, G)
    tangent = float(np.linalg.norm(PG))
    containment = float(np.linalg.norm(PG - multi_mode_product(multi_mode_product(PG, U_hats, transpose=True), U_hats)))
    eps = normal_component_norm(Y0, G)
    # ∇L is affine here, so max(‖∇L(Ŷ1)‖, ‖∇L(Y1)‖) bounds it on the segment [Ŷ1, Y1].
    B = max(float(np.linalg.norm(Y_hat1 - X)), float(np.linalg.norm(Y1.full() - X)))
    L0, L_hat1, L1 = loss(Y0.full(), X), loss(Y_hat1, X), loss(Y1.full(), X)
    decrease = LR * (1 - LR * Lc / 2) * proj_grad ** 2
    bound = L0 - decrease + B * trunc.error
    print(f"containment: ||(I - Pi) P(Y0) G|| {relation(containment)} (P(Y0)G lies in V = (x)_i span U_hat_i)")
    print(f"||P(Y0) G|| = {fmt(tangent)} <= ||Pi G|| = {fmt(proj_grad)}")
    print(f"eps = ||(I - P(Y0)) G|| = {fmt(eps)} >= ||(I - Pi) G|| = {fmt(residual)}")
    print(f"L(Y0) = {fmt(L0)}, L(Y_hat1) = {fmt(L_hat1)}, L(Y1) = {fmt(L1)}")
    print(f"lr (1 - lr L/2) ||Pi G||^2 = {fmt(decrease)}, B = {fmt(B)}, B eta = {fmt(B * trunc.error)}")
    print(f"descent bound: L(Y1) = {fmt(L1)} <= L(Y0) - lr (1 - lr L/2) ||Pi G||^2 + B eta = {fmt(bound)}")

    print("\n== The same step through tdlrt_step ==")
    Y1_step, report = tdlrt_step(Y0, G, LR, tau=TAU, loss=lambda P: loss(P.full(), X))
    diff = float(np.linalg.norm(Y1_step.full() - Y1.full()))
    print(f"||Y1(tdlrt_step) - Y1(substeps)|| {relation(diff)}; report: ranks {report.ranks_before} -> "
          f"{report.ranks_augmented} -> {report.ranks_after}, eta {fmt(report.eta)}, "
          f"proj_grad_norm {fmt(report.proj_grad_norm)}, epsilon {fmt(report.epsilon)}, "
          f"residual_norm {fmt(report.residual_norm)}, loss {fmt(report.loss_before)} -> {fmt(report.loss_after)}")
    return {
        "seed": seed, "shape": SHAPE, "ranks_before": Y0.ranks, "ranks_augmented": C_hat0.shape,
        "ranks_after": Y1.ranks, "threshold": trunc.threshold, "tails": trunc.tails, "eta": trunc.error,
        "singular_values": trunc.singular_values, "clamps": trunc.clamps,
        "proj_grad_norm": proj_grad, "tangent_grad_norm": tangent, "containment_residual": containment,
        "epsilon": eps, "residual_norm": residual,
        "loss_before": L0, "loss_hat1": L_hat1, "loss_after": L1, "descent_bound": bound, "B": B,
        "tdlrt_step_difference": diff,
    }


def plot_spectra(result, out):
    fig, axes = new_figure(ncols=len(result["singular_values"]), size=(3.2, 3.0))
    for i, (ax, s) in enumerate(zip(axes, result["singular_values"])):
        k = np.arange(1, len(s) + 1)
        ax.semilogy(k, s, "o", label="σ of Mat_i(Ĉ1)")
        tails = np.sqrt(np.cumsum(np.asarray(s)[::-1] ** 2))[::-1]
        ax.semilogy(k, tails, "s", mfc="none", label="tail from k on")
        ax.axhline(result["threshold"], color="k", ls="--", lw=1, label="ϑ = τ‖Ĉ1‖")
        ax.axvline(result["ranks_after"][i] + 0.5, color="C3", lw=1, label="chosen rank")
        ax.set(title=f"mode {i}", xlabel="k", xticks=k)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="x-small")
    return save_figure(fig, out, "worked_example")


def main(argv=None) -> dict:
    args = parse_args(__doc__, argv)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        result = worked_step(args.seed)
    text = buffer.getvalue()
    print(text, end="")
    (args.out / "worked_example.txt").write_text(text)
    write_json(result, args.out / "worked_example.json")
    plot_spectra(result, args.out)
    return result


if __name__ == "__main__":
    main()
