"""Dense layer kernels with hand-written backward passes (no autograd).

Every function takes and returns NumPy arrays in PyTorch's layouts: images are
``(N, C, H, W)``, conv kernels ``(C_out, C_in, kh, kw)``, dense weights ``(out, in)``.
float64 and float32 are kept (float32 in, float32 out); mixed inputs follow NumPy's
promotion (``np.result_type``).

Memory layout of conv results
-----------------------------
The convolutions compute in a *batch-last* buffer ``(C, H, W, N)``: with the batch
index innermost, every im2col copy and every col2im slice-add of a stride-1 conv moves
contiguous runs of ``W_out * N`` numbers instead of ``W_out``, which makes both several
times faster than in ``(N, C, H, W)`` order. The arrays returned by :func:`conv2d`,
:func:`conv2d_forward` and the input gradients are therefore transposed *views* of such buffers: their
shape and values follow the PyTorch layout, but they are not C-contiguous (call
``np.ascontiguousarray`` if a contiguous copy is needed). Elementwise kernels
(:func:`relu`, :func:`max_pool2d`, their backwards) preserve whatever memory order they
receive, so in a network the next conv finds its input already batch-last and skips the
transposition.

Forward cache
-------------
As :func:`max_pool2d` does with its ``MaxPoolCache``, :func:`conv2d_forward` returns
``(y, ConvCache)``: the cache keeps the im2col matrix of ``x`` that the forward GEMM used, so
:func:`conv2d_backward_from_cache` and :func:`conv2d_weight_backward_from_cache` do not
rebuild it (one copy of ``kh kw / (s_h s_w)`` times the input saved per step). The price is
memory: that matrix stays alive between the passes, for every layer of a network. The plain
:func:`conv2d` and :func:`conv2d_backward` keep nothing and rebuild it; both paths give the
same values bit for bit (the matrix is a copy of ``x``, the GEMMs are the same).

Validation
----------
Bad input raises ``ValueError`` / ``TypeError`` naming the argument and the expected form:
wrong ndim, channel mismatch, a dilated kernel extent ``d (k - 1) + 1`` larger than the
padded input, non-positive stride or dilation, negative padding, NaN/Inf values.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..checks import as_float_array

__all__ = [
    "ConvGeometry",
    "conv_geometry",
    "ConvCache",
    "conv2d",
    "conv2d_forward",
    "conv2d_backward",
    "conv2d_backward_from_cache",
    "conv2d_input_backward",
    "conv2d_weight_backward",
    "conv2d_weight_backward_from_cache",
    "linear",
    "linear_backward",
    "relu",
    "relu_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "relu_max_pool2d",
    "MaxPoolCache",
    "flatten",
    "flatten_backward",
    "softmax_cross_entropy",
]


# ----------------------------------------------------------------------------------------
# Argument parsing shared by the conv and pooling kernels
# ----------------------------------------------------------------------------------------


def _pair(value, name: str, *, minimum: int) -> tuple[int, int]:
    """Parse an int-or-pair argument (stride, padding, dilation, kernel size); entries >= minimum."""
    kind = "positive" if minimum == 1 else "non-negative"
    expected = f"{name} must be a {kind} int or a pair of {kind} ints"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        items = (value, value)
    elif isinstance(value, (str, bytes)):
        raise TypeError(f"{expected}, got {value!r}")
    else:
        try:
            items = tuple(value)
        except TypeError:
            raise TypeError(f"{expected}, got {value!r}") from None
        if len(items) != 2:
            raise ValueError(f"{expected}, got {value!r}")
    for v in items:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{expected}, got {value!r}")
        if v < minimum:
            raise ValueError(f"{expected}, got {value!r}")
    return int(items[0]), int(items[1])


class ConvGeometry(NamedTuple):
    """Everything the conv and pooling kernels need about one (input shape, kernel, stride, ...) case.

    Built and validated by :func:`conv_geometry`; every pair is ``(height, width)``.
    """

    x_shape: tuple[int, int, int, int]  # (N, C_in, H, W)
    kernel: tuple[int, int]  # (kh, kw)
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    out: tuple[int, int]  # (H_out, W_out)

    @property
    def padded(self) -> tuple[int, int]:
        """``(H + 2 p_h, W + 2 p_w)``: the size of the zero-padded input."""
        return tuple(n + 2 * p for n, p in zip(self.x_shape[2:], self.padding))


def conv_geometry(x_shape, kernel_size, stride, padding, dilation, kernel_name="kernel_size") -> ConvGeometry:
    """Validate the conv arguments and compute the output size, as a :class:`ConvGeometry`.

    ``H_out = floor((H + 2 p - d (k - 1) - 1) / s) + 1`` per spatial axis (PyTorch's rule);
    the dilated kernel extent ``d (k - 1) + 1`` must fit in the padded input ``H + 2 p``.
    ``x_shape`` is ``(N, C_in, H, W)``; ``kernel_size``, ``stride``, ``padding`` and
    ``dilation`` are ints or pairs as in :func:`conv2d`; ``kernel_name`` is what error
    messages call the kernel size.
    """
    stride = _pair(stride, "stride", minimum=1)
    padding = _pair(padding, "padding", minimum=0)
    dilation = _pair(dilation, "dilation", minimum=1)
    kernel = _pair(kernel_size, kernel_name, minimum=1)
    if any(n < 1 for n in x_shape):
        raise ValueError(f"x must have positive sizes (N, C_in, H, W), got shape {tuple(x_shape)}")
    out = []
    for axis, n, k, s, p, d in zip(("height", "width"), x_shape[2:], kernel, stride, padding, dilation):
        extent = d * (k - 1) + 1
        if extent > n + 2 * p:
            raise ValueError(
                f"dilated kernel {axis} d*(k-1)+1 = {d}*({k}-1)+1 = {extent} exceeds the padded input "
                f"{axis} {n}+2*{p} = {n + 2 * p} (x shape {tuple(x_shape)}, kernel {kernel}, "
                f"dilation {dilation}, padding {padding}); expected d*(k-1)+1 <= size + 2*padding"
            )
        out.append((n + 2 * p - extent) // s + 1)
    return ConvGeometry(tuple(int(n) for n in x_shape), kernel, stride, padding, dilation, tuple(out))


def _check_dy(dy, geo: ConvGeometry, c_out: int) -> None:
    expected = (geo.x_shape[0], c_out) + geo.out
    if dy.shape != expected:
        raise ValueError(
            f"dy must have shape (N, C_out, H_out, W_out) = {expected} for this convolution, got {dy.shape}"
        )


def _check_channels(c_in_x: int, w_shape, what: str) -> None:
    if c_in_x != w_shape[1]:
        raise ValueError(
            f"w has C_in = {w_shape[1]} input channels (w shape {tuple(w_shape)}) but {what} has "
            f"{c_in_x}; expected {what}.shape[1] == w.shape[1]"
        )


# ----------------------------------------------------------------------------------------
# im2col / col2im in the batch-last layout
# ----------------------------------------------------------------------------------------


def _batch_last(a: np.ndarray) -> np.ndarray:
    """``(N, C, H, W)`` -> contiguous ``(C, H, W, N)``; free when ``a`` is already batch-last in memory."""
    return np.ascontiguousarray(a.transpose(1, 2, 3, 0))


def _offset_slices(geo: ConvGeometry, i: int, j: int) -> tuple[slice, slice]:
    """Rows and columns of the padded input that kernel tap ``(i, j)`` reads for every output pixel."""
    (sh, sw), (dh, dw), (ho, wo) = geo.stride, geo.dilation, geo.out
    return (
        slice(i * dh, i * dh + sh * (ho - 1) + 1, sh),
        slice(j * dw, j * dw + sw * (wo - 1) + 1, sw),
    )


def _im2col(x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """Contiguous im2col matrix of shape ``(C_in kh kw, H_out W_out N)``.

    Row ``(c, i, j)``, column ``(p, q, n)`` holds ``x_pad[n, c, s_h p + d_h i, s_w q + d_w j]``.
    Built from one strided window view of the zero-padded batch-last input and a single copy.
    """
    n, c = geo.x_shape[:2]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (ho, wo) = geo.kernel, geo.stride, geo.padding, geo.dilation, geo.out
    xb = _batch_last(x)
    if ph or pw:
        hp, wp = geo.padded
        xp = np.zeros((c, hp, wp, n), dtype=x.dtype)
        xp[:, ph : ph + geo.x_shape[2], pw : pw + geo.x_shape[3]] = xb
    else:
        xp = xb
    extent = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    # windows[c, p, q, n, i, j] = xp[c, s_h p + d_h i, s_w q + d_w j, n]; the slices of the
    # window axes pick the dilated taps, those of the position axes the strided outputs (and
    # drop the uncovered last rows/columns of the floor case).
    windows = sliding_window_view(xp, extent, axis=(1, 2))[:, ::sh, ::sw, :, ::dh, ::dw]
    cols = np.empty((c, kh, kw, ho, wo, n), dtype=x.dtype)
    np.copyto(cols, windows.transpose(0, 4, 5, 1, 2, 3))
    return cols.reshape(c * kh * kw, ho * wo * n)


def _col2im(cols: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """Adjoint of :func:`_im2col`: scatter-add ``(C_in kh kw, H_out W_out N)`` back to ``(N, C_in, H, W)``.

    One strided slice-add per kernel tap (kh kw of them); within one tap the strided
    positions are distinct, so plain ``+=`` is exact (no ``np.add.at`` needed). Input rows
    and columns that no window covers (padding, floor case) keep their zero.
    """
    n, c, h, w = geo.x_shape
    (kh, kw), (ph, pw), (ho, wo) = geo.kernel, geo.padding, geo.out
    hp, wp = geo.padded
    taps = cols.reshape(c, kh, kw, ho, wo, n)
    dxp = np.zeros((c, hp, wp, n), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            rows, columns = _offset_slices(geo, i, j)
            dxp[:, rows, columns] += taps[:, i, j]
    if ph or pw:
        dxp = np.ascontiguousarray(dxp[:, ph : ph + h, pw : pw + w])
    return dxp.transpose(3, 0, 1, 2)


def _dy_matrix(dy: np.ndarray) -> np.ndarray:
    """``(N, C_out, H_out, W_out)`` -> ``(C_out, H_out W_out N)``, the column order of :func:`_im2col`."""
    return _batch_last(dy).reshape(dy.shape[1], -1)


def _input_grad(dy_mat: np.ndarray, w: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    # d cols = W_mat^T dY_mat (one GEMM), then col2im.
    return _col2im(w.reshape(w.shape[0], -1).T @ dy_mat, geo)


def _weight_grad(dy_mat: np.ndarray, cols: np.ndarray, geo: ConvGeometry, c_out: int) -> np.ndarray:
    # dW_mat^T = cols dY_mat^T (one GEMM; transposes are BLAS flags, not copies). This
    # orientation ran ~20% faster than dY_mat cols^T in float32 with OpenBLAS on the LeNet
    # shapes (long inner dimension H_out W_out N); the final reshape copies only dW.
    return (cols @ dy_mat.T).T.reshape((c_out, geo.x_shape[1]) + geo.kernel)


def _backward_from_cols(dy: np.ndarray, cols: np.ndarray, w: np.ndarray, geo: ConvGeometry, need_dx: bool):
    """``(dx, dw, db)`` in ``np.result_type(dy, x, w)`` from a validated ``dy`` and the im2col matrix of ``x``.

    ``cols`` has the dtype of ``x`` (it is a copy of its values and zeros), so casting it equals
    casting ``x`` before the im2col: whether the matrix was kept from the forward or rebuilt,
    the same GEMMs run on the same operands.
    """
    dtype = np.result_type(dy, cols, w)
    dy_mat = _dy_matrix(dy.astype(dtype, copy=False))
    dw = _weight_grad(dy_mat, cols.astype(dtype, copy=False), geo, w.shape[0])
    dx = _input_grad(dy_mat, w.astype(dtype, copy=False), geo) if need_dx else None
    return dx, dw, dy_mat.sum(axis=1)


def _weight_backward_from_cols(dy: np.ndarray, cols: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """``dw`` in ``np.result_type(dy, x)`` from a validated ``dy`` (any ``C_out``) and the im2col matrix of ``x``."""
    dtype = np.result_type(dy, cols)
    return _weight_grad(_dy_matrix(dy.astype(dtype, copy=False)), cols.astype(dtype, copy=False), geo, dy.shape[1])


# ----------------------------------------------------------------------------------------
# Convolution
# ----------------------------------------------------------------------------------------


class ConvCache(NamedTuple):
    """What :func:`conv2d_forward` keeps for :func:`conv2d_backward_from_cache` and
    :func:`conv2d_weight_backward_from_cache`.

    ``cols`` is the im2col matrix of the forward input ``x``, shape ``(C_in kh kw, H_out W_out N)``
    and the dtype of ``x`` (about ``kh kw / (s_h s_w)`` times the size of ``x``); ``w`` the
    kernel; ``geometry`` the :class:`ConvGeometry` of the call.
    """

    cols: np.ndarray
    w: np.ndarray
    geometry: ConvGeometry


def conv2d(x, w, b=None, *, stride=1, padding=0, dilation=1) -> np.ndarray:
    """2-D cross-correlation with zero padding, PyTorch's ``conv2d`` (groups = 1).

    ``y[n, o, p, q] = b[o] + sum_{c, i, j} w[o, c, i, j] x_pad[n, c, s_h p + d_h i, s_w q + d_w j]``
    with ``H_out = floor((H + 2 p_h - d_h (kh - 1) - 1) / s_h) + 1`` (same for W).
    Computed as ``Y_mat = W_mat cols`` with ``W_mat = w.reshape(C_out, C_in kh kw)`` and the
    im2col matrix ``cols`` (one GEMM).

    Parameters
    ----------
    x : ndarray, shape (N, C_in, H, W)
    w : ndarray, shape (C_out, C_in, kh, kw)
    b : ndarray, shape (C_out,), optional
    stride, dilation : int or pair of int, >= 1
    padding : int or pair of int, >= 0 (zeros)

    Returns
    -------
    y : ndarray, shape (N, C_out, H_out, W_out)
        A transposed view of a batch-last buffer (see the module notes); dtype
        ``np.result_type(x, w, b)``.

    Examples
    --------
    A 2×2 kernel of ones sums each window (cross-correlation, as PyTorch):

    >>> from tucker_ref.nn import conv2d
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)  # (N, C_in, H, W)
    >>> w = np.ones((1, 1, 2, 2))  # (C_out, C_in, kh, kw)
    >>> conv2d(x, w, stride=2)
    array([[[[10., 18.],
             [42., 50.]]]])
    >>> conv2d(x, w, b=np.array([0.5]), padding=1).shape  # H_out = (4 + 2·1 − 2)/1 + 1
    (1, 1, 5, 5)
    """
    return conv2d_forward(x, w, b, stride=stride, padding=padding, dilation=dilation)[0]


def conv2d_forward(x, w, b=None, *, stride=1, padding=0, dilation=1) -> tuple[np.ndarray, ConvCache]:
    """:func:`conv2d` and the :class:`ConvCache` its cache-taking backward kernels need.

    The cache holds the im2col matrix the forward GEMM used, so the backward does not rebuild
    it; it keeps ``kh kw / (s_h s_w)`` times the input in memory until the cache is dropped
    (see the module notes). Arguments as :func:`conv2d`.

    Returns
    -------
    y : ndarray, shape (N, C_out, H_out, W_out), as :func:`conv2d`
    cache : ConvCache for :func:`conv2d_backward_from_cache` and
        :func:`conv2d_weight_backward_from_cache`

    Examples
    --------
    >>> from tucker_ref.nn import conv2d_backward, conv2d_backward_from_cache, conv2d_forward
    >>> rng = np.random.default_rng(0)
    >>> x, w = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))
    >>> y, cache = conv2d_forward(x, w, padding=1)
    >>> dy = rng.standard_normal(y.shape)
    >>> plain = conv2d_backward(dy, x, w, padding=1)
    >>> all(np.array_equal(a, b) for a, b in zip(conv2d_backward_from_cache(dy, cache), plain))
    True
    """
    x = as_float_array(x, "x", ndim=4)
    w = as_float_array(w, "w", ndim=4)
    arrays = [x, w]
    if b is not None:
        b = as_float_array(b, "b", ndim=1)
        if b.shape != (w.shape[0],):
            raise ValueError(f"b must have shape (C_out,) = ({w.shape[0]},), got {b.shape}")
        arrays.append(b)
    dtype = np.result_type(*arrays)
    _check_channels(x.shape[1], w.shape, "x")
    geo = conv_geometry(x.shape, w.shape[2:], stride, padding, dilation, "w.shape[2:]")
    c_out = w.shape[0]
    cols = _im2col(x, geo)
    y = w.reshape(c_out, -1).astype(dtype, copy=False) @ cols.astype(dtype, copy=False)
    if b is not None:
        y += b[:, None]
    return y.reshape((c_out,) + geo.out + (geo.x_shape[0],)).transpose(3, 0, 1, 2), ConvCache(cols, w, geo)


def conv2d_backward(dy, x, w, *, stride=1, padding=0, dilation=1, need_dx=True):
    """Gradients of :func:`conv2d` given the upstream gradient ``dy = dL/dy``.

    ``db[o] = sum_{n,p,q} dy[n, o, p, q]``; ``dW_mat = dY_mat cols^T``;
    ``dx = col2im(W_mat^T dY_mat)`` (the adjoint of the im2col map). One GEMM for each of
    ``dw`` and ``dx``. No cache from the forward is used: the im2col matrix of ``x`` is
    rebuilt from a strided view, one copy per step. :func:`conv2d_forward` keeps it instead
    for :func:`conv2d_backward_from_cache` (same values bit for bit), at the price of holding
    ``kh kw / (s_h s_w)`` times the input in memory between the passes.
    Input rows/columns not covered by any window (floor case, padding) get zero gradient.

    Parameters
    ----------
    dy : ndarray, shape (N, C_out, H_out, W_out)
    x : ndarray, shape (N, C_in, H, W), the forward input
    w : ndarray, shape (C_out, C_in, kh, kw)
    stride, padding, dilation : as in :func:`conv2d`
    need_dx : bool
        ``False`` skips the input gradient (the first layer of a network does not need it).

    Returns
    -------
    dx : ndarray, shape (N, C_in, H, W), or None when ``need_dx`` is False
    dw : ndarray, shape (C_out, C_in, kh, kw)
    db : ndarray, shape (C_out,)
    """
    dy = as_float_array(dy, "dy", ndim=4)
    x = as_float_array(x, "x", ndim=4)
    w = as_float_array(w, "w", ndim=4)
    _check_channels(x.shape[1], w.shape, "x")
    geo = conv_geometry(x.shape, w.shape[2:], stride, padding, dilation, "w.shape[2:]")
    _check_dy(dy, geo, w.shape[0])
    return _backward_from_cols(dy, _im2col(x, geo), w, geo, need_dx)


def _check_conv_cache(dy, cache: ConvCache, any_outputs: bool = False) -> np.ndarray:
    """``dy`` validated against the geometry of ``cache``: the forward's ``C_out`` channels, or any number."""
    if not isinstance(cache, ConvCache):
        raise TypeError(f"cache must be the ConvCache returned by conv2d_forward, got {type(cache).__name__}")
    dy = as_float_array(dy, "dy", ndim=4)
    _check_dy(dy, cache.geometry, dy.shape[1] if any_outputs else cache.w.shape[0])
    return dy


def conv2d_backward_from_cache(dy, cache: ConvCache, need_dx=True):
    """:func:`conv2d_backward` from the cache of :func:`conv2d_forward` (the im2col matrix is not rebuilt).

    Equal to ``conv2d_backward(dy, x, w, ...)`` bit for bit, for the ``x``, ``w`` and geometry
    of the forward call.

    Parameters
    ----------
    dy : ndarray, shape (N, C_out, H_out, W_out)
    cache : ConvCache from :func:`conv2d_forward`
    need_dx : bool
        ``False`` skips the input gradient.

    Returns
    -------
    (dx, dw, db) as :func:`conv2d_backward`.
    """
    dy = _check_conv_cache(dy, cache)
    return _backward_from_cols(dy, cache.cols, cache.w, cache.geometry, need_dx)


def conv2d_input_backward(dy, w, x_shape, *, stride=1, padding=0, dilation=1) -> np.ndarray:
    """Input gradient of :func:`conv2d`: the adjoint of the linear map ``x -> conv2d(x, w)``.

    ``dx = col2im(W_mat^T dY_mat)``, so ``<conv2d(x, w), dy> = <x, conv2d_input_backward(dy, w, x.shape)>``.
    Needs only the shape of ``x`` (no cache).

    Parameters
    ----------
    dy : ndarray, shape (N, C_out, H_out, W_out)
    w : ndarray, shape (C_out, C_in, kh, kw)
    x_shape : tuple (N, C_in, H, W) of the forward input
    stride, padding, dilation : as in :func:`conv2d`

    Returns
    -------
    dx : ndarray, shape ``x_shape`` (a transposed view of a batch-last buffer)
    """
    dy = as_float_array(dy, "dy", ndim=4)
    w = as_float_array(w, "w", ndim=4)
    x_shape = _shape4(x_shape)
    _check_channels(x_shape[1], w.shape, "x_shape")
    geo = conv_geometry(x_shape, w.shape[2:], stride, padding, dilation, "w.shape[2:]")
    _check_dy(dy, geo, w.shape[0])
    dtype = np.result_type(dy, w)
    return _input_grad(_dy_matrix(dy.astype(dtype, copy=False)), w.astype(dtype, copy=False), geo)


def conv2d_weight_backward(dy, x, kernel_size, *, stride=1, padding=0, dilation=1) -> np.ndarray:
    """Kernel gradient of :func:`conv2d`: the adjoint of the linear map ``w -> conv2d(x, w)``.

    ``dW_mat = dY_mat cols(x)^T``, so ``<conv2d(x, w), dy> = <w, conv2d_weight_backward(dy, x, (kh, kw))>``.
    The im2col matrix of ``x`` is rebuilt here (:func:`conv2d_weight_backward_from_cache` takes
    the one :func:`conv2d_forward` kept).

    Parameters
    ----------
    dy : ndarray, shape (N, C_out, H_out, W_out)
    x : ndarray, shape (N, C_in, H, W)
    kernel_size : int or pair (kh, kw)
    stride, padding, dilation : as in :func:`conv2d`

    Returns
    -------
    dw : ndarray, shape (C_out, C_in, kh, kw)
    """
    dy = as_float_array(dy, "dy", ndim=4)
    x = as_float_array(x, "x", ndim=4)
    geo = conv_geometry(x.shape, kernel_size, stride, padding, dilation)
    _check_dy(dy, geo, dy.shape[1])
    return _weight_backward_from_cols(dy, _im2col(x, geo), geo)


def conv2d_weight_backward_from_cache(dy, cache: ConvCache) -> np.ndarray:
    """:func:`conv2d_weight_backward` from the cache of :func:`conv2d_forward` (the im2col matrix is not rebuilt).

    ``dy`` may have any number of output channels (the map ``w -> conv2d(x, w)`` is taken for
    kernels of ``dy.shape[1]`` outputs); equal to ``conv2d_weight_backward(dy, x, (kh, kw), ...)``
    bit for bit, for the ``x`` and geometry of the forward call.

    Parameters
    ----------
    dy : ndarray, shape (N, C_out', H_out, W_out)
    cache : ConvCache from :func:`conv2d_forward`

    Returns
    -------
    dw : ndarray, shape (C_out', C_in, kh, kw)
    """
    dy = _check_conv_cache(dy, cache, any_outputs=True)
    return _weight_backward_from_cols(dy, cache.cols, cache.geometry)


def _shape4(x_shape) -> tuple[int, int, int, int]:
    try:
        shape = tuple(x_shape)
    except TypeError:
        raise TypeError(f"x_shape must be a tuple (N, C_in, H, W) of positive ints, got {x_shape!r}") from None
    if len(shape) != 4 or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in shape):
        raise ValueError(f"x_shape must be a tuple (N, C_in, H, W) of positive ints, got {x_shape!r}")
    return tuple(int(s) for s in shape)


# ----------------------------------------------------------------------------------------
# Dense layer
# ----------------------------------------------------------------------------------------


def linear(x, w, b=None) -> np.ndarray:
    """Dense layer ``y = x w^T + b`` (PyTorch layout: ``w`` is (out, in)).

    Parameters
    ----------
    x : ndarray, shape (N, in)
    w : ndarray, shape (out, in)
    b : ndarray, shape (out,), optional

    Returns
    -------
    y : ndarray, shape (N, out)
    """
    x = as_float_array(x, "x", ndim=2)
    w = as_float_array(w, "w", ndim=2)
    _check_features(x.shape, w.shape)
    y = x @ w.T
    if b is not None:
        b = as_float_array(b, "b", ndim=1)
        if b.shape != (w.shape[0],):
            raise ValueError(f"b must have shape (out,) = ({w.shape[0]},), got {b.shape}")
        y = y + b
    return y


def linear_backward(dy, x, w, need_dx=True):
    """Gradients of :func:`linear`: ``dx = dy w``, ``dw = dy^T x``, ``db = sum_n dy[n]``.

    Parameters
    ----------
    dy : ndarray, shape (N, out)
    x : ndarray, shape (N, in)
    w : ndarray, shape (out, in)
    need_dx : bool
        ``False`` returns ``dx = None``.

    Returns
    -------
    dx : ndarray, shape (N, in), or None
    dw : ndarray, shape (out, in)
    db : ndarray, shape (out,)
    """
    dy = as_float_array(dy, "dy", ndim=2)
    x = as_float_array(x, "x", ndim=2)
    w = as_float_array(w, "w", ndim=2)
    _check_features(x.shape, w.shape)
    if dy.shape != (x.shape[0], w.shape[0]):
        raise ValueError(f"dy must have shape (N, out) = {(x.shape[0], w.shape[0])}, got {dy.shape}")
    dx = dy @ w if need_dx else None
    return dx, dy.T @ x, dy.sum(axis=0)


def _check_features(x_shape, w_shape) -> None:
    if x_shape[1] != w_shape[1]:
        raise ValueError(
            f"x has {x_shape[1]} features but w has in = {w_shape[1]} (w shape {tuple(w_shape)}); "
            "expected x of shape (N, in) with in == w.shape[1]"
        )


# ----------------------------------------------------------------------------------------
# Elementwise, pooling, reshaping, loss
# ----------------------------------------------------------------------------------------


def relu(x) -> np.ndarray:
    """``y = max(x, 0)`` elementwise (any shape; memory order of ``x`` kept)."""
    x = as_float_array(x, "x")
    return np.maximum(x, 0)


def relu_backward(dy, x) -> np.ndarray:
    """``dx = dy * [x > 0]``: the derivative at exactly 0 is taken as 0, as in PyTorch."""
    dy = as_float_array(dy, "dy")
    x = as_float_array(x, "x")
    if dy.shape != x.shape:
        raise ValueError(f"dy must have the shape of x {x.shape}, got {dy.shape}")
    # a product with the mask rather than np.where: several times faster, same values
    # (a zero may come out as -0.0)
    return dy * (x > 0)


class MaxPoolCache(NamedTuple):
    """What :func:`max_pool2d_backward` needs: the input, the window geometry and the argmax.

    ``argmax[n, c, p, q]`` is the row-major index ``i * kw + j`` of the winning tap in the
    window of output ``(p, q)``.
    """

    x: np.ndarray
    kernel: tuple[int, int]
    stride: tuple[int, int]
    argmax: np.ndarray


def max_pool2d(x, kernel_size=2, stride=None, padding=0):
    """2-D max pooling without padding, PyTorch's ``max_pool2d`` (dilation 1, floor mode).

    ``y[n, c, p, q] = max_{i < kh, j < kw} x[n, c, s_h p + i, s_w q + j]`` with
    ``H_out = floor((H - kh) / s_h) + 1``. Ties go to the first maximum in row-major window
    order (PyTorch's CPU rule): a later tap replaces the running maximum only when strictly
    larger.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    kernel_size : int or pair, >= 1
    stride : int or pair, >= 1, optional (default: ``kernel_size``)
    padding : must be 0 (padding is not supported)

    Returns
    -------
    y : ndarray, shape (N, C, H_out, W_out) (memory order of ``x`` kept)
    cache : MaxPoolCache for :func:`max_pool2d_backward`
    """
    x = as_float_array(x, "x", ndim=4)
    if _pair(padding, "padding", minimum=0) != (0, 0):
        raise ValueError(f"padding must be 0: max_pool2d supports no padding, got {padding!r}")
    kernel = _pair(kernel_size, "kernel_size", minimum=1)
    stride = kernel if stride is None else _pair(stride, "stride", minimum=1)
    geo = conv_geometry(x.shape, kernel, stride, 0, 1)
    # Masked NumPy operations (``where=``, ``np.where``) run several times slower than
    # plain arithmetic, so the argmax is updated arithmetically: reset it where a later
    # tap is strictly larger, then add that tap's index there.
    y = argmax = None
    for tap, (i, j) in enumerate(np.ndindex(*kernel)):
        window = x[(slice(None), slice(None)) + _offset_slices(geo, i, j)]
        if y is None:
            y = window.copy(order="K")
            argmax = np.zeros_like(y, dtype=np.min_scalar_type(kernel[0] * kernel[1] - 1))
            continue
        later_wins = window > y
        np.maximum(y, window, out=y)
        argmax *= ~later_wins
        argmax += later_wins * argmax.dtype.type(tap)
    return y, MaxPoolCache(x, kernel, stride, argmax)


def max_pool2d_backward(dy, cache: MaxPoolCache) -> np.ndarray:
    """Route ``dy`` to the argmax of each window: ``dx[n, c, s p + i, s q + j] += dy[n, c, p, q]``
    for the winning tap ``(i, j)`` (overlapping windows accumulate).

    Parameters
    ----------
    dy : ndarray, shape (N, C, H_out, W_out)
    cache : MaxPoolCache from :func:`max_pool2d`

    Returns
    -------
    dx : ndarray, shape (N, C, H, W) (memory order of the forward input)
    """
    if not isinstance(cache, MaxPoolCache):
        raise TypeError(f"cache must be the MaxPoolCache returned by max_pool2d, got {type(cache).__name__}")
    dy = as_float_array(dy, "dy", ndim=4)
    if dy.shape != cache.argmax.shape:
        raise ValueError(f"dy must have the pooled shape (N, C, H_out, W_out) = {cache.argmax.shape}, got {dy.shape}")
    geo = conv_geometry(cache.x.shape, cache.kernel, cache.stride, 0, 1)
    if _memory_order(dy) != _memory_order(cache.argmax):
        # one reordering copy, so that the k*k passes below run in a single memory order
        reordered = np.empty_like(cache.argmax, dtype=dy.dtype)
        reordered[...] = dy
        dy = reordered
    dx = np.zeros_like(cache.x, dtype=dy.dtype)
    # Windows that do not overlap (stride >= kernel) write disjoint slices: store the
    # routed gradient directly instead of adding it to zeros (saves a read of dx per tap).
    disjoint = all(s >= k for s, k in zip(cache.stride, cache.kernel))
    for tap, (i, j) in enumerate(np.ndindex(*cache.kernel)):
        target = dx[(slice(None), slice(None)) + _offset_slices(geo, i, j)]
        if disjoint:
            np.multiply(dy, cache.argmax == tap, out=target)
        else:
            target += dy * (cache.argmax == tap)
    return dx


def relu_max_pool2d(x, kernel_size=2, stride=None):
    """``max_pool2d(relu(x))`` in one kernel: pool first, then relu on the pooled array.

    Exact, because relu is monotone and so commutes with the max: the values equal those of
    :func:`relu` followed by :func:`max_pool2d`, while the relu pass (forward and backward)
    runs on the ``kh kw`` times smaller pooled array and the relu'd input is never stored.
    The gradient is :func:`max_pool2d_backward` with the returned cache: windows whose
    maximum is ``<= 0`` get a gradient of zero (relu's derivative there), because their
    ``argmax`` holds the tap index ``kh * kw``, which no tap matches. It equals
    :func:`relu_backward` after :func:`max_pool2d_backward` up to the sign of zeros.

    Parameters and returns as :func:`max_pool2d`.

    Examples
    --------
    >>> from tucker_ref.nn import max_pool2d, max_pool2d_backward, relu, relu_max_pool2d
    >>> x = np.array([[[[-1.0, 2.0], [0.5, -3.0]], [[-1.0, -2.0], [-0.5, -3.0]]]]).reshape(1, 2, 2, 2)
    >>> y, cache = relu_max_pool2d(x, 2)
    >>> y.ravel(), bool(np.array_equal(y, max_pool2d(relu(x), 2)[0]))
    (array([2., 0.]), True)
    >>> max_pool2d_backward(np.ones_like(y), cache)[0, 1].ravel()  # the channel with max <= 0 gets none
    array([0., 0., 0., 0.])
    """
    y, cache = max_pool2d(x, kernel_size, stride)
    taps = cache.kernel[0] * cache.kernel[1]
    argmax = cache.argmax
    if taps > np.iinfo(argmax.dtype).max:
        argmax = argmax.astype(np.min_scalar_type(taps))
    dead = y <= 0
    # arithmetic rather than a masked assignment (see max_pool2d): argmax becomes taps where dead
    argmax += dead * (argmax.dtype.type(taps) - argmax)
    np.maximum(y, 0, out=y)
    return y, cache._replace(argmax=argmax)


def _memory_order(a: np.ndarray) -> tuple[int, ...]:
    """Axes of ``a`` from the largest to the smallest stride (its physical nesting order)."""
    return tuple(np.argsort([-abs(st) for st in a.strides], kind="stable"))


def flatten(x) -> np.ndarray:
    """``(N, d_1, ..., d_k) -> (N, d_1 ... d_k)`` in C order (PyTorch's ``flatten(1)``)."""
    x = as_float_array(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must have ndim >= 2 (a batch of arrays), got shape {x.shape}")
    return x.reshape(x.shape[0], -1)


def flatten_backward(dy, x_shape) -> np.ndarray:
    """Inverse of :func:`flatten` for the gradient: ``dy`` of shape (N, prod(x_shape[1:])) -> ``x_shape``."""
    dy = as_float_array(dy, "dy", ndim=2)
    x_shape = tuple(int(s) for s in x_shape)
    expected = (x_shape[0], int(np.prod(x_shape[1:], dtype=np.int64)))
    if dy.shape != expected:
        raise ValueError(f"dy must have shape (N, prod(x_shape[1:])) = {expected}, got {dy.shape}")
    return dy.reshape(x_shape)


def softmax_cross_entropy(logits, labels):
    """Mean softmax cross-entropy and its gradient (PyTorch's ``cross_entropy``, reduction 'mean').

    ``L = (1/N) sum_n [logsumexp(z_n) - z_n[y_n]]``, with the log-sum-exp shifted by the row
    maximum so that it neither overflows nor underflows; ``dL/dz = (softmax(z) - onehot(y)) / N``.

    Parameters
    ----------
    logits : ndarray, shape (N, C)
    labels : integer ndarray, shape (N,), values in [0, C)

    Returns
    -------
    loss : scalar of the logits' dtype
    dlogits : ndarray, shape (N, C)
    """
    z = as_float_array(logits, "logits", ndim=2)
    n, c = z.shape
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be an integer array of shape (N,) = ({n},), got dtype={labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape (N,) = ({n},) matching logits {z.shape}, got {labels.shape}")
    if n == 0:
        raise ValueError("logits must hold at least one sample (N >= 1) for a mean loss, got N = 0")
    if labels.min() < 0 or labels.max() >= c:
        raise ValueError(f"labels must lie in [0, C) = [0, {c}), got values in [{labels.min()}, {labels.max()}]")
    shifted = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_p = shifted - log_norm
    rows = np.arange(n)
    loss = -log_p[rows, labels].mean()
    dlogits = np.exp(log_p)
    dlogits[rows, labels] -= 1
    dlogits /= n
    return z.dtype.type(loss), dlogits
