// Torch-side helpers for the CUDA bindings (built only with a CUDA torch).
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>

#include "../launch.h"

namespace pyairir {
namespace cuda {

inline DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::Float32;
    case at::kDouble: return DType::Float64;
    case at::kBFloat16: return DType::BFloat16;
    case at::kHalf: return DType::Float16;
    default: TORCH_CHECK(false, "pyairir: no CUDA kernel for dtype ", t.scalar_type());
  }
}

inline void check_launch(cudaError_t status, const char* op) {
  TORCH_CHECK(status == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(status));
}

}  // namespace cuda
}  // namespace pyairir
