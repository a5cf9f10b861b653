// pyairir_cpu::pointwise_conv: a 1x1 convolution of a channels_last float32 image as one GEMM over its
// pixels, with the layers around it in NAFNet's block fused into the GEMM's prologue and epilogue:
//
//   out[p, :] = G(W diag(s) n(x[p, :]) + b) + residual[p, :]
//
// or, with upscale r > 1, the product pixel-shuffled into an image r times as high and wide (an
// upsampling layer's convolution and PixelShuffle; its residual the skip connection added after it):
//
//   out[b, c, r h + i, r w + j] = (W x[b, :, h, w] + b)[c r^2 + i r + j] + residual[b, c, r h + i, r w + j]
//
// n the pixel's channels normalised to zero mean and unit variance (normalize; a LayerNorm's affine
// is folded into W and b by the caller), s the image's per-input-channel scale (in_scale: NAFNet's
// channel attention), G(z) = z[:N/2] * z[N/2:] (gate: SimpleGate) or the identity. This spares the
// passes over the activations that oneDNN's convolution leaves to separate ops: the LayerNorm
// before it, the SimpleGate and the residual add after it.
//
// Not an op of the pyairir contract (no autograd, CUDA, Triton or fake face: schemas under
// torch.ops.pyairir_cpu): a CPU inference backend, like oneDNN's prepacked convolution, that
// pyairir/nn/pointwise.py calls only in fast inference (autograd off, not traced). Ground truth is
// the module sequence it replaces (tests/nn/test_pointwise.py).
//
// W is packed once (pack_pointwise) into panels of two vectors of output columns, (panels, K, 2V):
// a micro-kernel keeps MR rows x 2V columns of the product in registers, broadcasting one input
// value against two weight vectors per step of K. With gate, a panel's two vectors are the same V
// channels of the two halves, so the micro-kernel multiplies its own two accumulators. With upscale,
// the columns are grouped by the output pixel they go to (i, j), each group padded to whole panels.
#include "depthwise3x3.h"
#include "vec.h"
#include "vec_loops.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
#include <immintrin.h>
#endif

namespace pyairir {
namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t V = Vec::size();
constexpr int64_t NB = 2 * V;              // columns of a panel
constexpr int MR = V >= 16 ? 12 : 6;       // rows of a micro-kernel: 2 * MR accumulators + 3 fit the registers
constexpr int64_t X_BLOCK_BYTES = 128 * 1024;  // a task's rows of x (or of their normalised copy), kept in L2
constexpr int64_t SMALL_WEIGHT_BYTES = 128 * 1024;  // a packed weight that stays in L2 beside them
constexpr int64_t U_BUFFER_BYTES = 1024 * 1024;  // nafblock_head's rows of conv1's outputs, in L2
constexpr int64_t U_IMAGE_BYTES = 4 * 1024 * 1024;  // conv1's outputs for a whole image, in the L2s

// The micro-kernel's registers: raw intrinsics, so that the compiler keeps the accumulators in
// registers across the loop over K (with at::vec's class it spilled them at every step).
#if defined(CPU_CAPABILITY_AVX512)
using Reg = __m512;
inline Reg reg_zero() { return _mm512_setzero_ps(); }
inline Reg reg_load(const float* p) { return _mm512_loadu_ps(p); }
inline Reg reg_broadcast(const float* p) { return _mm512_set1_ps(*p); }
inline Reg reg_fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
#elif defined(CPU_CAPABILITY_AVX2)
using Reg = __m256;
inline Reg reg_zero() { return _mm256_setzero_ps(); }
inline Reg reg_load(const float* p) { return _mm256_loadu_ps(p); }
inline Reg reg_broadcast(const float* p) { return _mm256_broadcast_ss(p); }
inline Reg reg_fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
#else
using Reg = Vec;
inline Reg reg_zero() { return Vec(0.f); }
inline Reg reg_load(const float* p) { return Vec::loadu(p); }
inline Reg reg_broadcast(const float* p) { return Vec(*p); }
inline Reg reg_fma(Reg a, Reg b, Reg c) { return at::vec::fmadd(a, b, c); }
#endif

// Panels of one group of columns (of all of them but with upscale).
int64_t group_panels(int64_t out_channels, bool gate) {
  return gate ? (out_channels + V - 1) / V : (out_channels + NB - 1) / NB;
}

int64_t panel_count(int64_t out_channels, bool gate, int64_t upscale) {
  return group_panels(out_channels, gate) * upscale * upscale;
}

// Where output column `lane` of vector v of panel j comes from in the unpacked weight (N rows), or -1
// for padding.
int64_t source_column(int64_t j, int64_t v, int64_t lane, int64_t N, bool gate, int64_t upscale) {
  if (gate) {
    const int64_t half = N / 2, channel = j * V + lane;
    return channel < half ? v * half + channel : -1;
  }
  const int64_t groups = upscale * upscale, out_channels = N / groups, panels = group_panels(out_channels, false);
  const int64_t channel = j % panels * NB + v * V + lane;
  return channel < out_channels ? channel * groups + j / panels : -1;
}

// What the GEMM over one image's rows needs.
struct Gemm {
  const float* x;       // (rows, K)
  const float* weight;  // (panels, K, NB)
  const float* bias;    // (panels, NB)
  const float* residual;  // (rows, N) or null
  float* out;           // (rows, N), or (rows * upscale^2, N) pixel-shuffled
  int64_t rows, K, N, panels;  // N: the output's channels
  bool gate, normalize;
  float eps;
  int64_t upscale, height, width;  // with upscale > 1 or padded: x's height and width
  bool padded = false;  // out's image rows are width + 2 pixels apart (nafblock_head's zero border)
};

// Where the outputs of panel j for rows row, row + 1, ... go, relative to out (and residual): next()
// gives them in turn, walking the pixels without a division per row (with upscale, a row's outputs go
// to pixel (r h + i, r w + j) of the shuffled image, (i, j) the panel's group).
struct Destinations {
  int64_t column;  // the panel's first output channel
  int64_t step, wrap, at, w, width;  // at: the next row's; step: to the next pixel; wrap: past a row's end

  Destinations(const Gemm& g, int64_t row, int64_t j) : width(g.width) {
    int64_t h = 0, group_row = 0, group_column = 0;
    int64_t out_width = g.padded ? g.width + 2 : g.width;  // padded: a zero pixel either side
    int64_t pixel = row;  // without upscale, images' rows follow one another like one image's
    if (g.upscale > 1) {
      const int64_t panels_per_group = group_panels(g.N, false), group = j / panels_per_group;
      column = j % panels_per_group * NB;
      group_row = group / g.upscale;
      group_column = group % g.upscale;
      out_width = g.width * g.upscale;
      const int64_t image = row / (g.height * g.width);
      pixel = row % (g.height * g.width);
      h = image * g.height;  // the image's rows come after the images before it
    } else {
      column = j * (g.gate ? V : NB);
    }
    h += pixel / width;
    w = pixel % width;
    step = g.upscale * g.N;
    wrap = g.upscale * out_width * g.N - width * step;  // from past the end of a row to the next row's start
    at = ((h * g.upscale + group_row) * out_width + w * g.upscale + group_column) * g.N + column;
  }

  int64_t next() {
    const int64_t current = at;
    at += step;
    if (++w == width) {
      w = 0;
      at += wrap;
    }
    return current;
  }
};

// The micro-kernel's epilogues: kAny handles every case (partial panels, PixelShuffle, any flags);
// the others are the whole-panel cases of a plain GEMM's rows, with fixed flags and no per-row
// branches (at K = 32 the general epilogue took 30 % of the micro-kernel's time).
enum Epilogue { kAny, kBias, kGate, kResidual };

// MR (or fewer, M) rows of x times panel j, stored with the epilogue: bias, gate, residual. Meanwhile
// K cache lines from `prefetch` on are fetched into L2 (half of the next panel: on a model's cold
// weights, the first rows against each panel otherwise waited for memory).
template <int M, Epilogue E>
inline void micro_kernel(const Gemm& g, const float* x, int64_t row, int64_t j, const float* prefetch) {
  const float* w = g.weight + j * g.K * NB;
  Reg acc0[M], acc1[M];
#pragma GCC unroll 16
  for (int m = 0; m < M; ++m) acc0[m] = acc1[m] = reg_zero();
  for (int64_t k = 0; k < g.K; ++k) {
    __builtin_prefetch(prefetch + k * 16, 0, 2);
    const Reg w0 = reg_load(w + k * NB), w1 = reg_load(w + k * NB + V);
#pragma GCC unroll 16
    for (int m = 0; m < M; ++m) {
      const Reg a = reg_broadcast(x + m * g.K + k);
      acc0[m] = reg_fma(a, w0, acc0[m]);
      acc1[m] = reg_fma(a, w1, acc1[m]);
    }
  }
  const Vec b0 = Vec::loadu(g.bias + j * NB), b1 = Vec::loadu(g.bias + j * NB + V);
  if constexpr (E != kAny) {
    const int64_t at = row * g.N + j * (E == kGate ? V : NB);
    float* y = g.out + at;
#pragma GCC unroll 16
    for (int m = 0; m < M; ++m, y += g.N) {
      if constexpr (E == kGate) {
        ((Vec(acc0[m]) + b0) * (Vec(acc1[m]) + b1)).store(y);
      } else if constexpr (E == kResidual) {
        const float* r = g.residual + at + m * g.N;
        (Vec(acc0[m]) + b0 + Vec::loadu(r)).store(y);
        (Vec(acc1[m]) + b1 + Vec::loadu(r + V)).store(y + V);
      } else {
        (Vec(acc0[m]) + b0).store(y);
        (Vec(acc1[m]) + b1).store(y + V);
      }
    }
    return;
  }
  Destinations destinations(g, row, j);
  const int64_t n0 = destinations.column;
  const int64_t count0 = std::min(V, g.N - n0), count1 = g.gate ? 0 : std::clamp<int64_t>(g.N - n0 - V, 0, V);
#pragma GCC unroll 16
  for (int m = 0; m < M; ++m) {
    const int64_t at = destinations.next();
    float* y = g.out + at;
    const float* r = g.residual == nullptr ? nullptr : g.residual + at;
    Vec o0 = Vec(acc0[m]) + b0;
    if (g.gate) o0 = o0 * (Vec(acc1[m]) + b1);
    if (r != nullptr) o0 = o0 + Vec::loadu(r, count0);
    o0.store(y, count0);
    if (count1 > 0) {
      Vec o1 = Vec(acc1[m]) + b1;
      if (r != nullptr) o1 = o1 + Vec::loadu(r + V, count1);
      o1.store(y + V, count1);
    }
  }
}

// micro_kernel<rows, kAny> for a run-time rows <= MR (the last rows of a task).
template <int M = MR>
inline void micro_kernel_rows(int rows, const Gemm& g, const float* x, int64_t row, int64_t j,
                              const float* prefetch) {
  if constexpr (M > 0) {
    if (rows == M) return micro_kernel<M, kAny>(g, x, row, j, prefetch);
    return micro_kernel_rows<M - 1>(rows, g, x, row, j, prefetch);
  }
}

// dst = (src - mean) / sqrt(var + eps) over each of R rows of K values, the rows' reductions
// interleaved (one row's horizontal sums alone wait on their own latency).
template <int R>
inline void normalise_group(const float* src, float* dst, int64_t K, float eps) {
  const auto sum = [](Vec& a, Vec& b) { return a + b; };
  const int64_t whole = K / V * V;
  Vec acc[R];
  float mean[R], inv[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) acc[r] = Vec(0.f);
  for (int64_t k = 0; k < whole; k += V) {
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) acc[r] = acc[r] + Vec::loadu(src + r * K + k);
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    mean[r] = at::vec::vec_reduce_all<float>(sum, acc[r]);
    for (int64_t k = whole; k < K; ++k) mean[r] += src[r * K + k];
    mean[r] /= static_cast<float>(K);
    acc[r] = Vec(0.f);
  }
  for (int64_t k = 0; k < whole; k += V) {
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const Vec centred = Vec::loadu(src + r * K + k) - Vec(mean[r]);
      acc[r] = at::vec::fmadd(centred, centred, acc[r]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    float var = at::vec::vec_reduce_all<float>(sum, acc[r]);
    for (int64_t k = whole; k < K; ++k) var += (src[r * K + k] - mean[r]) * (src[r * K + k] - mean[r]);
    inv[r] = 1.f / std::sqrt(var / static_cast<float>(K) + eps);
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    const Vec vmean(mean[r]), vinv(inv[r]);
    for (int64_t k = 0; k < whole; k += V) ((Vec::loadu(src + r * K + k) - vmean) * vinv).store(dst + r * K + k);
    for (int64_t k = whole; k < K; ++k) dst[r * K + k] = (src[r * K + k] - mean[r]) * inv[r];
  }
}

void normalise_rows(const float* src, float* dst, int64_t rows, int64_t K, float eps) {
  int64_t p = 0;
  for (; p + 4 <= rows; p += 4) normalise_group<4>(src + p * K, dst + p * K, K, eps);
  for (; p < rows; ++p) normalise_group<1>(src + p * K, dst + p * K, K, eps);
}

// Rows [row0, row1) of g's x (x pointing at row0's) times panels [j0, j1), stored with the epilogue.
void product(const Gemm& g, const float* x, int64_t row0, int64_t row1, int64_t j0, int64_t j1) {
  // Panels [0, whole) fill both of their vectors (with gate: the first); the flags fix the epilogue.
  const int64_t whole = g.upscale != 1 || g.padded ? 0 : g.gate ? g.N / V : g.N / NB;
  const Epilogue fixed = g.gate ? (g.residual == nullptr ? kGate : kAny)
                                : (g.residual == nullptr ? kBias : kResidual);
  const auto micro = [&](int64_t row, int64_t j, const float* prefetch) {
    const float* rows = x + (row - row0) * g.K;
    if (row + MR > row1 || j >= whole) {
      return micro_kernel_rows(static_cast<int>(std::min<int64_t>(MR, row1 - row)), g, rows, row, j, prefetch);
    }
    switch (fixed) {
      case kBias: return micro_kernel<MR, kBias>(g, rows, row, j, prefetch);
      case kGate: return micro_kernel<MR, kGate>(g, rows, row, j, prefetch);
      case kResidual: return micro_kernel<MR, kResidual>(g, rows, row, j, prefetch);
      default: return micro_kernel<MR, kAny>(g, rows, row, j, prefetch);
    }
  };
  if (g.panels * g.K * NB * 4 <= SMALL_WEIGHT_BYTES) {  // each output row written whole, the weight in L1/L2
    for (int64_t row = row0; row < row1; row += MR) {
      for (int64_t j = j0; j < j1; ++j) micro(row, j, g.weight + j * g.K * NB);
    }
  } else {  // one panel of the weight at a time, from L2, against all rows of the task
    for (int64_t j = j0; j < j1; ++j) {
      const float* next = g.weight + std::min(j + 1, j1 - 1) * g.K * NB;
      for (int64_t row = row0; row < row1; row += MR) micro(row, j, next + (row - row0) / MR % 2 * g.K * 16);
    }
  }
}

// `rows` rows in tasks of consecutive rows: a whole number of micro-kernels, at most `row_bytes` x
// X_BLOCK_BYTES each, as many tasks per thread (or one per thread, with `one_per_thread`).
struct Tasks {
  int64_t units, blocks;
  Tasks(int64_t rows, int64_t row_bytes, bool one_per_thread) {
    units = (rows + MR - 1) / MR;
    const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
    const int64_t units_per_block = std::max<int64_t>(1, X_BLOCK_BYTES / (row_bytes * MR));
    blocks = one_per_thread ? threads : (units + units_per_block - 1) / units_per_block;
    blocks = std::max<int64_t>(1, std::min(units, (blocks + threads - 1) / threads * threads));
  }
  int64_t first_row(int64_t block, int64_t rows) const { return std::min(rows, units * block / blocks * MR); }
};

// Thread-local buffers kept across calls: a fresh 128 KB buffer per task came from mmap, page faults and all.
// kRows: the tail's y, the head's rows of u; kImage: the head's whole u, on the calling thread. Aligned to
// a cache line, so that whole rows of vectors are too: malloc's 16-byte alignment split every vector
// load and store in two (the head's depthwise filter ran 1.7x slower on such a buffer, /tmp/nb/dw_al.cpp).
enum Scratch { kNormalised, kRows, kGated, kImage, kScratchCount };
float* scratch(Scratch which, int64_t size) {
  constexpr int64_t kLine = 64 / sizeof(float);
  thread_local std::vector<float> buffers[kScratchCount];
  std::vector<float>& buffer = buffers[which];
  if (static_cast<int64_t>(buffer.size()) < size + kLine) buffer.resize(size + kLine);
  const auto address = reinterpret_cast<std::uintptr_t>(buffer.data());
  return buffer.data() + (kLine - address / sizeof(float) % kLine) % kLine;
}

// The GEMM over g.rows rows, in Tasks times all panels; with fewer micro-kernels than threads, in tasks
// of panels.
void run(const Gemm& g) {
  const Tasks tasks(g.rows, 4 * g.K, false);
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t panel_groups = tasks.blocks < threads ? std::min(g.panels, threads) : 1;
  at::parallel_for(0, tasks.blocks * panel_groups, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t block = task / panel_groups, group = task % panel_groups;
      const int64_t row0 = tasks.first_row(block, g.rows), row1 = tasks.first_row(block + 1, g.rows);
      const float* x = g.x + row0 * g.K;
      if (g.normalize) {
        float* normalised = scratch(kNormalised, (row1 - row0) * g.K);
        normalise_rows(x, normalised, row1 - row0, g.K, g.eps);
        x = normalised;
      }
      product(g, x, row0, row1, g.panels * group / panel_groups, g.panels * (group + 1) / panel_groups);
    }
  });
}

void check_float_cpu(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat, op, ": ", name, " must be float32, got ", t.scalar_type());
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be on the CPU, got ", t.device());
}

// Checks that t is a non-empty float32 (B, C, H, W) CPU tensor dense in channels_last.
void check_image_channels_last(const at::Tensor& t, const char* op, const char* name) {
  check_float_cpu(t, op, name);
  TORCH_CHECK(t.dim() == 4 && t.numel() > 0, op, ": ", name, " must be a non-empty 4-D (B, C, H, W) tensor, got "
              "shape ", t.sizes());
  TORCH_CHECK(t.is_contiguous(at::MemoryFormat::ChannelsLast), op, ": ", name, " must be dense in channels_last, "
              "got strides ", t.strides(), " for shape ", t.sizes());
}

std::tuple<at::Tensor, at::Tensor> pack_pointwise(const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                                                  bool gate, int64_t upscale) {
  check_float_cpu(weight, "pack_pointwise", "weight");
  TORCH_CHECK(weight.dim() == 2 && weight.numel() > 0, "pack_pointwise: weight must be a non-empty 2-D "
              "(out_channels, in_channels) tensor, got shape ", weight.sizes());
  const int64_t N = weight.size(0), K = weight.size(1);
  TORCH_CHECK(!gate || N % 2 == 0, "pack_pointwise: with gate, weight must have an even number of output "
              "channels (two halves to multiply), got ", N);
  TORCH_CHECK(upscale >= 1 && !(gate && upscale > 1) && N % (upscale * upscale) == 0, "pack_pointwise: upscale must "
              "be >= 1, without gate, and divide weight's ", N, " output channels by its square, got ", upscale,
              gate ? " with gate" : "");
  if (bias.has_value()) {
    check_float_cpu(*bias, "pack_pointwise", "bias");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == N, "pack_pointwise: bias must have shape [", N, "], got ",
                bias->sizes());
  }
  const int64_t out_channels = gate ? N / 2 : N / (upscale * upscale), panels = panel_count(out_channels, gate, upscale);
  at::Tensor packed = at::zeros({panels, K, NB}, weight.options());
  at::Tensor packed_bias = at::zeros({panels, NB}, weight.options());
  const at::Tensor w = weight.contiguous();
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  const float* src = w.data_ptr<float>();
  float* dst = packed.data_ptr<float>();
  float* dst_bias = packed_bias.data_ptr<float>();
  for (int64_t j = 0; j < panels; ++j) {
    for (int64_t v = 0; v < 2; ++v) {
      for (int64_t lane = 0; lane < V; ++lane) {
        const int64_t column = source_column(j, v, lane, N, gate, upscale);
        if (column < 0) continue;
        for (int64_t k = 0; k < K; ++k) dst[(j * K + k) * NB + v * V + lane] = src[column * K + k];
        if (b.defined()) dst_bias[j * NB + v * V + lane] = b.data_ptr<float>()[column];
      }
    }
  }
  return {packed, packed_bias};
}

// scaled = packed (panels, K, NB) with its rows k times s[k].
void scale_rows(const at::Tensor& packed, const float* s, at::Tensor& scaled) {
  const int64_t K = packed.size(1);
  at::parallel_for(0, packed.size(0) * K, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const Vec scale(s[i % K]);
      const float* src = packed.data_ptr<float>() + i * NB;
      float* dst = scaled.data_ptr<float>() + i * NB;
      (Vec::loadu(src) * scale).store(dst);
      (Vec::loadu(src + V) * scale).store(dst + V);
    }
  });
}

at::Tensor pointwise_conv(const at::Tensor& x, const at::Tensor& packed_weight, const at::Tensor& packed_bias,
                          int64_t out_channels, bool gate, bool normalize, double eps, int64_t upscale,
                          const c10::optional<at::Tensor>& in_scale, const c10::optional<at::Tensor>& residual) {
  check_image_channels_last(x, "pointwise_conv", "x");
  const int64_t B = x.size(0), K = x.size(1), H = x.size(2), W = x.size(3);
  check_float_cpu(packed_weight, "pointwise_conv", "packed_weight");
  check_float_cpu(packed_bias, "pointwise_conv", "packed_bias");
  TORCH_CHECK(upscale >= 1 && !(gate && upscale > 1) && !(in_scale.has_value() && upscale > 1),
              "pointwise_conv: upscale must be >= 1, and 1 with gate or in_scale, got ", upscale);
  const int64_t panels = panel_count(out_channels, gate, upscale);
  const int64_t OH = H * upscale, OW = W * upscale;
  TORCH_CHECK(out_channels > 0 && packed_weight.dim() == 3 && packed_weight.size(0) == panels &&
                  packed_weight.size(1) == K && packed_weight.size(2) == NB && packed_weight.is_contiguous(),
              "pointwise_conv: packed_weight must be pack_pointwise's (", panels, ", ", K, ", ", NB, ") for ",
              out_channels, " output and ", K, " input channels, got ", packed_weight.sizes());
  TORCH_CHECK(packed_bias.dim() == 2 && packed_bias.size(0) == panels && packed_bias.size(1) == NB &&
                  packed_bias.is_contiguous(),
              "pointwise_conv: packed_bias must be pack_pointwise's (", panels, ", ", NB, "), got ", packed_bias.sizes());
  if (in_scale.has_value()) {
    check_float_cpu(*in_scale, "pointwise_conv", "in_scale");
    TORCH_CHECK(in_scale->dim() == 2 && in_scale->size(0) == B && in_scale->size(1) == K && in_scale->is_contiguous(),
                "pointwise_conv: in_scale must be a contiguous (", B, ", ", K, ") tensor (one scale per image and "
                "input channel), got ", in_scale->sizes());
  }
  if (residual.has_value()) {
    check_float_cpu(*residual, "pointwise_conv", "residual");
    TORCH_CHECK(residual->dim() == 4 && residual->size(0) == B && residual->size(1) == out_channels &&
                    residual->size(2) == OH && residual->size(3) == OW,
                "pointwise_conv: residual must have shape [", B, ", ", out_channels, ", ", OH, ", ", OW, "], got ",
                residual->sizes());
    TORCH_CHECK(residual->is_contiguous(at::MemoryFormat::ChannelsLast), "pointwise_conv: residual must be dense "
                "in channels_last, got strides ", residual->strides());
  }
  at::Tensor out = at::empty({B, out_channels, OH, OW}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  Gemm g{x.data_ptr<float>(), packed_weight.data_ptr<float>(), packed_bias.data_ptr<float>(),
         residual.has_value() ? residual->data_ptr<float>() : nullptr, out.data_ptr<float>(), B * H * W, K,
         out_channels, panels, gate, normalize, static_cast<float>(eps), upscale, H, W};
  if (!in_scale.has_value()) {
    run(g);
    return out;
  }
  // diag(s) on the input side is a scale of the packed weight's rows k, one copy per image.
  at::Tensor scaled = at::empty_like(packed_weight);
  const int64_t pixels = H * W;
  for (int64_t b = 0; b < B; ++b) {
    scale_rows(packed_weight, in_scale->data_ptr<float>() + b * K, scaled);
    Gemm image = g;
    image.x = g.x + b * pixels * K;
    image.weight = scaled.data_ptr<float>();
    image.residual = g.residual == nullptr ? nullptr : g.residual + b * pixels * out_channels;
    image.out = g.out + b * pixels * out_channels;
    image.rows = pixels;
    run(image);
  }
  return out;
}

// Checks that `packed` is pack_pointwise's weight for `in_channels` -> `out_channels` (with gate: the
// gate's outputs), and `bias` its bias.
void check_packed(const at::Tensor& packed, const at::Tensor& bias, int64_t in_channels, int64_t out_channels,
                  bool gate, const char* op, const char* name) {
  check_float_cpu(packed, op, name);
  check_float_cpu(bias, op, name);
  const int64_t panels = panel_count(out_channels, gate, 1);
  TORCH_CHECK(packed.dim() == 3 && packed.size(0) == panels && packed.size(1) == in_channels &&
                  packed.size(2) == NB && packed.is_contiguous() && bias.dim() == 2 && bias.size(0) == panels &&
                  bias.size(1) == NB && bias.is_contiguous(),
              op, ": ", name, " must be pack_pointwise's (", panels, ", ", in_channels, ", ", NB,
              ") weight and (", panels, ", ", NB, ") bias, got ", packed.sizes(), " and ", bias.sizes());
}

// The second half of NAFNet's block in one pass over its rows, each task's intermediate rows in cache:
//
//   s = A m + a,   y = inp + W3 diag(s) t + b3,   out = y + W5 G(W4 n(y) + b4) + b5
//
// t (B, K3, H, W) the first SimpleGate's output, m (B, K3) its channel means, inp (B, c, H, W) the
// block's input, all float32 channels_last; A (K3, K3) and a (K3,) the channel attention's 1x1 conv
// (s: SCA's scale per image and channel); w3 (beta folded), w4 (norm2 folded, gate) and w5 (gamma folded)
// packed by pack_pointwise. Equals pointwise_conv three times; y and G(...) never leave the cache.
at::Tensor nafblock_tail(const at::Tensor& t, const at::Tensor& mean, const at::Tensor& inp,
                         const at::Tensor& attention_weight, const at::Tensor& attention_bias, const at::Tensor& w3,
                         const at::Tensor& b3, const at::Tensor& w4, const at::Tensor& b4, const at::Tensor& w5,
                         const at::Tensor& b5, double eps) {
  check_image_channels_last(t, "nafblock_tail", "t");
  check_image_channels_last(inp, "nafblock_tail", "inp");
  const int64_t B = t.size(0), K3 = t.size(1), H = t.size(2), W = t.size(3), c = inp.size(1);
  const int64_t f = w5.dim() == 3 ? w5.size(1) : -1;  // else check_packed rejects w5 by name
  TORCH_CHECK(inp.size(0) == B && inp.size(2) == H && inp.size(3) == W, "nafblock_tail: inp must have shape [", B,
              ", C, ", H, ", ", W, "] like t, got ", inp.sizes());
  check_float_cpu(mean, "nafblock_tail", "mean");
  TORCH_CHECK(mean.dim() == 2 && mean.size(0) == B && mean.size(1) == K3 && mean.is_contiguous(),
              "nafblock_tail: mean must be a contiguous (", B, ", ", K3, ") tensor, got ", mean.sizes());
  check_float_cpu(attention_weight, "nafblock_tail", "attention_weight");
  check_float_cpu(attention_bias, "nafblock_tail", "attention_bias");
  TORCH_CHECK(attention_weight.dim() == 2 && attention_weight.size(0) == K3 && attention_weight.size(1) == K3 &&
                  attention_weight.is_contiguous() && attention_bias.dim() == 1 && attention_bias.size(0) == K3 &&
                  attention_bias.is_contiguous(),
              "nafblock_tail: attention_weight and attention_bias must be a contiguous (", K3, ", ", K3,
              ") matrix and (", K3, ",) vector, got ", attention_weight.sizes(), " and ", attention_bias.sizes());
  check_packed(w3, b3, K3, c, false, "nafblock_tail", "w3");
  check_packed(w5, b5, f, c, false, "nafblock_tail", "w5");  // before w4, whose outputs are w5's f inputs
  check_packed(w4, b4, c, f, true, "nafblock_tail", "w4");
  at::Tensor out = at::empty_like(inp, inp.options().memory_format(at::MemoryFormat::ChannelsLast));
  at::Tensor scaled = at::empty_like(w3);
  std::vector<float> in_scale(B * K3);
  at::parallel_for(0, K3, 16, [&](int64_t begin, int64_t end) {  // s = A m + a: each s in one fixed order
    const float* A = attention_weight.data_ptr<float>();
    for (int64_t b = 0; b < B; ++b) {
      const float* m = mean.data_ptr<float>() + b * K3;
      for (int64_t i = begin; i < end; ++i) {
        const float* a = A + i * K3;
        in_scale[b * K3 + i] = attention_bias.data_ptr<float>()[i] +
                               vec_sum<float>(K3, [&](int64_t k) { return Vec::loadu(a + k) * Vec::loadu(m + k); },
                                              [&](int64_t k) { return a[k] * m[k]; });
      }
    }
  });
  const int64_t pixels = H * W, widest = std::max({K3, c, f});
  // Weights that leave no room in L2 beside the rows: one task per thread, each streaming them once.
  const bool large_weights = (w3.numel() + w4.numel() + w5.numel()) * 4 > SMALL_WEIGHT_BYTES;
  const Tasks tasks(pixels, 4 * widest, large_weights);
  for (int64_t b = 0; b < B; ++b) {
    scale_rows(w3, in_scale.data() + b * K3, scaled);
    const float* t_image = t.data_ptr<float>() + b * pixels * K3;
    const float* inp_image = inp.data_ptr<float>() + b * pixels * c;
    float* out_image = out.data_ptr<float>() + b * pixels * c;
    at::parallel_for(0, tasks.blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t block = begin; block < end; ++block) {
        const int64_t row0 = tasks.first_row(block, pixels), rows = tasks.first_row(block + 1, pixels) - row0;
        if (rows == 0) continue;
        float* y = scratch(kRows, rows * c);
        float* normalised = scratch(kNormalised, rows * c);
        float* gated = scratch(kGated, rows * f);
        const Gemm conv3{t_image + row0 * K3, scaled.data_ptr<float>(), b3.data_ptr<float>(), inp_image + row0 * c, y,
                         rows, K3, c, w3.size(0), false, false, 0.f, 1, H, W};
        product(conv3, conv3.x, 0, rows, 0, conv3.panels);
        normalise_rows(y, normalised, rows, c, static_cast<float>(eps));
        const Gemm conv4{normalised, w4.data_ptr<float>(), b4.data_ptr<float>(), nullptr, gated, rows, c, f,
                         w4.size(0), true, false, 0.f, 1, H, W};
        product(conv4, normalised, 0, rows, 0, conv4.panels);
        const Gemm conv5{gated, w5.data_ptr<float>(), b5.data_ptr<float>(), y, out_image + row0 * c, rows, f, c,
                         w5.size(0), false, false, 0.f, 1, H, W};
        product(conv5, gated, 0, rows, 0, conv5.panels);
      }
    });
  }
  return out;
}

// One output row of nafblock_head's depthwise filter and SimpleGate for `count` channels from ch:
// t[px] = (dw(u)[px][ch..] + bias) * (dw(u)[px][h + ch..] + bias'), summed into sums. centres points at
// pixel 0's channel ch in u's buffer (pixels d values apart, rows `row` values apart, a zero pixel
// either side); the 18 taps stay in registers along the row. Stores the row's sums of t at `sums`.
// `full`: count == V (else partial loads, which read nothing past the channels).
template <bool full>
inline void depthwise_gate_row(const float* centres, int64_t row, int64_t d, int64_t h, int64_t W,
                               const DepthwiseFilter<float>& filter, int64_t ch, int64_t count, float* t,
                               float* sums) {
  const auto get = [count](const float* p) { return full ? Vec::loadu(p) : Vec::loadu(p, count); };
  Vec taps_a[kTaps], taps_g[kTaps];
  for (int tap = 0; tap < kTaps; ++tap) {
    taps_a[tap] = get(filter.taps.data() + tap * d + ch);
    taps_g[tap] = get(filter.taps.data() + tap * d + h + ch);
  }
  const Vec bias_a = get(filter.bias.data() + ch), bias_g = get(filter.bias.data() + h + ch);
  int64_t offsets[kTaps];
  for (int tap = 0; tap < kTaps; ++tap) offsets[tap] = (tap / 3 - 1) * row + (tap % 3 - 1) * d;
  Vec total(0.f);
  for (int64_t px = 0; px < W; ++px) {
    const float* centre = centres + px * d;
    Vec a = bias_a, g = bias_g;
#pragma GCC unroll 9
    for (int tap = 0; tap < kTaps; ++tap) {
      a = at::vec::fmadd(get(centre + offsets[tap]), taps_a[tap], a);
      g = at::vec::fmadd(get(centre + offsets[tap] + h), taps_g[tap], g);
    }
    const Vec gated = a * g;
    if (full) {
      gated.store(t + px * h);
    } else {
      gated.store(t + px * h, count);
    }
    total = total + gated;
  }
  total.store(sums, count);
}

// The first half of NAFNet's block in one pass over its pixels, conv1's outputs in cache:
//
//   u = W1 n(inp) + b1 (2h channels),   t = (dw(u)[:h] + d[:h]) * (dw(u)[h:] + d[h:]),   mean = t's channel means
//
// inp (B, c, H, W) float32 channels_last; w1, b1 conv1 packed (norm1 folded); dw_weight (2h, 1, 3, 3),
// dw_bias (2h,) conv2, the depthwise 3x3 filter (zero padding). Returns t (B, h, H, W) channels_last and
// mean (B, h), the channel attention's pool. Each thread takes a band of image rows and walks it in
// chunks, keeping u for the chunk's rows and the row above and below (padded with zero pixels left and
// right) in a buffer; the two rows it shares with the next chunk carry over, so u is computed once per
// row but for the two rows around each band. The mean sums per-row sums in row order: the same for any
// number of threads.
std::tuple<at::Tensor, at::Tensor> nafblock_head(const at::Tensor& inp, const at::Tensor& w1, const at::Tensor& b1,
                                                 const at::Tensor& dw_weight, const at::Tensor& dw_bias, double eps) {
  check_image_channels_last(inp, "nafblock_head", "inp");
  const int64_t B = inp.size(0), c = inp.size(1), H = inp.size(2), W = inp.size(3);
  check_float_cpu(dw_weight, "nafblock_head", "dw_weight");
  check_float_cpu(dw_bias, "nafblock_head", "dw_bias");
  TORCH_CHECK(dw_weight.dim() == 4 && dw_weight.size(0) > 0 && dw_weight.size(0) % 2 == 0 && dw_weight.size(1) == 1 &&
                  dw_weight.size(2) == 3 && dw_weight.size(3) == 3 && dw_weight.is_contiguous(),
              "nafblock_head: dw_weight must be a contiguous (2h, 1, 3, 3) depthwise filter, got ", dw_weight.sizes());
  const int64_t d = dw_weight.size(0), h = d / 2;
  check_packed(w1, b1, c, d, false, "nafblock_head", "w1");
  TORCH_CHECK(dw_bias.dim() == 1 && dw_bias.size(0) == d && dw_bias.is_contiguous(),
              "nafblock_head: dw_bias must have shape [", d, "], got ", dw_bias.sizes());
  const DepthwiseFilter<float> filter(dw_weight.data_ptr<float>(), dw_bias.data_ptr<float>(), d);
  at::Tensor t = at::empty({B, h, H, W}, inp.options().memory_format(at::MemoryFormat::ChannelsLast));
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t bands = std::min(H, threads);
  std::vector<float> row_sums(H * h);
  at::Tensor mean = at::empty({B, h}, inp.options());
  const int64_t row = (W + 2) * d;  // one row of u in the buffer, with a zero pixel either side
  const int64_t chunk = std::max<int64_t>(1, U_BUFFER_BYTES / (4 * row) - 2);
  // An image whose u fits the L2s is one GEMM over all its pixels, then the filter over all its rows: no
  // rows recomputed around bands, and conv1's weight read once per task of rows, not per image row.
  const bool whole_image = (H + 2) * row * 4 <= U_IMAGE_BYTES;
  const auto clear_sides = [&](float* dst) {  // the zero pixel either side of a row of u
    std::fill(dst, dst + d, 0.f);
    std::fill(dst + (W + 1) * d, dst + row, 0.f);
  };
  float* image_u = nullptr;  // whole_image: u for all rows, its zero border set once for every image
  if (whole_image) {
    image_u = scratch(kImage, (H + 2) * row);
    std::fill(image_u, image_u + row, 0.f);
    std::fill(image_u + (H + 1) * row, image_u + (H + 2) * row, 0.f);
    for (int64_t y = 1; y <= H; ++y) clear_sides(image_u + y * row);
  }
  for (int64_t b = 0; b < B; ++b) {
    const float* x = inp.data_ptr<float>() + b * H * W * c;
    float* out = t.data_ptr<float>() + b * H * W * h;
    // The filter and gate for image row y, u's row y at buffer row `above` + 1.
    const auto filter_row = [&](const float* u, int64_t above, int64_t y) {
      const float* centres = u + (above + 1) * row + d;  // pixel 0 of the output row
      float* t_row = out + y * W * h;
      float* sums = row_sums.data() + y * h;
      vec_for<float>(h, [&](int64_t ch, int64_t count) {
        if (count == V) {
          depthwise_gate_row<true>(centres + ch, row, d, h, W, filter, ch, V, t_row + ch, sums + ch);
        } else {
          depthwise_gate_row<false>(centres + ch, row, d, h, W, filter, ch, count, t_row + ch, sums + ch);
        }
      });
    };
    if (whole_image) {
      Gemm conv1{x, w1.data_ptr<float>(), b1.data_ptr<float>(), nullptr, image_u + row + d, H * W, c, d, w1.size(0),
                 false, true, static_cast<float>(eps), 1, H, W};
      conv1.padded = true;
      run(conv1);
      at::parallel_for(0, H, 1, [&](int64_t begin, int64_t end) {
        for (int64_t y = begin; y < end; ++y) filter_row(image_u, y, y);
      });
    } else {
      at::parallel_for(0, bands, 1, [&](int64_t begin, int64_t end) {
        for (int64_t band = begin; band < end; ++band) {
          float* u = scratch(kRows, (chunk + 2) * row);
          float* normalised = scratch(kNormalised, W * c);
          // u of image row y (zeros outside the image) into buffer row i.
          const auto fill = [&](int64_t y, int64_t i) {
            float* dst = u + i * row;
            clear_sides(dst);
            if (y < 0 || y >= H) return std::fill(dst + d, dst + (W + 1) * d, 0.f);
            normalise_rows(x + y * W * c, normalised, W, c, static_cast<float>(eps));
            const Gemm conv1{normalised, w1.data_ptr<float>(), b1.data_ptr<float>(), nullptr, dst + d, W, c, d,
                             w1.size(0), false, false, 0.f, 1, H, W};
            product(conv1, normalised, 0, W, 0, conv1.panels);
          };
          const int64_t y0 = H * band / bands, y1 = H * (band + 1) / bands;
          for (int64_t top = y0; top < y1; top += chunk) {
            const int64_t rows = std::min(chunk, y1 - top);
            if (top == y0) {
              fill(top - 1, 0);
              fill(top, 1);
            } else {  // the previous chunk's last two rows are this one's first two
              std::copy(u + chunk * row, u + (chunk + 2) * row, u);
            }
            for (int64_t i = 1; i <= rows; ++i) fill(top + i, i + 1);
            for (int64_t i = 0; i < rows; ++i) filter_row(u, i, top + i);
          }
        }
      });
    }
    float* image_mean = mean.data_ptr<float>() + b * h;
    std::fill(image_mean, image_mean + h, 0.f);
    for (int64_t y = 0; y < H; ++y) {
      for (int64_t ch = 0; ch < h; ++ch) image_mean[ch] += row_sums[y * h + ch];
    }
    for (int64_t ch = 0; ch < h; ++ch) image_mean[ch] /= static_cast<float>(H * W);
  }
  return {t, mean};
}

}  // namespace
}  // namespace pyairir

TORCH_LIBRARY(pyairir_cpu, m) {
  m.def("pack_pointwise(Tensor weight, Tensor? bias, bool gate, int upscale) -> (Tensor, Tensor)");
  m.def(
      "pointwise_conv(Tensor x, Tensor packed_weight, Tensor packed_bias, int out_channels, bool gate, "
      "bool normalize, float eps, int upscale, Tensor? in_scale, Tensor? residual) -> Tensor");
  m.def(
      "nafblock_head(Tensor inp, Tensor w1, Tensor b1, Tensor dw_weight, Tensor dw_bias, float eps) -> (Tensor, "
      "Tensor)");
  m.def(
      "nafblock_tail(Tensor t, Tensor mean, Tensor inp, Tensor attention_weight, Tensor attention_bias, Tensor w3, "
      "Tensor b3, Tensor w4, Tensor b4, Tensor w5, Tensor b5, float eps) -> Tensor");
}

TORCH_LIBRARY_IMPL(pyairir_cpu, CPU, m) {
  m.impl("pack_pointwise", &pyairir::pack_pointwise);
  m.impl("pointwise_conv", &pyairir::pointwise_conv);
  m.impl("nafblock_tail", &pyairir::nafblock_tail);
  m.impl("nafblock_head", &pyairir::nafblock_head);
}
