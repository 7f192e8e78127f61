// Element-wise reduction kernels. One simple loop per (storage type x operator), instantiated from templates,
// so the compiler auto-vectorizes each; the dtype/op switch runs once per call, never per element.
// Loads and stores go through memcpy: buffers need no alignment and nothing is type-punned.
#include "reduce.h"

#include <cstring>
#include <type_traits>

#include "codec.h"

#include "kernel_config.h"

namespace tccl {
namespace {

using Byte = unsigned char;

template <class T>
inline T load(const Byte* p, size_t i) {
  T v;
  std::memcpy(&v, p + i * sizeof(T), sizeof(T));
  return v;
}
template <class T>
inline void store(Byte* p, size_t i, T v) {
  std::memcpy(p + i * sizeof(T), &v, sizeof(T));
}

// ---- operators: static S apply(S a, S b) on the stored representation S ----

// Integers: Sum/Prod in unsigned arithmetic at least as wide as unsigned int (no promotion to signed int, so
// no overflow UB), wrapping modulo 2^bits; the conversion back to T is modular (C++20).
template <class T>
using WrapT = std::conditional_t<(sizeof(T) < sizeof(unsigned)), unsigned, std::make_unsigned_t<T>>;

template <class T> struct IntSum { static T apply(T a, T b) { return static_cast<T>(WrapT<T>(a) + WrapT<T>(b)); } };
template <class T> struct IntProd { static T apply(T a, T b) { return static_cast<T>(WrapT<T>(a) * WrapT<T>(b)); } };
template <class T> struct IntMin { static T apply(T a, T b) { return b < a ? b : a; } };
template <class T> struct IntMax { static T apply(T a, T b) { return a < b ? b : a; } };

template <class F> struct FloatTraits;
template <> struct FloatTraits<float> { using U = uint32_t; static constexpr U kQNaN = 0x7FC00000u; };
template <> struct FloatTraits<double> { using U = uint64_t; static constexpr U kQNaN = 0x7FF8000000000000ull; };

template <class F> inline typename FloatTraits<F>::U toBits(F f) { typename FloatTraits<F>::U u; std::memcpy(&u, &f, sizeof f); return u; }
template <class F> inline F fromBits(typename FloatTraits<F>::U u) { F f; std::memcpy(&f, &u, sizeof f); return f; }

template <class F> struct FSum { static F apply(F a, F b) { return a + b; } };
template <class F> struct FProd { static F apply(F a, F b) { return a * b; } };
// Order-independent Min/Max: any NaN operand gives the canonical quiet NaN; equal operands differ at most in
// the sign of zero, and OR-ing (min) / AND-ing (max) their bits picks -0 / +0 whichever comes first.
// Selections are written with masks so the loops stay branch-free and vectorize.
template <class F> struct FMin {
  static F apply(F a, F b) {
    using U = typename FloatTraits<F>::U;
    const U ua = toBits(a), ub = toBits(b);
    const U lt = U(0) - U(a < b), gt = U(0) - U(b < a), nan = U(0) - U((a != a) | (b != b));
    const U r = (ua & lt) | (ub & gt) | ((ua | ub) & ~(lt | gt));
    return fromBits<F>((r & ~nan) | (FloatTraits<F>::kQNaN & nan));
  }
};
template <class F> struct FMax {
  static F apply(F a, F b) {
    using U = typename FloatTraits<F>::U;
    const U ua = toBits(a), ub = toBits(b);
    const U gt = U(0) - U(b < a), lt = U(0) - U(a < b), nan = U(0) - U((a != a) | (b != b));
    const U r = (ua & gt) | (ub & lt) | ((ua & ub) & ~(lt | gt));
    return fromBits<F>((r & ~nan) | (FloatTraits<F>::kQNaN & nan));
  }
};

// float16 / bfloat16 stored as uint16 bits: widen to float32, apply, round back to nearest-even.
// The float32 canonical NaN narrows to 0x7E00 (f16) / 0x7FC0 (bf16).
struct HalfConv { static float in(uint16_t h) { return detail::f16ToF32(h); } static uint16_t out(float f) { return detail::f32ToF16(f); } };
struct BHalfConv { static float in(uint16_t h) { return detail::bf16ToF32(h); } static uint16_t out(float f) { return detail::f32ToBf16(f); } };
template <class C, class Op> struct Narrow {
  static uint16_t apply(uint16_t a, uint16_t b) { return C::out(Op::apply(C::in(a), C::in(b))); }
};

template <class T> struct IntOps { using Storage = T; using Sum = IntSum<T>; using Prod = IntProd<T>; using Min = IntMin<T>; using Max = IntMax<T>; };
template <class F> struct FloatOps { using Storage = F; using Sum = FSum<F>; using Prod = FProd<F>; using Min = FMin<F>; using Max = FMax<F>; };
template <class C> struct NarrowOps {
  using Storage = uint16_t;
  using Sum = Narrow<C, FSum<float>>; using Prod = Narrow<C, FProd<float>>;
  using Min = Narrow<C, FMin<float>>; using Max = Narrow<C, FMax<float>>;
};

// ---- loops ----

// d[i] = op(d[i], s[i]), or op(s[i], d[i]) when Swap (keeps operand order of reduceTo when dst == b).
template <class S, class Op, bool Swap>
void loopInto(Byte* TCCL_RESTRICT d, const Byte* TCCL_RESTRICT s, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const S x = load<S>(d, i), y = load<S>(s, i);
    store<S>(d, i, Swap ? Op::apply(y, x) : Op::apply(x, y));
  }
}
template <class S, class Op>
void loopTo(Byte* TCCL_RESTRICT d, const Byte* TCCL_RESTRICT a, const Byte* TCCL_RESTRICT b, size_t n) {
  for (size_t i = 0; i < n; ++i) store<S>(d, i, Op::apply(load<S>(a, i), load<S>(b, i)));
}

// w[i] = d[i]; d[i] = op(d[i], s[i]).
template <class S, class Op>
void loopIntoSaving(Byte* TCCL_RESTRICT d, const Byte* TCCL_RESTRICT s, Byte* TCCL_RESTRICT w, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const S x = load<S>(d, i), y = load<S>(s, i);
    store<S>(w, i, x);
    store<S>(d, i, Op::apply(x, y));
  }
}

// d[i] = op(d[i], d[i]): every operand is the same buffer (x (op) x), no restrict.
template <class S, class Op>
void loopSelf(Byte* d, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const S x = load<S>(d, i);
    store<S>(d, i, Op::apply(x, x));
  }
}

template <class S, class Op>
void run(Byte* d, const Byte* a, const Byte* b, size_t n) {
  if (d == a && d == b) loopSelf<S, Op>(d, n);
  else if (d == a) loopInto<S, Op, false>(d, b, n);
  else if (d == b) loopInto<S, Op, true>(d, a, n);
  else loopTo<S, Op>(d, a, b, n);
}

// The one switch from (dtype, op) to a kernel: K<S, Operator>::run(args...) for the storage type and operator.
template <template <class, class> class K, class... Args>
void select(DType t, ReduceOp op, Args... args) {
  auto byOp = [&](auto ops) {
    using Ops = decltype(ops);
    switch (op) {
      case ReduceOp::Sum:
      case ReduceOp::Avg: return K<typename Ops::Storage, typename Ops::Sum>::run(args...);
      case ReduceOp::Prod: return K<typename Ops::Storage, typename Ops::Prod>::run(args...);
      case ReduceOp::Min: return K<typename Ops::Storage, typename Ops::Min>::run(args...);
      case ReduceOp::Max: return K<typename Ops::Storage, typename Ops::Max>::run(args...);
    }
  };
  switch (t) {
    case DType::F32: return byOp(FloatOps<float>{});
    case DType::F64: return byOp(FloatOps<double>{});
    case DType::F16: return byOp(NarrowOps<HalfConv>{});
    case DType::BF16: return byOp(NarrowOps<BHalfConv>{});
    case DType::I8: return byOp(IntOps<int8_t>{});
    case DType::U8: return byOp(IntOps<uint8_t>{});
    case DType::I16: return byOp(IntOps<int16_t>{});
    case DType::U16: return byOp(IntOps<uint16_t>{});
    case DType::I32: return byOp(IntOps<int32_t>{});
    case DType::U32: return byOp(IntOps<uint32_t>{});
    case DType::I64: return byOp(IntOps<int64_t>{});
    case DType::U64: return byOp(IntOps<uint64_t>{});
  }
}

template <class S, class Op>
struct Combine {
  static void run(Byte* d, const Byte* a, const Byte* b, size_t n) { ::tccl::run<S, Op>(d, a, b, n); }
};
template <class S, class Op>
struct CombineSaving {
  static void run(Byte* d, const Byte* s, Byte* w, size_t n) { loopIntoSaving<S, Op>(d, s, w, n); }
};

// ---- average ----

// Integers up to 32 bits: |x| < 2^32 and 1 < divisor < 2^32 are exact in float64, and a non-integer true
// quotient k - r/divisor (|k| * divisor < 2^32) lies at least 2^-32 * |k| away from k, far more than float64
// rounding (2^-53 * |k|), so truncating the float64 quotient is the exact truncating integer division.
template <class T>
void divSmallInt(Byte* TCCL_RESTRICT p, size_t n, uint32_t divisor) {
  const double d = static_cast<double>(divisor);
  for (size_t i = 0; i < n; ++i) store<T>(p, i, static_cast<T>(static_cast<double>(load<T>(p, i)) / d));
}
template <class T>
void divWideInt(Byte* TCCL_RESTRICT p, size_t n, uint32_t divisor) {
  const T d = static_cast<T>(divisor);  // positive: no INT64_MIN / -1 case
  for (size_t i = 0; i < n; ++i) store<T>(p, i, static_cast<T>(load<T>(p, i) / d));
}
void divF32(Byte* TCCL_RESTRICT p, size_t n, uint32_t divisor) {
  const double d = static_cast<double>(divisor);
  for (size_t i = 0; i < n; ++i) store<float>(p, i, static_cast<float>(static_cast<double>(load<float>(p, i)) / d));
}
void divF64(Byte* TCCL_RESTRICT p, size_t n, uint32_t divisor) {
  const double d = static_cast<double>(divisor);
  for (size_t i = 0; i < n; ++i) store<double>(p, i, load<double>(p, i) / d);
}
template <class C>
void divNarrow(Byte* TCCL_RESTRICT p, size_t n, uint32_t divisor) {
  const float d = static_cast<float>(divisor);
  for (size_t i = 0; i < n; ++i) store<uint16_t>(p, i, C::out(C::in(load<uint16_t>(p, i)) / d));
}

}  // namespace

void reduceInto(DType t, ReduceOp op, void* dst, const void* src, size_t n) {
  if (n == 0) return;
  auto* d = static_cast<Byte*>(dst);
  select<Combine>(t, op, d, static_cast<const Byte*>(d), static_cast<const Byte*>(src), n);
}

void reduceIntoSaving(DType t, ReduceOp op, void* dst, const void* src, void* saved, size_t n) {
  if (n == 0) return;
  select<CombineSaving>(t, op, static_cast<Byte*>(dst), static_cast<const Byte*>(src), static_cast<Byte*>(saved), n);
}

void reduceTo(DType t, ReduceOp op, void* dst, const void* a, const void* b, size_t n) {
  if (n == 0) return;
  select<Combine>(t, op, static_cast<Byte*>(dst), static_cast<const Byte*>(a), static_cast<const Byte*>(b), n);
}

void finishAverage(DType t, void* data, size_t n, uint32_t divisor) {
  if (n == 0 || divisor <= 1) return;
  auto* p = static_cast<Byte*>(data);
  switch (t) {
    case DType::F32: divF32(p, n, divisor); return;
    case DType::F64: divF64(p, n, divisor); return;
    case DType::F16: divNarrow<HalfConv>(p, n, divisor); return;
    case DType::BF16: divNarrow<BHalfConv>(p, n, divisor); return;
    case DType::I8: divSmallInt<int8_t>(p, n, divisor); return;
    case DType::U8: divSmallInt<uint8_t>(p, n, divisor); return;
    case DType::I16: divSmallInt<int16_t>(p, n, divisor); return;
    case DType::U16: divSmallInt<uint16_t>(p, n, divisor); return;
    case DType::I32: divSmallInt<int32_t>(p, n, divisor); return;
    case DType::U32: divSmallInt<uint32_t>(p, n, divisor); return;
    case DType::I64: divWideInt<int64_t>(p, n, divisor); return;
    case DType::U64: divWideInt<uint64_t>(p, n, divisor); return;
  }
}

}  // namespace tccl
