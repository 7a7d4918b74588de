"""Layers with hand-written forward and backward passes (no autograd).

``tucker_ref.nn.functional`` holds the dense kernels (conv2d, linear, relu, max-pool,
flatten, softmax cross-entropy) with PyTorch's layouts.
"""

from .functional import (
    MaxPoolCache,
    conv2d,
    conv2d_backward,
    conv2d_input_backward,
    conv2d_weight_backward,
    flatten,
    flatten_backward,
    linear,
    linear_backward,
    max_pool2d,
    max_pool2d_backward,
    relu,
    relu_backward,
    softmax_cross_entropy,
)

# Factorized kernels and gradient oracles (docs/algorithms.md §0), layer modules, the LeNet5 builder.
from .layers import (
    Conv2d,
    FactorizedModule,
    Flatten,
    GradientDict,
    Linear,
    LowRankLinear,
    MaxPool2d,
    Module,
    ReLU,
    Sequential,
    TuckerConv2d,
)
from .models import lenet5
from .tucker_layers import (
    GradientOracle,
    LowRankLinearGradient,
    TuckerConvGradient,
    low_rank_linear,
    low_rank_linear_backward,
    tucker_conv2d,
    tucker_conv2d_backward,
)
