// Launchers of the proxy_attention CUDA kernels (proxy_attention.cu). Operands are (B, C, H, W)
// head operands (csrc/head_operand.h) addressed through their (image, channel, token) strides;
// temperature (heads), the norms (B, heads, tokens), logsumexp, delta (B, heads, Nq) and the
// temperature partials (B, heads, Nq) are contiguous, in the accumulation type (float; double
// for float64). Channels per head d <= kMaxHeadChannels.
#pragma once

#include "launch.h"

namespace pyairir {
namespace cuda {

constexpr int64_t kMaxHeadChannels = 512;

struct Strides {
  int64_t image, channel, token;
};

struct Heads {
  int64_t B, heads, d, Nq, Nk;
};

// norms[b, h, t] = max(|x_t|, eps) over the head's d channels, for N tokens.
cudaError_t proxy_attention_norms(DType dtype, const void* x, Strides sx, void* norms, int64_t B, int64_t heads,
                                  int64_t d, int64_t N, cudaStream_t stream);

cudaError_t proxy_attention_forward(DType dtype, const void* q, Strides sq, const void* k, Strides sk, const void* v,
                                    Strides sv, const void* temperature, const void* q_norm, const void* k_norm,
                                    void* out, Strides so, void* logsumexp, Heads g, cudaStream_t stream);

// Pass 1, per query: delta = dO . out, grad_q, and each query's temperature-gradient term.
cudaError_t proxy_attention_backward_queries(DType dtype, const void* q, Strides sq, const void* k, Strides sk,
                                             const void* v, Strides sv, const void* out, Strides so,
                                             const void* grad_out, Strides sg, const void* temperature,
                                             const void* q_norm, const void* k_norm, const void* logsumexp,
                                             void* delta, void* grad_q, Strides sdq, void* partial_t, Heads g,
                                             cudaStream_t stream);

// Pass 2, per key: grad_k and grad_v.
cudaError_t proxy_attention_backward_keys(DType dtype, const void* q, Strides sq, const void* k, Strides sk,
                                          const void* v, Strides sv, const void* grad_out, Strides sg,
                                          const void* temperature, const void* q_norm, const void* k_norm,
                                          const void* logsumexp, const void* delta, void* grad_k, Strides sdk,
                                          void* grad_v, Strides sdv, Heads g, cudaStream_t stream);

}  // namespace cuda
}  // namespace pyairir
