// Scaling rows of q and k by powers of two so that the attention ops' dot products and squared
// norms stay in range. A cosine does not change when a row is multiplied by a positive number,
// so mdta and proxy_attention may compute it from x * s: s = 2^-ceil(log2 max|x_row|) for a row
// whose largest entry is 1 or more (x * s is exact and at most 1 in magnitude), 1 for the other
// rows (whose norm might sit at F.normalize's eps clamp, where scaling would change the result).
#pragma once

#include <ATen/ATen.h>

namespace pyairir {

// Above this norm a squared norm or dC / (|q| |k|) starts to leave fp32's range: rescale.
constexpr double kRescaleNorm = 1099511627776.0;  // 2^40

// s for rows whose largest |entry| is `largest` (any shape), in dtype `dtype`.
inline at::Tensor power_of_two_scale(const at::Tensor& largest, at::ScalarType dtype) {
  const at::Tensor m = largest.to(at::kDouble);
  return at::where(m >= 1, at::exp2(-at::ceil(at::log2(m))), at::ones_like(m)).to(dtype);
}

// Whether norms this large call for the scaled path (also when a norm is inf or NaN).
inline bool needs_rescale(const at::Tensor& q_norm, const at::Tensor& k_norm) {
  return !(q_norm.max().item<double>() < kRescaleNorm && k_norm.max().item<double>() < kRescaleNorm);
}

}  // namespace pyairir
