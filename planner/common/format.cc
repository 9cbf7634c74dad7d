#include "planner/common/format.h"

#include <cmath>
#include <cstdio>

namespace alpa {

std::string format_dims(const std::vector<int64_t>& dims) {
  std::string out = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) out += ",";
    out += std::to_string(dims[i]);
  }
  return out + "]";
}

std::string format_count(double value) {
  static const char* const kSuffix[] = {"", "K", "M", "B", "T", "P", "E"};
  int index = 0;
  double v = std::fabs(value);
  while (v >= 1000.0 && index < 6) {
    v /= 1000.0;
    ++index;
  }
  char buf[64];
  if (index == 0) {
    std::snprintf(buf, sizeof buf, "%.0f", value);
  } else {
    std::snprintf(buf, sizeof buf, "%.3g%s", value < 0 ? -v : v, kSuffix[index]);
  }
  return buf;
}

std::string format_bytes(double bytes) {
  static const char* const kUnit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int index = 0;
  double v = bytes;
  while (v >= 1024.0 && index < 5) {
    v /= 1024.0;
    ++index;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, index == 0 ? "%.0f %s" : "%.2f %s", v, kUnit[index]);
  return buf;
}

}  // namespace alpa
