"""The TDLRT cycle taken apart (augment, S-steps, truncate) and the optimizers on the core.

``tdlrt_step`` must stay the one-S-step composition, bit for bit: against the composition
itself and against outputs recorded from the implementation before the cycle was split
(``tests/data/tdlrt_step_reference.npz``; small float64/float32 problems, deterministic BLAS
paths).
"""

from pathlib import Path

import numpy as np
import pytest

from tucker_ref.integrators import HeavyBall, tdlrt_step
from tucker_ref.testing.problems import QuadraticRegression
from tucker_ref.testing.strategies import conditioned_core, random_orthonormal
from tucker_ref.tucker import TuckerTensor

REFERENCE = Path(__file__).parent / "data" / "tdlrt_step_reference.npz"

#: shape, ranks, variant, momentum, tau, s_step_gradient, adaptive modes, dtype, steps
REFERENCE_CASES = [
    ((6, 5, 4), (2, 2, 2), "k_step", 0.0, 0.05, "same_point", None, "float64", 3),
    ((6, 5, 4), (3, 2, 2), "augmented_gradient", 0.9, 0.1, "same_point", None, "float64", 3),
    ((5, 4, 3, 3), (2, 2, 3, 3), "k_step", 0.9, 0.02, "same_point", (0, 1), "float64", 3),
    ((6, 5, 4), (2, 3, 2), "k_step", 0.5, 0.05, "reevaluate", None, "float64", 3),
    ((7, 6), (3, 3), "k_step", 0.9, 0.1, "same_point", None, "float32", 3),
]


def reference_outputs() -> dict:
    """Run the recorded cases with today's ``tdlrt_step``: ``{key: array}`` as in the reference file."""
    out = {}
    for c, (shape, ranks, variant, mom, tau, ssg, adaptive, dtype, steps) in enumerate(REFERENCE_CASES):
        rng = np.random.default_rng(100 + c)
        prob = QuadraticRegression.random(shape, m=3 * int(np.prod(shape)), rng=rng)
        core = conditioned_core(rng, ranks, min_sigma=0.1)
        Y = TuckerTensor(core, [random_orthonormal(rng, n, r) for n, r in zip(shape, ranks)])
        Y = TuckerTensor(Y.core.astype(dtype), [U.astype(dtype) for U in Y.factors])
        opt = HeavyBall(mom) if mom > 0 else None
        for k in range(steps):
            grad = prob.grad_callable if ssg == "reevaluate" else (lambda p: prob.grad_callable(p).astype(dtype))
            Y, rep = tdlrt_step(Y, grad, 0.3 / prob.smoothness, tau=tau, variant=variant, adaptive_modes=adaptive,
                                s_step_gradient=ssg, optimizer=opt, diagnostics=False)
            out[f"case{c}/step{k}/core"] = Y.core
            for i, U in enumerate(Y.factors):
                out[f"case{c}/step{k}/U{i}"] = U
            out[f"case{c}/step{k}/eta"] = np.array(rep.eta)
            if opt is not None:
                out[f"case{c}/step{k}/velocity"] = opt.state
    return out


def test_tdlrt_step_is_bit_identical_to_the_recorded_implementation():
    recorded = np.load(REFERENCE)
    now = reference_outputs()
    assert sorted(now) == sorted(recorded.files)
    different = [k for k in now if now[k].dtype != recorded[k].dtype or not np.array_equal(now[k], recorded[k])]
    assert not different, f"tdlrt_step changed: {different[:5]}"
