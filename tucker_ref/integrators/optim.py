"""Optimizers for the Galerkin (S-) step and for dense parameters, and learning-rate schedules.

Plain SGD is what the theory covers (docs/theory.md §5). The other optimizers keep their
state in the *core* space of a Tucker parameter, so it must follow every change of basis
(docs/theory.md §6, "Optimizer state through a basis change"):

* augmentation ``Û_i = [U_i, V_i]``: ``m ← m ×_i M̂_i`` with ``M̂_i = Û_i^T U_i = [I; 0]``
  (zero padding: the dense moment ``m ×_i U_i`` is unchanged);
* S-step: the optimizer's update of the augmented core from its gradient ``∇_Ĉ L``;
* truncation ``U_i^1 = Û_i P_i``: ``m ← m ×_i P_i^T`` with ``P_i^T = U_i^{1T} Û_i``, i.e. the dense
  first moment is projected orthogonally onto the new bases.

A first moment (heavy-ball velocity, Adam's ``m``) is a linear object and transforms exactly
so. Adam's second moment ``v`` is an elementwise statistic of the coordinates; the image of
an elementwise second moment under a basis change is not the second moment of anything.
:class:`Adam` uses the square-root rule of the authors' code, ``v ← (√v ×_i A_i)²``, a
heuristic that keeps ``v ≥ 0``, is exact for the zero padding of augmentation and for
permutations, and keeps the scale of ``v`` (docs/theory.md §6).

One optimizer instance per factorized parameter: its :attr:`state` is that parameter's core
state, read by :func:`~.steps.augment` / :func:`~.steps.tdlrt_step` and replaced only when a
cycle is truncated successfully. Dense parameters (biases, layers that are not factorized)
take the same update through :meth:`SGD.dense_step`, with the state passed and returned
explicitly, so one instance can also serve any number of dense parameters.

Weight decay ``w`` (all optimizers): the L2 term ``w·param`` is added to the gradient
(:class:`SGD`, :class:`HeavyBall`, :class:`Adam`, as PyTorch's ``weight_decay``) or, for
:class:`AdamW`, added to the update direction after the adaptive scaling (decoupled, as
PyTorch's ``AdamW``). On a Tucker core in an orthonormal basis, ``w·Ĉ`` is the core of
``w·Ŷ``: the decay acts on the network weight itself.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..checks import as_float_array, check_nonneg, check_positive_int, check_unit_interval
from ..tucker import multi_mode_product

#: Heavy-ball ``β``: the default of :class:`HeavyBall` and of the trainer's ``--optimizer momentum``
#: (why: :mod:`tucker_ref.training.config`).
DEFAULT_MOMENTUM = 0.9


class SGD:
    """Plain SGD: direction = gradient (``+ w·param`` with weight decay ``w``), no state.

    Parameters
    ----------
    weight_decay : float ``≥ 0`` (default 0: the scheme the theory covers)
    """

    #: Short name used by the trainer (``--optimizer``) and in checkpoints.
    name = "sgd"

    def __init__(self, weight_decay: float = 0.0):
        self.state = None
        self.weight_decay = check_nonneg(weight_decay, "weight_decay", allow_none=False)

    def _decayed(self, grad, param):
        """``grad + w·param`` (coupled L2 weight decay); ``grad`` itself when ``w = 0``."""
        if self.weight_decay == 0 or param is None:
            return grad
        return grad + grad.dtype.type(self.weight_decay) * param

    def direction(self, grad, state, param=None):
        """``(direction, new_state)`` for the update ``param − λ·direction``: here ``(grad + w·param, None)``.

        ``param`` is the parameter at which ``grad`` was taken (needed for weight decay only).
        """
        return self._decayed(grad, param), None

    def transport(self, state, matrices):
        """Carry the core state through a change of basis: ``m ← m ×_i A_i`` (``None`` stays ``None``).

        ``matrices`` are the ``M̂_i`` of augmentation or the ``P_i^T`` of truncation (``None`` entries:
        that mode's basis did not change).
        """
        if state is None:
            return None
        return multi_mode_product(state, matrices)

    def check_state(self, state, shape, where: str) -> None:
        """``ValueError`` unless ``state`` is ``None`` or this optimizer's state for a parameter of ``shape``."""
        if isinstance(state, dict):
            raise ValueError(f"{where}: optimizer.state holds another optimizer's state (keys {sorted(state)}); "
                             f"{type(self).__name__} keeps None or one array of the core shape {tuple(shape)}")
        if state is not None and np.shape(state) != tuple(shape):
            raise ValueError(f"{where}: optimizer.state has shape {np.shape(state)}, expected the core shape "
                             f"{tuple(shape)} of Y (one optimizer instance per factorized parameter)")

    def state_arrays(self, state) -> dict:
        """``state`` as ``{field: ndarray}`` (for checkpoints); ``{}`` for ``None``."""
        return {} if state is None else {"velocity": state}

    def state_from_arrays(self, arrays: dict):
        """Inverse of :meth:`state_arrays`."""
        return arrays.get("velocity")

    def dense_step(self, param, grad, state, lr):
        """One update of a dense parameter: ``(param − λ·direction, new_state)``.

        ``param`` and ``grad`` are arrays of one shape; ``grad`` must be finite.
        """
        param = as_float_array(param, "param")
        grad = as_float_array(grad, "grad")
        if grad.shape != param.shape:
            raise ValueError(f"grad must have the shape of param, {param.shape}, got {grad.shape}")
        lr = check_nonneg(lr, "lr", allow_none=False)
        direction, state = self.direction(grad, state, param)
        return param - lr * direction, state

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weight_decay={self.weight_decay})"


class HeavyBall(SGD):
    """Heavy-ball momentum ``m ← β m + g``, ``param ← param − λ m`` (``m = g`` on the first step).

    ``g`` includes the weight-decay term ``w·param``.

    Parameters
    ----------
    momentum : float in ``[0, 1)``
        ``β``. With ``β = 0`` the updates equal :class:`SGD` exactly.
    weight_decay : float ``≥ 0``
    """

    name = "momentum"

    def __init__(self, momentum: float = DEFAULT_MOMENTUM, weight_decay: float = 0.0):
        super().__init__(weight_decay)
        self.momentum = check_unit_interval(momentum, "momentum")

    def direction(self, grad, state, param=None):
        grad = self._decayed(grad, param)
        if state is None:
            velocity = np.array(grad, copy=True)
        else:
            if state.shape != grad.shape:
                raise ValueError(f"momentum state has shape {state.shape}, expected the gradient's {grad.shape}")
            velocity = self.momentum * state + grad
        return velocity, velocity

    def __repr__(self) -> str:
        return f"HeavyBall(momentum={self.momentum}, weight_decay={self.weight_decay})"


class Adam(SGD):
    """Adam (Kingma–Ba) with bias correction; state ``{"m", "v", "t"}`` on the core.

    ``m ← β1 m + (1 − β1) g``, ``v ← β2 v + (1 − β2) g²``, ``t ← t + 1``, direction
    ``m̂ / (√v̂ + ε)`` with ``m̂ = m/(1 − β1^t)``, ``v̂ = v/(1 − β2^t)``; ``g`` includes the coupled
    weight decay ``w·param`` (PyTorch's ``Adam``). Through a basis change ``m`` is transported
    linearly and ``v`` by the square-root rule ``v ← (√v ×_i A_i)²`` (module docstring); the
    step count ``t`` (bias correction) is kept.

    Parameters
    ----------
    betas : (float, float) in ``[0, 1)``
    eps : float ``> 0``
    weight_decay : float ``≥ 0``
    """

    name = "adam"
    #: Whether weight decay is decoupled from the adaptive scaling (AdamW).
    decoupled = False

    def __init__(self, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(weight_decay)
        if isinstance(betas, (str, bytes)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (check_unit_interval(betas[0], "betas[0]"), check_unit_interval(betas[1], "betas[1]"))
        self.eps = check_nonneg(eps, "eps", allow_none=False)
        if self.eps == 0:
            raise ValueError("eps must be > 0 (it keeps the direction finite where v = 0)")

    def direction(self, grad, state, param=None):
        b1, b2 = self.betas
        decayed = grad if self.decoupled else self._decayed(grad, param)
        if state is None:
            m = (1 - b1) * decayed
            v = (1 - b2) * decayed * decayed
            t = 1
        else:
            if state["m"].shape != grad.shape:
                raise ValueError(f"Adam state has shape {state['m'].shape}, expected the gradient's {grad.shape}")
            m = b1 * state["m"] + (1 - b1) * decayed
            v = b2 * state["v"] + (1 - b2) * decayed * decayed
            t = int(state["t"]) + 1
        dt = grad.dtype.type
        direction = (m / dt(1 - b1 ** t)) / (np.sqrt(v / dt(1 - b2 ** t)) + dt(self.eps))
        if self.decoupled and self.weight_decay != 0 and param is not None:
            direction = direction + dt(self.weight_decay) * param
        return direction, {"m": m, "v": v, "t": np.array(t, dtype=np.int64)}

    def transport(self, state, matrices):
        if state is None:
            return None
        root = multi_mode_product(np.sqrt(state["v"]), matrices)
        return {"m": multi_mode_product(state["m"], matrices), "v": root * root, "t": state["t"]}

    def check_state(self, state, shape, where: str) -> None:
        if state is None:
            return
        if not isinstance(state, dict) or set(state) != {"m", "v", "t"}:
            raise ValueError(f"{where}: optimizer.state must be None or a dict with keys m, v, t (Adam), "
                             f"got {type(state).__name__}")
        for key in ("m", "v"):
            if np.shape(state[key]) != tuple(shape):
                raise ValueError(f"{where}: optimizer.state[{key!r}] has shape {np.shape(state[key])}, expected the "
                                 f"core shape {tuple(shape)} of Y (one optimizer instance per factorized parameter)")

    def state_arrays(self, state) -> dict:
        return {} if state is None else dict(state)

    def state_from_arrays(self, arrays: dict):
        return dict(arrays) if arrays else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(betas={self.betas}, eps={self.eps}, weight_decay={self.weight_decay})"


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov–Hutter; PyTorch's ``AdamW``, default ``w = 0.01``).

    Direction ``m̂ / (√v̂ + ε) + w·param``: the decay is not scaled by ``1/√v̂``.
    """

    name = "adamw"
    decoupled = True

    def __init__(self, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__(betas, eps, weight_decay)


#: ``--optimizer`` names and their classes.
OPTIMIZERS = {cls.name: cls for cls in (SGD, HeavyBall, Adam, AdamW)}


# ---------------------------------------------------------------------------------------
# gradient clipping
# ---------------------------------------------------------------------------------------
def clip_factor(grad_norm: float, max_norm) -> float:
    """Factor ``min(1, max_norm/‖g‖)`` that scales the whole gradient ``g`` to norm ``≤ max_norm``.

    ``max_norm=None`` means no clipping (factor 1). Applied to every gradient a step's
    optimizer reads (PyTorch's ``clip_grad_norm_`` over all parameters).
    """
    grad_norm = check_nonneg(grad_norm, "grad_norm", allow_none=False)
    max_norm = check_nonneg(max_norm, "max_norm")
    if max_norm is None or grad_norm <= max_norm:
        return 1.0
    return max_norm / grad_norm


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


#: ``--lr-schedule`` names: ``(lr, total_steps) -> schedule``.
LR_SCHEDULES = {"constant": lambda lr, total_steps: constant_lr(lr), "cosine": cosine_lr}


__all__ = ["DEFAULT_MOMENTUM", "Adam", "AdamW", "HeavyBall", "LR_SCHEDULES", "OPTIMIZERS", "SGD", "clip_factor",
           "constant_lr", "cosine_lr"]
