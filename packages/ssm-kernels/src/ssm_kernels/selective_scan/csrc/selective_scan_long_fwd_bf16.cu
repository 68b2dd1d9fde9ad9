// Long-sequence selective scan fwd kernels instantiated for __nv_bfloat16 inputs (one file per dtype: parallel builds).
#include "selective_scan_long.cuh"

namespace ssk {

cudaError_t launch_fwd_long_bf16(const ScanParams& p, cudaStream_t stream) {
  if (p.bc_dtype == kFloat32) return launch_long_t<false, __nv_bfloat16, float>(p, stream);
  return launch_long_t<false, __nv_bfloat16, __nv_bfloat16>(p, stream);
}

}  // namespace ssk
