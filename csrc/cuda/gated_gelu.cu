// gated_gelu in CUDA, mirroring triton_kernels/gated_gelu.py: one thread per
// output element gathers the nine 3x3 taps; the backward writes the gate's
// gradient dz once (accumulation type), correlates it with the flipped filter
// for grad_x, and reduces the filter/bias gradients per block of pixels into
// partial rows that are then summed in block order (deterministic).
#include "gated_gelu.h"
#include "numeric.cuh"

namespace pyairir {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kPixelsPerPartial = 256;  // pixels per filter-gradient partial row

struct Geometry {
  int64_t B, C2, H, W;
  bool channels_last, conv, gelu;
  __host__ __device__ int64_t P() const { return H * W; }
  // Offset of (b, c, p) in a tensor with `channels` channels in this layout.
  __device__ int64_t offset(int64_t b, int64_t c, int64_t p, int64_t channels) const {
    return channels_last ? (b * P() + p) * channels + c : (b * channels + c) * P() + p;
  }
  // The element a thread owns among B x channels x P: consecutive threads share a pixel
  // (channels_last) or a channel plane (NCHW), whichever is contiguous.
  __device__ void decompose(int64_t i, int64_t channels, int64_t& b, int64_t& c, int64_t& p) const {
    if (channels_last) {
      c = i % channels;
      p = (i / channels) % P();
      b = i / (channels * P());
    } else {
      p = i % P();
      c = (i / P()) % channels;
      b = i / (channels * P());
    }
  }
};

template <typename T, typename A>
__device__ A preactivation(const T* x, const T* w, const T* bias, const Geometry& g, int64_t b, int64_t c, int64_t p) {
  if (!g.conv) return to_acc(x[g.offset(b, c, p, g.C2)]);
  const int64_t y = p / g.W, xx = p % g.W;
  A z = bias ? to_acc(bias[c]) : A(0);
  for (int t = 0; t < 9; ++t) {
    const int64_t sy = y + t / 3 - 1, sx = xx + t % 3 - 1;
    if (sy < 0 || sy >= g.H || sx < 0 || sx >= g.W) continue;
    z += to_acc(x[g.offset(b, c, sy * g.W + sx, g.C2)]) * to_acc(w[c * 9 + t]);
  }
  return z;
}

template <typename A>
__device__ A cdf(A a) { return A(0.5) * (A(1) + erf(a * A(0.70710678118654752440))); }

// The output element this thread owns, (b, c < C2 / 2, p), and its gate inputs z1, z2;
// false for threads past the end.
template <typename T, typename A>
__device__ bool gate_inputs(const T* x, const T* w, const T* bias, const Geometry& g, int64_t& b, int64_t& c,
                            int64_t& p, A& z1, A& z2) {
  const int64_t h = g.C2 / 2;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= g.B * h * g.P()) return false;
  g.decompose(i, h, b, c, p);
  z1 = preactivation<T, A>(x, w, bias, g, b, c, p);
  z2 = preactivation<T, A>(x, w, bias, g, b, c + h, p);
  return true;
}

template <typename T>
__global__ void forward_kernel(const T* x, const T* w, const T* bias, T* out, Geometry g) {
  using A = typename Accumulate<T>::type;
  int64_t b, c, p;
  A z1, z2;
  if (!gate_inputs(x, w, bias, g, b, c, p, z1, z2)) return;
  out[g.offset(b, c, p, g.C2 / 2)] = from_acc<T>((g.gelu ? z1 * cdf(z1) : z1) * z2);
}

template <typename T>
__global__ void gate_gradient_kernel(const T* grad_out, const T* x, const T* w, const T* bias,
                                     typename Accumulate<T>::type* dz, Geometry g) {
  using A = typename Accumulate<T>::type;
  const int64_t h = g.C2 / 2;
  int64_t b, c, p;
  A z1, z2;
  if (!gate_inputs(x, w, bias, g, b, c, p, z1, z2)) return;
  const A dy = to_acc(grad_out[g.offset(b, c, p, h)]);
  A act = z1, derivative = A(1);
  if (g.gelu) {
    const A phi = cdf(z1);
    act = z1 * phi;
    derivative = phi + z1 * exp(A(-0.5) * z1 * z1) * A(0.39894228040143267794);
  }
  dz[g.offset(b, c, p, g.C2)] = dy * z2 * derivative;
  dz[g.offset(b, c + h, p, g.C2)] = dy * act;
}

// grad_x(p) = sum_t w(8 - t) dz(p + tap t), or dz itself without the convolution.
template <typename T>
__global__ void input_gradient_kernel(const typename Accumulate<T>::type* dz, const T* w, T* grad_x, Geometry g) {
  using A = typename Accumulate<T>::type;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= g.B * g.C2 * g.P()) return;
  int64_t b, c, p;
  g.decompose(i, g.C2, b, c, p);
  if (!g.conv) {
    grad_x[g.offset(b, c, p, g.C2)] = from_acc<T>(dz[g.offset(b, c, p, g.C2)]);
    return;
  }
  const int64_t y = p / g.W, xx = p % g.W;
  A gx = A(0);
  for (int t = 0; t < 9; ++t) {
    const int64_t sy = y + t / 3 - 1, sx = xx + t % 3 - 1;
    if (sy < 0 || sy >= g.H || sx < 0 || sx >= g.W) continue;
    gx += dz[g.offset(b, c, sy * g.W + sx, g.C2)] * to_acc(w[c * 9 + 8 - t]);
  }
  grad_x[g.offset(b, c, p, g.C2)] = from_acc<T>(gx);
}

// partial[row][j][c], row = (b, block of pixels): j < 9 sums x(p + tap j) dz(p), j = 9 sums dz(p).
template <typename T>
__global__ void filter_gradient_partial_kernel(const T* x, const typename Accumulate<T>::type* dz,
                                               typename Accumulate<T>::type* partial, int64_t blocks, Geometry g) {
  using A = typename Accumulate<T>::type;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= g.B * blocks * g.C2) return;
  const int64_t c = i % g.C2, row = i / g.C2, b = row / blocks, block = row % blocks;
  A sums[10] = {};
  const int64_t p_end = min(g.P(), (block + 1) * kPixelsPerPartial);
  for (int64_t p = block * kPixelsPerPartial; p < p_end; ++p) {
    const A d = dz[g.offset(b, c, p, g.C2)];
    sums[9] += d;
    const int64_t y = p / g.W, xx = p % g.W;
    for (int t = 0; t < 9; ++t) {
      const int64_t sy = y + t / 3 - 1, sx = xx + t % 3 - 1;
      if (sy < 0 || sy >= g.H || sx < 0 || sx >= g.W) continue;
      sums[t] += to_acc(x[g.offset(b, c, sy * g.W + sx, g.C2)]) * d;
    }
  }
  for (int j = 0; j < 10; ++j) partial[(row * 10 + j) * g.C2 + c] = sums[j];
}

template <typename T>
__global__ void sum_partials_kernel(const typename Accumulate<T>::type* partial, int64_t rows, int64_t C2,
                                    T* grad_weight, T* grad_bias) {
  using A = typename Accumulate<T>::type;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= 10 * C2) return;
  const int64_t j = i / C2, c = i % C2;
  A total = A(0);
  for (int64_t r = 0; r < rows; ++r) total += partial[(r * 10 + j) * C2 + c];
  if (j < 9) {
    grad_weight[c * 9 + j] = from_acc<T>(total);
  } else {
    grad_bias[c] = from_acc<T>(total);
  }
}

unsigned blocks_for(int64_t n) { return unsigned((n + kThreads - 1) / kThreads); }
int64_t partial_blocks(int64_t H, int64_t W) { return (H * W + kPixelsPerPartial - 1) / kPixelsPerPartial; }

}  // namespace

cudaError_t gated_gelu_forward(DType dtype, const void* x, const void* dw_weight, const void* dw_bias, void* out,
                               int64_t B, int64_t C2, int64_t H, int64_t W, bool channels_last, bool gelu,
                               cudaStream_t stream) {
  const Geometry g{B, C2, H, W, channels_last, dw_weight != nullptr, gelu};
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    forward_kernel<T><<<blocks_for(B * (C2 / 2) * H * W), kThreads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(dw_weight), static_cast<const T*>(dw_bias),
        static_cast<T*>(out), g);
    return cudaGetLastError();
  });
}

int64_t gated_gelu_backward_workspace(DType dtype, int64_t B, int64_t C2, int64_t H, int64_t W) {
  const int64_t bytes = dtype == DType::Float64 ? sizeof(double) : sizeof(float);
  return (B * C2 * H * W + B * partial_blocks(H, W) * 10 * C2) * bytes;
}

cudaError_t gated_gelu_backward(DType dtype, const void* grad_out, const void* x, const void* dw_weight,
                                const void* dw_bias, void* grad_x, void* grad_dw_weight, void* grad_dw_bias,
                                void* workspace, int64_t B, int64_t C2, int64_t H, int64_t W, bool channels_last,
                                bool gelu, cudaStream_t stream) {
  const Geometry g{B, C2, H, W, channels_last, dw_weight != nullptr, gelu};
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Accumulate<T>::type;
    A* dz = static_cast<A*>(workspace);
    A* partial = dz + B * C2 * H * W;
    const T* w = static_cast<const T*>(dw_weight);
    gate_gradient_kernel<T><<<blocks_for(B * (C2 / 2) * H * W), kThreads, 0, stream>>>(
        static_cast<const T*>(grad_out), static_cast<const T*>(x), w, static_cast<const T*>(dw_bias), dz, g);
    input_gradient_kernel<T><<<blocks_for(B * C2 * H * W), kThreads, 0, stream>>>(dz, w, static_cast<T*>(grad_x), g);
    if (!g.conv) return cudaGetLastError();
    const int64_t blocks = partial_blocks(H, W);
    filter_gradient_partial_kernel<T><<<blocks_for(B * blocks * C2), kThreads, 0, stream>>>(
        static_cast<const T*>(x), dz, partial, blocks, g);
    sum_partials_kernel<T><<<blocks_for(10 * C2), kThreads, 0, stream>>>(
        partial, B * blocks, C2, static_cast<T*>(grad_dw_weight), static_cast<T*>(grad_dw_bias));
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace pyairir
