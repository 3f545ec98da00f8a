"""The float32 direct-convolution paths (AVX2 / AVX-512; the generic path runs
the same cases through the GEMM): register tiles that wrap from one output
row onto the next (per-pixel tiles), partial last tiles, several passes over
blocks of input channels, several bands of output rows, 1-vector (<= 8 output
channels per group) and 2-vector tiles, strides, dilations, groups and bias;
pointwise tiles (pixels in lanes) with pixel tails and partial channel blocks;
pixel-lane tiles of few-tap layers (a row's last vector overlapping the one
before it, chunks of vectors, partial channel blocks, stride phases, bands).
Each case is checked against the float64 reference, on a NaN-poisoned heap
(an element left unwritten shows up as NaN), and bitwise across 1, 2 and 3
threads."""

from __future__ import annotations

import numpy as np
import pytest

import convkit
import convkit.reference as ref
from helpers import assert_bitwise_equal, assert_close

# n, c, h, w, k, kernel, conv2d keywords
DIRECT_CASES = {
    # 7-wide rows: 6-pixel tiles wrap onto the next row; 512 input channels
    # need several input-channel passes.
    "narrow_rows_many_channels": (2, 160, 7, 7, 24, (3, 3), dict(padding=1)),
    # 14-wide rows, pixels per band not a multiple of 6, bias from the init path.
    "rows14_partial_tile": (3, 40, 14, 14, 32, (3, 3), dict(padding=1)),
    # stride 2 wraps rows with the strided pixel offsets.
    "stride2_wrap": (2, 48, 15, 13, 20, (3, 3), dict(stride=2, padding=1)),
    # dilation and asymmetric padding inside the zero-padded rows.
    "dilated_asym": (2, 36, 12, 11, 18, (3, 3), dict(dilation=2, padding=((2, 1), (1, 2)))),
    # groups with 16 output channels each.
    "groups": (2, 64, 9, 10, 32, (3, 3), dict(groups=2, padding=1)),
    # <= 8 output channels per group: one-vector row tiles.
    "one_vector": (2, 40, 10, 17, 8, (3, 3), dict(padding=1)),
    # 1x7 and 5x5 kernels, a single-row output, a tall image (several bands).
    "row_kernel": (2, 24, 6, 17, 40, (1, 7), dict(padding=(0, 3))),
    "five_by_five": (1, 32, 14, 14, 64, (5, 5), dict(padding=2)),
    "single_output_row": (2, 16, 3, 30, 16, (3, 3), dict()),
    "tall_many_bands": (1, 32, 130, 9, 16, (3, 3), dict(padding=1)),
    # One image of few rows and many weights: tasks split the output-channel
    # blocks of a band rather than the band (72 channels: a last block of 8).
    "batch1_channel_block_tasks": (1, 96, 6, 6, 72, (3, 3), dict(padding=1)),
    # Few taps on rows narrower than one vector (7 wide): the channel-lane
    # direct path from 9 taps, 20 output channels (a last block of 4); a
    # 3-channel strided stem with 4-wide output rows.
    "one_channel_7x7_plane": (3, 1, 7, 7, 20, (3, 3), dict(padding=1)),
    "three_channel_stem_s2_narrow": (2, 3, 9, 11, 16, (3, 3), dict(stride=2, padding=1)),
    # Pixel-lane path (few taps, rows of at least one vector). 13-wide rows:
    # two vectors, the second overlapping 3 pixels of the first; 20 output
    # channels in blocks of 4 (AVX2).
    "one_channel_3x3": (3, 1, 11, 13, 20, (3, 3), dict(padding=1)),
    "three_channel_stem_s2": (2, 3, 17, 19, 16, (3, 3), dict(stride=2, padding=1)),
    # LeNet's 1 -> 6 5x5: 8-wide rows, one vector.
    "lenet_1_to_6": (2, 1, 12, 12, 6, (5, 5), dict()),
    # Keras-MNIST's 1 -> 32 valid 3x3: 26-wide rows (the 4th vector at 18),
    # channel blocks of 3 with a last block of 2.
    "pixel_lane_rows26": (3, 1, 28, 28, 32, (3, 3), dict()),
    # 70-wide rows: 9 vectors in 3 chunks; dilation and padding per axis.
    "pixel_lane_chunks": (2, 2, 9, 70, 13, (3, 5), dict(padding=(1, 2), dilation=(2, 1))),
    # 9-wide rows: the last vector overlaps 7 pixels of the first.
    "pixel_lane_rows9": (2, 1, 9, 11, 5, (2, 3), dict(padding=(1, 0))),
    # Stride 3: three column phases per padded row; 25 output channels.
    "pixel_lane_stride3": (2, 3, 20, 40, 25, (3, 3), dict(stride=3, padding=1)),
    # Stride 2, 7x7 (49 taps) on 64-wide rows.
    "pixel_lane_stride2_7x7": (1, 1, 30, 128, 16, (7, 7), dict(stride=2, padding=3)),
    "pixel_lane_groups": (2, 4, 12, 24, 10, (3, 3), dict(groups=2, padding=1)),
    # 256-wide rows of 3 channels: several bands of output rows per image.
    "pixel_lane_bands": (1, 3, 100, 256, 8, (3, 3), dict(padding=1)),
    # 144 taps at stride 1 on rows of whole vectors.
    "pixel_lane_144_taps": (2, 16, 10, 16, 20, (3, 3), dict(padding=1)),
    # 'same' with an even kernel: more padding after than before.
    "pixel_lane_same_even": (2, 1, 12, 20, 6, (4, 4), dict(padding="same")),
    # 53 output channels: the last 2-vector block holds 5 (partial transposes
    # for the forward's store and the backward weight's gather).
    "odd_channels_53": (2, 8, 9, 10, 53, (3, 3), dict(padding=1)),
    # 300 output channels (over 256) on a 12x12 plane (144 pixels): the
    # direct path with 16-lane vectors (10 blocks of 32, the last of 12), the
    # GEMM with 8; on a 10x10 plane (100 pixels) the GEMM with either.
    "wide_output_channels_300": (2, 24, 12, 12, 300, (3, 3), dict(padding=1)),
    "wide_output_channels_300_small_plane": (2, 24, 10, 10, 300, (3, 3), dict(padding=1)),
    # Pointwise (1x1, stride 1, <= 64 channels per group): pixels in lanes.
    # 63 pixels: full tiles and a zero-padded tail; 13 output channels: a
    # last block of 1 (AVX2: 6 per block).
    "pointwise_tail": (2, 16, 7, 9, 13, (1, 1), dict()),
    # Fewer pixels than one tile: the tail alone.
    "pointwise_small_plane": (3, 3, 3, 4, 10, (1, 1), dict()),
    "pointwise_groups": (2, 32, 6, 8, 20, (1, 1), dict(groups=2)),
    # 400 pixels, 64 channels: several runs of tiles per image.
    "pointwise_many_runs": (2, 64, 20, 20, 24, (1, 1), dict()),
    # 144 input channels with few (20) output channels, with bias.
    "pointwise_wide_input": (2, 144, 5, 7, 20, (1, 1), dict()),
}


def _inputs(rng, case):
    n, c, h, w, k, kernel, kw = case
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c // kw.get("groups", 1)) + kernel).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    return x, wt, b, kw


def _poison_heap(nbytes):
    blocks = [np.full(max(1, nbytes // 4), np.nan, dtype=np.float32) for _ in range(4)]
    del blocks


@pytest.mark.parametrize("name", list(DIRECT_CASES))
def test_direct_forward_matches_reference(rng, isa, name):
    x, w, b, kw = _inputs(rng, DIRECT_CASES[name])
    expected = ref.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), **kw)
    _poison_heap(expected.size * 4)
    got = convkit.conv2d(x, w, b, **kw)
    assert np.isfinite(got).all(), f"{name}: unwritten (NaN) output elements"
    # float32 sums of up to 1440 terms: relative to the sum of |terms|.
    scale = ref.conv2d(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64), np.abs(b).astype(np.float64), **kw)
    assert np.all(np.abs(got - expected) <= 4e-6 * scale + 1e-6), name
    assert_close(got, expected, 1e-4, dtype=np.float32)


@pytest.mark.parametrize(
    "name", ["pointwise_tail", "pointwise_small_plane", "one_channel_3x3", "one_channel_7x7_plane",
             "pixel_lane_rows26", "pixel_lane_stride3"])
def test_direct_forward_without_bias(rng, isa, name):
    x, w, _, kw = _inputs(rng, DIRECT_CASES[name])
    expected = ref.conv2d(x.astype(np.float64), w.astype(np.float64), None, **kw)
    _poison_heap(expected.size * 4)
    got = convkit.conv2d(x, w, **kw)
    assert np.isfinite(got).all(), f"{name}: unwritten (NaN) output elements"
    assert_close(got, expected, 1e-4, dtype=np.float32)


def test_pointwise_without_input_channels_gives_bias(isa):
    # No input channels: every output is its bias (a 1x1 layer once divided by zero here).
    x = np.ones((2, 0, 5, 7), dtype=np.float32)
    w = np.ones((3, 0, 1, 1), dtype=np.float32)
    b = np.array([1.5, -2.0, 0.25], dtype=np.float32)
    got = convkit.conv2d(x, w, b)
    assert got.shape == (2, 3, 5, 7)
    np.testing.assert_array_equal(got, np.broadcast_to(b[None, :, None, None], got.shape))


@pytest.mark.parametrize("name", list(DIRECT_CASES))
def test_direct_backward_weight_matches_reference(rng, isa, name):
    x, w, b, kw = _inputs(rng, DIRECT_CASES[name])
    gy = rng.standard_normal(convkit.conv2d(x, w, **kw).shape).astype(np.float32)
    up = lambda a: a.astype(np.float64)  # noqa: E731
    exp_x, exp_w, exp_b = ref.conv2d_backward(up(gy), up(x), up(w), **kw)
    got_x, got_w, got_b = convkit.conv2d_backward(gy, x, w, **kw)
    for got, exp in ((got_x, exp_x), (got_w, exp_w), (got_b, exp_b)):
        assert np.isfinite(got).all()
        assert_close(got, exp, 1e-4, dtype=np.float32)


@pytest.mark.parametrize(
    "name",
    [
        "narrow_rows_many_channels",
        "stride2_wrap",
        "one_vector",
        "tall_many_bands",
        "batch1_channel_block_tasks",
        "one_channel_3x3",
        "one_channel_7x7_plane",
        "pixel_lane_rows26",
        "pixel_lane_chunks",
        "pixel_lane_bands",
        "pointwise_tail",
        "pointwise_many_runs",
        "wide_output_channels_300",
    ],
)
def test_direct_bitwise_across_thread_counts(rng, isa, restore_threads, name):
    x, w, b, kw = _inputs(rng, DIRECT_CASES[name])
    gy = rng.standard_normal(convkit.conv2d(x, w, **kw).shape).astype(np.float32)
    results = []
    for threads in (1, 2, 3):
        convkit.set_num_threads(threads)
        results.append((convkit.conv2d(x, w, b, **kw),) + tuple(convkit.conv2d_backward(gy, x, w, **kw)))
    for other in results[1:]:
        for a, c in zip(results[0], other):
            assert_bitwise_equal(a, c, err_msg=name)


# Depthwise layers (one channel per group) of other kernel sizes than 3x3 run
# the banded vector forward (and the stride-1 backward data through it).
DEPTHWISE_CASES = {
    "5x5_same": (2, 6, 28, 28, (5, 5), dict(padding=2)),
    "5x5_stride2": (2, 5, 29, 31, (5, 5), dict(stride=2, padding=2)),
    "7x7_wide": (1, 3, 9, 150, (7, 7), dict(padding=3)),
    "1x7": (2, 4, 17, 17, (1, 7), dict(padding=(0, 3))),
    "7x1_stride_h3": (2, 4, 20, 13, (7, 1), dict(stride=(3, 1), padding=(3, 0))),
    "2x4_no_pad": (1, 7, 10, 70, (2, 4), dict()),
    "5x3_asym_pad": (2, 3, 11, 12, (5, 3), dict(padding=((2, 0), (1, 3)))),
    # Small planes, 8+ channels: blocks of 16 planes in vector lanes (20
    # channels: a last block of 4), any stride, dilation and kernel.
    "cl_7x7_3x3": (2, 20, 7, 7, (3, 3), dict(padding=1)),
    "cl_14x14_5x5_stride2": (2, 17, 14, 14, (5, 5), dict(stride=2, padding=2)),
    "cl_dilated_asym": (1, 9, 9, 12, (3, 2), dict(dilation=(2, 3), padding=((2, 1), (0, 3)))),
    "cl_7x7_kernel_28": (1, 33, 28, 28, (7, 7), dict(padding=3)),
    "cl_1x1": (2, 8, 5, 6, (1, 1), dict()),
    "cl_stride3_odd": (2, 16, 16, 15, (7, 7), dict(stride=3, padding=3)),
    # Narrow planes of more than 1024 pixels at stride 1: the flat path
    # (compact padded rows, every row's last S - 1 columns computed and dropped).
    "flat_narrow_tall": (1, 10, 60, 30, (3, 3), dict(padding=1)),
    "flat_5x5_rows9": (2, 3, 130, 9, (5, 5), dict(padding=2)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(DEPTHWISE_CASES))
def test_depthwise_banded_matches_reference(rng, isa, name, dtype):
    n, c, h, w_, kernel, kw = DEPTHWISE_CASES[name]
    x = rng.standard_normal((n, c, h, w_)).astype(dtype)
    w = rng.standard_normal((c, 1) + kernel).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    up = lambda a: a.astype(np.float64)  # noqa: E731
    expected = ref.conv2d(up(x), up(w), up(b), groups=c, **kw)
    _poison_heap(expected.size * 8)
    got = convkit.conv2d(x, w, b, groups=c, **kw)
    assert np.isfinite(got).all(), f"{name}: unwritten (NaN) output elements"
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    assert_close(got, expected, rtol, dtype=dtype)
    gy = rng.standard_normal(got.shape).astype(dtype)
    for g, e in zip(convkit.conv2d_backward(gy, x, w, groups=c, **kw),
                    ref.conv2d_backward(up(gy), up(x), up(w), groups=c, **kw)):
        assert np.isfinite(g).all()
        assert_close(g, e, rtol, dtype=dtype)


def test_depthwise_small_planes_nan_stays_in_its_plane(rng, isa):
    # A NaN / inf in one plane of a 16-plane block (lanes of one vector) and
    # a last block of 4 planes after it: every other plane matches the reference.
    x = rng.standard_normal((2, 20, 7, 7)).astype(np.float32)
    x[0, 3, 2, 2] = np.nan
    x[0, 18, 0, 0] = np.inf
    w = rng.standard_normal((20, 1, 3, 3)).astype(np.float32)
    got = convkit.conv2d(x, w, padding=1, groups=20)
    expected = ref.conv2d(x.astype(np.float64), w.astype(np.float64), padding=1, groups=20)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = np.isfinite(expected)
    assert_close(got[finite], expected[finite], 1e-4, dtype=np.float32)
    assert np.isfinite(got[1]).all() and np.isfinite(np.delete(got[0], [3, 18], axis=0)).all()


@pytest.mark.parametrize("name", ["5x5_stride2", "7x7_wide", "cl_7x7_3x3", "cl_14x14_5x5_stride2", "flat_narrow_tall"])
def test_depthwise_banded_bitwise_across_thread_counts(rng, isa, restore_threads, name):
    n, c, h, w_, kernel, kw = DEPTHWISE_CASES[name]
    x = rng.standard_normal((n, c, h, w_)).astype(np.float32)
    w = rng.standard_normal((c, 1) + kernel).astype(np.float32)
    results = []
    for threads in (1, 2, 3):
        convkit.set_num_threads(threads)
        results.append(convkit.conv2d(x, w, groups=c, **kw))
    for other in results[1:]:
        assert_bitwise_equal(results[0], other, err_msg=name)


# Strided backward data (GEMM + col2im, W^T packed once per call): channel
# chunks whose rows start off a panel boundary pack their own blocks.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [(1, 17, 13, 11, 10, (3, 3), dict(stride=2, padding=1)),
                                  (1, 7, 9, 12, 21, (3, 2), dict(stride=(2, 3), padding=(1, 0))),
                                  (2, 33, 10, 10, 40, (5, 5), dict(stride=2, padding=2, dilation=(1, 2)))],
                         ids=["c17_s2", "c7_s2x3", "c33_5x5_s2"])
def test_strided_backward_data_matches_reference(rng, isa, restore_threads, case, dtype):
    n, c, h, w_, k, kernel, kw = case
    x = rng.standard_normal((n, c, h, w_)).astype(dtype)
    w = rng.standard_normal((k, c) + kernel).astype(dtype)
    gy = rng.standard_normal(convkit.conv2d(x, w, **kw).shape).astype(dtype)
    expected = ref.conv2d_backward(gy.astype(np.float64), x.astype(np.float64), w.astype(np.float64), **kw)[0]
    results = []
    for threads in (1, 2, 3):
        convkit.set_num_threads(threads)
        results.append(convkit.conv2d_backward(gy, x, w, output_mask=(True, False, False), **kw)[0])
    assert_close(results[0], expected, 1e-4 if dtype == np.float32 else 1e-10, dtype=dtype)
    for other in results[1:]:
        assert_bitwise_equal(results[0], other)
