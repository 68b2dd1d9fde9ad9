// PyTorch binding of the graph selective scan's CUDA forward recurrence (graph_scan_fwd.cuh).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include "graph_scan_fwd.cuh"

namespace {

#define GSK_CHECK(cond, ...) TORCH_CHECK(cond, "graph_scan cuda: ", __VA_ARGS__)

void check_f32(const torch::Tensor& t, const char* name, const torch::Tensor& like) {
  GSK_CHECK(t.scalar_type() == torch::kFloat32, name, " must be float32, got ", t.scalar_type());
  GSK_CHECK(t.device() == like.device(), name, " is on ", t.device(), ", u on ", like.device());
}

const float* opt_ptr(const c10::optional<torch::Tensor>& t) {
  return t.has_value() ? t->data_ptr<float>() : nullptr;
}

template <int NP, class T, class TM>
void launch(const gsk::FwdParams& p, int smem_bytes, cudaStream_t stream) {
  auto kernel = gsk::graph_scan_fwd_kernel<NP, T, TM>;
  if (smem_bytes > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes));
  }
  const dim3 grid(p.batch, (p.D + p.bd - 1) / p.bd);
  kernel<<<grid, p.V * p.bd, smem_bytes, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <int NP, class T>
void launch_mix(const gsk::FwdParams& p, int smem_bytes, bool mix_f32, cudaStream_t stream) {
  return mix_f32 ? launch<NP, T, float>(p, smem_bytes, stream) : launch<NP, T, T>(p, smem_bytes, stream);
}

template <int NP>
void launch_dtype(const gsk::FwdParams& p, int smem_bytes, torch::ScalarType dtype, bool mix_f32,
                  cudaStream_t stream) {
  switch (dtype) {
    case torch::kFloat32: return launch<NP, float, float>(p, smem_bytes, stream);
    case torch::kFloat16: return launch_mix<NP, __half>(p, smem_bytes, mix_f32, stream);
    case torch::kBFloat16: return launch_mix<NP, __nv_bfloat16>(p, smem_bytes, mix_f32, stream);
    default: GSK_CHECK(false, "u must be float32, float16 or bfloat16, got ", dtype);
  }
}

}  // namespace

// Steps t0 .. t1 - 1 of the recurrence (see graph_scan_fwd.cuh); writes whichever of states / ckpt / last is given.
void fwd_recurrence(const torch::Tensor& u, const torch::Tensor& delta, const torch::Tensor& A, const torch::Tensor& B,
                    const torch::Tensor& mix, const torch::Tensor& W, const c10::optional<torch::Tensor>& bias,
                    bool softplus, const c10::optional<torch::Tensor>& h0, int64_t t0, int64_t t1, int64_t chunk,
                    const c10::optional<torch::Tensor>& states, const c10::optional<torch::Tensor>& ckpt,
                    const c10::optional<torch::Tensor>& last, bool eye, int64_t bd) {
  GSK_CHECK(u.is_cuda(), "u must be a CUDA tensor");
  GSK_CHECK(u.dim() == 4 && u.is_contiguous(), "u must be a contiguous (batch, V, D, L) tensor");
  GSK_CHECK(delta.sizes() == u.sizes() && delta.is_contiguous() && delta.scalar_type() == u.scalar_type(),
            "delta must be contiguous, shaped and typed like u");
  const int batch = u.size(0), V = u.size(1), D = u.size(2), L = u.size(3);
  check_f32(A, "A", u);
  GSK_CHECK(A.dim() == 2 && A.size(0) == D && A.is_contiguous(), "A must be a contiguous (D, N) tensor");
  const int N = A.size(1);
  GSK_CHECK(B.dim() == 4 && B.size(0) == batch && B.size(1) == V && B.size(2) == N && B.size(3) == L &&
                B.is_contiguous() && B.scalar_type() == u.scalar_type(),
            "B must be a contiguous (batch, V, N, L) tensor typed like u");
  GSK_CHECK(mix.scalar_type() == torch::kFloat32 || mix.scalar_type() == u.scalar_type(),
            "mix must be float32 or typed like u, got ", mix.scalar_type());
  GSK_CHECK(mix.device() == u.device(), "mix is on ", mix.device(), ", u on ", u.device());
  GSK_CHECK(mix.dim() == 5 && (mix.size(0) == batch || mix.size(0) == 1) && (mix.size(1) == 1 || mix.size(1) == L) &&
                mix.size(3) == V && mix.size(4) == V,
            "mix must be (batch, 1 or L, K, V, V)");
  const int K = mix.size(2);
  check_f32(W, "W", u);
  GSK_CHECK(W.dim() == 3 && W.size(0) == K + (eye ? 1 : 0) && W.size(1) == N && W.size(2) == N && W.is_contiguous(),
            "W must be a contiguous (K + eye, N, N) tensor");
  GSK_CHECK(N <= 32 && V <= 64 && K >= 1 && K <= 3, "supports N <= 32, V <= 64, 1 <= K <= 3");
  GSK_CHECK(0 <= t0 && t0 < t1 && t1 <= L && chunk >= 1 && bd >= 1 && V * bd <= gsk::kMaxThreads,
            "bad step range or block (V * bd <= ", gsk::kMaxThreads, ")");
  for (const auto* t : {&states, &ckpt, &last}) {
    if (t->has_value()) {
      check_f32(**t, "an output", u);
      GSK_CHECK((*t)->is_contiguous(), "outputs must be contiguous");
    }
  }
  if (bias.has_value()) check_f32(*bias, "delta_bias", u);
  if (h0.has_value()) {
    check_f32(*h0, "h0", u);
    GSK_CHECK(h0->dim() == 4 && h0->stride(3) == 1 && h0->stride(2) == N && h0->stride(1) == int64_t(D) * N,
              "h0 rows must be contiguous (V, D, N)");
  }
  const int NP = N <= 8 ? 8 : (N <= 16 ? 16 : 32);
  gsk::FwdParams p{};
  p.batch = batch, p.V = V, p.D = D, p.L = L, p.N = N, p.K = K;
  p.eye = eye, p.softplus = softplus, p.has_bias = bias.has_value(), p.has_h0 = h0.has_value();
  p.t0 = t0, p.t1 = t1, p.chunk = chunk, p.nc = ckpt.has_value() ? ckpt->size(1) : 1, p.bd = bd;
  p.s_mb = mix.size(0) == 1 ? 0 : mix.stride(0);
  p.s_mt = mix.size(1) == 1 ? 0 : mix.stride(1);
  p.s_mk = mix.stride(2), p.s_mi = mix.stride(3), p.s_mj = mix.stride(4);
  p.s_h0b = h0.has_value() ? h0->stride(0) : 0;
  p.s_st = int64_t(batch) * V * D * N;
  p.u = u.data_ptr(), p.delta = delta.data_ptr(), p.B = B.data_ptr();
  p.A = A.data_ptr<float>(), p.mix = mix.data_ptr(), p.W = W.data_ptr<float>();
  p.bias = opt_ptr(bias), p.h0 = opt_ptr(h0);
  p.states = states.has_value() ? states->data_ptr<float>() : nullptr;
  p.ckpt = ckpt.has_value() ? ckpt->data_ptr<float>() : nullptr;
  p.last = last.has_value() ? last->data_ptr<float>() : nullptr;
  const int smem_bytes = 4 * gsk::fwd_smem_floats(NP, V, K, p.eye, bd);
  GSK_CHECK(smem_bytes <= 227 * 1024, "shared memory ", smem_bytes, " B: use fewer channels per block (bd)");
  const c10::cuda::CUDAGuard guard(u.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool mix_f32 = mix.scalar_type() == torch::kFloat32;
  switch (NP) {
    case 8: return launch_dtype<8>(p, smem_bytes, u.scalar_type(), mix_f32, stream);
    case 16: return launch_dtype<16>(p, smem_bytes, u.scalar_type(), mix_f32, stream);
    default: return launch_dtype<32>(p, smem_bytes, u.scalar_type(), mix_f32, stream);
  }
}

int64_t smem_bytes(int64_t N, int64_t V, int64_t K, bool eye, int64_t bd) {
  const int NP = N <= 8 ? 8 : (N <= 16 ? 16 : 32);
  return 4 * int64_t(gsk::fwd_smem_floats(NP, V, K, eye, bd));
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fwd_recurrence", &fwd_recurrence, "graph selective scan: forward recurrence on CUDA cores");
  m.def("smem_bytes", &smem_bytes, "shared memory of one block of the forward recurrence");
}
