"""LeNet5 builder: dense, with Tucker conv layers and/or a low-rank first dense layer.

Architecture (input ``(N, 1, 28, 28)``)::

    conv1 1→20 5×5, relu1, pool1 2×2, conv2 20→50 5×5, relu2, pool2 2×2, flatten,
    fc1 800→500, relu3, fc2 500→10

Initialization (seeded, documented)
-----------------------------------
* Dense weights and all biases: PyTorch's default (``kaiming_uniform_(a=√5)``), i.e.
  ``U(−1/√fan_in, 1/√fan_in)`` with ``fan_in = in·kh·kw`` (conv) or ``in`` (dense), drawn in
  float64 in the order conv1 (weight, bias), conv2, fc1, fc2 from the first child of
  ``SeedSequence(seed)``, then cast to ``dtype``. So a dense and a factorized model with the
  same seed share every bias and every non-factorized layer exactly.
* A factorized layer built from ranks (no ``from_dense``): orthonormal random factors (QR of
  a standard Gaussian matrix, signs fixed so that ``diag(R) ≥ 0``) and a standard Gaussian
  core scaled so that ``‖W‖_F`` equals the Frobenius norm of that layer's dense default
  draw (the output scale of the dense init is kept). Drawn from the second child of
  ``SeedSequence(seed)``, layer by layer in network order.
* ``from_dense``: every parameter comes from the given dense model (``seed`` is unused); the
  factorized layers are the HOSVD (:func:`tucker_ref.truncation.hosvd`; ST-HOSVD with
  ``sequential=True``) of its kernels at the requested ranks (exact when no ranks are
  requested).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..checks import SUPPORTED_DTYPES, check_ranks
from ..truncation import feasible_ranks, hosvd, is_feasible, rank_from_fraction
from ..tucker import TuckerTensor, random_orthonormal
from .layers import Conv2d, Flatten, Linear, LowRankLinear, MaxPool2d, ReLU, Sequential, TuckerConv2d

__all__ = ["LENET5_WEIGHT_SHAPES", "lenet5", "pytorch_default_init", "random_tucker"]

#: Weight shapes of the LeNet5 layers with parameters (PyTorch layout, output first).
LENET5_WEIGHT_SHAPES = {"conv1": (20, 1, 5, 5), "conv2": (50, 20, 5, 5), "fc1": (500, 800), "fc2": (10, 500)}


def pytorch_default_init(rng: np.random.Generator, shape) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's default weight and bias init: both ``U(−1/√fan_in, 1/√fan_in)``, float64.

    ``kaiming_uniform_(a=√5)`` has bound ``gain·√(3/fan_in)`` with ``gain = √(2/(1+a²)) = 1/√3``,
    which is ``1/√fan_in``; ``fan_in = ∏ shape[1:]``. Returns ``(weight, bias)`` with
    ``bias.shape == (shape[0],)``; the weight is drawn first.
    """
    bound = 1.0 / math.sqrt(math.prod(shape[1:]))
    weight = rng.uniform(-bound, bound, size=shape)
    bias = rng.uniform(-bound, bound, size=shape[0])
    return weight, bias


def random_tucker(rng: np.random.Generator, shape, ranks, norm: float) -> TuckerTensor:
    """Random Tucker tensor with orthonormal factors and ``‖X‖_F = norm`` (float64).

    Factor ``i``: Q of the reduced QR of an ``n_i × r_i`` standard Gaussian matrix, columns
    signed so that ``diag(R) ≥ 0`` (Haar-distributed). Core: standard Gaussian, scaled to
    ``norm`` (with orthonormal factors ``‖X‖ = ‖C‖``). Ranks must satisfy ``r_i ≤ n_i``.
    """
    ranks = check_ranks(ranks, shape)
    factors = [random_orthonormal(rng, n, r) for n, r in zip(shape, ranks)]
    core = rng.standard_normal(ranks)
    return TuckerTensor(core * (norm / np.linalg.norm(core)), factors)


def _layer_ranks(name, shape, ranks, init_rank_fraction):
    """Ranks requested for one factorized layer, or ``None`` for full / exact."""
    if ranks is not None and name in ranks:
        r = ranks[name]
        if isinstance(r, numbers.Integral) and not isinstance(r, bool):
            if r < 1:
                raise ValueError(f"ranks[{name!r}] must be a positive integer or a tuple of them, got {r!r}")
            # One rank for every mode, capped by each dimension (conv1 has one input channel).
            return feasible_ranks(min(int(r), n) for n in shape)
        r = check_ranks(r, shape, f"ranks[{name!r}]")
        if not is_feasible(r):
            raise ValueError(
                f"ranks[{name!r}] = {r} is not feasible: each r_i must be <= the product of the other ranks"
            )
        return r
    if init_rank_fraction is not None:
        return feasible_ranks(rank_from_fraction(init_rank_fraction, n) for n in shape)
    return None


def lenet5(*, tucker_conv=False, low_rank_dense=False, ranks=None, init_rank_fraction=None,
           from_dense=None, sequential=False, dtype=np.float64, seed=0) -> Sequential:
    """Build LeNet5 (see the module docstring for architecture and initialization).

    Parameters
    ----------
    tucker_conv : bool
        Make ``conv1`` and ``conv2`` :class:`~tucker_ref.nn.layers.TuckerConv2d` layers.
    low_rank_dense : bool
        Make ``fc1`` (800→500) a :class:`~tucker_ref.nn.layers.LowRankLinear` layer.
    ranks : dict, optional
        Ranks per factorized layer name (``"conv1"``, ``"conv2"``, ``"fc1"``): a tuple with
        one entry per mode (``r_i ≤ n_i`` and feasible, ``r_i ≤ ∏_{j≠i} r_j``), or an int used
        for every mode and capped by each dimension (so conv1 gets rank 1 in its input mode)
        and then made feasible. A name that is not factorized is an error.
    init_rank_fraction : float in (0, 1], optional
        For layers without an entry in ``ranks``: ``r_i = max(1, ⌈fraction·n_i⌉)``, then made
        feasible (each rank lowered to the product of the others, to the fixed point).
        Without either, factorized layers have full (feasible) rank.
    from_dense : Sequential, optional
        A dense LeNet5 (as built by ``lenet5()``) to take every parameter from.
    sequential : bool
        Decompose ``from_dense``'s kernels by ST-HOSVD instead of HOSVD (docs/theory.md §1).
    dtype : float64 or float32
        The dtype of every parameter (float64 initial draws, then cast).
    seed : int
        Seed of the initialization (unused with ``from_dense``).

    Returns
    -------
    Sequential with layer names ``conv1, relu1, pool1, conv2, relu2, pool2, flatten, fc1,
    relu3, fc2``.
    """
    dtype = np.dtype(dtype)
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype must be float64 or float32, got {dtype}")
    factorized = {"conv1": bool(tucker_conv), "conv2": bool(tucker_conv), "fc1": bool(low_rank_dense)}
    if ranks is not None:
        if not isinstance(ranks, dict):
            raise TypeError(f"ranks must be a dict {{layer name: ranks}}, got {type(ranks).__name__}")
        for name in ranks:
            if not factorized.get(name, False):
                raise ValueError(
                    f"ranks has an entry for {name!r}, which is not a factorized layer here; factorized layers: "
                    f"{[n for n, f in factorized.items() if f]}"
                )
    if init_rank_fraction is not None:
        if isinstance(init_rank_fraction, bool) or not isinstance(init_rank_fraction, numbers.Real) \
                or not 0 < init_rank_fraction <= 1:
            raise ValueError(f"init_rank_fraction must be a number in (0, 1], got {init_rank_fraction!r}")
    if from_dense is not None and not isinstance(from_dense, Sequential):
        raise TypeError(f"from_dense must be a dense LeNet5 Sequential, got {type(from_dense).__name__}")

    dense_rng, tucker_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    params = {}
    for name, shape in LENET5_WEIGHT_SHAPES.items():
        if from_dense is None:
            params[name] = pytorch_default_init(dense_rng, shape)
        else:
            params[name] = _dense_params(from_dense, name, shape)

    built = {}
    for name, shape in LENET5_WEIGHT_SHAPES.items():
        weight, bias = params[name]
        bias = bias.astype(dtype)
        conv = len(shape) == 4
        if factorized.get(name, False):
            r = _layer_ranks(name, shape, ranks, init_rank_fraction)
            if from_dense is None:
                T = random_tucker(tucker_rng, shape, r if r is not None else feasible_ranks(shape),
                                  float(np.linalg.norm(weight)))
            else:
                T = hosvd(weight, ranks=r, sequential=sequential)[0]
            built[name] = (TuckerConv2d if conv else LowRankLinear)(T.astype(dtype), bias)
        else:
            built[name] = (Conv2d if conv else Linear)(weight.astype(dtype), bias)

    names = ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten", "fc1", "relu3", "fc2"]
    layers = [built["conv1"], ReLU(), MaxPool2d(2), built["conv2"], ReLU(), MaxPool2d(2), Flatten(),
              built["fc1"], ReLU(), built["fc2"]]
    return Sequential(layers, names)


def _dense_params(model: Sequential, name: str, shape):
    """``(weight, bias)`` of the dense layer ``name`` of ``model``, as float64 copies."""
    try:
        layer = model[name]
    except KeyError:
        raise ValueError(f"from_dense must be a LeNet5 Sequential with a layer named {name!r}") from None
    if not isinstance(layer, (Conv2d, Linear)) or layer.weight.shape != shape or layer.bias is None:
        raise ValueError(
            f"from_dense[{name!r}] must be a dense layer with a bias and weight shape {shape}, got "
            f"{type(layer).__name__}"
        )
    return layer.weight.astype(np.float64), layer.bias.astype(np.float64)
