// Torch binding of the gated_gelu CUDA kernels (built only with a CUDA torch).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../../checks.h"
#include "../gated_gelu.h"
#include "common.h"

namespace pyairir {
namespace {

const void* pointer_or_null(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? t->const_data_ptr() : nullptr;
}

at::Tensor gated_gelu(const at::Tensor& x, const c10::optional<at::Tensor>& dw_weight,
                      const c10::optional<at::Tensor>& dw_bias, bool gelu) {
  constexpr const char* op = "pyairir::gated_gelu";
  const bool channels_last = check_gated_gelu(x, dw_weight, dw_bias, op);
  const c10::cuda::CUDAGuard guard(x.device());
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor out = at::empty({x.size(0), x.size(1) / 2, x.size(2), x.size(3)}, x.options().memory_format(format));
  cuda::check_launch(cuda::gated_gelu_forward(cuda::dtype_of(x), x.const_data_ptr(), pointer_or_null(dw_weight),
                                              pointer_or_null(dw_bias), out.mutable_data_ptr(), x.size(0), x.size(1),
                                              x.size(2), x.size(3), channels_last, gelu,
                                              c10::cuda::getCurrentCUDAStream().stream()),
                     op);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gated_gelu_backward(const at::Tensor& grad_out, const at::Tensor& x,
                                                                   const c10::optional<at::Tensor>& dw_weight,
                                                                   const c10::optional<at::Tensor>& dw_bias,
                                                                   bool gelu) {
  constexpr const char* op = "pyairir::gated_gelu_backward";
  const bool channels_last = check_gated_gelu(x, dw_weight, dw_bias, op);
  check_gated_gelu_grad(grad_out, x, channels_last, op);
  const c10::cuda::CUDAGuard guard(x.device());
  const bool conv = dw_weight.has_value();
  at::Tensor grad_x = at::empty_like(x);
  at::Tensor grad_weight = conv ? at::empty_like(*dw_weight) : at::empty({0}, x.options());
  at::Tensor grad_bias = conv ? at::empty({x.size(1)}, x.options()) : at::empty({0}, x.options());
  at::Tensor workspace = at::empty(
      {cuda::gated_gelu_backward_workspace(cuda::dtype_of(x), x.size(0), x.size(1), x.size(2), x.size(3))},
      x.options().dtype(at::kByte));
  cuda::check_launch(
      cuda::gated_gelu_backward(cuda::dtype_of(x), grad_out.const_data_ptr(), x.const_data_ptr(),
                                pointer_or_null(dw_weight), pointer_or_null(dw_bias), grad_x.mutable_data_ptr(),
                                conv ? grad_weight.mutable_data_ptr() : nullptr,
                                conv ? grad_bias.mutable_data_ptr() : nullptr, workspace.mutable_data_ptr(),
                                x.size(0), x.size(1), x.size(2), x.size(3), channels_last, gelu,
                                c10::cuda::getCurrentCUDAStream().stream()),
      op);
  return {grad_x, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyairir, CUDA, m) {
  m.impl("gated_gelu", &gated_gelu);
  m.impl("gated_gelu_backward", &gated_gelu_backward);
}

}  // namespace pyairir
