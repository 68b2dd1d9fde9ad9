// The split backward's adjoint recurrence on CUDA cores (the CUDA twin of the Triton `_graph_scan_adj_kernel`, with
// the readout's adjoint inline), one thread per (vertex, channel) row, walking steps t1 - 1 .. t0:
//
//   dy_t   = d_out_t * silu'(z)-gate               (dz_t from the stored pre-gate y)
//   g     += sum_k mix_C,k^T (dy_t (x) C_t W_C,k^T)   [+ dy_t (x) C_t W_C,0^T with the implicit identity]
//   du, d delta, dA, dB, dD, d delta_bias from the state update H_t = P_t a_t + Delta_t u_t B_t
//   dP_t   = g * a_t                                (stored for the host's operator-gradient products)
//   g      = sum_k mix_A,k^T (dP_t W_A,k^T)          [+ dP_t W_A,0^T]
//
// Two barriers per step: after every row's dy is in shared memory (the readout's adjoint sums over vertices), and
// after every row's dP W^T and dB contribution is (the state adjoint sums over vertices, dB over channels). The
// step's operators, B and C are staged by the block one step ahead into parity buffers; C W_C^T of the step is
// formed by the block before the first barrier. dB is summed over the block's channels in a fixed order (a
// per-block partial, or atomics into one slot); dA, dD and d delta_bias are summed over the block's vertices at the
// end and added to per-(batch row, channel) partials this block owns. fp32 FMAs throughout.
#pragma once

#include "graph_scan_fwd.cuh"

namespace gsk {

constexpr int kMaxThreadsAdj = 256;  // V * bd per block (registers: up to 255 per thread)

struct AdjParams {
  int batch, V, D, L, N, K_A, K_C;  // K_C = 0: no readout operators (the readout is C itself)
  int eye_a, eye_c, softplus, has_bias, has_d, has_z, bc_atomic;
  int t0, t1, bd;
  int lb, tb;                                  // dB partial slots: steps tb .. tb + lb - 1 (its last dim)
  int64_t s_ma_b, s_ma_t, s_ma_k, s_ma_i, s_ma_j;
  int64_t s_mc_b, s_mc_t, s_mc_k, s_mc_i, s_mc_j;
  int64_t s_do_b, s_do_v, s_do_d, s_do_t;      // d_out strides
  int64_t s_st;                                // state / dP slot stride (batch * V * D * N)
  int64_t s_dy;                                // dy slot stride (batch * V * D)
  int64_t s_db_part;                           // dB partial stride (0 with atomics)
  const void *u, *delta, *B, *C, *z, *dout;    // inputs' dtype (T); u, delta, z (batch, V, D, L); B, C (batch, V, N, L)
  const void *mix_a, *mix_c;                   // TM, through the strides
  const float *A, *W_a, *W_c, *Dp, *bias, *y;  // y: the pre-gate output (batch, V, D, L), fp32
  const float* states;                         // slot j: state after step t0 + j - 1
  float* g;                                    // (batch, V, D, N): in, the adjoint after step t1 - 1; out, entering t0
  float *dp, *dy;                              // slot t - t0
  void *du, *ddelta, *dz;                      // T
  float *dA, *dD, *dbias;                      // (batch, D, N), (batch, D), (batch, D): added to
  float* dB;                                   // (parts, batch, V, N, lb) or one slot with atomics
};

__host__ __device__ inline int adj_smem_floats(int NP, int V, int K_A, int K_C, int eye_a, int eye_c, int bd) {
  const int KWA = K_A + eye_a, KWC = K_C > 0 ? K_C + eye_c : 0;
  return KWA * NP * NP + KWC * NP * NP            // W_A^T, W_C^T
         + round4(2 * K_A * V * V) + round4(2 * K_C * V * V)  // the step's operators, 2 buffers
         + 2 * 2 * V * NP                         // B, C, 2 buffers
         + KWC * V * NP                           // C W_C^T of the step
         + round4(V * bd)                         // dy
         + K_A * V * bd * NP                      // dP W_A^T rows
         + V * bd * NP;                           // dB rows (and the final reductions)
}


__device__ __forceinline__ void add_to(float* p, float x, bool atomic) {
#ifdef GSK_EMULATE
  if (atomic) {
    std::atomic_ref<float>(*p).fetch_add(x, std::memory_order_relaxed);
  } else {
    *p = x;
  }
#else
  if (atomic) {
    atomicAdd(p, x);
  } else {
    *p = x;
  }
#endif
}

template <int NP, class T, class TM>
__global__ void __launch_bounds__(kMaxThreadsAdj) graph_scan_adj_kernel(const AdjParams p) {
#ifdef GSK_EMULATE
  float* smem = emu_smem;
#else
  extern __shared__ float4 smem_dyn[];
  float* smem = reinterpret_cast<float*>(smem_dyn);
#endif
  const int V = p.V, N = p.N, L = p.L, bd = p.bd, KA = p.K_A, KC = p.K_C;
  const int KWA = KA + p.eye_a, KWC = KC > 0 ? KC + p.eye_c : 0;
  float* WAt = smem;                              // (KWA, NP, NP): WAt[k][m][n] = W_A[k][n][m]
  float* WCt = WAt + KWA * NP * NP;               // (KWC, NP, NP)
  float* MA = WCt + KWC * NP * NP;                // 2 x (K_A, V, V)
  float* MC = MA + round4(2 * KA * V * V);        // 2 x (K_C, V, V)
  float* BC = MC + round4(2 * KC * V * V);        // 2 x [B (V, NP), C (V, NP)]
  float* CW = BC + 4 * V * NP;                    // (KWC, V, NP): C W_C^T of the step
  float* DY = CW + KWC * V * NP;                  // (V, bd)
  float* Z = DY + round4(V * bd);                 // (K_A, V, bd, NP)
  float* DBs = Z + KA * V * bd * NP;              // (V, bd, NP)
  const int tid = threadIdx.x, nthr = blockDim.x;
  const int v = tid / bd, dl = tid % bd;
  const int b = blockIdx.x, d = blockIdx.y * bd + dl;
  const bool active = d < p.D;
  const int dd = active ? d : 0;

  for (int i = tid; i < (KWA + KWC) * NP * NP; i += nthr) {
    const int k = i / (NP * NP), m = (i / NP) % NP, n = i % NP;
    const float* W = k < KWA ? p.W_a + k * N * N : p.W_c + (k - KWA) * N * N;
    WAt[i] = (m < N && n < N) ? W[n * N + m] : 0.f;  // WAt and WCt are contiguous: one transposed copy
  }
  const int64_t row = (static_cast<int64_t>(b) * V + v) * p.D + dd;
  float Arow[NP], g[NP], dA_acc[NP];
#pragma unroll
  for (int n = 0; n < NP; ++n) {
    Arow[n] = (active && n < N) ? p.A[dd * N + n] : 0.f;
    g[n] = (active && n < N) ? p.g[row * N + n] : 0.f;
    dA_acc[n] = 0.f;
  }
  const float bias = (active && p.has_bias) ? p.bias[d] : 0.f;
  const float Dd = (active && p.has_d) ? p.Dp[d] : 0.f;
  float dD_acc = 0.f, dbias_acc = 0.f;
  const T* u_row = static_cast<const T*>(p.u) + row * L;
  const T* dl_row = static_cast<const T*>(p.delta) + row * L;
  const T* z_row = p.has_z ? static_cast<const T*>(p.z) + row * L : nullptr;
  const float* y_row = p.has_z ? p.y + row * L : nullptr;
  const T* do_row = static_cast<const T*>(p.dout) + b * p.s_do_b + v * p.s_do_v + dd * p.s_do_d;
  T* du_row = static_cast<T*>(p.du) + row * L;
  T* ddl_row = static_cast<T*>(p.ddelta) + row * L;
  T* dz_row = p.has_z ? static_cast<T*>(p.dz) + row * L : nullptr;
  const T* B_b = static_cast<const T*>(p.B) + static_cast<int64_t>(b) * V * N * L;
  const T* C_b = static_cast<const T*>(p.C) + static_cast<int64_t>(b) * V * N * L;
  const TM* ma_b = static_cast<const TM*>(p.mix_a) + b * p.s_ma_b;
  const TM* mc_b = KC > 0 ? static_cast<const TM*>(p.mix_c) + b * p.s_mc_b : nullptr;

  auto stage = [&](int t, int buf) {  // the step's operators, B and C, by the whole block
    float* Ma = MA + buf * KA * V * V;
    for (int i = tid; i < KA * V * V; i += nthr) {
      const int k = i / (V * V), r = (i / V) % V, c = i % V;
      Ma[i] = to_float(ma_b[t * p.s_ma_t + k * p.s_ma_k + r * p.s_ma_i + c * p.s_ma_j]);
    }
    float* Mc = MC + buf * KC * V * V;
    for (int i = tid; i < KC * V * V; i += nthr) {
      const int k = i / (V * V), r = (i / V) % V, c = i % V;
      Mc[i] = to_float(mc_b[t * p.s_mc_t + k * p.s_mc_k + r * p.s_mc_i + c * p.s_mc_j]);
    }
    float* Bt = BC + buf * 2 * V * NP;
    for (int i = tid; i < 2 * V * NP; i += nthr) {
      const int which = i / (V * NP), vv = (i / NP) % V, n = i % NP;
      const T* src = which == 0 ? B_b : C_b;
      Bt[i] = n < N ? to_float(src[(static_cast<int64_t>(vv) * N + n) * L + t]) : 0.f;
    }
  };

  stage(p.t1 - 1, (p.t1 - 1) & 1);
  __syncthreads();
  for (int t = p.t1 - 1; t >= p.t0; --t) {
    const int cur = t & 1;
    const float* Bv = BC + cur * 2 * V * NP + v * NP;
    const float* Cs = BC + cur * 2 * V * NP + V * NP;  // C of every vertex
    // C W_C^T of this step, for every vertex (C staged a step ahead)
    for (int i = tid; i < KWC * V * NP; i += nthr) {
      const int k = i / (V * NP), vv = (i / NP) % V, n = i % NP;
      const float* c = Cs + vv * NP;
      const float* wt = WCt + k * NP * NP;
      float s = 0.f;
      for (int m = 0; m < NP; ++m) s += c[m] * wt[m * NP + n];
      CW[i] = s;
    }
    float h[NP];
#pragma unroll
    for (int n = 0; n < NP; ++n) h[n] = (active && n < N) ? p.states[(t - p.t0 + 1) * p.s_st + row * N + n] : 0.f;
    const float uu = active ? to_float(u_row[t]) : 0.f;
    const float pre = (active ? to_float(dl_row[t]) : 0.f) + bias;
    const float dt = p.softplus ? (pre > 20.f ? pre : log1pf(expf(pre))) : pre;
    const float dout = active ? to_float(do_row[t * p.s_do_t]) : 0.f;
    float dy = dout;
    if (p.has_z && active) {
      const float zz = to_float(z_row[t]);
      const float sig = 1.f / (1.f + expf(-zz));
      dy = dout * zz * sig;
      store_as(dz_row + t, dout * y_row[t] * sig * (1.f + zz * (1.f - sig)));
    }
    if (active) p.dy[(t - p.t0) * p.s_dy + row] = dy;
    DY[v * bd + dl] = dy;
    __syncthreads();  // 1: every row's dy and this step's C W_C^T
    if (t - 1 >= p.t0) stage(t - 1, cur ^ 1);  // its buffers were last read in step t + 1
    if (KC > 0) {
      if (p.eye_c) {
        const float* cw = CW + v * NP;
#pragma unroll
        for (int n = 0; n < NP; ++n) g[n] += dy * cw[n];
      }
      const float* Mc = MC + cur * KC * V * V;
      for (int k = 0; k < KC; ++k) {
        const float* cwk = CW + (k + p.eye_c) * V * NP;
        for (int j = 0; j < V; ++j) {  // mix_C,k^T [v, j] dy[j] (C W_C,k^T)[j]
          add_scaled_row<NP>(g, Mc[(k * V + j) * V + v] * DY[j * bd + dl], cwk + j * NP);
        }
      }
    } else {
#pragma unroll
      for (int n = 0; n < NP; ++n) g[n] += dy * Cs[v * NP + n];
    }
    // through the update H_t = P_t a_t + Delta_t u_t B_t
    const float dtu = dt * uu;
    float gB = 0.f, pa_A = 0.f, dp[NP];
#pragma unroll
    for (int n = 0; n < NP; ++n) {
      const float a = expf(dt * Arow[n]);
      const float pa = g[n] * (h[n] - dtu * Bv[n]);  // g * P_t a_t
      gB += g[n] * Bv[n];
      pa_A += pa * Arow[n];
      dA_acc[n] += pa * dt;
      DBs[(v * bd + dl) * NP + n] = g[n] * dtu;
      dp[n] = g[n] * a;
    }
    float ddt = uu * gB + pa_A;
    if (p.softplus) ddt *= 1.f / (1.f + expf(-pre));
    dbias_acc += ddt;
    dD_acc += dy * uu;
    if (active) {
      store_as(du_row + t, dt * gB + dy * Dd);
      store_as(ddl_row + t, ddt);
      store_row<NP>(p.dp + (t - p.t0) * p.s_st + row * N, dp, N);
    }
    operator_rows<NP>(dp, WAt, KA, p.eye_a, Z + (v * bd + dl) * NP, V * bd * NP, g);  // g: dP W_A,0^T or 0
    __syncthreads();  // 2: every row's dP W_A^T and dB contribution
    // dB of this step, summed over the block's channels in a fixed order
    const int nd = min(bd, p.D - static_cast<int>(blockIdx.y) * bd);
    for (int i = tid; i < V * N; i += nthr) {
      const int vv = i / N, n = i % N;
      float s = 0.f;
      for (int j = 0; j < nd; ++j) s += DBs[(vv * bd + j) * NP + n];
      float* dst = p.dB + blockIdx.y * p.s_db_part + ((static_cast<int64_t>(b) * V + vv) * N + n) * p.lb + (t - p.tb);
      add_to(dst, s, p.bc_atomic);
    }
    const float* Ma = MA + cur * KA * V * V;
    for (int k = 0; k < KA; ++k) {
      const float* Zk = Z + (k * V * bd + dl) * NP;
      for (int j = 0; j < V; ++j) add_scaled_row<NP>(g, Ma[(k * V + j) * V + v], Zk + j * bd * NP);  // mix_A,k^T
    }
  }
  if (active) store_row<NP>(p.g + row * N, g, N);
  // dA, dD, d delta_bias: sum over the block's vertices (fixed order), add to this block's (b, channel) slots
  __syncthreads();  // the last step's readers of DBs are done
#pragma unroll
  for (int n = 0; n < NP; ++n) DBs[(v * bd + dl) * NP + n] = dA_acc[n];
  DY[v * bd + dl] = dD_acc;
  __syncthreads();
  if (v == 0 && active) {
    const int64_t bdn = static_cast<int64_t>(b) * p.D + d;
    for (int n = 0; n < N; ++n) {
      float s = 0.f;
      for (int j = 0; j < V; ++j) s += DBs[(j * bd + dl) * NP + n];
      p.dA[bdn * N + n] += s;
    }
    float s = 0.f;
    for (int j = 0; j < V; ++j) s += DY[j * bd + dl];
    if (p.has_d) p.dD[bdn] += s;
  }
  __syncthreads();
  DY[v * bd + dl] = dbias_acc;
  __syncthreads();
  if (v == 0 && active) {
    float s = 0.f;
    for (int j = 0; j < V; ++j) s += DY[j * bd + dl];
    p.dbias[static_cast<int64_t>(b) * p.D + d] += s;
  }
}

}  // namespace gsk
