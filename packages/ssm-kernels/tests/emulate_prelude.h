// The CUDA-to-host shims shared by the test emulators (selective_scan/emulate, graph_scan/emulate): kernel
// qualifiers compile away and threadIdx / blockIdx / blockDim are per-thread / per-block host variables (every
// CUDA thread of a block runs as an OS thread, blocks one after another). Include after the CUDA headers.
#pragma once

#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __forceinline__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __shared__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct EmuDim3 {
  unsigned x = 0, y = 0, z = 0;
};
static thread_local EmuDim3 emu_thread_idx;
static EmuDim3 emu_block_idx;
static EmuDim3 emu_block_dim;
#define threadIdx emu_thread_idx
#define blockIdx emu_block_idx
#define blockDim emu_block_dim
