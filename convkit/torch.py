"""PyTorch adapter: convkit kernels behind torch.autograd.

Three layers, all with torch.nn(.functional) semantics:

* ``torch.autograd.Function`` subclasses (``Conv2dFunction``, ...) whose
  forward and backward both run on convkit kernels; backward honours
  ``ctx.needs_input_grad`` (conv ``output_mask``) and is
  ``once_differentiable`` (no double backward).
* functional wrappers with torch.nn.functional signatures
  (``conv2d(x, w, bias=None, stride=1, ...)``, ``max_pool2d(...)``, ...).
* ``nn.Module`` drop-ins (``Conv2d``, ``ConvTranspose2d``, ``MaxPool2d``,
  ``AvgPool2d``, ``LPPool2d``, ``AdaptiveAvgPool2d``, ``AdaptiveMaxPool2d``)
  that subclass the torch.nn classes and only override ``forward``, and
  ``convert(model)``, which swaps those modules in place.

What copies and what does not
-----------------------------
* Contiguous CPU tensors: zero-copy both ways. Inputs reach the kernels as
  NumPy views of the tensor storage (``t.detach().numpy()``) and results come
  back as ``torch.from_numpy`` views of the arrays the kernels wrote.
* Non-contiguous CPU tensors (e.g. a transposed view, or an expanded
  gradient): exactly one copy (``t.contiguous()``) before the kernel.
* CUDA tensors: zero-copy through DLPack (``cupy.from_dlpack(t)`` and
  ``torch.from_dlpack(array)``); the kernels run on the tensor's device and
  on torch's current stream. Non-contiguous CUDA tensors are copied once by
  convkit (``cupy.ascontiguousarray``).

dtypes: float32/float64 on the CPU, plus float16 on CUDA (as convkit).
Max-pool indices are int64 flat offsets into each H*W plane, like torch's.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from convkit import functional as CF

__all__ = [
    "Conv2dFunction", "ConvTranspose2dFunction", "MaxPool2dFunction", "AvgPool2dFunction",
    "LPPool2dFunction", "AdaptiveAvgPool2dFunction", "AdaptiveMaxPool2dFunction",
    "conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "lp_pool2d",
    "adaptive_avg_pool2d", "adaptive_max_pool2d",
    "Conv2d", "ConvTranspose2d", "MaxPool2d", "AvgPool2d", "LPPool2d",
    "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "convert",
]


# --------------------------------------------------------------------------- #
# tensor <-> array
# --------------------------------------------------------------------------- #

def _to_array(t):
    """The array convkit gets for tensor ``t`` (None passes through).

    CPU: a NumPy view of the storage (a copy only if ``t`` is not contiguous).
    CUDA: a CuPy array sharing the memory (DLPack)."""
    if t is None:
        return None
    t = t.detach()
    if t.is_cuda:
        import cupy
        return cupy.from_dlpack(t)
    if t.device.type != "cpu":
        raise TypeError(f"convkit.torch: tensors must be on the CPU or a CUDA device, got {t.device}")
    if not t.is_contiguous():
        t = t.contiguous()
    return t.numpy()


def _to_tensor(a):
    """Wrap a result array of convkit as a tensor without copying."""
    if a is None:
        return None
    if isinstance(a, np.ndarray):
        if not a.flags.writeable:  # torch.from_numpy warns on read-only arrays
            a = a.copy()
        return torch.from_numpy(a)
    return torch.from_dlpack(a)


@contextlib.contextmanager
def _device_of(t):
    """Run CuPy work on ``t``'s device and on torch's current stream there,
    so the kernels are ordered with the surrounding torch work."""
    if not t.is_cuda:
        yield
        return
    import cupy
    with torch.cuda.device(t.device):
        stream = torch.cuda.current_stream(t.device)
        with cupy.cuda.Device(t.device.index), cupy.cuda.ExternalStream(stream.cuda_stream):
            yield


# --------------------------------------------------------------------------- #
# autograd Functions
# --------------------------------------------------------------------------- #

class Conv2dFunction(torch.autograd.Function):
    """conv2d(x, w, bias, stride, padding, dilation, groups) on convkit."""

    @staticmethod
    def forward(ctx, x, w, bias, stride=1, padding=0, dilation=1, groups=1):
        ctx.args = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, w)
        with _device_of(x):
            return _to_tensor(CF.conv2d(_to_array(x), _to_array(w), _to_array(bias),
                                        stride, padding, dilation, groups))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, w = ctx.saved_tensors
        mask = (bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1]),
                bool(ctx.has_bias and ctx.needs_input_grad[2]))
        if not any(mask):
            return (None,) * 7
        with _device_of(x):
            gx, gw, gb = CF.conv2d_backward(_to_array(grad_out), _to_array(x), _to_array(w),
                                            *ctx.args, output_mask=mask)
            return (_to_tensor(gx), _to_tensor(gw), _to_tensor(gb)) + (None,) * 4


class ConvTranspose2dFunction(torch.autograd.Function):
    """conv_transpose2d(x, w, bias, stride, padding, output_padding, groups,
    dilation) on convkit."""

    @staticmethod
    def forward(ctx, x, w, bias, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
        ctx.args = (stride, padding, output_padding, groups, dilation)
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, w)
        with _device_of(x):
            return _to_tensor(CF.conv_transpose2d(_to_array(x), _to_array(w), _to_array(bias),
                                                  stride, padding, output_padding, groups, dilation))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, w = ctx.saved_tensors
        mask = (bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1]),
                bool(ctx.has_bias and ctx.needs_input_grad[2]))
        if not any(mask):
            return (None,) * 8
        with _device_of(x):
            gx, gw, gb = CF.conv_transpose2d_backward(_to_array(grad_out), _to_array(x), _to_array(w),
                                                      *ctx.args, output_mask=mask)
            return (_to_tensor(gx), _to_tensor(gw), _to_tensor(gb)) + (None,) * 5


class MaxPool2dFunction(torch.autograd.Function):
    """max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode) on
    convkit; returns ``(output, indices)`` (indices not differentiable)."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        ctx.args = (kernel_size, stride, padding, dilation, ceil_mode)
        with _device_of(x):
            y, idx = CF.max_pool2d(_to_array(x), kernel_size, stride, padding, dilation, ceil_mode,
                                   return_indices=True)
            y, idx = _to_tensor(y), _to_tensor(idx)
        ctx.mark_non_differentiable(idx)
        ctx.save_for_backward(x, idx)
        return y, idx

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, _grad_indices=None):
        if not ctx.needs_input_grad[0]:
            return (None,) * 6
        x, idx = ctx.saved_tensors
        with _device_of(x):
            gx = CF.max_pool2d_backward(_to_array(grad_out), _to_array(x), _to_array(idx), *ctx.args)
            return (_to_tensor(gx),) + (None,) * 5


class AvgPool2dFunction(torch.autograd.Function):
    """avg_pool2d(x, kernel_size, stride, padding, ceil_mode,
    count_include_pad, divisor_override) on convkit."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                divisor_override=None):
        ctx.args = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
        ctx.save_for_backward(x)
        with _device_of(x):
            return _to_tensor(CF.avg_pool2d(_to_array(x), *ctx.args))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        if not ctx.needs_input_grad[0]:
            return (None,) * 7
        (x,) = ctx.saved_tensors
        with _device_of(x):
            gx = CF.avg_pool2d_backward(_to_array(grad_out), _to_array(x), *ctx.args)
            return (_to_tensor(gx),) + (None,) * 6


class LPPool2dFunction(torch.autograd.Function):
    """lp_pool2d(x, norm_type, kernel_size, stride, ceil_mode) on convkit."""

    @staticmethod
    def forward(ctx, x, norm_type, kernel_size, stride=None, ceil_mode=False):
        ctx.args = (norm_type, kernel_size, stride, ceil_mode)
        ctx.save_for_backward(x)
        with _device_of(x):
            return _to_tensor(CF.lp_pool2d(_to_array(x), *ctx.args))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        if not ctx.needs_input_grad[0]:
            return (None,) * 5
        (x,) = ctx.saved_tensors
        with _device_of(x):
            gx = CF.lp_pool2d_backward(_to_array(grad_out), _to_array(x), *ctx.args)
            return (_to_tensor(gx),) + (None,) * 4


class AdaptiveAvgPool2dFunction(torch.autograd.Function):
    """adaptive_avg_pool2d(x, output_size) on convkit."""

    @staticmethod
    def forward(ctx, x, output_size):
        ctx.save_for_backward(x)
        with _device_of(x):
            return _to_tensor(CF.adaptive_avg_pool2d(_to_array(x), output_size))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        if not ctx.needs_input_grad[0]:
            return None, None
        (x,) = ctx.saved_tensors
        with _device_of(x):
            return _to_tensor(CF.adaptive_avg_pool2d_backward(_to_array(grad_out), _to_array(x))), None


class AdaptiveMaxPool2dFunction(torch.autograd.Function):
    """adaptive_max_pool2d(x, output_size) on convkit; returns
    ``(output, indices)`` (indices not differentiable)."""

    @staticmethod
    def forward(ctx, x, output_size):
        with _device_of(x):
            y, idx = CF.adaptive_max_pool2d(_to_array(x), output_size, return_indices=True)
            y, idx = _to_tensor(y), _to_tensor(idx)
        ctx.mark_non_differentiable(idx)
        ctx.save_for_backward(x, idx)
        return y, idx

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, _grad_indices=None):
        if not ctx.needs_input_grad[0]:
            return None, None
        x, idx = ctx.saved_tensors
        with _device_of(x):
            gx = CF.adaptive_max_pool2d_backward(_to_array(grad_out), _to_array(x), _to_array(idx))
            return _to_tensor(gx), None


# --------------------------------------------------------------------------- #
# functional wrappers (torch.nn.functional signatures)
# --------------------------------------------------------------------------- #

def _plain(v):
    """torch.Size/list arguments as tuples (hashable, and what convkit takes)."""
    return tuple(v) if isinstance(v, (list, torch.Size)) else v


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return Conv2dFunction.apply(input, weight, bias, _plain(stride), _plain(padding), _plain(dilation), groups)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    return ConvTranspose2dFunction.apply(input, weight, bias, _plain(stride), _plain(padding),
                                         _plain(output_padding), groups, _plain(dilation))


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    if stride is not None and not isinstance(stride, int) and len(stride) == 0:
        stride = None  # torch treats an empty stride as "the kernel size"
    y, idx = MaxPool2dFunction.apply(input, _plain(kernel_size), _plain(stride), _plain(padding),
                                     _plain(dilation), bool(ceil_mode))
    return (y, idx) if return_indices else y


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    if stride is not None and not isinstance(stride, int) and len(stride) == 0:
        stride = None
    return AvgPool2dFunction.apply(input, _plain(kernel_size), _plain(stride), _plain(padding),
                                   bool(ceil_mode), bool(count_include_pad), divisor_override)


def lp_pool2d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    return LPPool2dFunction.apply(input, float(norm_type), _plain(kernel_size), _plain(stride), bool(ceil_mode))


def adaptive_avg_pool2d(input, output_size):
    return AdaptiveAvgPool2dFunction.apply(input, _plain(output_size))


def adaptive_max_pool2d(input, output_size, return_indices=False):
    y, idx = AdaptiveMaxPool2dFunction.apply(input, _plain(output_size))
    return (y, idx) if return_indices else y


# --------------------------------------------------------------------------- #
# nn.Module drop-ins: torch's classes with a convkit forward
# --------------------------------------------------------------------------- #

class Conv2d(nn.Conv2d):
    """torch.nn.Conv2d running on convkit (non-'zeros' padding modes pad with
    F.pad as torch does, then convolve with padding 0)."""

    def forward(self, input):
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return conv2d(input, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class ConvTranspose2d(nn.ConvTranspose2d):
    """torch.nn.ConvTranspose2d running on convkit."""

    def forward(self, input, output_size=None):
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose2d")
        output_padding = self._output_padding(input, output_size, self.stride, self.padding,
                                              self.kernel_size, 2, self.dilation)
        return conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding,
                                output_padding, self.groups, self.dilation)


class MaxPool2d(nn.MaxPool2d):
    """torch.nn.MaxPool2d running on convkit."""

    def forward(self, input):
        return max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                          ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class AvgPool2d(nn.AvgPool2d):
    """torch.nn.AvgPool2d running on convkit."""

    def forward(self, input):
        return avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                          self.count_include_pad, self.divisor_override)


class LPPool2d(nn.LPPool2d):
    """torch.nn.LPPool2d running on convkit."""

    def forward(self, input):
        return lp_pool2d(input, float(self.norm_type), self.kernel_size, self.stride, self.ceil_mode)


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """torch.nn.AdaptiveAvgPool2d running on convkit."""

    def forward(self, input):
        return adaptive_avg_pool2d(input, self.output_size)


class AdaptiveMaxPool2d(nn.AdaptiveMaxPool2d):
    """torch.nn.AdaptiveMaxPool2d running on convkit."""

    def forward(self, input):
        return adaptive_max_pool2d(input, self.output_size, self.return_indices)


_SWAPS = {
    nn.Conv2d: Conv2d,
    nn.ConvTranspose2d: ConvTranspose2d,
    nn.MaxPool2d: MaxPool2d,
    nn.AvgPool2d: AvgPool2d,
    nn.LPPool2d: LPPool2d,
    nn.AdaptiveAvgPool2d: AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d: AdaptiveMaxPool2d,
}


def convert(model: nn.Module) -> nn.Module:
    """Make ``model`` (and every submodule, recursively) run its 2-D conv and
    pooling layers on convkit, in place, and return it.

    Only modules whose type is exactly one of the torch.nn classes above are
    switched (a user subclass may have its own forward). The switch changes
    each module's class to the convkit drop-in, which adds no state: the
    module objects, their Parameters (so optimizers keep working), buffers,
    hooks and state_dict keys all stay the same."""
    for module in model.modules():
        swap = _SWAPS.get(type(module))
        if swap is not None:
            module.__class__ = swap
    return model
