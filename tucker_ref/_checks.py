"""Argument validation shared by every module.

Each helper raises ``ValueError`` or ``TypeError`` with a message that names the
argument and the expected form, so that a user's script fails at the call that was
wrong and not three layers further down.
"""

from __future__ import annotations

import numbers

import numpy as np

#: Floating dtypes the library computes in. float64 is the default; float32 is
#: supported end to end (results stay float32).
SUPPORTED_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


def as_float_array(x, name: str, *, ndim: int | None = None, allow_nonfinite: bool = False):
    """Return ``x`` as a floating ndarray, validated.

    Integer and boolean input is promoted to float64; float32 and float64 are kept.
    Complex input is accepted (it is used by complex-step derivative checks).
    """
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be an array of real numbers, got {type(x).__name__}")
    arr = np.asarray(x)
    if arr.dtype == object:
        raise TypeError(f"{name} must be a numeric array, got dtype=object")
    if arr.dtype.kind in "biu":
        arr = arr.astype(np.float64)
    elif arr.dtype.kind == "f":
        if arr.dtype not in SUPPORTED_DTYPES:
            arr = arr.astype(np.float64)
    elif arr.dtype.kind != "c":
        raise TypeError(f"{name} must be a numeric array, got dtype={arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have ndim={ndim}, got shape {arr.shape}")
    if not allow_nonfinite and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or Inf; expected finite values")
    return arr


def check_mode(mode, ndim: int, name: str = "mode") -> int:
    """Validate a mode index (negative indices count from the end) and return it in [0, ndim)."""
    if isinstance(mode, bool) or not isinstance(mode, numbers.Integral):
        raise TypeError(f"{name} must be an integer in [-{ndim}, {ndim}), got {mode!r}")
    if not -ndim <= mode < ndim:
        raise ValueError(f"{name} must be in [-{ndim}, {ndim}) for a {ndim}-way tensor, got {mode}")
    return int(mode) % ndim


def check_nonneg(value, name: str, *, allow_none: bool = True):
    """Validate a non-negative finite real number (a tolerance, a learning rate)."""
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{name} is required (a non-negative number)")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a non-negative real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_ranks(ranks, shape, name: str = "ranks") -> tuple[int, ...]:
    """Validate a rank tuple against a tensor shape: one positive integer per mode, r_i <= n_i."""
    if isinstance(ranks, numbers.Integral) and not isinstance(ranks, bool):
        ranks = (int(ranks),) * len(shape)
    try:
        ranks = tuple(ranks)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of {len(shape)} positive integers, got {ranks!r}") from None
    if len(ranks) != len(shape):
        raise ValueError(f"{name} must have one entry per mode ({len(shape)}), got {ranks!r}")
    out = []
    for i, (r, n) in enumerate(zip(ranks, shape)):
        if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r < 1:
            raise ValueError(f"{name}[{i}] must be a positive integer, got {r!r}")
        if r > n:
            raise ValueError(f"{name}[{i}] = {r} exceeds the dimension n_{i} = {n} of mode {i}")
        out.append(int(r))
    return tuple(out)


def eps_of(dtype) -> float:
    """Machine epsilon of a (real or complex) floating dtype."""
    dt = np.dtype(dtype)
    return float(np.finfo(dt if dt.kind in "fc" else np.float64).eps)
