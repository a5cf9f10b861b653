// at::vec for the instruction set this file is compiled for. Include it
// before any other ATen header in a CPU kernel.
//
// ATen compiles its own kernels once per instruction set and picks one at run
// time; an extension is compiled once, for the -march that setup.py passes
// (the build machine's CPU by default). at::vec selects its implementation by
// the CPU_CAPABILITY_* macros, which are set here from what the compiler
// targets, so that Vectorized<float> is 16 lanes under AVX-512, 8 under AVX2.
#pragma once

#if !defined(CPU_CAPABILITY)
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
#define CPU_CAPABILITY_AVX512
#define CPU_CAPABILITY AVX512
#elif defined(__AVX2__) && defined(__FMA__)
#define CPU_CAPABILITY_AVX2
#define CPU_CAPABILITY AVX2
#endif
#endif

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
