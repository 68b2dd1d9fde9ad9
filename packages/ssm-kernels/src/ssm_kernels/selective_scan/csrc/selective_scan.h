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
  float* dA_part;    // (nrows, N)
  float* dD_part;    // (nrows,)
  float* ddb_part;   // (nrows,)
  float* dB_part;    // variable: (batch * b_groups, npart_b, N, L); constant: (nrows, N)
  float* dC_part;    // same for C
  int npart_b, npart_c;  // partials per (b, group): warps of 32 rows that touch it
  int uniform_b, uniform_c;  // every warp of 32 rows lies in one group (dim / groups % 32 == 0)
  int smem_b, smem_c;        // every block of kRows rows lies in one group: stage B / C tiles in smem
  float* dh0;        // (nseq, dim, N) or nullptr
};

// Rows of (b, d) handled by one block (one thread per row).
constexpr int kRows = 64;
// v2 kernels: forward tile length bound (ScanParams::tile <= this) and backward chunk bound (K <= this;
// larger K runs the v1 backward).
constexpr int kMaxTileV2 = 32;
constexpr int kMaxChunkV2 = 16;

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
// first-version kernels (SSM_KERNELS_SCAN_IMPL=v1); dtype is a DType
cudaError_t launch_fwd_v1(const ScanParams& p, int dtype, cudaStream_t stream);
cudaError_t launch_bwd_v1(const ScanParams& p, int dtype, cudaStream_t stream);
cudaError_t launch_fwd_v1_f32(const ScanParams& p, cudaStream_t stream);
cudaError_t launch_fwd_v1_f16(const ScanParams& p, cudaStream_t stream);
cudaError_t launch_fwd_v1_bf16(const ScanParams& p, cudaStream_t stream);
cudaError_t launch_bwd_v1_f32(const ScanParams& p, cudaStream_t stream);
cudaError_t launch_bwd_v1_f16(const ScanParams& p, cudaStream_t stream);
cudaError_t launch_bwd_v1_bf16(const ScanParams& p, cudaStream_t stream);

}  // namespace ssk
