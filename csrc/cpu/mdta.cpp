// mdta on CPU: Restormer's transposed attention core. Per image b and head h,
// with Q, K, V the head's d = C / heads channels over the N = H * W pixels:
//   C_hat = (Q K^T) / (|q| |k|^T)          cosine of every pair of channels (d x d)
//   A = softmax_rows(C_hat * t_h),   out = A V
// The L2 norms are folded into the Gram matrix: Q and K are read once, in
// chunks of kChunk pixels, for both their Gram matrix and their squared norms;
// no normalised copy is made. Chunk partials are summed in chunk order, and the
// chunking depends only on N, so results do not depend on the thread count. Rows too large for
// Q K^T or the squared norms (beyond ~1e19 in fp32) are rescaled (mdta_math::downscale).
// The matrix products run as single-threaded GEMMs (at::mm on views of the
// chunks), one task per (image, head, chunk), in parallel over the tasks.
//
// q, k, v may be channel chunks of one NCHW or channels_last tensor (as MDTA's
// qkv.chunk(3) gives): a pixel axis H * W and either unit channel stride
// (pixel-major) or unit pixel stride (channel-major).
//
// With a depthwise filter (MDTA's qkv_dwconv) and pixel-major float or double
// operands, each task convolves its chunk of q and k (pass 1) or v (pass 2) for
// its head into a (chunk x d) scratch that the GEMMs read: the convolved q, k, v
// never exist whole, which spares a write and a read of all three. Otherwise the
// operands are convolved whole first: channel-major ones; bf16 and fp16 (whose
// conversions at every tap made the fused filter 1.4-2x slower than oneDNN's
// depthwise convolution and the op apart, at 288x256x256 and 576x64x64); rows
// too large for the Gram matrix.
#include "vec.h"  // first: selects at::vec's instruction set

#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "../checks.h"
#include "../mdta_math.h"
#include "depthwise3x3.h"
#include "head_blocks.h"
#include "vec_loops.h"

namespace pyairir {
namespace {

using mdta_math::Geometry;

constexpr int64_t kChunk = 2048;  // pixels per task

int64_t chunks(const Geometry& g, int64_t chunk = kChunk) { return (g.N + chunk - 1) / chunk; }

// Pixels per task of a pass that sums nothing over pixels (out = A V): as few as lets small levels
// (32 x 32 pixels, every head in one C x C product) still make tasks for every thread, and a
// function of N alone, like kChunk, as a GEMM's rounding may depend on its width.
int64_t output_chunk(const Geometry& g) { return std::clamp<int64_t>((g.N / 8 + 63) / 64 * 64, 256, kChunk); }

// C = A B into a slice of an accumulation-type tensor; with bf16/fp16 operands the GEMM
// accumulates in fp32 and rounds its d x d result once to the operands' type.
void mm_into(at::Tensor slot, const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() == slot.scalar_type()) {
    at::mm_out(slot, a, b);
  } else {
    slot.copy_(at::mm(a, b));
  }
}

// out[i] = sum over the block's pixels of m[i, p]^2 (accumulation type), for m (d, count) with
// unit stride in one dimension.
template <typename scalar_t, typename A = acc_type<scalar_t>>
void sum_squares(const at::Tensor& m, A* out) {
  const int64_t d = m.size(0), n = m.size(1), sc = m.stride(0), sp = m.stride(1);
  const scalar_t* base = m.const_data_ptr<scalar_t>();
  constexpr int64_t V = Vec<A>::size();
  if (sp == 1) {
    for (int64_t i = 0; i < d; ++i) {
      const scalar_t* row = base + i * sc;
      Vec<A> total(A(0));
      vec_for<A>(n, [&](int64_t j, int64_t k) { const Vec<A> v = load_acc(row + j, k); total = at::vec::fmadd(v, v, total); });
      A sum[V];
      total.store(sum);
      out[i] = std::accumulate(sum, sum + V, A(0));
    }
    return;
  }
  std::fill(out, out + d, A(0));
  for (int64_t p = 0; p < n; ++p) {
    const scalar_t* column = base + p * sp;
    vec_for<A>(d, [&](int64_t i, int64_t k) {
      const Vec<A> v = load_acc(column + i, k);
      at::vec::fmadd(v, v, load(out + i, k)).store(out + i, k);
    });
  }
}

// Runs f(b, h, chunk, p0, count) for every task, in parallel; f may call single-threaded ATen ops.
template <typename F>
void for_each_task(const Geometry& g, F&& f, int64_t pixels = kChunk) {
  const int64_t n = chunks(g, pixels);
  parallel_aten_tasks(g.B * g.heads * n, [&](int64_t t) {
    const int64_t chunk = t % n, h = (t / n) % g.heads, b = t / (n * g.heads);
    const int64_t p0 = chunk * pixels;
    f(b, h, chunk, p0, std::min(pixels, g.N - p0));
  });
}

// Sums a [B * heads][chunks][rest...] partial tensor over chunks, in order.
at::Tensor sum_chunks(const at::Tensor& partial) {
  at::Tensor total = partial.select(1, 0).clone();
  for (int64_t c = 1; c < partial.size(1); ++c) total.add_(partial.select(1, c));
  return total;
}

// Pass 1: per chunk, the Gram matrix Q K^T and the squared norms of q and k, summed over chunks.
std::pair<at::Tensor, at::Tensor> gram_and_squares(const at::Tensor& q, const at::Tensor& k, const Geometry& g) {
  const auto acc_options = q.options().dtype(mdta_math::acc_dtype(q.scalar_type()));
  const Operand oq = operand(q), ok = operand(k);
  at::Tensor gram = at::empty({g.B * g.heads, chunks(g), g.d, g.d}, acc_options);
  at::Tensor squares = at::empty({g.B * g.heads, chunks(g), 2, g.d}, acc_options);
  for_each_task(g, [&](int64_t b, int64_t h, int64_t chunk, int64_t p0, int64_t count) {
    const at::Tensor qb = block(oq, g.d, b, h, p0, count), kb = block(ok, g.d, b, h, p0, count);
    mm_into(gram[b * g.heads + h][chunk], qb, kb.t());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "mdta_norms", [&] {
      acc_type<scalar_t>* out = squares[b * g.heads + h][chunk].data_ptr<acc_type<scalar_t>>();
      sum_squares<scalar_t>(qb, out);
      sum_squares<scalar_t>(kb, out + g.d);
    });
  });
  return {sum_chunks(gram), sum_chunks(squares)};
}

using Outputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;  // out, cosine, q_norm, k_norm

// Pass 2: out = A V, chunk by chunk, into the output's head block (A in the operands' type); or, with a
// projection (MDTA's project_out), out = P blockdiag(A_1 .. A_heads) V + bias, every head at once: one C x C
// product per pixel instead of the heads' d x d ones and then the projection's. vb(b, h, d, p0, count) gives
// the task's (d, count) block h of V.
template <typename BlockOfV>
Outputs apply_attention(const at::Tensor& q, const mdta_math::Forward& f, const Geometry& g,
                        const mdta_math::Projection& projection, BlockOfV&& vb) {
  at::Tensor out = empty_like_layout(q);
  const Operand oo = operand(out);
  if (!projection.weight.defined()) {
    const at::Tensor weights = f.attention.to(q.scalar_type());
    for_each_task(g, [&](int64_t b, int64_t h, int64_t, int64_t p0, int64_t count) {
      gemm_into(block(oo, g.d, b, h, p0, count), weights[b * g.heads + h], vb(b, h, g.d, p0, count));
    }, output_chunk(g));
    return {out, f.cosine, f.q_norm, f.k_norm};
  }
  const at::Tensor maps = mdta_math::projected_attention(projection.weight, f.attention, g).to(q.scalar_type());
  const at::Tensor bias = projection.bias.defined() ? projection.bias.reshape({g.C, 1}) : at::Tensor();
  Geometry whole = g;  // every head as one block of C channels
  whole.heads = 1;
  whole.d = g.C;
  for_each_task(whole, [&](int64_t b, int64_t, int64_t, int64_t p0, int64_t count) {
    const at::Tensor destination = block(oo, g.C, b, 0, p0, count);
    gemm_into(destination, maps[b], vb(b, 0, g.C, p0, count),
              bias.defined() ? c10::optional<at::Tensor>(bias.expand({g.C, count})) : c10::nullopt);
  }, output_chunk(g));
  return {out, f.cosine, f.q_norm, f.k_norm};
}

Outputs unfused(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& temperature,
                const Geometry& g, const mdta_math::Projection& projection) {
  const mdta_math::Forward f = mdta_math::forward_rescaled(
      q, k, temperature, g, [&](const at::Tensor& a, const at::Tensor& b) { return gram_and_squares(a, b, g); });
  const Operand ov = operand(v);
  return apply_attention(q, f, g, projection, [&](int64_t b, int64_t h, int64_t d, int64_t p0, int64_t count) {
    return block(ov, d, b, h, p0, count);
  });
}

// ---------------------------------------------------------------- fused depthwise filter
// q, k and v convolved whole first, then attended.
Outputs convolved_first(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& temperature,
                        const at::Tensor& dw_weight, const c10::optional<at::Tensor>& dw_bias, const Geometry& g,
                        const mdta_math::Projection& projection) {
  return unfused(mdta_math::convolved(q, 0, dw_weight, dw_bias), mdta_math::convolved(k, 1, dw_weight, dw_bias),
                 mdta_math::convolved(v, 2, dw_weight, dw_bias), temperature, g, projection);
}

bool pixel_major(const at::Tensor& t) { return t.stride(1) == 1 && t.stride(3) >= t.size(1); }

// Pixels p .. p + n of one image row, all at least one pixel from the image's edge, of the
// channels x .. x + d (filter channels fc ..) convolved into out (n, d) row-major. Per channel
// vector, the taps stay in registers while the run is swept, and so does the 3 x 3 window of
// input vectors: each step loads only the column entering it (3 loads for 9 products).
template <typename scalar_t, typename A>
void convolve_interior(const scalar_t* x, int64_t pixel_stride, const DepthwiseFilter<A>& f, int64_t fc,
                       int64_t H, int64_t W, int64_t d, int64_t p, int64_t n, scalar_t* out) {
  const int64_t row = W * pixel_stride;
  // the row two below is fetched into L2 a row ahead of its use (the hardware prefetcher does
  // not follow a stride of 3C values)
  const int64_t ahead = 2 * row, last = H * W - 2 * W;
  vec_for<A>(d, [&](int64_t c, int64_t k) {
    Vec<A> w[kTaps];
    for (int t = 0; t < kTaps; ++t) w[t] = load(f.taps.data() + t * f.channels + fc + c, k);
    const Vec<A> bias = load(f.bias.data() + fc + c, k);
    const scalar_t* src = x + p * pixel_stride + c;  // the run's first pixel
    auto column = [&](const scalar_t* centre, Vec<A>* v) {  // rows above, at, below centre
      v[0] = load_acc(centre - row, k);
      v[1] = load_acc(centre, k);
      v[2] = load_acc(centre + row, k);
    };
    Vec<A> left[3], middle[3], right[3];
    column(src - pixel_stride, left);
    column(src, middle);
    for (int64_t j = 0; j < n; ++j, src += pixel_stride) {
      if (p + j < last) __builtin_prefetch(src + ahead, 0, 2);
      column(src + pixel_stride, right);
      Vec<A> z = bias;
      for (int r = 0; r < 3; ++r) {
        z = at::vec::fmadd(left[r], w[3 * r], z);
        z = at::vec::fmadd(middle[r], w[3 * r + 1], z);
        z = at::vec::fmadd(right[r], w[3 * r + 2], z);
      }
      store_acc(z, out + j * d + c, k);
      for (int r = 0; r < 3; ++r) {
        left[r] = middle[r];
        middle[r] = right[r];
      }
    }
  });
}

// Pixel p of x convolved at its in-image taps (an edge pixel), channels as in convolve_interior.
template <typename scalar_t, typename A>
void convolve_edge(const scalar_t* x, int64_t pixel_stride, const DepthwiseFilter<A>& f, int64_t fc, int64_t H,
                   int64_t W, int64_t d, int64_t p, scalar_t* out) {
  const Neighbours nb(H, W, 0, p / W, p % W);
  vec_for<A>(d, [&](int64_t c, int64_t k) { store_acc(depthwise_at(x + c, pixel_stride, f, fc + c, nb, k), out + c, k); });
}

// Head h's d channels of image b of pixel-major x convolved with filter channels fc + h * d ..,
// at the `count` pixels from p0, into out (count, d) row-major, row by row.
template <typename scalar_t, typename A>
void convolve_block(const Operand& o, const DepthwiseFilter<A>& f, int64_t fc, int64_t H, int64_t W, int64_t d,
                    int64_t b, int64_t h, int64_t p0, int64_t count, scalar_t* out) {
  const scalar_t* x = static_cast<const scalar_t*>(o.data) + b * o.batch_stride + h * d;
  const int64_t s = o.pixel_stride;
  fc += h * d;
  for (int64_t i = 0; i < count;) {
    const int64_t p = p0 + i, y = p / W, column = p % W, run = std::min(count - i, W - column);
    // the run's interior columns [lo, hi): none in the first and last rows
    const bool inner_row = y > 0 && y < H - 1;
    const int64_t lo = inner_row ? std::max<int64_t>(column, 1) : column + run;
    const int64_t hi = inner_row ? std::max(lo, std::min(column + run, W - 1)) : column + run;
    for (int64_t col = column; col < lo; ++col)
      convolve_edge(x, s, f, fc, H, W, d, p - column + col, out + (i + col - column) * d);
    if (hi > lo) convolve_interior(x, s, f, fc, H, W, d, p - column + lo, hi - lo, out + (i + lo - column) * d);
    for (int64_t col = hi; col < column + run; ++col)
      convolve_edge(x, s, f, fc, H, W, d, p - column + col, out + (i + col - column) * d);
    i += run;
  }
}

template <typename scalar_t>
Outputs fused(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& temperature,
              const at::Tensor& dw_weight, const c10::optional<at::Tensor>& dw_bias, const Geometry& g,
              const mdta_math::Projection& projection) {
  using A = acc_type<scalar_t>;
  const DepthwiseFilter<A> f(dw_weight.const_data_ptr<scalar_t>(),
                             dw_bias.has_value() ? dw_bias->const_data_ptr<scalar_t>() : nullptr, 3 * g.C);
  const int64_t H = q.size(2), W = q.size(3);
  const Operand oq = operand(q), ok = operand(k), ov = operand(v);
  // Pass 1: per chunk, q and k convolved into a scratch (2, count, d), their Gram matrix and squared norms.
  const auto acc_options = q.options().dtype(mdta_math::acc_dtype(q.scalar_type()));
  at::Tensor gram = at::empty({g.B * g.heads, chunks(g), g.d, g.d}, acc_options);
  at::Tensor squares = at::empty({g.B * g.heads, chunks(g), 2, g.d}, acc_options);
  for_each_task(g, [&](int64_t b, int64_t h, int64_t chunk, int64_t p0, int64_t count) {
    const at::Tensor scratch = at::empty({2, count, g.d}, q.options());
    scalar_t* zq = scratch.mutable_data_ptr<scalar_t>();
    convolve_block(oq, f, 0, H, W, g.d, b, h, p0, count, zq);
    convolve_block(ok, f, g.C, H, W, g.d, b, h, p0, count, zq + count * g.d);
    const at::Tensor qb = scratch[0].t(), kb = scratch[1].t();
    mm_into(gram[b * g.heads + h][chunk], qb, kb.t());
    A* out = squares[b * g.heads + h][chunk].data_ptr<A>();
    sum_squares<scalar_t>(qb, out);
    sum_squares<scalar_t>(kb, out + g.d);
  });
  const at::Tensor gram_sum = sum_chunks(gram), squares_sum = sum_chunks(squares);
  if (!mdta_math::all_finite(gram_sum, squares_sum))  // rows too large: rescaled, on the whole convolved operands
    return convolved_first(q, k, v, temperature, dw_weight, dw_bias, g, projection);
  const mdta_math::Forward fw = mdta_math::attention_from(gram_sum, squares_sum, temperature, g);
  // Pass 2: per chunk, v convolved into a scratch (count, d), then A V.
  return apply_attention(q, fw, g, projection, [&](int64_t b, int64_t h, int64_t d, int64_t p0, int64_t count) {
    at::Tensor scratch = at::empty({count, d}, q.options());
    convolve_block(ov, f, 2 * g.C, H, W, d, b, h, p0, count, scratch.mutable_data_ptr<scalar_t>());
    return scratch.t();
  });
}

Outputs mdta(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& temperature,
             int64_t heads, const c10::optional<at::Tensor>& dw_weight, const c10::optional<at::Tensor>& dw_bias,
             const c10::optional<at::Tensor>& project_weight, const c10::optional<at::Tensor>& project_bias) {
  constexpr const char* op = "pyairir::mdta";
  const Geometry g = mdta_math::check_arguments(q, k, v, temperature, heads, op);
  check_depthwise_filter(dw_weight, dw_bias, 3 * g.C, q, "q", op, "per channel of q, k and v, in that order");
  const mdta_math::Projection projection = mdta_math::projection_of(project_weight, project_bias, q, op);
  if (!dw_weight.has_value()) return unfused(q, k, v, temperature, g, projection);
  const bool reduced = q.scalar_type() == at::kBFloat16 || q.scalar_type() == at::kHalf;
  if (reduced || !(pixel_major(q) && pixel_major(k) && pixel_major(v)))
    return convolved_first(q, k, v, temperature, *dw_weight, dw_bias, g, projection);
  return AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "mdta_fused", [&] {
    return fused<scalar_t>(q, k, v, temperature, *dw_weight, dw_bias, g, projection);
  });
}

// dV = A^T dO and dA = dO V^T stream over the pixels; the rest is mdta_math::backward_coefficients.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_pixels(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& temperature, const at::Tensor& cosine, const at::Tensor& q_norm, const at::Tensor& k_norm,
    int64_t heads, const Geometry& g) {
  const at::ScalarType dtype = q.scalar_type();
  const at::Tensor attention = mdta_math::attention_of(cosine, temperature, g);
  const Operand og = operand(grad_out), oq = operand(q), ok = operand(k), ov = operand(v);
  at::Tensor grad_q = empty_like_layout(q), grad_k = empty_like_layout(q);
  at::Tensor grad_v = empty_like_layout(q);
  const Operand odq = operand(grad_q), odk = operand(grad_k), odv = operand(grad_v);
  // Pass 1: dA = dO V^T per chunk, and dV = A^T dO.
  at::Tensor grad_attention = at::empty({g.B * heads, chunks(g), g.d, g.d}, cosine.options());
  const at::Tensor weights_t = attention.transpose(1, 2).to(dtype);
  for_each_task(g, [&](int64_t b, int64_t h, int64_t chunk, int64_t p0, int64_t count) {
    const at::Tensor dout = block(og, g.d, b, h, p0, count);
    mm_into(grad_attention[b * heads + h][chunk], dout, block(ov, g.d, b, h, p0, count).t());
    gemm_into(block(odv, g.d, b, h, p0, count), weights_t[b * heads + h], dout);
  });
  const mdta_math::Backward c =
      mdta_math::backward_coefficients(sum_chunks(grad_attention), attention, cosine, q_norm, k_norm, temperature, g);
  // Pass 2: dQ = dG K + diag(d|q| / |q|) Q,  dK = dG^T Q + diag(d|k| / |k|) K.
  const at::Tensor dG_q = c.grad_q_gram.to(dtype), dG_k = c.grad_k_gram.to(dtype);
  const at::Tensor q_scale = c.grad_q_scale.unsqueeze(-1).to(dtype), k_scale = c.grad_k_scale.unsqueeze(-1).to(dtype);
  for_each_task(g, [&](int64_t b, int64_t h, int64_t chunk, int64_t p0, int64_t count) {
    const int64_t bh = b * heads + h;
    const at::Tensor qb = block(oq, g.d, b, h, p0, count), kb = block(ok, g.d, b, h, p0, count);
    gemm_into(block(odq, g.d, b, h, p0, count), dG_q[bh], kb, qb * q_scale[bh]);
    gemm_into(block(odk, g.d, b, h, p0, count), dG_k[bh], qb, kb * k_scale[bh]);
  });
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
  return mdta_math::backward_rescaled(
      q, k, q_norm, k_norm, g,
      [&](const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& qn, const at::Tensor& kn) {
        return backward_pixels(grad_out, q_, k_, v, temperature, cosine, qn, kn, heads, g);
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(pyairir, CPU, m) {
  m.impl("mdta", &mdta);
  m.impl("mdta_backward", &mdta_backward);
}

}  // namespace pyairir
