"""Robustness to small core singular values: TDLRT against the schemes that need ``Mat_i(C)^+``.

    python validation/robustness.py --out DIR [--quick] [--seed S]

Problem (:class:`common.KroneckerSumQuadratic`, ``8×8×8``): ``L(W) = ½⟨W, 𝓗W⟩ − ⟨B, W⟩`` with
``𝓗W = Σ_i W ×_i H_i`` (``H_i`` random PSD, eigenvalues in ``[0, 2]``) and a small generic
perturbation ``B = 10⁻² N`` (``N`` a Gaussian unit tensor), so that the flow stays close to,
but not on, the Tucker manifold (the setting of Kieri–Lubich–Walach's robustness examples).
Start ``Y0`` of multilinear rank ``(3, 3, 3)``: core unfoldings with singular values
``(1, √σ_min, σ_min)`` (normalised to ``‖C‖ = 1``; a rotated superdiagonal core, so every
unfolding has exactly that spectrum), Haar factors. ``σ_min`` runs over ``1 … 1e-12``.

(a) The error ``‖W(T) − Y_K‖`` (``T = 1``, exact flow, same ``λ`` for all) of: TDLRT
    ``k_step`` and ``augmented_gradient`` (rank held at 3: ``tau = 0, rmax = 3``), naive
    factor SGD, explicit Euler on the factor equations with ``Mat_i(C)^+`` (``direct_euler``,
    without and with re-orthonormalization) and Riemannian GD with HOSVD retraction. A run
    is stopped and marked *diverged* when a step raises (non-finite values) or
    ``‖Y_k‖ > 10⁶ ‖Y_0‖``.
(b) Containment at ``Y0`` (theory.md §3): ``‖(I − Π)P(Y0)G‖ / ‖P(Y0)G‖`` with ``Π`` the projection onto
    ``⊗_i span Û_i`` built by ``augment_basis`` from ``∇_{K_i}L`` (``k_step``) or from
    ``∇_{U_i}L`` (``augmented_gradient``), over many seeds per ``σ_min``; also ``‖(I − Π)G‖/ε``.
    The reference ``P(Y0)G`` is ``manifold.tangent_projection``, which assembles the factor
    terms with the row-space projector ``Q_iQ_i^T`` of ``Mat_i(C0)`` (accurate to ``eps`` at any
    conditioning; forming ``δU_i = … Mat_i(C)^+`` first would lose ``eps·cond``).
(c) Naive factor SGD against the projected flow (whose factor velocity is the K-step's): the
    rate at which the factor direction ``U_0 p_k`` tied to the core singular value ``σ_k``
    moves, ``‖(I − U_0U_0^T) ∇_{U_0}L p_k‖ / ‖δU_0 p_k‖`` (naive SGD moves ``U_0`` by
    ``−λ∇_{U_0}L``, ``substeps.u_gradient``; the projected flow by ``−λδU_0``, ``δU_0`` of
    ``manifold.tangent_vector``, ``p_k`` the left singular vectors of ``Mat_0(C)``), against
    the exact prediction ``σ_k²`` (``‖C‖``-normalised core).

Writes ``robustness_{error,containment,naive_rate}.csv``, ``robustness.json`` and
``robustness.png`` (three panels) into ``--out``.
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
    fmt,
    loglog_slope,
    n_steps,
    new_figure,
    parse_args,
    planted_point,
    print_table,
    random_psd,
    report_fit,
    save_figure,
    write_csv,
    write_json,
)

from tucker_ref.integrators.baselines import (  # noqa: E402
    direct_euler_step,
    naive_factor_step,
    riemannian_gd_step,
)
from tucker_ref.integrators.oracle import DenseGradient  # noqa: E402
from tucker_ref.integrators.steps import augmented_bases, tdlrt_step  # noqa: E402
from tucker_ref.testing.problems import subspace_projection  # noqa: E402
from tucker_ref.integrators.substeps import u_gradient  # noqa: E402
from tucker_ref.manifold import tangent_projection, tangent_vector  # noqa: E402
from tucker_ref.tucker import unfold  # noqa: E402

SHAPE = (8, 8, 8)
RANK = 3
T = 1.0
PERTURBATION = 1e-2
#: A run whose iterate grows beyond this factor times ``‖Y0‖`` is stopped as diverged.
DIVERGENCE_FACTOR = 1e6
#: Containment counts as lost when the relative residual exceeds this (rounding is ~1e-15).
CONTAINMENT_LOST = 1e-6


def setup(seed: int, sigma_min: float):
    """``(problem, Y0)``: the problem depends on ``seed`` only; ``Y0``'s core spectrum on ``sigma_min``."""
    rng = np.random.default_rng(seed)
    H = [random_psd(rng, n, 0.0, 2.0) for n in SHAPE]
    N = rng.standard_normal(SHAPE)
    problem = KroneckerSumQuadratic(H, PERTURBATION * N / np.linalg.norm(N))
    sigmas = [1.0, math.sqrt(sigma_min), sigma_min]
    return problem, planted_point(rng, SHAPE, sigmas, rotate_core=True)


def methods(problem, lr):
    """Name -> ``Y -> (Y_new, report)`` for every scheme of panel (a)."""
    g = problem.grad_callable
    return {
        "TDLRT k_step": lambda Y: tdlrt_step(Y, g, lr, tau=0.0, rmax=RANK, diagnostics=False),
        "TDLRT augmented_gradient": lambda Y: tdlrt_step(Y, g, lr, tau=0.0, rmax=RANK, variant="augmented_gradient",
                                                         diagnostics=False),
        "naive factor SGD": lambda Y: naive_factor_step(Y, g, lr),
        "direct Euler": lambda Y: direct_euler_step(Y, g, lr),
        "direct Euler + QR": lambda Y: direct_euler_step(Y, g, lr, reorthonormalize=True),
        "Riemannian GD (HOSVD)": lambda Y: riemannian_gd_step(Y, g, lr),
    }


def run_guarded(step, Y0, K):
    """``(Y_K or None, failed step or None, reason)``: stop at an exception or at divergence."""
    Y, limit = Y0, DIVERGENCE_FACTOR * Y0.norm()
    for k in range(K):
        try:
            with np.errstate(over="raise", invalid="raise"):
                Y, _ = step(Y)
        except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
            return None, k, type(exc).__name__
        if not Y.norm() <= limit:
            return None, k, f"norm > {DIVERGENCE_FACTOR:g} ||Y0||"
    return Y, None, ""


# ---------------------------------------------------------------------------------------
# (a) error at T
# ---------------------------------------------------------------------------------------
def experiment_error(seeds, sigmas, lr):
    K = n_steps(T, lr)
    rows = []
    for seed in seeds:
        for s in sigmas:
            problem, Y0 = setup(seed, s)
            W_T = problem.flow(Y0, T)
            W = Y0.full()
            for _ in range(K):
                W = W - lr * problem.gradient(W)
            rows.append({"sigma_min": s, "seed": seed, "method": "full SGD (reference)", "lr": lr,
                         "error": float(np.linalg.norm(W_T - W)), "diverged_at_step": "", "reason": ""})
            for name, step in methods(problem, lr).items():
                Y, failed, reason = run_guarded(step, Y0, K)
                rows.append({"sigma_min": s, "seed": seed, "method": name, "lr": lr,
                             "error": math.inf if Y is None else float(np.linalg.norm(W_T - Y.full())),
                             "diverged_at_step": "" if failed is None else failed, "reason": reason})
    return rows


# ---------------------------------------------------------------------------------------
# (b) containment at Y0
# ---------------------------------------------------------------------------------------
def experiment_containment(seeds, sigmas):
    rows = []
    for seed in seeds:
        for s in sigmas:
            problem, Y0 = setup(seed, s)
            G = problem.gradient(Y0)
            oracle = DenseGradient(G, Y0)
            PG = tangent_projection(Y0, G)
            norm_pg, eps = float(np.linalg.norm(PG)), float(np.linalg.norm(G - PG))
            for variant in ("k_step", "augmented_gradient"):
                bases = augmented_bases(Y0, oracle, variant)[0]
                rows.append({"sigma_min": s, "seed": seed, "variant": variant,
                             "augmented_ranks": tuple(B.shape[1] for B in bases),
                             "containment": float(np.linalg.norm(PG - subspace_projection(PG, bases))) / norm_pg,
                             "residual_over_eps": float(np.linalg.norm(G - subspace_projection(G, bases))) / eps})
    return rows


# ---------------------------------------------------------------------------------------
# (c) naive factor SGD: the rate of the direction tied to sigma_k
# ---------------------------------------------------------------------------------------
def experiment_naive_rate(seed, sigmas):
    rows = []
    for s in sigmas:
        problem, Y0 = setup(seed, s)
        U = Y0.factors[0]
        G = problem.gradient(Y0)
        # The naive step is U_0 <- U_0 - lr * u_gradient (baselines.naive_factor_step); the direction
        # is compared directly, since U_0 - (U_0 - lr*dU) would lose the O(lr*sigma_k) column to rounding.
        N = DenseGradient(G, Y0).mode_partial_gradient(0)
        dU_naive = u_gradient(N, Y0.core, 0)
        dU_flow = tangent_vector(Y0, G).dfactors[0]
        P, sv, _ = np.linalg.svd(unfold(Y0.core, 0), full_matrices=False)
        naive = np.linalg.norm((dU_naive - U @ (U.T @ dU_naive)) @ P, axis=0)
        flow = np.linalg.norm(dU_flow @ P, axis=0)
        # Rounding of the two measurements, relative to column p_k: N Mat_0(C)^T is formed from terms
        # of size ‖N‖σ_max, N Mat_0(C)^+ from terms of size ‖N‖/σ_min.
        rounding = np.finfo(np.float64).eps * np.linalg.norm(N, 2) * (sv[0] / naive + 1 / (sv[-1] * flow))
        for k in range(len(sv)):
            rows.append({"sigma_min": s, "k": k, "sigma_k": float(sv[k]), "rate_ratio": float(naive[k] / flow[k]),
                         "predicted_sigma_k_squared": float(sv[k] ** 2),
                         "relative_deviation": float(abs(naive[k] / flow[k] / sv[k] ** 2 - 1)),
                         "rounding_estimate": float(rounding[k])})
    return rows


def plot(rows_err, rows_con, rows_rate, out):
    fig, (ax_err, ax_con, ax_rate) = new_figure(ncols=3, size=(5.0, 4.2))
    names = list(dict.fromkeys(r["method"] for r in rows_err))
    finite = [r["error"] for r in rows_err if math.isfinite(r["error"])]
    top = 10 * max(finite)
    for name, marker in zip(names, ["o", "s", "^", "D", "v", "x", "P"]):
        sel = [r for r in rows_err if r["method"] == name]
        sig = sorted({r["sigma_min"] for r in sel}, reverse=True)
        med = [float(np.median([r["error"] for r in sel if r["sigma_min"] == s])) for s in sig]
        shown = [m if math.isfinite(m) else top for m in med]
        style = dict(ls=":" if name.startswith("full") else "-", alpha=0.85)
        ax_err.loglog(sig, shown, marker=marker, ms=5, label=name, **style)
        for s, m in zip(sig, med):
            if not math.isfinite(m):
                ax_err.loglog([s], [top], marker="X", color="red", ms=8, ls="none")
    ax_err.axhline(top, color="red", lw=0.6, ls="--")
    ax_err.text(1.0, top * 0.4, "diverged (X: median over seeds)", color="red", fontsize="x-small")
    ax_err.set(xlabel="σ_min of the core unfoldings of Y0", ylabel="‖W(T) − Y_K‖  (median over seeds)",
               title=f"(a) error at T = {T:g}, λ = {rows_err[0]['lr']:g}")
    ax_err.invert_xaxis()
    ax_err.grid(alpha=0.3, which="both")
    ax_err.legend(fontsize="x-small")

    floor = 1e-17
    for variant, marker, color in (("k_step", "o", "C0"), ("augmented_gradient", "s", "C3")):
        sel = [r for r in rows_con if r["variant"] == variant]
        sig = sorted({r["sigma_min"] for r in sel}, reverse=True)
        ax_con.loglog([r["sigma_min"] for r in sel], [max(r["containment"], floor) for r in sel], marker,
                      color=color, alpha=0.25, ms=4)
        med = [max(float(np.median([r["containment"] for r in sel if r["sigma_min"] == s])), floor) for s in sig]
        ax_con.loglog(sig, med, marker + "-", color=color, label=f"{variant} (median)")
    ax_con.axhline(CONTAINMENT_LOST, color="k", ls="--", lw=0.8, label=f"lost above {CONTAINMENT_LOST:g}")
    ax_con.set(xlabel="σ_min", ylabel="‖(I − Π)P(Y0)∇L‖ / ‖P(Y0)∇L‖", title="(b) containment at Y0")
    ax_con.invert_xaxis()
    ax_con.grid(alpha=0.3, which="both")
    ax_con.legend(fontsize="x-small")

    sig = np.array([r["sigma_k"] for r in rows_rate])
    ax_rate.loglog(sig, [r["rate_ratio"] for r in rows_rate], "o", label="measured (naive / projected flow)")
    grid = np.geomspace(sig.min(), sig.max(), 50)
    ax_rate.loglog(grid, grid ** 2, "k--", lw=1, label="σ_k² (predicted)")
    ax_rate.set(xlabel="core singular value σ_k (mode 0)", ylabel="rate ratio of the direction U_0 p_k",
                title="(c) naive factor SGD: speed of a direction")
    ax_rate.invert_xaxis()
    ax_rate.grid(alpha=0.3, which="both")
    ax_rate.legend(fontsize="x-small")
    return save_figure(fig, out, "robustness")


def main(argv=None) -> dict:
    args = parse_args(__doc__, argv)
    start = time.perf_counter()
    if args.quick:
        sigmas, lr = [1.0, 1e-4, 1e-8, 1e-12], 0.05
        seeds_err, seeds_con = [args.seed], [args.seed + k for k in range(5)]
    else:
        sigmas, lr = [1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-6, 1e-8, 1e-10, 1e-12], 0.01
        seeds_err, seeds_con = [args.seed + k for k in range(3)], [args.seed + k for k in range(20)]

    print(f"(a) error at T = {T} against sigma_min (lr = {lr}, seeds {seeds_err})")
    rows_err = experiment_error(seeds_err, sigmas, lr)
    print_table(rows_err, ["sigma_min", "seed", "method", "error", "diverged_at_step", "reason"])
    print(f"\n(b) containment at Y0 ({len(seeds_con)} seeds per sigma_min)")
    rows_con = experiment_containment(seeds_con, sigmas)
    summary_con = []
    for variant in ("k_step", "augmented_gradient"):
        for s in sigmas:
            sel = [r for r in rows_con if r["variant"] == variant and r["sigma_min"] == s]
            summary_con.append({"variant": variant, "sigma_min": s,
                                "median_containment": float(np.median([r["containment"] for r in sel])),
                                "max_containment": float(max(r["containment"] for r in sel)),
                                "fraction_lost": float(np.mean([r["containment"] > CONTAINMENT_LOST for r in sel])),
                                "max_residual_over_eps": float(max(r["residual_over_eps"] for r in sel))})
    print_table(summary_con)
    growth = {"k_step_max_containment": report_fit(
        "k_step: max containment residual over all sigma_min and seeds",
        max(r["containment"] for r in rows_con if r["variant"] == "k_step"), 0.0, "exact; rounding only")}
    small = [r for r in summary_con if r["variant"] == "augmented_gradient" and r["sigma_min"] <= 1e-4]
    slope, _ = loglog_slope([r["sigma_min"] for r in small], [r["median_containment"] for r in small])
    growth["median_containment"] = report_fit(
        "slope of the median augmented_gradient containment residual in sigma_min (sigma_min <= 1e-4)", slope, -1.0,
        "rounding model eps/sigma_min, not a theorem")
    print("\n(c) naive factor SGD: rate of the direction tied to sigma_k relative to the projected flow")
    rows_rate = experiment_naive_rate(args.seed, sigmas)
    worst = max(r["relative_deviation"] for r in rows_rate)
    worst_scaled = max(r["relative_deviation"] / r["rounding_estimate"] for r in rows_rate)
    fit_rate = report_fit("max_k |ratio / sigma_k^2 - 1|", worst, 0.0, "exact identity up to rounding")
    fit_rate["max_deviation_over_rounding_estimate"] = worst_scaled
    print(f"  max_k |ratio / sigma_k^2 - 1| / rounding estimate = {fmt(worst_scaled)} "
          "(O(1) or below: the deviation is rounding in the naive direction)")
    smallest = min(rows_rate, key=lambda r: r["sigma_k"])
    print(f"  smallest sigma_k = {fmt(smallest['sigma_k'])}: ratio {fmt(smallest['rate_ratio'])}, "
          f"sigma_k^2 = {fmt(smallest['predicted_sigma_k_squared'])}")

    medians = {}
    for name in dict.fromkeys(r["method"] for r in rows_err):
        medians[name] = {fmt(s): float(np.median([r["error"] for r in rows_err if r["method"] == name
                                                  and r["sigma_min"] == s])) for s in sigmas}
    k_errors = [v for v in medians["TDLRT k_step"].values()]
    flat = max(k_errors) / min(k_errors)
    print(f"\n  TDLRT k_step: max/min of the median error over sigma_min = {fmt(flat)} (flat: predicted ~1)")
    first_div = {}
    for name in medians:
        div = [s for s in sigmas if not math.isfinite(medians[name][fmt(s)])]
        first_div[name] = max(div) if div else None
        print(f"  {name}: median error diverges for sigma_min <= {fmt(first_div[name])}" if div else
              f"  {name}: finite at every sigma_min, median error {fmt(min(medians[name].values()))} .. "
              f"{fmt(max(medians[name].values()))}")

    out = args.out
    files = [write_csv(rows_err, out / "robustness_error.csv"), write_csv(rows_con, out / "robustness_containment.csv"),
             write_csv(rows_rate, out / "robustness_naive_rate.csv"), plot(rows_err, rows_con, rows_rate, out)]
    results = {
        "config": {"shape": SHAPE, "rank": RANK, "T": T, "lr": lr, "perturbation": PERTURBATION, "sigmas": sigmas,
                   "seeds_error": seeds_err, "seeds_containment": seeds_con, "quick": args.quick,
                   "divergence_factor": DIVERGENCE_FACTOR, "containment_lost_above": CONTAINMENT_LOST},
        "median_error": medians,
        "k_step_max_over_min_error": flat,
        "first_sigma_min_with_divergence": first_div,
        "containment": summary_con,
        "containment_slope": growth,
        "naive_rate_max_relative_deviation": fit_rate,
        "seconds": time.perf_counter() - start,
    }
    files.append(write_json(results, out / "robustness.json"))
    print(f"\nwrote {', '.join(p.name for p in files)} to {out} in {fmt(results['seconds'], 3)} s")
    return results


if __name__ == "__main__":
    main()
