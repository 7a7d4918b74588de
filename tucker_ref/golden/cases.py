"""The golden cases: their seeded inputs, and the outputs tucker_ref computes from them (docs/crosscheck.md §4).

Seven kinds (:data:`COMPUTE`): ``unfold_fold``, ``mode_products``, ``hosvd``,
``tangent_projection``, ``conv2d``, ``tucker_conv2d``, ``tdlrt_step``; the canonical set is
:data:`CASES` (names in :func:`case_names`). A kind's ``make(rng)`` draws the inputs and params,
its ``compute(inputs)`` returns ``{name: Output}`` after the checks of :mod:`.wellposed`.

What is stored (docs/crosscheck.md §3). QR and SVD outputs are unique only up to signs and
basis choice, so every output that depends on such a choice is stored as a **basis-invariant**
quantity: projectors ``U U^T``, ``Q_iQ_i^T``, ``Û_iÛ_i^T``, the products ``K_iQ_i^T`` and
``∇_{K_i}L Q_i^T``, and dense tensors (``Ĉ0 ×_i Û_i``, ``Ĉ1 ×_i Û_i``, ``Y1``, reconstructions).
Factor-dependent outputs (Tucker conv gradients ``dU_i``, tangent factors ``δU_i``) are well
defined because the factors are *inputs* (pinned), not computed. No sign convention is needed
to compare a set; tucker_ref's own conventions (``fix_signs``, ``diag(R) ≥ 0``, U-first
augmentation) are listed in the manifest's ``conventions`` for readers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

import numpy as np

from ..integrators.steps import tdlrt_step
from ..integrators.substeps import augment_basis, galerkin_step, k_gradient, k_parametrization
from ..manifold import normal_component_norm, tangent_projection, tangent_vector
from ..nn.functional import conv2d, conv2d_backward
from ..nn.tucker_functional import TuckerConvGradient, tucker_conv2d, tucker_conv2d_backward
from ..truncation import hosvd, tail_norms
from ..tucker import TuckerTensor, fold, mode_product, multi_mode_product, random_tucker, unfold
from .compare import RTOL_ALGEBRA, RTOL_SPECTRAL, Tolerance
from .files import GoldenError
from .wellposed import check_core, check_decision, check_gap

__all__ = ["CASES", "COMPUTE", "CaseSpec", "Output", "case_names", "compute_case"]


@dataclass(frozen=True)
class Output:
    """One computed output of a case: its value, how it is compared, what it is."""

    value: np.ndarray
    tolerance: Tolerance
    description: str


def _exact(value, description: str) -> Output:
    return Output(np.asarray(value, dtype=np.int64), Tolerance(0.0, 0.0, "exact"), description)


def _normwise(value, rtol: float, description: str, *, scale: float = 0.0) -> Output:
    """An output compared normwise; ``scale > 0`` adds ``atol = rtol·scale`` for quantities that
    may vanish (tails, η, ε) and whose rounding error is measured against ``scale``."""
    return Output(np.asarray(value, dtype=np.float64), Tolerance(rtol, rtol * scale), description)


# ---------------------------------------------------------------------------------------
# input builders (seeded)
# ---------------------------------------------------------------------------------------
def _tucker_inputs(rng: np.random.Generator, shape, ranks) -> dict:
    """``core`` (Gaussian, unit norm) and orthonormal ``U_i``; the core is checked by :func:`check_core`."""
    core = rng.standard_normal(ranks)
    core /= np.linalg.norm(core)
    check_core(core, f"core of ranks {tuple(ranks)}")
    T = random_tucker(rng, shape, ranks, core=core)
    return {"core": T.core, **{f"U_{i}": U for i, U in enumerate(T.factors)}}


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
# case kinds: make(rng) -> (arrays, params); compute(inputs) -> {name: Output}
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
    # Each decision is checked against the bound hosvd reports having applied in that mode.
    for i, (s, bound) in enumerate(zip(rep.singular_values, rep.mode_thresholds)):
        check_decision(s, bound, f"mode {i}")
        check_gap(s, rep.ranks[i], X.shape[i], f"mode {i}")
    norm_x = float(np.linalg.norm(X))
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
    check_core(Y.core, "Y")
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
    check_core(Y.core, "Y0")
    lr, tau = float(inputs["lr"]), float(inputs["tau"])
    oracle = _step_oracle(inputs, Y, geo)
    parts = _step_substeps(Y, oracle, lr)
    C_hat1, U_hat = parts["C_hat1"], parts["U_hat"]
    Y1, report = tdlrt_step(Y, oracle, lr, tau=tau, loss=_conv_loss(inputs, geo))
    for i, U in enumerate(Y.factors):
        s = np.linalg.svd(unfold(C_hat1, i), compute_uv=False)
        # The per-mode rule of the integrator's truncation: every mode against the ϑ it reports.
        check_decision(s, report.threshold, f"truncation of mode {i}")
        check_gap(s, Y1.ranks[i], C_hat1.shape[i], f"truncation of mode {i}")
        # The new directions of the augmentation span a well-conditioned subspace.
        new = parts["grad_K"][i] - U @ (U.T @ parts["grad_K"][i])
        check_gap(np.linalg.svd(new, compute_uv=False), U_hat[i].shape[1] - U.shape[1], U.shape[0] - U.shape[1],
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


#: Per case kind, its ``compute(inputs) -> {name: Output}``.
COMPUTE: dict[str, Callable[[Mapping], dict]] = {
    "unfold_fold": _compute_unfold_fold,
    "mode_products": _compute_mode_products,
    "hosvd": _compute_hosvd,
    "tangent_projection": _compute_tangent,
    "conv2d": _compute_conv,
    "tucker_conv2d": _compute_tucker_conv,
    "tdlrt_step": _compute_tdlrt,
}


@dataclass(frozen=True)
class CaseSpec:
    """One case of the canonical set: ``make(rng)`` draws its inputs from ``default_rng(seed)``."""

    name: str
    kind: str
    seed: int
    description: str
    make: Callable[[np.random.Generator], tuple[dict, dict]]


#: The canonical golden set, in manifest order.
CASES = (
    CaseSpec("unfold_fold_3way", "unfold_fold", 101,
             "unfold_k = Mat_k(X) and fold_k = Ten_k(M_k) for every mode of a 3-way X",
             partial(_make_unfold_fold, shape=(3, 4, 5))),
    CaseSpec("unfold_fold_4way", "unfold_fold", 102,
             "unfold_k = Mat_k(X) and fold_k = Ten_k(M_k) for every mode of a 4-way X",
             partial(_make_unfold_fold, shape=(2, 3, 4, 5))),
    CaseSpec("mode_products_4way", "mode_products", 103,
             "Tucker tensor C x_i U_i, single mode products C x_k U_k, projection X x_i U_i^T",
             partial(_make_mode_products, shape=(5, 4, 3, 3), ranks=(3, 2, 2, 2))),
    CaseSpec("hosvd_tol_3way", "hosvd", 104,
             "HOSVD with relative tol (total budget, equal split theta/sqrt(d) per mode) of a planted "
             "rank-(3, 2, 3) tensor plus 1e-3 noise",
             partial(_make_hosvd, shape=(6, 5, 4), ranks=(3, 2, 3), noise=1e-3, tol=1e-2, sequential=False)),
    CaseSpec("sthosvd_tol_4way", "hosvd", 105,
             "ST-HOSVD with relative tol (sequential budget) of a planted rank-(3, 2, 2, 2) tensor plus "
             "1e-3 noise",
             partial(_make_hosvd, shape=(5, 4, 3, 3), ranks=(3, 2, 2, 2), noise=1e-3, tol=1e-2, sequential=True)),
    CaseSpec("tangent_projection_3way", "tangent_projection", 106,
             "orthogonal projection of Z onto the tangent space at Y = C x_i U_i: dense, epsilon, factors",
             partial(_make_tangent, shape=(5, 4, 3), ranks=(3, 2, 2))),
    CaseSpec("conv2d_basic", "conv2d", 107, "conv2d forward and backward, stride 1, no padding",
             partial(_make_conv, x_shape=(2, 3, 6, 6), w_shape=(4, 3, 3, 3), stride=1, padding=0, dilation=1)),
    CaseSpec("conv2d_stride_pad", "conv2d", 108, "conv2d forward and backward, stride 2, padding 1",
             partial(_make_conv, x_shape=(2, 3, 7, 8), w_shape=(4, 3, 3, 2), stride=2, padding=1, dilation=1)),
    CaseSpec("conv2d_mixed", "conv2d", 109,
             "conv2d forward and backward, stride (2, 1), padding (1, 2), dilation (2, 1)",
             partial(_make_conv, x_shape=(1, 2, 9, 8), w_shape=(3, 2, 3, 3), stride=(2, 1), padding=(1, 2),
                     dilation=(2, 1))),
    CaseSpec("tucker_conv2d_basic", "tucker_conv2d", 110,
             "Tucker conv2d forward and backward (pinned factors), padding 1",
             partial(_make_tucker_conv, x_shape=(2, 4, 6, 6), kernel_shape=(5, 4, 3, 3), ranks=(3, 2, 3, 2),
                     stride=1, padding=1, dilation=1)),
    CaseSpec("tucker_conv2d_strided", "tucker_conv2d", 111,
             "Tucker conv2d forward and backward (pinned factors), stride (2, 1), padding (0, 1), dilation (1, 2)",
             partial(_make_tucker_conv, x_shape=(2, 3, 8, 7), kernel_shape=(4, 3, 3, 3), ranks=(2, 2, 2, 2),
                     stride=(2, 1), padding=(0, 1), dilation=(1, 2))),
    CaseSpec("tdlrt_step_conv", "tdlrt_step", 112,
             "one TDLRT step (k_step variant, all modes adaptive, same_point S-step, relative tau, plain SGD) "
             "on L(W) = ½‖conv2d(x, W) − target‖² from Y0 = C x_i U_i, with every intermediate as a "
             "basis-invariant quantity",
             partial(_make_tdlrt, x_shape=(8, 6, 16, 16), kernel_shape=(8, 6, 5, 5), ranks=(3, 2, 2, 2), stride=1,
                     padding=2, dilation=1, pull=0.5, noise=0.02, step=0.5)),
)


def case_names() -> tuple[str, ...]:
    """Names of the cases :func:`~tucker_ref.golden.command.write_golden` writes, in manifest order."""
    return tuple(spec.name for spec in CASES)


def compute_case(kind: str, inputs: Mapping, name: str) -> dict:
    """The outputs ``{name: Output}`` of a case of ``kind`` computed from ``inputs`` (arrays and params)."""
    if kind not in COMPUTE:
        raise GoldenError(f"case {name}: unknown kind {kind!r} (known: {sorted(COMPUTE)}); "
                          "was the set written by a newer tucker_ref?")
    return COMPUTE[kind](inputs)
