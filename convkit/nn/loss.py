"""Losses (mean reduction by default) and softmax helpers.

A loss's ``forward(input, target)`` returns a Python float and caches what
``backward(grad=1.0)`` needs to return the gradient with respect to ``input``.
"""

from __future__ import annotations

from .layers import _input
from .module import Module, array_module

__all__ = ["softmax", "log_softmax", "CrossEntropyLoss", "MSELoss"]

_REDUCTIONS = ("mean", "sum")


def log_softmax(x, axis=-1):
    """x - logsumexp(x) along ``axis``, computed after subtracting the max."""
    x = _input(x)
    xp = array_module(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(x, axis=-1):
    x = _input(x)
    xp = array_module(x)
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _check_reduction(name, reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


class CrossEntropyLoss(Module):
    """torch.nn.CrossEntropyLoss for logits (N, C) and integer class labels
    (N,) (or class probabilities of shape (N, C)); log-softmax inside."""

    def __init__(self, reduction="mean"):
        super().__init__()
        self.reduction = _check_reduction("CrossEntropyLoss", reduction)
        self._cache = None

    def forward(self, logits, target):
        logits = _input(logits)
        xp = array_module(logits)
        if logits.ndim != 2:
            raise ValueError(f"CrossEntropyLoss: logits must be (N, classes), got shape {tuple(logits.shape)}")
        n, c = logits.shape
        logp = log_softmax(logits, axis=1)
        target = xp.asarray(target)
        if target.dtype.kind in "iu":
            if target.shape != (n,):
                raise ValueError(f"CrossEntropyLoss: labels must have shape ({n},), got {tuple(target.shape)}")
            if n and (int(target.min()) < 0 or int(target.max()) >= c):
                raise ValueError(f"CrossEntropyLoss: labels must lie in [0, {c}), got "
                                 f"[{int(target.min())}, {int(target.max())}]")
            per_sample = -logp[xp.arange(n), target]
        elif target.dtype.kind == "f":
            if target.shape != logits.shape:
                raise ValueError(f"CrossEntropyLoss: class probabilities must have the logits' shape "
                                 f"{tuple(logits.shape)}, got {tuple(target.shape)}")
            target = target.astype(logits.dtype, copy=False)
            per_sample = -(target * logp).sum(axis=1)
        else:
            raise TypeError(f"CrossEntropyLoss: target must hold integer labels or float probabilities, "
                            f"got dtype {target.dtype}")
        self._cache = (logp, target)
        total = per_sample.sum()
        return float(total / n if self.reduction == "mean" else total)

    def backward(self, grad=1.0):
        if self._cache is None:
            raise RuntimeError("CrossEntropyLoss.backward called before forward")
        logp, target = self._cache
        xp = array_module(logp)
        n = logp.shape[0]
        p = xp.exp(logp)
        if target.dtype.kind in "iu":
            p[xp.arange(n), target] -= 1
        else:
            p = p * target.sum(axis=1, keepdims=True) - target
        scale = float(grad) / n if self.reduction == "mean" else float(grad)
        return p * p.dtype.type(scale)


class MSELoss(Module):
    """torch.nn.MSELoss: mean (or sum) of (input - target)**2."""

    def __init__(self, reduction="mean"):
        super().__init__()
        self.reduction = _check_reduction("MSELoss", reduction)
        self._diff = None

    def forward(self, input, target):
        input = _input(input)
        xp = array_module(input)
        target = xp.asarray(target)
        if target.shape != input.shape:
            raise ValueError(f"MSELoss: target shape {tuple(target.shape)} differs from input shape "
                             f"{tuple(input.shape)}")
        diff = input - target.astype(input.dtype, copy=False)
        self._diff = diff
        total = (diff * diff).sum()
        return float(total / diff.size if self.reduction == "mean" else total)

    def backward(self, grad=1.0):
        if self._diff is None:
            raise RuntimeError("MSELoss.backward called before forward")
        d = self._diff
        scale = 2.0 * float(grad) / (d.size if self.reduction == "mean" else 1)
        return d * d.dtype.type(scale)
