// layer_norm_channels in CUDA, mirroring csrc/cpu/layer_norm_channels.cpp:
// a block of kBlock threads owns kBlock consecutive pixels of one image (one
// thread per pixel, looping over C); the weight/bias gradient is reduced per
// block in a fixed tree order into a partial row, then the rows are summed in
// block order, so results are deterministic.
#include "layer_norm_channels.h"
#include "numeric.cuh"

namespace pyairir {
namespace cuda {
namespace {

constexpr int kBlock = 64;  // pixels (threads) per block

struct Geometry {
  int64_t C, P;
  bool channels_last;
  __device__ int64_t channel_stride() const { return channels_last ? 1 : P; }
  __device__ int64_t pixel_stride() const { return channels_last ? C : 1; }
};

// Mean and 1/sqrt(var + eps) over the C values of one pixel starting at x.
template <typename T, typename A>
__device__ void pixel_statistics(const T* x, const Geometry& g, double eps, A& mean, A& rstd) {
  const int64_t sc = g.channel_stride();
  mean = A(0);
  for (int64_t c = 0; c < g.C; ++c) mean += to_acc(x[c * sc]);
  mean /= A(g.C);
  A m2 = A(0);
  for (int64_t c = 0; c < g.C; ++c) {
    const A d = to_acc(x[c * sc]) - mean;
    m2 += d * d;
  }
  rstd = A(1) / sqrt(m2 / A(g.C) + A(eps));
}

template <typename T>
__global__ void forward_kernel(const T* x, const T* weight, const T* bias, T* y, Geometry g, double eps,
                               bool subtract_mean) {
  using A = typename Accumulate<T>::type;
  const int64_t p = int64_t(blockIdx.x) * kBlock + threadIdx.x;
  if (p >= g.P) return;
  const int64_t base = int64_t(blockIdx.y) * g.C * g.P + p * g.pixel_stride();
  const int64_t sc = g.channel_stride();
  A mean, rstd;
  pixel_statistics(x + base, g, eps, mean, rstd);
  const A centre = subtract_mean ? mean : A(0);
  for (int64_t c = 0; c < g.C; ++c) {
    const A b = bias ? to_acc(bias[c]) : A(0);
    y[base + c * sc] = from_acc<T>((to_acc(x[base + c * sc]) - centre) * rstd * to_acc(weight[c]) + b);
  }
}

// Sums v over the block's threads in a fixed tree order; the total lands in thread 0.
template <typename A>
__device__ A block_sum(A v, A* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int stride = kBlock / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
    __syncthreads();
  }
  const A total = shared[0];
  __syncthreads();
  return total;
}

// grad_x = rstd * (g - [subtract_mean] mean_C(g) - x̂ mean_C(g n)), g = grad_out * weight,
// n the normalised input before the affine map; partial rows of sum(grad_out * n), sum(grad_out).
template <typename T>
__global__ void backward_kernel(const T* grad_out, const T* x, const T* weight, T* grad_x,
                                typename Accumulate<T>::type* partial, int64_t tasks, Geometry g, double eps,
                                bool subtract_mean) {
  using A = typename Accumulate<T>::type;
  __shared__ A shared[kBlock];
  const int64_t p = int64_t(blockIdx.x) * kBlock + threadIdx.x;
  const bool active = p < g.P;  // inactive threads still join the block reductions, with zeros
  const int64_t base = int64_t(blockIdx.y) * g.C * g.P + (active ? p : 0) * g.pixel_stride();
  const int64_t sc = g.channel_stride();
  A mean = A(0), rstd = A(0);
  if (active) pixel_statistics(x + base, g, eps, mean, rstd);
  const A centre = subtract_mean ? mean : A(0);
  A sum_g = A(0), sum_gn = A(0);
  const int64_t task = int64_t(blockIdx.y) * gridDim.x + blockIdx.x;
  for (int64_t c = 0; c < g.C; ++c) {
    A dy = A(0), normalised = A(0);
    if (active) {
      dy = to_acc(grad_out[base + c * sc]);
      normalised = (to_acc(x[base + c * sc]) - centre) * rstd;
    }
    const A w = to_acc(weight[c]);
    sum_g += dy * w;
    sum_gn += dy * w * normalised;
    const A dw = block_sum(dy * normalised, shared);
    const A db = block_sum(dy, shared);
    if (threadIdx.x == 0) {
      partial[task * g.C + c] = dw;
      partial[(tasks + task) * g.C + c] = db;
    }
  }
  if (!active) return;
  const A mean_g = subtract_mean ? sum_g / A(g.C) : A(0);
  for (int64_t c = 0; c < g.C; ++c) {
    const A centred = (to_acc(x[base + c * sc]) - mean) * rstd;
    const A gc = to_acc(grad_out[base + c * sc]) * to_acc(weight[c]);
    grad_x[base + c * sc] = from_acc<T>(rstd * (gc - mean_g - centred * sum_gn / A(g.C)));
  }
}

template <typename T>
__global__ void sum_partials_kernel(const typename Accumulate<T>::type* partial, int64_t tasks, int64_t C,
                                    T* grad_weight, T* grad_bias) {
  using A = typename Accumulate<T>::type;
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  A dw = A(0), db = A(0);
  for (int64_t t = 0; t < tasks; ++t) {
    dw += partial[t * C + c];
    db += partial[(tasks + t) * C + c];
  }
  grad_weight[c] = from_acc<T>(dw);
  grad_bias[c] = from_acc<T>(db);
}

dim3 grid_of(int64_t B, int64_t P) { return dim3(unsigned((P + kBlock - 1) / kBlock), unsigned(B)); }

}  // namespace

cudaError_t layer_norm_channels_forward(DType dtype, const void* x, const void* weight, const void* bias, void* y,
                                        int64_t B, int64_t C, int64_t P, bool channels_last, double eps,
                                        bool subtract_mean, cudaStream_t stream) {
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    forward_kernel<T><<<grid_of(B, P), kBlock, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(weight), static_cast<const T*>(bias), static_cast<T*>(y),
        Geometry{C, P, channels_last}, eps, subtract_mean);
    return cudaGetLastError();
  });
}

int64_t layer_norm_channels_backward_workspace(DType dtype, int64_t B, int64_t C, int64_t P) {
  const int64_t tasks = B * ((P + kBlock - 1) / kBlock);
  const int64_t bytes = dtype == DType::Float64 ? sizeof(double) : sizeof(float);
  return 2 * tasks * C * bytes;
}

cudaError_t layer_norm_channels_backward(DType dtype, const void* grad_out, const void* x, const void* weight,
                                         void* grad_x, void* grad_weight, void* grad_bias, void* workspace,
                                         int64_t B, int64_t C, int64_t P, bool channels_last, double eps,
                                         bool subtract_mean, cudaStream_t stream) {
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Accumulate<T>::type;
    const dim3 grid = grid_of(B, P);
    const int64_t tasks = int64_t(grid.x) * grid.y;
    A* partial = static_cast<A*>(workspace);
    backward_kernel<T><<<grid, kBlock, 0, stream>>>(
        static_cast<const T*>(grad_out), static_cast<const T*>(x), static_cast<const T*>(weight),
        static_cast<T*>(grad_x), partial, tasks, Geometry{C, P, channels_last}, eps, subtract_mean);
    cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess) return status;
    constexpr int threads = 256;
    sum_partials_kernel<T><<<unsigned((C + threads - 1) / threads), threads, 0, stream>>>(
        partial, tasks, C, static_cast<T*>(grad_weight), static_cast<T*>(grad_bias));
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace pyairir
