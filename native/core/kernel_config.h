// Compiler settings shared by the kernel translation units (reduce.cpp, codec.cpp): no contraction of a*b+c
// into a fused multiply-add, since results must be bit-identical on every platform (docs/kernels.md), and a
// portable restrict qualifier. Include it first in those files only.
#pragma once

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#if defined(_MSC_VER) && !defined(__clang__)
#define TCCL_RESTRICT __restrict
#else
#define TCCL_RESTRICT __restrict__
#endif
