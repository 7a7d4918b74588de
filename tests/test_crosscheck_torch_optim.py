"""Cross-check of the optimizers' dense updates against ``torch.optim`` (float64, several steps).

``SGD.dense_step`` is the update every dense parameter of a run takes (biases, the layers that
are not factorized) and, through ``direction``, the S-step's update of a core. Each optimizer
runs the same gradient sequence as its PyTorch counterpart (``SGD`` with and without momentum,
``Adam``, ``AdamW``), with weight decay, and must stay within rounding of it after every step.
"""

import numpy as np
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from tucker_ref.integrators import OPTIMIZERS

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

pytestmark = pytest.mark.crosscheck

STEPS = 6
TOL = 1e-12


def torch_optimizer(name, param, lr, weight_decay, momentum, betas):
    if name == "sgd":
        return torch.optim.SGD([param], lr=lr, weight_decay=weight_decay)
    if name == "momentum":
        return torch.optim.SGD([param], lr=lr, momentum=momentum, weight_decay=weight_decay)
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return cls([param], lr=lr, betas=betas, eps=1e-8, weight_decay=weight_decay)


def ours(name, weight_decay, momentum, betas):
    cls = OPTIMIZERS[name]
    if name == "sgd":
        return cls(weight_decay=weight_decay)
    if name == "momentum":
        return cls(momentum=momentum, weight_decay=weight_decay)
    return cls(betas=betas, weight_decay=weight_decay)


@given(name=st.sampled_from(sorted(OPTIMIZERS)), seed=st.integers(0, 2**32 - 1),
       lr=st.sampled_from([1e-3, 0.1]), weight_decay=st.sampled_from([0.0, 0.05]),
       momentum=st.sampled_from([0.5, 0.9]), betas=st.sampled_from([(0.9, 0.999), (0.5, 0.9)]),
       grad_scale=st.sampled_from([1.0, 1e-9]))
# Gradients of size 1e-9 make Adam's ε (1e-8) dominate √v̂: where ε enters shows there.
@example(name="adam", seed=0, lr=0.1, weight_decay=0.05, momentum=0.9, betas=(0.9, 0.999), grad_scale=1e-9)
@example(name="adamw", seed=1, lr=0.1, weight_decay=0.05, momentum=0.9, betas=(0.5, 0.9), grad_scale=1.0)
@example(name="momentum", seed=2, lr=0.1, weight_decay=0.05, momentum=0.9, betas=(0.9, 0.999), grad_scale=1.0)
def test_dense_steps_match_torch_optim(name, seed, lr, weight_decay, momentum, betas, grad_scale):
    rng = np.random.default_rng(seed)
    param = rng.standard_normal((4, 3))
    grads = [grad_scale * rng.standard_normal(param.shape) for _ in range(STEPS)]
    optimizer = ours(name, weight_decay, momentum, betas)
    leaf = torch.tensor(param, dtype=torch.float64, requires_grad=True)
    reference = torch_optimizer(name, leaf, lr, weight_decay, momentum, betas)
    state = None
    for k, g in enumerate(grads):
        param, state = optimizer.dense_step(param, g, state, lr)
        leaf.grad = torch.tensor(g, dtype=torch.float64)
        reference.step()
        expected = leaf.detach().numpy()
        # Rounding is relative to the parameter (O(1)). With the 1e-9 gradients Adam's direction is
        # still O(1), so its steps stay resolved; the plain and momentum steps then move the
        # parameter by ~1e-12 and are checked by the O(1) draws.
        err = float(np.max(np.abs(param - expected)))
        bound = TOL * max(float(np.max(np.abs(expected))), 1.0)
        assert err <= bound, f"{name}: step {k}: max |ours - torch| = {err:.3e}"
    if weight_decay > 0:
        event("weight decay active")
    if name in ("adam", "adamw") and grad_scale < 1e-6:
        event("Adam's eps dominates")


def test_adam_first_step_is_the_bias_corrected_sign():
    """After one step from zero moments, ``m̂ = g`` and ``v̂ = g²``: the direction is
    ``g / (|g| + ε)``, whatever ``β1, β2`` (without the bias correction it would be
    ``g / (√(1 − β2)|g| + ε)``, 31.6 times larger for ``β2 = 0.999``)."""
    g = np.array([[3.0, -0.5], [1e-3, -7.0]])
    for betas in ((0.9, 0.999), (0.5, 0.9)):
        direction, state = OPTIMIZERS["adam"](betas=betas).direction(g, None)
        np.testing.assert_allclose(direction, g / (np.abs(g) + 1e-8), rtol=4e-16, atol=0)
        assert int(state["t"]) == 1
