// Short-sequence selective scan bwd kernels instantiated for float inputs (one file per dtype: parallel builds).
#include "selective_scan_short.cuh"

namespace ssk {

cudaError_t launch_bwd_short_f32(const ScanParams& p, cudaStream_t stream) {
  return launch_short_t<true, float, float>(p, stream);
}

}  // namespace ssk
