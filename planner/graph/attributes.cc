#include "planner/graph/attributes.h"

#include <sstream>

#include "planner/common/error.h"

namespace alpa {
namespace {

template <typename T>
const T& typed(const AttrValue& value, const std::string& key) {
  const T* p = std::get_if<T>(&value);
  ALPA_CHECK(p != nullptr, "attribute '" + key + "' has an unexpected type");
  return *p;
}

}  // namespace

const AttrValue& Attributes::at(const std::string& key) const {
  auto it = values_.find(key);
  ALPA_CHECK(it != values_.end(), "missing attribute '" + key + "'");
  return it->second;
}

int64_t Attributes::get_int(const std::string& key) const { return typed<int64_t>(at(key), key); }
int64_t Attributes::get_int(const std::string& key, int64_t fallback) const {
  return has(key) ? get_int(key) : fallback;
}
double Attributes::get_float(const std::string& key) const {
  const AttrValue& v = at(key);
  if (const auto* i = std::get_if<int64_t>(&v)) return static_cast<double>(*i);
  return typed<double>(v, key);
}
double Attributes::get_float(const std::string& key, double fallback) const {
  return has(key) ? get_float(key) : fallback;
}
const std::string& Attributes::get_string(const std::string& key) const {
  return typed<std::string>(at(key), key);
}
const std::vector<int64_t>& Attributes::get_ints(const std::string& key) const {
  return typed<std::vector<int64_t>>(at(key), key);
}
std::vector<int64_t> Attributes::get_ints(const std::string& key,
                                          std::vector<int64_t> fallback) const {
  return has(key) ? get_ints(key) : fallback;
}
const std::vector<double>& Attributes::get_floats(const std::string& key) const {
  return typed<std::vector<double>>(at(key), key);
}

std::string to_string(const AttrValue& value) {
  std::ostringstream out;
  std::visit(
      [&out](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::vector<int64_t>> ||
                      std::is_same_v<T, std::vector<double>>) {
          out << "[";
          for (size_t i = 0; i < v.size(); ++i) out << (i ? "," : "") << v[i];
          out << "]";
        } else {
          out << v;
        }
      },
      value);
  return out.str();
}

}  // namespace alpa
