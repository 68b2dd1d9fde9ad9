// The graph selective scan's forward recurrence on CUDA cores, one thread per (vertex, channel) row.
//
//   P_t = [h_{t-1} W_0] + sum_k mix_k[b, t] h_{t-1} W_{k + eye}      (eye: the implicit identity operator first)
//   h_t = P_t * exp(Delta_t A[d]) + Delta_t u_t B_t
//
// Each thread keeps its row's NP states in registers. The state products h W run in the thread (W in shared
// memory, read by every thread at the same address); the vertex products need the other vertices' rows, so each
// thread writes its h W_k rows to shared memory and, after one barrier per step, sums mix_k[v, :] over them.
// Double buffers (by step parity) for those rows, the step's operators and B let one barrier per step suffice:
// a thread can only overwrite a buffer two steps later, after every thread has passed the next step's barrier.
// The step's operators and B are staged by the whole block one step ahead; u and delta are prefetched per thread.
//
// It writes the states (every step's, the chunk checkpoints and / or the last) and, with `readout`, the output
//   y_t = sum_n ([h_t W_C,0] + sum_k mix_C,k h_t W_C,k+eye_c)[v, d, n] C_t[v, n] + D u_t,  out_t = y_t silu(z_t)
// (or sum_n h_t C_t + D u_t without readout operators). The readout's vertex products need a barrier of their own;
// they share the next step's: at each barrier every row has written h_t W_A,k (for P_{t+1}) and h_t W_C,k (for
// y_t), so the readout of step t is formed one iteration late and the loop runs one extra, readout-only,
// iteration. fp32 FMA products throughout (no tensor cores): exact fp32.
//
// With GSK_EMULATE defined the same source compiles on the host (tests/graph_scan/emulate): CUDA threads become
// OS threads and shared memory one static buffer.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

namespace gsk {

constexpr int kMaxThreads = 256;  // V * bd per block (the register budget: up to 255 per thread)

struct FwdParams {
  int batch, V, D, L, N, K;  // K: stored vertex operators per step; W holds K + eye operators
  int eye, softplus, has_bias, has_h0;
  int t0, t1, chunk, nc;  // steps t0 .. t1 - 1; a checkpoint every `chunk` steps, nc per batch row
  int bd;                 // channels per block (blockDim.x = V * bd)
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

// Shared memory of one block, in floats: W, 2 x the step's operators, 2 x B, 2 x the rows' h W_k; with the readout
// also W_C, 2 x its operators, 2 x C and 2 x the rows' h W_C,k.
__host__ __device__ inline int fwd_smem_floats(int NP, int V, int K, int eye, int bd, int readout = 0, int K_C = 0,
                                               int eye_c = 0) {
  const int KC = readout ? K_C : 0, KWC = KC > 0 ? KC + eye_c : 0;
  return (K + eye + KWC) * NP * NP + round4(2 * K * V * V) + round4(2 * KC * V * V) + (readout ? 4 : 2) * V * NP +
         2 * (K + KC) * V * bd * NP;
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

// acc[n] (+)= sum_m h[m] W[m, n] for an (NP, NP) operator in shared memory (same address for every thread).
template <int NP, bool ADD>
__device__ __forceinline__ void row_times(const float (&h)[NP], const float* W, float (&acc)[NP]) {
#pragma unroll
  for (int n = 0; n < NP; ++n) {
    if (!ADD) acc[n] = 0.f;
  }
#pragma unroll
  for (int m = 0; m < NP; ++m) {
    const float hm = h[m];
#pragma unroll
    for (int n = 0; n < NP; n += 4) {
      const float4 w = *reinterpret_cast<const float4*>(W + m * NP + n);
      acc[n] += hm * w.x;
      acc[n + 1] += hm * w.y;
      acc[n + 2] += hm * w.z;
      acc[n + 3] += hm * w.w;
    }
  }
}

// acc[n] += c * row[n] for a 16-byte aligned row of NP floats in shared memory.
template <int NP>
__device__ __forceinline__ void add_scaled_row(float (&acc)[NP], float c, const float* row) {
#pragma unroll
  for (int n = 0; n < NP; n += 4) {
    const float4 w = *reinterpret_cast<const float4*>(row + n);
    acc[n] += c * w.x;
    acc[n + 1] += c * w.y;
    acc[n + 2] += c * w.z;
    acc[n + 3] += c * w.w;
  }
}

// Store a row of NP floats to a 16-byte aligned place (shared memory).
template <int NP>
__device__ __forceinline__ void store_row4(float* dst, const float (&r)[NP]) {
#pragma unroll
  for (int n = 0; n < NP; n += 4) *reinterpret_cast<float4*>(dst + n) = make_float4(r[n], r[n + 1], r[n + 2], r[n + 3]);
}

// A row x's products with K stored operators, x W_{k + eye}, into its slots of shared-memory rows (operator k's at
// rows + k * k_stride, for the vertex products after the next barrier); acc gets the identity operator's x W_0
// (eye) or zeros. W: (K + eye, NP, NP) in shared memory.
template <int NP>
__device__ __forceinline__ void operator_rows(const float (&x)[NP], const float* W, int K, int eye, float* rows,
                                              int k_stride, float (&acc)[NP]) {
  for (int k = 0; k < K; ++k) {
    row_times<NP, false>(x, W + (k + eye) * NP * NP, acc);
    store_row4<NP>(rows + k * k_stride, acc);
  }
  if (eye) {
    row_times<NP, false>(x, W, acc);
  } else {
#pragma unroll
    for (int n = 0; n < NP; ++n) acc[n] = 0.f;
  }
}

template <int NP>
__device__ __forceinline__ void store_row(float* dst, const float (&h)[NP], int N) {
  if (N == NP) {
    store_row4<NP>(dst, h);
  } else {
#pragma unroll
    for (int n = 0; n < NP; ++n) {
      if (n < N) dst[n] = h[n];
    }
  }
}

template <int NP, class T, class TM>
__global__ void __launch_bounds__(kMaxThreads) graph_scan_fwd_kernel(const FwdParams p) {
#ifdef GSK_EMULATE
  float* smem = emu_smem;
#else
  extern __shared__ float4 smem_dyn[];  // float4: 16-byte aligned for the vector accesses
  float* smem = reinterpret_cast<float*>(smem_dyn);
#endif
  const int V = p.V, K = p.K, N = p.N, L = p.L, bd = p.bd;
  const int KW = K + p.eye;
  const int KC = p.readout ? p.K_C : 0, KWC = KC > 0 ? KC + p.eye_c : 0;
  float* Ws = smem;                            // (KW, NP, NP), zero-padded
  float* WCs = Ws + KW * NP * NP;              // (KWC, NP, NP)
  float* Ms = WCs + KWC * NP * NP;             // 2 x (K, V, V): the step's operators
  float* MCs = Ms + round4(2 * K * V * V);     // 2 x (KC, V, V): the readout's
  float* Bs = MCs + round4(2 * KC * V * V);    // 2 x (V, NP): the step's B
  float* Cs = Bs + 2 * V * NP;                 // 2 x (V, NP): C (with the readout)
  float* Ys = Cs + (p.readout ? 2 * V * NP : 0);  // 2 x (K, V, bd, NP): every row's h W_{k + eye}
  float* Rs = Ys + 2 * K * V * bd * NP;        // 2 x (KC, V, bd, NP): every row's h W_C,{k + eye_c}
  const int tid = threadIdx.x, nthr = blockDim.x;
  const int v = tid / bd, dl = tid % bd;
  const int b = blockIdx.x, d = blockIdx.y * bd + dl;
  const bool active = d < p.D;

  for (int i = tid; i < (KW + KWC) * NP * NP; i += nthr) {  // Ws and WCs are contiguous
    const int k = i / (NP * NP), m = (i / NP) % NP, n = i % NP;
    const float* W = k < KW ? p.W + k * N * N : p.W_c + (k - KW) * N * N;
    Ws[i] = (m < N && n < N) ? W[m * N + n] : 0.f;
  }
  float Arow[NP], h[NP];
  const int64_t row = (static_cast<int64_t>(b) * V + v) * p.D + (active ? d : 0);  // (b, v, d)
  const int64_t row_h0 = static_cast<int64_t>(v) * p.D + (active ? d : 0);
#pragma unroll
  for (int n = 0; n < NP; ++n) {
    Arow[n] = (active && n < N) ? p.A[(active ? d : 0) * N + n] : 0.f;
    h[n] = (active && p.has_h0 && n < N) ? p.h0[b * p.s_h0b + row_h0 * N + n] : 0.f;
  }
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
      const int k = i / (V * V), r = (i / V) % V, c = i % V;
      dst[i] = to_float(src[t * st + k * sk + r * si + c * sj]);
    }
  };
  auto stage = [&](int t, int buf) {  // the step's operators and B
    stage_ops(Ms + buf * K * V * V, mix_b, K, p.s_mt, p.s_mk, p.s_mi, p.s_mj, t);
    stage_vn(Bs + buf * V * NP, B_b, t);
  };
  auto stage_readout = [&](int t, int buf) {  // the readout's operators and C of step t
    stage_ops(MCs + buf * KC * V * V, mixc_b, KC, p.s_mct, p.s_mck, p.s_mci, p.s_mcj, t);
    stage_vn(Cs + buf * V * NP, C_b, t);
  };

  if (p.states != nullptr && active) store_row<NP>(p.states + row * N, h, N);
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
      store_row<NP>(p.ckpt + ck * N, h, N);
    }
    const float uu = u_next;
    float pre = pre_next;
    float* Y = Ys + cur * K * V * bd * NP;
    float* R = Rs + cur * KC * V * bd * NP;
    float acc[NP], g[NP];
    if (upd) operator_rows<NP>(h, Ws, K, p.eye, Y + (v * bd + dl) * NP, V * bd * NP, acc);
    if (ro && KC > 0) operator_rows<NP>(h, WCs, KC, p.eye_c, R + (v * bd + dl) * NP, V * bd * NP, g);
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
    if (ro) {  // y of step s = t - 1 from h (still h_s)
      const int s = t - 1, sb = s & 1;
      if (KC > 0) {
        const float* Mc = MCs + sb * KC * V * V;
        for (int k = 0; k < KC; ++k) {
          const float* Mrow = Mc + (k * V + v) * V;
          const float* Rk = R + (k * V * bd + dl) * NP;
          for (int j = 0; j < V; ++j) add_scaled_row<NP>(g, Mrow[j], Rk + j * bd * NP);
        }
      } else {
#pragma unroll
        for (int n = 0; n < NP; ++n) g[n] = h[n];
      }
      const float* Cv = Cs + sb * V * NP + v * NP;
      float y = Dd * u_prev;
#pragma unroll
      for (int n = 0; n < NP; ++n) y += g[n] * Cv[n];
      if (active) {
        if (p.y != nullptr) p.y[row * L + s] = y;
        if (p.out != nullptr) {
          if (p.has_z) {
            const float zz = to_float(static_cast<const T*>(p.z)[row * L + s]);
            y *= zz / (1.f + expf(-zz));
          }
          store_as(static_cast<T*>(p.out) + row * L + s, y);
        }
      }
    }
    if (upd) {
      const float* M = Ms + cur * K * V * V;
      for (int k = 0; k < K; ++k) {
        const float* Mrow = M + (k * V + v) * V;
        const float* Yk = Y + (k * V * bd + dl) * NP;
        for (int j = 0; j < V; ++j) add_scaled_row<NP>(acc, Mrow[j], Yk + j * bd * NP);
      }
      pre += bias;
      const float dt = p.softplus ? (pre > 20.f ? pre : log1pf(expf(pre))) : pre;
      const float du = dt * uu;
      const float* Bv = Bs + cur * V * NP + v * NP;
#pragma unroll
      for (int n = 0; n < NP; ++n) h[n] = acc[n] * expf(dt * Arow[n]) + du * Bv[n];
      if (p.states != nullptr && active) store_row<NP>(p.states + (t - p.t0 + 1) * p.s_st + row * N, h, N);
    }
    u_prev = uu;
  }
  if (p.last != nullptr && active) store_row<NP>(p.last + row * N, h, N);
}

}  // namespace gsk
