"""Layers with hand-written forward and backward passes (no autograd).

``tucker_ref.nn.functional`` holds the dense kernels (conv2d, linear, relu, max-pool,
flatten, softmax cross-entropy) with PyTorch's layouts; ``tucker_ref.nn.tucker_functional``
their factored counterparts (Tucker conv2d, low-rank dense) and gradient oracles (formerly
``tucker_ref.nn.tucker_layers``); ``tucker_ref.nn.layers`` the modules built on both;
``tucker_ref.nn.models`` the LeNet5 builder.
"""

from .functional import (
    ConvCache,
    ConvGeometry,
    MaxPoolCache,
    conv2d,
    conv2d_backward,
    conv2d_backward_from_cache,
    conv2d_forward,
    conv2d_input_backward,
    conv2d_weight_backward,
    conv2d_weight_backward_from_cache,
    conv_geometry,
    flatten,
    flatten_backward,
    linear,
    linear_backward,
    max_pool2d,
    max_pool2d_backward,
    relu,
    relu_backward,
    relu_max_pool2d,
    softmax_cross_entropy,
)
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
# Factored kernels and gradient oracles (docs/algorithms.md §0).
from .tucker_functional import (
    GradientOracle,
    LowRankLinearCache,
    LowRankLinearGradient,
    TuckerConvCache,
    TuckerConvGradient,
    TuckerConvInputBackward,
    low_rank_linear,
    low_rank_linear_backward,
    low_rank_linear_backward_from_cache,
    low_rank_linear_forward,
    tucker_conv2d,
    tucker_conv2d_backward,
    tucker_conv2d_forward,
    tucker_conv2d_input_backward,
    tucker_conv2d_parameter_backward,
)
