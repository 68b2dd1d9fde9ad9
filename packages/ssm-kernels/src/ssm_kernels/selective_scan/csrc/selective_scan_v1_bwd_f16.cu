// First-version selective scan bwd kernels for __half inputs (SSM_KERNELS_SCAN_IMPL=v1; one file per dtype).
#include "selective_scan_kernels_v1.cuh"

namespace ssk {

cudaError_t launch_bwd_v1_f16(const ScanParams& p, cudaStream_t stream) {
  if (p.bc_dtype == kFloat32) return v1::launch_bwd_t<__half, float>(p, stream);
  return v1::launch_bwd_t<__half, __half>(p, stream);
}

}  // namespace ssk
