// Launchers of the layer_norm_channels CUDA kernels (layer_norm_channels.cu).
// x, grad_out, y and grad_x are (B, C, P = H * W) in NCHW or channels_last;
// weight, bias, grad_weight and grad_bias have C elements; bias may be null.
#pragma once

#include "launch.h"

namespace pyairir {
namespace cuda {

cudaError_t layer_norm_channels_forward(DType dtype, const void* x, const void* weight, const void* bias, void* y,
                                        int64_t B, int64_t C, int64_t P, bool channels_last, double eps,
                                        bool subtract_mean, cudaStream_t stream);

// Bytes of scratch the backward needs: one row of C weight and bias partial
// sums per block of pixels (accumulation type).
int64_t layer_norm_channels_backward_workspace(DType dtype, int64_t B, int64_t C, int64_t P);

cudaError_t layer_norm_channels_backward(DType dtype, const void* grad_out, const void* x, const void* weight,
                                         void* grad_x, void* grad_weight, void* grad_bias, void* workspace,
                                         int64_t B, int64_t C, int64_t P, bool channels_last, double eps,
                                         bool subtract_mean, cudaStream_t stream);

}  // namespace cuda
}  // namespace pyairir
