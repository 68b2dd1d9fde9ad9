// First-version selective scan kernels (all dtypes in one file), selected with SSM_KERNELS_SCAN_IMPL=v1.
#include "selective_scan_kernels_v1.cuh"

namespace ssk {

cudaError_t launch_fwd_v1(const ScanParams& p, int dtype, cudaStream_t stream) {
  const bool bc32 = p.bc_dtype == kFloat32;
  switch (dtype) {
    case kFloat32: return v1::launch_fwd_t<float, float>(p, stream);
    case kFloat16: return bc32 ? v1::launch_fwd_t<__half, float>(p, stream) : v1::launch_fwd_t<__half, __half>(p, stream);
    case kBFloat16:
      return bc32 ? v1::launch_fwd_t<__nv_bfloat16, float>(p, stream)
                  : v1::launch_fwd_t<__nv_bfloat16, __nv_bfloat16>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t launch_bwd_v1(const ScanParams& p, int dtype, cudaStream_t stream) {
  const bool bc32 = p.bc_dtype == kFloat32;
  switch (dtype) {
    case kFloat32: return v1::launch_bwd_t<float, float>(p, stream);
    case kFloat16: return bc32 ? v1::launch_bwd_t<__half, float>(p, stream) : v1::launch_bwd_t<__half, __half>(p, stream);
    case kBFloat16:
      return bc32 ? v1::launch_bwd_t<__nv_bfloat16, float>(p, stream)
                  : v1::launch_bwd_t<__nv_bfloat16, __nv_bfloat16>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace ssk
