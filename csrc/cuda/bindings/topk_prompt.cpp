// Torch binding of the topk_prompt CUDA kernels (built only with a CUDA torch): the gate and the
// gradient algebra in ATen (csrc/topk_prompt_math.h), the per-pixel work in csrc/cuda/topk_prompt.cu.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <vector>

#include "../../bilinear.h"
#include "../../topk_prompt_math.h"
#include "../topk_prompt.h"
#include "common.h"

namespace pyairir {
namespace {

using topk_prompt_math::Geometry;

std::tuple<at::Tensor, at::Tensor, at::Tensor> topk_prompt(const at::Tensor& logits, const at::Tensor& prompts,
                                                           int64_t height, int64_t width, int64_t k,
                                                           bool renormalize) {
  constexpr const char* op = "pyairir::topk_prompt";
  const Geometry g = topk_prompt_math::check_arguments(logits, prompts, height, width, k, op);
  const c10::cuda::CUDAGuard guard(prompts.device());
  auto [weights, selection] = topk_prompt_math::gate(logits, k, renormalize);
  at::Tensor out = at::empty({g.B, g.C, g.H, g.W}, prompts.options());
  cuda::check_launch(cuda::topk_prompt_forward(cuda::dtype_of(prompts), prompts.const_data_ptr(),
                                               weights.const_data_ptr(), selection.const_data_ptr<int64_t>(),
                                               out.mutable_data_ptr(), g.B, g.C, g.s, g.H, g.W, g.k,
                                               c10::cuda::getCurrentCUDAStream().stream()),
                     op);
  return {out, weights.to(prompts.scalar_type()), selection};
}

// bilinear_sources as a (in, 2) int64 tensor of [begin, end) on the device.
at::Tensor sources_on(const at::Tensor& like, int64_t in, int64_t out) {
  const bool fp64 = like.scalar_type() == at::kDouble;
  const auto ranges = fp64 ? bilinear_sources<double>(in, out) : bilinear_sources<float>(in, out);
  std::vector<int64_t> flat;
  for (const SourceRange& r : ranges) flat.insert(flat.end(), {r.begin, r.end});
  return at::tensor(flat, at::kLong).to(like.device());
}

std::tuple<at::Tensor, at::Tensor> topk_prompt_backward(const at::Tensor& grad_out, const at::Tensor& logits,
                                                        const at::Tensor& prompts, int64_t k, bool renormalize) {
  const Geometry g = topk_prompt_math::check_backward_arguments(grad_out, logits, prompts, k);
  const c10::cuda::CUDAGuard guard(prompts.device());
  const at::Tensor grad = grad_out.contiguous();
  const at::Tensor rows = sources_on(prompts, g.s, g.H), cols = sources_on(prompts, g.s, g.W);
  at::Tensor d_mixed = at::empty({g.B, g.C, g.s, g.s},
                                 prompts.options().dtype(topk_prompt_math::acc_dtype(prompts.scalar_type())));
  cuda::check_launch(cuda::topk_prompt_resize_adjoint(cuda::dtype_of(prompts), grad.const_data_ptr(),
                                                      d_mixed.mutable_data_ptr(), rows.const_data_ptr<int64_t>(),
                                                      cols.const_data_ptr<int64_t>(), g.B * g.C, g.s, g.H, g.W,
                                                      c10::cuda::getCurrentCUDAStream().stream()),
                     "pyairir::topk_prompt_backward");
  return topk_prompt_math::gradients(d_mixed, logits, prompts, k, renormalize);
}

}  // namespace

TORCH_LIBRARY_IMPL(pyairir, CUDA, m) {
  m.impl("topk_prompt", &topk_prompt);
  m.impl("topk_prompt_backward", &topk_prompt_backward);
}

}  // namespace pyairir
