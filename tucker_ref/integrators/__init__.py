"""Integrators: the substeps of the rank-adaptive BUG step (spec §3), the composite steps built
from them, optimizer state transport and the gradient-oracle protocol.

Depends on the Tucker algebra, truncation and manifold only (never on ``tucker_ref.nn``):
network layers talk to the steps through the oracle protocol of :mod:`.oracle`.
"""

from .optim import SGD, HeavyBall, constant_lr, cosine_lr, step_decay_lr
from .oracle import (
    DenseGradient,
    as_gradient_oracle,
    dense_gradient_or_none,
    gradient_at,
    is_gradient_callable,
    is_gradient_oracle,
)
from .steps import (
    S_STEP_GRADIENTS,
    VARIANTS,
    StepReport,
    fixed_rank_bug_step,
    tdlrt_step,
)
from .substeps import (
    augment_basis,
    galerkin_step,
    k_gradient,
    k_parametrization,
    k_step,
    orthonormal_basis,
    truncate_step,
    u_gradient,
)

__all__ = [
    "SGD",
    "S_STEP_GRADIENTS",
    "VARIANTS",
    "DenseGradient",
    "HeavyBall",
    "StepReport",
    "as_gradient_oracle",
    "augment_basis",
    "constant_lr",
    "cosine_lr",
    "dense_gradient_or_none",
    "fixed_rank_bug_step",
    "galerkin_step",
    "gradient_at",
    "is_gradient_callable",
    "is_gradient_oracle",
    "k_gradient",
    "k_parametrization",
    "k_step",
    "orthonormal_basis",
    "step_decay_lr",
    "tdlrt_step",
    "truncate_step",
    "u_gradient",
]
