// topk_prompt's argument checks, gate and the gradient algebra that follows the resize's adjoint, in ATen ops on
// any device: shared by the CPU kernel and the CUDA binding.
#pragma once

#include <ATen/ATen.h>

namespace pyairir {
namespace topk_prompt_math {

// Sizes: batch, prompt components, channels, prompt side, output height and width, k.
struct Geometry {
  int64_t B, n, C, s, H, W, k;
};

inline Geometry check_arguments(const at::Tensor& logits, const at::Tensor& prompts, int64_t height,
                                int64_t width, int64_t k, const char* op) {
  TORCH_CHECK(prompts.dim() == 4 && prompts.size(2) == prompts.size(3) && prompts.numel() > 0, op,
              ": prompts must be a non-empty (n, C, s, s) tensor of square components, got ", prompts.sizes());
  TORCH_CHECK(at::isFloatingType(prompts.scalar_type()) && prompts.is_contiguous(), op,
              ": prompts must be a contiguous floating tensor, got ", prompts.scalar_type());
  TORCH_CHECK(logits.dim() == 2 && logits.size(1) == prompts.size(0) && logits.size(0) > 0, op,
              ": logits must have shape (B, n = ", prompts.size(0), "), got ", logits.sizes());
  TORCH_CHECK(logits.scalar_type() == prompts.scalar_type() && logits.device() == prompts.device(), op,
              ": logits must have the dtype and device of prompts");
  TORCH_CHECK(height > 0 && width > 0, op, ": height and width must be positive, got ", height, "x", width);
  TORCH_CHECK(1 <= k && k <= prompts.size(0), op, ": k must be in [1, n = ", prompts.size(0), "], got ", k);
  return {logits.size(0), prompts.size(0), prompts.size(1), prompts.size(2), height, width, k};
}

inline Geometry check_backward_arguments(const at::Tensor& grad_out, const at::Tensor& logits,
                                         const at::Tensor& prompts, int64_t k) {
  constexpr const char* op = "pyairir::topk_prompt_backward";
  TORCH_CHECK(grad_out.dim() == 4, op, ": grad_out must be (B, C, H, W), got ", grad_out.sizes());
  const Geometry g = check_arguments(logits, prompts, grad_out.size(2), grad_out.size(3), k, op);
  TORCH_CHECK(grad_out.size(0) == g.B && grad_out.size(1) == g.C && grad_out.scalar_type() == prompts.scalar_type() &&
                  grad_out.device() == prompts.device(),
              op, ": grad_out must be (B = ", g.B, ", C = ", g.C, ", H, W) with the dtype and device of prompts, got ",
              grad_out.sizes(), " ", grad_out.scalar_type());
  return g;
}

inline at::ScalarType acc_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// (weights (B, k), selection (B, k)): the top-k of softmax(logits), renormalised if asked, in the
// accumulation type.
inline std::pair<at::Tensor, at::Tensor> gate(const at::Tensor& logits, int64_t k, bool renormalize) {
  auto [weights, selection] = logits.to(acc_dtype(logits.scalar_type())).softmax(1).topk(k, 1);
  if (renormalize) weights = weights / weights.sum(1, true);
  return {weights.contiguous(), selection.contiguous()};
}

// With m = sum_j w_j P_{s_j} and d_m (B, C, s, s) the resize's adjoint of the output gradient:
//   dw_j = <d_m, P_{s_j}>,   dP_i = sum_{b, j: s_bj = i} w_bj d_m_b   (summed in batch order),
//   dp_{s_j} = (dw_j - sum_l dw_l w_l) / sum_l p_{s_l} if renormalised, else dw_j,
//   dlogits = p (dp - sum p dp)   (the softmax's backward).

// dlogits (B, n) in the dtype of logits, from dw (B, k) and the gate (weights, selection).
inline at::Tensor logit_gradient(const at::Tensor& dw, const at::Tensor& logits, const at::Tensor& weights,
                                 const at::Tensor& selection, bool renormalize) {
  const at::Tensor p = logits.to(acc_dtype(logits.scalar_type())).softmax(1);
  at::Tensor dp_selected = dw;
  if (renormalize) dp_selected = (dw - (dw * weights).sum(1, true)) / p.gather(1, selection).sum(1, true);
  const at::Tensor dp = at::zeros_like(p).scatter(1, selection, dp_selected);
  return (p * (dp - (p * dp).sum(1, true))).to(logits.scalar_type());
}

// (dlogits, dP) in ATen ops (any device; the CPU kernel computes dw and dP in one pass instead).
inline std::pair<at::Tensor, at::Tensor> gradients(const at::Tensor& d_mixed, const at::Tensor& logits,
                                                   const at::Tensor& prompts, int64_t k, bool renormalize) {
  const at::ScalarType acc = acc_dtype(prompts.scalar_type());
  const auto [w, selection] = gate(logits, k, renormalize);
  const int64_t B = logits.size(0), n = prompts.size(0);
  const at::Tensor selected = prompts.to(acc).index_select(0, selection.flatten()).view(
      {B, k, prompts.size(1), prompts.size(2), prompts.size(3)});
  const at::Tensor dw = (selected * d_mixed.unsqueeze(1)).sum({2, 3, 4});
  at::Tensor grad_prompts = at::zeros({n, prompts.size(1), prompts.size(2), prompts.size(3)},
                                      prompts.options().dtype(acc));
  const at::Tensor contributions = w.view({B, k, 1, 1, 1}) * d_mixed.unsqueeze(1);
  const at::Tensor indices = selection.cpu();
  const int64_t* index = indices.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)  // not index_add_: its accumulation order is unspecified on CUDA
    for (int64_t j = 0; j < k; ++j) grad_prompts[index[b * k + j]].add_(contributions[b][j]);
  return {logit_gradient(dw, logits, w, selection, renormalize), grad_prompts.to(prompts.scalar_type())};
}

}  // namespace topk_prompt_math
}  // namespace pyairir
