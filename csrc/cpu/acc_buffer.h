// Reading and writing reduced-precision data through accumulation-type
// buffers, so a kernel has one code path in float (double for double).
#pragma once

#include "vec_loops.h"

#include <type_traits>

namespace pyairir {

// n values of src as acc_type: src itself if it already is, else converted into buffer.
template <typename scalar_t>
const acc_type<scalar_t>* as_acc(const scalar_t* src, acc_type<scalar_t>* buffer, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, acc_type<scalar_t>>) {
    return src;
  } else {
    at::vec::convert(src, buffer, n);
    return buffer;
  }
}

// Where to write n acc_type results destined for dst: dst itself if the types
// agree, else buffer (then call store_acc_buffer to convert into dst).
template <typename scalar_t>
acc_type<scalar_t>* acc_out(scalar_t* dst, acc_type<scalar_t>* buffer) {
  if constexpr (std::is_same_v<scalar_t, acc_type<scalar_t>>) {
    return dst;
  } else {
    return buffer;
  }
}

template <typename scalar_t>
void store_acc_buffer(const acc_type<scalar_t>* written, scalar_t* dst, int64_t n) {
  if constexpr (!std::is_same_v<scalar_t, acc_type<scalar_t>>) {
    at::vec::convert(written, dst, n);
  }
}

}  // namespace pyairir
