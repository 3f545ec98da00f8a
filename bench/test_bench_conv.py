"""Convolution layers of the suite, forward and backward (grad_x + grad_w
(+ grad_bias) together), for convkit, torch and the NumPy reference."""

import pytest

from convkit.bench import IMPLS, LAYERS, PASSES

CONV_LAYERS = [layer for layer in LAYERS if layer.kind == "conv"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("layer", CONV_LAYERS, ids=lambda layer: layer.name)
def test_conv(bench_item, layer, pass_, impl):
    bench_item(layer, pass_, impl)
