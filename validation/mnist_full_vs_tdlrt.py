"""Full SGD against TDLRT on MNIST LeNet5 from the same low-rank start and the same batches.

    python validation/mnist_full_vs_tdlrt.py --out DIR [--quick] [--seed S]

Start: the trainer's factorized LeNet5 (:func:`tucker_ref.training.trainer.build_model`, init
rank 0.2 of the channel modes, float64); the full network starts from exactly the same
weights (conv1, conv2, fc1 set to the dense ``Y.full()`` of the Tucker / low-rank weights;
biases and fc2 are shared by construction, checked). Then ``STEPS`` plain-SGD steps
(momentum 0, ``lr = 0.01``, batch 128) with the trainer's update rules
(:func:`tucker_ref.training.methods.make_update_rule`: ``full``, and ``tdlrt`` with
diagnostics for each ``τ`` in ``TAUS``), every run fed the same mini-batches in the same order.

Measured per factorized layer and step ``k``: ``e_k = ‖W_full,k − Y_k‖`` (and relative to
``‖W_full,k‖``), and from the TDLRT step reports ``ε_k = ‖(I − P(Y_k))∇L(Y_k)‖``,
``r_k = ‖(I − Π_k)∇L(Y_k)‖ ≤ ε_k`` and ``η_k``. Spec §4's recursion for one layer with the
loss fixed, ``e_{k+1} ≤ (1 + λL) e_k + λ r_k + η_k``, summed with factor 1 (a convex loss),
gives the envelope ``E_k = Σ_{j<k} (λ r_j + η_j)``; the figure shows ``e_k`` against ``E_k`` and
its parts ``Σ λ ε_j`` and ``Σ η_j``. In the network this is a heuristic, not a bound: the loss is
not convex, and after the first step the other layers differ between the two runs, so each
layer's gradient differs by more than the ``(1 + λL)`` term of its own weights. The first step
is exact: both runs see the same gradient, and ``e_1² = λ² r_0² + η_0²`` (``Ŷ1`` and ``Y1`` lie
in ``V``), checked to rounding.

Writes ``full_vs_tdlrt.csv`` (one row per τ, step, layer), ``full_vs_tdlrt_final.csv`` (the
table at the last step), ``full_vs_tdlrt.json`` and ``full_vs_tdlrt.png``. ``--quick``: 5
steps, 2 τ values, 512 training images, a few seconds.
"""

from __future__ import annotations

import one_blas_thread  # noqa: F401  (first: sets the BLAS thread count before NumPy loads)

import math
import time

import numpy as np
from common import (
    new_figure,
    parse_args,
    print_table,
    save_figure,
    write_csv,
    write_json,
)
from mnist_descent import batch_loss

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
LAYERS = ("conv1", "conv2", "fc1")


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


def run(quick: bool, seed: int, steps: int, taus) -> tuple[list[dict], dict]:
    """Train the full model and one TDLRT model per τ in lockstep; rows per (τ, step, layer)."""
    configs = {tau: config_for("tdlrt", tau, quick, seed) for tau in taus}
    full_config = config_for("full", 0.1, quick, seed)
    train_set, test_set = load_data(full_config)
    tdlrt = {tau: build_model(c) for tau, c in configs.items()}
    full = full_model_from(next(iter(tdlrt.values())), seed)
    rules = {tau: make_update_rule(c) for tau, c in configs.items()}
    full_rule = make_update_rule(full_config)
    sums = {(tau, name): {"eps": 0.0, "res": 0.0, "eta": 0.0} for tau in taus for name in LAYERS}
    rows: list[dict] = []
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])
    k = 0
    while k < steps:
        for x, y in iterate_minibatches(train_set, BATCH, rng):
            if k == steps:
                break
            k += 1
            loss_full = batch_loss(full, x, y)
            full_rule.step(full, LR, None)
            for tau in taus:
                model = tdlrt[tau]
                loss = batch_loss(model, x, y)
                reports = rules[tau].step(model, LR, None)
                for name in LAYERS:
                    rep, acc = reports[name], sums[(tau, name)]
                    W = full[name].weight
                    err = float(np.linalg.norm(W - model[name].weight.full()))
                    row = {"tau": tau, "step": k, "layer": name, "error": err,
                           "relative_error": err / float(np.linalg.norm(W)),
                           "epsilon": rep["epsilon"], "residual_norm": rep["residual_norm"], "eta": rep["eta"],
                           # the first-step identity e_1^2 = (λ r_0)^2 + η_0^2, before the sums move on
                           "first_step_prediction": math.hypot(LR * rep["residual_norm"], rep["eta"])}
                    acc["eps"] += LR * rep["epsilon"]
                    acc["res"] += LR * rep["residual_norm"]
                    acc["eta"] += rep["eta"]
                    row.update({"sum_lr_epsilon": acc["eps"], "sum_lr_residual": acc["res"], "sum_eta": acc["eta"],
                                "envelope": acc["res"] + acc["eta"], "ranks": rep["ranks_after"],
                                "loss_full": loss_full, "loss_tdlrt": loss})
                    rows.append(row)
    accuracy = {"full": evaluate(full, test_set)[1], **{f"tdlrt tau={tau:g}": evaluate(m, test_set)[1]
                                                        for tau, m in tdlrt.items()}}
    return rows, accuracy


def final_table(rows: list[dict], taus) -> list[dict]:
    last = max(r["step"] for r in rows)
    table = []
    for tau in taus:
        for name in LAYERS:
            r = next(r for r in rows if r["tau"] == tau and r["layer"] == name and r["step"] == last)
            table.append({"tau": tau, "layer": name, "ranks": r["ranks"], "error": r["error"],
                          "relative_error": r["relative_error"], "sum_lr_epsilon": r["sum_lr_epsilon"],
                          "sum_lr_residual": r["sum_lr_residual"], "sum_eta": r["sum_eta"],
                          "envelope": r["envelope"], "error_over_envelope": r["error"] / r["envelope"]})
    return table


def plot(rows: list[dict], out, taus):
    fig, ax = new_figure(3, 2, size=(4.6, 3.6))
    colors = dict(zip(taus, ("tab:blue", "tab:orange", "tab:green", "tab:red")))
    for j, name in enumerate(LAYERS):
        for tau in taus:
            sel = [r for r in rows if r["tau"] == tau and r["layer"] == name]
            s = [r["step"] for r in sel]
            c = colors[tau]
            ax[j].semilogy(s, [r["error"] for r in sel], color=c, label=f"‖W_full − Y‖, τ={tau:g}")
            ax[j].semilogy(s, [r["envelope"] for r in sel], color=c, ls="--", lw=0.8, label="Σ(λr + η)")
            ax[j].semilogy(s, [r["sum_lr_epsilon"] for r in sel], color=c, ls=":", lw=0.8, label="Σλε")
            ax[3 + j].semilogy(s, [r["epsilon"] for r in sel], color=c, lw=0.8, label=f"ε, τ={tau:g}")
            ax[3 + j].semilogy(s, [max(r["eta"], 1e-17) for r in sel], color=c, ls="--", lw=0.6,
                               label=f"η, τ={tau:g}")
        ax[j].set(title=f"{name}: error against accumulated ε, η", xlabel="step")
        ax[3 + j].set(title=f"{name}: per-step ε and η", xlabel="step")
        ax[j].legend(fontsize=6)
        ax[3 + j].legend(fontsize=6)
    return save_figure(fig, out, "full_vs_tdlrt")


def main(argv=None) -> dict:
    args = parse_args(__doc__, argv)
    steps, taus = (5, TAUS) if args.quick else (STEPS, TAUS)
    start = time.perf_counter()
    rows, accuracy = run(args.quick, args.seed, steps, taus)
    table = final_table(rows, taus)
    first = [r for r in rows if r["step"] == 1]
    summary = {
        "settings": {"lr": LR, "batch_size": BATCH, "init_rank": INIT_RANK, "steps": steps, "taus": list(taus),
                     "seed": args.seed, "dtype": "float64", "adaptive_modes": "channel",
                     "train_images": 512 if args.quick else 4000},
        "final": table,
        "first_step_identity_max_rel_error": max(abs(r["error"] - r["first_step_prediction"])
                                                 / max(r["first_step_prediction"], 1e-300) for r in first),
        "containment_max_residual_over_epsilon": max(r["residual_norm"] / r["epsilon"] for r in rows),
        "test_accuracy": accuracy,
        "final_batch_loss": {"full": rows[-1]["loss_full"],
                             **{f"tdlrt tau={tau:g}": [r for r in rows if r["tau"] == tau][-1]["loss_tdlrt"]
                                for tau in taus}},
        "wall_time_s": time.perf_counter() - start,
    }
    write_csv(rows, args.out / "full_vs_tdlrt.csv")
    write_csv(table, args.out / "full_vs_tdlrt_final.csv")
    write_json(summary, args.out / "full_vs_tdlrt.json")
    plot(rows, args.out, taus)
    print_table(table)
    print(f"  first-step identity e_1² = (λr_0)² + η_0²: max rel. error "
          f"{summary['first_step_identity_max_rel_error']:.2e}; test accuracy {accuracy}; "
          f"wall {summary['wall_time_s']:.0f} s")
    return summary


if __name__ == "__main__":
    main()
