// Long-sequence selective scan bwd kernels instantiated for float inputs (one file per dtype: parallel builds).
#include "selective_scan_long.cuh"

namespace ssk {

cudaError_t launch_bwd_long_f32(const ScanParams& p, cudaStream_t stream) {
  return launch_long_t<true, float, float>(p, stream);
}

}  // namespace ssk
