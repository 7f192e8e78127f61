// Element-wise reduction kernels for every (DType x ReduceOp) pair. Semantics (integer wrap-around, IEEE
// floats, float16/bfloat16 rounding, order-independent Min/Max, NaN and signed zeros): docs/kernels.md.
// Buffers need no particular alignment. Unknown dtype/op values are ignored (nothing is written).
#pragma once
#include <cstddef>
#include <cstdint>

#include "dtype.h"

namespace tccl {

// dst[i] = dst[i] (op) src[i] for i < n. Avg accumulates like Sum (the caller divides once at the end).
// dst and src must not overlap (unless dst == src exactly).
void reduceInto(DType t, ReduceOp op, void* dst, const void* src, size_t n);
// reduceInto that also saves what dst held: saved[i] = dst[i], then dst[i] = dst[i] (op) src[i], in one pass (an
// in-place all-reduce keeps the caller's input for restoring it after a failure). No buffer may overlap another.
void reduceIntoSaving(DType t, ReduceOp op, void* dst, const void* src, void* saved, size_t n);
// For Avg: data[i] = data[i] / divisor, done once by the owner of a chunk. Integers: truncating division
// toward zero. float16/bfloat16: computed in float32, rounded back to nearest-even. float32: computed in float64
// and rounded once (correctly rounded quotient). divisor 0 or 1 leaves data unchanged.
void finishAverage(DType t, void* data, size_t n, uint32_t divisor);
// Same reduction, out of place: dst[i] = a[i] (op) b[i]. dst may be exactly a or exactly b; any other overlap
// is not allowed.
void reduceTo(DType t, ReduceOp op, void* dst, const void* a, const void* b, size_t n);

}  // namespace tccl
