// Torch glue of the selective scan: tensor checks, allocation, stream, launch, host-side reductions.
// The Python side (ssm_kernels/selective_scan/cuda.py) prepares contiguous inputs:
//   u, delta, z, dout: (batch, dim, L) one dtype (f32 / f16 / bf16); A: (dim, N) f32;
//   B, C: (batch, G, N, L) in u's dtype or f32, or (dim, N) f32 (time-invariant);
//   D, delta_bias: (dim,) f32; h0, dlast: (nseq, dim, N) f32; cu: (nseq + 1,) int32.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "selective_scan.h"

namespace {

using at::Tensor;
using c10::optional;

bool debug_sync() {
  static const bool on = [] {
    const char* e = std::getenv("SSM_KERNELS_DEBUG");
    return e != nullptr && e[0] != '\0' && e[0] != '0';
  }();
  return on;
}

void check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "selective_scan ", what, ": kernel launch failed: ", cudaGetErrorString(err));
  if (debug_sync()) {
    err = cudaDeviceSynchronize();
    TORCH_CHECK(err == cudaSuccess, "selective_scan ", what, ": kernel failed: ", cudaGetErrorString(err));
  }
}

ssk::DType dtype_of(const Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat: return ssk::kFloat32;
    case at::kHalf: return ssk::kFloat16;
    case at::kBFloat16: return ssk::kBFloat16;
    default: TORCH_CHECK(false, name, " must be float32, float16 or bfloat16, got ", t.scalar_type());
  }
  return ssk::kFloat32;
}

void check_cuda_contig(const Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

void check_opt(const optional<Tensor>& t, const char* name, at::ScalarType st) {
  if (t.has_value()) {
    check_cuda_contig(*t, name);
    TORCH_CHECK(t->scalar_type() == st, name, " has dtype ", t->scalar_type(), ", expected ", st);
  }
}

// Short-sequence kernels (selective_scan_short.cuh) for L <= kShortMaxL without cu_seqlens;
// SSM_KERNELS_SCAN_SHORT=0 turns them off (cuda.py's short_path() mirrors this rule).
bool use_short(int L, bool has_cu) {
  const char* e = std::getenv("SSM_KERNELS_SCAN_SHORT");
  const bool off = e != nullptr && e[0] == '0' && e[1] == '\0';
  return !off && !has_cu && L >= 1 && L <= ssk::kShortMaxL;
}

// Short kernels' options. Stage variable B / C of a block's (b, group) in shared memory when every block of rows
// lies in one (b, group) and N <= 16 (padded), with SSM_KERNELS_SCAN_SHORT_STAGE=1 (off by default: not faster
// on an H200). The register cap of the plain kernels: ssk::short_min_blocks, or SSM_KERNELS_SCAN_SHORT_MINB.
void set_short_options(ssk::ScanParams& p) {
  const char* e = std::getenv("SSM_KERNELS_SCAN_SHORT_STAGE");
  const bool on = e != nullptr && e[0] == '1' && e[1] == '\0';
  const int np = ssk::padded_state(p.N);
  p.short_stage_b = on && p.b_groups > 0 && ssk::short_stage_ok(p.dim / p.b_groups, np) ? 1 : 0;
  p.short_stage_c = on && p.c_groups > 0 && ssk::short_stage_ok(p.dim / p.c_groups, np) ? 1 : 0;
  const char* m = std::getenv("SSM_KERNELS_SCAN_SHORT_MINB");
  p.short_minb = m != nullptr && m[0] != '\0' ? std::atoi(m) : ssk::short_min_blocks(np);
  TORCH_CHECK(p.short_minb == 1 || p.short_minb == 8, "SSM_KERNELS_SCAN_SHORT_MINB must be 1 or 8, got '", m, "'");
  // one thread per row where it applies (ssk::short_rows_ok), unless SSM_KERNELS_SCAN_SHORT_ROWS=0
  const char* r = std::getenv("SSM_KERNELS_SCAN_SHORT_ROWS");
  const bool rows_off = r != nullptr && r[0] == '0' && r[1] == '\0';
  p.short_rows = !rows_off && ssk::short_rows_ok(p.dim, p.b_groups, p.c_groups, np) ? 1 : 0;
}

// Long-sequence kernels in training (selective_scan_long.cuh: one warp per row, time split over the lanes) for
// L >= kLongMinL without cu_seqlens when SSM_KERNELS_SCAN_LONG=1: off by default, because with its backward (or
// with the general backward's checkpoints) training was slower than the general kernels on an H200.
// SSM_KERNELS_SCAN_LONG: '1' (long kernels in training too), '0' (never) or unset / anything else (0).
char scan_long_env() {
  const char* e = std::getenv("SSM_KERNELS_SCAN_LONG");
  return e != nullptr && (e[0] == '0' || e[0] == '1') && e[1] == '\0' ? e[0] : 0;
}

bool use_long(int L, bool has_cu) { return scan_long_env() == '1' && !has_cu && L >= ssk::kLongMinL; }

// Inference calls (no checkpoints asked, K = 0) run the long forward by default for L >= kLongMinL without
// cu_seqlens: it was 5-12% faster than the general forward on an H200 (raw EEG shape 1.45 vs 1.71 ms, batch 8 x
// dim 2048 x L 2048 bf16 1.30 vs 1.36 ms). SSM_KERNELS_SCAN_LONG=0 turns it off (cuda.py's long_inference_path()
// mirrors this rule).
bool use_long_inference(int L, bool has_cu) { return scan_long_env() != '0' && !has_cu && L >= ssk::kLongMinL; }

// SSM_KERNELS_SCAN_BWD_SEGMENTS: time segments of the general backward (ssk::bwd_segments): unset or '0' chooses,
// '1' turns them off, n > 1 asks for n (at most kMaxSegments, and at most one per chunk).
int bwd_segments_env() {
  const char* e = std::getenv("SSM_KERNELS_SCAN_BWD_SEGMENTS");
  if (e == nullptr || e[0] == '\0') return 0;
  const int n = std::atoi(e);
  TORCH_CHECK(n >= 0 && n <= ssk::kMaxSegments, "SSM_KERNELS_SCAN_BWD_SEGMENTS must be 0..", ssk::kMaxSegments,
              ", got '", e, "'");
  return n;
}

// SSM_KERNELS_SCAN_FWD_SEGMENTS=0 keeps the general forward of a training call in one pass over time (by default it
// splits time like its backward: scan_fwd_seg_kernel).
bool fwd_segments_on() {
  const char* e = std::getenv("SSM_KERNELS_SCAN_FWD_SEGMENTS");
  return !(e != nullptr && e[0] == '0' && e[1] == '\0');
}

struct SmemInfo {
  int sms = 132, smem_sm = 228 * 1024, smem_block = 227 * 1024;
};
SmemInfo smem_info() {
  SmemInfo s;
  int dev = 0;
  if (cudaGetDevice(&dev) == cudaSuccess) {
    cudaDeviceGetAttribute(&s.sms, cudaDevAttrMultiProcessorCount, dev);
    cudaDeviceGetAttribute(&s.smem_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev);
    cudaDeviceGetAttribute(&s.smem_block, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  }
  cudaGetLastError();  // clear any error from the queries
  return s;
}

// Blocks of the general backward one SM holds at once: its 255 registers per thread allow 4 blocks of kRows
// threads (ncu on the H200: "Block Limit Registers 4"), shared memory may allow fewer.
int64_t bwd_slots(const SmemInfo& s, int np, int K) {
  const int by_smem = s.smem_sm / (int)(ssk::bwd_smem_bytes(np, K) + 1024);
  return (int64_t)s.sms * std::max(1, std::min(ssk::kBwdRegBlocks, by_smem));
}

// Time segments of a general call without cu_seqlens (ssk::plan_segments; SSM_KERNELS_SCAN_BWD_SEGMENTS forces them).
// state: for the state-lane backward (kStateRowsBwd rows per block, kStateBwdBlocks blocks per SM); tile: for its
// staged kernel (the same rows per block, kTileBwdBlocks per SM, tile_bwd_segments).
ssk::Segments segments_for(int N, int L, int nrows, int K, bool state = false, bool tile = false) {
  const int nchunks = (L + K - 1) / K;
  const int forced = nchunks < 2 ? 1 : bwd_segments_env();
  const int rows = state ? ssk::kStateRowsBwd : ssk::kRows;
  const int64_t rowblocks = ((int64_t)nrows + rows - 1) / rows;
  // the device is queried only when the count is chosen
  int64_t slots = 0;
  if (forced == 0) {
    slots = tile    ? (int64_t)smem_info().sms * ssk::kTileBwdBlocks
            : state ? (int64_t)smem_info().sms * ssk::kStateBwdBlocks
                    : bwd_slots(smem_info(), ssk::padded_state(N), K);
  }
  return ssk::plan_segments(nchunks, forced, rowblocks, slots, tile ? 2 : state ? 1 : 0);
}
// Sets p.nseg / p.seg_chunks (one segment unless `allowed` and segments_for finds several) and returns the segment
// maps' buffer (nseg, 2, N, nrows), pointed to by p.seg (undefined for one segment). Keep it alive until the launch.
Tensor use_segments(ssk::ScanParams& p, bool allowed, const at::TensorOptions& f32, bool state = false,
                    bool tile = false) {
  const ssk::Segments sg = allowed ? segments_for(p.N, p.L, p.nrows, p.K, state, tile) : ssk::Segments{1, 0};
  p.nseg = sg.count;
  p.seg_chunks = sg.chunks;
  if (p.nseg <= 1) return Tensor();
  Tensor seg = at::empty({p.nseg, 2, p.N, p.nrows}, f32);
  p.seg = seg.data_ptr<float>();
  return seg;
}
int64_t backward_segments(int64_t N, int64_t L, int64_t nrows, int64_t K) {
  return segments_for((int)N, (int)L, (int)nrows, (int)K).count;
}

// Backward chunk length K of the general kernels (= forward checkpoint interval, <= kMaxChunk steps, <= L). The backward's shared
// memory grows with K; pick the largest K that still lets enough blocks share an SM for this grid
// (up to 3 per SM; one full wave when the grid is small), so short and long inputs both fill the GPU. Inputs of
// several chunks are split into time segments when their rows leave the GPU idle (bwd_segments), so there the
// chunk is sized for kBwdRegBlocks blocks per SM.
int choose_chunk(int64_t N, int64_t L, int64_t nrows) {
  const int np = ssk::padded_state((int)N);
  TORCH_CHECK(np > 0, "selective_scan: the CUDA kernels support N <= 64, got N=", N);
  const SmemInfo si = smem_info();
  const int sms = std::max(si.sms, 1);
  const int64_t blocks = (nrows + ssk::kRows - 1) / ssk::kRows;
  const bool segmented = L > ssk::kMaxChunk && bwd_segments_env() != 1 && blocks < (int64_t)sms * ssk::kBwdRegBlocks;
  const int per_sm = segmented ? ssk::kBwdRegBlocks
                               : (int)std::min<int64_t>(3, std::max<int64_t>(1, (blocks + sms - 1) / sms));
  const size_t budget = std::min<size_t>((size_t)si.smem_block, (size_t)si.smem_sm / per_sm - 1024);
  // one chunk when L fits, else a multiple of 8 (16-byte vector loads) when possible
  if (L <= ssk::kMaxChunk) {
    int K = (int)std::max<int64_t>(1, L);
    while (K > 1 && ssk::bwd_smem_bytes(np, K) > budget) --K;
    return K;
  }
  for (int K : {16, 8}) {
    if (K <= ssk::kMaxChunk && ssk::bwd_smem_bytes(np, K) <= budget) return K;
  }
  int K = 7;
  while (K > 1 && ssk::bwd_smem_bytes(np, K) > budget) --K;
  return K;
}

// Rows per warp of the long backward (a block owns R = kLongWarps * rw rows of one (b, group); rw in
// {8, 4, 2, 1}, R dividing the groups of variable B / C). A larger rw means fewer dB / dC partials (their
// traffic is 8 * batch * groups * (group size / R) * N * L bytes, written and read once) but fewer blocks, and
// a last wave of blocks that may leave SMs idle. Cost model: the scan work divided by the busy fraction of
// the waves (resident blocks per SM: 4 for N <= 16, else 2) plus the partial traffic at 3 TB/s.
// SSM_KERNELS_SCAN_LONG_RW forces rw (tuning). 0 when no rw fits (a group size is not a multiple of
// kLongWarps: cuda.py then never asks for the long path).
int long_rows_per_warp(const ssk::ScanParams& p) {
  auto fits = [&](int rw) {
    const int rows = ssk::kLongWarps * rw;
    const bool b_ok = p.b_groups == 0 || (p.dim / p.b_groups) % rows == 0;
    return b_ok && (p.c_groups == 0 || (p.dim / p.c_groups) % rows == 0);
  };
  if (const char* e = std::getenv("SSM_KERNELS_SCAN_LONG_RW")) {
    const int rw = std::atoi(e);
    TORCH_CHECK(rw == 1 || rw == 2 || rw == 4 || rw == 8, "SSM_KERNELS_SCAN_LONG_RW must be 1, 2, 4 or 8, got '",
                e, "'");
    return fits(rw) ? rw : 0;
  }
  const int sms = smem_info().sms;
  const double slots = (double)sms * (ssk::padded_state(p.N) <= 16 ? 4 : 2);
  // one row's share of the GPU: ~1.2 warp instructions per state and step, 4 schedulers per SM at ~2 GHz
  // issuing about every other cycle
  const double row_ns = 1.2 * p.N * p.L / (sms * 4.0 * 2.0 * 0.5);
  int best = 0;
  double best_ns = 0.0;
  for (int rw : {8, 4, 2, 1}) {
    if (!fits(rw)) continue;
    const int rows = ssk::kLongWarps * rw;
    const double blocks = std::ceil((double)p.nrows / rows);
    const double busy = blocks / (std::ceil(blocks / slots) * slots);
    int npart_rows = 0;  // partial rows of (N, L) per (b, group), summed over B and C
    if (p.b_groups > 0) npart_rows += p.batch * p.b_groups * (p.dim / p.b_groups / rows);
    if (p.c_groups > 0) npart_rows += p.batch * p.c_groups * (p.dim / p.c_groups / rows);
    const double ns = p.nrows * row_ns / busy + 8.0 * npart_rows * p.N * p.L / 3000.0;  // 3000 B/ns
    if (best == 0 || ns < best_ns) {
      best = rw;
      best_ns = ns;
    }
  }
  return best;
}

// Fill the parts of ScanParams shared by forward and backward; returns the input dtype.
ssk::DType fill_common(ssk::ScanParams& p, const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                       const Tensor& C, const optional<Tensor>& D, const optional<Tensor>& z,
                       const optional<Tensor>& delta_bias, const optional<Tensor>& h0, const optional<Tensor>& cu,
                       bool softplus) {
  check_cuda_contig(u, "u");
  check_cuda_contig(delta, "delta");
  check_cuda_contig(A, "A");
  check_cuda_contig(B, "B");
  check_cuda_contig(C, "C");
  const ssk::DType dt = dtype_of(u, "u");
  TORCH_CHECK(u.dim() == 3, "u must be (batch, dim, L)");
  TORCH_CHECK(delta.sizes() == u.sizes() && delta.scalar_type() == u.scalar_type(), "delta must match u");
  TORCH_CHECK(A.scalar_type() == at::kFloat && A.dim() == 2 && A.size(0) == u.size(1), "A must be (dim, N) float32");
  p.batch = (int)u.size(0);
  p.dim = (int)u.size(1);
  p.L = (int)u.size(2);
  p.N = (int)A.size(1);
  p.nrows = p.batch * p.dim;
  TORCH_CHECK(ssk::padded_state(p.N) > 0, "selective_scan: the CUDA kernels support N <= 64, got N=", p.N);
  p.softplus = softplus ? 1 : 0;

  int bc_dtype = -1;
  auto fill_bc = [&](const Tensor& X, const char* name, const void** ptr, int* groups) {
    if (X.dim() == 2) {
      TORCH_CHECK(X.scalar_type() == at::kFloat && X.size(0) == p.dim && X.size(1) == p.N, name,
                  " (time-invariant) must be (dim, N) float32");
      *groups = 0;
    } else {
      TORCH_CHECK(X.dim() == 4 && X.size(0) == p.batch && X.size(2) == p.N && X.size(3) == p.L, name,
                  " must be (batch, G, N, L)");
      TORCH_CHECK(X.size(1) >= 1 && p.dim % X.size(1) == 0, name, ": groups must divide dim");
      TORCH_CHECK(X.scalar_type() == u.scalar_type() || X.scalar_type() == at::kFloat, name,
                  " must have u's dtype or float32");
      const int xd = X.scalar_type() == at::kFloat ? (int)ssk::kFloat32 : (int)dt;
      TORCH_CHECK(bc_dtype < 0 || bc_dtype == xd, "variable B and C must have the same dtype");
      bc_dtype = xd;
      *groups = (int)X.size(1);
    }
    *ptr = X.data_ptr();
  };
  fill_bc(B, "B", &p.B, &p.b_groups);
  fill_bc(C, "C", &p.C, &p.c_groups);
  // a whole block of kRows rows shares one (b, group): B / C tiles are staged in shared memory
  p.smem_b = p.b_groups > 0 && (p.dim / p.b_groups) % ssk::kRows == 0 ? 1 : 0;
  p.smem_c = p.c_groups > 0 && (p.dim / p.c_groups) % ssk::kRows == 0 ? 1 : 0;
  p.bc_dtype = bc_dtype < 0 ? (int)dt : bc_dtype;

  check_opt(D, "D", at::kFloat);
  check_opt(delta_bias, "delta_bias", at::kFloat);
  check_opt(h0, "initial_state", at::kFloat);
  check_opt(cu, "cu_seqlens", at::kInt);
  if (z.has_value()) {
    check_cuda_contig(*z, "z");
    TORCH_CHECK(z->sizes() == u.sizes() && z->scalar_type() == u.scalar_type(), "z must match u");
  }
  p.nseq = cu.has_value() ? (int)cu->numel() - 1 : p.batch;
  TORCH_CHECK(!cu.has_value() || p.batch == 1, "cu_seqlens needs batch 1");
  if (h0.has_value()) {
    TORCH_CHECK(h0->dim() == 3 && h0->size(0) == p.nseq && h0->size(1) == p.dim && h0->size(2) == p.N,
                "initial_state must be (nseq, dim, N)");
  }
  p.u = u.data_ptr();
  p.delta = delta.data_ptr();
  p.z = z.has_value() ? z->data_ptr() : nullptr;
  p.A = A.data_ptr<float>();
  p.D = D.has_value() ? D->data_ptr<float>() : nullptr;
  p.delta_bias = delta_bias.has_value() ? delta_bias->data_ptr<float>() : nullptr;
  p.h0 = h0.has_value() ? h0->data_ptr<float>() : nullptr;
  p.cu = cu.has_value() ? cu->data_ptr<int>() : nullptr;
  return dt;
}

// The state-lane backward (scan_bwd_state_kernel), where it applies: SSM_KERNELS_SCAN_STATE_BWD=1 runs it at any
// chunk K, 0 never, unset where ssk::state_bwd_auto says.
bool use_state_bwd(int K) {
  const char* e = std::getenv("SSM_KERNELS_SCAN_STATE_BWD");
  const std::string es = e != nullptr ? e : "";
  TORCH_CHECK(es.empty() || es == "0" || es == "1", "SSM_KERNELS_SCAN_STATE_BWD must be 0 or 1, got '", es, "'");
  return es.empty() ? ssk::state_bwd_auto(K) : es == "1";
}

// The state-lane forward (ssk::kLongFwdState): SSM_KERNELS_SCAN_STATE_FWD=1 runs it wherever it can (inference calls
// on the long path; training calls without cu_seqlens at L >= kLongMinL), 0 never, unset where ssk::state_fwd_auto
// says. SSM_KERNELS_SCAN_STATE_NS=2|4: its states per lane (default ssk::kStateLaneStates; 2 exists for padded N 16).
bool use_state_fwd(const ssk::ScanParams& p) {
  const char* f = std::getenv("SSM_KERNELS_SCAN_STATE_FWD");
  const std::string fs = f != nullptr ? f : "";
  TORCH_CHECK(fs.empty() || fs == "0" || fs == "1", "SSM_KERNELS_SCAN_STATE_FWD must be 0 or 1, got '", fs, "'");
  if (!fs.empty()) return fs == "1";
  const bool bc16 = p.bc_dtype != ssk::kFloat32 || (p.b_groups == 0 && p.c_groups == 0);
  const bool tile = ssk::tile_fwd_fits(ssk::padded_state(p.N), p.dim, p.b_groups, p.c_groups, p.cu != nullptr,
                                      p.ckpt != nullptr, p.K);
  return ssk::state_fwd_auto(p.nrows, ssk::padded_state(p.N), bc16, smem_info().sms, p.ckpt != nullptr, tile);
}

void set_long_fwd(ssk::ScanParams& p, bool state) {
  p.long_fwd = state ? ssk::kLongFwdState : ssk::kLongFwdWarp;
  const char* n = std::getenv("SSM_KERNELS_SCAN_STATE_NS");
  p.long_ns = n != nullptr && n[0] != '\0' ? std::atoi(n) : ssk::kStateLaneStates;
  TORCH_CHECK(p.long_ns == 2 || p.long_ns == 4, "SSM_KERNELS_SCAN_STATE_NS must be 2 or 4, got '", n, "'");
  // the staged kernel (scan_fwd_tile_kernel) wherever it fits and SSM_KERNELS_SCAN_STATE_NS does not ask for 2 states
  // per lane; SSM_KERNELS_SCAN_STATE_TILE=0 switches it off, 4 or 5 forces its register cap (tile_min_blocks)
  const char* tl = std::getenv("SSM_KERNELS_SCAN_STATE_TILE");
  const std::string ts = tl != nullptr ? tl : "";
  TORCH_CHECK(ts.empty() || ts == "0" || ts == "1" || ts == "4" || ts == "5",
              "SSM_KERNELS_SCAN_STATE_TILE must be 0, 1, 4 or 5, got '", ts, "'");
  const bool fits = ssk::tile_fwd_fits(ssk::padded_state(p.N), p.dim, p.b_groups, p.c_groups, p.cu != nullptr,
                                      p.ckpt != nullptr, p.K);
  const int minb = ts == "4" || ts == "5" ? std::atoi(ts.c_str()) : ssk::tile_min_blocks(p.nrows, smem_info().sms);
  p.tile_minb = state && ts != "0" && p.long_ns == ssk::kStateLaneStates && fits ? minb : 0;
}

std::vector<Tensor> scan_fwd(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
                             const optional<Tensor>& D, const optional<Tensor>& z,
                             const optional<Tensor>& delta_bias, const optional<Tensor>& h0,
                             const optional<Tensor>& cu, bool softplus, bool want_last, int64_t K) {
  const c10::cuda::CUDAGuard guard(u.device());
  ssk::ScanParams p{};
  const ssk::DType dt = fill_common(p, u, delta, A, B, C, D, z, delta_bias, h0, cu, softplus);
  auto f32 = u.options().dtype(at::kFloat);
  Tensor out = at::empty_like(u);
  Tensor last = want_last ? at::empty({p.nseq, p.dim, p.N}, f32) : Tensor();  // undefined: None in Python
  Tensor ckpt;  // undefined (None) unless K > 0 (checkpoints for the backward)
  p.K = K > 0 ? (int)K : 1;
  if (K > 0) {
    const int nck = (p.L + p.K - 1) / p.K - 1;
    ckpt = at::empty({std::max(nck, 0), p.N, p.nrows}, f32);
    p.ckpt = nck > 0 ? ckpt.data_ptr<float>() : nullptr;
  }
  p.out = out.data_ptr();
  p.last = want_last ? last.data_ptr<float>() : nullptr;
  p.tile = std::min(p.L, 32);
  if (p.nrows == 0 || p.L == 0) return {out, last, ckpt};
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaError_t err = cudaSuccess;
  // the short kernels write no checkpoints: only when none were asked for (K = 0, or K >= L as cuda.py passes)
  if (use_short(p.L, p.cu != nullptr) && p.ckpt == nullptr) {
    set_short_options(p);
    switch (dt) {
      case ssk::kFloat32: err = ssk::launch_fwd_short_f32(p, stream); break;
      case ssk::kFloat16: err = ssk::launch_fwd_short_f16(p, stream); break;
      case ssk::kBFloat16: err = ssk::launch_fwd_short_bf16(p, stream); break;
    }
  } else if (use_long(p.L, p.cu != nullptr) || (K == 0 && use_long_inference(p.L, p.cu != nullptr))) {
    const char* m = std::getenv("SSM_KERNELS_SCAN_LONG_MINB");
    p.long_minb = m != nullptr && m[0] != '\0' ? std::atoi(m) : ssk::kLongFwdMinBlocks;
    TORCH_CHECK(p.long_minb == 4 || p.long_minb == 5, "SSM_KERNELS_SCAN_LONG_MINB must be 4 or 5, got '", m, "'");
    set_long_fwd(p, use_state_fwd(p));
    switch (dt) {
      case ssk::kFloat32: err = ssk::launch_fwd_long_f32(p, stream); break;
      case ssk::kFloat16: err = ssk::launch_fwd_long_f16(p, stream); break;
      case ssk::kBFloat16: err = ssk::launch_fwd_long_bf16(p, stream); break;
    }
  } else if (p.ckpt != nullptr && p.cu == nullptr && p.L >= ssk::kLongMinL && use_state_fwd(p)) {
    // training calls: the state-lane forward writes the general backward's checkpoints
    set_long_fwd(p, true);
    switch (dt) {
      case ssk::kFloat32: err = ssk::launch_fwd_long_f32(p, stream); break;
      case ssk::kFloat16: err = ssk::launch_fwd_long_f16(p, stream); break;
      case ssk::kBFloat16: err = ssk::launch_fwd_long_bf16(p, stream); break;
    }
  } else {
    // training calls without cu_seqlens: the backward's time segments for this K (when it has any), unless
    // SSM_KERNELS_SCAN_FWD_SEGMENTS=0
    const Tensor seg = use_segments(p, p.ckpt != nullptr && p.cu == nullptr && fwd_segments_on(), f32);
    switch (dt) {
      case ssk::kFloat32: err = ssk::launch_fwd_f32(p, stream); break;
      case ssk::kFloat16: err = ssk::launch_fwd_f16(p, stream); break;
      case ssk::kBFloat16: err = ssk::launch_fwd_bf16(p, stream); break;
    }
  }
  check_launch(err, "forward");
  return {out, last, ckpt};
}

std::vector<Tensor> scan_bwd(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
                             const optional<Tensor>& D, const optional<Tensor>& z,
                             const optional<Tensor>& delta_bias, const optional<Tensor>& h0,
                             const optional<Tensor>& cu, bool softplus, const Tensor& ckpt, int64_t K,
                             const Tensor& dout, const optional<Tensor>& dlast, bool want_dh0) {
  const c10::cuda::CUDAGuard guard(u.device());
  ssk::ScanParams p{};
  const ssk::DType dt = fill_common(p, u, delta, A, B, C, D, z, delta_bias, h0, cu, softplus);
  check_cuda_contig(dout, "dout");
  TORCH_CHECK(dout.sizes() == u.sizes() && dout.scalar_type() == u.scalar_type(), "dout must match u");
  check_opt(dlast, "dlast", at::kFloat);
  TORCH_CHECK(K >= 1, "K must be >= 1");
  p.K = (int)K;
  const int nck = (p.L + p.K - 1) / p.K - 1;
  TORCH_CHECK(ckpt.scalar_type() == at::kFloat && ckpt.numel() == (int64_t)std::max(nck, 0) * p.N * p.nrows,
              "checkpoint buffer does not match (L, K, N, rows)");
  // short path: no checkpoints needed (the kernel keeps the row's states); dB / dC partials per warp of
  // 32 / (NP / 4) rows. Long path: the forward wrote checkpoints every kLongBwdChunk steps (a K no
  // other path uses); dB / dC partials per block of kLongWarps * long_rw rows.
  const bool short_path = use_short(p.L, p.cu != nullptr);
  const bool long_path = !short_path && p.K == ssk::kLongBwdChunk;
  if (long_path) {
    TORCH_CHECK(p.cu == nullptr, "selective_scan backward: the long-sequence kernels take no cu_seqlens");
    p.long_rw = long_rows_per_warp(p);
    TORCH_CHECK(p.long_rw > 0, "selective_scan backward: the long-sequence kernels need group sizes divisible by ",
                ssk::kLongWarps);
  } else if (short_path) {
    set_short_options(p);
  } else {
    TORCH_CHECK(p.K <= ssk::kMaxChunk, "selective_scan backward: chunk K=", K, " exceeds ", ssk::kMaxChunk);
  }
  p.ckpt = nck > 0 ? ckpt.data_ptr<float>() : nullptr;
  auto f32 = u.options().dtype(at::kFloat);
  // the state-lane backward (use_state_bwd): the general path's chunks and partial layout, padded N 16, no
  // cu_seqlens, groups of variable B / C that are whole multiples of 32 channels
  const bool state_bwd = !short_path && !long_path && p.cu == nullptr &&
                         ssk::state_bwd_fits(ssk::padded_state(p.N), p.dim, p.b_groups, p.c_groups) &&
                         use_state_bwd(p.K);
  // its staged kernel where that fits (SSM_KERNELS_SCAN_STATE_BWD_TILE=0 keeps the unstaged one)
  const char* tb = std::getenv("SSM_KERNELS_SCAN_STATE_BWD_TILE");
  const std::string tbs = tb != nullptr ? tb : "";
  TORCH_CHECK(tbs.empty() || tbs == "0" || tbs == "1", "SSM_KERNELS_SCAN_STATE_BWD_TILE must be 0 or 1, got '", tbs,
              "'");
  const bool tile_bwd =
      state_bwd && tbs != "0" &&
      ssk::tile_bwd_fits(ssk::padded_state(p.N), p.dim, p.b_groups, p.c_groups, p.cu != nullptr, p.K);
  // time segments of the general or state-lane backward (not with cu_seqlens, whose sequences reset the state)
  const Tensor seg = use_segments(p, !short_path && !long_path && p.cu == nullptr, f32, state_bwd, tile_bwd);

  Tensor du = at::empty_like(u);
  Tensor ddelta = at::empty_like(u);
  Tensor dz = z.has_value() ? at::empty_like(u) : Tensor();  // undefined (None) without z
  // one buffer of per-row partials: [dA (N) | dD | d delta_bias | constant dB (N) | constant dC (N)] per row
  const int cb_cols = p.b_groups == 0 ? p.N : 0;
  const int cc_cols = p.c_groups == 0 ? p.N : 0;
  p.rp_stride = p.N + 2 + cb_cols + cc_cols;
  Tensor row_part = at::empty({(int64_t)p.nseg * p.nrows, p.rp_stride}, f32);  // per segment
  float* rp = row_part.data_ptr<float>();
  p.dA_part = rp;
  p.dD_part = rp + p.N;
  p.ddb_part = rp + p.N + 1;
  auto bc_layout = [&](int groups, int* npart, int* uniform) -> bool {  // returns whether every partial is written
    const int gs = p.dim / groups;
    if (long_path) {  // one partial per block of rows (the block lies in one (b, group))
      *uniform = 1;
      *npart = gs / (ssk::kLongWarps * p.long_rw);
    } else if (short_path && p.short_rows) {  // one partial per warp (32 rows) of the group
      *uniform = ssk::kShortPartWarp;
      *npart = gs / 32;
    } else if (short_path) {  // partials per block, per warp or per warp segment (selective_scan_short.cuh)
      const int np = ssk::padded_state(p.N);
      *uniform = ssk::short_part_mode(gs, np);
      *npart = ssk::short_npart(gs, np);
    } else {
      *uniform = gs % 32 == 0 ? 1 : 0;
      *npart = *uniform ? gs / 32 : (gs - 1) / 32 + 2;
    }
    // every partial is written unless warps straddle groups (segments: some stay zero)
    return long_path || (short_path ? *uniform != ssk::kShortPartSegments : *uniform != 0);
  };
  // variable dB / dC partials (batch * groups, npart, N, L); one allocation (and one reduction) when both have
  // the same layout
  Tensor bc_part;
  bool b_written = true, c_written = true;
  if (p.b_groups > 0) b_written = bc_layout(p.b_groups, &p.npart_b, &p.uniform_b);
  if (p.c_groups > 0) c_written = bc_layout(p.c_groups, &p.npart_c, &p.uniform_c);
  const bool shared_bc = p.b_groups > 0 && p.c_groups > 0 && p.b_groups == p.c_groups && p.npart_b == p.npart_c;
  auto alloc_bc = [&](int groups, int npart, int64_t count, bool written) {
    const auto shape = std::vector<int64_t>{count, (int64_t)p.batch * groups, npart, p.N, p.L};
    return written ? at::empty(shape, f32) : at::zeros(shape, f32);
  };
  Tensor dB_part, dC_part;
  if (shared_bc) {
    bc_part = alloc_bc(p.b_groups, p.npart_b, 2, b_written && c_written);
    dB_part = bc_part.select(0, 0);
    dC_part = bc_part.select(0, 1);
  } else {
    if (p.b_groups > 0) dB_part = alloc_bc(p.b_groups, p.npart_b, 1, b_written).select(0, 0);
    if (p.c_groups > 0) dC_part = alloc_bc(p.c_groups, p.npart_c, 1, c_written).select(0, 0);
  }
  if (p.b_groups == 0) {
    p.npart_b = p.uniform_b = 0;
    p.dB_part = rp + p.N + 2;
  } else {
    p.dB_part = dB_part.data_ptr<float>();
  }
  if (p.c_groups == 0) {
    p.npart_c = p.uniform_c = 0;
    p.dC_part = rp + p.N + 2 + cb_cols;
  } else {
    p.dC_part = dC_part.data_ptr<float>();
  }
  Tensor dh0 = want_dh0 ? at::zeros({p.nseq, p.dim, p.N}, f32) : Tensor();

  p.dout = dout.data_ptr();
  p.dlast = dlast.has_value() ? dlast->data_ptr<float>() : nullptr;
  p.du = du.data_ptr();
  p.ddelta = ddelta.data_ptr();
  p.dz = z.has_value() ? dz.data_ptr() : nullptr;
  p.dh0 = want_dh0 ? dh0.data_ptr<float>() : nullptr;

  p.tile_minb = tile_bwd ? ssk::kTileBwdBlocks : 0;  // the staged state-lane backward
  if (p.nrows > 0 && p.L > 0) {
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
    cudaError_t err = cudaSuccess;
    if (long_path || state_bwd) {
      p.long_fwd = state_bwd ? ssk::kLongFwdState : ssk::kLongFwdWarp;
      switch (dt) {
        case ssk::kFloat32: err = ssk::launch_bwd_long_f32(p, stream); break;
        case ssk::kFloat16: err = ssk::launch_bwd_long_f16(p, stream); break;
        case ssk::kBFloat16: err = ssk::launch_bwd_long_bf16(p, stream); break;
      }
    } else if (short_path) {
      switch (dt) {
        case ssk::kFloat32: err = ssk::launch_bwd_short_f32(p, stream); break;
        case ssk::kFloat16: err = ssk::launch_bwd_short_f16(p, stream); break;
        case ssk::kBFloat16: err = ssk::launch_bwd_short_bf16(p, stream); break;
      }
    } else {
      switch (dt) {
        case ssk::kFloat32: err = ssk::launch_bwd_f32(p, stream); break;
        case ssk::kFloat16: err = ssk::launch_bwd_f16(p, stream); break;
        case ssk::kBFloat16: err = ssk::launch_bwd_bf16(p, stream); break;
      }
    }
    check_launch(err, "backward");
  }
  // fixed-order reductions over the batch and over warp partials (deterministic): one for the per-row partials,
  // one for the dB / dC partials (two when B and C differ in layout)
  const Tensor row_sum = row_part.view({(int64_t)p.nseg * p.batch, p.dim, p.rp_stride}).sum(0);  // (dim, rp_stride)
  Tensor dA = row_sum.narrow(1, 0, p.N);
  Tensor dD = row_sum.select(1, p.N);
  Tensor ddb = row_sum.select(1, p.N + 1);
  Tensor dB, dC;
  if (shared_bc) {
    const Tensor bc = bc_part.sum(2);  // (2, batch * groups, N, L)
    dB = bc.select(0, 0).view({p.batch, p.b_groups, p.N, p.L});
    dC = bc.select(0, 1).view({p.batch, p.c_groups, p.N, p.L});
  } else {
    dB = p.b_groups == 0 ? row_sum.narrow(1, p.N + 2, p.N)
                         : dB_part.sum(1).view({p.batch, p.b_groups, p.N, p.L});
    dC = p.c_groups == 0 ? row_sum.narrow(1, p.N + 2 + cb_cols, p.N)
                         : dC_part.sum(1).view({p.batch, p.c_groups, p.N, p.L});
  }
  return {du, ddelta, dA, dB, dC, dD, dz, ddb, dh0};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "ssm_kernels selective scan (Mamba-1) CUDA kernels";
  m.def("fwd", &scan_fwd, "selective scan forward");
  m.def("bwd", &scan_bwd, "selective scan backward");
  m.def("choose_chunk", &choose_chunk, "backward chunk length (checkpoint interval) for (N, L, rows)");
  m.def("backward_segments", &backward_segments, "time segments of the general backward for (N, L, rows, K)");
  m.def("uses_short_path", &use_short, "whether (L, has_cu_seqlens) runs the short-sequence kernels");
  m.def("uses_long_path", &use_long, "whether (L, has_cu_seqlens) runs the long-sequence forward kernel");
  m.def("uses_long_inference_path", &use_long_inference,
        "whether an inference call (no checkpoints) with (L, has_cu_seqlens) runs the long-sequence forward kernel");
}
