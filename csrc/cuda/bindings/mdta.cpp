// Torch binding of the mdta CUDA kernels (built only with a CUDA torch): the two
// pixel passes run as kernels, the d x d algebra as ATen ops (csrc/mdta_math.h).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../../checks.h"
#include "../../mdta_math.h"
#include "../mdta.h"
#include "common.h"

namespace pyairir {
namespace {

constexpr int64_t kChunk = 1024;  // pixels per Gram partial

using mdta_math::Geometry;

cuda::Strides strides_of(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(3)}; }

// (sum over chunks of X Y^T, and of the squared norms if wanted), each (B * heads, ...).
std::pair<at::Tensor, at::Tensor> gram(const at::Tensor& x, const at::Tensor& y, const Geometry& g, bool with_squares,
                                       const char* op) {
  const int64_t chunks = (g.N + kChunk - 1) / kChunk;
  const auto options = x.options().dtype(mdta_math::acc_dtype(x.scalar_type()));
  at::Tensor partial = at::empty({g.B * g.heads, chunks, g.d, g.d}, options);
  at::Tensor squares = with_squares ? at::empty({g.B * g.heads, chunks, 2, g.d}, options) : at::Tensor();
  cuda::check_launch(cuda::mdta_gram(cuda::dtype_of(x), x.const_data_ptr(), strides_of(x), y.const_data_ptr(),
                                     strides_of(y), partial.mutable_data_ptr(),
                                     with_squares ? squares.mutable_data_ptr() : nullptr, g.B, g.heads, g.d, g.N,
                                     kChunk, c10::cuda::getCurrentCUDAStream().stream()),
                     op);
  return {partial.sum(1), with_squares ? squares.sum(1) : at::Tensor()};
}

// out = M X (+ diag(scale) residual) per image and head; M, scale in the accumulation type.
at::Tensor apply(const at::Tensor& m, const at::Tensor& x, const Geometry& g, const at::Tensor& like,
                 const at::Tensor& residual, const at::Tensor& scale, const char* op) {
  at::Tensor out = empty_like_layout(like);
  const at::Tensor matrix = m.contiguous(), s = scale.defined() ? scale.contiguous() : scale;
  cuda::check_launch(cuda::mdta_apply(cuda::dtype_of(x), matrix.const_data_ptr(), x.const_data_ptr(), strides_of(x),
                                      residual.defined() ? residual.const_data_ptr() : nullptr,
                                      residual.defined() ? strides_of(residual) : strides_of(x),
                                      s.defined() ? s.const_data_ptr() : nullptr, out.mutable_data_ptr(),
                                      strides_of(out), g.B, g.heads, g.d, g.N,
                                      c10::cuda::getCurrentCUDAStream().stream()),
                     op);
  return out;
}

// With a depthwise filter, q, k and v are convolved whole first (cuDNN), then attended; with a
// projection, the output is projected after (cuDNN).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> mdta(const at::Tensor& q_in, const at::Tensor& k_in,
                                                                const at::Tensor& v_in, const at::Tensor& temperature,
                                                                int64_t heads,
                                                                const c10::optional<at::Tensor>& dw_weight,
                                                                const c10::optional<at::Tensor>& dw_bias,
                                                                const c10::optional<at::Tensor>& project_weight,
                                                                const c10::optional<at::Tensor>& project_bias) {
  constexpr const char* op = "pyairir::mdta";
  const Geometry g = mdta_math::check_arguments(q_in, k_in, v_in, temperature, heads, op);
  check_depthwise_filter(dw_weight, dw_bias, 3 * g.C, q_in, "q", op, "per channel of q, k and v, in that order");
  mdta_math::projection_of(project_weight, project_bias, q_in, op);
  const c10::cuda::CUDAGuard guard(q_in.device());
  const bool conv = dw_weight.has_value();
  const at::Tensor q = conv ? mdta_math::convolved(q_in, 0, *dw_weight, dw_bias) : q_in;
  const at::Tensor k = conv ? mdta_math::convolved(k_in, 1, *dw_weight, dw_bias) : k_in;
  const at::Tensor v = conv ? mdta_math::convolved(v_in, 2, *dw_weight, dw_bias) : v_in;
  const mdta_math::Forward f = mdta_math::forward_rescaled(
      q, k, temperature, g, [&](const at::Tensor& a, const at::Tensor& b) { return gram(a, b, g, true, op); });
  at::Tensor out = apply(f.attention, v, g, q, at::Tensor(), at::Tensor(), op);
  if (project_weight.has_value()) out = at::conv2d(out, *project_weight, project_bias);
  return {out, f.cosine, f.q_norm, f.k_norm};
}

// dV = A^T dO, dA = dO V^T, then dQ = dG K + diag(d|q| / |q|) Q and dK likewise.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_pixels(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& temperature, const at::Tensor& cosine, const at::Tensor& q_norm, const at::Tensor& k_norm,
    const Geometry& g, const char* op) {
  const at::Tensor attention = mdta_math::attention_of(cosine, temperature, g);
  const at::Tensor grad_v = apply(attention.transpose(1, 2), grad_out, g, q, at::Tensor(), at::Tensor(), op);
  const at::Tensor grad_attention = gram(grad_out, v, g, false, op).first;
  const mdta_math::Backward c =
      mdta_math::backward_coefficients(grad_attention, attention, cosine, q_norm, k_norm, temperature, g);
  const at::Tensor grad_q = apply(c.grad_q_gram, k, g, q, q, c.grad_q_scale, op);
  const at::Tensor grad_k = apply(c.grad_k_gram, q, g, q, k, c.grad_k_scale, op);
  return {grad_q, grad_k, grad_v, c.grad_temperature};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> mdta_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& temperature, const at::Tensor& cosine, const at::Tensor& q_norm, const at::Tensor& k_norm,
    int64_t heads) {
  constexpr const char* op = "pyairir::mdta_backward";
  const Geometry g = mdta_math::check_arguments(q, k, v, temperature, heads, op);
  mdta_math::check_operand(grad_out, "grad_out", q, op);
  mdta_math::check_saved(cosine, q_norm, k_norm, q, g, op);
  const c10::cuda::CUDAGuard guard(q.device());
  return mdta_math::backward_rescaled(
      q, k, q_norm, k_norm, g,
      [&](const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& qn, const at::Tensor& kn) {
        return backward_pixels(grad_out, q_, k_, v, temperature, cosine, qn, kn, g, op);
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(pyairir, CUDA, m) {
  m.impl("mdta", &mdta);
  m.impl("mdta_backward", &mdta_backward);
}

}  // namespace pyairir
