"""The integrators' side of the gradient-oracle protocol: validated queries shared by every step.

The protocol itself (what an oracle answers, :class:`DenseGradient`, :func:`gradient_at`) lives
in :mod:`tucker_ref.gradient_oracle`; its names are re-exported here. The helpers below query
an oracle for a step and check every answer (shape, finiteness, dtype), so that a bad gradient
fails with the step's name before anything is changed.
"""

from __future__ import annotations

import numpy as np

from ..checks import check_instance
from ..gradient_oracle import (
    DenseGradient,
    as_gradient_oracle,
    dense_gradient_or_none,
    gradient_at,
    is_gradient_callable,
    is_gradient_oracle,
)
from ..tucker import TuckerTensor

__all__ = [
    "DenseGradient",
    "as_gradient_oracle",
    "check_point",
    "checked_core_gradient",
    "checked_mode_partial",
    "dense_gradient_or_none",
    "gradient_at",
    "is_gradient_callable",
    "is_gradient_oracle",
    "loss_at",
    "oracle_at",
    "step_label",
]


# ---------------------------------------------------------------------------------------
# validated queries shared by every step (integrators and baselines)
# ---------------------------------------------------------------------------------------
def step_label(base: str, name) -> str:
    """``"tdlrt_step"`` or ``"tdlrt_step[conv1]"``: the prefix of every error message of a step."""
    return base if name is None else f"{base}[{name}]"


def check_point(Y, step: str) -> TuckerTensor:
    """A step's point: a TuckerTensor with orthonormal factors (the integrators' invariant)."""
    check_instance(Y, TuckerTensor, f"{step}: Y")
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
