"""Argument validation shared by every module: the one place a check and its message are written.

Each helper raises ``ValueError`` or ``TypeError`` with a message that names the
argument and the expected form, so that a user's script fails at the call that was
wrong and not three layers further down. A public function validates its arguments once,
here, and passes the validated values on.

The truncation tolerance has one vocabulary from the command line down to the rule
(docs/algorithms.md §3): the relative tolerance ``tau`` (``ϑ = τ‖C‖_F``) or the absolute
threshold ``theta`` (``ϑ = θ``), checked by :func:`check_tolerance`; the clamp interval of
the rank-adaptive ranks is ``rmin``/``rmax``, checked by :func:`check_rank_bounds`. Both are
checked once, when a :class:`tucker_ref.truncation.TruncationRule` is made; the steps below
the entry point pass the rule on.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

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


def check_instance(value, cls: type, name: str):
    """``value`` itself when it is a ``cls``; else ``TypeError`` naming ``name`` and the type received."""
    if not isinstance(value, cls):
        raise TypeError(f"{name} must be a {cls.__name__}, got {type(value).__name__}")
    return value


def check_unit_interval(value, name: str) -> float:
    """Validate a real number in ``[0, 1)`` (a momentum ``β``, an Adam ``β_1``/``β_2``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a real number in [0, 1), got {value!r}")
    return float(value)


def check_rng(rng, name: str = "rng") -> np.random.Generator:
    """Validate a random generator: a seeded ``numpy.random.Generator`` (so that draws replay)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{name} must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


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


def check_tolerance(tau, theta) -> tuple[float, bool]:
    """Validate a truncation tolerance: ``(value, relative)`` with ``ϑ = value·‖C‖_F`` when ``relative``.

    ``tau`` is relative (``ϑ = τ‖C‖_F``), ``theta`` the absolute threshold (``ϑ = θ``);
    giving both is an error and giving neither means ``τ = 0`` (keep every nonzero singular value).
    """
    if tau is not None and theta is not None:
        raise ValueError("give at most one of tau (relative tolerance) and theta (absolute tolerance), not both")
    if theta is not None:
        return check_nonneg(theta, "theta"), False
    tau = check_nonneg(tau, "tau")
    return (0.0 if tau is None else tau), True


def per_mode(value, d, name, default):
    """A per-mode setting (``rmin``, ``rmax``) from one int, ``None`` or one entry per mode, validated."""
    if value is None:
        return [default] * d
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = [int(value)] * d
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be an int or a sequence of {d} ints, got {value!r}")
    value = list(value)
    if len(value) != d:
        raise ValueError(f"{name} must be an int or one entry per mode ({d}), got {value!r}")
    for i, v in enumerate(value):
        if v is None:
            value[i] = default
            continue
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}[{i}] must be a positive integer, got {v!r}")
        value[i] = int(v)
    return value


def check_rank_bounds(rmin, rmax, ndim: int):
    """Validate ``rmin``/``rmax`` (an int or one per mode; ``rmax=None`` = no cap) with ``rmin ≤ rmax``.

    Returns the per-mode lists ``(rmin_i, rmax_i)`` (``rmax_i`` ``None`` where uncapped).
    """
    lo = per_mode(rmin, ndim, "rmin", default=1)
    hi = per_mode(rmax, ndim, "rmax", default=None)
    for i in range(ndim):
        if hi[i] is not None and lo[i] > hi[i]:
            raise ValueError(f"rmin ({lo[i]}) must not exceed rmax ({hi[i]}) in mode {i}")
    return lo, hi


def check_rank_bound_spec(rmin, rmax, ndim: int | None = None):
    """``(rmin, rmax, ndim)`` of a truncation rule, validated, before it meets a tensor.

    With ``ndim`` given, or when ``rmin`` or ``rmax`` is a sequence (its length is then the
    ``ndim``), both become per-mode tuples by :func:`check_rank_bounds`. Otherwise both stay
    scalars that apply to a tensor of any order: ``rmin`` a positive integer, ``rmax`` ``None``
    (no cap) or a positive integer ``≥ rmin``; ``ndim`` is then ``None``.
    """
    if ndim is None:
        sizes = [len(v) for v in (rmin, rmax) if isinstance(v, Iterable) and not isinstance(v, (str, bytes))]
        if not sizes:
            rmin = check_positive_int(rmin, "rmin")
            rmax = None if rmax is None else check_positive_int(rmax, "rmax")
            if rmax is not None and rmax < rmin:
                raise ValueError(f"rmax ({rmax}) must be >= rmin ({rmin})")
            return rmin, rmax, None
        ndim = sizes[0]
    lo, hi = check_rank_bounds(rmin, rmax, ndim)
    return tuple(lo), tuple(hi), ndim


def check_fraction(value, name: str) -> float:
    """Validate a fraction in ``(0, 1]`` (of a mode's dimension, e.g. ``rmax_fraction``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (np.isfinite(value) and 0 < value <= 1):
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    return float(value)


def eps_of(dtype) -> float:
    """Machine epsilon of a (real or complex) floating dtype."""
    dt = np.dtype(dtype)
    return float(np.finfo(dt if dt.kind in "fc" else np.float64).eps)
