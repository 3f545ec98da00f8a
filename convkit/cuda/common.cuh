// Shared definitions for convkit's CUDA kernels. The loader pastes this file
// in place of the #include line and defines SCALAR_KIND:
//   0: float16 (stored as raw IEEE half bits, converted with cvt PTX; float accumulation)
//   1: float32 (float accumulation)   2: float64 (double accumulation)
// Header-free on purpose (NVRTC under CuPy; no <cuda_fp16.h>). Under
// CONVKIT_EMULATE the same code compiles as plain C++ for the CPU harness in
// csrc/tests_native/cuda_emulate (float32/float64 only).
#ifndef SCALAR_KIND
#error "SCALAR_KIND must be defined (0 half, 1 float, 2 double)"
#endif

typedef long long i64;

#if SCALAR_KIND == 0
typedef unsigned short scalar_t;
typedef float acc_t;
__device__ __forceinline__ float to_acc(scalar_t v) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v));
    return f;
}
__device__ __forceinline__ scalar_t from_acc(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
#elif SCALAR_KIND == 1
typedef float scalar_t;
typedef float acc_t;
__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ float from_acc(float f) { return f; }
#elif SCALAR_KIND == 2
typedef double scalar_t;
typedef double acc_t;
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ double from_acc(double f) { return f; }
#else
#error "unknown SCALAR_KIND"
#endif

__device__ __forceinline__ i64 imin(i64 a, i64 b) { return a < b ? a : b; }
__device__ __forceinline__ i64 imax(i64 a, i64 b) { return a > b ? a : b; }
__device__ __forceinline__ bool is_nan(acc_t v) { return v != v; }
#if SCALAR_KIND == 2
__device__ __forceinline__ double neg_inf() { return __longlong_as_double(0xfff0000000000000ULL); }
#else
__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }
#endif
__device__ __forceinline__ float sqrt_acc(float v) { return sqrtf(v); }
__device__ __forceinline__ double sqrt_acc(double v) { return sqrt(v); }

// Index of the first thread of a grid-stride loop and its step.
__device__ __forceinline__ i64 grid_first() { return (i64)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ i64 grid_step() { return (i64)gridDim.x * blockDim.x; }
