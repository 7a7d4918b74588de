"""The LeNet5 parameter vector Θ of the MNIST validation scripts, as one object.

A network's parameters are handled as an ordered dict ``{"layer.param": dense array}`` over
*all* parameters: the factorized weights (Tucker conv1, conv2, low-rank fc1) as their dense
tensors ``Y.full()``, biases and fc2 as they are. Norms and differences of these dicts are the
Euclidean ones of the whole vector Θ. The network gradient ``∇L(Θ)`` is the same dict of dense
gradients (the factorized layers' dense kernel gradients from their gradient oracles).

A dense LeNet5 *probe* evaluates the loss and ``∇L`` at any Θ given as such a dict (used for
the mixed points of the coupling attribution and the Hessian-vector products): the dense
network with the weights ``Y.full()`` computes the same function as the factorized one, up to
rounding (tested).

The block-diagonal projection of a TDLRT step: ``Π`` is the orthogonal projection onto
``⊗_i span Û_i`` on each factorized weight and the identity on biases and dense layers, so
``‖ΠG‖² = Σ_layers ‖ΠG_ℓ‖² + Σ_dense ‖g‖²``, ``‖(I − Π)G‖² = Σ_layers r_ℓ²`` and the truncation
distance of the whole vector is ``η = (Σ_layers η_ℓ²)^{1/2}`` (the blocks are orthogonal).
"""

from __future__ import annotations

import math

import numpy as np

from tucker_ref.nn.functional import softmax_cross_entropy
from tucker_ref.nn.models import lenet5

#: Layers with parameters, in network order (the blocks of the coupling attribution).
BLOCKS = ("conv1", "conv2", "fc1", "fc2")
#: The factorized layers of the TDLRT model.
FACTORIZED = ("conv1", "conv2", "fc1")


def block_of(key: str) -> str:
    return key.split(".", 1)[0]


def parameters(model) -> dict:
    """``{"layer.param": dense array}`` of every parameter (factorized weights as ``Y.full()``)."""
    factorized = model.tucker_layers()
    out = {}
    for key, value in model.parameters().items():
        name, pname = key.split(".", 1)
        if name in factorized:
            if pname in ("core",) or pname.startswith("factors"):
                continue
            if pname == "weight":
                value = factorized[name].weight.full()
        out[key] = np.array(value, dtype=np.float64)
    for name, layer in factorized.items():
        out.setdefault(f"{name}.weight", layer.weight.full())
    return {k: out[k] for k in sorted(out, key=_order)}


def _order(key: str):
    name, pname = key.split(".", 1)
    return (BLOCKS.index(name) if name in BLOCKS else len(BLOCKS), name, pname != "weight", pname)


def gradient(model) -> dict:
    """``∇L(Θ)`` of the last backward pass, as dense arrays (oracles for factorized weights)."""
    factorized = model.tucker_layers()
    grads = model.grads
    out = {}
    for key in grads:
        name, pname = key.split(".", 1)
        if name in factorized and pname != "bias":
            continue
        out[key] = np.array(grads[key], dtype=np.float64)
    for name, layer in factorized.items():
        out[f"{name}.weight"] = np.asarray(layer.gradient_oracle().dense_gradient(), dtype=np.float64)
    return {k: out[k] for k in sorted(out, key=_order)}


def sub(a: dict, b: dict) -> dict:
    return {k: a[k] - b[k] for k in a}


def axpy(alpha: float, x: dict, y: dict) -> dict:
    """``y + αx``."""
    return {k: y[k] + alpha * x[k] for k in y}


def norm(a: dict, keys=None) -> float:
    keys = a.keys() if keys is None else keys
    return math.sqrt(sum(float(np.sum(np.square(a[k]))) for k in keys))


def block_keys(a: dict, block: str) -> list[str]:
    return [k for k in a if block_of(k) == block]


class Probe:
    """A dense LeNet5 that evaluates ``(L, ∇L)`` of a batch at any parameter dict Θ."""

    def __init__(self, seed: int = 0):
        self.model = lenet5(dtype=np.float64, seed=seed)

    def load(self, theta: dict) -> None:
        for key, value in theta.items():
            name, pname = key.split(".", 1)
            setattr(self.model[name], pname, np.array(value, dtype=np.float64))

    def loss_and_gradient(self, theta: dict, x, y) -> tuple[float, dict]:
        self.load(theta)
        loss, dlogits = softmax_cross_entropy(self.model.forward(x), y)
        self.model.backward(dlogits, need_dx=False)
        return float(loss), gradient(self.model)


def batch_loss(model, x, y) -> float:
    """Loss of the batch ``(x, y)`` at the model's parameters; leaves the gradients in the layers."""
    logits = model.forward(x)
    loss, dlogits = softmax_cross_entropy(logits, y)
    model.backward(dlogits, need_dx=False)
    return float(loss)


def combined(reports: dict, key: str) -> float:
    """Root-sum-of-squares of a per-layer report quantity (``residual_norm``, ``eta``, ``epsilon``)."""
    return math.sqrt(sum(float(r[key]) ** 2 for r in reports.values()))


def hessian_norm_estimate(probe: Probe, theta: dict, x, y, rng, iters: int, rel_step: float) -> tuple[float, float]:
    """``(‖Hv‖, change)``: power iteration on the batch-loss Hessian in the whole parameter space.

    ``Hv ≈ (∇L(Θ + hv) − ∇L(Θ − hv)) / 2h``, ``‖v‖ = 1``, ``h = rel_step·‖Θ‖``: the last ``‖Hv‖``
    (a lower estimate of the largest ``|eigenvalue|``) and its relative change over the last
    iteration.
    """
    h = rel_step * norm(theta)
    v = {k: rng.standard_normal(a.shape) for k, a in theta.items()}
    nv = norm(v)
    v = {k: a / nv for k, a in v.items()}
    estimates = []
    for _ in range(iters):
        _, gp = probe.loss_and_gradient(axpy(h, v, theta), x, y)
        _, gm = probe.loss_and_gradient(axpy(-h, v, theta), x, y)
        Hv = {k: (gp[k] - gm[k]) / (2 * h) for k in gp}
        estimates.append(norm(Hv))
        v = {k: a / estimates[-1] for k, a in Hv.items()}
    change = abs(estimates[-1] - estimates[-2]) / estimates[-1] if len(estimates) > 1 else math.nan
    return estimates[-1], change
