"""Factored counterparts of :mod:`tucker_ref.nn.functional`: Tucker conv2d, low-rank dense, their gradient oracles.

Kernels of two layers whose weight is a :class:`~tucker_ref.tucker.TuckerTensor`:

* **Tucker conv** (d = 4): the kernel ``W = C ×_1 U_out ×_2 U_in ×_3 U_h ×_4 U_w`` of shape
  ``(out, in, kh, kw)`` (PyTorch layout). The forward never forms ``W``: a 1×1 conv with
  ``U_in^T`` (a channel matmul), a ``kh×kw`` conv with ``K = C ×_3 U_h ×_4 U_w`` (shape
  ``(r_out, r_in, kh, kw)``; stride, padding and dilation act here), a 1×1 conv with
  ``U_out``, bias last. This is exact: a bias-free 1×1 conv acts pointwise in space, so it
  commutes with zero padding, striding and dilation.
* **Low-rank dense** (d = 2, matrix DLRT): ``W = U S V^T = S ×_1 U ×_2 V`` of shape
  ``(out, in)``, ``y = ((x V) S^T) U^T + b``.

Backward passes return the Euclidean gradients of the loss with respect to core and
factors (the chain rule through ``W = C ×_i U_i``)::

    dC  = G ×_1 U_1^T ⋯ ×_d U_d^T
    dU_i = Mat_i(G ×_{j≠i} U_j^T) Mat_i(C)^T

where ``G = ∂L/∂W`` is the dense kernel gradient, but they are computed without forming ``G``.

Caches
------
As :func:`~tucker_ref.nn.functional.max_pool2d` does with its ``MaxPoolCache``, the
``*_forward`` kernels return ``(y, cache)`` and the cache-taking backward kernels start from
that cache instead of recomputing the forward: :func:`tucker_conv2d_forward` returns a
:class:`TuckerConvCache`, which :func:`tucker_conv2d_input_backward` (``dx``) and
:func:`tucker_conv2d_parameter_backward` (core, factor and bias gradients) take, the latter
reusing what the former computed. The :class:`TuckerConvCache` also keeps the middle conv's
:class:`~tucker_ref.nn.functional.ConvCache`, the im2col matrix of ``z = U_in^T x``: the
parameter backward takes its kernel gradient from it, and :class:`TuckerConvGradient` (given
the cache as ``forward_cache``) its products with ``U_in``. :func:`low_rank_linear_forward` returns a
:class:`LowRankLinearCache` for :func:`low_rank_linear_backward_from_cache`. The plain
:func:`tucker_conv2d`, :func:`tucker_conv2d_backward`, :func:`low_rank_linear` and
:func:`low_rank_linear_backward` keep no state between the calls.

Gradient oracles (docs/algorithms.md §0, the gradient-oracle protocol)
----------------------------------------------------------------------
:class:`TuckerConvGradient` and :class:`LowRankLinearGradient` hold the layer input ``x`` and
output gradient ``dy`` of *one* backward pass. Every parametrization of the same kernel (the
factors, the K-step ``K_i = U_i S_i``, the augmented basis ``Û_i``) sees the same ``x`` and
``dy``, so the integrator gets all the gradients of a step from one object:

* ``core_gradient(bases)`` = ``G ×_1 B_1^T ⋯ ×_d B_d^T`` for any bases ``B_i`` (``n_i × k_i``;
  ``None`` = identity),
* ``mode_partial_gradient(mode, factors)`` = ``N_i = Mat_i(G ×_{j≠i} U_j^T)``,
* ``dense_gradient()`` = ``G`` (theory checks and ε only).

The module imports only the algebra and the dense kernels of :mod:`tucker_ref.nn.functional`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..checks import as_float_array, check_mode
from ..gradient_oracle import GradientOracle
from ..tucker import TuckerTensor, mode_product, multi_mode_product, unfold
from .functional import (
    ConvCache,
    conv2d_backward_from_cache,
    conv2d_forward,
    conv2d_input_backward,
    conv2d_weight_backward,
    conv2d_weight_backward_from_cache,
    conv_geometry,
)

__all__ = [
    "GradientOracle",
    "LowRankLinearCache",
    "LowRankLinearGradient",
    "TuckerConvCache",
    "TuckerConvGradient",
    "TuckerConvInputBackward",
    "check_tucker_weight",
    "low_rank_linear",
    "low_rank_linear_backward",
    "low_rank_linear_backward_from_cache",
    "low_rank_linear_forward",
    "tucker_conv2d",
    "tucker_conv2d_backward",
    "tucker_conv2d_forward",
    "tucker_conv2d_input_backward",
    "tucker_conv2d_parameter_backward",
]


# ---------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------
def check_tucker_weight(T, ndim: int, name: str = "T") -> TuckerTensor:
    """``T`` if it is a ``ndim``-way :class:`~tucker_ref.tucker.TuckerTensor`, else an error naming ``name``.

    ``ndim`` 4 is a conv kernel ``(out, in, kh, kw)``, 2 a dense weight ``(out, in)``; not a
    TuckerTensor raises ``TypeError``, another order ``ValueError``.
    """
    layout = "(out, in, kh, kw)" if ndim == 4 else "(out, in)"
    if not isinstance(T, TuckerTensor):
        raise TypeError(f"{name} must be a TuckerTensor of shape {layout}, got {type(T).__name__}")
    if T.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-way TuckerTensor of shape {layout}, got shape {T.shape}")
    return T


def _check_input(x, channels: int, ndim: int, name: str, layout: str) -> np.ndarray:
    x = as_float_array(x, name, ndim=ndim)
    if x.shape[1] != channels:
        raise ValueError(f"{name} must have shape {layout} with {channels} channels/features, got shape {x.shape}")
    return x


def _check_bias(b, out: int):
    if b is None:
        return None
    b = as_float_array(b, "b", ndim=1)
    if b.shape != (out,):
        raise ValueError(f"b must have shape ({out},) (one entry per output channel), got {b.shape}")
    return b


# ---------------------------------------------------------------------------------------
# channel (1×1) operations
# ---------------------------------------------------------------------------------------
def _channel_matmul(M: np.ndarray, x: np.ndarray) -> np.ndarray:
    """1×1 conv without bias: ``y[n, j, ...] = Σ_c M[j, c] x[n, c, ...]`` for ``M`` of shape ``(J, C)``.

    One GEMM on the batch-last ``(C, H·W·N)`` matrix (free for the batch-last views that
    :mod:`~tucker_ref.nn.functional` returns, one copy otherwise); the result is again a
    batch-last view in the PyTorch layout, so the next conv needs no transposition.
    """
    xb = x.transpose(1, 2, 3, 0)
    y = M @ xb.reshape(x.shape[1], -1)
    return y.reshape((M.shape[0],) + xb.shape[1:]).transpose(3, 0, 1, 2)


def _channel_gram(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``Σ_{n, pixels} a[n, i, ·] b[n, j, ·]`` of shape ``(A, B)``: the weight gradient of a 1×1 conv (one GEMM)."""
    a2 = a.transpose(1, 2, 3, 0).reshape(a.shape[1], -1)
    b2 = b.transpose(1, 2, 3, 0).reshape(b.shape[1], -1)
    return a2 @ b2.T


def _spatial_kernel(core: np.ndarray, U_h: np.ndarray, U_w: np.ndarray) -> np.ndarray:
    """``K = C ×_3 U_h ×_4 U_w`` of shape ``(r_out, r_in, kh, kw)``: the core merged with the spatial factors."""
    return multi_mode_product(core, [U_h, U_w], modes=[2, 3])


# ---------------------------------------------------------------------------------------
# Tucker conv2d
# ---------------------------------------------------------------------------------------
class TuckerConvCache(NamedTuple):
    """What the backward of :func:`tucker_conv2d_forward` needs: its input, kernel, geometry and intermediates.

    ``z = U_in^T x`` (1×1), ``K = C ×_3 U_h ×_4 U_w``, ``v = conv2d(z, K)``; the output was
    ``y = U_out v + b``. ``conv`` is the :class:`~tucker_ref.nn.functional.ConvCache` of the
    middle conv (the im2col matrix of ``z``, ``r_in kh kw / (s_h s_w)`` times the size of
    ``z``), reused by :func:`tucker_conv2d_parameter_backward` and by
    :class:`TuckerConvGradient`. Like every forward cache it describes the arrays of ``T`` as
    they were at the forward: editing them in place makes it stale.
    """

    x: np.ndarray
    T: TuckerTensor
    z: np.ndarray
    K: np.ndarray
    v: np.ndarray
    stride: int | tuple[int, int]
    padding: int | tuple[int, int]
    dilation: int | tuple[int, int]
    conv: ConvCache


class TuckerConvInputBackward(NamedTuple):
    """What :func:`tucker_conv2d_input_backward` returns: ``dx`` and two intermediates to reuse.

    :func:`tucker_conv2d_parameter_backward` takes them. ``dv = U_out^T dy``, ``dz = conv2d_input_backward(dv, K)`` (the gradient at ``z = U_in^T x``),
    ``dx = U_in dz``.
    """

    dx: np.ndarray
    dv: np.ndarray
    dz: np.ndarray


def _cache(x, T, stride, padding, dilation) -> TuckerConvCache:
    """The forward up to ``v = conv2d(z, K)``: all the backward needs (the output ``U_out v`` is not)."""
    _, U_in, U_h, U_w = T.factors
    z = _channel_matmul(U_in.T, x)
    K = _spatial_kernel(T.core, U_h, U_w)
    v, conv = conv2d_forward(z, K, stride=stride, padding=padding, dilation=dilation)
    return TuckerConvCache(x, T, z, K, v, stride, padding, dilation, conv)


def _forward(x, T, b, stride, padding, dilation) -> tuple[np.ndarray, TuckerConvCache]:
    cache = _cache(x, T, stride, padding, dilation)
    y = _channel_matmul(T.factors[0], cache.v)
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y, cache


def _backward(dy, cache: TuckerConvCache, need_dx: bool, through_input: TuckerConvInputBackward | None = None):
    """``(dx, dcore, dfactors, db)`` from the forward cache; see :func:`tucker_conv2d_backward`."""
    x, T, v = cache.x, cache.T, cache.v
    U_out, U_in, U_h, U_w = T.factors
    db = dy.sum(axis=(0, 2, 3))
    dU_out = _channel_gram(dy, v)
    if through_input is None:
        dv = _channel_matmul(U_out.T, dy)
        # dz is needed even when dx is not: dU_in is the 1×1 weight gradient Σ x dz^T.
        dz, dK, _ = conv2d_backward_from_cache(dv, cache.conv, need_dx=True)
    else:
        _, dv, dz = through_input
        dK = conv2d_weight_backward_from_cache(dv, cache.conv)
    dU_in = _channel_gram(x, dz)
    dx = _channel_matmul(U_in, dz) if need_dx else None
    dcore = multi_mode_product(dK, [U_h, U_w], modes=[2, 3], transpose=True)
    # K = (C ×_4 U_w) ×_3 U_h, so dU_h = Mat_3(dK) Mat_3(C ×_4 U_w)^T, and likewise for U_w.
    dU_h = unfold(dK, 2) @ unfold(mode_product(T.core, U_w, 3), 2).T
    dU_w = unfold(dK, 3) @ unfold(mode_product(T.core, U_h, 2), 3).T
    return dx, dcore, [dU_out, dU_in, dU_h, dU_w], db


def _check_conv_call(x, T, b=None):
    T = check_tucker_weight(T, 4)
    x = _check_input(x, T.shape[1], 4, "x", "(N, C_in, H, W)")
    return x, T, _check_bias(b, T.shape[0])


def _check_conv_dy(dy, x, T, stride, padding, dilation) -> np.ndarray:
    """``dy`` as an array of the conv output shape ``(N, out, P, Q)`` (also validates the geometry)."""
    dy = _check_input(dy, T.shape[0], 4, "dy", "(N, C_out, P, Q)")
    geo = conv_geometry(x.shape, T.shape[2:], stride, padding, dilation)
    expected = (x.shape[0], T.shape[0]) + geo.out
    if dy.shape != expected:
        raise ValueError(f"dy must have the output shape (N, C_out, P, Q) = {expected} of the convolution, "
                         f"got {dy.shape}")
    return dy


def _check_cached_dy(dy, cache) -> np.ndarray:
    if not isinstance(cache, TuckerConvCache):
        raise TypeError(f"cache must be the TuckerConvCache returned by tucker_conv2d_forward, "
                        f"got {type(cache).__name__}")
    return _check_conv_dy(dy, cache.x, cache.T, cache.stride, cache.padding, cache.dilation)


def tucker_conv2d(x, T, b=None, *, stride=1, padding=0, dilation=1) -> np.ndarray:
    """2-D convolution with a Tucker kernel, never forming the kernel.

    Computes ``y = conv2d(x, W) + b`` for ``W = C ×_1 U_out ×_2 U_in ×_3 U_h ×_4 U_w`` as::

        y = U_out · conv2d(U_in^T · x, C ×_3 U_h ×_4 U_w) + b

    where ``M · x`` is a 1×1 convolution (a channel matmul). Stride, padding and dilation act
    on the middle ``kh×kw`` conv only; exact because a bias-free 1×1 conv commutes with them.

    Parameters
    ----------
    x : ndarray, shape ``(N, in, H, W)``
    T : TuckerTensor of shape ``(out, in, kh, kw)`` and ranks ``(r_out, r_in, r_h, r_w)``
    b : ndarray, shape ``(out,)``, optional
    stride, padding, dilation : int or pair of int
        As :func:`tucker_ref.nn.functional.conv2d` (PyTorch semantics, zero padding).

    Returns
    -------
    ndarray, shape ``(N, out, P, Q)`` with ``P = floor((H + 2p − d(kh−1) − 1)/s) + 1`` (same for Q).

    Notes
    -----
    Cost ``2·N·(in·r_in·H·W + r_out·r_in·kh·kw·P·Q + out·r_out·P·Q)`` flops against
    ``2·N·out·in·kh·kw·P·Q`` for the dense conv.

    Examples
    --------
    >>> from tucker_ref.nn import conv2d, tucker_conv2d
    >>> from tucker_ref.tucker import random_tucker
    >>> rng = np.random.default_rng(0)
    >>> T = random_tucker(rng, (8, 3, 5, 5), (4, 2, 3, 3))  # kernel (out, in, kh, kw)
    >>> x = rng.standard_normal((2, 3, 12, 12))
    >>> y = tucker_conv2d(x, T, stride=2, padding=1)
    >>> y.shape
    (2, 8, 5, 5)
    >>> bool(np.allclose(y, conv2d(x, T.full(), stride=2, padding=1)))  # the dense conv with the full kernel
    True
    """
    return tucker_conv2d_forward(x, T, b, stride=stride, padding=padding, dilation=dilation)[0]


def tucker_conv2d_forward(x, T, b=None, *, stride=1, padding=0, dilation=1) -> tuple[np.ndarray, TuckerConvCache]:
    """:func:`tucker_conv2d` and the :class:`TuckerConvCache` its cache-taking backward kernels need.

    Returns
    -------
    y : ndarray, shape ``(N, out, P, Q)``, as :func:`tucker_conv2d`
    cache : TuckerConvCache for :func:`tucker_conv2d_input_backward` and
        :func:`tucker_conv2d_parameter_backward`
    """
    x, T, b = _check_conv_call(x, T, b)
    return _forward(x, T, b, stride, padding, dilation)


def tucker_conv2d_backward(dy, x, T, *, stride=1, padding=0, dilation=1, need_dx=True):
    """Backward of :func:`tucker_conv2d` in factored form.

    With ``z = U_in^T x``, ``K = C ×_3 U_h ×_4 U_w``, ``v = conv2d(z, K)`` and
    ``dv = U_out^T dy``, ``(dz, dK) = conv2d_backward(dv, z, K)``::

        dU_out = Σ dy v^T            dU_in = Σ x dz^T            dx = U_in dz
        dC = dK ×_3 U_h^T ×_4 U_w^T  dU_h = Mat_3(dK) Mat_3(C ×_4 U_w)^T   (same for U_w)
        db = Σ dy

    (sums over batch and pixels). These equal the chain rule through ``W = C ×_i U_i``
    applied to the dense kernel gradient ``G``: ``dC = G ×_i U_i^T``,
    ``dU_i = Mat_i(G ×_{j≠i} U_j^T) Mat_i(C)^T``, but ``G`` is never formed.

    The forward intermediates ``z``, ``v`` and the im2col matrix of ``z`` are recomputed here
    (the forward up to the middle conv, without its output matmul);
    :func:`tucker_conv2d_forward` returns them in a :class:`TuckerConvCache` for
    :func:`tucker_conv2d_input_backward` and :func:`tucker_conv2d_parameter_backward` instead.

    Parameters
    ----------
    dy : ndarray, shape ``(N, out, P, Q)`` — gradient of the loss with respect to the output
    x : ndarray, shape ``(N, in, H, W)`` — the forward input
    T : TuckerTensor of shape ``(out, in, kh, kw)``
    need_dx : bool
        ``False`` skips the input gradient (the first layer of a network needs none).

    Returns
    -------
    (dx, dcore, dfactors, db)
        ``dx`` of the shape of ``x`` (``None`` when ``need_dx`` is false), ``dcore`` of shape
        ``T.ranks``, ``dfactors`` a list of 4 arrays shaped like ``T.factors``, ``db`` of
        shape ``(out,)`` (the gradient a bias would receive, whether or not one was used).

    Examples
    --------
    Against the dense backward with the full kernel, whose kernel gradient is ``G``:

    >>> from tucker_ref.nn import conv2d_backward, tucker_conv2d_backward
    >>> from tucker_ref.tucker import random_tucker
    >>> rng = np.random.default_rng(0)
    >>> T = random_tucker(rng, (8, 3, 5, 5), (4, 2, 3, 3))
    >>> x, dy = rng.standard_normal((2, 3, 12, 12)), rng.standard_normal((2, 8, 8, 8))
    >>> dx, dcore, dfactors, db = tucker_conv2d_backward(dy, x, T)
    >>> dx_dense, G, db_dense = conv2d_backward(dy, x, T.full())
    >>> bool(np.allclose(dx, dx_dense)), bool(np.allclose(dcore, T.project(G)))  # dC = G ×_i U_i^T
    (True, True)
    >>> [dU.shape == U.shape for dU, U in zip(dfactors, T.factors)]
    [True, True, True, True]
    """
    x, T, _ = _check_conv_call(x, T)
    dy = _check_conv_dy(dy, x, T, stride, padding, dilation)
    return _backward(dy, _cache(x, T, stride, padding, dilation), need_dx)


def tucker_conv2d_input_backward(dy, cache: TuckerConvCache) -> TuckerConvInputBackward:
    """Input gradient of :func:`tucker_conv2d_forward` from its cache (see :func:`tucker_conv2d_backward`).

    ``dx = U_in dz`` with ``dz = conv2d_input_backward(dv, K)`` and ``dv = U_out^T dy``.

    Parameters
    ----------
    dy : ndarray, shape ``(N, out, P, Q)``
    cache : TuckerConvCache from :func:`tucker_conv2d_forward`

    Returns
    -------
    TuckerConvInputBackward ``(dx, dv, dz)``; pass it to :func:`tucker_conv2d_parameter_backward`
    with the same ``dy`` and ``cache`` so that ``dv`` and ``dz`` are not computed twice.
    """
    dy = _check_cached_dy(dy, cache)
    dv = _channel_matmul(cache.T.factors[0].T, dy)
    dz = conv2d_input_backward(dv, cache.K, cache.z.shape, stride=cache.stride, padding=cache.padding,
                               dilation=cache.dilation)
    return TuckerConvInputBackward(_channel_matmul(cache.T.factors[1], dz), dv, dz)


def tucker_conv2d_parameter_backward(dy, cache: TuckerConvCache, through_input: TuckerConvInputBackward | None = None):
    """Core, factor and bias gradients of :func:`tucker_conv2d_forward` from its cache.

    The formulas are those of :func:`tucker_conv2d_backward`.

    Parameters
    ----------
    dy : ndarray, shape ``(N, out, P, Q)``
    cache : TuckerConvCache from :func:`tucker_conv2d_forward`
    through_input : TuckerConvInputBackward, optional
        What :func:`tucker_conv2d_input_backward` returned for the same ``dy`` and ``cache``: its
        ``dv`` and ``dz`` are reused. Without it they are computed here.

    Returns
    -------
    (dcore, dfactors, db) as in :func:`tucker_conv2d_backward`.
    """
    dy = _check_cached_dy(dy, cache)
    if through_input is not None and not isinstance(through_input, TuckerConvInputBackward):
        raise TypeError(f"through_input must be the TuckerConvInputBackward returned by "
                        f"tucker_conv2d_input_backward or None, got {type(through_input).__name__}")
    return _backward(dy, cache, False, through_input)[1:]


# ---------------------------------------------------------------------------------------
# low-rank dense
# ---------------------------------------------------------------------------------------
class LowRankLinearCache(NamedTuple):
    """What :func:`low_rank_linear_backward_from_cache` needs: the input and weight of :func:`low_rank_linear_forward`.

    ``x V`` is recomputed by the backward (``2·N·in·r_in`` flops) rather than kept.
    """

    x: np.ndarray
    T: TuckerTensor


def _check_linear_call(x, T, b=None):
    T = check_tucker_weight(T, 2)
    x = _check_input(x, T.shape[1], 2, "x", "(N, in_features)")
    return x, T, _check_bias(b, T.shape[0])


def low_rank_linear(x, T, b=None) -> np.ndarray:
    """Dense layer with weight ``W = U S V^T`` (PyTorch layout ``(out, in)``): ``y = ((x V) S^T) U^T + b``.

    Parameters
    ----------
    x : ndarray, shape ``(N, in)``
    T : TuckerTensor of order 2, shape ``(out, in)``: core ``S`` (``r_out × r_in``), factors
        ``[U (out × r_out), V (in × r_in)]``
    b : ndarray, shape ``(out,)``, optional

    Returns
    -------
    ndarray, shape ``(N, out)``. Cost ``2·N·(in·r_in + r_in·r_out + r_out·out)`` flops.
    """
    return low_rank_linear_forward(x, T, b)[0]


def low_rank_linear_forward(x, T, b=None) -> tuple[np.ndarray, LowRankLinearCache]:
    """:func:`low_rank_linear` and the :class:`LowRankLinearCache` of :func:`low_rank_linear_backward_from_cache`."""
    x, T, b = _check_linear_call(x, T, b)
    U, V = T.factors
    y = ((x @ V) @ T.core.T) @ U.T
    if b is not None:
        y += b
    return y, LowRankLinearCache(x, T)


def low_rank_linear_backward(dy, x, T, need_dx=True):
    """Backward of :func:`low_rank_linear` in factored form.

    With ``a = x V`` and ``c = a S^T`` (so ``y = c U^T + b``)::

        dU = dy^T c    dS = (dy U)^T a    dV = x^T (dy U S)    dx = (dy U S) V^T    db = Σ_n dy

    equal to ``dS = U^T G V``, ``dU = G V S^T``, ``dV = G^T U S`` for ``G = dy^T x``.

    Parameters
    ----------
    dy : ndarray, shape ``(N, out)``
    x : ndarray, shape ``(N, in)``
    T : TuckerTensor of order 2, shape ``(out, in)``
    need_dx : bool

    Returns
    -------
    (dx, dcore, dfactors, db) with ``dfactors = [dU, dV]``; ``dx`` is ``None`` if not ``need_dx``.
    """
    x, T, _ = _check_linear_call(x, T)
    return low_rank_linear_backward_from_cache(dy, LowRankLinearCache(x, T), need_dx)


def low_rank_linear_backward_from_cache(dy, cache: LowRankLinearCache, need_dx=True):
    """:func:`low_rank_linear_backward` from the cache of :func:`low_rank_linear_forward`.

    Returns
    -------
    (dx, dcore, dfactors, db) as :func:`low_rank_linear_backward`.
    """
    if not isinstance(cache, LowRankLinearCache):
        raise TypeError(f"cache must be the LowRankLinearCache returned by low_rank_linear_forward, "
                        f"got {type(cache).__name__}")
    x, T = cache
    dy = _check_input(dy, T.shape[0], 2, "dy", "(N, out_features)")
    if dy.shape[0] != x.shape[0]:
        raise ValueError(f"dy must have the batch size {x.shape[0]} of x, got shape {dy.shape}")
    U, V = T.factors
    a = x @ V
    dc = dy @ U
    dU = dy.T @ (a @ T.core.T)
    dS = dc.T @ a
    da = dc @ T.core
    dV = x.T @ da
    dx = da @ V.T if need_dx else None
    return dx, dS, [dU, dV], dy.sum(axis=0)


# ---------------------------------------------------------------------------------------
# gradient oracles (docs/algorithms.md §0)
# ---------------------------------------------------------------------------------------
class TuckerConvGradient(GradientOracle):
    """Gradient oracle of a conv layer from one backward pass (docs/algorithms.md §0).

    The dense kernel gradient is ``G[o, c, a, b] = Σ_{n,p,q} dy[n, o, p, q] x̄[n, c, s p + d a, s q + d b]``
    (``x̄`` zero-padded): bilinear in ``(dy, x)``, so every projection of ``G`` onto bases is
    the weight gradient of the *projected* data.

    Parameters
    ----------
    x : ndarray, shape ``(N, in, H, W)`` — the layer input of the forward pass
    dy : ndarray, shape ``(N, out, P, Q)`` — the gradient of the loss with respect to the
        layer output
    T : TuckerTensor of shape ``(out, in, kh, kw)`` — the point at which ``dy`` was computed;
        gives the kernel size and the default factors of :meth:`mode_partial_gradient`
    stride, padding, dilation : int or pair, as in the forward pass
    forward_cache : TuckerConvCache, optional
        The cache of the :func:`tucker_conv2d_forward` call that took ``x``. Its middle conv
        kept the im2col matrix of ``z = U_in^T x`` for the factor ``U_in`` of that call; every
        product of this oracle whose input basis is that same factor (equal values, dtype and
        memory layout, so that the 1×1 conv would run the forward's GEMM) starts from it
        instead of recomputing ``U_in^T x`` and its im2col: bit for bit the same values. Other
        bases are computed as without it. A cache of another input or geometry raises
        ``ValueError``; it also keeps that matrix alive as long as the oracle.

    Notes
    -----
    ``core_gradient(bases)`` computes ``x̃ = B_2^T x`` and ``dỹ = B_1^T dy`` (1×1 convs), the
    weight gradient of the conv of ``x̃`` with output gradient ``dỹ`` (shape
    ``(k_1, k_2, kh, kw)``), then applies ``B_3^T``, ``B_4^T``. Cost in flops, with ``k_i`` the
    number of columns of ``B_i`` (a ``None`` basis costs no projection)::

          2·N·in·k_2·H·W                 x̃
        + 2·N·out·k_1·P·Q                dỹ
        + 2·N·k_1·k_2·kh·kw·P·Q          weight gradient (one GEMM on the im2col of x̃)
        + 2·k_1·k_2·k_3·kw·(kh + k_4)    spatial bases (negligible)

    against ``2·N·out·in·kh·kw·P·Q`` for :meth:`dense_gradient` alone (plus the projections).
    :meth:`mode_partial_gradient` keeps the channel product its conv computed, ``G ×_2 U_in^T``
    (modes 1, 3, 4) or ``G ×_1 U_out^T`` (mode 2), so the four partials cost two convs. A later
    ``core_gradient`` whose channel bases extend those factors, ``B = [U, V]`` (the augmented
    bases of the S-step, docs/algorithms.md §2), is assembled from them and needs one conv only for
    the ``V_out × V_in`` block (see :meth:`_projected`). These products are the only state kept
    between calls (besides the read-only ``forward_cache``); each depends on nothing but
    ``(x, dy)`` and the factor it was computed with.

    Examples
    --------
    The core gradient is the dense kernel gradient projected onto the factors, without forming it:

    >>> from tucker_ref.nn import TuckerConvGradient, conv2d_backward
    >>> from tucker_ref.tucker import random_tucker
    >>> rng = np.random.default_rng(0)
    >>> T = random_tucker(rng, (4, 3, 3, 3), (2, 2, 2, 2))
    >>> x, dy = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((2, 4, 4, 4))
    >>> oracle = TuckerConvGradient(x, dy, T)
    >>> G = conv2d_backward(dy, x, T.full())[1]  # the dense kernel gradient
    >>> bool(np.allclose(oracle.core_gradient(T.factors), T.project(G)))  # G ×_i U_i^T
    True
    >>> bool(np.allclose(oracle.dense_gradient(), G))
    True
    """

    def __init__(self, x, dy, T, *, stride=1, padding=0, dilation=1, forward_cache=None):
        T = check_tucker_weight(T, 4)
        self.x = _check_input(x, T.shape[1], 4, "x", "(N, C_in, H, W)")
        # Validate the geometry here rather than at the integrator's first request.
        self.dy = _check_conv_dy(dy, self.x, T, stride, padding, dilation)
        self.point = T
        self.shape = T.shape
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self._products: dict = {}  # "out" / "in" -> (U, G ×_1 U^T / G ×_2 U^T)
        self._forward = None if forward_cache is None else self._check_forward_cache(forward_cache)

    def _check_forward_cache(self, cache) -> tuple[np.ndarray, ConvCache]:
        """``(U_in, ConvCache of z = U_in^T x)`` of a forward cache of this oracle's ``x`` and geometry."""
        if not isinstance(cache, TuckerConvCache):
            raise TypeError(f"forward_cache must be the TuckerConvCache returned by tucker_conv2d_forward or None, "
                            f"got {type(cache).__name__}")
        x = cache.x
        if x is not self.x and (x.shape != self.x.shape or x.dtype != self.x.dtype or not np.array_equal(x, self.x)):
            raise ValueError("forward_cache must be the cache of the forward pass that took x; its input differs "
                             f"(shape {x.shape}, dtype {x.dtype} against x of shape {self.x.shape}, dtype {self.x.dtype})")
        want = conv_geometry(self.x.shape, self.shape[2:], self.stride, self.padding, self.dilation)
        got = cache.conv.geometry
        if (got.kernel, got.stride, got.padding, got.dilation) != (want.kernel, want.stride, want.padding, want.dilation):
            raise ValueError(f"forward_cache must have the geometry of this oracle (kernel, stride, padding, "
                             f"dilation) = {want.kernel, want.stride, want.padding, want.dilation}, "
                             f"got {got.kernel, got.stride, got.padding, got.dilation}")
        return cache.T.factors[1], cache.conv

    def _forward_im2col(self, B_in):
        """The kept ConvCache of ``z`` if ``B_in`` is the forward's ``U_in`` (then ``B_in^T x = z``
        bit for bit: same values, dtype and memory layout run the forward's GEMM), else ``None``."""
        if self._forward is None or B_in is None:
            return None
        U_in, conv = self._forward
        if B_in is U_in or (B_in.shape == U_in.shape and B_in.dtype == U_in.dtype and B_in.strides == U_in.strides
                            and np.array_equal(B_in, U_in)):
            return conv
        return None

    def _weight_gradient(self, dy, x) -> np.ndarray:
        return conv2d_weight_backward(dy, x, self.shape[2:], stride=self.stride, padding=self.padding,
                                      dilation=self.dilation)

    def _channel_projected(self, B_out, B_in) -> np.ndarray:
        """``G ×_1 B_out^T ×_2 B_in^T`` by one conv of the projected data (the GEMM is only
        ``k_1 × k_2·kh·kw``); ``None`` is the identity."""
        dy = self.dy if B_out is None else _channel_matmul(B_out.T, self.dy)
        kept = self._forward_im2col(B_in)
        if kept is not None:
            return conv2d_weight_backward_from_cache(dy, kept)
        x = self.x if B_in is None else _channel_matmul(B_in.T, self.x)
        return self._weight_gradient(dy, x)

    def _channel_product(self, side: str, U) -> np.ndarray:
        """``G ×_1 U^T`` (``side="out"``) or ``G ×_2 U^T`` (``"in"``), reused while ``U`` is unchanged."""
        kept = self._products.get(side)
        if kept is None or kept[0].shape != U.shape or not np.array_equal(kept[0], U):
            product = self._channel_projected(U, None) if side == "out" else self._channel_projected(None, U)
            # A copy: a later in-place edit of U must not make the comparison above lie.
            kept = self._products[side] = (U.copy(), product)
        return kept[1]

    def _kept_prefix(self, side: str, B):
        """``(G ×_i U^T, V)`` if a product for ``side`` is kept and ``B = [U, V]``, else ``None``."""
        kept = self._products.get(side)
        if kept is None or B is None:
            return None
        U, product = kept
        r = U.shape[1]
        if B.shape[1] < r or not np.array_equal(B[:, :r], U):
            return None
        return product, B[:, r:]

    def mode_partial_gradient(self, mode: int, factors=None) -> np.ndarray:
        """``N_i = Mat_i(G ×_{j≠i} U_j^T)``: one conv for mode 2 (on ``x``, with ``U_out^T dy``), one
        shared by modes 1, 3 and 4 (on ``U_in^T x``, with the full ``dy``); see the class notes."""
        mode = check_mode(mode, 4)
        U_out, U_in, U_h, U_w = self._factors_or_point(factors)
        if mode == 1:
            return unfold(multi_mode_product(self._channel_product("out", U_out), [U_h, U_w], modes=[2, 3],
                                             transpose=True), 1)
        others = [None if j == mode else U for j, U in enumerate([U_out, None, U_h, U_w])]
        return unfold(multi_mode_product(self._channel_product("in", U_in), others, transpose=True), mode)

    def _projected(self, bases: list) -> np.ndarray:
        """``G ×_i B_i^T``. For ``B = [U, V]`` extending the factors of kept products, by blocks::

            B_out^T G B_in = [ B_out^T (G U_in) | [ (U_out^T G) V_in ; V_out^T G V_in ] ]

        (channel modes written as a matrix): the left block and the upper right one are small
        products of the kept ``G ×_2 U_in^T`` and ``G ×_1 U_out^T``, and only ``V_out^T G V_in``
        is a new conv, on ``k_out × k_in`` projected channels instead of ``(r_out + k_out) ×
        (r_in + k_in)``; without new input directions (``k_in = 0``) no conv is needed at all.
        Equal to the direct computation up to rounding (the same sums in another order; tested).
        """
        B_out, B_in, B_h, B_w = bases
        g = None
        in_kept = self._kept_prefix("in", B_in) if B_out is not None else None
        if in_kept is not None:
            G_U_in, V_in = in_kept
            left = mode_product(G_U_in, B_out.T, 0)
            if V_in.shape[1] == 0:
                g = left
            elif (out_kept := self._kept_prefix("out", B_out)) is not None:
                U_out_G, V_out = out_kept
                lower = (self._channel_projected(V_out, V_in) if V_out.shape[1] else
                         np.zeros((0, V_in.shape[1]) + self.shape[2:], dtype=left.dtype))
                right = np.concatenate([mode_product(U_out_G, V_in.T, 1), lower], axis=0)
                g = np.concatenate([left, right], axis=1)
        if g is None:
            g = self._channel_projected(B_out, B_in)
        return multi_mode_product(g, [B_h, B_w], modes=[2, 3], transpose=True)

    def dense_gradient(self) -> np.ndarray:
        """The dense kernel gradient ``G`` of shape ``(out, in, kh, kw)`` (forms it: theory checks and ε only)."""
        return self._weight_gradient(self.dy, self.x)


class LowRankLinearGradient(GradientOracle):
    """Gradient oracle of a dense layer ``y = x W^T + b`` from one backward pass (docs/algorithms.md §0, d = 2).

    ``G = dy^T x`` of shape ``(out, in)``; ``core_gradient([B_1, B_2]) = (dy B_1)^T (x B_2)``
    costs ``2·N·(out·k_1 + in·k_2 + k_1·k_2)`` flops (a ``None`` basis skips its projection).

    Parameters
    ----------
    x : ndarray, shape ``(N, in)``
    dy : ndarray, shape ``(N, out)``
    T : TuckerTensor of shape ``(out, in)``, optional — the point; default factors of
        :meth:`mode_partial_gradient`

    Examples
    --------
    >>> from tucker_ref.nn import LowRankLinearGradient, linear_backward
    >>> from tucker_ref.tucker import random_tucker
    >>> rng = np.random.default_rng(0)
    >>> T = random_tucker(rng, (4, 6), (2, 2))  # W = U S V^T of shape (out, in)
    >>> x, dy = rng.standard_normal((3, 6)), rng.standard_normal((3, 4))
    >>> oracle = LowRankLinearGradient(x, dy, T)
    >>> G = linear_backward(dy, x, T.full())[1]  # the dense weight gradient dy^T x
    >>> bool(np.allclose(oracle.core_gradient(T.factors), T.project(G)))  # U^T G V
    True
    """

    def __init__(self, x, dy, T=None):
        self.x = as_float_array(x, "x", ndim=2)
        self.dy = as_float_array(dy, "dy", ndim=2)
        if self.dy.shape[0] != self.x.shape[0]:
            raise ValueError(f"dy must have the batch size {self.x.shape[0]} of x, got shape {self.dy.shape}")
        self.shape = (self.dy.shape[1], self.x.shape[1])
        if T is not None:
            T = check_tucker_weight(T, 2)
            if T.shape != self.shape:
                raise ValueError(f"T must have shape (out, in) = {self.shape} to match dy and x, got {T.shape}")
        self.point = T

    def _projected(self, bases: list) -> np.ndarray:
        B_out, B_in = bases
        dy = self.dy if B_out is None else self.dy @ B_out
        x = self.x if B_in is None else self.x @ B_in
        return dy.T @ x

    def dense_gradient(self) -> np.ndarray:
        """``G = dy^T x`` of shape ``(out, in)``."""
        return self.dy.T @ self.x
