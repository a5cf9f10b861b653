// mdta in CUDA, mirroring triton_kernels/mdta.py: a Gram pass (partial X Y^T and
// squared norms per chunk of pixels, summed afterwards in chunk order) and an
// apply pass (M X + diag(s) R), one thread per output value.
#include "mdta.h"
#include "numeric.cuh"

namespace pyairir {
namespace cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ int64_t at(const Strides& s, int64_t b, int64_t c, int64_t p) {
  return b * s.batch + c * s.channel + p * s.pixel;
}

// One thread per (bh, chunk, i, j): the chunk's dot product of row i of X and row j of Y.
template <typename T>
__global__ void gram_kernel(const T* x, Strides xs, const T* y, Strides ys, typename Accumulate<T>::type* gram,
                            int64_t total, int64_t heads, int64_t d, int64_t N, int64_t chunk_size, int64_t chunks) {
  using A = typename Accumulate<T>::type;
  const int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= total) return;
  const int64_t j = index % d, i = (index / d) % d, chunk = (index / (d * d)) % chunks, bh = index / (d * d * chunks);
  const int64_t b = bh / heads, h = bh % heads;
  const int64_t p_end = min(N, (chunk + 1) * chunk_size);
  A sum = A(0);
  for (int64_t p = chunk * chunk_size; p < p_end; ++p)
    sum += to_acc(x[at(xs, b, h * d + i, p)]) * to_acc(y[at(ys, b, h * d + j, p)]);
  gram[index] = sum;
}

// One thread per (bh, chunk, i): the chunk's sums of x_i^2 and y_i^2, at [bh][chunk][0][i] and [1][i].
template <typename T>
__global__ void squares_kernel(const T* x, Strides xs, const T* y, Strides ys, typename Accumulate<T>::type* squares,
                               int64_t total, int64_t heads, int64_t d, int64_t N, int64_t chunk_size,
                               int64_t chunks) {
  using A = typename Accumulate<T>::type;
  const int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= total) return;
  const int64_t i = index % d, slot = index / d, chunk = slot % chunks, bh = slot / chunks;
  const int64_t b = bh / heads, h = bh % heads;
  const int64_t p_end = min(N, (chunk + 1) * chunk_size);
  A sx = A(0), sy = A(0);
  for (int64_t p = chunk * chunk_size; p < p_end; ++p) {
    const A xv = to_acc(x[at(xs, b, h * d + i, p)]), yv = to_acc(y[at(ys, b, h * d + i, p)]);
    sx += xv * xv;
    sy += yv * yv;
  }
  squares[slot * 2 * d + i] = sx;
  squares[slot * 2 * d + d + i] = sy;
}

// One thread per output value; consecutive threads take consecutive pixels (or, for a
// pixel-major output, consecutive channels) so that writes coalesce.
template <typename T>
__global__ void apply_kernel(const typename Accumulate<T>::type* m, const T* x, Strides xs, const T* residual,
                             Strides rs, const typename Accumulate<T>::type* scale, T* out, Strides os,
                             int64_t total, int64_t heads, int64_t d, int64_t N) {
  using A = typename Accumulate<T>::type;
  const int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= total) return;
  const int64_t C = heads * d;
  const bool pixel_major = os.channel == 1;
  const int64_t c = pixel_major ? index % C : (index / N) % C;
  const int64_t p = pixel_major ? (index / C) % N : index % N;
  const int64_t b = index / (C * N), h = c / d, i = c % d, bh = b * heads + h;
  const A* row = m + (bh * d + i) * d;
  A sum = A(0);
  for (int64_t j = 0; j < d; ++j) sum += row[j] * to_acc(x[at(xs, b, h * d + j, p)]);
  if (residual) sum += scale[bh * d + i] * to_acc(residual[at(rs, b, c, p)]);
  out[at(os, b, c, p)] = from_acc<T>(sum);
}

unsigned blocks_for(int64_t n) { return unsigned((n + kThreads - 1) / kThreads); }

}  // namespace

cudaError_t mdta_gram(DType dtype, const void* x, Strides xs, const void* y, Strides ys, void* gram, void* squares,
                      int64_t B, int64_t heads, int64_t d, int64_t N, int64_t chunk_size, cudaStream_t stream) {
  const int64_t chunks = (N + chunk_size - 1) / chunk_size;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Accumulate<T>::type;
    const int64_t total = B * heads * chunks * d * d;
    gram_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(static_cast<const T*>(x), xs,
                                                               static_cast<const T*>(y), ys, static_cast<A*>(gram),
                                                               total, heads, d, N, chunk_size, chunks);
    if (squares) {
      const int64_t rows = B * heads * chunks * d;
      squares_kernel<T><<<blocks_for(rows), kThreads, 0, stream>>>(static_cast<const T*>(x), xs,
                                                                   static_cast<const T*>(y), ys,
                                                                   static_cast<A*>(squares), rows, heads, d, N,
                                                                   chunk_size, chunks);
    }
    return cudaGetLastError();
  });
}

cudaError_t mdta_apply(DType dtype, const void* m, const void* x, Strides xs, const void* residual, Strides rs,
                       const void* scale, void* out, Strides os, int64_t B, int64_t heads, int64_t d, int64_t N,
                       cudaStream_t stream) {
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Accumulate<T>::type;
    const int64_t total = B * heads * d * N;
    apply_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(
        static_cast<const A*>(m), static_cast<const T*>(x), xs, static_cast<const T*>(residual), rs,
        static_cast<const A*>(scale), static_cast<T*>(out), os, total, heads, d, N);
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace pyairir
