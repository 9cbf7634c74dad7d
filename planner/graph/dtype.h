// Element types of graph tensors.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace alpa {

enum class DType : uint8_t {
  kFloat32,
  kFloat16,
  kBFloat16,
  kFloat64,
  kInt64,
  kInt32,
  kInt8,
  kUInt8,
  kBool,
};

// Size of one element in bytes.
int64_t dtype_bytes(DType dtype);
std::string_view dtype_name(DType dtype);  // "float32", "int64", ...
std::optional<DType> dtype_from_name(std::string_view name);
bool is_floating(DType dtype);

}  // namespace alpa
