"""The base of every gradient oracle: the data of one backward pass, queried in any basis.

A gradient oracle describes the Euclidean gradient ``G = ∇L(Y0)`` of one point and answers
``core_gradient(bases) = G ×_i B_i^T`` and ``mode_partial_gradient(i, factors) = N_i``
(docs/algorithms.md §0; the protocol itself is documented in
:mod:`tucker_ref.integrators.oracle`). Subclasses supply ``_projected(bases)`` — how to
compute ``G ×_i B_i^T`` from what they hold — and :meth:`GradientOracle.dense_gradient`:
``integrators.oracle.DenseGradient`` holds ``G`` itself (the theory path),
``nn.TuckerConvGradient`` and ``nn.LowRankLinearGradient`` hold a layer's input and output
gradient (the training path, ``G`` never formed). It sits beside the algebra so that both
``nn`` and ``integrators`` can build on it without importing each other.
"""

from __future__ import annotations

import numpy as np

from ._checks import as_float_array, check_mode
from .tucker import TuckerTensor, unfold


class GradientOracle:
    """Gradients of one backward pass in any Tucker parametrization of a layer's weight.

    Subclasses hold the data of one backward pass (the layer input and output gradient) and
    implement ``_projected(bases)`` and :meth:`dense_gradient`. ``shape`` is the weight shape
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
