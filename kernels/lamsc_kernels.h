// C entry points of liblamsc_kernels, called from Python (lamsc.kernels, through ctypes). Every pointer is
// device memory; every call is asynchronous on `stream` and returns a cudaError_t (0 = success).
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

#define LAMSC_API __attribute__((visibility("default")))  // the library hides everything else

extern "C" {

// ASC pack. values (C, hw) float32, depth (hw) float32 in (0, 1). Work buffers: levels, counts, offsets (hw)
// int32. Outputs, zeroed by the caller: max_bits (1 uint: the float bits of max |kept|), level_words
// (ceil(hw * level_bits / 32) words), value_words (ceil(C * hw * bits / 32) words, an upper bound),
// count (1 int32: kept values).
LAMSC_API int lamsc_asc_pack(const float* values, const float* depth, int channels, int hw, int num_levels, int bits,
                             int level_bits, int32_t* levels, int32_t* counts, int32_t* offsets,
                             unsigned int* max_bits, uint32_t* level_words, uint32_t* value_words, int32_t* count,
                             cudaStream_t stream);

// ASC unpack: the inverse; `step` = float32(scale / (2^(bits-1) - 1)). out (C, hw) float32, fully written.
LAMSC_API int lamsc_asc_unpack(const uint8_t* level_bytes, const uint8_t* value_bytes, int channels, int hw, int num_levels,
                     int bits, int level_bits, float step, int32_t* levels, int32_t* counts, int32_t* offsets,
                     float* out, cudaStream_t stream);
}
