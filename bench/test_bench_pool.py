"""Pooling layers of the suite, forward and backward (max: from the indices),
for convkit, torch and the NumPy reference."""

import pytest

from convkit.bench import IMPLS, LAYERS, PASSES

POOL_LAYERS = [layer for layer in LAYERS if layer.kind == "pool"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("layer", POOL_LAYERS, ids=lambda layer: layer.name)
def test_pool(bench_item, layer, pass_, impl):
    bench_item(layer, pass_, impl)
