// What a CUDA launcher takes: raw pointers, sizes, a dtype tag and a stream.
// Plain C++ (no torch, no device code), included by the .cu kernels and by
// the torch bindings alike.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace pyairir {
namespace cuda {

enum class DType { Float32, Float64, BFloat16, Float16 };

}  // namespace cuda
}  // namespace pyairir
