// Host emulation of the selective-scan CUDA kernels, for testing their logic on a CPU.
//
// The kernel sources (csrc/selective_scan_kernels.cuh, _short.cuh, _long.cuh) are compiled by the host compiler with
// SSK_EMULATE defined: every CUDA thread of a block runs as an OS thread, __syncthreads() is a
// block-wide barrier, warp shuffles exchange through a per-warp buffer between two warp barriers,
// and shared memory is one static buffer poisoned with NaN before each block. Blocks run one after
// another. Control flow, indexing, shared-memory layout and reductions are exactly the kernel's;
// only exp2 is the libm one instead of ex2.approx. -DSSK_EMU_SHORT_ONLY builds only the short-sequence
// kernels (a much faster compile, for the default test run).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

#include "../../emulate_prelude.h"

#include "selective_scan.h"

namespace ssk {
constexpr size_t kEmuSmemFloats = 232448 / 4;
alignas(16) float smem[kEmuSmemFloats];  // as aligned as CUDA shared memory (16-byte vector accesses)

static std::barrier<>* emu_block_barrier = nullptr;
struct EmuWarp {
  uint32_t buf[32];
  std::barrier<>* bar;
};
constexpr int emu_max(int a, int b) { return a > b ? a : b; }
constexpr int kEmuMaxThreads = emu_max(emu_max(emu_max(kRows, kShortThreads), 32 * kLongWarps), kStateThreads);
static EmuWarp emu_warps[kEmuMaxThreads / 32];

inline void __syncthreads() { emu_block_barrier->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu_warps[threadIdx.x / 32].bar->arrive_and_wait(); }
inline int min(int a, int b) { return a < b ? a : b; }

template <class V>
inline V emu_shfl(V v, int src) {
  static_assert(sizeof(V) == 4, "4-byte shuffles only");
  const int lane = threadIdx.x & 31;
  EmuWarp& w = emu_warps[threadIdx.x / 32];
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  w.buf[lane] = bits;
  w.bar->arrive_and_wait();
  const uint32_t r = w.buf[src];
  w.bar->arrive_and_wait();
  V out;
  std::memcpy(&out, &r, 4);
  return out;
}
template <class V>
inline V __shfl_xor_sync(unsigned, V v, int m, int = 32) {  // m < width: the partner is in the lane's segment
  return emu_shfl(v, (threadIdx.x & 31) ^ m);
}
template <class V>
inline V __shfl_sync(unsigned, V v, int src, int width = 32) {
  const int l = threadIdx.x & 31;
  return emu_shfl(v, (l & ~(width - 1)) | (src & (width - 1)));
}
template <class V>
inline V __shfl_down_sync(unsigned, V v, unsigned d) {
  const int l = threadIdx.x & 31;
  return emu_shfl(v, l + (int)d < 32 ? l + (int)d : l);
}
template <class V>
inline V __shfl_up_sync(unsigned, V v, unsigned d) {
  const int l = threadIdx.x & 31;
  return emu_shfl(v, l - (int)d >= 0 ? l - (int)d : l);
}
}  // namespace ssk

#define SSK_EMULATE 1
#include "selective_scan_kernels.cuh"
#include "selective_scan_short.cuh"
#ifndef SSK_EMU_SHORT_ONLY
#include "selective_scan_long.cuh"
#endif

namespace {

// Run `kernel` on blocks of nthreads threads, each covering rows_per_block rows.
template <class F>
int run_grid(const ssk::ScanParams& p, size_t smem_bytes, F kernel, int nthreads = ssk::kRows,
             int rows_per_block = ssk::kRows, int grid_y = 1) {
  if (smem_bytes > sizeof(ssk::smem)) return 2;
  if (nthreads > ssk::kEmuMaxThreads || nthreads % 32 != 0) return 3;
  std::barrier<> block_bar(nthreads);
  for (int w = 0; w < nthreads / 32; ++w) {
    ssk::emu_warps[w].bar = new std::barrier<>(32);
  }
  ssk::emu_block_barrier = &block_bar;
  emu_block_dim.x = nthreads;
  const int blocks = (p.nrows + rows_per_block - 1) / rows_per_block;
  for (int blk = 0; blk < blocks * grid_y; ++blk) {  // blockIdx.x fastest, as the GPU hands them out
    emu_block_idx.x = blk % blocks;
    emu_block_idx.y = blk / blocks;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (size_t i = 0; i < smem_bytes / 4; ++i) ssk::smem[i] = nan;
    std::vector<std::thread> threads;
    for (int t = 0; t < nthreads; ++t) {
      threads.emplace_back([t, &kernel] {
        emu_thread_idx.x = t;
        kernel();
      });
    }
    for (auto& th : threads) th.join();
  }
  for (int w = 0; w < nthreads / 32; ++w) delete ssk::emu_warps[w].bar;
  return 0;
}

// Calls f.template operator()<NP, T, TBC>() for the padded state size, input dtype and B / C dtype of p
// (the instantiations the kernels' .cu files make); 1 for an unsupported combination.
template <class T, class TBC, class F>
int with_state_size(const ssk::ScanParams& p, F& f) {
  switch (ssk::padded_state(p.N)) {
    case 4: return f.template operator()<4, T, TBC>();
    case 8: return f.template operator()<8, T, TBC>();
    case 16: return f.template operator()<16, T, TBC>();
    case 32: return f.template operator()<32, T, TBC>();
    case 64: return f.template operator()<64, T, TBC>();
    default: return 1;
  }
}

template <class F>
int with_types(const ssk::ScanParams& p, int dtype, F&& f) {
  const bool bc32 = p.bc_dtype == ssk::kFloat32;
  switch (dtype) {
    case ssk::kFloat32: return with_state_size<float, float>(p, f);
    case ssk::kFloat16: return bc32 ? with_state_size<__half, float>(p, f) : with_state_size<__half, __half>(p, f);
    case ssk::kBFloat16:
      return bc32 ? with_state_size<__nv_bfloat16, float>(p, f) : with_state_size<__nv_bfloat16, __nv_bfloat16>(p, f);
    default: return 1;
  }
}

int run_short(const ssk::ScanParams* pp, int dtype, bool bwd) {
  const ssk::ScanParams& p = *pp;
  if (p.L < 1 || p.L > ssk::kShortMaxL || p.cu != nullptr) return 4;
  return with_types(p, dtype, [&]<int NP, class T, class TBC>() {
    if (p.short_rows) {  // one thread per row (as launch_short_t)
      if constexpr (NP <= ssk::kRowsMaxNP) {
        if (!ssk::short_rows_ok(p.dim, p.b_groups, p.c_groups, NP)) return 6;
        constexpr int nt = 32 * ssk::kRowsWarps;
        if (bwd) {
          return run_grid(p, sizeof(float) * ssk::kRowsWarps * ssk::rows_bwd_smem_floats(NP, p.L),
                          [&p] { ssk::scan_bwd_rows_kernel<NP, T, TBC>(p); }, nt, nt);
        }
        return run_grid(p, sizeof(float) * ssk::kRowsWarps * ssk::rows_fwd_smem_floats(NP, p.L),
                        [&p] { ssk::scan_fwd_rows_kernel<NP, T, TBC>(p); }, nt, nt);
      } else {
        return 6;
      }
    }
    constexpr int rpb = ssk::kShortThreads / (NP / 4);
    // the staged instantiation exists for NP <= kShortStageMaxNP (as launch_short_np)
    const bool stage = NP <= ssk::kShortStageMaxNP && (p.short_stage_b || p.short_stage_c);
    auto go = [&]<bool STAGE>() {
      if (bwd) {
        return run_grid(p, ssk::short_bwd_smem_bytes(NP, p.L),
                        [&p] { ssk::scan_bwd_short_kernel<NP, ssk::kShortMaxL, T, TBC, STAGE>(p); },
                        ssk::kShortThreads, rpb);
      }
      const size_t smem = STAGE ? ssk::short_stage_smem_bytes(NP, p.L) : 0;
      return run_grid(p, smem, [&p] { ssk::scan_fwd_short_kernel<NP, ssk::kShortMaxL, T, TBC, STAGE>(p); },
                      ssk::kShortThreads, rpb);
    };
    return stage ? go.template operator()<true>() : go.template operator()<false>();
  });
}

#ifndef SSK_EMU_SHORT_ONLY

int run(const ssk::ScanParams* pp, int dtype, bool bwd) {
  const ssk::ScanParams& p = *pp;
  return with_types(p, dtype, [&]<int NP, class T, class TBC>() {
    if (bwd) {  // as launch_bwd_np: the segments' maps first, then one grid row per segment
      const int nseg = p.nseg > 1 ? p.nseg : 1;
      if (nseg > 1) {
        const int r = run_grid(p, 0, [&p] { ssk::scan_bwd_seg_kernel<NP, T, TBC>(p); }, ssk::kRows,
                               ssk::kRows / ssk::seg_threads_per_row(NP), nseg - 1);
        if (r != 0) return r;
      }
      return run_grid(p, ssk::bwd_smem_bytes(NP, p.K), [&p] { ssk::scan_bwd_kernel<NP, T, TBC>(p); }, ssk::kRows,
                      ssk::kRows, nseg);
    }
    const int nseg = p.nseg > 1 ? p.nseg : 1;  // as launch_fwd_np
    if (nseg > 1) {
      const int r = run_grid(p, 0, [&p] { ssk::scan_fwd_seg_kernel<NP, T, TBC>(p); }, ssk::kRows,
                             ssk::kRows / ssk::seg_threads_per_row(NP), nseg - 1);
      if (r != 0) return r;
    }
    return run_grid(p, ssk::fwd_smem_bytes(NP, p.tile), [&p] { ssk::scan_fwd_kernel<NP, T, TBC>(p); }, ssk::kRows,
                    ssk::kRows, nseg);
  });
}

int run_long(const ssk::ScanParams* pp, int dtype, bool bwd) {
  const ssk::ScanParams& p = *pp;
  if (p.cu != nullptr) return 4;
  if (bwd && p.long_fwd == ssk::kLongFwdState) {  // as launch_long_np: the state-lane backward, padded N 16
    if (ssk::padded_state(p.N) != 16 || p.K > ssk::kMaxChunk) return 5;
    return with_types(p, dtype, [&]<int NP, class T, class TBC>() {
      const int nseg = p.nseg > 1 ? p.nseg : 1;  // as launch_long_np: the segments' maps first
      if (nseg > 1) {
        const int r = run_grid(p, 0, [&p] { ssk::scan_bwd_seg_kernel<NP, T, TBC>(p); }, ssk::kRows,
                               ssk::kRows / ssk::seg_threads_per_row(NP), nseg - 1);
        if (r != 0) return r;
      }
      if constexpr (NP == 16) {
        if (p.tile_minb != 0) {  // the staged backward (where it fits)
          return run_grid(p, ssk::tile_bwd_smem_bytes(), [&p] { ssk::scan_bwd_tile_kernel<T, TBC>(p); },
                          ssk::kStateThreads, ssk::kTileRows, nseg);
        }
      }
      auto go = [&p, nseg]<int KI>() {
        return run_grid(p, ssk::state_bwd_smem_bytes(KI), [&p] { ssk::scan_bwd_state_kernel<T, TBC, KI>(p); },
                        ssk::kStateThreads, ssk::kStateRowsBwd, nseg);
      };
      return ssk::state_bwd_steps(p.K) == 8 ? go.template operator()<8>() : go.template operator()<ssk::kMaxChunk>();
    });
  }
  if (bwd && (p.K != ssk::kLongBwdChunk || p.long_rw < 1)) return 5;
  return with_types(p, dtype, [&]<int NP, class T, class TBC>() {
    if (bwd) {
      return run_grid(p, ssk::long_bwd_smem_bytes(NP, p.long_rw),
                      [&p] { ssk::scan_bwd_long_kernel<NP, ssk::kLongItemsBwd, T, TBC>(p); }, 32 * ssk::kLongWarps,
                      ssk::kLongWarps * p.long_rw);
    }
    if (p.long_fwd == ssk::kLongFwdState) {  // as launch_long_np
      if constexpr (NP == 16) {
        if (p.tile_minb != 0) {  // the staged kernel (its register cap selects when the lanes write their partials)
          auto tile = [&p]<int MINB>() {
            return run_grid(p, ssk::tile_smem_bytes(), [&p] { ssk::scan_fwd_tile_kernel<T, TBC, MINB>(p); },
                            ssk::kStateThreads, ssk::kTileRows);
          };
          return p.tile_minb == 5 ? tile.template operator()<5>() : tile.template operator()<4>();
        }
      }
      auto go = [&p]<int NS>() {
        constexpr int rpb = ssk::kStateThreads / ssk::state_lanes(NP, NS);
        return run_grid(p, 0, [&p] { ssk::scan_fwd_state_kernel<NP, NS, T, TBC>(p); }, ssk::kStateThreads, rpb);
      };
      if constexpr (NP == 16) {
        if (p.long_ns == 2) return go.template operator()<2>();
      }
      return go.template operator()<ssk::kStateLaneStates>();
    }
    return run_grid(p, 0, [&p] { ssk::scan_fwd_long_kernel<NP, ssk::kLongItems, T, TBC>(p); }, 32 * ssk::kLongWarps,
                    ssk::kLongWarps);
  });
}

#endif  // SSK_EMU_SHORT_ONLY

}  // namespace

extern "C" int emu_scan_fwd_short(const ssk::ScanParams* p, int dtype) { return run_short(p, dtype, false); }
extern "C" int emu_scan_bwd_short(const ssk::ScanParams* p, int dtype) { return run_short(p, dtype, true); }
extern "C" int emu_short_part_mode(int gs, int N) { return ssk::short_part_mode(gs, ssk::padded_state(N)); }
extern "C" int emu_short_npart(int gs, int N) { return ssk::short_npart(gs, ssk::padded_state(N)); }
extern "C" int emu_short_stage_ok(int gs, int N) { return ssk::short_stage_ok(gs, ssk::padded_state(N)) ? 1 : 0; }
extern "C" int emu_short_rows_ok(int dim, int b_groups, int c_groups, int N) {
  return ssk::short_rows_ok(dim, b_groups, c_groups, ssk::padded_state(N)) ? 1 : 0;
}
extern "C" int emu_sizeof_params() { return (int)sizeof(ssk::ScanParams); }
#ifndef SSK_EMU_SHORT_ONLY
extern "C" int emu_scan_fwd(const ssk::ScanParams* p, int dtype) { return run(p, dtype, false); }
extern "C" int emu_scan_bwd(const ssk::ScanParams* p, int dtype) { return run(p, dtype, true); }
extern "C" int emu_scan_fwd_long(const ssk::ScanParams* p, int dtype) { return run_long(p, dtype, false); }
extern "C" int emu_scan_bwd_long(const ssk::ScanParams* p, int dtype) { return run_long(p, dtype, true); }
extern "C" int emu_state_fwd_auto(long long nrows, int N, int bc16, int sms, int training, int tile) {
  return ssk::state_fwd_auto(nrows, ssk::padded_state(N), bc16 != 0, sms, training != 0, tile != 0) ? 1 : 0;
}
extern "C" int emu_tile_fwd_fits(int N, int dim, int b_groups, int c_groups, int packed, int ckpt, int K) {
  return ssk::tile_fwd_fits(ssk::padded_state(N), dim, b_groups, c_groups, packed != 0, ckpt != 0, K) ? 1 : 0;
}
extern "C" int emu_tile_min_blocks(long long nrows, int sms) { return ssk::tile_min_blocks(nrows, sms); }
extern "C" int emu_tile_bwd_fits(int N, int dim, int b_groups, int c_groups, int packed, int K) {
  return ssk::tile_bwd_fits(ssk::padded_state(N), dim, b_groups, c_groups, packed != 0, K) ? 1 : 0;
}
extern "C" int emu_state_bwd_auto(int K) { return ssk::state_bwd_auto(K) ? 1 : 0; }
extern "C" int emu_state_bwd_fits(int N, int dim, int b_groups, int c_groups) {
  return ssk::state_bwd_fits(ssk::padded_state(N), dim, b_groups, c_groups) ? 1 : 0;
}
extern "C" int emu_bwd_segments(long long rowblocks, int nchunks, long long slots) {
  return ssk::bwd_segments(rowblocks, nchunks, slots);
}
extern "C" int emu_seg_chunks_for(int nchunks, int s) { return ssk::seg_chunks_for(nchunks, s); }
extern "C" int emu_plan_segments(int nchunks, int forced, long long rowblocks, long long slots, int model,
                                 int* chunks) {
  const ssk::Segments sg = ssk::plan_segments(nchunks, forced, rowblocks, slots, model);
  *chunks = sg.chunks;
  return sg.count;
}
extern "C" int emu_choose_chunk(int N, int L) {
  // mirrors choose_chunk in csrc/selective_scan.cpp with a fixed shared-memory budget
  const int np = ssk::padded_state(N);
  const size_t budget = 100 * 1024;
  if (L <= ssk::kMaxChunk) {
    int K = L < 1 ? 1 : L;
    while (K > 1 && ssk::bwd_smem_bytes(np, K) > budget) --K;
    return K;
  }
  for (int K : {16, 8}) {
    if (K <= ssk::kMaxChunk && ssk::bwd_smem_bytes(np, K) <= budget) return K;
  }
  int K = 7;
  while (K > 1 && ssk::bwd_smem_bytes(np, K) > budget) --K;
  return K;
}
#endif  // SSK_EMU_SHORT_ONLY
