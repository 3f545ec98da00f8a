"""Finite-difference checks of every backward in float64: the analytic
gradient of L = sum(grad_out * op(x)) against central differences
(L(x + eps e_i) - L(x - eps e_i)) / (2 eps), on small cases, for both the
native CPU backend and the NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

import convkit
from helpers import assert_close

EPS = 1e-6
TOL = 1e-6
BACKENDS = ["cpu", "reference"]


def numeric_grad(f, a, eps=EPS):
    """d f / d a by central differences; ``a`` is perturbed in place."""
    g = np.zeros_like(a)
    flat = a.reshape(-1)
    gflat = g.reshape(-1)
    for i in range(flat.size):
        orig = flat[i]
        flat[i] = orig + eps
        fp = f()
        flat[i] = orig - eps
        fm = f()
        flat[i] = orig
        gflat[i] = (fp - fm) / (2 * eps)
    return g


def distinct(rng, shape, spacing=0.01):
    """Values at least ``spacing`` apart (max pooling stays differentiable)."""
    n = int(np.prod(shape))
    return (rng.permutation(n).astype(np.float64) * spacing - n * spacing / 2).reshape(shape) + \
        rng.uniform(0, spacing / 10, size=shape)


CONV = [
    dict(xs=(2, 4, 5, 5), ws=(6, 2, 3, 3), kw=dict(stride=2, padding=1, groups=2)),
    dict(xs=(1, 3, 5, 6), ws=(2, 3, 2, 3), kw=dict(padding="same", dilation=(2, 1))),
    dict(xs=(1, 2, 4, 4), ws=(3, 2, 3, 2), kw=dict(padding=((1, 0), (2, 1)), stride=(1, 2))),
    dict(xs=(4, 4, 4), ws=(4, 1, 2, 2), kw=dict(groups=4, padding="full")),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", range(len(CONV)))
def test_conv2d_gradcheck(rng, case, backend):
    c = CONV[case]
    x, w = rng.standard_normal(c["xs"]), rng.standard_normal(c["ws"])
    b = rng.standard_normal(c["ws"][0])
    y = convkit.conv2d(x, w, b, backend=backend, **c["kw"])
    gy = rng.standard_normal(y.shape)

    def loss():
        return float(np.sum(gy * convkit.conv2d(x, w, b, backend=backend, **c["kw"])))

    gx, gw, gb = convkit.conv2d_backward(gy, x, w, backend=backend, **c["kw"])
    assert_close(gx, numeric_grad(loss, x), TOL)
    assert_close(gw, numeric_grad(loss, w), TOL)
    assert_close(gb, numeric_grad(loss, b), TOL)


CONVT = [
    dict(xs=(2, 4, 3, 3), ws=(4, 3, 3, 3), kw=dict(stride=2, padding=1, output_padding=1, groups=2)),
    dict(xs=(1, 2, 3, 2), ws=(2, 2, 2, 3), kw=dict(stride=(1, 2), dilation=(2, 1), output_padding=(1, 0))),
    dict(xs=(2, 3, 3), ws=(2, 2, 3, 3), kw=dict(stride=3, padding=(0, 1), output_padding=2)),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", range(len(CONVT)))
def test_conv_transpose2d_gradcheck(rng, case, backend):
    c = CONVT[case]
    x, w = rng.standard_normal(c["xs"]), rng.standard_normal(c["ws"])
    b = rng.standard_normal(c["ws"][1] * c["kw"].get("groups", 1))
    y = convkit.conv_transpose2d(x, w, b, backend=backend, **c["kw"])
    gy = rng.standard_normal(y.shape)

    def loss():
        return float(np.sum(gy * convkit.conv_transpose2d(x, w, b, backend=backend, **c["kw"])))

    gx, gw, gb = convkit.conv_transpose2d_backward(gy, x, w, backend=backend, **c["kw"])
    assert_close(gx, numeric_grad(loss, x), TOL)
    assert_close(gw, numeric_grad(loss, w), TOL)
    assert_close(gb, numeric_grad(loss, b), TOL)


MAXPOOL = [
    dict(xs=(2, 2, 6, 6), kw=dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    dict(xs=(1, 2, 7, 5), kw=dict(kernel_size=(2, 3), stride=1, dilation=(2, 1))),
    dict(xs=(2, 5, 5), kw=dict(kernel_size=2)),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", range(len(MAXPOOL)))
def test_max_pool2d_gradcheck(rng, case, backend):
    c = MAXPOOL[case]
    x = distinct(rng, c["xs"])
    y, idx = convkit.max_pool2d(x, return_indices=True, backend=backend, **c["kw"])
    gy = rng.standard_normal(y.shape)

    def loss():
        return float(np.sum(gy * convkit.max_pool2d(x, backend=backend, **c["kw"])))

    gx = convkit.max_pool2d_backward(gy, x, idx, backend=backend, **c["kw"])
    assert_close(gx, numeric_grad(loss, x), TOL)


AVGPOOL = [
    dict(xs=(2, 2, 6, 6), kw=dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    dict(xs=(1, 2, 7, 5), kw=dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    dict(xs=(1, 1, 5, 6), kw=dict(kernel_size=(2, 3), stride=(1, 2), divisor_override=4)),
    dict(xs=(2, 5, 5), kw=dict(kernel_size=2)),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", range(len(AVGPOOL)))
def test_avg_pool2d_gradcheck(rng, case, backend):
    c = AVGPOOL[case]
    x = rng.standard_normal(c["xs"])
    gy = rng.standard_normal(convkit.avg_pool2d(x, backend=backend, **c["kw"]).shape)

    def loss():
        return float(np.sum(gy * convkit.avg_pool2d(x, backend=backend, **c["kw"])))

    assert_close(convkit.avg_pool2d_backward(gy, x, backend=backend, **c["kw"]), numeric_grad(loss, x), TOL)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("norm", [1.0, 2.0, 3.0, 1.5])
@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=(2, 3), stride=(1, 2), ceil_mode=True)],
                         ids=["k2", "k23_ceil"])
def test_lp_pool2d_gradcheck(rng, norm, kw, backend):
    x = np.abs(rng.standard_normal((1, 2, 5, 6))) + 0.2
    gy = rng.standard_normal(convkit.lp_pool2d(x, norm, backend=backend, **kw).shape)

    def loss():
        return float(np.sum(gy * convkit.lp_pool2d(x, norm, backend=backend, **kw)))

    assert_close(convkit.lp_pool2d_backward(gy, x, norm, backend=backend, **kw), numeric_grad(loss, x), 1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape,out", [((2, 2, 7, 5), (3, 2)), ((1, 1, 3, 4), (5, 6)), ((2, 6, 6), 4)])
def test_adaptive_pools_gradcheck(rng, shape, out, backend):
    x = distinct(rng, shape)
    y = convkit.adaptive_avg_pool2d(x, out, backend=backend)
    gy = rng.standard_normal(y.shape)

    def loss_avg():
        return float(np.sum(gy * convkit.adaptive_avg_pool2d(x, out, backend=backend)))

    assert_close(convkit.adaptive_avg_pool2d_backward(gy, x, backend=backend), numeric_grad(loss_avg, x), TOL)

    _, idx = convkit.adaptive_max_pool2d(x, out, return_indices=True, backend=backend)

    def loss_max():
        return float(np.sum(gy * convkit.adaptive_max_pool2d(x, out, backend=backend)))

    assert_close(convkit.adaptive_max_pool2d_backward(gy, x, idx, backend=backend), numeric_grad(loss_max, x), TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_global_avg_pool2d_gradcheck(rng, backend):
    x = rng.standard_normal((2, 3, 4, 5))
    gy = rng.standard_normal((2, 3, 1, 1))

    def loss():
        return float(np.sum(gy * convkit.global_avg_pool2d(x, backend=backend)))

    assert_close(convkit.global_avg_pool2d_backward(gy, x, backend=backend), numeric_grad(loss, x), TOL)
