// pyairir_cpu::output_conv: a 3x3 convolution (stride 1, zero padding 1) from many channels to a few,
// with the image it restores added, for a restoration model's last layer (NAFNet's `ending`, 32
// channels to 3, then the input image added):
//
//   out[b, o, y, x] = bias[o] + sum_{c, i, j} weight[o, c, i, j] x[b, c, y + i - 1, x + j - 1] + residual[b, o, y, x]
//
// oneDNN ran this shape at a seventh of its GEMM speed (45 GFLOP/s on a Xeon that does 300): its
// kernels vectorise over output channels, of which there are 3. Here each pixel's few outputs are
// sums along the input channels, vectors of V channels accumulated over the taps, then summed across.
//
// Not an op of the pyairir contract (like pointwise_conv, csrc/cpu/pointwise_conv.cpp: a CPU
// inference backend under torch.ops.pyairir_cpu, no autograd, CUDA, Triton or fake face), reached
// through pyairir.nn.output_conv when usable; ground truth is the convolution and the add it replaces
// (tests/nn/test_output_conv.py).
#include "vec_loops.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

namespace pyairir {
namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t V = Vec::size();
constexpr int64_t MAX_OUTPUTS = 4;

// The filter as the kernel reads it: for output o and tap t (row-major in the 3x3 window), the input
// channels padded with zeros to whole vectors, (O, 9, Cp).
struct Filter {
  int64_t outputs, padded;
  std::vector<float> taps;
  Filter(const float* weight, int64_t outputs, int64_t channels)
      : outputs(outputs), padded((channels + V - 1) / V * V), taps(outputs * 9 * padded, 0.f) {
    for (int64_t o = 0; o < outputs; ++o) {
      for (int64_t c = 0; c < channels; ++c) {
        for (int64_t t = 0; t < 9; ++t) taps[(o * 9 + t) * padded + c] = weight[(o * channels + c) * 9 + t];
      }
    }
  }
};

// The O sums for pixel (y, x) of an H x W image whose pixels are `channels` floats apart (channels_last),
// taps outside the image left out (zero padding). O is a template argument, so the accumulators stay in
// registers.
template <int O>
inline void pixel_sums(const float* image, int64_t H, int64_t W, int64_t channels, const Filter& filter, int64_t y,
                       int64_t x, float* sums) {
  Vec acc[O];
  for (int o = 0; o < O; ++o) acc[o] = Vec(0.f);
  for (int64_t i = std::max<int64_t>(0, 1 - y); i < std::min<int64_t>(3, H + 1 - y); ++i) {
    for (int64_t j = std::max<int64_t>(0, 1 - x); j < std::min<int64_t>(3, W + 1 - x); ++j) {
      const float* px = image + ((y + i - 1) * W + x + j - 1) * channels;
      const float* taps = filter.taps.data() + (i * 3 + j) * filter.padded;
      for (int64_t c = 0; c < channels; c += V) {
        const Vec v = load(px + c, std::min(V, channels - c));  // zeros past the channels
        for (int o = 0; o < O; ++o) acc[o] = at::vec::fmadd(v, Vec::loadu(taps + o * 9 * filter.padded + c), acc[o]);
      }
    }
  }
  for (int o = 0; o < O; ++o) {
    sums[o] = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, acc[o]);
  }
}

// pixel_sums for P pixels from (y, x) on, whose 3x3 windows lie inside the image: P x O independent
// sums (with O alone, each pixel's sums waited on the FMA latency, a chain of 9 C / V steps). CV > 0:
// the image has exactly CV vectors of channels, so that every offset in the loop is a constant.
template <int O, int P, int CV>
inline void interior_sums(const float* image, int64_t W, int64_t runtime_channels, const Filter& filter, int64_t y,
                          int64_t x, float (*sums)[O]) {
  const int64_t channels = CV > 0 ? CV * V : runtime_channels, padded = CV > 0 ? CV * V : filter.padded;
  const int64_t whole = channels / V * V;
  Vec acc[P][O];
  for (int p = 0; p < P; ++p) {
    for (int o = 0; o < O; ++o) acc[p][o] = Vec(0.f);
  }
  const float* rows[3];
  for (int i = 0; i < 3; ++i) rows[i] = image + ((y + i - 1) * W + x - 1) * channels;
  const auto step = [&](int t, int64_t c, bool full) {
    const float* taps = filter.taps.data() + t * padded + c;
    Vec w[O];
    for (int o = 0; o < O; ++o) w[o] = Vec::loadu(taps + o * 9 * padded);
    for (int p = 0; p < P; ++p) {
      const float* px = rows[t / 3] + (p + t % 3) * channels + c;
      const Vec v = full ? Vec::loadu(px) : Vec::loadu(px, channels - c);  // zeros past the channels
      for (int o = 0; o < O; ++o) acc[p][o] = at::vec::fmadd(v, w[o], acc[p][o]);
    }
  };
  for (int64_t c = 0; c < whole; c += V) {
#pragma GCC unroll 9
    for (int t = 0; t < 9; ++t) step(t, c, true);
  }
  if (whole < channels) {
    for (int t = 0; t < 9; ++t) step(t, whole, false);
  }
  for (int p = 0; p < P; ++p) {
    for (int o = 0; o < O; ++o) {
      sums[p][o] = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, acc[p][o]);
    }
  }
}

template <int O>
void convolve(const at::Tensor& x, const Filter& filter, const at::Tensor& bias, const at::Tensor& residual,
              at::Tensor& out) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const float* bias_data = bias.data_ptr<float>();
  const float* res = residual.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const auto rs = residual.strides(), os = out.strides();
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / H, y = row % H;
      const float* image = x.data_ptr<float>() + b * H * W * C;
      constexpr int P = 4;
      const bool inner_row = y >= 1 && y + 1 < H;
      for (int64_t px = 0; px < W;) {
        float sums[P][O];
        int count = 1;
        if (inner_row && px >= 1 && px + P + 1 <= W) {
          if (C == 2 * V) {  // NAFNet's 32 channels (AVX-512), 16 (AVX2)
            interior_sums<O, P, 2>(image, W, C, filter, y, px, sums);
          } else if (C == 4 * V) {
            interior_sums<O, P, 4>(image, W, C, filter, y, px, sums);
          } else {
            interior_sums<O, P, 0>(image, W, C, filter, y, px, sums);
          }
          count = P;
        } else {
          pixel_sums<O>(image, H, W, C, filter, y, px, sums[0]);
        }
        for (int p = 0; p < count; ++p, ++px) {
          for (int o = 0; o < O; ++o) {
            dst[b * os[0] + o * os[1] + y * os[2] + px * os[3]] =
                bias_data[o] + sums[p][o] + res[b * rs[0] + o * rs[1] + y * rs[2] + px * rs[3]];
          }
        }
      }
    }
  });
}

at::Tensor output_conv(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                       const at::Tensor& residual) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat, "output_conv: x must be a float32 CPU tensor, got ",
              x.scalar_type(), " on ", x.device());
  TORCH_CHECK(x.dim() == 4 && x.numel() > 0 && x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "output_conv: x must be a non-empty 4-D (B, C, H, W) tensor dense in channels_last, got ", x.sizes());
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(weight.device().is_cpu() && weight.scalar_type() == at::kFloat && weight.dim() == 4 &&
                  weight.size(0) >= 1 && weight.size(0) <= MAX_OUTPUTS && weight.size(1) == C && weight.size(2) == 3 &&
                  weight.size(3) == 3 && weight.is_contiguous(),
              "output_conv: weight must be a contiguous float32 (O, ", C, ", 3, 3) tensor with 1 <= O <= ", MAX_OUTPUTS,
              ", got ", weight.scalar_type(), " ", weight.sizes());
  const int64_t O = weight.size(0);
  TORCH_CHECK(bias.device().is_cpu() && bias.scalar_type() == at::kFloat && bias.dim() == 1 && bias.size(0) == O &&
                  bias.is_contiguous(),
              "output_conv: bias must be a contiguous float32 (", O, ",) tensor, got ", bias.scalar_type(), " ",
              bias.sizes());
  TORCH_CHECK(residual.device().is_cpu() && residual.scalar_type() == at::kFloat && residual.dim() == 4 &&
                  residual.size(0) == B && residual.size(1) == O && residual.size(2) == H && residual.size(3) == W,
              "output_conv: residual must be a float32 (", B, ", ", O, ", ", H, ", ", W, ") tensor, got ",
              residual.scalar_type(), " ", residual.sizes());
  const Filter filter(weight.data_ptr<float>(), O, C);
  at::Tensor out = at::empty({B, O, H, W}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  switch (O) {
    case 1: convolve<1>(x, filter, bias, residual, out); break;
    case 2: convolve<2>(x, filter, bias, residual, out); break;
    case 3: convolve<3>(x, filter, bias, residual, out); break;
    default: convolve<4>(x, filter, bias, residual, out); break;
  }
  return out;
}

}  // namespace
}  // namespace pyairir

TORCH_LIBRARY_FRAGMENT(pyairir_cpu, m) {
  m.def("output_conv(Tensor x, Tensor weight, Tensor bias, Tensor residual) -> Tensor");
}

TORCH_LIBRARY_IMPL(pyairir_cpu, CPU, m) { m.impl("output_conv", &pyairir::output_conv); }
