// The 3x3 depthwise convolution (padding 1) that CPU kernels fuse into their own passes
// (gated_gelu, mdta): the filter laid out [tap][channel], so that a tap vectorises over
// channels, and the in-image taps of a pixel.
#pragma once

#include <vector>

#include "vec_loops.h"

namespace pyairir {

constexpr int kTaps = 9;  // tap t at offset (t / 3 - 1, t % 3 - 1)

// The filter (channels, 1, 3, 3) as taps[t * channels + c], the same flipped (tap t holds tap
// 8 - t: the filter of the input gradient), and the bias (zeros without one), in the
// accumulation type A. Without a filter, taps and flipped are empty.
template <typename A>
struct DepthwiseFilter {
  int64_t channels;
  std::vector<A> taps, flipped, bias;
  template <typename scalar_t>
  DepthwiseFilter(const scalar_t* weight, const scalar_t* b, int64_t channels)
      : channels(channels), taps(weight ? kTaps * channels : 0), flipped(taps.size()), bias(channels, A(0)) {
    if (weight)
      for (int64_t c = 0; c < channels; ++c)
        for (int t = 0; t < kTaps; ++t) {
          taps[t * channels + c] = A(weight[c * kTaps + t]);
          flipped[(kTaps - 1 - t) * channels + c] = A(weight[c * kTaps + t]);
        }
    if (b)
      for (int64_t c = 0; c < channels; ++c) bias[c] = A(b[c]);
  }
};

// The in-image taps of pixel (y, x) of image b of an H x W batch: their indices and their
// pixels' indices (b * H + y') * W + x'.
struct Neighbours {
  int n = 0;
  int tap[kTaps];
  int64_t pixel[kTaps];
  Neighbours(int64_t H, int64_t W, int64_t b, int64_t y, int64_t x) {
    for (int t = 0; t < kTaps; ++t) {
      const int64_t sy = y + t / 3 - 1, sx = x + t % 3 - 1;
      if (sy < 0 || sy >= H || sx < 0 || sx >= W) continue;
      tap[n] = t;
      pixel[n++] = (b * H + sy) * W + sx;
    }
  }
};

// The convolution at one pixel (its neighbours nb) for `count` channels, filter channels
// fc .. fc + count, as a vector: x points at the first of those channels of pixel 0, pixels
// pixel_stride values apart, channels adjacent.
template <typename scalar_t, typename A>
inline Vec<A> depthwise_at(const scalar_t* x, int64_t pixel_stride, const DepthwiseFilter<A>& f, int64_t fc,
                           const Neighbours& nb, int64_t count) {
  Vec<A> z = load(f.bias.data() + fc, count);
  for (int j = 0; j < nb.n; ++j)
    z = at::vec::fmadd(load_acc(x + nb.pixel[j] * pixel_stride, count),
                       load(f.taps.data() + nb.tap[j] * f.channels + fc, count), z);
  return z;
}

}  // namespace pyairir
