"""Full SGD against TDLRT on MNIST LeNet5, measured on the whole parameter vector Θ.

    python validation/mnist_full_vs_tdlrt.py --out DIR [--quick] [--seed S]

Start: the trainer's factorized LeNet5 (:func:`tucker_ref.training.trainer.build_model`, init
rank 0.2 of the channel modes, float64); the full network starts from exactly the same
weights (conv1, conv2, fc1 set to the dense ``Y.full()`` of the Tucker / low-rank weights;
biases and fc2 are shared by construction, checked). Then ``STEPS`` plain-SGD steps
(momentum 0, ``s_steps = 1``, ``lr = λ = 0.01``, batch 128) with the trainer's update rules
(:func:`tucker_ref.training.methods.make_update_rule`: ``full``, and ``tdlrt`` with diagnostics
for each ``τ`` in ``TAUS``), every run fed the same mini-batches in the same order.

**Network level** (the object the bound of docs/theory.md speaks about). One TDLRT step of the
network is ``Θ_{k+1} = Θ_k − λΠ_kG_k − T_k`` with ``G_k = ∇L(Θ_k)`` on the batch, ``Π_k``
block-diagonal (the projection onto ``⊗_i span Û_i`` on each factorized weight, the identity on
biases and fc2) and ``T_k`` the truncation, ``‖T_k‖ = η_k``; full SGD is
``Θ^full_{k+1} = Θ^full_k − λG^full_k``. With ``Δ_k = Θ^full_k − Θ_k`` (all parameters),

    Δ_{k+1} = [Δ_k − λ(G^full_k − G_k)] − λ(I − Π_k)G_k + T_k,

so, with ``e_k = ‖Δ_k‖``, ``r_k = ‖(I − Π_k)G_k‖`` and ``η_k`` combined over the layers as
root-sum-of-squares (the blocks are orthogonal) and the measured amplification
``a_k = ‖Δ_k − λ(G^full_k − G_k)‖ / e_k`` (both gradients on the same batch),

    e_{k+1} ≤ a_k e_k + λ r_k + η_k          (the triangle inequality: exact)

is asserted at every step up to a rounding margin ``MARGIN·s_k`` with
``s_k = ‖Θ^full_k‖ + ‖Θ_k‖ + ‖Θ^full_{k+1}‖ + ‖Θ_{k+1}‖ + λ(‖G^full_k‖ + ‖G_k‖)``: every term is
a norm of a vector computed from stored parameters and gradients, each entry rounded
relative to the parameter or gradient it comes from, so the computed sides differ from the
exact ones by a few ``eps·s_k`` (``eps = 2.2e-16``); ``MARGIN = 1e-12`` leaves a factor of
``~4500`` and the measured excess is reported. Since ``e_0 = 0``, unrolling gives
``e_k ≤ E_k = Σ_{j<k} (∏_{j<i<k} a_i)(λ r_j + η_j)``. ``a_k ≤ 1 + λL̂_k`` with the secant
``L̂_k = ‖G^full_k − G_k‖ / e_k``; the script reports ``∏ a_i`` against ``∏(1 + λL̂_i)``, the
factor-1 envelope ``E¹_k = Σ_{j<k}(λ r_j + η_j)`` (the bound for a convex loss with
``λ ≤ 2/L``) and the first step it is exceeded, and the envelope with the constant factor
``1 + λ max L̂``.

**Coupling, per layer.** For each layer ℓ (weight and bias; conv1, conv2, fc1, fc2) the
gradient at the mixed point ``M_ℓ`` (layer ℓ from the full run, every other parameter from
TDLRT) splits the layer's part of the recursion:

    Δ^ℓ_{k+1} = [Δ^ℓ_k − λ(G^ℓ(M_ℓ) − G^ℓ(Θ_k))] − λ(G^ℓ(Θ^full_k) − G^ℓ(M_ℓ)) − λ(I − Π)G^ℓ_k + T^ℓ_k,

an own amplification ``a^ℓ_k = ‖Δ^ℓ_k − λ(G^ℓ(M_ℓ) − G^ℓ(Θ_k))‖ / e^ℓ_k`` and a coupling term
``c^ℓ_k = λ‖G^ℓ(Θ^full_k) − G^ℓ(M_ℓ)‖`` (the other layers differ between the runs). Unrolled
with ``a^ℓ`` this gives the layer's own envelope ``O^ℓ`` (from ``λr^ℓ + η^ℓ``) and its coupling
envelope ``C^ℓ`` with ``e^ℓ ≤ O^ℓ + C^ℓ`` (checked each step, same margin); the share
``C^ℓ/(O^ℓ + C^ℓ)`` attributes the error. The per-layer factor-1 envelope
``Σ(λr^ℓ + η^ℓ)`` is kept as a **diagnostic** only: no per-layer bound with factor 1 follows
from anything in the network.

**Distance to the continuous flow.** A small-λ reference: full SGD with ``SUBSTEPS`` Euler
substeps of ``λ/SUBSTEPS`` on each batch (the same batches), ``Θ^ref(t_k)``; reported are
``‖Θ^ref − Θ^full_k‖`` (the λ term of explicit Euler) and ``‖Θ^ref − Θ_k‖``. The reference's
own Euler error is about ``1/SUBSTEPS`` of the first.

The first step is exact: both runs see the same gradient and ``e_1² = λ²r_0² + η_0²``
(``Θ̂_1`` and ``Θ_1`` differ from ``Θ^full_1`` in orthogonal directions), checked to rounding.

Writes ``full_vs_tdlrt.csv`` (network level, one row per τ and step),
``full_vs_tdlrt_layers.csv`` (per layer: coupling attribution and the diagnostic),
``full_vs_tdlrt_final.csv`` (the tables at the last step), ``full_vs_tdlrt.json`` and
``full_vs_tdlrt.png``. ``--quick``: 5 steps, 2 τ values, 512 training images, 2 substeps.
"""

from __future__ import annotations

import one_blas_thread  # noqa: F401  (first: sets the BLAS thread count before NumPy loads)

import math
import time

import numpy as np
import mnist_network as net
from common import (
    new_figure,
    parse_args,
    print_table,
    save_figure,
    write_csv,
    write_json,
)

from tucker_ref.data import iterate_minibatches
from tucker_ref.nn.models import lenet5
from tucker_ref.training import TrainConfig
from tucker_ref.training.methods import make_update_rule
from tucker_ref.training.trainer import build_model, evaluate, load_data

LR = 0.01
BATCH = 128
INIT_RANK = 0.2
STEPS = 300
TAUS = (0.05, 0.2)
LAYERS = net.FACTORIZED
#: Euler substeps per batch of the small-λ reference (step ``λ/SUBSTEPS``).
SUBSTEPS = 10
#: Rounding margin of the recursion check, relative to ``s_k`` (module docstring).
MARGIN = 1e-12


def config_for(method: str, tau: float, quick: bool, seed: int) -> TrainConfig:
    """Plain SGD (``check_descent`` forces momentum 0 and float64), diagnostics for ``ε``."""
    return TrainConfig(method=method, lr=LR, tau=tau, batch_size=BATCH, init_rank=INIT_RANK, seed=seed,
                       check_descent=True, diagnostics=True, train_subset=512 if quick else None,
                       test_subset=100 if quick else None, plots=False, quiet=True).validated()


def full_model_from(factorized, seed: int):
    """The dense LeNet5 with every parameter equal to ``factorized``'s (factorized weights as ``Y.full()``)."""
    model = lenet5(dtype=np.float64, seed=seed)
    for name in LAYERS:
        model[name].weight = factorized[name].weight.full()
    for name, layer in factorized.named_layers():
        for pname, value in layer.parameters().items():
            if pname in ("weight", "bias") and not np.array_equal(getattr(model[name], pname), value):
                raise RuntimeError(f"{name}.{pname} differs between the full and the factorized start")
    return model


class _Tracker:
    """Running envelopes of one TDLRT run (one τ): network level and per layer."""

    def __init__(self):
        self.E = 0.0          # Σ_j (∏_{i>j} a_i)(λr_j + η_j)
        self.E1 = 0.0         # Σ_j (λr_j + η_j)
        self.prod_a = 1.0
        self.prod_bound = 1.0  # ∏ (1 + λL̂_i)
        self.first_exceeded = None
        self.own = {b: 0.0 for b in net.BLOCKS}
        self.coupling = {b: 0.0 for b in net.BLOCKS}
        self.diag = {b: 0.0 for b in net.BLOCKS}


def _amplification(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def network_step(k, tau, model, rule, x, y, theta_f, grad_f, theta_f1, probe, tracker):
    """One TDLRT step of ``model`` and its measurement against the full run (rows, layer rows)."""
    theta = net.parameters(model)
    loss = net.batch_loss(model, x, y)
    grad = net.gradient(model)
    delta = net.sub(theta_f, theta)
    e = net.norm(delta)
    dgrad = net.sub(grad_f, grad)
    d = net.norm(net.axpy(-LR, dgrad, delta))           # a_k e_k
    a = _amplification(d, e)
    L_hat = _amplification(net.norm(dgrad), e)
    # mixed points: layer b from the full run, every other parameter from TDLRT (before the step)
    mixed_grads = {}
    for b in net.BLOCKS:
        mixed = {key: (theta_f[key] if net.block_of(key) == b else value) for key, value in theta.items()}
        mixed_grads[b] = probe.loss_and_gradient(mixed, x, y)[1]
    reports = rule.step(model, LR, None)
    theta1 = net.parameters(model)
    delta1 = net.sub(theta_f1, theta1)
    e1 = net.norm(delta1)
    r = net.combined(reports, "residual_norm")
    eta = net.combined(reports, "eta")
    eps = net.combined(reports, "epsilon")
    bound = d + LR * r + eta
    scale = (net.norm(theta_f) + net.norm(theta) + net.norm(theta_f1) + net.norm(theta1)
             + LR * (net.norm(grad_f) + net.norm(grad)))
    t = tracker
    t.E = (a * t.E if t.E > 0 else 0.0) + LR * r + eta
    t.E1 += LR * r + eta
    if k > 1:
        t.prod_a *= a
        t.prod_bound *= 1 + LR * L_hat
    if t.first_exceeded is None and e1 > t.E1 * (1 + 1e-12):
        t.first_exceeded = k
    row = {"tau": tau, "step": k, "error": e1, "relative_error": e1 / net.norm(theta_f1),
           "a": a if k > 1 else math.nan, "L_hat": L_hat if k > 1 else math.nan,
           "residual": r, "eta": eta, "epsilon": eps, "bound": bound, "excess": e1 - bound, "margin": MARGIN * scale,
           "holds": int(e1 <= bound + MARGIN * scale), "envelope": t.E, "envelope_factor1": t.E1,
           "prod_a": t.prod_a, "prod_1_plus_lr_L": t.prod_bound,
           "first_step_prediction": math.hypot(LR * r, eta),
           "loss_tdlrt": loss, "ranks": "; ".join("x".join(map(str, reports[n]["ranks_after"])) for n in LAYERS)}
    layer_rows = []
    for b in net.BLOCKS:
        keys = net.block_keys(theta, b)
        rep = reports.get(b)
        r_b = float(rep["residual_norm"]) if rep else 0.0
        eta_b = float(rep["eta"]) if rep else 0.0
        eps_b = float(rep["epsilon"]) if rep else 0.0
        e_b = net.norm(delta, keys)
        own_vec = {kk: delta[kk] - LR * (mixed_grads[b][kk] - grad[kk]) for kk in keys}
        d_b = net.norm(own_vec)
        a_b = _amplification(d_b, e_b)
        c_b = LR * net.norm({kk: grad_f[kk] - mixed_grads[b][kk] for kk in keys})
        e_b1 = net.norm(delta1, keys)
        bound_b = d_b + c_b + LR * r_b + eta_b
        a_use = a_b if e_b > 0 else 0.0
        t.own[b] = a_use * t.own[b] + LR * r_b + eta_b
        t.coupling[b] = a_use * t.coupling[b] + c_b
        t.diag[b] += LR * r_b + eta_b
        layer_rows.append({"tau": tau, "step": k, "layer": b, "error": e_b1, "a_own": a_b if k > 1 else math.nan,
                           "coupling_term": c_b, "residual": r_b, "eta": eta_b, "epsilon": eps_b,
                           "holds": int(e_b1 <= bound_b + MARGIN * scale),
                           "own_envelope": t.own[b], "coupling_envelope": t.coupling[b],
                           "coupling_share": t.coupling[b] / max(t.own[b] + t.coupling[b], 1e-300),
                           "diagnostic_envelope_factor1": t.diag[b]})
    return row, layer_rows


def reference_substeps(probe, theta_ref: dict, x, y, substeps: int) -> dict:
    """``substeps`` Euler steps of ``λ/substeps`` of full SGD on the batch."""
    for _ in range(substeps):
        _, g = probe.loss_and_gradient(theta_ref, x, y)
        theta_ref = net.axpy(-LR / substeps, g, theta_ref)
    return theta_ref


def run(quick: bool, seed: int, steps: int, taus, substeps: int):
    """The full model, the small-λ reference and one TDLRT model per τ in lockstep."""
    configs = {tau: config_for("tdlrt", tau, quick, seed) for tau in taus}
    full_config = config_for("full", 0.1, quick, seed)
    train_set, test_set = load_data(full_config)
    tdlrt = {tau: build_model(c) for tau, c in configs.items()}
    full = full_model_from(next(iter(tdlrt.values())), seed)
    rules = {tau: make_update_rule(c) for tau, c in configs.items()}
    full_rule = make_update_rule(full_config)
    probe = net.Probe(seed)
    theta_ref = net.parameters(full)
    trackers = {tau: _Tracker() for tau in taus}
    rows, layer_rows = [], []
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])
    k = 0
    while k < steps:
        for x, y in iterate_minibatches(train_set, BATCH, rng):
            if k == steps:
                break
            k += 1
            theta_f = net.parameters(full)
            loss_full = net.batch_loss(full, x, y)
            grad_f = net.gradient(full)
            full_rule.step(full, LR, None)
            theta_f1 = net.parameters(full)
            theta_ref = reference_substeps(probe, theta_ref, x, y, substeps)
            dist_ref_full = net.norm(net.sub(theta_ref, theta_f1))
            for tau in taus:
                row, lrows = network_step(k, tau, tdlrt[tau], rules[tau], x, y, theta_f, grad_f, theta_f1, probe,
                                          trackers[tau])
                row["loss_full"] = loss_full
                row["distance_ref_full"] = dist_ref_full
                row["distance_ref_tdlrt"] = net.norm(net.sub(theta_ref, net.parameters(tdlrt[tau])))
                rows.append(row)
                layer_rows.extend(lrows)
    accuracy = {"full": evaluate(full, test_set)[1], **{f"tdlrt tau={tau:g}": evaluate(m, test_set)[1]
                                                        for tau, m in tdlrt.items()}}
    return rows, layer_rows, trackers, accuracy


def _stats(values) -> dict:
    v = np.array([x for x in values if np.isfinite(x)], dtype=np.float64)
    return {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()),
            "fraction_above_1": float(np.mean(v > 1))}


def network_summary(rows: list[dict], trackers: dict, taus) -> dict:
    out = {}
    for tau in taus:
        sel = [r for r in rows if r["tau"] == tau]
        last = sel[-1]
        L_max = max(r["L_hat"] for r in sel if np.isfinite(r["L_hat"]))
        # envelope with the constant factor 1 + λ max L̂ (the (1 + λL) recursion of docs/theory.md)
        E_L = 0.0
        for r in sel:
            E_L = (1 + LR * L_max) * E_L + LR * r["residual"] + r["eta"]
        excess = [r["excess"] / (r["margin"] / MARGIN) for r in sel]
        out[f"{tau:g}"] = {
            "recursion_holds_every_step": all(r["holds"] for r in sel),
            "recursion_max_excess_over_scale": float(max(excess)),
            "error": last["error"], "relative_error": last["relative_error"],
            "envelope": last["envelope"], "error_over_envelope": last["error"] / last["envelope"],
            "envelope_factor1": last["envelope_factor1"],
            "error_over_envelope_factor1": last["error"] / last["envelope_factor1"],
            "max_error_over_envelope_factor1": float(max(r["error"] / r["envelope_factor1"] for r in sel)),
            "first_step_factor1_exceeded": trackers[tau].first_exceeded,
            "envelope_const_L": E_L, "error_over_envelope_const_L": last["error"] / E_L,
            "a": _stats(r["a"] for r in sel), "L_hat": _stats(r["L_hat"] for r in sel),
            "prod_a": last["prod_a"], "prod_1_plus_lr_L": last["prod_1_plus_lr_L"],
            "one_plus_lr_L_max_power": (1 + LR * L_max) ** (len(sel) - 1),
            "sum_lr_residual": float(sum(LR * r["residual"] for r in sel)),
            "sum_lr_epsilon": float(sum(LR * r["epsilon"] for r in sel)),
            "sum_eta": float(sum(r["eta"] for r in sel)),
            "distance_ref_full": last["distance_ref_full"], "distance_ref_tdlrt": last["distance_ref_tdlrt"],
            "ranks": last["ranks"],
        }
    return out


def layer_table(layer_rows: list[dict], taus) -> list[dict]:
    last = max(r["step"] for r in layer_rows)
    table = []
    for tau in taus:
        for b in net.BLOCKS:
            r = next(r for r in layer_rows if r["tau"] == tau and r["layer"] == b and r["step"] == last)
            sel = [q for q in layer_rows if q["tau"] == tau and q["layer"] == b]
            table.append({"tau": tau, "layer": b, "error": r["error"], "own_envelope": r["own_envelope"],
                          "coupling_envelope": r["coupling_envelope"], "coupling_share": r["coupling_share"],
                          "error_over_own_plus_coupling": r["error"] / max(r["own_envelope"] + r["coupling_envelope"],
                                                                           1e-300),
                          "a_own_median": float(np.nanmedian([q["a_own"] for q in sel])),
                          "diagnostic_envelope_factor1": r["diagnostic_envelope_factor1"],
                          "diagnostic_error_over_factor1": r["error"] / r["diagnostic_envelope_factor1"]
                          if r["diagnostic_envelope_factor1"] > 0 else None,
                          "holds_every_step": int(all(q["holds"] for q in sel))})
    return table


def plot(rows, layer_rows, out, taus):
    fig, ax = new_figure(3, 2, size=(4.8, 3.6))
    colors = dict(zip(taus, ("tab:blue", "tab:orange", "tab:green", "tab:red")))
    for tau in taus:
        sel = [r for r in rows if r["tau"] == tau]
        s = [r["step"] for r in sel]
        c = colors[tau]
        ax[0].semilogy(s, [r["error"] for r in sel], color=c, label=f"e_k = ‖Θ^full − Θ‖, τ={tau:g}")
        ax[0].semilogy(s, [r["envelope"] for r in sel], color=c, ls="--", lw=0.8, label="E_k (measured a)")
        ax[0].semilogy(s, [r["envelope_factor1"] for r in sel], color=c, ls=":", lw=0.8, label="Σ(λr + η) (factor 1)")
        ax[1].plot(s, [r["a"] for r in sel], color=c, lw=0.6, label=f"a_k, τ={tau:g}")
        ax[1].plot(s, [1 + LR * r["L_hat"] for r in sel], color=c, ls=":", lw=0.6, label="1 + λL̂_k")
        ax[2].semilogy(s, [r["distance_ref_tdlrt"] for r in sel], color=c, label=f"‖Θ^ref − Θ_k‖, τ={tau:g}")
    s = [r["step"] for r in rows if r["tau"] == taus[0]]
    ax[2].semilogy(s, [r["distance_ref_full"] for r in rows if r["tau"] == taus[0]], color="k",
                   label="‖Θ^ref − Θ^full_k‖ (Euler, λ term)")
    ax[0].set(title="network: error against the recursion's envelopes", xlabel="step")
    ax[1].axhline(1, color="k", lw=0.5)
    ax[1].set(title="network amplification a_k and 1 + λL̂_k", xlabel="step")
    ax[2].set(title=f"distance to the small-λ reference (λ/{SUBSTEPS})", xlabel="step")
    styles = {"conv1": "-", "conv2": "--", "fc1": "-.", "fc2": ":"}
    for j, tau in enumerate(taus[:2]):
        for b in net.BLOCKS:
            sel = [r for r in layer_rows if r["tau"] == tau and r["layer"] == b]
            ax[3 + j].plot([r["step"] for r in sel], [r["coupling_share"] for r in sel], ls=styles[b], label=b)
        ax[3 + j].set(title=f"τ={tau:g}: coupling share C/(O + C) per layer", xlabel="step", ylim=(-0.02, 1.02))
    for b in net.BLOCKS[:3]:
        for tau in taus:
            sel = [r for r in layer_rows if r["tau"] == tau and r["layer"] == b]
            ax[5].semilogy([r["step"] for r in sel], [r["error"] / max(r["diagnostic_envelope_factor1"], 1e-300)
                                                      for r in sel], color=colors[tau], ls=styles[b],
                           lw=0.8, label=f"{b}, τ={tau:g}")
    ax[5].axhline(1, color="k", lw=0.5)
    ax[5].set(title="diagnostic: per-layer e^ℓ / Σ(λr^ℓ + η^ℓ) (no bound)", xlabel="step")
    for a in ax:
        a.legend(fontsize=6)
    return save_figure(fig, out, "full_vs_tdlrt")


def main(argv=None) -> dict:
    args = parse_args(__doc__, argv)
    steps, substeps = (5, 2) if args.quick else (STEPS, SUBSTEPS)
    start = time.perf_counter()
    rows, layer_rows, trackers, accuracy = run(args.quick, args.seed, steps, TAUS, substeps)
    network = network_summary(rows, trackers, TAUS)
    layers = layer_table(layer_rows, TAUS)
    first = [r for r in rows if r["step"] == 1]
    summary = {
        "settings": {"lr": LR, "batch_size": BATCH, "init_rank": INIT_RANK, "steps": steps, "taus": list(TAUS),
                     "seed": args.seed, "dtype": "float64", "adaptive_modes": "channel", "substeps": substeps,
                     "margin": MARGIN, "train_images": 512 if args.quick else 4000},
        "network": network,
        "layers": layers,
        "first_step_identity_max_rel_error": max(abs(r["error"] - r["first_step_prediction"])
                                                 / max(r["first_step_prediction"], 1e-300) for r in first),
        "containment_max_residual_over_epsilon": max(r["residual"] / r["epsilon"] for r in rows),
        "test_accuracy": accuracy,
        "final_batch_loss": {"full": rows[-1]["loss_full"],
                             **{f"tdlrt tau={tau:g}": [r for r in rows if r["tau"] == tau][-1]["loss_tdlrt"]
                                for tau in TAUS}},
        "wall_time_s": time.perf_counter() - start,
    }
    write_csv(rows, args.out / "full_vs_tdlrt.csv")
    write_csv(layer_rows, args.out / "full_vs_tdlrt_layers.csv")
    final_rows = [{"tau": float(t), **{k: v for k, v in d.items() if not isinstance(v, dict)}}
                  for t, d in network.items()]
    write_csv(final_rows, args.out / "full_vs_tdlrt_final.csv")
    write_csv(layers, args.out / "full_vs_tdlrt_final_layers.csv")
    write_json(summary, args.out / "full_vs_tdlrt.json")
    plot(rows, layer_rows, args.out, TAUS)
    print_table(final_rows, ["tau", "error", "envelope", "envelope_factor1", "error_over_envelope_factor1",
                             "first_step_factor1_exceeded", "prod_a", "prod_1_plus_lr_L", "distance_ref_full",
                             "distance_ref_tdlrt"])
    print_table(layers)
    print(f"  recursion e_(k+1) <= a_k e_k + λr_k + η_k at every step: "
          f"{ {t: d['recursion_holds_every_step'] for t, d in network.items()} }; first-step identity max rel. "
          f"error {summary['first_step_identity_max_rel_error']:.2e}; test accuracy {accuracy}; "
          f"wall {summary['wall_time_s']:.0f} s")
    return summary


if __name__ == "__main__":
    main()
