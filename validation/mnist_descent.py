"""Descent bound measured along a LeNet5 TDLRT run on MNIST: the network's simultaneous step.

    python validation/mnist_descent.py --out DIR [--quick] [--seed S]

The run: LeNet5 with Tucker conv1/conv2 and low-rank fc1, initialised as by the trainer
(:func:`tucker_ref.training.trainer.build_model`, init rank 0.2 of the channel modes), float64,
trained by plain SGD (momentum 0, one S-step per cycle, ``lr = λ = 0.05``, batch 128,
``τ = 0.1``, channel modes adaptive) on the embedded 4,000-image MNIST subset. Every step moves
all layers at once (TDLRT for the factorized layers, SGD for biases and fc2), all from the
gradient of one backward pass.

**The measured step is the network's** (docs/theory.md: the bound is about the whole parameter
vector Θ). One step is ``Θ̂1 = Θ0 − λΠG`` (``Π`` block-diagonal: the projection onto
``⊗_i span Û_i`` on each factorized weight, the identity on biases and fc2; ``G = ∇L(Θ0)``)
followed by the truncation of every factorized layer, ``Θ1``, ``‖Θ1 − Θ̂1‖ = η`` (root-sum-of-
squares of the layers' ``η``). On the *same* mini-batch the script evaluates ``L`` and ``∇L``
(all parameters, dense kernel gradients; a dense probe network, :mod:`mnist_network`) at
``Θ0``, ``Θ̂1`` and ``Θ1``. Then

    bound = −λ(1 − λL̂/2)‖ΠG‖² + B̂·η,   ‖ΠG‖² = Σ_layers ‖Π_ℓG_ℓ‖² + Σ_dense ‖g‖²,

``B̂ = max(‖∇L(Θ̂1)‖, ‖∇L(Θ1)‖)`` (the two ends of the segment ``[Θ̂1, Θ1]``; a bound of
``‖∇L‖`` on it only where the norm is monotone along it), and two estimates of the smoothness
constant, neither using the loss values the bound is compared with:

* ``L̂_sec = ‖∇L(Θ̂1) − ∇L(Θ0)‖ / ‖Θ̂1 − Θ0‖`` at every step (``‖Θ̂1 − Θ0‖ = λ‖ΠG‖``, checked);
* ``L̂_pow`` every ``HVP_EVERY`` steps: the largest ``|eigenvalue|`` of the batch-loss Hessian
  in the whole parameter space (431,080 dimensions) at ``Θ0``, ``POWER_ITERS`` power
  iterations on central-difference Hessian-vector products ``(∇L(Θ + hv) − ∇L(Θ − hv))/2h``,
  ``h = 1e-4‖Θ‖`` (a lower estimate of ``‖∇²L‖``, seeded random start).

A step satisfies the bound if ``ΔL = L(Θ1) − L(Θ0) ≤ bound + margin``,
``margin = 1e-12(|L(Θ0)| + λ‖ΠG‖² + B̂η)``. The two halves are also checked separately:
``L(Θ̂1) − L(Θ0) ≤ −λ(1 − λL̂/2)‖ΠG‖²`` (the Galerkin step) and
``L(Θ1) − L(Θ̂1) ≤ ‖∇L(Θ̂1)‖η + (L̂/2)η²`` (the truncation). Recorded along the trajectory:
``ε = (Σ_ℓ ε_ℓ²)^{1/2}``, ``‖(I − Π)G‖`` (``≤ ε``: containment) and the ranks.

**Diagnostic, per layer** (columns ``conv2_*``): the same measurement for **conv2 alone** —
conv2 from ``Y0`` to the ``Y1`` of the trajectory's step, every other layer frozen at its value
before the step, conv2 kernel gradients, ``L̂`` estimates in conv2's kernel space. It is not the
step the network takes; it stays as a comparison.

Writes into ``DIR``: ``descent.csv`` (one row per step), ``descent.json`` (settings, fractions,
checks) and ``descent.png``. ``--quick``: 6 steps on a 512-image subset, a few seconds.
"""

from __future__ import annotations

import one_blas_thread  # noqa: F401  (first: sets the BLAS thread count before NumPy loads)

import math
import time

import numpy as np
import mnist_network as net
from common import (
    fmt,
    new_figure,
    parse_args,
    print_table,
    save_figure,
    write_csv,
    write_json,
)

from tucker_ref.data import iterate_minibatches
from tucker_ref.integrators import tdlrt_step
from tucker_ref.integrators.steps import augmented_bases
from tucker_ref.nn.functional import softmax_cross_entropy
from tucker_ref.training import TrainConfig
from tucker_ref.training.methods import adaptive_modes_for
from tucker_ref.training.trainer import build_model, load_data
from tucker_ref.tucker import TuckerTensor, multi_mode_product

#: The layer of the per-layer diagnostic (the others frozen during that measurement).
LAYER = "conv2"
LR = 0.05
TAU = 0.1
BATCH = 128
INIT_RANK = 0.2
STEPS = 250
#: Steps between two power-iteration estimates ``L̂_pow`` (each costs ``2·POWER_ITERS`` passes).
HVP_EVERY = 10
POWER_ITERS = 10
#: Relative finite-difference step of the Hessian-vector products.
FD_REL_STEP = 1e-4
#: Rounding margin of the bound check (relative to the terms of the bound).
MARGIN = 1e-12


def config_for(quick: bool, seed: int) -> TrainConfig:
    """The trainer settings of the run (plain SGD in float64, as ``--check-descent`` uses)."""
    return TrainConfig(method="tdlrt", lr=LR, tau=TAU, batch_size=BATCH, init_rank=INIT_RANK, seed=seed,
                       dtype="float64", check_descent=True, train_subset=512 if quick else None,
                       test_subset=100 if quick else None, plots=False, quiet=True).validated()


def batch_loss(model, x, y) -> float:
    """Loss of the batch ``(x, y)`` at the model's parameters; leaves the gradients in the layers."""
    logits = model.forward(x)
    loss, dlogits = softmax_cross_entropy(logits, y)
    model.backward(dlogits, need_dx=False)
    return float(loss)


def loss_and_kernel_gradient(model, x, y, name: str, W: TuckerTensor) -> tuple[float, np.ndarray]:
    """``(L, ∇_W L)`` on the batch with layer ``name`` set to ``W`` (the others as they are).

    ``∇_W L`` is the dense kernel gradient of that layer; the layer's weight is restored.
    """
    layer = model[name]
    old = layer.weight
    layer.weight = W
    try:
        loss = batch_loss(model, x, y)
        G = np.array(layer.gradient_oracle().dense_gradient())
    finally:
        layer.weight = old
    return loss, G


def dense_as_tucker(W: np.ndarray) -> TuckerTensor:
    """A dense kernel as a Tucker tensor with identity factors (the same convolution)."""
    return TuckerTensor(W, [np.eye(n, dtype=W.dtype) for n in W.shape])


def hessian_norm_estimate(model, x, y, name: str, W: np.ndarray, rng, iters: int) -> tuple[float, float]:
    """``(‖Hv_K‖, change)``: power iteration on the batch-loss Hessian in the kernel space of ``name``.

    ``Hv ≈ (∇L(W + hv) − ∇L(W − hv)) / 2h`` with ``‖v‖ = 1``, ``h = FD_REL_STEP·‖W‖``; returns
    the last ``‖Hv‖`` (the estimate of the largest ``|eigenvalue|``) and its relative change
    over the last iteration (convergence indicator).
    """
    h = FD_REL_STEP * float(np.linalg.norm(W))
    v = rng.standard_normal(W.shape)
    v /= np.linalg.norm(v)
    estimates = []
    for _ in range(iters):
        _, gp = loss_and_kernel_gradient(model, x, y, name, dense_as_tucker(W + h * v))
        _, gm = loss_and_kernel_gradient(model, x, y, name, dense_as_tucker(W - h * v))
        Hv = (gp - gm) / (2 * h)
        estimates.append(float(np.linalg.norm(Hv)))
        v = Hv / estimates[-1]
    change = abs(estimates[-1] - estimates[-2]) / estimates[-1] if len(estimates) > 1 else math.nan
    return estimates[-1], change


def pre_truncation_iterate(Y0: TuckerTensor, oracle, lr: float) -> TuckerTensor:
    """``Ŷ1 = (Ĉ0 − λ ∇L ×_i Û_i^T) ×_i Û_i``: the TDLRT step before truncation (docs/algorithms.md §1–§2)."""
    U_hats, M_hats = augmented_bases(Y0, oracle, "k_step", caller="mnist_descent")
    C_hat0 = multi_mode_product(Y0.core, M_hats)
    return TuckerTensor(C_hat0 - lr * oracle.core_gradient(U_hats), U_hats)


def simultaneous_step(model, config: TrainConfig):
    """The trajectory's step from the gradients stored in ``model`` (one backward pass).

    Returns ``(new_weights, new_dense, reports, oracles)``: the TDLRT point of every factorized
    layer, the SGD update of every other parameter, and each factorized layer's step report
    (with diagnostics) and gradient oracle. Nothing in ``model`` is changed.
    """
    grads = model.grads
    layers = model.tucker_layers()
    new_weights, reports, oracles = {}, {}, {}
    for name, layer in layers.items():
        oracles[name] = layer.gradient_oracle()
        new_weights[name], reports[name] = tdlrt_step(
            layer.weight, oracles[name], config.lr, tau=config.tau,
            adaptive_modes=adaptive_modes_for(layer.weight.ndim, config.adaptive_modes), diagnostics=True, name=name)
    new_dense = {}
    for key, g in grads.items():
        layer_name, pname = key.split(".", 1)
        if layer_name in layers and pname != "bias":
            continue
        new_dense[key] = getattr(model[layer_name], pname) - config.lr * g
    return new_weights, new_dense, reports, oracles


def bound_row(lr, losses, pg, eta, grad_norms, step_norm, eta_distance, L_pow) -> dict:
    """The bound's terms and checks for one step.

    ``losses = (L(Θ0), L(Θ̂1), L(Θ1))``; ``grad_norms = (‖∇L(Θ0)‖, ‖∇L(Θ̂1)‖, ‖∇L(Θ1)‖,
    ‖∇L(Θ̂1) − ∇L(Θ0)‖)``; ``pg = ‖ΠG‖``; ``step_norm = ‖Θ̂1 − Θ0‖`` (``= λ‖ΠG‖``) and
    ``eta_distance = ‖Θ̂1 − Θ1‖`` (``= η``), both checked; ``L_pow`` or ``None``.
    """
    loss0, loss_hat, loss1 = losses
    g0, g_hat, g1, secant = grad_norms
    L_sec = secant / step_norm
    B_hat = max(g_hat, g1)
    margin = MARGIN * (abs(loss0) + lr * pg ** 2 + B_hat * eta)

    def bound(L):
        return -lr * (1 - lr * L / 2) * pg ** 2 + B_hat * eta

    row = {
        "loss_before": loss0, "loss_hat": loss_hat, "loss_after": loss1, "observed_change": loss1 - loss0,
        "proj_grad_norm": pg, "eta": eta, "grad_norm": g0,
        "first_order_term": -lr * pg ** 2, "L_sec": L_sec, "B_hat": B_hat, "eta_term": B_hat * eta,
        "bound_sec": bound(L_sec), "holds_sec": int(loss1 - loss0 <= bound(L_sec) + margin),
        "slack_sec": bound(L_sec) - (loss1 - loss0),
        "galerkin_change": loss_hat - loss0, "galerkin_bound_sec": -lr * (1 - lr * L_sec / 2) * pg ** 2,
        "truncation_change": loss1 - loss_hat, "truncation_bound_sec": g_hat * eta + L_sec / 2 * eta ** 2,
        "L_pow": math.nan if L_pow is None else L_pow,
        "bound_pow": math.nan if L_pow is None else bound(L_pow),
        "holds_pow": -1 if L_pow is None else int(loss1 - loss0 <= bound(L_pow) + margin),
        "step_norm_error": abs(step_norm - lr * pg) / (lr * pg),
        "eta_error": abs(eta_distance - eta) / max(eta, 1e-300),
    }
    row["galerkin_holds_sec"] = int(row["galerkin_change"] <= row["galerkin_bound_sec"] + margin)
    row["truncation_holds_sec"] = int(row["truncation_change"] <= row["truncation_bound_sec"] + margin)
    return row


def measure_network(probe, x, y, config: TrainConfig, model, new_weights, new_dense, reports, oracles,
                    L_pow) -> dict:
    """The simultaneous step of the whole network: ``L``, ``∇L`` at ``Θ0``, ``Θ̂1``, ``Θ1``; the bound."""
    lr = config.lr
    theta0 = net.parameters(model)
    theta_hat = dict(theta0)
    theta1 = dict(theta0)
    for key, value in new_dense.items():
        theta_hat[key] = theta1[key] = np.array(value, dtype=np.float64)
    for name, layer in model.tucker_layers().items():
        theta_hat[f"{name}.weight"] = pre_truncation_iterate(layer.weight, oracles[name], lr).full()
        theta1[f"{name}.weight"] = new_weights[name].full()
    loss0, G0 = probe.loss_and_gradient(theta0, x, y)
    loss_hat, G_hat = probe.loss_and_gradient(theta_hat, x, y)
    loss1, G1 = probe.loss_and_gradient(theta1, x, y)
    dense_sq = sum(float(np.sum(np.square(G0[k]))) for k in new_dense)
    pg = math.sqrt(sum(r.proj_grad_norm ** 2 for r in reports.values()) + dense_sq)
    eta = math.sqrt(sum(r.eta ** 2 for r in reports.values()))
    row = bound_row(lr, (loss0, loss_hat, loss1), pg, eta,
                    (net.norm(G0), net.norm(G_hat), net.norm(G1), net.norm(net.sub(G_hat, G0))),
                    net.norm(net.sub(theta_hat, theta0)), net.norm(net.sub(theta_hat, theta1)), L_pow)
    row["epsilon"] = math.sqrt(sum(r.epsilon ** 2 for r in reports.values()))
    row["residual_norm"] = math.sqrt(sum(r.residual_norm ** 2 for r in reports.values()))
    row["ranks_before"] = "; ".join("x".join(map(str, r.ranks_before)) for r in reports.values())
    row["ranks_after"] = "; ".join("x".join(map(str, r.ranks_after)) for r in reports.values())
    return row


def measure_layer(model, x, y, config: TrainConfig, report, oracle, Y1: TuckerTensor, L_pow) -> dict:
    """Diagnostic: conv2 alone from ``Y0`` to ``Y1``, the other layers frozen (columns ``conv2_*``)."""
    lr = config.lr
    Y0 = model[LAYER].weight
    loss0, G0 = loss_and_kernel_gradient(model, x, y, LAYER, Y0)
    Y_hat = pre_truncation_iterate(Y0, oracle, lr)
    loss_hat, G_hat = loss_and_kernel_gradient(model, x, y, LAYER, Y_hat)
    loss1, G1 = loss_and_kernel_gradient(model, x, y, LAYER, Y1)
    norms = tuple(float(np.linalg.norm(G)) for G in (G0, G_hat, G1, G_hat - G0))
    row = bound_row(lr, (loss0, loss_hat, loss1), report.proj_grad_norm, report.eta, norms,
                    float(np.linalg.norm(Y_hat.full() - Y0.full())), float(np.linalg.norm(Y_hat.full() - Y1.full())),
                    L_pow)
    row.update({"epsilon": report.epsilon, "residual_norm": report.residual_norm})
    return {f"{LAYER}_{k}": v for k, v in row.items()}


def run(config: TrainConfig, steps: int, hvp_every: int, power_iters: int, seed: int) -> list[dict]:
    """The trajectory and one measurement per step (see the module docstring)."""
    train_set, _ = load_data(config)
    model = build_model(config)
    probe = net.Probe(seed)
    batch_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])
    hvp_rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    rows: list[dict] = []
    while len(rows) < steps:
        for x, y in iterate_minibatches(train_set, config.batch_size, batch_rng):
            if len(rows) == steps:
                break
            k = len(rows)
            L_pow = L_pow_layer = None
            change = change_layer = math.nan
            if k % hvp_every == 0:
                L_pow, change = net.hessian_norm_estimate(probe, net.parameters(model), x, y, hvp_rng, power_iters,
                                                          FD_REL_STEP)
                L_pow_layer, change_layer = hessian_norm_estimate(model, x, y, LAYER, model[LAYER].weight.full(),
                                                                  hvp_rng, power_iters)
            batch_loss(model, x, y)
            new_weights, new_dense, reports, oracles = simultaneous_step(model, config)
            row = {"step": k + 1}
            row.update(measure_network(probe, x, y, config, model, new_weights, new_dense, reports, oracles, L_pow))
            row["power_change"] = change
            row.update(measure_layer(model, x, y, config, reports[LAYER], oracles[LAYER], new_weights[LAYER],
                                     L_pow_layer))
            row[f"{LAYER}_power_change"] = change_layer
            rows.append(row)
            for name, Y in new_weights.items():
                model[name].weight = Y
            for key, value in new_dense.items():
                layer_name, pname = key.split(".", 1)
                setattr(model[layer_name], pname, value)
    return rows


def fraction(rows, key) -> float:
    vals = [r[key] for r in rows if r[key] >= 0]
    return float(np.mean(vals)) if vals else math.nan


def summarize_bound(rows: list[dict], lr: float, prefix: str = "") -> dict:
    """Fractions, constants and checks of the bound from the rows' columns ``prefix + name``."""
    arr = {k: np.array([r[prefix + k] for r in rows], dtype=np.float64) for k in
           ("observed_change", "bound_sec", "bound_pow", "L_sec", "L_pow", "eta", "epsilon", "residual_norm",
            "grad_norm", "proj_grad_norm", "eta_term", "first_order_term", "step_norm_error", "eta_error",
            "power_change", "slack_sec", "galerkin_change", "galerkin_bound_sec", "truncation_change",
            "truncation_bound_sec")}
    pow_mask = np.isfinite(arr["L_pow"])
    violations = arr["observed_change"] - arr["bound_sec"]
    negative = arr["bound_sec"] < 0
    galerkin_fail = [int(r["step"]) for r in rows if not r[prefix + "galerkin_holds_sec"]]
    return {
        "fraction_holds_sec": fraction(rows, prefix + "holds_sec"),
        "fraction_holds_pow": fraction(rows, prefix + "holds_pow"),
        "steps_with_L_pow": int(pow_mask.sum()),
        "fraction_galerkin_holds_sec": fraction(rows, prefix + "galerkin_holds_sec"),
        "galerkin_fails_at_steps": galerkin_fail,
        "galerkin_largest_relative_violation": float(np.max((arr["galerkin_change"] - arr["galerkin_bound_sec"])
                                                            / np.abs(arr["galerkin_bound_sec"]))),
        "fraction_truncation_holds_sec": fraction(rows, prefix + "truncation_holds_sec"),
        "truncation_change_over_bound": {
            "median": float(np.median(arr["truncation_change"] / arr["truncation_bound_sec"])),
            "max": float(np.max(arr["truncation_change"] / arr["truncation_bound_sec"]))},
        "fraction_decrease": float(np.mean(arr["observed_change"] < 0)),
        "fraction_bound_positive": float(np.mean(~negative)),
        "largest_violation_sec": float(violations.max()),
        "slack_sec": {"median": float(np.median(arr["slack_sec"])), "min": float(arr["slack_sec"].min())},
        "observed_over_bound_where_negative_median": float(np.median(arr["observed_change"][negative]
                                                                     / arr["bound_sec"][negative]))
        if negative.any() else None,
        "L_sec": {"median": float(np.median(arr["L_sec"])), "max": float(arr["L_sec"].max())},
        "L_pow": {"median": float(np.median(arr["L_pow"][pow_mask])) if pow_mask.any() else None,
                  "max": float(arr["L_pow"][pow_mask].max()) if pow_mask.any() else None,
                  "max_relative_change_last_iteration": float(np.nanmax(arr["power_change"]))
                  if pow_mask.any() else None},
        "L_sec_over_L_pow_median": float(np.median(arr["L_sec"][pow_mask] / arr["L_pow"][pow_mask]))
        if pow_mask.any() else None,
        "lr_L_sec_over_2_max": float(lr * arr["L_sec"].max() / 2),
        "lr_L_pow_over_2_max": float(lr * arr["L_pow"][pow_mask].max() / 2) if pow_mask.any() else None,
        "eta_term_over_first_order_median": float(np.median(arr["eta_term"] / np.abs(arr["first_order_term"]))),
        "epsilon": {"first": float(arr["epsilon"][0]), "last": float(arr["epsilon"][-1]),
                    "median_relative": float(np.median(arr["epsilon"] / arr["grad_norm"]))},
        "containment_max_residual_over_epsilon": float(np.max(arr["residual_norm"] / arr["epsilon"])),
        "check_step_norm_max_rel_error": float(arr["step_norm_error"].max()),
        "check_eta_max_rel_error": float(arr["eta_error"].max()),
    }


def summarize(rows: list[dict], config: TrainConfig, settings: dict) -> dict:
    """Network-level results at the top level; the conv2-alone diagnostic under ``layer_diagnostic``."""
    return {
        "settings": settings,
        "steps": len(rows),
        **summarize_bound(rows, config.lr),
        "layer_diagnostic": {"layer": LAYER, **summarize_bound(rows, config.lr, f"{LAYER}_")},
        "ranks_first": rows[0]["ranks_before"],
        "ranks_last": rows[-1]["ranks_after"],
        "loss_first": rows[0]["loss_before"],
        "loss_last": rows[-1]["loss_after"],
    }


def plot(rows: list[dict], out, config: TrainConfig):
    fig, ax = new_figure(2, 2)
    steps = np.array([r["step"] for r in rows])
    obs = np.array([r["observed_change"] for r in rows])
    b_sec = np.array([r["bound_sec"] for r in rows])
    b_pow = np.array([r["bound_pow"] for r in rows])
    held = np.array([r["holds_sec"] for r in rows], dtype=bool)
    obs_l = np.array([r[f"{LAYER}_observed_change"] for r in rows])
    b_l = np.array([r[f"{LAYER}_bound_sec"] for r in rows])

    ax[0].scatter(b_sec[held], obs[held], s=9, c="tab:blue", label="network: bound holds (L̂_sec)")
    ax[0].scatter(b_sec[~held], obs[~held], s=14, c="tab:red", marker="x", label="network: violated (L̂_sec)")
    mask = np.isfinite(b_pow)
    ax[0].scatter(b_pow[mask], obs[mask], s=22, facecolors="none", edgecolors="k", label="network, with L̂_pow")
    ax[0].scatter(b_l, obs_l, s=5, c="tab:gray", alpha=0.5, label=f"diagnostic: {LAYER} alone (L̂_sec)")
    lim = [min(obs.min(), b_sec.min(), obs_l.min()), max(obs.max(), b_sec.max(), b_l.max())]
    ax[0].plot(lim, lim, "k--", lw=0.8, label="ΔL = bound")
    ax[0].set(xlabel="bound −λ(1−λL̂/2)‖ΠG‖² + B̂η", ylabel="observed ΔL = L(Θ1) − L(Θ0)",
              title="simultaneous network step (same batch)")
    ax[0].legend(fontsize=7)

    ax[1].plot(steps, obs, lw=0.8, label="observed ΔL")
    ax[1].plot(steps, b_sec, lw=0.8, label="bound (L̂_sec)")
    ax[1].plot(steps, [r["first_order_term"] for r in rows], lw=0.6, ls=":", label="−λ‖ΠG‖²")
    ax[1].plot(steps, [r["eta_term"] for r in rows], lw=0.6, ls="--", label="B̂η")
    ax[1].set(xlabel="step", ylabel="loss change", title="network, per step")
    ax[1].legend(fontsize=7)

    ax[2].semilogy(steps, [r["grad_norm"] for r in rows], label="‖∇L‖ (all parameters)")
    ax[2].semilogy(steps, [r["proj_grad_norm"] for r in rows], label="‖ΠG‖")
    ax[2].semilogy(steps, [r["epsilon"] for r in rows], label="ε = (Σ ε_ℓ²)^½")
    ax[2].semilogy(steps, [r["residual_norm"] for r in rows], ls=":", label="‖(I−Π)G‖")
    ax[2].semilogy(steps, [r["eta"] for r in rows], lw=0.7, label="η = (Σ η_ℓ²)^½")
    ax[2].set(xlabel="step", title="network: ε, η along the trajectory")
    ax[2].legend(fontsize=7)

    ax[3].semilogy(steps, [r["L_sec"] for r in rows], lw=0.8, label="L̂_sec network (secant along the step)")
    ax[3].semilogy(steps[mask], np.array([r["L_pow"] for r in rows])[mask], "o", ms=4,
                   label="L̂_pow network (power iteration)")
    ax[3].semilogy(steps, [r[f"{LAYER}_L_sec"] for r in rows], lw=0.5, color="tab:gray",
                   label=f"diagnostic: L̂_sec in {LAYER}'s kernel space")
    ax[3].axhline(2 / config.lr, color="k", ls="--", lw=0.8, label="2/λ")
    ax[3].set(xlabel="step", title="smoothness estimates")
    ax[3].legend(fontsize=7)
    return save_figure(fig, out, "descent")


def main(argv=None) -> dict:
    args = parse_args(__doc__, argv)
    config = config_for(args.quick, args.seed)
    steps, hvp_every, power_iters = (6, 3, 3) if args.quick else (STEPS, HVP_EVERY, POWER_ITERS)
    settings = {"diagnostic_layer": LAYER, "lr": config.lr, "tau": config.tau, "batch_size": config.batch_size,
                "init_rank": INIT_RANK, "adaptive_modes": config.adaptive_modes, "dtype": config.dtype,
                "seed": args.seed, "steps": steps, "hvp_every": hvp_every, "power_iters": power_iters,
                "fd_rel_step": FD_REL_STEP, "train_images": 512 if args.quick else 4000}
    start = time.perf_counter()
    rows = run(config, steps, hvp_every, power_iters, args.seed)
    summary = summarize(rows, config, settings)
    summary["wall_time_s"] = time.perf_counter() - start
    write_csv(rows, args.out / "descent.csv")
    write_json(summary, args.out / "descent.json")
    plot(rows, args.out, config)
    shown = rows if len(rows) <= 12 else rows[:: max(1, len(rows) // 12)]
    print_table(shown, ["step", "loss_before", "observed_change", "bound_sec", "bound_pow", "L_sec", "L_pow",
                        "eta", "epsilon", "holds_sec", f"{LAYER}_holds_sec"])
    print(f"  network step: bound holds (L̂_sec) on {fmt(100 * summary['fraction_holds_sec'])}% of {len(rows)} steps; "
          f"(L̂_pow) on {fmt(100 * summary['fraction_holds_pow'])}% of {summary['steps_with_L_pow']}; "
          f"Galerkin half {fmt(100 * summary['fraction_galerkin_holds_sec'])}%, truncation half "
          f"{fmt(100 * summary['fraction_truncation_holds_sec'])}%; wall {summary['wall_time_s']:.0f} s")
    return summary


if __name__ == "__main__":
    main()
