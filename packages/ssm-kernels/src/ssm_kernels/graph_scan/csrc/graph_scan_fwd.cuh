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
// The recurrence only: it writes the states (every step's, the chunk checkpoints and / or the last), the readout
// runs elsewhere (the Triton readout kernel). fp32 FMA products throughout (no tensor cores): exact fp32.
//
// With GSK_EMULATE defined the same source compiles on the host (tests/graph_scan/emulate): CUDA threads become
// OS threads and shared memory one static buffer.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

namespace gsk {

constexpr int kMaxThreads = 512;  // V * bd per block (the register budget: 128 per thread)

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
};

__host__ __device__ inline int round4(int x) { return (x + 3) & ~3; }  // regions start 16-byte aligned

// Shared memory of one block, in floats: W, 2 x the step's operators, 2 x B, 2 x the rows' h W_k.
__host__ __device__ inline int fwd_smem_floats(int NP, int V, int K, int eye, int bd) {
  return (K + eye) * NP * NP + round4(2 * K * V * V) + 2 * V * NP + 2 * K * V * bd * NP;
}

#ifdef GSK_EMULATE
extern float emu_smem[];
#endif

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

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
  float* Ws = smem;                  // (KW, NP, NP), zero-padded
  float* Ms = Ws + KW * NP * NP;     // 2 x (K, V, V): the step's operators
  float* Bs = Ms + round4(2 * K * V * V);  // 2 x (V, NP): the step's B
  float* Ys = Bs + 2 * V * NP;       // 2 x (K, V, bd, NP): every row's h W_{k + eye}
  const int tid = threadIdx.x, nthr = blockDim.x;
  const int v = tid / bd, dl = tid % bd;
  const int b = blockIdx.x, d = blockIdx.y * bd + dl;
  const bool active = d < p.D;

  for (int i = tid; i < KW * NP * NP; i += nthr) {
    const int k = i / (NP * NP), m = (i / NP) % NP, n = i % NP;
    Ws[i] = (m < N && n < N) ? p.W[(k * N + m) * N + n] : 0.f;
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
  const T* u_row = static_cast<const T*>(p.u) + row * L;
  const T* dl_row = static_cast<const T*>(p.delta) + row * L;
  const T* B_b = static_cast<const T*>(p.B) + static_cast<int64_t>(b) * V * N * L;
  const TM* mix_b = static_cast<const TM*>(p.mix) + b * p.s_mb;

  auto stage = [&](int t, int buf) {  // the step's operators and B, by the whole block
    float* M = Ms + buf * K * V * V;
    for (int i = tid; i < K * V * V; i += nthr) {
      const int k = i / (V * V), r = (i / V) % V, c = i % V;
      M[i] = to_float(mix_b[t * p.s_mt + k * p.s_mk + r * p.s_mi + c * p.s_mj]);
    }
    float* Bt = Bs + buf * V * NP;
    for (int i = tid; i < V * NP; i += nthr) {
      const int vv = i / NP, n = i % NP;
      Bt[i] = n < N ? to_float(B_b[(static_cast<int64_t>(vv) * N + n) * L + t]) : 0.f;
    }
  };

  if (p.states != nullptr && active) store_row<NP>(p.states + row * N, h, N);
  stage(p.t0, p.t0 & 1);
  float u_next = active ? to_float(u_row[p.t0]) : 0.f;
  float pre_next = active ? to_float(dl_row[p.t0]) : 0.f;
  __syncthreads();

  for (int t = p.t0; t < p.t1; ++t) {
    const int cur = t & 1;
    if (p.ckpt != nullptr && active && t % p.chunk == 0) {
      const int64_t ck = ((static_cast<int64_t>(b) * p.nc + t / p.chunk) * V + v) * p.D + d;
      store_row<NP>(p.ckpt + ck * N, h, N);
    }
    const float uu = u_next;
    float pre = pre_next;
    float* Y = Ys + cur * K * V * bd * NP;
    float acc[NP];
    operator_rows<NP>(h, Ws, K, p.eye, Y + (v * bd + dl) * NP, V * bd * NP, acc);
    __syncthreads();  // every row's h W_k, the step's operators and B are in shared memory
    if (t + 1 < p.t1) {  // the other buffers were last read in step t - 1, which every thread has finished
      stage(t + 1, cur ^ 1);
      if (active) {
        u_next = to_float(u_row[t + 1]);
        pre_next = to_float(dl_row[t + 1]);
      }
    }
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
  if (p.last != nullptr && active) store_row<NP>(p.last + row * N, h, N);
}

}  // namespace gsk
