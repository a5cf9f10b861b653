// Attention operands split into heads: a (B, C, H, W) tensor whose C channels form `heads` groups
// of d, over the H * W pixels (tokens). Such an operand may be a channel slice of one NCHW or
// channels_last tensor (as qkv.chunk(3) gives): its pixels flatten to one axis, and either its
// channels (pixel-major) or its pixels (channel-major) have unit stride. Shared by mdta and
// proxy_attention, CPU and CUDA.
#pragma once

#include <ATen/ATen.h>

namespace pyairir {

// Checks that t is a non-empty floating (B, C, H, W) head operand as above.
inline void check_head_operand(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.dim() == 4, op, ": ", name, " must be a 4-D (B, C, H, W) tensor, got ", t.dim(), "-D with shape ",
              t.sizes());
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": ", name,
              " must be a floating tensor (float32, float64, bfloat16 or float16), got ", t.scalar_type());
  TORCH_CHECK(t.numel() > 0, op, ": ", name, " must not be empty, got shape ", t.sizes());
  const bool pixels_flatten = t.size(2) == 1 || t.stride(2) == t.size(3) * t.stride(3);
  TORCH_CHECK(pixels_flatten && (t.stride(1) == 1 || t.stride(3) == 1), op, ": ", name,
              " must be NCHW or channels_last, or a channel slice of such a tensor, got strides ", t.strides(),
              " for shape ", t.sizes());
}

// An empty tensor of t's sizes, channels_last if t is pixel-major, else NCHW.
inline at::Tensor empty_like_layout(const at::Tensor& t) {
  const bool pixel_major = t.stride(1) == 1 && t.size(1) > 1;
  return at::empty(t.sizes(), t.options().memory_format(pixel_major ? at::MemoryFormat::ChannelsLast
                                                                    : at::MemoryFormat::Contiguous));
}

}  // namespace pyairir
