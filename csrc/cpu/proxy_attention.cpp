// proxy_attention on CPU: flash-style cosine cross-attention. Per image b and head h, with the
// head's d channels of q over its Nq tokens and of k, v over their Nk tokens:
//   s_ij = t_h (q_i . k_j) / (|q_i| |k_j|),   out_i = sum_j softmax_j(s_ij) v_j
// One task per (image, head, block of kQueryBlock queries) streams over blocks of kKeyBlock keys
// with an online softmax: the scores of one (query block, key block) tile come from a GEMM of
// the raw q and k, the norms folded in as a row and a column scale, so memory stays
// O(tokens) and no normalised copy is made. The GEMMs run single-threaded on views of the
// operands (head_blocks.h), the tasks in parallel; every sum runs in an order fixed by the
// shapes alone, so results do not depend on the thread count.
//
// The backward recomputes the tiles from the saved log-sum-exp, in two passes without atomics:
// over query blocks for dq and the temperature's gradient, then over key blocks for dk and dv.
// Tokens too large for their scores or squared norms are rescaled (proxy_attention_math::downscale).
// With P = softmax, dP = dO V^T, D_i = dO_i . out_i and dS = P (dP - D):
//   dq_hat_i = t sum_j dS_ij k_hat_j,  dk_hat_j = t sum_i dS_ij q_hat_i,  dv_j = sum_i P_ij dO_i,
//   dt = sum_ij dS_ij cos_ij,  dx = (dx_hat - x_hat (x_hat . dx_hat)) / |x|  (x_hat = x / |x|).
#include "vec.h"  // first: selects at::vec's instruction set

#include <torch/library.h>

#include <cmath>
#include <limits>
#include <vector>

#include "../proxy_attention_math.h"
#include "head_blocks.h"
#include "vec_loops.h"

namespace pyairir {
namespace {

using proxy_attention_math::Geometry;
using proxy_attention_math::kNormEps;

constexpr int64_t kQueryBlock = 128, kKeyBlock = 512;

int64_t blocks(int64_t n, int64_t size) { return (n + size - 1) / size; }

at::Tensor to_acc(const at::Tensor& t, at::ScalarType acc) { return t.scalar_type() == acc ? t : t.to(acc); }

// Runs f(b, h, block, t0, count) for every (image, head, block of `size` tokens out of n), in
// parallel; f may call single-threaded ATen ops.
template <typename F>
void for_each_block(const Geometry& g, int64_t n, int64_t size, F&& f) {
  const int64_t per_head = blocks(n, size);
  parallel_aten_tasks(g.B * g.heads * per_head, [&](int64_t t) {
    const int64_t i = t % per_head, h = (t / per_head) % g.heads, b = t / (per_head * g.heads);
    f(b, h, i, i * size, std::min(size, n - i * size));
  });
}

// norms[t] = max(|m[:, t]|, eps) for a (d, count) block m (accumulation type), the squares summed
// over the channels in order.
template <typename A>
void token_norms(const at::Tensor& m, A* norms) {
  const int64_t d = m.size(0), n = m.size(1), sc = m.stride(0), sp = m.stride(1);
  const A* base = m.const_data_ptr<A>();
  if (sp == 1) {  // channel-major: accumulate a row of tokens per channel
    std::fill(norms, norms + n, A(0));
    for (int64_t c = 0; c < d; ++c)
      vec_for<A>(n, [&](int64_t t, int64_t k) {
        const Vec<A> x = load(base + c * sc + t, k);
        at::vec::fmadd(x, x, load(norms + t, k)).store(norms + t, k);
      });
  } else {  // pixel-major (sc == 1): each token's channels are contiguous
    for (int64_t t = 0; t < n; ++t) {
      const A* x = base + t * sp;
      A sum = A(0);
      for (int64_t c = 0; c < d; ++c) sum += x[c] * x[c];
      norms[t] = sum;
    }
  }
  for (int64_t t = 0; t < n; ++t) norms[t] = std::max(std::sqrt(norms[t]), A(kNormEps));
}

// Norms of every token of an operand: (B, heads, N).
at::Tensor all_norms(const at::Tensor& x, const Geometry& g, int64_t n, at::ScalarType acc) {
  at::Tensor norms = at::empty({g.B, g.heads, n}, x.options().dtype(acc));
  const Operand o = operand(x);
  for_each_block(g, n, kKeyBlock, [&](int64_t b, int64_t h, int64_t, int64_t t0, int64_t count) {
    AT_DISPATCH_FLOATING_TYPES(acc, "proxy_attention_norms", [&] {
      token_norms<scalar_t>(to_acc(block(o, g.d, b, h, t0, count), acc).contiguous(),
                            norms[b][h].data_ptr<scalar_t>() + t0);
    });
  });
  return norms;
}

// The scores of one tile, in place: row i of s (count values) times scale[i] and inverse[j]
// (inverse key norms), then the online softmax's step for that row. Returns exp(old max - new max)
// by which the row's running output must be rescaled; p holds the unnormalised probabilities.
template <typename A>
A online_softmax_row(A* s, const A* inverse, A scale, int64_t count, A& max, A& sum) {
  constexpr int64_t V = Vec<A>::size();
  A row_max = -std::numeric_limits<A>::infinity();
  int64_t j = 0;
  Vec<A> vmax(row_max);
  for (; j + V <= count; j += V) {
    const Vec<A> x = Vec<A>::loadu(s + j) * Vec<A>::loadu(inverse + j) * Vec<A>(scale);
    x.store(s + j);
    vmax = at::vec::maximum(vmax, x);
  }
  row_max = at::vec::vec_reduce_all<A>([](Vec<A> a, Vec<A> b) { return at::vec::maximum(a, b); }, vmax);
  for (; j < count; ++j) {
    s[j] *= inverse[j] * scale;
    row_max = std::max(row_max, s[j]);
  }
  const A new_max = std::max(max, row_max);
  const Vec<A> shift(new_max);
  const A row_sum = vec_sum<A>(
      count,
      [&](int64_t i) {
        const Vec<A> p = (Vec<A>::loadu(s + i) - shift).exp();
        p.store(s + i);
        return p;
      },
      [&](int64_t i) { return s[i] = std::exp(s[i] - new_max); });
  const A rescale = std::exp(max - new_max);  // 0 on the first tile (max = -inf)
  max = new_max;
  sum = sum * rescale + row_sum;
  return rescale;
}

template <typename A>
void forward_task(const Operand& oq, const Operand& ok, const Operand& ov, const Operand& oo, const Geometry& g,
                  A t, const A* q_norm, const A* k_norm, A* logsumexp, int64_t b, int64_t h, int64_t q0,
                  int64_t nq, at::ScalarType acc) {
  const auto options = at::TensorOptions().dtype(acc);
  const at::Tensor q = to_acc(block(oq, g.d, b, h, q0, nq), acc);
  std::vector<A> scale(nq), max(nq, -std::numeric_limits<A>::infinity()), sum(nq, A(0)), inverse(kKeyBlock);
  for (int64_t i = 0; i < nq; ++i) scale[i] = t / q_norm[i];
  at::Tensor running = at::zeros({nq, g.d}, options);
  at::Tensor scores = at::empty({nq, kKeyBlock}, options);
  for (int64_t k0 = 0; k0 < g.Nk; k0 += kKeyBlock) {
    const int64_t nk = std::min(kKeyBlock, g.Nk - k0);
    const at::Tensor k = to_acc(block(ok, g.d, b, h, k0, nk), acc), v = to_acc(block(ov, g.d, b, h, k0, nk), acc);
    for (int64_t j = 0; j < nk; ++j) inverse[j] = A(1) / k_norm[k0 + j];
    at::Tensor s = scores.narrow(1, 0, nk);
    at::mm_out(s, q.t(), k);
    A* rows = scores.data_ptr<A>();
    A* out_rows = running.data_ptr<A>();
    for (int64_t i = 0; i < nq; ++i) {
      const A rescale = online_softmax_row(rows + i * kKeyBlock, inverse.data(), scale[i], nk, max[i], sum[i]);
      if (rescale != A(1)) {
        for (int64_t c = 0; c < g.d; ++c) out_rows[i * g.d + c] *= rescale;
      }
    }
    running.addmm_(s, v.t());
  }
  A* out_rows = running.data_ptr<A>();
  for (int64_t i = 0; i < nq; ++i) {
    const A inv = A(1) / sum[i];
    for (int64_t c = 0; c < g.d; ++c) out_rows[i * g.d + c] *= inv;
    logsumexp[i] = max[i] + std::log(sum[i]);
  }
  block(oo, g.d, b, h, q0, nq).copy_(running.t());
}

std::tuple<at::Tensor, at::Tensor> attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                          const at::Tensor& temperature, const at::Tensor& q_norm,
                                          const at::Tensor& k_norm, const Geometry& g) {
  const at::ScalarType acc = q_norm.scalar_type();
  const at::Tensor t = temperature.to(acc).reshape({g.heads}).contiguous();
  at::Tensor out = empty_like_layout(q);
  at::Tensor logsumexp = at::empty({g.B, g.heads, g.Nq}, q.options().dtype(acc));
  const Operand oq = operand(q), ok = operand(k), ov = operand(v), oo = operand(out);
  AT_DISPATCH_FLOATING_TYPES(acc, "proxy_attention", [&] {
    using A = scalar_t;
    for_each_block(g, g.Nq, kQueryBlock, [&](int64_t b, int64_t h, int64_t, int64_t q0, int64_t nq) {
      const int64_t bh = b * g.heads + h;
      forward_task<A>(oq, ok, ov, oo, g, t.const_data_ptr<A>()[h], q_norm.const_data_ptr<A>() + bh * g.Nq + q0,
                      k_norm.const_data_ptr<A>() + bh * g.Nk, logsumexp.data_ptr<A>() + bh * g.Nq + q0, b, h, q0,
                      nq, acc);
    });
  });
  return {out, logsumexp};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> proxy_attention(const at::Tensor& q, const at::Tensor& k,
                                                                           const at::Tensor& v,
                                                                           const at::Tensor& temperature,
                                                                           int64_t heads) {
  const Geometry g = proxy_attention_math::check_arguments(q, k, v, temperature, heads, "pyairir::proxy_attention");
  const at::ScalarType acc = proxy_attention_math::acc_dtype(q.scalar_type());
  return proxy_attention_math::forward_rescaled(
      q, k, g, acc, [&](const at::Tensor& x, int64_t n) { return all_norms(x, g, n, acc); },
      [&](const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& qn, const at::Tensor& kn) {
        return attend(q_, k_, v, temperature, qn, kn, g);
      });
}

// dx = (dx_hat - x_hat (x_hat . dx_hat)) / |x| for the rows of dx_hat (count, d), x the (d, count)
// block and norms its clamped norms; a norm at the clamp (|x| <= eps) passes dx_hat / eps.
template <typename A>
void normalize_backward(at::Tensor& grad, const at::Tensor& x, const A* norms) {
  const int64_t count = grad.size(0), d = grad.size(1);
  const at::Tensor xt = x.t().contiguous();  // (count, d)
  const A* xs = xt.const_data_ptr<A>();
  A* gs = grad.data_ptr<A>();
  for (int64_t i = 0; i < count; ++i) {
    const A inv = A(1) / norms[i];
    A dot = A(0);
    if (norms[i] > A(kNormEps)) {
      for (int64_t c = 0; c < d; ++c) dot += xs[i * d + c] * inv * gs[i * d + c];
    }
    for (int64_t c = 0; c < d; ++c) gs[i * d + c] = (gs[i * d + c] - xs[i * d + c] * inv * dot) * inv;
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_tokens(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& temperature, const at::Tensor& out, const at::Tensor& logsumexp, const at::Tensor& q_norm,
    const at::Tensor& k_norm, int64_t heads, const Geometry& g) {
  const at::ScalarType acc = proxy_attention_math::acc_dtype(q.scalar_type());
  const auto options = q.options().dtype(acc);
  const at::Tensor t = temperature.to(acc).reshape({heads}).contiguous();
  at::Tensor grad_q = empty_like_layout(q), grad_k = empty_like_layout(k), grad_v = empty_like_layout(v);
  at::Tensor delta = at::empty({g.B, heads, g.Nq}, options);  // D_i = dO_i . out_i
  at::Tensor partial_t = at::empty({g.B, heads, blocks(g.Nq, kQueryBlock)}, options);
  const Operand oq = operand(q), ok = operand(k), ov = operand(v), og = operand(grad_out), oo = operand(out);
  const Operand odq = operand(grad_q), odk = operand(grad_k), odv = operand(grad_v);
  AT_DISPATCH_FLOATING_TYPES(acc, "proxy_attention_backward", [&] {
    using A = scalar_t;
    const A* lse_all = logsumexp.const_data_ptr<A>();
    const A* qn_all = q_norm.const_data_ptr<A>();
    const A* kn_all = k_norm.const_data_ptr<A>();
    // Pass 1, per query block: D, dq and the blocks' temperature gradient.
    for_each_block(g, g.Nq, kQueryBlock, [&](int64_t b, int64_t h, int64_t qi, int64_t q0, int64_t nq) {
      const int64_t bh = b * heads + h;
      const A th = t.const_data_ptr<A>()[h];
      const A* lse = lse_all + bh * g.Nq + q0;
      const A* qn = qn_all + bh * g.Nq + q0;
      const A* kn = kn_all + bh * g.Nk;
      const at::Tensor qb = to_acc(block(oq, g.d, b, h, q0, nq), acc);
      const at::Tensor dout = to_acc(block(og, g.d, b, h, q0, nq), acc);
      const at::Tensor dout_t = dout.t().contiguous();
      const at::Tensor out_t = to_acc(block(oo, g.d, b, h, q0, nq), acc).t().contiguous();
      A* D = delta.data_ptr<A>() + bh * g.Nq + q0;
      const A* dos = dout_t.const_data_ptr<A>();
      const A* os = out_t.const_data_ptr<A>();
      for (int64_t i = 0; i < nq; ++i) {
        A dot = A(0);
        for (int64_t c = 0; c < g.d; ++c) dot += dos[i * g.d + c] * os[i * g.d + c];
        D[i] = dot;
      }
      at::Tensor gathered = at::zeros({nq, g.d}, options);  // sum_j dS_ij k_hat_j
      at::Tensor scores = at::empty({nq, kKeyBlock}, options), grads = at::empty({nq, kKeyBlock}, options);
      A grad_t = A(0);
      std::vector<A> inverse(kKeyBlock);
      for (int64_t k0 = 0; k0 < g.Nk; k0 += kKeyBlock) {
        const int64_t nk = std::min(kKeyBlock, g.Nk - k0);
        const at::Tensor kb = to_acc(block(ok, g.d, b, h, k0, nk), acc);
        const at::Tensor vb = to_acc(block(ov, g.d, b, h, k0, nk), acc);
        at::Tensor s = scores.narrow(1, 0, nk), dp = grads.narrow(1, 0, nk);
        at::mm_out(s, qb.t(), kb);
        at::mm_out(dp, dout.t(), vb);
        for (int64_t j = 0; j < nk; ++j) inverse[j] = A(1) / kn[k0 + j];
        for (int64_t i = 0; i < nq; ++i) {
          A* srow = scores.data_ptr<A>() + i * kKeyBlock;
          A* drow = grads.data_ptr<A>() + i * kKeyBlock;
          const Vec<A> inv_q(A(1) / qn[i]), shift(lse[i]), Di(D[i]), tv(th);
          Vec<A> sum_t(A(0));
          vec_for<A>(nk, [&](int64_t j, int64_t n) {
            const Vec<A> inv_k = load(inverse.data() + j, n);
            const Vec<A> cosine = load(srow + j, n) * inv_q * inv_k;
            const Vec<A> ds = (tv * cosine - shift).exp() * (load(drow + j, n) - Di);
            const Vec<A> contribution = ds * cosine;  // zero in the lanes past n (cosine is 0 there)
            sum_t = sum_t + contribution;
            (ds * inv_k).store(drow + j, n);
          });
          grad_t += at::vec::vec_reduce_all<A>([](Vec<A> a, Vec<A> b) { return a + b; }, sum_t);
        }
        gathered.addmm_(dp, kb.t());
      }
      gathered.mul_(th);
      normalize_backward<A>(gathered, qb, qn);
      block(odq, g.d, b, h, q0, nq).copy_(gathered.t());
      partial_t.data_ptr<A>()[bh * partial_t.size(2) + qi] = grad_t;
    });
    // Pass 2, per key block: dk and dv.
    for_each_block(g, g.Nk, kKeyBlock, [&](int64_t b, int64_t h, int64_t, int64_t k0, int64_t nk) {
      const int64_t bh = b * heads + h;
      const A th = t.const_data_ptr<A>()[h];
      const A* kn = kn_all + bh * g.Nk + k0;
      const at::Tensor kb = to_acc(block(ok, g.d, b, h, k0, nk), acc);
      const at::Tensor vb = to_acc(block(ov, g.d, b, h, k0, nk), acc);
      at::Tensor grad_keys = at::zeros({nk, g.d}, options), grad_values = at::zeros({nk, g.d}, options);
      at::Tensor scores = at::empty({nk, kQueryBlock}, options), grads = at::empty({nk, kQueryBlock}, options);
      std::vector<A> inverse(kQueryBlock);
      for (int64_t q0 = 0; q0 < g.Nq; q0 += kQueryBlock) {
        const int64_t nq = std::min(kQueryBlock, g.Nq - q0);
        const A* lse = lse_all + bh * g.Nq + q0;
        const A* qn = qn_all + bh * g.Nq + q0;
        const A* D = delta.const_data_ptr<A>() + bh * g.Nq + q0;
        const at::Tensor qb = to_acc(block(oq, g.d, b, h, q0, nq), acc);
        const at::Tensor dout = to_acc(block(og, g.d, b, h, q0, nq), acc);
        at::Tensor st = scores.narrow(1, 0, nq), dpt = grads.narrow(1, 0, nq);
        at::mm_out(st, kb.t(), qb);
        at::mm_out(dpt, vb.t(), dout);
        for (int64_t i = 0; i < nq; ++i) inverse[i] = A(1) / qn[i];
        for (int64_t j = 0; j < nk; ++j) {
          A* srow = scores.data_ptr<A>() + j * kQueryBlock;
          A* drow = grads.data_ptr<A>() + j * kQueryBlock;
          const Vec<A> inv_k(A(1) / kn[j]), tv(th);
          vec_for<A>(nq, [&](int64_t i, int64_t n) {
            const Vec<A> inv_q = load(inverse.data() + i, n);
            const Vec<A> p = (tv * (load(srow + i, n) * inv_q * inv_k) - load(lse + i, n)).exp();
            p.store(srow + i, n);
            (p * (load(drow + i, n) - load(D + i, n)) * tv * inv_q).store(drow + i, n);
          });
        }
        grad_values.addmm_(st, dout.t());
        grad_keys.addmm_(dpt, qb.t());
      }
      normalize_backward<A>(grad_keys, kb, kn);
      block(odk, g.d, b, h, k0, nk).copy_(grad_keys.t());
      block(odv, g.d, b, h, k0, nk).copy_(grad_values.t());
    });
  });
  // The temperature's gradient: the blocks' partials summed over blocks, then images, in order.
  at::Tensor grad_t = partial_t.select(0, 0).sum(1, false);
  for (int64_t b = 1; b < g.B; ++b) grad_t.add_(partial_t.select(0, b).sum(1, false));
  return {grad_q, grad_k, grad_v, grad_t.to(temperature.scalar_type()).reshape(temperature.sizes())};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> proxy_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& temperature, const at::Tensor& out, const at::Tensor& logsumexp, const at::Tensor& q_norm,
    const at::Tensor& k_norm, int64_t heads) {
  constexpr const char* op = "pyairir::proxy_attention_backward";
  const Geometry g = proxy_attention_math::check_arguments(q, k, v, temperature, heads, op);
  proxy_attention_math::check_saved(grad_out, out, logsumexp, q_norm, k_norm, q, g, op);
  return proxy_attention_math::backward_rescaled(
      q, k, q_norm, k_norm, g,
      [&](const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& qn, const at::Tensor& kn) {
        return backward_tokens(grad_out, q_, k_, v, temperature, out, logsumexp, qn, kn, heads, g);
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(pyairir, CPU, m) {
  m.impl("proxy_attention", &proxy_attention);
  m.impl("proxy_attention_backward", &proxy_attention_backward);
}

}  // namespace pyairir
