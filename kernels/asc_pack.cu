// ASC pack / unpack: the transmitter's hot step after the mask network, and the receiver's inverse.
//
// Pack, for features (C, h, w) float32 and the mask network's depth (h, w) in (0, 1):
//   1. threshold each depth to a level in 1..L and count the values it keeps (k = level * C / L),
//      while reducing max |kept value| (the quantiser scale);
//   2. exclusive prefix sum of the counts (CUB's single-pass decoupled look-back scan);
//   3. quantise every kept value to `bits` bits and write it at its compacted position, and write each
//      level into the bit-packed depth map.
// Bit streams are MSB-first bytes, exactly as lamsc.semcom.payload writes them: the output is
// bit-identical to that reference (quantisation is done in double precision, as NumPy does).
//
// Unpack reads the depth map, scans the counts again, and scatters the dequantised values into a
// zeroed (C, h, w) tensor.

#include <cstdint>
#include <cuda_runtime.h>
#include <cub/device/device_scan.cuh>

#include "lamsc_kernels.h"

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ uint32_t byte_swap(uint32_t v) { return __byte_perm(v, 0, 0x0123); }

// OR `nbits` (<= 16) bits of `value` into an MSB-first bit stream held in 32-bit words. Words are kept in
// memory byte order, so the stream read as bytes is big-endian: swap each word's bytes before the OR.
__device__ __forceinline__ void put_bits(uint32_t* words, long long bit, uint32_t value, int nbits) {
  const long long w = bit >> 5;
  const int shift = static_cast<int>(bit & 31);
  const uint64_t field = static_cast<uint64_t>(value) << (64 - nbits - shift);  // aligned in a 64-bit window
  const uint32_t hi = static_cast<uint32_t>(field >> 32);
  const uint32_t lo = static_cast<uint32_t>(field);
  atomicOr(words + w, byte_swap(hi));
  if (lo) atomicOr(words + w + 1, byte_swap(lo));
}

__device__ __forceinline__ uint32_t get_bits(const uint8_t* bytes, long long bit, int nbits) {
  uint32_t out = 0;
  for (int i = 0; i < nbits; ++i) {
    const long long b = bit + i;
    out = (out << 1) | ((bytes[b >> 3] >> (7 - (b & 7))) & 1u);
  }
  return out;
}

__global__ void levels_and_counts(const float* __restrict__ values, const float* __restrict__ depth, int C, int hw,
                                  int L, int32_t* __restrict__ levels, int32_t* __restrict__ counts,
                                  unsigned int* __restrict__ max_bits) {
  const int per_level = C / L;
  float local_max = 0.f;
  for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < hw; p += gridDim.x * blockDim.x) {
    int level = static_cast<int>(ceilf(depth[p] * static_cast<float>(L)));
    level = min(max(level, 1), L);
    levels[p] = level;
    const int k = level * per_level;
    counts[p] = k;
    for (int c = 0; c < k; ++c) local_max = fmaxf(local_max, fabsf(values[static_cast<long long>(c) * hw + p]));
  }
  // Non-negative floats order like their bit patterns, so an integer atomicMax reduces them.
  atomicMax(max_bits, __float_as_uint(local_max));
}

__global__ void quantise_and_write(const float* __restrict__ values, const int32_t* __restrict__ levels,
                                   const int32_t* __restrict__ offsets, int C, int hw, int L, int bits,
                                   int level_bits, const unsigned int* __restrict__ max_bits,
                                   uint32_t* __restrict__ level_words, uint32_t* __restrict__ value_words) {
  const int per_level = C / L;
  const float scale_f = __uint_as_float(*max_bits);
  const double scale = scale_f > 0.f ? static_cast<double>(scale_f) : 1.0;
  const int qmax = (1 << (bits - 1)) - 1;
  for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < hw; p += gridDim.x * blockDim.x) {
    const int level = levels[p];
    put_bits(level_words, static_cast<long long>(p) * level_bits, static_cast<uint32_t>(level - 1), level_bits);
    const long long first = offsets[p];
    for (int c = 0; c < level * per_level; ++c) {
      const double v = static_cast<double>(values[static_cast<long long>(c) * hw + p]);
      double q = rint(v / scale * qmax);
      q = fmin(fmax(q, -static_cast<double>(qmax)), static_cast<double>(qmax));
      put_bits(value_words, (first + c) * bits, static_cast<uint32_t>(static_cast<int>(q) + qmax + 1), bits);
    }
  }
}

__global__ void read_levels(const uint8_t* __restrict__ level_bytes, int hw, int C, int L, int level_bits,
                            int32_t* __restrict__ levels, int32_t* __restrict__ counts) {
  for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < hw; p += gridDim.x * blockDim.x) {
    const int level = static_cast<int>(get_bits(level_bytes, static_cast<long long>(p) * level_bits, level_bits)) + 1;
    levels[p] = level;
    counts[p] = level * (C / L);
  }
}

__global__ void dequantise_and_scatter(const uint8_t* __restrict__ value_bytes, const int32_t* __restrict__ levels,
                                       const int32_t* __restrict__ offsets, int C, int hw, int L, int bits,
                                       float step, float* __restrict__ out) {
  const int per_level = C / L;
  const int qmax = (1 << (bits - 1)) - 1;
  for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < hw; p += gridDim.x * blockDim.x) {
    const int k = levels[p] * per_level;
    const long long first = offsets[p];
    for (int c = 0; c < C; ++c) {
      float v = 0.f;
      if (c < k) v = static_cast<float>(static_cast<int>(get_bits(value_bytes, (first + c) * bits, bits)) - (qmax + 1)) * step;
      out[static_cast<long long>(c) * hw + p] = v;
    }
  }
}

__global__ void write_count(const int32_t* __restrict__ offsets, const int32_t* __restrict__ counts, int hw,
                            int32_t* __restrict__ count) {
  *count = offsets[hw - 1] + counts[hw - 1];
}

int blocks_for(int n) { return max(1, min((n + kThreads - 1) / kThreads, 65535)); }

cudaError_t exclusive_scan(const int32_t* counts, int32_t* offsets, int n, cudaStream_t stream) {
  size_t temp_bytes = 0;
  cudaError_t err = cub::DeviceScan::ExclusiveSum(nullptr, temp_bytes, counts, offsets, n, stream);
  if (err != cudaSuccess) return err;
  void* temp = nullptr;
  if ((err = cudaMallocAsync(&temp, temp_bytes, stream)) != cudaSuccess) return err;
  err = cub::DeviceScan::ExclusiveSum(temp, temp_bytes, counts, offsets, n, stream);
  cudaError_t freed = cudaFreeAsync(temp, stream);
  return err != cudaSuccess ? err : freed;
}

}  // namespace

extern "C" int lamsc_asc_pack(const float* values, const float* depth, int channels, int hw, int num_levels,
                              int bits, int level_bits, int32_t* levels, int32_t* counts, int32_t* offsets,
                              unsigned int* max_bits, uint32_t* level_words, uint32_t* value_words,
                              int32_t* count, cudaStream_t stream) {
  if (hw <= 0) return cudaMemsetAsync(count, 0, sizeof(int32_t), stream);
  // The caller zeroes max_bits and both word buffers (the writers OR into them).
  levels_and_counts<<<blocks_for(hw), kThreads, 0, stream>>>(values, depth, channels, hw, num_levels, levels, counts,
                                                            max_bits);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  if ((err = exclusive_scan(counts, offsets, hw, stream)) != cudaSuccess) return err;
  quantise_and_write<<<blocks_for(hw), kThreads, 0, stream>>>(values, levels, offsets, channels, hw, num_levels, bits,
                                                             level_bits, max_bits, level_words, value_words);
  write_count<<<1, 1, 0, stream>>>(offsets, counts, hw, count);
  return cudaGetLastError();
}

extern "C" int lamsc_asc_unpack(const uint8_t* level_bytes, const uint8_t* value_bytes, int channels, int hw,
                                int num_levels, int bits, int level_bits, float step, int32_t* levels,
                                int32_t* counts, int32_t* offsets, float* out, cudaStream_t stream) {
  if (hw <= 0) return cudaSuccess;
  read_levels<<<blocks_for(hw), kThreads, 0, stream>>>(level_bytes, hw, channels, num_levels, level_bits, levels,
                                                      counts);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  if ((err = exclusive_scan(counts, offsets, hw, stream)) != cudaSuccess) return err;
  dequantise_and_scatter<<<blocks_for(hw), kThreads, 0, stream>>>(value_bytes, levels, offsets, channels, hw,
                                                                 num_levels, bits, step, out);
  return cudaGetLastError();
}
