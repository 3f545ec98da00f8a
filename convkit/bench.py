"""``convkit bench``: time convkit's CPU kernels on a fixed suite of real layers.

Every item (layer x pass) is timed for convkit and, side by side, for PyTorch
(``torch.nn.functional`` with the same number of threads) and for the NumPy
reference (``convkit.reference``). convkit and PyTorch calls are interleaved
(alternating which goes first) after warming both up, and the median is
reported. Conv items report GFLOP/s and the percentage of the machine's FP32
peak, pooling items GB/s and the ratio to a plain memory copy measured in the
same run.

The layer list (:data:`LAYERS`) and :class:`Case` are also used by the
pytest-benchmark suites in ``bench/``, so the suite is defined once.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

PASSES = ("fwd", "bwd")
IMPLS = ("convkit", "torch", "numpy")


# --------------------------------------------------------------------------
# The suite
# --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Layer:
    """One benchmark layer (float32, NCHW).

    ``kind`` is ``"conv"`` or ``"pool"``. ``batch`` is the batch size of the
    full suite, ``quick_batch`` that of ``--quick``. Conv fields describe
    ``conv2d(x, w, bias, stride, padding, dilation, groups)`` with ``w`` of
    shape ``(out_channels, channels // groups, *kernel)``; pool fields describe
    ``max_pool2d`` / ``avg_pool2d`` (``op`` = ``"max"`` / ``"avg"``) or
    ``global_avg_pool2d`` (``op`` = ``"global_avg"``).
    """

    name: str
    kind: str
    channels: int
    height: int
    width: int
    batch: int
    quick_batch: int
    out_channels: int = 0
    kernel: Tuple[int, int] = (1, 1)
    stride: Tuple[int, int] = (1, 1)
    padding: object = 0
    dilation: Tuple[int, int] = (1, 1)
    groups: int = 1
    bias: bool = False
    op: str = ""
    count_include_pad: bool = True

    @property
    def network(self) -> str:
        return self.name.split(".", 1)[0]

    def describe(self) -> str:
        """Short human-readable geometry, e.g. ``64x56x56 -> 64, 3x3 /2 p1``."""
        kh, kw = self.kernel
        parts = [f"{self.channels}x{self.height}x{self.width}"]
        if self.kind == "conv":
            parts.append(f"-> {self.out_channels}, {kh}x{kw}")
        elif self.op == "global_avg":
            parts.append("global avg")
        else:
            parts.append(f"{self.op} {kh}x{kw}")
        if self.stride != (1, 1) and self.op != "global_avg":
            sh, sw = self.stride
            parts.append(f"/{sh}" if sh == sw else f"/({sh},{sw})")
        if self.padding not in (0, (0, 0)) and self.op != "global_avg":
            p = self.padding
            if isinstance(p, str):
                parts.append(f"'{p}'")
            elif isinstance(p, tuple) and len(set(p)) == 1:
                parts.append(f"p{p[0]}")
            elif isinstance(p, tuple):
                parts.append("p(" + ",".join(str(v) for v in p) + ")")
            else:
                parts.append(f"p{p}")
        if self.dilation != (1, 1):
            dh, dw = self.dilation
            parts.append(f"d{dh}" if dh == dw else f"d({dh},{dw})")
        if self.groups != 1:
            parts.append("dw" if self.groups == self.channels == self.out_channels else f"g{self.groups}")
        if self.bias:
            parts.append("+b")
        return " ".join(parts)


def _pair(v) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


def conv(name, c, k, hw, kernel, *, stride=1, padding=0, dilation=1, groups=1,
         bias=False, batch, quick_batch) -> Layer:
    h, w = _pair(hw)
    return Layer(name=name, kind="conv", channels=c, height=h, width=w, batch=batch,
                 quick_batch=quick_batch, out_channels=k, kernel=_pair(kernel),
                 stride=_pair(stride), padding=padding, dilation=_pair(dilation),
                 groups=groups, bias=bias)


def pool(name, op, c, hw, kernel=1, *, stride=None, padding=0, batch, quick_batch,
         count_include_pad=True) -> Layer:
    h, w = _pair(hw)
    if op == "global_avg":
        kernel, stride = (h, w), (h, w)
    return Layer(name=name, kind="pool", op=op, channels=c, height=h, width=w, batch=batch,
                 quick_batch=quick_batch, kernel=_pair(kernel),
                 stride=_pair(kernel if stride is None else stride), padding=padding,
                 count_include_pad=count_include_pad)


# Full batches aim at ~10-300 ms per convkit call on 2 cores; quick batches at
# a few ms, so that `--quick` (with PyTorch and the NumPy reference) stays
# under a minute.
LAYERS: List[Layer] = [
    # Seed networks.
    conv("mnist.conv1", 1, 8, 28, 3, padding=1, bias=True, batch=128, quick_batch=128),
    conv("mnist.conv2", 8, 16, 14, 3, padding=1, bias=True, batch=128, quick_batch=128),
    conv("keras.conv1", 1, 32, 28, 5, padding="same", bias=True, batch=64, quick_batch=64),
    conv("keras.conv2", 32, 64, 14, 5, padding="same", bias=True, batch=64, quick_batch=64),
    # ResNet-50 (torchvision v1.5: stride on the 3x3).
    conv("resnet50.conv1", 3, 64, 224, 7, stride=2, padding=3, batch=8, quick_batch=1),
    conv("resnet50.layer1.3x3", 64, 64, 56, 3, padding=1, batch=8, quick_batch=1),
    conv("resnet50.layer1.1x1.reduce", 256, 64, 56, 1, batch=16, quick_batch=2),
    conv("resnet50.layer1.1x1.expand", 64, 256, 56, 1, batch=16, quick_batch=2),
    conv("resnet50.layer2.3x3.s2", 128, 128, 56, 3, stride=2, padding=1, batch=8, quick_batch=1),
    conv("resnet50.layer2.3x3", 128, 128, 28, 3, padding=1, batch=8, quick_batch=1),
    conv("resnet50.layer2.downsample.1x1.s2", 256, 512, 56, 1, stride=2, batch=8, quick_batch=1),
    conv("resnet50.layer3.3x3.s2", 256, 256, 28, 3, stride=2, padding=1, batch=8, quick_batch=1),
    conv("resnet50.layer3.3x3", 256, 256, 14, 3, padding=1, batch=8, quick_batch=1),
    conv("resnet50.layer3.1x1.reduce", 1024, 256, 14, 1, batch=16, quick_batch=2),
    conv("resnet50.layer4.3x3.s2", 512, 512, 14, 3, stride=2, padding=1, batch=8, quick_batch=1),
    conv("resnet50.layer4.3x3", 512, 512, 7, 3, padding=1, batch=8, quick_batch=1),
    # VGG-16 conv2_2.
    conv("vgg16.conv2_2", 128, 128, 112, 3, padding=1, batch=2, quick_batch=1),
    # MobileNet-V2 depthwise 3x3 (block 2 expanded channels).
    conv("mobilenetv2.dw3x3", 144, 144, 56, 3, padding=1, groups=144, batch=32, quick_batch=4),
    conv("mobilenetv2.dw3x3.s2", 96, 96, 112, 3, stride=2, padding=1, groups=96, batch=32,
         quick_batch=4),
    # Inception-v3 Mixed_6b 1x7.
    conv("inception3.mixed6b.1x7", 128, 128, 17, (1, 7), padding=(0, 3), batch=32, quick_batch=4),
    # Odd sizes: nothing divides anything.
    conv("odd.37x29x31.k53.s2d2", 37, 53, (29, 31), 3, stride=2, padding=2, dilation=2,
         bias=True, batch=64, quick_batch=8),
    # Pooling: the seed MNIST network's two 2x2 max pools, then ImageNet-sized ones.
    pool("mnist.maxpool1", "max", 8, 28, 2, batch=128, quick_batch=128),
    pool("mnist.maxpool2", "max", 16, 14, 2, batch=128, quick_batch=128),
    pool("resnet50.maxpool", "max", 64, 112, 3, stride=2, padding=1, batch=32, quick_batch=2),
    pool("vgg16.maxpool2x2", "max", 128, 112, 2, stride=2, batch=16, quick_batch=1),
    pool("densenet.avgpool2x2", "avg", 128, 56, 2, stride=2, batch=64, quick_batch=4),
    pool("inception3.avgpool3x3", "avg", 192, 35, 3, stride=1, padding=1, batch=64,
         quick_batch=4),
    pool("resnet50.globalavg", "global_avg", 2048, 7, batch=256, quick_batch=16),
]

# Layers outside the main suite (`--suite extra`): other networks' shapes and
# odd ones, to check that what was tuned on the suite holds elsewhere.
EXTRA_LAYERS: List[Layer] = [
    conv("alexnet.conv1", 3, 64, 224, 11, stride=4, padding=2, bias=True, batch=16, quick_batch=2),
    conv("alexnet.conv2", 64, 192, 27, 5, padding=2, bias=True, batch=16, quick_batch=2),
    conv("alexnet.conv3", 192, 384, 13, 3, padding=1, bias=True, batch=16, quick_batch=2),
    conv("googlenet.3a.3x3", 96, 128, 28, 3, padding=1, batch=16, quick_batch=2),
    conv("googlenet.3a.5x5", 16, 32, 28, 5, padding=2, batch=16, quick_batch=4),
    conv("densenet121.1x1", 128, 128, 28, 1, batch=16, quick_batch=2),
    conv("densenet121.3x3.k32", 128, 32, 28, 3, padding=1, batch=16, quick_batch=4),
    conv("unet.3x3.64", 64, 64, 256, 3, padding=1, batch=2, quick_batch=1),
    conv("squeezenet.fire2.1x1", 16, 64, 55, 1, batch=16, quick_batch=2),
    conv("squeezenet.fire2.3x3", 16, 64, 55, 3, padding=1, batch=16, quick_batch=2),
    conv("resnext50.g32", 256, 256, 28, 3, padding=1, groups=32, batch=8, quick_batch=1),
    conv("deeplab.3x3.d2", 256, 256, 33, 3, padding=2, dilation=2, batch=4, quick_batch=1),
    conv("efficientnet.dw5x5", 240, 240, 28, 5, padding=2, groups=240, batch=16, quick_batch=2),
    conv("efficientnet.dw5x5.14", 672, 672, 14, 5, padding=2, groups=672, batch=16, quick_batch=2),
    conv("efficientnet.dw5x5.7", 1152, 1152, 7, 5, padding=2, groups=1152, batch=16, quick_batch=2),
    conv("mobilenetv2.dw3x3.14", 576, 576, 14, 3, padding=1, groups=576, batch=32, quick_batch=4),
    conv("mobilenetv2.dw3x3.14.s2", 576, 576, 14, 3, stride=2, padding=1, groups=576, batch=32, quick_batch=4),
    conv("mobilenetv2.dw3x3.7", 960, 960, 7, 3, padding=1, groups=960, batch=32, quick_batch=4),
    conv("convnext.dw7x7.14", 384, 384, 14, 7, padding=3, groups=384, batch=16, quick_batch=2),
    conv("inception3.mixed6b.7x1", 128, 128, 17, (7, 1), padding=(3, 0), batch=32, quick_batch=4),
    conv("cifar.3x3.64", 64, 64, 32, 3, padding=1, batch=64, quick_batch=8),
    conv("cifar.3x3.s2", 64, 128, 32, 3, stride=2, padding=1, batch=64, quick_batch=8),
    conv("odd.48x37x113.k96", 48, 96, (37, 113), 3, padding=1, batch=4, quick_batch=1),
    conv("odd.24x61x45.k40.5x5s2", 24, 40, (61, 45), 5, stride=2, padding=2, batch=8, quick_batch=2),
    conv("vgg16.conv1_2", 64, 64, 224, 3, padding=1, batch=2, quick_batch=1),
    conv("vgg16.conv4_2", 512, 512, 28, 3, padding=1, batch=4, quick_batch=1),
    conv("resnet50.layer4.1x1.reduce", 2048, 512, 7, 1, batch=8, quick_batch=1),
    conv("resnet50.layer4.1x1.expand", 512, 2048, 7, 1, batch=8, quick_batch=1),
    conv("stem.3x3.s2.c3", 3, 32, 128, 3, stride=2, padding=1, batch=16, quick_batch=2),
    conv("mobilenetv2.expand.1x1", 24, 144, 56, 1, batch=32, quick_batch=4),
    conv("mobilenetv2.project.1x1", 144, 32, 28, 1, batch=32, quick_batch=4),
    conv("wide.5x5.128", 128, 128, 28, 5, padding=2, batch=8, quick_batch=1),
    conv("wide.7x7.64", 64, 64, 56, 7, padding=3, batch=8, quick_batch=1),
    conv("batch1.3x3.256", 256, 256, 14, 3, padding=1, batch=1, quick_batch=1),
    conv("batch1.3x3.512", 512, 512, 7, 3, padding=1, batch=1, quick_batch=1),
    conv("dilated.3x3.d4", 128, 128, 64, 3, padding=4, dilation=4, batch=4, quick_batch=1),
    conv("grouped.3x3.g4", 128, 128, 28, 3, padding=1, groups=4, batch=8, quick_batch=1),
    conv("head.3x3.k3", 64, 3, 56, 3, padding=1, batch=16, quick_batch=2),
    pool("resnetd.avgpool3x3.s2", "avg", 64, 56, 3, stride=2, padding=1, batch=8, quick_batch=2),
    pool("googlenet.maxpool3x3.s1", "max", 192, 28, 3, stride=1, padding=1, batch=8, quick_batch=2),
    pool("inception3.avgpool5x5.s3", "avg", 768, 17, 5, stride=3, batch=16, quick_batch=2),
    pool("alexnet.maxpool3x3.s2", "max", 256, 27, 3, stride=2, batch=16, quick_batch=2),
    pool("vgg16.maxpool2x2.14", "max", 512, 14, 2, stride=2, batch=64, quick_batch=4),
    pool("inception3.avgpool3x3.288", "avg", 288, 35, 3, stride=1, padding=1, batch=16, quick_batch=2),
]

SUITES = {"main": LAYERS, "extra": EXTRA_LAYERS, "all": LAYERS + EXTRA_LAYERS}


def layer_by_name(name: str) -> Layer:
    for layer in SUITES["all"]:
        if layer.name == name:
            return layer
    raise KeyError(name)


# --------------------------------------------------------------------------
# One item: inputs and the three implementations
# --------------------------------------------------------------------------

def _torch():
    try:
        import torch  # noqa: F401
    except Exception:  # pragma: no cover - depends on the environment
        return None
    return torch


def _torch_padding(padding):
    """torch's conv2d takes int, (ph, pw) or 'same'/'valid'; convert
    ((top, bottom), (left, right)) when symmetric."""
    if isinstance(padding, tuple) and padding and isinstance(padding[0], tuple):
        (top, bottom), (left, right) = padding
        if top != bottom or left != right:
            raise ValueError("asymmetric padding has no torch.nn.functional equivalent")
        return (top, left)
    return padding


class Case:
    """Inputs of one (layer, pass, batch) and zero-argument callables that run
    it with convkit, torch or the NumPy reference.

    ``work`` is the FLOP count (conv; backward counts twice the forward) or the
    number of bytes read and written (pooling).
    """

    def __init__(self, layer: Layer, pass_: str, batch: int, seed: int = 0):
        import convkit

        if pass_ not in PASSES:
            raise ValueError(f"pass must be one of {PASSES}, got {pass_!r}")
        self.layer, self.pass_, self.batch = layer, pass_, batch
        self._ck = convkit
        rng = np.random.default_rng(seed)
        self._build(lambda shape: rng.standard_normal(shape, dtype=np.float32))

    def _scaled(self, a, factor: float):
        return a * np.float32(factor)

    def _build(self, normal: Callable[[tuple], object]) -> None:
        """Inputs from ``normal(shape)`` (standard normal samples, in the
        order x, w, b, grad_out), the output shape (from one convkit forward)
        and the work count. Shared with the GPU suite (convkit.bench_cuda)."""
        convkit = self._ck
        L, batch, pass_ = self.layer, self.batch, self.pass_
        self.x = normal((batch, L.channels, L.height, L.width))
        self.w = self.b = self.indices = self.grad_out = None
        if L.kind == "conv":
            fan_in = (L.channels // L.groups) * L.kernel[0] * L.kernel[1]
            self.w = self._scaled(normal((L.out_channels, L.channels // L.groups) + L.kernel),
                                  1.0 / math.sqrt(fan_in))
            if L.bias:
                self.b = normal((L.out_channels,))
            y = convkit.conv2d(self.x, self.w, self.b, L.stride, L.padding, L.dilation, L.groups)
        elif L.op == "max":
            y, self.indices = convkit.max_pool2d(self.x, L.kernel, L.stride, L.padding,
                                                 return_indices=True)
        elif L.op == "avg":
            y = convkit.avg_pool2d(self.x, L.kernel, L.stride, L.padding,
                                   count_include_pad=L.count_include_pad)
        elif L.op == "global_avg":
            y = convkit.global_avg_pool2d(self.x)
        else:
            raise ValueError(f"unknown layer {L}")
        self.out_shape = tuple(y.shape)
        if pass_ == "bwd":
            self.grad_out = normal(self.out_shape)
        if L.kind == "conv":
            n, k, oh, ow = self.out_shape
            flops = 2 * n * k * oh * ow * (L.channels // L.groups) * L.kernel[0] * L.kernel[1]
            self.flops = flops * (2 if pass_ == "bwd" else 1)
            self.nbytes = 0
            self.work = self.flops
        else:
            y_bytes = int(np.prod(self.out_shape)) * self.x.itemsize
            if pass_ == "fwd":
                self.nbytes = self.x.nbytes + y_bytes
            else:  # read grad_out (+ indices), write grad_x
                self.nbytes = y_bytes + self.x.nbytes
                if self.indices is not None:
                    self.nbytes += self.indices.nbytes
            self.flops = 0
            self.work = self.nbytes

    # -- convkit / reference (same signatures) --------------------------------
    def _api_fn(self, mod) -> Callable[[], object]:
        L, x, w, b, g = self.layer, self.x, self.w, self.b, self.grad_out
        if L.kind == "conv":
            if self.pass_ == "fwd":
                return lambda: mod.conv2d(x, w, b, L.stride, L.padding, L.dilation, L.groups)
            mask = (True, True, L.bias)
            return lambda: mod.conv2d_backward(g, x, w, L.stride, L.padding, L.dilation,
                                               L.groups, output_mask=mask)
        if L.op == "max":
            if self.pass_ == "fwd":
                return lambda: mod.max_pool2d(x, L.kernel, L.stride, L.padding)
            if mod is self._ck:
                idx = self.indices
            else:
                idx = mod.max_pool2d(x, L.kernel, L.stride, L.padding, return_indices=True)[1]
            return lambda: mod.max_pool2d_backward(g, x, idx, L.kernel, L.stride, L.padding,
                                                   (1, 1), False)
        if L.op == "avg":
            cip = L.count_include_pad
            if self.pass_ == "fwd":
                return lambda: mod.avg_pool2d(x, L.kernel, L.stride, L.padding,
                                              count_include_pad=cip)
            return lambda: mod.avg_pool2d_backward(g, x, L.kernel, L.stride, L.padding, False,
                                                   cip, None)
        # global average pool
        if self.pass_ == "fwd":
            return lambda: mod.global_avg_pool2d(x)
        if hasattr(mod, "global_avg_pool2d_backward"):
            return lambda: mod.global_avg_pool2d_backward(g, x)
        if hasattr(mod, "adaptive_avg_pool2d_backward"):
            g4 = g.reshape(x.shape[0], x.shape[1], 1, 1)
            return lambda: mod.adaptive_avg_pool2d_backward(g4, x)
        raise NotImplementedError(f"{mod.__name__} has no global/adaptive avg pool backward")

    def convkit_fn(self) -> Callable[[], object]:
        return self._api_fn(self._ck)

    def reference_fn(self) -> Callable[[], object]:
        from convkit import reference
        return self._api_fn(reference)

    # -- torch ---------------------------------------------------------------
    def _to_torch(self, a, copy: bool):
        """A tensor of ``a`` (a copy when it will be a leaf that needs grad)."""
        torch = _torch()
        return torch.from_numpy(a.copy() if copy else a)

    def torch_fn(self) -> Callable[[], object]:
        torch = _torch()
        if torch is None:
            raise ImportError("torch is not installed (pip install torch==2.13.0)")
        import torch.nn.functional as F

        L = self.layer
        bwd = self.pass_ == "bwd"
        xt = self._to_torch(self.x, bwd)
        if L.kind == "conv":
            wt = self._to_torch(self.w, bwd)
            bt = None if self.b is None else self._to_torch(self.b, True)
            pad = _torch_padding(L.padding)

            def forward():
                return F.conv2d(xt, wt, bt, L.stride, pad, L.dilation, L.groups)
            inputs = [xt, wt] + ([bt] if bt is not None else [])
        else:
            if L.op == "max":
                def forward():
                    return F.max_pool2d(xt, L.kernel, L.stride, L.padding)
            elif L.op == "avg":
                def forward():
                    return F.avg_pool2d(xt, L.kernel, L.stride, L.padding,
                                        count_include_pad=L.count_include_pad)
            else:
                def forward():
                    return F.adaptive_avg_pool2d(xt, 1)
            inputs = [xt]
        if not bwd:
            def run():
                with torch.no_grad():
                    return forward()
            return run
        for t in inputs:
            t.requires_grad_(True)
        out = forward()  # once, outside the timed region
        gt = self._to_torch(self.grad_out, False).reshape(out.shape)
        inputs = tuple(inputs)
        return lambda: torch.autograd.grad(out, inputs, gt, retain_graph=True)

    def fn(self, impl: str) -> Callable[[], object]:
        if impl == "convkit":
            return self.convkit_fn()
        if impl == "torch":
            return self.torch_fn()
        if impl == "numpy":
            return self.reference_fn()
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


def _as_arrays(result) -> List[np.ndarray]:
    """Flatten a result (array, tensor or tuple of them, None skipped)."""
    if result is None:
        return []
    if isinstance(result, (tuple, list)):
        out: List[np.ndarray] = []
        for r in result:
            out.extend(_as_arrays(r))
        return out
    if hasattr(result, "detach"):
        result = result.detach().cpu().numpy()
    return [np.asarray(result)]


def relative_error(result, expected) -> float:
    """max |a - b| / max |b| over all outputs (inf on a shape mismatch)."""
    a, b = _as_arrays(result), _as_arrays(expected)
    if len(a) != len(b):
        return math.inf
    worst = 0.0
    for u, v in zip(a, b):
        if u.size != v.size:
            return math.inf
        u = u.reshape(-1).astype(np.float64)
        v = v.reshape(-1).astype(np.float64)
        if u.size == 0:
            continue
        scale = max(float(np.max(np.abs(v))), 1e-30)
        worst = max(worst, float(np.max(np.abs(u - v))) / scale)
    return worst


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------

def time_interleaved(fns: Dict[str, Callable[[], object]], *, warmup: int, min_repeat: int,
                     max_repeat: int, budget_s: float) -> Dict[str, List[float]]:
    """Time several implementations of the same item, alternating the order
    each round (A B, B A, ...), after ``warmup`` untimed rounds. Stops after
    ``max_repeat`` rounds, or after ``min_repeat`` once ``budget_s`` seconds
    have passed. Returns seconds per call for each implementation."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    times: Dict[str, List[float]] = {n: [] for n in names}
    start = time.perf_counter()
    for i in range(max_repeat):
        for n in (names if i % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t0)
        if i + 1 >= min_repeat and time.perf_counter() - start > budget_s:
            break
    return times


def _shrunk(layer: Layer, factor: int) -> Layer:
    """The same layer on a smaller image (for probing the reference's speed)."""
    if factor == 1:
        return layer
    if layer.kind == "conv":
        eh = layer.dilation[0] * (layer.kernel[0] - 1) + 1
        ew = layer.dilation[1] * (layer.kernel[1] - 1) + 1
    elif layer.op == "global_avg":
        eh = ew = 1
    else:
        eh, ew = layer.kernel
    h = max(eh, -(-layer.height // factor))
    w = max(ew, -(-layer.width // factor))
    if layer.op == "global_avg":
        return dataclasses.replace(layer, height=h, width=w, kernel=(h, w), stride=(h, w))
    return dataclasses.replace(layer, height=h, width=w)


REFERENCE_HEADROOM = 1.5


def reference_estimate(layer: Layer, pass_: str, batch: int, work: float, limit_s: float
                       ) -> Tuple[bool, float]:
    """Decide whether one NumPy-reference call of (layer, pass_, batch) stays
    under ``limit_s`` seconds, without running anything that long: time the
    reference on growing cut-down versions (batch 1 with the image side cut to
    1/8, 1/4, 1/2, 1, then 1/8 of the batch) and extrapolate by work (FLOPs or
    bytes). Small probes over-estimate (fixed overheads), so a larger probe is
    tried before giving up; each probe is called twice (unless the first call
    was already long) to leave out one-time costs. An item fits when
    ``REFERENCE_HEADROOM`` times the estimate is within the limit. Returns
    (fits, estimated seconds)."""
    seen = set()
    estimate = math.inf
    probes = [(1, 8), (1, 4), (1, 2), (1, 1), (-(-batch // 8), 1)]
    for i, (probe_batch, factor) in enumerate(probes):
        probe_layer = _shrunk(layer, factor)
        if (probe_layer, probe_batch) in seen or probe_batch > batch:
            continue
        seen.add((probe_layer, probe_batch))
        probe = Case(probe_layer, pass_, probe_batch, seed=1)
        fn = probe.reference_fn()
        t = math.inf
        for _ in range(2):
            t0 = time.perf_counter()
            fn()
            t = min(t, time.perf_counter() - t0)
            if t > limit_s / 8 and len(seen) > 1:
                break
        estimate = t * work / max(probe.work, 1)
        # Headroom: bigger arrays fall out of cache, so the reference scales
        # somewhat worse than linearly from the probe.
        if estimate * REFERENCE_HEADROOM <= limit_s:
            return True, estimate
        if t > limit_s / 8:
            break
    return False, estimate


# --------------------------------------------------------------------------
# Machine: peak FLOP/s, memory copy bandwidth, description
# --------------------------------------------------------------------------

def _blas_limit(threads: int):
    """Context manager limiting NumPy's BLAS threads (no-op without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
        return threadpool_limits(limits=threads, user_api="blas"), True
    except Exception:
        import contextlib
        return contextlib.nullcontext(), False


# FMA-peak probe: several repeats of ~PEAK_REPEAT_S each within PEAK_BUDGET_S
# (at least PEAK_MIN_REPEATS), best one kept. A single short loop can read half
# the peak when one thread is descheduled during it (a recorded run read 117
# GFLOP/s instead of ~230).
PEAK_REPEAT_S = 0.12
PEAK_BUDGET_S = 1.2
PEAK_MIN_REPEATS = 3
PEAK_MAX_REPEATS = 10
_PEAK_CALIBRATION_ITERATIONS = 2_000_000


def fma_probe(fn: Callable[..., float], *, repeat_s: float = PEAK_REPEAT_S,
              budget_s: float = PEAK_BUDGET_S, min_repeats: int = PEAK_MIN_REPEATS,
              max_repeats: int = PEAK_MAX_REPEATS) -> dict:
    """Best GFLOP/s of ``fn(iterations)`` (the register-only FMA loop) over
    several repeats: two short calibration calls (they also wake the OpenMP
    threads) size one repeat to ~``repeat_s`` seconds, then repeats run until
    ``budget_s`` would be exceeded (at least ``min_repeats``, at most
    ``max_repeats``). Returns {"gflops", "samples", "iterations", "seconds"}.
    A ``fn`` without an iterations argument is called as ``fn()``."""
    def call(iterations):
        try:
            return float(fn(iterations))
        except TypeError:
            return float(fn())

    t_start = time.perf_counter()
    per_iteration = math.inf
    for _ in range(2):
        t0 = time.perf_counter()
        call(_PEAK_CALIBRATION_ITERATIONS)
        per_iteration = min(per_iteration, (time.perf_counter() - t0) / _PEAK_CALIBRATION_ITERATIONS)
    iterations = int(min(max(repeat_s / max(per_iteration, 1e-12), 1e5), 2e9))
    samples: List[float] = []
    t_loop = time.perf_counter()
    while len(samples) < max_repeats:
        elapsed = time.perf_counter() - t_loop
        if len(samples) >= min_repeats and elapsed + elapsed / len(samples) > budget_s:
            break
        samples.append(call(iterations))
    return {"gflops": max(samples), "samples": samples, "iterations": iterations,
            "seconds": time.perf_counter() - t_start}


def measure_peak_gflops(threads: int, details: Optional[dict] = None) -> Tuple[float, str]:
    """FP32 peak in GFLOP/s and how it was obtained.

    Uses the extension's register-only FMA loop on the active ISA path
    (``convkit._C.measure_peak_gflops``) when it has one -- best of several
    ~0.12 s repeats (:func:`fma_probe`, ~1.2 s in all) -- otherwise a 2048^3
    float32 matmul through NumPy's BLAS (an estimate: a good sgemm reaches
    ~85-95% of peak). ``details``, if given, receives the probe's samples.
    """
    try:
        from convkit import _C  # type: ignore[attr-defined]
    except Exception:
        _C = None
    fn = getattr(_C, "measure_peak_gflops", None)
    if callable(fn):
        # Runs on convkit's active ISA path and thread count.
        try:
            probe = fma_probe(fn)
            if details is not None:
                details.update(probe)
            if probe["gflops"] > 0:
                return probe["gflops"], (f"fma-loop (convkit._C.measure_peak_gflops, best of "
                                         f"{len(probe['samples'])} x {probe['iterations'] / 1e6:.0f}M "
                                         f"iterations, {probe['seconds']:.1f} s)")
        except Exception:
            pass
    n = 2048
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    limit, limited = _blas_limit(threads)
    with limit:
        np.matmul(a, b, out=c)
        best = math.inf
        for _ in range(4):
            t0 = time.perf_counter()
            np.matmul(a, b, out=c)
            best = min(best, time.perf_counter() - t0)
    method = "matmul-estimated (numpy sgemm 2048^3" + (
        f", {threads} BLAS threads)" if limited else ", BLAS default threads)")
    return 2.0 * n ** 3 / best / 1e9, method


def measure_copy_gbps(threads: int, mib: int = 256) -> float:
    """Plain memory copy bandwidth (np.copyto of a ``mib`` MiB float32 array,
    split over ``threads`` Python threads; NumPy releases the GIL), counting
    bytes read + bytes written, best of 4."""
    n = mib * 2 ** 20 // 4
    src = np.ones(n, dtype=np.float32)
    dst = np.zeros(n, dtype=np.float32)
    threads = max(1, threads)
    bounds = [n * i // threads for i in range(threads + 1)]
    slices = [slice(bounds[i], bounds[i + 1]) for i in range(threads)]

    def copy(s):
        np.copyto(dst[s], src[s])

    best = math.inf
    with ThreadPoolExecutor(threads) as ex:
        for _ in range(5):
            t0 = time.perf_counter()
            list(ex.map(copy, slices))
            best = min(best, time.perf_counter() - t0)
    return 2.0 * src.nbytes / best / 1e9


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def convkit_info() -> dict:
    import convkit
    info = {}
    fn = getattr(convkit, "info", None)
    if callable(fn):
        try:
            info = dict(fn())
        except Exception as e:  # keep benchmarking even if info() is broken
            info = {"error": f"convkit.info() failed: {e!r}"}
    info.setdefault("version", getattr(convkit, "__version__", "unknown"))
    if "isa" not in info:
        try:
            from convkit import _C  # type: ignore[attr-defined]
            info["isa"] = _C.active_isa()
        except Exception:
            info["isa"] = "unknown"
    info.setdefault("supported_isas", [])
    info.setdefault("num_threads", _get_threads())
    return info


def _cpu_snapshot() -> Optional[Tuple[float, float, float]]:
    """(busy CPU seconds of the whole machine, CPU seconds of this process,
    wall time), to tell how much of the machine other processes used."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
        tick = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    busy = (sum(fields[:8]) - idle) / tick  # user..steal, without guest (counted in user)
    t = os.times()
    return busy, t.user + t.system, time.perf_counter()


def other_processes_cpu_share(start, end) -> Optional[float]:
    """Fraction of all CPUs that other processes kept busy between two
    :func:`_cpu_snapshot` calls (0 = the benchmark had the machine alone)."""
    if not start or not end:
        return None
    wall = end[2] - start[2]
    if wall <= 0:
        return None
    others = (end[0] - start[0]) - (end[1] - start[1])
    return max(0.0, others / (wall * (os.cpu_count() or 1)))


def _loadavg() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def _get_threads() -> int:
    import convkit
    fn = getattr(convkit, "get_num_threads", None)
    return int(fn()) if callable(fn) else (os.cpu_count() or 1)


def _set_threads(n: int) -> None:
    import convkit
    fn = getattr(convkit, "set_num_threads", None)
    if callable(fn):
        fn(n)


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------

class Progress:
    """A one-line progress bar on stderr; silent when stderr is not a tty."""

    def __init__(self, total: int, enabled: Optional[bool] = None, width: int = 28):
        self.total = max(total, 1)
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.width = width
        self.start = time.perf_counter()

    def update(self, done: int, label: str = "") -> None:
        if not self.enabled:
            return
        filled = int(self.width * done / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.perf_counter() - self.start
        line = f"\r[{bar}] {done}/{self.total} {elapsed:5.1f}s {label}"
        cols = 100
        try:
            cols = os.get_terminal_size(sys.stderr.fileno()).columns or cols
        except OSError:
            pass
        cols = max(cols, 40)
        sys.stderr.write(line[:cols - 1].ljust(cols - 1))
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _fmt(v: Optional[float], spec: str, missing: str = "-") -> str:
    return missing if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def geomean(values: Sequence[float]) -> Optional[float]:
    vals = [v for v in values if v and v > 0 and math.isfinite(v)]
    if not vals:
        return None
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def _mib(v: Optional[float]) -> str:
    return "-" if v is None else f"{v / 2 ** 20:.1f}"


def table_rows(results: List[dict], memory: bool = False) -> List[List[str]]:
    """Header row + one row of strings per result. ``memory``: the last two
    number columns give the peak extra device memory of one call (convkit,
    torch; GPU runs) instead of the NumPy reference's time and speedup."""
    header = ["layer", "pass", "N", "geometry", "convkit ms", "rate", "eff",
              "torch ms", "vs torch", "numpy ms", "vs numpy", "check"]
    if memory:
        header[9:11] = ["convkit MiB", "torch MiB"]
    rows = [header]
    for r in results:
        ck = r.get("convkit") or {}
        th = r.get("torch") or {}
        ref = r.get("numpy") or {}
        if r.get("error"):
            rate = eff = "ERROR"
        elif r["kind"] == "conv":
            rate = _fmt(ck.get("gflops"), ".1f") + " GF/s"
            eff = _fmt(ck.get("pct_peak"), ".0f") + "% pk"
        else:
            rate = _fmt(ck.get("gbps"), ".1f") + " GB/s"
            eff = _fmt(ck.get("pct_copy"), ".0f") + "% cp"
        check = r.get("check", "-")
        if memory:
            tail = [_mib(ck.get("peak_memory_bytes")), _mib(th.get("peak_memory_bytes"))]
        else:
            tail = [_fmt(ref.get("median_ms"), ".2f"), _fmt(r.get("speedup_vs_numpy"), ".1f", "-") +
                    ("x" if r.get("speedup_vs_numpy") else "")]
        rows.append([
            r["layer"], r["pass"], str(r["batch"]), r["geometry"],
            _fmt(ck.get("median_ms"), ".3f"), rate, eff,
            _fmt(th.get("median_ms"), ".3f"), _fmt(r.get("speedup_vs_torch"), ".2f", "-") +
            ("x" if r.get("speedup_vs_torch") else ""),
            *tail,
            check,
        ])
    return rows


_RIGHT_ALIGNED = {2, 4, 5, 6, 7, 8, 9, 10}


def format_table(results: List[dict], markdown: bool = False, memory: bool = False) -> str:
    rows = table_rows(results, memory=memory)
    if markdown:
        def md(row):
            return "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"
        sep = ["---:" if i in _RIGHT_ALIGNED else "---" for i in range(len(rows[0]))]
        return "\n".join([md(rows[0]), "| " + " | ".join(sep) + " |"] + [md(r) for r in rows[1:]])
    header = rows[0]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    right = _RIGHT_ALIGNED
    lines = []
    for j, row in enumerate(rows):
        cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summarize(results: List[dict]) -> dict:
    def pick(pred, key):
        return [r[key] for r in results if pred(r) and r.get(key)]
    groups = {
        "conv_fwd": lambda r: r["kind"] == "conv" and r["pass"] == "fwd",
        "conv_bwd": lambda r: r["kind"] == "conv" and r["pass"] == "bwd",
        "pool": lambda r: r["kind"] == "pool",
    }
    out: dict = {}
    for key in ("speedup_vs_torch", "speedup_vs_numpy"):
        out[key] = {}
        for gname, pred in groups.items():
            vals = pick(pred, key)
            out[key][gname] = {"geomean": geomean(vals), "count": len(vals)}
    deltas = [abs(r["order_check"]["relative_difference"]) for r in results
              if r.get("order_check")]
    out["order_check_median_relative_difference"] = statistics.median(deltas) if deltas else None
    out["errors"] = sum(1 for r in results if r.get("error"))
    out["bad_checks"] = sum(1 for r in results if r.get("check") == "BAD")
    return out


def format_summary(summary: dict) -> str:
    lines = []
    for key, label in (("speedup_vs_torch", "vs torch"), ("speedup_vs_numpy", "vs numpy")):
        parts = []
        for gname, glabel in (("conv_fwd", "conv fwd"), ("conv_bwd", "conv bwd"),
                              ("pool", "pooling")):
            g = summary[key][gname]
            if g["count"]:
                parts.append(f"{glabel} {g['geomean']:.2f}x (n={g['count']})")
        if parts:
            lines.append(f"geomean speedup {label}: " + ", ".join(parts))
    oc = summary.get("order_check_median_relative_difference")
    if oc is not None:
        lines.append(f"order check: median |ratio(convkit first) / ratio(torch first) - 1| = "
                     f"{100 * oc:.1f}%")
    if summary.get("bad_checks"):
        lines.append(f"WARNING: {summary['bad_checks']} item(s) differ from the comparison "
                     "implementation (check = BAD)")
    if summary.get("errors"):
        lines.append(f"ERROR: {summary['errors']} item(s) failed (see above)")
    return "\n".join(lines)


def write_plot(path: str, results: List[dict], title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [r for r in results if r.get("speedup_vs_torch")]
    if not items:
        print(f"--plot: no speedups vs torch to plot; {path} not written", file=sys.stderr)
        return
    labels = [f"{r['layer']} {r['pass']}" for r in items]
    vals = [r["speedup_vs_torch"] for r in items]
    colors = ["tab:blue" if r["kind"] == "conv" and r["pass"] == "fwd" else
              "tab:orange" if r["kind"] == "conv" else "tab:green" for r in items]
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(items) + 1.5))
    y = np.arange(len(items))
    ax.barh(y, vals, color=colors)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_ylim(len(items) - 0.5, -0.5)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("speedup vs torch (time torch / time convkit; >1 = convkit faster)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="small batches and few repeats: whole run in under a minute")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads for convkit and torch (default: convkit.get_num_threads(), "
                        "which honours OMP_NUM_THREADS)")
    p.add_argument("--filter", action="append", default=[], metavar="SUBSTR",
                   help="only items whose 'layer:pass' contains SUBSTR (repeatable or "
                        "comma-separated; any match selects), e.g. resnet50, :bwd, maxpool")
    p.add_argument("--no-torch", action="store_true", help="do not time PyTorch")
    p.add_argument("--no-reference", action="store_true", help="do not time the NumPy reference")
    p.add_argument("--repeat", type=int, default=None, metavar="N",
                   help="timed calls per implementation and item (default: adaptive, "
                        "5-25 in --quick, 7-60 otherwise, within ~0.3 s / 2 s per item)")
    p.add_argument("--reference-limit", type=float, default=2.0, metavar="SECONDS",
                   help="skip the NumPy reference on an item when one call would take longer "
                        "(estimated on smaller probes; default 2)")
    p.add_argument("--json", metavar="FILE", help="write every number to FILE (JSON)")
    p.add_argument("--markdown", metavar="FILE.md",
                   help="write the header, table and summary as Markdown to FILE.md")
    p.add_argument("--plot", metavar="FILE.png",
                   help="bar chart of the speedups vs torch (needs matplotlib)")
    p.add_argument("--suite", choices=tuple(SUITES), default="main",
                   help="layers to run: the main suite (default), 'extra' (other networks' and odd "
                        "layers, outside the main suite) or 'all'")
    p.add_argument("--list", action="store_true", help="list the suite's layers and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cpu (default): the C++ kernels on NumPy arrays vs torch on the CPU; cuda: the "
                        "CUDA kernels on CuPy arrays vs torch/cuDNN on the GPU (FP32 with TF32 off), "
                        "timed with CUDA events (needs CuPy and an NVIDIA GPU)")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                   help="element type (float16 only with --device cuda; default float32)")
    p.add_argument("--no-cudnn-benchmark", action="store_true",
                   help="--device cuda: leave torch.backends.cudnn.benchmark off (default: on, so cuDNN "
                        "picks its fastest algorithm per layer during the warm-up)")


def _selected(filters: List[str], layers: Sequence[Layer]) -> List[Tuple[Layer, str]]:
    subs = [s for f in filters for s in f.split(",") if s]
    items = []
    for layer in layers:
        for pass_ in PASSES:
            key = f"{layer.name}:{pass_}"
            if not subs or any(s in key for s in subs):
                items.append((layer, pass_))
    return items


def _stats(times: List[float]) -> dict:
    return {
        "median_ms": 1e3 * statistics.median(times),
        "min_ms": 1e3 * min(times),
        "times_ms": [round(1e3 * t, 6) for t in times],
        "repeats": len(times),
    }


def _add_rates(stats: dict, case: Case, peak: Optional[float], copy: Optional[float]) -> None:
    t = stats["median_ms"] / 1e3
    if case.layer.kind == "conv":
        stats["gflops"] = case.flops / t / 1e9
        stats["pct_peak"] = 100 * stats["gflops"] / peak if peak else None
    else:
        stats["gbps"] = case.nbytes / t / 1e9
        stats["pct_copy"] = 100 * stats["gbps"] / copy if copy else None


def header_lines(mode: str, date: str, machine: dict, threads: int, versions: dict,
                 torch_note: Optional[str]) -> List[str]:
    supported = ", ".join(machine.get("supported_isas") or []) or "?"
    lines = [
        f"convkit bench ({mode})  {date}",
        f"CPU: {machine['cpu']} ({machine['logical_cpus']} logical CPUs) | ISA path: "
        f"{machine['isa']} (supported: {supported}) | threads: {threads}",
        f"FP32 peak: {machine['peak_gflops']:.1f} GFLOP/s [{machine['peak_method']}] | "
        f"memory copy: {machine['copy_gbps']:.1f} GB/s [{machine['copy_method']}]",
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v)
        + (f" | torch {torch_note}" if torch_note else ""),
        "rate: convkit GFLOP/s (conv; bwd = grad_x + grad_w, 2x fwd FLOPs) or GB/s read+written "
        "(pooling); eff: % of FP32 peak or of the copy bandwidth; vs X: time X / time convkit "
        "(median of interleaved runs)",
    ]
    return lines


NOISY_SHARE = 0.10  # other processes' CPU share above which a run is flagged as noisy


def noise_note(machine: dict) -> Optional[str]:
    share = machine.get("other_processes_cpu_share")
    if share is None or share <= NOISY_SHARE:
        return None
    return (f"WARNING: other processes used {100 * share:.0f}% of the CPUs during the run: "
            "the timings are noisy; rerun on a quiet machine")


def run_item(layer: Layer, pass_: str, args, *, torch_ok: bool, peak: float, copy: float) -> dict:
    batch = layer.quick_batch if args.quick else layer.batch
    rec: dict = {
        "layer": layer.name, "network": layer.network, "kind": layer.kind, "pass": pass_,
        "batch": batch, "geometry": layer.describe(),
        "params": {k: v for k, v in dataclasses.asdict(layer).items()
                   if k not in ("name", "batch", "quick_batch")},
    }
    try:
        case = Case(layer, pass_, batch)
        rec["out_shape"] = list(case.out_shape)
        rec["flops"] = case.flops
        rec["bytes"] = case.nbytes
        fns = {"convkit": case.convkit_fn()}
        if torch_ok:
            fns["torch"] = case.torch_fn()
    except NotImplementedError as e:
        rec["error"] = None
        rec["skipped"] = str(e)
        return rec
    except Exception as e:
        rec["error"] = f"{type(e).__name__}: {e}"
        return rec

    if args.repeat:
        min_rep = max_rep = args.repeat
    elif args.quick:
        min_rep, max_rep = 5, 25
    else:
        min_rep, max_rep = 7, 60
    budget = 0.3 if args.quick else 2.0
    warmup = 1 if args.quick else 2
    try:
        times = time_interleaved(fns, warmup=warmup, min_repeat=min_rep, max_repeat=max_rep,
                                 budget_s=budget)
    except Exception as e:
        rec["error"] = f"{type(e).__name__}: {e}"
        return rec

    rec["convkit"] = _stats(times["convkit"])
    _add_rates(rec["convkit"], case, peak, copy)
    expected = None
    if "torch" in times:
        rec["torch"] = _stats(times["torch"])
        _add_rates(rec["torch"], case, peak, copy)
        rec["speedup_vs_torch"] = rec["torch"]["median_ms"] / rec["convkit"]["median_ms"]
        ck_t, th_t = times["convkit"], times["torch"]
        even = [th_t[i] / ck_t[i] for i in range(0, len(ck_t), 2)]  # convkit ran first
        odd = [th_t[i] / ck_t[i] for i in range(1, len(ck_t), 2)]   # torch ran first
        if even and odd:
            a, b = statistics.median(even), statistics.median(odd)
            rec["order_check"] = {"speedup_convkit_first": a, "speedup_torch_first": b,
                                  "relative_difference": a / b - 1}
        expected = fns["torch"]()

    if not args.no_reference:
        try:
            fits, est = reference_estimate(layer, pass_, batch, case.work, args.reference_limit)
            if fits:
                ref = case.reference_fn()
                ref_times = []
                reps = 1 if args.quick else 3
                t_start = time.perf_counter()
                for _ in range(reps):
                    t0 = time.perf_counter()
                    ref_out = ref()
                    ref_times.append(time.perf_counter() - t0)
                    if time.perf_counter() - t_start > args.reference_limit:
                        break
                rec["numpy"] = _stats(ref_times)
                _add_rates(rec["numpy"], case, peak, copy)
                rec["speedup_vs_numpy"] = rec["numpy"]["median_ms"] / rec["convkit"]["median_ms"]
                if expected is None:
                    expected = ref_out
            else:
                rec["numpy"] = {"skipped": f"estimated {est:.1f} s per call > "
                                           f"{args.reference_limit:g} s"}
        except Exception as e:
            rec["numpy"] = {"error": f"{type(e).__name__}: {e}"}

    if expected is not None:
        err = relative_error(fns["convkit"](), expected)
        rec["max_relative_error"] = err
        rec["check"] = "ok" if err <= 1e-3 else "BAD"
    return rec


def run(args) -> int:
    if getattr(args, "device", "cpu") == "cuda":
        from . import bench_cuda
        return bench_cuda.run(args)
    if getattr(args, "dtype", "float32") != "float32":
        print(f"convkit bench: --dtype {args.dtype} needs --device cuda (the CPU suite runs float32)",
              file=sys.stderr)
        return 2
    suite = getattr(args, "suite", "main")
    if args.list:
        for layer in SUITES[suite]:
            print(f"{layer.name:36s} {layer.kind:4s} N={layer.batch:<4d} (quick {layer.quick_batch:<3d})"
                  f" {layer.describe()}")
        return 0
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("convkit bench: --plot needs matplotlib, which is not installed "
                  "(pip install matplotlib, or pip install 'convkit[bench]')", file=sys.stderr)
            return 2
    items = _selected(args.filter, SUITES[suite])
    if not items:
        print(f"convkit bench: no item matches --filter {args.filter}; see --list",
              file=sys.stderr)
        return 2

    if args.threads is not None:
        if args.threads < 1:
            print("convkit bench: --threads must be >= 1", file=sys.stderr)
            return 2
        _set_threads(args.threads)
    threads = _get_threads()

    torch = None if args.no_torch else _torch()
    torch_note = "not timed (--no-torch)" if args.no_torch else (
        "not installed (pip install torch==2.13.0)" if torch is None else None)
    if torch is not None:
        torch.set_num_threads(threads)

    info = convkit_info()
    peak_probe: dict = {}
    peak, peak_method = measure_peak_gflops(threads, peak_probe)
    copy = measure_copy_gbps(threads)
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    versions = {
        "convkit": info.get("version"), "numpy": np.__version__,
        "torch": None if torch is None else torch.__version__,
        "python": platform.python_version(),
    }
    machine = {
        "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "platform": platform.platform(),
        "isa": info.get("isa"), "supported_isas": info.get("supported_isas"),
        "peak_gflops": peak, "peak_method": peak_method,
        "peak_samples_gflops": peak_probe.get("samples"), "copy_gbps": copy,
        "copy_method": f"np.copyto 256 MiB float32, {threads} thread(s), read+write bytes",
        "loadavg_start": _loadavg(),
    }
    mode = "quick" if args.quick else "full"
    label = mode if suite == "main" else f"{mode}, suite {suite}"
    header = header_lines(label, date, machine, threads, versions, torch_note)
    print("\n".join(header))
    sys.stdout.flush()

    progress = Progress(len(items), enabled=None if not args.no_progress else False)
    results = []
    snap_start = _cpu_snapshot()
    t_start = time.perf_counter()
    for i, (layer, pass_) in enumerate(items):
        progress.update(i, f"{layer.name}:{pass_}")
        results.append(run_item(layer, pass_, args, torch_ok=torch is not None, peak=peak,
                                copy=copy))
    progress.update(len(items), "done")
    progress.close()
    elapsed = time.perf_counter() - t_start
    machine["loadavg_end"] = _loadavg()
    machine["other_processes_cpu_share"] = other_processes_cpu_share(snap_start, _cpu_snapshot())

    print()
    shown = [r for r in results if not r.get("skipped")]
    print(format_table(shown))
    skipped = [r for r in results if r.get("skipped")]
    for r in skipped:
        print(f"skipped {r['layer']}:{r['pass']}: {r['skipped']}")
    for r in results:
        if r.get("error"):
            print(f"error in {r['layer']}:{r['pass']}: {r['error']}")
        ref = r.get("numpy") or {}
        if ref.get("error"):
            print(f"reference error in {r['layer']}:{r['pass']}: {ref['error']}")
    summary = summarize(results)
    print()
    text = format_summary(summary)
    if text:
        print(text)
    share = machine["other_processes_cpu_share"]
    busy = "" if share is None else f"; other processes used {100 * share:.0f}% of the CPUs meanwhile"
    print(f"{len(results)} items in {elapsed:.1f} s{busy}")
    note = noise_note(machine)
    if note:
        print(note)

    if args.json:
        doc = {
            "schema": 1, "tool": "convkit bench", "date": date, "mode": mode, "suite": suite,
            "threads": threads, "torch_threads": None if torch is None else torch.get_num_threads(),
            "machine": machine, "versions": versions, "convkit_info": info,
            "options": {k: v for k, v in vars(args).items() if k != "func"},
            "elapsed_s": elapsed, "summary": summary, "results": results,
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1, default=str)
            f.write("\n")
        print(f"wrote {args.json}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"# convkit bench ({label}), {machine['cpu']}, {date[:10]}\n\n")
            f.write("\n".join(f"- {line}" for line in header[1:]) + "\n")
            if machine.get("loadavg_end") is not None:
                f.write(f"- load average: {machine['loadavg_start']:.2f} at the start, "
                        f"{machine['loadavg_end']:.2f} at the end; {len(results)} items in "
                        f"{elapsed:.0f} s{busy}\n")
            f.write("\n" + format_table(shown, markdown=True) + "\n\n")
            f.write("\n".join(f"- {line}" for line in text.splitlines()) + "\n")
            if note:
                f.write(f"- {note}\n")
            cmd = "convkit bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else ""
            if cmd:
                f.write(f"\nCommand: `{cmd}`\n")
        print(f"wrote {args.markdown}")
    if args.plot:
        write_plot(args.plot, results, f"convkit {versions['convkit']} vs torch "
                   f"{versions['torch']}, {machine['cpu']}, {threads} threads, {label}")
        print(f"wrote {args.plot}")
    return 1 if summary["errors"] or summary["bad_checks"] else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="convkit bench", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))
