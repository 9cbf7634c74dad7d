// Typed node attributes. The importer normalises ONNX operands that are really parameters of
// the op (Reshape's target, Slice's bounds, reduction axes, TopK's k, ...) into attributes, so a
// node's inputs are only the tensors that carry data through it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

namespace alpa {

using AttrValue =
    std::variant<int64_t, double, std::string, std::vector<int64_t>, std::vector<double>>;

class Attributes {
 public:
  void set(const std::string& key, AttrValue value) { values_[key] = std::move(value); }
  bool has(const std::string& key) const { return values_.count(key) != 0; }

  // Getters throw InternalError if the attribute exists with another type; the defaulted
  // overloads return the default when the key is absent.
  int64_t get_int(const std::string& key) const;
  int64_t get_int(const std::string& key, int64_t fallback) const;
  double get_float(const std::string& key) const;
  double get_float(const std::string& key, double fallback) const;
  const std::string& get_string(const std::string& key) const;
  const std::vector<int64_t>& get_ints(const std::string& key) const;
  std::vector<int64_t> get_ints(const std::string& key, std::vector<int64_t> fallback) const;
  const std::vector<double>& get_floats(const std::string& key) const;

  // Ordered by key: iteration order is deterministic (printing, hashing, JSON).
  const std::map<std::string, AttrValue>& values() const { return values_; }
  bool operator==(const Attributes& other) const = default;

 private:
  const AttrValue& at(const std::string& key) const;
  std::map<std::string, AttrValue> values_;
};

std::string to_string(const AttrValue& value);

}  // namespace alpa
