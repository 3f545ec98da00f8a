"""Optimisers with torch.optim's update rules (SGD, Adam).

``params`` is an iterable of Parameters (e.g. ``model.parameters()``) or of
dicts ``{"params": [...], "lr": ...}`` (parameter groups with their own
settings). Parameters that are frozen (``requires_grad`` False) or have no
gradient are skipped, as torch skips parameters whose ``.grad`` is None.
"""

from __future__ import annotations

import math

from .module import Module, Parameter, array_module

__all__ = ["Optimizer", "SGD", "Adam"]


class Optimizer:
    def __init__(self, params, defaults):
        if isinstance(params, Module):
            params = params.parameters()
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = dict(defaults)
        self.param_groups = []
        seen = set()
        for g in groups:
            g = dict(g)
            ps = g["params"]
            ps = [ps] if isinstance(ps, Parameter) else list(ps)
            for p in ps:
                if not isinstance(p, Parameter):
                    raise TypeError(f"{type(self).__name__}: expected Parameters, got {type(p).__name__}")
                if id(p) in seen:
                    raise ValueError(f"{type(self).__name__}: a parameter appears in more than one group")
                seen.add(id(p))
            g["params"] = ps
            for k, v in self.defaults.items():
                g.setdefault(k, v)
            self.param_groups.append(g)
        self.state = {}  # id(param) -> dict

    def _active(self, group):
        for p in group["params"]:
            if p.requires_grad and p.grad is not None:
                yield p

    def zero_grad(self) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None

    def step(self) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """torch.optim.SGD: g = grad + wd*p; buf = momentum*buf + (1-dampening)*g
    (buf = g at the first step); g = g + momentum*buf (nesterov) or buf;
    p -= lr*g."""

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, "
                             f"{weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def step(self) -> None:
        for group in self.param_groups:
            lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
            wd, nesterov = group["weight_decay"], group["nesterov"]
            for p in self._active(group):
                d = p.grad
                if wd != 0:
                    d = d + wd * p.data
                if momentum != 0:
                    st = self.state.setdefault(id(p), {})
                    buf = st.get("momentum_buffer")
                    if buf is None:
                        buf = d.copy()
                        st["momentum_buffer"] = buf
                    else:
                        buf *= momentum
                        buf += (1 - dampening) * d
                    d = d + momentum * buf if nesterov else buf
                p.data -= (lr * d).astype(p.data.dtype, copy=False)


class Adam(Optimizer):
    """torch.optim.Adam (L2 weight decay added to the gradient, optional
    amsgrad)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
        if lr < 0 or eps < 0 or weight_decay < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"Adam: invalid lr={lr}, betas={betas}, eps={eps} or weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad))

    def step(self) -> None:
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            wd, amsgrad = group["weight_decay"], group["amsgrad"]
            for p in self._active(group):
                xp = array_module(p.data)
                g = p.grad
                if wd != 0:
                    g = g + wd * p.data
                st = self.state.setdefault(id(p), {})
                if not st:
                    st["step"] = 0
                    st["exp_avg"] = xp.zeros_like(p.data)
                    st["exp_avg_sq"] = xp.zeros_like(p.data)
                    if amsgrad:
                        st["max_exp_avg_sq"] = xp.zeros_like(p.data)
                st["step"] += 1
                t = st["step"]
                m, v = st["exp_avg"], st["exp_avg_sq"]
                m += (g - m) * (1 - beta1)          # torch: exp_avg.lerp_(grad, 1 - beta1)
                v *= beta2
                v += (1 - beta2) * g * g
                bias_correction1 = 1 - beta1 ** t
                bias_correction2_sqrt = math.sqrt(1 - beta2 ** t)
                if amsgrad:
                    vmax = st["max_exp_avg_sq"]
                    xp.maximum(vmax, v, out=vmax)
                    denom = xp.sqrt(vmax) / bias_correction2_sqrt + eps
                else:
                    denom = xp.sqrt(v) / bias_correction2_sqrt + eps
                p.data -= ((lr / bias_correction1) * m / denom).astype(p.data.dtype, copy=False)
