// topk_prompt in CUDA, mirroring csrc/cpu/topk_prompt.cpp and triton_kernels/topk_prompt.py: one
// thread per output pixel reading its four taps from only the k selected components; the
// backward's resize adjoint one thread per prompt cell, gathering over the output pixels that
// reach it in a fixed order (deterministic, no atomics).
#include "../bilinear.h"
#include "numeric.cuh"
#include "topk_prompt.h"

namespace pyairir {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void forward_kernel(const T* prompts, const typename Accumulate<T>::type* weights,
                               const int64_t* selection, T* out, int64_t B, int64_t C, int64_t s, int64_t H,
                               int64_t W, int64_t k) {
  using A = typename Accumulate<T>::type;
  const int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= B * C * H * W) return;
  const int64_t x = index % W, y = (index / W) % H, c = (index / (H * W)) % C, b = index / (C * H * W);
  const BilinearTap<A> ty = bilinear_tap<A>(y, s, H), tx = bilinear_tap<A>(x, s, W);
  A sum = A(0);
  for (int64_t j = 0; j < k; ++j) {
    const T* p = prompts + (selection[b * k + j] * C + c) * s * s;
    const A r0 = ty.l0 * (tx.l0 * to_acc(p[ty.i0 * s + tx.i0]) + tx.l1 * to_acc(p[ty.i0 * s + tx.i1]));
    const A r1 = ty.l1 * (tx.l0 * to_acc(p[ty.i1 * s + tx.i0]) + tx.l1 * to_acc(p[ty.i1 * s + tx.i1]));
    sum += weights[b * k + j] * (r0 + r1);
  }
  out[index] = from_acc<T>(sum);
}

template <typename T>
__global__ void adjoint_kernel(const T* grad, typename Accumulate<T>::type* d_mixed, const int64_t* rows,
                               const int64_t* cols, int64_t planes, int64_t s, int64_t H, int64_t W) {
  using A = typename Accumulate<T>::type;
  const int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= planes * s * s) return;
  const int64_t j = index % s, i = (index / s) % s, plane = index / (s * s);
  const T* src = grad + plane * H * W;
  A sum = A(0);
  for (int64_t y = rows[2 * i]; y < rows[2 * i + 1]; ++y) {
    const A wy = bilinear_weight<A>(y, i, s, H);
    for (int64_t x = cols[2 * j]; x < cols[2 * j + 1]; ++x)
      sum += wy * bilinear_weight<A>(x, j, s, W) * to_acc(src[y * W + x]);
  }
  d_mixed[index] = sum;
}

unsigned blocks(int64_t n) { return unsigned((n + kThreads - 1) / kThreads); }

}  // namespace

cudaError_t topk_prompt_forward(DType dtype, const void* prompts, const void* weights, const int64_t* selection,
                                void* out, int64_t B, int64_t C, int64_t s, int64_t H, int64_t W, int64_t k,
                                cudaStream_t stream) {
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Accumulate<T>::type;
    forward_kernel<T><<<blocks(B * C * H * W), kThreads, 0, stream>>>(
        static_cast<const T*>(prompts), static_cast<const A*>(weights), selection, static_cast<T*>(out), B, C, s, H,
        W, k);
    return cudaGetLastError();
  });
}

cudaError_t topk_prompt_resize_adjoint(DType dtype, const void* grad_out, void* d_mixed, const int64_t* rows,
                                       const int64_t* cols, int64_t planes, int64_t s, int64_t H, int64_t W,
                                       cudaStream_t stream) {
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Accumulate<T>::type;
    adjoint_kernel<T><<<blocks(planes * s * s), kThreads, 0, stream>>>(
        static_cast<const T*>(grad_out), static_cast<A*>(d_mixed), rows, cols, planes, s, H, W);
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace pyairir
