// Launchers of the mdta CUDA kernels (mdta.cu): the two passes over the pixels.
// Tensors are (B, C = heads * d, N pixels) addressed by (batch, channel, pixel)
// strides; matrices m (B * heads, d, d), scale (B * heads, d) and the partial
// sums are dense, in the accumulation type (float, double for float64).
#pragma once

#include "launch.h"

namespace pyairir {
namespace cuda {

struct Strides {
  int64_t batch, channel, pixel;
};

// gram[bh][chunk] = X Y^T over the chunk's pixels; squares[bh][chunk] = (sum x^2, sum y^2)
// per row (skipped when squares is null). chunks = ceil(N / chunk_size).
cudaError_t mdta_gram(DType dtype, const void* x, Strides xs, const void* y, Strides ys, void* gram, void* squares,
                      int64_t B, int64_t heads, int64_t d, int64_t N, int64_t chunk_size, cudaStream_t stream);

// out[b, h d + i, p] = sum_j m[bh][i][j] x[b, h d + j, p] + scale[bh][i] residual[b, h d + i, p]
// (the residual term only when residual is non-null).
cudaError_t mdta_apply(DType dtype, const void* m, const void* x, Strides xs, const void* residual, Strides rs,
                       const void* scale, void* out, Strides os, int64_t B, int64_t heads, int64_t d, int64_t N,
                       cudaStream_t stream);

}  // namespace cuda
}  // namespace pyairir
