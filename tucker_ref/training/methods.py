"""How each training method updates a LeNet5 after one forward/backward pass.

One :class:`UpdateRule` per ``--method``. The trainer runs the forward and backward pass of
a mini-batch, checks that loss and gradients are finite, then calls
``rule.step(model, lr, regrad)``; the rule reads the layers' gradients (and, for factorized
layers, their gradient oracles), computes every new parameter from the *same* point, and
only then writes them into the layers.

* ``tdlrt``: every factorized layer (Tucker conv1, conv2; low-rank fc1) takes one
  rank-adaptive BUG step :func:`~tucker_ref.integrators.steps.tdlrt_step` with the layer's
  gradient oracle of the one backward pass (``s_step_gradient="same_point"``), heavy-ball
  velocity on the core transported through the basis changes.
* ``full``: dense LeNet5, SGD / heavy ball on every parameter.
* ``naive-tucker``: the same factorized model at fixed ranks; core and factors are trained as
  ordinary parameters (SGD / heavy ball on their Euclidean gradients, factors never
  re-orthonormalized). With momentum 0 this is exactly
  :func:`~tucker_ref.integrators.baselines.naive_factor_step` (a test checks it).
* ``fixed-rank``: fixed-rank BUG :func:`~tucker_ref.integrators.steps.fixed_rank_bug_step`.
  Its S-step needs ``∇L`` at the projected point ``Ỹ = C0 ×_i (U_i^{1T}U_i^0) ×_i U_i^1``;
  this is done **per layer**: a second forward/backward pass on the same mini-batch with
  only that layer moved to ``Ỹ`` (all other layers at the step's starting point), so a step
  costs ``1 + #factorized layers`` passes. Per layer keeps each layer's step exactly the
  fixed-rank BUG step of the network loss in that layer's variables.
* ``riemannian``: :func:`~tucker_ref.integrators.baselines.riemannian_gd_step` (tangent
  projection of the gradient, HOSVD retraction to the same ranks).

Biases and the layers that are not factorized (fc2, and all layers of ``full``) take the
same optimizer's :meth:`~tucker_ref.integrators.optim.SGD.dense_step`. ``fixed-rank`` and
``riemannian`` steps have no momentum transport, so those methods run plain SGD (momentum
must be 0, their default; :data:`~tucker_ref.training.config.SGD_ONLY_METHODS`).
"""

from __future__ import annotations

import numpy as np

from ..integrators.optim import SGD, HeavyBall
from ..integrators.steps import fixed_rank_bug_step, tdlrt_step
from ..tucker import TuckerTensor
from .config import VARIANTS


def adaptive_modes_for(ndim: int, setting) -> tuple[int, ...]:
    """Adaptive modes of a factorized weight of order ``ndim`` for an ``--adaptive-modes`` setting.

    A conv kernel ``(out, in, kh, kw)``: ``"channel"`` → ``(0, 1)``, ``"all"`` → ``(0, 1, 2, 3)``,
    or the given mode indices. A dense weight (order 2) adapts both modes whatever the setting.
    """
    if ndim != 4 or setting == "all":
        return tuple(range(ndim))
    return (0, 1) if setting == "channel" else tuple(setting)


def plain_gradient_keys(model, grads: dict) -> list[str]:
    """Keys of ``grads`` that are not part of a factorized weight: biases and dense weights."""
    factorized = model.tucker_layers()
    return [k for k in grads if k.split(".", 1)[0] not in factorized or k.split(".", 1)[1] == "bias"]


class UpdateRule:
    """Base class: the optimizer for dense parameters and its state, checkpointable.

    Parameters
    ----------
    config : validated :class:`~tucker_ref.training.config.TrainConfig`
    """

    def __init__(self, config):
        self.config = config
        self.optimizer = self.new_optimizer()
        self.dense_state: dict[str, np.ndarray] = {}

    def new_optimizer(self):
        """Heavy ball with the configured momentum, or plain SGD when it is 0."""
        return HeavyBall(self.config.momentum) if self.config.momentum > 0 else SGD()

    def step(self, model, lr: float, regrad) -> dict:
        """Update ``model`` in place; return ``{layer: report dict}`` of the factorized layers.

        ``regrad()`` re-runs the forward and backward pass of the current mini-batch at the
        model's current parameters (used by ``fixed-rank``).
        """
        raise NotImplementedError

    def gradient_keys(self, model, grads) -> list[str]:
        """Names in ``model.grads`` that :meth:`step` reads (the trainer checks them for NaN/Inf)."""
        return list(grads)

    def _dense_update(self, model, grads: dict, keys, lr: float) -> None:
        """``param ← dense_step(param, grad)`` for each ``"layer.param"`` key (weights/biases)."""
        for key in keys:
            layer_name, pname = key.split(".", 1)
            layer = model[layer_name]
            new, self.dense_state[key] = self.optimizer.dense_step(getattr(layer, pname), grads[key],
                                                                   self.dense_state.get(key), lr)
            setattr(layer, pname, new)

    # -- checkpointing ---------------------------------------------------------------------
    def state_arrays(self) -> dict:
        """Optimizer state as ``{key: ndarray}`` (keys unique within the rule)."""
        return {f"dense/{k}": v for k, v in self.dense_state.items() if v is not None}

    def load_state_arrays(self, arrays: dict) -> None:
        self.dense_state = {k[len("dense/"):]: v for k, v in arrays.items() if k.startswith("dense/")}


class FullUpdate(UpdateRule):
    """Dense model: the optimizer on every parameter."""

    def step(self, model, lr, regrad):
        grads = model.grads
        self._dense_update(model, grads, list(grads), lr)
        return {}


class NaiveTuckerUpdate(UpdateRule):
    """Core and factors as ordinary parameters (SGD / heavy ball on their Euclidean gradients)."""

    def step(self, model, lr, regrad):
        grads = model.grads
        self._dense_update(model, grads, plain_gradient_keys(model, grads), lr)
        for name, layer in model.tucker_layers().items():
            T = layer.weight
            core = self._update(f"{name}.core", T.core, grads[f"{name}.core"], lr)
            factors = [self._update(f"{name}.factors.{i}", U, grads[f"{name}.factors.{i}"], lr)
                       for i, U in enumerate(T.factors)]
            layer.weight = TuckerTensor(core, factors)
        return {}

    def _update(self, key, param, grad, lr):
        new, self.dense_state[key] = self.optimizer.dense_step(param, grad, self.dense_state.get(key), lr)
        return new


class _LayerwiseUpdate(UpdateRule):
    """Factorized layers by an integrator step each (all from the same point), the rest dense."""

    def layer_step(self, name, layer, oracle, lr, regrad):
        raise NotImplementedError

    def gradient_keys(self, model, grads) -> list[str]:
        return plain_gradient_keys(model, grads)

    def step(self, model, lr, regrad):
        grads = model.grads
        layers = model.tucker_layers()
        oracles = {name: layer.gradient_oracle() for name, layer in layers.items()}
        results = {name: self.layer_step(name, layer, oracles[name], lr, regrad) for name, layer in layers.items()}
        for name, (Y, _) in results.items():
            layers[name].weight = Y
        self._dense_update(model, grads, self.gradient_keys(model, grads), lr)
        return {name: report.to_dict() for name, (_, report) in results.items()}


class TDLRTUpdate(_LayerwiseUpdate):
    """Rank-adaptive BUG step per factorized layer; heavy-ball velocity per layer on its core."""

    def __init__(self, config):
        super().__init__(config)
        self.layer_optimizers: dict = {}

    def layer_step(self, name, layer, oracle, lr, regrad):
        c = self.config
        optimizer = self.layer_optimizers.setdefault(name, self.new_optimizer())
        return tdlrt_step(layer.weight, oracle, lr, tau=c.tau, variant=VARIANTS[c.variant],
                          adaptive_modes=adaptive_modes_for(layer.weight.ndim, c.adaptive_modes), rmin=c.rmin,
                          rmax=c.rmax, s_step_gradient="same_point", optimizer=optimizer,
                          diagnostics=c.diagnostics, name=name)

    def state_arrays(self):
        out = super().state_arrays()
        out.update({f"core/{n}": opt.state for n, opt in self.layer_optimizers.items() if opt.state is not None})
        return out

    def load_state_arrays(self, arrays):
        super().load_state_arrays(arrays)
        self.layer_optimizers = {}
        for key, value in arrays.items():
            if key.startswith("core/"):
                optimizer = self.new_optimizer()
                optimizer.state = value
                self.layer_optimizers[key[len("core/"):]] = optimizer


class FixedRankUpdate(_LayerwiseUpdate):
    """Fixed-rank BUG per layer; the S-step gradient from a second pass with only this layer moved."""

    def layer_step(self, name, layer, oracle, lr, regrad):
        Y0 = layer.weight

        def gradient(point):
            if point is Y0:
                return oracle
            layer.weight = point
            try:
                regrad()
                return layer.gradient_oracle()
            finally:
                layer.weight = Y0

        return fixed_rank_bug_step(Y0, gradient, lr, diagnostics=self.config.diagnostics, name=name)


class RiemannianUpdate(_LayerwiseUpdate):
    """Riemannian gradient descent with HOSVD retraction per layer (fixed ranks)."""

    def layer_step(self, name, layer, oracle, lr, regrad):
        from ..integrators.baselines import riemannian_gd_step

        return riemannian_gd_step(layer.weight, oracle, lr)


RULES = {
    "tdlrt": TDLRTUpdate,
    "full": FullUpdate,
    "naive-tucker": NaiveTuckerUpdate,
    "fixed-rank": FixedRankUpdate,
    "riemannian": RiemannianUpdate,
}


def make_update_rule(config) -> UpdateRule:
    """The :class:`UpdateRule` of ``config.method``."""
    return RULES[config.method](config)
