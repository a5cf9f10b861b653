// The exact (erf) GELU of GDFN and LUPI's Degradation-aware Block, vectorised:
//   GELU(z) = z Φ(z),  GELU'(z) = Φ(z) + z φ(z),  Φ(z) = (1 + erf(z / √2)) / 2.
//
// float: erf(x) = x P(x²) / Q(x²) on |x| <= 4 (beyond, erf rounds to ±1 in float), a
// rational fit made for pyairir by scripts/fit_erf.py: |error| <= 3.4e-7 in float arithmetic,
// like at::vec's own float erf (<= 1.5e-7) but without its exp, about twice as fast.
// double (the float64 checks): at::vec's erf, accurate to the last bits.
#pragma once

#include <cmath>
#include <type_traits>

#include "vec_loops.h"

namespace pyairir {

template <typename A>
inline Vec<A> vec_erf(Vec<A> x) {
  if constexpr (std::is_same_v<A, float>) {
    const Vec<A> c = at::vec::clamp(x, Vec<A>(-4.f), Vec<A>(4.f));
    const Vec<A> t = c * c;
    Vec<A> p(-1.320223308e-08f);
    for (const float a : {4.684779469e-06f, 3.796087985e-04f, 3.849606263e-03f, 5.431689695e-02f,
                          1.852030903e-01f, 1.128379226e+00f})
      p = at::vec::fmadd(p, t, Vec<A>(a));
    Vec<A> q(6.311059406e-05f);
    for (const float b : {1.307568746e-03f, 1.546207909e-02f, 1.139583588e-01f, 4.974653721e-01f, 1.f})
      q = at::vec::fmadd(q, t, Vec<A>(b));
    return c * p / q;
  } else {
    return x.erf();
  }
}

template <typename A>
inline Vec<A> gelu_cdf(Vec<A> z) {
  return at::vec::fmadd(vec_erf(z * Vec<A>(A(M_SQRT1_2))), Vec<A>(A(0.5)), Vec<A>(A(0.5)));
}

template <typename A>
inline Vec<A> gelu(Vec<A> z) {
  return z * gelu_cdf(z);
}

template <typename A>
inline Vec<A> gelu_derivative(Vec<A> z) {
  const Vec<A> pdf = (z * z * Vec<A>(A(-0.5))).exp() * Vec<A>(A(0.5 * M_2_SQRTPI * M_SQRT1_2));
  return at::vec::fmadd(z, pdf, gelu_cdf(z));
}

}  // namespace pyairir
