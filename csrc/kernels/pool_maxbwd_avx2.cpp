// Max-pool backward at column stride 1 (AVX2): the gather of
// max_bwd_gather_w1_avx2_f32 (float32) and the 8-at-a-time window check of
// max_bwd_window_check_avx2 that lets larger windows scatter unchecked (see
// pool_isa.h).
//
// The scatter gx[idx] += gy runs one dependent load-add-store per output, and
// with overlapping windows neighbours usually share their maximum, so those
// chains serialise (3x3/1 windows: 0.7x torch). Here each input instead sums,
// over the outputs whose windows hold it, gy where that output's index points
// at it: vector compares of 8 inputs per tap, no stores but the result.
//
// Same bits as the scatter: it adds each input's contributions in ascending
// output order starting from +0, and a running sum that starts at +0 is never
// -0, so the +0 added for a non-matching output changes nothing.
//
// Validation: an output whose index lies on a tap of its window matches
// exactly one input, any other index none; the caller compares the count of
// matches with the number of outputs and redoes a plane that falls short
// through the checked scatter (which then names the bad index).
#include <immintrin.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "pool_impl.h"
#include "pool_isa.h"

namespace convkit {
namespace poolk {
namespace {

// Scratch per thread: converted output rows of a sub-band, at most this many
// int32 + float elements each (256 KiB together).
constexpr int64_t kScratchElems = int64_t(1) << 15;
// Window rows at most (the caller gathers windows of at most 25 taps).
constexpr int64_t kMaxRows = 32;

// Index slots that match no input: bad indices and the columns around a row.
constexpr int32_t kNoMatch = INT32_MIN;

// One input row: out[iw] for iw in [0, in_w) from `nrows` output rows (rows
// ir[r] of idx - ow, gradient rows gr[r], in ascending output-row order;
// column ow of a row at ow + lead, with kNoMatch / 0 around it). Input column
// iw meets output column ow = iw + pad_w - t*dw, t = kw-1 .. 0 (ascending
// outputs), whose index points at it when idx - ow = row_pos - pad_w + t*dw
// (row_pos: the plane position of the row's first input): one constant per
// tap for all lanes. NV vectors of 8 inputs per step keep NV independent add
// chains in flight; cnt counts the matches per lane.
template <int NV>
inline void gather_row(const int32_t* const* ir, const float* const* gr, int64_t nrows, int64_t kw, int64_t dw,
                       int64_t lead, int64_t pad_w, int64_t in_w, int32_t row_pos, float* out, bool spill,
                       __m256i& cnt) {
    const int64_t base = lead + pad_w;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    // One step of NV vectors from column iw0; IN_ROW: no lane past the row.
    auto step = [&](int64_t iw0, auto in_row_tag) {
        constexpr bool IN_ROW = decltype(in_row_tag)::value;
        __m256 acc[NV];
        __m256i got[IN_ROW ? 1 : NV];  // matches (in the row's lanes only)
        for (int j = 0; j < NV; ++j) acc[j] = _mm256_setzero_ps();
        for (auto& v : got) v = _mm256_setzero_si256();
        for (int64_t r = 0; r < nrows; ++r) {
            const int32_t* irow = ir[r] + base + iw0;
            const float* grow = gr[r] + base + iw0;
            for (int64_t t = kw - 1; t >= 0; --t) {  // a loop: unrolled, the taps' vectors spill
                const int64_t off = -t * dw;
                const __m256i want = _mm256_set1_epi32(row_pos - int32_t(pad_w) + int32_t(t * dw));
                for (int j = 0; j < NV; ++j) {
                    const __m256i m = _mm256_cmpeq_epi32(
                        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(irow + off + 8 * j)), want);
                    acc[j] = _mm256_add_ps(acc[j], _mm256_and_ps(_mm256_castsi256_ps(m),
                                                                 _mm256_loadu_ps(grow + off + 8 * j)));
                    got[IN_ROW ? 0 : j] = _mm256_sub_epi32(got[IN_ROW ? 0 : j], m);
                }
            }
        }
        if (IN_ROW) {
            cnt = _mm256_add_epi32(cnt, got[0]);
            for (int j = 0; j < NV; ++j) _mm256_storeu_ps(out + iw0 + 8 * j, acc[j]);
            return;
        }
        // Lanes past the row compared real outputs against positions of the
        // next row: not counted. spill: their values may land on rows the
        // caller writes later (masked stores are slow on some cores).
        for (int j = 0; j < NV; ++j) {
            const int64_t c = iw0 + 8 * j;
            if (c >= in_w) break;
            const __m256i live =
                _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(std::min<int64_t>(in_w - c, 8))), lane);
            cnt = _mm256_add_epi32(cnt, _mm256_and_si256(got[IN_ROW ? 0 : j], live));
            if (spill)
                _mm256_storeu_ps(out + c, acc[j]);
            else
                _mm256_maskstore_ps(out + c, live, acc[j]);
        }
    };
    int64_t iw0 = 0;
    for (; iw0 + 8 * NV <= in_w; iw0 += 8 * NV) step(iw0, std::true_type{});
    if (iw0 < in_w) step(iw0, std::false_type{});
}

// ri[ow] = idx[ow] - ow where 0 <= idx < plane_in, else kNoMatch; rg = gy.
inline void convert_row(const int64_t* idx, const float* gy, int64_t n, int64_t plane_in, int32_t* ri, float* rg) {
    const __m256i lim = _mm256_set1_epi64x(plane_in), minus1 = _mm256_set1_epi64x(-1);
    const __m256i none = _mm256_set1_epi64x(kNoMatch), four = _mm256_set1_epi64x(4);
    const __m256i evens = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    __m256i col = _mm256_setr_epi64x(0, 1, 2, 3);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx + i));
        const __m256i ok = _mm256_and_si256(_mm256_cmpgt_epi64(lim, v), _mm256_cmpgt_epi64(v, minus1));
        const __m256i rel = _mm256_blendv_epi8(none, _mm256_sub_epi64(v, col), ok);
        const __m256i low = _mm256_permutevar8x32_epi32(rel, evens);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(ri + i), _mm256_castsi256_si128(low));
        _mm_storeu_ps(rg + i, _mm_loadu_ps(gy + i));
        col = _mm256_add_epi64(col, four);
    }
    for (; i < n; ++i) {
        ri[i] = static_cast<uint64_t>(idx[i]) < static_cast<uint64_t>(plane_in) ? int32_t(idx[i] - i) : kNoMatch;
        rg[i] = gy[i];
    }
}

template <int NV>
int64_t gather_rows(const PoolGeometry& g, const float* gy, const int64_t* idx, float* gx, int64_t ih0,
                    int64_t ih1) {
    const int64_t in_w = g.in_w, out_w = g.out_w, plane_in = g.in_h * in_w;
    const int64_t sh = g.stride_h, ph = g.pad_h, dh = g.dilation_h, kh = g.kernel_h;
    // Scratch rows: `lead` slots, the out_w columns, then slots up to row_len;
    // the slots hold kNoMatch / 0. Rows follow each other, so one row's trailing
    // slots are the next one's leading ones.
    const int64_t lead = (g.kernel_w - 1) * g.dilation_w;
    const int64_t cols = (in_w + 8 * NV - 1) / (8 * NV) * (8 * NV);
    const int64_t row_len = std::max(lead + cols + g.pad_w, lead + out_w) + 8;
    // Output rows whose windows hold input rows [a, b).
    auto first_out_row = [&](int64_t a) {
        const int64_t num = a + ph - (kh - 1) * dh;
        return num <= 0 ? int64_t(0) : std::min(g.out_h, (num + sh - 1) / sh);
    };
    auto end_out_row = [&](int64_t b) { return std::min(g.out_h, (b - 1 + ph) / sh + 1); };
    // Input rows per sub-band: its output rows fit the scratch.
    const int64_t max_out_rows = std::max<int64_t>(kh * dh + 1, kScratchElems / row_len);
    const int64_t band = std::max<int64_t>(1, (max_out_rows - (kh - 1) * dh - 1) * sh);
    const int64_t scratch_rows = std::min(max_out_rows, std::max<int64_t>(0, end_out_row(ih1) - first_out_row(ih0)));
    thread_local std::vector<int32_t> si_tls;  // reused across calls (one per plane band)
    thread_local std::vector<float> sg_tls;
    std::vector<int32_t>& si_vec = si_tls;
    std::vector<float>& sg_vec = sg_tls;
    const size_t need = static_cast<size_t>(scratch_rows * row_len + lead + 8);
    if (si_vec.size() < need) {
        si_vec.resize(need);
        sg_vec.resize(need);
    }
    int32_t* const si = si_vec.data();
    float* const sg = sg_vec.data();
    for (int64_t k = 0; k < lead; ++k) {
        si[k] = kNoMatch;
        sg[k] = 0.0f;
    }
    const int32_t* ir[kMaxRows];
    const float* gr[kMaxRows];
    __m256i cnt = _mm256_setzero_si256();
    for (int64_t a = ih0; a < ih1; a += band) {
        const int64_t b = std::min(ih1, a + band);
        const int64_t oa = first_out_row(a), ob = std::max(oa, end_out_row(b));
        for (int64_t oh = oa; oh < ob; ++oh) {
            int32_t* ri = si + (oh - oa) * row_len + lead;
            float* rg = sg + (oh - oa) * row_len + lead;
            const int64_t* src = idx + oh * out_w;
            const float* gsrc = gy + oh * out_w;
            convert_row(src, gsrc, out_w, plane_in, ri, rg);
            // Slots to the next row's data (8 spare elements at the end).
            for (int64_t k = out_w; k < row_len; k += 8) {
                _mm256_storeu_si256(reinterpret_cast<__m256i*>(ri + k), _mm256_set1_epi32(kNoMatch));
                _mm256_storeu_ps(rg + k, _mm256_setzero_ps());
            }
        }
        for (int64_t ih = a; ih < b; ++ih) {
            int64_t n = 0;
            for (int64_t t = kh - 1; t >= 0; --t) {  // ascending output rows
                const int64_t num = ih + ph - t * dh;
                if (num < 0 || (sh > 1 && num % sh != 0)) continue;
                const int64_t oh = sh > 1 ? num / sh : num;
                if (oh >= g.out_h) continue;
                ir[n] = si + (oh - oa) * row_len;
                gr[n] = sg + (oh - oa) * row_len;
                ++n;
            }
            gather_row<NV>(ir, gr, n, g.kernel_w, g.dilation_w, lead, g.pad_w, in_w,
                               static_cast<int32_t>(ih * in_w), gx + ih * in_w, ih * in_w + cols <= ih1 * in_w, cnt);
        }
    }
    alignas(32) int32_t lanes[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), cnt);
    int64_t matches = 0;
    for (int k = 0; k < 8; ++k) matches += lanes[k];
    return matches;
}

}  // namespace

int64_t max_bwd_gather_w1_avx2_f32(const PoolGeometry& g, const float* gy, const int64_t* idx, float* gx, int64_t ih0,
                                   int64_t ih1) {
    if (g.in_w > 16) return gather_rows<4>(g, gy, idx, gx, ih0, ih1);
    if (g.in_w > 8) return gather_rows<2>(g, gy, idx, gx, ih0, ih1);
    return gather_rows<1>(g, gy, idx, gx, ih0, ih1);
}

bool max_bwd_window_check_avx2(const int64_t* idx, int64_t n, bool overread, const int32_t* wlo,
                               const int32_t* wn_minus1, int32_t row_base, int32_t in_w, int64_t nr, int32_t* out) {
    // d = idx - (row_base + wlo[ow]) lies in window row r when d - r*in_w is
    // in [0, wn) (unsigned compare: min(e, wn - 1) == e). An index >= 2^31
    // shows in its high half; one below 0 or >= 2^31 as int32 gives a
    // negative d, which no row accepts.
    const __m256i base = _mm256_set1_epi32(row_base), step = _mm256_set1_epi32(in_w);
    __m256i high = _mm256_setzero_si256(), all = _mm256_set1_epi32(-1);
    // Checks 8 outputs from o; past: lanes read beyond n (accepted; their
    // high halves cleared by the caller's mask).
    auto check8 = [&](int64_t o, __m256i a, __m256i b, __m256i past) {
        high = _mm256_or_si256(high, _mm256_or_si256(a, b));
        // low halves in order: a0 a1 b0 b1 | a2 a3 b2 b3, then 64-bit lanes 0 2 1 3
        const __m256i low = _mm256_permute4x64_epi64(
            _mm256_castps_si256(_mm256_shuffle_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b), 0x88)), 0xD8);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + o), low);
        __m256i e = _mm256_sub_epi32(_mm256_sub_epi32(low, base),
                                     _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wlo + o)));
        const __m256i lim = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wn_minus1 + o));
        __m256i ok = _mm256_or_si256(past, _mm256_cmpeq_epi32(_mm256_min_epu32(e, lim), e));
        for (int64_t r = 1; r < nr; ++r) {
            e = _mm256_sub_epi32(e, step);
            ok = _mm256_or_si256(ok, _mm256_cmpeq_epi32(_mm256_min_epu32(e, lim), e));
        }
        all = _mm256_and_si256(all, ok);
    };
    const __m256i none = _mm256_setzero_si256();
    int64_t o = 0;
    for (; o + 8 <= n; o += 8)
        check8(o, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx + o)),
               _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx + o + 4)), none);
    if (overread && o < n) {
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const __m256i past = _mm256_cmpgt_epi32(lane, _mm256_set1_epi32(static_cast<int32_t>(n - o - 1)));
        const __m256i lane64 = _mm256_setr_epi64x(0, 1, 2, 3);
        const __m256i keep_a = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n - o), lane64);
        const __m256i keep_b = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n - o - 4), lane64);
        check8(o, _mm256_and_si256(keep_a, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx + o))),
               _mm256_and_si256(keep_b, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx + o + 4))), past);
        o = n;
    }
    // high halves: the odd 32-bit lanes
    const bool in_range = _mm256_testz_si256(high, _mm256_set1_epi64x(int64_t(0xFFFFFFFF00000000ULL))) != 0;
    bool good = in_range && _mm256_movemask_epi8(all) == -1;
    for (; o < n; ++o) {
        const int64_t v = idx[o];
        const uint64_t d = static_cast<uint64_t>(v) - static_cast<uint64_t>(row_base) - static_cast<uint64_t>(wlo[o]);
        bool ok = false;
        for (int64_t r = 0; r < nr; ++r)
            ok |= d - static_cast<uint64_t>(r * in_w) <= static_cast<uint64_t>(wn_minus1[o]);
        good &= ok;
        out[o] = static_cast<int32_t>(v);
    }
    return good;
}

}  // namespace poolk
}  // namespace convkit
