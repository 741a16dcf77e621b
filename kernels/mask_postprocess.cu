// SAM "segment everything" post-processing in one pass over each mask's logits.
//
// segment_anything makes several full passes per batch of masks (threshold, two more thresholds for the
// stability score, then a box from row/column reductions); this kernel reads each logit once and produces
// the binary mask, its area, the stability score's intersection and union counts, and its box.
// One block per mask; threads stride over the pixels and reduce with CUB's block primitives.

#include <cstdint>
#include <cuda_runtime.h>
#include <cub/block/block_reduce.cuh>

#include "lamsc_kernels.h"

namespace {

constexpr int kThreads = 256;

struct Stats {
  int area, inter, uni, x0, y0, x1, y1;
};

struct Combine {
  __device__ Stats operator()(const Stats& a, const Stats& b) const {
    return {a.area + b.area, a.inter + b.inter, a.uni + b.uni, min(a.x0, b.x0), min(a.y0, b.y0), max(a.x1, b.x1),
            max(a.y1, b.y1)};
  }
};

__global__ void mask_stats(const float* __restrict__ logits, int height, int width, float threshold, float offset,
                           uint8_t* __restrict__ masks, int32_t* __restrict__ areas, int32_t* __restrict__ inters,
                           int32_t* __restrict__ unions, int32_t* __restrict__ boxes) {
  using Reduce = cub::BlockReduce<Stats, kThreads>;
  __shared__ typename Reduce::TempStorage storage;
  const long long hw = static_cast<long long>(height) * width;
  const float* m = logits + blockIdx.x * hw;
  uint8_t* out = masks + blockIdx.x * hw;
  Stats s{0, 0, 0, width, height, -1, -1};
  for (long long i = threadIdx.x; i < hw; i += blockDim.x) {
    const float v = m[i];
    const bool on = v > threshold;
    out[i] = on;
    s.inter += v > threshold + offset;
    s.uni += v > threshold - offset;
    if (on) {
      const int y = static_cast<int>(i / width), x = static_cast<int>(i % width);
      s.area += 1;
      s.x0 = min(s.x0, x);
      s.y0 = min(s.y0, y);
      s.x1 = max(s.x1, x);
      s.y1 = max(s.y1, y);
    }
  }
  const Stats t = Reduce(storage).Reduce(s, Combine());
  if (threadIdx.x == 0) {
    areas[blockIdx.x] = t.area;
    inters[blockIdx.x] = t.inter;
    unions[blockIdx.x] = t.uni;
    int32_t* b = boxes + 4 * blockIdx.x;
    const bool empty = t.area == 0;  // segment_anything gives an empty mask the box [0, 0, 0, 0]
    b[0] = empty ? 0 : t.x0;
    b[1] = empty ? 0 : t.y0;
    b[2] = empty ? 0 : t.x1;
    b[3] = empty ? 0 : t.y1;
  }
}

}  // namespace

extern "C" int lamsc_mask_postprocess(const float* logits, int n, int height, int width, float threshold,
                                      float offset, uint8_t* masks, int32_t* areas, int32_t* intersections,
                                      int32_t* unions, int32_t* boxes, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  mask_stats<<<n, kThreads, 0, stream>>>(logits, height, width, threshold, offset, masks, areas, intersections,
                                         unions, boxes);
  return cudaGetLastError();
}
