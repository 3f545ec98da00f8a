"""Bad arguments raise ValueError/TypeError whose message names the function
and the argument; hostile inputs (huge fake shapes, out-of-range indices,
absurd strides) raise too and never crash the interpreter (those run in a
subprocess and the test asserts the child was not killed by a signal)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

import convkit

BACKENDS = [None, "reference"]


def Z(*shape, dtype=np.float64):
    return np.zeros(shape, dtype=dtype)


def R(*shape, dtype=np.float64):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


# Valid baseline calls; every error case below breaks exactly one thing.
def _max_idx(x, **kw):
    import convkit.reference as ref

    return ref.max_pool2d(x, return_indices=True, **kw)[1]


def _amax_idx(x, size):
    import convkit.reference as ref

    return ref.adaptive_max_pool2d(x, size, return_indices=True)[1]


X = R(2, 4, 6, 6)
W = R(6, 2, 3, 3)  # groups=2
B = R(6)
GY = R(2, 6, 4, 4)  # conv2d(X, W, groups=2) output
WT = R(4, 3, 3, 3)  # conv_transpose2d weight: (C_in=4, C_out/groups=3, 3, 3)
GYT = R(2, 6, 13, 13)  # conv_transpose2d(X, WT, stride=2, groups=2) output: (6-1)*2+2+1 = 13
P_GY = R(2, 4, 3, 3)  # 2x2 pool of X
IDX = _max_idx(X, kernel_size=2)
A_GY = R(2, 4, 4, 3)
A_IDX = _amax_idx(X, (4, 3))

VALID = {
    "conv2d": lambda: ((X, W, B), dict(groups=2)),
    "conv2d_backward": lambda: ((GY, X, W), dict(groups=2)),
    "conv_transpose2d": lambda: ((X, WT, B), dict(stride=2, groups=2)),
    "conv_transpose2d_backward": lambda: ((GYT, X, WT), dict(stride=2, groups=2)),
    "max_pool2d": lambda: ((X, 2), {}),
    "max_pool2d_backward": lambda: ((P_GY, X, IDX, 2), {}),
    "avg_pool2d": lambda: ((X, 2), {}),
    "avg_pool2d_backward": lambda: ((P_GY, X, 2), {}),
    "lp_pool2d": lambda: ((np.abs(X), 2.0, 2), {}),
    "lp_pool2d_backward": lambda: ((P_GY, np.abs(X), 2.0, 2), {}),
    "adaptive_avg_pool2d": lambda: ((X, (4, 3)), {}),
    "adaptive_avg_pool2d_backward": lambda: ((A_GY, X), {}),
    "adaptive_max_pool2d": lambda: ((X, (4, 3)), {}),
    "adaptive_max_pool2d_backward": lambda: ((A_GY, X, A_IDX), {}),
    "global_avg_pool2d": lambda: ((X,), {}),
    "global_avg_pool2d_backward": lambda: ((R(2, 4, 1, 1), X), {}),
}

VE, TE = ValueError, TypeError
EITHER = (ValueError, TypeError)

# (function, case id, make() -> (args, kwargs), exception(s), substrings of which one must be in the message)
CASES = [
    # ---------------- conv2d
    ("conv2d", "input_2d", lambda: ((Z(6, 6), W), {}), VE, ["input"]),
    ("conv2d", "input_5d", lambda: ((Z(1, 2, 4, 6, 6), W), dict(groups=2)), VE, ["input"]),
    ("conv2d", "weight_3d", lambda: ((X, Z(6, 4, 3)), {}), VE, ["weight"]),
    ("conv2d", "channel_mismatch", lambda: ((X, Z(6, 3, 3, 3)), {}), VE, ["channel"]),
    ("conv2d", "groups_mismatch", lambda: ((X, W), dict(groups=1)), VE, ["channel", "groups"]),
    ("conv2d", "groups_not_dividing_out", lambda: ((X, Z(5, 2, 3, 3)), dict(groups=2)), VE, ["groups"]),
    ("conv2d", "groups_not_dividing_in", lambda: ((Z(1, 3, 5, 5), Z(3, 1, 3, 3)), dict(groups=2)), VE,
     ["groups", "channel"]),
    ("conv2d", "groups_zero", lambda: ((X, W), dict(groups=0)), VE, ["groups"]),
    ("conv2d", "groups_negative", lambda: ((X, W), dict(groups=-2)), VE, ["groups"]),
    ("conv2d", "stride_zero", lambda: ((X, W, B), dict(groups=2, stride=0)), VE, ["stride"]),
    ("conv2d", "stride_negative_pair", lambda: ((X, W, B), dict(groups=2, stride=(1, -1))), VE, ["stride"]),
    ("conv2d", "stride_triple", lambda: ((X, W, B), dict(groups=2, stride=(1, 1, 1))), EITHER, ["stride"]),
    ("conv2d", "stride_float", lambda: ((X, W, B), dict(groups=2, stride=1.5)), EITHER, ["stride"]),
    ("conv2d", "dilation_zero", lambda: ((X, W, B), dict(groups=2, dilation=0)), VE, ["dilation"]),
    ("conv2d", "dilation_negative", lambda: ((X, W, B), dict(groups=2, dilation=(-1, 1))), VE, ["dilation"]),
    ("conv2d", "padding_negative", lambda: ((X, W, B), dict(groups=2, padding=-1)), VE, ["padding"]),
    ("conv2d", "padding_negative_side", lambda: ((X, W, B), dict(groups=2, padding=((1, -1), (0, 0)))), VE,
     ["padding"]),
    ("conv2d", "padding_unknown_string", lambda: ((X, W, B), dict(groups=2, padding="foo")), VE, ["padding"]),
    ("conv2d", "padding_same_stride2", lambda: ((X, W, B), dict(groups=2, padding="same", stride=2)), VE,
     ["same", "stride"]),
    ("conv2d", "padding_same_stride_pair", lambda: ((X, W, B), dict(groups=2, padding="same", stride=(1, 2))), VE,
     ["same", "stride"]),
    ("conv2d", "window_too_large", lambda: ((Z(1, 4, 2, 2), W), dict(groups=2)), VE, ["input", "kernel"]),
    ("conv2d", "dilated_window_too_large", lambda: ((Z(1, 4, 5, 5), W), dict(groups=2, dilation=3)), VE,
     ["input", "kernel"]),
    ("conv2d", "kernel_zero", lambda: ((X, Z(6, 2, 0, 3)), dict(groups=2)), VE, ["kernel", "weight"]),
    ("conv2d", "bias_wrong_len", lambda: ((X, W, Z(5)), dict(groups=2)), VE, ["bias"]),
    ("conv2d", "bias_2d", lambda: ((X, W, Z(6, 1)), dict(groups=2)), VE, ["bias"]),
    ("conv2d", "bias_dtype", lambda: ((X, W, Z(6, dtype=np.float32)), dict(groups=2)), TE, ["bias"]),
    ("conv2d", "dtype_int32", lambda: ((X.astype(np.int32), W.astype(np.int32)), dict(groups=2)), TE, ["float32"]),
    ("conv2d", "dtype_float16", lambda: ((X.astype(np.float16), W.astype(np.float16)), dict(groups=2)), TE,
     ["float32"]),
    ("conv2d", "dtype_complex", lambda: ((X.astype(np.complex128), W.astype(np.complex128)), dict(groups=2)), TE,
     ["float32"]),
    ("conv2d", "dtype_bool", lambda: ((X > 0, W > 0), dict(groups=2)), TE, ["float32"]),
    ("conv2d", "dtype_object", lambda: ((X.astype(object), W), dict(groups=2)), TE, ["float32"]),
    ("conv2d", "mixed_dtypes", lambda: ((X.astype(np.float32), W), dict(groups=2)), TE, ["dtype"]),
    ("conv2d", "mixed_dtypes_rev", lambda: ((X, W.astype(np.float32)), dict(groups=2)), TE, ["dtype"]),
    ("conv2d", "groups_float", lambda: ((X, W), dict(groups=2.0)), EITHER, ["groups"]),
    ("conv2d", "unknown_backend", lambda: ((X, W), dict(groups=2, backend="gpu9")), VE, ["backend"]),
    # ---------------- conv2d_backward
    ("conv2d_backward", "grad_wrong_shape", lambda: ((R(2, 6, 4, 5), X, W), dict(groups=2)), VE, ["grad"]),
    ("conv2d_backward", "grad_wrong_channels", lambda: ((R(2, 5, 4, 4), X, W), dict(groups=2)), VE, ["grad"]),
    ("conv2d_backward", "grad_dtype", lambda: ((GY.astype(np.float32), X, W), dict(groups=2)), TE, ["dtype"]),
    ("conv2d_backward", "grad_int", lambda: ((GY.astype(np.int64), X, W), dict(groups=2)), TE, ["float32"]),
    ("conv2d_backward", "channel_mismatch", lambda: ((GY, X, Z(6, 3, 3, 3)), {}), VE, ["channel"]),
    ("conv2d_backward", "stride_zero", lambda: ((GY, X, W), dict(groups=2, stride=0)), VE, ["stride"]),
    ("conv2d_backward", "padding_string", lambda: ((GY, X, W), dict(groups=2, padding="bar")), VE, ["padding"]),
    ("conv2d_backward", "same_stride2", lambda: ((GY, X, W), dict(groups=2, padding="same", stride=2)), VE,
     ["same", "stride"]),
    ("conv2d_backward", "output_mask_len2", lambda: ((GY, X, W), dict(groups=2, output_mask=(True, True))),
     EITHER, ["output_mask"]),
    ("conv2d_backward", "input_2d", lambda: ((GY, Z(6, 6), W), dict(groups=2)), VE, ["input"]),
    # ---------------- conv_transpose2d
    ("conv_transpose2d", "channel_mismatch", lambda: ((X, Z(3, 3, 3, 3)), dict(stride=2)), VE, ["channel"]),
    ("conv_transpose2d", "groups_not_dividing", lambda: ((X, WT), dict(groups=3)), VE, ["groups"]),
    ("conv_transpose2d", "groups_zero", lambda: ((X, WT), dict(groups=0)), VE, ["groups"]),
    ("conv_transpose2d", "output_padding_ge_stride", lambda: ((X, WT), dict(stride=2, output_padding=2, groups=2)),
     VE, ["output_padding"]),
    ("conv_transpose2d", "output_padding_stride1", lambda: ((X, WT), dict(output_padding=1, groups=2)), VE,
     ["output_padding"]),
    ("conv_transpose2d", "output_padding_w_only", lambda: ((X, WT), dict(stride=(2, 1), output_padding=(1, 1),
                                                                             groups=2)), VE, ["output_padding"]),
    ("conv_transpose2d", "output_padding_negative", lambda: ((X, WT), dict(stride=2, output_padding=-1, groups=2)),
     VE, ["output_padding"]),
    ("conv_transpose2d", "stride_zero", lambda: ((X, WT), dict(stride=0, groups=2)), VE, ["stride"]),
    ("conv_transpose2d", "dilation_zero", lambda: ((X, WT), dict(dilation=0, groups=2)), VE, ["dilation"]),
    ("conv_transpose2d", "padding_negative", lambda: ((X, WT), dict(padding=-1, groups=2)), VE, ["padding"]),
    ("conv_transpose2d", "padding_too_large", lambda: ((Z(1, 4, 1, 1), WT), dict(padding=2, groups=2)), VE,
     ["padding", "output"]),
    ("conv_transpose2d", "bias_wrong_len", lambda: ((X, WT, Z(3)), dict(groups=2)), VE, ["bias"]),
    ("conv_transpose2d", "dtype_int", lambda: ((X.astype(np.int16), WT), dict(groups=2)), TE, ["float32"]),
    ("conv_transpose2d", "mixed_dtypes", lambda: ((X, WT.astype(np.float32)), dict(groups=2)), TE, ["dtype"]),
    ("conv_transpose2d", "weight_5d", lambda: ((X, Z(4, 3, 3, 3, 1)), dict(groups=2)), VE, ["weight"]),
    ("conv_transpose2d", "input_2d", lambda: ((Z(6, 6), WT), dict(groups=2)), VE, ["input"]),
    # ---------------- conv_transpose2d_backward
    ("conv_transpose2d_backward", "grad_wrong_shape", lambda: ((R(2, 6, 12, 13), X, WT), dict(stride=2, groups=2)),
     VE, ["grad"]),
    ("conv_transpose2d_backward", "grad_dtype", lambda: ((GYT.astype(np.float32), X, WT), dict(stride=2, groups=2)),
     TE, ["dtype"]),
    ("conv_transpose2d_backward", "output_padding_bad", lambda: ((GYT, X, WT), dict(stride=2, output_padding=3,
                                                                                    groups=2)), VE,
     ["output_padding"]),
    ("conv_transpose2d_backward", "output_mask_len4", lambda: ((GYT, X, WT), dict(stride=2, groups=2,
                                                                                  output_mask=(1, 1, 1, 1))),
     EITHER, ["output_mask"]),
    # ---------------- max_pool2d
    ("max_pool2d", "kernel_zero", lambda: ((X, 0), {}), VE, ["kernel_size"]),
    ("max_pool2d", "kernel_negative_pair", lambda: ((X, (2, -1)), {}), VE, ["kernel_size"]),
    ("max_pool2d", "stride_zero", lambda: ((X, 2), dict(stride=0)), VE, ["stride"]),
    ("max_pool2d", "padding_negative", lambda: ((X, 2), dict(padding=-1)), VE, ["padding"]),
    ("max_pool2d", "padding_over_half", lambda: ((X, 2), dict(padding=2)), VE, ["padding"]),
    ("max_pool2d", "padding_over_half_w", lambda: ((X, (4, 3)), dict(padding=(2, 2))), VE, ["padding"]),
    ("max_pool2d", "dilation_zero", lambda: ((X, 2), dict(dilation=0)), VE, ["dilation"]),
    ("max_pool2d", "window_too_large", lambda: ((Z(1, 1, 3, 3), 5), {}), VE, ["input", "window", "kernel"]),
    ("max_pool2d", "dilated_window_too_large", lambda: ((Z(1, 1, 3, 3), 2), dict(dilation=3)), VE,
     ["input", "window", "kernel"]),
    ("max_pool2d", "input_2d", lambda: ((Z(6, 6), 2), {}), VE, ["input"]),
    ("max_pool2d", "input_5d", lambda: ((Z(1, 1, 1, 6, 6), 2), {}), VE, ["input"]),
    ("max_pool2d", "dtype_int", lambda: ((X.astype(np.int64), 2), {}), TE, ["float32"]),
    ("max_pool2d", "dtype_float16", lambda: ((X.astype(np.float16), 2), {}), TE, ["float32"]),
    ("max_pool2d", "kernel_triple", lambda: ((X, (2, 2, 2)), {}), EITHER, ["kernel_size"]),
    ("max_pool2d", "unknown_backend", lambda: ((X, 2), dict(backend="tpu")), VE, ["backend"]),
    # ---------------- max_pool2d_backward
    ("max_pool2d_backward", "indices_int32", lambda: ((P_GY, X, IDX.astype(np.int32), 2), {}), EITHER,
     ["indices"]),
    ("max_pool2d_backward", "indices_float", lambda: ((P_GY, X, IDX.astype(np.float64), 2), {}), EITHER,
     ["indices"]),
    ("max_pool2d_backward", "indices_wrong_shape", lambda: ((P_GY, X, IDX[..., :2], 2), {}), VE, ["indices"]),
    ("max_pool2d_backward", "grad_wrong_shape", lambda: ((P_GY[..., :2], X, IDX, 2), {}), VE, ["grad"]),
    ("max_pool2d_backward", "grad_dtype", lambda: ((P_GY.astype(np.float32), X, IDX, 2), {}), TE, ["dtype"]),
    ("max_pool2d_backward", "padding_over_half", lambda: ((P_GY, X, IDX, 2), dict(padding=2)), VE, ["padding"]),
    ("max_pool2d_backward", "kernel_zero", lambda: ((P_GY, X, IDX, 0), {}), VE, ["kernel_size"]),
    # ---------------- avg_pool2d
    ("avg_pool2d", "kernel_zero", lambda: ((X, 0), {}), VE, ["kernel_size"]),
    ("avg_pool2d", "stride_negative", lambda: ((X, 2), dict(stride=-1)), VE, ["stride"]),
    ("avg_pool2d", "padding_over_half", lambda: ((X, 3), dict(padding=2)), VE, ["padding"]),
    ("avg_pool2d", "padding_negative", lambda: ((X, 3), dict(padding=(0, -1))), VE, ["padding"]),
    ("avg_pool2d", "divisor_zero", lambda: ((X, 2), dict(divisor_override=0)), VE, ["divisor_override"]),
    ("avg_pool2d", "divisor_float", lambda: ((X, 2), dict(divisor_override=1.5)), EITHER, ["divisor_override"]),
    ("avg_pool2d", "window_too_large", lambda: ((Z(1, 1, 3, 3), (4, 2)), {}), VE, ["input", "window", "kernel"]),
    ("avg_pool2d", "dtype_int", lambda: ((X.astype(np.uint8), 2), {}), TE, ["float32"]),
    ("avg_pool2d", "input_2d", lambda: ((Z(6, 6), 2), {}), VE, ["input"]),
    ("avg_pool2d_backward", "grad_wrong_shape", lambda: ((R(2, 4, 3, 2), X, 2), {}), VE, ["grad"]),
    ("avg_pool2d_backward", "grad_dtype", lambda: ((P_GY.astype(np.float32), X, 2), {}), TE, ["dtype"]),
    ("avg_pool2d_backward", "divisor_zero", lambda: ((P_GY, X, 2), dict(divisor_override=0)), VE,
     ["divisor_override"]),
    # ---------------- lp_pool2d
    ("lp_pool2d", "kernel_zero", lambda: ((np.abs(X), 2.0, 0), {}), VE, ["kernel_size"]),
    ("lp_pool2d", "stride_zero", lambda: ((np.abs(X), 2.0, 2), dict(stride=0)), VE, ["stride"]),
    ("lp_pool2d", "window_too_large", lambda: ((Z(1, 1, 3, 3), 2.0, 4), {}), VE, ["input", "window", "kernel"]),
    ("lp_pool2d", "dtype_int", lambda: ((X.astype(np.int32), 2.0, 2), {}), TE, ["float32"]),
    ("lp_pool2d", "input_2d", lambda: ((Z(6, 6), 2.0, 2), {}), VE, ["input"]),
    ("lp_pool2d", "norm_type_string", lambda: ((np.abs(X), "2", 2), {}), EITHER, ["norm_type"]),
    ("lp_pool2d_backward", "grad_wrong_shape", lambda: ((R(2, 4, 2, 3), np.abs(X), 2.0, 2), {}), VE, ["grad"]),
    ("lp_pool2d_backward", "kernel_zero", lambda: ((P_GY, np.abs(X), 2.0, 0), {}), VE, ["kernel_size"]),
    # ---------------- adaptive / global
    ("adaptive_avg_pool2d", "output_size_negative", lambda: ((X, -1), {}), VE, ["output_size"]),
    ("adaptive_avg_pool2d", "output_size_triple", lambda: ((X, (1, 2, 3)), {}), EITHER, ["output_size"]),
    ("adaptive_avg_pool2d", "input_2d", lambda: ((Z(6, 6), 2), {}), VE, ["input"]),
    ("adaptive_avg_pool2d", "dtype_int", lambda: ((X.astype(np.int32), 2), {}), TE, ["float32"]),
    ("adaptive_avg_pool2d_backward", "grad_ndim", lambda: ((R(4, 3), X), {}), VE, ["grad"]),
    ("adaptive_avg_pool2d_backward", "grad_batch_mismatch", lambda: ((R(3, 4, 4, 3), X), {}), VE, ["grad"]),
    ("adaptive_avg_pool2d_backward", "grad_dtype", lambda: ((A_GY.astype(np.float32), X), {}), TE, ["dtype"]),
    ("adaptive_max_pool2d", "output_size_negative", lambda: ((X, (2, -3)), {}), VE, ["output_size"]),
    ("adaptive_max_pool2d", "dtype_int", lambda: ((X.astype(np.int8), 2), {}), TE, ["float32"]),
    ("adaptive_max_pool2d", "input_5d", lambda: ((Z(1, 1, 1, 6, 6), 2), {}), VE, ["input"]),
    ("adaptive_max_pool2d_backward", "indices_int32", lambda: ((A_GY, X, A_IDX.astype(np.int32)), {}), EITHER,
     ["indices"]),
    ("adaptive_max_pool2d_backward", "indices_wrong_shape", lambda: ((A_GY, X, A_IDX[:1]), {}), VE, ["indices"]),
    ("adaptive_max_pool2d_backward", "grad_indices_mismatch", lambda: ((R(2, 4, 3, 3), X, A_IDX), {}), VE,
     ["indices", "grad"]),
    ("global_avg_pool2d", "input_2d", lambda: ((Z(6, 6),), {}), VE, ["input"]),
    ("global_avg_pool2d", "dtype_int", lambda: ((X.astype(np.int32),), {}), TE, ["float32"]),
    ("global_avg_pool2d_backward", "grad_wrong_shape", lambda: ((R(2, 4, 2, 1), X), {}), VE, ["grad"]),
    ("global_avg_pool2d_backward", "grad_dtype", lambda: ((R(2, 4, 1, 1).astype(np.float32), X), {}), TE,
     ["dtype"]),
]

_DTYPE_CASES = {"dtype_int32", "dtype_float16", "dtype_complex", "dtype_bool", "dtype_object", "dtype_int",
                "grad_int"}


@pytest.mark.parametrize("name", sorted(VALID))
@pytest.mark.parametrize("backend", BACKENDS, ids=["cpu", "reference"])
def test_baseline_calls_are_valid(name, backend):
    """Each error case breaks one thing of these calls: they must succeed."""
    args, kw = VALID[name]()
    getattr(convkit, name)(*args, backend=backend, **kw)


@pytest.mark.parametrize("backend", BACKENDS, ids=["cpu", "reference"])
@pytest.mark.parametrize("fn,case,make,exc,words", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_bad_arguments_raise(fn, case, make, exc, words, backend):
    args, kw = make()
    kw = dict(kw)
    kw.setdefault("backend", backend)
    with pytest.raises(exc) as info:
        getattr(convkit, fn)(*args, **kw)
    msg = str(info.value)
    assert re.search(rf"(?<![\w.]){re.escape(fn)}(?!\w)", msg), f"message does not name {fn!r}: {msg!r}"
    low = msg.lower()
    assert any(wd.lower() in low for wd in words), f"message names none of {words}: {msg!r}"
    if case in _DTYPE_CASES:
        assert "float32" in msg and "float64" in msg, f"dtype error must list the accepted dtypes: {msg!r}"


@pytest.mark.parametrize("fn,case,make,exc,words", [c for c in CASES if c[0] in ("conv2d", "max_pool2d")][:12],
                         ids=[f"{c[0]}-{c[1]}" for c in CASES if c[0] in ("conv2d", "max_pool2d")][:12])
def test_reference_module_raises_too(fn, case, make, exc, words):
    import convkit.reference as ref

    args, kw = make()
    kw = {k: v for k, v in kw.items() if k != "backend"}
    with pytest.raises(exc) as info:
        getattr(ref, fn)(*args, **kw)
    assert fn in str(info.value)


@pytest.mark.parametrize("n", [0, -1, 1.5, "2", None])
def test_set_num_threads_rejects_bad_values(n, restore_threads):
    before = convkit.get_num_threads()
    with pytest.raises((ValueError, TypeError)) as info:
        convkit.set_num_threads(n)
    assert "set_num_threads" in str(info.value)
    assert convkit.get_num_threads() == before


def test_error_leaves_no_state_behind():
    """After an error the same op still works (no half-initialised state)."""
    with pytest.raises(ValueError):
        convkit.conv2d(X, W, groups=2, stride=0)
    y = convkit.conv2d(X, W, groups=2)
    assert y.shape == (2, 6, 4, 4)


# --------------------------------------------------------------------------- #
# hostile inputs, each in its own interpreter
# --------------------------------------------------------------------------- #

_PRELUDE = """
import sys
import numpy as np
import convkit
from numpy.lib.stride_tricks import as_strided

def fake(shape, dtype=np.float64):
    return as_strided(np.zeros(1, dtype=dtype), shape=shape, strides=(0,) * len(shape))

ALLOWED = {allowed}
try:
{body}
except BaseException as e:
    name = type(e).__name__
    print("RAISED", name, str(e)[:300].replace("\\n", " "))
    sys.exit(0 if name in ALLOWED else 3)
print("NO-ERROR")
"""


def run_isolated(body, allowed=("ValueError", "MemoryError"), timeout=120):
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(convkit.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = pkg_parent + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "2")
    code = _PRELUDE.format(allowed=repr(set(allowed)), body=textwrap.indent(textwrap.dedent(body), "    "))
    # Run outside the source tree so the installed package (with its compiled
    # extension) is imported, not the bare source folder.
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=tempfile.gettempdir())
    assert proc.returncode >= 0, (f"child killed by signal {-proc.returncode}\nstdout: {proc.stdout}\n"
                                  f"stderr: {proc.stderr[-3000:]}")
    return proc


def _expect_raise(body, allowed=("ValueError", "MemoryError"), function=None):
    proc = run_isolated(body, allowed)
    out = proc.stdout.strip().splitlines()
    last = out[-1] if out else ""
    assert proc.returncode == 0 and last.startswith("RAISED"), (
        f"expected one of {allowed}; rc={proc.returncode} stdout={proc.stdout!r} stderr={proc.stderr[-2000:]!r}")
    if function is not None:
        assert function in last, f"message does not name {function}: {last}"


HUGE = {
    "conv2d_output_overflows": ("""
        x = fake((2**19, 1, 2**20, 2**20))
        w = fake((2**22, 1, 1, 1))
        convkit.conv2d(x, w, backend=BK)
     """, "conv2d"),
    "conv2d_huge_input": ("""
        x = fake((1, 2**19, 2**20, 2**20))
        w = fake((1, 2**19, 1, 1))
        convkit.conv2d(x, w, backend=BK)
     """, None),
    "conv2d_backward_huge": ("""
        x = fake((2**19, 1, 2**20, 2**20))
        w = fake((2**22, 1, 1, 1))
        gy = fake((1, 1, 1, 1))
        convkit.conv2d_backward(gy, x, w, backend=BK)
     """, None),
    "conv_transpose2d_stride_overflow": ("""
        convkit.conv_transpose2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 1, 1)), stride=2**62, backend=BK)
     """, "conv_transpose2d"),
    "conv_transpose2d_big_output": ("""
        convkit.conv_transpose2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 1, 1)), stride=2**40, backend=BK)
     """, "conv_transpose2d"),
    "max_pool2d_huge": ("""
        convkit.max_pool2d(fake((2**19, 2**20, 2**10, 2**10)), 1, backend=BK)
     """, None),
    "avg_pool2d_huge": ("""
        convkit.avg_pool2d(fake((2**19, 2**20, 2**10, 2**10)), 1, backend=BK)
     """, None),
    "adaptive_avg_output_overflows": ("""
        convkit.adaptive_avg_pool2d(np.zeros((1, 1, 3, 3)), (2**40, 2**40), backend=BK)
     """, "adaptive_avg_pool2d"),
    "adaptive_max_output_huge": ("""
        convkit.adaptive_max_pool2d(np.zeros((2, 2, 3, 3)), (2**31, 2**31), return_indices=True, backend=BK)
     """, "adaptive_max_pool2d"),
    "global_avg_huge": ("""
        convkit.global_avg_pool2d(fake((2**19, 2**20, 2**10, 2**10)), backend=BK)
     """, None),
    "shape_product_over_int64": ("""
        x = fake((2**16, 2**16, 2**15, 2**15))
        convkit.max_pool2d(x, 1, backend=BK)
     """, None),
}


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("case", sorted(HUGE))
def test_huge_sizes_raise_not_crash(case, backend):
    body, function = HUGE[case]
    body = f"BK = {backend!r}\n" + textwrap.dedent(body)
    if case == "shape_product_over_int64":
        # numpy itself may refuse to build the fake array; fine as long as nothing crashes
        proc = run_isolated(body, ("ValueError", "MemoryError"))
        assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
        return
    _expect_raise(body, function=function)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("args", ["stride=2**63", "stride=2**70", "dilation=2**64", "padding=2**63",
                                  "groups=2**64"])
def test_out_of_int64_arguments_do_not_crash(args, backend):
    proc = run_isolated(f"convkit.conv2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 1, 1)), {args}, backend={backend!r})",
                        allowed=("ValueError", "TypeError", "OverflowError", "MemoryError"))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_giant_pool_window_clamps_or_raises(backend):
    """A window of 2**40 with padding 2**39 over a 3x3 input is legal (padding
    is half the window) and covers the whole input: the result is its max, or
    the call is refused; it must neither hang nor crash."""
    body = f"""
        x = np.arange(9.0).reshape(1, 1, 3, 3)
        y, i = convkit.max_pool2d(x, 2**40, padding=2**39, return_indices=True, backend={backend!r})
        assert y.shape == (1, 1, 1, 1) and y[0, 0, 0, 0] == 8.0 and i[0, 0, 0, 0] == 8, (y, i)
        a = convkit.avg_pool2d(x, 2**40, padding=2**39, count_include_pad=False, backend={backend!r})
        assert abs(a[0, 0, 0, 0] - 4.0) < 1e-12, a
    """
    proc = run_isolated(body, allowed=("ValueError", "MemoryError"), timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]


BAD_INDEX_VALUES = {
    "plane_size": "H * W",
    "minus_one": "-1",
    "int64_min": "-2**63",
    "int64_max": "2**63 - 1",
    "huge": "10**12",
    "in_plane_outside_window": "(H - 1) * W + (W - 1) if first_window_corner else 0",
}


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("pool", ["max_pool2d", "adaptive_max_pool2d"])
@pytest.mark.parametrize("bad", sorted(BAD_INDEX_VALUES))
def test_hostile_indices_raise_not_crash(bad, pool, backend):
    value = BAD_INDEX_VALUES[bad]
    if pool == "max_pool2d":
        call = ("y, idx = convkit.max_pool2d(x, 2, return_indices=True, backend={bk!r})\n"
                "gy = np.ones(y.shape)\n"
                "idx = idx.copy(); idx[1, 2, 0, 0] = {v}\n"
                "convkit.max_pool2d_backward(gy, x, idx, 2, backend={bk!r})")
    else:
        call = ("y, idx = convkit.adaptive_max_pool2d(x, (3, 2), return_indices=True, backend={bk!r})\n"
                "gy = np.ones(y.shape)\n"
                "idx = idx.copy(); idx[1, 2, 0, 0] = {v}\n"
                "convkit.adaptive_max_pool2d_backward(gy, x, idx, backend={bk!r})")
    body = ("x = np.random.default_rng(0).standard_normal((2, 3, 6, 4))\n"
            "H, W = 6, 4\nfirst_window_corner = True\n" + call.format(v=value, bk=backend))
    _expect_raise(body, allowed=("ValueError",), function=pool + "_backward")


def test_hostile_indices_on_empty_batch_and_good_indices_still_work():
    x = np.random.default_rng(1).standard_normal((0, 2, 4, 4))
    y, idx = convkit.max_pool2d(x, 2, return_indices=True)
    assert y.shape == (0, 2, 2, 2) and idx.shape == (0, 2, 2, 2) and idx.dtype == np.int64
    gx = convkit.max_pool2d_backward(np.ones(y.shape), x, idx, 2)
    assert gx.shape == x.shape


# Geometries are memoised by their arguments' values and types: a valid call
# must not let an equal but invalid argument (True == 1, 1.0 == 1) through, and
# arguments that cannot be keys (arrays) still work.
@pytest.mark.parametrize("bad", [True, 1.0, (1, True), [1.0, 1]])
def test_memoised_geometry_still_rejects_equal_invalid_arguments(bad):
    x, w = R(1, 2, 6, 6, dtype=np.float32), R(3, 2, 3, 3, dtype=np.float32)
    convkit.conv2d(x, w, stride=1)
    convkit.conv2d(x, w, stride=(1, 1))
    with pytest.raises(TypeError, match="conv2d: stride"):
        convkit.conv2d(x, w, stride=bad)
    convkit.max_pool2d(x, 2, padding=1)
    with pytest.raises(TypeError, match="max_pool2d: padding"):
        convkit.max_pool2d(x, 2, padding=True if bad is True else 1.0)


def test_memoised_geometry_accepts_unhashable_and_numpy_arguments():
    x, w = R(1, 2, 6, 6, dtype=np.float32), R(3, 2, 3, 3, dtype=np.float32)
    expected = convkit.conv2d(x, w, stride=2, padding=1)
    for stride, padding in ((np.array([2, 2]), np.array([1, 1])), (np.int64(2), [1, 1]), ((2, 2), (np.int32(1), 1))):
        np.testing.assert_array_equal(convkit.conv2d(x, w, stride=stride, padding=padding), expected)
    # The same shapes with other arguments give their own geometry.
    assert convkit.conv2d(x, w, stride=1, padding=1).shape == (1, 3, 6, 6)
