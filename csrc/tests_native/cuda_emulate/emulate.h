// CPU emulation of the CUDA execution model, enough to run convkit's .cu
// kernels (float32/float64) as plain C++: blocks run one after another, the
// threads of a block run as std::threads meeting at a barrier for
// __syncthreads(), __shared__ variables are function statics (one copy, used
// by one block at a time).
#pragma once
#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

struct emu_dim3 {
    unsigned x = 1, y = 1, z = 1;
};

inline thread_local emu_dim3 emu_threadIdx, emu_blockIdx;
inline emu_dim3 emu_blockDim, emu_gridDim;

class EmuBarrier {
  public:
    void reset(int n) {
        n_ = n;
        count_ = 0;
        gen_ = 0;
    }
    void wait() {
        std::unique_lock<std::mutex> lk(m_);
        const unsigned g = gen_;
        if (++count_ == n_) {
            count_ = 0;
            ++gen_;
            cv_.notify_all();
        } else {
            cv_.wait(lk, [&] { return gen_ != g; });
        }
    }

  private:
    std::mutex m_;
    std::condition_variable cv_;
    int n_ = 1, count_ = 0;
    unsigned gen_ = 0;
};
inline EmuBarrier emu_barrier;
inline std::mutex emu_atomic_mutex;

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __launch_bounds__(n)
#define __shared__ static
#define threadIdx emu_threadIdx
#define blockIdx emu_blockIdx
#define blockDim emu_blockDim
#define gridDim emu_gridDim
#define __syncthreads() emu_barrier.wait()

inline float __int_as_float(int v) {
    float f;
    std::memcpy(&f, &v, 4);
    return f;
}
inline double __longlong_as_double(long long v) {
    double d;
    std::memcpy(&d, &v, 8);
    return d;
}
inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) {
    std::lock_guard<std::mutex> lk(emu_atomic_mutex);
    const unsigned long long old = *p;
    if (v < old) *p = v;
    return old;
}
using std::pow;
using std::sqrt;

// Runs kernel(args...) over grid x block (block.y = block.z = 1).
template <typename... P, typename... A>
void emu_launch(void (*kernel)(P...), emu_dim3 grid, unsigned threads, A... args) {
    emu_gridDim = grid;
    emu_blockDim = emu_dim3{threads, 1, 1};
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                emu_barrier.reset(static_cast<int>(threads));
                std::vector<std::thread> pool;
                pool.reserve(threads);
                for (unsigned t = 0; t < threads; ++t)
                    pool.emplace_back([=] {
                        emu_threadIdx = emu_dim3{t, 0, 0};
                        emu_blockIdx = emu_dim3{bx, by, bz};
                        kernel(static_cast<P>(args)...);
                    });
                for (auto& th : pool) th.join();
            }
}
