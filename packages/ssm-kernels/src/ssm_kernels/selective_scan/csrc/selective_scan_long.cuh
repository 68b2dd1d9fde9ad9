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

template <int NP, int KI, typename T, typename TBC>
__global__ void __launch_bounds__(32 * kLongWarps) scan_fwd_long_kernel(const ScanParams p) {
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
  const TBC* Bv = p.b_groups > 0 ? static_cast<const TBC*>(p.B) + (size_t)(row / (p.dim / p.b_groups)) * N * L : nullptr;
  const TBC* Cv = p.c_groups > 0 ? static_cast<const TBC*>(p.C) + (size_t)(row / (p.dim / p.c_groups)) * N * L : nullptr;
  const float* Bc = p.b_groups > 0 ? nullptr : static_cast<const float*>(p.B) + (size_t)d * N;
  const float* Cc = p.c_groups > 0 ? nullptr : static_cast<const float*>(p.C) + (size_t)d * N;
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
        warp_scan_affine(ap, hp, lane);
        // exclusive prefix: lane - 1's inclusive one (identity for lane 0), applied to the chunk's state
        float ae = __shfl_up_sync(0xffffffffu, ap, 1);
        float he = __shfl_up_sync(0xffffffffu, hp, 1);
        if (lane == 0) {
          ae = 1.f;
          he = 0.f;
        }
        float h = ae * carry[n] + he;
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

#ifndef SSK_EMULATE
template <int NP, int KI, typename T, typename TBC>
cudaError_t launch_fwd_long_np(const ScanParams& p, cudaStream_t stream) {
  const int blocks = (p.nrows + kLongWarps - 1) / kLongWarps;
  scan_fwd_long_kernel<NP, KI, T, TBC><<<blocks, 32 * kLongWarps, 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename T, typename TBC>
cudaError_t launch_fwd_long_t(const ScanParams& p, cudaStream_t stream) {
  // 8 steps per lane (a 256-step chunk, one 16-byte vector of 16-bit inputs per lane and array)
  switch (padded_state(p.N)) {
    case 4: return launch_fwd_long_np<4, kLongItems, T, TBC>(p, stream);
    case 8: return launch_fwd_long_np<8, kLongItems, T, TBC>(p, stream);
    case 16: return launch_fwd_long_np<16, kLongItems, T, TBC>(p, stream);
    case 32: return launch_fwd_long_np<32, kLongItems, T, TBC>(p, stream);
    case 64: return launch_fwd_long_np<64, kLongItems, T, TBC>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}
#endif  // SSK_EMULATE

}  // namespace ssk
