// Views of one head's (d, count) block of a head operand (csrc/head_operand.h) for GEMMs on CPU:
// no copies, whichever of NCHW or channels_last the operand is a slice of. Shared by the CPU
// kernels of mdta and proxy_attention.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

namespace pyairir {

// MKL's C entry for the calling thread's number of GEMM threads, where torch's BLAS is MKL
// (libtorch_cpu exports it); a weak reference, null in a torch without MKL.
extern "C" int MKL_Set_Num_Threads_Local(int threads) __attribute__((weak));

// Holds this thread's MKL GEMMs to one thread while it lives (restoring the previous setting; 0 is MKL's global one).
struct SingleThreadedMkl {
  int previous = MKL_Set_Num_Threads_Local ? MKL_Set_Num_Threads_Local(1) : 0;
  SingleThreadedMkl() = default;
  SingleThreadedMkl(const SingleThreadedMkl&) = delete;
  SingleThreadedMkl& operator=(const SingleThreadedMkl&) = delete;
  ~SingleThreadedMkl() {
    if (MKL_Set_Num_Threads_Local) MKL_Set_Num_Threads_Local(previous);
  }
};

// Runs f(t) for t in [0, n), in parallel, where f calls single-threaded ATen ops (GEMMs on views).
// The workers take the caller's thread-local state: under torch.inference_mode the tensors are
// inference tensors, which ATen refuses to write in a thread outside inference mode. No autograd
// is recorded inside. Each task's GEMMs run with MKL held to one thread: MKL picks its kernel by
// the threads it may use, even inside a parallel region, and on some CPUs (seen on a Xeon, not on
// an EPYC) the kernels sum in different orders, so results would depend on the thread count.
template <typename F>
void parallel_aten_tasks(int64_t n, F&& f) {
  const at::ThreadLocalState caller;
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    const at::ThreadLocalStateGuard state(caller);
    const at::NoGradGuard no_grad;
    const SingleThreadedMkl one_thread;
    for (int64_t t = begin; t < end; ++t) f(t);
  });
}

// Where head h of image b starts in a (B, C, H, W) tensor, and its (d, N) matrix strides.
struct Operand {
  void* data;
  int64_t batch_stride, channel_stride, pixel_stride;
  at::ScalarType dtype;
};

inline Operand operand(const at::Tensor& t) {
  return {t.data_ptr(), t.stride(0), t.stride(1), t.stride(3), t.scalar_type()};
}

// The (d, count) block of the head's matrix starting at pixel p0, as a tensor view (no copy).
inline at::Tensor block(const Operand& o, int64_t d, int64_t b, int64_t h, int64_t p0, int64_t count) {
  const int64_t element = c10::elementSize(o.dtype);
  char* start = static_cast<char*>(o.data) +
                (b * o.batch_stride + h * d * o.channel_stride + p0 * o.pixel_stride) * element;
  return at::from_blob(start, {d, count}, {o.channel_stride, o.pixel_stride}, at::TensorOptions().dtype(o.dtype));
}

// destination = A B (+ the initial value `add`), in whichever orientation makes the destination
// row-major, so that the GEMM writes it in place (a column-major destination, as channels_last
// gives, would otherwise go through a temporary and a copy).
inline void gemm_into(at::Tensor destination, const at::Tensor& a, const at::Tensor& b,
                      const c10::optional<at::Tensor>& add = c10::nullopt) {
  const bool transpose = destination.stride(0) == 1 && destination.size(1) > 1;
  at::Tensor out = transpose ? destination.t() : destination;
  const at::Tensor left = transpose ? b.t() : a, right = transpose ? a.t() : b;
  if (add.has_value()) {
    at::addmm_out(out, transpose ? add->t() : *add, left, right);
  } else {
    at::mm_out(out, left, right);
  }
}

}  // namespace pyairir
