"""Smoke tests of the validation scripts (``validation/*.py --quick``) and of their shared problem.

Each script runs in quick mode into ``tmp_path``; the test checks the files it must write and
the numbers it measures that a theorem or an exact construction predicts:

* approximation_bound: fitted slope of the error in ``λ`` (every method) and in ``ε`` within
  ``[0.8, 1.2]`` (quick mode measures 0.97-1.08 and 0.98-1.00); the block-normal constant
  ``c1 = T`` to 1e-8; the per-step recursion ``e_{k+1} ≤ e_k + λ r_k + η_k`` at every step;
  the first-step identity ``e_1² = (λr_0)² + η_0²`` to 1e-10; ``e_K ≤ Σ(λr_k + η_k)`` for every θ.
* robustness: TDLRT's error flat in ``σ_min`` (max/min ≤ 1.1), direct Euler diverging for
  small ``σ_min``, k_step containment exact to rounding, augmented_gradient containment lost at
  ``σ_min = 1e-12`` in most draws (what we measure; docs/theory.md §3 says the same), naive rate ratio
  ``σ_k²`` within the rounding estimate.
* worked_example: the substep composition equals ``tdlrt_step``; containment, ``η ≤
  sqrt(Σ tails²)`` and the descent bound hold.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

VALIDATION = Path(__file__).resolve().parents[1] / "validation"
sys.path.insert(0, str(VALIDATION))

import common  # noqa: E402

from tucker_ref.manifold import normal_component_norm  # noqa: E402
from tucker_ref.tucker import unfold  # noqa: E402


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"validation_{name}", VALIDATION / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: a dataclass in the script looks its module up by name.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def read_csv(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def assert_files(out: Path, names) -> None:
    for name in names:
        path = out / name
        assert path.is_file() and path.stat().st_size > 0, f"{name} was not written"
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{name} is not a PNG"


# ---------------------------------------------------------------------------------------
# the scripts
# ---------------------------------------------------------------------------------------
def test_approximation_bound_quick(tmp_path):
    results = load("approximation_bound").main(["--out", str(tmp_path), "--quick"])
    parts = ("lr", "theta", "eps", "recursion")
    assert_files(tmp_path, [f"approximation_{p}.csv" for p in parts] + [f"approximation_{p}.png" for p in parts]
                 + ["approximation_bound.json"])
    assert json.loads((tmp_path / "approximation_bound.json").read_text())["config"]["quick"] is True
    for name, fit in results["slope_lr"].items():
        assert 0.8 <= fit["measured"] <= 1.2, f"slope in lr of {name}: {fit['measured']}"
    for kind in ("block", "generic"):
        assert 0.8 <= results["slope_eps"][kind]["measured"] <= 1.2, results["slope_eps"][kind]
    # Block N: the normal part is orthogonal to everything TDLRT does, so c1 = T exactly.
    assert abs(results["slope_eps"]["block_c1"]["measured"] - 1.0) <= 1e-8
    rec = results["recursion"]
    assert rec["lr_le_2_over_L"]
    # Factor-1 recursion from the measured e_k; 1e-12 is rounding of norms of O(1e-2) tensors.
    assert rec["max_one_step_ratio"] <= 1 + 1e-12
    assert rec["first_step_identity_rel_diff"] <= 1e-10
    assert rec["final_error_sgd"] <= rec["final_bound_factor_1"] <= rec["final_bound_factor_1_plus_lrL"]
    assert results["theta_envelope_holds"]
    rows = read_csv(tmp_path / "approximation_lr.csv")
    assert all(math.isfinite(float(r["error_flow"])) and float(r["error_flow"]) > 0 for r in rows)


def test_robustness_quick(tmp_path):
    results = load("robustness").main(["--out", str(tmp_path), "--quick"])
    assert_files(tmp_path, ["robustness_error.csv", "robustness_containment.csv", "robustness_naive_rate.csv",
                            "robustness.png", "robustness.json"])
    median = results["median_error"]
    k_step = list(median["TDLRT k_step"].values())
    assert all(math.isfinite(e) for e in k_step)
    assert results["k_step_max_over_min_error"] <= 1.1
    # Direct Euler with Mat_i(C)^+ diverges once sigma_min is far below lr (0.05 in quick mode).
    assert results["first_sigma_min_with_divergence"]["direct Euler"] is not None
    assert results["first_sigma_min_with_divergence"]["TDLRT k_step"] is None
    # k_step: P(Y0)G in span of the augmented bases to rounding at every sigma_min (docs/theory.md §3).
    assert results["containment_slope"]["k_step_max_containment"]["measured"] <= 1e-13
    for row in results["containment"]:
        if row["variant"] == "augmented_gradient" and row["sigma_min"] == 1e-12:
            assert row["fraction_lost"] >= 0.5, row
    assert results["naive_rate_max_relative_deviation"]["max_deviation_over_rounding_estimate"] <= 1.0


def test_worked_example(tmp_path):
    result = load("worked_example").main(["--out", str(tmp_path), "--quick"])
    assert_files(tmp_path, ["worked_example.txt", "worked_example.json", "worked_example.png"])
    text = (tmp_path / "worked_example.txt").read_text()
    for label in ("Q_0", "S_1", "K_2", "grad_K_0", "U_hat_1", "C_hat0", "C_hat1", "singular values", "eta =",
                  "descent bound"):
        assert label in text, f"{label!r} missing from the printed example"
    assert result["tdlrt_step_difference"] <= 1e-12
    assert result["containment_residual"] <= 1e-12 * result["tangent_grad_norm"]
    assert result["residual_norm"] <= result["epsilon"]
    assert result["eta"] <= math.sqrt(sum(t * t for t in result["tails"])) * (1 + 1e-12)
    assert result["loss_after"] <= result["descent_bound"]
    assert all(a <= b for a, b in zip(result["ranks_after"], result["ranks_augmented"]))
    # docs/algorithms.md pastes the printed output: it must still be what the script prints.
    doc = (VALIDATION.parent / "docs" / "algorithms.md").read_text()
    start, end = "<!-- worked_example output start -->\n```text\n", "```\n<!-- worked_example output end -->"
    assert start in doc and end in doc, "docs/algorithms.md lost its worked-example markers"
    assert doc[doc.index(start) + len(start):doc.index(end)] == text, \
        "docs/algorithms.md is out of date: paste the output of validation/worked_example.py"


def test_out_is_required():
    with pytest.raises(SystemExit):
        common.parse_args("doc", [])


# ---------------------------------------------------------------------------------------
# the shared problem
# ---------------------------------------------------------------------------------------
@settings(max_examples=10)
@given(seed=st.integers(0, 2**32 - 1), t=st.floats(0.01, 2.0), with_b=st.booleans())
def test_kronecker_flow_solves_the_ode(seed, t, with_b):
    """``W(t)`` of :meth:`KroneckerSumQuadratic.flow` satisfies ``Ẇ = −∇L(W)`` and ``W(0) = W0``.

    Five-point central difference with h = 1e-3: truncation ``h⁴/30·‖W⁽⁵⁾‖ ≤ h⁴/30·6⁵‖W0‖``
    (eigenvalues of 𝓗 ≤ 6) ≈ 3e-11‖W0‖, rounding ``~1.5 eps‖W‖/h`` ≈ 3e-13‖W0‖; the bound
    1e-9·‖W0‖ leaves a factor 30 and still catches a wrong sign or eigenvalue sum (O(1) errors).
    """
    rng = np.random.default_rng(seed)
    shape, block = (5, 4, 3), (4, 3, 2)
    H = common.block_operator(rng, shape, block)
    B = rng.standard_normal(shape) if with_b else None
    problem = common.KroneckerSumQuadratic(H, B)
    W0 = rng.standard_normal(shape)
    h = 1e-3
    f = problem.flow
    dW = (f(W0, t - 2 * h) - 8 * f(W0, t - h) + 8 * f(W0, t + h) - f(W0, t + 2 * h)) / (12 * h)
    rhs = -problem.gradient(f(W0, t))
    assert np.linalg.norm(dW - rhs) <= 1e-9 * np.linalg.norm(W0)
    np.testing.assert_allclose(problem.flow(W0, 0.0), W0, rtol=0, atol=1e-14)
    assert problem.smoothness == pytest.approx(sum(np.linalg.eigvalsh(Hi).max() for Hi in H), rel=1e-12)


@settings(max_examples=10)
@given(seed=st.integers(0, 2**32 - 1))
def test_block_normal_component_is_exact(seed):
    """Factors inside the blocks: ``‖(I − P(Y))εN‖ = ε``; ``B = 0`` gives ``ε(Y) = 0`` (tangent gradient)."""
    rng = np.random.default_rng(seed)
    shape, block = (6, 5, 4), (5, 4, 3)
    H = common.block_operator(rng, shape, block)
    Y = common.planted_point(rng, shape, [1.0, 0.3], block, rotate_core=True)
    eps = float(rng.uniform(1e-3, 1.0))
    N = common.normal_tensor(shape, block)
    assert normal_component_norm(Y, eps * N) == pytest.approx(eps, rel=1e-12)
    # B = 0: the Kronecker-sum gradient is tangent at every Y (rounding relative to ‖∇L‖).
    G = common.KroneckerSumQuadratic(H).gradient(Y)
    assert normal_component_norm(Y, G) <= 1e-12 * np.linalg.norm(G)


def test_superdiagonal_core_spectrum_and_slope_fit():
    sigmas = np.array([1.0, 1e-3, 1e-9])
    C = common.superdiagonal_core(sigmas, 3)
    for i in range(3):
        np.testing.assert_allclose(np.linalg.svd(unfold(C, i), compute_uv=False), sigmas, rtol=1e-15)
    x = np.geomspace(1e-3, 1, 5)
    p, c = common.loglog_slope(x, 3.0 * x ** 1.5)
    assert p == pytest.approx(1.5, rel=1e-12) and c == pytest.approx(3.0, rel=1e-12)
    with pytest.raises(ValueError, match="positive"):
        common.loglog_slope([1.0, 2.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="sigmas"):
        common.superdiagonal_core([1.0, 0.0], 3)


def test_every_mutant_still_finds_the_text_it_changes():
    """validation/mutants.py applies each planted mistake by replacing a line of the source; a
    refactor that moves that line would silently drop the mutant from the table (its run
    aborts), so each text must occur exactly once, and its first tests must exist."""
    mutants = load("mutants")
    root = VALIDATION.parent
    lost = [f"{m.name}: {(root / m.path).read_text(encoding='utf-8').count(m.old)} times in {m.path}"
            for m in mutants.MUTANTS if (root / m.path).read_text(encoding="utf-8").count(m.old) != 1]
    assert not lost, f"mutants whose text does not occur exactly once: {lost}"
    missing = [t for m in mutants.MUTANTS for t in m.tests if not (root / t.split("::")[0]).exists()]
    assert not missing, f"mutant tests that do not exist: {missing}"
    assert len({m.name for m in mutants.MUTANTS}) == len(mutants.MUTANTS) >= 17
