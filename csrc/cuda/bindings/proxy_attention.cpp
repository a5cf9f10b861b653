// Torch binding of the proxy_attention CUDA kernels (built only with a CUDA torch).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../../proxy_attention_math.h"
#include "../proxy_attention.h"
#include "common.h"

namespace pyairir {
namespace {

using proxy_attention_math::Geometry;

cuda::Strides strides(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(3)}; }

cuda::Heads heads_of(const Geometry& g) { return {g.B, g.heads, g.d, g.Nq, g.Nk}; }

void check_head_channels(const Geometry& g, const char* op) {
  TORCH_CHECK(g.d <= cuda::kMaxHeadChannels, op, ": the CUDA kernel takes at most ", cuda::kMaxHeadChannels,
              " channels per head, got ", g.d, " (", g.C, " channels, ", g.heads, " heads)");
}

at::Tensor norms(const at::Tensor& x, const Geometry& g, int64_t n, at::ScalarType acc, const char* op) {
  at::Tensor result = at::empty({g.B, g.heads, n}, x.options().dtype(acc));
  cuda::check_launch(cuda::proxy_attention_norms(cuda::dtype_of(x), x.const_data_ptr(), strides(x),
                                                 result.mutable_data_ptr(), g.B, g.heads, g.d, n,
                                                 c10::cuda::getCurrentCUDAStream().stream()),
                     op);
  return result;
}

// out and the log-sum-exp of the scores, given the operands' norms.
std::tuple<at::Tensor, at::Tensor> attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                          const at::Tensor& temperature, const at::Tensor& q_norm,
                                          const at::Tensor& k_norm, const Geometry& g, const char* op) {
  const at::ScalarType acc = q_norm.scalar_type();
  const at::Tensor t = temperature.to(acc).reshape({g.heads}).contiguous();
  at::Tensor out = empty_like_layout(q);
  at::Tensor logsumexp = at::empty({g.B, g.heads, g.Nq}, q.options().dtype(acc));
  cuda::check_launch(
      cuda::proxy_attention_forward(cuda::dtype_of(q), q.const_data_ptr(), strides(q), k.const_data_ptr(), strides(k),
                                    v.const_data_ptr(), strides(v), t.const_data_ptr(), q_norm.const_data_ptr(),
                                    k_norm.const_data_ptr(), out.mutable_data_ptr(), strides(out),
                                    logsumexp.mutable_data_ptr(), heads_of(g),
                                    c10::cuda::getCurrentCUDAStream().stream()),
      op);
  return {out, logsumexp};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> proxy_attention(const at::Tensor& q, const at::Tensor& k,
                                                                           const at::Tensor& v,
                                                                           const at::Tensor& temperature,
                                                                           int64_t heads) {
  constexpr const char* op = "pyairir::proxy_attention";
  const Geometry g = proxy_attention_math::check_arguments(q, k, v, temperature, heads, op);
  check_head_channels(g, op);
  const c10::cuda::CUDAGuard guard(q.device());
  const at::ScalarType acc = proxy_attention_math::acc_dtype(q.scalar_type());
  return proxy_attention_math::forward_rescaled(
      q, k, g, acc, [&](const at::Tensor& x, int64_t n) { return norms(x, g, n, acc, op); },
      [&](const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& qn, const at::Tensor& kn) {
        return attend(q_, k_, v, temperature, qn, kn, g, op);
      });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_tokens(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& temperature, const at::Tensor& out, const at::Tensor& logsumexp, const at::Tensor& q_norm,
    const at::Tensor& k_norm, const Geometry& g, const char* op) {
  const int64_t heads = g.heads;
  const at::ScalarType acc = q_norm.scalar_type();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const at::Tensor t = temperature.to(acc).reshape({heads}).contiguous();
  at::Tensor grad_q = empty_like_layout(q), grad_k = empty_like_layout(k), grad_v = empty_like_layout(v);
  at::Tensor delta = at::empty({g.B, heads, g.Nq}, logsumexp.options());
  at::Tensor partial_t = at::empty({g.B, heads, g.Nq}, logsumexp.options());
  cuda::check_launch(cuda::proxy_attention_backward_queries(
                         cuda::dtype_of(q), q.const_data_ptr(), strides(q), k.const_data_ptr(), strides(k),
                         v.const_data_ptr(), strides(v), out.const_data_ptr(), strides(out), grad_out.const_data_ptr(),
                         strides(grad_out), t.const_data_ptr(), q_norm.const_data_ptr(), k_norm.const_data_ptr(),
                         logsumexp.const_data_ptr(), delta.mutable_data_ptr(), grad_q.mutable_data_ptr(),
                         strides(grad_q), partial_t.mutable_data_ptr(), heads_of(g), stream),
                     op);
  cuda::check_launch(cuda::proxy_attention_backward_keys(
                         cuda::dtype_of(q), q.const_data_ptr(), strides(q), k.const_data_ptr(), strides(k),
                         v.const_data_ptr(), strides(v), grad_out.const_data_ptr(), strides(grad_out),
                         t.const_data_ptr(), q_norm.const_data_ptr(), k_norm.const_data_ptr(),
                         logsumexp.const_data_ptr(), delta.const_data_ptr(), grad_k.mutable_data_ptr(),
                         strides(grad_k), grad_v.mutable_data_ptr(), strides(grad_v), heads_of(g), stream),
                     op);
  const at::Tensor grad_t = partial_t.sum(2).sum(0);  // over the queries, then the images
  return {grad_q, grad_k, grad_v, grad_t.to(temperature.scalar_type()).reshape(temperature.sizes())};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> proxy_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& temperature, const at::Tensor& out, const at::Tensor& logsumexp, const at::Tensor& q_norm,
    const at::Tensor& k_norm, int64_t heads) {
  constexpr const char* op = "pyairir::proxy_attention_backward";
  const Geometry g = proxy_attention_math::check_arguments(q, k, v, temperature, heads, op);
  proxy_attention_math::check_saved(grad_out, out, logsumexp, q_norm, k_norm, q, g, op);
  check_head_channels(g, op);
  const c10::cuda::CUDAGuard guard(q.device());
  return proxy_attention_math::backward_rescaled(
      q, k, q_norm, k_norm, g,
      [&](const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& qn, const at::Tensor& kn) {
        return backward_tokens(grad_out, q_, k_, v, temperature, out, logsumexp, qn, kn, g, op);
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(pyairir, CUDA, m) {
  m.impl("proxy_attention", &proxy_attention);
  m.impl("proxy_attention_backward", &proxy_attention_backward);
}

}  // namespace pyairir
