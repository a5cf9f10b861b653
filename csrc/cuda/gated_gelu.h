// Launchers of the gated_gelu CUDA kernels (gated_gelu.cu).
// x and grad_x are (B, C2, H, W), out and grad_out (B, C2 / 2, H, W), all NCHW or
// all channels_last; dw_weight is (C2, 1, 3, 3) or null (no convolution), dw_bias
// (C2,) or null; grad_dw_weight/grad_dw_bias are written only with dw_weight.
#pragma once

#include "launch.h"

namespace pyairir {
namespace cuda {

cudaError_t gated_gelu_forward(DType dtype, const void* x, const void* dw_weight, const void* dw_bias, void* out,
                               int64_t B, int64_t C2, int64_t H, int64_t W, bool channels_last, bool gelu,
                               cudaStream_t stream);

// Bytes of scratch the backward needs: the gate's gradient dz (like x, in the
// accumulation type) and, with dw_weight, one row of 10 x C2 partial sums per block of pixels.
int64_t gated_gelu_backward_workspace(DType dtype, int64_t B, int64_t C2, int64_t H, int64_t W);

cudaError_t gated_gelu_backward(DType dtype, const void* grad_out, const void* x, const void* dw_weight,
                                const void* dw_bias, void* grad_x, void* grad_dw_weight, void* grad_dw_bias,
                                void* workspace, int64_t B, int64_t C2, int64_t H, int64_t W, bool channels_last,
                                bool gelu, cudaStream_t stream);

}  // namespace cuda
}  // namespace pyairir
