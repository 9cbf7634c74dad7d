// The graph IR: tensors with static shapes for the global batch, nodes with a closed OpKind and
// typed attributes, tensor roles, and one canonical topological order (node ids are positions
// in that order).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "planner/graph/attributes.h"
#include "planner/graph/dtype.h"
#include "planner/graph/op_kind.h"

namespace alpa {

using Shape = std::vector<int64_t>;
using TensorId = int32_t;
using NodeId = int32_t;
inline constexpr int32_t kNoId = -1;

// Product of the dims; saturates at INT64_MAX (the importer rejects such shapes up front).
int64_t num_elements(const Shape& shape);
// nullopt when a dim is negative or the product overflows int64.
std::optional<int64_t> checked_num_elements(const Shape& shape);

enum class TensorRole : uint8_t {
  kDataInput,
  kLabel,
  kParameter,  // trainable: a floating initializer with a differentiable path to the loss
  kBuffer,     // any other initializer (BatchNorm running statistics, float masks)
  kConstant,   // folded or integer constants
  kActivation,
  kGradient,
  kOptimizerState,
  kLoss,
};
std::string_view role_name(TensorRole role);

struct Tensor {
  std::string name;  // the ONNX name; derived tensors get derived readable names
  DType dtype = DType::kFloat32;
  Shape shape;
  TensorRole role = TensorRole::kActivation;
  NodeId producer = kNoId;
  std::vector<NodeId> consumers;  // ascending, one entry per consuming node
  // Raw little-endian contents, when known (constants, initializers with data). Shape-only
  // initializers have none.
  std::shared_ptr<const std::vector<uint8_t>> data;

  int64_t numel() const { return num_elements(shape); }
  int64_t bytes() const { return numel() * dtype_bytes(dtype); }
  bool has_data() const { return data != nullptr; }
};

struct Node {
  std::string name;
  OpKind kind = OpKind::kIdentity;
  std::vector<TensorId> inputs;
  std::vector<TensorId> outputs;
  Attributes attrs;
  // Backward and optimizer nodes: the forward node they derive from (empty for forward nodes).
  std::string derived_from;
};

class Graph {
 public:
  TensorId add_tensor(Tensor tensor);
  // Nodes may be added in any order; finalize() sorts them.
  NodeId add_node(Node node);

  // Sorts nodes into the canonical topological order (Kahn's algorithm, ties broken by the
  // order of insertion, i.e. ONNX order), fills producers/consumers and the name index, and
  // checks structural invariants. Throws InternalError on a cycle or dangling id.
  void finalize();
  // Moves the nodes marked in `front` (per node) before the others, keeping the relative order
  // within each part, and finalizes. The result must still be topological: no node in front may
  // read a tensor another node makes behind it (InternalError otherwise).
  void move_to_front(const std::vector<bool>& front);

  const Tensor& tensor(TensorId id) const { return tensors_.at(static_cast<size_t>(id)); }
  Tensor& tensor(TensorId id) { return tensors_.at(static_cast<size_t>(id)); }
  const Node& node(NodeId id) const { return nodes_.at(static_cast<size_t>(id)); }
  Node& node(NodeId id) { return nodes_.at(static_cast<size_t>(id)); }
  const std::vector<Tensor>& tensors() const { return tensors_; }
  const std::vector<Node>& nodes() const { return nodes_; }
  size_t num_tensors() const { return tensors_.size(); }
  size_t num_nodes() const { return nodes_.size(); }

  TensorId find_tensor(std::string_view name) const;  // kNoId if absent
  NodeId find_node(std::string_view name) const;      // kNoId if absent

  // Graph inputs (data inputs and labels) in ONNX order, the axis of each that indexes
  // samples (-1 for an input without one), and the scalar loss.
  std::vector<TensorId> inputs;
  std::vector<int64_t> input_batch_axes;
  TensorId loss = kNoId;

  std::vector<TensorId> tensors_with_role(TensorRole role) const;

 private:
  std::vector<Tensor> tensors_;
  std::vector<Node> nodes_;
  std::map<std::string, TensorId, std::less<>> tensor_index_;
  std::map<std::string, NodeId, std::less<>> node_index_;
};

// Structural signature of a node (op, attributes, operand dtypes, shapes and roles; names
// excluded): equal for the same node in two repetitions of a layer.
uint64_t node_signature(const Graph& g, const Node& node);

// The longest run of identical consecutive node sequences (a transformer's blocks), each
// repetition holding a heavy op; ties keep the shorter period and the earlier start.
struct RepeatedRun {
  int64_t start = 0, period = 0, repeats = 0;
};
// Over per-node signatures and heavy flags; over the first `num_nodes` nodes of a graph.
std::optional<RepeatedRun> longest_repeated_run(const std::vector<uint64_t>& signature, const std::vector<bool>& heavy);
std::optional<RepeatedRun> longest_repeated_run(const Graph& g, size_t num_nodes);

}  // namespace alpa
