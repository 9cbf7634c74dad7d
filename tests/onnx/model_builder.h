// Builds small ONNX models in tests, so each importer rule is exercised on a graph whose every
// node is visible in the test.
#pragma once

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <string>
#include <vector>

namespace alpa::testing {

class ModelBuilder {
 public:
  explicit ModelBuilder(int64_t opset = 17);

  // A graph input; a dim < 0 is symbolic (named `sym` + index).
  ModelBuilder& input(const std::string& name, int32_t elem_type, const std::vector<int64_t>& dims,
                      const std::string& sym = "batch");
  // An initializer with float data (value i·0.01) or, with `with_data` false, dims only.
  ModelBuilder& weight(const std::string& name, const std::vector<int64_t>& dims, bool with_data = true);
  ModelBuilder& int_initializer(const std::string& name, const std::vector<int64_t>& values);
  // A Constant node holding int64 values (1-D, or a scalar when `scalar`).
  ModelBuilder& constant_ints(const std::string& output, const std::vector<int64_t>& values,
                              bool scalar = false);
  ModelBuilder& constant_float(const std::string& output, float value);
  onnx::NodeProto& node(const std::string& op, const std::vector<std::string>& inputs,
                        const std::vector<std::string>& outputs, const std::string& name = "");
  ModelBuilder& output(const std::string& name);

  static void set_int(onnx::NodeProto& n, const std::string& key, int64_t v);
  static void set_float(onnx::NodeProto& n, const std::string& key, float v);
  static void set_ints(onnx::NodeProto& n, const std::string& key, const std::vector<int64_t>& v);
  static void set_string(onnx::NodeProto& n, const std::string& key, const std::string& v);

  // loss = ReduceMean(input) over all dims, keepdims=0: a scalar.
  ModelBuilder& mean_loss(const std::string& input);

  std::string bytes() const;
  onnx::ModelProto& model() { return model_; }

 private:
  onnx::ModelProto model_;
};

inline void mean_loss(ModelBuilder& b, const std::string& input) { b.mean_loss(input); }

}  // namespace alpa::testing
