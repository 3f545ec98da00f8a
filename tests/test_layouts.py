"""Memory layout and dtype: non-contiguous inputs (transposed views, negative
strides, Fortran order, strided slices, channels-last) give exactly the
results of contiguous ones; inputs are never modified and may be read-only;
the output dtype is the input dtype for float32 and float64."""

from __future__ import annotations

import numpy as np
import pytest

import convkit
import convkit.reference as ref
from helpers import LAYOUTS, OP_NAMES, OPS, assert_bitwise_equal, assert_close


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("name", OP_NAMES)
@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_noncontiguous_inputs(name, layout, backend):
    make, call = OPS[name]
    arrays = make(np.random.default_rng(5), np.float64, False)
    expected = call(convkit, arrays, backend=backend)
    transformed = {k: LAYOUTS[layout](v) for k, v in arrays.items()}
    for k, v in transformed.items():
        np.testing.assert_array_equal(v, arrays[k])
    if layout != "fortran":
        assert any(not v.flags.c_contiguous for v in transformed.values() if v.ndim > 1)
    got = call(convkit, transformed, backend=backend)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        if backend == "cpu" or a.dtype.kind == "i" or name.startswith(("max_pool", "adaptive_max")):
            # native kernels copy to one layout first: bitwise equal
            assert_bitwise_equal(a, b, f"{name} with {layout} inputs")
        else:
            # NumPy/BLAS reductions may sum in a layout-dependent order
            assert_close(a, b, 1e-12, err_msg=f"{name} with {layout} inputs")


@pytest.mark.parametrize("name", OP_NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_dtype_and_readonly_inputs(name, dtype):
    make, call = OPS[name]
    arrays = make(np.random.default_rng(9), dtype, False)
    copies = {k: v.copy() for k, v in arrays.items()}
    for v in arrays.values():
        v.flags.writeable = False
    outs = call(convkit, arrays)
    for k, v in arrays.items():
        assert_bitwise_equal(v, copies[k], f"{name} modified its input {k}")
    for o in outs:
        if o.dtype.kind == "i":
            assert o.dtype == np.int64
        else:
            assert o.dtype == np.dtype(dtype), f"{name}: output dtype {o.dtype} for {np.dtype(dtype)} input"
        assert o.flags.writeable
        assert np.isfinite(o).all() or name.startswith(("max_pool", "adaptive_max"))
    # the reference agrees (float32 to float32 accuracy)
    refs = call(ref, {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in copies.items()})
    for o, r in zip(outs, refs):
        if o.dtype.kind == "i":
            assert_bitwise_equal(o, r)
        else:
            assert_close(o, r, 1e-4 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("name", OP_NAMES)
def test_unaligned_input(name):
    """A float64 array at an odd byte offset (not 8-byte aligned)."""
    make, call = OPS[name]
    arrays = make(np.random.default_rng(13), np.float64, False)
    expected = call(convkit, arrays)
    unaligned = {}
    for k, v in arrays.items():
        buf = np.zeros(v.nbytes + 1, dtype=np.uint8)
        u = buf[1:].view(v.dtype).reshape(v.shape)
        u[...] = v
        unaligned[k] = u
    assert not unaligned["x"].flags.aligned
    for a, b in zip(call(convkit, unaligned), expected):
        assert_bitwise_equal(a, b, name)


def test_big_endian_input_is_rejected_or_correct():
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 5))
    w = np.random.default_rng(1).standard_normal((3, 2, 3, 3))
    xb, wb = x.astype(">f8"), w.astype(">f8")
    try:
        y = convkit.conv2d(xb, wb)
    except TypeError as e:
        assert "conv2d" in str(e)
        return
    assert_close(y, convkit.conv2d(x, w))


def test_subclass_and_list_inputs():
    """np.matrix-free subclasses (memmap-like views) are plain arrays to convkit."""
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 5))
    w = np.random.default_rng(1).standard_normal((3, 2, 3, 3))

    class Sub(np.ndarray):
        pass

    y = convkit.conv2d(x.view(Sub), w.view(Sub))
    assert_close(np.asarray(y), convkit.conv2d(x, w))
