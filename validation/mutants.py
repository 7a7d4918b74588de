"""The project's mutation table: plausible mistakes that the CI-profile test suite must catch.

Each mutant replaces one exact piece of source text (it must occur exactly once) in a temporary
copy of the repository and runs the test suite there with the CI hypothesis profile::

    python -m pytest -q -x -p no:cacheprovider -rfE --deselect <SELF_CHECK> <the mutant's property tests>
    python -m pytest -q -x -p no:cacheprovider -rfE --deselect <SELF_CHECK> <the mutant's test files> \
        <every other test file>

with the copy as the working directory and ``PYTHONPATH`` pointing at it (checked before the
run: ``tucker_ref.__file__`` must lie inside the copy, so an installed or editable ``tucker_ref``
cannot be tested by mistake), ``HYPOTHESIS_PROFILE=ci`` and one BLAS thread. ``SELF_CHECK``, the
test that every mutant's text occurs in the source, is left out: a mutated copy fails it by
construction. A mutant is
*killed* when the suite fails; the table names the first failing test. The property tests and
files listed for a mutant are the ones whose claims it breaks, run first so that a kill is quick
and shows whether the test that claims the property catches the mistake (``-x`` stops at the
first failure).

Before the mutants, the unmutated copy is run the same way (the *control*): a suite that fails
without a mutation would "kill" every mutant, so the run stops if the control fails.

Usage::

    python validation/mutants.py --list
    python validation/mutants.py                      # control + every mutant, one at a time
    python validation/mutants.py --only strict-tail-rule --only transposed-S
    python validation/mutants.py --write-docs         # also write the table into docs/validation.md

Options: ``--jobs N`` runs N mutants at once (default 1: the machine's cores are shared);
``--tree DIR`` mutates a copy of DIR instead of this repository; ``--no-control`` skips the
control run; ``--timeout S`` per run (a run that times out counts as killed, and says so);
``--first-only`` runs only each mutant's own test files (a quick check while strengthening a test).
This is a script, not part of CI: run it before closing work on the integrator or its tests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS_PAGE = Path("docs") / "validation.md"
TABLE_START = "<!-- mutation table start -->"
TABLE_END = "<!-- mutation table end -->"
#: Not copied: version control, caches and build metadata (the tests never read them).
IGNORED = shutil.ignore_patterns(".git", ".hypothesis", ".pytest_cache", "__pycache__", "*.egg-info", "*.pyc")


@dataclass(frozen=True)
class Mutant:
    """One plausible mistake: ``old`` (exactly once in ``path``) becomes ``new``."""

    name: str
    area: str
    what: str
    path: str
    old: str
    new: str
    tests: tuple  # test files or node ids run first (the property tests whose claims the mistake breaks)


#: Property tests that claim what the mutants break (run first), each followed by its file.
TRUNCATE_RULE = ("tests/test_truncation.py::test_truncate_follows_the_per_mode_rule_and_reports_honestly",
                 "tests/test_truncation.py")
K_PARAMETRIZATION = ("tests/test_integrators_substeps.py::test_k_parametrization_factors_the_core_unfolding",
                     "tests/test_integrators_substeps.py")
ETA_BOUND = ("tests/test_guarantees.py::test_eta_bound_holds_unless_a_tail_clamp_is_recorded",
             "tests/test_guarantees.py")
DESCENT = ("tests/test_guarantees.py::test_descent", "tests/test_guarantees.py")

MUTANTS = (
    # -- truncation -------------------------------------------------------------------------
    Mutant("strict-tail-rule", "truncation",
           "rank rule `tail < ϑ` (strict) instead of `tail ≤ ϑ`, keeping everything when no tail is below "
           "ϑ",
           "tucker_ref/truncation.py",
           "    return int(np.flatnonzero(t <= theta)[0])\n",
           "    return int(np.flatnonzero(np.append(t[:-1] < theta, True))[0])\n",
           TRUNCATE_RULE),
    Mutant("keep-sigma-above-theta", "truncation",
           "keeps the singular values `σ > ϑ` instead of the smallest rank with `tail ≤ ϑ`",
           "tucker_ref/truncation.py",
           "    return int(np.flatnonzero(t <= theta)[0])\n",
           "    return int(np.count_nonzero(np.asarray(s) > theta))\n",
           TRUNCATE_RULE),
    Mutant("theta-spectral-norm", "truncation",
           "relative `ϑ = τ‖Mat_0(Ĉ)‖_2` (spectral norm) instead of `τ‖Ĉ‖_F`",
           "tucker_ref/truncation.py",
           "    norm_c = float(np.linalg.norm(C))\n",
           "    norm_c = float(np.linalg.norm(unfold(C, 0), 2))\n",
           TRUNCATE_RULE),
    Mutant("eta-by-cancellation", "truncation",
           "`η = sqrt(‖Ĉ‖² − ‖C1‖²)` instead of the norm of the difference",
           "tucker_ref/truncation.py",
           "    eta = float(np.linalg.norm(C - multi_mode_product(new_core, keep)))\n",
           "    eta = float(np.sqrt(max(norm_c**2 - float(np.linalg.norm(new_core))**2, 0.0)))\n",
           TRUNCATE_RULE),
    Mutant("fixed-clamp-missing", "truncation",
           "a non-adaptive mode truncated back with a tail above ϑ records no `\"fixed\"` clamp",
           "tucker_ref/integrators/substeps.py",
           '            report.clamps[i].append("fixed")\n',
           "            pass\n",
           ETA_BOUND),
    Mutant("rmax-not-applied", "truncation",
           "a rank above `rmax` is recorded as clamped but kept",
           "tucker_ref/truncation.py",
           "                r = hi\n",
           "                pass\n",
           ("tests/test_truncation.py::test_truncate_clamps_to_the_rank_bounds_and_records_it",
            "tests/test_truncation.py")),
    Mutant("rmin-not-applied", "truncation",
           "a rank below `rmin` is recorded as clamped but kept",
           "tucker_ref/truncation.py",
           "                r = lo\n",
           "                pass\n",
           ("tests/test_truncation.py::test_truncate_clamps_to_the_rank_bounds_and_records_it",
            "tests/test_truncation.py")),
    # -- K-parametrization ------------------------------------------------------------------
    Mutant("transposed-S", "K-parametrization",
           "`S_i = (Mat_i(C0) Q_i)^T`",
           "tucker_ref/integrators/substeps.py",
           "    S = M @ Q\n",
           "    S = (M @ Q).T\n",
           K_PARAMETRIZATION),
    Mutant("Q-not-orthonormal", "K-parametrization",
           "`Q_i = Mat_i(C0)^T` (spans the row space, not orthonormalized)",
           "tucker_ref/integrators/substeps.py",
           "    Q = np.ascontiguousarray(fix_signs(Rt.T))\n",
           "    Q = np.ascontiguousarray(M.T)\n",
           K_PARAMETRIZATION),
    Mutant("u-gradient-directions", "K-parametrization",
           "augments with `∇_U L = N_i Mat_i(C0)^T` (scaled by the core's singular values) instead of "
           "`∇_K L = N_i Q_i`",
           "tucker_ref/integrators/steps.py",
           "                new_directions = k_gradient(N, Q)\n",
           "                new_directions = u_gradient(N, Y.core, i)\n",
           ("tests/test_robustness.py",)),
    Mutant("k-step-wrong-sign", "K-step",
           "`K_i^1 = K_i^0 + λ ∇_K L` (ascent); invisible to the rank-adaptive step, whose augmented span "
           "`[U_i, K_i^1]` does not depend on the sign, but not to fixed-rank BUG",
           "tucker_ref/integrators/substeps.py",
           "    return K0 - lr * grad_K\n",
           "    return K0 + lr * grad_K\n",
           ("tests/test_integrators_steps.py",)),
    # -- augmentation -----------------------------------------------------------------------
    Mutant("one-projection-pass", "augmentation",
           "the new directions projected out of span U once instead of twice",
           "tucker_ref/integrators/substeps.py",
           "    for _ in range(2):\n        W = W - U @ (U.T @ W)\n",
           "    for _ in range(1):\n        W = W - U @ (U.T @ W)\n",
           ("tests/test_integrators_substeps.py",)),
    Mutant("no-reprojection", "augmentation",
           "the kept directions are not projected out of span U again before their QR",
           "tucker_ref/integrators/substeps.py",
           "        V = orthonormal_basis(V - U @ (U.T @ V))\n",
           "        V = orthonormal_basis(V)\n",
           ("tests/test_integrators_substeps.py",)),
    Mutant("new-directions-first", "augmentation",
           "`Û_i = [V_i, U_i]` (U not first) while `M̂_i = [I; 0]` is kept",
           "tucker_ref/integrators/substeps.py",
           "    U_hat = np.concatenate([U, V], axis=1)\n",
           "    U_hat = np.concatenate([V, U], axis=1)\n",
           ("tests/test_integrators_substeps.py",)),
    Mutant("skip-new-directions", "augmentation",
           "no new directions: `Û_i = U_i`",
           "tucker_ref/integrators/substeps.py",
           "    V = V[:, : n - r]\n",
           "    V = V[:, :0]\n",
           DESCENT),
    # -- S-step -----------------------------------------------------------------------------
    Mutant("galerkin-wrong-sign", "S-step",
           "`Ĉ1 = Ĉ0 + λ G ×_i Û_i^T`",
           "tucker_ref/integrators/substeps.py",
           "    return C_hat0 - lr * grad_core\n",
           "    return C_hat0 + lr * grad_core\n",
           DESCENT + ("tests/test_integrators_substeps.py",)),
    Mutant("s-step-gradient-old-basis", "S-step",
           "the S-step gradient taken in the old basis, `G ×_i U_i^T` zero-padded, instead of "
           "`G ×_i Û_i^T`",
           "tucker_ref/integrators/steps.py",
           "        return checked_core_gradient(oracle, point.bases, step, point.core.dtype)\n",
           "        return np.pad(checked_core_gradient(oracle, [B[:, :r] for B, r in zip(point.bases, "
           "point.ranks_before)], step, point.core.dtype), [(0, a - r) for a, r in zip(point.ranks, "
           "point.ranks_before)])\n",
           DESCENT),
    # -- oracle -----------------------------------------------------------------------------
    Mutant("mode-partial-wrong-unfolding", "oracle",
           "`N_i` unfolded with the other indices in F order (Kronecker order of `Q_i` not matched)",
           "tucker_ref/gradient_oracle.py",
           "        return unfold(self._projected(bases), mode)\n",
           "        return np.moveaxis(self._projected(bases), mode, 0).reshape(self.shape[mode], -1, "
           "order=\"F\")\n",
           ("tests/test_integrators_substeps.py",)),
    Mutant("conv-oracle-blocks-swapped", "oracle",
           "the Tucker conv oracle's block assembly puts the new input directions' columns before the kept ones",
           "tucker_ref/nn/tucker_functional.py",
           "                g = np.concatenate([left, right], axis=1)\n",
           "                g = np.concatenate([right, left], axis=1)\n",
           ("tests/test_nn_tucker.py",)),
    Mutant("conv-oracle-prefix-unchecked", "oracle",
           "the Tucker conv oracle reuses a kept product for any wider basis, without checking that the basis "
           "extends the kept factor",
           "tucker_ref/nn/tucker_functional.py",
           "        if B.shape[1] < r or not np.array_equal(B[:, :r], U):\n",
           "        if B.shape[1] < r:\n",
           ("tests/test_nn_tucker.py",)),
    Mutant("conv-oracle-kept-product-stale", "oracle",
           "the Tucker conv oracle reuses its kept `G ×_i U^T` after the factor changed",
           "tucker_ref/nn/tucker_functional.py",
           "        if kept is None or kept[0].shape != U.shape or not np.array_equal(kept[0], U):\n",
           "        if kept is None or kept[0].shape != U.shape:\n",
           ("tests/test_nn_tucker.py",)),
    # -- conv backward ----------------------------------------------------------------------
    Mutant("conv-kernel-gradient-flipped", "conv backward",
           "the kernel gradient returned flipped in both spatial axes (convolution vs correlation)",
           "tucker_ref/nn/functional.py",
           "    return (cols @ dy_mat.T).T.reshape((c_out, geo.x_shape[1]) + geo.kernel)\n",
           "    return (cols @ dy_mat.T).T.reshape((c_out, geo.x_shape[1]) + geo.kernel)"
           "[:, :, ::-1, ::-1]\n",
           ("tests/test_nn_functional.py",)),
    # -- float32 factorizations -------------------------------------------------------------
    Mutant("lq-triangle-not-transposed", "linalg",
           "a wide float32 matrix's left singular vectors taken from `R` of `A^T = Q R` instead of `L = R^T`",
           "tucker_ref/linalg.py",
           "    return qr_r(A.T).T\n",
           "    return qr_r(A.T)\n",
           ("tests/test_linalg.py",)),
    Mutant("no-svd-fallback", "linalg",
           "a float32 SVD that `sgesdd` does not converge on raises instead of falling back to `sgesvd`",
           "tucker_ref/linalg.py",
           "            except np.linalg.LinAlgError:\n                continue\n",
           "            except np.linalg.LinAlgError:\n                raise\n",
           ("tests/test_linalg.py",)),
    Mutant("scipy-threads-not-restored", "linalg",
           "scipy's OpenBLAS left on one thread after a float32 call",
           "tucker_ref/linalg.py",
           "        put(before)\n",
           "        put(1)\n",
           ("tests/test_linalg.py",)),
    Mutant("last-partial-batch-dropped", "data",
           "an epoch drops its last `N mod B` examples instead of serving them as a smaller batch",
           "tucker_ref/data.py",
           "        for idx in (order[start:start + batch_size] for start in range(0, len(order), batch_size))\n",
           "        for idx in (order[start:start + batch_size] for start in range(0, len(order) - batch_size + 1, "
           "batch_size))\n",
           ("tests/test_data.py",)),
    Mutant("labels-out-of-step-with-images", "data",
           "a mini-batch's labels taken in sorted index order while its images follow the shuffled order",
           "tucker_ref/data.py",
           "        (dataset.images[idx], dataset.labels[idx])\n",
           "        (dataset.images[idx], dataset.labels[np.sort(idx)])\n",
           ("tests/test_data.py",)),
    Mutant("pixels-scaled-by-256", "data",
           "pixels divided by 256 instead of 255 (white is 0.996, not 1)",
           "tucker_ref/data.py",
           "    return (pixels.astype(dtype) / dtype.type(255))[:, None, :, :]\n",
           "    return (pixels.astype(dtype) / dtype.type(256))[:, None, :, :]\n",
           ("tests/test_data.py",)),
    # -- fixed-rank BUG ---------------------------------------------------------------------
    Mutant("fixed-rank-core-not-transformed", "fixed-rank BUG",
           "the fixed-rank S-step starts from `C0` instead of `C̃ = C0 ×_i U_i^{1T} U_i^0`",
           "tucker_ref/integrators/steps.py",
           "    return TuckerTensor(multi_mode_product(Y.core, [U1.T @ U for U1, U in zip(U1s, Y.factors)]), U1s)\n",
           "    return TuckerTensor(Y.core, U1s)\n",
           ("tests/test_integrators_steps.py",)),
    # -- training ---------------------------------------------------------------------------
    Mutant("validation-carved-from-test", "training",
           "`--validation` images drawn from the test set (which they then overlap), the training set kept whole",
           "tucker_ref/training/trainer.py",
           "            self.train_set, validation_set = validation_split(self.train_set, config.validation)\n",
           "            _, validation_set = validation_split(self.test_set, config.validation)\n",
           ("tests/test_training.py::test_validation_split_is_held_out_and_logged", "tests/test_training.py")),
    Mutant("evaluated-on-training-set", "training",
           "the end-of-epoch evaluation reported as test accuracy runs on the training set",
           "tucker_ref/training/trainer.py",
           "            test = evaluate(self.model, self.test_set)\n",
           "            test = evaluate(self.model, self.train_set)\n",
           ("tests/test_training.py::test_reported_test_metrics_are_the_saved_models_on_the_test_set",
            "tests/test_training.py")),
    Mutant("compression-counts-the-core-only", "training",
           "a factorized layer's stored parameters counted as `∏ r_i` (the core), without the factors' `Σ n_i r_i`",
           "tucker_ref/training/metrics.py",
           "        stored = W.n_params if factorized else int(W.size)\n",
           "        stored = W.core.size if factorized else int(W.size)\n",
           ("tests/test_training.py",)),
    Mutant("compression-counts-biases", "training",
           "the biases counted in the stored weights of the compression rates (the DLRT convention excludes them)",
           "tucker_ref/training/metrics.py",
           "        sums[\"weights\"] += stored\n",
           "        sums[\"weights\"] += stored + (0 if getattr(layer, \"bias\", None) is None else layer.bias.size)\n",
           ("tests/test_training.py",)),
    Mutant("descent-record-without-dense-parameters", "training",
           "the `--check-descent` record's `‖Π∇L‖²` leaves out the dense parameters (biases, fc2), where Π is "
           "the identity",
           "tucker_ref/training/methods.py",
           "        proj_sq = plain_sq + sum(r[\"proj_grad_norm\"] ** 2 for r in reports.values())\n",
           "        proj_sq = sum(r[\"proj_grad_norm\"] ** 2 for r in reports.values())\n",
           ("tests/test_training.py",)),
    Mutant("tdlrt-clip-without-dense-gradients", "training",
           "TDLRT's gradient clipping measures the core gradients only, not the biases' and dense layers'",
           "tucker_ref/training/methods.py",
           "            scale = self.clip_scale(self.squared_norm(core_grads.values())\n"
           "                                    + self.squared_norm(grads[k] for k in dense_keys))\n",
           "            scale = self.clip_scale(self.squared_norm(core_grads.values()))\n",
           ("tests/test_training.py::test_clipping_bounds_the_whole_update",
            "tests/test_training.py")),
    Mutant("naive-clip-without-factors", "training",
           "naive-tucker's gradient clipping leaves the core and factor gradients out of the joint norm",
           "tucker_ref/training/methods.py",
           "            every = keys + [k for ks in factor_keys.values() for k in ks]\n",
           "            every = keys\n",
           ("tests/test_training.py::test_naive_tucker_clipping_bounds_the_step_of_every_parameter",
            "tests/test_training.py")),
    Mutant("fixed-rank-s-step-without-second-pass", "training",
           "fixed-rank BUG's S-steps take the oracles of the first pass (at `Θ0`) instead of a second pass at the "
           "joint projected point",
           "tucker_ref/training/methods.py",
           "            regrad()\n"
           "            joint = {name: layer.gradient_oracle() for name, layer in layers.items()}\n",
           "            joint = {name: layer.gradient_oracle() for name, layer in layers.items()}\n",
           ("tests/test_training.py",)),
    Mutant("batch-order-ignores-seed", "training",
           "the mini-batch order drawn from a fixed seed instead of `--seed` (runs of different seeds see "
           "the same order)",
           "tucker_ref/training/runstate.py",
           "        rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])\n",
           "        rng = np.random.default_rng(np.random.SeedSequence(0).spawn(3)[2])\n",
           ("tests/test_training.py::test_seed_draws_the_initialization_and_the_batch_order",
            "tests/test_training.py")),
    Mutant("factorized-init-ignores-seed", "training",
           "the factorized methods' dense starting point drawn from a fixed seed instead of `--seed`",
           "tucker_ref/training/trainer.py",
           "    dense = lenet5(dtype=np.float64, seed=config.seed)\n",
           "    dense = lenet5(dtype=np.float64, seed=0)\n",
           ("tests/test_training.py::test_seed_draws_the_initialization_and_the_batch_order",
            "tests/test_training.py")),
    Mutant("full-init-ignores-seed", "training",
           "the dense model initialized from a fixed seed instead of `--seed`",
           "tucker_ref/training/trainer.py",
           "        return lenet5(dtype=dtype, seed=config.seed)\n",
           "        return lenet5(dtype=dtype, seed=0)\n",
           ("tests/test_training.py::test_seed_draws_the_initialization_and_the_batch_order",
            "tests/test_training.py")),
    Mutant("checkpoint-arrays-hash-unchecked", "training",
           "a checkpoint's array file is loaded without comparing its SHA-256 with the one recorded",
           "tucker_ref/training/checkpoint.py",
           "    if _sha256(npz) != record[\"arrays_sha256\"]:\n",
           "    if False:\n",
           ("tests/test_training.py",)),
    Mutant("resume-skips-a-batch", "training",
           "a run resumed in the middle of an epoch skips one batch more than it had done",
           "tucker_ref/training/trainer.py",
           "                    if b < s.batch_in_epoch:\n",
           "                    if b <= s.batch_in_epoch:\n",
           ("tests/test_training.py",)),
    Mutant("parameters-not-checked-after-update", "training",
           "non-finite parameters after an update are not caught at that step",
           "tucker_ref/training/trainer.py",
           "        self._check_parameters()\n",
           "        pass\n",
           ("tests/test_training.py::test_a_non_finite_parameter_stops_the_run_at_the_update_that_made_it",
            "tests/test_training.py")),
    Mutant("golden-nan-passes", "golden files",
           "a NaN output passes the golden comparison (`not diff > allowed` instead of `diff <= allowed`)",
           "tucker_ref/golden/compare.py",
           "            passed = diff <= tol.allowed(exp)  # NaN fails here\n",
           "            passed = not diff > tol.allowed(exp)\n",
           ("tests/test_golden.py",)),
    Mutant("golden-missing-outputs-accepted", "golden files",
           "a golden comparison that requires every output passes when some are missing",
           "tucker_ref/golden/compare.py",
           "    if require_all and missing:\n",
           "    if False and missing:\n",
           ("tests/test_golden.py",)),
    Mutant("check-descent-in-float32", "training",
           "`--check-descent` runs in float32 by default instead of float64 (its first-order comparison "
           "needs float64)",
           "tucker_ref/training/config.py",
           "            c.dtype = \"float64\" if c.check_descent else DEFAULT_DTYPE\n",
           "            c.dtype = DEFAULT_DTYPE\n",
           ("tests/test_training.py",)),
    # -- Tucker algebra and HOSVD -----------------------------------------------------------
    Mutant("norm-assumes-orthonormal", "Tucker algebra",
           "the factored norm `‖C ×_i R_i‖` taken as `‖C‖`, right only for orthonormal factors",
           "tucker_ref/tucker.py",
           "        rs = [linalg.qr_r(U) if U.shape[0] >= U.shape[1] else U for U in self.factors]\n",
           "        rs = [np.eye(U.shape[1], dtype=U.dtype) for U in self.factors]\n",
           ("tests/test_tucker.py",)),
    Mutant("hosvd-whole-budget-per-mode", "HOSVD",
           "each mode of the HOSVD spends the whole budget `ϑ` instead of `ϑ/√d`",
           "tucker_ref/truncation.py",
           "            share = threshold / math.sqrt(d) if not sequential else math.sqrt(\n",
           "            share = threshold if not sequential else math.sqrt(\n",
           ("tests/test_truncation.py",)),
    Mutant("st-hosvd-not-sequential", "HOSVD",
           "ST-HOSVD takes every mode's SVD of the original tensor, not of the tensor projected in the "
           "earlier modes",
           "tucker_ref/truncation.py",
           "        P, s = left_singular(unfold(work if sequential else X, i))\n",
           "        P, s = left_singular(unfold(X, i))\n",
           ("tests/test_truncation.py",)),
    Mutant("certificate-largest-tail", "HOSVD",
           "the error certificate is the largest mode tail instead of `sqrt(Σ tail_i²)`",
           "tucker_ref/truncation.py",
           "        certificate=float(np.sqrt(sum(a * a + b * b for a, b in zip(tails, dropped)))),\n",
           "        certificate=float(max(np.hypot(a, b) for a, b in zip(tails, dropped))),\n",
           ("tests/test_truncation.py",)),
    # -- manifold ---------------------------------------------------------------------------
    Mutant("tangent-factor-term-unprojected", "manifold",
           "the factor terms of `P(Y)Z` omit the projection onto the row space of `Mat_i(C)`",
           "tucker_ref/manifold.py",
           "        out = out + multi_mode_product(fold((F @ Q) @ Q.T, i, term_shape), mats)\n",
           "        out = out + multi_mode_product(fold(F, i, term_shape), mats)\n",
           ("tests/test_manifold.py",)),
    Mutant("riemannian-cross-block-sign", "baselines",
           "the Riemannian step's factor blocks carry `+λC` instead of `−λC`",
           "tucker_ref/integrators/baselines.py",
           "        Z[tuple(slice(k, 2 * k) if j == i else slice(0, rj) for j, rj in enumerate(r))] = -lr * Y.core\n",
           "        Z[tuple(slice(k, 2 * k) if j == i else slice(0, rj) for j, rj in enumerate(r))] = lr * Y.core\n",
           ("tests/test_baselines.py",)),
    # -- layers -----------------------------------------------------------------------------
    Mutant("relu-gradient-at-zero", "layers",
           "relu's derivative at exactly 0 taken as 1 (PyTorch takes 0)",
           "tucker_ref/nn/functional.py",
           "    return dy * (x > 0)\n",
           "    return dy * (x >= 0)\n",
           ("tests/test_nn_functional.py",)),
    Mutant("pool-overlap-overwrites", "layers",
           "max-pool backward stores instead of accumulating where windows overlap (stride < kernel)",
           "tucker_ref/nn/functional.py",
           "    disjoint = all(s >= k for s, k in zip(cache.stride, cache.kernel))\n",
           "    disjoint = True\n",
           ("tests/test_nn_functional.py",)),
    Mutant("tucker-conv-dU_h-without-U_w", "layers",
           "the Tucker conv's `dU_h` contracts `dK` with `Mat_3(C)` instead of `Mat_3(C ×_4 U_w)`",
           "tucker_ref/nn/tucker_functional.py",
           "    dU_h = unfold(dK, 2) @ unfold(mode_product(T.core, U_w, 3), 2).T\n",
           "    dU_h = unfold(dK, 2) @ unfold(T.core, 2).T\n",
           ("tests/test_nn_tucker.py",)),
    Mutant("low-rank-dU-core-untransposed", "layers",
           "the low-rank dense layer's `dU = dy^T (x V) S` instead of `dy^T (x V) S^T` (silent for a square core)",
           "tucker_ref/nn/tucker_functional.py",
           "    dU = dy.T @ (a @ T.core.T)\n",
           "    dU = dy.T @ (a @ T.core)\n",
           ("tests/test_nn_tucker.py",)),
    Mutant("low-rank-dx-through-core-transposed", "layers",
           "the low-rank dense layer's input gradient through `S^T` instead of `S`",
           "tucker_ref/nn/tucker_functional.py",
           "    da = dc @ T.core\n",
           "    da = dc @ T.core.T\n",
           ("tests/test_nn_tucker.py",)),
    # -- optimizers -------------------------------------------------------------------------
    Mutant("heavy-ball-dampened", "optimizers",
           "heavy ball `v ← μv + (1 − μ)g` (dampened) instead of PyTorch's `v ← μv + g`",
           "tucker_ref/integrators/optim.py",
           "            velocity = self.momentum * state + grad\n",
           "            velocity = self.momentum * state + (1 - self.momentum) * grad\n",
           ("tests/test_crosscheck_torch_optim.py",)),
    Mutant("adam-v-uncorrected", "optimizers",
           "Adam's second moment used without its bias correction `1/(1 − β2^t)`",
           "tucker_ref/integrators/optim.py",
           "        direction = (m / dt(1 - b1 ** t)) / (np.sqrt(v / dt(1 - b2 ** t)) + dt(self.eps))\n",
           "        direction = (m / dt(1 - b1 ** t)) / (np.sqrt(v) + dt(self.eps))\n",
           ("tests/test_crosscheck_torch_optim.py",)),
    Mutant("adam-eps-inside-sqrt", "optimizers",
           "Adam's `ε` added under the square root, `√(v̂ + ε)`, instead of to `√v̂` (PyTorch)",
           "tucker_ref/integrators/optim.py",
           "        direction = (m / dt(1 - b1 ** t)) / (np.sqrt(v / dt(1 - b2 ** t)) + dt(self.eps))\n",
           "        direction = (m / dt(1 - b1 ** t)) / np.sqrt(v / dt(1 - b2 ** t) + dt(self.eps))\n",
           ("tests/test_crosscheck_torch_optim.py",)),
    Mutant("adam-v-transported-linearly", "optimizers",
           "Adam's `v` transported like `m` (linearly, can turn negative) instead of by `(√v ×_i A_i)²`",
           "tucker_ref/integrators/optim.py",
           '        return {"m": multi_mode_product(state["m"], matrices), "v": root * root, "t": state["t"]}\n',
           '        return {"m": multi_mode_product(state["m"], matrices), "v": multi_mode_product(state["v"], '
           'matrices), "t": state["t"]}\n',
           ("tests/test_integrators_cycle.py::test_adam_second_moment_transport_is_a_heuristic",
            "tests/test_integrators_cycle.py")),
    Mutant("cosine-quarter-period", "optimizers",
           "the cosine schedule runs a quarter period (`cos(πt/2)`), ending at `lr` halfway instead of "
           "`lr_min`",
           "tucker_ref/integrators/optim.py",
           "        return lr_min + (lr - lr_min) * 0.5 * (1.0 + math.cos(math.pi * t))\n",
           "        return lr_min + (lr - lr_min) * 0.5 * (1.0 + math.cos(0.5 * math.pi * t))\n",
           ("tests/test_integrators_steps.py",)),
    # -- data -------------------------------------------------------------------------------
    Mutant("split-smallest-remainders", "data",
           "the stratified split gives its left-over test examples to the classes with the smallest "
           "remainders instead of the largest",
           "tucker_ref/data.py",
           "    extra = np.argsort(-remainders, kind=\"stable\")[: n_test - int(quotas.sum())]\n",
           "    extra = np.argsort(remainders, kind=\"stable\")[: n_test - int(quotas.sum())]\n",
           ("tests/test_data.py",)),
    # -- the authors' cycle -----------------------------------------------------------------
    Mutant("s-step-state-not-carried", "cycle",
           "the optimizer state of an S-step is not passed on to the next S-step of the cycle",
           "tucker_ref/integrators/steps.py",
           "    return replace(point, core=core, optimizer_state=state, s_steps=point.s_steps + 1)\n",
           "    return replace(point, core=core, optimizer_state=point.optimizer_state, s_steps=point.s_steps + 1)\n",
           ("tests/test_integrators_cycle.py",)),
    Mutant("cycle-s-steps-reuse-opening-gradient", "cycle",
           "the trainer's later S-steps of a cycle take the opening batch's gradient oracle instead of the "
           "current batch's",
           "tucker_ref/training/methods.py",
           "            core_grads[name] = galerkin_gradient(point, oracle, name=name, caller=\"tdlrt_step\")\n",
           "            core_grads[name] = galerkin_gradient(point, self.cycles[name][\"oracle0\"], name=name, "
           "caller=\"tdlrt_step\")\n",
           ("tests/test_training.py::test_cycle_s_steps_take_each_batch_gradient_at_the_current_point",
            "tests/test_training.py")),
    Mutant("cycle-not-closed-at-epoch-end", "cycle",
           "a cycle runs on across the epoch boundary (and past the end of training) instead of closing",
           "tucker_ref/training/methods.py",
           "        close = close_cycle or next(iter(self.cycles.values()))[\"point\"].s_steps >= c.s_steps\n",
           "        close = next(iter(self.cycles.values()))[\"point\"].s_steps >= c.s_steps\n",
           ("tests/test_training.py::test_s_steps_cycle_spans_k_batches_and_closes_at_the_epoch_end",
            "tests/test_training.py")),
    # -- optimizer transport ----------------------------------------------------------------
    Mutant("no-transport-at-truncation", "optimizer transport",
           "the core state is cut to the new ranks (leading block) instead of transported by `P_i^T`",
           "tucker_ref/integrators/steps.py",
           "        state = transporter.transport(point.optimizer_state, [U1.T @ Uh for U1, Uh in "
           "zip(Y_new.factors, point.bases)])\n",
           "        state = transporter.transport(point.optimizer_state, [np.eye(U1.shape[1], Uh.shape[1]) for U1, "
           "Uh in zip(Y_new.factors, point.bases)])\n",
           ("tests/test_integrators_cycle.py",)),
)


def by_name() -> dict:
    names = [m.name for m in MUTANTS]
    assert len(set(names)) == len(names), "mutant names must be unique"
    return {m.name: m for m in MUTANTS}


def test_stages(tree: Path, first=(), only_first: bool = False) -> list[list[str]]:
    """The pytest runs, in order: the node ids ``file::test`` of ``first``, then its test files
    followed by every other ``tests/test_*.py`` of ``tree`` (sorted; omitted with ``only_first``).

    Two runs because pytest collects a node id and its file in file order: given together, the
    named test would not run first. A node id's file still runs in full in the second stage.
    """
    rest = sorted(str(p.relative_to(tree)) for p in (tree / "tests").glob("test_*.py"))
    for f in first:
        if f.split("::")[0] not in rest:
            raise FileNotFoundError(f"{f} is not in a test file of {tree}")
    nodes = [f for f in first if "::" in f]
    files = [f for f in first if "::" not in f]
    stages = [nodes] if nodes else []
    stages.append(files + ([] if only_first else [f for f in rest if f not in files]))
    return [s for s in stages if s]


def apply(mutant: Mutant, tree: Path) -> None:
    """Replace ``mutant.old`` by ``mutant.new`` in the copy (``old`` must occur exactly once)."""
    path = tree / mutant.path
    text = path.read_text(encoding="utf-8")
    count = text.count(mutant.old)
    if count != 1:
        raise ValueError(f"mutant {mutant.name}: the text to replace occurs {count} times in {mutant.path}, "
                         "expected exactly once (the source changed: update the mutant)")
    path.write_text(text.replace(mutant.old, mutant.new), encoding="utf-8")


def environment(tree: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["HYPOTHESIS_PROFILE"] = "ci"
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_import(tree: Path, env: dict) -> None:
    """``tucker_ref`` as the copy's tests will import it must be the copy's (not an installed one)."""
    out = subprocess.run([sys.executable, "-c", "import tucker_ref; print(tucker_ref.__file__)"], cwd=tree, env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    if not Path(out).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"tucker_ref would be imported from {out}, not from the copy {tree}")


FAILED_LINE = re.compile(r"^(FAILED|ERROR) (\S+)")
#: The test that this table's texts still occur in the source: in a mutated copy one of them is
#: gone by construction, so it would "kill" every mutant that the real tests let through.
SELF_CHECK = "tests/test_validation_scripts.py::test_every_mutant_still_finds_the_text_it_changes"


def run_suite(tree: Path, first, timeout: float, only_first: bool = False) -> dict:
    """Run the CI-profile suite in ``tree`` (``-x``, stages of :func:`test_stages`); the first
    failing test, or ``None`` if all passed."""
    env = environment(tree)
    check_import(tree, env)
    start = time.perf_counter()
    tail = ""
    for stage in test_stages(tree, first, only_first):
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-rfE", "--deselect", SELF_CHECK,
               *stage]
        left = timeout - (time.perf_counter() - start)
        try:
            proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=max(left, 1.0))
        except subprocess.TimeoutExpired:
            return {"failed": True, "first_failure": f"(timeout after {timeout:.0f} s)", "seconds": timeout,
                    "tail": ""}
        tail = "\n".join(proc.stdout.splitlines()[-3:])
        if proc.returncode != 0:
            failures = [m.group(2) for line in proc.stdout.splitlines() if (m := FAILED_LINE.match(line))]
            first_failure = failures[0] if failures else f"(pytest exit code {proc.returncode}, no test named)"
            return {"failed": True, "first_failure": first_failure, "seconds": time.perf_counter() - start,
                    "tail": tail}
    return {"failed": False, "first_failure": None, "seconds": time.perf_counter() - start, "tail": tail}


def run_one(source: Path, mutant: Mutant | None, timeout: float, only_first: bool = False) -> dict:
    """Copy ``source`` to a temporary directory, apply ``mutant`` (``None``: the control), run the suite."""
    with tempfile.TemporaryDirectory(prefix="tucker_ref_mutant_") as tmp:
        tree = Path(tmp) / "repo"
        shutil.copytree(source, tree, ignore=IGNORED, symlinks=True)
        if mutant is not None:
            apply(mutant, tree)
        result = run_suite(tree, mutant.tests if mutant else (), timeout, only_first and mutant is not None)
    result["name"] = "control (no mutation)" if mutant is None else mutant.name
    return result


def markdown_table(results: list[dict]) -> str:
    mutants = by_name()
    lines = ["| mutant | area | what it changes | first failing test | killed |", "|---|---|---|---|---|"]
    for r in results:
        m = mutants[r["name"]]
        test = f"`{r['first_failure']}`" if r["first_failure"] else "—"
        killed = "yes" if r["failed"] else "**no**"
        lines.append(f"| `{m.name}` | {m.area} | {m.what} (`{m.path}`) | {test} | {killed} |")
    return "\n".join(lines)


def write_docs(table: str, summary: str) -> Path:
    """Replace the block between the markers of this repository's docs page (not the mutated tree's)."""
    page = ROOT / DOCS_PAGE
    text = page.read_text(encoding="utf-8")
    if TABLE_START not in text or TABLE_END not in text:
        raise ValueError(f"{page} has no {TABLE_START} … {TABLE_END} block to replace")
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    page.write_text(f"{head}{TABLE_START}\n{summary}\n\n{table}\n{TABLE_END}{tail}", encoding="utf-8")
    return page


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this mutant (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once (default 1)")
    parser.add_argument("--tree", type=Path, default=ROOT, help="repository to copy (default: this one)")
    parser.add_argument("--no-control", action="store_true", help="skip the run of the unmutated copy")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per suite run (default 1800)")
    parser.add_argument("--write-docs", action="store_true",
                        help=f"write the table into {DOCS_PAGE} (between the mutation-table markers)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    parser.add_argument("--first-only", action="store_true",
                        help="run only each mutant's own test files (a quick check; not the table's verdict)")
    args = parser.parse_args(argv)

    mutants = by_name()
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:30s} {m.area:20s} {m.what}")
        return 0
    selected = [mutants[n] for n in args.only] if args.only else list(MUTANTS)
    unknown = [n for n in (args.only or []) if n not in mutants]
    if unknown:
        parser.error(f"unknown mutant(s) {unknown}; see --list")
    source = args.tree.resolve()
    for m in selected:  # fail early on a stale mutant, before any suite runs
        text = (source / m.path).read_text(encoding="utf-8")
        if text.count(m.old) != 1:
            raise SystemExit(f"mutant {m.name}: its text occurs {text.count(m.old)} times in {m.path} (expected 1)")

    start = time.perf_counter()
    if not args.no_control:
        control = run_one(source, None, args.timeout)
        print(f"control (no mutation): {'FAILED at ' + control['first_failure'] if control['failed'] else 'passed'}"
              f" in {control['seconds']:.0f} s", flush=True)
        if control["failed"]:
            print(control["tail"])
            print("The unmutated suite fails: fix that first (every mutant would count as killed).")
            return 2

    def job(m):
        r = run_one(source, m, args.timeout, args.first_only)
        print(f"{m.name:30s} {'killed' if r['failed'] else 'SURVIVED':8s} {r['seconds']:6.0f} s  "
              f"{r['first_failure'] or ''}", flush=True)
        return r

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(job, selected))
    elapsed = time.perf_counter() - start
    survivors = [r["name"] for r in results if not r["failed"]]
    table = markdown_table(results)
    summary = (f"{len(results) - len(survivors)} of {len(results)} mutants killed"
               + (f"; survivors: {', '.join(survivors)}" if survivors else "")
               + f" (`python validation/mutants.py`, {elapsed / 60:.0f} min with one job).")
    print()
    print(table)
    print()
    print(summary)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    if args.write_docs:
        if args.only or args.first_only:
            raise SystemExit("--write-docs needs the full run (no --only, no --first-only)")
        print(f"wrote {write_docs(table, summary)}")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
