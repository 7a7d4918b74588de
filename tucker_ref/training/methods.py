"""How each training method updates a LeNet5 after one forward/backward pass.

One :class:`UpdateRule` per ``--method``. The trainer runs the forward and backward pass of
a mini-batch, checks that loss and gradients are finite, then calls
``rule.step(model, lr, regrad, close_cycle)``; the rule reads the layers' gradients (and, for
factorized layers, their gradient oracles), computes every new parameter from the *same*
point, and only then writes them into the layers.

* ``tdlrt``: every factorized layer (Tucker conv1, conv2; low-rank fc1) runs the TDLRT cycle
  of :mod:`tucker_ref.integrators.steps` with the layer's gradient oracle of each backward
  pass: :func:`~tucker_ref.integrators.steps.augment` at the first batch of a cycle,
  :func:`~tucker_ref.integrators.steps.s_step` on every batch, and
  :func:`~tucker_ref.integrators.steps.truncate_cycle` after ``s_steps`` batches or when the
  trainer closes the cycle (end of an epoch, ``--max-steps``). During a cycle the layer
  computes with the augmented point ``Ĉ ×_i Û_i``. With ``s_steps = 1`` every batch is one
  :func:`~tucker_ref.integrators.steps.tdlrt_step` with ``s_step_gradient="same_point"``,
  operation for operation. The optimizer's core state is transported through every basis
  change; the basis update itself uses the plain gradient (only its span matters).
* ``full``: dense LeNet5, the optimizer on every parameter.
* ``naive-tucker``: the same factorized model at fixed ranks; core and factors are trained as
  ordinary parameters (the optimizer on their Euclidean gradients, factors never
  re-orthonormalized). With plain SGD this is exactly
  :func:`~tucker_ref.integrators.baselines.naive_factor_step` (a test checks it).
* ``fixed-rank``: fixed-rank BUG :func:`~tucker_ref.integrators.steps.fixed_rank_bug_step`
  applied to the whole parameter vector, **at the joint point** (2 forward/backward passes per
  step). From the first pass every factorized layer computes its K-steps and its projected
  point ``Ỹ = C0 ×_i (U_i^{1T}U_i^0) ×_i U_i^1``; all layers are moved to their ``Ỹ`` at once,
  one second pass on the same mini-batch gives the network gradient at that joint point
  ``Θ̃``, and every S-step ``C1 = C̃ − λ ∇L(Θ̃) ×_i U_i^{1T}`` is taken from it. Biases and
  fc2 are blocks at full rank (basis = identity, so their K-step does not move them and
  ``Ỹ = Θ0`` on them): their Galerkin step is the SGD step with the gradient **at the joint
  point** as well, so the whole step is exactly fixed-rank BUG on ``Θ``.
* ``fixed-rank-layerwise``: the layer-by-layer variant, labelled as such. Each layer's S-step
  gradient comes from a pass with only that layer moved to its ``Ỹ`` (all other layers at the
  step's starting point), so a step costs ``1 + #factorized layers`` passes and each layer's
  step is the fixed-rank BUG step of the network loss in that layer's variables alone, not a
  step of the network's parameter vector; biases and fc2 take the SGD step with the first
  gradient.
* ``riemannian``: :func:`~tucker_ref.integrators.baselines.riemannian_gd_step` (tangent
  projection of the gradient, HOSVD retraction to the same ranks).

Biases and the layers that are not factorized (fc2, and all layers of ``full``) take the
same optimizer's :meth:`~tucker_ref.integrators.optim.SGD.dense_step` (with the gradient at the
joint point for ``fixed-rank``, with the first pass's gradient otherwise). ``fixed-rank``,
``fixed-rank-layerwise`` and ``riemannian`` steps have no optimizer-state transport, so those methods run plain SGD
(:data:`~tucker_ref.training.config.SGD_ONLY_METHODS`).

Gradient clipping (``clip_grad_norm``) scales every gradient the optimizers read by one
factor :func:`~tucker_ref.integrators.optim.clip_factor` of their joint norm: for ``tdlrt``
the S-step core gradients ``∇L ×_i Û_i^T`` and the dense parameters' gradients.
"""

from __future__ import annotations

import math

import numpy as np

from ..integrators.optim import OPTIMIZERS, HeavyBall, clip_factor
from ..integrators.steps import (augment, cycle_report, fixed_rank_bug_step, fixed_rank_projected_point,
                                 fixed_rank_s_step, galerkin_gradient, s_step, truncate_cycle)
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


def rank_bounds(shape, config) -> tuple[list, list]:
    """Per-mode ``(rmin, rmax)`` of a factorized weight for the settings of ``config``.

    Adaptive modes: those of ``config.truncation_rule``
    (:meth:`~tucker_ref.truncation.TruncationRule.rank_bounds`: ``rmax_i = min(rmax,
    max(1, ⌊rmax_fraction·n_i⌋), n_i)``, each bound only when set, and ``rmin_i = min(rmin,
    rmax_i)``; a cap below ``rmin`` wins: conv1 has one input channel). Non-adaptive modes:
    ``(1, None)`` (they keep their rank).
    """
    adaptive = adaptive_modes_for(len(shape), config.adaptive_modes)
    lo, hi = config.truncation_rule.rank_bounds(shape)
    return ([r if i in adaptive else 1 for i, r in enumerate(lo)],
            [r if i in adaptive else None for i, r in enumerate(hi)])


def make_optimizer(config):
    """The optimizer of ``config.optimizer`` (with ``momentum`` and ``weight_decay``)."""
    if config.optimizer == "momentum":
        return HeavyBall(config.momentum, weight_decay=config.weight_decay)
    return OPTIMIZERS[config.optimizer](weight_decay=config.weight_decay)


def plain_gradient_keys(model, grads: dict) -> list[str]:
    """Keys of ``grads`` that are not part of a factorized weight: biases and dense weights."""
    factorized = model.tucker_layers()
    return [k for k in grads if k.split(".", 1)[0] not in factorized or k.split(".", 1)[1] == "bias"]


class UpdateRule:
    """Base class: the optimizer for dense parameters and its state, checkpointable.

    Besides the step, a rule says what the trainer needs to know of how its method steps: the
    caps of its initial ranks (:meth:`initial_rank_caps`) and the terms of the descent bound
    for ``--check-descent`` (:meth:`descent_terms`). Facts about a method that are not code
    (factorized, chooses its ranks, …) are in :data:`~tucker_ref.training.config.METHOD_SPECS`.

    Parameters
    ----------
    config : validated :class:`~tucker_ref.training.config.TrainConfig`
    """

    def __init__(self, config):
        self.config = config
        self.optimizer = self.new_optimizer()
        self.dense_state: dict = {}

    def new_optimizer(self):
        """A fresh optimizer of the configured kind (:func:`make_optimizer`)."""
        return make_optimizer(self.config)

    def step(self, model, lr: float, regrad, close_cycle: bool = True) -> dict:
        """Update ``model`` in place; return ``{layer: report dict}`` of the factorized layers.

        ``regrad()`` re-runs the forward and backward pass of the current mini-batch at the
        model's current parameters (used by ``fixed-rank`` and ``fixed-rank-layerwise``).
        ``close_cycle`` asks a rule with multi-batch cycles (``tdlrt`` with ``s_steps > 1``) to
        end its cycle on this batch.
        """
        raise NotImplementedError

    def gradient_keys(self, model, grads) -> list[str]:
        """Names in ``model.grads`` that :meth:`step` reads (the trainer checks them for NaN/Inf)."""
        return list(grads)

    @classmethod
    def initial_rank_caps(cls, shape, config) -> list:
        """Per-mode caps of a factorized weight's initial ranks (``None``: no cap)."""
        return [None] * len(shape)

    def descent_terms(self, reports: dict, plain_sq: float) -> tuple:
        """``(‖Π∇L(Y0)‖², η)`` of the step just taken (``(None, None)``: not of the bound's form).

        The terms of the descent bound in the ``--check-descent`` record
        (:func:`~tucker_ref.training.records.descent_record`). ``reports`` are the step's layer
        reports, ``plain_sq`` is ``Σ ‖g‖²`` over the parameters outside the factorized weights
        (where Π is the identity).
        """
        return None, None

    def clip_scale(self, squared_norm: float) -> float:
        """The factor that clips gradients of joint squared norm ``squared_norm`` (1 without clipping)."""
        return clip_factor(math.sqrt(squared_norm), self.config.clip_grad_norm)

    @staticmethod
    def squared_norm(arrays) -> float:
        """``Σ ‖a‖²`` in float64."""
        return sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays)

    def _dense_update(self, model, grads: dict, keys, lr: float, scale: float = 1.0) -> None:
        """``param ← dense_step(param, scale·grad)`` for each ``"layer.param"`` key (weights/biases)."""
        for key in keys:
            layer_name, pname = key.split(".", 1)
            layer = model[layer_name]
            grad = grads[key] if scale == 1.0 else grads[key] * grads[key].dtype.type(scale)
            new, self.dense_state[key] = self.optimizer.dense_step(getattr(layer, pname), grad,
                                                                   self.dense_state.get(key), lr)
            setattr(layer, pname, new)

    # -- checkpointing ---------------------------------------------------------------------
    def state_arrays(self) -> dict:
        """Optimizer state as ``{key: ndarray}`` (keys unique within the rule)."""
        return {f"dense/{k}/{field}": v for k, state in self.dense_state.items()
                for field, v in self.optimizer.state_arrays(state).items()}

    def load_state_arrays(self, arrays: dict) -> None:
        self.dense_state = {key: self.optimizer.state_from_arrays(fields)
                            for key, fields in _grouped(arrays, "dense/").items()}


def _grouped(arrays: dict, prefix: str) -> dict:
    """``{"<prefix><key>/<field>": a}`` → ``{key: {field: a}}``."""
    out: dict = {}
    for name, value in arrays.items():
        if name.startswith(prefix):
            key, field = name[len(prefix):].rsplit("/", 1)
            out.setdefault(key, {})[field] = value
    return out


class FullUpdate(UpdateRule):
    """Dense model: the optimizer on every parameter."""

    def descent_terms(self, reports, plain_sq):
        # Every parameter is dense: Π is the identity and nothing is truncated.
        return plain_sq, 0.0

    def step(self, model, lr, regrad, close_cycle=True):
        grads = model.grads
        scale = self.clip_scale(self.squared_norm(grads.values())) if self.config.clip_grad_norm else 1.0
        self._dense_update(model, grads, list(grads), lr, scale)
        return {}


class NaiveTuckerUpdate(UpdateRule):
    """Core and factors as ordinary parameters (the optimizer on their Euclidean gradients)."""

    def step(self, model, lr, regrad, close_cycle=True):
        grads = model.grads
        keys = plain_gradient_keys(model, grads)
        layers = model.tucker_layers()
        factor_keys = {name: [f"{name}.core"] + [f"{name}.factors.{i}" for i in range(layer.weight.ndim)]
                       for name, layer in layers.items()}
        scale = 1.0
        if self.config.clip_grad_norm:
            every = keys + [k for ks in factor_keys.values() for k in ks]
            scale = self.clip_scale(self.squared_norm(grads[k] for k in every))
        self._dense_update(model, grads, keys, lr, scale)
        for name, layer in layers.items():
            T = layer.weight
            core_key, *keys_u = factor_keys[name]
            core = self._update(core_key, T.core, grads[core_key], lr, scale)
            factors = [self._update(k, U, grads[k], lr, scale) for k, U in zip(keys_u, T.factors)]
            layer.weight = TuckerTensor(core, factors)
        return {}

    def _update(self, key, param, grad, lr, scale):
        if scale != 1.0:
            grad = grad * grad.dtype.type(scale)
        new, self.dense_state[key] = self.optimizer.dense_step(param, grad, self.dense_state.get(key), lr)
        return new


class _LayerwiseUpdate(UpdateRule):
    """Factorized layers by an integrator step each (all from the same point), the rest dense."""

    def layer_step(self, name, layer, oracle, lr, regrad):
        raise NotImplementedError

    def gradient_keys(self, model, grads) -> list[str]:
        return plain_gradient_keys(model, grads)

    def step(self, model, lr, regrad, close_cycle=True):
        grads = model.grads
        layers = model.tucker_layers()
        oracles = {name: layer.gradient_oracle() for name, layer in layers.items()}
        results = {name: self.layer_step(name, layer, oracles[name], lr, regrad) for name, layer in layers.items()}
        for name, (Y, _) in results.items():
            layers[name].weight = Y
        self._dense_update(model, grads, self.gradient_keys(model, grads), lr)
        return {name: report.to_dict() for name, (_, report) in results.items()}


class TDLRTUpdate(UpdateRule):
    """The TDLRT cycle per factorized layer (augment, ``s_steps`` S-steps, truncate); the rest dense.

    Between batches of an open cycle, :attr:`cycles` holds each layer's
    :class:`~tucker_ref.integrators.steps.AugmentedPoint` and the data of its report (the
    starting point ``Y0``, ``‖Π∇L(Y0)‖``). Per step the report of a layer is the
    :class:`~tucker_ref.integrators.steps.StepReport` of its cycle when the cycle was
    truncated on this batch, else ``{"phase": "augment" | "s_step", "s_steps": k,
    "ranks_before": …, "ranks_augmented": …}``.
    """

    @classmethod
    def initial_rank_caps(cls, shape, config):
        """The ``rmax`` / ``rmax_fraction`` caps of :func:`rank_bounds`.

        A start above them would be cut at the first truncation anyway."""
        return rank_bounds(shape, config)[1]

    def __init__(self, config):
        super().__init__(config)
        self.layer_optimizers: dict = {}
        self.cycles: dict = {}

    def descent_terms(self, reports, plain_sq):
        proj_sq = plain_sq + sum(r["proj_grad_norm"] ** 2 for r in reports.values())
        return proj_sq, math.sqrt(sum(r["eta"] ** 2 for r in reports.values()))

    def gradient_keys(self, model, grads) -> list[str]:
        return plain_gradient_keys(model, grads)

    def step(self, model, lr, regrad, close_cycle=True):
        c = self.config
        grads = model.grads
        layers = model.tucker_layers()
        opened = not self.cycles
        core_grads = {}
        for name, layer in layers.items():
            optimizer = self.layer_optimizers.setdefault(name, self.new_optimizer())
            oracle = layer.gradient_oracle()
            if opened:
                point = augment(layer.weight, oracle, variant=VARIANTS[c.variant], optimizer=optimizer, name=name)
                self.cycles[name] = {"point": point, "Y0": layer.weight, "oracle0": oracle}
            point = self.cycles[name]["point"]
            core_grads[name] = galerkin_gradient(point, oracle, name=name, caller="tdlrt_step")
            if opened:
                self.cycles[name]["proj_grad_norm"] = float(np.linalg.norm(core_grads[name]))
        dense_keys = plain_gradient_keys(model, grads)
        scale = 1.0
        if c.clip_grad_norm:
            scale = self.clip_scale(self.squared_norm(core_grads.values())
                                    + self.squared_norm(grads[k] for k in dense_keys))
        for name in layers:
            cycle = self.cycles[name]
            cycle["point"] = s_step(cycle["point"], None, lr, optimizer=self.layer_optimizers[name],
                                    core_grad=core_grads[name], grad_scale=scale, name=name, caller="tdlrt_step")
        close = close_cycle or next(iter(self.cycles.values()))["point"].s_steps >= c.s_steps
        reports = {}
        for name, layer in layers.items():
            point = self.cycles[name]["point"]
            if close:
                reports[name] = self._close(name, layer).to_dict()
            else:
                layer.weight = point.tucker()
                reports[name] = {"phase": "augment" if opened else "s_step", "s_steps": point.s_steps,
                                 "ranks_before": list(self.cycles[name]["Y0"].ranks),
                                 "ranks_augmented": list(point.ranks)}
        if close:
            self.cycles = {}
        self._dense_update(model, grads, dense_keys, lr, scale)
        return reports

    def _close(self, name, layer):
        """Truncate the layer's cycle, write ``Y1`` into it, and return the cycle's StepReport."""
        c = self.config
        cycle = self.cycles[name]
        point, Y0 = cycle["point"], cycle["Y0"]
        adaptive = adaptive_modes_for(Y0.ndim, c.adaptive_modes)
        # The run's rule, validated once by TrainConfig.validated; its bounds outside the
        # adaptive modes are never read (those modes are truncated back to their rank).
        Y1, trunc = truncate_cycle(point, rule=c.truncation_rule, adaptive_modes=adaptive,
                                   optimizer=self.layer_optimizers[name], name=name, caller="tdlrt_step")
        layer.weight = Y1
        return cycle_report(point, Y0, Y1, trunc, oracle0=cycle["oracle0"], proj_grad_norm=cycle["proj_grad_norm"],
                            diagnostics=c.diagnostics,
                            s_step_gradient="same_point" if point.s_steps == 1 else "reevaluate")

    def state_arrays(self):
        if self.cycles:
            raise RuntimeError("a checkpoint needs closed TDLRT cycles (the trainer closes them before saving)")
        out = super().state_arrays()
        for name, opt in self.layer_optimizers.items():
            out.update({f"core/{name}/{field}": v for field, v in opt.state_arrays(opt.state).items()})
        return out

    def load_state_arrays(self, arrays):
        super().load_state_arrays(arrays)
        self.layer_optimizers = {}
        for name, fields in _grouped(arrays, "core/").items():
            optimizer = self.new_optimizer()
            optimizer.state = optimizer.state_from_arrays(fields)
            self.layer_optimizers[name] = optimizer


class FixedRankUpdate(UpdateRule):
    """Fixed-rank BUG on the whole parameter vector: every S-step at the joint point (2 passes).

    From the first pass (run by the trainer) every factorized layer computes its projected
    point ``Ỹ`` (:func:`~tucker_ref.integrators.steps.fixed_rank_projected_point`). Every layer
    is then set to its ``Ỹ`` at once (biases and fc2 stay at ``Θ0``, their ``Ỹ``), ``regrad()``
    runs the second pass, and each layer takes
    :func:`~tucker_ref.integrators.steps.fixed_rank_s_step` with its oracle at the joint point
    ``Θ̃``. The dense parameters take the SGD step with their gradient at ``Θ̃``.
    """

    def gradient_keys(self, model, grads) -> list[str]:
        return plain_gradient_keys(model, grads)

    def step(self, model, lr, regrad, close_cycle=True):
        layers = model.tucker_layers()
        starts = {name: layer.weight for name, layer in layers.items()}
        oracles0 = {name: layer.gradient_oracle() for name, layer in layers.items()}
        projected = {name: fixed_rank_projected_point(Y0, oracles0[name], lr, name=name, caller="fixed_rank_bug_step")
                     for name, Y0 in starts.items()}
        try:
            for name, layer in layers.items():
                layer.weight = projected[name]
            regrad()
            joint = {name: layer.gradient_oracle() for name, layer in layers.items()}
            grads = model.grads  # the gradient at the joint point (kept when the weights are reset)
        finally:
            for name, layer in layers.items():
                layer.weight = starts[name]
        results = {name: fixed_rank_s_step(Y0, projected[name], joint[name], lr, oracle0=oracles0[name],
                                           diagnostics=self.config.diagnostics, name=name,
                                           caller="fixed_rank_bug_step")
                   for name, Y0 in starts.items()}
        for name, (Y, _) in results.items():
            layers[name].weight = Y
        self._dense_update(model, grads, self.gradient_keys(model, grads), lr)
        return {name: report.to_dict() for name, (_, report) in results.items()}


class FixedRankLayerwiseUpdate(_LayerwiseUpdate):
    """Fixed-rank BUG layer by layer: each S-step gradient from a pass with only that layer moved.

    ``1 + #factorized layers`` passes per step; biases and fc2 step with the first gradient.
    Not fixed-rank BUG of the network's parameter vector (that is :class:`FixedRankUpdate`).
    """

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
    "fixed-rank-layerwise": FixedRankLayerwiseUpdate,
    "riemannian": RiemannianUpdate,
}


def make_update_rule(config) -> UpdateRule:
    """The :class:`UpdateRule` of ``config.method``."""
    return RULES[config.method](config)
