// MDTA's argument checks and its small (d x d per head) matrix algebra, in
// ATen ops on any device: shared by the CPU kernel and the CUDA binding, which
// differ only in how they stream over the pixels.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "head_operand.h"
#include "rescale.h"

namespace pyairir {
namespace mdta_math {

constexpr double kNormEps = 1e-12;  // F.normalize's eps

struct Geometry {
  int64_t B, C, N, heads, d;
};

// q, k, v and grad_out: head operands (csrc/head_operand.h) of q's shape, dtype and device.
inline void check_operand(const at::Tensor& t, const char* name, const at::Tensor& q, const char* op) {
  check_head_operand(t, op, name);
  TORCH_CHECK(t.sizes() == q.sizes() && t.scalar_type() == q.scalar_type() && t.device() == q.device(), op, ": ",
              name, " must have the shape, dtype and device of q (", q.sizes(), ", ", q.scalar_type(), "), got ",
              t.sizes(), ", ", t.scalar_type());
}

inline Geometry check_arguments(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& temperature, int64_t heads, const char* op) {
  check_operand(q, "q", q, op);
  check_operand(k, "k", q, op);
  check_operand(v, "v", q, op);
  TORCH_CHECK(heads > 0 && q.size(1) % heads == 0, op, ": heads must divide the channels of q (", q.size(1),
              "), got ", heads);
  TORCH_CHECK(temperature.numel() == heads, op, ": temperature must hold one value per head (", heads,
              "), got shape ", temperature.sizes());
  TORCH_CHECK(temperature.scalar_type() == q.scalar_type() && temperature.device() == q.device(), op,
              ": temperature must have the dtype and device of q (", q.scalar_type(), "), got ",
              temperature.scalar_type());
  return {q.size(0), q.size(1), q.size(2) * q.size(3), heads, q.size(1) / heads};
}

inline at::ScalarType acc_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// The backward's saved tensors, as mdta returned them.
inline void check_saved(const at::Tensor& cosine, const at::Tensor& q_norm, const at::Tensor& k_norm,
                        const at::Tensor& q, const Geometry& g, const char* op) {
  const at::ScalarType acc = acc_dtype(q.scalar_type());
  TORCH_CHECK(cosine.sizes() == at::IntArrayRef({g.B, g.heads, g.d, g.d}) && cosine.scalar_type() == acc, op,
              ": cosine must be the (B, heads, d, d) matrix mdta returned");
  TORCH_CHECK(q_norm.sizes() == at::IntArrayRef({g.B, g.C}) && k_norm.sizes() == q_norm.sizes() &&
                  q_norm.scalar_type() == acc && k_norm.scalar_type() == acc,
              op, ": q_norm and k_norm must be the (B, C) norms mdta returned");
}

struct Forward {
  at::Tensor cosine;     // (B, heads, d, d): Q K^T / (|q| |k|^T)
  at::Tensor attention;  // (B * heads, d, d): softmax(cosine * t) rows
  at::Tensor q_norm, k_norm;  // (B, C): clamped L2 norms over the pixels
};

// From the summed Gram matrices (B * heads, d, d) and squared norms (B * heads, 2, d).
inline Forward attention_from(const at::Tensor& gram, const at::Tensor& squares, const at::Tensor& temperature,
                              const Geometry& g) {
  const at::Tensor norms = squares.sqrt().clamp_min(kNormEps);
  const at::Tensor cosine = (gram / norms.select(1, 0).unsqueeze(2) / norms.select(1, 1).unsqueeze(1))
                                .reshape({g.B, g.heads, g.d, g.d});
  const at::Tensor t = temperature.to(gram.scalar_type()).reshape({1, g.heads, 1, 1});
  return {cosine, (cosine * t).softmax(-1).reshape({g.B * g.heads, g.d, g.d}),
          norms.select(1, 0).reshape({g.B, g.C}).clone(), norms.select(1, 1).reshape({g.B, g.C}).clone()};
}

// Rows of q or k too large for Q K^T or the squared norms (beyond ~1e19 in fp32) are scaled by
// powers of two (rescale.h), per image and channel: forward, if the Gram matrix or the squared
// norms are not finite they are recomputed from q * s_q and k * s_k and the saved norms divided
// back by s; backward, if a saved norm reaches kRescaleNorm it runs on the scaled operands and
// norms, and dq = s_q dq'.
inline at::Tensor downscale(const at::Tensor& x) {
  return power_of_two_scale(x.abs().amax({2, 3}, true), x.scalar_type());  // (B, C, 1, 1)
}

inline bool all_finite(const at::Tensor& a, const at::Tensor& b) {
  return at::isfinite(a).all().item<bool>() && at::isfinite(b).all().item<bool>();
}

// The operands with mdta's fused depthwise filter applied whole: part 0, 1, 2 (q, k, v) of
// x convolved with its third of dw_weight (3C, 1, 3, 3) and dw_bias, padding 1.
inline at::Tensor convolved(const at::Tensor& x, int64_t part, const at::Tensor& dw_weight,
                            const c10::optional<at::Tensor>& dw_bias) {
  const int64_t C = x.size(1);
  const c10::optional<at::Tensor> bias =
      dw_bias.has_value() ? c10::optional<at::Tensor>(dw_bias->narrow(0, part * C, C)) : c10::nullopt;
  return at::conv2d(x, dw_weight.narrow(0, part * C, C), bias, 1, 1, 1, C);
}

// MDTA's project_out folded into the op: weight (C, C, 1, 1) and bias (C,), or undefined.
struct Projection {
  at::Tensor weight, bias;
};

inline Projection projection_of(const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& bias,
                                const at::Tensor& q, const char* op) {
  const int64_t C = q.size(1);
  if (!weight.has_value()) {
    TORCH_CHECK(!bias.has_value(), op, ": project_bias given without project_weight");
    return {};
  }
  const at::Tensor& w = *weight;
  TORCH_CHECK(w.dim() == 4 && w.size(0) == C && w.size(1) == C && w.size(2) == 1 && w.size(3) == 1, op,
              ": project_weight must have shape [", C, ", ", C, ", 1, 1] (a 1x1 convolution of q's channels), got ",
              w.sizes());
  TORCH_CHECK(w.scalar_type() == q.scalar_type() && w.device() == q.device(), op,
              ": project_weight must have the dtype and device of q (", q.scalar_type(), ", ", q.device(), "), got ",
              w.scalar_type(), ", ", w.device());
  if (bias.has_value()) {
    const at::Tensor& b = *bias;
    TORCH_CHECK(b.dim() == 1 && b.size(0) == C, op, ": project_bias must have shape [", C, "], got ", b.sizes());
    TORCH_CHECK(b.scalar_type() == q.scalar_type() && b.device() == q.device(), op,
                ": project_bias must have the dtype and device of q (", q.scalar_type(), ", ", q.device(), "), got ",
                b.scalar_type(), ", ", b.device());
  }
  return {w.reshape({C, C}), bias.has_value() ? *bias : at::Tensor()};
}

// Per image, P blockdiag(A_1 .. A_heads) (B, C, C) in the accumulation type: the projection P (C, C)
// times the heads' attention maps (B * heads, d, d).
inline at::Tensor projected_attention(const at::Tensor& weight, const at::Tensor& attention, const Geometry& g) {
  const at::Tensor p = weight.to(attention.scalar_type()).reshape({g.C, g.heads, g.d});
  return at::einsum("chd,bhde->bche", {p, attention.reshape({g.B, g.heads, g.d, g.d})}).reshape({g.B, g.C, g.C});
}

inline at::Tensor attention_of(const at::Tensor& cosine, const at::Tensor& temperature, const Geometry& g) {
  const at::Tensor t = temperature.to(cosine.scalar_type()).reshape({1, g.heads, 1, 1});
  return (cosine * t).softmax(-1).reshape({g.B * g.heads, g.d, g.d});
}

struct Backward {
  at::Tensor grad_q_gram, grad_k_gram;    // (B * heads, d, d): dG and dG^T
  at::Tensor grad_q_scale, grad_k_scale;  // (B * heads, d): d|q| / |q| and d|k| / |k|
  at::Tensor grad_temperature;            // temperature's shape and dtype
};

// With S = C_hat * t, A = softmax(S), dA = dO V^T (B * heads, d, d):
//   dS = A * (dA - rowsum(dA * A)),   dt_h = sum dS * C_hat,   dC_hat = dS t,
//   dG = dC_hat / (|q| |k|^T)   (G = Q K^T),
//   d|q|_i = -sum_j dC_hat_ij C_hat_ij / |q|_i,   d|k|_j likewise over i,
// so that dQ = dG K + diag(d|q| / |q|) Q and dK = dG^T Q + diag(d|k| / |k|) K, the norm
// terms vanishing where a norm was clamped to eps (as F.normalize's gradient does).
inline Backward backward_coefficients(const at::Tensor& grad_attention, const at::Tensor& attention,
                                      const at::Tensor& cosine, const at::Tensor& q_norm, const at::Tensor& k_norm,
                                      const at::Tensor& temperature, const Geometry& g) {
  const at::Tensor dA = grad_attention.reshape({g.B, g.heads, g.d, g.d});
  const at::Tensor A = attention.reshape({g.B, g.heads, g.d, g.d});
  const at::Tensor t = temperature.to(cosine.scalar_type()).reshape({1, g.heads, 1, 1});
  const at::Tensor dS = A * (dA - (dA * A).sum(-1, true));
  const at::Tensor grad_temperature =
      (dS * cosine).sum({0, 2, 3}).reshape(temperature.sizes()).to(temperature.scalar_type());
  const at::Tensor dC = dS * t;
  const at::Tensor qn = q_norm.reshape({g.B, g.heads, g.d}), kn = k_norm.reshape({g.B, g.heads, g.d});
  const at::Tensor dG = dC / qn.unsqueeze(-1) / kn.unsqueeze(-2);
  const at::Tensor dCC = dC * cosine;
  const at::Tensor q_scale = (-dCC.sum(-1) / (qn * qn)).masked_fill(qn <= kNormEps, 0);
  const at::Tensor k_scale = (-dCC.sum(-2) / (kn * kn)).masked_fill(kn <= kNormEps, 0);
  const int64_t bh = g.B * g.heads;
  return {dG.reshape({bh, g.d, g.d}), dG.transpose(-1, -2).reshape({bh, g.d, g.d}), q_scale.reshape({bh, g.d}),
          k_scale.reshape({bh, g.d}), grad_temperature};
}

using Gradients = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;  // (dq, dk, dv, d temperature)

// The forward's statistics from gram_of(q, k) -> (Gram matrix, squared norms), summed over the
// pixels; if they overflowed, again from the rows scaled by downscale(), the norms divided back.
template <typename GramOf>
Forward forward_rescaled(const at::Tensor& q, const at::Tensor& k, const at::Tensor& temperature, const Geometry& g,
                         GramOf&& gram_of) {
  auto [gram, squares] = gram_of(q, k);
  if (all_finite(gram, squares)) return attention_from(gram, squares, temperature, g);
  const at::Tensor sq = downscale(q), sk = downscale(k);
  std::tie(gram, squares) = gram_of(q * sq, k * sk);
  Forward f = attention_from(gram, squares, temperature, g);
  f.q_norm = f.q_norm / sq.reshape({g.B, g.C}).to(f.q_norm.scalar_type());
  f.k_norm = f.k_norm / sk.reshape({g.B, g.C}).to(f.k_norm.scalar_type());
  return f;
}

// body(q, k, q_norm, k_norm) -> Gradients; for huge rows (needs_rescale) it runs on the scaled
// operands and norms, and dq = s_q dq', dk = s_k dk'.
template <typename Body>
Gradients backward_rescaled(const at::Tensor& q, const at::Tensor& k, const at::Tensor& q_norm,
                            const at::Tensor& k_norm, const Geometry& g, Body&& body) {
  if (!needs_rescale(q_norm, k_norm)) return body(q, k, q_norm, k_norm);
  const at::Tensor sq = downscale(q), sk = downscale(k);
  auto [grad_q, grad_k, grad_v, grad_t] =
      body(q * sq, k * sk, q_norm * sq.reshape({g.B, g.C}).to(q_norm.scalar_type()),
           k_norm * sk.reshape({g.B, g.C}).to(k_norm.scalar_type()));
  return {grad_q * sq, grad_k * sk, grad_v, grad_t};
}

}  // namespace mdta_math
}  // namespace pyairir
