// Bilinear resizing with align_corners=False, as torch.nn.functional.interpolate computes it:
// output index d maps to source coordinate max(0, (d + 0.5) * in / out - 0.5), interpolated
// between its floor i0 and i1 = min(i0 + 1, in - 1) with weights (1 - l, l); i1 = i0 when l = 0, so
// that, as interpolate copies a same-size image, a neighbour of weight 0 is never read (a NaN there
// stays there). Host and device.
#pragma once

#include <cstdint>
#include <vector>

#if defined(__CUDACC__)
#define PYAIRIR_HOST_DEVICE __host__ __device__
#else
#define PYAIRIR_HOST_DEVICE
#endif

namespace pyairir {

template <typename A>
struct BilinearTap {
  int64_t i0, i1;
  A l0, l1;
};

template <typename A>
PYAIRIR_HOST_DEVICE inline BilinearTap<A> bilinear_tap(int64_t d, int64_t in, int64_t out) {
  const A scale = A(in) / A(out);
  A src = scale * (A(d) + A(0.5)) - A(0.5);
  if (src < A(0)) src = A(0);
  const int64_t i0 = int64_t(src);
  const A l1 = src - A(i0);
  const int64_t i1 = i0 < in - 1 && l1 > A(0) ? i0 + 1 : i0;  // a tap of weight 0 reads nothing
  return {i0, i1, A(1) - l1, l1};
}

// The weight of source index i in output index d's taps (zero if d does not reach i).
template <typename A>
PYAIRIR_HOST_DEVICE inline A bilinear_weight(int64_t d, int64_t i, int64_t in, int64_t out) {
  const BilinearTap<A> t = bilinear_tap<A>(d, in, out);
  return (t.i0 == i ? t.l0 : A(0)) + (t.i1 == i ? t.l1 : A(0));
}

// For each source index i, the output indices [begin, end) whose taps may reach it: those d with
// i0(d) in {i - 1, i}, contiguous since i0 does not decrease with d. Lets the resize's adjoint
// gather (one writer per source cell, a fixed order) instead of scattering. Host only.
struct SourceRange {
  int64_t begin, end;
};

template <typename A>
std::vector<SourceRange> bilinear_sources(int64_t in, int64_t out) {
  std::vector<int64_t> floor_tap(out);
  for (int64_t d = 0; d < out; ++d) floor_tap[d] = bilinear_tap<A>(d, in, out).i0;
  std::vector<SourceRange> ranges(in);
  int64_t begin = 0, end = 0;
  for (int64_t i = 0; i < in; ++i) {
    while (begin < out && floor_tap[begin] < i - 1) ++begin;
    if (end < begin) end = begin;
    while (end < out && floor_tap[end] <= i) ++end;
    ranges[i] = {begin, end};
  }
  return ranges;
}

}  // namespace pyairir
