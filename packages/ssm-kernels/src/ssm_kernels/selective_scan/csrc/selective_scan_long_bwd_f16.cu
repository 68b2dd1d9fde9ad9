// Long-sequence selective scan bwd kernels instantiated for __half inputs (one file per dtype: parallel builds).
#include "selective_scan_long.cuh"

namespace ssk {

cudaError_t launch_bwd_long_f16(const ScanParams& p, cudaStream_t stream) {
  if (p.bc_dtype == kFloat32) return launch_long_t<true, __half, float>(p, stream);
  return launch_long_t<true, __half, __half>(p, stream);
}

}  // namespace ssk
