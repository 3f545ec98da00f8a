// Direct-convolution tile kernel, shared by conv_direct_<isa>.cpp (each file
// includes this header with its own -m flags; internal linkage keeps the
// copies apart).
//
// One call computes PW output pixels of one output row times KV vectors of
// output channels, all in registers, over every tap t of the reduction:
//   out[p*KV*L + j] = start + sum_t in[off[t] + p*sw] * w[t*KV*L + j]
// summed in increasing t with one FMA per term (the GEMM path's chain), for
// p < PW and j < KV*L (L = vector lanes), where start is out's own value when
// accumulating (the chain goes on where an earlier call stopped), else init[j]
// or 0. `in` points at the tile's first
// pixel inside zero-padded input rows, so no read needs a bounds check; w holds
// KV*L channels per tap (zero for channels past the layer's, never stored).
#pragma once
#include <cstdint>

namespace convkit {
namespace dconv {
namespace {

template <class V, int PW, int KV, bool SW1>
void tile(int64_t taps, const int64_t* off, const float* in, int64_t sw, const float* w,
          const float* init, float* out, bool accumulate) {
    constexpr int L = V::lanes;
    typename V::reg acc[PW][KV];
#pragma GCC unroll 32
    for (int p = 0; p < PW; ++p)
#pragma GCC unroll 4
        for (int v = 0; v < KV; ++v)
            acc[p][v] = accumulate ? V::load(out + p * KV * L + v * L)
                        : init     ? V::load(init + v * L)
                                   : V::zero();
    for (int64_t t = 0; t < taps; ++t) {
        const float* x = in + off[t];
        typename V::reg wv[KV];
#pragma GCC unroll 4
        for (int v = 0; v < KV; ++v) wv[v] = V::load(w + (t * KV + v) * L);
#pragma GCC unroll 32
        for (int p = 0; p < PW; ++p) {
            const typename V::reg xb = V::set1(x[SW1 ? p : p * sw]);
#pragma GCC unroll 4
            for (int v = 0; v < KV; ++v) acc[p][v] = V::fmadd(xb, wv[v], acc[p][v]);
        }
    }
#pragma GCC unroll 32
    for (int p = 0; p < PW; ++p)
#pragma GCC unroll 4
        for (int v = 0; v < KV; ++v) V::store(out + p * KV * L + v * L, acc[p][v]);
}

using TileFn = void (*)(int64_t, const int64_t*, const float*, int64_t, const float*, const float*,
                        float*, bool);

// Table entry for PW pixels (1 <= PW <= MaxPW), KV vectors, stride-1 or not.
template <class V, int KV, bool SW1, int... PWs>
TileFn pick(int pw, std::integer_sequence<int, PWs...>) {
    TileFn fns[] = {&tile<V, PWs + 1, KV, SW1>...};
    return fns[pw - 1];
}

template <class V>
TileFn tile_for(int pw, int kv, bool sw1) {
    if (kv == 1) {
        return sw1 ? pick<V, 1, true>(pw, std::make_integer_sequence<int, V::max_pw1>())
                   : pick<V, 1, false>(pw, std::make_integer_sequence<int, V::max_pw1>());
    }
    return sw1 ? pick<V, 2, true>(pw, std::make_integer_sequence<int, V::max_pw2>())
               : pick<V, 2, false>(pw, std::make_integer_sequence<int, V::max_pw2>());
}

}  // namespace
}  // namespace dconv
}  // namespace convkit
