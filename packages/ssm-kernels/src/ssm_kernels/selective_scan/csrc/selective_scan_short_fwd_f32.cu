// Short-sequence selective scan fwd kernels instantiated for float inputs (one file per dtype: parallel builds).
#include "selective_scan_short.cuh"

namespace ssk {

cudaError_t launch_fwd_short_f32(const ScanParams& p, cudaStream_t stream) {
  return launch_short_t<false, float, float>(p, stream);
}

}  // namespace ssk
