// Element types and reduction operators shared by every part of the native core.
#pragma once
#include <cstddef>
#include <cstdint>

namespace tccl {

// Wire values: these numbers travel in frame headers and in the JS binding, so never renumber.
enum class DType : uint8_t {
  F32 = 0, F64 = 1, F16 = 2, BF16 = 3,
  I8 = 4, U8 = 5, I16 = 6, U16 = 7, I32 = 8, U32 = 9, I64 = 10, U64 = 11,
};
constexpr int kDTypeCount = 12;

enum class ReduceOp : uint8_t { Sum = 0, Avg = 1, Prod = 2, Min = 3, Max = 4 };
constexpr int kReduceOpCount = 5;

inline size_t dtypeSize(DType t) {
  switch (t) {
    case DType::F64: case DType::I64: case DType::U64: return 8;
    case DType::F32: case DType::I32: case DType::U32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: case DType::U16: return 2;
    case DType::I8: case DType::U8: return 1;
  }
  return 0;
}

inline bool isValidDType(unsigned v) { return v < static_cast<unsigned>(kDTypeCount); }
inline bool isValidReduceOp(unsigned v) { return v < static_cast<unsigned>(kReduceOpCount); }
inline bool isFloat(DType t) { return t == DType::F32 || t == DType::F64 || t == DType::F16 || t == DType::BF16; }

const char* dtypeName(DType t);
const char* reduceOpName(ReduceOp op);

}  // namespace tccl
