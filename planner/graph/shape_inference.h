// Output dtypes and shapes of a (normalised) node from its inputs' dtypes and shapes.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include "planner/graph/graph.h"

namespace alpa {

// A shape or type inconsistency inside one node. The importer adds the file and node name.
class ShapeError : public std::runtime_error {
 public:
  explicit ShapeError(const std::string& message) : std::runtime_error(message) {}
};

struct TensorType {
  DType dtype = DType::kFloat32;
  Shape shape;
  bool operator==(const TensorType&) const = default;
};

// `inputs` are the node's inputs in order. Returns one TensorType per node output (the node's
// `outputs` size decides how many optional outputs exist). Throws ShapeError.
std::vector<TensorType> infer_types(const Node& node, const std::vector<TensorType>& inputs);

// Shared helpers (also used by the constant evaluator).
Shape broadcast_shapes(const Shape& a, const Shape& b);             // throws ShapeError
int64_t normalize_axis(int64_t axis, int64_t rank);                 // throws ShapeError
Shape resolve_reshape(const Shape& input, const std::vector<int64_t>& target, bool allow_zero);

struct SliceRange {
  int64_t start, step, count;
};
// Per input dim: the clamped range Slice selects (ONNX semantics).
std::vector<SliceRange> resolve_slice(const Shape& input, const Attributes& attrs);
std::vector<int64_t> resolve_reduce_axes(const Attributes& attrs, int64_t rank);

struct EinsumSpec {
  std::vector<std::string> inputs;  // one label string per operand
  std::string output;
};
EinsumSpec parse_einsum(const std::string& equation, size_t num_inputs);  // throws ShapeError

}  // namespace alpa
