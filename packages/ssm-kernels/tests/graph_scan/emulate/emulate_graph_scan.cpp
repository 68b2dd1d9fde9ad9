// Host emulation of the graph scan's CUDA forward recurrence (csrc/graph_scan_fwd.cuh), for testing its logic on
// a CPU: every CUDA thread of a block runs as an OS thread, __syncthreads() is a block-wide barrier, and shared
// memory is one static buffer poisoned with NaN before each block (a read of anything not written shows up).
// Blocks run one after another. Indexing, shared-memory layout, buffering and arithmetic are the kernel's.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <limits>
#include <thread>
#include <vector>

#include "../../emulate_prelude.h"

namespace gsk {
constexpr size_t kEmuSmemFloats = 232448 / 4;
alignas(16) float emu_smem[kEmuSmemFloats];
static std::barrier<>* emu_block_barrier = nullptr;
inline void __syncthreads() { emu_block_barrier->arrive_and_wait(); }
// a warp barrier as a block barrier: the kernels call it uniformly and only order a row group's exchange through
// shared memory (a group never straddles a warp)
inline void __syncwarp(unsigned) { emu_block_barrier->arrive_and_wait(); }
inline int min(int a, int b) { return a < b ? a : b; }
}  // namespace gsk

#define GSK_EMULATE 1
#include "graph_scan_adj.cuh"
#include "graph_scan_fwd.cuh"

namespace {

// Blocks (batch row, channel block) one after another, each block's threads as OS threads running kernel(p).
template <class P, class F>
int run_grid(const P& p, int nthreads, size_t floats, F kernel) {
  if (floats > gsk::kEmuSmemFloats) return 2;
  if (nthreads > gsk::kMaxThreads) return 3;  // (the adjoint checks its own limit below)
  std::barrier<> bar(nthreads);
  gsk::emu_block_barrier = &bar;
  emu_block_dim.x = nthreads;
  const int dblocks = (p.D + p.bd - 1) / p.bd;
  for (int by = 0; by < dblocks; ++by) {
    for (int bx = 0; bx < p.batch; ++bx) {
      emu_block_idx.x = bx;
      emu_block_idx.y = by;
      for (size_t i = 0; i < floats; ++i) gsk::emu_smem[i] = std::numeric_limits<float>::quiet_NaN();
      std::vector<std::thread> threads;
      for (int t = 0; t < nthreads; ++t) {
        threads.emplace_back([t, &p, &kernel] {
          emu_thread_idx.x = t;
          kernel(p);
        });
      }
      for (auto& th : threads) th.join();
    }
  }
  return 0;
}

template <int NP, class T, class TM>
int run(const gsk::FwdParams& p) {
  return run_grid(p, gsk::block_threads(NP, p.V, p.bd),
                  gsk::fwd_smem_floats(NP, p.V, p.K, p.eye, p.bd, p.readout, p.K_C, p.eye_c),
                  gsk::graph_scan_fwd_kernel<NP, T, TM>);
}

template <int NP, class T, class TM>
int run(const gsk::AdjParams& p) {
  if (gsk::block_threads(NP, p.V, p.bd) > gsk::kMaxThreadsAdj) return 3;
  return run_grid(p, gsk::block_threads(NP, p.V, p.bd), gsk::adj_smem_floats(NP, p.V, p.K_A, p.K_C, p.eye_a, p.eye_c, p.bd),
                  gsk::graph_scan_adj_kernel<NP, T, TM>);
}

template <int NP, class P>
int run_dtype(const P& p, int dtype, int mix_f32) {
  switch (dtype) {
    case 0: return run<NP, float, float>(p);
    case 1: return mix_f32 ? run<NP, __half, float>(p) : run<NP, __half, __half>(p);
    case 2: return mix_f32 ? run<NP, __nv_bfloat16, float>(p) : run<NP, __nv_bfloat16, __nv_bfloat16>(p);
    default: return 4;
  }
}

template <class P>
int run_np(const P& p, int dtype, int mix_f32) {
  const int NP = gsk::pad_states(p.N);
  switch (NP) {
    case 8: return run_dtype<8>(p, dtype, mix_f32);
    case 16: return run_dtype<16>(p, dtype, mix_f32);
    default: return run_dtype<32>(p, dtype, mix_f32);
  }
}

}  // namespace

// dtype of u / delta / B (/ C, z, d_out): 0 float32, 1 float16, 2 bfloat16; mix_f32: the operators are float32
// (else typed like u). Return 0, or an error code.
extern "C" int emu_graph_scan_fwd(const gsk::FwdParams* p, int dtype, int mix_f32) {
  return run_np(*p, dtype, mix_f32);
}
extern "C" int emu_graph_scan_adj(const gsk::AdjParams* p, int dtype, int mix_f32) {
  return run_np(*p, dtype, mix_f32);
}

extern "C" int emu_graph_scan_smem_floats(int N, int V, int K, int eye, int bd, int readout, int K_C, int eye_c) {
  return gsk::fwd_smem_floats(gsk::pad_states(N), V, K, eye, bd, readout, K_C, eye_c);
}

extern "C" int emu_graph_scan_adj_smem_floats(int N, int V, int K_A, int K_C, int eye_a, int eye_c, int bd) {
  return gsk::adj_smem_floats(gsk::pad_states(N), V, K_A, K_C, eye_a, eye_c, bd);
}
