"""Integrators: the substeps of the rank-adaptive BUG step (docs/algorithms.md), the composite steps built
from them, optimizer state transport and the gradient-oracle protocol.

Depends on the Tucker algebra, truncation and manifold only (never on ``tucker_ref.nn``):
network layers talk to the steps through the oracle protocol of :mod:`tucker_ref.gradient_oracle`.
"""

from ..gradient_oracle import (DenseGradient, as_gradient_oracle, dense_gradient_or_none, gradient_at,
                               is_gradient_callable, is_gradient_oracle)
from .optim import LR_SCHEDULES, OPTIMIZERS, SGD, Adam, AdamW, HeavyBall, clip_factor, constant_lr, cosine_lr
from .steps import (
    S_STEP_GRADIENTS,
    VARIANTS,
    AugmentedPoint,
    StepReport,
    augment,
    augmented_bases,
    cycle_report,
    fixed_rank_bug_step,
    fixed_rank_projected_point,
    fixed_rank_s_step,
    galerkin_gradient,
    s_step,
    tdlrt_cycle,
    tdlrt_step,
    truncate_cycle,
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
    "Adam",
    "AdamW",
    "AugmentedPoint",
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "SGD",
    "S_STEP_GRADIENTS",
    "VARIANTS",
    "DenseGradient",
    "HeavyBall",
    "StepReport",
    "as_gradient_oracle",
    "augment",
    "augment_basis",
    "augmented_bases",
    "clip_factor",
    "constant_lr",
    "cycle_report",
    "cosine_lr",
    "dense_gradient_or_none",
    "fixed_rank_bug_step",
    "fixed_rank_projected_point",
    "fixed_rank_s_step",
    "galerkin_gradient",
    "galerkin_step",
    "gradient_at",
    "is_gradient_callable",
    "is_gradient_oracle",
    "k_gradient",
    "k_parametrization",
    "k_step",
    "orthonormal_basis",
    "s_step",
    "tdlrt_cycle",
    "tdlrt_step",
    "truncate_cycle",
    "truncate_step",
    "u_gradient",
]
