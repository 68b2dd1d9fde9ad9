// Selective scan (Mamba-1): parameters and launchers shared by the CUDA kernels and the torch glue.
// Plain C++ (no torch headers) so the .cu files compile with nvcc alone.
#pragma once

#include <cuda_runtime_api.h>
#include <stddef.h>

namespace ssk {

enum DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Every (batch, dim, L) array is contiguous; a "row" is one (b, d) pair, row = b * dim + d.
struct ScanParams {
  int batch, dim, L, N;  // N = true state size (the kernel pads it to a power of two NP)
  int nrows;             // batch * dim
  int nseq;              // batch, or len(cu_seqlens) - 1
  int softplus;          // apply softplus to delta + delta_bias
  int bc_dtype;          // DType of variable B and C (either the input dtype or float32)

  const void* u;          // (batch, dim, L) input dtype
  const void* delta;      // (batch, dim, L) input dtype
  const void* z;          // (batch, dim, L) input dtype or nullptr
  const float* A;         // (dim, N) float32
  const void* B;          // b_groups > 0: (batch * b_groups, N, L) bc_dtype; b_groups == 0: (dim, N) float32
  const void* C;          // same for C
  int b_groups, c_groups; // 0 = time-invariant
  const float* D;         // (dim,) or nullptr
  const float* delta_bias;  // (dim,) or nullptr
  const float* h0;        // (nseq, dim, N) initial state or nullptr (zeros)
  const int* cu;          // (nseq + 1,) sequence offsets or nullptr (one sequence per batch row)

  // forward outputs
  void* out;     // (batch, dim, L) input dtype
  float* last;   // (nseq, dim, N) or nullptr
  float* ckpt;   // (ceil(L / K) - 1, N, nrows): state before step c * K, c >= 1; or nullptr
  int K;         // checkpoint interval = backward chunk length (>= 1)
  int tile;      // forward: time steps staged per tile (1..64)

  // backward
  const void* dout;  // (batch, dim, L) input dtype
  const float* dlast;  // (nseq, dim, N) or nullptr
  void* du;          // (batch, dim, L) input dtype
  void* ddelta;      // (batch, dim, L) input dtype
  void* dz;          // (batch, dim, L) input dtype or nullptr (when z is nullptr)
  // Per-row partials (summed over the batch on the host) share one (nrows, rp_stride) buffer: row r's dA at
  // dA_part[r * rp_stride + n], dD at dD_part[r * rp_stride], and so on (each pointer is offset to its columns).
  float* dA_part;    // (nrows, N) columns
  float* dD_part;    // (nrows,) column
  float* ddb_part;   // (nrows,) column
  float* dB_part;    // variable: (batch * b_groups, npart_b, N, L); constant: (nrows, N) columns of the row buffer
  float* dC_part;    // same for C
  int rp_stride;     // row stride of the per-row partial buffer
  int npart_b, npart_c;  // partials per (b, group): warps that touch it (32 rows; short kernels 32 / (NP / 4))
  int uniform_b, uniform_c;  // every warp lies in one group (dim / groups % 32 == 0); short kernels: ShortPartMode
  int smem_b, smem_c;        // every block of kRows rows lies in one group: stage B / C tiles in smem
  float* dh0;        // (nseq, dim, N) or nullptr
  int long_rw;       // long backward: rows per warp (a block owns kLongWarps * long_rw rows)
  int short_stage_b, short_stage_c;  // short kernels: stage variable B / C of the block's (b, group) in smem
  int short_minb;    // short kernels: __launch_bounds__ minimum blocks per SM of the plain instantiation (1 or 8)
  int short_rows;    // short path: the one-thread-per-row kernels (short_rows_ok) instead of the lane-split ones
  int long_minb;     // long forward, N in (8, 16]: __launch_bounds__ minimum blocks per SM (4 or 5)
  // General kernels over time segments (bwd_segments; training calls without cu_seqlens): nseg segments of
  // seg_chunks chunks of K steps, one grid row (blockIdx.y) each. seg: (nseg, 2, N, nrows) float32, per segment the
  // decay product and the state (forward, scan_fwd_seg_kernel: segments < nseg - 1) or adjoint (backward,
  // scan_bwd_seg_kernel: segments >= 1) from zero. With nseg > 1 the backward's per-row partials are (nseg, nrows)
  // rows of rp_stride.
  int nseg;
  int seg_chunks;
  float* seg;
  // Long forward design (launch_fwd_long_*): kLongFwdWarp (time split over a warp's lanes) or kLongFwdState (states
  // split over a row's lanes; also the forward of training calls, writing checkpoints for the general backward);
  // long_ns: the state-lane kernel's states per lane (kStateLaneStates, or 2 for padded N 16).
  int long_fwd;
  int long_ns;
  // The staged state-lane forward (scan_fwd_tile_kernel): 0 = not used, else its resident blocks per SM (4 or 5,
  // tile_min_blocks; set by the host where tile_fwd_fits).
  int tile_minb;
};

// Rows of (b, d) handled by one block (one thread per row).
constexpr int kRows = 64;
// General kernels: forward tile length bound (ScanParams::tile <= this) and backward chunk bound (K <= this).
constexpr int kMaxTile = 32;
constexpr int kMaxChunk = 16;
// Short-sequence kernels (selective_scan_short.cuh): used for L <= kShortMaxL without cu_seqlens;
// kShortThreads threads per block, NP / 4 lanes per row (4 states per lane), no checkpoints.
constexpr int kShortMaxL = 16;
constexpr int kShortThreads = 128;
// Long-sequence kernels (selective_scan_long.cuh): one warp per row, time split over the lanes in runs of
// kLongItems steps (a chunk of 32 * kLongItems steps per warp iteration); kLongWarps rows per block.
// Used without cu_seqlens when SSM_KERNELS_SCAN_LONG=1 (see use_long in selective_scan.cpp).
constexpr int kLongWarps = 4;
constexpr int kLongItems = 8;
constexpr int kLongMinL = 128;
// Long forward, padded N = 16: minimum resident blocks per SM asked of the compiler (SSM_KERNELS_SCAN_LONG_MINB,
// 4 or 5). 4: 118 registers (fp32), no spill, 16 warps per SM; 5: 96 registers with 68 bytes of spill, 20 warps
// per SM. The kernel is latency-bound (ncu, H200: 0.6 eligible warps per scheduler at 4), and 5 won on the H200:
// raw EEG shape 1334 -> 1157 us, batch 8 x dim 2048 x L 2048 bf16 1126 -> 1111 us of GPU time
// (benchmarks/results/h200-logs/run11-long-minb.log). Other state sizes keep 4.
constexpr int kLongFwdMinBlocks = 5;
// Long forward designs (ScanParams::long_fwd): scan_fwd_long_kernel splits a row's time over the 32 lanes of a warp;
// scan_fwd_state_kernel gives a row NP / NS adjacent lanes of NS states each (kStateThreads threads per block).
enum LongFwd : int { kLongFwdWarp = 0, kLongFwdState = 1 };
constexpr int kStateThreads = 128;
constexpr int kStateLaneStates = 4;
// Resident blocks per SM asked of the compiler for padded N 16 with 16-bit B / C (register cap 65536 / (128 x 4) =
// 128: 12 bytes of spill for NS 4; fp32 B / C or smaller N spill 160-400 bytes under it, so they stay uncapped).
constexpr int kStateMinBlocks = 4;
__host__ __device__ constexpr int state_lanes(int np, int ns) { return np < ns ? 1 : np / ns; }
// Where the state-lane forward runs unless SSM_KERNELS_SCAN_STATE_FWD says otherwise (selective_scan.cpp,
// use_state_fwd): padded N >= 16 and at least one block of kStateThreads threads per SM; for inference calls also
// 16-bit variable B / C (or time-invariant ones). H200 (benchmarks/results/h200-logs/run13b-state-sweep.log, run13d),
// GPU time against the warp-split forward: bf16 N 16 batch 8 x dim 2048 x L 2048 546 vs 1104 us, batch 4: 383 vs
// 658, batch 16: 1092 vs 1986; N 32: 501 vs 676; N 64: 193 vs 592. It lost with fp32 B / C (raw EEG, 19,456 rows:
// 1381 vs 1171 us; 168 registers) and with too few threads (N 8 or 4,096 rows: 213 vs 188, 399 vs 289 us). In
// training it replaces the general forward with its segment maps, which it beats at fp32 too (raw EEG fwd+bwd GPU
// time 7.02 vs 7.35 ms; big 4.49 vs 4.88 ms). Where its staged kernel fits (tile: tile_fwd_fits) fp32 B / C win too:
// raw EEG fp32 inference 389 vs 1,188 us (run21, benchmarks/results/h200-logs/run21-tile-ab.log).
inline bool state_fwd_auto(long long nrows, int np, bool bc16, int sms, bool training, bool tile) {
  return np >= 16 && (bc16 || training || tile) &&
         nrows * state_lanes(np, kStateLaneStates) >= (long long)sms * kStateThreads;
}
// Staged state-lane forward (scan_fwd_tile_kernel, selective_scan_long.cuh): a block of kStateThreads threads owns
// kTileRows rows of one (b, group) (4 lanes of 4 states per row) and walks time in chunks of kTileSteps steps, staging
// the rows' step values and the group's B / C in shared memory.
constexpr int kTileRows = 32;
constexpr int kTileSteps = 16;
// Its dynamic shared memory (floats): the row values (dt, dt u) [kTileRows][2 kTileSteps + 4], B and C
// [kTileSteps][16] each, the lanes' partial outputs [kStateThreads][kTileSteps + 4] (the pads keep the 16-byte
// accesses free of bank conflicts).
inline size_t tile_smem_bytes() {
  return sizeof(float) * ((size_t)kTileRows * (2 * kTileSteps + 4) + 2 * (size_t)kTileSteps * 16 +
                          (size_t)kStateThreads * (kTileSteps + 4));
}
// Whether a call fits it: padded N 16, variable B and C in groups of whole blocks (kTileRows channels), no cu_seqlens,
// and with checkpoints (interval K) every checkpoint at a chunk's start or middle (K % 8 == 0).
inline bool tile_fwd_fits(int np, int dim, int b_groups, int c_groups, bool packed, bool ckpt, int K) {
  if (np != 16 || packed || b_groups == 0 || c_groups == 0) return false;
  if ((dim / b_groups) % kTileRows != 0 || (dim / c_groups) % kTileRows != 0) return false;
  return !ckpt || K % (kTileSteps / 2) == 0;
}
// Its resident blocks per SM (the register cap): 4 (no spill, 122 registers) while the grid fits the GPU at 4 blocks
// per SM, else 5 (94 registers), which saves a partial second wave. H200, cubin variants of run21: batch 8 x dim 2048
// x L 2048 bf16 (512 blocks) 419 vs 427 us; raw EEG 304 x 64 x 2000 (608 blocks) fp32 392 vs 519 us, bf16 517 vs
// 926 us.
inline int tile_min_blocks(long long nrows, int sms) {
  const long long blocks = (nrows + kTileRows - 1) / kTileRows;
  return blocks > 4LL * sms ? 5 : 4;
}
// Staged state-lane backward (scan_bwd_tile_kernel; the state-lane backward's default where it fits,
// SSM_KERNELS_SCAN_STATE_BWD_TILE=0 keeps the unstaged kernel): the state-lane backward's chunks (K <= kTileBwdSteps)
// on the staged layout; padded N 16, variable B / C in groups of whole 32-channel blocks, no cu_seqlens. Its
// registers (128) and shared memory (53 KB) allow kTileBwdBlocks blocks per SM.
constexpr int kTileBwdSteps = 8;
constexpr int kTileBwdBlocks = 4;
inline bool tile_bwd_fits(int np, int dim, int b_groups, int c_groups, bool packed, int K) {
  return np == 16 && !packed && b_groups > 0 && c_groups > 0 && (dim / b_groups) % kTileRows == 0 &&
         (dim / c_groups) % kTileRows == 0 && K <= kTileBwdSteps;
}
// Long backward: kLongItemsBwd steps per lane, i.e. chunks (= the forward's checkpoint interval K) of
// kLongBwdChunk steps; a block owns kLongWarps * ScanParams::long_rw rows of one (batch, group).
constexpr int kLongItemsBwd = 4;
constexpr int kLongBwdChunk = 32 * kLongItemsBwd;
// Dynamic shared memory of the long backward: the chunk's dB / dC column sums, two staging buffers and
// the per-row state (adjoint carry, dA, constant dB / dC, dD, d delta_bias).
inline size_t long_bwd_smem_bytes(int np, int rw) {
  return sizeof(float) * ((size_t)2 * np * kLongBwdChunk + 4 * kLongWarps * kLongBwdChunk +
                          (size_t)kLongWarps * rw * (4 * np + 2));
}
// Rows of one warp in the short kernels (the dB / dC partials are per warp).
// (Staging B / C needs every row of a block in one (b, group): group size % (kShortThreads / (NP / 4)) == 0.)
inline int short_rows_per_warp(int np) { return 32 / (np / 4); }
// How the short backward writes the partials of variable dB / dC (ScanParams::uniform_b / uniform_c):
// per warp with segmented sums (warps straddle groups), per warp (each warp in one group), or per block
// (each block in one group; the warps' sums are combined in shared memory).
enum ShortPartMode : int { kShortPartSegments = 0, kShortPartWarp = 1, kShortPartBlock = 2 };
// Minimum resident blocks per SM asked of the compiler for the plain short kernels: 8 caps them at 64 registers.
// H200, TUSZ shape (N 16, fp32; 2026-11-30): the backward went from 108 registers to 64 with 112 bytes of spill
// and from 450 to 375 us, the forward from 72 to 64 registers and 100 to 96 us. For N = 4 or 8 the cap spills
// 200-330 bytes per thread (untimed), so it stays off there. SSM_KERNELS_SCAN_SHORT_MINB (1 or 8) overrides.
inline int short_min_blocks(int np) { return np == 16 ? 8 : 1; }
// Shared memory of the short kernels' staged B and C ([L][NP] each; see ScanParams::short_stage_b), which
// have a staged instantiation for padded state sizes up to kShortStageMaxNP.
constexpr int kShortStageMaxNP = 16;
// Whether the short kernels can stage a variable B or C whose groups hold gs channels: every block of
// kShortThreads / (np / 4) rows lies in one (b, group), and a staged instantiation exists for np.
inline bool short_stage_ok(int gs, int np) {
  return np <= kShortStageMaxNP && gs % (kShortThreads / (np / 4)) == 0;
}
inline size_t short_stage_smem_bytes(int np, int L) { return sizeof(float) * 2 * (size_t)L * np; }
// Dynamic shared memory of the short backward: the states before each step (4 per lane), for the
// block mode per-warp [NP][L] slices of dB and dC, then the staged B and C (at the end).
inline size_t short_bwd_smem_bytes(int np, int L) {
  return sizeof(float) * ((size_t)L * 4 * kShortThreads + 2 * (size_t)(kShortThreads / 32) * np * L) +
         short_stage_smem_bytes(np, L);
}
// Partial mode and count per (b, group) of the short backward for group size gs and padded state size np.
inline int short_part_mode(int gs, int np) {
  const int rpw = short_rows_per_warp(np);
  if (gs % (rpw * (kShortThreads / 32)) == 0) return kShortPartBlock;
  return gs % rpw == 0 ? kShortPartWarp : kShortPartSegments;
}
// One-thread-per-row variant of the short kernels (selective_scan_short.cuh, scan_*_rows_kernel): every state of a
// row in one thread's registers, one warp per block. It needs N <= kRowsMaxNP and variable B and C whose groups are
// whole warps (group size % 32 == 0), so that a warp shares one (b, group) slice of B / C (staged in shared memory)
// and sums its dB / dC over its 32 rows with a reduce-scatter (partials per warp). Used whenever it applies;
// SSM_KERNELS_SCAN_SHORT_ROWS=0 turns it off (selective_scan.cpp).
constexpr int kRowsMaxNP = 16;
inline bool short_rows_ok(int dim, int b_groups, int c_groups, int np) {
  return np <= kRowsMaxNP && b_groups > 0 && c_groups > 0 && (dim / b_groups) % 32 == 0 && (dim / c_groups) % 32 == 0;
}
// Warps per block of the rows kernels (each warp works alone on its own shared-memory slice).
constexpr int kRowsWarps = 1;
// Shared memory (floats) of one warp of the rows kernels: the staged B and C ([L][NP] each), then rows arrays of
// [32][L | 1]: the forward's u / delta / z; the backward's four per-step arrays followed by the states before every
// step ([L][NP][32]). The backward's history bounds the occupancy: L 10, NP 16 -> 27 KB per warp, 8 warps per SM.
__host__ __device__ inline size_t rows_fwd_smem_floats(int np, int L) {
  return 2 * (size_t)L * np + 3 * 32 * (size_t)(L | 1);
}
__host__ __device__ inline size_t rows_bwd_smem_floats(int np, int L) {
  return 2 * (size_t)L * np + 4 * 32 * (size_t)(L | 1) + (size_t)L * np * 32;
}
inline int short_npart(int gs, int np) {
  const int rpw = short_rows_per_warp(np);
  switch (short_part_mode(gs, np)) {
    case kShortPartBlock: return gs / (rpw * (kShortThreads / 32));
    case kShortPartWarp: return gs / rpw;
    default: return (gs - 1) / rpw + 2;
  }
}

// Time segments of the general backward. One thread per row walks all of time, so a grid of few rows leaves the
// GPU mostly idle (raw EEG shape, 19456 rows: 304 blocks of 64 threads, 0.58 waves, 1.2 active warps per scheduler
// on an H200). The adjoint carried backwards through step t, g <- (g + C_t dy_t) a_t, is linear in g, so time splits
// into segments: a first kernel gives each segment s >= 1 its map g_out = P g_in + q (P = prod a_t, q the adjoint
// from g_in = 0); the backward then runs every (row block, segment) at once, each segment starting from the maps of
// the segments after it composed. The states come from the forward's checkpoints as before.
// Segment count for a grid of rowblocks blocks, nchunks chunks and slots resident blocks GPU-wide. Cost model (in
// units of one pass over time): (waves + 1/2) x (1/s + 4/nchunks) + 0.03 for s > 1, i.e. the waves of blocks plus
// half a block of tail, each block walking 1/s of time plus about four chunks of start-up, and the segment-map kernel.
// H200, raw EEG shape (304 row blocks, 250 chunks, 528 slots): the sweep's best was 12 segments (backward kernel
// 6506 -> 4907 us), the model's pick; batch 8 x dim 2048 x L 2048 (256 row blocks): 4-8 were best (4367 -> 3382-3419
// us; 12: 3621 us), the model picks 8. benchmarks/results/h200-logs/run12*-seg-sweep.log. 1 when the rows already
// fill the GPU or for one chunk.
constexpr int kMaxSegments = 16;
// The state-lane backward (scan_bwd_state_kernel): kStateRowsBwd rows per block of kStateThreads, and the blocks per
// SM its registers allow (capped at 168 per thread for 8-step chunks: 3).
constexpr int kStateRowsBwd = 32;
constexpr int kStateBwdBlocks = 3;
// Where it replaces the general backward unless SSM_KERNELS_SCAN_STATE_BWD says otherwise (selective_scan.cpp,
// use_state_bwd; it applies to padded N 16 with whole-warp B / C groups or time-invariant B / C, without cu_seqlens):
// chunks of K <= 8 steps, the variant timed. H200, fwd+bwd GPU time against the general backward
// (benchmarks/results/h200-logs/run14c-bwd-sweep.log): batch 8 x dim 2048 x L 2048 bf16 3.45 vs 4.55 ms, batch 4:
// 1.95 vs 2.66; raw EEG (304 x 64 x 2000, fp32) 5.36 vs 7.23, bf16 4.47 vs 6.38. Its 16-step variant (255
// registers) is untimed and runs only when forced.
inline bool state_bwd_auto(int K) { return K <= 8; }
// Whether its layout fits a call: padded N 16 and variable B / C in groups of whole warps (32 channels) or
// time-invariant (groups 0). The caller also excludes cu_seqlens and the short and long paths.
inline bool state_bwd_fits(int np, int dim, int b_groups, int c_groups) {
  return np == 16 && (b_groups == 0 || (dim / b_groups) % 32 == 0) && (c_groups == 0 || (dim / c_groups) % 32 == 0);
}
// Blocks of the general backward per SM allowed by its registers (255 per thread, kRows threads per block).
constexpr int kBwdRegBlocks = 4;
// fill: apply the cost model even when the rows fill the GPU (the state-lane backward, whose 1-2 waves of blocks
// leave a long tail).
// The segment count s in 1 .. min(nchunks, kMaxSegments) of least cost(s, waves), waves = ceil(rowblocks s / slots)
// (the smallest s among equal costs).
template <class Cost>
inline int least_cost_segments(long long rowblocks, int nchunks, long long slots, Cost cost) {
  int best = 1;
  double best_cost = 0.0;
  const int smax = nchunks < kMaxSegments ? nchunks : kMaxSegments;
  for (int s = 1; s <= smax; ++s) {
    const double c = cost(s, (rowblocks * s + slots - 1) / slots);
    if (s == 1 || c < best_cost - 1e-9) {
      best = s;
      best_cost = c;
    }
  }
  return best;
}
inline int bwd_segments(long long rowblocks, int nchunks, long long slots, bool fill = false) {
  if (nchunks < 2 || slots < 1 || (!fill && rowblocks >= slots)) return 1;
  return least_cost_segments(rowblocks, nchunks, slots, [nchunks](int s, long long waves) {
    return (waves + 0.5) * (1.0 / s + 4.0 / nchunks) + (s > 1 ? 0.03 : 0.0);
  });
}
// States per thread of the segment-map kernel (scan_bwd_seg_kernel) and its threads per row.
constexpr int kSegStates = 4;
__host__ __device__ constexpr int seg_threads_per_row(int np) { return np < kSegStates ? 1 : np / kSegStates; }
// Chunks per segment for s requested segments (the actual count is ceil(nchunks / seg_chunks) <= s).
inline int seg_chunks_for(int nchunks, int s) { return (nchunks + s - 1) / s; }
// The segments a call runs: count and chunks per segment ({1, 0}: none). forced: 0 lets bwd_segments choose for
// rowblocks blocks and slots resident blocks, n >= 1 asks for n; at most one segment per chunk.
struct Segments {
  int count, chunks;
};
// Time segments of the staged backward, whose blocks take equal time: kernel time ceil(rowblocks s / slots) / s waves
// of full-length blocks, plus the segment maps (scan_bwd_seg_kernel, over (s - 1) / s of the sequence), whose pass
// costs about kSegMapCost of the staged backward's (H200, run22: 318 us for 5/6 of the 8 x 2048 x 2048 bf16 shape
// beside 1,563 us). One segment when the rows fill one wave (that shape: 512 blocks on 528 slots).
constexpr double kSegMapCost = 0.25;
inline int tile_bwd_segments(long long rowblocks, int nchunks, long long slots) {
  if (nchunks < 2 || slots < 1) return 1;
  const double fill = (double)rowblocks / (double)slots;
  return least_cost_segments(rowblocks, nchunks, slots, [fill](int s, long long waves) {
    return (double)waves / s + kSegMapCost * (s - 1) / s * fill;
  });
}
// model: 0 the general backward, 1 the state-lane backward (bwd_segments with fill), 2 the staged backward
// (tile_bwd_segments).
inline Segments plan_segments(int nchunks, int forced, long long rowblocks, long long slots, int model = 0) {
  if (nchunks < 2) return {1, 0};
  int s = forced > 0 ? forced
          : model == 2 ? tile_bwd_segments(rowblocks, nchunks, slots)
                       : bwd_segments(rowblocks, nchunks, slots, model == 1);
  s = s < nchunks ? s : nchunks;
  if (s <= 1) return {1, 0};
  const int sc = seg_chunks_for(nchunks, s);
  return {(nchunks + sc - 1) / sc, sc};
}

// Dynamic shared memory (bytes) of the kernels for a given padded state size and tile/chunk length.
inline size_t fwd_smem_bytes(int np, int tile) {
  const int pitch = tile | 1;
  return sizeof(float) * (3 * kRows * pitch + 2 * tile * np);
}
inline size_t bwd_smem_bytes(int np, int K) {
  const int pitch = K | 1;
  return sizeof(float) * (4 * kRows * pitch + (K + 1) * np * kRows + 2 * np * kRows + 2 * K * np);
}

// Padded state size used for a true state size N (0 if unsupported).
inline int padded_state(int N) {
  if (N <= 4) return 4;
  if (N <= 8) return 8;
  if (N <= 16) return 16;
  if (N <= 32) return 32;
  if (N <= 64) return 64;
  return 0;
}

// Launchers (one translation unit per input dtype). Return the launch's cudaError_t.
cudaError_t launch_fwd_f32(const ScanParams& p, cudaStream_t stream);
cudaError_t launch_fwd_f16(const ScanParams& p, cudaStream_t stream);
cudaError_t launch_fwd_bf16(const ScanParams& p, cudaStream_t stream);
cudaError_t launch_bwd_f32(const ScanParams& p, cudaStream_t stream);
cudaError_t launch_bwd_f16(const ScanParams& p, cudaStream_t stream);
cudaError_t launch_bwd_bf16(const ScanParams& p, cudaStream_t stream);
// short-sequence kernels (L <= kShortMaxL, no cu_seqlens; p.ckpt unused)
cudaError_t launch_fwd_short_f32(const ScanParams& p, cudaStream_t stream);
cudaError_t launch_fwd_short_f16(const ScanParams& p, cudaStream_t stream);
cudaError_t launch_fwd_short_bf16(const ScanParams& p, cudaStream_t stream);
cudaError_t launch_bwd_short_f32(const ScanParams& p, cudaStream_t stream);
cudaError_t launch_bwd_short_f16(const ScanParams& p, cudaStream_t stream);
cudaError_t launch_bwd_short_bf16(const ScanParams& p, cudaStream_t stream);
// long-sequence kernels (no cu_seqlens; writes the general backward's checkpoints when p.ckpt is set)
cudaError_t launch_fwd_long_f32(const ScanParams& p, cudaStream_t stream);
cudaError_t launch_fwd_long_f16(const ScanParams& p, cudaStream_t stream);
cudaError_t launch_fwd_long_bf16(const ScanParams& p, cudaStream_t stream);
cudaError_t launch_bwd_long_f32(const ScanParams& p, cudaStream_t stream);
cudaError_t launch_bwd_long_f16(const ScanParams& p, cudaStream_t stream);
cudaError_t launch_bwd_long_bf16(const ScanParams& p, cudaStream_t stream);

}  // namespace ssk
