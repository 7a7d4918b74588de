"""tucker_ref.linalg: the factorizations in the working precision (docs/conventions.md §8).

float64 must give numpy.linalg's results bit for bit (it is NumPy's call); float32 must stay
float32 and be accurate to float32 rounding (it is computed by the single-precision drivers,
not in float64 and rounded, so it is compared with float32-level bounds, not with NumPy's
bits), on one thread of scipy's OpenBLAS, whose setting is restored afterwards.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from pathlib import Path

from threadpoolctl import threadpool_info

from tucker_ref import linalg

SGESDD_FAILURE = Path(__file__).parent / "data" / "sgesdd_failure.npy"

SHAPES = st.tuples(st.integers(1, 40), st.integers(1, 40))


def _matrix(shape, seed, dtype, decay=0.0):
    """A test matrix with singular values ``10^(-decay·k/K)`` (graded when ``decay > 0``)."""
    rng = np.random.default_rng(seed)
    m, n = shape
    k = min(m, n)
    P = np.linalg.qr(rng.standard_normal((m, k)))[0]
    R = np.linalg.qr(rng.standard_normal((n, k)))[0]
    s = 10.0 ** (-decay * np.arange(k) / max(k, 1))
    return ((P * s) @ R.T).astype(dtype)


def _unit_roundoff(dtype):
    return float(np.finfo(dtype).eps)


@given(shape=SHAPES, seed=st.integers(0, 2**32 - 1), decay=st.sampled_from([0.0, 3.0, 12.0]))
@example(shape=(40, 3), seed=0, decay=12.0)
@example(shape=(3, 40), seed=1, decay=0.0)
def test_float64_factorizations_are_numpys_bit_for_bit(shape, seed, decay):
    A = _matrix(shape, seed, np.float64, decay)
    event(f"decay {decay}")
    G = A.T @ A
    pairs = [
        (linalg.svd(A), np.linalg.svd(A, full_matrices=False)),
        (linalg.left_svd(A), np.linalg.svd(A, full_matrices=False)[:2]),
        ((linalg.singular_values(A),), (np.linalg.svd(A, compute_uv=False),)),
        (linalg.qr(A), np.linalg.qr(A)),
        ((linalg.qr_r(A),), (np.linalg.qr(A, mode="r"),)),
        ((linalg.eigvalsh(G),), (np.linalg.eigvalsh(G),)),
    ]
    for ours, numpys in pairs:
        assert len(ours) == len(numpys)
        for a, b in zip(ours, numpys):
            assert a.dtype == b.dtype == np.float64 and a.shape == b.shape
            assert np.array_equal(a, b)


@given(shape=SHAPES, seed=st.integers(0, 2**32 - 1), decay=st.sampled_from([0.0, 3.0]))
@example(shape=(40, 40), seed=2, decay=3.0)
@example(shape=(5, 40), seed=3, decay=0.0)
@example(shape=(20, 40), seed=4, decay=3.0)
def test_float32_factorizations_stay_float32_and_accurate(shape, seed, decay):
    A64 = _matrix(shape, seed, np.float64, decay)
    A = A64.astype(np.float32)
    event("wide (LQ route)" if 2 * shape[0] <= shape[1] else "not wide")
    # Backward stability in float32: residuals and loss of orthonormality of order
    # max(m, n)·eps32 (normwise), and singular values within that of the float64 ones of A.
    tol = 30 * max(shape) * _unit_roundoff(np.float32)
    U, s, Vt = linalg.svd(A)
    assert U.dtype == s.dtype == Vt.dtype == np.float32
    s64 = np.linalg.svd(A.astype(np.float64), compute_uv=False)
    assert np.max(np.abs(s - s64)) <= tol * s64[0]
    assert np.linalg.norm((U * s) @ Vt - A) <= tol * np.linalg.norm(A)
    assert np.linalg.norm(U.T @ U - np.eye(U.shape[1])) <= tol
    assert np.linalg.norm(Vt @ Vt.T - np.eye(Vt.shape[0])) <= tol
    sv = linalg.singular_values(A)
    assert sv.dtype == np.float32 and np.max(np.abs(sv - s64)) <= tol * s64[0]
    # Left vectors and values alone (through the LQ triangle when A is wide): P has the
    # singular values as the row norms of P^T A, and P^T A A^T P is diagonal.
    P, sl = linalg.left_svd(A)
    assert P.dtype == sl.dtype == np.float32 and P.shape == U.shape and sl.shape == s.shape
    assert np.max(np.abs(sl - s64)) <= tol * s64[0]
    assert np.linalg.norm(P.T @ P - np.eye(P.shape[1])) <= tol
    B = P.T.astype(np.float64) @ A64
    assert np.linalg.norm(B @ B.T - np.diag(s64**2)) <= 4 * tol * s64[0] ** 2
    Q, R = linalg.qr(A)
    assert Q.dtype == R.dtype == np.float32
    assert np.linalg.norm(Q @ R - A) <= tol * np.linalg.norm(A)
    assert np.linalg.norm(Q.T @ Q - np.eye(Q.shape[1])) <= tol
    assert np.allclose(np.triu(R), R)
    R_only = linalg.qr_r(A)
    assert R_only.dtype == np.float32 and R_only.shape == R.shape
    np.testing.assert_allclose(R_only, R, rtol=0, atol=tol * np.linalg.norm(A))
    G = A.T @ A
    w = linalg.eigvalsh(G)
    assert w.dtype == np.float32
    assert np.max(np.abs(w - np.linalg.eigvalsh(G.astype(np.float64)))) <= tol * float(np.linalg.norm(G, 2))


@pytest.mark.parametrize("call", [linalg.svd, linalg.left_svd, linalg.singular_values, linalg.qr, linalg.qr_r,
                                  linalg.eigvalsh])
def test_non_finite_float32_input_raises_instead_of_reaching_lapack(call):
    A = np.eye(3, dtype=np.float32)
    A[1, 2] = np.nan
    with pytest.raises(ValueError, match="infs or NaNs"):
        call(A)


@pytest.mark.skipif(linalg.scipy_blas_threads() is None, reason="scipy does not use its bundled OpenBLAS here")
@pytest.mark.parametrize("call", [linalg.svd, linalg.left_svd, linalg.singular_values, linalg.qr, linalg.qr_r,
                                  linalg.eigvalsh])
def test_float32_calls_run_scipys_openblas_on_one_thread_and_restore_it(call, monkeypatch):
    seen = []

    def recording(real):
        def wrapper(*args, **kwargs):
            seen.append(linalg.scipy_blas_threads())
            return real(*args, **kwargs)
        return wrapper

    import scipy.linalg as sla

    for name in ("svd", "qr", "eigh"):
        monkeypatch.setattr(sla, name, recording(getattr(sla, name)))
    # Two threads before the call: a restore that wrote 1 back would be invisible at 1 (CI's setting).
    get, put = linalg._scipy_openblas()
    original = get()
    put(2)
    try:
        if get() != 2:
            pytest.skip("scipy's OpenBLAS cannot run two threads here")
        call(np.eye(4, dtype=np.float32))
        assert seen == [1]
        assert get() == 2
    finally:
        put(original)
    call(np.eye(4))  # float64: NumPy's call, scipy untouched
    assert seen == [1]


def test_scipys_bundled_openblas_is_found_wherever_threadpoolctl_sees_it():
    """If this fails, scipy renamed its OpenBLAS or its thread symbols: the float32 calls would
    run that OpenBLAS threaded next to NumPy's, and the two pools would spin against each other."""
    scipy_openblas = [info for info in threadpool_info()
                      if info["internal_api"] == "openblas" and "scipy_openblas-" in info["filepath"]]
    if not scipy_openblas:
        pytest.skip("scipy does not bring its own OpenBLAS here")
    assert linalg.scipy_blas_threads() == scipy_openblas[0]["num_threads"]


def test_float32_svd_of_the_matrix_sgesdd_fails_on():
    """A 197 × 196 augmented fc1 core from a training run (tdlrt, tau 0.05, seed 2, one BLAS thread)
    on which scipy's ``sgesdd`` stops with "SVD did not converge" here; the fallback factors it."""
    A = np.load(SGESDD_FAILURE)
    assert A.dtype == np.float32 and A.shape == (197, 196)
    s64 = np.linalg.svd(A.astype(np.float64), compute_uv=False)
    tol = 30 * max(A.shape) * _unit_roundoff(np.float32)
    U, s, Vt = linalg.svd(A)
    assert U.dtype == s.dtype == Vt.dtype == np.float32
    assert np.linalg.norm((U * s) @ Vt - A) <= tol * np.linalg.norm(A)
    assert np.linalg.norm(U.T @ U - np.eye(U.shape[1])) <= tol
    assert np.max(np.abs(s - s64)) <= tol * s64[0]
    assert np.max(np.abs(linalg.singular_values(A) - s64)) <= tol * s64[0]
    P, sl = linalg.left_svd(A)
    assert np.max(np.abs(sl - s64)) <= tol * s64[0] and np.linalg.norm(P.T @ P - np.eye(P.shape[1])) <= tol


@pytest.mark.parametrize("failing", [("gesdd",), ("gesdd", "gesvd")])
@pytest.mark.parametrize("call", [linalg.svd, linalg.left_svd, linalg.singular_values])
def test_float32_svd_falls_back_when_a_driver_does_not_converge(call, failing, monkeypatch):
    import scipy.linalg as sla

    real, drivers = sla.svd, []

    def flaky(A, *args, lapack_driver="gesdd", **kwargs):
        drivers.append(lapack_driver)
        if lapack_driver in failing:
            raise np.linalg.LinAlgError("SVD did not converge")
        return real(A, *args, lapack_driver=lapack_driver, **kwargs)

    monkeypatch.setattr(sla, "svd", flaky)
    A = _matrix((12, 9), 0, np.float32, 3.0)
    out = call(A)
    s = out if call is linalg.singular_values else out[1]
    assert s.dtype == np.float32
    np.testing.assert_allclose(s, np.linalg.svd(A.astype(np.float64), compute_uv=False), rtol=0, atol=1e-5)
    assert drivers == ["gesdd", "gesvd"]  # and, when both fail, NumPy's float64 route
