"""The gradient-oracle protocol: how a loss or a network layer hands its gradient to the integrators.

An integrator step never needs the dense Euclidean gradient ``G = ∇L(Y0)`` itself, only its
projections onto bases (docs/algorithms.md §0). A *gradient oracle* describes ``G`` at ONE
point ``Y0`` and answers:

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

The protocol is duck-typed: no base class is required, any object with the two methods is an
oracle (:func:`is_gradient_oracle`). :class:`GradientOracle` is the base the package's own
oracles share: a subclass supplies ``_projected(bases)`` (``G ×_i B_i^T`` from what it holds)
and :meth:`GradientOracle.dense_gradient`, and inherits both protocol methods with their
arguments checked. :class:`DenseGradient` holds ``G`` itself (the theory path);
``nn.TuckerConvGradient`` and ``nn.LowRankLinearGradient`` hold a layer's input and output
gradient (the training path, ``G`` never formed).

Gradient *callables*. Where a step needs the gradient at a point other than ``Y0`` (the
``"reevaluate"`` S-step, fixed-rank BUG) it takes a callable ``grad(point)``: it is called with
a :class:`~tucker_ref.tucker.TuckerTensor` and returns either the dense gradient at that point
(an ndarray) or an oracle at that point. :func:`gradient_at` applies that convention.

This module sits beside the algebra so that both ``nn`` and ``integrators`` build on it
without importing each other.
"""

from __future__ import annotations

import numpy as np

from .checks import as_float_array, check_instance, check_mode
from .tucker import TuckerTensor, multi_mode_product, unfold

__all__ = [
    "DenseGradient",
    "GradientOracle",
    "as_gradient_oracle",
    "dense_gradient_or_none",
    "gradient_at",
    "is_gradient_callable",
    "is_gradient_oracle",
]


class GradientOracle:
    """Gradients of one backward pass in any Tucker parametrization of a layer's weight.

    Subclasses hold what describes ``G`` (``G`` itself, or a layer's input and output gradient)
    and implement ``_projected(bases)`` and :meth:`dense_gradient`. ``shape`` is the weight shape
    ``(n_1, …, n_d)`` and ``point`` the TuckerTensor at which the gradient was taken (or
    ``None``), whose factors :meth:`mode_partial_gradient` uses by default.
    """

    shape: tuple[int, ...]
    point: TuckerTensor | None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _check_bases(self, bases, name: str = "bases") -> list:
        if isinstance(bases, np.ndarray) or not isinstance(bases, (list, tuple)):
            raise TypeError(f"{name} must be a list of {self.ndim} matrices (or None), got {type(bases).__name__}")
        if len(bases) != self.ndim:
            raise ValueError(f"{name} must have one entry per mode ({self.ndim}), got {len(bases)}")
        out = []
        for i, B in enumerate(bases):
            if B is not None:
                B = as_float_array(B, f"{name}[{i}]", ndim=2)
                if B.shape[0] != self.shape[i]:
                    raise ValueError(
                        f"{name}[{i}] must be None or a matrix with n_{i} = {self.shape[i]} rows, got shape {B.shape}"
                    )
            out.append(B)
        return out

    def core_gradient(self, bases) -> np.ndarray:
        """``G ×_1 B_1^T ⋯ ×_d B_d^T`` of shape ``(k_1, …, k_d)``, ``G`` the dense weight gradient.

        Parameters
        ----------
        bases : list of d entries, each an ``(n_i × k_i)`` matrix or ``None`` (identity, ``k_i = n_i``)

        ``G`` is never formed; the subclass notes give the cost in flops.
        """
        return self._projected(self._check_bases(bases))

    def mode_partial_gradient(self, mode: int, factors=None) -> np.ndarray:
        """``N_i = Mat_i(G ×_{j≠i} U_j^T)`` of shape ``(n_i, ∏_{j≠i} r_j)`` (docs/algorithms.md §1b).

        It is ``unfold(core_gradient(bases), i)`` with ``bases`` the factors and identity in
        mode ``i``. ``factors`` (``d`` matrices; entry ``mode`` is ignored) defaults to the
        factors of ``point``. The K-step gradient is ``N_i Q_i``, the factor gradient
        ``N_i Mat_i(C)^T``.
        """
        mode = check_mode(mode, self.ndim)
        bases = self._factors_or_point(factors)
        bases[mode] = None
        return unfold(self._projected(bases), mode)

    def mode_partial_gradients(self, factors=None) -> list[np.ndarray]:
        """``[N_1, …, N_d]``, each as :meth:`mode_partial_gradient`; subclasses may share work between modes."""
        bases = self._factors_or_point(factors)
        return [self.mode_partial_gradient(i, bases) for i in range(self.ndim)]

    def _factors_or_point(self, factors) -> list:
        if factors is None:
            if self.point is None:
                raise ValueError("factors is required: this oracle was built without a point TuckerTensor")
            factors = self.point.factors
        return self._check_bases(list(factors), "factors")

    def _projected(self, bases: list) -> np.ndarray:
        raise NotImplementedError

    def dense_gradient(self) -> np.ndarray:
        """The dense weight gradient ``G`` of shape ``shape`` (forms it; for theory checks and ε)."""
        raise NotImplementedError


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

    Examples
    --------
    >>> from tucker_ref.integrators import DenseGradient
    >>> from tucker_ref.tucker import random_tucker
    >>> rng = np.random.default_rng(0)
    >>> Y = random_tucker(rng, (5, 4, 3), (2, 2, 2))
    >>> G = rng.standard_normal(Y.shape)
    >>> oracle = DenseGradient(G, Y)
    >>> bool(np.allclose(oracle.core_gradient(Y.factors), Y.project(G)))  # G ×_i U_i^T
    True
    >>> oracle.core_gradient([Y.factors[0], None, None]).shape  # None: identity in that mode
    (2, 4, 3)
    >>> oracle.mode_partial_gradient(0).shape  # N_0 = Mat_0(G ×_1 U_1^T ×_2 U_2^T)
    (5, 4)
    """

    def __init__(self, G, point: TuckerTensor | None = None, *, name: str = "G"):
        self.G = as_float_array(G, name)
        if self.G.ndim < 1:
            raise ValueError(f"{name} must be an array with ndim >= 1 (the gradient tensor), got a scalar")
        if point is not None:
            check_instance(point, TuckerTensor, "point")
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
