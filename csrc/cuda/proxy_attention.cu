// proxy_attention in CUDA, mirroring csrc/cpu/proxy_attention.cpp and
// triton_kernels/proxy_attention.py with one warp per token: lane l holds channels l, l + 32, ...
// of its token's d-vector, dot products are warp reductions (a fixed butterfly order), and the
// warp streams over the other side's tokens one at a time with an online softmax. Memory stays
// O(tokens); the backward's two passes (per query: dq, delta, temperature terms; per key: dk,
// dv) write every value from one warp, without atomics, so results are deterministic.
#include "numeric.cuh"
#include "proxy_attention.h"

namespace pyairir {
namespace cuda {
namespace {

constexpr int kWarp = 32, kWarpsPerBlock = 4;
constexpr int kPerLane = int(kMaxHeadChannels / kWarp);
constexpr double kNormEps = 1e-12;  // F.normalize's eps

template <typename T>
struct Operand {
  const T* data;
  Strides s;
  int64_t d;
  __device__ const T* at(int64_t b, int64_t h, int64_t t, int64_t c) const {
    return data + b * s.image + (h * d + c) * s.channel + t * s.token;
  }
};

template <typename A>
__device__ __forceinline__ A warp_sum(A x) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// The lane's channels of token t: r-th value is channel lane + 32 r (0 past d).
template <typename T, typename A>
__device__ __forceinline__ void load_token(const Operand<T>& o, int64_t b, int64_t h, int64_t t, int lane,
                                           A (&x)[kPerLane]) {
#pragma unroll
  for (int r = 0; r < kPerLane; ++r) {
    const int64_t c = lane + int64_t(r) * kWarp;
    x[r] = c < o.d ? to_acc(*o.at(b, h, t, c)) : A(0);
  }
}

template <typename T, typename A>
__device__ __forceinline__ A dot_token(const A (&x)[kPerLane], const Operand<T>& o, int64_t b, int64_t h, int64_t t,
                                       int lane) {
  A sum = A(0);
#pragma unroll
  for (int r = 0; r < kPerLane; ++r) {
    const int64_t c = lane + int64_t(r) * kWarp;
    if (c < o.d) sum += x[r] * to_acc(*o.at(b, h, t, c));
  }
  return warp_sum(sum);
}

template <typename T, typename A>
__device__ __forceinline__ void store_token(T* data, Strides s, int64_t d, int64_t b, int64_t h, int64_t t, int lane,
                                            const A (&x)[kPerLane]) {
#pragma unroll
  for (int r = 0; r < kPerLane; ++r) {
    const int64_t c = lane + int64_t(r) * kWarp;
    if (c < d) data[b * s.image + (h * d + c) * s.channel + t * s.token] = from_acc<T>(x[r]);
  }
}

// grad <- (grad - x_hat (x_hat . grad)) / norm, x_hat = x / norm; grad / eps where the norm is clamped.
template <typename A>
__device__ __forceinline__ void normalize_backward(A (&grad)[kPerLane], const A (&x)[kPerLane], A norm) {
  A dot = A(0);
#pragma unroll
  for (int r = 0; r < kPerLane; ++r) dot += x[r] / norm * grad[r];
  dot = norm > A(kNormEps) ? warp_sum(dot) : A(0);
#pragma unroll
  for (int r = 0; r < kPerLane; ++r) grad[r] = (grad[r] - x[r] / norm * dot) / norm;
}

// The warp's token and (image, head), or false past the end.
__device__ __forceinline__ bool warp_token(int64_t B, int64_t heads, int64_t N, int64_t& b, int64_t& h, int64_t& t) {
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  if (warp >= B * heads * N) return false;
  t = warp % N;
  h = (warp / N) % heads;
  b = warp / (N * heads);
  return true;
}

template <typename T>
__global__ void norms_kernel(Operand<T> x, typename Accumulate<T>::type* norms, int64_t B, int64_t heads, int64_t N) {
  using A = typename Accumulate<T>::type;
  int64_t b, h, t;
  if (!warp_token(B, heads, N, b, h, t)) return;
  const int lane = threadIdx.x % kWarp;
  A v[kPerLane];
  load_token(x, b, h, t, lane, v);
  A sum = A(0);
#pragma unroll
  for (int r = 0; r < kPerLane; ++r) sum += v[r] * v[r];
  sum = warp_sum(sum);
  if (lane == 0) norms[(b * heads + h) * N + t] = max(sqrt(sum), A(kNormEps));
}

template <typename T>
__global__ void forward_kernel(Operand<T> q, Operand<T> k, Operand<T> v,
                               const typename Accumulate<T>::type* temperature,
                               const typename Accumulate<T>::type* q_norm, const typename Accumulate<T>::type* k_norm,
                               T* out, Strides so, typename Accumulate<T>::type* logsumexp, Heads g) {
  using A = typename Accumulate<T>::type;
  int64_t b, h, i;
  if (!warp_token(g.B, g.heads, g.Nq, b, h, i)) return;
  const int lane = threadIdx.x % kWarp;
  const int64_t bh = b * g.heads + h;
  A x[kPerLane], acc[kPerLane] = {};
  load_token(q, b, h, i, lane, x);
  const A scale = temperature[h] / q_norm[bh * g.Nq + i];
  A max = -INFINITY, sum = A(0);
  for (int64_t j = 0; j < g.Nk; ++j) {
    const A s = dot_token(x, k, b, h, j, lane) * scale / k_norm[bh * g.Nk + j];
    const A new_max = s > max ? s : max;
    const A rescale = exp(max - new_max), p = exp(s - new_max);
    sum = sum * rescale + p;
#pragma unroll
    for (int r = 0; r < kPerLane; ++r) {
      const int64_t c = lane + int64_t(r) * kWarp;
      acc[r] = acc[r] * rescale + (c < g.d ? p * to_acc(*v.at(b, h, j, c)) : A(0));
    }
    max = new_max;
  }
#pragma unroll
  for (int r = 0; r < kPerLane; ++r) acc[r] /= sum;
  store_token(out, so, g.d, b, h, i, lane, acc);
  if (lane == 0) logsumexp[bh * g.Nq + i] = max + log(sum);
}

template <typename T>
__global__ void backward_queries_kernel(Operand<T> q, Operand<T> k, Operand<T> v, Operand<T> out, Operand<T> grad_out,
                                        const typename Accumulate<T>::type* temperature,
                                        const typename Accumulate<T>::type* q_norm,
                                        const typename Accumulate<T>::type* k_norm,
                                        const typename Accumulate<T>::type* logsumexp,
                                        typename Accumulate<T>::type* delta, T* grad_q, Strides sdq,
                                        typename Accumulate<T>::type* partial_t, Heads g) {
  using A = typename Accumulate<T>::type;
  int64_t b, h, i;
  if (!warp_token(g.B, g.heads, g.Nq, b, h, i)) return;
  const int lane = threadIdx.x % kWarp;
  const int64_t bh = b * g.heads + h, row = bh * g.Nq + i;
  A x[kPerLane], dout[kPerLane], gathered[kPerLane] = {};
  load_token(q, b, h, i, lane, x);
  load_token(grad_out, b, h, i, lane, dout);
  const A D = dot_token(dout, out, b, h, i, lane), t = temperature[h], norm = q_norm[row], lse = logsumexp[row];
  A grad_t = A(0);
  for (int64_t j = 0; j < g.Nk; ++j) {
    const A inverse = A(1) / k_norm[bh * g.Nk + j];
    const A cosine = dot_token(x, k, b, h, j, lane) / norm * inverse;
    const A ds = exp(t * cosine - lse) * (dot_token(dout, v, b, h, j, lane) - D);
    grad_t += ds * cosine;
#pragma unroll
    for (int r = 0; r < kPerLane; ++r) {
      const int64_t c = lane + int64_t(r) * kWarp;
      if (c < g.d) gathered[r] += ds * inverse * to_acc(*k.at(b, h, j, c));
    }
  }
#pragma unroll
  for (int r = 0; r < kPerLane; ++r) gathered[r] *= t;
  normalize_backward(gathered, x, norm);
  store_token(grad_q, sdq, g.d, b, h, i, lane, gathered);
  if (lane == 0) {
    delta[row] = D;
    partial_t[row] = grad_t;
  }
}

template <typename T>
__global__ void backward_keys_kernel(Operand<T> q, Operand<T> k, Operand<T> v, Operand<T> grad_out,
                                     const typename Accumulate<T>::type* temperature,
                                     const typename Accumulate<T>::type* q_norm,
                                     const typename Accumulate<T>::type* k_norm,
                                     const typename Accumulate<T>::type* logsumexp,
                                     const typename Accumulate<T>::type* delta, T* grad_k, Strides sdk, T* grad_v,
                                     Strides sdv, Heads g) {
  using A = typename Accumulate<T>::type;
  int64_t b, h, j;
  if (!warp_token(g.B, g.heads, g.Nk, b, h, j)) return;
  const int lane = threadIdx.x % kWarp;
  const int64_t bh = b * g.heads + h;
  A key[kPerLane], value[kPerLane], grad_keys[kPerLane] = {}, grad_values[kPerLane] = {};
  load_token(k, b, h, j, lane, key);
  load_token(v, b, h, j, lane, value);
  const A t = temperature[h], norm = k_norm[bh * g.Nk + j];
  for (int64_t i = 0; i < g.Nq; ++i) {
    const int64_t row = bh * g.Nq + i;
    const A inverse = A(1) / q_norm[row];
    const A p = exp(t * (dot_token(key, q, b, h, i, lane) / norm * inverse) - logsumexp[row]);
    const A ds = p * (dot_token(value, grad_out, b, h, i, lane) - delta[row]);
#pragma unroll
    for (int r = 0; r < kPerLane; ++r) {
      const int64_t c = lane + int64_t(r) * kWarp;
      if (c < g.d) {
        grad_values[r] += p * to_acc(*grad_out.at(b, h, i, c));
        grad_keys[r] += ds * t * inverse * to_acc(*q.at(b, h, i, c));
      }
    }
  }
  normalize_backward(grad_keys, key, norm);
  store_token(grad_k, sdk, g.d, b, h, j, lane, grad_keys);
  store_token(grad_v, sdv, g.d, b, h, j, lane, grad_values);
}

unsigned blocks_for_warps(int64_t warps) {
  return unsigned((warps + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

template <typename T>
Operand<T> operand(const void* data, Strides s, int64_t d) {
  return {static_cast<const T*>(data), s, d};
}

}  // namespace

cudaError_t proxy_attention_norms(DType dtype, const void* x, Strides sx, void* norms, int64_t B, int64_t heads,
                                  int64_t d, int64_t N, cudaStream_t stream) {
  if (d > kMaxHeadChannels) return cudaErrorInvalidValue;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Accumulate<T>::type;
    norms_kernel<T><<<blocks_for_warps(B * heads * N), kWarpsPerBlock * kWarp, 0, stream>>>(
        operand<T>(x, sx, d), static_cast<A*>(norms), B, heads, N);
    return cudaGetLastError();
  });
}

cudaError_t proxy_attention_forward(DType dtype, const void* q, Strides sq, const void* k, Strides sk, const void* v,
                                    Strides sv, const void* temperature, const void* q_norm, const void* k_norm,
                                    void* out, Strides so, void* logsumexp, Heads g, cudaStream_t stream) {
  if (g.d > kMaxHeadChannels) return cudaErrorInvalidValue;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Accumulate<T>::type;
    forward_kernel<T><<<blocks_for_warps(g.B * g.heads * g.Nq), kWarpsPerBlock * kWarp, 0, stream>>>(
        operand<T>(q, sq, g.d), operand<T>(k, sk, g.d), operand<T>(v, sv, g.d), static_cast<const A*>(temperature),
        static_cast<const A*>(q_norm), static_cast<const A*>(k_norm), static_cast<T*>(out), so,
        static_cast<A*>(logsumexp), g);
    return cudaGetLastError();
  });
}

cudaError_t proxy_attention_backward_queries(DType dtype, const void* q, Strides sq, const void* k, Strides sk,
                                             const void* v, Strides sv, const void* out, Strides so,
                                             const void* grad_out, Strides sg, const void* temperature,
                                             const void* q_norm, const void* k_norm, const void* logsumexp,
                                             void* delta, void* grad_q, Strides sdq, void* partial_t, Heads g,
                                             cudaStream_t stream) {
  if (g.d > kMaxHeadChannels) return cudaErrorInvalidValue;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Accumulate<T>::type;
    backward_queries_kernel<T><<<blocks_for_warps(g.B * g.heads * g.Nq), kWarpsPerBlock * kWarp, 0, stream>>>(
        operand<T>(q, sq, g.d), operand<T>(k, sk, g.d), operand<T>(v, sv, g.d), operand<T>(out, so, g.d),
        operand<T>(grad_out, sg, g.d), static_cast<const A*>(temperature), static_cast<const A*>(q_norm),
        static_cast<const A*>(k_norm), static_cast<const A*>(logsumexp), static_cast<A*>(delta),
        static_cast<T*>(grad_q), sdq, static_cast<A*>(partial_t), g);
    return cudaGetLastError();
  });
}

cudaError_t proxy_attention_backward_keys(DType dtype, const void* q, Strides sq, const void* k, Strides sk,
                                          const void* v, Strides sv, const void* grad_out, Strides sg,
                                          const void* temperature, const void* q_norm, const void* k_norm,
                                          const void* logsumexp, const void* delta, void* grad_k, Strides sdk,
                                          void* grad_v, Strides sdv, Heads g, cudaStream_t stream) {
  if (g.d > kMaxHeadChannels) return cudaErrorInvalidValue;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Accumulate<T>::type;
    backward_keys_kernel<T><<<blocks_for_warps(g.B * g.heads * g.Nk), kWarpsPerBlock * kWarp, 0, stream>>>(
        operand<T>(q, sq, g.d), operand<T>(k, sk, g.d), operand<T>(v, sv, g.d), operand<T>(grad_out, sg, g.d),
        static_cast<const A*>(temperature), static_cast<const A*>(q_norm), static_cast<const A*>(k_norm),
        static_cast<const A*>(logsumexp), static_cast<const A*>(delta), static_cast<T*>(grad_k), sdk,
        static_cast<T*>(grad_v), sdv, g);
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace pyairir
