// Selective scan (Mamba-1) forward for long sequences with few rows: time split over the lanes of a warp.
//
// The general kernels (selective_scan_kernels.cuh) give each (batch, channel) row one thread that walks
// time alone. With few rows and long sequences (batch 8 x dim 2048 x L 2048: 16k threads on 132 SMs)
// that leaves most of the GPU idle and every step on the dependency chain. Here one warp owns a row and
// walks it in chunks of 32 * KI steps; lane l holds the KI consecutive steps [t0 + l KI, t0 + (l + 1) KI).
// For each state n:
//   1. the lane composes its steps' affine maps h -> a h + b (a = exp(dt A_n), b = dt u B_n) into one
//      (prod a, local h from 0);
//   2. a Kogge-Stone scan over the 32 lanes (5 shuffle rounds) composes them into the lane's prefix;
//   3. the lane applies the prefix to the chunk's incoming state (the previous chunk's last lane),
//      replays its KI steps and accumulates y += C_n h.
// So the dependency chain per chunk is KI + 5 + KI steps instead of 32 KI, and there is one warp per row.
// u / delta / z / out and variable B / C rows are read and written as 16-byte vectors per lane (one
// contiguous 32 x 16-byte run per warp); the warps of a block share B / C through L1.
//
// Same semantics as scan_fwd_kernel without cu_seqlens: initial state, last state, z / D / delta_bias /
// softplus, constant or grouped variable B / C, and the backward's checkpoints (the state before every
// step t with t % K == 0, for the general backward kernel).
#pragma once

#include "selective_scan_kernels.cuh"

namespace ssk {

// Inclusive scan of affine maps (a, b): h -> a h + b over the 32 lanes, lane 0 first: afterwards the
// lane holds the composition of lanes 0..lane (applied in lane order).
__device__ __forceinline__ void warp_scan_affine(float& a, float& b, int lane) {
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const float ao = __shfl_up_sync(0xffffffffu, a, off);
    const float bo = __shfl_up_sync(0xffffffffu, b, off);
    if (lane >= off) {
      b = a * bo + b;
      a = a * ao;
    }
  }
}

// State before this lane's first step: the lanes' composed maps (a, b) scanned over the warp, the exclusive
// prefix (the identity for lane 0) applied to the chunk's incoming state h0.
__device__ __forceinline__ float lane_incoming_state(float a, float b, float h0, int lane) {
  warp_scan_affine(a, b, lane);
  float ae = __shfl_up_sync(0xffffffffu, a, 1);
  float be = __shfl_up_sync(0xffffffffu, b, 1);
  if (lane == 0) {
    ae = 1.f;
    be = 0.f;
  }
  return ae * h0 + be;
}

// MINB: resident blocks per SM asked of the compiler for N <= 32 (register cap 65536 / (128 MINB)); 5 exists for
// padded N = 16 only (ScanParams::long_minb, kLongFwdMinBlocks in selective_scan.h).
template <int NP, int KI, typename T, typename TBC, int MINB = 4>
__global__ void __launch_bounds__(32 * kLongWarps, NP <= 32 ? MINB : 1) scan_fwd_long_kernel(const ScanParams p) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * kLongWarps + (threadIdx.x >> 5);
  if (row >= p.nrows) return;  // whole warps only; the kernel has no block-wide barrier
  const int b = row / p.dim;
  const int d = row - b * p.dim;
  const int N = p.N;
  const int L = p.L;
  const size_t roff = (size_t)row * L;
  const T* u = static_cast<const T*>(p.u) + roff;
  const T* delta = static_cast<const T*>(p.delta) + roff;
  const T* z = p.z != nullptr ? static_cast<const T*>(p.z) + roff : nullptr;
  T* out = static_cast<T*>(p.out) + roff;
  [[maybe_unused]] const auto [Bv, Bc, bgB, partB] = coef_source<TBC>(p.B, p.b_groups, p.dim, N, L, row, d);
  [[maybe_unused]] const auto [Cv, Cc, bgC, partC] = coef_source<TBC>(p.C, p.c_groups, p.dim, N, L, row, d);
  const float Dd = p.D != nullptr ? p.D[d] : 0.f;
  const float bias = p.delta_bias != nullptr ? p.delta_bias[d] : 0.f;

  float carry[NP];  // state before the chunk (the same in every lane)
#pragma unroll
  for (int n = 0; n < NP; ++n) carry[n] = (p.h0 != nullptr && n < N) ? p.h0[((size_t)b * p.dim + d) * N + n] : 0.f;

  for (int t0 = 0; t0 < L; t0 += 32 * KI) {
    const int tl = t0 + lane * KI;
    float uu[KI], dt[KI], y[KI];
    load_items<T, KI>(u, tl, L, uu);
    load_items<T, KI>(delta, tl, L, dt);
#pragma unroll
    for (int i = 0; i < KI; ++i) {
      const float x = dt[i] + bias;
      // steps past L: dt = 0 and u = 0 make the identity map a = 1, b = 0
      dt[i] = tl + i < L ? (p.softplus ? softplus_f(x) : x) : 0.f;
      y[i] = Dd * uu[i];
      uu[i] *= dt[i];  // dt u from here on
    }
#pragma unroll
    for (int n = 0; n < NP; ++n) {
      if (n < N) {
        const float A2 = p.A[(size_t)d * N + n] * kLog2e;
        float a[KI], bb[KI], cc[KI];
        if (Bv != nullptr) load_items<TBC, KI>(Bv + (size_t)n * L, tl, L, bb);
        if (Cv != nullptr) load_items<TBC, KI>(Cv + (size_t)n * L, tl, L, cc);
        float ap = 1.f, hp = 0.f;
#pragma unroll
        for (int i = 0; i < KI; ++i) {
          if (Bv == nullptr) bb[i] = Bc[n];
          if (Cv == nullptr) cc[i] = Cc[n];
          a[i] = exp2_approx(dt[i] * A2);
          bb[i] *= uu[i];
          hp = a[i] * hp + bb[i];
          ap *= a[i];
        }
        float h = lane_incoming_state(ap, hp, carry[n], lane);
        if (p.ckpt != nullptr) {
#pragma unroll
          for (int i = 0; i < KI; ++i) {
            const int t = tl + i;
            if (t > 0 && t < L && t % p.K == 0) p.ckpt[((size_t)(t / p.K - 1) * N + n) * p.nrows + row] = h;
            h = a[i] * h + bb[i];
            y[i] += cc[i] * h;
          }
        } else {
#pragma unroll
          for (int i = 0; i < KI; ++i) {
            h = a[i] * h + bb[i];
            y[i] += cc[i] * h;
          }
        }
        carry[n] = __shfl_sync(0xffffffffu, h, 31);
      }
    }
    if (z != nullptr) {
      float zz[KI];
      load_items<T, KI>(z, tl, L, zz);
#pragma unroll
      for (int i = 0; i < KI; ++i) y[i] *= zz[i] * sigmoid_f(zz[i]);
    }
    store_items<T, KI>(out, tl, L, y);
  }
  if (p.last != nullptr) {
#pragma unroll
    for (int n = 0; n < NP; ++n)
      if (n < N && (n & 31) == lane) p.last[((size_t)b * p.dim + d) * N + n] = carry[n];
  }
}

// ------------------------------------------------------------------------------------------
// forward, states split over lanes
// ------------------------------------------------------------------------------------------
//
// The warp-split forward above spends most of its instructions on the per-state warp scans, on the branches of its
// B / C loads and on replaying each chunk (ncu, H200, batch 8 x dim 2048 x L 2048: about 32 instructions per
// (step, state), 0.8 eligible warps per scheduler). Here a row's NP states are split over R = NP / NS adjacent lanes
// (NS states each) and every lane walks time alone, in chunks of KI steps:
//   1. the row's per-step values (dt, dt u) are computed once per row and shuffled to its R lanes
//      (row_step_values);
//   2. each lane runs h <- exp(dt A_n) h + dt u B_n for its states and sums C_n h into a per-step partial y;
//   3. a reduce-scatter over the R lanes (row_sum_steps) leaves lane q the full sums of steps t + k R + q, which it
//      finishes (D skip, z gate) and stores.
// So a (step, state) costs one exponential and three fused multiply-adds plus a share of the row's work, and the
// only dependency chain is one multiply-add per step.

// Sums v[j] (one value per step j of a chunk) over the R adjacent lanes of a row: afterwards v[k R] (k < KI / R)
// holds the sum for step k R + q on lane q. A reduce-scatter: in the round with lane offset o, the lanes split the
// remaining steps by bit o of the step and trade the half they drop. Every lane of the warp must call this.
template <int KI, int R>
__device__ __forceinline__ void row_sum_steps(int q, float (&v)[KI]) {
#pragma unroll
  for (int o = R / 2; o >= 1; o >>= 1) {
    const bool up = (q & o) != 0;
#pragma unroll
    for (int j = 0; j < KI; ++j) {
      if ((j & (R - 1) & ~(o - 1)) != 0) continue;  // live slots (bits o .. R / 2 clear) with bit o clear
      const float keep = up ? v[j | o] : v[j];
      const float send = up ? v[j] : v[j | o];
      v[j] = keep + __shfl_xor_sync(0xffffffffu, send, o, R);
    }
  }
}

// v[k R + q] with q a runtime lane index: a select over the R candidates, so that v stays in registers (indexing
// it with q would move the whole array to local memory).
template <int KI, int R>
__device__ __forceinline__ float lane_item(const float (&v)[KI], int k, int q) {
  float r = v[k * R];
#pragma unroll
  for (int i = 1; i < R; ++i) r = q == i ? v[k * R + i] : r;
  return r;
}

// Sums v[m] over the 8 rows of a warp whose lanes share lane % 4 (4 lanes per row; lane = 4 r + q): afterwards v[k 8]
// (k < M / 8) holds on row r's lanes the sum of value k 8 + r. A reduce-scatter over the row bits of the lane, as
// row_sum_steps. Every lane of the warp must call this.
template <int M>
__device__ __forceinline__ void warp_rows_sum(int r, float (&v)[M]) {
#pragma unroll
  for (int o = 4; o >= 1; o >>= 1) {
    const bool up = (r & o) != 0;
#pragma unroll
    for (int m = 0; m < M; ++m) {
      if ((m & 7 & ~(o - 1)) != 0) continue;  // live slots (bits o .. 4 clear) with bit o clear
      const float keep = up ? v[m | o] : v[m];
      const float send = up ? v[m] : v[m | o];
      v[m] = keep + __shfl_xor_sync(0xffffffffu, send, 4 * o);
    }
  }
}

// A lane's states n0 .. n0 + NS - 1 of channel d: A log2(e) (0 past N) and the initial state (row offset hoff into
// (nseq, dim, N); zeros without one or past N).
template <int NS>
__device__ __forceinline__ void lane_states_init(const ScanParams& p, int d, int n0, size_t hoff, float (&A2)[NS],
                                                 float (&h)[NS]) {
#pragma unroll
  for (int i = 0; i < NS; ++i) {
    const int n = n0 + i;
    A2[i] = n < p.N ? p.A[(size_t)d * p.N + n] * kLog2e : 0.f;
    h[i] = (p.h0 != nullptr && n < p.N) ? p.h0[hoff + n] : 0.f;
  }
}

// Inference and training forward (checkpoints at any K) without cu_seqlens; same semantics as scan_fwd_long_kernel.
// Rows past the end compute the last row so that their lanes join the shuffles, and write nothing.
template <int NP, int NS, typename T, typename TBC>
__global__ void __launch_bounds__(kStateThreads, NP == 16 && sizeof(TBC) == 2 ? kStateMinBlocks : 1)
    scan_fwd_state_kernel(const ScanParams p) {
  constexpr int R = state_lanes(NP, NS);
  constexpr int KI = R > 8 ? R : 8;
  const auto [row, q, n0, row_c, b, d, active] = lane_row<R, NS, kStateThreads>(p);
  const int N = p.N;
  const int L = p.L;
  const size_t roff = (size_t)row_c * L;
  const T* u = static_cast<const T*>(p.u) + roff;
  const T* delta = static_cast<const T*>(p.delta) + roff;
  const T* z = p.z != nullptr ? static_cast<const T*>(p.z) + roff : nullptr;
  T* out = static_cast<T*>(p.out) + roff;
  const auto [Bv, Bc, bgB, partB] = coef_source<TBC>(p.B, p.b_groups, p.dim, N, L, row_c, d);
  const auto [Cv, Cc, bgC, partC] = coef_source<TBC>(p.C, p.c_groups, p.dim, N, L, row_c, d);
  const float Dd = p.D != nullptr ? p.D[d] : 0.f;
  const float bias = p.delta_bias != nullptr ? p.delta_bias[d] : 0.f;
  const size_t hoff = ((size_t)b * p.dim + d) * N;

  float A2[NS], h[NS];
  lane_states_init(p, d, n0, hoff, A2, h);
  // Latency: the row's delta / u / z come from DRAM once, so the lane's own steps of the next chunk are loaded a
  // chunk ahead (raw values, converted on use); variable B / C (read by every row of a (batch, group), mostly L1 / L2
  // hits) are loaded for all of the lane's states at the chunk's start, as 16-byte vectors when every chunk is whole
  // and aligned (vec), so that their latency overlaps the row's step values.
  constexpr int KL = KI / R;                    // the lane's own steps per chunk: t + k R + q
  constexpr int VE = 16 / sizeof(TBC);          // elements per 16-byte vector of B / C
  constexpr int VB = KI / VE;                   // vectors per state and chunk
  const bool vec = Bv != nullptr && Cv != nullptr && L % KI == 0 && aligned16(Bv) && aligned16(Cv);
  const T zero = from_f<T>(0.f);
  T pd[KL], pu[KL], pz[KL];
  auto prefetch = [&](int t) {
#pragma unroll
    for (int k = 0; k < KL; ++k) {
      const int tt = t + k * R + q;
      const bool in = tt < L;
      pd[k] = in ? delta[tt] : zero;
      pu[k] = in ? u[tt] : zero;
      pz[k] = in && z != nullptr ? z[tt] : zero;
    }
  };
  prefetch(0);
  // the next checkpoint step (the state before step c K, 0 < c K < L, is checkpoint c - 1)
  int tck = p.ckpt != nullptr ? p.K : L;
  for (int t = 0; t < L; t += KI) {  // steps past L are identities (dt = 0, dt u = 0)
    uint4 bq[NS][VB], cq[NS][VB];
    if (vec) {
#pragma unroll
      for (int i = 0; i < NS; ++i) {
        const size_t off = (size_t)(n0 + i < N ? n0 + i : 0) * L + t;
#pragma unroll
        for (int v = 0; v < VB; ++v) {
          bq[i][v] = *reinterpret_cast<const uint4*>(Bv + off + v * VE);
          cq[i][v] = *reinterpret_cast<const uint4*>(Cv + off + v * VE);
        }
      }
    }
    T cd[KL], cu[KL], cz[KL];
#pragma unroll
    for (int k = 0; k < KL; ++k) {
      cd[k] = pd[k];
      cu[k] = pu[k];
      cz[k] = pz[k];
    }
    if (t + KI < L) prefetch(t + KI);
    float dt[KI], dtu[KI], y[KI];
    int k = 0;  // the lane's own step index (constant after unrolling)
    row_step_values<KI, R>(t, q, dt, dtu, [&](int tt, float& v_dt, float& v_dtu) {
      const float x = to_f<T>(cd[k]) + bias;
      v_dt = tt < L ? (p.softplus ? softplus_f(x) : x) : 0.f;
      v_dtu = v_dt * to_f<T>(cu[k]);
      ++k;
    });
#pragma unroll
    for (int j = 0; j < KI; ++j) y[j] = 0.f;
    // checkpoints in this chunk (uniform over the warp): bit j of ckm for the state before step t + j, the first
    // being checkpoint ck0
    unsigned ckm = 0;
    int ck0 = 0;
    if (tck < t + KI && tck < L) {
      ck0 = tck / p.K - 1;
      for (; tck < t + KI; tck += p.K)
        if (tck < L) ckm |= 1u << (tck - t);
    }
#pragma unroll
    for (int i = 0; i < NS; ++i) {
      const int n = n0 + i;
      if (n < N) {
        float bb[KI], cc[KI];
        if (vec) {
#pragma unroll
          for (int j = 0; j < KI; ++j) {
            bb[j] = vec_elem<TBC>(bq[i][j / VE], j % VE);
            cc[j] = vec_elem<TBC>(cq[i][j / VE], j % VE);
          }
        } else {
          coef_run<TBC, KI>(Bv, Bc, n, L, t, bb);
          coef_run<TBC, KI>(Cv, Cc, n, L, t, cc);
        }
        if (ckm == 0) {
#pragma unroll
          for (int j = 0; j < KI; ++j) {
            h[i] = exp2_approx(dt[j] * A2[i]) * h[i] + dtu[j] * bb[j];
            y[j] += cc[j] * h[i];
          }
        } else {
          float* ck = p.ckpt + ((size_t)ck0 * N + n) * p.nrows + row;
#pragma unroll
          for (int j = 0; j < KI; ++j) {
            if ((ckm >> j) & 1u) {
              if (active) *ck = h[i];
              ck += (size_t)N * p.nrows;
            }
            h[i] = exp2_approx(dt[j] * A2[i]) * h[i] + dtu[j] * bb[j];
            y[j] += cc[j] * h[i];
          }
        }
      }
    }
    row_sum_steps<KI, R>(q, y);
#pragma unroll
    for (int kk = 0; kk < KL; ++kk) {
      const int tt = t + kk * R + q;
      if (active && tt < L) {
        float v = y[kk * R] + Dd * to_f<T>(cu[kk]);
        if (z != nullptr) {
          const float zz = to_f<T>(cz[kk]);
          v *= zz * sigmoid_f(zz);
        }
        out[tt] = from_f<T>(v);
      }
    }
  }
  if (active && p.last != nullptr) {
#pragma unroll
    for (int i = 0; i < NS; ++i)
      if (n0 + i < N) p.last[hoff + n0 + i] = h[i];
  }
}

// ------------------------------------------------------------------------------------------
// forward, states split over lanes, row values and B / C staged in shared memory
// ------------------------------------------------------------------------------------------
//
// scan_fwd_state_kernel above computes and exchanges each row's step values with shuffles and converts every B / C
// element on every lane that uses it: about 20 instructions per (step, state) at batch 8 x dim 2048 x L 2048 (ncu,
// H200, run13b), where a (step, state) needs an exponential and three multiply-adds. Here a block of kStateThreads
// threads owns kTileRows rows of one (b, group) and walks time in chunks of kTileSteps steps. Each thread has two
// roles:
//   - loader / finisher of row rl = tid / 4, steps q SP .. q SP + SP - 1 (q = tid % 4, SP = kTileSteps / 4): it loads
//     them one chunk ahead (delta, u, z; vectors when aligned), writes the row values (dt, dt u) to shared memory,
//     and after the chunk sums the row's 4 lanes' partial outputs for its steps, finishes them (D skip, z gate) and
//     stores them; it also loads one state's B / C for 2 steps (ln = tid % 16) into a [step][state] float tile;
//   - lane of row cr = tid % 32, states cq 4 .. cq 4 + 3 (cq = tid / 32): a warp holds 32 rows and one state group,
//     so the B_t / C_t of its 4 states are one 16-byte broadcast per warp and the row values one 16-byte load per
//     lane per 2 steps; it runs h <- exp(dt A) h + dt u B for its states and writes sum_n C_n h_n per step.
// H200, batch 8 x dim 2048 x L 2048 bf16 (cubin variants, run21): 410-425 us against 547 us for the unstaged kernel;
// raw EEG fp32 (304 x 64 x 2000) 388 us against 1,358 (unstaged) and 1,169 (warp design).
// Checkpoints (the state before step c K, K % 8 == 0) are written at a chunk's start or middle.

// S consecutive elements as one aligned vector access.
template <typename T, int S>
struct alignas(S * sizeof(T)) ElemRun {
  T v[S];
};

// Elements [t, t + S) of a row into v (steps >= L read as zero): one vector load when the run is whole and vec says
// the rows are aligned for it.
template <typename T, int S>
__device__ __forceinline__ void load_run(const T* __restrict__ row, int t, int L, bool vec, T (&v)[S]) {
  if (vec && t + S <= L) {
    const ElemRun<T, S> r = *reinterpret_cast<const ElemRun<T, S>*>(row + t);
#pragma unroll
    for (int e = 0; e < S; ++e) v[e] = r.v[e];
  } else {
#pragma unroll
    for (int e = 0; e < S; ++e) v[e] = t + e < L ? row[t + e] : from_f<T>(0.f);
  }
}

template <typename T, int S>
__device__ __forceinline__ void store_run(T* __restrict__ row, int t, int L, bool vec, const float (&v)[S]) {
  if (vec && t + S <= L) {
    ElemRun<T, S> r;
#pragma unroll
    for (int e = 0; e < S; ++e) r.v[e] = from_f<T>(v[e]);
    *reinterpret_cast<ElemRun<T, S>*>(row + t) = r;
  } else {
#pragma unroll
    for (int e = 0; e < S; ++e)
      if (t + e < L) row[t + e] = from_f<T>(v[e]);
  }
}

// softplus and the z gate's sigmoid from the hardware exponential and logarithm (absolute error ~2e-7, from the
// logarithm near 1): for 16-bit inputs, whose own rounding is 1e-3 or coarser. fp32 inputs keep the
// libm forms (softplus_f, sigmoid_f).
__device__ __forceinline__ float softplus_fast(float x) {
#ifdef SSK_EMULATE
  return softplus_f(x);
#else
  return x <= 20.f ? __log2f(1.f + exp2_approx(x * kLog2e)) * kLn2 : x;
#endif
}
__device__ __forceinline__ float sigmoid_fast(float x) {
#ifdef SSK_EMULATE
  return sigmoid_f(x);
#else
  return __frcp_rn(1.f + exp2_approx(-x * kLog2e));
#endif
}

// A staged kernel's thread as loader / finisher: row rl = tid / R of the block's rows (row0 ..), its lane q among the
// row's R threads; rows past the end compute the last row (row_c) and write nothing.
struct TileLoaderRow {
  int rl, q, row, row_c, d;
  bool active;
};
template <int R>
__device__ __forceinline__ TileLoaderRow tile_loader_row(const ScanParams& p, int row0, int tid) {
  TileLoaderRow r;
  r.rl = tid / R;
  r.q = tid % R;
  r.row = row0 + r.rl;
  r.active = r.row < p.nrows;
  r.row_c = r.active ? r.row : p.nrows - 1;
  r.d = r.row_c % p.dim;
  return r;
}

__device__ __forceinline__ bool aligned_to(const void* ptr, unsigned bytes) {
  return (reinterpret_cast<uintptr_t>(ptr) & (bytes - 1u)) == 0;
}

// MINB: resident blocks per SM asked of the compiler (tile_min_blocks): 4 (122 registers) or 5 (94; the lanes then
// write their partial outputs every 4 steps instead of at the chunk's end, which keeps them free of spills).
template <typename T, typename TBC, int MINB>
__global__ void __launch_bounds__(kStateThreads, MINB) scan_fwd_tile_kernel(const ScanParams p) {
  constexpr int KI = kTileSteps;
  constexpr int NP = 16, NS = 4, R = NP / NS;
  constexpr int SP = KI / R;      // a loader's steps of its row
  constexpr int SB = KI / 8;      // a loader's steps of its state of B / C
  constexpr int SV = 2 * KI + 4;  // row stride of the staged (dt, dt u) pairs
  constexpr int SY = KI + 4;      // lane stride of the staged partial outputs
  constexpr bool kFast = sizeof(T) == 2;  // softplus_fast / sigmoid_fast
  constexpr bool kEarlyY = MINB >= 5;
  static_assert(kStateThreads == kTileRows * R && kStateThreads == 8 * NP && KI % 4 == 0, "tile layout");
  extern __shared__ float smem[];
  float* s_v = smem;                  // [kTileRows][SV]: dt_t, dt_t u_t of the block's rows
  float* s_b = s_v + kTileRows * SV;  // [KI][NP]: B of the chunk's steps
  float* s_c = s_b + KI * NP;         // [KI][NP]: C
  float* s_y = s_c + KI * NP;         // [kStateThreads][SY]: per lane (tid), sum over its states of C_n h_n per step

  const int tid = threadIdx.x;
  const int row0 = blockIdx.x * kTileRows;
  const int N = p.N;
  const int L = p.L;
  // loader / finisher: row rl, steps q SP ..
  const TileLoaderRow lr = tile_loader_row<R>(p, row0, tid);
  const int rl = lr.rl, q = lr.q, row_c = lr.row_c, d = lr.d;
  const bool active = lr.active;
  const size_t roff = (size_t)row_c * L;
  const T* u = static_cast<const T*>(p.u) + roff;
  const T* delta = static_cast<const T*>(p.delta) + roff;
  const T* z = p.z != nullptr ? static_cast<const T*>(p.z) + roff : nullptr;
  T* out = static_cast<T*>(p.out) + roff;
  const bool vec_x = L % SP == 0 && aligned_to(p.u, SP * sizeof(T)) && aligned_to(p.delta, SP * sizeof(T)) &&
                     aligned_to(p.out, SP * sizeof(T)) && (z == nullptr || aligned_to(p.z, SP * sizeof(T)));
  const float Dd = p.D != nullptr ? p.D[d] : 0.f;
  const float bias = p.delta_bias != nullptr ? p.delta_bias[d] : 0.f;
  // loader of B / C: state ln of the block's (b, group), steps lt ..
  const int ln = tid % NP;
  const int lt = (tid / NP) * SB;
  const bool ln_ok = ln < N;
  const TBC* Brow = static_cast<const TBC*>(p.B) + ((size_t)(row0 / (p.dim / p.b_groups)) * N + (ln_ok ? ln : 0)) * L;
  const TBC* Crow = static_cast<const TBC*>(p.C) + ((size_t)(row0 / (p.dim / p.c_groups)) * N + (ln_ok ? ln : 0)) * L;
  const bool vec_bc = L % SB == 0 && aligned_to(p.B, SB * sizeof(TBC)) && aligned_to(p.C, SB * sizeof(TBC));
  // lane: row cr, states n0 ..
  const int cr = tid % kTileRows;
  const int n0 = (tid / kTileRows) * NS;
  const int crow = row0 + cr;
  const bool cactive = crow < p.nrows;
  const int crow_c = cactive ? crow : p.nrows - 1;
  const int cd = crow_c % p.dim;
  const size_t hoff = (size_t)crow_c * N;  // (b, d) of (batch, dim, N)
  float A2[NS], h[NS];
  lane_states_init(p, cd, n0, hoff, A2, h);
  auto checkpoint = [&](int ck) {  // the state before step (ck + 1) K
    if (cactive) {
#pragma unroll
      for (int i = 0; i < NS; ++i)
        if (n0 + i < N) p.ckpt[((size_t)ck * N + n0 + i) * p.nrows + crow] = h[i];
    }
  };

  T pd[SP], pu[SP], pz[SP];
  TBC pb[SB], pc[SB];
  auto fetch = [&](int t) {
    const int ts = t + q * SP;
    load_run<T, SP>(delta, ts, L, vec_x, pd);
    load_run<T, SP>(u, ts, L, vec_x, pu);
    if (z != nullptr) load_run<T, SP>(z, ts, L, vec_x, pz);
    if (ln_ok) {
      load_run<TBC, SB>(Brow, t + lt, L, vec_bc, pb);
      load_run<TBC, SB>(Crow, t + lt, L, vec_bc, pc);
    } else {
#pragma unroll
      for (int e = 0; e < SB; ++e) pb[e] = pc[e] = from_f<TBC>(0.f);
    }
  };
  fetch(0);
  // the next checkpoint step (a multiple of KI / 2; the states before steps c K < L are kept)
  int tck = p.ckpt != nullptr && p.K < L ? p.K : -1;
  for (int t = 0; t < L; t += KI) {
    // 1. stage the chunk (steps >= L: dt = 0 and dt u = 0, the identity)
    float xu[SP], xz[SP];
    {
      float v[2 * SP];
#pragma unroll
      for (int s = 0; s < SP; ++s) {
        const float x = to_f<T>(pd[s]) + bias;
        const float sp = kFast ? softplus_fast(x) : softplus_f(x);
        const float dt = t + q * SP + s < L ? (p.softplus ? sp : x) : 0.f;
        xu[s] = to_f<T>(pu[s]);
        xz[s] = z != nullptr ? to_f<T>(pz[s]) : 0.f;
        v[2 * s] = dt;
        v[2 * s + 1] = dt * xu[s];
      }
      float4* dst = reinterpret_cast<float4*>(s_v + rl * SV + 2 * q * SP);
#pragma unroll
      for (int k = 0; k < SP / 2; ++k) dst[k] = make_float4(v[4 * k], v[4 * k + 1], v[4 * k + 2], v[4 * k + 3]);
#pragma unroll
      for (int e = 0; e < SB; ++e) {
        s_b[(lt + e) * NP + ln] = to_f<TBC>(pb[e]);
        s_c[(lt + e) * NP + ln] = to_f<TBC>(pc[e]);
      }
    }
    __syncthreads();
    if (t + KI < L) fetch(t + KI);
    // 2. the lane's states over the chunk
    float y[KI];
#pragma unroll
    for (int j = 0; j < KI; j += 2) {
      if (j == KI / 2 || j == 0) {
        if (t + j == tck) {
          checkpoint(tck / p.K - 1);
          tck = tck + p.K < L ? tck + p.K : -1;
        }
      }
      const float4 v = *reinterpret_cast<const float4*>(s_v + cr * SV + 2 * j);
#pragma unroll
      for (int jj = 0; jj < 2; ++jj) {
        const float dt = jj == 0 ? v.x : v.z;
        const float dtu = jj == 0 ? v.y : v.w;
        const float4 bb = *reinterpret_cast<const float4*>(s_b + (j + jj) * NP + n0);
        const float4 cc = *reinterpret_cast<const float4*>(s_c + (j + jj) * NP + n0);
        h[0] = exp2_approx(dt * A2[0]) * h[0] + dtu * bb.x;
        h[1] = exp2_approx(dt * A2[1]) * h[1] + dtu * bb.y;
        h[2] = exp2_approx(dt * A2[2]) * h[2] + dtu * bb.z;
        h[3] = exp2_approx(dt * A2[3]) * h[3] + dtu * bb.w;
        y[j + jj] = cc.x * h[0] + cc.y * h[1] + cc.z * h[2] + cc.w * h[3];
      }
      if (kEarlyY && (j & 3) == 2) {
        *reinterpret_cast<float4*>(s_y + tid * SY + j - 2) = make_float4(y[j - 2], y[j - 1], y[j], y[j + 1]);
      }
    }
    if (!kEarlyY) {
      float4* dst = reinterpret_cast<float4*>(s_y + tid * SY);
#pragma unroll
      for (int k = 0; k < KI / 4; ++k) dst[k] = make_float4(y[4 * k], y[4 * k + 1], y[4 * k + 2], y[4 * k + 3]);
    }
    __syncthreads();
    // 3. finish the loaded steps: the row's 4 lanes' partials (lane l of row rl is thread l kTileRows + rl), D skip,
    //    z gate
    float o[SP];
#pragma unroll
    for (int s = 0; s < SP; ++s) o[s] = Dd * xu[s];
#pragma unroll
    for (int l = 0; l < R; ++l) {
      const float* src = s_y + (l * kTileRows + rl) * SY + q * SP;
#pragma unroll
      for (int s = 0; s < SP; s += 2) {
        const float2 w = *reinterpret_cast<const float2*>(src + s);
        o[s] += w.x;
        o[s + 1] += w.y;
      }
    }
    if (z != nullptr) {
#pragma unroll
      for (int s = 0; s < SP; ++s) o[s] *= xz[s] * (kFast ? sigmoid_fast(xz[s]) : sigmoid_f(xz[s]));
    }
    if (active) store_run<T, SP>(out, t + q * SP, L, vec_x, o);
  }
  if (cactive && p.last != nullptr) {
#pragma unroll
    for (int i = 0; i < NS; ++i)
      if (n0 + i < N) p.last[hoff + n0 + i] = h[i];
  }
}

// ------------------------------------------------------------------------------------------
// backward
// ------------------------------------------------------------------------------------------
//
// Same lane layout with KI = kLongItemsBwd steps per lane (chunks of CT = 32 KI steps), chunks walked
// from the last. A block owns R = kLongWarps * p.long_rw rows of one (batch, group); within a chunk each warp
// takes its rows one after another. Per row, chunk and state n:
//   1. the chunk's states are recomputed as in the forward, from the checkpoint the long forward wrote
//      (K = CT) or the initial state;
//   2. the adjoint q_t = a_t (dy_t C_t + q_{t+1}) (what flows from step t to t - 1) is another affine
//      recurrence, run backwards: a lane composition, a reverse warp scan, the carry from the next
//      chunk (kept per row in shared memory), a replay that forms the step gradients g_t = dy_t C_t + q_{t+1};
//   3. dB_t = g_t dt_t u_t and dC_t = dy_t h_t are summed over the block's rows in a fixed order: every warp
//      stages its row's values, then thread k adds the kLongWarps values of column k to its own column
//      of a chunk accumulator in shared memory. At the chunk's end the block writes its column sums as one
//      partial per (b, group) slice, summed on the host in a fixed order: deterministic, no atomics.
// dA, dD, d delta_bias and time-invariant dB / dC are summed over the lanes per chunk and kept per row in
// shared memory until the end.
template <int NP, int KI, typename T, typename TBC>
__global__ void __launch_bounds__(32 * kLongWarps, NP <= 16 ? 4 : 1) scan_bwd_long_kernel(const ScanParams p) {
  constexpr int CT = 32 * KI;
  constexpr int NT = 32 * kLongWarps;
  constexpr int kRS = 4 * NP + 2;  // per-row state: q carry [NP], dA [NP], constant dB [NP], dC [NP], dD, ddb
  extern __shared__ float smem[];
  float* s_acc = smem;                           // [2][NP][CT]: block sums of variable dB / dC in the chunk
  float* s_stage = s_acc + 2 * NP * CT;          // [2 buffers][kLongWarps][2][CT]
  float* s_row = s_stage + 4 * kLongWarps * CT;  // [R][kRS]
  const int RW = p.long_rw;
  const int R = kLongWarps * RW;
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int row0 = blockIdx.x * R;
  const int N = p.N;
  const int L = p.L;
  const bool varB = p.b_groups > 0;
  const bool varC = p.c_groups > 0;
  const bool staged = varB || varC;

  for (int i = tid; i < R * kRS; i += NT) s_row[i] = 0.f;
  __syncthreads();

  const int nchunks = (L + CT - 1) / CT;
  int buf = 0;
  for (int c = nchunks - 1; c >= 0; --c) {
    const int t0 = c * CT;
    // column k of the accumulator belongs to thread k % NT alone (zeroed, summed into and written by it)
    for (int k = tid; k < CT; k += NT) {
#pragma unroll
      for (int n = 0; n < NP; ++n) {
        s_acc[n * CT + k] = 0.f;
        s_acc[(NP + n) * CT + k] = 0.f;
      }
    }
    for (int r = 0; r < RW; ++r) {
      const int lr = warp * RW + r;
      const int row = row0 + lr;
      const bool active = row < p.nrows;
      const int row_c = active ? row : p.nrows - 1;
      const int b = row_c / p.dim;
      const int d = row_c - b * p.dim;
      const size_t roff = (size_t)row_c * L;
      [[maybe_unused]] const auto [Bv, Bc, bgB, partB] = coef_source<TBC>(p.B, p.b_groups, p.dim, N, L, row_c, d);
      [[maybe_unused]] const auto [Cv, Cc, bgC, partC] = coef_source<TBC>(p.C, p.c_groups, p.dim, N, L, row_c, d);
      const float Dd = p.D != nullptr ? p.D[d] : 0.f;
      const float bias = p.delta_bias != nullptr ? p.delta_bias[d] : 0.f;
      float* rs = s_row + lr * kRS;
      const int tl = t0 + lane * KI;

      float uu[KI], dt[KI], dy[KI], y[KI], ddt[KI], dus[KI];
      load_items<T, KI>(static_cast<const T*>(p.u) + roff, tl, L, uu);
      load_items<T, KI>(static_cast<const T*>(p.delta) + roff, tl, L, dt);
      load_items<T, KI>(static_cast<const T*>(p.dout) + roff, tl, L, dy);
      if (p.z != nullptr) {
        float zz[KI];
        load_items<T, KI>(static_cast<const T*>(p.z) + roff, tl, L, zz);
#pragma unroll
        for (int i = 0; i < KI; ++i) dy[i] *= zz[i] * sigmoid_f(zz[i]);
      }
#pragma unroll
      for (int i = 0; i < KI; ++i) {
        const float x = dt[i] + bias;
        dt[i] = tl + i < L ? (p.softplus ? softplus_f(x) : x) : 0.f;  // past L: the identity step
        if (!active) dy[i] = 0.f;
        y[i] = Dd * uu[i];
        ddt[i] = 0.f;
        dus[i] = 0.f;
      }
      const bool last_chunk = c == nchunks - 1;
#pragma unroll
      for (int n = 0; n < NP; ++n) {
        if (n < N) {
          const float An = p.A[(size_t)d * N + n];
          const float A2 = An * kLog2e;
          float a[KI], bb[KI], cc[KI], hp[KI];
          if (varB) load_items<TBC, KI>(Bv + (size_t)n * L, tl, L, bb);
          if (varC) load_items<TBC, KI>(Cv + (size_t)n * L, tl, L, cc);
          // ---- states of the chunk (as the forward) ----
          float ap = 1.f, hq = 0.f;
#pragma unroll
          for (int i = 0; i < KI; ++i) {
            if (!varB) bb[i] = Bc[n];
            if (!varC) cc[i] = Cc[n];
            a[i] = exp2_approx(dt[i] * A2);
            hq = a[i] * hq + bb[i] * dt[i] * uu[i];
            ap *= a[i];
          }
          float hc = 0.f;  // state before the chunk
          if (c > 0) hc = p.ckpt[((size_t)(c - 1) * N + n) * p.nrows + row_c];
          else if (p.h0 != nullptr) hc = p.h0[((size_t)b * p.dim + d) * N + n];
          float h = lane_incoming_state(ap, hq, hc, lane);
          float dcv[KI], e[KI];
#pragma unroll
          for (int i = 0; i < KI; ++i) {
            hp[i] = h;
            h = a[i] * h + bb[i] * dt[i] * uu[i];
            y[i] += cc[i] * h;
            dcv[i] = dy[i] * h;
            e[i] = dy[i] * cc[i];
          }
          if (last_chunk && p.dlast != nullptr && active && tl <= L - 1 && L - 1 < tl + KI) {
#pragma unroll
            for (int i = 0; i < KI; ++i)
              if (tl + i == L - 1) e[i] += p.dlast[((size_t)b * p.dim + d) * N + n];
          }
          // ---- adjoint: q_t = a_t (e_t + q_{t+1}), composed from the right ----
          float aq = 1.f, qq = 0.f;
#pragma unroll
          for (int i = KI - 1; i >= 0; --i) {
            qq = a[i] * (e[i] + qq);
            aq *= a[i];
          }
#pragma unroll
          for (int off = 1; off < 32; off <<= 1) {
            const float ao = __shfl_down_sync(0xffffffffu, aq, off);
            const float qo = __shfl_down_sync(0xffffffffu, qq, off);
            if (lane + off < 32) {
              qq = aq * qo + qq;
              aq = aq * ao;
            }
          }
          float a1 = __shfl_down_sync(0xffffffffu, aq, 1);
          float q1 = __shfl_down_sync(0xffffffffu, qq, 1);
          if (lane == 31) {
            a1 = 1.f;
            q1 = 0.f;
          }
          float q = a1 * rs[n] + q1;  // flowing into this lane's last step from the right
          float dal = 0.f, dbl = 0.f, dbv[KI];
#pragma unroll
          for (int i = KI - 1; i >= 0; --i) {
            const float g = e[i] + q;
            const float dtu = dt[i] * uu[i];
            dbv[i] = g * dtu;
            dbl += dbv[i];
            dus[i] += g * bb[i];
            const float gpa = g * hp[i] * a[i];
            ddt[i] += gpa * An;
            dal += gpa * dt[i];
            q = a[i] * g;
          }
          const float qout = __shfl_sync(0xffffffffu, q, 0);  // flows out of the chunk's first step
          float dcl = 0.f;
#pragma unroll
          for (int i = 0; i < KI; ++i) dcl += dcv[i];
#pragma unroll
          for (int m = 16; m >= 1; m >>= 1) {
            dal += __shfl_xor_sync(0xffffffffu, dal, m);
            if (!varB) dbl += __shfl_xor_sync(0xffffffffu, dbl, m);
            if (!varC) dcl += __shfl_xor_sync(0xffffffffu, dcl, m);
          }
          __syncwarp();  // every lane has read rs[n]
          if (lane == 0 && active) {
            rs[n] = qout;
            rs[NP + n] += dal;
            if (!varB) rs[2 * NP + n] += dbl;
            if (!varC) rs[3 * NP + n] += dcl;
            if (c == 0 && p.dh0 != nullptr) p.dh0[((size_t)b * p.dim + d) * N + n] = qout;
          }
          __syncwarp();
          if (staged) {
            // stage this row's dB / dC of state n, then sum the warps' columns in a fixed order
            float* st = s_stage + (size_t)(buf * kLongWarps + warp) * 2 * CT;
            if constexpr (KI % 4 == 0) {  // 16-byte stores: scalar ones at a stride of KI words conflict
              float4* sb4 = reinterpret_cast<float4*>(st + lane * KI);
              float4* sc4 = reinterpret_cast<float4*>(st + CT + lane * KI);
#pragma unroll
              for (int q = 0; q < KI / 4; ++q) {
                sb4[q] = active ? make_float4(dbv[4 * q], dbv[4 * q + 1], dbv[4 * q + 2], dbv[4 * q + 3])
                                : make_float4(0.f, 0.f, 0.f, 0.f);
                sc4[q] = active ? make_float4(dcv[4 * q], dcv[4 * q + 1], dcv[4 * q + 2], dcv[4 * q + 3])
                                : make_float4(0.f, 0.f, 0.f, 0.f);
              }
            } else {
#pragma unroll
              for (int i = 0; i < KI; ++i) {
                st[lane * KI + i] = active ? dbv[i] : 0.f;
                st[CT + lane * KI + i] = active ? dcv[i] : 0.f;
              }
            }
            __syncthreads();
            const float* sb = s_stage + (size_t)buf * kLongWarps * 2 * CT;
            for (int k = tid; k < CT; k += NT) {
              float sB = 0.f, sC = 0.f;
#pragma unroll
              for (int w = 0; w < kLongWarps; ++w) {
                sB += sb[w * 2 * CT + k];
                sC += sb[w * 2 * CT + CT + k];
              }
              s_acc[n * CT + k] += sB;
              s_acc[(NP + n) * CT + k] += sC;
            }
            buf ^= 1;
          }
        }
      }
      // ---- per-step gradients of the row ----
      float zz[KI], go[KI];
      if (p.z != nullptr) {
        load_items<T, KI>(static_cast<const T*>(p.z) + roff, tl, L, zz);
        load_items<T, KI>(static_cast<const T*>(p.dout) + roff, tl, L, go);
      }
      float ddl = 0.f, dDl = 0.f;
#pragma unroll
      for (int i = 0; i < KI; ++i) {
        // d dt = sum_n g (h_prev a A + B u); d delta = d dt * d softplus (= 1 - exp(-dt))
        const float gd = (ddt[i] + dus[i] * uu[i]) * (p.softplus ? -expm1f(-dt[i]) : 1.f);
        ddt[i] = gd;
        dus[i] = dus[i] * dt[i] + Dd * dy[i];  // du
        if (tl + i < L) {
          ddl += gd;
          dDl += dy[i] * uu[i];
        }
        if (p.z != nullptr) {
          const float sz = sigmoid_f(zz[i]);
          zz[i] = go[i] * y[i] * sz * (1.f + zz[i] * (1.f - sz));
        }
      }
#pragma unroll
      for (int m = 16; m >= 1; m >>= 1) {
        ddl += __shfl_xor_sync(0xffffffffu, ddl, m);
        dDl += __shfl_xor_sync(0xffffffffu, dDl, m);
      }
      if (active) {
        store_items<T, KI>(static_cast<T*>(p.du) + roff, tl, L, dus);
        store_items<T, KI>(static_cast<T*>(p.ddelta) + roff, tl, L, ddt);
        if (p.z != nullptr) store_items<T, KI>(static_cast<T*>(p.dz) + roff, tl, L, zz);
        if (lane == 0) {
          rs[4 * NP] += dDl;
          rs[4 * NP + 1] += ddl;
        }
      }
      __syncwarp();
    }
    // ---- the block's partial of variable dB / dC for this chunk (columns owned by this thread) ----
    if (staged) {
      const int bgB = varB ? row0 / (p.dim / p.b_groups) : 0;
      const int bgC = varC ? row0 / (p.dim / p.c_groups) : 0;
      const int partB = varB ? (row0 - bgB * (p.dim / p.b_groups)) / R : 0;
      const int partC = varC ? (row0 - bgC * (p.dim / p.c_groups)) / R : 0;
      for (int k = tid; k < CT; k += NT) {
        const int t = t0 + k;
        if (t < L) {
#pragma unroll
          for (int n = 0; n < NP; ++n) {
            if (n < N) {
              if (varB) p.dB_part[(((size_t)bgB * p.npart_b + partB) * N + n) * L + t] = s_acc[n * CT + k];
              if (varC) p.dC_part[(((size_t)bgC * p.npart_c + partC) * N + n) * L + t] = s_acc[(NP + n) * CT + k];
            }
          }
        }
      }
    }
  }
  // ---- per-row results ----
  for (int r = 0; r < RW; ++r) {
    const int lr = warp * RW + r;
    const int row = row0 + lr;
    if (row >= p.nrows) break;
    const float* rs = s_row + lr * kRS;
    for (int n = lane; n < N; n += 32) {
      p.dA_part[(size_t)row * p.rp_stride + n] = rs[NP + n];
      if (!varB) p.dB_part[(size_t)row * p.rp_stride + n] = rs[2 * NP + n];
      if (!varC) p.dC_part[(size_t)row * p.rp_stride + n] = rs[3 * NP + n];
    }
    if (lane == 0) {
      p.dD_part[(size_t)row * p.rp_stride] = rs[4 * NP];
      p.ddb_part[(size_t)row * p.rp_stride] = rs[4 * NP + 1];
    }
  }
}

// ------------------------------------------------------------------------------------------
// backward, states split over lanes (the default where ssk::state_bwd_auto says; SSM_KERNELS_SCAN_STATE_BWD=0|1)
// ------------------------------------------------------------------------------------------
//
// The general backward's chunks (K <= kMaxChunk steps, checkpoints from the general or state-lane forward) with the
// state-lane forward's layout: R = 4 lanes per row, kStateLaneStates = 4 states per lane (padded N 16 only),
// kStateRowsBwd = 32 rows per block, every lane walking time alone. Per chunk, walked from the last:
//   1. the row's per-step values (dt, dt u, dy = dout silu(z), u) once per row, shuffled to its lanes;
//   2. the chunk's states recomputed from the checkpoint into registers; the per-step output sums reduce-scattered
//      over the row's lanes give dz for the lane's own steps;
//   3. the adjoint g <- (g + C_t dy_t) a_t backwards; d delta and du partials per step are reduce-scattered over
//      the row's lanes (the lane finishes its own steps); dB_t and dC_t per (row, state, step) are reduce-scattered
//      over the warp's 8 rows (warp_rows_sum), then the 4 warps' sums are added through shared memory in a fixed
//      order into one partial per 32 rows of a (batch, group) (the general backward's layout: uniform groups,
//      dim / groups % 32 == 0), or kept per row when time-invariant.
// Time segments as in the general backward (blockIdx.y; each segment starts from the later segments' maps, written
// by scan_bwd_seg_kernel first). No cu_seqlens. Deterministic.
// KI: steps held per chunk (8 when K <= 8, else kMaxChunk), which sizes the registers and the shared memory.
static_assert(kStateRowsBwd * 4 == kStateThreads, "4 lanes per row");

// A row's inputs and gradient outputs in the backward (row offset roff; z and dz nullptr without z).
template <typename T>
struct BwdRow {
  const T *u, *delta, *z, *dout;
  T *du, *ddelta, *dz;
};
template <typename T>
__device__ __forceinline__ BwdRow<T> bwd_row(const ScanParams& p, size_t roff) {
  return {static_cast<const T*>(p.u) + roff,
          static_cast<const T*>(p.delta) + roff,
          p.z != nullptr ? static_cast<const T*>(p.z) + roff : nullptr,
          static_cast<const T*>(p.dout) + roff,
          static_cast<T*>(p.du) + roff,
          static_cast<T*>(p.ddelta) + roff,
          p.z != nullptr ? static_cast<T*>(p.dz) + roff : nullptr};
}

// A row's dD and d delta_bias partials of time segment seg: the sums held by its R adjacent lanes (each its own
// steps) added with shuffles, written by the lane that `write` says. Every lane of the warp must call this.
template <int R>
__device__ __forceinline__ void write_row_dD_ddb(const ScanParams& p, int seg, int row, bool write, float dD,
                                                 float ddb) {
#pragma unroll
  for (int o = R / 2; o >= 1; o >>= 1) {
    dD += __shfl_xor_sync(0xffffffffu, dD, o, R);
    ddb += __shfl_xor_sync(0xffffffffu, ddb, o, R);
  }
  if (write) {
    const size_t pr = ((size_t)seg * p.nrows + row) * p.rp_stride;
    p.dD_part[pr] = dD;
    p.ddb_part[pr] = ddb;
  }
}
__host__ __device__ inline int state_bwd_steps(int K) { return K <= 8 ? 8 : kMaxChunk; }
__host__ __device__ inline size_t state_bwd_smem_bytes(int ki) {
  return sizeof(float) * (kStateThreads / 32) * 2 * (size_t)ki * (16 + 1);
}

template <typename T, typename TBC, int KI>
__global__ void __launch_bounds__(kStateThreads, KI == 8 ? kStateBwdBlocks : 1) scan_bwd_state_kernel(const ScanParams p) {
  constexpr int NP = 16;
  constexpr int NS = kStateLaneStates;
  constexpr int R = NP / NS;
  constexpr int KL = KI / R;
  constexpr int M = 2 * KI;    // dB and dC values of a state per chunk: m = j (dB, step j), KI + j (dC)
  constexpr int SP = NP + 1;   // pitch of a staged line of states
  extern __shared__ float smem[];  // [warp][m][SP]: the warps' sums over their 8 rows
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int wr = (tid % 32) / R;  // row within the warp
  const auto [row, q, n0, row_c, b, d, active] = lane_row<R, NS, kStateThreads>(p);
  const int N = p.N;
  const int L = p.L;
  const int K = p.K;
  const size_t roff = (size_t)row_c * L;
  const BwdRow<T> io = bwd_row<T>(p, roff);  // (no structured bindings: lambdas capture them)
  const T *u = io.u, *delta = io.delta, *z = io.z, *dout = io.dout;
  T *du = io.du, *ddelta = io.ddelta, *dz = io.dz;
  const auto [Bv, Bc, bgB, partB] = coef_source<TBC>(p.B, p.b_groups, p.dim, N, L, row_c, d, 32);
  const auto [Cv, Cc, bgC, partC] = coef_source<TBC>(p.C, p.c_groups, p.dim, N, L, row_c, d, 32);
  const float Dd = p.D != nullptr ? p.D[d] : 0.f;
  const float bias = p.delta_bias != nullptr ? p.delta_bias[d] : 0.f;
  const size_t hoff = ((size_t)b * p.dim + d) * N;

  // this block's variable dB / dC partials (the block's 32 rows lie in one (b, group); one partial per 32 rows)
  const int row0 = blockIdx.x * kStateRowsBwd;
  auto part_base = [&](int groups, int npart, float* base) -> float* {
    if (groups == 0) return nullptr;
    const int gs = p.dim / groups;
    const int bg = row0 / gs;
    return base + ((size_t)bg * npart + (row0 - bg * gs) / 32) * N * L;
  };
  float* const outB = part_base(p.b_groups, p.npart_b, p.dB_part);
  float* const outC = part_base(p.c_groups, p.npart_c, p.dC_part);

  // this block's time segment: chunks [c_lo, c_hi) (all of them when p.nseg <= 1)
  const int nchunks = (L + K - 1) / K;
  const int seg = p.nseg > 1 ? (int)blockIdx.y : 0;
  const int c_lo = seg * p.seg_chunks;
  const int c_hi = p.nseg > 1 ? min(nchunks, c_lo + p.seg_chunks) : nchunks;
  const bool last_seg = c_hi == nchunks;

  float A2[NS], g[NS], dA[NS], accB[NS], accC[NS];
#pragma unroll
  for (int i = 0; i < NS; ++i) {
    const int n = n0 + i;
    A2[i] = n < N ? p.A[(size_t)d * N + n] * kLog2e : 0.f;
    // the adjoint entering the segment's last step: dlast in the last segment, else the later segments' maps
    // g -> P g + q composed from the last (scan_bwd_seg_kernel; the last segment's map includes dlast)
    g[i] = (last_seg && p.dlast != nullptr && n < N) ? p.dlast[hoff + n] : 0.f;
    for (int s2 = p.nseg - 1; s2 > seg; --s2) {
      if (n < N) g[i] = seg_apply(p, N, s2, n, row_c, g[i]);
    }
    dA[i] = accB[i] = accC[i] = 0.f;
  }
  float dD = 0.f, ddb = 0.f;

  // B / C as 16-byte vectors when every chunk starts aligned (element loads otherwise, and for a last chunk that
  // would read past L)
  constexpr int VE = 16 / sizeof(TBC);  // elements per vector
  constexpr int VB = KI / VE;           // vectors per state and chunk
  const bool vec = Bv != nullptr && Cv != nullptr && K % VE == 0 && L % VE == 0 && aligned16(Bv) && aligned16(Cv);

  for (int c = c_hi - 1; c >= c_lo; --c) {
    const int t0 = c * K;
    const int nt = min(K, L - t0);
    const bool vc = vec && t0 + KI <= L;
    // state n0 + i's B and C at the chunk's KI steps (the caller ensures n0 + i < N)
    auto load_bc = [&](int i, float (&bb)[KI], float (&cc)[KI]) {
      const int n = n0 + i;
      if (vc) {
        const size_t off = (size_t)n * L + t0;
#pragma unroll
        for (int v = 0; v < VB; ++v) {
          const uint4 xb = *reinterpret_cast<const uint4*>(Bv + off + v * VE);
          const uint4 xc = *reinterpret_cast<const uint4*>(Cv + off + v * VE);
#pragma unroll
          for (int e = 0; e < VE; ++e) {
            bb[v * VE + e] = vec_elem<TBC>(xb, e);
            cc[v * VE + e] = vec_elem<TBC>(xc, e);
          }
        }
      } else {
        coef_run<TBC, KI>(Bv, Bc, n, L, t0, bb);
        coef_run<TBC, KI>(Cv, Cc, n, L, t0, cc);
      }
    };
    float hs[NS][KI + 1];  // [i][0]: the state before the chunk; [i][j + 1]: after step t0 + j
#pragma unroll
    for (int i = 0; i < NS; ++i) {
      const int n = n0 + i;
      float v = 0.f;
      if (n < N) {
        if (c > 0) v = p.ckpt[((size_t)(c - 1) * N + n) * p.nrows + row_c];
        else if (p.h0 != nullptr) v = p.h0[hoff + n];
      }
      hs[i][0] = v;
    }
    // per-step values; steps past the chunk are identities with dy = 0
    float dt[KI], dtu[KI], dy[KI], unused[KI];
    row_step_values<KI, R>(t0, q, dt, dtu, [&](int tt, float& v_dt, float& v_dtu) {
      v_dt = v_dtu = 0.f;
      if (tt < t0 + nt) {
        const float x = to_f<T>(delta[tt]) + bias;
        v_dt = p.softplus ? softplus_f(x) : x;
        v_dtu = v_dt * to_f<T>(u[tt]);
      }
    });
    row_step_values<KI, R>(t0, q, dy, unused, [&](int tt, float& v_dy, float& v_none) {  // (v_none: dead code)
      v_dy = v_none = 0.f;
      if (tt < t0 + nt) {
        v_dy = to_f<T>(dout[tt]);
        if (z != nullptr) {
          const float zz = to_f<T>(z[tt]);
          v_dy *= zz * sigmoid_f(zz);
        }
      }
    });
    // recompute the chunk's states and the per-step output sums (for dz)
    float y[KI];
#pragma unroll
    for (int j = 0; j < KI; ++j) y[j] = 0.f;
    // (steps past the chunk are identities: dt = 0, dt u = 0, dy = 0; padded states, n >= N, are skipped)
#pragma unroll
    for (int i = 0; i < NS; ++i) {
      if (n0 + i < N) {
        float bb[KI], cc[KI];
        load_bc(i, bb, cc);
        float h = hs[i][0];
#pragma unroll
        for (int j = 0; j < KI; ++j) {
          h = exp2_approx(dt[j] * A2[i]) * h + dtu[j] * bb[j];
          hs[i][j + 1] = h;
          y[j] += cc[j] * h;
        }
      }
    }
    if (z != nullptr) {
      row_sum_steps<KI, R>(q, y);
#pragma unroll
      for (int k = 0; k < KL; ++k) {
        const int tt = t0 + k * R + q;
        if (active && tt < t0 + nt) {
          const float go = to_f<T>(dout[tt]);
          const float zz = to_f<T>(z[tt]);
          const float sz = sigmoid_f(zz);
          const float yy = y[k * R] + Dd * to_f<T>(u[tt]);
          dz[tt] = from_f<T>(go * yy * sz * (1.f + zz * (1.f - sz)));
        }
      }
    }
    // the adjoint, backwards through the chunk
    float sgb[KI], sdt[KI];
#pragma unroll
    for (int j = 0; j < KI; ++j) sgb[j] = sdt[j] = 0.f;
    const bool var_bc = outB != nullptr || outC != nullptr;  // (uniform over the block)
#pragma unroll
    for (int i = 0; i < NS; ++i) {
      const int n = n0 + i;
      float vs[M];  // this row's dB / dC values of state n (zero for padded states and rows past the end)
#pragma unroll
      for (int m = 0; m < M; ++m) vs[m] = 0.f;
      if (n < N) {
        float bb[KI], cc[KI];
        load_bc(i, bb, cc);
#pragma unroll
        for (int j = KI - 1; j >= 0; --j) {  // steps j >= nt are identities: their values are never read
          const float a = exp2_approx(dt[j] * A2[i]);
          const float gn = g[i] + cc[j] * dy[j];
          const float vb = gn * dtu[j];
          const float vc = dy[j] * hs[i][j + 1];
          vs[j] = active ? vb : 0.f;
          vs[KI + j] = active ? vc : 0.f;
          accB[i] += vb;
          accC[i] += vc;
          sgb[j] += gn * bb[j];
          const float gpa = gn * hs[i][j] * a;
          sdt[j] += gpa * A2[i];
          dA[i] += gpa * dt[j];
          g[i] = gn * a;
        }
      }
      if (var_bc) {  // the warp's 8 rows summed; row wr's lanes keep values k 8 + wr
        warp_rows_sum<M>(wr, vs);
        if (n < N) {
#pragma unroll
          for (int k = 0; k < M / 8; ++k) smem[(warp * M + k * 8 + wr) * SP + n] = vs[k * 8];
        }
      }
    }
    row_sum_steps<KI, R>(q, sgb);
    row_sum_steps<KI, R>(q, sdt);
#pragma unroll
    for (int k = 0; k < KL; ++k) {
      const int tt = t0 + k * R + q;
      if (tt < t0 + nt) {
        const float dtj = lane_item<KI, R>(dt, k, q);
        const float uj = to_f<T>(u[tt]);  // (an L1 hit: loaded for dt u above)
        const float dyj = lane_item<KI, R>(dy, k, q);
        const float dd0 = sdt[k * R] * kLn2 + sgb[k * R] * uj;
        const float dd = p.softplus ? dd0 * -expm1f(-dtj) : dd0;
        if (active) {
          du[tt] = from_f<T>(sgb[k * R] * dtj + Dd * dyj);
          ddelta[tt] = from_f<T>(dd);
          ddb += dd;
          dD += dyj * uj;
        }
      }
    }
    // dB / dC of the chunk summed over the block's 4 warps in a fixed order (one partial per 32 rows)
    if (var_bc) {
      __syncthreads();
#pragma unroll
      for (int e0 = 0; e0 < NP * M; e0 += kStateThreads) {
        const int e = e0 + tid;
        const int m = e % M;  // (isC, step j)
        const int n = e / M;
        const int j = m % KI;
        float* out = m < KI ? outB : outC;
        if (e < NP * M && out != nullptr && j < nt && n < N) {
          float acc = 0.f;
#pragma unroll
          for (int w = 0; w < kStateThreads / 32; ++w) acc += smem[(w * M + m) * SP + n];
          out[(size_t)n * L + t0 + j] = acc;
        }
      }
      __syncthreads();
    }
  }
  if (active) {
    if (p.dh0 != nullptr && seg == 0) {
#pragma unroll
      for (int i = 0; i < NS; ++i)
        if (n0 + i < N) p.dh0[hoff + n0 + i] = g[i];
    }
    const size_t pr = ((size_t)seg * p.nrows + row) * p.rp_stride;  // per-row partials of this segment
#pragma unroll
    for (int i = 0; i < NS; ++i) {
      const int n = n0 + i;
      if (n < N) {
        p.dA_part[pr + n] = dA[i];
        if (p.b_groups == 0) p.dB_part[pr + n] = accB[i];
        if (p.c_groups == 0) p.dC_part[pr + n] = accC[i];
      }
    }
  }
  // dD and d delta_bias: the row's lanes each hold their own steps' sums
  write_row_dD_ddb<R>(p, seg, row, active && q == 0, dD, ddb);
}

// ------------------------------------------------------------------------------------------
// backward, staged (the state-lane backward's default where tile_bwd_fits; SSM_KERNELS_SCAN_STATE_BWD_TILE=0 turns it
// off)
// ------------------------------------------------------------------------------------------
//
// The state-lane backward's chunks (K <= kTileBwdSteps; the same outputs, partial layout and time segments) with the
// staged forward's layout: a block owns kTileRows rows of one (b, group); thread 4 r + q loads row r's delta / u / z /
// dout for steps q SP .. (SP = 2) and one state's B / C for one step, and stages (dt, dt u, dy) and B / C as float in
// shared memory; lane (row tid % 32, states 4 (tid / 32) ..) recomputes the chunk's states from the checkpoint
// (keeping h and a = exp(dt A) in registers: one exponential per (step, state) instead of two), runs the adjoint
// g <- (g + C_t dy_t) a_t backwards and writes per step its partial sums over its 4 states of g B (for du) and
// g h_{t-1} a A (for d delta), read back by the loading thread. A warp's 32 lanes are the block's 32 rows for the
// same 4 states, so dB_t / dC_t of the block (one partial per 32 rows, the state-lane layout) are column sums of a
// [64][32] tile per warp in shared memory: no shuffles, no cross-warp pass.
// Every load of a chunk (row values, B / C, the lanes' checkpoint) is issued before any is used: one memory round
// trip per chunk (H200, run22: 1,616 -> 1,563 us at 8 x 2048 x 2048 bf16 against loads interleaved with the
// softplus; loading the next chunk during this one's arithmetic spilled and took 1,813 us).
__host__ __device__ inline size_t tile_bwd_smem_bytes() {
  constexpr int KI = kTileBwdSteps;
  return sizeof(float) * ((size_t)kTileRows * (4 * KI + 4) + 2 * KI * 16 + 3 * (size_t)kStateThreads * (KI + 1) +
                          (size_t)(kStateThreads / 32) * 2 * 4 * KI * 33);
}

template <typename T, typename TBC>
__global__ void __launch_bounds__(kStateThreads, kTileBwdBlocks) scan_bwd_tile_kernel(const ScanParams p) {
  constexpr int KI = kTileBwdSteps;
  constexpr bool kFast = sizeof(T) == 2;  // softplus_fast / sigmoid_fast
  constexpr int NP = 16, NS = 4, R = NP / NS;
  constexpr int SP = KI / R;      // a loader's steps of its row
  constexpr int SV = 4 * KI + 4;  // row stride of the staged (dt, dt u, dy, 0)
  constexpr int SY = KI + 1;      // lane stride of the per-step partials (odd: scalar stores free of conflicts)
  constexpr int M = 2 * NS * KI;  // a lane's dB / dC values per chunk: m = 2 (i KI + j) + isC
  constexpr int SR = 33;          // row stride of the dB / dC tile
  static_assert(kStateThreads == kTileRows * R && kStateThreads == KI * NP && M == 64, "tile layout");
  extern __shared__ float smem[];
  float* s_v = smem;                            // [kTileRows][SV]
  float* s_b = s_v + kTileRows * SV;            // [KI][NP]
  float* s_c = s_b + KI * NP;                   // [KI][NP]
  float* s_y = s_c + KI * NP;                   // [kStateThreads][SY]: sum_n C_n h_n
  float* s_g = s_y + kStateThreads * SY;        // sum_n g_n B_n
  float* s_d = s_g + kStateThreads * SY;        // sum_n g_n h_{t-1,n} a_n A_n log2(e)
  float* s_red = s_d + kStateThreads * SY;      // [warp][M][SR]: the lanes' dB / dC values, one column per lane

  const int tid = threadIdx.x;
  const int lane = tid % 32;
  const int warp = tid / 32;
  const int row0 = blockIdx.x * kTileRows;
  const int N = p.N;
  const int L = p.L;
  const int K = p.K;
  // loader / finisher: row rl, steps q SP ..
  const TileLoaderRow lr = tile_loader_row<R>(p, row0, tid);
  const int rl = lr.rl, q = lr.q, row = lr.row, row_c = lr.row_c, d = lr.d;
  const bool active = lr.active;
  const size_t roff = (size_t)row_c * L;
  const BwdRow<T> io = bwd_row<T>(p, roff);  // (no structured bindings: lambdas capture them)
  const T *u = io.u, *delta = io.delta, *z = io.z, *dout = io.dout;
  T *du = io.du, *ddelta = io.ddelta, *dz = io.dz;
  const float Dd = p.D != nullptr ? p.D[d] : 0.f;
  const float bias = p.delta_bias != nullptr ? p.delta_bias[d] : 0.f;
  // loader of B / C: state ln, step lt of the chunk
  const int ln = tid % NP;
  const int lt = tid / NP;
  const bool ln_ok = ln < N;
  const int gsB = p.dim / p.b_groups, gsC = p.dim / p.c_groups;
  const int bgB = row0 / gsB, bgC = row0 / gsC;
  const TBC* Brow = static_cast<const TBC*>(p.B) + ((size_t)bgB * N + (ln_ok ? ln : 0)) * L;
  const TBC* Crow = static_cast<const TBC*>(p.C) + ((size_t)bgC * N + (ln_ok ? ln : 0)) * L;
  // this block's dB / dC partials (one per 32 rows of a (b, group), as scan_bwd_state_kernel)
  float* const outB = p.dB_part + ((size_t)bgB * p.npart_b + (row0 - bgB * gsB) / 32) * N * L;
  float* const outC = p.dC_part + ((size_t)bgC * p.npart_c + (row0 - bgC * gsC) / 32) * N * L;
  // lane: row cr, states n0 ..
  const int cr = lane;
  const int n0 = warp * NS;
  const int crow = row0 + cr;
  const bool cactive = crow < p.nrows;
  const int crow_c = cactive ? crow : p.nrows - 1;
  const size_t hoff = (size_t)crow_c * N;

  // this block's time segment: chunks [c_lo, c_hi)
  const int nchunks = (L + K - 1) / K;
  const int seg = p.nseg > 1 ? (int)blockIdx.y : 0;
  const int c_lo = seg * p.seg_chunks;
  const int c_hi = p.nseg > 1 ? min(nchunks, c_lo + p.seg_chunks) : nchunks;
  const bool last_seg = c_hi == nchunks;

  float A2[NS], h0[NS], g[NS], dA[NS];
  lane_states_init(p, crow_c % p.dim, n0, hoff, A2, h0);
#pragma unroll
  for (int i = 0; i < NS; ++i) {
    const int n = n0 + i;
    // the adjoint entering the segment's last step: dlast in the last segment, else the later segments' maps
    g[i] = (last_seg && p.dlast != nullptr && n < N) ? p.dlast[hoff + n] : 0.f;
    for (int s2 = p.nseg - 1; s2 > seg; --s2) {
      if (n < N) g[i] = seg_apply(p, N, s2, n, crow_c, g[i]);
    }
    dA[i] = 0.f;
  }
  float dD = 0.f, ddb = 0.f;

  // the raw inputs of a chunk: the loader's steps of its row, B / C of state ln at step lt, the lane's initial states
  const bool vec_x = K % SP == 0 && L % SP == 0 && aligned_to(p.u, SP * sizeof(T)) &&
                     aligned_to(p.delta, SP * sizeof(T)) && aligned_to(p.dout, SP * sizeof(T)) &&
                     (z == nullptr || aligned_to(p.z, SP * sizeof(T)));
  T rd[SP], ru[SP], rz[SP], rg[SP];
  TBC rb, rc;
  float rh[NS];
  auto fetch = [&](int cc) {  // every load of chunk cc, issued before any is used
    const int ts = cc * K + q * SP;
    load_run<T, SP>(delta, ts, L, vec_x, rd);
    load_run<T, SP>(u, ts, L, vec_x, ru);
    load_run<T, SP>(dout, ts, L, vec_x, rg);
    if (z != nullptr) load_run<T, SP>(z, ts, L, vec_x, rz);
    const bool okb = ln_ok && lt < min(K, L - cc * K);
    rb = okb ? Brow[cc * K + lt] : from_f<TBC>(0.f);
    rc = okb ? Crow[cc * K + lt] : from_f<TBC>(0.f);
#pragma unroll
    for (int i = 0; i < NS; ++i) {
      const int n = n0 + i;
      rh[i] = n < N ? (cc > 0 ? p.ckpt[((size_t)(cc - 1) * N + n) * p.nrows + crow_c] : h0[i]) : 0.f;
    }
  };

  for (int c = c_hi - 1; c >= c_lo; --c) {
    const int t0 = c * K;
    const int nt = min(K, L - t0);
    // 1. stage the chunk (steps j >= nt: dt = dt u = dy = 0 and B = C = 0, identities)
    float xu[SP], xdt[SP], xdy[SP], xgo[SP], xz[SP];
    float h[NS][KI + 1];
    {
      fetch(c);  // every load first: one memory round trip per chunk
      float v[4 * SP];
#pragma unroll
      for (int s = 0; s < SP; ++s) {
        const bool ok = q * SP + s < nt;
        const float x = to_f<T>(rd[s]) + bias;
        xdt[s] = ok ? (p.softplus ? (kFast ? softplus_fast(x) : softplus_f(x)) : x) : 0.f;
        xu[s] = ok ? to_f<T>(ru[s]) : 0.f;
        xgo[s] = ok ? to_f<T>(rg[s]) : 0.f;
        xz[s] = ok && z != nullptr ? to_f<T>(rz[s]) : 0.f;
        xdy[s] = z != nullptr ? xgo[s] * xz[s] * (kFast ? sigmoid_fast(xz[s]) : sigmoid_f(xz[s])) : xgo[s];
        v[4 * s] = xdt[s];
        v[4 * s + 1] = xdt[s] * xu[s];
        v[4 * s + 2] = xdy[s];
        v[4 * s + 3] = 0.f;
      }
      float4* dst = reinterpret_cast<float4*>(s_v + rl * SV + 4 * q * SP);
#pragma unroll
      for (int s = 0; s < SP; ++s) dst[s] = make_float4(v[4 * s], v[4 * s + 1], v[4 * s + 2], v[4 * s + 3]);
      s_b[lt * NP + ln] = to_f<TBC>(rb);
      s_c[lt * NP + ln] = to_f<TBC>(rc);
#pragma unroll
      for (int i = 0; i < NS; ++i) h[i][0] = rh[i];
    }
    __syncthreads();
    // 2. recompute the chunk's states (and a = exp(dt A)); partial output sums for dz
    float a[NS][KI];
#pragma unroll
    for (int j = 0; j < KI; ++j) {
      const float4 v = *reinterpret_cast<const float4*>(s_v + cr * SV + 4 * j);
      const float4 bb = *reinterpret_cast<const float4*>(s_b + j * NP + n0);
      const float4 cc = *reinterpret_cast<const float4*>(s_c + j * NP + n0);
      const float bv[NS] = {bb.x, bb.y, bb.z, bb.w};
      const float cv[NS] = {cc.x, cc.y, cc.z, cc.w};
      float y = 0.f;
#pragma unroll
      for (int i = 0; i < NS; ++i) {
        a[i][j] = exp2_approx(v.x * A2[i]);
        h[i][j + 1] = a[i][j] * h[i][j] + v.y * bv[i];
        y += cv[i] * h[i][j + 1];
      }
      s_y[tid * SY + j] = y;
    }
    // 3. the adjoint, backwards through the chunk
#pragma unroll
    for (int j = KI - 1; j >= 0; --j) {
      const float4 v = *reinterpret_cast<const float4*>(s_v + cr * SV + 4 * j);
      const float4 bb = *reinterpret_cast<const float4*>(s_b + j * NP + n0);
      const float4 cc = *reinterpret_cast<const float4*>(s_c + j * NP + n0);
      const float bv[NS] = {bb.x, bb.y, bb.z, bb.w};
      const float cv[NS] = {cc.x, cc.y, cc.z, cc.w};
      float sg = 0.f, sd = 0.f;
#pragma unroll
      for (int i = 0; i < NS; ++i) {
        const float gn = g[i] + cv[i] * v.z;
        s_red[(warp * M + 2 * (i * KI + j)) * SR + lane] = cactive ? gn * v.y : 0.f;
        s_red[(warp * M + 2 * (i * KI + j) + 1) * SR + lane] = cactive ? v.z * h[i][j + 1] : 0.f;
        sg += gn * bv[i];
        const float gpa = gn * h[i][j] * a[i][j];
        sd += gpa * A2[i];
        dA[i] += gpa * v.x;
        g[i] = gn * a[i][j];
      }
      s_g[tid * SY + j] = sg;
      s_d[tid * SY + j] = sd;
    }
    __syncwarp();
    // 4. the block's dB / dC of the warp's states: lane sums columns lane and lane + 32 over the 32 rows
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int m = lane + 32 * half;
      const float* col = s_red + (warp * M + m) * SR;
      float acc = 0.f;
#pragma unroll
      for (int k = 0; k < 32; ++k) acc += col[k];
      const int i = m / (2 * KI);
      const int j = (m / 2) % KI;
      const int n = n0 + i;
      if (j < nt && n < N) ((m & 1) ? outC : outB)[(size_t)n * L + t0 + j] = acc;
    }
    __syncthreads();
    // 5. finish the loaded steps: dz, du, d delta
#pragma unroll
    for (int s = 0; s < SP; ++s) {
      const int j = q * SP + s;
      const int tt = t0 + j;
      if (j < nt) {
        float y = Dd * xu[s], sg = 0.f, sd = 0.f;
#pragma unroll
        for (int l = 0; l < R; ++l) {
          const int src = (l * kTileRows + rl) * SY + j;
          y += s_y[src];
          sg += s_g[src];
          sd += s_d[src];
        }
        const float dd0 = sd * kLn2 + sg * xu[s];
        const float dd = p.softplus ? dd0 * (kFast ? 1.f - exp2_approx(-xdt[s] * kLog2e) : -expm1f(-xdt[s])) : dd0;
        if (active) {
          if (z != nullptr) {
            const float sz = kFast ? sigmoid_fast(xz[s]) : sigmoid_f(xz[s]);
            dz[tt] = from_f<T>(xgo[s] * y * sz * (1.f + xz[s] * (1.f - sz)));
          }
          du[tt] = from_f<T>(sg * xdt[s] + Dd * xdy[s]);
          ddelta[tt] = from_f<T>(dd);
          ddb += dd;
          dD += xdy[s] * xu[s];
        }
      }
    }
  }
  if (cactive) {
    const size_t pr = ((size_t)seg * p.nrows + crow) * p.rp_stride;  // per-row partials of this segment
#pragma unroll
    for (int i = 0; i < NS; ++i) {
      const int n = n0 + i;
      if (n < N) {
        if (p.dh0 != nullptr && seg == 0) p.dh0[hoff + n] = g[i];
        p.dA_part[pr + n] = dA[i];
      }
    }
  }
  // dD and d delta_bias: the row's 4 loaders (adjacent lanes) each hold their own steps' sums
  write_row_dD_ddb<R>(p, seg, row, active && q == 0, dD, ddb);
}

#ifndef SSK_EMULATE
// Forward (BWD = false: 8 steps per lane, a 256-step chunk, one 16-byte vector of 16-bit inputs per lane and
// array) or backward (4 steps per lane, rows per warp p.long_rw) of the long-sequence path.
template <bool BWD, int NP, typename T, typename TBC>
cudaError_t launch_long_np(const ScanParams& p, cudaStream_t stream) {
  if constexpr (BWD) {
    if (p.long_fwd == kLongFwdState) {  // the state-lane backward (padded N 16 only)
      if constexpr (NP == 16) {
        if (p.tile_minb != 0) {  // the staged backward (tile_bwd_fits)
          auto kernel = scan_bwd_tile_kernel<T, TBC>;
          const size_t smem = tile_bwd_smem_bytes();
          const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
          if (err != cudaSuccess) return err;
          const cudaError_t serr = launch_bwd_seg_maps<NP, T, TBC>(p, stream);  // the segments' maps first
          if (serr != cudaSuccess) return serr;
          const int blocks = (int)(((long long)p.nrows + kTileRows - 1) / kTileRows);
          kernel<<<dim3(blocks, p.nseg > 1 ? p.nseg : 1), kStateThreads, smem, stream>>>(p);
          return cudaGetLastError();
        }
        const int ki = state_bwd_steps(p.K);
        const size_t smem = state_bwd_smem_bytes(ki);
        auto kernel = ki == 8 ? scan_bwd_state_kernel<T, TBC, 8> : scan_bwd_state_kernel<T, TBC, kMaxChunk>;
        const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (err != cudaSuccess) return err;
        const int blocks = (int)(((long long)p.nrows + kStateRowsBwd - 1) / kStateRowsBwd);
        const cudaError_t serr = launch_bwd_seg_maps<NP, T, TBC>(p, stream);  // the segments' maps first
        if (serr != cudaSuccess) return serr;
        kernel<<<dim3(blocks, p.nseg > 1 ? p.nseg : 1), kStateThreads, smem, stream>>>(p);
        return cudaGetLastError();
      } else {
        return cudaErrorInvalidValue;
      }
    }
    const size_t smem = long_bwd_smem_bytes(NP, p.long_rw);
    auto kernel = scan_bwd_long_kernel<NP, kLongItemsBwd, T, TBC>;
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (err != cudaSuccess) return err;
    const int rows = kLongWarps * p.long_rw;
    kernel<<<(p.nrows + rows - 1) / rows, 32 * kLongWarps, smem, stream>>>(p);
  } else if (p.long_fwd == kLongFwdState) {
    auto blocks = [&p](int ns) {  // R = state_lanes(NP, ns) threads per row
      return (int)(((long long)p.nrows * state_lanes(NP, ns) + kStateThreads - 1) / kStateThreads);
    };
    if constexpr (NP == 16) {
      if (p.long_ns == 2) {
        scan_fwd_state_kernel<NP, 2, T, TBC><<<blocks(2), kStateThreads, 0, stream>>>(p);
        return cudaGetLastError();
      }
    }
    if constexpr (NP == 16) {
      if (p.tile_minb != 0) {  // the staged kernel (tile_fwd_fits, tile_min_blocks)
        const int tb = (int)(((long long)p.nrows + kTileRows - 1) / kTileRows);
        if (p.tile_minb == 5) {
          scan_fwd_tile_kernel<T, TBC, 5><<<tb, kStateThreads, tile_smem_bytes(), stream>>>(p);
        } else {
          scan_fwd_tile_kernel<T, TBC, 4><<<tb, kStateThreads, tile_smem_bytes(), stream>>>(p);
        }
        return cudaGetLastError();
      }
    }
    scan_fwd_state_kernel<NP, kStateLaneStates, T, TBC><<<blocks(kStateLaneStates), kStateThreads, 0, stream>>>(p);
  } else {
    const int blocks = (p.nrows + kLongWarps - 1) / kLongWarps;
    if constexpr (NP == 16) {
      if (p.long_minb == 5) {
        scan_fwd_long_kernel<NP, kLongItems, T, TBC, 5><<<blocks, 32 * kLongWarps, 0, stream>>>(p);
        return cudaGetLastError();
      }
    }
    scan_fwd_long_kernel<NP, kLongItems, T, TBC><<<blocks, 32 * kLongWarps, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

template <bool BWD, typename T, typename TBC>
cudaError_t launch_long_t(const ScanParams& p, cudaStream_t stream) {
  switch (padded_state(p.N)) {
    case 4: return launch_long_np<BWD, 4, T, TBC>(p, stream);
    case 8: return launch_long_np<BWD, 8, T, TBC>(p, stream);
    case 16: return launch_long_np<BWD, 16, T, TBC>(p, stream);
    case 32: return launch_long_np<BWD, 32, T, TBC>(p, stream);
    case 64: return launch_long_np<BWD, 64, T, TBC>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}
#endif  // SSK_EMULATE

}  // namespace ssk
