"""Parameter counts, compression rates and core spectra of a (partly) factorized network.

Compression (as in docs/results.md#setup)::

    conv compression    = 1 − Σ_conv stored(W) / Σ_conv n_params(W)
    network compression = 1 − Σ_all  stored(W) / Σ_all  n_params(W)

over the layers with a weight, **weights only, biases excluded** (the DLRT convention,
docs/results.md#setup; LeNet5's dense weights number 430,500). ``stored(W)`` is ``∏ r_i + Σ n_i r_i`` at the
current ranks for a Tucker / low-rank layer (:attr:`TuckerTensor.n_params`) and the number of
entries for a dense layer, so a dense first conv is counted in both sums. A factorized layer
near full rank stores *more* than the dense kernel, and the compression is then negative; it
is reported as is.
"""

from __future__ import annotations

import math

import numpy as np

from .. import linalg
from ..tucker import TuckerTensor, unfold


def layer_weights(model) -> dict:
    """``{layer name: weight}`` for every layer of ``model`` that has one, in network order.

    The weight is a :class:`TuckerTensor` (factorized layer) or an ndarray (dense layer).
    ``model`` is a :class:`tucker_ref.nn.layers.Sequential` (anything with ``named_layers()``).
    """
    return {name: layer.weight for name, layer in model.named_layers() if hasattr(layer, "weight")}


def ranks_of(model) -> dict:
    """``{layer name: ranks}`` of the factorized layers (a tuple per layer, one entry per mode)."""
    return {name: W.ranks for name, W in layer_weights(model).items() if isinstance(W, TuckerTensor)}


def parameter_report(model) -> dict:
    """Per-layer and total parameter counts and the two compression rates.

    Returns
    -------
    dict with
        ``layers``: ``{name: {"kind": "conv"|"dense", "factorized": bool, "shape", "ranks"
        (None for a dense layer), "stored", "dense"}}``;
        ``conv_weights``, ``conv_weights_dense``, ``weights``, ``weights_dense``: the sums;
        ``biases``: number of bias entries (not part of any rate);
        ``params``: ``weights + biases``, everything the model stores;
        ``conv_compression``, ``network_compression``: the rates of the module docstring
        (``conv_compression`` is ``None`` for a network without conv layers).
    """
    layers = {}
    sums = {"conv_weights": 0, "conv_weights_dense": 0, "weights": 0, "weights_dense": 0}
    biases = 0
    for name, layer in model.named_layers():
        if not hasattr(layer, "weight"):
            continue
        W = layer.weight
        factorized = isinstance(W, TuckerTensor)
        shape = tuple(W.shape)
        stored = W.n_params if factorized else int(W.size)
        dense = math.prod(shape)
        kind = "conv" if len(shape) == 4 else "dense"
        layers[name] = {"kind": kind, "factorized": factorized, "shape": shape,
                        "ranks": W.ranks if factorized else None, "stored": stored, "dense": dense}
        if kind == "conv":
            sums["conv_weights"] += stored
            sums["conv_weights_dense"] += dense
        sums["weights"] += stored
        sums["weights_dense"] += dense
        bias = getattr(layer, "bias", None)
        biases += 0 if bias is None else int(bias.size)
    conv = (1.0 - sums["conv_weights"] / sums["conv_weights_dense"]) if sums["conv_weights_dense"] else None
    return {
        "layers": layers,
        **sums,
        "biases": biases,
        "params": sums["weights"] + biases,
        "conv_compression": conv,
        "network_compression": 1.0 - sums["weights"] / sums["weights_dense"],
    }


def core_spectra(model) -> dict:
    """``{layer: [σ(Mat_i(C)) for each mode i]}`` — singular values of every core unfolding.

    With orthonormal factors these are the mode-``i`` singular values of the whole kernel,
    the quantities the truncation (docs/algorithms.md §3) thresholds.
    """
    out = {}
    for name, W in layer_weights(model).items():
        if isinstance(W, TuckerTensor):
            out[name] = [linalg.singular_values(unfold(W.core, i)) for i in range(W.ndim)]
    return out


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose arg-max equals the label (first maximum wins ties)."""
    return float(np.mean(np.argmax(logits, axis=1) == labels))
