"""Approximation bound of TDLRT against the gradient flow, measured on a synthetic problem.

    python validation/approximation_bound.py --out DIR [--quick] [--seed S]

The bound (docs/theory.md §5; measured in docs/validation.md §1):
``‖W(t) − Y_k‖ ≲ c1 ε + c2 λ + c3 ϑ/λ`` at ``t = kλ``. Every experiment uses
:class:`common.KroneckerSumQuadratic` on ``8×8×8`` tensors,
``L(W) = ½⟨W, 𝓗W⟩ − ⟨B, W⟩`` with ``𝓗W = Σ_i W ×_i H_i``, ``H_i = blockdiag(H_i^a, 0)``
(``H_i^a`` random PSD ``7×7``, eigenvalues in ``[0, 2]``), whose gradient flow ``W(t)`` is known
in closed form, and the start ``Y0`` of multilinear rank ``(2, 2, 2)`` (core singular values
``1, 0.5`` normalised, factors in the first 7 coordinates). Final time ``T = 1``.

(1) ``B = 0``: the flow is ``W(t) = Y0 ×_i e^{−tH_i}``, of constant rank ``(2,2,2)``, and
    ``ε(Y) = 0`` at every ``Y``. Vary ``λ`` with no tolerance-driven truncation: TDLRT with the
    rank held at 2 (``tau = 0, rmax = 2``), TDLRT with ``tau = 1e-12`` (rank free), fixed-rank
    BUG and full SGD. Fit ``log error`` against ``log λ``: predicted slope 1.
(2) ``B = 0``, fixed ``λ``, absolute per-mode tolerance ``θ`` swept: the error at ``T`` against
    the measured ``Σ_k η_k`` (an upper envelope of the error against SGD; plus SGD's own error
    against the flow), and the a-priori ``T √d θ/λ``. No slope is asserted.
(3) ``B = ε N``: a planted normal component. ``N = e_8 ⊗ e_8 ⊗ e_8`` lies outside the block
    of every mode, so ``‖(I − P(Y))B‖ = ε`` exactly at every iterate and the flow moves along
    ``N`` as ``εtN``; a generic unit ``N`` (Gaussian) is run too. Fit the slope of the error in
    ``ε`` over the ``ε`` where ``εT ≥ 10×`` the ``ε = 0`` error: predicted 1; for the block ``N``
    the constant is predicted exactly: ``‖W(T) − Y_K‖² = e_0² + (εT)²``.
(4) The per-step recursion of docs/theory.md §5 along the generic-``N`` trajectory (``ε = 1e-2``):
    ``e_{k+1} ≤ (1 + λL) e_k + λ‖(I − Π_k)∇L(Y_k)‖ + η_k`` (and with factor 1, valid here since
    the loss is convex and ``λ ≤ 2/L``), accumulated from ``e_0 = 0``, beside the measured
    ``e_k = ‖W_k − Y_k‖`` (``W_k`` full SGD from ``Y0``) and ``‖W(t_k) − Y_k‖``.

Writes ``approximation_{lr,theta,eps,recursion}.csv``, ``approximation_bound.json`` (fits and
configuration) and ``approximation_{lr,theta,eps,recursion}.png`` into ``--out``.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    KroneckerSumQuadratic,
    block_operator,
    fmt,
    loglog_slope,
    n_steps,
    new_figure,
    normal_tensor,
    parse_args,
    planted_point,
    print_table,
    report_fit,
    run_steps,
    save_figure,
    sgd_path,
    write_csv,
    write_json,
)

from tucker_ref.integrators.steps import fixed_rank_bug_step, tdlrt_step  # noqa: E402

SHAPE = (8, 8, 8)
BLOCK = (7, 7, 7)
CORE_SIGMAS = (1.0, 0.5)
RANK = len(CORE_SIGMAS)
T = 1.0
#: ``ε`` of the trajectory whose per-step recursion is plotted.
RECURSION_EPS = 1e-2


def setup(seed: int):
    """``(H, Y0, N_block, N_generic)`` for a seed (all experiments share them)."""
    rng = np.random.default_rng(seed)
    H = block_operator(rng, SHAPE, BLOCK)
    Y0 = planted_point(rng, SHAPE, CORE_SIGMAS, BLOCK)
    N_generic = rng.standard_normal(SHAPE)
    return H, Y0, normal_tensor(SHAPE, BLOCK), N_generic / np.linalg.norm(N_generic)


def tdlrt(problem, lr, **kwargs):
    """A ``Y -> (Y_new, StepReport)`` TDLRT step (k_step, dense-gradient callable, diagnostics on)."""
    return lambda Y: tdlrt_step(Y, problem.grad_callable, lr, **kwargs)


# ---------------------------------------------------------------------------------------
# (1) error against lr
# ---------------------------------------------------------------------------------------
def experiment_lr(H, Y0, lrs):
    problem = KroneckerSumQuadratic(H)
    W_T = problem.flow(Y0, T)
    methods = {
        "tdlrt rank held (tau=0, rmax=2)": lambda lr: tdlrt(problem, lr, tau=0.0, rmax=RANK),
        "tdlrt tau=1e-12 (rank free)": lambda lr: tdlrt(problem, lr, tau=1e-12),
        "fixed-rank BUG": lambda lr: (lambda Y: fixed_rank_bug_step(Y, problem.grad_callable, lr)),
    }
    rows = []
    for lr in lrs:
        K = n_steps(T, lr)
        W_K = sgd_path(problem, Y0, lr, K)[-1]
        rows.append({"method": "full SGD", "lr": lr, "steps": K, "error_flow": float(np.linalg.norm(W_T - W_K)),
                     "sum_eta": 0.0, "max_epsilon": 0.0, "ranks": SHAPE})
        for name, make in methods.items():
            Y, reports, _ = run_steps(make(lr), Y0, K)
            rows.append({"method": name, "lr": lr, "steps": K, "error_flow": float(np.linalg.norm(W_T - Y.full())),
                         "sum_eta": float(sum(r.eta for r in reports)),
                         "max_epsilon": float(max(r.epsilon for r in reports)), "ranks": Y.ranks})
    fits = {}
    for name in ["full SGD", *methods]:
        sel = [r for r in rows if r["method"] == name]
        slope, _ = loglog_slope([r["lr"] for r in sel], [r["error_flow"] for r in sel])
        fits[name] = report_fit(f"slope of error in lr, {name}", slope, 1.0)
    return problem, rows, fits


def plot_lr(rows, fits, out):
    fig, (ax,) = new_figure()
    for (name, fit), marker in zip(fits.items(), "osD^"):
        sel = [r for r in rows if r["method"] == name]
        ax.loglog([r["lr"] for r in sel], [r["error_flow"] for r in sel], marker + "-", ms=5, alpha=0.8,
                  label=f"{name}: slope {fmt(fit['measured'], 3)}")
    lr = np.array(sorted({r["lr"] for r in rows}))
    ref = max(r["error_flow"] for r in rows if r["lr"] == lr[-1])
    ax.loglog(lr, ref * lr / lr[-1], "k:", lw=1, label="slope 1 (predicted)")
    ax.set(xlabel="learning rate λ", ylabel=f"‖W(T) − Y_K‖,  T = {T:g}",
           title="(1) ε = 0, no tolerance truncation: error against λ")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return save_figure(fig, out, "approximation_lr")


# ---------------------------------------------------------------------------------------
# (2) error against theta
# ---------------------------------------------------------------------------------------
def experiment_theta(problem, Y0, lr, thetas):
    K = n_steps(T, lr)
    W_T = problem.flow(Y0, T)
    W_K = sgd_path(problem, Y0, lr, K)[-1]
    sgd_error = float(np.linalg.norm(W_T - W_K))
    d = len(SHAPE)
    rows = []
    for theta in thetas:
        Y, reports, _ = run_steps(tdlrt(problem, lr, theta=theta), Y0, K)
        rows.append({
            "theta": theta, "lr": lr, "steps": K,
            "error_flow": float(np.linalg.norm(W_T - Y.full())),
            "error_sgd": float(np.linalg.norm(W_K - Y.full())),
            "sum_eta": float(sum(r.eta for r in reports)),
            "sum_lr_residual": float(sum(lr * r.residual_norm for r in reports)),
            "apriori_T_sqrt_d_theta_over_lr": T * math.sqrt(d) * theta / lr,
            "sgd_error_flow": sgd_error,
            "max_rank": max(max(r.ranks_after) for r in reports),
            "ranks": Y.ranks,
        })
    for row in rows:
        # Convex loss, λ ≤ 2/L: the recursion has factor 1, so e_K ≤ Σ(λ‖(I−Π_k)∇L‖ + η_k);
        # 1e-12 absorbs the rounding of K ≤ 1000 steps on tensors of norm ≤ 1.
        row["envelope_holds"] = bool(row["error_sgd"] <= row["sum_eta"] + row["sum_lr_residual"] + 1e-12)
    return rows


def plot_theta(rows, out):
    fig, (ax, ax_env) = new_figure(ncols=2)
    th = [r["theta"] for r in rows]
    ax.loglog(th, [r["error_flow"] for r in rows], "o-", label="‖W(T) − Y_K‖ (flow)")
    ax.loglog(th, [r["error_sgd"] for r in rows], "s-", label="‖W_K − Y_K‖ (full SGD)")
    ax.loglog(th, [r["sum_eta"] for r in rows], "k--", label="Σ_k η_k (measured)")
    ax.loglog(th, [r["apriori_T_sqrt_d_theta_over_lr"] for r in rows], "k:", label="T√d θ/λ (a priori)")
    ax.axhline(rows[0]["sgd_error_flow"], color="gray", lw=0.8, label="‖W(T) − W_K‖ (SGD vs flow)")
    ax.set(xlabel="absolute per-mode tolerance θ", ylabel="error at T",
           title=f"(2) ε = 0, λ = {rows[0]['lr']:g}: error against θ")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    env = np.array([r["sum_eta"] for r in rows])
    ax_env.loglog(env, [r["error_flow"] for r in rows], "o", color="C0", label="‖W(T) − Y_K‖ (flow)")
    ax_env.loglog(env, [r["error_sgd"] for r in rows], "s", color="C1", label="‖W_K − Y_K‖ (full SGD)")
    grid = np.geomspace(env.min(), env.max(), 50)
    ax_env.loglog(grid, grid, "k--", label="envelope Σ η_k")
    ax_env.loglog(grid, grid + rows[0]["sgd_error_flow"], "k:", label="Σ η_k + ‖W(T) − W_K‖")
    ax_env.set(xlabel="Σ_k η_k (measured)", ylabel="error at T", title="the same runs against Σ η_k")
    ax_env.grid(alpha=0.3, which="both")
    ax_env.legend(fontsize="small")
    return save_figure(fig, out, "approximation_theta")


# ---------------------------------------------------------------------------------------
# (3) error against a planted normal component
# ---------------------------------------------------------------------------------------
def experiment_eps(H, Y0, lr, epsilons, normals):
    K = n_steps(T, lr)
    rows = []
    for kind, N in normals.items():
        for eps in epsilons:
            problem = KroneckerSumQuadratic(H, eps * N)
            Y, reports, _ = run_steps(tdlrt(problem, lr, tau=0.0, rmax=RANK), Y0, K)
            W_K = sgd_path(problem, Y0, lr, K)[-1]
            rows.append({"normal": kind, "eps": eps, "lr": lr, "steps": K,
                         "error_flow": float(np.linalg.norm(problem.flow(Y0, T) - Y.full())),
                         "error_sgd": float(np.linalg.norm(W_K - Y.full())),
                         "min_epsilon_k": float(min(r.epsilon for r in reports)),
                         "max_epsilon_k": float(max(r.epsilon for r in reports)),
                         "ranks": Y.ranks})
    fits = {}
    for kind in normals:
        sel = [r for r in rows if r["normal"] == kind]
        e0 = next(r["error_flow"] for r in sel if r["eps"] == 0)
        fit_rows = [r for r in sel if r["eps"] > 0 and r["eps"] * T >= 10 * e0]
        slope, _ = loglog_slope([r["eps"] for r in fit_rows], [r["error_flow"] for r in fit_rows])
        fits[kind] = report_fit(f"slope of error in eps, {kind} N", slope, 1.0,
                                f"fitted over eps >= {fmt(fit_rows[0]['eps'])} (eps*T >= 10 x error at eps=0)")
        if kind == "block":
            c1 = [math.sqrt(max(r["error_flow"] ** 2 - e0 ** 2, 0.0)) / r["eps"] for r in sel if r["eps"] > 0]
            fits["block_c1"] = report_fit("block N: c1 = sqrt(error^2 - e0^2)/eps, worst over eps",
                                          float(max(c1, key=lambda c: abs(c - T))), T, "predicted exactly T")
    return rows, fits


def plot_eps(rows, fits, out):
    fig, (ax,) = new_figure()
    for kind, marker in zip(("block", "generic"), "os"):
        sel = [r for r in rows if r["normal"] == kind and r["eps"] > 0]
        e0 = next(r["error_flow"] for r in rows if r["normal"] == kind and r["eps"] == 0)
        ax.loglog([r["eps"] for r in sel], [r["error_flow"] for r in sel], marker + "-",
                  label=f"{kind} N: slope {fmt(fits[kind]['measured'], 3)}")
        ax.axhline(e0, color="C0" if kind == "block" else "C1", lw=0.8, ls=":", label=f"{kind} N: error at ε = 0")
    eps = np.array(sorted({r["eps"] for r in rows if r["eps"] > 0}))
    e0 = next(r["error_flow"] for r in rows if r["normal"] == "block" and r["eps"] == 0)
    ax.loglog(eps, np.sqrt(e0 ** 2 + (eps * T) ** 2), "k--", lw=1, label="predicted (block): √(e0² + (εT)²)")
    ax.set(xlabel="planted normal component ε = ‖(I − P)B‖ (block N)", ylabel=f"‖W(T) − Y_K‖,  T = {T:g}",
           title=f"(3) rank held at {RANK}, λ = {rows[0]['lr']:g}: error against ε")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return save_figure(fig, out, "approximation_eps")


# ---------------------------------------------------------------------------------------
# (4) the per-step recursion
# ---------------------------------------------------------------------------------------
def experiment_recursion(H, Y0, lr, N):
    problem = KroneckerSumQuadratic(H, RECURSION_EPS * N)
    K = n_steps(T, lr)
    _, reports, path = run_steps(tdlrt(problem, lr, tau=0.0, rmax=RANK), Y0, K, keep_path=True)
    sgd = sgd_path(problem, Y0, lr, K)
    Lc = problem.smoothness
    rows = []
    bound, bound1 = 0.0, 0.0
    for k in range(K + 1):
        e = float(np.linalg.norm(sgd[k] - path[k]))
        rows.append({"step": k, "t": k * lr, "error_sgd": e,
                     "error_flow": float(np.linalg.norm(problem.flow(Y0, k * lr) - path[k])),
                     "bound_factor_1_plus_lrL": bound, "bound_factor_1": bound1,
                     "lr_residual": lr * reports[k].residual_norm if k < K else None,
                     "eta": reports[k].eta if k < K else None})
        if k < K:
            inc = lr * reports[k].residual_norm + reports[k].eta
            bound, bound1 = (1 + lr * Lc) * bound + inc, bound1 + inc
    # One-step form of the recursion (factor 1, from the measured e_k), checked at every step.
    step_ratio = max(rows[k + 1]["error_sgd"] / (rows[k]["error_sgd"] + rows[k]["lr_residual"] + rows[k]["eta"])
                     for k in range(K))
    first = math.hypot(rows[0]["lr_residual"], rows[0]["eta"])
    summary = {
        "eps": RECURSION_EPS, "lr": lr, "smoothness_L": Lc, "lr_le_2_over_L": bool(lr <= 2 / Lc),
        "max_one_step_ratio": step_ratio,
        "first_step_identity_rel_diff": abs(rows[1]["error_sgd"] - first) / first,
        "final_error_sgd": rows[-1]["error_sgd"], "final_bound_factor_1": rows[-1]["bound_factor_1"],
        "final_bound_factor_1_plus_lrL": rows[-1]["bound_factor_1_plus_lrL"],
    }
    print(f"  recursion (eps={RECURSION_EPS}, lr={lr}, L={fmt(Lc)}): max_k e_(k+1)/(e_k + lr r_k + eta_k) = "
          f"{fmt(step_ratio)} (must be <= 1); first step e_1 vs sqrt((lr r_0)^2 + eta_0^2): rel. diff "
          f"{fmt(summary['first_step_identity_rel_diff'])}; final e_K = {fmt(rows[-1]['error_sgd'])} <= "
          f"{fmt(rows[-1]['bound_factor_1'])} (factor 1) <= {fmt(rows[-1]['bound_factor_1_plus_lrL'])} (1 + lr L)")
    return rows, summary


def plot_recursion(rows, out):
    fig, (ax,) = new_figure(size=(6.4, 4.2))
    t = [r["t"] for r in rows]
    ax.semilogy(t[1:], [r["bound_factor_1_plus_lrL"] for r in rows[1:]], "k:", label="recursion, factor 1 + λL")
    ax.semilogy(t[1:], [r["bound_factor_1"] for r in rows[1:]], "k--", label="recursion, factor 1 (convex, λ ≤ 2/L)")
    ax.semilogy(t[1:], [r["error_sgd"] for r in rows[1:]], "-", lw=2, label="e_k = ‖W_k − Y_k‖ (full SGD)")
    ax.semilogy(t[1:], [r["error_flow"] for r in rows[1:]], "-", label="‖W(t_k) − Y_k‖ (flow)")
    ax.set(xlabel="t = kλ", ylabel="error",
           title=f"(4) per-step recursion of theory.md §5, generic N, ε = {RECURSION_EPS:g}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return save_figure(fig, out, "approximation_recursion")


def main(argv=None) -> dict:
    args = parse_args(__doc__, argv)
    start = time.perf_counter()
    H, Y0, N_block, N_generic = setup(args.seed)
    if args.quick:
        lrs, lr_fixed = [0.1, 0.05, 0.025], 0.05
        thetas = [1e-6, 1e-4, 1e-2]
        epsilons = [0.0, 1e-2, 1e-1, 1.0]
    else:
        lrs, lr_fixed = [0.1 / 2 ** k for k in range(7)], 0.01
        thetas = list(np.geomspace(1e-9, 1e-1, 9))
        epsilons = [0.0] + list(np.geomspace(1e-4, 1.0, 9))

    print("(1) error against lr (eps = 0, no tolerance truncation)")
    problem, rows_lr, fits_lr = experiment_lr(H, Y0, lrs)
    print_table(rows_lr, ["method", "lr", "steps", "error_flow", "sum_eta", "max_epsilon", "ranks"])
    print(f"\n(2) error against theta (eps = 0, lr = {lr_fixed})")
    rows_theta = experiment_theta(problem, Y0, lr_fixed, thetas)
    print_table(rows_theta, ["theta", "error_flow", "error_sgd", "sum_eta", "apriori_T_sqrt_d_theta_over_lr",
                             "max_rank", "ranks", "envelope_holds"])
    print(f"\n(3) error against a planted normal component (lr = {lr_fixed}, rank held at {RANK})")
    rows_eps, fits_eps = experiment_eps(H, Y0, lr_fixed, epsilons, {"block": N_block, "generic": N_generic})
    print_table(rows_eps, ["normal", "eps", "error_flow", "error_sgd", "min_epsilon_k", "max_epsilon_k", "ranks"])
    print("\n(4) per-step recursion")
    rows_rec, rec = experiment_recursion(H, Y0, lr_fixed, N_generic)

    out = args.out
    files = [write_csv(rows_lr, out / "approximation_lr.csv"), write_csv(rows_theta, out / "approximation_theta.csv"),
             write_csv(rows_eps, out / "approximation_eps.csv"),
             write_csv(rows_rec, out / "approximation_recursion.csv"),
             plot_lr(rows_lr, fits_lr, out), plot_theta(rows_theta, out), plot_eps(rows_eps, fits_eps, out),
             plot_recursion(rows_rec, out)]
    results = {
        "config": {"shape": SHAPE, "block": BLOCK, "core_sigmas": CORE_SIGMAS, "T": T, "seed": args.seed,
                   "quick": args.quick, "smoothness_L": problem.smoothness, "lrs": lrs, "lr_fixed": lr_fixed,
                   "thetas": thetas, "epsilons": epsilons},
        "slope_lr": fits_lr,
        "slope_eps": fits_eps,
        "theta_envelope_holds": all(r["envelope_holds"] for r in rows_theta),
        "recursion": rec,
        "seconds": time.perf_counter() - start,
    }
    files.append(write_json(results, out / "approximation_bound.json"))
    print(f"\nwrote {', '.join(p.name for p in files)} to {out} in {fmt(results['seconds'], 3)} s")
    return results


if __name__ == "__main__":
    main()
