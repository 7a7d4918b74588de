"""Smoke tests of the MNIST validation scripts (``validation/mnist_*.py --quick``).

Each script runs in quick mode (a few seconds on 512 training images) into ``tmp_path``; the
tests check the files and the numbers that an exact identity predicts:

* mnist_descent: ``‖Ŷ1 − Y0‖ = λ‖Π∇L‖`` and ``‖Ŷ1 − Y1‖ = η`` to rounding, containment
  ``‖(I − Π)∇L‖ ≤ ε`` at every step, the ``holds`` flags recomputed from the logged terms, the
  bound holding on every quick step (what quick mode measures), and the identity-factor
  Tucker kernel used by the Hessian-vector products giving the same loss as the Tucker kernel.
* mnist_full_vs_tdlrt: the two starts are the same network, the first-step identity
  ``e_1² = (λ r_0)² + η_0²`` to rounding, containment, the accumulated sums.
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
    # Ŷ1 − Y0 = −λ Π∇L(Y0) and η = ‖Ŷ1 − Y1‖ exactly (Y0 ∈ V, same-point S-step).
    assert summary["check_step_norm_max_rel_error"] < 1e-10
    assert summary["check_eta_max_rel_error"] < 1e-10
    for r in rows:
        assert float(r["residual_norm"]) <= float(r["epsilon"]) * (1 + 1e-10)
        assert float(r["L_sec"]) > 0 and float(r["B_hat"]) > 0


def test_mnist_descent_quick_bound_flags(descent_run):
    out, summary = descent_run
    rows = read_csv(out / "descent.csv")
    lr = summary["settings"]["lr"]
    for r in rows:
        pg, eta, B, L = (float(r[k]) for k in ("proj_grad_norm", "eta", "B_hat", "L_sec"))
        bound = -lr * (1 - lr * L / 2) * pg ** 2 + B * eta
        # the CSV keeps 4 significant digits of each term: compare at that resolution of the terms
        scale = lr * pg ** 2 + B * eta
        assert abs(float(r["bound_sec"]) - bound) <= 1e-3 * scale
        assert int(r["holds_sec"]) == int(float(r["observed_change"]) <= float(r["bound_sec"]) + 1e-3 * scale)
        # ΔL = [L(Ŷ1) − L(Y0)] + [L(Y1) − L(Ŷ1)]
        parts = float(r["galerkin_change"]), float(r["truncation_change"])
        assert abs(float(r["observed_change"]) - sum(parts)) <= 1e-3 * (abs(parts[0]) + abs(parts[1]))
    # What quick mode measures (seed 0): the bound holds at every step, with both estimates.
    assert summary["fraction_holds_sec"] == 1.0
    assert summary["steps_with_L_pow"] == 2 and summary["fraction_holds_pow"] == 1.0
    # The power iteration estimates ‖∇²L‖ ≥ the curvature along any direction (in particular
    # the secant along the step), up to its lack of convergence in 3 iterations.
    assert summary["L_sec_over_L_pow_median"] < 1.0


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


def test_mnist_full_vs_tdlrt_quick(tmp_path):
    module = load("mnist_full_vs_tdlrt")
    summary = module.main(["--out", str(tmp_path), "--quick"])
    for name in ("full_vs_tdlrt.csv", "full_vs_tdlrt_final.csv", "full_vs_tdlrt.json", "full_vs_tdlrt.png"):
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0, name
    rows = read_csv(tmp_path / "full_vs_tdlrt.csv")
    taus = summary["settings"]["taus"]
    assert len(rows) == 5 * len(taus) * 3
    # Same start, same batch: e_1² = (λ r_0)² + η_0² per layer (spec §4, first step exactly).
    assert summary["first_step_identity_max_rel_error"] < 1e-9
    assert summary["containment_max_residual_over_epsilon"] <= 1 + 1e-10
    lr = summary["settings"]["lr"]
    for tau in taus:
        for layer in ("conv1", "conv2", "fc1"):
            sel = [r for r in rows if float(r["tau"]) == tau and r["layer"] == layer]
            eps = np.array([float(r["epsilon"]) for r in sel])
            eta = np.array([float(r["eta"]) for r in sel])
            assert float(sel[-1]["sum_lr_epsilon"]) == pytest.approx(lr * eps.sum(), rel=1e-3)
            assert float(sel[-1]["sum_eta"]) == pytest.approx(eta.sum(), rel=1e-3, abs=1e-12)
            assert float(sel[0]["error"]) <= float(sel[0]["envelope"]) * (1 + 1e-3)


def test_full_start_equals_factorized_start():
    module = load("mnist_full_vs_tdlrt")
    factorized = module.build_model(module.config_for("tdlrt", 0.1, True, 0))
    full = module.full_model_from(factorized, 0)
    x = np.random.default_rng(5).uniform(0, 1, (4, 1, 28, 28))
    np.testing.assert_allclose(full.forward(x), factorized.forward(x), rtol=1e-10, atol=1e-12)
