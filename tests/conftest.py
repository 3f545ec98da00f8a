"""Shared fixtures for the convkit test suite.

* ``rng``: a NumPy Generator seeded from the test's node id, so every test
  sees the same data on every run, independent of test order.
* ``requires_torch`` / the ``torch`` marker: tests that compare against
  PyTorch are skipped when it is not installed.
* ``isa``: runs a CPU test once per instruction-set path the machine (and the
  build) supports, when convkit exposes ``info()`` and ``set_isa()``;
  otherwise a single ``isa=default`` run.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import zlib

import numpy as np
import pytest

# Make tests/helpers.py importable whatever pytest's import mode is.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

HAVE_TORCH = importlib.util.find_spec("torch") is not None

requires_torch = pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed")


def pytest_configure(config):
    # Registered in pyproject.toml too; repeated here so the suite also runs
    # with a different rootdir/ini file without "unknown marker" warnings.
    config.addinivalue_line("markers", "torch: needs PyTorch (skipped without it)")
    config.addinivalue_line("markers", "slow: long-running")


def pytest_collection_modifyitems(config, items):
    # Anything carrying the torch marker is skipped cleanly without torch.
    if HAVE_TORCH:
        return
    skip = pytest.mark.skip(reason="PyTorch is not installed")
    for item in items:
        if "torch" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng(request):
    """A Generator seeded per test (stable across runs and orderings)."""
    seed = zlib.crc32(request.node.nodeid.encode("utf-8"))
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- #
# ISA paths
# --------------------------------------------------------------------------- #

def _isa_api():
    """(info, set_isa) if convkit exposes both, else None. Never raises."""
    try:
        import convkit
    except Exception:  # pragma: no cover - import failures surface in the tests
        return None
    info = getattr(convkit, "info", None)
    set_isa = getattr(convkit, "set_isa", None)
    if not callable(info) or not callable(set_isa):
        return None
    return info, set_isa


def _supported_isas():
    api = _isa_api()
    if api is None:
        return [None]
    info, _ = api
    try:
        d = info()
        isas = list(d.get("supported_isas") or [])
    except Exception:
        return [None]
    wanted = os.environ.get("CONVKIT_TEST_ISAS", "").strip()  # e.g. "avx512" (.ci/avx512_emulated)
    if wanted:
        names = [w.strip() for w in wanted.split(",") if w.strip()]
        missing = [w for w in names if w not in [str(i) for i in isas]]
        if missing:
            raise pytest.UsageError(f"CONVKIT_TEST_ISAS={wanted!r}: {missing} not supported here "
                                    f"(supported: {isas})")
        isas = [i for i in isas if str(i) in names]
    return [str(i) for i in isas] or [None]


def _current_isa(info):
    try:
        return info().get("isa")
    except Exception:
        return None


@pytest.fixture(params=_supported_isas(), ids=lambda v: f"isa={v}" if v else "isa=default")
def isa(request):
    """Select one ISA path for the duration of a test and restore it after."""
    name = request.param
    if name is None:
        yield None
        return
    info, set_isa = _isa_api()
    original = _current_isa(info)
    set_isa(name)
    try:
        got = _current_isa(info)
        if got is not None:
            assert str(got) == name, f"set_isa({name!r}) left info()['isa'] == {got!r}"
        yield name
    finally:
        if original is not None:
            set_isa(original)


@pytest.fixture
def restore_threads():
    """Put convkit's thread count back after a test that changes it."""
    import convkit

    original = convkit.get_num_threads()
    yield original
    convkit.set_num_threads(original)
