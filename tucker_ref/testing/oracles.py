"""Small numerical oracles for tests: relative errors, derivative checks, adjoint checks.

Each returns a number for the caller to assert on (with a tolerance the caller justifies),
never a bool, so a failing test prints how far off it was.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "adjoint_check",
    "central_difference",
    "derivative_slope",
    "descent_bound_check",
    "directional_derivative_check",
    "relative_error",
]

_TINY = np.finfo(np.float64).tiny


def _norm(a) -> float:
    return float(np.linalg.norm(np.ravel(a)))


def relative_error(a, b) -> float:
    """Normwise relative error ``‖a − b‖_F / max(‖a‖_F, ‖b‖_F, tiny)`` (scalars or arrays).

    Computed in (at least) float64; symmetric in ``a`` and ``b``; ``0`` when both are zero;
    at most ``2``.
    """
    dtype = np.result_type(np.asarray(a), np.asarray(b), np.float64)
    a = np.asarray(a, dtype=dtype)
    b = np.asarray(b, dtype=dtype)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    return _norm(a - b) / max(_norm(a), _norm(b), _TINY)


def central_difference(f, x, direction, h: float):
    """``(f(x + h·v) − f(x − h·v)) / (2h)``: the directional derivative up to ``O(h²)``.

    ``f`` may be scalar- or array-valued; ``x`` and ``direction`` are arrays of one shape.
    """
    x = np.asarray(x, dtype=np.float64)
    v = np.asarray(direction, dtype=np.float64)
    if v.shape != x.shape:
        raise ValueError(f"direction must have the shape of x, {x.shape}, got {v.shape}")
    if not h > 0:
        raise ValueError(f"h must be > 0, got {h!r}")
    return (np.asarray(f(x + h * v)) - np.asarray(f(x - h * v))) / (2 * h)


def directional_derivative_check(f, x, direction, h: float, analytic) -> float:
    """Relative error between the central difference of ``f`` along ``direction`` and ``analytic``.

    Parameters
    ----------
    f : callable, array ``x`` ↦ scalar or array
    x, direction : arrays of one shape (evaluated in float64)
    h : float > 0, the step (``~1e-6·‖x‖/‖direction‖`` balances truncation and rounding for
        smooth ``f``; a multilinear ``f`` of degree ≤ 2 has no truncation error at all)
    analytic : scalar or array of the shape of ``f(x)``, the claimed derivative
        ``Df(x)[direction]`` (for a scalar loss ``⟨∇f(x), direction⟩``)

    Returns
    -------
    float
        :func:`relative_error` of the two (``O(h²) + O(eps·|f|/h)`` when ``analytic`` is right).
    """
    return relative_error(central_difference(f, x, direction, h), np.asarray(analytic))


def derivative_slope(f, grad, x, direction, hs) -> float:
    """Fitted log–log slope of the Taylor remainder ``|f(x + h v) − f(x) − h⟨∇f(x), v⟩|`` over ``hs``.

    ≈ 2 when ``grad`` is the gradient of ``f`` at ``x`` (and ``f`` is ``C²`` with a nonzero
    curvature along ``v``), ≈ 1 when it is wrong. Choose ``hs`` so that the remainders stay
    well above rounding (``eps·|f(x)|``); a remainder of exactly zero raises ``ValueError``.

    Parameters
    ----------
    f : callable, array ↦ real scalar
    grad : callable, array ↦ array of the shape of ``x``
    x, direction : arrays of one shape
    hs : sequence of at least two distinct positive steps

    Returns
    -------
    float
        Least-squares slope of ``log(remainder)`` against ``log(h)``.
    """
    x = np.asarray(x, dtype=np.float64)
    v = np.asarray(direction, dtype=np.float64)
    if v.shape != x.shape:
        raise ValueError(f"direction must have the shape of x, {x.shape}, got {v.shape}")
    hs = np.asarray(hs, dtype=np.float64)
    if hs.ndim != 1 or hs.size < 2 or np.any(hs <= 0) or np.unique(hs).size < 2:
        raise ValueError(f"hs must be at least two distinct positive steps, got {hs!r}")
    f0 = float(f(x))
    slope0 = float(np.vdot(np.asarray(grad(x), dtype=np.float64), v))
    rem = np.array([abs(float(f(x + h * v)) - f0 - h * slope0) for h in hs])
    if np.any(rem == 0):
        raise ValueError("a Taylor remainder is exactly zero (f linear along direction, or hs too small); "
                         "the slope is undefined")
    return float(np.polyfit(np.log(hs), np.log(rem), 1)[0])


def adjoint_check(A, AT, x, y) -> float:
    """Dot-product test of a linear map and its claimed transpose.

    Returns ``|⟨A x, y⟩ − ⟨x, Aᵀ y⟩| / (‖A x‖‖y‖ + ‖x‖‖Aᵀ y‖)`` — a few eps when ``AT`` is
    the adjoint of ``A`` (real inner products on flattened arrays), ``0`` when both sides vanish.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    Ax = np.asarray(A(x))
    if Ax.shape != y.shape:
        raise ValueError(f"y must have the shape of A(x), {Ax.shape}, got {y.shape}")
    ATy = np.asarray(AT(y))
    if ATy.shape != x.shape:
        raise ValueError(f"x must have the shape of AT(y), {ATy.shape}, got {x.shape}")
    lhs = np.vdot(Ax.ravel(), y.ravel())
    rhs = np.vdot(x.ravel(), ATy.ravel())
    scale = _norm(Ax) * _norm(y) + _norm(x) * _norm(ATy)
    return float(abs(lhs - rhs) / max(scale, _TINY))


def descent_bound_check(loss_before, loss_after, lr, proj_grad_norm, smoothness, grad_bound, eta) -> float:
    """How far one step's loss change exceeds the descent bound of docs/theory.md §5, relative to its terms.

    The bound (plain SGD step of size ``λ`` from ``Y0``, ``Π`` the projection onto the augmented
    space, ``L`` the smoothness constant, ``B`` a bound of ``‖∇L‖`` on the segment ``[Ŷ1, Y1]``,
    ``η`` the truncation error)::

        L(Y1) ≤ L(Y0) − λ(1 − λL/2)‖Π∇L(Y0)‖² + B·η

    Returns ``(L(Y1) − bound) / (|L(Y0)| + λ‖Π∇L‖² + B·η)``: ``≤ 0`` when the bound holds; equality
    is possible, so assert ``≤`` a rounding margin (``~1e-12`` in float64). The arguments map to
    a ``StepReport``'s ``loss_before``, ``loss_after``, ``proj_grad_norm`` and ``eta``.
    """
    values = [float(v) for v in (loss_before, loss_after, lr, proj_grad_norm, smoothness, grad_bound, eta)]
    if not all(np.isfinite(values)):
        raise ValueError(f"descent_bound_check needs finite numbers, got {values}")
    L0, L1, lr, proj, Ls, B, eta = values
    if lr < 0 or proj < 0 or Ls < 0 or B < 0 or eta < 0:
        raise ValueError("lr, proj_grad_norm, smoothness, grad_bound and eta must be >= 0")
    bound = L0 - lr * (1 - lr * Ls / 2) * proj**2 + B * eta
    return (L1 - bound) / max(abs(L0) + lr * proj**2 + B * eta, _TINY)
