"""Cross-checks of the Tucker algebra and HOSVD against TensorLy (needs the crosscheck extra).

TensorLy's backend is global state, and tensorly-torch switches it to PyTorch when another
test module imports it; every check runs inside ``tensorly.backend_context("numpy")``.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tucker_ref import hosvd, mode_product, multi_mode_product, unfold
from tucker_ref.testing.oracles import relative_error
from tucker_ref.testing.strategies import planted_tensors, seeds, shapes, tucker_tensors

tl = pytest.importorskip("tensorly")
from tensorly import tenalg  # noqa: E402
from tensorly.decomposition import tucker as tl_tucker  # noqa: E402

pytestmark = pytest.mark.crosscheck

EPS = np.finfo(np.float64).eps


@given(shapes(1, 4, 1, 5), seeds(), st.data())
def test_unfold_is_tensorly_unfold(shape, seed, data):
    X = np.random.default_rng(seed).standard_normal(shape)
    mode = data.draw(st.integers(0, len(shape) - 1))
    with tl.backend_context("numpy"):
        theirs = tl.to_numpy(tl.base.unfold(tl.tensor(X), mode))
        back = tl.to_numpy(tl.base.fold(tl.tensor(unfold(X, mode)), mode, shape))
    np.testing.assert_array_equal(unfold(X, mode), theirs)  # same C order, bit for bit
    np.testing.assert_array_equal(back, X)


@given(shapes(1, 4, 1, 5), seeds(), st.integers(1, 4), st.data())
def test_mode_product_is_tensorly_mode_dot(shape, seed, J, data):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal(shape)
    mode = data.draw(st.integers(0, len(shape) - 1))
    M = rng.standard_normal((J, shape[mode]))
    with tl.backend_context("numpy"):
        theirs = tl.to_numpy(tenalg.mode_dot(tl.tensor(X), tl.tensor(M), mode))
    assert relative_error(mode_product(X, M, mode), theirs) <= 100 * EPS


@given(shapes(2, 4, 1, 5), seeds(), st.data(), st.booleans())
def test_multi_mode_product_is_tensorly_multi_mode_dot(shape, seed, data, transpose):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal(shape)
    modes = list(data.draw(st.permutations(range(len(shape)))))[: data.draw(st.integers(1, len(shape)))]
    mats = [rng.standard_normal((shape[m], 3)) if transpose else rng.standard_normal((3, shape[m])) for m in modes]
    with tl.backend_context("numpy"):
        theirs = tl.to_numpy(tenalg.multi_mode_dot(tl.tensor(X), [tl.tensor(M) for M in mats], modes=modes,
                                                   transpose=transpose))
    # products in different modes commute, so TensorLy's sorting of the modes is harmless here
    assert relative_error(multi_mode_product(X, mats, modes=modes, transpose=transpose), theirs) <= 100 * EPS


@given(tucker_tensors(min_sigma=0.1))
def test_full_is_tensorly_tucker_to_tensor(T):
    with tl.backend_context("numpy"):
        theirs = tl.to_numpy(tl.tucker_to_tensor((tl.tensor(T.core), [tl.tensor(U) for U in T.factors])))
    assert relative_error(T.full(), theirs) <= 100 * EPS


@given(planted_tensors(min_sigma=0.1, noise_levels=(0.0, 1e-6, 1e-3)))
def test_hosvd_subspaces_match_tensorly_tucker_svd_init(p):
    """At the planted rank (a spectral gap ≥ min_sigma·σ_max vs ≤ noise), both HOSVDs find the same subspaces."""
    X, ranks = p.X, p.low_rank.ranks
    T, _ = hosvd(X, ranks=ranks)
    with tl.backend_context("numpy"):
        theirs = tl_tucker(tl.tensor(X), rank=list(ranks), n_iter_max=0, init="svd")
        factors = [tl.to_numpy(U) for U in theirs.factors]
    for i, (U, V) in enumerate(zip(T.factors, factors)):
        s = np.linalg.svd(unfold(X, i), compute_uv=False)
        r = ranks[i]
        gap = s[r - 1] - (s[r] if r < len(s) else 0.0)
        # sin θ perturbation bound: projector difference ~ (rounding + nothing else) / gap
        assert np.linalg.norm(U @ U.T - V @ V.T, 2) <= 1e3 * EPS * s[0] / gap, i
