// film_gelu on CPU: GELU(gamma * x + beta) with per-sample, per-channel gamma and beta,
// in one pass over x. NCHW: one task per (sample, channel) plane, vectorised over its pixels;
// channels_last: one task per (sample, block of kPixelBlock pixels), vectorised over the channels
// of each pixel. The gamma/beta gradients are summed within a task in a fixed order (NCHW: the
// whole plane; channels_last: one partial sum per pixel block, then the blocks in order), so
// results do not depend on the thread count.
#include "vec.h"  // first: selects at::vec's instruction set

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "../checks.h"
#include "gelu.h"
#include "vec_loops.h"

namespace pyairir {
namespace {

constexpr int64_t kPixelBlock = 512;

struct Geometry {
  int64_t B, C, P;
  bool channels_last;
  int64_t blocks() const { return (P + kPixelBlock - 1) / kPixelBlock; }
  int64_t tasks() const { return channels_last ? B * blocks() : B * C; }
};

template <typename scalar_t, typename A = acc_type<scalar_t>>
void forward_kernel(const scalar_t* x, const scalar_t* gamma, const scalar_t* beta, scalar_t* y, const Geometry& g) {
  auto apply = [](Vec<A> xv, Vec<A> gv, Vec<A> bv) {
    return gelu(at::vec::fmadd(gv, xv, bv));
  };
  at::parallel_for(0, g.tasks(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      if (g.channels_last) {
        const int64_t b = t / g.blocks(), p0 = (t % g.blocks()) * kPixelBlock, p1 = std::min(g.P, p0 + kPixelBlock);
        for (int64_t p = p0; p < p1; ++p)
          vec_for<A>(g.C, [&](int64_t c, int64_t k) {
            const int64_t at = (b * g.P + p) * g.C + c, param = b * g.C + c;
            store_acc(apply(load_acc(x + at, k), load_acc(gamma + param, k), load_acc(beta + param, k)), y + at, k);
          });
      } else {  // t = b * C + c: one plane, one gamma and beta
        const Vec<A> gv = Vec<A>(A(gamma[t])), bv = Vec<A>(A(beta[t]));
        vec_for<A>(g.P, [&](int64_t i, int64_t k) {
          store_acc(apply(load_acc(x + t * g.P + i, k), gv, bv), y + t * g.P + i, k);
        });
      }
    }
  });
}

// z = gamma x + beta, dz = dy GELU'(z): grad_x = gamma dz, grad_gamma = sum_p x dz, grad_beta = sum_p dz.
template <typename scalar_t, typename A = acc_type<scalar_t>>
void backward_kernel(const scalar_t* dy, const scalar_t* x, const scalar_t* gamma, const scalar_t* beta,
                     scalar_t* dx, scalar_t* dgamma, scalar_t* dbeta, const Geometry& g) {
  // dz for x, dy at one vector of lanes; writes grad_x and adds to the two gradient sums.
  auto step = [](Vec<A> xv, Vec<A> dyv, Vec<A> gv, Vec<A> bv, Vec<A>& sum_gamma, Vec<A>& sum_beta) {
    const Vec<A> dz = dyv * gelu_derivative(at::vec::fmadd(gv, xv, bv));
    sum_gamma = at::vec::fmadd(xv, dz, sum_gamma);
    sum_beta = sum_beta + dz;
    return gv * dz;
  };
  if (g.channels_last) {
    // partial[b][block] = (sum over the block's pixels of x dz, of dz) per channel; then the blocks in order.
    std::vector<A> partial(g.B * g.blocks() * 2 * g.C);
    at::parallel_for(0, g.tasks(), 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = t / g.blocks(), p0 = (t % g.blocks()) * kPixelBlock, p1 = std::min(g.P, p0 + kPixelBlock);
        A* sums = partial.data() + t * 2 * g.C;
        std::fill(sums, sums + 2 * g.C, A(0));
        for (int64_t p = p0; p < p1; ++p)
          vec_for<A>(g.C, [&](int64_t c, int64_t k) {
            const int64_t at = (b * g.P + p) * g.C + c, param = b * g.C + c;
            Vec<A> sum_gamma = load(sums + c, k), sum_beta = load(sums + g.C + c, k);
            store_acc(step(load_acc(x + at, k), load_acc(dy + at, k), load_acc(gamma + param, k),
                           load_acc(beta + param, k), sum_gamma, sum_beta),
                      dx + at, k);
            sum_gamma.store(sums + c, k);
            sum_beta.store(sums + g.C + c, k);
          });
      }
    });
    for (int64_t b = 0; b < g.B; ++b)
      for (int64_t c = 0; c < g.C; ++c) {
        A sum_gamma = A(0), sum_beta = A(0);
        for (int64_t block = 0; block < g.blocks(); ++block) {
          sum_gamma += partial[((b * g.blocks() + block) * 2) * g.C + c];
          sum_beta += partial[((b * g.blocks() + block) * 2 + 1) * g.C + c];
        }
        dgamma[b * g.C + c] = scalar_t(sum_gamma);
        dbeta[b * g.C + c] = scalar_t(sum_beta);
      }
    return;
  }
  at::parallel_for(0, g.tasks(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {  // t = b * C + c; a partial last vector loads zeros, which add nothing
      const Vec<A> gv = Vec<A>(A(gamma[t])), bv = Vec<A>(A(beta[t]));
      Vec<A> sum_gamma(A(0)), sum_beta(A(0));
      vec_for<A>(g.P, [&](int64_t i, int64_t k) {
        store_acc(step(load_acc(x + t * g.P + i, k), load_acc(dy + t * g.P + i, k), gv, bv, sum_gamma, sum_beta),
                  dx + t * g.P + i, k);
      });
      auto total = [](Vec<A> v) { return at::vec::vec_reduce_all<A>([](Vec<A> a, Vec<A> b) { return a + b; }, v); };
      dgamma[t] = scalar_t(total(sum_gamma));
      dbeta[t] = scalar_t(total(sum_beta));
    }
  });
}

Geometry check_arguments(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta, const char* op) {
  const bool channels_last = check_image(x, op, "x");
  for (const auto& [t, name] : {std::pair{&gamma, "gamma"}, std::pair{&beta, "beta"}}) {
    TORCH_CHECK(t->dim() == 2 && t->size(0) == x.size(0) && t->size(1) == x.size(1), op, ": ", name,
                " must have shape [", x.size(0), ", ", x.size(1), "] (one value per sample and channel of x), got ",
                t->sizes());
    TORCH_CHECK(t->scalar_type() == x.scalar_type() && t->device() == x.device() && t->is_contiguous(), op, ": ",
                name, " must be contiguous, with the dtype and device of x");
  }
  return {x.size(0), x.size(1), x.size(2) * x.size(3), channels_last};
}

at::Tensor film_gelu(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta) {
  const Geometry g = check_arguments(x, gamma, beta, "pyairir::film_gelu");
  at::Tensor y = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "film_gelu", [&] {
    forward_kernel(x.const_data_ptr<scalar_t>(), gamma.const_data_ptr<scalar_t>(), beta.const_data_ptr<scalar_t>(),
                   y.mutable_data_ptr<scalar_t>(), g);
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> film_gelu_backward(const at::Tensor& grad_out, const at::Tensor& x,
                                                                  const at::Tensor& gamma, const at::Tensor& beta) {
  constexpr const char* op = "pyairir::film_gelu_backward";
  const Geometry g = check_arguments(x, gamma, beta, op);
  check_like(grad_out, x, g.channels_last, op, "grad_out");
  at::Tensor dx = at::empty_like(x), dgamma = at::empty_like(gamma), dbeta = at::empty_like(beta);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "film_gelu_backward", [&] {
    backward_kernel(grad_out.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                    gamma.const_data_ptr<scalar_t>(), beta.const_data_ptr<scalar_t>(), dx.mutable_data_ptr<scalar_t>(),
                    dgamma.mutable_data_ptr<scalar_t>(), dbeta.mutable_data_ptr<scalar_t>(), g);
  });
  return {dx, dgamma, dbeta};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyairir, CPU, m) {
  m.impl("film_gelu", &film_gelu);
  m.impl("film_gelu_backward", &film_gelu_backward);
}

}  // namespace pyairir
