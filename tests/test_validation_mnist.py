"""Smoke tests of the MNIST validation scripts (``validation/mnist_*.py --quick``).

Each script runs in quick mode (a few seconds on 512 training images) into ``tmp_path``; the
tests check the files and the numbers that an exact identity or inequality predicts:

* mnist_descent (the network's simultaneous step): ``‖Θ̂1 − Θ0‖ = λ‖ΠG‖`` and
  ``‖Θ̂1 − Θ1‖ = η`` to rounding (network norms), containment ``‖(I − Π)G‖ ≤ ε`` at every step,
  the ``holds`` flags recomputed from the logged terms, the bound holding on every quick step
  (what quick mode measures), the conv2-alone diagnostic's identities, and the
  identity-factor Tucker kernel giving the same loss as the Tucker kernel.
* mnist_full_vs_tdlrt (network level): the two starts are the same network, the first-step
  identity ``e_1² = (λ r_0)² + η_0²`` to rounding, the recursion
  ``e_{k+1} ≤ a_k e_k + λ r_k + η_k`` at every step, the envelope ``E_k`` rebuilt from the
  logged ``a_k``, ``r_k``, ``η_k``, ``a_k ≤ 1 + λL̂_k``, the per-layer split into own and
  coupling envelopes, the small-λ reference, and the dense probe network computing the same
  loss and gradient as the factorized one.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

VALIDATION = Path(__file__).resolve().parents[1] / "validation"
sys.path.insert(0, str(VALIDATION))


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, VALIDATION / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def read_csv(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def descent():
    return load("mnist_descent")


@pytest.fixture(scope="module")
def descent_run(descent, tmp_path_factory):
    out = tmp_path_factory.mktemp("mnist_descent")
    summary = descent.main(["--out", str(out), "--quick"])
    return out, summary


def test_mnist_descent_quick_files_and_identities(descent_run):
    out, summary = descent_run
    for name in ("descent.csv", "descent.json", "descent.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "descent.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "descent.json").read_text())["steps"] == 6
    rows = read_csv(out / "descent.csv")
    assert len(rows) == 6
    # Θ̂1 − Θ0 = −λ ΠG and η = ‖Θ̂1 − Θ1‖ exactly (Θ0 ∈ V, same-point S-step), network norms,
    # and the same for the conv2-alone diagnostic
    for part in (summary, summary["layer_diagnostic"]):
        assert part["check_step_norm_max_rel_error"] < 1e-10
        assert part["check_eta_max_rel_error"] < 1e-10
        assert part["containment_max_residual_over_epsilon"] <= 1 + 1e-10
    for r in rows:
        assert float(r["residual_norm"]) <= float(r["epsilon"]) * (1 + 1e-10)
        assert float(r["L_sec"]) > 0 and float(r["B_hat"]) > 0
        # the network step contains the conv2 step: larger ‖ΠG‖, η and ε
        for key in ("proj_grad_norm", "eta", "epsilon"):
            assert float(r[key]) >= float(r[f"conv2_{key}"]) * (1 - 1e-3)


def test_mnist_descent_quick_bound_flags(descent_run):
    out, summary = descent_run
    rows = read_csv(out / "descent.csv")
    lr = summary["settings"]["lr"]
    for prefix in ("", "conv2_"):
        for r in rows:
            pg, eta, B, L = (float(r[prefix + k]) for k in ("proj_grad_norm", "eta", "B_hat", "L_sec"))
            bound = -lr * (1 - lr * L / 2) * pg ** 2 + B * eta
            # the CSV keeps 4 significant digits of each term: compare at that resolution of the terms
            scale = lr * pg ** 2 + B * eta
            assert abs(float(r[prefix + "bound_sec"]) - bound) <= 1e-3 * scale
            assert int(r[prefix + "holds_sec"]) == int(float(r[prefix + "observed_change"])
                                                       <= float(r[prefix + "bound_sec"]) + 1e-3 * scale)
            # ΔL = [L(Θ̂1) − L(Θ0)] + [L(Θ1) − L(Θ̂1)]
            parts = float(r[prefix + "galerkin_change"]), float(r[prefix + "truncation_change"])
            assert abs(float(r[prefix + "observed_change"]) - sum(parts)) <= 1e-3 * (abs(parts[0]) + abs(parts[1]))
    # What quick mode measures (seed 0): the network bound holds at every step, with both estimates.
    assert summary["fraction_holds_sec"] == 1.0
    assert summary["steps_with_L_pow"] == 2 and summary["fraction_holds_pow"] == 1.0
    assert summary["layer_diagnostic"]["fraction_holds_sec"] == 1.0
    # The power iteration estimates ‖∇²L‖ ≥ the curvature along any direction (in particular
    # the secant along the step), up to its lack of convergence in 3 iterations.
    assert summary["L_sec_over_L_pow_median"] < 1.0
    assert summary["slack_sec"]["min"] >= 0


def test_identity_factor_kernel_is_the_same_convolution(descent):
    config = descent.config_for(True, 0)
    model = descent.build_model(config)
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (7, 1, 28, 28))
    y = rng.integers(0, 10, 7)
    Y = model["conv2"].weight
    loss_tucker, G_tucker = descent.loss_and_kernel_gradient(model, x, y, "conv2", Y)
    loss_dense, G_dense = descent.loss_and_kernel_gradient(model, x, y, "conv2", descent.dense_as_tucker(Y.full()))
    assert loss_dense == pytest.approx(loss_tucker, rel=1e-13)
    np.testing.assert_allclose(G_dense, G_tucker, rtol=1e-10, atol=1e-14 * np.abs(G_tucker).max())
    assert model["conv2"].weight is Y  # restored


@pytest.fixture(scope="module")
def full_vs_tdlrt_run(tmp_path_factory):
    module = load("mnist_full_vs_tdlrt")
    out = tmp_path_factory.mktemp("mnist_full_vs_tdlrt")
    return module, out, module.main(["--out", str(out), "--quick"])


def test_mnist_full_vs_tdlrt_quick_files_and_first_step(full_vs_tdlrt_run):
    module, out, summary = full_vs_tdlrt_run
    for name in ("full_vs_tdlrt.csv", "full_vs_tdlrt_layers.csv", "full_vs_tdlrt_final.csv",
                 "full_vs_tdlrt_final_layers.csv", "full_vs_tdlrt.json", "full_vs_tdlrt.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = read_csv(out / "full_vs_tdlrt.csv")
    taus = summary["settings"]["taus"]
    assert len(rows) == 5 * len(taus)
    assert len(read_csv(out / "full_vs_tdlrt_layers.csv")) == 5 * len(taus) * 4
    # Same start, same batch: e_1² = (λ r_0)² + η_0² for the whole parameter vector.
    assert summary["first_step_identity_max_rel_error"] < 1e-9
    assert summary["containment_max_residual_over_epsilon"] <= 1 + 1e-10


def test_mnist_full_vs_tdlrt_quick_network_recursion(full_vs_tdlrt_run):
    module, out, summary = full_vs_tdlrt_run
    rows = read_csv(out / "full_vs_tdlrt.csv")
    lr = summary["settings"]["lr"]
    for tau in summary["settings"]["taus"]:
        net = summary["network"][f"{tau:g}"]
        # e_{k+1} ≤ a_k e_k + λ r_k + η_k at every step (checked in the script at full precision)
        assert net["recursion_holds_every_step"]
        assert net["recursion_max_excess_over_scale"] <= 1e-12
        sel = [r for r in rows if float(r["tau"]) == tau]
        assert all(int(r["holds"]) == 1 for r in sel)
        E, E1, prod = 0.0, 0.0, 1.0
        for k, r in enumerate(sel):
            a, L_hat = float(r["a"]), float(r["L_hat"])
            if k == 0:
                assert np.isnan(a)  # e_0 = 0: no amplification
            else:
                assert 0 <= a <= 1 + lr * L_hat + 1e-3  # triangle inequality (4 digits in the CSV)
                prod *= a
            E = (a * E if k else 0.0) + lr * float(r["residual"]) + float(r["eta"])
            E1 += lr * float(r["residual"]) + float(r["eta"])
            assert float(r["envelope"]) == pytest.approx(E, rel=1e-2)
            assert float(r["envelope_factor1"]) == pytest.approx(E1, rel=1e-2)
            # the unrolled recursion: e_k ≤ E_k
            assert float(r["error"]) <= float(r["envelope"]) * (1 + 1e-3)
            assert float(r["residual"]) <= float(r["epsilon"]) * (1 + 1e-3)
        assert net["prod_a"] == pytest.approx(prod, rel=1e-2)
        assert net["prod_a"] <= net["prod_1_plus_lr_L"] * (1 + 1e-12)
        assert net["error"] <= net["envelope"] * (1 + 1e-12)
        # the small-λ reference is close to full SGD (Euler, λ term) and both distances are logged
        assert 0 < net["distance_ref_full"] < 1e-2
        assert net["distance_ref_tdlrt"] > 0


def test_mnist_full_vs_tdlrt_quick_coupling_attribution(full_vs_tdlrt_run):
    module, out, summary = full_vs_tdlrt_run
    layer_rows = read_csv(out / "full_vs_tdlrt_layers.csv")
    # each layer: e^ℓ_{k+1} ≤ a^ℓ e^ℓ_k + c^ℓ + λ r^ℓ + η^ℓ at every step, hence e^ℓ ≤ O^ℓ + C^ℓ
    assert all(int(r["holds"]) == 1 for r in layer_rows)
    for r in summary["layers"]:
        assert r["holds_every_step"] == 1
        assert r["error_over_own_plus_coupling"] <= 1 + 1e-9
        assert 0 <= r["coupling_share"] <= 1
    # fc2 is dense in both runs (r = η = 0): its error is coupling only
    for r in summary["layers"]:
        if r["layer"] == "fc2":
            assert r["own_envelope"] == 0 and r["coupling_share"] == 1 and r["error"] > 0


def test_full_start_equals_factorized_start():
    module = load("mnist_full_vs_tdlrt")
    factorized = module.build_model(module.config_for("tdlrt", 0.1, True, 0))
    full = module.full_model_from(factorized, 0)
    x = np.random.default_rng(5).uniform(0, 1, (4, 1, 28, 28))
    np.testing.assert_allclose(full.forward(x), factorized.forward(x), rtol=1e-10, atol=1e-12)


def test_probe_network_computes_the_factorized_loss_and_gradient():
    net = load("mnist_network")
    module = load("mnist_full_vs_tdlrt")
    model = module.build_model(module.config_for("tdlrt", 0.1, True, 0))
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 1, (6, 1, 28, 28))
    y = rng.integers(0, 10, 6)
    loss = net.batch_loss(model, x, y)
    theta, grad = net.parameters(model), net.gradient(model)
    assert list(theta) == list(grad) == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight",
                                         "fc1.bias", "fc2.weight", "fc2.bias"]
    probe_loss, probe_grad = net.Probe().loss_and_gradient(theta, x, y)
    assert probe_loss == pytest.approx(loss, rel=1e-13)
    assert net.norm(net.sub(probe_grad, grad)) <= 1e-12 * net.norm(grad)
