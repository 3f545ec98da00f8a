"""Layers: convolution and pooling (through convkit.functional), activations,
Flatten, Linear, Dropout.

Each layer caches in ``forward`` what its ``backward`` needs (the input,
max-pool indices, masks). Computation runs in the dtype of the input when it
is float32/float64 (parameters are cast for the call, their gradients cast
back); other inputs are converted to the parameters' dtype (float32 for
parameter-free layers).
"""

from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from . import module as _m
from .module import Module, Parameter, array_module

__all__ = [
    "Conv2d", "ConvTranspose2d", "MaxPool2d", "AvgPool2d", "LPPool2d", "AdaptiveAvgPool2d",
    "AdaptiveMaxPool2d", "GlobalAvgPool2d", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Identity",
    "Flatten", "Linear", "Dropout",
]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _input(x, dtype=np.float32):
    """x as an array of its module; non-float inputs become ``dtype``."""
    if not _m._is_cupy(x):
        x = np.asarray(x)
    if x.dtype not in _FLOATS:
        x = x.astype(dtype)
    return x


def _like(p, x):
    """Parameter data (or None) in x's dtype."""
    if p is None:
        return None
    d = p.data
    return d if d.dtype == x.dtype else d.astype(x.dtype)


def _need_cache(module, attr):
    value = getattr(module, attr, None)
    if value is None:
        raise RuntimeError(f"{type(module).__name__}.backward called before forward")
    return value


def _uniform(shape, bound, dtype):
    return _m.get_generator().uniform(-bound, bound, size=shape).astype(dtype)


def _kaiming_uniform_a_sqrt5(shape, fan_in, dtype):
    # torch.nn.init.kaiming_uniform_(w, a=sqrt(5)): gain = sqrt(2 / (1 + 5)),
    # bound = gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in).
    gain = math.sqrt(2.0 / (1.0 + 5.0))
    bound = gain * math.sqrt(3.0 / fan_in) if fan_in > 0 else 0.0
    return _uniform(shape, bound, dtype)


def _bias_init(shape, fan_in, dtype):
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return _uniform(shape, bound, dtype)


def _needs(p):
    return p is not None and p.requires_grad


# --------------------------------------------------------------------------- #
# convolution
# --------------------------------------------------------------------------- #

class Conv2d(Module):
    """torch.nn.Conv2d: weight (out, in/groups, kH, kW); padding an int, a
    pair, or 'same' / 'valid' / 'full'."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, dtype=np.float32):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: in_channels ({in_channels}) and out_channels ({out_channels}) "
                             f"must be divisible by groups ({groups})")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride, self.dilation, self.groups = stride, dilation, groups
        self.padding = padding
        kh, kw = self.kernel_size
        fan_in = in_channels // groups * kh * kw
        dtype = _m._as_float_dtype(dtype)
        self.weight = Parameter(_kaiming_uniform_a_sqrt5((out_channels, in_channels // groups, kh, kw),
                                                         fan_in, dtype))
        self.bias = Parameter(_bias_init((out_channels,), fan_in, dtype)) if bias else None
        self._x = None

    def forward(self, x):
        x = _input(x, self.weight.dtype)
        self._x = x
        return F.conv2d(x, _like(self.weight, x), _like(self.bias, x), self.stride, self.padding,
                        self.dilation, self.groups)

    def backward(self, grad_out):
        x = _need_cache(self, "_x")
        grad_out = grad_out.astype(x.dtype, copy=False)
        gx, gw, gb = F.conv2d_backward(grad_out, x, _like(self.weight, x), self.stride, self.padding,
                                       self.dilation, self.groups,
                                       output_mask=(True, _needs(self.weight), _needs(self.bias)))
        self.weight.accumulate(gw)
        if self.bias is not None:
            self.bias.accumulate(gb)
        return gx

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != 0:
            s += f", padding={self.padding!r}"
        if self.dilation != 1:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class ConvTranspose2d(Module):
    """torch.nn.ConvTranspose2d: weight (in, out/groups, kH, kW)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0,
                 groups=1, bias=True, dilation=1, dtype=np.float32):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"ConvTranspose2d: in_channels ({in_channels}) and out_channels "
                             f"({out_channels}) must be divisible by groups ({groups})")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride, self.padding, self.output_padding = stride, padding, output_padding
        self.groups, self.dilation = groups, dilation
        kh, kw = self.kernel_size
        # torch computes fan_in from weight.size(1) here too (out/groups * kH * kW).
        fan_in = out_channels // groups * kh * kw
        dtype = _m._as_float_dtype(dtype)
        self.weight = Parameter(_kaiming_uniform_a_sqrt5((in_channels, out_channels // groups, kh, kw),
                                                         fan_in, dtype))
        self.bias = Parameter(_bias_init((out_channels,), fan_in, dtype)) if bias else None
        self._x = None

    def forward(self, x):
        x = _input(x, self.weight.dtype)
        self._x = x
        return F.conv_transpose2d(x, _like(self.weight, x), _like(self.bias, x), self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)

    def backward(self, grad_out):
        x = _need_cache(self, "_x")
        grad_out = grad_out.astype(x.dtype, copy=False)
        gx, gw, gb = F.conv_transpose2d_backward(grad_out, x, _like(self.weight, x), self.stride, self.padding,
                                                 self.output_padding, self.groups, self.dilation,
                                                 output_mask=(True, _needs(self.weight), _needs(self.bias)))
        self.weight.accumulate(gw)
        if self.bias is not None:
            self.bias.accumulate(gb)
        return gx

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != 0:
            s += f", padding={self.padding}"
        if self.output_padding != 0:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.dilation != 1:
            s += f", dilation={self.dilation}"
        if self.bias is None:
            s += ", bias=False"
        return s


# --------------------------------------------------------------------------- #
# pooling
# --------------------------------------------------------------------------- #

class MaxPool2d(Module):
    """torch.nn.MaxPool2d; the indices of the maxima are kept (``.indices``)
    for backward."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.ceil_mode = dilation, ceil_mode
        self._x = self.indices = None

    def forward(self, x):
        x = _input(x)
        y, idx = F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                              return_indices=True)
        self._x, self.indices = x, idx
        return y

    def backward(self, grad_out):
        x = _need_cache(self, "_x")
        return F.max_pool2d_backward(grad_out.astype(x.dtype, copy=False), x, self.indices, self.kernel_size,
                                     self.stride, self.padding, self.dilation, self.ceil_mode)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """torch.nn.AvgPool2d."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad, self.divisor_override = ceil_mode, count_include_pad, \
            divisor_override
        self._x = None

    def forward(self, x):
        x = _input(x)
        self._x = x
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)

    def backward(self, grad_out):
        x = _need_cache(self, "_x")
        return F.avg_pool2d_backward(grad_out.astype(x.dtype, copy=False), x, self.kernel_size, self.stride,
                                     self.padding, self.ceil_mode, self.count_include_pad, self.divisor_override)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class LPPool2d(Module):
    """torch.nn.LPPool2d: (sum over the window of x**p) ** (1/p)."""

    def __init__(self, norm_type, kernel_size, stride=None, ceil_mode=False):
        super().__init__()
        self.norm_type, self.kernel_size, self.stride, self.ceil_mode = norm_type, kernel_size, stride, ceil_mode
        self._x = None

    def forward(self, x):
        x = _input(x)
        self._x = x
        return F.lp_pool2d(x, self.norm_type, self.kernel_size, self.stride, self.ceil_mode)

    def backward(self, grad_out):
        x = _need_cache(self, "_x")
        return F.lp_pool2d_backward(grad_out.astype(x.dtype, copy=False), x, self.norm_type, self.kernel_size,
                                    self.stride, self.ceil_mode)

    def extra_repr(self):
        return f"norm_type={self.norm_type}, kernel_size={self.kernel_size}, stride={self.stride}"


class AdaptiveAvgPool2d(Module):
    """torch.nn.AdaptiveAvgPool2d."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size
        self._x = None

    def forward(self, x):
        x = _input(x)
        self._x = x
        return F.adaptive_avg_pool2d(x, self.output_size)

    def backward(self, grad_out):
        x = _need_cache(self, "_x")
        return F.adaptive_avg_pool2d_backward(grad_out.astype(x.dtype, copy=False), x)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveMaxPool2d(Module):
    """torch.nn.AdaptiveMaxPool2d (indices kept for backward)."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size
        self._x = self.indices = None

    def forward(self, x):
        x = _input(x)
        y, idx = F.adaptive_max_pool2d(x, self.output_size, return_indices=True)
        self._x, self.indices = x, idx
        return y

    def backward(self, grad_out):
        x = _need_cache(self, "_x")
        return F.adaptive_max_pool2d_backward(grad_out.astype(x.dtype, copy=False), x, self.indices)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class GlobalAvgPool2d(Module):
    """Mean over H and W keeping them as 1x1 (AdaptiveAvgPool2d(1))."""

    def __init__(self):
        super().__init__()
        self._x = None

    def forward(self, x):
        x = _input(x)
        self._x = x
        return F.global_avg_pool2d(x)

    def backward(self, grad_out):
        x = _need_cache(self, "_x")
        return F.global_avg_pool2d_backward(grad_out.astype(x.dtype, copy=False), x)


# --------------------------------------------------------------------------- #
# elementwise
# --------------------------------------------------------------------------- #

class Identity(Module):
    def forward(self, x):
        return x

    def backward(self, grad_out):
        return grad_out


class ReLU(Module):
    """max(x, 0); the gradient at 0 is 0 (as torch)."""

    def __init__(self):
        super().__init__()
        self._mask = None

    def forward(self, x):
        x = _input(x)
        self._mask = x > 0
        return x * self._mask

    def backward(self, grad_out):
        return grad_out * _need_cache(self, "_mask")


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope
        self._mask = None

    def forward(self, x):
        x = _input(x)
        xp = array_module(x)
        self._mask = x > 0
        return xp.where(self._mask, x, x * x.dtype.type(self.negative_slope))

    def backward(self, grad_out):
        mask = _need_cache(self, "_mask")
        xp = array_module(grad_out)
        return xp.where(mask, grad_out, grad_out * grad_out.dtype.type(self.negative_slope))

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Sigmoid(Module):
    def __init__(self):
        super().__init__()
        self._y = None

    def forward(self, x):
        x = _input(x)
        xp = array_module(x)
        # exp(-log(1 + exp(-x))): no overflow for either sign.
        self._y = xp.exp(-xp.logaddexp(x.dtype.type(0), -x))
        return self._y

    def backward(self, grad_out):
        y = _need_cache(self, "_y")
        return grad_out * y * (1 - y)


class Tanh(Module):
    def __init__(self):
        super().__init__()
        self._y = None

    def forward(self, x):
        x = _input(x)
        self._y = array_module(x).tanh(x)
        return self._y

    def backward(self, grad_out):
        y = _need_cache(self, "_y")
        return grad_out * (1 - y * y)


class Flatten(Module):
    """torch.nn.Flatten: merges dims start_dim..end_dim."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim
        self._shape = None

    def forward(self, x):
        x = _input(x)
        self._shape = x.shape
        nd = x.ndim
        s = self.start_dim % nd if nd else 0
        e = self.end_dim % nd if nd else 0
        if s > e:
            raise ValueError(f"Flatten: start_dim {self.start_dim} comes after end_dim {self.end_dim} "
                             f"for a {nd}-d input")
        return x.reshape(x.shape[:s] + (-1,) + x.shape[e + 1:])

    def backward(self, grad_out):
        return grad_out.reshape(_need_cache(self, "_shape"))

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Linear(Module):
    """torch.nn.Linear: y = x @ weight.T + bias, weight (out, in)."""

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        dtype = _m._as_float_dtype(dtype)
        self.weight = Parameter(_kaiming_uniform_a_sqrt5((out_features, in_features), in_features, dtype))
        self.bias = Parameter(_bias_init((out_features,), in_features, dtype)) if bias else None
        self._x = None

    def forward(self, x):
        x = _input(x, self.weight.dtype)
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Linear: input has {x.shape[-1]} features in its last dimension, "
                             f"expected {self.in_features} (input shape {tuple(x.shape)})")
        self._x = x
        y = x @ _like(self.weight, x).T
        if self.bias is not None:
            y += _like(self.bias, x)
        return y

    def backward(self, grad_out):
        x = _need_cache(self, "_x")
        grad_out = grad_out.astype(x.dtype, copy=False)
        w = _like(self.weight, x)
        if self.weight.requires_grad:
            g2 = grad_out.reshape(-1, self.out_features)
            self.weight.accumulate(g2.T @ x.reshape(-1, self.in_features))
        if _needs(self.bias):
            self.bias.accumulate(grad_out.reshape(-1, self.out_features).sum(axis=0))
        return grad_out @ w

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Dropout(Module):
    """Inverted dropout: in training, zero each element with probability p and
    scale the rest by 1/(1-p); identity in eval mode. ``generator`` (a seed or
    a NumPy Generator) makes the masks reproducible; without it the masks come
    from the module-level generator (``convkit.nn.manual_seed``)."""

    def __init__(self, p=0.5, generator=None):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = float(p)
        self.generator = (generator if isinstance(generator, np.random.Generator) or generator is None
                          else np.random.default_rng(generator))
        self._mask = None

    def manual_seed(self, seed):
        self.generator = np.random.default_rng(seed)

    def forward(self, x):
        x = _input(x)
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        xp = array_module(x)
        if self.p == 1.0:
            mask = np.zeros(x.shape, dtype=x.dtype)
        else:
            rng = self.generator if self.generator is not None else _m.get_generator()
            keep = rng.random(x.shape) >= self.p
            mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.p))
        self._mask = xp.asarray(mask)
        return x * self._mask

    def backward(self, grad_out):
        return grad_out if self._mask is None else grad_out * self._mask

    def extra_repr(self):
        return f"p={self.p}"
