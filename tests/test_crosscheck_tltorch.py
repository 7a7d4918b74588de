"""Cross-check of the Tucker conv against TensorLy-Torch's ``tucker_conv`` (float64).

tltorch switches TensorLy's backend to pytorch when imported; the module restores the
previous backend right after the import and runs tltorch only inside
``tensorly.backend_context("pytorch")``, so other test modules keep the numpy backend.
"""

import numpy as np
import pytest
from hypothesis import given

from test_nn_tucker import EXACT, conv_cases, rel
from tucker_ref import TuckerTensor
from tucker_ref.nn.tucker_functional import tucker_conv2d, tucker_conv2d_backward

pytestmark = pytest.mark.crosscheck

torch = pytest.importorskip("torch")
tensorly = pytest.importorskip("tensorly")
_previous_backend = tensorly.get_backend()
try:
    pytest.importorskip("tltorch")
    from tltorch.functional.convolution import tucker_conv
finally:
    tensorly.set_backend(_previous_backend)
from tensorly.tucker_tensor import TuckerTensor as TensorlyTucker  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _one_thread_and_numpy_backend():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    assert tensorly.get_backend() == _previous_backend


def _tltorch_conv(case, requires_grad=False):
    T, geo = case["T"], case["geo"]
    core = torch.tensor(T.core, requires_grad=requires_grad)
    factors = [torch.tensor(U, requires_grad=requires_grad) for U in T.factors]
    with tensorly.backend_context("pytorch"):
        y = tucker_conv(torch.from_numpy(case["x"]), TensorlyTucker((core, factors)),
                        bias=torch.from_numpy(case["b"]), **geo)
    return y, core, factors


@given(conv_cases())
def test_forward_matches_tltorch(case):
    y, _, _ = _tltorch_conv(case)
    assert y.dtype == torch.float64
    ours = tucker_conv2d(case["x"], case["T"], case["b"], **case["geo"])
    assert rel(ours, y.numpy()) <= EXACT
    assert tensorly.get_backend() == _previous_backend


@given(conv_cases())
def test_factored_gradients_match_tltorch_autograd(case):
    y, core, factors = _tltorch_conv(case, requires_grad=True)
    (y * torch.from_numpy(case["dy"])).sum().backward()
    T = case["T"]
    _, dcore, dfactors, _ = tucker_conv2d_backward(case["dy"], case["x"], T, need_dx=False, **case["geo"])
    # Each gradient entry is a signed sum of products; the same sums over the absolute values
    # of all inputs bound the size of its terms, which is what rounding scales with (a
    # normwise relative test fails on entries that cancel: dev-profile counterexample, a 1×1
    # core gradient of -1.5e-3 from terms of size 1, rel. difference 1.3e-12).
    abs_T = TuckerTensor(np.abs(T.core), [np.abs(U) for U in T.factors])
    _, scale_core, scale_factors, _ = tucker_conv2d_backward(np.abs(case["dy"]), np.abs(case["x"]), abs_T,
                                                             need_dx=False, **case["geo"])
    assert np.linalg.norm(dcore - core.grad.numpy()) <= EXACT * np.linalg.norm(scale_core)
    for ours, theirs, scale in zip(dfactors, factors, scale_factors):
        assert np.linalg.norm(ours - theirs.grad.numpy()) <= EXACT * np.linalg.norm(scale)
