// Small formatting helpers shared by reports and error messages.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace alpa {

// "[4,16,64]"
std::string format_dims(const std::vector<int64_t>& dims);
// 1234567 -> "1.23M", 39e9 -> "39.0B" (parameter counts, FLOPs)
std::string format_count(double value);
// bytes -> "1.50 GiB"
std::string format_bytes(double bytes);

}  // namespace alpa
