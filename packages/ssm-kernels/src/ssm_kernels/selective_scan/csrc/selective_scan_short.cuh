// Selective scan (Mamba-1) kernels for short sequences (L <= kShortMaxL, no cu_seqlens).
//
// Layout of the work: the NP (padded) states of a row (b, d) are split over R = NP / 4 adjacent
// lanes, each lane owning 4 states; a warp holds 32 / R rows, a block kShortThreads / R rows.
// Fewer states per thread -> short dependency chains and few registers -> many resident warps,
// which is what a latency-bound scan over a few steps needs.
//
// Per-step row scalars (softplus(delta + bias), delta * u, silu(z), D * u, the output gate and
// its derivatives) are computed once per (row, step) by the step's "owner" lane (step t belongs
// to lane t % R of the row group; its values live in register slot t / R) with every lane busy
// on its own steps, then broadcast with __shfl_sync(width R) when the step is processed. Doing
// them on every lane instead would multiply their MUFU work (exp / log / reciprocal, ~4-6 per
// element) by R, comparable to the 16 ex2 per (row, step) of the scan itself for N = 16.
// y_t = sum_n C_t[n] h_t[n] is reduced over the R lanes with __shfl_xor_sync.
//
// All loops over time are fully unrolled to the compile-time bound MAXL (guards t < L), so the
// per-step slots are registers. The backward keeps the states h_{t-1} of the whole row in
// shared memory (L x 4 floats per lane, own column) instead of checkpoints: the forward writes no checkpoints on this
// path. dC_t is produced while the states are recomputed, dB_t in the reverse pass; both are
// reduced over the rows of a warp that share a (b, group) with shuffles. When a whole block lies in
// one (b, group) (group size % rows per block == 0, e.g. TUSZ: 64 channels, 32 rows per block) the
// warps' sums go to shared memory and the block writes one partial [N][L] (coalesced) at the end;
// else each warp writes its own partials (segmented sums when a warp straddles groups). The host
// sums the partials in a fixed order. No atomics: deterministic.
#pragma once

#include "selective_scan_kernels.cuh"

namespace ssk {

// Sum over the R lanes of a row group (all lanes get the sum).
template <int R>
__device__ __forceinline__ float row_sum(float x) {
#pragma unroll
  for (int m = 1; m < R; m <<= 1) x += __shfl_xor_sync(0xffffffffu, x, m);
  return x;
}

// Value v of lane src of this row group.
template <int R>
__device__ __forceinline__ float from_lane(float v, int src) {
  if constexpr (R == 1) {
    return v;
  } else {
    return __shfl_sync(0xffffffffu, v, src, R);
  }
}

// Reduce-scatter of 4 values over the rows of a warp (lane masks R, 2R, ..., 16): scatter levels
// (count 4 -> 2 -> 1) exchange half of the values, the remaining levels add. Afterwards v[i]
// (i < 4 >> min(2, levels)) holds the warp sum of state 4 q + off + i.
template <int R, int LVL>
__device__ __forceinline__ void short_scatter_level(float (&v)[4], int lane, int& off) {
  constexpr int m = R << LVL;
  if constexpr (m < 32) {
    constexpr int cnt = 4 >> LVL;
    if constexpr (cnt > 1) {
      constexpr int half = cnt >> 1;
      const bool upper = (lane & m) != 0;
#pragma unroll
      for (int i = 0; i < half; ++i) {
        const float send = upper ? v[i] : v[i + half];
        const float keep = upper ? v[i + half] : v[i];
        v[i] = keep + __shfl_xor_sync(0xffffffffu, send, m);
      }
      if (upper) off += half;
    } else {
      v[0] += __shfl_xor_sync(0xffffffffu, v[0], m);
    }
    short_scatter_level<R, LVL + 1>(v, lane, off);
  }
}

// Reduce this step's per-row contributions v[0..3] (states 4 q .. 4 q + 3) over the rows of each
// (b, group) inside the warp. mode kShortPartWarp / kShortPartSegments: write the sums to
// out[((bg * npart + part) * N + n) * L + t]; kShortPartBlock: to this warp's shared-memory slice
// s_warp[n * L + t] (summed over the block's warps by short_flush_block). All 32 lanes must call this.
template <int R>
__device__ __forceinline__ void short_reduce_write(float (&v)[4], int mode, int lane, int q, int bg, int part,
                                                   bool lane_active, bool warp_active, float* __restrict__ out,
                                                   float* s_warp, int npart, int N, int L, int t) {
  constexpr int RPW = 32 / R;
  constexpr int NL = ilog2(RPW);
  constexpr int NS = NL < 2 ? NL : 2;  // scatter levels
  constexpr int CNT = 4 >> NS;         // values per lane afterwards
  if (mode != kShortPartSegments) {  // the whole warp lies in one (b, group)
    int off = 0;
    short_scatter_level<R, 0>(v, lane, off);
    constexpr int hi_mask = 31 & ~((R << NS) - 1);  // lane bits of the add-only levels
    if (warp_active && (lane & hi_mask) == 0) {
      const size_t base = ((size_t)bg * npart + part) * N;
#pragma unroll
      for (int i = 0; i < CNT; ++i) {
        const int n = 4 * q + off + i;
        if (n < N) {
          if (mode == kShortPartBlock) s_warp[n * L + t] = v[i];
          else out[(base + n) * L + t] = v[i];
        }
      }
    }
    return;
  }
  // general case: contiguous segments of rows share bg; segmented suffix sums, head row writes
  const int prev_bg = __shfl_up_sync(0xffffffffu, bg, R);
  const bool head = lane_active && (lane < R || prev_bg != bg);
  int obg[NL > 0 ? NL : 1];
#pragma unroll
  for (int l = 0; l < NL; ++l) obg[l] = __shfl_down_sync(0xffffffffu, bg, R << l);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float x = v[i];
#pragma unroll
    for (int l = 0; l < NL; ++l) {
      const int o = R << l;
      const float other = __shfl_down_sync(0xffffffffu, x, o);
      if (lane + o < 32 && obg[l] == bg) x += other;
    }
    const int n = 4 * q + i;
    if (head && n < N) out[(((size_t)bg * npart + part) * N + n) * L + t] = x;
  }
}

// Block mode: sum the warps' slices s_part[w][n][t] and write them (coalesced) as the block's partial
// out[((bg * npart + part) * N + n) * L + t], part = the block's index inside its (b, group).
// Called by all threads after a __syncthreads().
__device__ __forceinline__ void short_flush_block(const float* s_part, int np, float* __restrict__ out, int row0,
                                                  int gs, int rpb, int npart, int N, int L) {
  const int bg = row0 / gs;
  const int part = (row0 - bg * gs) / rpb;
  float* dst = out + ((size_t)bg * npart + part) * N * L;
  constexpr int W = kShortThreads / 32;
  for (int i = threadIdx.x; i < N * L; i += kShortThreads) {
    float acc = 0.f;
#pragma unroll
    for (int w = 0; w < W; ++w) acc += s_part[w * np * L + i];
    dst[i] = acc;
  }
}

// Staged B / C (ScanParams::short_stage_b / _c: every row of the block in one (b, group)): the (N, L) slice of
// the block's (b, group) at src goes to s[t * NP + n] (states >= N zero), so that a lane's 4 states of a step
// are one 16-byte shared-memory read instead of 4 scalar global loads. Called by all threads (a barrier follows).
template <int NP, typename TBC>
__device__ __forceinline__ void short_stage(float* s, const TBC* __restrict__ src, int N, int L) {
  for (int i = threadIdx.x; i < NP * L; i += kShortThreads) {
    const int n = i / L;
    const int t = i - n * L;
    s[t * NP + n] = n < N ? to_f<TBC>(src[(size_t)n * L + t]) : 0.f;
  }
}

// Coefficients n0 .. n0 + 3 of B or C at step t: from the staged tile (staged != nullptr) or global memory.
template <int NP, typename TBC>
__device__ __forceinline__ void short_coefs(float (&v)[4], const float* staged, const TBC* var_row,
                                            const float* const_row, int n0, int N, int L, int t) {
  if (staged != nullptr) {
    const float4 w = *reinterpret_cast<const float4*>(staged + t * NP + n0);
    v[0] = w.x;
    v[1] = w.y;
    v[2] = w.z;
    v[3] = w.w;
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = n0 + i < N ? coef<TBC>(var_row, const_row, n0 + i, L, t) : 0.f;
  }
}

// Stage the block's B and / or C at s (B at s, C at s + L NP) as the flags ask; returns the tiles (nullptr
// where not staged). Called by all threads.
template <int NP, typename TBC>
__device__ __forceinline__ void short_stage_bc(const ScanParams& p, float* s, int row0, const float*& sB,
                                               const float*& sC) {
  sB = nullptr;
  sC = nullptr;
  if (!(p.short_stage_b || p.short_stage_c)) return;
  if (p.short_stage_b) {
    short_stage<NP, TBC>(s, static_cast<const TBC*>(p.B) + (size_t)(row0 / (p.dim / p.b_groups)) * p.N * p.L, p.N,
                         p.L);
    sB = s;
  }
  if (p.short_stage_c) {
    float* sc = s + (size_t)p.L * NP;
    short_stage<NP, TBC>(sc, static_cast<const TBC*>(p.C) + (size_t)(row0 / (p.dim / p.c_groups)) * p.N * p.L, p.N,
                         p.L);
    sC = sc;
  }
  __syncthreads();
}

// ------------------------------------------------------------------------------------------
// forward
// ------------------------------------------------------------------------------------------
template <int NP, int MAXL, typename T, typename TBC, bool STAGE, int MINB = 1>
__global__ void __launch_bounds__(kShortThreads, MINB) scan_fwd_short_kernel(const ScanParams p) {
  constexpr int R = NP / 4;                     // lanes per row
  constexpr int RPB = kShortThreads / R;        // rows per block
  constexpr int KS = (MAXL + R - 1) / R;        // owned steps per lane
  const int tid = threadIdx.x;
  const int q = tid & (R - 1);
  const int row = blockIdx.x * RPB + tid / R;
  const bool active = row < p.nrows;
  const int row_c = active ? row : p.nrows - 1;
  const int b = row_c / p.dim;
  const int d = row_c - b * p.dim;
  const int N = p.N;
  const int L = p.L;
  const int n0 = 4 * q;

  const T* u = static_cast<const T*>(p.u) + (size_t)row_c * L;
  const T* delta = static_cast<const T*>(p.delta) + (size_t)row_c * L;
  const T* z = p.z != nullptr ? static_cast<const T*>(p.z) + (size_t)row_c * L : nullptr;
  const float bias = p.delta_bias != nullptr ? p.delta_bias[d] : 0.f;
  const float Dd = p.D != nullptr ? p.D[d] : 0.f;

  // ---- owned steps t = q + k R: loads first, then the element-wise prologue ----
  float s_dt[KS], s_dtu[KS], s_du[KS], s_gate[KS];
#pragma unroll
  for (int k = 0; k < KS; ++k) {
    const int t = q + k * R;
    s_dtu[k] = 0.f;
    s_dt[k] = 0.f;
    s_gate[k] = 0.f;
    if (t < L) {
      s_dtu[k] = to_f<T>(u[t]);
      s_dt[k] = to_f<T>(delta[t]);
      if (z != nullptr) s_gate[k] = to_f<T>(z[t]);
    }
  }
#pragma unroll
  for (int k = 0; k < KS; ++k) {
    if (k * R >= L) break;  // slot empty on every lane (uniform): skip its MUFU work
    const float uu = s_dtu[k];
    const float x = s_dt[k] + bias;
    const float dt = p.softplus ? softplus_f(x) : x;
    s_dt[k] = dt;
    s_dtu[k] = dt * uu;
    s_du[k] = Dd * uu;
    const float zz = s_gate[k];
    s_gate[k] = z != nullptr ? zz * sigmoid_f(zz) : 1.f;
  }

  float A2[4], h[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int n = n0 + i;
    A2[i] = n < N ? p.A[(size_t)d * N + n] * kLog2e : 0.f;
    h[i] = (p.h0 != nullptr && n < N) ? p.h0[((size_t)b * p.dim + d) * N + n] : 0.f;
  }
  [[maybe_unused]] const auto [Bv, Bc, bgB, partB] = coef_source<TBC>(p.B, p.b_groups, p.dim, N, L, row_c, d);
  [[maybe_unused]] const auto [Cv, Cc, bgC, partC] = coef_source<TBC>(p.C, p.c_groups, p.dim, N, L, row_c, d);
  const float* sB = nullptr;  // staged B / C (STAGE: a separate instantiation, so that the plain one keeps
  const float* sC = nullptr;  // its register count)
  if constexpr (STAGE) {
    extern __shared__ float smem[];
    short_stage_bc<NP, TBC>(p, smem, blockIdx.x * RPB, sB, sC);
  }

#pragma unroll
  for (int t = 0; t < MAXL; ++t) {
    if (t < L) {
      const int src = t % R;
      const int k = t / R;
      const float dt = from_lane<R>(s_dt[k], src);
      const float dtu = from_lane<R>(s_dtu[k], src);
      float bv[4], cv[4];
      short_coefs<NP, TBC>(bv, sB, Bv, Bc, n0, N, L, t);
      short_coefs<NP, TBC>(cv, sC, Cv, Cc, n0, N, L, t);
#pragma unroll
      for (int i = 0; i < 4; ++i) h[i] = exp2_approx(dt * A2[i]) * h[i] + dtu * bv[i];
      const float y = row_sum<R>((h[0] * cv[0] + h[1] * cv[1]) + (h[2] * cv[2] + h[3] * cv[3]));
      if (q == src) s_gate[k] *= y + s_du[k];  // output of step t (owner lane)
    }
  }

  if (active) {
    T* out = static_cast<T*>(p.out) + (size_t)row * L;
#pragma unroll
    for (int k = 0; k < KS; ++k) {
      const int t = q + k * R;
      if (t < L) out[t] = from_f<T>(s_gate[k]);
    }
    if (p.last != nullptr) {
#pragma unroll
      for (int i = 0; i < 4; ++i)
        if (n0 + i < N) p.last[((size_t)b * p.dim + d) * N + n0 + i] = h[i];
    }
  }
}

// ------------------------------------------------------------------------------------------
// backward
// ------------------------------------------------------------------------------------------
template <int NP, int MAXL, typename T, typename TBC, bool STAGE, int MINB = 1>
__global__ void __launch_bounds__(kShortThreads, MINB) scan_bwd_short_kernel(const ScanParams p) {
  constexpr int R = NP / 4;
  constexpr int RPB = kShortThreads / R;
  constexpr int RPW = 32 / R;  // rows per warp
  constexpr int KS = (MAXL + R - 1) / R;
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int q = tid & (R - 1);
  const int row = blockIdx.x * RPB + tid / R;
  const bool active = row < p.nrows;
  const bool warp_active = blockIdx.x * RPB + (tid & ~31) / R < p.nrows;
  const int row_c = active ? row : p.nrows - 1;
  const int b = row_c / p.dim;
  const int d = row_c - b * p.dim;
  const int N = p.N;
  const int L = p.L;
  const int n0 = 4 * q;

  const T* u = static_cast<const T*>(p.u) + (size_t)row_c * L;
  const T* delta = static_cast<const T*>(p.delta) + (size_t)row_c * L;
  const T* z = p.z != nullptr ? static_cast<const T*>(p.z) + (size_t)row_c * L : nullptr;
  const T* dout = static_cast<const T*>(p.dout) + (size_t)row_c * L;
  const float bias = p.delta_bias != nullptr ? p.delta_bias[d] : 0.f;
  const float Dd = p.D != nullptr ? p.D[d] : 0.f;

  // ---- owned steps: u -> du, dt -> d delta, softplus' , dy (gated dout), dz factor -> dz ----
  float s_u[KS], s_dt[KS], s_sp[KS], s_dy[KS], s_dz[KS];
#pragma unroll
  for (int k = 0; k < KS; ++k) {
    const int t = q + k * R;
    s_u[k] = 0.f;
    s_dt[k] = 0.f;
    s_dy[k] = 0.f;
    s_dz[k] = 0.f;
    if (t < L) {
      s_u[k] = to_f<T>(u[t]);
      s_dt[k] = to_f<T>(delta[t]);
      if (active) s_dy[k] = to_f<T>(dout[t]);  // rows past the end contribute nothing
      if (z != nullptr) s_dz[k] = to_f<T>(z[t]);
    }
  }
  float dD = 0.f;
#pragma unroll
  for (int k = 0; k < KS; ++k) {
    s_sp[k] = 0.f;
    if (k * R >= L) continue;  // slot empty on every lane (uniform): skip its MUFU work
    const float x = s_dt[k] + bias;
    if (p.softplus) {
      s_dt[k] = softplus_f(x);
      s_sp[k] = sigmoid_f(x);  // d softplus(x) / dx
    } else {
      s_dt[k] = x;
      s_sp[k] = 1.f;
    }
    const float go = s_dy[k];
    if (z != nullptr) {
      const float zz = s_dz[k];
      const float sz = sigmoid_f(zz);
      s_dy[k] = go * zz * sz;
      s_dz[k] = go * sz * (1.f + zz * (1.f - sz));  // dz = this * y
    }
    dD += s_dy[k] * s_u[k];
  }

  float A2[4], h[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int n = n0 + i;
    A2[i] = n < N ? p.A[(size_t)d * N + n] * kLog2e : 0.f;
    h[i] = (p.h0 != nullptr && n < N) ? p.h0[((size_t)b * p.dim + d) * N + n] : 0.f;
  }
  // where this row reads B and C, and its (b, group) and dB / dC partial index (partials per warp)
  const auto [Bv, Bc, bgB, partB] = coef_source<TBC>(p.B, p.b_groups, p.dim, N, L, row_c, d, RPW);
  const auto [Cv, Cc, bgC, partC] = coef_source<TBC>(p.C, p.c_groups, p.dim, N, L, row_c, d, RPW);

  // ---- recompute the states (hist: state before step t, in this thread's shared-memory column), dC_t, dz_t ----
  extern __shared__ float smem[];
  float* hist = smem + tid;  // [t][i][thread]: conflict-free, no barrier needed (own column only)
  // block mode: per-warp dB / dC slices [warp][n][t] after hist (see short_bwd_smem_bytes)
  float* s_partB = smem + (size_t)L * 4 * kShortThreads + (size_t)(tid / 32) * NP * L;
  float* s_partC = s_partB + (size_t)(kShortThreads / 32) * NP * L;
  const float* sB = nullptr;  // staged B / C after the slices (STAGE instantiation only)
  const float* sC = nullptr;
  if constexpr (STAGE) {
    short_stage_bc<NP, TBC>(p, smem + (size_t)L * 4 * kShortThreads + 2 * (size_t)(kShortThreads / 32) * NP * L,
                            blockIdx.x * RPB, sB, sC);
  }
  float acc[4] = {0.f, 0.f, 0.f, 0.f};  // time-invariant C: gradient of this row
#pragma unroll
  for (int t = 0; t < MAXL; ++t) {
    if (t < L) {
      const int src = t % R;
      const int k = t / R;
      const float dt = from_lane<R>(s_dt[k], src);
      const float uu = from_lane<R>(s_u[k], src);
      const float dy = from_lane<R>(s_dy[k], src);
      const float dtu = dt * uu;
      float bv[4], cv[4];
      short_coefs<NP, TBC>(bv, sB, Bv, Bc, n0, N, L, t);
      short_coefs<NP, TBC>(cv, sC, Cv, Cc, n0, N, L, t);
      float vc[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        hist[(t * 4 + i) * kShortThreads] = h[i];
        h[i] = exp2_approx(dt * A2[i]) * h[i] + dtu * bv[i];
        vc[i] = dy * h[i];
      }
      if (z != nullptr) {
        const float y = row_sum<R>((h[0] * cv[0] + h[1] * cv[1]) + (h[2] * cv[2] + h[3] * cv[3]));
        if (q == src) s_dz[k] *= y + Dd * s_u[k];
      }
      if (p.c_groups > 0) {
        short_reduce_write<R>(vc, p.uniform_c, lane, q, bgC, partC, active, warp_active, p.dC_part, s_partC,
                              p.npart_c, N, L, t);
      } else {
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[i] += vc[i];
      }
    }
  }
  if (active && p.c_groups == 0) {
#pragma unroll
    for (int i = 0; i < 4; ++i)
      if (n0 + i < N) p.dC_part[(size_t)row * p.rp_stride + n0 + i] = acc[i];
  }

  // ---- adjoint recurrence, backwards in time ----
  float g[4], dA[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int n = n0 + i;
    g[i] = (p.dlast != nullptr && active && n < N) ? p.dlast[((size_t)b * p.dim + d) * N + n] : 0.f;
    dA[i] = 0.f;
    acc[i] = 0.f;  // now: time-invariant B
  }
  float ddb = 0.f;
#pragma unroll
  for (int t = MAXL - 1; t >= 0; --t) {
    if (t < L) {
      const int src = t % R;
      const int k = t / R;
      const float dt = from_lane<R>(s_dt[k], src);
      const float uu = from_lane<R>(s_u[k], src);
      const float dy = from_lane<R>(s_dy[k], src);
      const float dtu = dt * uu;
      float bv[4], cv[4];
      short_coefs<NP, TBC>(bv, sB, Bv, Bc, n0, N, L, t);
      short_coefs<NP, TBC>(cv, sC, Cv, Cc, n0, N, L, t);
      float sum_gb = 0.f, ddt = 0.f;
      float vb[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float a = exp2_approx(dt * A2[i]);
        const float gn = g[i] + cv[i] * dy;
        vb[i] = gn * dtu;
        sum_gb += gn * bv[i];
        const float gpa = gn * hist[(t * 4 + i) * kShortThreads] * a;
        ddt += gpa * A2[i];  // times ln 2 below (A2 = A log2 e)
        dA[i] += gpa * dt;
        g[i] = gn * a;
      }
      sum_gb = row_sum<R>(sum_gb);
      ddt = row_sum<R>(ddt);
      if (q == src) {
        const float dd = (ddt * kLn2 + sum_gb * s_u[k]) * s_sp[k];
        ddb += dd;
        s_u[k] = sum_gb * dt + Dd * dy;  // du
        s_dt[k] = dd;                    // d delta
      }
      if (p.b_groups > 0) {
        short_reduce_write<R>(vb, p.uniform_b, lane, q, bgB, partB, active, warp_active, p.dB_part, s_partB,
                              p.npart_b, N, L, t);
      } else {
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[i] += vb[i];
      }
    }
  }

  if (p.uniform_b == kShortPartBlock || p.uniform_c == kShortPartBlock) {
    __syncthreads();
    const int row0 = blockIdx.x * RPB;
    const float* s_base = smem + (size_t)L * 4 * kShortThreads;
    if (p.uniform_b == kShortPartBlock)
      short_flush_block(s_base, NP, p.dB_part, row0, p.dim / p.b_groups, RPB, p.npart_b, N, L);
    if (p.uniform_c == kShortPartBlock)
      short_flush_block(s_base + (kShortThreads / 32) * NP * L, NP, p.dC_part, row0, p.dim / p.c_groups, RPB,
                        p.npart_c, N, L);
  }
  dD = row_sum<R>(dD);
  ddb = row_sum<R>(ddb);
  if (active) {
    const size_t off = (size_t)row * L;
    T* du = static_cast<T*>(p.du) + off;
    T* ddelta = static_cast<T*>(p.ddelta) + off;
    T* dz = p.dz != nullptr ? static_cast<T*>(p.dz) + off : nullptr;
#pragma unroll
    for (int k = 0; k < KS; ++k) {
      const int t = q + k * R;
      if (t < L) {
        du[t] = from_f<T>(s_u[k]);
        ddelta[t] = from_f<T>(s_dt[k]);
        if (dz != nullptr) dz[t] = from_f<T>(s_dz[k]);
      }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int n = n0 + i;
      if (n < N) {
        p.dA_part[(size_t)row * p.rp_stride + n] = dA[i];
        if (p.b_groups == 0) p.dB_part[(size_t)row * p.rp_stride + n] = acc[i];
        if (p.dh0 != nullptr) p.dh0[((size_t)b * p.dim + d) * N + n] = g[i];
      }
    }
    if (q == 0) {
      p.dD_part[(size_t)row * p.rp_stride] = dD;
      p.ddb_part[(size_t)row * p.rp_stride] = ddb;
    }
  }
}

#ifndef SSK_EMULATE
// ------------------------------------------------------------------------------------------
// host launchers
// ------------------------------------------------------------------------------------------
template <bool BWD, int NP, typename T, typename TBC, bool STAGE, int MINB>
cudaError_t launch_short_np(const ScanParams& p, cudaStream_t stream) {
  constexpr int RPB = kShortThreads / (NP / 4);
  const int blocks = (p.nrows + RPB - 1) / RPB;
  if constexpr (BWD) {
    auto kernel = scan_bwd_short_kernel<NP, kShortMaxL, T, TBC, STAGE, MINB>;
    const size_t smem = short_bwd_smem_bytes(NP, p.L);
    if (smem > 48 * 1024) {
      const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
      if (err != cudaSuccess) return err;
    }
    kernel<<<blocks, kShortThreads, smem, stream>>>(p);
  } else {
    const size_t smem = STAGE ? short_stage_smem_bytes(NP, p.L) : 0;
    scan_fwd_short_kernel<NP, kShortMaxL, T, TBC, STAGE, MINB><<<blocks, kShortThreads, smem, stream>>>(p);
  }
  return cudaGetLastError();
}

// The staged instantiation exists for NP <= kShortStageMaxNP (set_short_options never asks for it above).
template <bool BWD, int NP, typename T, typename TBC>
cudaError_t launch_short_np(const ScanParams& p, cudaStream_t stream) {
  if constexpr (NP <= kShortStageMaxNP) {
    if (p.short_stage_b || p.short_stage_c) return launch_short_np<BWD, NP, T, TBC, true, 1>(p, stream);
  }
  // Register cap: __launch_bounds__(kShortThreads, 8) (64 registers, 8 resident blocks per SM) or none
  // (ScanParams::short_minb; see short_min_blocks in selective_scan.h).
  if (p.short_minb == 8) return launch_short_np<BWD, NP, T, TBC, false, 8>(p, stream);
  return launch_short_np<BWD, NP, T, TBC, false, 1>(p, stream);
}

// Forward (BWD = false) or backward of the short-sequence path for one input / B-C dtype pair.
template <bool BWD, typename T, typename TBC>
cudaError_t launch_short_t(const ScanParams& p, cudaStream_t stream) {
  if (p.L < 1 || p.L > kShortMaxL || p.cu != nullptr) return cudaErrorInvalidValue;
  switch (padded_state(p.N)) {
    case 4: return launch_short_np<BWD, 4, T, TBC>(p, stream);
    case 8: return launch_short_np<BWD, 8, T, TBC>(p, stream);
    case 16: return launch_short_np<BWD, 16, T, TBC>(p, stream);
    case 32: return launch_short_np<BWD, 32, T, TBC>(p, stream);
    case 64: return launch_short_np<BWD, 64, T, TBC>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}
#endif  // SSK_EMULATE

}  // namespace ssk
