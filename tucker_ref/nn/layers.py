"""Layer objects with manual forward and backward, and a ``Sequential`` container.

Every module has

* ``forward(x)`` — computes the output and caches what ``backward`` needs (the last batch only);
* ``backward(dy, need_dx=True)`` — returns ``∂L/∂x`` (``None`` when ``need_dx`` is false) and
  *overwrites* ``grads`` with the gradients of the last batch (no accumulation);
* ``parameters()`` — ``{name: array}``, the live arrays (an in-place update changes the layer);
* ``grads`` — ``{name: array}`` with the same names, filled by ``backward`` (a read-only
  mapping; a factorized layer computes its core and factor entries on first access, see
  :class:`GradientDict`).

There is no optimizer here: the trainer and the integrators own the updates. A factorized
layer (:class:`TuckerConv2d`, :class:`LowRankLinear`) holds a :class:`TuckerTensor` ``weight``
that may be replaced by one of different ranks (the integrator changes ranks every step), and
after ``backward`` it exposes :meth:`FactorizedModule.gradient_oracle` (docs/algorithms.md §0).

dtype: a module's parameters carry the dtype (float64 or float32, one per module). ``forward``
casts its input to that dtype and casts nothing else; modules without parameters keep the
input dtype.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..checks import as_float_array
from ..tucker import TuckerTensor
from .functional import (
    conv2d_backward_from_cache,
    conv2d_forward,
    flatten,
    flatten_backward,
    linear,
    linear_backward,
    max_pool2d,
    max_pool2d_backward,
    relu,
    relu_backward,
)
from .tucker_functional import (
    LowRankLinearGradient,
    TuckerConvGradient,
    check_tucker_weight,
    low_rank_linear_backward_from_cache,
    low_rank_linear_forward,
    tucker_conv2d_forward,
    tucker_conv2d_input_backward,
    tucker_conv2d_parameter_backward,
)

__all__ = [
    "Conv2d",
    "FactorizedModule",
    "GradientDict",
    "Flatten",
    "Linear",
    "LowRankLinear",
    "MaxPool2d",
    "Module",
    "ReLU",
    "Sequential",
    "TuckerConv2d",
]


class GradientDict(Mapping):
    """Read-only ``{name: gradient}`` whose ``lazy_names`` entries are computed on first access.

    A factorized layer's ``backward`` stores the bias gradient at once and defers the
    Euclidean core and factor gradients (chain rule through ``W = C ×_i U_i``) to the first
    read of any of them: the integrators never read them (they query the gradient oracle), and
    for LeNet5's first Tucker conv they cost more than its forward pass. Iterating over the
    names computes nothing; reading a value, ``values()`` or ``items()`` does.
    """

    def __init__(self, eager: dict, lazy_names=(), compute=None):
        self._eager = dict(eager)
        self._lazy_names = tuple(lazy_names)
        self._compute = compute
        self._lazy = None

    def __getitem__(self, name):
        if name in self._eager:
            return self._eager[name]
        if name not in self._lazy_names:
            raise KeyError(name)
        if self._lazy is None:
            self._lazy = self._compute()
        return self._lazy[name]

    def __iter__(self):
        yield from self._lazy_names
        yield from self._eager

    def __len__(self) -> int:
        return len(self._lazy_names) + len(self._eager)

    @property
    def computed(self) -> bool:
        """Whether the lazy entries have been computed (always true without lazy entries)."""
        return self._lazy is not None or not self._lazy_names

    def __repr__(self) -> str:
        return f"GradientDict({list(self)}, computed={self.computed})"


class Module:
    """Base class: a layer with ``forward``, ``backward``, ``parameters()`` and ``grads``."""

    def __init__(self):
        self.grads: dict[str, np.ndarray] = {}
        self._cache = None

    def parameters(self) -> dict[str, np.ndarray]:
        """``{name: array}`` of the live parameter arrays (empty for layers without parameters)."""
        return {}

    def forward(self, x):
        """Output for the batch ``x``; caches what :meth:`backward` needs (last batch only)."""
        raise NotImplementedError

    def backward(self, dy, need_dx: bool = True):
        """``∂L/∂x`` from ``dy = ∂L/∂y`` of the last forward (``None`` if not ``need_dx``); sets ``grads``."""
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    def _cached(self):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return self._cache

    def _check_dy(self, dy, shape) -> np.ndarray:
        dy = as_float_array(dy, "dy")
        if dy.shape != tuple(shape):
            raise ValueError(f"dy must have the shape {tuple(shape)} of the last forward output, got {dy.shape}")
        return dy


class _ParametrizedModule(Module):
    """A module with a bias and a dtype; casts its input to that dtype."""

    def __init__(self, bias, out: int, dtype):
        super().__init__()
        self.dtype = np.dtype(dtype)
        if bias is not None:
            bias = as_float_array(bias, "bias", ndim=1)
            if bias.shape != (out,):
                raise ValueError(f"bias must have shape ({out},) (one entry per output), got {bias.shape}")
            if bias.dtype != self.dtype:
                raise TypeError(f"bias must have the dtype of the weight ({self.dtype}), got {bias.dtype}")
        self.bias = bias

    def _input(self, x, ndim: int, layout: str) -> np.ndarray:
        x = as_float_array(x, "x", ndim=ndim)
        if x.shape[1] != self.in_features:
            raise ValueError(f"x must have shape {layout} with {self.in_features} channels/features, got {x.shape}")
        return x.astype(self.dtype, copy=False)

    def _bias_entry(self) -> dict:
        return {} if self.bias is None else {"bias": self.bias}

    def _set_bias_grad(self, db) -> dict:
        return {} if self.bias is None else {"bias": db}


class _DenseModule(_ParametrizedModule):
    """Dense ``weight`` array (PyTorch layout, output first) plus optional bias."""

    _ndim = 0  # weight ndim, set by each subclass

    def __init__(self, weight, bias=None):
        weight = as_float_array(weight, "weight", ndim=self._ndim)
        super().__init__(bias, weight.shape[0], weight.dtype)
        self.weight = weight

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    def parameters(self):
        return {"weight": self.weight, **self._bias_entry()}


class Conv2d(_DenseModule):
    """2-D convolution layer ``y = conv2d(x, weight) + bias`` (PyTorch layouts and semantics).

    Parameters
    ----------
    weight : ndarray, shape ``(out, in, kh, kw)``; its dtype is the module's dtype
    bias : ndarray, shape ``(out,)``, optional (same dtype)
    stride, padding, dilation : int or pair of int

    ``forward`` keeps the :class:`~tucker_ref.nn.functional.ConvCache` (the im2col matrix of
    ``x``, ``kh kw / (s_h s_w)`` times the input, held until the next forward), so ``backward``
    does not rebuild it.
    """

    _ndim = 4

    def __init__(self, weight, bias=None, *, stride=1, padding=0, dilation=1):
        super().__init__(weight, bias)
        self.stride, self.padding, self.dilation = stride, padding, dilation

    def _conv_args(self) -> dict:
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation}

    def forward(self, x):
        x = self._input(x, 4, "(N, C_in, H, W)")
        y, cache = conv2d_forward(x, self.weight, self.bias, **self._conv_args())
        self._cache = (cache, y.shape)
        return y

    def backward(self, dy, need_dx=True):
        cache, shape = self._cached()
        dy = self._check_dy(dy, shape)
        dx, dw, db = conv2d_backward_from_cache(dy, cache, need_dx=need_dx)
        self.grads = {"weight": dw, **self._set_bias_grad(db)}
        return dx


class Linear(_DenseModule):
    """Dense layer ``y = x weight^T + bias``; ``weight`` of shape ``(out, in)``, ``x`` of shape ``(N, in)``."""

    _ndim = 2

    def forward(self, x):
        x = self._input(x, 2, "(N, in_features)")
        y = linear(x, self.weight, self.bias)
        self._cache = (x, y.shape)
        return y

    def backward(self, dy, need_dx=True):
        x, shape = self._cached()
        dy = self._check_dy(dy, shape)
        dx, dw, db = linear_backward(dy, x, self.weight, need_dx=need_dx)
        self.grads = {"weight": dw, **self._set_bias_grad(db)}
        return dx


class FactorizedModule(_ParametrizedModule):
    """A layer whose weight is a :class:`TuckerTensor` (``weight``) plus an optional dense bias.

    ``parameters()`` and ``grads`` name the pieces ``core``, ``factors.0`` … ``factors.{d-1}``
    and ``bias``; the grads are the Euclidean gradients (chain rule through
    ``W = C ×_i U_i``), computed when first read (:class:`GradientDict`). Assigning ``weight``
    accepts any ranks but the same shape and dtype, and drops the cached batch and grads (they
    belong to the old point).
    """

    _order = 0  # TuckerTensor order, set by each subclass

    def __init__(self, weight, bias=None):
        weight = check_tucker_weight(weight, self._order, "weight")
        super().__init__(bias, weight.shape[0], weight.dtype)
        self._weight = weight
        self._dy = None

    @property
    def weight(self) -> TuckerTensor:
        return self._weight

    @weight.setter
    def weight(self, T):
        T = check_tucker_weight(T, self._order, "weight")
        if T.shape != self._weight.shape:
            raise ValueError(f"weight must keep the shape {self._weight.shape}, got {T.shape}")
        if T.dtype != self.dtype:
            raise TypeError(f"weight must have the module dtype {self.dtype}, got {T.dtype}")
        self._weight = T
        self._cache = None
        self._dy = None
        self.grads = {}

    @property
    def in_features(self) -> int:
        return self._weight.shape[1]

    def parameters(self):
        T = self._weight
        return {"core": T.core, **{f"factors.{i}": U for i, U in enumerate(T.factors)}, **self._bias_entry()}

    def _keep_forward(self, y, cache):
        """Keep the kernel cache of a forward; the ``dy`` of an earlier backward no longer belongs to it."""
        self._cache = (cache, y.shape)
        self._dy = None
        return y

    def _store_grads(self, dy, db, euclidean):
        """Keep ``dy`` for the oracle; ``euclidean()`` returns ``(dcore, dfactors)`` when first needed."""
        self._dy = dy
        names = ["core", *(f"factors.{i}" for i in range(self._order))]

        def compute():
            dcore, dfactors = euclidean()
            return dict(zip(names, [dcore, *dfactors]))

        self.grads = GradientDict(self._set_bias_grad(db), names, compute)

    def gradient_oracle(self):
        """The gradient oracle (docs/algorithms.md §0) of the last forward/backward pass at the current ``weight``."""
        if self._dy is None:
            raise RuntimeError(f"{type(self).__name__}.gradient_oracle needs a forward and a backward pass first")
        return self._make_oracle(self._cache[0], self._dy)

    def _make_oracle(self, cache, dy):
        """The oracle from the kernel cache of the last forward and ``dy``."""
        raise NotImplementedError


class TuckerConv2d(FactorizedModule):
    """Conv layer with a Tucker kernel (see :func:`tucker_ref.nn.tucker_functional.tucker_conv2d`).

    Parameters
    ----------
    weight : TuckerTensor of shape ``(out, in, kh, kw)``; its dtype is the module's dtype
    bias : ndarray, shape ``(out,)``, optional
    stride, padding, dilation : int or pair of int

    ``forward`` keeps the :class:`~tucker_ref.nn.tucker_functional.TuckerConvCache` (the
    intermediates ``U_in^T x``, its im2col matrix, ``C ×_3 U_h ×_4 U_w`` and the middle conv
    output), so ``backward`` does not recompute the forward. :meth:`gradient_oracle` returns a
    :class:`~tucker_ref.nn.tucker_functional.TuckerConvGradient` given that cache, so its
    products with ``U_in`` skip the im2col too.
    """

    _order = 4

    def __init__(self, weight, bias=None, *, stride=1, padding=0, dilation=1):
        super().__init__(weight, bias)
        self.stride, self.padding, self.dilation = stride, padding, dilation

    def forward(self, x):
        x = self._input(x, 4, "(N, C_in, H, W)")
        return self._keep_forward(*tucker_conv2d_forward(x, self._weight, self.bias, stride=self.stride,
                                                         padding=self.padding, dilation=self.dilation))

    def backward(self, dy, need_dx=True):
        cache, shape = self._cached()
        dy = self._check_dy(dy, shape)
        through_input = tucker_conv2d_input_backward(dy, cache) if need_dx else None
        self._store_grads(dy, dy.sum(axis=(0, 2, 3)),
                          lambda: tucker_conv2d_parameter_backward(dy, cache, through_input)[:2])
        return None if through_input is None else through_input.dx

    def _make_oracle(self, cache, dy):
        # The forward's im2col of U_in^T x serves the oracle's products with U_in (modes 1, 3, 4).
        return TuckerConvGradient(cache.x, dy, self._weight, stride=self.stride, padding=self.padding,
                                  dilation=self.dilation, forward_cache=cache)


class LowRankLinear(FactorizedModule):
    """Dense layer with weight ``U S V^T`` (a TuckerTensor of order 2, shape ``(out, in)``).

    ``forward`` keeps a :class:`~tucker_ref.nn.tucker_functional.LowRankLinearCache` (input and
    weight); ``backward`` recomputes ``x V`` from it (``2·N·in·r_in`` flops) rather than keeping it.
    :meth:`gradient_oracle` returns a :class:`~tucker_ref.nn.tucker_functional.LowRankLinearGradient`.
    """

    _order = 2

    def forward(self, x):
        x = self._input(x, 2, "(N, in_features)")
        return self._keep_forward(*low_rank_linear_forward(x, self._weight, self.bias))

    def backward(self, dy, need_dx=True):
        cache, shape = self._cached()
        dy = self._check_dy(dy, shape)
        # Cheap next to the integrator's step (three small GEMMs), so computed with dx.
        dx, dcore, dfactors, db = low_rank_linear_backward_from_cache(dy, cache, need_dx=need_dx)
        self._store_grads(dy, db, lambda: (dcore, dfactors))
        return dx

    def _make_oracle(self, cache, dy):
        return LowRankLinearGradient(cache.x, dy, self._weight)


class ReLU(Module):
    """``max(x, 0)``; derivative 0 at 0 (PyTorch's rule)."""

    def forward(self, x):
        x = as_float_array(x, "x")
        self._cache = x
        return relu(x)

    def backward(self, dy, need_dx=True):
        x = self._cached()
        return relu_backward(self._check_dy(dy, x.shape), x)


class MaxPool2d(Module):
    """Max pooling over ``kernel_size`` windows (stride defaults to ``kernel_size``); first maximum wins ties."""

    def __init__(self, kernel_size=2, stride=None):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x):
        y, cache = max_pool2d(x, self.kernel_size, self.stride)
        self._cache = (cache, y.shape)
        return y

    def backward(self, dy, need_dx=True):
        cache, shape = self._cached()
        return max_pool2d_backward(self._check_dy(dy, shape), cache)


class Flatten(Module):
    """``(N, …) → (N, prod …)``; backward reshapes back."""

    def forward(self, x):
        x = as_float_array(x, "x")
        y = flatten(x)
        self._cache = (x.shape, y.shape)
        return y

    def backward(self, dy, need_dx=True):
        in_shape, shape = self._cached()
        return flatten_backward(self._check_dy(dy, shape), in_shape)


class Sequential(Module):
    """Layers applied in order, with names.

    Parameters
    ----------
    layers : sequence of Module
    names : sequence of str, optional
        One unique name per layer (default ``"0"``, ``"1"``, …). ``parameters()`` and ``grads``
        use ``"<layer name>.<parameter name>"``, e.g. ``"conv1.core"``.
    """

    def __init__(self, layers, names=None):
        # No Module.__init__: a Sequential has no cache, and its grads live in its layers.
        layers = list(layers)
        for k, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"layers[{k}] must be a Module, got {type(layer).__name__}")
        names = [str(k) for k in range(len(layers))] if names is None else [str(n) for n in names]
        if len(names) != len(layers):
            raise ValueError(f"names must have one entry per layer ({len(layers)}), got {len(names)}")
        if len(set(names)) != len(names) or any("." in n for n in names):
            raise ValueError(f"names must be unique and contain no '.', got {names}")
        self.layers = layers
        self.names = names

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, key) -> Module:
        """A layer by position or by name."""
        if isinstance(key, str):
            if key not in self.names:
                raise KeyError(f"no layer named {key!r}; layers are {self.names}")
            return self.layers[self.names.index(key)]
        return self.layers[key]

    def named_layers(self) -> list[tuple[str, Module]]:
        """``[(name, layer), …]`` in network order."""
        return list(zip(self.names, self.layers))

    def tucker_layers(self) -> dict[str, FactorizedModule]:
        """The factorized layers (Tucker conv and low-rank dense), by name, in network order."""
        return {n: m for n, m in self.named_layers() if isinstance(m, FactorizedModule)}

    def parameters(self):
        return {f"{n}.{k}": v for n, m in self.named_layers() for k, v in m.parameters().items()}

    @property
    def grads(self):
        """``{"layer.name": gradient}`` over all layers, a read-only view: reading a factorized
        layer's core or factor entry computes it (:class:`GradientDict`), listing names does not."""
        return _NetworkGradients({f"{n}.{k}": (m.grads, k) for n, m in self.named_layers() for k in m.grads})

    @property
    def dtype(self):
        """The common dtype of the parameters (``None`` for a network without parameters)."""
        params = list(self.parameters().values())
        return np.result_type(*params) if params else None

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy, need_dx=True):
        """Backpropagate ``dy`` through all layers; the first layer skips ``dx`` unless ``need_dx``."""
        for k in range(len(self.layers) - 1, -1, -1):
            dy = self.layers[k].backward(dy, need_dx=need_dx or k > 0)
        return dy


class _NetworkGradients(Mapping):
    """``Sequential.grads``: ``{"layer.name": (grads of the layer, name)}``.

    Holds the layers' ``grads`` mappings of the moment it was made, so it stays the gradient
    of that backward pass after an update replaces a layer's weight (which clears its grads).
    """

    def __init__(self, index: dict):
        self._index = index

    def __getitem__(self, key):
        grads, name = self._index[key]
        return grads[name]

    def __iter__(self):
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)
