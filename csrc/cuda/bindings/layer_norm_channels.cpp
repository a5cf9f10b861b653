// Torch binding of the layer_norm_channels CUDA kernels (built only with a CUDA torch).
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../../checks.h"
#include "common.h"
#include "../layer_norm_channels.h"

namespace pyairir {
namespace {

at::Tensor layer_norm_channels(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                               double eps, bool subtract_mean) {
  constexpr const char* op = "pyairir::layer_norm_channels";
  const bool channels_last = check_image(x, op, "x");
  check_channel_vector(weight, x.size(1), x, op, "weight");
  if (bias.has_value()) check_channel_vector(*bias, x.size(1), x, op, "bias");
  TORCH_CHECK(eps > 0, op, ": eps must be positive, got ", eps);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty_like(x);
  cuda::check_launch(
      cuda::layer_norm_channels_forward(cuda::dtype_of(x), x.const_data_ptr(), weight.const_data_ptr(),
                                        bias.has_value() ? bias->const_data_ptr() : nullptr, y.mutable_data_ptr(),
                                        x.size(0), x.size(1), x.size(2) * x.size(3), channels_last, eps,
                                        subtract_mean, c10::cuda::getCurrentCUDAStream().stream()),
      op);
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
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t B = x.size(0), C = x.size(1), P = x.size(2) * x.size(3);
  at::Tensor grad_x = at::empty_like(x);
  at::Tensor grad_weight = at::empty_like(weight);
  at::Tensor grad_bias = at::empty_like(weight);
  at::Tensor workspace = at::empty({cuda::layer_norm_channels_backward_workspace(cuda::dtype_of(x), B, C, P)},
                                   x.options().dtype(at::kByte));
  cuda::check_launch(cuda::layer_norm_channels_backward(
                         cuda::dtype_of(x), grad_out.const_data_ptr(), x.const_data_ptr(), weight.const_data_ptr(),
                         grad_x.mutable_data_ptr(), grad_weight.mutable_data_ptr(), grad_bias.mutable_data_ptr(),
                         workspace.mutable_data_ptr(), B, C, P, channels_last, eps, subtract_mean,
                         c10::cuda::getCurrentCUDAStream().stream()),
                     op);
  return {grad_x, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyairir, CUDA, m) {
  m.impl("layer_norm_channels", &layer_norm_channels);
  m.impl("layer_norm_channels_backward", &layer_norm_channels_backward);
}

}  // namespace pyairir
