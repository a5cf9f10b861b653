// Launchers of the film_gelu CUDA kernels (film_gelu.cu). x, y, grad_out and grad_x are
// (B, C, P = H * W), all NCHW or all channels_last; gamma, beta and their gradients (B, C).
#pragma once

#include "launch.h"

namespace pyairir {
namespace cuda {

cudaError_t film_gelu_forward(DType dtype, const void* x, const void* gamma, const void* beta, void* y, int64_t B,
                              int64_t C, int64_t P, bool channels_last, cudaStream_t stream);

cudaError_t film_gelu_backward(DType dtype, const void* grad_out, const void* x, const void* gamma, const void* beta,
                               void* grad_x, void* grad_gamma, void* grad_beta, int64_t B, int64_t C, int64_t P,
                               bool channels_last, cudaStream_t stream);

}  // namespace cuda
}  // namespace pyairir
