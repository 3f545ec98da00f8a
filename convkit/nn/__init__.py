"""convkit.nn: layers with forward/backward on top of convkit.functional,
losses and optimisers, with torch.nn's semantics, initialisation and
state_dict keys.

    import convkit.nn as nn
    nn.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    loss_fn = nn.CrossEntropyLoss()
    opt = nn.SGD(net.parameters(), lr=0.05, momentum=0.9)
    loss = loss_fn(net(x), y)
    opt.zero_grad(); net.backward(loss_fn.backward()); opt.step()
"""

from .layers import (
    AdaptiveAvgPool2d,
    AdaptiveMaxPool2d,
    AvgPool2d,
    Conv2d,
    ConvTranspose2d,
    Dropout,
    Flatten,
    GlobalAvgPool2d,
    Identity,
    LeakyReLU,
    Linear,
    LPPool2d,
    MaxPool2d,
    ReLU,
    Sigmoid,
    Tanh,
)
from .loss import CrossEntropyLoss, MSELoss, log_softmax, softmax
from .module import Module, Parameter, Sequential, array_module, get_generator, manual_seed
from .optim import SGD, Adam, Optimizer

__all__ = [
    "Module", "Parameter", "Sequential", "manual_seed", "get_generator", "array_module",
    "Conv2d", "ConvTranspose2d", "MaxPool2d", "AvgPool2d", "LPPool2d", "AdaptiveAvgPool2d",
    "AdaptiveMaxPool2d", "GlobalAvgPool2d", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Identity",
    "Flatten", "Linear", "Dropout",
    "CrossEntropyLoss", "MSELoss", "softmax", "log_softmax",
    "Optimizer", "SGD", "Adam",
]
