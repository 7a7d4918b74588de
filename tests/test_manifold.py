"""Tangent geometry of the fixed-rank Tucker manifold (docs/theory.md §2)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tucker_ref import (
    TangentVector,
    TuckerTensor,
    feasible_ranks,
    manifold_dim,
    normal_component_norm,
    random_tangent_vector,
    tangent_projection,
    tangent_vector,
    truncate,
)
from tucker_ref.tucker import multi_mode_product, unfold
from tucker_ref.testing.oracles import adjoint_check, relative_error
from tucker_ref.testing.strategies import (
    random_orthonormal,
    random_tucker,
    seeds,
    shapes,
    tucker_tensors,
    unfolding_condition_numbers,
)

EPS = np.finfo(np.float64).eps
EPS32 = float(np.finfo(np.float32).eps)
MIN_SIGMA = 1e-3


def _margin(Y, eps=EPS):
    """Rounding scale of the projection: δU_i = N_i Mat_i(C)^+ is mapped back through C, so
    errors are ~eps·cond(Mat_i(C)) relative to ‖Z‖ (times a small size-dependent constant)."""
    return 100 * eps * max(unfolding_condition_numbers(Y.core.astype(np.float64)))


@given(tucker_tensors(min_sigma=MIN_SIGMA), seeds())
def test_projection_is_an_orthogonal_projector(Y, seed):
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal(Y.shape)
    W = rng.standard_normal(Y.shape)
    PZ = tangent_projection(Y, Z)
    tol = _margin(Y)
    # idempotent
    assert relative_error(tangent_projection(Y, PZ), PZ) <= tol
    # self-adjoint: <PZ, W> = <Z, PW>
    assert adjoint_check(lambda x: tangent_projection(Y, x), lambda y: tangent_projection(Y, y), Z, W) <= tol
    # the residual is orthogonal to (random) tangent vectors
    xi = random_tangent_vector(Y, rng).to_dense(Y)
    assert abs(np.vdot(Z - PZ, xi)) <= tol * np.linalg.norm(Z) * np.linalg.norm(xi)
    # tangent vectors are reproduced
    assert relative_error(tangent_projection(Y, xi), xi) <= tol
    # a projector does not increase norms
    assert np.linalg.norm(PZ) <= np.linalg.norm(Z) * (1 + tol)


@given(tucker_tensors(min_sigma=MIN_SIGMA), seeds())
def test_tangent_vector_factors_are_in_gauge_and_match_the_dense_projection(Y, seed):
    Z = np.random.default_rng(seed).standard_normal(Y.shape)
    tv = tangent_vector(Y, Z)
    assert isinstance(tv, TangentVector)
    assert tv.dcore.shape == Y.ranks
    for i, (U, dU) in enumerate(zip(Y.factors, tv.dfactors)):
        assert dU.shape == U.shape
        # U_i^T δU_i = 0, up to rounding of N_i (~eps‖Z‖) amplified by ‖Mat_i(C)^+‖
        sigma_min = np.linalg.svd(unfold(Y.core, i), compute_uv=False)[-1]
        assert np.linalg.norm(U.T @ dU) <= 100 * EPS * np.linalg.norm(Z) / sigma_min
    assert relative_error(tv.dcore, Y.project(Z)) <= 100 * EPS  # δC = Z ×_i U_i^T
    # The factored route carries Mat_i(C)^+ (error ~eps·cond); the dense projection uses the
    # row-space form. They agree to rounding amplified by the core conditioning.
    cond = max(np.linalg.cond(unfold(Y.core, i)) for i in range(Y.ndim))
    assert relative_error(tv.to_dense(Y), tangent_projection(Y, Z)) <= 100 * EPS * cond


def test_dense_projection_stays_accurate_for_ill_conditioned_cores():
    # A rotated core with singular values 1, 1e-3, 1e-12: the pseudo-inverse route loses
    # ~3e-5 relative here (eps·cond); the row-space form stays at rounding. Reference: for
    # d = 2, P(Y)Z = UU^T Z + Z VV^T − UU^T Z VV^T exactly.
    rng = np.random.default_rng(0)
    U = np.linalg.qr(rng.standard_normal((9, 3)))[0]
    V = np.linalg.qr(rng.standard_normal((8, 3)))[0]
    A = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    B = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    Y = TuckerTensor(A @ np.diag([1.0, 1e-3, 1e-12]) @ B.T, [U, V])
    Z = rng.standard_normal((9, 8))
    PU, PV = U @ U.T, V @ V.T
    exact = PU @ Z + Z @ PV - PU @ Z @ PV
    assert relative_error(tangent_projection(Y, Z), exact) <= 100 * EPS


@st.composite
def full_rank_points(draw):
    shape = draw(shapes(2, 4, 1, 4).filter(lambda s: feasible_ranks(s) == s))
    return draw(tucker_tensors(min_sigma=MIN_SIGMA, shape=shape, ranks=shape))


@given(full_rank_points(), seeds())
def test_projection_is_the_identity_at_full_rank(Y, seed):
    Z = np.random.default_rng(seed).standard_normal(Y.shape)
    assert relative_error(tangent_projection(Y, Z), Z) <= _margin(Y)
    assert normal_component_norm(Y, Z) <= _margin(Y) * np.linalg.norm(Z)
    assert manifold_dim(Y.shape, Y.ranks) == math.prod(Y.shape)


@settings(max_examples=15)
@given(tucker_tensors(min_order=2, max_order=4, max_dim=4, min_sigma=MIN_SIGMA).filter(
    lambda T: math.prod(T.shape) <= 64))
def test_rank_of_the_projection_is_the_manifold_dimension(Y):
    N = math.prod(Y.shape)
    cols = [tangent_projection(Y, e.reshape(Y.shape)).ravel() for e in np.eye(N)]
    P = np.array(cols).T
    sv = np.linalg.svd(P, compute_uv=False)
    tol = _margin(Y)
    # an orthogonal projector has singular values 0 and 1 only
    assert np.all((sv <= tol) | (np.abs(sv - 1) <= tol)), sv
    assert np.count_nonzero(sv > 0.5) == manifold_dim(Y.shape, Y.ranks)
    assert relative_error(P, P.T) <= tol  # symmetric as a matrix


def test_manifold_dim_formula():
    assert manifold_dim((4, 5), (2, 2)) == 2 * (4 + 5 - 2)  # matrices: r(m + n − r)
    assert manifold_dim((3, 4, 5), (2, 2, 3)) == 12 + 2 * 1 + 2 * 2 + 3 * 2
    assert manifold_dim((3, 4, 5), (3, 4, 5)) == 60
    with pytest.raises(ValueError, match=r"ranks\[1\] = 5 exceeds the dimension n_1 = 4"):
        manifold_dim((3, 4, 5), (1, 5, 1))
    with pytest.raises(ValueError, match=r"ranks must be feasible"):
        manifold_dim((3, 4, 5), (1, 1, 2))


@given(tucker_tensors(min_sigma=0.1), seeds())
def test_normal_component_norm_is_accurate_when_tiny(Y, seed):
    """ε from the difference Z − PZ keeps its digits at ε = 1e-10‖Z‖; sqrt(‖Z‖² − ‖PZ‖²) has none."""
    rng = np.random.default_rng(seed)
    xi = random_tangent_vector(Y, rng).to_dense(Y)
    # A normal vector: every mode in the orthogonal complement of U_i (each tangent term has
    # at least d − 1 ≥ 1 modes inside span U). Projected twice so it is normal to rounding.
    comp = [np.eye(U.shape[0]) - U @ U.T for U in Y.factors]
    nu = multi_mode_product(multi_mode_product(rng.standard_normal(Y.shape), comp), comp)
    nu_norm = np.linalg.norm(nu)
    if nu_norm <= 1e-8 * np.linalg.norm(xi):  # full rank in every mode: no normal space
        assert normal_component_norm(Y, xi) <= _margin(Y) * np.linalg.norm(xi)
        return
    delta = 1e-10 * np.linalg.norm(xi) / nu_norm
    Z = xi + delta * nu
    true_eps = delta * nu_norm
    got = normal_component_norm(Y, Z)
    # absolute error ~ c·eps·cond·‖Z‖ ≈ 1e-13‖Z‖ = 1e-3·ε: three digits at least
    assert abs(got - true_eps) <= 1e-3 * true_eps
    naive = math.sqrt(max(np.linalg.norm(Z) ** 2 - np.linalg.norm(tangent_projection(Y, Z)) ** 2, 0.0))
    assert abs(naive - true_eps) > 0.5 * true_eps  # the cancelling formula is off by ≥ 50%
    # and the two extreme cases
    assert relative_error(normal_component_norm(Y, nu), nu_norm) <= _margin(Y)
    assert normal_component_norm(Y, xi) <= _margin(Y) * np.linalg.norm(xi)


@given(tucker_tensors(min_sigma=MIN_SIGMA, dtype=np.float32), seeds())
def test_float32_stays_float32_in_the_projection(Y, seed):
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal(Y.shape).astype(np.float32)
    tv = tangent_vector(Y, Z)
    assert tv.dcore.dtype == np.float32 and all(dU.dtype == np.float32 for dU in tv.dfactors)
    PZ = tangent_projection(Y, Z)
    assert PZ.dtype == np.float32
    assert random_tangent_vector(Y, rng).dcore.dtype == np.float32
    Y64 = Y.astype(np.float64).orthonormalize()  # float32-rounded factors are not orthonormal in float64
    assert relative_error(PZ, tangent_projection(Y64, Z.astype(np.float64))) <= _margin(Y, EPS32)


def test_projection_rejects_bad_input():
    rng = np.random.default_rng(0)
    Y = random_tucker(rng, (3, 4, 5), (2, 2, 3))
    Z = rng.standard_normal(Y.shape)
    with pytest.raises(TypeError, match=r"Y must be a TuckerTensor"):
        tangent_projection(Y.full(), Z)
    with pytest.raises(ValueError, match=r"Z must have the shape of Y"):
        tangent_projection(Y, Z.T)
    with pytest.raises(ValueError, match=r"Z contains NaN or Inf"):
        normal_component_norm(Y, np.where(Z > 0, np.inf, Z))
    with pytest.raises(ValueError, match=r"Z must have the shape of Y"):
        tangent_vector(Y, Z[0])  # wrong ndim
    with pytest.raises(TypeError, match=r"rng must be a numpy.random.Generator"):
        random_tangent_vector(Y, 0)
    scaled = TuckerTensor(Y.core, [2 * U for U in Y.factors])
    with pytest.raises(ValueError, match=r"Y must have orthonormal factors"):
        tangent_projection(scaled, Z)
    with pytest.raises(ValueError, match=r"Y must have orthonormal factors"):
        random_tangent_vector(scaled, rng)


def test_projection_after_truncation_is_consistent():
    """A point produced by truncate() is a valid base point (orthonormal factors, feasible ranks)."""
    rng = np.random.default_rng(9)
    T = TuckerTensor(rng.standard_normal((4, 4, 4)) * np.logspace(0, -6, 4)[:, None, None],
                     [random_orthonormal(rng, 6, 4) for _ in range(3)])
    Y, _ = truncate(T, tol=1e-3)
    Z = rng.standard_normal(Y.shape)
    PZ = tangent_projection(Y, Z)
    assert relative_error(tangent_projection(Y, PZ), PZ) <= _margin(Y)
