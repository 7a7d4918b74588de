"""Dense factorizations in the working precision: the SVD, QR and symmetric eigenvalue calls of the library.

``numpy.linalg`` computes every float32 factorization in float64 and rounds the result back
(its "lite" design). That costs twice the time of the float32 LAPACK routine and yields no
accuracy a float32 training run can keep: the GEMMs around it are float32 already. So:

* float64 (and anything that is not float32) goes to ``numpy.linalg`` unchanged: float64
  results are NumPy's, bit for bit, at every thread count;
* float32 goes to the single-precision LAPACK drivers through :mod:`scipy.linalg`
  (``sgesdd``, ``sgeqrf``/``sorgqr``, ``ssyevd``, the drivers NumPy runs in double):
  backward stable in float32, as PyTorch and JAX compute float32 factorizations
  (docs/conventions.md §8).

scipy's wheels bring a second OpenBLAS next to NumPy's. Two threaded OpenBLAS pools in one
process undo each other: an idle pool's worker spin-waits on a core for about 0.1 s after
each call, so the other pool's threads lose their time slices (the README's training run took
88 s instead of 16 with both pools at two threads). The float32 calls therefore run scipy's
OpenBLAS on one thread, restoring its setting afterwards; these factorizations are small
(a few hundred rows), where one thread was also measured faster for tall-skinny QR and SVD
(docs/performance.md). Where scipy's OpenBLAS is not found (other builds, e.g. Accelerate or
MKL), the calls run as the build decides.

The callers check their arguments (shapes, finiteness) before they get here; these functions
only dispatch. scipy's ``check_finite`` stays on, so a NaN that slipped through raises
``ValueError`` (as ``numpy.linalg`` raises ``LinAlgError``) instead of reaching LAPACK.
"""

from __future__ import annotations

import ctypes
import functools
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = ["eigvalsh", "left_svd", "qr", "qr_r", "scipy_blas_threads", "singular_values", "svd"]


@functools.lru_cache(maxsize=1)
def _sla():
    """:mod:`scipy.linalg`, imported at the first float32 factorization (importing it takes about
    0.2 s, four times the rest of ``import tucker_ref``; float64 work never needs it)."""
    import scipy.linalg

    return scipy.linalg


@functools.lru_cache(maxsize=1)
def _scipy_openblas():
    """``(get_num_threads, set_num_threads)`` of the OpenBLAS bundled with scipy's wheel, or ``None``."""
    import scipy

    _sla()  # loads the library this looks up
    libs = Path(scipy.__file__).resolve().parent.parent / "scipy.libs"
    for path in sorted(libs.glob("*scipy_openblas*")):
        try:
            lib = ctypes.CDLL(str(path))  # the copy scipy.linalg already loaded: same file, same handle
            get, put = lib.scipy_openblas_get_num_threads, lib.scipy_openblas_set_num_threads
        except (OSError, AttributeError):
            continue
        get.restype, get.argtypes = ctypes.c_int, []
        put.restype, put.argtypes = None, [ctypes.c_int]
        return get, put
    return None


def scipy_blas_threads() -> int | None:
    """Threads of scipy's bundled OpenBLAS (``None`` when scipy uses another BLAS)."""
    found = _scipy_openblas()
    return None if found is None else int(found[0]())


@contextmanager
def _one_thread():
    """scipy's OpenBLAS on one thread inside the block (its worker would spin against NumPy's pool)."""
    found = _scipy_openblas()
    if found is None:
        yield
        return
    get, put = found
    before = get()
    put(1)
    try:
        yield
    finally:
        put(before)


def _single(A) -> bool:
    return isinstance(A, np.ndarray) and A.dtype == np.float32


def _svd32(A: np.ndarray, compute_uv: bool = True):
    """Reduced float32 SVD by ``sgesdd``; where it does not converge, by ``sgesvd``, then in float64.

    ``sgesdd`` fails on some ordinary matrices: a 197 × 196 augmented fc1 core of a training
    run (entries in [-2.6, 3.0], singular values from 3.0 down to 2e-7) makes it stop with
    "SLASCL parameter number 4 had an illegal value", which LAPACK prints, and "SVD did not
    converge", while ``sgesvd`` (QR iteration) and the float64 drivers factor it
    (tests/data/sgesdd_failure.npy). The float64 last resort is NumPy's route, rounded back.
    """
    sla = _sla()
    with _one_thread():
        for driver in ("gesdd", "gesvd"):
            try:
                return sla.svd(A, full_matrices=False, compute_uv=compute_uv, lapack_driver=driver)
            except np.linalg.LinAlgError:
                continue
    out = np.linalg.svd(A.astype(np.float64), full_matrices=False, compute_uv=compute_uv)
    return tuple(x.astype(np.float32) for x in out) if compute_uv else out.astype(np.float32)


def svd(A: np.ndarray):
    """Reduced SVD ``A = U diag(s) Vt`` (``gesdd``): ``U`` is ``(m, k)``, ``s`` ``(k,)``, ``Vt`` ``(k, n)``, ``k = min(m, n)``."""
    if not _single(A):
        return np.linalg.svd(A, full_matrices=False)
    return _svd32(A)


def _wide(A) -> bool:
    # A few rows and many columns: the unfoldings of a core along a small mode.
    return A.ndim == 2 and 0 < 2 * A.shape[0] <= A.shape[1]


def _lq_triangle(A: np.ndarray) -> np.ndarray:
    """``L = R^T`` (``m × m``) of ``A = L Q^T`` for a wide ``A``: same left singular vectors and values."""
    return qr_r(A.T).T


def left_svd(A: np.ndarray):
    """``(U, s)`` of the reduced SVD ``A = U diag(s) Vt``, without ``Vt``.

    float32 input with at least twice as many columns as rows goes through the LQ
    factorization ``A = L Q^T`` (Householder QR of ``A^T``, ``Q`` never formed) and the SVD of
    the small ``L``, which has the left singular vectors and values of ``A``: both steps are
    backward stable, and the route skips the ``k × n`` right vectors that ``gesdd`` would form
    (2-4× faster for the 50 × 500 and 20 × 1250 core unfoldings of LeNet5's conv2). Otherwise
    as :func:`svd`.
    """
    if _single(A) and _wide(A):
        U, s, _ = _svd32(_lq_triangle(A))
        return U, s
    U, s, _ = svd(A)
    return U, s


def singular_values(A: np.ndarray) -> np.ndarray:
    """Singular values of ``A`` in descending order, without the vectors (``gesdd``, ``jobz='N'``).

    float32 input with at least twice as many columns as rows goes through its LQ triangle, as
    in :func:`left_svd`.
    """
    if not _single(A):
        return np.linalg.svd(A, compute_uv=False)
    return _svd32(_lq_triangle(A) if _wide(A) else A, compute_uv=False)


def qr(A: np.ndarray):
    """Reduced QR ``A = Q R`` (``geqrf`` + ``orgqr``): ``Q`` is ``(m, k)``, ``R`` ``(k, n)``, ``k = min(m, n)``.

    The signs are LAPACK's (Householder); callers that need ``diag(R) ≥ 0`` fix them.
    """
    if not _single(A):
        return np.linalg.qr(A)
    with _one_thread():
        return _sla().qr(A, mode="economic")


def qr_r(A: np.ndarray) -> np.ndarray:
    """``R`` of the reduced QR of ``A``, shape ``(min(m, n), n)``, without forming ``Q``."""
    if not _single(A):
        return np.linalg.qr(A, mode="r")
    with _one_thread():
        (R,) = _sla().qr(A, mode="r")
    return R[: min(A.shape)]


def eigvalsh(A: np.ndarray) -> np.ndarray:
    """Eigenvalues of the symmetric ``A`` in ascending order (``syevd``, lower triangle)."""
    if not _single(A):
        return np.linalg.eigvalsh(A)
    with _one_thread():
        return _sla().eigh(A, eigvals_only=True, driver="evd")
