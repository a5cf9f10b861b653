// film_gelu in CUDA, mirroring csrc/cpu/film_gelu.cpp: one thread per element for the forward
// and grad_x; one block per (sample, channel) for the gamma/beta gradients, reduced in a fixed
// tree order over its pixels (deterministic).
#include "film_gelu.h"
#include "numeric.cuh"

namespace pyairir {
namespace cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ int64_t offset(int64_t b, int64_t c, int64_t p, int64_t C, int64_t P, bool cl) {
  return cl ? (b * P + p) * C + c : (b * C + c) * P + p;
}

template <typename A>
__device__ __forceinline__ A gelu_cdf(A z) { return A(0.5) * (A(1) + erf(z * A(0.70710678118654752440))); }

template <typename T>
__global__ void forward_kernel(const T* x, const T* gamma, const T* beta, T* y, int64_t B, int64_t C, int64_t P,
                               bool cl) {
  using A = typename Accumulate<T>::type;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= B * C * P) return;
  const int64_t c = cl ? i % C : (i / P) % C, b = i / (C * P);
  const A z = to_acc(gamma[b * C + c]) * to_acc(x[i]) + to_acc(beta[b * C + c]);
  y[i] = from_acc<T>(z * gelu_cdf(z));
}

// One block per (b, c): grad_x for its pixels and the two sums over them.
template <typename T>
__global__ void backward_kernel(const T* dy, const T* x, const T* gamma, const T* beta, T* dx, T* dgamma, T* dbeta,
                                int64_t C, int64_t P, bool cl) {
  using A = typename Accumulate<T>::type;
  __shared__ A shared_gamma[kThreads], shared_beta[kThreads];
  const int64_t bc = blockIdx.x, b = bc / C, c = bc % C;
  const A g = to_acc(gamma[bc]), be = to_acc(beta[bc]);
  A sum_gamma = A(0), sum_beta = A(0);
  for (int64_t p = threadIdx.x; p < P; p += kThreads) {
    const int64_t i = offset(b, c, p, C, P, cl);
    const A xv = to_acc(x[i]), z = g * xv + be;
    const A dz = to_acc(dy[i]) * (gelu_cdf(z) + z * exp(A(-0.5) * z * z) * A(0.39894228040143267794));
    dx[i] = from_acc<T>(g * dz);
    sum_gamma += xv * dz;
    sum_beta += dz;
  }
  shared_gamma[threadIdx.x] = sum_gamma;
  shared_beta[threadIdx.x] = sum_beta;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      shared_gamma[threadIdx.x] += shared_gamma[threadIdx.x + stride];
      shared_beta[threadIdx.x] += shared_beta[threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    dgamma[bc] = from_acc<T>(shared_gamma[0]);
    dbeta[bc] = from_acc<T>(shared_beta[0]);
  }
}

}  // namespace

cudaError_t film_gelu_forward(DType dtype, const void* x, const void* gamma, const void* beta, void* y, int64_t B,
                              int64_t C, int64_t P, bool channels_last, cudaStream_t stream) {
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    const int64_t n = B * C * P;
    forward_kernel<T><<<unsigned((n + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(gamma), static_cast<const T*>(beta), static_cast<T*>(y), B, C,
        P, channels_last);
    return cudaGetLastError();
  });
}

cudaError_t film_gelu_backward(DType dtype, const void* grad_out, const void* x, const void* gamma, const void* beta,
                               void* grad_x, void* grad_gamma, void* grad_beta, int64_t B, int64_t C, int64_t P,
                               bool channels_last, cudaStream_t stream) {
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    backward_kernel<T><<<unsigned(B * C), kThreads, 0, stream>>>(
        static_cast<const T*>(grad_out), static_cast<const T*>(x), static_cast<const T*>(gamma),
        static_cast<const T*>(beta), static_cast<T*>(grad_x), static_cast<T*>(grad_gamma), static_cast<T*>(grad_beta),
        C, P, channels_last);
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace pyairir
