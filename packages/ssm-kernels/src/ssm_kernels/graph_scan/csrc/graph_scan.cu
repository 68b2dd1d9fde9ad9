// PyTorch binding of the graph selective scan's CUDA forward recurrence (graph_scan_fwd.cuh).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include "graph_scan_adj.cuh"
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

// The kernel templates, for dispatch on (NP, T, TM).
struct FwdKernel {
  template <int NP, class T, class TM>
  static constexpr auto get() { return gsk::graph_scan_fwd_kernel<NP, T, TM>; }
};
struct AdjKernel {
  template <int NP, class T, class TM>
  static constexpr auto get() { return gsk::graph_scan_adj_kernel<NP, T, TM>; }
};

template <class K, int NP, class T, class TM, class P>
void launch(const P& p, int smem_bytes, cudaStream_t stream) {
  auto kernel = K::template get<NP, T, TM>();
  if (smem_bytes > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes));
  }
  const dim3 grid(p.batch, (p.D + p.bd - 1) / p.bd);
  kernel<<<grid, gsk::block_threads(NP, p.V, p.bd), smem_bytes, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Input dtype T (u, delta, B, ...) and operator dtype TM (float32, or T) from the tensors; NP from N.
template <class K, class P>
void dispatch(const P& p, int N, torch::ScalarType dtype, bool mix_f32, int smem_bytes, cudaStream_t stream) {
  auto by_np = [&](auto t_tag, auto tm_tag) {
    using T = decltype(t_tag);
    using TM = decltype(tm_tag);
    if (N <= 8) return launch<K, 8, T, TM>(p, smem_bytes, stream);
    if (N <= 16) return launch<K, 16, T, TM>(p, smem_bytes, stream);
    return launch<K, 32, T, TM>(p, smem_bytes, stream);
  };
  switch (dtype) {
    case torch::kFloat32: return by_np(float{}, float{});
    case torch::kFloat16: return mix_f32 ? by_np(__half{}, float{}) : by_np(__half{}, __half{});
    case torch::kBFloat16: return mix_f32 ? by_np(__nv_bfloat16{}, float{}) : by_np(__nv_bfloat16{}, __nv_bfloat16{});
    default: GSK_CHECK(false, "u must be float32, float16 or bfloat16, got ", dtype);
  }
}

}  // namespace

// Steps t0 .. t1 - 1 of the recurrence (see graph_scan_fwd.cuh); writes whichever of states / ckpt / last is given.
void fwd_recurrence(const torch::Tensor& u, const torch::Tensor& delta, const torch::Tensor& A, const torch::Tensor& B,
                    const torch::Tensor& mix, const torch::Tensor& W, const c10::optional<torch::Tensor>& bias,
                    bool softplus, const c10::optional<torch::Tensor>& h0, int64_t t0, int64_t t1, int64_t chunk,
                    const c10::optional<torch::Tensor>& states, const c10::optional<torch::Tensor>& ckpt,
                    const c10::optional<torch::Tensor>& last, bool eye, int64_t bd,
                    const c10::optional<torch::Tensor>& C, const c10::optional<torch::Tensor>& mix_c,
                    const c10::optional<torch::Tensor>& W_c, bool eye_c, const c10::optional<torch::Tensor>& Dp,
                    const c10::optional<torch::Tensor>& z, const c10::optional<torch::Tensor>& out,
                    const c10::optional<torch::Tensor>& y) {
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
  const int NP = gsk::pad_states(N);
  GSK_CHECK(0 <= t0 && t0 < t1 && t1 <= L && chunk >= 1 && bd >= 1 && gsk::block_threads(NP, V, bd) <= gsk::kMaxThreads,
            "bad step range or block (V * bd * NP / ", gsk::kNS, " <= ", gsk::kMaxThreads, " threads)");
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
  // the readout (out and / or y): C typed like u; operators (optional) like mix, W_c (K_C + eye_c, N, N) fp32
  p.readout = out.has_value() || y.has_value();
  if (p.readout) {
    GSK_CHECK(C.has_value() && C->sizes() == B.sizes() && C->is_contiguous() && C->scalar_type() == u.scalar_type(),
              "the readout needs C, a contiguous (batch, V, N, L) tensor typed like u");
    p.C = C->data_ptr();
    if (mix_c.has_value()) {
      GSK_CHECK(mix_c->scalar_type() == mix.scalar_type() && mix_c->dim() == 5 && mix_c->size(3) == V &&
                    mix_c->size(4) == V && (mix_c->size(1) == 1 || mix_c->size(1) == L),
                "mix_c must be (batch, 1 or L, K_C, V, V) typed like mix");
      p.K_C = mix_c->size(2), p.eye_c = eye_c;
      GSK_CHECK(p.K_C >= 1 && p.K_C <= 3, "supports 1 <= K_C <= 3");
      GSK_CHECK(W_c.has_value() && W_c->dim() == 3 && W_c->size(0) == p.K_C + (eye_c ? 1 : 0) && W_c->size(1) == N &&
                    W_c->size(2) == N && W_c->is_contiguous(),
                "W_c must be a contiguous (K_C + eye_c, N, N) tensor");
      check_f32(*W_c, "W_c", u);
      p.mix_c = mix_c->data_ptr(), p.W_c = W_c->data_ptr<float>();
      p.s_mcb = mix_c->size(0) == 1 ? 0 : mix_c->stride(0);
      p.s_mct = mix_c->size(1) == 1 ? 0 : mix_c->stride(1);
      p.s_mck = mix_c->stride(2), p.s_mci = mix_c->stride(3), p.s_mcj = mix_c->stride(4);
    }
    if (Dp.has_value()) check_f32(*Dp, "D", u);
    p.has_d = Dp.has_value(), p.Dp = opt_ptr(Dp);
    if (z.has_value()) {
      GSK_CHECK(z->sizes() == u.sizes() && z->is_contiguous() && z->scalar_type() == u.scalar_type(),
                "z must be contiguous, shaped and typed like u");
    }
    p.has_z = z.has_value(), p.z = z.has_value() ? z->data_ptr() : nullptr;
    if (out.has_value()) {
      GSK_CHECK(out->sizes() == u.sizes() && out->is_contiguous() && out->scalar_type() == u.scalar_type(),
                "out must be contiguous, shaped and typed like u");
    }
    p.out = out.has_value() ? out->data_ptr() : nullptr;
    if (y.has_value()) {
      check_f32(*y, "y", u);
      GSK_CHECK(y->sizes() == u.sizes() && y->is_contiguous(), "y must be a contiguous fp32 tensor shaped like u");
    }
    p.y = y.has_value() ? y->data_ptr<float>() : nullptr;
  }
  const int smem_bytes = 4 * gsk::fwd_smem_floats(NP, V, K, p.eye, bd, p.readout, p.K_C, p.eye_c);
  GSK_CHECK(smem_bytes <= 227 * 1024, "shared memory ", smem_bytes, " B: use fewer channels per block (bd)");
  const c10::cuda::CUDAGuard guard(u.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch<FwdKernel>(p, N, u.scalar_type(), mix.scalar_type() == torch::kFloat32, smem_bytes, stream);
}

namespace {

void check_like(const torch::Tensor& t, const char* name, const torch::Tensor& u) {
  GSK_CHECK(t.sizes() == u.sizes() && t.is_contiguous() && t.scalar_type() == u.scalar_type() &&
                t.device() == u.device(),
            name, " must be contiguous, shaped, typed and placed like u");
}

}  // namespace

// Steps t1 - 1 .. t0 of the split backward's adjoint (see graph_scan_adj.cuh). mix_c / W_c empty: no readout
// operators. dB: (parts, batch, V, N, lb) partials (one per channel block) or one slot added to atomically.
void adj_recurrence(const torch::Tensor& u, const torch::Tensor& delta, const torch::Tensor& A, const torch::Tensor& B,
                    const torch::Tensor& C, const torch::Tensor& mix_a, const torch::Tensor& W_a,
                    const c10::optional<torch::Tensor>& mix_c, const c10::optional<torch::Tensor>& W_c,
                    const c10::optional<torch::Tensor>& Dp, const c10::optional<torch::Tensor>& z,
                    const c10::optional<torch::Tensor>& bias, bool softplus, const torch::Tensor& dout,
                    const c10::optional<torch::Tensor>& y, const torch::Tensor& states, const torch::Tensor& g,
                    const torch::Tensor& dp, const torch::Tensor& dy, const torch::Tensor& du,
                    const torch::Tensor& ddelta, const c10::optional<torch::Tensor>& dz, const torch::Tensor& dA,
                    const torch::Tensor& dD, const torch::Tensor& dbias, const torch::Tensor& dB, bool bc_atomic,
                    int64_t lb, int64_t tb, int64_t t0, int64_t t1, bool eye_a, bool eye_c, int64_t bd) {
  GSK_CHECK(u.is_cuda() && u.dim() == 4 && u.is_contiguous(), "u must be a contiguous (batch, V, D, L) CUDA tensor");
  const int batch = u.size(0), V = u.size(1), D = u.size(2), L = u.size(3);
  check_like(delta, "delta", u);
  check_like(du, "du", u);
  check_like(ddelta, "ddelta", u);
  check_f32(A, "A", u);
  const int N = A.size(1);
  for (const auto* t : {&B, &C}) {
    GSK_CHECK(t->dim() == 4 && t->size(0) == batch && t->size(1) == V && t->size(2) == N && t->size(3) == L &&
                  t->is_contiguous() && t->scalar_type() == u.scalar_type(),
              "B and C must be contiguous (batch, V, N, L) tensors typed like u");
  }
  GSK_CHECK(dout.dim() == 4 && dout.scalar_type() == u.scalar_type(), "d_out must be (batch, V, D, L) typed like u");
  const bool has_mc = mix_c.has_value();
  const auto mix_f32 = mix_a.scalar_type() == torch::kFloat32;
  for (const torch::Tensor* m : {&mix_a, has_mc ? &*mix_c : &mix_a}) {
    GSK_CHECK(m->dim() == 5 && m->size(3) == V && m->size(4) == V && (m->size(1) == 1 || m->size(1) == L),
              "operators must be (batch, 1 or L, K, V, V)");
    GSK_CHECK((m->scalar_type() == torch::kFloat32) == mix_f32 &&
                  (mix_f32 || m->scalar_type() == u.scalar_type()),
              "operators must both be float32 or both typed like u");
  }
  const int K_A = mix_a.size(2), K_C = has_mc ? mix_c->size(2) : 0;
  GSK_CHECK(N <= 32 && V <= 64 && K_A >= 1 && K_A <= 3 && K_C <= 3, "supports N <= 32, V <= 64, K <= 3");
  const int NP = gsk::pad_states(N);
  GSK_CHECK(0 <= t0 && t0 < t1 && t1 <= L && bd >= 1 && gsk::block_threads(NP, V, bd) <= gsk::kMaxThreadsAdj,
            "bad step range or block (V * bd * NP / ", gsk::kNS, " <= ", gsk::kMaxThreadsAdj, " threads)");
  for (const auto* t : {&states, &g, &dp, &dy, &dA, &dD, &dbias, &dB, &W_a}) {
    check_f32(*t, "an fp32 buffer", u);
    GSK_CHECK(t->is_contiguous(), "fp32 buffers must be contiguous");
  }
  if (z.has_value()) {
    check_like(*z, "z", u);
    GSK_CHECK(dz.has_value() && y.has_value(), "z needs dz and the pre-gate y");
    check_like(*dz, "dz", u);
    check_f32(*y, "y", u);
  }
  gsk::AdjParams p{};
  p.batch = batch, p.V = V, p.D = D, p.L = L, p.N = N, p.K_A = K_A, p.K_C = K_C;
  p.eye_a = eye_a, p.eye_c = eye_c, p.softplus = softplus, p.has_bias = bias.has_value(), p.has_d = Dp.has_value();
  p.has_z = z.has_value(), p.bc_atomic = bc_atomic, p.t0 = t0, p.t1 = t1, p.bd = bd, p.lb = lb, p.tb = tb;
  p.s_ma_b = mix_a.stride(0), p.s_ma_t = mix_a.size(1) == 1 ? 0 : mix_a.stride(1), p.s_ma_k = mix_a.stride(2);
  p.s_ma_i = mix_a.stride(3), p.s_ma_j = mix_a.stride(4);
  if (has_mc) {
    p.s_mc_b = mix_c->stride(0), p.s_mc_t = mix_c->size(1) == 1 ? 0 : mix_c->stride(1);
    p.s_mc_k = mix_c->stride(2), p.s_mc_i = mix_c->stride(3), p.s_mc_j = mix_c->stride(4);
  }
  p.s_do_b = dout.stride(0), p.s_do_v = dout.stride(1), p.s_do_d = dout.stride(2), p.s_do_t = dout.stride(3);
  p.s_st = int64_t(batch) * V * D * N, p.s_dy = int64_t(batch) * V * D;
  p.s_db_part = bc_atomic ? 0 : dB.stride(0);
  p.u = u.data_ptr(), p.delta = delta.data_ptr(), p.B = B.data_ptr(), p.C = C.data_ptr();
  p.z = z.has_value() ? z->data_ptr() : nullptr, p.dout = dout.data_ptr();
  p.mix_a = mix_a.data_ptr(), p.mix_c = has_mc ? mix_c->data_ptr() : nullptr;
  p.A = A.data_ptr<float>(), p.W_a = W_a.data_ptr<float>(), p.W_c = has_mc ? W_c->data_ptr<float>() : nullptr;
  p.Dp = opt_ptr(Dp), p.bias = opt_ptr(bias), p.y = opt_ptr(y);
  p.states = states.data_ptr<float>(), p.g = g.data_ptr<float>(), p.dp = dp.data_ptr<float>();
  p.dy = dy.data_ptr<float>(), p.du = du.data_ptr(), p.ddelta = ddelta.data_ptr();
  p.dz = dz.has_value() ? dz->data_ptr() : nullptr;
  p.dA = dA.data_ptr<float>(), p.dD = dD.data_ptr<float>(), p.dbias = dbias.data_ptr<float>();
  p.dB = dB.data_ptr<float>();
  const int smem_bytes = 4 * gsk::adj_smem_floats(NP, V, K_A, K_C, eye_a, eye_c, bd);
  GSK_CHECK(smem_bytes <= 227 * 1024, "shared memory ", smem_bytes, " B: use fewer channels per block (bd)");
  const c10::cuda::CUDAGuard guard(u.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch<AdjKernel>(p, N, u.scalar_type(), mix_f32, smem_bytes, stream);
}



PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fwd_recurrence", &fwd_recurrence, "graph selective scan: forward recurrence on CUDA cores");
  m.def("adj_recurrence", &adj_recurrence, "graph selective scan: the split backward's adjoint on CUDA cores");
}
