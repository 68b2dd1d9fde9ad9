// The split backward's adjoint recurrence on CUDA cores (the CUDA twin of the Triton `_graph_scan_adj_kernel`, with
// the readout's adjoint inline), kNS = 4 states of one (vertex, channel) row per thread as in the forward
// (graph_scan_fwd.cuh), walking steps t1 - 1 .. t0:
//
//   dy_t   = d_out_t * silu'(z)-gate               (dz_t from the stored pre-gate y)
//   g     += sum_k mix_C,k^T (dy_t (x) C_t W_C,k^T)   [+ dy_t (x) C_t W_C,0^T with the implicit identity]
//   du, d delta, dA, dB, dD, d delta_bias from the state update H_t = P_t a_t + Delta_t u_t B_t
//   dP_t   = g * a_t                                (stored for the host's operator-gradient products)
//   g      = sum_k mix_A,k^T (dP_t W_A,k^T)          [+ dP_t W_A,0^T]
//
// Two block barriers per step: after every row's dy is in shared memory (the readout's adjoint sums over
// vertices), and after every row's dP W^T and dB contribution is (the state adjoint sums over vertices, dB over
// channels). Within a row group, dP's parts are exchanged and the sums over states behind du and d delta are
// reduced through shared memory with warp barriers. Rows are laid out as in the forward (r = dl * V + v, operators
// staged transposed, rows padded, for vector loads of mix^T[v, :]). The step's operators, B and C are staged by the
// block one step ahead into parity buffers; C W_C^T of the step is formed by the block before the first barrier.
// dB is summed over the block's channels in a fixed order (a per-block partial, or atomics into one slot); dA, dD
// and d delta_bias are summed over the block's vertices at the end and added to per-(batch row, channel) partials
// this block owns. fp32 FMAs throughout.
#pragma once

#include "graph_scan_fwd.cuh"

namespace gsk {

constexpr int kMaxThreadsAdj = 512;  // V * bd * NP / kNS per block

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
         + 2 * ops_floats(K_A, V) + 2 * ops_floats(K_C, V)  // the step's operators (transposed), 2 buffers
         + 2 * 2 * V * NP                         // B, C, 2 buffers
         + KWC * V * NP                           // C W_C^T of the step
         + round4(V * bd)                         // dy
         + K_A * V * bd * NP                      // dP W_A^T rows
         + V * bd * NP                            // dB rows (and the final reductions)
         + V * bd * NP                            // dP rows (the group exchange)
         + round4(2 * block_threads(NP, V, bd));  // the group's partial sums behind du and d delta
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
__global__ void GSK_KERNEL_BOUNDS(kMaxThreadsAdj) graph_scan_adj_kernel(const AdjParams p) {
#ifdef GSK_EMULATE
  float* smem = emu_smem;
#else
  extern __shared__ float4 smem_dyn[];
  float* smem = reinterpret_cast<float*>(smem_dyn);
#endif
  constexpr int S = NP / kNS;  // threads per row
  const int V = p.V, N = p.N, L = p.L, bd = p.bd, KA = p.K_A, KC = p.K_C;
  const int KWA = KA + p.eye_a, KWC = KC > 0 ? KC + p.eye_c : 0;
  const int rows = V * bd;
  float* WAt = smem;                              // (KWA, NP, NP): WAt[k][m][n] = W_A[k][n][m]
  float* WCt = WAt + KWA * NP * NP;               // (KWC, NP, NP)
  float* MA = WCt + KWC * NP * NP;                // 2 x (K_A, V, VR): MA[k][v][j] = mix_A[k][j][v]
  float* MC = MA + 2 * ops_floats(KA, V);         // 2 x (K_C, V, VR), likewise
  float* BC = MC + 2 * ops_floats(KC, V);         // 2 x [B (V, NP), C (V, NP)]
  float* CW = BC + 4 * V * NP;                    // (KWC, V, NP): C W_C^T of the step
  float* DY = CW + KWC * V * NP;                  // (bd, V)
  float* Z = DY + round4(rows);                   // (K_A, bd, V, NP)
  float* DBs = Z + KA * rows * NP;                // (bd, V, NP)
  float* X = DBs + rows * NP;                     // (bd, V, NP): every row's dP
  float* Q = X + rows * NP;                       // (bd, V, S, 2): partial sum_n g B and sum_n g P a A
  const RowThread<S> th(V, bd, p.D);
  const int tid = th.tid, nthr = blockDim.x, r = th.r, s = th.s, n0 = th.n0, v = th.v, dl = th.dl, VR = round4(V);
  const int b = th.b, d = th.d;
  const unsigned group = th.group;
  const bool active = th.active;
  const int dd = active ? d : 0;

  for (int i = tid; i < (KWA + KWC) * NP * NP; i += nthr) {
    const int k = i / (NP * NP), m = (i / NP) % NP, n = i % NP;
    const float* W = k < KWA ? p.W_a + k * N * N : p.W_c + (k - KWA) * N * N;
    WAt[i] = (m < N && n < N) ? W[n * N + m] : 0.f;  // WAt and WCt are contiguous: one transposed copy
  }
  const int64_t row = (static_cast<int64_t>(b) * V + v) * p.D + dd;
  Part Arow, g, dA_acc;
  load_part(Arow, p.A + dd * N, n0, N, active);
  load_part(g, p.g + row * N, n0, N, active);
#pragma unroll
  for (int i = 0; i < kNS; ++i) dA_acc[i] = 0.f;
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
    float* Ma = MA + buf * ops_floats(KA, V);
    for (int i = tid; i < KA * V * V; i += nthr) {
      const int k = i / (V * V), rr = (i / V) % V, c = i % V;
      Ma[(k * V + c) * VR + rr] = to_float(ma_b[t * p.s_ma_t + k * p.s_ma_k + rr * p.s_ma_i + c * p.s_ma_j]);
    }
    float* Mc = MC + buf * ops_floats(KC, V);
    for (int i = tid; i < KC * V * V; i += nthr) {
      const int k = i / (V * V), rr = (i / V) % V, c = i % V;
      Mc[(k * V + c) * VR + rr] = to_float(mc_b[t * p.s_mc_t + k * p.s_mc_k + rr * p.s_mc_i + c * p.s_mc_j]);
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
    const float* Bv = BC + cur * 2 * V * NP + v * NP + n0;
    const float* Cs = BC + cur * 2 * V * NP + V * NP;  // C of every vertex
    // C W_C^T of this step, for every vertex (C staged a step ahead)
    for (int i = tid; i < KWC * V * NP; i += nthr) {
      const int k = i / (V * NP), vv = (i / NP) % V, n = i % NP;
      const float* c = Cs + vv * NP;
      const float* wt = WCt + k * NP * NP;
      float acc = 0.f;
      for (int m = 0; m < NP; ++m) acc += c[m] * wt[m * NP + n];
      CW[i] = acc;
    }
    Part h;
    load_part(h, p.states + (t - p.t0 + 1) * p.s_st + row * N, n0, N, active);
    const float uu = active ? to_float(u_row[t]) : 0.f;
    const float pre = (active ? to_float(dl_row[t]) : 0.f) + bias;
    const float dt = p.softplus ? (pre > 20.f ? pre : log1pf(expf(pre))) : pre;
    const float dout = active ? to_float(do_row[t * p.s_do_t]) : 0.f;
    float dy = dout;
    if (p.has_z && active) {
      const float zz = to_float(z_row[t]);
      const float sig = 1.f / (1.f + expf(-zz));
      dy = dout * zz * sig;
      if (s == 0) store_as(dz_row + t, dout * y_row[t] * sig * (1.f + zz * (1.f - sig)));
    }
    if (s == 0) {
      if (active) p.dy[(t - p.t0) * p.s_dy + row] = dy;
      DY[r] = dy;
    }
    __syncthreads();  // 1: every row's dy and this step's C W_C^T
    if (t - 1 >= p.t0) stage(t - 1, cur ^ 1);  // its buffers were last read in step t + 1
    if (KC > 0) {
      if (p.eye_c) add_scaled4(g, dy, CW + v * NP + n0);
      const float* Mc = MC + cur * ops_floats(KC, V);
      const float* dyr = DY + dl * V;
      for (int k = 0; k < KC; ++k) {
        const float* cwk = CW + (k + p.eye_c) * V * NP + n0;
        const float* mt = Mc + (k * V + v) * VR;
        int j = 0;
        for (; j + 4 <= V; j += 4) {  // mix_C,k^T [v, j] dy[j] (C W_C,k^T)[j]
          const float4 m = *reinterpret_cast<const float4*>(mt + j);
          add_scaled4(g, m.x * dyr[j], cwk + j * NP);
          add_scaled4(g, m.y * dyr[j + 1], cwk + (j + 1) * NP);
          add_scaled4(g, m.z * dyr[j + 2], cwk + (j + 2) * NP);
          add_scaled4(g, m.w * dyr[j + 3], cwk + (j + 3) * NP);
        }
        for (; j < V; ++j) add_scaled4(g, mt[j] * dyr[j], cwk + j * NP);
      }
    } else {
      add_scaled4(g, dy, Cs + v * NP + n0);
    }
    // through the update H_t = P_t a_t + Delta_t u_t B_t
    const float dtu = dt * uu;
    float gB = 0.f, pa_A = 0.f;
    Part dp, dbr;
#pragma unroll
    for (int i = 0; i < kNS; ++i) {
      const float a = expf(dt * Arow[i]);
      const float pa = g[i] * (h[i] - dtu * Bv[i]);  // g * P_t a_t
      gB += g[i] * Bv[i];
      pa_A += pa * Arow[i];
      dA_acc[i] += pa * dt;
      dbr[i] = g[i] * dtu;
      dp[i] = g[i] * a;
    }
    store4(DBs + r * NP + n0, dbr);
    if (active) store_part(p.dp + (t - p.t0) * p.s_st + row * N, dp, n0, N);
    // the row's dP and the group's partial sums (X and Q are read before the second block barrier and written
    // after the first)
    store4(X + r * NP + n0, dp);
    Q[2 * tid] = gB;
    Q[2 * tid + 1] = pa_A;
    __syncwarp(group);
    if (s == 0) {
      gB = pa_A = 0.f;
#pragma unroll
      for (int j = 0; j < S; ++j) {
        gB += Q[2 * (tid + j)];
        pa_A += Q[2 * (tid + j) + 1];
      }
      float ddt = uu * gB + pa_A;
      if (p.softplus) ddt *= 1.f / (1.f + expf(-pre));
      dbias_acc += ddt;
      dD_acc += dy * uu;
      if (active) {
        store_as(du_row + t, dt * gB + dy * Dd);
        store_as(ddl_row + t, ddt);
      }
    }
    float xr[NP];
    load_row<NP>(xr, X + r * NP);
    operator_parts<NP>(xr, WAt, KA, p.eye_a, n0, Z + r * NP + n0, rows * NP, g);  // g: dP W_A,0^T or 0
    __syncthreads();  // 2: every row's dP W_A^T and dB contribution
    // dB of this step, summed over the block's channels in a fixed order
    const int nd = min(bd, p.D - static_cast<int>(blockIdx.y) * bd);
    for (int i = tid; i < V * N; i += nthr) {
      const int vv = i / N, n = i % N;
      float acc = 0.f;
      for (int j = 0; j < nd; ++j) acc += DBs[(j * V + vv) * NP + n];
      float* dst = p.dB + blockIdx.y * p.s_db_part + ((static_cast<int64_t>(b) * V + vv) * N + n) * p.lb + (t - p.tb);
      add_to(dst, acc, p.bc_atomic);
    }
    const float* Ma = MA + cur * ops_floats(KA, V);
    for (int k = 0; k < KA; ++k) vertex_sum<NP>(g, Ma + (k * V + v) * VR, Z + (k * rows + dl * V) * NP + n0, V);
  }
  if (active) store_part(p.g + row * N, g, n0, N);
  // dA, dD, d delta_bias: sum over the block's vertices (fixed order), add to this block's (b, channel) slots
  __syncthreads();  // the last step's readers of DBs are done
  store4(DBs + r * NP + n0, dA_acc);
  if (s == 0) DY[r] = dD_acc;
  __syncthreads();
  if (v == 0 && active) {
    const int64_t bdn = static_cast<int64_t>(b) * p.D + d;
    for (int n = n0; n < n0 + kNS && n < N; ++n) {
      float acc = 0.f;
      for (int j = 0; j < V; ++j) acc += DBs[(dl * V + j) * NP + n];
      p.dA[bdn * N + n] += acc;
    }
    if (s == 0) {
      float acc = 0.f;
      for (int j = 0; j < V; ++j) acc += DY[dl * V + j];
      if (p.has_d) p.dD[bdn] += acc;
    }
  }
  __syncthreads();
  if (s == 0) DY[r] = dbias_acc;
  __syncthreads();
  if (v == 0 && active && s == 0) {
    float acc = 0.f;
    for (int j = 0; j < V; ++j) acc += DY[dl * V + j];
    p.dbias[static_cast<int64_t>(b) * p.D + d] += acc;
  }
}

}  // namespace gsk
