"""CPU backend: allocates outputs and calls the C++ kernels in convkit._C.

Receives geometries from convkit._params and C-contiguous, aligned 4-D arrays
of one float dtype (the public layer in functional.py guarantees that); never
derives a shape itself.
"""

from __future__ import annotations

import functools

import numpy as np

from . import _C


_FIELDS = {}  # struct class -> its field names (dir() costs ~10 us per call)


def _struct(cls, geometry, **extra):
    s = cls()
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = _FIELDS[cls] = tuple(name for name in dir(s) if not name.startswith("_"))
    for name in fields:
        setattr(s, name, extra[name] if name in extra else getattr(geometry, name))
    return s


# Geometries are frozen (and memoised by _params): their C structs are too.
# Looked up by identity (an lru_cache hashed every field of the dataclass,
# ~0.7 us a call); each entry keeps its geometry alive, so an id is never
# reused while its entry stands.
_STRUCTS = {}


def _cached_struct(g, make):
    entry = _STRUCTS.get(id(g))
    if entry is not None and entry[0] is g:
        return entry[1]
    if len(_STRUCTS) >= 1024:
        _STRUCTS.clear()
    s = make(g)
    _STRUCTS[id(g)] = (g, s)
    return s


def _conv(g):
    return _cached_struct(g, lambda g: _struct(_C.ConvGeometry, g))


def _pool(g):
    return _cached_struct(g, lambda g: _struct(_C.PoolGeometry, g, planes=g.planes))


@functools.lru_cache(maxsize=1024)
def _adaptive(g):
    return _struct(_C.AdaptiveGeometry, g, planes=g.planes)


# ------------------------------------------------------------ convolution ---

def conv2d_forward(g, x, w, bias=None):
    y = np.empty(g.y_shape, dtype=x.dtype)
    _C.conv2d_forward(_conv(g), x, w, bias, y)
    return y


def conv2d_backward_data(g, grad_y, w):
    grad_x = np.empty(g.x_shape, dtype=grad_y.dtype)
    _C.conv2d_backward_data(_conv(g), grad_y, w, grad_x)
    return grad_x


def conv2d_backward_weight(g, grad_y, x):
    grad_w = np.empty(g.w_shape, dtype=grad_y.dtype)
    _C.conv2d_backward_weight(_conv(g), grad_y, x, grad_w)
    return grad_w


def conv2d_backward_bias(g, grad_y):
    grad_b = np.empty((g.out_channels,), dtype=grad_y.dtype)
    _C.conv2d_backward_bias(_conv(g), grad_y, grad_b)
    return grad_b


# ---------------------------------------------------------------- pooling ---

def max_pool2d_forward(g, x, with_indices):
    y = np.empty(g.y_shape, dtype=x.dtype)
    indices = np.empty(g.y_shape, dtype=np.int64) if with_indices else None
    _C.max_pool2d_forward(_pool(g), x, y, indices)
    return y, indices


def max_pool2d_backward(g, grad_y, indices):
    grad_x = np.empty(g.x_shape, dtype=grad_y.dtype)
    _C.max_pool2d_backward(_pool(g), grad_y, indices, grad_x)
    return grad_x


def avg_pool2d_forward(g, x, count_include_pad, divisor):
    y = np.empty(g.y_shape, dtype=x.dtype)
    _C.avg_pool2d_forward(_pool(g), count_include_pad, divisor, x, y)
    return y


def avg_pool2d_backward(g, grad_y, count_include_pad, divisor):
    grad_x = np.empty(g.x_shape, dtype=grad_y.dtype)
    _C.avg_pool2d_backward(_pool(g), count_include_pad, divisor, grad_y, grad_x)
    return grad_x


def lp_pool2d_forward(g, x, norm_type):
    y = np.empty(g.y_shape, dtype=x.dtype)
    _C.lp_pool2d_forward(_pool(g), norm_type, x, y)
    return y


def lp_pool2d_backward(g, grad_y, x, norm_type):
    grad_x = np.empty(g.x_shape, dtype=grad_y.dtype)
    _C.lp_pool2d_backward(_pool(g), norm_type, grad_y, x, grad_x)
    return grad_x


def adaptive_avg_pool2d_forward(g, x):
    y = np.empty(g.y_shape, dtype=x.dtype)
    _C.adaptive_avg_pool2d_forward(_adaptive(g), x, y)
    return y


def adaptive_avg_pool2d_backward(g, grad_y):
    grad_x = np.empty(g.x_shape, dtype=grad_y.dtype)
    _C.adaptive_avg_pool2d_backward(_adaptive(g), grad_y, grad_x)
    return grad_x


def adaptive_max_pool2d_forward(g, x, with_indices):
    y = np.empty(g.y_shape, dtype=x.dtype)
    indices = np.empty(g.y_shape, dtype=np.int64) if with_indices else None
    _C.adaptive_max_pool2d_forward(_adaptive(g), x, y, indices)
    return y, indices


def adaptive_max_pool2d_backward(g, grad_y, indices):
    grad_x = np.empty(g.x_shape, dtype=grad_y.dtype)
    _C.adaptive_max_pool2d_backward(_adaptive(g), grad_y, indices, grad_x)
    return grad_x
