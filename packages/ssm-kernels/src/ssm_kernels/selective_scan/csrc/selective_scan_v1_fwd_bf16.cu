// First-version selective scan fwd kernels for __nv_bfloat16 inputs (SSM_KERNELS_SCAN_IMPL=v1; one file per dtype).
#include "selective_scan_kernels_v1.cuh"

namespace ssk {

cudaError_t launch_fwd_v1_bf16(const ScanParams& p, cudaStream_t stream) {
  if (p.bc_dtype == kFloat32) return v1::launch_fwd_t<__nv_bfloat16, float>(p, stream);
  return v1::launch_fwd_t<__nv_bfloat16, __nv_bfloat16>(p, stream);
}

}  // namespace ssk
