// Loops over n values in at::vec vectors, with a partial vector at the end,
// and loads/stores that convert between a storage type and its accumulation
// type (bf16/fp16 -> float) one vector at a time.
#pragma once

#include "vec.h"

#include <ATen/OpMathType.h>

#include <type_traits>

namespace pyairir {

template <typename A>
using Vec = at::vec::Vectorized<A>;

template <typename scalar_t>
using acc_type = at::opmath_type<scalar_t>;

template <typename A>
inline Vec<A> load(const A* p, int64_t count) {
  return count == Vec<A>::size() ? Vec<A>::loadu(p) : Vec<A>::loadu(p, count);
}

// count (<= one vector of A) values of p as a vector of the accumulation type; missing lanes are 0.
template <typename scalar_t, typename A = acc_type<scalar_t>>
inline Vec<A> load_acc(const scalar_t* p, int64_t count) {
  if constexpr (std::is_same_v<scalar_t, A>) {
    return load(p, count);
  } else {
    if (count == Vec<A>::size()) {
      Vec<A> out;
      at::vec::load_to_float(p, out);
      return out;
    }
    A tmp[Vec<A>::size()] = {};
    for (int64_t i = 0; i < count; ++i) tmp[i] = A(p[i]);
    return Vec<A>::loadu(tmp);
  }
}

// Stores the first count lanes of v to p, converted to scalar_t.
template <typename scalar_t, typename A = acc_type<scalar_t>>
inline void store_acc(Vec<A> v, scalar_t* p, int64_t count) {
  if constexpr (std::is_same_v<scalar_t, A>) {
    v.store(p, count);
  } else {
    A tmp[Vec<A>::size()];
    v.store(tmp);
    at::vec::convert(tmp, p, count);
  }
}

// Calls f(i, count) for i = 0, V, 2V, ... with count = V lanes, or fewer at the end.
template <typename A, typename F>
inline void vec_for(int64_t n, F&& f) {
  constexpr int64_t V = Vec<A>::size();
  int64_t i = 0;
  for (; i + V <= n; i += V) f(i, V);
  if (i < n) f(i, n - i);
}

// sum_{i < n} term(i): term_vec(i) over whole vectors, term_scalar(i) over the tail.
template <typename A, typename FV, typename FS>
inline A vec_sum(int64_t n, FV&& term_vec, FS&& term_scalar) {
  constexpr int64_t V = Vec<A>::size();
  Vec<A> total(A(0));
  int64_t i = 0;
  for (; i + V <= n; i += V) total = total + term_vec(i);
  A sum = at::vec::vec_reduce_all<A>([](Vec<A> a, Vec<A> b) { return a + b; }, total);
  for (; i < n; ++i) sum += term_scalar(i);
  return sum;
}

}  // namespace pyairir
