// layer_norm_channels on CPU: Restormer's LayerNorm over dim 1 of (B, C, H, W),
// in NCHW or channels_last, without the to_3d/to_4d round trip.
//
// A pixel's C values are the row being normalised. The work is cut into tasks
// of up to kBlock pixels of one image, a cut that depends only on the shape,
// so the weight/bias gradient partials (one row per task, summed in task
// order) are bitwise reproducible whatever the thread count.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "../checks.h"

namespace pyairir {
namespace {

constexpr int64_t kBlock = 64;  // pixels per task

// x viewed as [B][C][P] with P = H * W, in either memory format.
struct Geometry {
  int64_t B, C, P;
  bool channels_last;
  int64_t tasks_per_image() const { return (P + kBlock - 1) / kBlock; }
  int64_t tasks() const { return B * tasks_per_image(); }
  // First element of task t, and the number of pixels it covers.
  int64_t offset(int64_t t, int64_t* count) const {
    const int64_t b = t / tasks_per_image();
    const int64_t p0 = (t % tasks_per_image()) * kBlock;
    *count = std::min(kBlock, P - p0);
    return b * C * P + (channels_last ? p0 * C : p0);
  }
  int64_t channel_stride() const { return channels_last ? 1 : P; }
  int64_t pixel_stride() const { return channels_last ? C : 1; }
};

Geometry geometry_of(const at::Tensor& x, bool channels_last) {
  return {x.size(0), x.size(1), x.size(2) * x.size(3), channels_last};
}

// Per-pixel mean and 1/sqrt(var + eps) of the n pixels at x (two passes over C
// for a variance free of cancellation).
template <typename scalar_t, typename acc_t>
void pixel_statistics(const scalar_t* x, const Geometry& g, int64_t n, double eps, acc_t* mean, acc_t* rstd) {
  const int64_t sc = g.channel_stride(), sp = g.pixel_stride();
  for (int64_t p = 0; p < n; ++p) mean[p] = rstd[p] = acc_t(0);
  for (int64_t c = 0; c < g.C; ++c)
    for (int64_t p = 0; p < n; ++p) mean[p] += acc_t(x[c * sc + p * sp]);
  for (int64_t p = 0; p < n; ++p) mean[p] /= acc_t(g.C);
  for (int64_t c = 0; c < g.C; ++c)
    for (int64_t p = 0; p < n; ++p) {
      const acc_t d = acc_t(x[c * sc + p * sp]) - mean[p];
      rstd[p] += d * d;
    }
  for (int64_t p = 0; p < n; ++p) rstd[p] = acc_t(1) / std::sqrt(rstd[p] / acc_t(g.C) + acc_t(eps));
}

template <typename scalar_t>
void forward_kernel(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                    double eps, bool subtract_mean, const Geometry& g, at::Tensor& y) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* wp = weight.const_data_ptr<scalar_t>();
  const scalar_t* bp = bias.has_value() ? bias->const_data_ptr<scalar_t>() : nullptr;
  scalar_t* yp = y.mutable_data_ptr<scalar_t>();
  const acc_t centre = subtract_mean ? acc_t(1) : acc_t(0);
  const int64_t sc = g.channel_stride(), sp = g.pixel_stride();
  at::parallel_for(0, g.tasks(), 1, [&](int64_t begin, int64_t end) {
    acc_t mean[kBlock], rstd[kBlock];
    for (int64_t t = begin; t < end; ++t) {
      int64_t n;
      const int64_t base = g.offset(t, &n);
      pixel_statistics(xp + base, g, n, eps, mean, rstd);
      for (int64_t c = 0; c < g.C; ++c) {
        const acc_t w = acc_t(wp[c]);
        const acc_t b = bp ? acc_t(bp[c]) : acc_t(0);
        for (int64_t p = 0; p < n; ++p) {
          const int64_t i = base + c * sc + p * sp;
          yp[i] = scalar_t((acc_t(xp[i]) - centre * mean[p]) * rstd[p] * w + b);
        }
      }
    }
  });
}

// With n the normalised input before the affine map (x̂ = (x - mean) * rstd for
// WithBias, x * rstd for BiasFree) and g = grad_out * weight:
//   grad_x = rstd * (g - [subtract_mean] mean_C(g) - x̂ mean_C(g n))
//   grad_weight = sum_{B,H,W} grad_out * n,   grad_bias = sum_{B,H,W} grad_out.
template <typename scalar_t>
void backward_kernel(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, double eps,
                     bool subtract_mean, const Geometry& g, at::Tensor& grad_x, at::Tensor& grad_weight,
                     at::Tensor& grad_bias) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* gp = grad_out.const_data_ptr<scalar_t>();
  const scalar_t* wp = weight.const_data_ptr<scalar_t>();
  scalar_t* dxp = grad_x.mutable_data_ptr<scalar_t>();
  const acc_t centre = subtract_mean ? acc_t(1) : acc_t(0);
  const int64_t sc = g.channel_stride(), sp = g.pixel_stride();
  // Rows of per-task partial sums: [tasks][C] for weight, then [tasks][C] for bias.
  std::vector<acc_t> partial(2 * g.tasks() * g.C);
  at::parallel_for(0, g.tasks(), 1, [&](int64_t begin, int64_t end) {
    acc_t mean[kBlock], rstd[kBlock], sum_g[kBlock], sum_gn[kBlock];
    for (int64_t t = begin; t < end; ++t) {
      int64_t n;
      const int64_t base = g.offset(t, &n);
      pixel_statistics(xp + base, g, n, eps, mean, rstd);
      for (int64_t p = 0; p < n; ++p) sum_g[p] = sum_gn[p] = acc_t(0);
      acc_t* dw = partial.data() + t * g.C;
      acc_t* db = partial.data() + (g.tasks() + t) * g.C;
      for (int64_t c = 0; c < g.C; ++c) {
        const acc_t w = acc_t(wp[c]);
        acc_t dw_c = acc_t(0), db_c = acc_t(0);
        for (int64_t p = 0; p < n; ++p) {
          const int64_t i = base + c * sc + p * sp;
          const acc_t dy = acc_t(gp[i]);
          const acc_t normalised = (acc_t(xp[i]) - centre * mean[p]) * rstd[p];
          sum_g[p] += dy * w;
          sum_gn[p] += dy * w * normalised;
          dw_c += dy * normalised;
          db_c += dy;
        }
        dw[c] = dw_c;
        db[c] = db_c;
      }
      for (int64_t c = 0; c < g.C; ++c) {
        const acc_t w = acc_t(wp[c]);
        for (int64_t p = 0; p < n; ++p) {
          const int64_t i = base + c * sc + p * sp;
          const acc_t centred = (acc_t(xp[i]) - mean[p]) * rstd[p];
          dxp[i] = scalar_t(rstd[p] * (acc_t(gp[i]) * w - centre * sum_g[p] / acc_t(g.C) -
                                       centred * sum_gn[p] / acc_t(g.C)));
        }
      }
    }
  });
  scalar_t* dwp = grad_weight.mutable_data_ptr<scalar_t>();
  scalar_t* dbp = grad_bias.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, g.C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      acc_t dw = acc_t(0), db = acc_t(0);
      for (int64_t t = 0; t < g.tasks(); ++t) {
        dw += partial[t * g.C + c];
        db += partial[(g.tasks() + t) * g.C + c];
      }
      dwp[c] = scalar_t(dw);
      dbp[c] = scalar_t(db);
    }
  });
}

at::Tensor layer_norm_channels(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                               double eps, bool subtract_mean) {
  constexpr const char* op = "pyairir::layer_norm_channels";
  const bool channels_last = check_image(x, op, "x");
  check_channel_vector(weight, x.size(1), x, op, "weight");
  if (bias.has_value()) check_channel_vector(*bias, x.size(1), x, op, "bias");
  TORCH_CHECK(eps > 0, op, ": eps must be positive, got ", eps);
  at::Tensor y = at::empty_like(x);
  const Geometry g = geometry_of(x, channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "layer_norm_channels", [&] {
    forward_kernel<scalar_t>(x, weight, bias, eps, subtract_mean, g, y);
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_channels_backward(const at::Tensor& grad_out,
                                                                            const at::Tensor& x,
                                                                            const at::Tensor& weight, double eps,
                                                                            bool subtract_mean) {
  constexpr const char* op = "pyairir::layer_norm_channels_backward";
  const bool channels_last = check_image(x, op, "x");
  check_like(grad_out, x, channels_last, op, "grad_out");
  check_channel_vector(weight, x.size(1), x, op, "weight");
  TORCH_CHECK(eps > 0, op, ": eps must be positive, got ", eps);
  at::Tensor grad_x = at::empty_like(x);
  at::Tensor grad_weight = at::empty_like(weight);
  at::Tensor grad_bias = at::empty_like(weight);
  const Geometry g = geometry_of(x, channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "layer_norm_channels_backward", [&] {
    backward_kernel<scalar_t>(grad_out, x, weight, eps, subtract_mean, g, grad_x, grad_weight, grad_bias);
  });
  return {grad_x, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyairir, CPU, m) {
  m.impl("layer_norm_channels", &layer_norm_channels);
  m.impl("layer_norm_channels_backward", &layer_norm_channels_backward);
}

}  // namespace pyairir
