"""The gradient-oracle protocol between a loss (or a network layer) and the integrators.

An integrator step never needs the dense Euclidean gradient ``G = ∇L(Y0)`` itself, only its
projections onto bases (docs/algorithms.md §0). A *gradient oracle* describes
``G`` at ONE point ``Y0`` and answers, duck-typed (no base class is required):

``core_gradient(bases) -> ndarray``
    ``G ×_1 B_1^T ⋯ ×_d B_d^T`` of shape ``(k_1, …, k_d)``. ``bases`` is a list of ``d``
    entries, each an ``(n_i × k_i)`` matrix or ``None`` (identity in that mode, ``k_i = n_i``).
    With the augmented bases ``Û_i`` this is the Galerkin (S-step) gradient of docs/algorithms.md §2.
``mode_partial_gradient(mode, factors) -> ndarray``
    ``N_i = Mat_i(G ×_{j≠i} U_j^T)`` of shape ``(n_i, ∏_{j≠i} r_j)`` (docs/algorithms.md §1b); entry
    ``mode`` of ``factors`` is ignored. By definition it equals
    ``unfold(core_gradient(bases), i)`` with ``bases = factors`` and ``None`` in mode ``i``.
``dense_gradient() -> ndarray`` (optional)
    ``G`` itself, of shape ``(n_1, …, n_d)``. Only the diagnostics use it (``ε``, ``‖P(Y0)G‖``,
    ``‖(I − Π)G‖``); an oracle may omit it or raise ``NotImplementedError``, and the step then
    reports those quantities as ``None``.

Implementations: :class:`DenseGradient` here (wraps an ndarray, the theory path) and, in
``tucker_ref.nn``, ``TuckerConvGradient`` / ``LowRankLinearGradient`` (the training path: all
three methods from the input and output gradient of one backward pass, ``G`` never formed).

Gradient *callables*. Where a step needs the gradient at a point other than ``Y0`` (the
``"reevaluate"`` S-step, fixed-rank BUG) it takes a callable ``grad(point)``: it is called with
a :class:`~tucker_ref.tucker.TuckerTensor` and returns either the dense gradient at that point
(an ndarray) or an oracle at that point. :func:`gradient_at` applies that convention.
"""

from __future__ import annotations

import numpy as np

from .._checks import as_float_array
from ..gradient_oracle import GradientOracle
from ..tucker import TuckerTensor, multi_mode_product


def is_gradient_oracle(obj) -> bool:
    """``True`` if ``obj`` implements the two required methods of the protocol."""
    return callable(getattr(obj, "core_gradient", None)) and callable(getattr(obj, "mode_partial_gradient", None))


class DenseGradient(GradientOracle):
    """Gradient oracle holding the dense Euclidean gradient ``G`` (the theory path).

    Parameters
    ----------
    G : ndarray, shape ``(n_1, …, n_d)``
        The gradient at the point; must be finite.
    point : TuckerTensor, optional
        The point ``Y0`` at which ``G`` was taken; its factors are the default ``factors`` of
        :meth:`mode_partial_gradient`.
    name : str
        Used in error messages (e.g. ``"tdlrt_step: grad"``).
    """

    def __init__(self, G, point: TuckerTensor | None = None, *, name: str = "G"):
        self.G = as_float_array(G, name)
        if self.G.ndim < 1:
            raise ValueError(f"{name} must be an array with ndim >= 1 (the gradient tensor), got a scalar")
        if point is not None:
            if not isinstance(point, TuckerTensor):
                raise TypeError(f"point must be a TuckerTensor or None, got {type(point).__name__}")
            if point.shape != self.G.shape:
                raise ValueError(f"{name} must have the shape of the point, {point.shape}, got {self.G.shape}")
        self.point = point
        self.name = name

    @property
    def shape(self) -> tuple[int, ...]:
        return self.G.shape

    def _projected(self, bases: list) -> np.ndarray:
        return multi_mode_product(self.G, bases, transpose=True)

    def dense_gradient(self) -> np.ndarray:
        """``G`` (no copy)."""
        return self.G


def as_gradient_oracle(obj, *, point: TuckerTensor | None = None, name: str = "grad"):
    """Return a gradient oracle for ``obj``.

    An object implementing the protocol is returned as is; an array-like becomes a
    :class:`DenseGradient` (validated: finite, shape of ``point`` when given). Anything else
    raises ``TypeError``. Callables are *not* evaluated here: see :func:`gradient_at`.
    """
    if is_gradient_oracle(obj):
        shape = getattr(obj, "shape", None)
        if point is not None and shape is not None and tuple(shape) != point.shape:
            raise ValueError(f"{name} is a gradient oracle of shape {tuple(shape)}, expected the point's shape "
                             f"{point.shape}")
        return obj
    if isinstance(obj, (np.ndarray, list, tuple)) or np.isscalar(obj):
        return DenseGradient(obj, point, name=name)
    raise TypeError(
        f"{name} must be an ndarray (the dense gradient), a gradient oracle (with core_gradient and "
        f"mode_partial_gradient) or a callable point -> ndarray | oracle, got {type(obj).__name__}"
    )


def is_gradient_callable(obj) -> bool:
    """``True`` for a gradient callable (a callable that is neither an oracle nor an array)."""
    return callable(obj) and not is_gradient_oracle(obj) and not isinstance(obj, np.ndarray)


def gradient_at(grad, point: TuckerTensor, *, name: str = "grad"):
    """The gradient oracle at ``point``: ``grad(point)`` for a gradient callable, else ``grad`` itself.

    A non-callable ``grad`` (ndarray or oracle) is taken to describe the gradient at ``point``
    already; the caller decides whether that is legitimate (it is only at ``Y0``).
    """
    if is_gradient_callable(grad):
        return as_gradient_oracle(grad(point), point=point, name=f"{name}(point)")
    return as_gradient_oracle(grad, point=point, name=name)


def dense_gradient_or_none(oracle):
    """``oracle.dense_gradient()``, or ``None`` when the oracle does not provide it."""
    method = getattr(oracle, "dense_gradient", None)
    if method is None:
        return None
    try:
        return method()
    except NotImplementedError:
        return None


# ---------------------------------------------------------------------------------------
# validated queries shared by every step (integrators and baselines)
# ---------------------------------------------------------------------------------------
def step_label(base: str, name) -> str:
    """``"tdlrt_step"`` or ``"tdlrt_step[conv1]"``: the prefix of every error message of a step."""
    return base if name is None else f"{base}[{name}]"


def check_point(Y, step: str) -> TuckerTensor:
    """A step's point: a TuckerTensor with orthonormal factors (the integrators' invariant)."""
    if not isinstance(Y, TuckerTensor):
        raise TypeError(f"{step}: Y must be a TuckerTensor, got {type(Y).__name__}")
    if not Y.has_orthonormal_factors():
        raise ValueError(f"{step}: Y must have orthonormal factors (use Y.orthonormalize() first)")
    return Y


def _fetch(value, what: str, step: str, shape: tuple, dtype) -> np.ndarray:
    """Validate an oracle answer: its shape and finiteness; cast to the point's dtype."""
    value = np.asarray(value)
    if value.shape != shape:
        raise ValueError(f"{step}: the gradient oracle returned {what} of shape {value.shape}, expected {shape}")
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{step}: the gradient oracle returned a non-finite {what} (NaN or Inf); "
                         "the step was not taken and Y is unchanged")
    return value.astype(dtype, copy=False)


def oracle_at(grad, point: TuckerTensor, step: str):
    """The gradient oracle at ``point`` from an ndarray, an oracle or a callable (:func:`gradient_at`)."""
    return gradient_at(grad, point, name=f"{step}: grad")


def checked_core_gradient(oracle, bases, step: str, dtype) -> np.ndarray:
    """``oracle.core_gradient(bases)``, checked for shape and finiteness, in the point's dtype."""
    shape = tuple(B.shape[1] for B in bases)
    return _fetch(oracle.core_gradient(list(bases)), "core gradient G x_i B_i^T", step, shape, dtype)


def checked_mode_partial(oracle, Y: TuckerTensor, mode: int, step: str) -> np.ndarray:
    """``N_i = oracle.mode_partial_gradient(i, Y.factors)``, checked for shape and finiteness."""
    others = int(np.prod([r for j, r in enumerate(Y.ranks) if j != mode], dtype=np.int64))
    return _fetch(oracle.mode_partial_gradient(mode, list(Y.factors)), f"N_{mode} (mode-{mode} partial gradient)",
                  step, (Y.shape[mode], others), Y.dtype)


def loss_at(loss, point: TuckerTensor):
    """``float(loss(point))``, or ``None`` without a loss callable."""
    return None if loss is None else float(loss(point))
