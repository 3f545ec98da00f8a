// Run-time selection of the GEMM micro-kernel and its blocking parameters.
// kc is chosen so that one packed B micro-panel (kc x nr) takes about half of
// a 32 KiB L1D (AVX-512 float: all of it; kc = 256 measured 4-13% faster than
// 128 on large 3x3 and 1x1 layers, fewer C tile loads/stores per FMA); the A
// block (mc x kc) and B block (kc x nc) stay in L2.
#include "gemm.h"

namespace convkit {

template <>
GemmKernel<float> gemm_kernel_for<float>(Isa isa) {
    GemmKernel<float> k;
#ifdef CONVKIT_HAVE_AVX512
    if (isa == Isa::avx512) {
        k.mr = gemm_avx512_f32_mr; k.nr = gemm_avx512_f32_nr;
        k.kc = 256; k.mc = 128; k.nc = 512;
        k.ukr = gemm_ukr_avx512_f32; k.ukr_rows = gemm_ukr_rows_avx512_f32; k.ukr_cols = gemm_ukr_cols_avx512_f32; k.transpose = panel_transpose_avx512_f32; k.split_row = split_row_avx512_f32; k.isa = Isa::avx512;
        return k;
    }
#endif
#ifdef CONVKIT_HAVE_AVX2
    if (isa == Isa::avx2 || isa == Isa::avx512) {
        k.mr = gemm_avx2_f32_mr; k.nr = gemm_avx2_f32_nr;
        k.kc = 256; k.mc = 120; k.nc = 512;
        k.ukr = gemm_ukr_avx2_f32; k.ukr_rows = gemm_ukr_rows_avx2_f32; k.ukr_cols = gemm_ukr_cols_avx2_f32; k.transpose = panel_transpose_avx2_f32; k.split_row = split_row_avx2_f32; k.isa = Isa::avx2;
        return k;
    }
#endif
    (void)isa;
    k.mr = gemm_generic_f32_mr; k.nr = gemm_generic_f32_nr;
    k.kc = 256; k.mc = 128; k.nc = 512;
    k.ukr = gemm_ukr_generic_f32; k.transpose = panel_transpose_generic_f32; k.split_row = split_row_generic_f32; k.isa = Isa::generic;
    return k;
}

template <>
GemmKernel<double> gemm_kernel_for<double>(Isa isa) {
    GemmKernel<double> k;
#ifdef CONVKIT_HAVE_AVX512
    if (isa == Isa::avx512) {
        k.mr = gemm_avx512_f64_mr; k.nr = gemm_avx512_f64_nr;
        k.kc = 128; k.mc = 128; k.nc = 384;
        k.ukr = gemm_ukr_avx512_f64; k.transpose = panel_transpose_avx512_f64; k.split_row = split_row_avx512_f64; k.isa = Isa::avx512;
        return k;
    }
#endif
#ifdef CONVKIT_HAVE_AVX2
    if (isa == Isa::avx2 || isa == Isa::avx512) {
        k.mr = gemm_avx2_f64_mr; k.nr = gemm_avx2_f64_nr;
        k.kc = 256; k.mc = 120; k.nc = 384;
        k.ukr = gemm_ukr_avx2_f64; k.transpose = panel_transpose_avx2_f64; k.split_row = split_row_avx2_f64; k.isa = Isa::avx2;
        return k;
    }
#endif
    (void)isa;
    k.mr = gemm_generic_f64_mr; k.nr = gemm_generic_f64_nr;
    k.kc = 256; k.mc = 128; k.nc = 384;
    k.ukr = gemm_ukr_generic_f64; k.transpose = panel_transpose_generic_f64; k.split_row = split_row_generic_f64; k.isa = Isa::generic;
    return k;
}

template <>
DirectRowFn<float> direct_row_kernel_for<float>(Isa isa) {
#ifdef CONVKIT_HAVE_AVX512
    if (isa == Isa::avx512) return direct_row_avx512_f32;
#endif
#ifdef CONVKIT_HAVE_AVX2
    if (isa == Isa::avx2 || isa == Isa::avx512) return direct_row_avx2_f32;
#endif
    (void)isa;
    return direct_row_generic_f32;
}

template <>
DirectRowFn<double> direct_row_kernel_for<double>(Isa isa) {
#ifdef CONVKIT_HAVE_AVX512
    if (isa == Isa::avx512) return direct_row_avx512_f64;
#endif
#ifdef CONVKIT_HAVE_AVX2
    if (isa == Isa::avx2 || isa == Isa::avx512) return direct_row_avx2_f64;
#endif
    (void)isa;
    return direct_row_generic_f64;
}

template <>
DirectDotFn<float> direct_dot_kernel_for<float>(Isa isa) {
#ifdef CONVKIT_HAVE_AVX512
    if (isa == Isa::avx512) return direct_dot_avx512_f32;
#endif
#ifdef CONVKIT_HAVE_AVX2
    if (isa == Isa::avx2 || isa == Isa::avx512) return direct_dot_avx2_f32;
#endif
    (void)isa;
    return direct_dot_generic_f32;
}

template <>
DirectDotFn<double> direct_dot_kernel_for<double>(Isa isa) {
#ifdef CONVKIT_HAVE_AVX512
    if (isa == Isa::avx512) return direct_dot_avx512_f64;
#endif
#ifdef CONVKIT_HAVE_AVX2
    if (isa == Isa::avx2 || isa == Isa::avx512) return direct_dot_avx2_f64;
#endif
    (void)isa;
    return direct_dot_generic_f64;
}

const DirectConvKernel* direct_conv_kernel_for(Isa isa) {
#ifdef CONVKIT_HAVE_AVX512
    if (isa == Isa::avx512) return &direct_conv_avx512;
#endif
#ifdef CONVKIT_HAVE_AVX2
    if (isa == Isa::avx2 || isa == Isa::avx512) return &direct_conv_avx2;
#endif
    (void)isa;
    return nullptr;
}

}  // namespace convkit
