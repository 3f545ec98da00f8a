"""Parameter, Module and Sequential: the skeleton of convkit.nn.

A Module computes ``forward(x)`` and, from what it cached there,
``backward(grad_out) -> grad_input``; parameter gradients are *added* to
``Parameter.grad`` (like torch's ``.grad`` accumulation) unless the parameter
is frozen (``requires_grad`` False).
"""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np

__all__ = ["Parameter", "Module", "Sequential", "manual_seed", "get_generator", "array_module"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# --------------------------------------------------------------------------- #
# random numbers and array modules
# --------------------------------------------------------------------------- #

_generator = np.random.default_rng()


def manual_seed(seed) -> np.random.Generator:
    """Reseed the generator that default initialisation (and Dropout without
    its own generator) draws from; returns it."""
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def get_generator() -> np.random.Generator:
    """The module-level NumPy Generator used for initialisation."""
    return _generator


def _is_cupy(a) -> bool:
    return type(a).__module__.split(".")[0] == "cupy"


def _cupy():
    try:
        import cupy
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise RuntimeError("convkit.nn: device 'cuda' needs CuPy, which is not installed") from exc
    return cupy


def array_module(a):
    """numpy, or cupy when ``a`` is a CuPy array (imported lazily)."""
    return _cupy() if _is_cupy(a) else np


def _to_host(a):
    return a.get() if _is_cupy(a) else np.asarray(a)


def _device_of(a) -> str:
    return "cuda" if _is_cupy(a) else "cpu"


def _move(a, device):
    if a is None:
        return None
    if device == "cpu":
        return _to_host(a)
    return _cupy().asarray(a)


def _check_device(device) -> str:
    name = str(device)
    base = name.split(":")[0]
    if base not in ("cpu", "cuda"):
        raise ValueError(f"convkit.nn: device must be 'cpu' or 'cuda', got {device!r}")
    return base


def _as_float_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"convkit.nn: parameters must be float32 or float64, got {dtype}")
    return dtype


# --------------------------------------------------------------------------- #
# Parameter
# --------------------------------------------------------------------------- #

class Parameter:
    """A trainable array: ``data``, its accumulated ``grad`` (None until a
    backward pass reaches it) and ``requires_grad`` (False: frozen)."""

    __slots__ = ("data", "grad", "requires_grad")

    def __init__(self, data, requires_grad: bool = True):
        if not _is_cupy(data):
            data = np.asarray(data)
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    @property
    def device(self) -> str:
        return _device_of(self.data)

    def accumulate(self, grad) -> None:
        """Add ``grad`` to ``self.grad`` (no-op when frozen)."""
        if not self.requires_grad or grad is None:
            return
        if grad.dtype != self.data.dtype:
            grad = grad.astype(self.data.dtype)
        grad = grad.reshape(self.data.shape)
        if self.grad is None:
            # Own the buffer: kernels may hand back views of cached arrays.
            self.grad = grad.copy()
        else:
            self.grad += grad

    def zero_grad(self) -> None:
        self.grad = None

    def __repr__(self):
        frozen = "" if self.requires_grad else ", requires_grad=False"
        return f"Parameter(shape={tuple(self.shape)}, dtype={self.dtype}, device={self.device}{frozen})"


# --------------------------------------------------------------------------- #
# Module
# --------------------------------------------------------------------------- #

class Module:
    """Base class of layers and containers.

    Parameters and sub-modules assigned as attributes are registered in
    assignment order; ``named_parameters`` walks own parameters first and then
    the children, recursively (the order torch.nn uses, so state_dict keys such
    as ``0.weight`` or ``conv1.bias`` line up with torch's).
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # -- registration ------------------------------------------------------- #

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call Module.__init__() before assigning attributes")
        params, modules = self.__dict__["_parameters"], self.__dict__["_modules"]
        params.pop(name, None)
        modules.pop(name, None)
        if isinstance(value, Parameter):
            params[name] = value
        elif isinstance(value, Module):
            modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def add_module(self, name: str, module: "Module") -> None:
        if not isinstance(module, Module):
            raise TypeError(f"add_module: {name!r} is not a Module: {type(module).__name__}")
        setattr(self, name, module)

    def register_parameter(self, name: str, param) -> None:
        if param is not None and not isinstance(param, Parameter):
            param = Parameter(param)
        setattr(self, name, param)

    # -- computation -------------------------------------------------------- #

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, grad_out):
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- traversal ---------------------------------------------------------- #

    def children(self):
        return iter(self._modules.values())

    def named_children(self):
        return iter(self._modules.items())

    def named_modules(self, prefix: str = "", _memo=None):
        memo = set() if _memo is None else _memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix: str = "", recurse: bool = True):
        """(name, Parameter) pairs, each parameter once, in a deterministic order."""
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mod_prefix, module in modules:
            for name, p in module._parameters.items():
                if id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), p

    def parameters(self, recurse: bool = True):
        return [p for _, p in self.named_parameters(recurse=recurse)]

    def zero_grad(self) -> None:
        """Drop every parameter's gradient (``grad = None``, as torch's default)."""
        for p in self.parameters():
            p.grad = None

    # -- modes -------------------------------------------------------------- #

    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def freeze(self) -> "Module":
        """Stop gradient accumulation and optimiser updates for every parameter
        of this module (backward still returns grad_input)."""
        return self.requires_grad_(False)

    def unfreeze(self) -> "Module":
        return self.requires_grad_(True)

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        for p in self.parameters():
            p.requires_grad = bool(requires_grad)
            if not requires_grad:
                p.grad = None
        return self

    # -- state -------------------------------------------------------------- #

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """name -> a NumPy copy of the parameter (host memory whatever the device)."""
        return OrderedDict((name, _to_host(p.data).copy()) for name, p in self.named_parameters())

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy arrays into the parameters, keeping each parameter's dtype and
        device. Values may be NumPy/CuPy arrays or torch tensors. With
        ``strict``, missing or unexpected keys raise KeyError. Returns
        ``(missing_keys, unexpected_keys)``."""
        own = OrderedDict(self.named_parameters())
        given = dict(state_dict)
        missing = [k for k in own if k not in given]
        unexpected = [k for k in given if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        staged = {}
        for name, p in own.items():
            if name not in given:
                continue
            value = given[name]
            if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
                value = value.detach().cpu().numpy()
            value = _to_host(value)
            if tuple(value.shape) != tuple(p.shape):
                raise ValueError(f"load_state_dict: {name} has shape {tuple(value.shape)}, "
                                 f"the parameter has shape {tuple(p.shape)}")
            staged[name] = value
        for name, value in staged.items():  # nothing changes unless every check passed
            p = own[name]
            p.data = _move(value.astype(p.dtype, copy=True), p.device)
        return missing, unexpected

    def save(self, path) -> None:
        """Write the state_dict to ``path`` as an uncompressed ``.npz``."""
        path = os.fspath(path)
        with open(path, "wb") as f:  # a file object: np.savez must not append '.npz'
            np.savez(f, **self.state_dict())

    def load(self, path, strict: bool = True) -> "Module":
        """Load parameters saved by ``save``; returns self."""
        path = os.fspath(path)
        if not os.path.exists(path) and os.path.exists(path + ".npz"):
            path += ".npz"
        with np.load(path, allow_pickle=False) as data:
            self.load_state_dict({k: data[k] for k in data.files}, strict=strict)
        return self

    # -- dtype and device --------------------------------------------------- #

    def astype(self, dtype) -> "Module":
        dtype = _as_float_dtype(dtype)
        for p in self.parameters():
            p.data = p.data.astype(dtype, copy=False)
            if p.grad is not None:
                p.grad = p.grad.astype(dtype, copy=False)
        return self

    def double(self) -> "Module":
        return self.astype(np.float64)

    def float(self) -> "Module":
        return self.astype(np.float32)

    def to(self, device=None, dtype=None) -> "Module":
        """Move parameters (and gradients) to ``'cpu'`` (NumPy) or ``'cuda'``
        (CuPy, imported only then); optionally also change their dtype."""
        if device is not None and not isinstance(device, str) and dtype is None:
            device, dtype = None, device  # .to(np.float64)
        if device is not None:
            device = _check_device(device)
            for p in self.parameters():
                if p.device != device:
                    p.data = _move(p.data, device)
                    p.grad = _move(p.grad, device)
        if dtype is not None:
            self.astype(dtype)
        return self

    def cpu(self) -> "Module":
        return self.to("cpu")

    def cuda(self) -> "Module":
        return self.to("cuda")

    # -- printing ----------------------------------------------------------- #

    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not self._modules:
            return head + ")"
        lines = [head]
        for name, m in self._modules.items():
            body = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return "\n".join(lines) + "\n)"


class Sequential(Module):
    """Modules applied in order; ``net[i]`` / ``net[a:b]`` / ``len(net)``.
    Children are named ``"0"``, ``"1"``, ... (or the keys of an OrderedDict)."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                self.add_module(str(name), m)
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), m)

    def append(self, module: Module) -> "Sequential":
        self.add_module(str(len(self._modules)), module)
        return self

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, idx):
        mods = list(self._modules.items())
        if isinstance(idx, slice):
            return Sequential(OrderedDict(mods[idx]))
        return mods[idx][1]

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def backward(self, grad_out):
        for m in reversed(list(self._modules.values())):
            grad_out = m.backward(grad_out)
        return grad_out
