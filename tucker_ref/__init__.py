"""tucker_ref — NumPy reference implementation of rank-adaptive dynamical low-rank training
of convolutional layers in Tucker format (TDLRT; Zangrando et al., arXiv 2305.19059).

Layers of the package (see docs/): ``tucker`` (algebra) ← ``truncation`` (HOSVD, truncation)
← ``manifold`` (tangent geometry) ← ``integrators`` (TDLRT steps and baselines); ``nn``
(layers with manual backward) depends on the algebra only; ``training`` and ``cli`` wire
them to data.
"""

from .manifold import (
    TangentVector,
    manifold_dim,
    normal_component_norm,
    random_tangent_vector,
    tangent_projection,
    tangent_vector,
)
from .truncation import TruncationReport, TruncationRule, feasible_ranks, hosvd, is_feasible, orth, truncate
from .tucker import TuckerTensor, fold, mode_product, multi_mode_product, unfold

__version__ = "0.1.0"

__all__ = [
    "TangentVector",
    "TruncationReport",
    "TruncationRule",
    "TuckerTensor",
    "feasible_ranks",
    "fold",
    "hosvd",
    "is_feasible",
    "manifold_dim",
    "mode_product",
    "multi_mode_product",
    "normal_component_norm",
    "orth",
    "random_tangent_vector",
    "tangent_projection",
    "tangent_vector",
    "truncate",
    "unfold",
    "__version__",
]
