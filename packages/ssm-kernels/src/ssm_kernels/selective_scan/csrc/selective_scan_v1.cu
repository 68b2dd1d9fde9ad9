// Dispatch of the first-version selective scan kernels (SSM_KERNELS_SCAN_IMPL=v1) by input dtype.
#include "selective_scan.h"

namespace ssk {

cudaError_t launch_fwd_v1(const ScanParams& p, int dtype, cudaStream_t stream) {
  switch (dtype) {
    case kFloat32: return launch_fwd_v1_f32(p, stream);
    case kFloat16: return launch_fwd_v1_f16(p, stream);
    case kBFloat16: return launch_fwd_v1_bf16(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t launch_bwd_v1(const ScanParams& p, int dtype, cudaStream_t stream) {
  switch (dtype) {
    case kFloat32: return launch_bwd_v1_f32(p, stream);
    case kFloat16: return launch_bwd_v1_f16(p, stream);
    case kBFloat16: return launch_bwd_v1_bf16(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace ssk
