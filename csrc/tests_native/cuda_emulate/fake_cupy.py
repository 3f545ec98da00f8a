"""A stand-in ``cupy`` module for testing convkit's GPU code paths on a machine
without a GPU: arrays are NumPy arrays (a subclass whose module is "cupy", so
convkit routes them to its CUDA backend), kernels run through the CPU
emulation of the .cu sources (emulator.py; float32/float64 only), events read
the host clock, and there is one fake device.

Only what convkit.cuda and convkit.bench_cuda use is provided. Install with
``install()`` (puts it in sys.modules as ``cupy``) in a separate process:
it is not meant to share an interpreter with real CuPy.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
import time
import types

import numpy as np

__version__ = "0.0-fake"


class ndarray(np.ndarray):
    """NumPy array posing as a CuPy array."""

    def __getitem__(self, key):
        # CuPy returns 0-d arrays, never scalars (callers use .get() or int()).
        r = super().__getitem__(key)
        return r if isinstance(r, np.ndarray) else np.asarray(r).view(ndarray)

    def get(self, stream=None):
        return np.array(self, copy=True).view(np.ndarray)

    @property
    def device(self):
        return cuda.Device(0)

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)


ndarray.__module__ = "cupy"
float32, float16, float64, int64, uint8 = np.float32, np.float16, np.float64, np.int64, np.uint8

_hooks = threading.local()


def _wrap(a):
    a = np.ascontiguousarray(a) if not isinstance(a, np.ndarray) else a
    return a.view(ndarray)


def _allocated(a):
    for hook in getattr(_hooks, "active", []):
        hook.malloc_postprocess(device_id=0, size=a.nbytes, mem_size=a.nbytes, mem_ptr=1, pmem_id=1)
    return a


def empty(shape, dtype=np.float64, order="C"):
    return _allocated(_wrap(np.empty(shape, dtype=dtype)))


def empty_like(a, dtype=None):
    return empty(a.shape, dtype or a.dtype)


def full(shape, value, dtype=None):
    return _allocated(_wrap(np.full(shape, value, dtype=dtype)))


def asarray(a, dtype=None):
    return _wrap(np.asarray(a, dtype=dtype))


def ascontiguousarray(a, dtype=None):
    return _wrap(np.ascontiguousarray(a, dtype=dtype))


def copyto(dst, src):
    np.copyto(dst, src)


class _Pool:
    def free_all_blocks(self):
        pass

    def used_bytes(self):
        return 0


_pool = _Pool()


def get_default_memory_pool():
    return _pool


class _Generator:
    def __init__(self, seed):
        self._rng = np.random.default_rng(seed)

    def standard_normal(self, size=None, dtype=np.float64):
        return _wrap(self._rng.standard_normal(size, dtype=dtype))


random = types.SimpleNamespace(default_rng=lambda seed=None: _Generator(seed))


# ------------------------------------------------------------------ cuda ---

class _Device:
    def __init__(self, device=None):
        self.id = 0 if device is None else int(getattr(device, "id", device))
        self.compute_capability = "90"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Stream:
    def __init__(self, non_blocking=False, null=False):
        self.ptr = 0 if null else id(self)

    def synchronize(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def synchronize(self):
        pass


def _elapsed(start, end):
    return 1e3 * (end.t - start.t)


class _MemoryHook:
    name = "hook"

    def __enter__(self):
        _hooks.active = getattr(_hooks, "active", []) + [self]
        return self

    def __exit__(self, *exc):
        _hooks.active = [h for h in _hooks.active if h is not self]
        return False

    def malloc_postprocess(self, **kw):
        pass

    def free_postprocess(self, **kw):
        pass


_ATTRIBUTES = {"cudaDevAttrMultiProcessorCount": (16, 132), "cudaDevAttrClockRate": (13, 1980000),
               "cudaDevAttrMemoryClockRate": (36, 2619000), "cudaDevAttrGlobalMemoryBusWidth": (37, 6144)}


def _get_attribute(code, device):
    for number, value in _ATTRIBUTES.values():
        if number == code:
            return value
    raise ValueError(code)


runtime = types.SimpleNamespace(
    getDeviceCount=lambda: 1, getDevice=lambda: 0,
    getDeviceProperties=lambda d: {"name": b"Fake GPU (CPU emulation)", "major": 9, "minor": 0,
                                   "totalGlobalMem": 8 * 2 ** 30},
    deviceGetAttribute=_get_attribute, driverGetVersion=lambda: 12080, runtimeGetVersion=lambda: 12090,
    memcpyDeviceToDevice=3,
    memcpyAsync=lambda dst, src, n, kind, stream: None,
    **{name: number for name, (number, _) in _ATTRIBUTES.items()},
)

# Kernels: RawModule compiles nothing; get_function runs the emulated kernel.
_SCALAR = re.compile(r"-DSCALAR_KIND=(\d)")
_MAX_GRID = (3, 2, 2)
launches = []  # (kernel, grid, block) as requested, for tests


class _RawKernel:
    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype

    def __call__(self, grid, block, args, **kw):
        import emulator

        launches.append((self.name, tuple(grid), tuple(block)))
        if any(g < 1 for g in grid) or grid[1] > 65535 or grid[2] > 65535 or grid[0] > 2 ** 31 - 1:
            raise ValueError(f"{self.name}: invalid grid {grid}")
        capped = tuple(max(1, min(g, m)) for g, m in zip(grid, _MAX_GRID))
        cargs = [a.ctypes.data if isinstance(a, np.ndarray) else a.item() for a in args]
        getattr(emulator.build(self.dtype), f"emu_{self.name}")(*capped, int(block[0]), *cargs)


class _RawModule:
    def __init__(self, code=None, options=(), **kw):
        kind = int(_SCALAR.search(" ".join(options)).group(1))
        self.dtype = {1: np.float32, 2: np.float64}.get(kind)
        if self.dtype is None:
            raise NotImplementedError("the CPU emulation runs float32 and float64 only")

    def get_function(self, name):
        return _RawKernel(name, self.dtype)


nvrtc = types.SimpleNamespace(getVersion=lambda: (12, 9))

cuda = types.SimpleNamespace(
    Device=_Device, Stream=_Stream, Event=_Event, get_elapsed_time=_elapsed, MemoryHook=_MemoryHook,
    runtime=runtime, nvrtc=nvrtc, get_current_stream=lambda: _Stream(null=True),
)
RawModule = _RawModule


def install():
    """Make ``import cupy`` (and ``cupy.cuda``, ``cupy.random``) return this module."""
    me = sys.modules[__name__]
    sys.modules["cupy"] = me
    sys.modules["cupy.cuda"] = cuda
    sys.modules["cupy.random"] = random
    return me


@contextlib.contextmanager
def no_hooks():
    saved = getattr(_hooks, "active", [])
    _hooks.active = []
    try:
        yield
    finally:
        _hooks.active = saved
