// The graph selective scan's forward recurrence on CUDA cores, kNS = 4 states of one (vertex, channel) row per
// thread (NP / kNS adjacent threads, a "row group", share a row; NP: N padded to 8, 16 or 32).
//
//   P_t = [h_{t-1} W_0] + sum_k mix_k[b, t] h_{t-1} W_{k + eye}      (eye: the implicit identity operator first)
//   h_t = P_t * exp(Delta_t A[d]) + Delta_t u_t B_t
//
// Each thread keeps its kNS states in registers. The state products h W need the whole row: the row group
// exchanges its parts through shared memory (a warp barrier: a row group never straddles a warp), then each thread
// forms its kNS columns of h W_k (W in shared memory) and writes them for the vertex products; after one block
// barrier per step, each thread sums mix_k[v, :] over the other vertices' rows. A warp holds consecutive vertices
// of one channel (row r = dl * V + v), so in the vertex products every lane of a row-group position reads the same
// row (one 64-byte shared-memory access per instruction) and four operator coefficients come in one vector load
// (operator rows padded to a multiple of 4); shared-memory bandwidth, not arithmetic, bounds these kernels.
// Double buffers (by step parity) for those rows, the step's operators and B let one block barrier per step
// suffice: a thread can only overwrite a buffer two steps later, after every thread has passed the next step's
// barrier. The step's operators and B are
// staged by the whole block one step ahead; u and delta are prefetched per thread.
//
// Splitting a row over threads (one thread per row before: 175 registers, 31.3 ms at the raw EEG shape on an H200,
// with about five warps per SM) gave the scheduler four times the warps for the same arithmetic (25.0 ms, run19b).
//
// It writes the states (every step's, the chunk checkpoints and / or the last) and, with `readout`, the output
//   y_t = sum_n ([h_t W_C,0] + sum_k mix_C,k h_t W_C,k+eye_c)[v, d, n] C_t[v, n] + D u_t,  out_t = y_t silu(z_t)
// (or sum_n h_t C_t + D u_t without readout operators). The readout's vertex products need a barrier of their own;
// they share the next step's: at each barrier every row has written h_t W_A,k (for P_{t+1}) and h_t W_C,k (for
// y_t), so the readout of step t is formed one iteration late and the loop runs one extra, readout-only,
// iteration. A row's y is the sum of its group's partial sums (through shared memory, in a fixed order). fp32 FMA
// products throughout (no tensor cores): exact fp32.
//
// With GSK_EMULATE defined the same source compiles on the host (tests/graph_scan/emulate): CUDA threads become
// OS threads, __syncwarp a block barrier and shared memory one static buffer.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

namespace gsk {

constexpr int kNS = 4;            // states per thread
constexpr int kMaxThreads = 512;  // V * bd * NP / kNS per block

// A register cap rather than launch bounds: at the raw EEG shape (19 vertices, 4 channels per block: 10 warps) two
// blocks per SM need at most 96 registers per thread, where the compiler, free, takes 128 (nvcc 13, sm_90).
// GSK_MAXNREG overrides it (the build folder is then its own, see ../cuda.py).
#ifndef GSK_MAXNREG
#define GSK_MAXNREG 96
#endif
#if defined(__CUDACC_VER_MAJOR__) && \
    (__CUDACC_VER_MAJOR__ > 12 || (__CUDACC_VER_MAJOR__ == 12 && __CUDACC_VER_MINOR__ >= 4))
#define GSK_KERNEL_BOUNDS(threads) __maxnreg__(GSK_MAXNREG)
#else
#define GSK_KERNEL_BOUNDS(threads) __launch_bounds__(threads)
#endif

struct FwdParams {
  int batch, V, D, L, N, K;  // K: stored vertex operators per step; W holds K + eye operators
  int eye, softplus, has_bias, has_h0;
  int t0, t1, chunk, nc;  // steps t0 .. t1 - 1; a checkpoint every `chunk` steps, nc per batch row
  int bd;                 // channels per block (blockDim.x = V * bd * NP / kNS)
  int64_t s_mb, s_mt, s_mk, s_mi, s_mj;  // mix strides in elements (s_mt = 0: one operator set for all steps)
  int64_t s_h0b;                         // batch stride of h0 (rows are (V, D, N) contiguous)
  int64_t s_st;                          // stride between state slots (batch * V * D * N)
  const void* u;                         // (batch, V, D, L), input dtype
  const void* delta;                     // (batch, V, D, L)
  const void* B;                         // (batch, V, N, L)
  const float* A;                        // (D, N)
  const void* mix;                       // (batch, T, K, V, V) through the strides; float32 or u's dtype
  const float* W;                        // (K + eye, N, N) contiguous
  const float* bias;                     // (D,) or null
  const float* h0;                       // (batch, V, D, N) rows or null (zeros)
  float* states;  // null, or (t1 - t0 + 1) slots: slot 0 the entry state, slot j the state after step t0 + j - 1
  float* ckpt;    // null, or (batch, nc, V, D, N): the state entering every chunk-th step
  float* last;    // null, or (batch, V, D, N)
  // the readout (readout = 1): operators mix_c (K_C of them, 0: none) and W_c (K_C + eye_c, N, N), C, D, z
  int readout, K_C, eye_c, has_d, has_z;
  int64_t s_mcb, s_mct, s_mck, s_mci, s_mcj;
  const void* mix_c;  // like mix
  const float* W_c;
  const void* C;      // (batch, V, N, L), input dtype
  const float* Dp;    // (D,) or null
  const void* z;      // (batch, V, D, L) or null
  void* out;          // null, or (batch, V, D, L) in the input dtype: y * silu(z) (y without z)
  float* y;           // null, or (batch, V, D, L) fp32: the pre-gate y
};

__host__ __device__ inline int round4(int x) { return (x + 3) & ~3; }  // regions start 16-byte aligned
__host__ __device__ inline int pad_states(int N) { return N <= 8 ? 8 : (N <= 16 ? 16 : 32); }
__host__ __device__ inline int block_threads(int NP, int V, int bd) { return V * bd * (NP / kNS); }
// the staged vertex operators: (K, V, round4(V)) per step, rows 16-byte aligned
__host__ __device__ inline int ops_floats(int K, int V) { return K * V * round4(V); }

// Shared memory of one block, in floats: W, 2 x the step's operators, 2 x B, 2 x the rows' h W_k, the rows' h; with
// the readout also W_C, 2 x its operators, 2 x C, 2 x the rows' h W_C,k and the rows' partial y sums.
__host__ __device__ inline int fwd_smem_floats(int NP, int V, int K, int eye, int bd, int readout = 0, int K_C = 0,
                                               int eye_c = 0) {
  const int KC = readout ? K_C : 0, KWC = KC > 0 ? KC + eye_c : 0;
  return (K + eye + KWC) * NP * NP + 2 * ops_floats(K, V) + 2 * ops_floats(KC, V) + (readout ? 4 : 2) * V * NP +
         2 * (K + KC) * V * bd * NP + V * bd * NP + (readout ? round4(block_threads(NP, V, bd)) : 0);
}

#ifdef GSK_EMULATE
extern float emu_smem[];
#endif

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ void store_as(float* p, float x) { *p = x; }
__device__ __forceinline__ void store_as(__half* p, float x) { *p = __float2half_rn(x); }
__device__ __forceinline__ void store_as(__nv_bfloat16* p, float x) { *p = __float2bfloat16_rn(x); }

using Part = float[kNS];

__device__ __forceinline__ void store4(float* dst, const Part& r) {  // 16-byte aligned destination
  *reinterpret_cast<float4*>(dst) = make_float4(r[0], r[1], r[2], r[3]);
}

// acc[i] += c * row[i] for 4 floats at a 16-byte aligned place (shared memory).
__device__ __forceinline__ void add_scaled4(Part& acc, float c, const float* row) {
  const float4 w = *reinterpret_cast<const float4*>(row);
  acc[0] += c * w.x;
  acc[1] += c * w.y;
  acc[2] += c * w.z;
  acc[3] += c * w.w;
}

// acc[i] = sum_m x[m] W[m, n0 + i] for a full row x and an (NP, NP) operator in shared memory.
template <int NP>
__device__ __forceinline__ void part_times(const float (&x)[NP], const float* W, int n0, Part& acc) {
#pragma unroll
  for (int i = 0; i < kNS; ++i) acc[i] = 0.f;
#pragma unroll
  for (int m = 0; m < NP; ++m) add_scaled4(acc, x[m], W + m * NP + n0);
}

// The full row (NP floats, 16-byte aligned, in shared memory) into registers.
template <int NP>
__device__ __forceinline__ void load_row(float (&x)[NP], const float* row) {
#pragma unroll
  for (int m = 0; m < NP; m += 4) {
    const float4 w = *reinterpret_cast<const float4*>(row + m);
    x[m] = w.x, x[m + 1] = w.y, x[m + 2] = w.z, x[m + 3] = w.w;
  }
}

// acc += sum_{j < V} c[j] rows[j * NP]: c a 16-byte aligned row of operator coefficients, rows the V vertices'
// parts (this thread's columns), both in shared memory.
template <int NP>
__device__ __forceinline__ void vertex_sum(Part& acc, const float* c, const float* rows, int V) {
  int j = 0;
  for (; j + 4 <= V; j += 4) {
    const float4 m = *reinterpret_cast<const float4*>(c + j);
    add_scaled4(acc, m.x, rows + j * NP);
    add_scaled4(acc, m.y, rows + (j + 1) * NP);
    add_scaled4(acc, m.z, rows + (j + 2) * NP);
    add_scaled4(acc, m.w, rows + (j + 3) * NP);
  }
  for (; j < V; ++j) add_scaled4(acc, c[j], rows + j * NP);
}

// A row x's products with K stored operators, columns n0 .. n0 + 3 of x W_{k + eye}, into this thread's slots of
// shared-memory rows (operator k's at part + k * k_stride, for the vertex products after the next barrier); acc
// gets the identity operator's x W_0 (eye) or zeros. x: the full row, W: (K + eye, NP, NP) in shared memory.
template <int NP>
__device__ __forceinline__ void operator_parts(const float (&x)[NP], const float* W, int K, int eye, int n0,
                                               float* part, int k_stride, Part& acc) {
  for (int k = 0; k < K; ++k) {
    part_times<NP>(x, W + (k + eye) * NP * NP, n0, acc);
    store4(part + k * k_stride, acc);
  }
  if (eye) {
    part_times<NP>(x, W, n0, acc);
  } else {
#pragma unroll
    for (int i = 0; i < kNS; ++i) acc[i] = 0.f;
  }
}

// A thread's states n0 .. n0 + 3 of a row of N floats (global memory); vector stores when every row is whole
// 16-byte units.
__device__ __forceinline__ void store_part(float* row, const Part& h, int n0, int N) {
  if ((N & 3) == 0 && n0 < N) {
    store4(row + n0, h);
  } else {
#pragma unroll
    for (int i = 0; i < kNS; ++i) {
      if (n0 + i < N) row[n0 + i] = h[i];
    }
  }
}

__device__ __forceinline__ void load_part(Part& h, const float* row, int n0, int N, bool on) {
#pragma unroll
  for (int i = 0; i < kNS; ++i) h[i] = (on && n0 + i < N) ? row[n0 + i] : 0.f;
}

// A thread's place in a block of either kernel: row r = dl * V + v (a warp holds consecutive vertices of one
// channel), states n0 .. n0 + kNS - 1 of it, the lanes of its row group, and its (batch row, channel).
template <int S>
struct RowThread {
  int tid, r, s, n0, v, dl, b, d;
  unsigned group;  // the row group's lanes (S divides 32)
  bool active;     // d < D
  __device__ RowThread(int V, int bd, int D)
      : tid(threadIdx.x), r(tid / S), s(tid % S), n0(s * kNS), v(r % V), dl(r / V), b(blockIdx.x),
        d(blockIdx.y * bd + dl), group(((1u << S) - 1u) << (tid % 32 - s)), active(d < D) {}
};

template <int NP, class T, class TM>
__global__ void GSK_KERNEL_BOUNDS(kMaxThreads) graph_scan_fwd_kernel(const FwdParams p) {
#ifdef GSK_EMULATE
  float* smem = emu_smem;
#else
  extern __shared__ float4 smem_dyn[];  // float4: 16-byte aligned for the vector accesses
  float* smem = reinterpret_cast<float*>(smem_dyn);
#endif
  constexpr int S = NP / kNS;  // threads per row
  const int V = p.V, K = p.K, N = p.N, L = p.L, bd = p.bd;
  const int KW = K + p.eye;
  const int KC = p.readout ? p.K_C : 0, KWC = KC > 0 ? KC + p.eye_c : 0;
  const int rows = V * bd;
  float* Ws = smem;                               // (KW, NP, NP), zero-padded
  float* WCs = Ws + KW * NP * NP;                 // (KWC, NP, NP)
  float* Ms = WCs + KWC * NP * NP;                // 2 x (K, V, VR): the step's operators, rows padded
  float* MCs = Ms + 2 * ops_floats(K, V);        // 2 x (KC, V, VR): the readout's
  float* Bs = MCs + 2 * ops_floats(KC, V);        // 2 x (V, NP): the step's B
  float* Cs = Bs + 2 * V * NP;                    // 2 x (V, NP): C (with the readout)
  float* Ys = Cs + (p.readout ? 2 * V * NP : 0);  // 2 x (K, bd, V, NP): every row's h W_{k + eye}
  float* Rs = Ys + 2 * K * rows * NP;             // 2 x (KC, bd, V, NP): every row's h W_C,{k + eye_c}
  float* Hs = Rs + 2 * KC * rows * NP;            // (bd, V, NP): every row's h (the group exchange)
  float* Ps = Hs + rows * NP;                     // (bd, V, S): partial y sums (with the readout)
  const RowThread<S> th(V, bd, p.D);
  const int tid = th.tid, nthr = blockDim.x, r = th.r, s = th.s, n0 = th.n0, v = th.v, dl = th.dl, VR = round4(V);
  const int b = th.b, d = th.d;
  const unsigned group = th.group;
  const bool active = th.active;

  for (int i = tid; i < (KW + KWC) * NP * NP; i += nthr) {  // Ws and WCs are contiguous
    const int k = i / (NP * NP), m = (i / NP) % NP, n = i % NP;
    const float* W = k < KW ? p.W + k * N * N : p.W_c + (k - KW) * N * N;
    Ws[i] = (m < N && n < N) ? W[m * N + n] : 0.f;
  }
  Part Arow, h;
  const int dd = active ? d : 0;
  const int64_t row = (static_cast<int64_t>(b) * V + v) * p.D + dd;  // (b, v, d)
  load_part(Arow, p.A + dd * N, n0, N, active);
  load_part(h, p.h0 + (p.has_h0 ? b * p.s_h0b + (static_cast<int64_t>(v) * p.D + dd) * N : 0), n0, N,
            active && p.has_h0);
  const float bias = (active && p.has_bias) ? p.bias[d] : 0.f;
  const float Dd = (active && p.readout && p.has_d) ? p.Dp[d] : 0.f;
  const T* u_row = static_cast<const T*>(p.u) + row * L;
  const T* dl_row = static_cast<const T*>(p.delta) + row * L;
  const T* B_b = static_cast<const T*>(p.B) + static_cast<int64_t>(b) * V * N * L;
  const T* C_b = p.readout ? static_cast<const T*>(p.C) + static_cast<int64_t>(b) * V * N * L : nullptr;
  const TM* mix_b = static_cast<const TM*>(p.mix) + b * p.s_mb;
  const TM* mixc_b = KC > 0 ? static_cast<const TM*>(p.mix_c) + b * p.s_mcb : nullptr;

  // a (V, NP) slice of a (batch, V, N, L) input at step t, by the whole block
  auto stage_vn = [&](float* dst, const T* src, int t) {
    for (int i = tid; i < V * NP; i += nthr) {
      const int vv = i / NP, n = i % NP;
      dst[i] = n < N ? to_float(src[(static_cast<int64_t>(vv) * N + n) * L + t]) : 0.f;
    }
  };
  auto stage_ops = [&](float* dst, const TM* src, int KK, int64_t st, int64_t sk, int64_t si, int64_t sj, int t) {
    for (int i = tid; i < KK * V * V; i += nthr) {
      const int k = i / (V * V), rr = (i / V) % V, c = i % V;
      dst[(k * V + rr) * VR + c] = to_float(src[t * st + k * sk + rr * si + c * sj]);
    }
  };
  auto stage = [&](int t, int buf) {  // the step's operators and B
    stage_ops(Ms + buf * ops_floats(K, V), mix_b, K, p.s_mt, p.s_mk, p.s_mi, p.s_mj, t);
    stage_vn(Bs + buf * V * NP, B_b, t);
  };
  auto stage_readout = [&](int t, int buf) {  // the readout's operators and C of step t
    stage_ops(MCs + buf * ops_floats(KC, V), mixc_b, KC, p.s_mct, p.s_mck, p.s_mci, p.s_mcj, t);
    stage_vn(Cs + buf * V * NP, C_b, t);
  };

  if (p.states != nullptr && active) store_part(p.states + row * N, h, n0, N);
  stage(p.t0, p.t0 & 1);
  float u_next = active ? to_float(u_row[p.t0]) : 0.f;
  float pre_next = active ? to_float(dl_row[p.t0]) : 0.f;
  float u_prev = 0.f;  // u of the step whose readout this iteration forms
  __syncthreads();

  // iteration t: the update of step t (t < t1) and the readout of step t - 1 (t > t0)
  const int t_end = p.t1 + (p.readout ? 1 : 0);
  for (int t = p.t0; t < t_end; ++t) {
    const int cur = t & 1;
    const bool upd = t < p.t1, ro = p.readout && t > p.t0;
    if (upd && p.ckpt != nullptr && active && t % p.chunk == 0) {
      const int64_t ck = ((static_cast<int64_t>(b) * p.nc + t / p.chunk) * V + v) * p.D + d;
      store_part(p.ckpt + ck * N, h, n0, N);
    }
    const float uu = u_next;
    float pre = pre_next;
    float* Y = Ys + cur * K * rows * NP;
    float* R = Rs + cur * KC * rows * NP;
    Part acc, g;
    if (upd || (ro && KC > 0)) {
      // the row's states from its group (Hs is read before this step's block barrier and written after the last)
      store4(Hs + r * NP + n0, h);
      __syncwarp(group);
      float hr[NP];
      load_row<NP>(hr, Hs + r * NP);
      if (upd) operator_parts<NP>(hr, Ws, K, p.eye, n0, Y + r * NP + n0, rows * NP, acc);
      if (ro && KC > 0) operator_parts<NP>(hr, WCs, KC, p.eye_c, n0, R + r * NP + n0, rows * NP, g);
    }
    __syncthreads();  // every row's h W_k (and h W_C,k), the step's operators, B (and C) are in shared memory
    // the other parity buffers were last read in iteration t - 1, which every thread has finished
    if (t + 1 < p.t1) {
      stage(t + 1, cur ^ 1);
      if (active) {
        u_next = to_float(u_row[t + 1]);
        pre_next = to_float(dl_row[t + 1]);
      }
    }
    if (p.readout && upd) stage_readout(t, cur);  // read in iteration t + 1
    if (ro) {  // y of step q = t - 1 from h (still h_q)
      const int q = t - 1, qb = q & 1;
      if (KC > 0) {
        const float* Mc = MCs + qb * ops_floats(KC, V);
        for (int k = 0; k < KC; ++k) vertex_sum<NP>(g, Mc + (k * V + v) * VR, R + (k * rows + dl * V) * NP + n0, V);
      } else {
#pragma unroll
        for (int i = 0; i < kNS; ++i) g[i] = h[i];
      }
      const float* Cv = Cs + qb * V * NP + v * NP + n0;
      float yp = 0.f;
#pragma unroll
      for (int i = 0; i < kNS; ++i) yp += g[i] * Cv[i];
      // (Ps is written after this step's block barrier and read before the next one)
      Ps[tid] = yp;
      __syncwarp(group);
      if (s == 0 && active) {
        float y = Dd * u_prev;
#pragma unroll
        for (int j = 0; j < S; ++j) y += Ps[tid + j];
        if (p.y != nullptr) p.y[row * L + q] = y;
        if (p.out != nullptr) {
          if (p.has_z) {
            const float zz = to_float(static_cast<const T*>(p.z)[row * L + q]);
            y *= zz / (1.f + expf(-zz));
          }
          store_as(static_cast<T*>(p.out) + row * L + q, y);
        }
      }
    }
    if (upd) {
      const float* M = Ms + cur * ops_floats(K, V);
      for (int k = 0; k < K; ++k) vertex_sum<NP>(acc, M + (k * V + v) * VR, Y + (k * rows + dl * V) * NP + n0, V);
      pre += bias;
      const float dt = p.softplus ? (pre > 20.f ? pre : log1pf(expf(pre))) : pre;
      const float du = dt * uu;
      const float* Bv = Bs + cur * V * NP + v * NP + n0;
#pragma unroll
      for (int i = 0; i < kNS; ++i) h[i] = acc[i] * expf(dt * Arow[i]) + du * Bv[i];
      if (p.states != nullptr && active) store_part(p.states + (t - p.t0 + 1) * p.s_st + row * N, h, n0, N);
    }
    u_prev = uu;
  }
  if (p.last != nullptr && active) store_part(p.last + row * N, h, n0, N);
}

}  // namespace gsk
