// Torch binding of the film_gelu CUDA kernels (built only with a CUDA torch).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../../checks.h"
#include "../film_gelu.h"
#include "common.h"

namespace pyairir {
namespace {

bool check_arguments(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta, const char* op) {
  const bool channels_last = check_image(x, op, "x");
  for (const at::Tensor* t : {&gamma, &beta})
    TORCH_CHECK(t->dim() == 2 && t->size(0) == x.size(0) && t->size(1) == x.size(1) &&
                    t->scalar_type() == x.scalar_type() && t->device() == x.device() && t->is_contiguous(),
                op, ": gamma and beta must be contiguous (B, C) tensors with the dtype and device of x");
  return channels_last;
}

at::Tensor film_gelu(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta) {
  constexpr const char* op = "pyairir::film_gelu";
  const bool channels_last = check_arguments(x, gamma, beta, op);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty_like(x);
  cuda::check_launch(cuda::film_gelu_forward(cuda::dtype_of(x), x.const_data_ptr(), gamma.const_data_ptr(),
                                             beta.const_data_ptr(), y.mutable_data_ptr(), x.size(0), x.size(1),
                                             x.size(2) * x.size(3), channels_last,
                                             c10::cuda::getCurrentCUDAStream().stream()),
                     op);
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> film_gelu_backward(const at::Tensor& grad_out, const at::Tensor& x,
                                                                  const at::Tensor& gamma, const at::Tensor& beta) {
  constexpr const char* op = "pyairir::film_gelu_backward";
  const bool channels_last = check_arguments(x, gamma, beta, op);
  check_like(grad_out, x, channels_last, op, "grad_out");
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor dx = at::empty_like(x), dgamma = at::empty_like(gamma), dbeta = at::empty_like(beta);
  cuda::check_launch(cuda::film_gelu_backward(cuda::dtype_of(x), grad_out.const_data_ptr(), x.const_data_ptr(),
                                              gamma.const_data_ptr(), beta.const_data_ptr(), dx.mutable_data_ptr(),
                                              dgamma.mutable_data_ptr(), dbeta.mutable_data_ptr(), x.size(0),
                                              x.size(1), x.size(2) * x.size(3), channels_last,
                                              c10::cuda::getCurrentCUDAStream().stream()),
                     op);
  return {dx, dgamma, dbeta};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyairir, CUDA, m) {
  m.impl("film_gelu", &film_gelu);
  m.impl("film_gelu_backward", &film_gelu_backward);
}

}  // namespace pyairir
