"""Arrays of other frameworks (PyTorch, JAX, ...) in and out of the public ops
of convkit.functional, through DLPack.

``accept_dlpack(op)`` wraps one op. Arguments that are NumPy or CuPy arrays
(or anything without ``__dlpack__``) pass through untouched, so the NumPy and
CuPy paths pay only a type scan. Any other argument with ``__dlpack__`` is
viewed, without a copy, as

* a NumPy array (``np.from_dlpack``) when it lives on the CPU, or
* a CuPy array (``cupy.from_dlpack``) when it lives on a CUDA device,

the op runs as for NumPy/CuPy inputs (so mixing CPU and GPU arguments is the
usual TypeError), and each array it returns is handed back as the framework
of the first such argument: ``torch.from_dlpack`` (no copy) for PyTorch,
``jax.dlpack.from_dlpack`` for JAX (no copy when the buffer is 64-byte
aligned, as XLA's CPU client requires; otherwise JAX copies it once). Arrays
of other DLPack producers come back as NumPy/CuPy arrays.
"""

from __future__ import annotations

import functools

import numpy as np

# DLPack device types (dlpack.h, DLDeviceType)
_DL_CPU, _DL_CUDA, _DL_CUDA_HOST, _DL_CUDA_MANAGED = 1, 2, 3, 13
_HOST_DEVICES = (_DL_CPU, _DL_CUDA_HOST)
_CUDA_DEVICES = (_DL_CUDA, _DL_CUDA_MANAGED)


def _root_module(a) -> str:
    return type(a).__module__.split(".")[0]


_NATIVE_TYPES = frozenset((np.ndarray, int, float, bool, str, tuple, list, type(None)))


def _is_foreign(a) -> bool:
    """True for an array of another framework: has __dlpack__, is neither
    NumPy nor CuPy."""
    if a is None or isinstance(a, np.ndarray):
        return False
    return hasattr(type(a), "__dlpack__") and _root_module(a) != "cupy"


def framework_of(a) -> str:
    """'torch', 'jax' or 'other' for a foreign array."""
    root = _root_module(a)
    if root == "torch":
        return "torch"
    if root in ("jax", "jaxlib"):
        return "jax"
    return "other"


def to_native(fn: str, name: str, a):
    """A NumPy (CPU) or CuPy (CUDA) array sharing ``a``'s memory."""
    kind = f"{type(a).__module__}.{type(a).__name__}"
    if getattr(a, "requires_grad", False):
        # torch refuses to export such tensors; say what to do instead.
        raise TypeError(f"{fn}: {name} is a tensor that requires grad; convkit.{fn} does not record "
                        f"gradients: use convkit.torch for autograd, or pass {name}.detach()")
    try:
        device_type = int(a.__dlpack_device__()[0])
    except Exception as exc:  # noqa: BLE001 - any failure of a foreign method
        raise TypeError(f"{fn}: {name} ({kind}) has __dlpack__ but no usable __dlpack_device__: {exc}") from None
    if device_type in _HOST_DEVICES:
        try:
            return np.from_dlpack(a)
        except (BufferError, RuntimeError, TypeError, ValueError) as exc:
            raise TypeError(f"{fn}: {name} ({kind}) cannot be viewed as a NumPy array through DLPack "
                            f"(convkit takes float32/float64 on the CPU): {exc}") from None
    if device_type in _CUDA_DEVICES:
        try:
            import cupy
        except ImportError:
            raise RuntimeError(f"{fn}: {name} is a CUDA array ({kind}); convkit's CUDA backend needs CuPy "
                               f"(pip install 'convkit[cuda]')") from None
        return cupy.from_dlpack(a)
    raise TypeError(f"{fn}: {name} ({kind}) lives on DLPack device type {device_type}; convkit runs on the "
                    f"CPU (type 1) and on CUDA devices (type 2)")


def to_framework(result, framework: str):
    """``result`` (an array, None, or a tuple of them) as arrays of ``framework``."""
    if isinstance(result, tuple):
        return tuple(to_framework(r, framework) for r in result)
    if result is None or framework == "other":
        return result
    if isinstance(result, np.ndarray) and not result.flags.writeable:
        result = result.copy()  # never hand out a writeable tensor over read-only memory
    if framework == "torch":
        import torch
        return torch.from_dlpack(result)
    import jax.dlpack
    return jax.dlpack.from_dlpack(result)


def accept_dlpack(op):
    """Wrap public op ``op`` so that it also takes (and returns) DLPack arrays."""
    import inspect

    signature = inspect.signature(op)
    fn = op.__name__

    @functools.wraps(op)
    def wrapper(*args, **kwargs):
        # Types that are never foreign are skipped by a set lookup: the
        # any(map(...)) over every argument cost ~1-2 us of a small call.
        if all(type(a) in _NATIVE_TYPES or not _is_foreign(a) for a in args) and (
                not kwargs or all(type(a) in _NATIVE_TYPES or not _is_foreign(a) for a in kwargs.values())):
            return op(*args, **kwargs)  # NumPy / CuPy: nothing to convert
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{fn}: {exc}") from None
        framework = None
        for name, value in bound.arguments.items():
            if _is_foreign(value):
                framework = framework or framework_of(value)
                bound.arguments[name] = to_native(fn, name, value)
        return to_framework(op(*bound.args, **bound.kwargs), framework)

    return wrapper
