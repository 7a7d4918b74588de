"""Composite integrator steps built only from the substeps of :mod:`.substeps` (docs/algorithms.md).

The rank-adaptive step is a cycle a user can take apart (docs/algorithms.md §5):

* :func:`augment` — open a cycle at ``Y0``: augmented bases ``Û_i``, zero-padded core ``Ĉ0``,
  the optimizer's core state transported (an :class:`AugmentedPoint`);
* :func:`s_step` — one Galerkin S-step on the fixed augmented basis, with its own gradient
  (any number of times; :func:`galerkin_gradient` gives the core gradient alone);
* :func:`truncate_cycle` — close the cycle: rank-adaptive truncation, state transported.

Compositions:

* :func:`tdlrt_step` — one rank-adaptive BUG step (augment, one S-step, truncate), the TDLRT
  step of the paper;
* :func:`tdlrt_cycle` — augment, ``K`` S-steps with their own gradients, truncate (the
  authors' practical protocol);
* :func:`fixed_rank_bug_step` — the fixed-rank BUG step of Ceruti–Lubich (no augmentation,
  no truncation; its S-step gradient is taken at the projected point).

The steps take the gradient as an ndarray (the dense ``∇L(Y0)``), a gradient oracle at ``Y0``,
or a gradient callable ``point -> ndarray | oracle`` (see :mod:`tucker_ref.gradient_oracle`), and return
``(Y_new, StepReport)``. None modifies its input ``Y``; a non-finite gradient raises
``ValueError`` naming the step (and the layer, via ``name``) before anything is changed,
including the optimizer's state.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..checks import as_float_array, check_instance, check_nonneg
from ..manifold import normal_component_norm, tangent_projection
from ..truncation import TruncationRule, as_truncation_rule
from ..tucker import TuckerTensor, multi_mode_product
from .optim import SGD
from .oracle import (
    check_point,
    checked_core_gradient,
    checked_mode_partial,
    dense_gradient_or_none,
    is_gradient_callable,
    loss_at,
    oracle_at,
    step_label,
)
from .substeps import (
    augment_basis,
    check_adaptive_modes,
    check_lr,
    galerkin_step,
    k_gradient,
    k_parametrization,
    k_step,
    orthonormal_basis,
    truncate_step,
    u_gradient,
)

#: Variants of :func:`tdlrt_step`: which new directions augment mode ``i`` (docs/algorithms.md#variants).
VARIANTS = ("k_step", "augmented_gradient")
#: Where the S-step gradient is taken (docs/algorithms.md §2).
S_STEP_GRADIENTS = ("same_point", "reevaluate")


@dataclass
class StepReport:
    """What one integrator step did (docs/algorithms.md §4), JSON-ready through :meth:`to_dict`.

    Attributes
    ----------
    variant : str
        ``"k_step"``, ``"augmented_gradient"`` or ``"fixed_rank_bug"``.
    ranks_before, ranks_augmented, ranks_after : tuple of int
        Multilinear ranks of ``Y0``, of the augmented core ``Ĉ0``, of ``Y1``.
    clamps : dict
        Per mode, the clamps that changed the tolerance rank (``"rmin"``, ``"rmax"``,
        ``"feasibility"``), and ``"fixed"`` for a non-adaptive mode truncated back to its rank
        with a tail above ``ϑ``. Without ``"rmax"`` and ``"fixed"`` every tail is ``≤ ϑ``
        (docs/algorithms.md §3).
    tails : tuple of float
        Per mode, the norm of the discarded singular values of ``Mat_i(Ĉ1)``.
    eta : float
        ``η = ‖Ŷ1 − Y1‖`` (the truncation error, computed directly); ``η ≤ sqrt(Σ tails²)``.
    threshold : float or None
        ``ϑ`` in absolute terms.
    proj_grad_norm : float or None
        ``‖Π∇L(Y0)‖ = ‖∇L(Y0) ×_i Û_i^T‖`` (Π the orthogonal projection onto ``⊗ span Û_i``; for
        fixed-rank BUG ``Û_i = U_i^1``). ``None`` for ``"reevaluate"`` without diagnostics.
    tangent_grad_norm : float or None
        ``‖P(Y0)∇L(Y0)‖``; ``None`` without diagnostics or without a dense gradient.
    epsilon : float or None
        ``ε = ‖(I − P(Y0))∇L(Y0)‖`` from the difference (``manifold.normal_component_norm``).
    residual_norm : float or None
        ``‖(I − Π)∇L(Y0)‖`` from the difference; ``≤ ε`` for ``k_step`` (containment, docs/theory.md §3).
    loss_before, loss_after : float or None
        ``L(Y0)`` and ``L(Y1)`` when a ``loss`` callable was given.
    s_step_gradient : str
        ``"same_point"`` (S-step gradient at ``Y0``) or ``"reevaluate"`` (the callable was
        called again at the S-step's starting point).
    timings : dict
        Wall time in seconds per substep.
    s_steps : int
        Number of S-steps on the augmented basis before the truncation (1 for :func:`tdlrt_step`).
    """

    variant: str
    ranks_before: tuple
    ranks_augmented: tuple
    ranks_after: tuple
    clamps: dict
    tails: tuple
    eta: float
    threshold: float | None
    proj_grad_norm: float | None
    tangent_grad_norm: float | None
    epsilon: float | None
    residual_norm: float | None
    loss_before: float | None
    loss_after: float | None
    s_step_gradient: str
    timings: dict = field(default_factory=dict)
    s_steps: int = 1

    def to_dict(self) -> dict:
        """Plain Python types only (lists, floats, str keys), for ``json.dumps``."""
        out = asdict(self)
        for key in ("ranks_before", "ranks_augmented", "ranks_after"):
            out[key] = [int(r) for r in out[key]]
        out["tails"] = [float(t) for t in out["tails"]]
        out["clamps"] = {str(k): list(v) for k, v in out["clamps"].items()}
        out["timings"] = {str(k): float(v) for k, v in out["timings"].items()}
        for key in ("eta", "threshold", "proj_grad_norm", "tangent_grad_norm", "epsilon", "residual_norm",
                    "loss_before", "loss_after"):
            if out[key] is not None:
                out[key] = float(out[key])
        return out


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
@contextmanager
def _timed(timings: dict, key: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - start


def _diagnostics(Y: TuckerTensor, oracle0, bases, timings: dict):
    """``(‖P(Y0)G‖, ε, ‖(I − Π)G‖)`` from the dense gradient, or Nones when the oracle has none."""
    with _timed(timings, "diagnostics"):
        G = dense_gradient_or_none(oracle0)
        if G is None:
            return None, None, None
        G = np.asarray(G)
        tangent = float(np.linalg.norm(tangent_projection(Y, G)))
        epsilon = normal_component_norm(Y, G)
        projected = multi_mode_product(multi_mode_product(G, bases, transpose=True), bases)
        residual = float(np.linalg.norm(G - projected))
    return tangent, epsilon, residual


def _check_optimizer(optimizer, shape, step: str, state=None):
    """The optimizer of a step (plain :class:`SGD` for ``None``), with its state checked against ``shape``.

    ``state`` is the state to check (default: ``optimizer.state``).
    """
    if optimizer is None:
        return SGD()
    for method in ("direction", "transport", "check_state"):
        if not callable(getattr(optimizer, method, None)):
            raise TypeError(f"{step}: optimizer must provide direction(), transport() and check_state() (e.g. SGD, "
                            f"HeavyBall, Adam, AdamW), got {type(optimizer).__name__}")
    optimizer.check_state(getattr(optimizer, "state", None) if state is None else state, shape, step)
    return optimizer


# ---------------------------------------------------------------------------------------
# the cycle: augment, S-steps, truncate
# ---------------------------------------------------------------------------------------
@dataclass
class AugmentedPoint:
    """An open TDLRT cycle: the point ``Ŷ = Ĉ ×_i Û_i`` in the augmented space ``V = ⊗_i span Û_i``.

    Made by :func:`augment`, moved by :func:`s_step` (the bases stay fixed for the whole cycle,
    only the core moves), closed by :func:`truncate_cycle` (docs/algorithms.md §5).

    Attributes
    ----------
    core : ndarray, shape ``(r̂_1, …, r̂_d)``
        ``Ĉ``; right after :func:`augment` it is ``Ĉ0 = C0 ×_i M̂_i`` (zero padding).
    bases : list of ndarray
        ``Û_i`` (``n_i × r̂_i``, orthonormal, ``Û_i[:, :r_i] = U_i^0``).
    ranks_before : tuple of int
        Ranks of ``Y0``: the truncation targets of the non-adaptive modes.
    variant : str
        ``"k_step"`` or ``"augmented_gradient"`` (which directions augmented the bases).
    optimizer_state : object
        The optimizer's core state transported to the augmented basis and updated by every
        S-step; committed to the optimizer by :func:`truncate_cycle`.
    s_steps : int
        Number of S-steps taken so far in this cycle.
    timings : dict
        Wall time per substep, accumulated over the cycle (one dict shared by its points).
    """

    core: np.ndarray
    bases: list
    ranks_before: tuple
    variant: str
    optimizer_state: object = None
    s_steps: int = 0
    timings: dict = field(default_factory=dict)

    @property
    def ranks(self) -> tuple:
        """``(r̂_1, …, r̂_d)``, the augmented ranks."""
        return tuple(self.core.shape)

    def tucker(self) -> TuckerTensor:
        """``Ŷ = Ĉ ×_i Û_i`` as a TuckerTensor (what a network layer computes with during the cycle)."""
        return TuckerTensor(self.core, list(self.bases))


def augment(Y: TuckerTensor, grad, *, variant: str = "k_step", optimizer=None, name: str | None = None,
            timings: dict | None = None, caller: str = "augment") -> AugmentedPoint:
    """Open a cycle at ``Y0``: basis augmentation and zero padding (docs/algorithms.md §1, §5).

    ``Û_i, M̂_i`` from :func:`augmented_bases` (the gradient ``grad`` taken at ``Y0``),
    ``Ĉ0 = C0 ×_i M̂_i`` so that ``Ĉ0 ×_i Û_i = Y0``, and the optimizer's core state
    transported by ``M̂_i``. Neither ``Y`` nor the optimizer is modified.

    Parameters
    ----------
    Y : TuckerTensor, orthonormal factors, feasible ranks
    grad : ndarray | gradient oracle | callable — the gradient at ``Y``
    variant : ``"k_step"`` | ``"augmented_gradient"``
    optimizer : SGD | HeavyBall | Adam | AdamW, optional
        Only its ``state`` is read (and transported into the returned point).

    Returns
    -------
    AugmentedPoint

    Examples
    --------
    >>> from tucker_ref.integrators import DenseGradient, augment
    >>> from tucker_ref.tucker import random_tucker
    >>> rng = np.random.default_rng(0)
    >>> Y0 = random_tucker(rng, (6, 5, 4), (2, 2, 2))
    >>> point = augment(Y0, DenseGradient(rng.standard_normal(Y0.shape), Y0))
    >>> point.ranks_before, point.ranks  # each basis gains up to r_i new directions
    ((2, 2, 2), (4, 4, 4))
    >>> bool(np.allclose(point.bases[0][:, :2], Y0.factors[0]))  # Û_i = [U_i, new directions]
    True
    >>> bool(np.allclose(point.tucker().full(), Y0.full()))  # zero padding: Ŷ0 = Y0
    True
    """
    step = step_label(caller, name)
    # augmented_bases checks the orthonormal factors (a product per factor, as costly as a
    # sizeable part of the step at a full-rank start); the type is all the optimizer check needs.
    Y = check_instance(Y, TuckerTensor, f"{step}: Y")
    optimizer = _check_optimizer(optimizer, Y.ranks, step)
    timings = {} if timings is None else timings
    U_hats, M_hats = augmented_bases(Y, grad, variant, name=name, timings=timings, caller=caller)
    C_hat0 = multi_mode_product(Y.core, M_hats)
    with _timed(timings, "galerkin"):
        state = optimizer.transport(optimizer.state, M_hats)
    return AugmentedPoint(core=C_hat0, bases=U_hats, ranks_before=Y.ranks, variant=variant,
                          optimizer_state=state, timings=timings)


def galerkin_gradient(point: AugmentedPoint, grad, *, name: str | None = None,
                      caller: str = "galerkin_gradient") -> np.ndarray:
    """``∇L(Ŷ) ×_i Û_i^T``: the gradient of ``Ĉ ↦ L(Ĉ ×_i Û_i)`` at the point's core (docs/algorithms.md §2).

    ``grad`` is the gradient at ``Ŷ = point.tucker()``: an ndarray (dense ``∇L(Ŷ)``), an oracle
    at ``Ŷ``, or a callable ``point -> ndarray | oracle`` (called with ``point.tucker()``).
    Checked for shape and finiteness; in the point's dtype.
    """
    step = step_label(caller, name)
    if not isinstance(point, AugmentedPoint):
        raise TypeError(f"{step}: point must be an AugmentedPoint (from augment), got {type(point).__name__}")
    with _timed(point.timings, "gradient"):
        oracle = oracle_at(grad, point.tucker(), step)
        return checked_core_gradient(oracle, point.bases, step, point.core.dtype)


def s_step(point: AugmentedPoint, grad, lr, *, optimizer=None, core_grad=None, grad_scale: float = 1.0,
           name: str | None = None, caller: str = "s_step") -> AugmentedPoint:
    """One Galerkin S-step on the fixed augmented basis of a cycle (docs/algorithms.md §2, §5).

    ``Ĉ ← Ĉ − λ·direction`` with ``direction`` the optimizer's, from the core gradient
    ``g = grad_scale · ∇L(Ŷ) ×_i Û_i^T`` (plain SGD: ``direction = g``). The bases do not
    change, so every iterate of the cycle stays in ``V = ⊗ span Û_i``. Call it any number of
    times, each with its own gradient (e.g. a new mini-batch at the current ``Ŷ``).

    Parameters
    ----------
    point : AugmentedPoint
    grad : ndarray | gradient oracle | callable, or ``None`` with ``core_grad``
        The gradient at ``Ŷ = point.tucker()`` (see :func:`galerkin_gradient`).
    lr : float ``≥ 0``
    optimizer : SGD | HeavyBall | Adam | AdamW, optional (default plain SGD)
        Its update rule is applied to ``point.optimizer_state``; the optimizer object itself is
        not modified (its state is committed by :func:`truncate_cycle`).
    core_grad : ndarray, optional
        The core gradient already computed by :func:`galerkin_gradient` (give ``grad=None``);
        the trainer uses it to clip all gradients of a network together.
    grad_scale : float ``≥ 0``
        Multiplies the core gradient before the optimizer (gradient-norm clipping).

    Returns
    -------
    AugmentedPoint
        A new point (the input is not modified) with ``s_steps`` one larger.

    Examples
    --------
    >>> from tucker_ref.integrators import augment, s_step
    >>> from tucker_ref.tucker import multi_mode_product, random_tucker
    >>> rng = np.random.default_rng(0)
    >>> A = rng.standard_normal((6, 5, 4))
    >>> grad = lambda Y: Y.full() - A  # the gradient of L(Y) = ½‖Y − A‖², at any point
    >>> point = augment(random_tucker(rng, A.shape, (2, 2, 2)), grad)
    >>> for _ in range(3):
    ...     point = s_step(point, grad, lr=0.5)
    >>> point.s_steps, point.ranks  # the bases stay fixed, only the core moves
    (3, (4, 4, 4))

    For this loss a step with ``lr=1`` lands on the best core in the bases, ``A ×_i Û_i^T``:

    >>> bool(np.allclose(s_step(point, grad, lr=1.0).core, multi_mode_product(A, point.bases, transpose=True)))
    True
    """
    step = step_label(caller, name)
    if not isinstance(point, AugmentedPoint):
        raise TypeError(f"{step}: point must be an AugmentedPoint (from augment), got {type(point).__name__}")
    lr = check_lr(lr)
    grad_scale = check_nonneg(grad_scale, "grad_scale", allow_none=False)
    optimizer = _check_optimizer(optimizer, point.ranks, step, state=point.optimizer_state)
    if (grad is None) == (core_grad is None):
        raise ValueError(f"{step}: give exactly one of grad (the gradient at the point) and core_grad")
    if core_grad is None:
        core_grad = galerkin_gradient(point, grad, name=name, caller=caller)
    else:
        core_grad = as_float_array(core_grad, "core_grad")
        if core_grad.shape != point.ranks:
            raise ValueError(f"{step}: core_grad must have the augmented core's shape {point.ranks}, "
                             f"got {core_grad.shape}")
    if grad_scale != 1.0:
        core_grad = core_grad * core_grad.dtype.type(grad_scale)
    with _timed(point.timings, "galerkin"):
        direction, state = optimizer.direction(core_grad, point.optimizer_state, point.core)
        core = galerkin_step(point.core, direction, lr)
    return replace(point, core=core, optimizer_state=state, s_steps=point.s_steps + 1)


def truncate_cycle(point: AugmentedPoint, *, tau=None, theta=None, adaptive_modes=None, rmin=1, rmax=None,
                   optimizer=None, name: str | None = None, caller: str = "truncate_cycle",
                   rule: TruncationRule | None = None):
    """Close a cycle: rank-adaptive truncation of ``Ŷ`` and the optimizer state's transport (docs/algorithms.md §3).

    :func:`~.substeps.truncate_step` on ``(Ĉ, Û)`` with the non-adaptive modes truncated back
    to ``point.ranks_before``; the core state is transported by ``P_i^T = U_i^{1T} Û_i`` and,
    when ``optimizer`` is given, stored in ``optimizer.state`` (the only place a cycle writes it).
    The tolerance and rank bounds are ``tau``/``theta``/``rmin``/``rmax`` or one validated
    ``rule`` (:class:`~tucker_ref.truncation.TruncationRule`).

    Returns
    -------
    (TuckerTensor, TruncationReport)
        ``Y1`` and the truncation report (``error`` is ``η = ‖Ŷ − Y1‖``).

    Examples
    --------
    The three pieces of a cycle with one S-step compose to :func:`tdlrt_step`:

    >>> from tucker_ref.integrators import DenseGradient, augment, s_step, tdlrt_step, truncate_cycle
    >>> from tucker_ref.tucker import random_tucker
    >>> rng = np.random.default_rng(0)
    >>> Y0 = random_tucker(rng, (6, 5, 4), (2, 2, 2))
    >>> G = DenseGradient(rng.standard_normal(Y0.shape), Y0)
    >>> Y1, trunc = truncate_cycle(s_step(augment(Y0, G), G, lr=0.1), tau=0.05)
    >>> Y_step, report = tdlrt_step(Y0, G, lr=0.1, tau=0.05)
    >>> Y1.ranks == report.ranks_after, bool(np.allclose(Y1.full(), Y_step.full()))
    (True, True)
    """
    step = step_label(caller, name)
    if not isinstance(point, AugmentedPoint):
        raise TypeError(f"{step}: point must be an AugmentedPoint (from augment), got {type(point).__name__}")
    rule = as_truncation_rule(rule, tau=tau, theta=theta, rmin=rmin, rmax=rmax, ndim=point.core.ndim, where=step)
    transporter = _check_optimizer(optimizer, point.ranks, step, state=point.optimizer_state)
    with _timed(point.timings, "truncate"):
        Y_new, trunc = truncate_step(point.core, point.bases, rule=rule, adaptive_modes=adaptive_modes,
                                     fixed_ranks=point.ranks_before)
        state = transporter.transport(point.optimizer_state, [U1.T @ Uh for U1, Uh in zip(Y_new.factors, point.bases)])
    if optimizer is not None:
        optimizer.state = state
    return Y_new, trunc


def cycle_report(point: AugmentedPoint, Y0: TuckerTensor, Y_new: TuckerTensor, trunc, *, oracle0=None,
                 proj_grad_norm=None, diagnostics: bool = False, loss_before=None, loss_after=None,
                 s_step_gradient: str = "same_point") -> StepReport:
    """The :class:`StepReport` of a closed cycle: ``Y0 → point → Y_new`` with the truncation report ``trunc``.

    ``oracle0`` (the gradient oracle at ``Y0``) is needed only for ``diagnostics`` (``ε``,
    ``‖P(Y0)∇L‖``, ``‖(I − Π)∇L‖`` from its dense gradient).
    """
    tangent, epsilon, residual = (_diagnostics(Y0, oracle0, point.bases, point.timings) if diagnostics
                                  else (None, None, None))
    return StepReport(
        variant=point.variant,
        ranks_before=Y0.ranks,
        ranks_augmented=point.ranks,
        ranks_after=Y_new.ranks,
        clamps=trunc.clamps,
        tails=trunc.tails,
        eta=trunc.error,
        threshold=trunc.threshold,
        proj_grad_norm=proj_grad_norm,
        tangent_grad_norm=tangent,
        epsilon=epsilon,
        residual_norm=residual,
        loss_before=loss_before,
        loss_after=loss_after,
        s_step_gradient=s_step_gradient,
        timings=point.timings,
        s_steps=point.s_steps,
    )


def _check_step_arguments(step, Y, lr, rule, tau, theta, rmin, rmax, adaptive_modes, variant):
    """``(Y, lr, rule)`` of a composite step, checked before anything is computed."""
    Y = check_point(Y, step)
    lr = check_lr(lr)
    rule = as_truncation_rule(rule, tau=tau, theta=theta, rmin=rmin, rmax=rmax, ndim=Y.ndim, where=step)
    check_adaptive_modes(adaptive_modes, Y.ndim)
    if variant not in VARIANTS:
        raise ValueError(f"{step}: variant must be one of {VARIANTS}, got {variant!r}")
    return Y, lr, rule


# ---------------------------------------------------------------------------------------
# rank-adaptive BUG (TDLRT)
# ---------------------------------------------------------------------------------------
def augmented_bases(Y: TuckerTensor, grad, variant: str = "k_step", *, name: str | None = None,
                    timings: dict | None = None, caller: str = "augmented_bases"):
    """Step 1 of docs/algorithms.md §1 for every mode: the augmented bases ``Û_i`` and ``M̂_i = Û_i^T U_i``.

    ``Û_i = augment_basis(U_i, N_i Q_i)`` (``variant="k_step"``, the new directions
    ``∇_{K_i}L``) or ``augment_basis(U_i, N_i Mat_i(C)^T)`` (``"augmented_gradient"``,
    ``∇_{U_i}L``); when ``Mat_i(C0)`` is square ``Q_i`` is orthogonal and ``N_i`` itself gives
    the same ``Û_i`` to rounding, without the SVD. A mode at full rank (``r_i = n_i``) has
    nothing to add: ``Û_i = U_i`` and ``M̂_i = None`` (identity). ``grad`` is anything
    :func:`~.oracle.gradient_at` accepts, taken at ``Y``. :func:`augment` calls it; it is public
    so that tests and validation scripts can rebuild the space ``V = ⊗ span Û_i`` of a step.
    ``caller`` names the step in error messages.

    Returns
    -------
    (list of ndarray, list of ndarray or None)
    """
    step = step_label(caller, name)
    if variant not in VARIANTS:
        raise ValueError(f"{step}: variant must be one of {VARIANTS}, got {variant!r}")
    Y = check_point(Y, step)
    timings = {} if timings is None else timings
    oracle = oracle_at(grad, Y, step)
    U_hats, M_hats = [], []
    for i, U in enumerate(Y.factors):
        if U.shape[1] == U.shape[0]:
            U_hats.append(U)
            M_hats.append(None)
            continue
        with _timed(timings, "gradient"):
            N = checked_mode_partial(oracle, Y, i, step)
        with _timed(timings, "k_parametrization"):
            if variant == "k_step" and Y.ranks[i] ** 2 == math.prod(Y.ranks):
                # Mat_i(C0) is square (every mode of a matrix): Q_i is square orthogonal, and
                # augment_basis(U_i, N_i Q_i) depends on N_i Q_i only through its projected
                # span and singular values, which Q_i does not change; N_i gives Û_i to rounding.
                new_directions = N
            elif variant == "k_step":
                Q, _, _ = k_parametrization(Y, i)
                new_directions = k_gradient(N, Q)
            else:
                new_directions = u_gradient(N, Y.core, i)
        with _timed(timings, "augment"):
            U_hat, M_hat = augment_basis(U, new_directions)
        U_hats.append(U_hat)
        M_hats.append(M_hat)
    return U_hats, M_hats


def tdlrt_step(Y: TuckerTensor, grad, lr, *, tau=None, theta=None, variant: str = "k_step", adaptive_modes=None,
               rmin=1, rmax=None, s_step_gradient: str = "same_point", loss=None, optimizer=None,
               diagnostics: bool = True, name: str | None = None, rule: TruncationRule | None = None):
    """One rank-adaptive BUG step with explicit Euler substeps (docs/algorithms.md §1-§3).

    The cycle of one S-step: ``truncate_cycle(s_step(augment(Y0, ∇L(Y0)), g, λ))``. For every
    mode ``i`` (independently, all from the same ``C0``, ``U^0``):
    ``Q_i, S_i = k_parametrization(Y0, i)``, ``N_i`` from the oracle, new directions
    ``∇_{K_i}L = N_i Q_i`` (``variant="k_step"``, default) or ``∇_{U_i}L = N_i Mat_i(C0)^T``
    (``"augmented_gradient"``), ``Û_i, M̂_i = augment_basis(U_i, ·)``. A mode at full rank
    (``r_i = n_i``) has nothing to add: ``Û_i = U_i`` and its oracle query is skipped. Then
    ``Ĉ0 = C0 ×_i M̂_i``, ``Ĉ1 = Ĉ0 − λ·direction`` with ``direction`` the optimizer's (the
    gradient ``∇L ×_i Û_i^T`` for SGD), and ``Y1 = truncate_step(Ĉ1, Û, …)`` with
    non-adaptive modes truncated back to their pre-step rank. So, for SGD with
    ``"same_point"``, the pre-truncation iterate is ``Ŷ1 = Y0 − λ ∇L(Y0) ×_i Û_iÛ_i^T``.

    Parameters
    ----------
    Y : TuckerTensor, shape ``(n_1, …, n_d)``, orthonormal factors, feasible ranks
    grad : ndarray | gradient oracle | callable
        The dense ``∇L(Y)`` (same shape as ``Y``), an oracle at ``Y``, or a callable
        ``point -> ndarray | oracle`` (called at ``Y``, and at ``Ŷ0 = Ĉ0 ×_i Û_i`` for
        ``"reevaluate"``).
    lr : float ``≥ 0``
    tau, theta : float, optional
        Relative (``ϑ = τ‖Ĉ1‖_F``) or absolute per-mode truncation tolerance; at most one;
        neither means ``τ = 0``.
    variant : ``"k_step"`` | ``"augmented_gradient"``
    adaptive_modes : sequence of int, optional — ``None`` = all modes
    rmin, rmax : int or per-mode sequence — clamp interval of adaptive ranks
    s_step_gradient : ``"same_point"`` | ``"reevaluate"``
        ``"reevaluate"`` calls the callable at ``Ŷ0`` (equal to ``Y0`` as a tensor, but a
        mini-batch callable may return another batch's gradient); it requires a callable.
    loss : callable point -> float, optional — fills ``loss_before`` / ``loss_after``
    optimizer : SGD | HeavyBall | Adam | AdamW, optional (default plain SGD)
        Its ``state`` (core moments) is transported through augmentation and truncation and
        replaced only when the step succeeds (:mod:`.optim`).
    diagnostics : bool
        Compute ``‖P(Y0)∇L‖``, ``ε`` and ``‖(I − Π)∇L‖`` (they need the dense gradient and a
        dense tangent projection; the theory path wants them, the trainer passes ``False``).
    name : str, optional
        Layer name used in error messages.
    rule : TruncationRule, optional
        ``tau``/``theta``/``rmin``/``rmax`` as one object, already validated (excludes them).

    Returns
    -------
    (TuckerTensor, StepReport)

    Examples
    --------
    One step on ``L(Y) = ½‖Y − A‖²`` from ``Y0`` of rank ``(2, 2, 2)`` toward ``A`` of rank
    ``(3, 3, 3)``: the bases double, then the truncation keeps the rank the step needs.

    >>> from tucker_ref import TuckerTensor
    >>> from tucker_ref.integrators import DenseGradient, tdlrt_step
    >>> from tucker_ref.tucker import random_tucker
    >>> rng = np.random.default_rng(0)
    >>> A = random_tucker(rng, (6, 5, 4), (3, 3, 3)).full()
    >>> Y0 = random_tucker(rng, A.shape, (2, 2, 2))
    >>> Y1, report = tdlrt_step(Y0, DenseGradient(Y0.full() - A, Y0), lr=1.0, tau=1e-8)
    >>> report.ranks_before, report.ranks_augmented, report.ranks_after
    ((2, 2, 2), (4, 4, 4), (3, 3, 3))
    >>> isinstance(Y1, TuckerTensor), bool(np.linalg.norm(Y1.full() - A) < np.linalg.norm(Y0.full() - A))
    (True, True)
    """
    step = step_label("tdlrt_step", name)
    Y, lr, rule = _check_step_arguments(step, Y, lr, rule, tau, theta, rmin, rmax, adaptive_modes, variant)
    if s_step_gradient not in S_STEP_GRADIENTS:
        raise ValueError(f"{step}: s_step_gradient must be one of {S_STEP_GRADIENTS}, got {s_step_gradient!r}")
    if s_step_gradient == "reevaluate" and not is_gradient_callable(grad):
        raise ValueError(f"{step}: s_step_gradient='reevaluate' needs grad to be a callable point -> gradient "
                         f"(an ndarray or oracle only describes the gradient at Y0), got {type(grad).__name__}")
    _check_optimizer(optimizer, Y.ranks, step)
    timings: dict = {}

    with _timed(timings, "gradient"):
        oracle0 = oracle_at(grad, Y, step)
    with _timed(timings, "loss"):
        loss_before = loss_at(loss, Y)

    point = augment(Y, oracle0, variant=variant, optimizer=optimizer, name=name, timings=timings,
                    caller="tdlrt_step")
    grad_core0 = None
    if s_step_gradient == "same_point":
        grad_core0 = galerkin_gradient(point, oracle0, name=name, caller="tdlrt_step")
        grad_core = grad_core0
    else:
        grad_core = galerkin_gradient(point, grad, name=name, caller="tdlrt_step")
        if diagnostics:
            grad_core0 = galerkin_gradient(point, oracle0, name=name, caller="tdlrt_step")
    point = s_step(point, None, lr, optimizer=optimizer, core_grad=grad_core, name=name, caller="tdlrt_step")
    Y_new, trunc = truncate_cycle(point, rule=rule, adaptive_modes=adaptive_modes, optimizer=optimizer, name=name,
                                  caller="tdlrt_step")
    with _timed(point.timings, "loss"):
        loss_after = loss_at(loss, Y_new)
    report = cycle_report(point, Y, Y_new, trunc,
                           proj_grad_norm=None if grad_core0 is None else float(np.linalg.norm(grad_core0)),
                           diagnostics=diagnostics, loss_before=loss_before, loss_after=loss_after,
                           s_step_gradient=s_step_gradient, oracle0=oracle0)
    return Y_new, report


def tdlrt_cycle(Y: TuckerTensor, grads, lr, *, tau=None, theta=None, variant: str = "k_step", adaptive_modes=None,
                rmin=1, rmax=None, loss=None, optimizer=None, diagnostics: bool = True, name: str | None = None,
                rule: TruncationRule | None = None):
    """One cycle of ``K = len(grads)`` S-steps on one augmented basis (docs/algorithms.md §5).

    ``grads[0]`` is the gradient at ``Y0`` (ndarray, oracle or callable): it builds the
    augmented bases and drives the first S-step (at ``Ŷ0 = Y0``). ``grads[k]``, ``k ≥ 1``, are
    callables ``point -> ndarray | oracle`` evaluated at the current augmented point (e.g. the
    next mini-batches). Then one truncation. ``len(grads) == 1`` is :func:`tdlrt_step` with
    ``"same_point"`` (bit for bit).

    Returns
    -------
    (TuckerTensor, StepReport)
        ``s_steps = K``; ``proj_grad_norm = ‖Π∇L(Y0)‖``; ``eta`` is the one truncation of the cycle.

    Examples
    --------
    >>> from tucker_ref.integrators import tdlrt_cycle, tdlrt_step
    >>> from tucker_ref.tucker import random_tucker
    >>> rng = np.random.default_rng(0)
    >>> A = rng.standard_normal((6, 5, 4))
    >>> grad = lambda Y: Y.full() - A  # the gradient of L(Y) = ½‖Y − A‖², at any point
    >>> loss = lambda Y: 0.5 * np.linalg.norm(Y.full() - A) ** 2
    >>> Y0 = random_tucker(rng, A.shape, (2, 2, 2))
    >>> Y1, report = tdlrt_cycle(Y0, [grad] * 5, lr=0.5, tau=0.01, loss=loss)  # K = 5 S-steps
    >>> report.s_steps, report.ranks_augmented, report.loss_after < report.loss_before
    (5, (4, 4, 4), True)
    >>> Y_one, _ = tdlrt_cycle(Y0, [grad], lr=0.5, tau=0.01)  # K = 1 is tdlrt_step
    >>> bool(np.allclose(Y_one.full(), tdlrt_step(Y0, grad, lr=0.5, tau=0.01)[0].full()))
    True
    """
    step = step_label("tdlrt_cycle", name)
    Y, lr, rule = _check_step_arguments(step, Y, lr, rule, tau, theta, rmin, rmax, adaptive_modes, variant)
    if isinstance(grads, (np.ndarray, str, bytes)) or not isinstance(grads, (list, tuple)) or not grads:
        raise TypeError(f"{step}: grads must be a non-empty list (the gradient at Y0, then one callable per further "
                        f"S-step), got {type(grads).__name__}")
    for k, g in enumerate(grads[1:], start=1):
        if not is_gradient_callable(g):
            raise TypeError(f"{step}: grads[{k}] must be a callable point -> gradient (it is evaluated at the "
                            f"cycle's current point), got {type(g).__name__}")
    _check_optimizer(optimizer, Y.ranks, step)
    timings: dict = {}
    with _timed(timings, "gradient"):
        oracle0 = oracle_at(grads[0], Y, step)
    with _timed(timings, "loss"):
        loss_before = loss_at(loss, Y)
    point = augment(Y, oracle0, variant=variant, optimizer=optimizer, name=name, timings=timings,
                    caller="tdlrt_cycle")
    grad_core0 = galerkin_gradient(point, oracle0, name=name, caller="tdlrt_cycle")
    point = s_step(point, None, lr, optimizer=optimizer, core_grad=grad_core0, name=name,
                   caller="tdlrt_cycle")
    for g in grads[1:]:
        point = s_step(point, g, lr, optimizer=optimizer, name=name, caller="tdlrt_cycle")
    Y_new, trunc = truncate_cycle(point, rule=rule, adaptive_modes=adaptive_modes, optimizer=optimizer, name=name,
                                  caller="tdlrt_cycle")
    with _timed(point.timings, "loss"):
        loss_after = loss_at(loss, Y_new)
    report = cycle_report(point, Y, Y_new, trunc, proj_grad_norm=float(np.linalg.norm(grad_core0)),
                           diagnostics=diagnostics, loss_before=loss_before, loss_after=loss_after,
                           s_step_gradient="same_point" if len(grads) == 1 else "reevaluate", oracle0=oracle0)
    return Y_new, report


# ---------------------------------------------------------------------------------------
# fixed-rank BUG
# ---------------------------------------------------------------------------------------
def fixed_rank_projected_point(Y: TuckerTensor, grad, lr, *, name: str | None = None, timings: dict | None = None,
                               caller: str = "fixed_rank_projected_point") -> TuckerTensor:
    """The basis update of fixed-rank BUG: the point ``Ỹ`` where its S-step gradient is taken.

    For every mode ``i`` (from the same ``C0``, ``U^0``): ``K_i^1 = k_step(Y0, i, N_i Q_i, λ)``,
    ``U_i^1 = orthonormal_basis(K_i^1)`` (``r_i`` columns, QR with ``diag(R) ≥ 0``),
    ``M_i = U_i^{1T} U_i^0``; ``Ỹ = C̃ ×_i U_i^1`` with ``C̃ = C0 ×_i M_i``
    (docs/algorithms.md#variants). ``grad`` is the gradient at ``Y`` (ndarray, oracle or callable).

    Returns
    -------
    TuckerTensor ``(C̃, [U_i^1])``, the ranks of ``Y``
    """
    step = step_label(caller, name)
    Y = check_point(Y, step)
    lr = check_lr(lr)
    timings = {} if timings is None else timings
    oracle0 = oracle_at(grad, Y, step)
    U1s = []
    for i, U in enumerate(Y.factors):
        with _timed(timings, "gradient"):
            N = checked_mode_partial(oracle0, Y, i, step)
        with _timed(timings, "k_parametrization"):
            Q, _, _ = k_parametrization(Y, i)
            K1 = k_step(Y, i, k_gradient(N, Q), lr)
        with _timed(timings, "basis_update"):
            U1s.append(orthonormal_basis(K1))
    return TuckerTensor(multi_mode_product(Y.core, [U1.T @ U for U1, U in zip(U1s, Y.factors)]), U1s)


def fixed_rank_s_step(Y: TuckerTensor, projected: TuckerTensor, grad, lr, *, oracle0=None, diagnostics: bool = False,
                      name: str | None = None, timings: dict | None = None, caller: str = "fixed_rank_s_step"):
    """The S-step of fixed-rank BUG: ``C1 = C̃ − λ ∇L(Ỹ) ×_i U_i^{1T}`` on the bases of ``projected``.

    ``projected`` is :func:`fixed_rank_projected_point` of ``Y``; ``grad`` the gradient at it
    (ndarray, oracle or callable). ``oracle0`` (the gradient at ``Y``) is needed only for the
    ``diagnostics`` and ``proj_grad_norm`` of the report.

    Returns
    -------
    (TuckerTensor, StepReport)
        As :func:`fixed_rank_bug_step`, with ``loss_before`` / ``loss_after`` ``None``.
    """
    step = step_label(caller, name)
    Y = check_point(Y, step)
    lr = check_lr(lr)
    if not isinstance(projected, TuckerTensor) or projected.ranks != Y.ranks or projected.shape != Y.shape:
        raise ValueError(f"{step}: projected must be the TuckerTensor of fixed_rank_projected_point(Y, …) (shape "
                         f"{Y.shape}, ranks {Y.ranks}), got {projected!r}")
    if diagnostics and oracle0 is None:
        raise ValueError(f"{step}: diagnostics need oracle0, the gradient oracle at Y")
    timings = {} if timings is None else timings
    U1s = projected.factors
    with _timed(timings, "gradient"):
        oracle1 = oracle_at(grad, projected, step)
        grad_core = checked_core_gradient(oracle1, U1s, step, Y.dtype)
        grad_core0 = checked_core_gradient(oracle0, U1s, step, Y.dtype) if diagnostics else None
    with _timed(timings, "galerkin"):
        Y_new = TuckerTensor(galerkin_step(projected.core, grad_core, lr), U1s)
    tangent, epsilon, residual = (_diagnostics(Y, oracle0, U1s, timings) if diagnostics
                                  else (None, None, None))
    report = StepReport(
        variant="fixed_rank_bug",
        ranks_before=Y.ranks,
        ranks_augmented=Y.ranks,
        ranks_after=Y_new.ranks,
        clamps={i: [] for i in range(Y.ndim)},
        tails=(0.0,) * Y.ndim,
        eta=0.0,
        threshold=None,
        proj_grad_norm=None if grad_core0 is None else float(np.linalg.norm(grad_core0)),
        tangent_grad_norm=tangent,
        epsilon=epsilon,
        residual_norm=residual,
        loss_before=None,
        loss_after=None,
        s_step_gradient="reevaluate",
        timings=timings,
    )
    return Y_new, report


def fixed_rank_bug_step(Y: TuckerTensor, grad, lr, *, loss=None, diagnostics: bool = True,
                        name: str | None = None):
    """One fixed-rank BUG step (Ceruti–Lubich; docs/algorithms.md#variants), explicit Euler substeps.

    :func:`fixed_rank_projected_point` (for every mode ``i``, from the same ``C0``, ``U^0``:
    ``K_i^1 = k_step(Y0, i, N_i Q_i, λ)``, ``U_i^1 = orthonormal_basis(K_i^1)``,
    ``M_i = U_i^{1T} U_i^0``, ``C̃ = C0 ×_i M_i``, ``Ỹ = C̃ ×_i U_i^1``), then
    :func:`fixed_rank_s_step` ``C1 = C̃ − λ ∇L(Ỹ) ×_i U_i^{1T}``: its gradient is taken at
    ``Ỹ ≠ Y0``, so ``grad`` must be a callable ``point -> ndarray | oracle`` (an ndarray or an
    oracle describes ``∇L(Y0)`` only, and using it at ``Ỹ`` would be a different, unanalysed
    scheme). Ranks do not change.

    Returns
    -------
    (TuckerTensor, StepReport)
        ``variant="fixed_rank_bug"``, ``s_step_gradient="reevaluate"``, ``eta = 0``;
        ``proj_grad_norm = ‖∇L(Y0) ×_i U_i^{1T}‖`` and ``residual_norm`` refer to ``⊗ span U_i^1``.

    Examples
    --------
    >>> from tucker_ref.integrators import fixed_rank_bug_step
    >>> from tucker_ref.tucker import random_tucker
    >>> rng = np.random.default_rng(0)
    >>> A = rng.standard_normal((6, 5, 4))
    >>> loss = lambda Y: 0.5 * np.linalg.norm(Y.full() - A) ** 2
    >>> Y0 = random_tucker(rng, A.shape, (2, 2, 2))
    >>> Y1, report = fixed_rank_bug_step(Y0, lambda Y: Y.full() - A, lr=0.5, loss=loss)  # grad: a callable
    >>> Y1.ranks, report.eta, report.loss_after < report.loss_before
    ((2, 2, 2), 0.0, True)
    """
    step = step_label("fixed_rank_bug_step", name)
    Y = check_point(Y, step)
    lr = check_lr(lr)
    if not is_gradient_callable(grad):
        raise ValueError(f"{step}: grad must be a callable point -> ndarray | oracle: the S-step gradient is taken "
                         f"at C0 x_i (U_i^1T U_i^0) x_i U_i^1, not at Y0, got {type(grad).__name__}")
    timings: dict = {}
    with _timed(timings, "gradient"):
        oracle0 = oracle_at(grad, Y, step)
    with _timed(timings, "loss"):
        loss_before = loss_at(loss, Y)
    projected = fixed_rank_projected_point(Y, oracle0, lr, name=name, timings=timings, caller="fixed_rank_bug_step")
    Y_new, report = fixed_rank_s_step(Y, projected, grad, lr, oracle0=oracle0, diagnostics=diagnostics, name=name,
                                      timings=timings, caller="fixed_rank_bug_step")
    with _timed(timings, "loss"):
        report.loss_before, report.loss_after = loss_before, loss_at(loss, Y_new)
    return Y_new, report


__all__ = ["S_STEP_GRADIENTS", "VARIANTS", "AugmentedPoint", "StepReport", "augment", "augmented_bases",
           "cycle_report", "fixed_rank_bug_step", "fixed_rank_projected_point", "fixed_rank_s_step",
           "galerkin_gradient", "s_step", "tdlrt_cycle", "tdlrt_step", "truncate_cycle"]
