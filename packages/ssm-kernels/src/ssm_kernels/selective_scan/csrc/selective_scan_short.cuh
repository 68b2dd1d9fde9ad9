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

// ------------------------------------------------------------------------------------------
// one thread per row (ScanParams::short_rows; see short_rows_ok in selective_scan.h)
// ------------------------------------------------------------------------------------------
//
// The lane-split kernels above spend most of their instructions on moving per-step scalars between the lanes of a
// row and on reducing over a few rows at a time. When a warp's 32 rows share one (b, group) of variable B and C, a
// thread can own a whole row instead: its NP <= 16 states are independent chains in registers (ILP without any
// shuffle in the recurrence), B_t / C_t are 16-byte broadcast reads of the warp's staged [L][NP] slices, and the
// dB / dC sums over the warp's rows are one reduce-scatter per step (NP - 1 shuffles, not NP log 32).
//
// Every warp works alone (its own shared-memory slice, __syncwarp only). The warp's 32 rows of u / delta / z /
// d_out are one contiguous run: they are read with 16-byte loads into shared memory ([row][t], odd pitch: conflict-
// free row reads), the per-step row values stay there, and outputs leave the same way. The loops over time are not
// unrolled (per-step values in shared memory, not in register arrays): a fully unrolled backward was 20-40 KB of
// code and stalled on instruction fetch (H200, ncu). The backward keeps the states before every step in shared
// memory ([t][n][lane]: conflict-free). dB / dC partials per warp, summed by the host in a fixed order:
// deterministic.

// Stage the warp's (N, L) slice of B or C (src) as dst[t * NP + n] (states >= N zero). A __syncwarp() follows.
template <int NP, typename TBC>
__device__ __forceinline__ void rows_stage(float* dst, const TBC* __restrict__ src, int N, int L, int lane) {
  for (int i = lane; i < NP * L; i += 32) {
    const int t = i / NP;
    const int n = i - t * NP;
    dst[i] = n < N ? to_f<TBC>(src[(size_t)n * L + t]) : 0.f;
  }
}

// The warp's 32 contiguous rows of L elements starting at src into s[r * P + t] (as float): 16-byte loads when src
// is aligned (it is unless the tensor's storage is offset: 32 L elements are a multiple of 16 bytes), else element
// loads. A __syncwarp() must follow before other lanes' values are read.
template <typename T>
__device__ __forceinline__ void rows_load(float* s, const T* __restrict__ src, int L, int P, int lane) {
  constexpr int V = 16 / sizeof(T);
  const int count = 32 * L;
  if (aligned16(src)) {
    for (int k = lane; k < count / V; k += 32) {
      const uint4 w = reinterpret_cast<const uint4*>(src)[k];
      int r = (k * V) / L;
      int t = k * V - r * L;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        s[r * P + t] = vec_elem<T>(w, e);
        if (++t == L) {
          t = 0;
          ++r;
        }
      }
    }
  } else {
    for (int i = lane; i < count; i += 32) {
      const int r = i / L;
      s[r * P + i - r * L] = to_f<T>(src[i]);
    }
  }
}

// The reverse of rows_load: s[r * P + t] to the 32 contiguous rows at dst. A __syncwarp() must precede it.
template <typename T>
__device__ __forceinline__ void rows_store(T* __restrict__ dst, const float* s, int L, int P, int lane) {
  constexpr int V = 16 / sizeof(T);
  const int count = 32 * L;
  if (aligned16(dst)) {
    for (int k = lane; k < count / V; k += 32) {
      int r = (k * V) / L;
      int t = k * V - r * L;
      uint4 w = make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        vec_put<T>(w, e, s[r * P + t]);
        if (++t == L) {
          t = 0;
          ++r;
        }
      }
      reinterpret_cast<uint4*>(dst)[k] = w;
    }
  } else {
    for (int i = lane; i < count; i += 32) {
      const int r = i / L;
      dst[i] = from_f<T>(s[r * P + i - r * L]);
    }
  }
}

// The four coefficients 4 j .. 4 j + 3 of a staged step.
__device__ __forceinline__ float4 rows_coef4(const float* s, int t, int j, int np) {
  return reinterpret_cast<const float4*>(s + t * np)[j];
}
__device__ __forceinline__ float f4(const float4& v, int e) { return e == 0 ? v.x : e == 1 ? v.y : e == 2 ? v.z : v.w; }

// Shared setup of the rows kernels: the warp's rows and shared-memory slice (its staged B / C first), A (log2 e),
// the initial state. `active` is false for a warp past the last row (it must leave at once).
template <int NP, typename TBC>
struct RowsSetup {
  int row, row0, b, d, lane, L, P;
  bool active;
  size_t off0;   // element offset of the warp's first row in the (batch, dim, L) arrays
  float bias, Dd;  // delta_bias[d], D[d] (0 when absent)
  float* slice;  // this warp's shared memory: B [L][NP], C [L][NP], then the kernel's own arrays
  float A2[NP];
  float h[NP];

  __device__ __forceinline__ RowsSetup(const ScanParams& p, float* smem, size_t slice_floats) {
    lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    row0 = (blockIdx.x * kRowsWarps + warp) * 32;
    active = row0 < p.nrows;  // nrows is a multiple of 32: warps are whole
    if (!active) return;
    row = row0 + lane;
    b = row / p.dim;
    d = row - b * p.dim;
    L = p.L;
    P = L | 1;  // odd pitch: lane r reading s[r * P + t] hits 32 different banks
    off0 = (size_t)row0 * L;
    bias = p.delta_bias != nullptr ? p.delta_bias[d] : 0.f;
    Dd = p.D != nullptr ? p.D[d] : 0.f;
    const int N = p.N;
    slice = smem + warp * slice_floats;
    rows_stage<NP, TBC>(slice, static_cast<const TBC*>(p.B) + (size_t)(row0 / (p.dim / p.b_groups)) * N * L, N, L,
                        lane);
    rows_stage<NP, TBC>(slice + L * NP,
                        static_cast<const TBC*>(p.C) + (size_t)(row0 / (p.dim / p.c_groups)) * N * L, N, L, lane);
#pragma unroll
    for (int n = 0; n < NP; ++n) {
      A2[n] = n < N ? p.A[(size_t)d * N + n] * kLog2e : 0.f;
      h[n] = (p.h0 != nullptr && n < N) ? p.h0[((size_t)b * p.dim + d) * N + n] : 0.f;
    }
  }
  __device__ __forceinline__ const float* sB() const { return slice; }
  __device__ __forceinline__ const float* sC() const { return slice + L * NP; }
  __device__ __forceinline__ float* rows(int i) const { return slice + 2 * L * NP + i * 32 * P; }  // row array i
  // the warp's rows of a (batch, dim, L) input into row array i / row array i out to an output
  template <typename T>
  __device__ __forceinline__ void load(int i, const void* src) const {
    rows_load<T>(rows(i), static_cast<const T*>(src) + off0, L, P, lane);
  }
  template <typename T>
  __device__ __forceinline__ void store(void* dst, int i) const {
    rows_store<T>(static_cast<T*>(dst) + off0, rows(i), L, P, lane);
  }
};

// States 4 j .. 4 j + 3 of one step: h <- exp(dt A) h + dtu B_t, accumulating C_t h into y0 (even states) and y1
// (odd ones).
template <int NP>
__device__ __forceinline__ void rows_update4(float (&h)[NP], const float (&A2)[NP], const float4& bv, const float4& cv,
                                             int j, float dt, float dtu, float& y0, float& y1) {
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const int n = 4 * j + e;
    h[n] = exp2_approx(dt * A2[n]) * h[n] + dtu * f4(bv, e);
    if (e & 1) y1 += f4(cv, e) * h[n];
    else y0 += f4(cv, e) * h[n];
  }
}

template <int NP, typename T, typename TBC>
__global__ void __launch_bounds__(32 * kRowsWarps) scan_fwd_rows_kernel(const ScanParams p) {
  extern __shared__ float smem[];
  // per warp (rows_fwd_smem_floats): staged B / C, then the u / delta / z rows (the output leaves through u's)
  RowsSetup<NP, TBC> s(p, smem, rows_fwd_smem_floats(NP, p.L));
  if (!s.active) return;
  const int L = s.L;
  const int P = s.P;
  const bool has_z = p.z != nullptr;
  s.template load<T>(0, p.u);
  s.template load<T>(1, p.delta);
  if (has_z) s.template load<T>(2, p.z);
  __syncwarp();
  float* my_u = s.rows(0) + s.lane * P;
  const float* my_dl = s.rows(1) + s.lane * P;
  const float* my_z = s.rows(2) + s.lane * P;
#pragma unroll 1
  for (int t = 0; t < L; ++t) {
    const float uu = my_u[t];
    const float x = my_dl[t] + s.bias;
    const float dt = p.softplus ? softplus_f(x) : x;
    float y0 = 0.f, y1 = 0.f;
#pragma unroll
    for (int j = 0; j < NP / 4; ++j)
      rows_update4<NP>(s.h, s.A2, rows_coef4(s.sB(), t, j, NP), rows_coef4(s.sC(), t, j, NP), j, dt, dt * uu, y0, y1);
    float y = (y0 + y1) + s.Dd * uu;
    if (has_z) {
      const float zz = my_z[t];
      y *= zz * sigmoid_f(zz);
    }
    my_u[t] = y;  // own row only: read above, not again
  }
  __syncwarp();
  s.template store<T>(p.out, 0);
  if (p.last != nullptr) {
#pragma unroll
    for (int n = 0; n < NP; ++n)
      if (n < p.N) p.last[((size_t)s.b * p.dim + s.d) * p.N + n] = s.h[n];
  }
}

// Sum v over the warp's rows (a reduce-scatter: afterwards v[0] holds state n = lane >> (5 - log2 NP)) and write it
// as out[((bg * npart + part) * N + n) * L + t] (one lane of each group of equal lanes).
template <int NP>
__device__ __forceinline__ void rows_reduce_write(float (&v)[NP], float* __restrict__ out, int bg, int part,
                                                  int npart, int N, int L, int t, int lane) {
  warp_reduce_scatter<NP>(v, lane);
  constexpr int shift = 5 - ilog2(NP);
  const int n = lane >> shift;
  if ((lane & ((1 << shift) - 1)) == 0 && n < N) out[(((size_t)bg * npart + part) * N + n) * L + t] = v[0];
}

template <int NP, typename T, typename TBC>
__global__ void __launch_bounds__(32 * kRowsWarps) scan_bwd_rows_kernel(const ScanParams p) {
  extern __shared__ float smem[];
  // per warp (rows_bwd_smem_floats): staged B / C, four row arrays (u -> du, delta -> dt -> d delta, d_out -> dy,
  // z -> dz factor -> dz), then the states before every step ([t][n][lane])
  RowsSetup<NP, TBC> s(p, smem, rows_bwd_smem_floats(NP, p.L));
  if (!s.active) return;
  const int N = p.N;
  const int L = s.L;
  const int P = s.P;
  const int lane = s.lane;
  float* hist = s.rows(4) + lane;
  const bool has_z = p.z != nullptr;
  const float Dd = s.Dd;
  s.template load<T>(0, p.u);
  s.template load<T>(1, p.delta);
  s.template load<T>(2, p.dout);
  if (has_z) s.template load<T>(3, p.z);
  __syncwarp();
  float* my_u = s.rows(0) + lane * P;
  float* my_dt = s.rows(1) + lane * P;
  float* my_dy = s.rows(2) + lane * P;
  float* my_dz = s.rows(3) + lane * P;

  // per step: dt = softplus(delta + bias), dy = d out through the gate, the dz factor
  float dD = 0.f;
#pragma unroll 1
  for (int t = 0; t < L; ++t) {
    const float x = my_dt[t] + s.bias;
    my_dt[t] = p.softplus ? softplus_f(x) : x;
    float dy = my_dy[t];
    if (has_z) {
      const float zz = my_dz[t];
      const float sz = sigmoid_f(zz);
      my_dz[t] = dy * sz * (1.f + zz * (1.f - sz));  // times the pre-gate output: dz
      dy *= zz * sz;
      my_dy[t] = dy;
    }
    dD += dy * my_u[t];
  }

  // the warp's (b, group) and partial index in the dB / dC partials (one partial per warp of the group)
  const int bgB = s.row0 / (p.dim / p.b_groups);
  const int partB = (s.row0 - bgB * (p.dim / p.b_groups)) / 32;
  const int bgC = s.row0 / (p.dim / p.c_groups);
  const int partC = (s.row0 - bgC * (p.dim / p.c_groups)) / 32;

  // ---- forward recompute: states into hist, dC_t = dy_t h_t summed over the warp, dz_t ----
#pragma unroll 1
  for (int t = 0; t < L; ++t) {
    const float dt = my_dt[t];
    const float uu = my_u[t];
    const float dy = my_dy[t];
    const float dtu = dt * uu;
    float vc[NP];
    float y0 = 0.f, y1 = 0.f;
#pragma unroll
    for (int j = 0; j < NP / 4; ++j) {
#pragma unroll
      for (int n = 4 * j; n < 4 * j + 4; ++n) hist[(t * NP + n) * 32] = s.h[n];
      rows_update4<NP>(s.h, s.A2, rows_coef4(s.sB(), t, j, NP), rows_coef4(s.sC(), t, j, NP), j, dt, dtu, y0, y1);
#pragma unroll
      for (int n = 4 * j; n < 4 * j + 4; ++n) vc[n] = dy * s.h[n];
    }
    if (has_z) my_dz[t] *= (y0 + y1) + Dd * uu;
    rows_reduce_write<NP>(vc, p.dC_part, bgC, partC, p.npart_c, N, L, t, lane);
  }

  // ---- adjoint, backwards in time: g = d loss / d h_t (before adding step t's output) ----
  float g[NP], dA[NP];
#pragma unroll
  for (int n = 0; n < NP; ++n) {
    g[n] = (p.dlast != nullptr && n < N) ? p.dlast[((size_t)s.b * p.dim + s.d) * N + n] : 0.f;
    dA[n] = 0.f;
  }
  float ddb = 0.f;
#pragma unroll 1
  for (int t = L - 1; t >= 0; --t) {
    const float dt = my_dt[t];
    const float uu = my_u[t];
    const float dy = my_dy[t];
    const float dtu = dt * uu;
    float vb[NP];
    float gb0 = 0.f, gb1 = 0.f, ddt0 = 0.f, ddt1 = 0.f;
#pragma unroll
    for (int j = 0; j < NP / 4; ++j) {
      const float4 bv = rows_coef4(s.sB(), t, j, NP);
      const float4 cv = rows_coef4(s.sC(), t, j, NP);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int n = 4 * j + e;
        const float a = exp2_approx(dt * s.A2[n]);
        const float gn = g[n] + f4(cv, e) * dy;
        vb[n] = gn * dtu;
        const float gpa = gn * hist[(t * NP + n) * 32] * a;
        if (e & 1) {
          gb1 += gn * f4(bv, e);
          ddt1 += gpa * s.A2[n];  // times ln 2 below (A2 = A log2 e)
        } else {
          gb0 += gn * f4(bv, e);
          ddt0 += gpa * s.A2[n];
        }
        dA[n] += gpa * dt;
        g[n] = gn * a;
      }
    }
    const float gb = gb0 + gb1;
    // d softplus(x) / dx = sigmoid(x) = 1 - exp(-softplus(x)), from dt without the cancellation of 1 - exp
    const float sp = p.softplus ? -expm1f(-dt) : 1.f;
    const float dd = ((ddt0 + ddt1) * kLn2 + gb * uu) * sp;
    ddb += dd;
    my_u[t] = gb * dt + Dd * dy;  // du (u and dt of step t are not read again)
    my_dt[t] = dd;                // d delta
    rows_reduce_write<NP>(vb, p.dB_part, bgB, partB, p.npart_b, N, L, t, lane);
  }

  __syncwarp();
  s.template store<T>(p.du, 0);
  s.template store<T>(p.ddelta, 1);
  if (p.dz != nullptr) s.template store<T>(p.dz, 3);

  const size_t rp = (size_t)s.row * p.rp_stride;
#pragma unroll
  for (int n = 0; n < NP; ++n) {
    if (n < N) {
      p.dA_part[rp + n] = dA[n];
      if (p.dh0 != nullptr) p.dh0[((size_t)s.b * p.dim + s.d) * N + n] = g[n];
    }
  }
  p.dD_part[rp] = dD;
  p.ddb_part[rp] = ddb;
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

// The one-thread-per-row kernels (ScanParams::short_rows).
template <bool BWD, int NP, typename T, typename TBC>
cudaError_t launch_rows_np(const ScanParams& p, cudaStream_t stream) {
  const int warps = p.nrows / 32;  // nrows is a multiple of 32 (short_rows_ok)
  const int blocks = (warps + kRowsWarps - 1) / kRowsWarps;
  if constexpr (BWD) {
    auto kernel = scan_bwd_rows_kernel<NP, T, TBC>;
    const size_t smem = sizeof(float) * kRowsWarps * rows_bwd_smem_floats(NP, p.L);
    if (smem > 48 * 1024) {
      const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
      if (err != cudaSuccess) return err;
    }
    kernel<<<blocks, 32 * kRowsWarps, smem, stream>>>(p);
  } else {
    const size_t smem = sizeof(float) * kRowsWarps * rows_fwd_smem_floats(NP, p.L);
    scan_fwd_rows_kernel<NP, T, TBC><<<blocks, 32 * kRowsWarps, smem, stream>>>(p);
  }
  return cudaGetLastError();
}

// Forward (BWD = false) or backward of the short-sequence path for one input / B-C dtype pair.
template <bool BWD, typename T, typename TBC>
cudaError_t launch_short_t(const ScanParams& p, cudaStream_t stream) {
  if (p.L < 1 || p.L > kShortMaxL || p.cu != nullptr) return cudaErrorInvalidValue;
  if (p.short_rows) {
    if (!short_rows_ok(p.dim, p.b_groups, p.c_groups, padded_state(p.N))) return cudaErrorInvalidValue;
    switch (padded_state(p.N)) {
      case 4: return launch_rows_np<BWD, 4, T, TBC>(p, stream);
      case 8: return launch_rows_np<BWD, 8, T, TBC>(p, stream);
      case 16: return launch_rows_np<BWD, 16, T, TBC>(p, stream);
      default: return cudaErrorInvalidValue;
    }
  }
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
