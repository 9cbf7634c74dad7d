// Evaluation of nodes whose inputs are all known constants: the importer folds shape
// computations (Shape → Gather → Unsqueeze → Concat → Reshape, Range, ConstantOfShape, ...)
// with it. Never applied to parameters or buffers.
#pragma once

#include <optional>
#include <vector>

#include "planner/graph/graph.h"
#include "planner/graph/shape_inference.h"

namespace alpa {

// A small host array: integer and bool types live in `ints`, floating types in `floats`.
struct ConstArray {
  DType dtype = DType::kInt64;
  Shape shape;
  std::vector<int64_t> ints;
  std::vector<double> floats;

  int64_t size() const { return num_elements(shape); }
  double as_double(int64_t i) const;
  int64_t as_int(int64_t i) const;
};

// double → int64 without undefined behaviour (NaN → 0, out of range → the nearest limit).
int64_t saturating_int(double v);

ConstArray array_from_tensor(const Tensor& tensor);  // the tensor must have data
std::shared_ptr<const std::vector<uint8_t>> array_to_bytes(const ConstArray& array);

// Evaluates `node` (normalised, as in the graph) on constant inputs. `outputs` are the types
// from infer_types. Returns nullopt when the evaluator does not implement the op; the importer
// then keeps the node in the graph.
std::optional<std::vector<ConstArray>> evaluate_constant(const Node& node,
                                                         const std::vector<ConstArray>& inputs,
                                                         const std::vector<TensorType>& outputs);

}  // namespace alpa
