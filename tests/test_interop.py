"""DLPack interchange of convkit.functional: PyTorch CPU tensors and JAX CPU
arrays in, the same type out, without copies where claimed (checked through
data pointers), with results equal to the NumPy path; the error cases."""

from __future__ import annotations

import numpy as np
import pytest

import convkit
import convkit.functional as CF
from convkit import _interop


def _inputs(rng):
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    return x, w, b


# Each case: (name, call(f, x, w, b) on whatever array type).
CASES = [
    ("conv2d", lambda f, x, w, b: f.conv2d(x, w, b, stride=1, padding="same")),
    ("conv2d_backward", lambda f, x, w, b: f.conv2d_backward(f.conv2d(x, w, b, padding=1), x, w, padding=1)),
    ("max_pool2d", lambda f, x, w, b: f.max_pool2d(x, 3, 2, 1, return_indices=True)),
    ("avg_pool2d", lambda f, x, w, b: f.avg_pool2d(x, 2, ceil_mode=True)),
    ("adaptive_max_pool2d", lambda f, x, w, b: f.adaptive_max_pool2d(x, (3, 2))),
    ("global_avg_pool2d", lambda f, x, w, b: f.global_avg_pool2d(x)),
]


def _flat(result):
    return list(result) if isinstance(result, tuple) else [result]


# --------------------------------------------------------------------------- #
# PyTorch
# --------------------------------------------------------------------------- #

@pytest.mark.torch
@pytest.mark.parametrize("name,call", CASES, ids=[c[0] for c in CASES])
def test_torch_in_torch_out_equals_numpy(name, call, rng):
    torch = pytest.importorskip("torch")
    x, w, b = _inputs(rng)
    want = _flat(call(convkit, x, w, b))
    got = _flat(call(convkit, *(torch.from_numpy(a) for a in (x, w, b))))
    assert len(got) == len(want)
    for g, e in zip(got, want):
        assert isinstance(g, torch.Tensor) and g.device.type == "cpu"
        np.testing.assert_array_equal(g.numpy(), e)  # the same kernels: bitwise equal


@pytest.mark.torch
def test_torch_cpu_is_zero_copy_both_ways(monkeypatch, rng):
    torch = pytest.importorskip("torch")
    from convkit import cpu
    x, w, b = (torch.from_numpy(a) for a in _inputs(rng))
    seen = {}
    real = cpu.conv2d_forward

    def spy(g, x_, w_, b_):
        seen.update(x=x_, w=w_, b=b_, y=real(g, x_, w_, b_))
        return seen["y"]

    monkeypatch.setattr(cpu, "conv2d_forward", spy)  # what the kernel receives and writes
    y = convkit.conv2d(x, w, b, padding=1)
    # inputs: NumPy views of the tensors' storage
    for key, t in (("x", x), ("w", w), ("b", b)):
        assert isinstance(seen[key], np.ndarray)
        assert seen[key].ctypes.data == t.data_ptr(), key
        assert np.shares_memory(seen[key], t.numpy())
    # output: the tensor wraps the array the kernel wrote
    assert isinstance(y, torch.Tensor)
    assert y.data_ptr() == seen["y"].ctypes.data
    assert np.shares_memory(y.numpy(), seen["y"])


@pytest.mark.torch
def test_torch_non_contiguous_and_int64_indices(rng):
    torch = pytest.importorskip("torch")
    x, _, _ = _inputs(rng)
    xt = torch.from_numpy(x).transpose(2, 3)  # a strided view: copied once by convkit, as NumPy's
    want_y, want_i = convkit.max_pool2d(np.ascontiguousarray(x.transpose(0, 1, 3, 2)), 2, return_indices=True)
    y, idx = convkit.max_pool2d(xt, 2, return_indices=True)
    assert idx.dtype == torch.int64
    np.testing.assert_array_equal(y.numpy(), want_y)
    np.testing.assert_array_equal(idx.numpy(), want_i)
    gx = convkit.max_pool2d_backward(torch.ones_like(y), xt, idx, 2)
    assert isinstance(gx, torch.Tensor) and gx.shape == xt.shape
    assert float(gx.sum()) == y.numel()


@pytest.mark.torch
def test_torch_errors(rng):
    torch = pytest.importorskip("torch")
    x, w, b = (torch.from_numpy(a) for a in _inputs(rng))
    with pytest.raises(TypeError, match="conv2d: x is a tensor that requires grad.*detach"):
        convkit.conv2d(x.clone().requires_grad_(True), w)
    with pytest.raises(TypeError, match="conv2d.*float32"):
        convkit.conv2d(x.half(), w.half())  # float16 on the CPU: the usual dtype error
    with pytest.raises(TypeError, match="conv2d: x"):
        convkit.conv2d(x.bfloat16(), w)  # NumPy has no bfloat16: refused at the conversion
    # mixed with NumPy on the CPU is fine (one device); the result follows the tensor
    assert isinstance(convkit.conv2d(x.numpy(), w, b.numpy()), torch.Tensor)
    # the usual argument errors still name the function
    with pytest.raises(ValueError, match="conv2d"):
        convkit.conv2d(x, w, stride=0)
    with pytest.raises(TypeError, match="backend='cuda'"):
        convkit.conv2d(x, w, backend="cuda")


@pytest.mark.torch
def test_torch_cuda_mixed_with_cpu_is_a_type_error():
    torch = pytest.importorskip("torch")
    cupy = pytest.importorskip("cupy")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no GPU for CuPy")
    except cupy.cuda.runtime.CUDARuntimeError:
        pytest.skip("no GPU for CuPy")
    x = torch.randn(1, 2, 6, 6, device="cuda")
    w = torch.randn(3, 2, 3, 3, device="cuda")
    y = convkit.conv2d(x, w, padding=1)
    assert isinstance(y, torch.Tensor) and y.is_cuda
    torch.testing.assert_close(y, torch.nn.functional.conv2d(x, w, padding=1), rtol=1e-4, atol=1e-4)
    with pytest.raises(TypeError, match="mix"):
        convkit.conv2d(x, w.cpu())


# --------------------------------------------------------------------------- #
# JAX
# --------------------------------------------------------------------------- #

@pytest.fixture
def jnp():
    pytest.importorskip("jax")
    import jax.numpy
    return jax.numpy


@pytest.mark.parametrize("name,call", CASES, ids=[c[0] for c in CASES])
def test_jax_in_jax_out_equals_numpy(name, call, jnp, rng):
    import jax
    x, w, b = _inputs(rng)
    want = _flat(call(convkit, x, w, b))
    got = _flat(call(convkit, *(jnp.asarray(a) for a in (x, w, b))))
    for g, e in zip(got, want):
        assert isinstance(g, jax.Array)
        np.testing.assert_array_equal(np.asarray(g), e)


def test_jax_inputs_are_zero_copy(jnp, rng):
    x = jnp.asarray(_inputs(rng)[0])
    view = _interop.to_native("conv2d", "x", x)
    assert isinstance(view, np.ndarray) and not view.flags.writeable  # JAX arrays are immutable
    assert view.ctypes.data == x.unsafe_buffer_pointer()


def test_jax_output_shares_an_aligned_buffer(jnp):
    # XLA's CPU client adopts a buffer only when it is 64-byte aligned (and
    # copies it otherwise); NumPy's allocations are usually only 16-aligned.
    raw = np.empty(4 * 64 + 64, np.uint8)
    start = (-raw.ctypes.data) % 64
    aligned = raw[start:start + 4 * 64].view(np.float32).reshape(4, 16)
    aligned[:] = 1.0
    out = _interop.to_framework(aligned, "jax")
    assert out.unsafe_buffer_pointer() == aligned.ctypes.data
    np.testing.assert_array_equal(np.asarray(out), aligned)


# --------------------------------------------------------------------------- #
# framework-independent
# --------------------------------------------------------------------------- #

class _Producer:
    """A minimal DLPack producer that is neither torch nor JAX."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


class _Elsewhere(_Producer):
    def __dlpack_device__(self):
        return (14, 0)  # kDLOneAPI


def test_other_producers_come_back_as_numpy(rng):
    x, w, b = _inputs(rng)
    y = convkit.conv2d(_Producer(x), _Producer(w), b)
    assert type(y) is np.ndarray
    np.testing.assert_array_equal(y, convkit.conv2d(x, w, b))
    with pytest.raises(TypeError, match="conv2d: w .*device type 14"):
        convkit.conv2d(x, _Elsewhere(w))


def test_numpy_path_is_untouched(rng):
    x, w, b = _inputs(rng)
    assert type(convkit.conv2d(x, w, b)) is np.ndarray
    assert convkit.conv2d.__name__ == "conv2d" and "torch.nn.functional.conv2d" in convkit.conv2d.__doc__
    assert convkit.conv2d is CF.conv2d
