"""Tucker tensor algebra: unfoldings, mode products and the ``TuckerTensor`` container.

Conventions (see ``docs/conventions.md`` for a worked example)
---------------------------------------------------------------
* **Unfolding.** ``unfold(X, i)`` moves mode ``i`` to the front and reshapes in C order:
  the remaining modes keep their increasing order and the *last* one runs fastest
  (TensorLy's convention; Kolda–Bader use F order, which permutes the columns only).
* **Kronecker identity** in that order, for ``X = C ×_1 U_1 ⋯ ×_d U_d``::

      Mat_i(X) = U_i Mat_i(C) (U_1 ⊗ ⋯ ⊗ U_{i-1} ⊗ U_{i+1} ⊗ ⋯ ⊗ U_d)^T

  (factors in *increasing* mode order, because the last index runs fastest).
* **Mode product.** ``mode_product(X, M, i)`` multiplies every mode-``i`` fibre by the
  ``J × n_i`` matrix ``M``: ``Mat_i(X ×_i M) = M Mat_i(X)``.

Nothing here imports any other module of the package except argument checks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import linalg
from .checks import as_float_array, check_instance, check_mode, check_ranks, check_rng, eps_of

#: Tolerance of :meth:`TuckerTensor.has_orthonormal_factors`, in units of ``max(n_i)·eps``.
ORTHONORMALITY_FACTOR = 100.0


def unfold(X, mode: int) -> np.ndarray:
    """Mode-``mode`` unfolding ``Mat_i(X)`` of shape ``(n_i, prod_{j≠i} n_j)`` (C order).

    Column index of entry ``X[k_0, …, k_{d-1}]`` is the C-order (row-major) linear
    index of the remaining indices ``(k_j)_{j≠i}`` in increasing ``j``.

    Examples
    --------
    The mode-1 fibres ``X[a, :, c]`` become the columns, the last remaining mode running fastest:

    >>> from tucker_ref import unfold
    >>> X = np.arange(24).reshape(2, 3, 4)
    >>> unfold(X, 1).shape
    (3, 8)
    >>> unfold(X, 1)[:, :5]
    array([[ 0,  1,  2,  3, 12],
           [ 4,  5,  6,  7, 16],
           [ 8,  9, 10, 11, 20]])
    """
    X = np.asarray(X)
    if X.ndim == 0:
        raise ValueError("X must have ndim >= 1 to be unfolded, got a scalar")
    mode = check_mode(mode, X.ndim)
    return np.moveaxis(X, mode, 0).reshape(X.shape[mode], -1)


def fold(M, mode: int, shape: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`unfold`: ``Ten_i(M)`` with ``fold(unfold(X, i), i, X.shape) == X``.

    Examples
    --------
    >>> from tucker_ref import fold, unfold
    >>> X = np.arange(24).reshape(2, 3, 4)
    >>> M = unfold(X, 2)
    >>> M.shape
    (4, 6)
    >>> bool(np.array_equal(fold(M, 2, X.shape), X))
    True
    """
    M = np.asarray(M)
    shape = tuple(int(s) for s in shape)
    mode = check_mode(mode, len(shape))
    rest = shape[:mode] + shape[mode + 1:]
    expected = (shape[mode], int(np.prod(rest, dtype=np.int64)))
    if M.ndim != 2 or M.shape != expected:
        raise ValueError(f"M must have shape {expected} to fold into mode {mode} of {shape}, got {M.shape}")
    return np.moveaxis(M.reshape((shape[mode],) + rest), 0, mode)


def mode_product(X, M, mode: int) -> np.ndarray:
    """Mode-``i`` product ``X ×_i M`` with ``M`` of shape ``(J, n_i)``: ``Mat_i(X ×_i M) = M Mat_i(X)``.

    Examples
    --------
    >>> from tucker_ref import mode_product, unfold
    >>> rng = np.random.default_rng(0)
    >>> X, M = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 3))
    >>> mode_product(X, M, 1).shape
    (2, 5, 4)
    >>> bool(np.allclose(unfold(mode_product(X, M, 1), 1), M @ unfold(X, 1)))
    True
    """
    X = np.asarray(X)
    M = np.asarray(M)
    mode = check_mode(mode, X.ndim)
    if M.ndim != 2 or M.shape[1] != X.shape[mode]:
        raise ValueError(
            f"M must be a matrix of shape (J, {X.shape[mode]}) for mode {mode} of a tensor of shape "
            f"{X.shape}, got shape {M.shape}"
        )
    return np.moveaxis(np.tensordot(X, M, axes=([mode], [1])), -1, mode)


def multi_mode_product(X, matrices, modes=None, transpose: bool = False) -> np.ndarray:
    """Apply ``X ×_{m_1} M_1 ×_{m_2} M_2 ⋯`` in the order the user gives.

    Parameters
    ----------
    X : ndarray
    matrices : sequence of 2-D arrays (``None`` entries are skipped: identity in that mode)
    modes : sequence of int, optional
        ``modes[k]`` is the mode that ``matrices[k]`` acts on; default ``0, 1, …``.
        No sorting happens: entry ``k`` of ``matrices`` always pairs with entry ``k`` of ``modes``.
    transpose : bool
        Use ``M_k^T`` instead of ``M_k`` (e.g. to project onto bases: ``X ×_i U_i^T``).

    Examples
    --------
    >>> from tucker_ref import mode_product, multi_mode_product
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((3, 4, 5))
    >>> A, B = rng.standard_normal((2, 3)), rng.standard_normal((6, 5))
    >>> Y = multi_mode_product(X, [A, B], modes=[0, 2])  # X ×_0 A ×_2 B
    >>> Y.shape, bool(np.allclose(Y, mode_product(mode_product(X, A, 0), B, 2)))
    ((2, 4, 6), True)
    >>> multi_mode_product(Y, [A, None, B], transpose=True).shape  # Y ×_0 A^T ×_2 B^T
    (3, 4, 5)
    """
    X = np.asarray(X)
    matrices = list(matrices)
    if modes is None:
        if len(matrices) > X.ndim:
            raise ValueError(
                f"matrices must have at most X.ndim = {X.ndim} entries when modes is None, got {len(matrices)}")
        modes = list(range(len(matrices)))
    modes = list(modes)
    if len(modes) != len(matrices):
        raise ValueError(f"modes must have one entry per matrix ({len(matrices)}), got {len(modes)}")
    seen = set()
    for k, m in enumerate(modes):
        m = check_mode(m, X.ndim, f"modes[{k}]")
        if m in seen:
            raise ValueError(f"modes must not repeat a mode, got {modes}")
        seen.add(m)
    for M, m in zip(matrices, modes):
        if M is None:
            continue
        M = np.asarray(M)
        X = mode_product(X, M.T if transpose else M, m)
    return X


def random_orthonormal(rng: np.random.Generator, n: int, r: int) -> np.ndarray:
    """``n × r`` matrix with orthonormal columns: ``Q`` of a Gaussian matrix's QR, ``diag(R) > 0``.

    With the sign of ``R``'s diagonal fixed, ``Q`` is Haar-distributed (not merely orthonormal).
    The one builder of random bases: the model initialisation, the golden inputs, the test
    strategies and the validation scripts all draw theirs here, so one seed gives one basis.

    Parameters
    ----------
    rng : numpy.random.Generator
    n, r : int, ``0 ≤ r ≤ n``

    Examples
    --------
    >>> from tucker_ref.tucker import random_orthonormal
    >>> U = random_orthonormal(np.random.default_rng(0), 5, 3)
    >>> U.shape, bool(np.allclose(U.T @ U, np.eye(3)))
    ((5, 3), True)
    """
    check_rng(rng)
    if not 0 <= r <= n:
        raise ValueError(f"r must be in [0, n] = [0, {n}], got {r}")
    Q, R = np.linalg.qr(rng.standard_normal((n, r)))
    signs = np.sign(np.diag(R))
    signs[signs == 0] = 1.0
    return Q * signs


def random_tucker(rng: np.random.Generator, shape, ranks, *, core=None) -> "TuckerTensor":
    """A random Tucker tensor ``C ×_i U_i`` with Haar factors ``U_i`` (:func:`random_orthonormal`).

    The one builder of random Tucker tensors: the test strategies (which choose the core's
    spectrum), the test problems and the tests draw theirs here. From ``rng``, in this order:
    the core (standard Gaussian of shape ``ranks``) unless ``core`` is given, then ``U_1, …, U_d``.

    Parameters
    ----------
    rng : numpy.random.Generator
    shape, ranks : sequences of d ints, ``1 ≤ r_i ≤ n_i``
    core : ndarray of shape ``ranks``, optional

    Examples
    --------
    >>> from tucker_ref.tucker import random_tucker
    >>> T = random_tucker(np.random.default_rng(0), (6, 5, 4), (3, 2, 2))
    >>> T
    TuckerTensor(shape=(6, 5, 4), ranks=(3, 2, 2), dtype=float64)
    >>> T.has_orthonormal_factors()
    True
    """
    check_rng(rng)
    shape = tuple(int(n) for n in shape)
    ranks = check_ranks(ranks, shape)
    if core is None:
        core = rng.standard_normal(ranks)
    elif np.shape(core) != ranks:
        raise ValueError(f"core must have shape ranks = {ranks}, got {np.shape(core)}")
    return TuckerTensor(core, [random_orthonormal(rng, n, r) for n, r in zip(shape, ranks)])


class TuckerTensor:
    """A tensor in Tucker format ``X = C ×_1 U_1 ×_2 U_2 ⋯ ×_d U_d`` (docs/theory.md §1).

    Parameters
    ----------
    core : ndarray, shape ``(r_1, …, r_d)``
    factors : sequence of d arrays, factor ``i`` of shape ``(n_i, r_i)``
        Orthonormal columns are what the integrators maintain, but are not required here;
        :meth:`orthonormalize` produces them.

    The dtype is the common floating type of core and factors (float32 stays float32).

    Examples
    --------
    >>> from tucker_ref import TuckerTensor
    >>> rng = np.random.default_rng(0)
    >>> core = rng.standard_normal((2, 3, 2))
    >>> factors = [rng.standard_normal((n, r)) for n, r in zip((4, 5, 6), core.shape)]
    >>> T = TuckerTensor(core, factors)
    >>> T.shape, T.ranks, T.n_params  # 2·3·2 + 4·2 + 5·3 + 6·2 stored numbers
    ((4, 5, 6), (2, 3, 2), 47)
    >>> X = T.full()  # the dense C ×_1 U_1 ×_2 U_2 ×_3 U_3
    >>> X.shape, bool(np.isclose(T.norm(), np.linalg.norm(X)))
    ((4, 5, 6), True)
    """

    __slots__ = ("core", "factors")

    def __init__(self, core, factors):
        core = as_float_array(core, "core")
        if core.ndim == 0:
            raise ValueError("core must have ndim >= 1, got a scalar")
        if isinstance(factors, np.ndarray) or not isinstance(factors, Sequence):
            raise TypeError("factors must be a list or tuple of 2-D arrays, one per mode of core")
        if len(factors) != core.ndim:
            raise ValueError(
                f"factors must have one matrix per mode of core (core.ndim = {core.ndim}), got {len(factors)}"
            )
        facs = []
        for i, U in enumerate(factors):
            U = as_float_array(U, f"factors[{i}]")
            if U.ndim != 2 or U.shape[1] != core.shape[i]:
                raise ValueError(
                    f"factors[{i}] must have shape (n_{i}, {core.shape[i]}) to match core.shape[{i}], got {U.shape}"
                )
            facs.append(U)
        dtype = np.result_type(core, *facs)
        self.core = core.astype(dtype, copy=False)
        self.factors = [U.astype(dtype, copy=False) for U in facs]

    # -- shape information -------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return self.core.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(U.shape[0] for U in self.factors)

    @property
    def ranks(self) -> tuple[int, ...]:
        return tuple(self.core.shape)

    @property
    def dtype(self):
        return self.core.dtype

    @property
    def n_params(self) -> int:
        """Stored numbers ``∏ r_i + Σ n_i r_i`` (the count used for compression rates, docs/results.md#setup)."""
        return int(self.core.size + sum(U.size for U in self.factors))

    def __repr__(self) -> str:
        return f"TuckerTensor(shape={self.shape}, ranks={self.ranks}, dtype={self.dtype})"

    # -- conversions ---------------------------------------------------------------------
    def full(self) -> np.ndarray:
        """The dense tensor ``C ×_1 U_1 ⋯ ×_d U_d``."""
        return multi_mode_product(self.core, self.factors)

    def copy(self) -> "TuckerTensor":
        return TuckerTensor(self.core.copy(), [U.copy() for U in self.factors])

    def astype(self, dtype) -> "TuckerTensor":
        return TuckerTensor(self.core.astype(dtype), [U.astype(dtype) for U in self.factors])

    def orthonormalize(self) -> "TuckerTensor":
        """Same tensor with orthonormal factors: ``U_i = Q_i R_i`` (reduced QR), ``C ← C ×_i R_i``.

        Requires ``r_i <= n_i`` (a reduced QR of a tall-or-square factor).
        """
        qs, rs = [], []
        for i, U in enumerate(self.factors):
            if U.shape[1] > U.shape[0]:
                raise ValueError(
                    f"factors[{i}] has more columns ({U.shape[1]}) than rows ({U.shape[0]}); "
                    "cannot orthonormalize without changing the rank"
                )
            q, r = linalg.qr(U)
            qs.append(q)
            rs.append(r)
        return TuckerTensor(multi_mode_product(self.core, rs), qs)

    def has_orthonormal_factors(self) -> bool:
        """``‖U_i^T U_i − I‖_2 ≤ ORTHONORMALITY_FACTOR·max(n)·eps`` for every factor (and ``r_i ≤ n_i``).

        The tolerance is in units of the dtype's eps, so float32 factors built in float64
        and rounded pass; factors that are only approximately orthonormal fail.
        """
        tol = ORTHONORMALITY_FACTOR * max(self.shape) * eps_of(self.dtype)

        def orthonormal(U):
            if U.shape[1] > U.shape[0]:
                return False
            E = U.T @ U - np.eye(U.shape[1], dtype=U.dtype)
            # ‖E‖_2 ≤ ‖E‖_F decides the usual case without an eigenvalue solve (this check runs
            # on every integrator step); only a borderline E needs the exact spectral norm.
            return np.linalg.norm(E) <= tol or float(np.abs(linalg.eigvalsh(E)).max(initial=0.0)) <= tol

        return all(orthonormal(U) for U in self.factors)

    # -- factored norms --------------------------------------------------------------------
    def norm(self) -> float:
        """Frobenius norm without forming the full tensor: ``‖C ×_i R_i‖`` with ``U_i = Q_i R_i``.

        Using the triangular factors (not the Gram matrices ``U_i^T U_i``) keeps the
        computation free of cancellation and of squared condition numbers.

        Examples
        --------
        >>> from tucker_ref import TuckerTensor
        >>> rng = np.random.default_rng(0)
        >>> T = TuckerTensor(rng.standard_normal((2, 2)), [rng.standard_normal((6, 2)), rng.standard_normal((5, 2))])
        >>> bool(np.isclose(T.norm(), np.linalg.norm(T.full())))  # any factors, T.full() not formed
        True
        >>> Q = T.orthonormalize()  # the same tensor; with orthonormal factors ‖X‖ = ‖C‖
        >>> bool(np.isclose(Q.norm(), T.norm())), bool(np.isclose(Q.norm(), np.linalg.norm(Q.core)))
        (True, True)
        """
        rs = [linalg.qr_r(U) if U.shape[0] >= U.shape[1] else U for U in self.factors]
        return float(np.linalg.norm(multi_mode_product(self.core, rs)))

    def inner(self, other: "TuckerTensor") -> float:
        """Frobenius inner product ``⟨X, Y⟩ = ⟨C_X, C_Y ×_i (U_i^T V_i)⟩`` in factored form.

        Examples
        --------
        >>> from tucker_ref.tucker import random_tucker
        >>> rng = np.random.default_rng(0)
        >>> X = random_tucker(rng, (5, 4, 3), (2, 2, 2))
        >>> Y = random_tucker(rng, (5, 4, 3), (3, 2, 2))
        >>> bool(np.isclose(X.inner(Y), np.vdot(X.full(), Y.full())))
        True
        """
        check_instance(other, TuckerTensor, "other")
        if other.shape != self.shape:
            raise ValueError(f"other must have shape {self.shape}, got {other.shape}")
        cross = [U.T @ V for U, V in zip(self.factors, other.factors)]
        return float(np.vdot(self.core, multi_mode_product(other.core, cross)))

    def project(self, X) -> np.ndarray:
        """``X ×_i U_i^T`` — the coefficients of a dense tensor in this tensor's bases."""
        X = np.asarray(X)
        if X.shape != self.shape:
            raise ValueError(f"X must have shape {self.shape}, got {X.shape}")
        return multi_mode_product(X, self.factors, transpose=True)
