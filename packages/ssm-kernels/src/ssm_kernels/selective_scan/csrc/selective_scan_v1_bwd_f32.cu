// First-version selective scan bwd kernels for float inputs (SSM_KERNELS_SCAN_IMPL=v1; one file per dtype).
#include "selective_scan_kernels_v1.cuh"

namespace ssk {

cudaError_t launch_bwd_v1_f32(const ScanParams& p, cudaStream_t stream) {
  return v1::launch_bwd_t<float, float>(p, stream);
}

}  // namespace ssk
