"""Golden files: a versioned set of reference cases to check other implementations against.

A golden set is a directory with one ``.npz`` file per case and a JSON manifest
(:data:`MANIFEST_NAME`, fields in :data:`MANIFEST_FIELDS`, documented in ``docs/crosscheck.md``).
Each npz holds the case's input arrays under ``input/<name>`` and the outputs tucker_ref
computed from them under ``output/<name>``; non-array settings (stride, learning rate, ``tau``)
are the case's ``params`` in the manifest. The canonical set ships in
``tucker_ref/golden_data`` (:func:`default_golden_dir`)::

    tucker-ref golden write DIR     # write the set (float64, small sizes, seeded)
    tucker-ref golden check [DIR]   # recompute every case, compare; exit 1 on any failure

Checking another implementation: ``inputs, expected, tolerances = load_case(DIR, name)``, run
your code on ``inputs``, then ``compare_case(yours, expected, tolerances)`` (see
``docs/crosscheck.md`` for a worked PyTorch example).

What is stored (docs/crosscheck.md §3). QR and SVD outputs are unique only up to signs and
basis choice, so every output that depends on such a choice is stored as a **basis-invariant**
quantity: projectors ``U U^T``, ``Q_iQ_i^T``, ``Û_iÛ_i^T``, the products ``K_iQ_i^T`` and
``∇_{K_i}L Q_i^T``, and dense tensors (``Ĉ0 ×_i Û_i``, ``Ĉ1 ×_i Û_i``, ``Y1``, reconstructions).
Factor-dependent outputs (Tucker conv gradients ``dU_i``, tangent factors ``δU_i``) are well
defined because the factors are *inputs* (pinned), not computed. No sign convention is needed
to compare a set; tucker_ref's own conventions (``fix_signs``, ``diag(R) ≥ 0``, U-first
augmentation) are listed in the manifest's ``conventions`` for readers.

Well-posedness, re-verified whenever a case is computed (writing or checking): every core has
full-row-rank unfoldings with ``cond(Mat_i(C)) ≤`` :data:`MAX_CORE_CONDITION` (no rank-deficient
cores), subspaces are taken across relative spectral gaps ``≥`` :data:`MIN_RELATIVE_GAP`, and
every rank decision ``tail ≤ ϑ`` has every tail at least a factor :data:`DECISION_MARGIN` away
from ``ϑ``: the stored ranks cannot flip under rounding in another implementation.

Comparison (per output): ``normwise`` means ``‖actual − expected‖_F ≤ atol + rtol·‖expected‖_F``
(shapes must match); ``exact`` means equal integers (ranks). A manifest's tolerances must be
finite with ``0 ≤ rtol ≤`` :data:`MAX_RTOL` and ``0 ≤ atol ≤`` :data:`MAX_ATOL` (``rtol = atol =
0`` for ``exact``); a case with any other tolerance fails, so an edited manifest cannot make
garbage pass.

Faults (:func:`check_golden`): each case fails on its own (a missing, altered, truncated or
unreadable npz, a manifest entry that is not an object or lacks a field, a bad tolerance, a
duplicate name, an error while recomputing) with the reason in its ``problems``; every case of
:func:`case_names` that the manifest does not list fails as missing, so a cut manifest does not
pass; a manifest that cannot be read at all (not UTF-8, not JSON, wrong schema) raises one
:class:`GoldenError` naming the file. ``tucker-ref golden check`` prints the report to stdout
and every error to stderr.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path

import numpy as np

from . import __version__
from .integrators.steps import tdlrt_step
from .integrators.substeps import augment_basis, galerkin_step, k_gradient, k_parametrization
from .manifold import normal_component_norm, tangent_projection, tangent_vector
from .nn.functional import conv2d, conv2d_backward
from .nn.tucker_functional import TuckerConvGradient, tucker_conv2d, tucker_conv2d_backward
from .truncation import hosvd, tail_norms
from .tucker import TuckerTensor, fold, mode_product, multi_mode_product, random_orthonormal, unfold

__all__ = [
    "COMPARISONS",
    "DECISION_MARGIN",
    "MANIFEST_FIELDS",
    "MANIFEST_NAME",
    "MAX_ATOL",
    "MAX_CORE_CONDITION",
    "MAX_RTOL",
    "MIN_RELATIVE_GAP",
    "RTOL_ALGEBRA",
    "RTOL_SPECTRAL",
    "SCHEMA",
    "SCHEMA_VERSION",
    "CaseResult",
    "GoldenError",
    "Tolerance",
    "case_names",
    "check_golden",
    "compare_case",
    "default_golden_dir",
    "load_case",
    "load_manifest",
    "run_command",
    "write_golden",
]

#: Identifies a tucker_ref golden manifest (its ``schema`` field).
SCHEMA = "tucker_ref.golden"
#: Version of the manifest layout; :func:`check_golden` rejects any other version.
SCHEMA_VERSION = 1
#: File name of the manifest inside a golden directory.
MANIFEST_NAME = "manifest.json"

#: The manifest's fields (schema version 1). ``inputs``/``outputs`` map an array name to its
#: description; an npz key is ``input/<name>`` or ``output/<name>``.
MANIFEST_FIELDS = {
    "schema": f"always {SCHEMA!r}",
    "schema_version": "int, the layout version (this module reads exactly SCHEMA_VERSION)",
    "tucker_ref_version": "version of tucker_ref that wrote the set",
    "numpy_version": "version of numpy that wrote the set (information only)",
    "conventions": "dict: the unfolding order, mode numbering and tucker_ref's sign conventions",
    "comparisons": "dict: the meaning of each comparison kind",
    "cases": "list of cases, each with the fields below",
    "cases[].name": "unique case name; the npz file is <name>.npz",
    "cases[].kind": "which computation the case exercises (unfold_fold, mode_products, hosvd, "
                    "tangent_projection, conv2d, tucker_conv2d, tdlrt_step)",
    "cases[].description": "what the case computes, in formulas",
    "cases[].file": "npz file name, relative to the manifest",
    "cases[].sha256": "hex SHA-256 of the npz file's bytes",
    "cases[].seed": "seed of numpy.random.default_rng that drew the inputs",
    "cases[].params": "dict of non-array settings (JSON numbers, lists, booleans)",
    "cases[].inputs": "{name: {shape: list of int, dtype: str}}",
    "cases[].outputs": "{name: {shape, dtype, rtol, atol, comparison, description}}",
}

#: Comparison kinds of an output.
COMPARISONS = {
    "normwise": "‖actual − expected‖_F ≤ atol + rtol·‖expected‖_F, shapes equal",
    "exact": "integer arrays, equal entry by entry, shapes equal",
}

#: rtol of products and convolutions of O(1) random data: different summation orders (BLAS,
#: PyTorch, JAX) differ by ~sqrt(K)·eps relative for K-term sums, ≤ 1e-14 at these sizes.
RTOL_ALGEBRA = 1e-12
#: rtol of quantities from SVD/QR (projectors, singular values, truncations): perturbation
#: theory bounds their error by ~eps·‖input‖/gap, ≤ ~1e-12 for relative gaps ≥ MIN_RELATIVE_GAP
#: and cores with cond ≤ MAX_CORE_CONDITION; 1e-10 leaves room for other LAPACKs.
RTOL_SPECTRAL = 1e-10
#: Largest condition number of a core unfolding ``Mat_i(C)`` allowed in a golden case.
MAX_CORE_CONDITION = 100.0
#: Smallest relative gap ``(σ_r − σ_{r+1})/σ_1`` across which a case takes a subspace (HOSVD
#: factors, truncated bases, the span of the augmentation's new directions).
MIN_RELATIVE_GAP = 1e-3
#: Every tail of a rank decision lies outside ``[ϑ/DECISION_MARGIN, ϑ·DECISION_MARGIN]``.
DECISION_MARGIN = 2.0
#: Largest ``rtol`` a manifest may give an output: 10^4 × :data:`RTOL_SPECTRAL`, room for any
#: float64 implementation, far below what a wrong one produces.
MAX_RTOL = 1e-6
#: Largest ``atol`` a manifest may give an output (the shipped set's largest is below 1e-7; its
#: arrays are O(1) to O(10^3)).
MAX_ATOL = 1e-6

_CONVENTIONS = {
    "unfolding": "Mat_i(X) = moveaxis(X, i, 0).reshape(n_i, -1) (C order: remaining modes increasing, "
                 "last fastest); Mat_i(C x_j U_j) = U_i Mat_i(C) (U_1 kron ... U_{i-1} kron U_{i+1} ... U_d)^T",
    "modes": "numbered from 0; conv kernels are (out, in, kh, kw), inputs (N, C, H, W) as in PyTorch",
    "mode_product": "X x_i M with M of shape (J, n_i): Mat_i(X x_i M) = M Mat_i(X)",
    "signs": "tucker_ref flips each left singular vector so its largest-magnitude entry is positive, takes "
             "QR with diag(R) >= 0, and augments U first (U_hat = [U, V]); golden outputs do not depend on "
             "these choices (projectors and dense tensors only)",
    "conv": "cross-correlation with zero padding, PyTorch's conv2d semantics (stride, padding, dilation)",
}


class GoldenError(ValueError):
    """A golden set or case that cannot be used: bad manifest, unknown schema version, an
    altered or missing file, an unknown case, or a case whose data are not well posed."""


@dataclass(frozen=True)
class Tolerance:
    """How one output is compared: see :data:`COMPARISONS`."""

    rtol: float
    atol: float
    comparison: str = "normwise"

    def allowed(self, expected: np.ndarray) -> float:
        """``atol + rtol·‖expected‖_F`` (the largest accepted ``‖actual − expected‖_F``)."""
        return self.atol + self.rtol * float(np.linalg.norm(np.ravel(expected)))


@dataclass
class CaseResult:
    """Outcome of comparing one case.

    Attributes
    ----------
    name : str
    ok : bool
        ``True`` iff every compared output is within its tolerance and nothing else failed.
    max_rel_error : float
        Max over the compared outputs of ``‖actual − expected‖_F / ‖expected‖_F`` (the absolute
        error where ``expected`` is zero); ``inf`` when the case could not be compared.
    worst_output : str or None
        The output attaining ``max_rel_error``.
    errors : dict
        Per compared output, its relative error as above.
    problems : list of str
        Why the case failed (empty when ``ok``).
    """

    name: str
    ok: bool
    max_rel_error: float
    worst_output: str | None = None
    errors: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)

    def line(self) -> str:
        """One line: name, max relative error, ``ok`` or ``FAIL`` with the first problem."""
        worst = f" ({self.worst_output})" if self.worst_output and self.max_rel_error > 0 else ""
        status = "ok" if self.ok else "FAIL: " + "; ".join(self.problems)
        return f"{self.name:<32} max rel err {self.max_rel_error:9.2e}{worst:<22} {status}"


@dataclass(frozen=True)
class _Output:
    value: np.ndarray
    tolerance: Tolerance
    description: str


def _exact(value, description: str) -> _Output:
    return _Output(np.asarray(value, dtype=np.int64), Tolerance(0.0, 0.0, "exact"), description)


def _normwise(value, rtol: float, description: str, *, scale: float = 0.0) -> _Output:
    """An output compared normwise; ``scale > 0`` adds ``atol = rtol·scale`` for quantities that
    may vanish (tails, η, ε) and whose rounding error is measured against ``scale``."""
    return _Output(np.asarray(value, dtype=np.float64), Tolerance(rtol, rtol * scale), description)


# ---------------------------------------------------------------------------------------
# well-posedness checks (run whenever a case is computed)
# ---------------------------------------------------------------------------------------
def _check_core(core: np.ndarray, what: str) -> None:
    for i in range(core.ndim):
        s = np.linalg.svd(unfold(core, i), compute_uv=False)
        if s[-1] * MAX_CORE_CONDITION < s[0]:
            raise GoldenError(f"{what}: core unfolding Mat_{i}(C) has condition number "
                              f"{s[0] / s[-1]:.3g} > MAX_CORE_CONDITION = {MAX_CORE_CONDITION:g}")


def _check_gap(s: np.ndarray, r: int, dim: int, what: str) -> None:
    """The span of the leading ``r`` left singular vectors (of a matrix with ``dim`` rows, singular
    values ``s``) is separated from the rest by a relative gap ``≥ MIN_RELATIVE_GAP``. Beyond
    ``len(s)`` the singular values are zero; ``r = dim`` is the whole space (nothing to check)."""
    if r == dim:
        return
    following = s[r] if r < len(s) else 0.0
    if s[r - 1] - following < MIN_RELATIVE_GAP * s[0]:
        raise GoldenError(f"{what}: relative gap (σ_{r} − σ_{r + 1})/σ_1 = {(s[r - 1] - following) / s[0]:.3g} "
                          f"< MIN_RELATIVE_GAP = {MIN_RELATIVE_GAP:g}")


def _check_decision(s: np.ndarray, threshold: float, what: str) -> None:
    """No tail ``‖(s_{r+1}, …)‖`` lies within a factor ``DECISION_MARGIN`` of ``threshold``."""
    t = tail_norms(s)
    close = (t > threshold / DECISION_MARGIN) & (t < threshold * DECISION_MARGIN)
    if np.any(close):
        raise GoldenError(f"{what}: tail {t[close][0]:.6g} within a factor {DECISION_MARGIN:g} of the "
                          f"threshold {threshold:.6g}; the rank decision is not robust")


# ---------------------------------------------------------------------------------------
# input builders (seeded)
# ---------------------------------------------------------------------------------------
def _tucker_inputs(rng: np.random.Generator, shape, ranks) -> dict:
    """``core`` (Gaussian, unit norm) and orthonormal ``U_i``; the core is checked by :func:`_check_core`."""
    core = rng.standard_normal(ranks)
    core /= np.linalg.norm(core)
    _check_core(core, f"core of ranks {tuple(ranks)}")
    out = {"core": core}
    out.update({f"U_{i}": random_orthonormal(rng, n, r) for i, (n, r) in enumerate(zip(shape, ranks))})
    return out


def _planted(rng: np.random.Generator, shape, ranks, noise: float) -> np.ndarray:
    """A Tucker tensor of the given ranks plus Gaussian noise of relative norm ``noise``."""
    parts = _tucker_inputs(rng, shape, ranks)
    L = multi_mode_product(parts["core"], [parts[f"U_{i}"] for i in range(len(shape))])
    E = rng.standard_normal(shape)
    return L + noise * np.linalg.norm(L) / np.linalg.norm(E) * E


def _factors(inputs: Mapping, d: int) -> list:
    return [np.asarray(inputs[f"U_{i}"]) for i in range(d)]


def _point(inputs: Mapping) -> TuckerTensor:
    core = np.asarray(inputs["core"])
    return TuckerTensor(core, _factors(inputs, core.ndim))


def _geometry(inputs: Mapping) -> dict:
    return {key: tuple(inputs[key]) for key in ("stride", "padding", "dilation")}


# ---------------------------------------------------------------------------------------
# case kinds: make(rng) -> (arrays, params); compute(inputs) -> {name: _Output}
# ---------------------------------------------------------------------------------------
def _make_unfold_fold(rng, shape):
    X = rng.standard_normal(shape)
    arrays = {"X": X}
    arrays.update({f"M_{k}": rng.standard_normal(unfold(X, k).shape) for k in range(len(shape))})
    return arrays, {}


def _compute_unfold_fold(inputs):
    X = np.asarray(inputs["X"])
    out = {}
    for k in range(X.ndim):
        out[f"unfold_{k}"] = _normwise(unfold(X, k), 0.0, f"Mat_{k}(X), C order")
        out[f"fold_{k}"] = _normwise(fold(inputs[f"M_{k}"], k, X.shape), 0.0, f"Ten_{k}(M_{k}) of the shape of X")
    return out


def _make_mode_products(rng, shape, ranks):
    arrays = _tucker_inputs(rng, shape, ranks)
    arrays["X"] = rng.standard_normal(shape)
    return arrays, {}


def _compute_mode_products(inputs):
    T = _point(inputs)
    out = {"full": _normwise(T.full(), RTOL_ALGEBRA, "C x_0 U_0 x_1 U_1 ... (the Tucker tensor)"),
           "project": _normwise(T.project(inputs["X"]), RTOL_ALGEBRA, "X x_0 U_0^T x_1 U_1^T ...")}
    for k, U in enumerate(T.factors):
        out[f"mode_product_{k}"] = _normwise(mode_product(T.core, U, k), RTOL_ALGEBRA, f"C x_{k} U_{k}")
    return out


def _make_hosvd(rng, shape, ranks, noise, tol, sequential):
    return {"X": _planted(rng, shape, ranks, noise)}, {"tol": tol, "sequential": sequential}


def _compute_hosvd(inputs):
    X = np.asarray(inputs["X"])
    sequential = bool(inputs["sequential"])
    T, rep = hosvd(X, tol=float(inputs["tol"]), sequential=sequential)
    d, norm_x = X.ndim, float(np.linalg.norm(X))
    spent_sq = 0.0
    for i, s in enumerate(rep.singular_values):
        # The per-mode threshold of the rule documented in tucker_ref.truncation.
        share = (math.sqrt(max(rep.threshold**2 - spent_sq, 0.0) / (d - i)) if sequential
                 else rep.threshold / math.sqrt(d))
        _check_decision(s, share, f"mode {i}")
        _check_gap(s, T.ranks[i], X.shape[i], f"mode {i}")
        spent_sq += rep.tails[i] ** 2
    out = {
        "ranks": _exact(T.ranks, "multilinear ranks chosen by the tolerance rule"),
        "tails": _normwise(rep.tails, RTOL_SPECTRAL, "per mode, norm of the discarded singular values",
                           scale=norm_x),
        "certificate": _normwise(rep.certificate, RTOL_SPECTRAL, "sqrt(sum tails^2)", scale=norm_x),
        "error": _normwise(rep.error, RTOL_SPECTRAL, "‖X − X_hat‖_F", scale=norm_x),
        "reconstruction": _normwise(T.full(), RTOL_SPECTRAL, "X_hat = C x_i U_i"),
    }
    for i, (U, s) in enumerate(zip(T.factors, rep.singular_values)):
        what = "Mat_i of X" if not sequential else "Mat_i of X projected in modes < i"
        out[f"singular_values_{i}"] = _normwise(s, RTOL_SPECTRAL, f"singular values of {what}")
        out[f"projector_{i}"] = _normwise(U @ U.T, RTOL_SPECTRAL, f"U_{i} U_{i}^T")
    return out


def _make_tangent(rng, shape, ranks):
    arrays = _tucker_inputs(rng, shape, ranks)
    arrays["Z"] = rng.standard_normal(shape)
    return arrays, {}


def _compute_tangent(inputs):
    Y = _point(inputs)
    _check_core(Y.core, "Y")
    Z = np.asarray(inputs["Z"])
    V = tangent_vector(Y, Z)
    norm_z = float(np.linalg.norm(Z))
    out = {
        "projection": _normwise(tangent_projection(Y, Z), RTOL_SPECTRAL, "P(Y)Z, dense"),
        "epsilon": _normwise(normal_component_norm(Y, Z), RTOL_SPECTRAL, "‖Z − P(Y)Z‖_F", scale=norm_z),
        "dcore": _normwise(V.dcore, RTOL_ALGEBRA, "δC = Z x_i U_i^T"),
    }
    for i, dU in enumerate(V.dfactors):
        out[f"dU_{i}"] = _normwise(dU, RTOL_SPECTRAL, f"δU_{i} = (I − U U^T) Mat_{i}(Z x_(j≠{i}) U_j^T) Mat_{i}(C)^+")
    return out


def _conv_params(stride, padding, dilation) -> dict:
    """The geometry as JSON params: every entry a pair ``[h, w]``."""
    return {key: [v, v] if isinstance(v, int) else list(v)
            for key, v in (("stride", stride), ("padding", padding), ("dilation", dilation))}


def _make_conv(rng, x_shape, w_shape, stride, padding, dilation):
    params = _conv_params(stride, padding, dilation)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    y_shape = conv2d(x, w, **_geometry(params)).shape
    return {"x": x, "w": w, "b": rng.standard_normal(w_shape[0]), "dy": rng.standard_normal(y_shape)}, params


def _compute_conv(inputs):
    geo = _geometry(inputs)
    dx, dw, db = conv2d_backward(inputs["dy"], inputs["x"], inputs["w"], **geo)
    return {
        "y": _normwise(conv2d(inputs["x"], inputs["w"], inputs["b"], **geo), RTOL_ALGEBRA, "conv2d(x, w) + b"),
        "dx": _normwise(dx, RTOL_ALGEBRA, "∂<dy, y>/∂x"),
        "dw": _normwise(dw, RTOL_ALGEBRA, "∂<dy, y>/∂w"),
        "db": _normwise(db, RTOL_ALGEBRA, "∂<dy, y>/∂b = sum of dy over batch and pixels"),
    }


def _make_tucker_conv(rng, x_shape, kernel_shape, ranks, stride, padding, dilation):
    params = _conv_params(stride, padding, dilation)
    arrays = _tucker_inputs(rng, kernel_shape, ranks)
    arrays["x"] = rng.standard_normal(x_shape)
    arrays["b"] = rng.standard_normal(kernel_shape[0])
    y_shape = tucker_conv2d(arrays["x"], _point(arrays), **_geometry(params)).shape
    arrays["dy"] = rng.standard_normal(y_shape)
    return arrays, params


def _compute_tucker_conv(inputs):
    T, geo = _point(inputs), _geometry(inputs)
    dx, dcore, dfactors, db = tucker_conv2d_backward(inputs["dy"], inputs["x"], T, **geo)
    out = {
        "kernel": _normwise(T.full(), RTOL_ALGEBRA, "W = C x_0 U_0 x_1 U_1 x_2 U_2 x_3 U_3, (out, in, kh, kw)"),
        "y": _normwise(tucker_conv2d(inputs["x"], T, inputs["b"], **geo), RTOL_ALGEBRA, "conv2d(x, W) + b"),
        "dx": _normwise(dx, RTOL_ALGEBRA, "∂<dy, y>/∂x"),
        "dcore": _normwise(dcore, RTOL_ALGEBRA, "∂<dy, y>/∂C = G x_i U_i^T, G = ∂<dy, y>/∂W"),
        "db": _normwise(db, RTOL_ALGEBRA, "∂<dy, y>/∂b"),
    }
    for i, dU in enumerate(dfactors):
        out[f"dU_{i}"] = _normwise(dU, RTOL_ALGEBRA, f"∂<dy, y>/∂U_{i} = Mat_{i}(G x_(j≠{i}) U_j^T) Mat_{i}(C)^T")
    return out


# ---------------------------------------------------------------------------------------
# the TDLRT step case
# ---------------------------------------------------------------------------------------
def _conv_loss(inputs, geo):
    """``L(W) = ½‖conv2d(x, W) − target‖_F²`` at a TuckerTensor point."""
    return lambda P: 0.5 * float(np.sum((conv2d(inputs["x"], P.full(), **geo) - inputs["target"]) ** 2))


def _step_oracle(inputs, Y, geo) -> TuckerConvGradient:
    dy = conv2d(inputs["x"], Y.full(), **geo) - np.asarray(inputs["target"])
    return TuckerConvGradient(inputs["x"], dy, Y, **geo)


def _step_substeps(Y: TuckerTensor, oracle, lr: float) -> dict:
    """The intermediates of docs/algorithms.md §1–§2, assembled from the public substeps."""
    parts = {"Q": [], "K": [], "grad_K": [], "U_hat": [], "M_hat": []}
    for i, U in enumerate(Y.factors):
        Q, _, K = k_parametrization(Y, i)
        grad_K = k_gradient(oracle.mode_partial_gradient(i), Q)
        # As tdlrt_step: a full-rank mode has no room to grow and keeps its basis.
        U_hat, M_hat = (U, None) if U.shape[0] == U.shape[1] else augment_basis(U, grad_K)
        for key, value in zip(parts, (Q, K, grad_K, U_hat, M_hat)):
            parts[key].append(value)
    parts["C_hat0"] = multi_mode_product(Y.core, parts["M_hat"])
    parts["C_hat1"] = galerkin_step(parts["C_hat0"], oracle.core_gradient(parts["U_hat"]), lr)
    return parts


#: Relative range of the tails among which the TDLRT case's ``τ`` is chosen.
_TAU_WINDOW = (1e-2, 0.5)


def _choose_tau(C_hat1: np.ndarray) -> float:
    """``τ`` with ``ϑ = τ‖Ĉ1‖`` at the geometric middle of the widest gap between the tails of
    all modes of ``Ĉ1`` within ``[_TAU_WINDOW[0], _TAU_WINDOW[1]]·‖Ĉ1‖``: a robust decision that keeps
    the strong new directions and drops the weak ones (the window excludes the noise floor)."""
    norm = float(np.linalg.norm(C_hat1))
    tails = np.unique(np.concatenate([tail_norms(np.linalg.svd(unfold(C_hat1, i), compute_uv=False))
                                      for i in range(C_hat1.ndim)]))
    tails = tails[(tails > _TAU_WINDOW[0] * norm) & (tails < _TAU_WINDOW[1] * norm)]
    if tails.size < 2:
        raise GoldenError("Ĉ1 has fewer than two candidate tails; no robust tolerance exists")
    k = int(np.argmax(np.log(tails[1:] / tails[:-1])))
    return float(f"{math.sqrt(tails[k] * tails[k + 1]) / norm:.4g}")


def _make_tdlrt(rng, x_shape, kernel_shape, ranks, stride, padding, dilation, pull, noise, step):
    """``Y0`` and a target ``conv2d(x, W*)`` with ``W* = Y0 + pull·v∘B + noise·E``: ``v ⊥ span U_0``
    (unit), ``B`` in the span of ``U_1, U_2, U_3`` (unit), ``E`` Gaussian (unit). The step should
    grow mode 0 along ``v`` and drop the weaker directions the data mix into every mode."""
    params = _conv_params(stride, padding, dilation)
    geo = _geometry(params)
    arrays = _tucker_inputs(rng, kernel_shape, ranks)
    arrays["x"] = rng.standard_normal(x_shape)
    Y = _point(arrays)
    v = rng.standard_normal(kernel_shape[0])
    v -= Y.factors[0] @ (Y.factors[0].T @ v)
    B = multi_mode_product(rng.standard_normal(ranks[1:]), Y.factors[1:])
    direction = np.multiply.outer(v / np.linalg.norm(v), B / np.linalg.norm(B))
    E = rng.standard_normal(kernel_shape)
    arrays["target"] = conv2d(arrays["x"], Y.full() + pull * direction + noise * E / np.linalg.norm(E), **geo)
    # λ = step / (curvature of L along the planted direction): a step of that fraction towards it.
    curvature = float(np.sum(conv2d(arrays["x"], direction, **geo) ** 2))
    params["lr"] = float(f"{step / curvature:.4g}")
    params["tau"] = _choose_tau(_step_substeps(Y, _step_oracle(arrays, Y, geo), params["lr"])["C_hat1"])
    return arrays, params


def _compute_tdlrt(inputs):
    Y, geo = _point(inputs), _geometry(inputs)
    _check_core(Y.core, "Y0")
    lr, tau = float(inputs["lr"]), float(inputs["tau"])
    oracle = _step_oracle(inputs, Y, geo)
    parts = _step_substeps(Y, oracle, lr)
    C_hat1, U_hat = parts["C_hat1"], parts["U_hat"]
    Y1, report = tdlrt_step(Y, oracle, lr, tau=tau, loss=_conv_loss(inputs, geo))
    threshold = tau * float(np.linalg.norm(C_hat1))
    for i, U in enumerate(Y.factors):
        s = np.linalg.svd(unfold(C_hat1, i), compute_uv=False)
        _check_decision(s, threshold, f"truncation of mode {i}")
        _check_gap(s, Y1.ranks[i], C_hat1.shape[i], f"truncation of mode {i}")
        # The new directions of the augmentation span a well-conditioned subspace.
        new = parts["grad_K"][i] - U @ (U.T @ parts["grad_K"][i])
        _check_gap(np.linalg.svd(new, compute_uv=False), U_hat[i].shape[1] - U.shape[1], U.shape[0] - U.shape[1],
                   f"augmentation of mode {i}")
    G = oracle.dense_gradient()
    norm_g, norm_c = float(np.linalg.norm(G)), float(np.linalg.norm(C_hat1))
    out = {
        "grad": _normwise(G, RTOL_ALGEBRA, "∇L(Y0), L(W) = ½‖conv2d(x, W) − target‖²"),
        "loss_before": _normwise(report.loss_before, RTOL_ALGEBRA, "L(Y0)"),
        "ranks_augmented": _exact(report.ranks_augmented, "ranks of C_hat0 (columns of U_hat_i)"),
        "C_hat0_full": _normwise(TuckerTensor(parts["C_hat0"], U_hat).full(), RTOL_SPECTRAL,
                                 "C_hat0 x_i U_hat_i (= Y0 to rounding)"),
        "C_hat1_full": _normwise(TuckerTensor(C_hat1, U_hat).full(), RTOL_SPECTRAL,
                                 "C_hat1 x_i U_hat_i = Y0 − lr ∇L(Y0) x_i U_hat_i U_hat_i^T"),
        "ranks_after": _exact(Y1.ranks, "ranks of Y1"),
        "tails": _normwise(report.tails, RTOL_SPECTRAL, "per mode, norm of the dropped singular values of "
                           "Mat_i(C_hat1)", scale=norm_c),
        "threshold": _normwise(report.threshold, RTOL_SPECTRAL, "theta = tau ‖C_hat1‖_F"),
        "eta": _normwise(report.eta, RTOL_SPECTRAL, "‖C_hat1 x_i U_hat_i − Y1‖_F", scale=norm_c),
        "Y1_full": _normwise(Y1.full(), RTOL_SPECTRAL, "Y1 after truncation, dense"),
        "loss_after": _normwise(report.loss_after, RTOL_SPECTRAL, "L(Y1)"),
        "proj_grad_norm": _normwise(report.proj_grad_norm, RTOL_SPECTRAL, "‖∇L(Y0) x_i U_hat_i^T‖_F"),
        "tangent_grad_norm": _normwise(report.tangent_grad_norm, RTOL_SPECTRAL, "‖P(Y0)∇L(Y0)‖_F"),
        "epsilon": _normwise(report.epsilon, RTOL_SPECTRAL, "‖(I − P(Y0))∇L(Y0)‖_F", scale=norm_g),
        "residual_norm": _normwise(report.residual_norm, RTOL_SPECTRAL, "‖(I − Π)∇L(Y0)‖_F, Π onto "
                                   "span of U_hat_i in every mode", scale=norm_g),
    }
    for i in range(Y.ndim):
        Q, K, gK, Uh, U1 = parts["Q"][i], parts["K"][i], parts["grad_K"][i], U_hat[i], Y1.factors[i]
        out[f"QQt_{i}"] = _normwise(Q @ Q.T, RTOL_SPECTRAL, f"Q_{i} Q_{i}^T, projector onto the row space of "
                                    f"Mat_{i}(C0)")
        out[f"KQt_{i}"] = _normwise(K @ Q.T, RTOL_SPECTRAL, f"K_{i} Q_{i}^T (= U_{i} Mat_{i}(C0))")
        out[f"grad_K_Qt_{i}"] = _normwise(gK @ Q.T, RTOL_SPECTRAL, f"∇_K_{i} L Q_{i}^T = N_{i} Q_{i} Q_{i}^T")
        out[f"U_hat_projector_{i}"] = _normwise(Uh @ Uh.T, RTOL_SPECTRAL, f"U_hat_{i} U_hat_{i}^T")
        out[f"U1_projector_{i}"] = _normwise(U1 @ U1.T, RTOL_SPECTRAL, f"U_{i}^1 U_{i}^1^T (factor of Y1)")
    return out


_COMPUTE: dict[str, Callable[[Mapping], dict]] = {
    "unfold_fold": _compute_unfold_fold,
    "mode_products": _compute_mode_products,
    "hosvd": _compute_hosvd,
    "tangent_projection": _compute_tangent,
    "conv2d": _compute_conv,
    "tucker_conv2d": _compute_tucker_conv,
    "tdlrt_step": _compute_tdlrt,
}


@dataclass(frozen=True)
class _CaseSpec:
    name: str
    kind: str
    seed: int
    description: str
    make: Callable[[np.random.Generator], tuple[dict, dict]]


_CASES = (
    _CaseSpec("unfold_fold_3way", "unfold_fold", 101,
              "unfold_k = Mat_k(X) and fold_k = Ten_k(M_k) for every mode of a 3-way X",
              partial(_make_unfold_fold, shape=(3, 4, 5))),
    _CaseSpec("unfold_fold_4way", "unfold_fold", 102,
              "unfold_k = Mat_k(X) and fold_k = Ten_k(M_k) for every mode of a 4-way X",
              partial(_make_unfold_fold, shape=(2, 3, 4, 5))),
    _CaseSpec("mode_products_4way", "mode_products", 103,
              "Tucker tensor C x_i U_i, single mode products C x_k U_k, projection X x_i U_i^T",
              partial(_make_mode_products, shape=(5, 4, 3, 3), ranks=(3, 2, 2, 2))),
    _CaseSpec("hosvd_tol_3way", "hosvd", 104,
              "HOSVD with relative tol (total budget, equal split theta/sqrt(d) per mode) of a planted "
              "rank-(3, 2, 3) tensor plus 1e-3 noise",
              partial(_make_hosvd, shape=(6, 5, 4), ranks=(3, 2, 3), noise=1e-3, tol=1e-2, sequential=False)),
    _CaseSpec("sthosvd_tol_4way", "hosvd", 105,
              "ST-HOSVD with relative tol (sequential budget) of a planted rank-(3, 2, 2, 2) tensor plus "
              "1e-3 noise",
              partial(_make_hosvd, shape=(5, 4, 3, 3), ranks=(3, 2, 2, 2), noise=1e-3, tol=1e-2, sequential=True)),
    _CaseSpec("tangent_projection_3way", "tangent_projection", 106,
              "orthogonal projection of Z onto the tangent space at Y = C x_i U_i: dense, epsilon, factors",
              partial(_make_tangent, shape=(5, 4, 3), ranks=(3, 2, 2))),
    _CaseSpec("conv2d_basic", "conv2d", 107, "conv2d forward and backward, stride 1, no padding",
              partial(_make_conv, x_shape=(2, 3, 6, 6), w_shape=(4, 3, 3, 3), stride=1, padding=0, dilation=1)),
    _CaseSpec("conv2d_stride_pad", "conv2d", 108, "conv2d forward and backward, stride 2, padding 1",
              partial(_make_conv, x_shape=(2, 3, 7, 8), w_shape=(4, 3, 3, 2), stride=2, padding=1, dilation=1)),
    _CaseSpec("conv2d_mixed", "conv2d", 109,
              "conv2d forward and backward, stride (2, 1), padding (1, 2), dilation (2, 1)",
              partial(_make_conv, x_shape=(1, 2, 9, 8), w_shape=(3, 2, 3, 3), stride=(2, 1), padding=(1, 2),
                      dilation=(2, 1))),
    _CaseSpec("tucker_conv2d_basic", "tucker_conv2d", 110,
              "Tucker conv2d forward and backward (pinned factors), padding 1",
              partial(_make_tucker_conv, x_shape=(2, 4, 6, 6), kernel_shape=(5, 4, 3, 3), ranks=(3, 2, 3, 2),
                      stride=1, padding=1, dilation=1)),
    _CaseSpec("tucker_conv2d_strided", "tucker_conv2d", 111,
              "Tucker conv2d forward and backward (pinned factors), stride (2, 1), padding (0, 1), dilation (1, 2)",
              partial(_make_tucker_conv, x_shape=(2, 3, 8, 7), kernel_shape=(4, 3, 3, 3), ranks=(2, 2, 2, 2),
                      stride=(2, 1), padding=(0, 1), dilation=(1, 2))),
    _CaseSpec("tdlrt_step_conv", "tdlrt_step", 112,
              "one TDLRT step (k_step variant, all modes adaptive, same_point S-step, relative tau, plain SGD) "
              "on L(W) = ½‖conv2d(x, W) − target‖² from Y0 = C x_i U_i, with every intermediate as a "
              "basis-invariant quantity",
              partial(_make_tdlrt, x_shape=(8, 6, 16, 16), kernel_shape=(8, 6, 5, 5), ranks=(3, 2, 2, 2), stride=1,
                      padding=2, dilation=1, pull=0.5, noise=0.02, step=0.5)),
)


def case_names() -> tuple[str, ...]:
    """Names of the cases :func:`write_golden` writes, in manifest order."""
    return tuple(spec.name for spec in _CASES)


def default_golden_dir() -> Path:
    """Directory of the canonical golden set shipped with the package (``tucker_ref/golden_data``)."""
    return Path(str(resources.files("tucker_ref") / "golden_data"))


# ---------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _json_value(value):
    if isinstance(value, (tuple, list)):
        return [_json_value(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    return float(value)


def write_golden(directory) -> dict:
    """Write the canonical golden set into ``directory`` (created if needed) and return its manifest.

    For each case: inputs drawn by ``numpy.random.default_rng(seed)``, outputs computed with
    this tucker_ref (float64), both saved in ``<name>.npz``; the manifest (schema
    :data:`SCHEMA_VERSION`, fields :data:`MANIFEST_FIELDS`) records shapes, dtypes, tolerances,
    params, the seed and the file's SHA-256. Existing files of the same names are overwritten.

    Raises
    ------
    GoldenError
        If a case's data are not well posed (see the module docstring); the manifest is then not
        written, so a set with a fragile case cannot be checked.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cases = []
    for spec in _CASES:
        arrays, params = spec.make(np.random.default_rng(spec.seed))
        clash = set(arrays) & set(params)
        if clash:
            raise GoldenError(f"case {spec.name}: params {sorted(clash)} collide with input array names")
        outputs = _compute(spec.kind, {**arrays, **params}, spec.name)
        path = directory / f"{spec.name}.npz"
        np.savez(path, **{f"input/{k}": np.asarray(v, dtype=np.float64) for k, v in arrays.items()},
                 **{f"output/{k}": o.value for k, o in outputs.items()})
        cases.append({
            "name": spec.name,
            "kind": spec.kind,
            "description": spec.description,
            "file": path.name,
            "sha256": _sha256(path),
            "seed": spec.seed,
            "params": {k: _json_value(v) for k, v in params.items()},
            "inputs": {k: {"shape": list(np.shape(v)), "dtype": "float64"} for k, v in arrays.items()},
            "outputs": {k: {"shape": list(o.value.shape), "dtype": str(o.value.dtype), "rtol": o.tolerance.rtol,
                            "atol": o.tolerance.atol, "comparison": o.tolerance.comparison,
                            "description": o.description}
                        for k, o in outputs.items()},
        })
    manifest = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "tucker_ref_version": __version__,
        "numpy_version": np.__version__,
        "conventions": _CONVENTIONS,
        "comparisons": COMPARISONS,
        "cases": cases,
    }
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
    return manifest


# ---------------------------------------------------------------------------------------
# reading and comparing
# ---------------------------------------------------------------------------------------
def _compute(kind: str, inputs: Mapping, name: str) -> dict:
    if kind not in _COMPUTE:
        raise GoldenError(f"case {name}: unknown kind {kind!r} (known: {sorted(_COMPUTE)}); "
                          "was the set written by a newer tucker_ref?")
    return _COMPUTE[kind](inputs)


def load_manifest(directory=None) -> dict:
    """Read and validate the manifest of a golden set (default: the shipped set).

    Raises
    ------
    FileNotFoundError
        No manifest in ``directory``.
    GoldenError
        Not a tucker_ref golden manifest, or a ``schema_version`` other than :data:`SCHEMA_VERSION`.
    """
    directory = default_golden_dir() if directory is None else Path(directory)
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no golden manifest (is {directory} a golden directory? write one with "
                                "`tucker-ref golden write DIR`)")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise GoldenError(f"{path} is not UTF-8 text ({exc}); the manifest is damaged: restore it or write the set "
                          "again") from None
    except json.JSONDecodeError as exc:
        raise GoldenError(f"{path} is not valid JSON: {exc}; the manifest is damaged: restore it or write the set "
                          "again") from None
    except OSError as exc:
        raise GoldenError(f"{path} cannot be read: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise GoldenError(f"{path} is not a tucker_ref golden manifest (expected schema {SCHEMA!r})")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise GoldenError(f"{path} has schema_version {version!r}; this tucker_ref ({__version__}) reads "
                          f"schema_version {SCHEMA_VERSION} only")
    if not isinstance(manifest.get("cases"), list):
        raise GoldenError(f"{path} has no list of cases")
    return manifest


def _find_case(manifest: dict, name: str) -> dict:
    cases = [c for c in manifest["cases"] if isinstance(c, dict)]
    for case in cases:
        if case.get("name") == name:
            return case
    raise GoldenError(f"no case named {name!r}; the set has {[c.get('name') for c in cases]}")


def _entry_name(case, index: int) -> str:
    """The name of a manifest entry for reports (``cases[i]`` when it has none)."""
    name = case.get("name") if isinstance(case, dict) else None
    return name if isinstance(name, str) and name else f"cases[{index}]"


def _check_entry(case, index: int) -> None:
    """Raise :class:`GoldenError` unless manifest entry ``index`` has every field with its type."""
    where = f"manifest entry cases[{index}]"
    if not isinstance(case, dict):
        raise GoldenError(f"{where} is a JSON {type(case).__name__}, not an object")
    kinds = {"name": str, "kind": str, "file": str, "sha256": str, "params": dict, "inputs": dict, "outputs": dict}
    for key, kind in kinds.items():
        if not isinstance(case.get(key), kind):
            raise GoldenError(f"{where} ({case.get('name', '?')}): field {key!r} must be a "
                              f"{'string' if kind is str else 'JSON object'}, got {case.get(key)!r}")
    if Path(case["file"]).name != case["file"] or not case["file"].endswith(".npz"):
        raise GoldenError(f"{where}: file must be a plain .npz file name beside the manifest, got {case['file']!r}")
    for group in ("inputs", "outputs"):
        for key, meta in case[group].items():
            shape = meta.get("shape") if isinstance(meta, dict) else None
            if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape) \
                    or not isinstance(meta.get("dtype"), str):
                raise GoldenError(f"{where}: {group}[{key!r}] must be an object with a shape (list of integers) "
                                  f"and a dtype, got {meta!r}")
    _tolerances(case)


def _tolerance(key: str, meta: dict) -> Tolerance:
    """The :class:`Tolerance` of one output entry, checked against :data:`MAX_RTOL` / :data:`MAX_ATOL`."""
    comparison = meta.get("comparison")
    if comparison not in COMPARISONS:
        raise GoldenError(f"output {key}: comparison {comparison!r} is not one of {sorted(COMPARISONS)}")
    values = {}
    for name, bound in (("rtol", MAX_RTOL), ("atol", MAX_ATOL)):
        value = meta.get(name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
                or not 0 <= value <= bound:
            raise GoldenError(f"output {key}: {name} must be a finite number in [0, {bound:g}], got {value!r}")
        values[name] = float(value)
    if comparison == "exact" and (values["rtol"] or values["atol"]):
        raise GoldenError(f"output {key}: an exact comparison has rtol = atol = 0, got {values}")
    return Tolerance(values["rtol"], values["atol"], comparison)


def _tolerances(case: dict) -> dict:
    return {k: _tolerance(k, v if isinstance(v, dict) else {}) for k, v in case["outputs"].items()}


def _read_case(directory: Path, case: dict, verify: bool = True):
    """``(inputs with params, outputs)`` of a manifest entry, after checking file, hash, keys and shapes."""
    path = directory / case["file"]
    if not path.is_file():
        raise GoldenError(f"missing file {path}")
    digest = _sha256(path) if verify else case["sha256"]
    if digest != case["sha256"]:
        raise GoldenError(f"sha256 mismatch for {path.name}: the file was altered "
                          f"(manifest {case['sha256'][:12]}…, file {digest[:12]}…)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except Exception as exc:  # noqa: BLE001 - BadZipFile, EOFError, ValueError, zlib.error, ...
        raise GoldenError(f"{path.name} cannot be read as an npz file ({type(exc).__name__}: {exc}); "
                          "restore it or write the set again") from None
    inputs, outputs = {}, {}
    for group, spec, target in (("input", case["inputs"], inputs), ("output", case["outputs"], outputs)):
        for key, meta in spec.items():
            value = arrays.get(f"{group}/{key}")
            if value is None:
                raise GoldenError(f"{path.name} has no array {group}/{key}")
            if list(value.shape) != list(meta["shape"]) or str(value.dtype) != meta["dtype"]:
                raise GoldenError(f"{path.name}: {group}/{key} is {value.dtype}{list(value.shape)}, the manifest "
                                  f"says {meta['dtype']}{meta['shape']}")
            target[key] = value
    inputs.update(case.get("params", {}))
    return inputs, outputs


def load_case(directory, name: str, *, verify: bool = True):
    """Load one golden case for checking an implementation against it.

    Parameters
    ----------
    directory : path or None
        The golden set (``None``: the shipped one, :func:`default_golden_dir`).
    name : str
        A case name (see the manifest or :func:`case_names`).
    verify : bool
        Check the npz file's SHA-256 against the manifest (default); shapes and dtypes are
        always checked.

    Returns
    -------
    inputs : dict
        Input arrays (float64 ndarrays) and the case's params (JSON values: ints, floats,
        lists, booleans) under their names, e.g. ``inputs["x"]``, ``inputs["stride"]``.
    outputs : dict
        Expected outputs (ndarrays; 0-d for scalars, int64 for ranks).
    tolerances : dict
        Per output, a :class:`Tolerance` for :func:`compare_case`.

    Raises
    ------
    GoldenError
        Unknown case, missing or altered file, or arrays that do not match the manifest.
    """
    directory = default_golden_dir() if directory is None else Path(directory)
    manifest = load_manifest(directory)
    case = _find_case(manifest, name)
    _check_entry(case, manifest["cases"].index(case))
    inputs, outputs = _read_case(directory, case, verify)
    return inputs, outputs, _tolerances(case)


def compare_case(actual: Mapping, expected: Mapping, tolerances: Mapping, *, name: str = "",
                 require_all: bool = True) -> CaseResult:
    """Compare an implementation's outputs with a golden case's.

    Parameters
    ----------
    actual : mapping name -> array-like
        Your outputs (anything ``numpy.asarray`` accepts, e.g. ``tensor.detach().numpy()``).
    expected, tolerances : mappings from :func:`load_case`
    name : str
        Case name for the report.
    require_all : bool
        ``True``: every expected output must be present in ``actual``. ``False``: compare only
        the outputs you computed (at least one; names unknown to the case always fail).

    Returns
    -------
    CaseResult
        ``ok`` iff every compared output has the expected shape and is within its tolerance
        (:data:`COMPARISONS`).
    """
    problems, errors = [], {}
    unknown = sorted(set(actual) - set(expected))
    if unknown:
        problems.append(f"outputs {unknown} are not in the case")
    missing = sorted(set(expected) - set(actual))
    if require_all and missing:
        problems.append(f"missing outputs {missing}")
    keys = [k for k in expected if k in actual]
    if not keys:
        problems.append("no output to compare")
    for key in keys:
        exp = np.asarray(expected[key])
        got = np.asarray(actual[key])
        tol = tolerances[key]
        if got.shape != exp.shape:
            problems.append(f"{key}: shape {got.shape}, expected {exp.shape}")
            errors[key] = math.inf
            continue
        if tol.comparison == "exact":
            diff = float(np.linalg.norm(np.ravel(got.astype(np.float64) - exp.astype(np.float64))))
            passed = bool(np.array_equal(got, exp))
        else:
            diff = float(np.linalg.norm(np.ravel(got.astype(np.float64) - exp)))
            passed = diff <= tol.allowed(exp)  # NaN fails here
        norm = float(np.linalg.norm(np.ravel(exp.astype(np.float64))))
        errors[key] = diff / norm if norm > 0 else diff
        if not passed:
            problems.append(f"{key}: error {diff:.3g} > allowed {tol.allowed(exp):.3g}" if tol.comparison != "exact"
                            else f"{key}: {got.tolist()} != expected {exp.tolist()}")
    worst = max(errors, key=lambda k: (errors[k] if errors[k] == errors[k] else math.inf), default=None)
    max_err = math.inf if (worst is None or errors[worst] != errors[worst]) else errors[worst]
    return CaseResult(name=name, ok=not problems, max_rel_error=max_err, worst_output=worst, errors=errors,
                      problems=problems)


def check_golden(directory=None) -> list[CaseResult]:
    """Recompute every case of a golden set with the installed tucker_ref and compare.

    Parameters
    ----------
    directory : path or None — the set (default: the shipped one)

    Returns
    -------
    list of CaseResult, one per manifest entry, then one per case of :func:`case_names` that the
    manifest lacks. A manifest entry that is not an object or lacks a field, a bad tolerance, a
    duplicate name, a missing, altered or unreadable file, arrays that do not match the
    manifest, an unknown kind or any error while recomputing fail that case (with the reason in
    ``problems``) without stopping the others; a case missing from the manifest fails as such.

    Raises
    ------
    FileNotFoundError, GoldenError
        No manifest, or one that cannot be read (not UTF-8 or JSON, wrong schema or schema
        version).
    """
    directory = default_golden_dir() if directory is None else Path(directory)
    manifest = load_manifest(directory)
    results = []
    seen = set()
    for index, case in enumerate(manifest["cases"]):
        name = _entry_name(case, index)
        duplicate = name in seen
        seen.add(name)
        try:
            if duplicate:
                raise GoldenError(f"a second manifest entry named {name!r} (cases[{index}])")
            _check_entry(case, index)
            inputs, expected = _read_case(directory, case)
            computed = _compute(case["kind"], inputs, name)
            results.append(compare_case({k: o.value for k, o in computed.items()}, expected, _tolerances(case),
                                        name=name))
        except Exception as exc:  # noqa: BLE001 - one case's failure, whatever it is, fails that case only
            results.append(CaseResult(name=name, ok=False, max_rel_error=math.inf,
                                      problems=[f"{type(exc).__name__}: {exc}"]))
    for name in case_names():
        if name not in seen:
            results.append(CaseResult(name=name, ok=False, max_rel_error=math.inf,
                                      problems=[f"missing from the manifest {directory / MANIFEST_NAME} (a set "
                                                "written by `tucker-ref golden write` has every case)"]))
    return results


def run_command(action: str, directory=None, out=None, err=None) -> int:
    """``tucker-ref golden write DIR`` / ``check [DIR]``: print a report, return the exit code.

    ``write`` prints one line per written case (exit 1 if the directory cannot be written or a
    case is not well posed); ``check`` one line per case (name, max relative
    error, ``ok``/``FAIL``) and a summary, and returns 1 if any case failed or the set could not be
    read (missing or unreadable manifest, unknown schema version), else 0. The report goes to
    ``out`` (default stdout); errors, one line per problem of each failed case, go to ``err``
    (default stderr).
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    if action == "write":
        if directory is None:
            raise ValueError("directory is required for 'write'")
        try:
            manifest = write_golden(directory)
        except (OSError, GoldenError) as exc:
            print(f"golden write: error: {exc}", file=err)
            return 1
        for case in manifest["cases"]:
            print(f"wrote {case['file']:<36} {len(case['outputs']):3d} outputs  sha256 {case['sha256'][:12]}", file=out)
        print(f"{len(manifest['cases'])} cases, manifest {Path(directory) / MANIFEST_NAME}", file=out)
        return 0
    if action != "check":
        raise ValueError(f"action must be 'write' or 'check', got {action!r}")
    try:
        results = check_golden(directory)
    except (OSError, GoldenError) as exc:
        print(f"golden check: error: {exc}", file=err)
        return 1
    for result in results:
        print(result.line(), file=out)
        for problem in result.problems:
            print(f"golden check: {result.name}: {problem}", file=err)
    failed = [r.name for r in results if not r.ok]
    print(f"{len(results)} cases, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""), file=out)
    return 1 if failed or not results else 0
