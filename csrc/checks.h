// Argument checks shared by the CPU and CUDA bindings. Every message names the
// op, the argument, what was expected and what came.
#pragma once

#include <ATen/ATen.h>

namespace pyairir {

// Checks that x is a non-empty floating (B, C, H, W) tensor, dense in NCHW or
// in channels_last, and returns which of the two it is.
inline bool check_image(const at::Tensor& x, const char* op, const char* name) {
  TORCH_CHECK(x.dim() == 4, op, ": ", name, " must be a 4-D (B, C, H, W) tensor, got ", x.dim(),
              "-D with shape ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op, ": ", name,
              " must be a floating tensor (float32, float64, bfloat16 or float16), got ", x.scalar_type());
  TORCH_CHECK(x.numel() > 0, op, ": ", name, " must not be empty, got shape ", x.sizes());
  const bool nchw = x.is_contiguous();
  const bool channels_last = x.is_contiguous(at::MemoryFormat::ChannelsLast);
  TORCH_CHECK(nchw || channels_last, op, ": ", name,
              " must be contiguous in NCHW or channels_last memory format, got strides ", x.strides(),
              " for shape ", x.sizes());
  // A tensor with C == 1 or H == W == 1 is dense in both; NCHW is then the
  // layout the kernels index it with.
  return !nchw;
}

// Checks that t is a contiguous 1-D tensor of `size` elements with x's dtype and device.
inline void check_channel_vector(const at::Tensor& t, int64_t size, const at::Tensor& x, const char* op,
                                 const char* name) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == size, op, ": ", name, " must have shape [", size,
              "] (one value per channel of x), got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), op, ": ", name, " must have the dtype of x (",
              x.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK(t.device() == x.device(), op, ": ", name, " must be on the device of x (", x.device(), "), got ",
              t.device());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
}

// Checks that g has the shape, dtype, device and memory format of x.
inline void check_like(const at::Tensor& g, const at::Tensor& x, bool channels_last, const char* op,
                       const char* name) {
  TORCH_CHECK(g.sizes() == x.sizes(), op, ": ", name, " must have the shape of x ", x.sizes(), ", got ",
              g.sizes());
  TORCH_CHECK(g.scalar_type() == x.scalar_type(), op, ": ", name, " must have the dtype of x (",
              x.scalar_type(), "), got ", g.scalar_type());
  TORCH_CHECK(g.device() == x.device(), op, ": ", name, " must be on the device of x (", x.device(), "), got ",
              g.device());
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  TORCH_CHECK(g.is_contiguous(format), op, ": ", name, " must be dense in the memory format of x (",
              channels_last ? "channels_last" : "NCHW", "), got strides ", g.strides());
}

// An optional 3x3 depthwise filter (channels, 1, 3, 3) and bias (channels,) that an op fuses,
// in the dtype of x (named x_name) and on its device; `per` says what a filter channel belongs
// to, for messages.
inline void check_depthwise_filter(const c10::optional<at::Tensor>& dw_weight, const c10::optional<at::Tensor>& dw_bias,
                                   int64_t channels, const at::Tensor& x, const char* x_name, const char* op,
                                   const char* per) {
  if (!dw_weight.has_value()) {
    TORCH_CHECK(!dw_bias.has_value(), op, ": dw_bias given without dw_weight");
    return;
  }
  const at::Tensor& w = *dw_weight;
  TORCH_CHECK(w.dim() == 4 && w.size(0) == channels && w.size(1) == 1 && w.size(2) == 3 && w.size(3) == 3, op,
              ": dw_weight must have shape [", channels, ", 1, 3, 3] (a 3x3 depthwise filter ", per, "), got ",
              w.sizes());
  TORCH_CHECK(w.scalar_type() == x.scalar_type(), op, ": dw_weight must have the dtype of ", x_name, " (",
              x.scalar_type(), "), got ", w.scalar_type());
  TORCH_CHECK(w.device() == x.device(), op, ": dw_weight must be on the device of ", x_name, " (", x.device(),
              "), got ", w.device());
  TORCH_CHECK(w.is_contiguous(), op, ": dw_weight must be contiguous");
  if (!dw_bias.has_value()) return;
  const at::Tensor& b = *dw_bias;
  TORCH_CHECK(b.dim() == 1 && b.size(0) == channels, op, ": dw_bias must have shape [", channels, "], got ",
              b.sizes());
  TORCH_CHECK(b.scalar_type() == x.scalar_type() && b.device() == x.device(), op, ": dw_bias must have the dtype and "
              "device of ", x_name, " (", x.scalar_type(), ", ", x.device(), "), got ", b.scalar_type(), ", ",
              b.device());
  TORCH_CHECK(b.is_contiguous(), op, ": dw_bias must be contiguous");
}

// gated_gelu's arguments: x (B, 2h, H, W), an optional 3x3 depthwise filter
// (2h, 1, 3, 3) and bias (2h,). Returns whether x is channels_last.
inline bool check_gated_gelu(const at::Tensor& x, const c10::optional<at::Tensor>& dw_weight,
                             const c10::optional<at::Tensor>& dw_bias, const char* op) {
  const bool channels_last = check_image(x, op, "x");
  const int64_t C2 = x.size(1);
  TORCH_CHECK(C2 % 2 == 0, op, ": x must have an even number of channels (two halves to gate), got ", C2);
  check_depthwise_filter(dw_weight, dw_bias, C2, x, "x", op, "per channel of x");
  return channels_last;
}

// gated_gelu_backward's grad_out: (B, C2 / 2, H, W), x's dtype and device, dense in x's layout.
inline void check_gated_gelu_grad(const at::Tensor& grad_out, const at::Tensor& x, bool channels_last,
                                  const char* op) {
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == x.size(0) && grad_out.size(1) == x.size(1) / 2 &&
                  grad_out.size(2) == x.size(2) && grad_out.size(3) == x.size(3),
              op, ": grad_out must have shape [", x.size(0), ", ", x.size(1) / 2, ", ", x.size(2), ", ", x.size(3),
              "], got ", grad_out.sizes());
  TORCH_CHECK(grad_out.scalar_type() == x.scalar_type(), op, ": grad_out must have the dtype of x (",
              x.scalar_type(), "), got ", grad_out.scalar_type());
  TORCH_CHECK(grad_out.device() == x.device(), op, ": grad_out must be on the device of x");
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  TORCH_CHECK(grad_out.is_contiguous(format), op, ": grad_out must be dense in the memory format of x (",
              channels_last ? "channels_last" : "NCHW", "), got strides ", grad_out.strides());
}

}  // namespace pyairir
