// proxy_attention's argument checks, shared by the CPU kernel and the CUDA binding.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "head_operand.h"
#include "rescale.h"

namespace pyairir {
namespace proxy_attention_math {

constexpr double kNormEps = 1e-12;  // F.normalize's eps

// Batch, channels, query and key tokens, heads, channels per head.
struct Geometry {
  int64_t B, C, Nq, Nk, heads, d;
};

inline at::ScalarType acc_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// Tokens of q or k too large for their scores or squared norms are scaled by powers of two
// (rescale.h), per image, head and token: s (B, C, H, W), constant over each head's d channels.
// When a norm reaches kRescaleNorm the forward and the backward run on x * s, with norms
// |x| * s; the saved norms are the true ones, and dx = s dx'.
inline at::Tensor downscale(const at::Tensor& x, int64_t heads) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const at::Tensor largest = x.abs().reshape({B, heads, C / heads, H * W}).amax(2, true);
  return power_of_two_scale(largest, x.scalar_type()).expand({B, heads, C / heads, H * W}).reshape({B, C, H, W});
}

// The per-token factors of downscale(x, heads) as the (B, heads, N) norms are laid out.
inline at::Tensor token_factors(const at::Tensor& s, int64_t heads, at::ScalarType acc) {
  const int64_t B = s.size(0), C = s.size(1);
  return s.reshape({B, heads, C / heads, -1}).select(2, 0).to(acc);
}

// q (B, C, Hq, Wq), k and v (B, C, Hk, Wk): head operands (csrc/head_operand.h) of one dtype and
// device; temperature: one value per head.
inline Geometry check_arguments(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& temperature, int64_t heads, const char* op) {
  check_head_operand(q, op, "q");
  check_head_operand(k, op, "k");
  check_head_operand(v, op, "v");
  TORCH_CHECK(k.size(0) == q.size(0) && k.size(1) == q.size(1), op,
              ": k must have the batch and channels of q (", q.size(0), ", ", q.size(1), "), got shape ", k.sizes());
  TORCH_CHECK(v.sizes() == k.sizes(), op, ": v must have the shape of k ", k.sizes(), ", got ", v.sizes());
  for (const at::Tensor* t : {&k, &v, &temperature})
    TORCH_CHECK(t->scalar_type() == q.scalar_type() && t->device() == q.device(), op,
                ": k, v and temperature must have the dtype and device of q (", q.scalar_type(), ", ", q.device(),
                "), got ", t->scalar_type(), ", ", t->device());
  TORCH_CHECK(heads > 0 && q.size(1) % heads == 0, op, ": heads must divide the channels of q (", q.size(1),
              "), got ", heads);
  TORCH_CHECK(temperature.numel() == heads, op, ": temperature must hold one value per head (", heads,
              "), got shape ", temperature.sizes());
  return {q.size(0), q.size(1), q.size(2) * q.size(3), k.size(2) * k.size(3), heads, q.size(1) / heads};
}

// The backward's saved tensors, as proxy_attention returned them, and grad_out.
inline void check_saved(const at::Tensor& grad_out, const at::Tensor& out, const at::Tensor& logsumexp,
                        const at::Tensor& q_norm, const at::Tensor& k_norm, const at::Tensor& q, const Geometry& g,
                        const char* op) {
  for (const auto& [t, name] : {std::pair{&grad_out, "grad_out"}, std::pair{&out, "out"}}) {
    check_head_operand(*t, op, name);
    TORCH_CHECK(t->sizes() == q.sizes() && t->scalar_type() == q.scalar_type() && t->device() == q.device(), op,
                ": ", name, " must have the shape, dtype and device of q (", q.sizes(), "), got ", t->sizes());
  }
  const at::ScalarType acc = acc_dtype(q.scalar_type());
  TORCH_CHECK(logsumexp.sizes() == at::IntArrayRef({g.B, g.heads, g.Nq}) && q_norm.sizes() == logsumexp.sizes() &&
                  k_norm.sizes() == at::IntArrayRef({g.B, g.heads, g.Nk}) && logsumexp.scalar_type() == acc &&
                  q_norm.scalar_type() == acc && k_norm.scalar_type() == acc && logsumexp.is_contiguous() &&
                  q_norm.is_contiguous() && k_norm.is_contiguous(),
              op, ": logsumexp, q_norm and k_norm must be the (B, heads, tokens) tensors proxy_attention returned");
}

using Outputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;  // out, log-sum-exp, q_norm, k_norm
using Gradients = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;  // dq, dk, dv, d temperature

// norms_of(x, tokens) -> (B, heads, tokens) norms; attend(q, k, q_norm, k_norm) -> (out, log-sum-exp).
// Huge tokens (needs_rescale) run scaled by downscale(); the norms returned are the true ones.
template <typename NormsOf, typename Attend>
Outputs forward_rescaled(const at::Tensor& q, const at::Tensor& k, const Geometry& g, at::ScalarType acc,
                         NormsOf&& norms_of, Attend&& attend) {
  const at::Tensor q_norm = norms_of(q, g.Nq), k_norm = norms_of(k, g.Nk);
  if (!needs_rescale(q_norm, k_norm)) {
    auto [out, logsumexp] = attend(q, k, q_norm, k_norm);
    return {out, logsumexp, q_norm, k_norm};
  }
  const at::Tensor sq = downscale(q, g.heads), sk = downscale(k, g.heads);
  const at::Tensor q_scaled = q * sq, k_scaled = k * sk;
  const at::Tensor qn = norms_of(q_scaled, g.Nq), kn = norms_of(k_scaled, g.Nk);
  auto [out, logsumexp] = attend(q_scaled, k_scaled, qn, kn);
  return {out, logsumexp, qn / token_factors(sq, g.heads, acc), kn / token_factors(sk, g.heads, acc)};
}

// body(q, k, q_norm, k_norm) -> Gradients; huge tokens run as the forward did, dx = s dx'.
template <typename Body>
Gradients backward_rescaled(const at::Tensor& q, const at::Tensor& k, const at::Tensor& q_norm,
                            const at::Tensor& k_norm, const Geometry& g, Body&& body) {
  if (!needs_rescale(q_norm, k_norm)) return body(q, k, q_norm, k_norm);
  const at::ScalarType acc = q_norm.scalar_type();
  const at::Tensor sq = downscale(q, g.heads), sk = downscale(k, g.heads);
  auto [grad_q, grad_k, grad_v, grad_t] = body(q * sq, k * sk, q_norm * token_factors(sq, g.heads, acc),
                                               k_norm * token_factors(sk, g.heads, acc));
  return {grad_q * sq, grad_k * sk, grad_v, grad_t};
}

}  // namespace proxy_attention_math
}  // namespace pyairir
