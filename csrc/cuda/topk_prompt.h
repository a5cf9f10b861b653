// Launchers of the topk_prompt CUDA kernels (topk_prompt.cu). prompts (n, C, s, s) and the output
// (B, C, H, W) are contiguous; weights (B, k) in the accumulation type (float; double for
// float64) and selection (B, k) int64 come from the gate (csrc/topk_prompt_math.h).
#pragma once

#include "launch.h"

namespace pyairir {
namespace cuda {

cudaError_t topk_prompt_forward(DType dtype, const void* prompts, const void* weights, const int64_t* selection,
                                void* out, int64_t B, int64_t C, int64_t s, int64_t H, int64_t W, int64_t k,
                                cudaStream_t stream);

// d_mixed (B, C, s, s), accumulation type: the resize's adjoint of grad_out (B, C, H, W), gathered
// over the output ranges rows/cols[i] = {begin, end} (bilinear_sources in csrc/bilinear.h, 2 * s
// int64 each, on the device).
cudaError_t topk_prompt_resize_adjoint(DType dtype, const void* grad_out, void* d_mixed, const int64_t* rows,
                                       const int64_t* cols, int64_t planes, int64_t s, int64_t H, int64_t W,
                                       cudaStream_t stream);

}  // namespace cuda
}  // namespace pyairir
