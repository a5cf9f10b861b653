// topk_prompt on CPU: the gate's top-k softmax weights, the weighted sum of only the selected
// prompt components at prompt resolution, and its separable bilinear resize, per (sample,
// channel) plane.
// The backward gathers the output gradient back through the separable resize for each prompt
// row, then cell (in a fixed order), and sums the components' gradients over the batch in batch
// order: deterministic.
#include "vec.h"  // first: selects at::vec's instruction set

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../bilinear.h"
#include "../topk_prompt_math.h"
#include "vec_loops.h"

namespace pyairir {
namespace {

using topk_prompt_math::Geometry;

template <typename A>
std::vector<BilinearTap<A>> taps(int64_t in, int64_t out) {
  std::vector<BilinearTap<A>> result(out);
  for (int64_t d = 0; d < out; ++d) result[d] = bilinear_tap<A>(d, in, out);
  return result;
}

// Per (sample, channel) plane: the selected components' weighted sum at prompt resolution, its
// rows resized horizontally (s x W, the only gathers), then each output row a blend of two of
// those rows, contiguous and vectorised. Same products and order as tap-by-tap bilinear:
// l0y (l0x a + l1x b) + l1y (l0x c + l1x d).
template <typename scalar_t, typename A = acc_type<scalar_t>>
void forward_kernel(const scalar_t* prompts, const A* weights, const int64_t* selection, scalar_t* out,
                    const Geometry& g) {
  const auto rows = taps<A>(g.s, g.H), cols = taps<A>(g.s, g.W);
  const int64_t plane = g.s * g.s;
  at::parallel_for(0, g.B * g.C, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> mixed(plane), wide(g.s * g.W);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / g.C, c = task % g.C;
      std::fill(mixed.begin(), mixed.end(), A(0));
      for (int64_t j = 0; j < g.k; ++j) {  // only the selected components
        const scalar_t* component = prompts + (selection[b * g.k + j] * g.C + c) * plane;
        const Vec<A> w(weights[b * g.k + j]);
        vec_for<A>(plane, [&](int64_t i, int64_t n) {
          at::vec::fmadd(w, load_acc(component + i, n), load(mixed.data() + i, n)).store(mixed.data() + i, n);
        });
      }
      for (int64_t r = 0; r < g.s; ++r) {
        const A* source = mixed.data() + r * g.s;
        A* row = wide.data() + r * g.W;
        for (int64_t x = 0; x < g.W; ++x) row[x] = cols[x].l0 * source[cols[x].i0] + cols[x].l1 * source[cols[x].i1];
      }
      scalar_t* dst = out + task * g.H * g.W;
      for (int64_t y = 0; y < g.H; ++y) {
        const Vec<A> l0(rows[y].l0), l1(rows[y].l1);
        const A* r0 = wide.data() + rows[y].i0 * g.W;
        const A* r1 = wide.data() + rows[y].i1 * g.W;
        vec_for<A>(g.W, [&](int64_t x, int64_t n) {
          store_acc(at::vec::fmadd(l0, load(r0 + x, n), l1 * load(r1 + x, n)), dst + y * g.W + x, n);
        });
      }
    }
  });
}

// d_mixed (B, C, s, s): the adjoint of the resize, separable like the forward and gathered (one
// writer per value, a fixed order): each prompt row i sums the output rows that reach it
// (bilinear_sources), weighted, into an s x W buffer (contiguous and vectorised); each prompt
// cell (i, j) then sums that buffer's columns that reach j.
template <typename scalar_t, typename A = acc_type<scalar_t>>
void resize_adjoint(const scalar_t* grad, A* d_mixed, const Geometry& g) {
  const auto row_sources = bilinear_sources<A>(g.s, g.H), col_sources = bilinear_sources<A>(g.s, g.W);
  std::vector<std::vector<A>> row_weights(g.s), col_weights(g.s);
  for (int64_t i = 0; i < g.s; ++i) {
    for (int64_t y = row_sources[i].begin; y < row_sources[i].end; ++y)
      row_weights[i].push_back(bilinear_weight<A>(y, i, g.s, g.H));
    for (int64_t x = col_sources[i].begin; x < col_sources[i].end; ++x)
      col_weights[i].push_back(bilinear_weight<A>(x, i, g.s, g.W));
  }
  at::parallel_for(0, g.B * g.C, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> tall(g.s * g.W);
    for (int64_t task = begin; task < end; ++task) {
      const scalar_t* src = grad + task * g.H * g.W;
      for (int64_t i = 0; i < g.s; ++i) {
        A* row = tall.data() + i * g.W;
        std::fill(row, row + g.W, A(0));
        for (int64_t dy = 0; dy < int64_t(row_weights[i].size()); ++dy) {
          const scalar_t* from = src + (row_sources[i].begin + dy) * g.W;
          const Vec<A> w(row_weights[i][dy]);
          vec_for<A>(g.W, [&](int64_t x, int64_t n) {
            at::vec::fmadd(w, load_acc(from + x, n), load(row + x, n)).store(row + x, n);
          });
        }
      }
      for (int64_t i = 0; i < g.s; ++i) {
        const A* row = tall.data() + i * g.W;
        for (int64_t j = 0; j < g.s; ++j) {
          const A* from = row + col_sources[j].begin;
          A sum = A(0);
          for (int64_t dx = 0; dx < int64_t(col_weights[j].size()); ++dx) sum += col_weights[j][dx] * from[dx];
          d_mixed[(task * g.s + i) * g.s + j] = sum;
        }
      }
    }
  });
}

// dw (B, k) and dP (n, C, s, s) from d_mixed in one pass over it, without the (B, k, C, s, s)
// temporaries of the ATen formulation: dP per (component, channel) plane, each plane summed over
// (b, j) in order by one writer; dw from per-(b, j, c) dot products summed over c in order.
template <typename scalar_t, typename A = acc_type<scalar_t>>
void prompt_gradients(const A* d_mixed, const scalar_t* prompts, const A* weights, const int64_t* selection,
                      A* dw, A* d_prompts, const Geometry& g) {
  const int64_t plane = g.s * g.s;
  at::parallel_for(0, g.n * g.C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t m = task / g.C, c = task % g.C;
      A* dst = d_prompts + task * plane;
      std::fill(dst, dst + plane, A(0));
      for (int64_t b = 0; b < g.B; ++b)
        for (int64_t j = 0; j < g.k; ++j) {
          if (selection[b * g.k + j] != m) continue;
          const A* src = d_mixed + (b * g.C + c) * plane;
          const Vec<A> w(weights[b * g.k + j]);
          vec_for<A>(plane, [&](int64_t i, int64_t n) {
            at::vec::fmadd(w, load(src + i, n), load(dst + i, n)).store(dst + i, n);
          });
        }
    }
  });
  std::vector<A> partial(g.B * g.k * g.C);
  at::parallel_for(0, g.B * g.C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / g.C, c = task % g.C;
      const A* d = d_mixed + task * plane;
      for (int64_t j = 0; j < g.k; ++j) {
        const scalar_t* p = prompts + (selection[b * g.k + j] * g.C + c) * plane;
        partial[(b * g.k + j) * g.C + c] = vec_sum<A>(
            plane, [&](int64_t i) { return load_acc(p + i, Vec<A>::size()) * Vec<A>::loadu(d + i); },
            [&](int64_t i) { return static_cast<A>(p[i]) * d[i]; });
      }
    }
  });
  for (int64_t bj = 0; bj < g.B * g.k; ++bj) {
    A sum = A(0);
    for (int64_t c = 0; c < g.C; ++c) sum += partial[bj * g.C + c];
    dw[bj] = sum;
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> topk_prompt(const at::Tensor& logits, const at::Tensor& prompts,
                                                           int64_t height, int64_t width, int64_t k,
                                                           bool renormalize) {
  const Geometry g = topk_prompt_math::check_arguments(logits, prompts, height, width, k,
                                                       "pyairir::topk_prompt");
  auto [weights, selection] = topk_prompt_math::gate(logits, k, renormalize);
  at::Tensor out = at::empty({g.B, g.C, g.H, g.W}, prompts.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, prompts.scalar_type(), "topk_prompt", [&] {
    forward_kernel(prompts.const_data_ptr<scalar_t>(), weights.const_data_ptr<acc_type<scalar_t>>(),
                   selection.const_data_ptr<int64_t>(), out.mutable_data_ptr<scalar_t>(), g);
  });
  return {out, weights.to(prompts.scalar_type()), selection};
}

std::tuple<at::Tensor, at::Tensor> topk_prompt_backward(const at::Tensor& grad_out, const at::Tensor& logits,
                                                        const at::Tensor& prompts, int64_t k, bool renormalize) {
  const Geometry g = topk_prompt_math::check_backward_arguments(grad_out, logits, prompts, k);
  const at::Tensor grad = grad_out.contiguous();
  at::Tensor d_mixed = at::empty({g.B, g.C, g.s, g.s},
                                 prompts.options().dtype(topk_prompt_math::acc_dtype(prompts.scalar_type())));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, prompts.scalar_type(), "topk_prompt_backward", [&] {
    resize_adjoint(grad.const_data_ptr<scalar_t>(), d_mixed.mutable_data_ptr<acc_type<scalar_t>>(), g);
  });
  const auto [weights, selection] = topk_prompt_math::gate(logits, k, renormalize);
  const at::Tensor dw = at::empty({g.B, g.k}, d_mixed.options());
  at::Tensor d_prompts = at::empty({g.n, g.C, g.s, g.s}, d_mixed.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, prompts.scalar_type(), "topk_prompt_backward", [&] {
    using A = acc_type<scalar_t>;
    prompt_gradients(d_mixed.const_data_ptr<A>(), prompts.const_data_ptr<scalar_t>(), weights.const_data_ptr<A>(),
                     selection.const_data_ptr<int64_t>(), dw.mutable_data_ptr<A>(), d_prompts.mutable_data_ptr<A>(), g);
  });
  return {topk_prompt_math::logit_gradient(dw, logits, weights, selection, renormalize),
          d_prompts.to(prompts.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyairir, CPU, m) {
  m.impl("topk_prompt", &topk_prompt);
  m.impl("topk_prompt_backward", &topk_prompt_backward);
}

}  // namespace pyairir
