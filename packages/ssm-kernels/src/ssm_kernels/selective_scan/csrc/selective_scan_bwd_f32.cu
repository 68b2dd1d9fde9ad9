// Selective scan bwd kernels instantiated for float inputs (one file per dtype: parallel builds).
#include "selective_scan_kernels.cuh"

namespace ssk {

cudaError_t launch_bwd_f32(const ScanParams& p, cudaStream_t stream) {
  return launch_bwd_t<float, float>(p, stream);
}

}  // namespace ssk
