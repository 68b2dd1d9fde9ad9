// Selective scan (Mamba-1) forward and backward kernels.
//
// Layout of the work: one thread per row (b, d), kRows rows per block; each thread keeps its NP
// fp32 states in registers and walks time sequentially. u / delta / z / out / dout are staged
// through shared memory tiles [row][time] (pitch odd -> no bank conflicts) so that global
// accesses are coalesced along L. B and C are read directly (all lanes of a warp usually read the
// same address: a broadcast served by L1).
//
// Backward: the forward stores the state every K steps (checkpoints). The backward walks chunks
// of K steps in reverse: it recomputes the chunk's states from the checkpoint into shared memory
// (layout [step][n][row], conflict-free), then runs the adjoint recurrence backwards. Per-row
// gradients (dA, dD, d delta_bias, constant dB/dC) are written per row and summed over the batch
// by the host; per-step dB/dC are reduced over the 32 rows of a warp with shuffles and written as
// per-warp partials that the host sums in a fixed order. No atomics: the backward is
// deterministic.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#ifdef SSK_EMULATE
#include <string.h>
#endif

#include "selective_scan.h"

namespace ssk {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <typename T>
__device__ __forceinline__ float to_f(T x);
template <>
__device__ __forceinline__ float to_f<float>(float x) { return x; }
template <>
__device__ __forceinline__ float to_f<__half>(__half x) { return __half2float(x); }
template <>
__device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_f(float x);
template <>
__device__ __forceinline__ float from_f<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ float exp2_approx(float x) {
#ifdef SSK_EMULATE  // host emulation of the kernels (tests/selective_scan/emulate)
  return exp2f(x);
#else
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#endif
}

__device__ __forceinline__ float softplus_f(float x) { return x <= 20.f ? log1pf(expf(x)) : x; }
__device__ __forceinline__ float sigmoid_f(float x) { return 1.f / (1.f + expf(-x)); }

// ------------------------------------------------------------------------------------------
// tile movement: 16-byte vector loads / stores, all issued before any use
// ------------------------------------------------------------------------------------------

__device__ __forceinline__ float bits_as_float(uint32_t b) {
#ifdef SSK_EMULATE
  float f;
  memcpy(&f, &b, 4);
  return f;
#else
  return __uint_as_float(b);
#endif
}
__device__ __forceinline__ uint32_t float_as_bits(float f) {
#ifdef SSK_EMULATE
  uint32_t b;
  memcpy(&b, &f, 4);
  return b;
#else
  return __float_as_uint(f);
#endif
}

// Element bits (in the low bits of a word) <-> float.
template <typename T>
__device__ __forceinline__ float bits_to_f(uint32_t b);
template <>
__device__ __forceinline__ float bits_to_f<float>(uint32_t b) { return bits_as_float(b); }
template <>
__device__ __forceinline__ float bits_to_f<__nv_bfloat16>(uint32_t b) { return bits_as_float(b << 16); }
template <>
__device__ __forceinline__ float bits_to_f<__half>(uint32_t b) {
  __half_raw r;
  r.x = (unsigned short)(b & 0xffffu);
  return __half2float(__half(r));
}
template <typename T>
__device__ __forceinline__ uint32_t f_to_bits(float x);
template <>
__device__ __forceinline__ uint32_t f_to_bits<float>(float x) { return float_as_bits(x); }
template <>
__device__ __forceinline__ uint32_t f_to_bits<__nv_bfloat16>(float x) {
  const __nv_bfloat16_raw r = __float2bfloat16_rn(x);
  return r.x;
}
template <>
__device__ __forceinline__ uint32_t f_to_bits<__half>(float x) {
  const __half_raw r = __float2half_rn(x);
  return r.x;
}

__device__ __forceinline__ uint32_t vec_word(const uint4& v, int w) {
  return w == 0 ? v.x : w == 1 ? v.y : w == 2 ? v.z : v.w;
}
__device__ __forceinline__ void vec_set_word(uint4& v, int w, uint32_t x) {
  if (w == 0) v.x = x;
  else if (w == 1) v.y = x;
  else if (w == 2) v.z = x;
  else v.w = x;
}

// Element e (compile-time after unrolling) of a 16-byte vector of T, as float.
template <typename T>
__device__ __forceinline__ float vec_elem(const uint4& v, int e) {
  constexpr int W = 4 / sizeof(T);  // elements per 32-bit word
  const uint32_t w = vec_word(v, e / W);
  return bits_to_f<T>(W == 1 ? w : (w >> (16 * (e % W))));
}
template <typename T>
__device__ __forceinline__ void vec_put(uint4& v, int e, float x) {
  constexpr int W = 4 / sizeof(T);
  if (W == 1) {
    vec_set_word(v, e, f_to_bits<T>(x));
  } else {
    const int sh = 16 * (e % W);
    const uint32_t old = vec_word(v, e / W) & ~(0xffffu << sh);
    vec_set_word(v, e / W, old | (f_to_bits<T>(x) << sh));
  }
}

__device__ __forceinline__ bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }

// Load steps [t, t + KI) of a contiguous row (steps >= L read as 0): 16-byte vectors when the run is
// whole and aligned, element loads otherwise.
template <typename T, int KI>
__device__ __forceinline__ void load_items(const T* __restrict__ row, int t, int L, float (&v)[KI]) {
  constexpr int V = 16 / sizeof(T);
  if constexpr (KI % V == 0) {
    if (t + KI <= L && aligned16(row + t)) {
#pragma unroll
      for (int q = 0; q < KI / V; ++q) {
        const uint4 w = *reinterpret_cast<const uint4*>(row + t + q * V);
#pragma unroll
        for (int e = 0; e < V; ++e) v[q * V + e] = vec_elem<T>(w, e);
      }
      return;
    }
  }
#pragma unroll
  for (int i = 0; i < KI; ++i) v[i] = t + i < L ? to_f<T>(row[t + i]) : 0.f;
}

// Store steps [t, t + KI) (clipped to L) of a contiguous row.
template <typename T, int KI>
__device__ __forceinline__ void store_items(T* __restrict__ row, int t, int L, const float (&v)[KI]) {
  constexpr int V = 16 / sizeof(T);
  if constexpr (KI % V == 0) {
    if (t + KI <= L && aligned16(row + t)) {
#pragma unroll
      for (int q = 0; q < KI / V; ++q) {
        uint4 w = make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
        for (int e = 0; e < V; ++e) vec_put<T>(w, e, v[q * V + e]);
        *reinterpret_cast<uint4*>(row + t + q * V) = w;
      }
      return;
    }
  }
#pragma unroll
  for (int i = 0; i < KI; ++i)
    if (t + i < L) row[t + i] = from_f<T>(v[i]);
}

enum TileMode : int { kModeScalar = 0, kModeRowVec = 1, kModeFlat = 2 };

// How to move steps [t0, t0 + nt) of the rows of a contiguous (rows, L) array: 16-byte vectors
// along each row (L, t0, nt multiples of the vector width), 16-byte vectors over the flat range of
// whole rows (nt == L; rows of one tile start at a multiple of the vector width), or element-wise.
template <typename T>
__device__ __forceinline__ int tile_mode(const T* base, int L, int t0, int nt) {
  constexpr int V = 16 / sizeof(T);
  if (!aligned16(base)) return kModeScalar;
  if (L % V == 0 && t0 % V == 0 && nt % V == 0) return kModeRowVec;
  if (nt == L) return kModeFlat;
  return kModeScalar;
}

// Loads tile rows [row0, row0 + ROWS) (rows >= nrows read as 0) x steps [t0, t0 + nt) (nt <= MAXT)
// of a contiguous (nrows, L) array: issue() starts the 16-byte loads into registers, commit() writes
// the values as float to dst[r * rs + j * cs] (the element-wise fallback loads there, in one batch).
// row0 must be a multiple of 8. Called by all kRows threads of the block.
template <typename T, int ROWS, int MAXT>
struct TileLoader {
  static constexpr int V = 16 / sizeof(T);
  static constexpr int NV = (ROWS * MAXT / V + kRows - 1) / kRows;  // vectors per thread
  static constexpr int NS = (ROWS * MAXT + kRows - 1) / kRows;      // elements per thread (fallback)
  uint4 buf[NV];
  int mode;

  __device__ __forceinline__ void issue(const T* __restrict__ src, int row0, int nrows, int L, int t0, int nt) {
    mode = tile_mode<T>(src, L, t0, nt);
    const int tid = threadIdx.x;
    if (mode == kModeRowVec) {
      const int vpr = nt / V;
      const int total = ROWS * vpr;
#pragma unroll
      for (int k = 0; k < NV; ++k) {
        const int i = tid + k * kRows;
        buf[k] = make_uint4(0u, 0u, 0u, 0u);
        if (i < total) {
          const int r = i / vpr;
          const int q = i - r * vpr;
          if (row0 + r < nrows) buf[k] = *reinterpret_cast<const uint4*>(src + (size_t)(row0 + r) * L + t0 + q * V);
        }
      }
    } else if (mode == kModeFlat) {
      const T* base = src + (size_t)row0 * L;
      const int rows = nrows - row0 < ROWS ? nrows - row0 : ROWS;
      const int nvalid = rows * L;
#pragma unroll
      for (int k = 0; k < NV; ++k) {
        const int f = (tid + k * kRows) * V;
        buf[k] = make_uint4(0u, 0u, 0u, 0u);
        if (f + V <= nvalid) {
          buf[k] = *reinterpret_cast<const uint4*>(base + f);
        } else if (f < nvalid) {
#pragma unroll
          for (int e = 0; e < V; ++e)
            if (f + e < nvalid) vec_put<T>(buf[k], e, to_f<T>(base[f + e]));
        }
      }
    }
  }

  __device__ __forceinline__ void commit(float* dst, int rs, int cs, const T* __restrict__ src, int row0, int nrows,
                                         int L, int t0, int nt) {
    const int tid = threadIdx.x;
    if (mode == kModeRowVec) {
      const int vpr = nt / V;
      const int total = ROWS * vpr;
#pragma unroll
      for (int k = 0; k < NV; ++k) {
        const int i = tid + k * kRows;
        if (i < total) {
          const int r = i / vpr;
          const int q = i - r * vpr;
          float* d = dst + r * rs + q * V * cs;
#pragma unroll
          for (int e = 0; e < V; ++e) d[e * cs] = vec_elem<T>(buf[k], e);
        }
      }
    } else if (mode == kModeFlat) {
      const int nall = ROWS * L;
#pragma unroll
      for (int k = 0; k < NV; ++k) {
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const int f = (tid + k * kRows) * V + e;
          if (f < nall) {
            const int r = f / L;
            const int j = f - r * L;
            dst[r * rs + j * cs] = vec_elem<T>(buf[k], e);
          }
        }
      }
    } else {
      const int total = ROWS * nt;
      float v[NS];
#pragma unroll
      for (int k = 0; k < NS; ++k) {
        const int i = tid + k * kRows;
        v[k] = 0.f;
        if (i < total) {
          const int r = i / nt;
          const int j = i - r * nt;
          if (row0 + r < nrows) v[k] = to_f<T>(src[(size_t)(row0 + r) * L + t0 + j]);
        }
      }
#pragma unroll
      for (int k = 0; k < NS; ++k) {
        const int i = tid + k * kRows;
        if (i < total) {
          const int r = i / nt;
          const int j = i - r * nt;
          dst[r * rs + j * cs] = v[k];
        }
      }
    }
  }
};

// Store tile[r * pitch + j] (rows [row0, row0 + kRows) clipped to nrows, steps [t0, t0 + nt), nt <= MAXT)
// into a contiguous (nrows, L) array of T, with 16-byte stores where possible.
template <typename T, int MAXT>
__device__ __forceinline__ void store_tile_v(T* __restrict__ dst, const float* tile, int pitch, int row0, int nrows,
                                             int L, int t0, int nt) {
  constexpr int V = 16 / sizeof(T);
  constexpr int NV = MAXT / V > 0 ? MAXT / V : 1;
  const int tid = threadIdx.x;
  const int mode = tile_mode<T>(dst, L, t0, nt);
  if (mode == kModeRowVec) {
    const int vpr = nt / V;
    const int total = kRows * vpr;
#pragma unroll
    for (int k = 0; k < NV; ++k) {
      const int i = tid + k * kRows;
      if (i < total) {
        const int r = i / vpr;
        const int q = i - r * vpr;
        if (row0 + r < nrows) {
          uint4 w = make_uint4(0u, 0u, 0u, 0u);
          const float* s = tile + r * pitch + q * V;
#pragma unroll
          for (int e = 0; e < V; ++e) vec_put<T>(w, e, s[e]);
          *reinterpret_cast<uint4*>(dst + (size_t)(row0 + r) * L + t0 + q * V) = w;
        }
      }
    }
  } else if (mode == kModeFlat) {
    T* base = dst + (size_t)row0 * L;
    const int rows = nrows - row0 < kRows ? nrows - row0 : kRows;
    const int nvalid = rows * L;
    constexpr int NVF = (kRows * MAXT / V + kRows - 1) / kRows;
#pragma unroll
    for (int k = 0; k < NVF; ++k) {
      const int f = (tid + k * kRows) * V;
      if (f < nvalid) {
        uint4 w = make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const int fe = f + e < nvalid ? f + e : nvalid - 1;
          const int r = fe / L;
          vec_put<T>(w, e, tile[r * pitch + fe - r * L]);
        }
        if (f + V <= nvalid) {
          *reinterpret_cast<uint4*>(base + f) = w;
        } else {
#pragma unroll
          for (int e = 0; e < V; ++e)
            if (f + e < nvalid) base[f + e] = from_f<T>(vec_elem<T>(w, e));
        }
      }
    }
  } else {
    const int total = kRows * nt;
#pragma unroll 8
    for (int k = 0; k < MAXT; ++k) {
      const int i = tid + k * kRows;
      if (i < total) {
        const int r = i / nt;
        const int j = i - r * nt;
        if (row0 + r < nrows) dst[(size_t)(row0 + r) * L + t0 + j] = from_f<T>(tile[r * pitch + j]);
      }
    }
  }
}

// Where a row (b, d) reads B or C. Variable (groups > 0): its (b, group) slice of (batch * groups, N, L), the
// (b, group) index bg and the row's dB / dC partial index part (rows_per_part rows of a group per partial).
// Time-invariant: its (N,) slice of (dim, N) float32.
template <typename TBC>
struct CoefSource {
  const TBC* var;
  const float* cst;
  int bg, part;
};

template <typename TBC>
__device__ __forceinline__ CoefSource<TBC> coef_source(const void* X, int groups, int dim, int N, int L, int row, int d,
                                                       int rows_per_part = 1) {
  CoefSource<TBC> s{nullptr, nullptr, 0, 0};
  if (groups > 0) {
    const int gs = dim / groups;
    s.bg = row / gs;
    s.part = row / rows_per_part - (s.bg * gs) / rows_per_part;
    s.var = static_cast<const TBC*>(X) + (size_t)s.bg * N * L;
  } else {
    s.cst = static_cast<const float*>(X) + (size_t)d * N;
  }
  return s;
}

// Coefficient n of B or C for this row at step t (variable: row pointer into (bg, N, L);
// constant: row pointer into (dim, N) float32).
template <typename TBC>
__device__ __forceinline__ float coef(const TBC* var_row, const float* const_row, int n, int L, int t) {
  return var_row != nullptr ? to_f<TBC>(var_row[(size_t)n * L + t]) : const_row[n];
}

// Coefficients of B or C for step t (tile index j) into registers: from the staged tile when the
// whole block shares one (b, group), else from global memory.
template <int NP, typename TBC>
__device__ __forceinline__ void get_coefs(float (&out)[NP], bool staged, const float* tile, int j, const TBC* var_row,
                                          const float* const_row, int N, int L, int t) {
  if (staged) {
    const float4* q = reinterpret_cast<const float4*>(tile + j * NP);
#pragma unroll
    for (int i = 0; i < NP / 4; ++i) {
      const float4 w = q[i];
      out[4 * i] = w.x;
      out[4 * i + 1] = w.y;
      out[4 * i + 2] = w.z;
      out[4 * i + 3] = w.w;
    }
  } else {
#pragma unroll
    for (int n = 0; n < NP; ++n) out[n] = n < N ? coef<TBC>(var_row, const_row, n, L, t) : 0.f;
  }
}

// Largest sequence s in [0, nseq) with cu[s] <= t (the sequence that contains step t).
__device__ __forceinline__ int seq_of(const int* cu, int nseq, int t) {
  int lo = 0, hi = nseq - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (cu[mid] <= t) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// ------------------------------------------------------------------------------------------
// forward
// ------------------------------------------------------------------------------------------

// Segment kernels (scan_fwd_seg_kernel, scan_bwd_seg_kernel): kSegStates states of a row per thread, R = NP /
// kSegStates adjacent lanes per row. The row's per-step values of steps t .. t + KI - 1 are computed once per row:
// lane q evaluates f(step, v1, v2) for steps t + k R + q and the R lanes exchange the results with shuffles. Every
// lane of the warp must call this.
template <int KI, int R, class F>
__device__ __forceinline__ void row_step_values(int t, int q, float (&v1)[KI], float (&v2)[KI], F f) {
  constexpr int KL = KI / R;  // steps per lane
  float m1[KL], m2[KL];
#pragma unroll
  for (int k = 0; k < KL; ++k) f(t + k * R + q, m1[k], m2[k]);
#pragma unroll
  for (int j = 0; j < KI; ++j) {  // step t + j is lane (j % R)'s item j / R
    if constexpr (R == 1) {
      v1[j] = m1[j];
      v2[j] = m2[j];
    } else {
      v1[j] = __shfl_sync(0xffffffffu, m1[j / R], j % R, R);
      v2[j] = __shfl_sync(0xffffffffu, m2[j / R], j % R, R);
    }
  }
}

// A thread of a kernel that splits a row's states over R adjacent lanes (NS states each; THREADS threads per block):
// its row (rows past the end compute the last row, row_c, so that their lanes join the shuffles, and write nothing),
// its lane q among the row's lanes and first state n0, and the row's (b, d).
struct LaneRow {
  int row, q, n0, row_c, b, d;
  bool active;
};
template <int R, int NS, int THREADS>
__device__ __forceinline__ LaneRow lane_row(const ScanParams& p) {
  LaneRow lr;
  const int gid = blockIdx.x * THREADS + threadIdx.x;
  lr.row = gid / R;
  lr.q = gid - lr.row * R;
  lr.n0 = lr.q * NS;
  lr.active = lr.row < p.nrows;
  lr.row_c = lr.active ? lr.row : p.nrows - 1;
  lr.b = lr.row_c / p.dim;
  lr.d = lr.row_c - lr.b * p.dim;
  return lr;
}

// A thread of a segment kernel (kRows threads per block): its lane_row and segment s's steps.
struct SegThread {
  int row, q, n0, row_c, b, d, t_lo, t_hi;
  bool active;
};
template <int R, int NS>
__device__ __forceinline__ SegThread seg_thread(const ScanParams& p, int s) {
  const LaneRow lr = lane_row<R, NS, kRows>(p);
  const int t_lo = s * p.seg_chunks * p.K;
  return {lr.row, lr.q, lr.n0, lr.row_c, lr.b, lr.d, t_lo, min(p.L, t_lo + p.seg_chunks * p.K), lr.active};
}

// Steps [t, t + KI) of coefficient n of B or C (variable: 16-byte vectors along its (N, L) row; time-invariant: cst[n]).
template <typename TBC, int KI>
__device__ __forceinline__ void coef_run(const TBC* var, const float* cst, int n, int L, int t, float (&v)[KI]) {
  if (var != nullptr) {
    load_items<TBC, KI>(var + (size_t)n * L, t, L, v);
  } else {
#pragma unroll
    for (int j = 0; j < KI; ++j) v[j] = cst[n];
  }
}

// Segment s's map applied to state n of a row: P v + q (p.seg is (nseg, 2, N, nrows): [s][0] = P, [s][1] = q;
// N = p.N, passed by the kernels that hold it).
__device__ __forceinline__ float seg_apply(const ScanParams& p, int N, int s, int n, int row, float v) {
  const float P = p.seg[((size_t)(2 * s) * N + n) * p.nrows + row];
  return P * v + p.seg[((size_t)(2 * s + 1) * N + n) * p.nrows + row];
}

// Segment s's map for this thread's states n0 .. n0 + NS - 1: the decay product P and the state or adjoint v.
template <int NS>
__device__ __forceinline__ void seg_store(const ScanParams& p, int s, int row, int n0, const float (&P)[NS],
                                          const float (&v)[NS]) {
#pragma unroll
  for (int i = 0; i < NS; ++i) {
    const int n = n0 + i;
    if (n < p.N) {
      p.seg[((size_t)(2 * s) * p.N + n) * p.nrows + row] = P[i];
      p.seg[((size_t)(2 * s + 1) * p.N + n) * p.nrows + row] = v[i];
    }
  }
}

// Segment maps of the general forward over time segments (ScanParams::nseg > 1, the same segments as the backward's
// for the checkpoint interval K): for segment s = blockIdx.y < nseg - 1, the state run forwards through the
// segment's steps, h <- a_t h + dt_t u_t B_t, from 0 (from the initial state in segment 0), written with P = prod a_t
// to p.seg[s][1] and p.seg[s][0]. Reads delta, u and B only; layout as scan_bwd_seg_kernel.
template <int NP, typename T, typename TBC>
__global__ void __launch_bounds__(kRows) scan_fwd_seg_kernel(const ScanParams p) {
  constexpr int NS = NP < kSegStates ? NP : kSegStates;
  constexpr int R = NP / NS;
  constexpr int KI = R > 8 ? R : 8;
  const int s = blockIdx.y;
  const auto [row, q, n0, row_c, b, d, t_lo, t_hi, active] = seg_thread<R, NS>(p, s);
  const int N = p.N;
  const int L = p.L;
  const size_t roff = (size_t)row_c * L;
  const T* u = static_cast<const T*>(p.u) + roff;
  const T* delta = static_cast<const T*>(p.delta) + roff;
  const auto [Bv, Bc, bgB, partB] = coef_source<TBC>(p.B, p.b_groups, p.dim, N, L, row_c, d);
  const float bias = p.delta_bias != nullptr ? p.delta_bias[d] : 0.f;

  float A2[NS], P[NS], h[NS];
#pragma unroll
  for (int i = 0; i < NS; ++i) {
    const int n = n0 + i;
    A2[i] = n < N ? p.A[(size_t)d * N + n] * kLog2e : 0.f;
    P[i] = 1.f;
    h[i] = (s == 0 && p.h0 != nullptr && n < N) ? p.h0[((size_t)b * p.dim + d) * N + n] : 0.f;
  }
  for (int t = t_lo; t < t_hi; t += KI) {  // steps past the segment are identities (dt = 0, dt u = 0)
    float dt[KI], dtu[KI];
    row_step_values<KI, R>(t, q, dt, dtu, [&](int tt, float& v_dt, float& v_dtu) {
      v_dt = v_dtu = 0.f;
      if (tt < t_hi) {
        const float x = to_f<T>(delta[tt]) + bias;
        v_dt = p.softplus ? softplus_f(x) : x;
        v_dtu = v_dt * to_f<T>(u[tt]);
      }
    });
#pragma unroll
    for (int i = 0; i < NS; ++i) {
      const int n = n0 + i;
      if (n < N) {
        float bb[KI];
        coef_run<TBC, KI>(Bv, Bc, n, L, t, bb);
#pragma unroll
        for (int j = 0; j < KI; ++j) {
          const float a = exp2_approx(dt[j] * A2[i]);
          h[i] = a * h[i] + dtu[j] * bb[j];
          P[i] *= a;
        }
      }
    }
  }
  if (active) seg_store<NS>(p, s, row, n0, P, h);
}

template <int NP, typename T, typename TBC>
__global__ void __launch_bounds__(kRows) scan_fwd_kernel(const ScanParams p) {
  // prefetch the next tile into registers while computing this one (register budget: NP <= 16)
  constexpr bool kPrefetch = NP <= 16;
  extern __shared__ float smem[];
  const int tile = p.tile;
  const int pitch = tile | 1;
  float* s_u = smem;
  float* s_dt = s_u + kRows * pitch;
  float* s_z = s_dt + kRows * pitch;  // z in, out written back in place
  float* s_B = s_z + kRows * pitch;   // tile x NP (when p.smem_b)
  float* s_C = s_B + tile * NP;       // tile x NP (when p.smem_c)

  const int tid = threadIdx.x;
  const int row0 = blockIdx.x * kRows;
  const int row = row0 + tid;
  const bool active = row < p.nrows;
  const int row_c = active ? row : p.nrows - 1;
  const int b = row_c / p.dim;
  const int d = row_c - b * p.dim;
  const int N = p.N;
  const int L = p.L;

  const T* u = static_cast<const T*>(p.u);
  const T* delta = static_cast<const T*>(p.delta);
  const T* z = static_cast<const T*>(p.z);
  // (b, group) of the whole block when B / C tiles are staged (p.smem_*: the block lies in one group)
  const TBC* Bblk = p.smem_b ? static_cast<const TBC*>(p.B) + (size_t)(row0 / (p.dim / p.b_groups)) * N * L : nullptr;
  const TBC* Cblk = p.smem_c ? static_cast<const TBC*>(p.C) + (size_t)(row0 / (p.dim / p.c_groups)) * N * L : nullptr;

  TileLoader<T, kRows, kMaxTile> lu, ld, lz;
  TileLoader<TBC, NP, kMaxTile> lb, lc;
  auto issue = [&](int t0, int nt) {
    lu.issue(u, row0, p.nrows, L, t0, nt);
    ld.issue(delta, row0, p.nrows, L, t0, nt);
    if (z != nullptr) lz.issue(z, row0, p.nrows, L, t0, nt);
    if (Bblk != nullptr) lb.issue(Bblk, 0, N, L, t0, nt);
    if (Cblk != nullptr) lc.issue(Cblk, 0, N, L, t0, nt);
  };
  // this block's time segment [t_lo, t_hi) (all of time when p.nseg <= 1; never with cu_seqlens)
  const int seg = blockIdx.y;
  const int t_lo = p.nseg > 1 ? seg * p.seg_chunks * p.K : 0;
  const int t_hi = p.nseg > 1 ? min(L, t_lo + p.seg_chunks * p.K) : L;
  if (kPrefetch) issue(t_lo, min(tile, t_hi - t_lo));

  float A2[NP];
  float h[NP];
#pragma unroll
  for (int n = 0; n < NP; ++n) A2[n] = n < N ? p.A[(size_t)d * N + n] * kLog2e : 0.f;
  const float Dd = p.D != nullptr ? p.D[d] : 0.f;
  const float bias = p.delta_bias != nullptr ? p.delta_bias[d] : 0.f;

  [[maybe_unused]] const auto [Bv, Bc, bgB, partB] = coef_source<TBC>(p.B, p.b_groups, p.dim, N, L, row_c, d);
  [[maybe_unused]] const auto [Cv, Cc, bgC, partC] = coef_source<TBC>(p.C, p.c_groups, p.dim, N, L, row_c, d);

  // sequence bookkeeping: s = current sequence, next_end = first step after it
  int s = p.cu != nullptr ? 0 : b;
  int next_end = p.cu != nullptr ? p.cu[1] : L;
#pragma unroll
  for (int n = 0; n < NP; ++n) h[n] = (p.h0 != nullptr && n < N) ? p.h0[((size_t)s * p.dim + d) * N + n] : 0.f;
  if (seg > 0) {  // the state entering the segment: the earlier segments' maps h -> P h + q composed (segment 0's
                  // includes the initial state)
#pragma unroll
    for (int n = 0; n < NP; ++n) h[n] = 0.f;
    for (int s2 = 0; s2 < seg; ++s2) {
#pragma unroll
      for (int n = 0; n < NP; ++n) {
        if (n < N) {
          h[n] = seg_apply(p, N, s2, n, row_c, h[n]);
        }
      }
    }
  }

  for (int t0 = t_lo; t0 < t_hi; t0 += tile) {
    const int nt = min(tile, t_hi - t0);
    __syncthreads();  // the previous tile has been stored
    if (!kPrefetch) issue(t0, nt);
    lu.commit(s_u, pitch, 1, u, row0, p.nrows, L, t0, nt);
    ld.commit(s_dt, pitch, 1, delta, row0, p.nrows, L, t0, nt);
    if (z != nullptr) lz.commit(s_z, pitch, 1, z, row0, p.nrows, L, t0, nt);
    if (Bblk != nullptr) lb.commit(s_B, 1, NP, Bblk, 0, N, L, t0, nt);
    if (Cblk != nullptr) lc.commit(s_C, 1, NP, Cblk, 0, N, L, t0, nt);
    __syncthreads();
    if (kPrefetch && t0 + tile < t_hi) issue(t0 + tile, min(tile, t_hi - t0 - tile));
    if (active) {
      // element-wise prologue on this thread's own row (independent steps -> good ILP):
      // s_dt <- dt = softplus(delta + bias), s_z <- silu(z)
      float* my_dt = s_dt + tid * pitch;
      float* my_z = s_z + tid * pitch;
      const float* my_u = s_u + tid * pitch;
      for (int j = 0; j < nt; ++j) {
        const float x = my_dt[j] + bias;
        my_dt[j] = p.softplus ? softplus_f(x) : x;
      }
      if (z != nullptr) {
        for (int j = 0; j < nt; ++j) {
          const float zz = my_z[j];
          my_z[j] = zz * sigmoid_f(zz);
        }
      }
      int j = 0;
      while (j < nt) {
        const int t = t0 + j;
        while (t == next_end) {  // packed sequences: sequence s ended before t
          if (p.last != nullptr) {
#pragma unroll
            for (int n = 0; n < NP; ++n)
              if (n < N) p.last[((size_t)s * p.dim + d) * N + n] = h[n];
          }
          ++s;
#pragma unroll
          for (int n = 0; n < NP; ++n) h[n] = (p.h0 != nullptr && n < N) ? p.h0[((size_t)s * p.dim + d) * N + n] : 0.f;
          next_end = p.cu[s + 1];
        }
        int stop = min(nt, next_end - t0);  // next event: end of the sequence ...
        if (p.ckpt != nullptr) {           // ... or a checkpoint
          if (t > 0 && t % p.K == 0) {
            const size_t base = (size_t)(t / p.K - 1) * N;
#pragma unroll
            for (int n = 0; n < NP; ++n)
              if (n < N) p.ckpt[(base + n) * p.nrows + row] = h[n];
          }
          stop = min(stop, (t / p.K + 1) * p.K - t0);
        }
#pragma unroll 4
        for (; j < stop; ++j) {
          const float uu = my_u[j];
          const float dt = my_dt[j];
          const float dtu = dt * uu;
          float bv[NP], cv[NP];
          get_coefs<NP, TBC>(bv, Bblk != nullptr, s_B, j, Bv, Bc, N, L, t0 + j);
          get_coefs<NP, TBC>(cv, Cblk != nullptr, s_C, j, Cv, Cc, N, L, t0 + j);
          float y0 = 0.f, y1 = 0.f, y2 = 0.f, y3 = 0.f;  // partial sums: short dependency chains
#pragma unroll
          for (int n = 0; n < NP; n += 4) {
            h[n] = exp2_approx(dt * A2[n]) * h[n] + dtu * bv[n];
            y0 += h[n] * cv[n];
            h[n + 1] = exp2_approx(dt * A2[n + 1]) * h[n + 1] + dtu * bv[n + 1];
            y1 += h[n + 1] * cv[n + 1];
            h[n + 2] = exp2_approx(dt * A2[n + 2]) * h[n + 2] + dtu * bv[n + 2];
            y2 += h[n + 2] * cv[n + 2];
            h[n + 3] = exp2_approx(dt * A2[n + 3]) * h[n + 3] + dtu * bv[n + 3];
            y3 += h[n + 3] * cv[n + 3];
          }
          float y = (y0 + y1) + (y2 + y3) + Dd * uu;
          if (z != nullptr) y *= my_z[j];
          my_z[j] = y;
        }
      }
    }
    __syncthreads();
    store_tile_v<T, kMaxTile>(static_cast<T*>(p.out), s_z, pitch, row0, p.nrows, L, t0, nt);
  }
  if (active && p.last != nullptr && t_hi == L) {  // the last segment ends the sequence
    const int s_end = p.cu != nullptr ? p.nseq : b + 1;
    while (s < s_end) {
#pragma unroll
      for (int n = 0; n < NP; ++n)
        if (n < N) p.last[((size_t)s * p.dim + d) * N + n] = h[n];
      ++s;
      if (s < s_end) {
#pragma unroll
        for (int n = 0; n < NP; ++n) h[n] = (p.h0 != nullptr && n < N) ? p.h0[((size_t)s * p.dim + d) * N + n] : 0.f;
      }
    }
  }
}

// ------------------------------------------------------------------------------------------
// warp reductions for dB / dC
// ------------------------------------------------------------------------------------------

// Sum V values over the 32 lanes and scatter the sums: afterwards, for V >= 32, v[i] (i < V / 32)
// holds the warp sum of index lane * (V / 32) + i; for V < 32, v[0] holds the sum of index
// lane >> (5 - log2 V). V - 1 shuffles for V >= 32 (a reduce-scatter), not 5 V.
template <int V, int LVL>
__device__ __forceinline__ void reduce_scatter_level(float (&v)[V], int lane) {
  constexpr int mask = 16 >> LVL;
  constexpr int cnt = V >> LVL;
  if constexpr (cnt > 1) {
    constexpr int half = cnt >> 1;
    const bool upper = (lane & mask) != 0;
#pragma unroll
    for (int i = 0; i < half; ++i) {
      const float send = upper ? v[i] : v[i + half];
      const float keep = upper ? v[i + half] : v[i];
      v[i] = keep + __shfl_xor_sync(0xffffffffu, send, mask);
    }
  } else {
    v[0] += __shfl_xor_sync(0xffffffffu, v[0], mask);
  }
  if constexpr (LVL < 4) reduce_scatter_level<V, LVL + 1>(v, lane);
}

template <int V>
__device__ __forceinline__ void warp_reduce_scatter(float (&v)[V], int lane) {
  reduce_scatter_level<V, 0>(v, lane);
}

__host__ __device__ constexpr int ilog2(int x) { return x <= 1 ? 0 : 1 + ilog2(x / 2); }

// Reduce this step's per-row contributions v[n] over the rows of each (b, group) inside the warp and
// write them to part[((bg * npart + part) * N + n) * L + t]. All 32 lanes must call this.
template <int NP>
__device__ __forceinline__ void reduce_write_bc(float (&v)[NP], bool uniform, int lane, int bg, int part, bool lane_active,
                                                bool warp_active, float* __restrict__ out, int npart, int N, int L, int t) {
  if (uniform) {
    warp_reduce_scatter<NP>(v, lane);
    if (!warp_active) return;
    const size_t base = ((size_t)bg * npart + part) * N;
    if constexpr (NP >= 32) {
#pragma unroll
      for (int i = 0; i < NP / 32; ++i) {
        const int n = lane * (NP / 32) + i;
        if (n < N) out[(base + n) * L + t] = v[i];
      }
    } else {
      constexpr int shift = 5 - ilog2(NP);
      const int n = lane >> shift;
      if ((lane & ((1 << shift) - 1)) == 0 && n < N) out[(base + n) * L + t] = v[0];
    }
    return;
  }
  // general case: contiguous segments of lanes share bg; segmented suffix sums, head lane writes
  const int prev_bg = __shfl_up_sync(0xffffffffu, bg, 1);
  const bool head = lane_active && (lane == 0 || prev_bg != bg);
#pragma unroll
  for (int n = 0; n < NP; ++n) {
    float x = v[n];
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
      const float other = __shfl_down_sync(0xffffffffu, x, off);
      const int obg = __shfl_down_sync(0xffffffffu, bg, off);
      if (lane + off < 32 && obg == bg) x += other;
    }
    if (head && n < N) out[(((size_t)bg * npart + part) * N + n) * L + t] = x;
  }
}

// ------------------------------------------------------------------------------------------
// backward
// ------------------------------------------------------------------------------------------
// Segment maps of the general backward over time segments (ScanParams::nseg > 1, bwd_segments in
// selective_scan.h): for segment s = blockIdx.y + 1, the adjoint g <- (g + C_t dy_t) a_t run backwards through the
// segment's steps from g = 0 (from dlast in the last segment), written with P = prod a_t to p.seg[s][1] and
// p.seg[s][0]. Only delta, dout, z and C are read: the adjoint needs no states. The states of a row are independent
// here, so kSegStates of them go to one thread: R = NP / kSegStates adjacent lanes per row, more threads in flight
// than rows and independent chains in each. The row's per-step values (softplus, the gate's derivative) are
// computed once: lane q of the row transforms steps q, q + R, ... of each run of KI steps and the row's lanes
// exchange them with shuffles.
template <int NP, typename T, typename TBC>
__global__ void __launch_bounds__(kRows) scan_bwd_seg_kernel(const ScanParams p) {
  constexpr int NS = NP < kSegStates ? NP : kSegStates;
  constexpr int R = NP / NS;              // lanes per row (a power of two <= 16)
  constexpr int KI = R > 8 ? R : 8;       // steps per run
  const int s = blockIdx.y + 1;
  const auto [row, q, n0, row_c, b, d, t_lo, t_hi, active] = seg_thread<R, NS>(p, s);
  const int N = p.N;
  const int L = p.L;
  const size_t roff = (size_t)row_c * L;
  const T* delta = static_cast<const T*>(p.delta) + roff;
  const T* dout = static_cast<const T*>(p.dout) + roff;
  const T* z = p.z != nullptr ? static_cast<const T*>(p.z) + roff : nullptr;
  const auto [Cv, Cc, bgC, partC] = coef_source<TBC>(p.C, p.c_groups, p.dim, N, L, row_c, d);
  const float bias = p.delta_bias != nullptr ? p.delta_bias[d] : 0.f;
  const bool last_seg = s == p.nseg - 1;

  float A2[NS], P[NS], g[NS];
#pragma unroll
  for (int i = 0; i < NS; ++i) {
    const int n = n0 + i;
    A2[i] = n < N ? p.A[(size_t)d * N + n] * kLog2e : 0.f;
    P[i] = 1.f;
    g[i] = (last_seg && p.dlast != nullptr && n < N) ? p.dlast[((size_t)b * p.dim + d) * N + n] : 0.f;
  }
  // runs [t, t + KI) from the last; steps outside [t_lo, t_hi) are identities (dt = 0: a = 1; dy = 0)
  for (int t = t_lo + ((t_hi - 1 - t_lo) / KI) * KI; t >= t_lo; t -= KI) {
    float dt[KI], dy[KI];
    row_step_values<KI, R>(t, q, dt, dy, [&](int tt, float& v_dt, float& v_dy) {
      v_dt = v_dy = 0.f;  // steps past the segment: the identity
      if (tt < t_hi) {
        const float x = to_f<T>(delta[tt]) + bias;
        v_dt = p.softplus ? softplus_f(x) : x;
        v_dy = to_f<T>(dout[tt]);
        if (z != nullptr) {
          const float zz = to_f<T>(z[tt]);
          v_dy *= zz * sigmoid_f(zz);
        }
      }
    });
#pragma unroll
    for (int i = 0; i < NS; ++i) {
      const int n = n0 + i;
      if (n < N) {
        float cc[KI];
        coef_run<TBC, KI>(Cv, Cc, n, L, t, cc);
#pragma unroll
        for (int j = KI - 1; j >= 0; --j) {
          const float a = exp2_approx(dt[j] * A2[i]);
          g[i] = (g[i] + cc[j] * dy[j]) * a;
          P[i] *= a;
        }
      }
    }
  }
  if (active) seg_store<NS>(p, s, row, n0, P, g);
}

template <int NP, typename T, typename TBC>
__global__ void __launch_bounds__(kRows) scan_bwd_kernel(const ScanParams p) {
  extern __shared__ float smem[];
  const int K = p.K;
  const int pitch = K | 1;
  float* s_u = smem;                    // u in, du out
  float* s_dt = s_u + kRows * pitch;    // delta in, d delta out
  float* s_z = s_dt + kRows * pitch;    // z in, dz out
  float* s_g = s_z + kRows * pitch;     // dout in, dy (gated) in the chunk
  float* s_h = s_g + kRows * pitch;     // (K + 1) x NP x kRows states: [0] = before the chunk, [j + 1] = after step j
  float* s_accB = s_h + (size_t)(K + 1) * NP * kRows;  // NP x kRows: constant-B gradient per row
  float* s_accC = s_accB + NP * kRows;
  float* s_B = s_accC + NP * kRows;  // K x NP (when p.smem_b)
  float* s_C = s_B + K * NP;         // K x NP (when p.smem_c)

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int row0 = blockIdx.x * kRows;
  const int row = row0 + tid;
  const bool active = row < p.nrows;
  const bool warp_active = (row - lane) < p.nrows;
  const int row_c = active ? row : p.nrows - 1;
  const int b = row_c / p.dim;
  const int d = row_c - b * p.dim;
  const int N = p.N;
  const int L = p.L;

  float A2[NP];
#pragma unroll
  for (int n = 0; n < NP; ++n) A2[n] = n < N ? p.A[(size_t)d * N + n] * kLog2e : 0.f;
  const float Dd = p.D != nullptr ? p.D[d] : 0.f;
  const float bias = p.delta_bias != nullptr ? p.delta_bias[d] : 0.f;

  // where this row reads B and C, and its (b, group) and dB / dC partial index (partials per warp)
  const auto [Bv, Bc, bgB, partB] = coef_source<TBC>(p.B, p.b_groups, p.dim, N, L, row_c, d, 32);
  const auto [Cv, Cc, bgC, partC] = coef_source<TBC>(p.C, p.c_groups, p.dim, N, L, row_c, d, 32);

#pragma unroll
  for (int n = 0; n < NP; ++n) {
    s_accB[n * kRows + tid] = 0.f;
    s_accC[n * kRows + tid] = 0.f;
  }

  const T* u = static_cast<const T*>(p.u);
  const T* delta = static_cast<const T*>(p.delta);
  const T* z = static_cast<const T*>(p.z);
  const T* dout = static_cast<const T*>(p.dout);

  float g[NP];   // adjoint of the state carried from step t + 1 (already multiplied by a_{t+1})
  float dA[NP];
#pragma unroll
  for (int n = 0; n < NP; ++n) {
    g[n] = 0.f;
    dA[n] = 0.f;
  }
  float dD = 0.f, ddb = 0.f;

  // B / C of the whole block when staged (p.smem_*: the block lies in one (b, group))
  const TBC* Bblk = p.smem_b ? static_cast<const TBC*>(p.B) + (size_t)(row0 / (p.dim / p.b_groups)) * N * L : nullptr;
  const TBC* Cblk = p.smem_c ? static_cast<const TBC*>(p.C) + (size_t)(row0 / (p.dim / p.c_groups)) * N * L : nullptr;
  constexpr bool kPrefetch = NP <= 16;  // register budget
  TileLoader<T, kRows, kMaxChunk> lu, ld, lz, lg;
  TileLoader<TBC, NP, kMaxChunk> lb, lc;
  auto issue = [&](int t0, int nt) {
    lu.issue(u, row0, p.nrows, L, t0, nt);
    ld.issue(delta, row0, p.nrows, L, t0, nt);
    if (z != nullptr) lz.issue(z, row0, p.nrows, L, t0, nt);
    lg.issue(dout, row0, p.nrows, L, t0, nt);
    if (Bblk != nullptr) lb.issue(Bblk, 0, N, L, t0, nt);
    if (Cblk != nullptr) lc.issue(Cblk, 0, N, L, t0, nt);
  };

  // this block's time segment: chunks [c_lo, c_hi) (all of them when p.nseg == 1)
  const int nchunks = (L + K - 1) / K;
  const int seg = blockIdx.y;
  const int c_lo = seg * p.seg_chunks;
  const int c_hi = p.nseg > 1 ? min(nchunks, c_lo + p.seg_chunks) : nchunks;
  // the adjoint entering the segment: the later segments' maps g -> P g + q composed, from the last
  for (int s2 = p.nseg - 1; s2 > seg; --s2) {
#pragma unroll
    for (int n = 0; n < NP; ++n) {
      if (n < N) {
        g[n] = seg_apply(p, N, s2, n, row_c, g[n]);
      }
    }
  }
  if (kPrefetch) issue((c_hi - 1) * K, min(K, L - (c_hi - 1) * K));
  for (int c = c_hi - 1; c >= c_lo; --c) {
    const int t0 = c * K;
    const int nt = min(K, L - t0);
    // state before the chunk (checkpoint or initial state), loaded early: the commit and the
    // prologue below hide its latency
    int s = p.cu != nullptr ? seq_of(p.cu, p.nseq, t0) : b;
    float hinit[NP];
#pragma unroll
    for (int n = 0; n < NP; ++n) {
      float v = 0.f;
      if (n < N) {
        if (c > 0) v = p.ckpt[((size_t)(c - 1) * N + n) * p.nrows + row_c];
        else if (p.h0 != nullptr) v = p.h0[((size_t)s * p.dim + d) * N + n];
      }
      hinit[n] = v;
    }
    __syncthreads();  // previous chunk stored
    if (!kPrefetch) issue(t0, nt);
    lu.commit(s_u, pitch, 1, u, row0, p.nrows, L, t0, nt);
    ld.commit(s_dt, pitch, 1, delta, row0, p.nrows, L, t0, nt);
    if (z != nullptr) lz.commit(s_z, pitch, 1, z, row0, p.nrows, L, t0, nt);
    lg.commit(s_g, pitch, 1, dout, row0, p.nrows, L, t0, nt);
    if (Bblk != nullptr) lb.commit(s_B, 1, NP, Bblk, 0, N, L, t0, nt);
    if (Cblk != nullptr) lc.commit(s_C, 1, NP, Cblk, 0, N, L, t0, nt);
    __syncthreads();
    if (kPrefetch && c > c_lo) issue(t0 - K, K);

    // ---- prologue on this thread's own row: s_dt <- dt = softplus(delta + bias) ----
    for (int j = 0; j < nt; ++j) {
      const float x = s_dt[tid * pitch + j] + bias;
      s_dt[tid * pitch + j] = p.softplus ? softplus_f(x) : x;
    }

    // ---- recompute the chunk's states (each thread touches only its own smem column) ----
    {
      float h[NP];
#pragma unroll
      for (int n = 0; n < NP; ++n) {
        h[n] = hinit[n];
        s_h[n * kRows + tid] = hinit[n];
      }
      for (int j = 0; j < nt; ++j) {
        const int t = t0 + j;
        if (p.cu != nullptr) {
          while (s + 1 < p.nseq && p.cu[s + 1] <= t) ++s;
        }
        const int start = p.cu != nullptr ? p.cu[s] : 0;
        if (t == start) {
#pragma unroll
          for (int n = 0; n < NP; ++n) h[n] = (p.h0 != nullptr && n < N) ? p.h0[((size_t)s * p.dim + d) * N + n] : 0.f;
        }
        const float uu = s_u[tid * pitch + j];
        const float dt = s_dt[tid * pitch + j];
        const float dtu = dt * uu;
        float bv[NP], cv[NP];
        get_coefs<NP, TBC>(bv, p.smem_b != 0, s_B, j, Bv, Bc, N, L, t);
        get_coefs<NP, TBC>(cv, p.smem_c != 0, s_C, j, Cv, Cc, N, L, t);
        float y0 = 0.f, y1 = 0.f;
        float* hs = s_h + (size_t)(j + 1) * NP * kRows + tid;
#pragma unroll
        for (int n = 0; n < NP; n += 2) {
          h[n] = exp2_approx(dt * A2[n]) * h[n] + dtu * bv[n];
          y0 += h[n] * cv[n];
          hs[n * kRows] = h[n];
          h[n + 1] = exp2_approx(dt * A2[n + 1]) * h[n + 1] + dtu * bv[n + 1];
          y1 += h[n + 1] * cv[n + 1];
          hs[(n + 1) * kRows] = h[n + 1];
        }
        const float y = y0 + y1 + Dd * uu;
        const float go = s_g[tid * pitch + j];
        float dy = go;
        if (z != nullptr) {
          const float zz = s_z[tid * pitch + j];
          const float sz = sigmoid_f(zz);
          dy = go * zz * sz;
          s_z[tid * pitch + j] = go * y * sz * (1.f + zz * (1.f - sz));  // dz
        }
        s_g[tid * pitch + j] = active ? dy : 0.f;
      }
    }

    // ---- adjoint recurrence, backwards through the chunk ----
    for (int j = nt - 1; j >= 0; --j) {
      const int t = t0 + j;
      if (p.cu != nullptr) {
        while (s > 0 && p.cu[s] > t) --s;
      }
      const int start = p.cu != nullptr ? p.cu[s] : 0;
      const int end = p.cu != nullptr ? p.cu[s + 1] : L;
      const bool reset = (t == start);
      if (p.dlast != nullptr && active && t == end - 1) {
#pragma unroll
        for (int n = 0; n < NP; ++n)
          if (n < N) g[n] += p.dlast[((size_t)s * p.dim + d) * N + n];
      }
      const float dy = s_g[tid * pitch + j];
      const float uu = s_u[tid * pitch + j];
      const float dt = s_dt[tid * pitch + j];
      const float dtu = dt * uu;
      const float* hprev = s_h + (size_t)j * NP * kRows + tid;
      const float* hcur = hprev + NP * kRows;
      float vb[NP], vc[NP];
      get_coefs<NP, TBC>(vb, p.smem_b != 0, s_B, j, Bv, Bc, N, L, t);  // B_t, replaced by dB_t below
      get_coefs<NP, TBC>(vc, p.smem_c != 0, s_C, j, Cv, Cc, N, L, t);  // C_t, replaced by dC_t below
      float sum_gb = 0.f, ddt = 0.f;
#pragma unroll
      for (int n = 0; n < NP; ++n) {
        const float bn = vb[n];
        const float cn = vc[n];
        vb[n] = 0.f;
        vc[n] = 0.f;
        if (n < N) {
          float hp;
          if (reset) hp = p.h0 != nullptr ? p.h0[((size_t)s * p.dim + d) * N + n] : 0.f;
          else hp = hprev[n * kRows];
          const float a = exp2_approx(dt * A2[n]);
          const float gn = g[n] + cn * dy;
          vb[n] = gn * dtu;
          vc[n] = dy * hcur[n * kRows];
          sum_gb += gn * bn;
          const float gpa = gn * hp * a;
          ddt += gpa * A2[n];  // times ln 2 below (A2 = A log2 e)
          dA[n] += gpa * dt;
          g[n] = gn * a;
        }
      }
      ddt = ddt * kLn2 + sum_gb * uu;
      dD += dy * uu;
      // d softplus(x) / dx = sigmoid(x) = 1 - exp(-softplus(x))
      const float dd = p.softplus ? ddt * -expm1f(-dt) : ddt;
      ddb += dd;
      s_u[tid * pitch + j] = sum_gb * dt + Dd * dy;
      s_dt[tid * pitch + j] = dd;
      if (reset) {
        if (p.dh0 != nullptr && active) {
#pragma unroll
          for (int n = 0; n < NP; ++n)
            if (n < N) p.dh0[((size_t)s * p.dim + d) * N + n] = g[n];
        }
#pragma unroll
        for (int n = 0; n < NP; ++n) g[n] = 0.f;
      }
      if (p.b_groups > 0) {
        reduce_write_bc<NP>(vb, p.uniform_b != 0, lane, bgB, partB, active, warp_active, p.dB_part, p.npart_b, N, L, t);
      } else {
#pragma unroll
        for (int n = 0; n < NP; ++n) s_accB[n * kRows + tid] += vb[n];
      }
      if (p.c_groups > 0) {
        reduce_write_bc<NP>(vc, p.uniform_c != 0, lane, bgC, partC, active, warp_active, p.dC_part, p.npart_c, N, L, t);
      } else {
#pragma unroll
        for (int n = 0; n < NP; ++n) s_accC[n * kRows + tid] += vc[n];
      }
    }
    __syncthreads();
    store_tile_v<T, kMaxChunk>(static_cast<T*>(p.du), s_u, pitch, row0, p.nrows, L, t0, nt);
    store_tile_v<T, kMaxChunk>(static_cast<T*>(p.ddelta), s_dt, pitch, row0, p.nrows, L, t0, nt);
    if (z != nullptr) store_tile_v<T, kMaxChunk>(static_cast<T*>(p.dz), s_z, pitch, row0, p.nrows, L, t0, nt);
  }

  if (active) {  // per-row partials of this segment
    const size_t pr = ((size_t)seg * p.nrows + row) * p.rp_stride;
#pragma unroll
    for (int n = 0; n < NP; ++n) {
      if (n < N) {
        p.dA_part[pr + n] = dA[n];
        if (p.b_groups == 0) p.dB_part[pr + n] = s_accB[n * kRows + tid];
        if (p.c_groups == 0) p.dC_part[pr + n] = s_accC[n * kRows + tid];
      }
    }
    p.dD_part[pr] = dD;
    p.ddb_part[pr] = ddb;
  }
}

#ifndef SSK_EMULATE
// ------------------------------------------------------------------------------------------
// host launchers
// ------------------------------------------------------------------------------------------
template <int NP, typename T, typename TBC>
cudaError_t launch_fwd_np(const ScanParams& p, cudaStream_t stream) {
  const size_t smem = fwd_smem_bytes(NP, p.tile);
  auto kernel = scan_fwd_kernel<NP, T, TBC>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (err != cudaSuccess) return err;
  const int blocks = (p.nrows + kRows - 1) / kRows;
  if (p.nseg > 1) {  // the segments' maps first (the last segment needs none)
    const int seg_blocks = (int)(((size_t)p.nrows * seg_threads_per_row(NP) + kRows - 1) / kRows);
    scan_fwd_seg_kernel<NP, T, TBC><<<dim3(seg_blocks, p.nseg - 1), kRows, 0, stream>>>(p);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  kernel<<<dim3(blocks, p.nseg > 1 ? p.nseg : 1), kRows, smem, stream>>>(p);
  return cudaGetLastError();
}

// The backward's segment maps (scan_bwd_seg_kernel, segments 1 .. nseg - 1), launched before a segmented backward
// (the general or the state-lane one); nothing for one segment.
template <int NP, typename T, typename TBC>
cudaError_t launch_bwd_seg_maps(const ScanParams& p, cudaStream_t stream) {
  if (p.nseg <= 1) return cudaSuccess;
  const int seg_blocks = (int)(((size_t)p.nrows * seg_threads_per_row(NP) + kRows - 1) / kRows);
  scan_bwd_seg_kernel<NP, T, TBC><<<dim3(seg_blocks, p.nseg - 1), kRows, 0, stream>>>(p);
  return cudaGetLastError();
}

template <int NP, typename T, typename TBC>
cudaError_t launch_bwd_np(const ScanParams& p, cudaStream_t stream) {
  const size_t smem = bwd_smem_bytes(NP, p.K);
  auto kernel = scan_bwd_kernel<NP, T, TBC>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (err != cudaSuccess) return err;
  const int blocks = (p.nrows + kRows - 1) / kRows;
  err = launch_bwd_seg_maps<NP, T, TBC>(p, stream);  // the segments' maps first (segment 0 needs none)
  if (err != cudaSuccess) return err;
  kernel<<<dim3(blocks, p.nseg > 1 ? p.nseg : 1), kRows, smem, stream>>>(p);
  return cudaGetLastError();
}

template <typename T, typename TBC>
cudaError_t launch_fwd_t(const ScanParams& p, cudaStream_t stream) {
  switch (padded_state(p.N)) {
    case 4: return launch_fwd_np<4, T, TBC>(p, stream);
    case 8: return launch_fwd_np<8, T, TBC>(p, stream);
    case 16: return launch_fwd_np<16, T, TBC>(p, stream);
    case 32: return launch_fwd_np<32, T, TBC>(p, stream);
    case 64: return launch_fwd_np<64, T, TBC>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

template <typename T, typename TBC>
cudaError_t launch_bwd_t(const ScanParams& p, cudaStream_t stream) {
  switch (padded_state(p.N)) {
    case 4: return launch_bwd_np<4, T, TBC>(p, stream);
    case 8: return launch_bwd_np<8, T, TBC>(p, stream);
    case 16: return launch_bwd_np<16, T, TBC>(p, stream);
    case 32: return launch_bwd_np<32, T, TBC>(p, stream);
    case 64: return launch_bwd_np<64, T, TBC>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

#endif  // SSK_EMULATE

}  // namespace ssk
