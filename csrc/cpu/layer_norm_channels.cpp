// layer_norm_channels on CPU: Restormer's LayerNorm over dim 1 of (B, C, H, W),
// in NCHW or channels_last, without the to_3d/to_4d round trip.
//
// A pixel's C values are the row being normalised. The work is cut into tasks
// of up to kBlock pixels of one image, a cut that depends only on the shape,
// so the weight/bias gradient partials (one row per task, summed in task
// order) are bitwise reproducible whatever the thread count. channels_last
// rows are contiguous and vectorised over C; in NCHW a task's kBlock pixels
// are contiguous in every channel plane and vectorised over the pixels.
#include "vec.h"  // first: selects at::vec's instruction set

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../checks.h"
#include "acc_buffer.h"
#include "vec_loops.h"

namespace pyairir {
namespace {

constexpr int64_t kBlock = 1024;  // pixels per task

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
};

// Per-thread scratch in the accumulation type.
template <typename A>
struct Scratch {
  explicit Scratch(int64_t C) : x(std::max(C, kBlock)), g(std::max(C, kBlock)), out(std::max(C, kBlock)) {}
  std::vector<A> x, g, out;  // converted input, converted grad_out, output before conversion
  A mean[kBlock], rstd[kBlock], sum_g[kBlock], sum_gn[kBlock], normalised[kBlock];
};

template <typename scalar_t>
std::vector<acc_type<scalar_t>> to_acc_vector(const scalar_t* p, int64_t n) {
  std::vector<acc_type<scalar_t>> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = acc_type<scalar_t>(p[i]);
  return v;
}

// ---- NCHW: statistics of a block of n pixels, vectorised over the pixels.
template <typename scalar_t, typename A = acc_type<scalar_t>>
void block_statistics(const scalar_t* x, const Geometry& g, int64_t n, double eps, Scratch<A>& s) {
  std::fill(s.mean, s.mean + n, A(0));
  std::fill(s.rstd, s.rstd + n, A(0));
  for (int64_t c = 0; c < g.C; ++c) {
    const A* row = as_acc(x + c * g.P, s.x.data(), n);
    vec_for<A>(n, [&](int64_t i, int64_t k) { (load(s.mean + i, k) + load(row + i, k)).store(s.mean + i, k); });
  }
  const A inv_c = A(1) / A(g.C);
  for (int64_t i = 0; i < n; ++i) s.mean[i] *= inv_c;
  for (int64_t c = 0; c < g.C; ++c) {
    const A* row = as_acc(x + c * g.P, s.x.data(), n);
    vec_for<A>(n, [&](int64_t i, int64_t k) {
      const Vec<A> d = load(row + i, k) - load(s.mean + i, k);
      (load(s.rstd + i, k) + d * d).store(s.rstd + i, k);
    });
  }
  for (int64_t i = 0; i < n; ++i) s.rstd[i] = A(1) / std::sqrt(s.rstd[i] * inv_c + A(eps));
}

// ---- NCHW forward: kStrip vectors of pixels at a time. Their C values (C * kStrip * 64 bytes in
// float) stay in L1 across the three sweeps over the channels (mean, variance, output), and the
// statistics stay in registers. Same arithmetic, in the same order, as block_statistics.
constexpr int kStrip = 4;

template <typename scalar_t, typename A = acc_type<scalar_t>>
void forward_strips(const scalar_t* x, scalar_t* y, const Geometry& g, int64_t n, const A* w, const A* b,
                    A centre, double eps) {
  constexpr int64_t L = Vec<A>::size();
  const Vec<A> inv_c{A(1) / A(g.C)}, eps_v{A(eps)}, one{A(1)}, centre_v{centre};
  for (int64_t i0 = 0; i0 < n; i0 += kStrip * L) {
    int64_t count[kStrip];
    Vec<A> mean[kStrip], rstd[kStrip];
    for (int u = 0; u < kStrip; ++u) {
      count[u] = std::clamp<int64_t>(n - i0 - u * L, 0, L);
      mean[u] = rstd[u] = Vec<A>(A(0));
    }
    for (int64_t c = 0; c < g.C; ++c)
      for (int u = 0; u < kStrip; ++u) mean[u] = mean[u] + load_acc(x + c * g.P + i0 + u * L, count[u]);
    for (int u = 0; u < kStrip; ++u) mean[u] = mean[u] * inv_c;
    for (int64_t c = 0; c < g.C; ++c)
      for (int u = 0; u < kStrip; ++u) {
        const Vec<A> d = load_acc(x + c * g.P + i0 + u * L, count[u]) - mean[u];
        rstd[u] = rstd[u] + d * d;
      }
    for (int u = 0; u < kStrip; ++u) rstd[u] = one / (rstd[u] * inv_c + eps_v).sqrt();
    // The next strip's bytes per channel, fetched during this sweep for the next strip's first one.
    const int64_t next_bytes = i0 + kStrip * L < n ? kStrip * L * int64_t(sizeof(scalar_t)) : 0;
    for (int64_t c = 0; c < g.C; ++c) {
      const Vec<A> wc(w[c]), bc(b[c]);
      if (next_bytes > 0) {
        const char* next = reinterpret_cast<const char*>(x + c * g.P + i0 + kStrip * L);
        for (int64_t line = 0; line < next_bytes; line += 64) __builtin_prefetch(next + line);
      }
      for (int u = 0; u < kStrip; ++u) {
        if (count[u] == 0) break;
        const int64_t at = c * g.P + i0 + u * L;
        store_acc((load_acc(x + at, count[u]) - centre_v * mean[u]) * rstd[u] * wc + bc, y + at, count[u]);
      }
    }
  }
}

// ---- channels_last: statistics of one contiguous row of C values.
template <typename A>
void row_statistics(const A* row, int64_t C, double eps, A& mean, A& rstd) {
  mean = vec_sum<A>(C, [&](int64_t i) { return Vec<A>::loadu(row + i); }, [&](int64_t i) { return row[i]; }) / A(C);
  const Vec<A> mean_v(mean);
  const A m2 = vec_sum<A>(
      C, [&](int64_t i) { const Vec<A> d = Vec<A>::loadu(row + i) - mean_v; return d * d; },
      [&](int64_t i) { const A d = row[i] - mean; return d * d; });
  rstd = A(1) / std::sqrt(m2 / A(C) + A(eps));
}

template <typename scalar_t>
void forward_kernel(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                    double eps, bool subtract_mean, const Geometry& g, at::Tensor& y) {
  using A = acc_type<scalar_t>;
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* yp = y.mutable_data_ptr<scalar_t>();
  const std::vector<A> w = to_acc_vector(weight.const_data_ptr<scalar_t>(), g.C);
  const std::vector<A> b = bias.has_value() ? to_acc_vector(bias->const_data_ptr<scalar_t>(), g.C)
                                            : std::vector<A>(g.C, A(0));
  const A centre = subtract_mean ? A(1) : A(0);
  at::parallel_for(0, g.tasks(), 1, [&](int64_t begin, int64_t end) {
    Scratch<A> s(g.C);
    for (int64_t t = begin; t < end; ++t) {
      int64_t n;
      const int64_t base = g.offset(t, &n);
      if (g.channels_last) {
        for (int64_t p = 0; p < n; ++p) {
          const A* row = as_acc(xp + base + p * g.C, s.x.data(), g.C);
          A mean, rstd;
          row_statistics(row, g.C, eps, mean, rstd);
          const Vec<A> shift(centre * mean), scale(rstd);
          A* out = acc_out(yp + base + p * g.C, s.out.data());
          vec_for<A>(g.C, [&](int64_t i, int64_t k) {
            ((load(row + i, k) - shift) * scale * load(w.data() + i, k) + load(b.data() + i, k)).store(out + i, k);
          });
          store_acc_buffer(out, yp + base + p * g.C, g.C);
        }
      } else {
        forward_strips(xp + base, yp + base, g, n, w.data(), b.data(), centre, eps);
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
  using A = acc_type<scalar_t>;
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* gp = grad_out.const_data_ptr<scalar_t>();
  scalar_t* dxp = grad_x.mutable_data_ptr<scalar_t>();
  const std::vector<A> w = to_acc_vector(weight.const_data_ptr<scalar_t>(), g.C);
  const A centre = subtract_mean ? A(1) : A(0);
  const A inv_c = A(1) / A(g.C);
  // Rows of per-task partial sums: [tasks][C] for weight, then [tasks][C] for bias.
  std::vector<A> partial(2 * g.tasks() * g.C);
  at::parallel_for(0, g.tasks(), 1, [&](int64_t begin, int64_t end) {
    Scratch<A> s(g.C);
    for (int64_t t = begin; t < end; ++t) {
      int64_t n;
      const int64_t base = g.offset(t, &n);
      A* dw = partial.data() + t * g.C;
      A* db = partial.data() + (g.tasks() + t) * g.C;
      if (g.channels_last) {
        std::fill(dw, dw + g.C, A(0));
        std::fill(db, db + g.C, A(0));
        for (int64_t p = 0; p < n; ++p) {
          const A* row = as_acc(xp + base + p * g.C, s.x.data(), g.C);
          const A* dy = as_acc(gp + base + p * g.C, s.g.data(), g.C);
          A mean, rstd;
          row_statistics(row, g.C, eps, mean, rstd);
          const Vec<A> shift(centre * mean), scale(rstd);
          const A sum_g = vec_sum<A>(
              g.C, [&](int64_t i) { return Vec<A>::loadu(dy + i) * Vec<A>::loadu(w.data() + i); },
              [&](int64_t i) { return dy[i] * w[i]; });
          const A sum_gn = vec_sum<A>(
              g.C,
              [&](int64_t i) {
                return Vec<A>::loadu(dy + i) * Vec<A>::loadu(w.data() + i) * (Vec<A>::loadu(row + i) - shift) * scale;
              },
              [&](int64_t i) { return dy[i] * w[i] * (row[i] - centre * mean) * rstd; });
          const Vec<A> mean_g(centre * sum_g * inv_c), mean_gn(sum_gn * inv_c), mean_v(mean);
          A* out = acc_out(dxp + base + p * g.C, s.out.data());
          vec_for<A>(g.C, [&](int64_t i, int64_t k) {
            const Vec<A> d = load(dy + i, k), xv = load(row + i, k);
            (load(dw + i, k) + d * (xv - shift) * scale).store(dw + i, k);
            (load(db + i, k) + d).store(db + i, k);
            (scale * (d * load(w.data() + i, k) - mean_g - (xv - mean_v) * scale * mean_gn)).store(out + i, k);
          });
          store_acc_buffer(out, dxp + base + p * g.C, g.C);
        }
      } else {
        block_statistics(xp + base, g, n, eps, s);
        std::fill(s.sum_g, s.sum_g + n, A(0));
        std::fill(s.sum_gn, s.sum_gn + n, A(0));
        for (int64_t c = 0; c < g.C; ++c) {
          const A* row = as_acc(xp + base + c * g.P, s.x.data(), n);
          const A* dy = as_acc(gp + base + c * g.P, s.g.data(), n);
          const Vec<A> wc(w[c]), centre_v(centre);
          vec_for<A>(n, [&](int64_t i, int64_t k) {
            const Vec<A> d = load(dy + i, k);
            const Vec<A> normalised = (load(row + i, k) - centre_v * load(s.mean + i, k)) * load(s.rstd + i, k);
            normalised.store(s.normalised + i, k);
            (load(s.sum_g + i, k) + d * wc).store(s.sum_g + i, k);
            (load(s.sum_gn + i, k) + d * wc * normalised).store(s.sum_gn + i, k);
          });
          dw[c] = vec_sum<A>(n, [&](int64_t i) { return Vec<A>::loadu(dy + i) * Vec<A>::loadu(s.normalised + i); },
                             [&](int64_t i) { return dy[i] * s.normalised[i]; });
          db[c] = vec_sum<A>(n, [&](int64_t i) { return Vec<A>::loadu(dy + i); }, [&](int64_t i) { return dy[i]; });
        }
        for (int64_t c = 0; c < g.C; ++c) {
          const A* row = as_acc(xp + base + c * g.P, s.x.data(), n);
          const A* dy = as_acc(gp + base + c * g.P, s.g.data(), n);
          A* out = acc_out(dxp + base + c * g.P, s.out.data());
          const Vec<A> wc(w[c]), centre_v(centre), inv_c_v(inv_c);
          vec_for<A>(n, [&](int64_t i, int64_t k) {
            const Vec<A> rstd = load(s.rstd + i, k);
            const Vec<A> centred = (load(row + i, k) - load(s.mean + i, k)) * rstd;
            (rstd * (load(dy + i, k) * wc - centre_v * load(s.sum_g + i, k) * inv_c_v -
                     centred * load(s.sum_gn + i, k) * inv_c_v))
                .store(out + i, k);
          });
          store_acc_buffer(out, dxp + base + c * g.P, n);
        }
      }
    }
  });
  scalar_t* dwp = grad_weight.mutable_data_ptr<scalar_t>();
  scalar_t* dbp = grad_bias.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, g.C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      A dw = A(0), db = A(0);
      for (int64_t t = 0; t < g.tasks(); ++t) {
        dw += partial[t * g.C + c];
        db += partial[(g.tasks() + t) * g.C + c];
      }
      dwp[c] = scalar_t(dw);
      dbp[c] = scalar_t(db);
    }
  });
}

Geometry geometry_of(const at::Tensor& x, bool channels_last) {
  return {x.size(0), x.size(1), x.size(2) * x.size(3), channels_last};
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
