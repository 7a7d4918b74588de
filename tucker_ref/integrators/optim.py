"""Optimizers for the Galerkin (S-) step and for dense parameters, and learning-rate schedules.

Plain SGD is what the theory covers (spec §4). Heavy-ball momentum keeps its velocity ``m``
in the *core* space of a Tucker parameter, so it must follow every change of basis (spec §3):

* augmentation ``Û_i = [U_i, V_i]``: ``m ← m ×_i M̂_i`` with ``M̂_i = Û_i^T U_i = [I; 0]``
  (zero padding: the dense velocity ``m ×_i U_i`` is unchanged);
* S-step: ``m ← β m + ∇_Ĉ L``, ``Ĉ1 = Ĉ0 − λ m``;
* truncation ``U_i^1 = Û_i P_i``: ``m ← m ×_i P_i^T`` with ``P_i^T = U_i^{1T} Û_i``, i.e. the dense
  velocity is projected orthogonally onto the new bases.

One optimizer instance per factorized parameter: its :attr:`state` is that parameter's core
velocity, read and (after a successful step) replaced by :func:`~.steps.tdlrt_step`. Dense
parameters (biases, layers that are not factorized) take the same update through
:meth:`dense_step`, with the state passed and returned explicitly, so one instance can also
serve any number of dense parameters.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .._checks import as_float_array, check_nonneg, check_positive_int
from ..tucker import multi_mode_product


class SGD:
    """Plain SGD: direction = gradient, no state (the scheme the theory covers)."""

    def __init__(self):
        self.state = None

    def direction(self, grad, state):
        """``(direction, new_state)`` for the update ``param − λ·direction``: here ``(grad, None)``."""
        return grad, None

    def transport(self, state, matrices):
        """Carry the core state through a change of basis: ``m ← m ×_i A_i`` (``None`` stays ``None``).

        ``matrices`` are the ``M̂_i`` of augmentation or the ``P_i^T`` of truncation (``None`` entries:
        that mode's basis did not change).
        """
        if state is None:
            return None
        return multi_mode_product(state, matrices)

    def dense_step(self, param, grad, state, lr):
        """One update of a dense parameter: ``(param − λ·direction, new_state)``.

        ``param`` and ``grad`` are arrays of one shape; ``grad`` must be finite.
        """
        param = as_float_array(param, "param")
        grad = as_float_array(grad, "grad")
        if grad.shape != param.shape:
            raise ValueError(f"grad must have the shape of param, {param.shape}, got {grad.shape}")
        lr = check_nonneg(lr, "lr", allow_none=False)
        direction, state = self.direction(grad, state)
        return param - lr * direction, state

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class HeavyBall(SGD):
    """Heavy-ball momentum ``m ← β m + g``, ``param ← param − λ m`` (``m = g`` on the first step).

    Parameters
    ----------
    momentum : float in ``[0, 1)``
        ``β``. With ``β = 0`` the updates equal :class:`SGD` exactly.
    """

    def __init__(self, momentum: float = 0.9):
        super().__init__()
        if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not 0 <= momentum < 1:
            raise ValueError(f"momentum must be a real number in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)

    def direction(self, grad, state):
        if state is None:
            velocity = np.array(grad, copy=True)
        else:
            if state.shape != grad.shape:
                raise ValueError(f"momentum state has shape {state.shape}, expected the gradient's {grad.shape}")
            velocity = self.momentum * state + grad
        return velocity, velocity

    def __repr__(self) -> str:
        return f"HeavyBall(momentum={self.momentum})"


# ---------------------------------------------------------------------------------------
# learning-rate schedules: callables step (0, 1, …) -> lr
# ---------------------------------------------------------------------------------------
def _check_step(step) -> int:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r}")
    return int(step)


def constant_lr(lr: float):
    """Schedule ``step ↦ lr``."""
    lr = check_nonneg(lr, "lr", allow_none=False)

    def schedule(step: int) -> float:
        _check_step(step)
        return lr

    return schedule


def step_decay_lr(lr: float, factor: float, every: int):
    """Schedule ``step ↦ lr · factor^⌊step / every⌋`` (``0 < factor ≤ 1``)."""
    lr = check_nonneg(lr, "lr", allow_none=False)
    factor = check_nonneg(factor, "factor", allow_none=False)
    if not 0 < factor <= 1:
        raise ValueError(f"factor must be in (0, 1], got {factor!r}")
    every = check_positive_int(every, "every")

    def schedule(step: int) -> float:
        return lr * factor ** (_check_step(step) // every)

    return schedule


def cosine_lr(lr: float, total_steps: int, lr_min: float = 0.0):
    """Schedule ``step ↦ lr_min + (lr − lr_min)(1 + cos(π·min(step, T)/T))/2`` with ``T = total_steps``."""
    lr = check_nonneg(lr, "lr", allow_none=False)
    lr_min = check_nonneg(lr_min, "lr_min", allow_none=False)
    if lr_min > lr:
        raise ValueError(f"lr_min ({lr_min}) must not exceed lr ({lr})")
    total_steps = check_positive_int(total_steps, "total_steps")

    def schedule(step: int) -> float:
        t = min(_check_step(step), total_steps) / total_steps
        return lr_min + (lr - lr_min) * 0.5 * (1.0 + math.cos(math.pi * t))

    return schedule


__all__ = ["SGD", "HeavyBall", "constant_lr", "cosine_lr", "step_decay_lr"]
