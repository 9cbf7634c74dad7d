#include "planner/graph/graph.h"

#include <functional>
#include <limits>
#include <string>
#include <queue>

#include "planner/common/error.h"
#include "planner/graph/attributes.h"

namespace alpa {

int64_t num_elements(const Shape& shape) {
  const auto n = checked_num_elements(shape);
  return n ? *n : std::numeric_limits<int64_t>::max();
}

std::optional<int64_t> checked_num_elements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return std::nullopt;
  }
  return n;
}

std::string_view role_name(TensorRole role) {
  switch (role) {
    case TensorRole::kDataInput: return "data_input";
    case TensorRole::kLabel: return "label";
    case TensorRole::kParameter: return "parameter";
    case TensorRole::kBuffer: return "buffer";
    case TensorRole::kConstant: return "constant";
    case TensorRole::kActivation: return "activation";
    case TensorRole::kGradient: return "gradient";
    case TensorRole::kOptimizerState: return "optimizer_state";
    case TensorRole::kLoss: return "loss";
  }
  return "unknown";
}

TensorId Graph::add_tensor(Tensor tensor) {
  tensors_.push_back(std::move(tensor));
  return static_cast<TensorId>(tensors_.size() - 1);
}

NodeId Graph::add_node(Node node) {
  nodes_.push_back(std::move(node));
  return static_cast<NodeId>(nodes_.size() - 1);
}

void Graph::move_to_front(const std::vector<bool>& front) {
  ALPA_CHECK(front.size() == nodes_.size(), "move_to_front: one flag per node expected");
  std::vector<Node> reordered;
  reordered.reserve(nodes_.size());
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < nodes_.size(); ++i) {
      if (front[i] == (pass == 0)) reordered.push_back(nodes_[i]);
    }
  }
  std::vector<bool> made(tensors_.size(), false);
  for (const Node& n : reordered) {
    for (TensorId t : n.inputs) {
      ALPA_CHECK(made[t] || tensors_[t].producer == kNoId,
                 "move_to_front: node '" + n.name + "' would read '" + tensors_[t].name + "' before it is made");
    }
    for (TensorId t : n.outputs) made[t] = true;
  }
  nodes_ = std::move(reordered);
  finalize();
}

void Graph::finalize() {
  const size_t n = nodes_.size();
  // Producer of each tensor in the insertion numbering.
  std::vector<NodeId> producer(tensors_.size(), kNoId);
  for (size_t i = 0; i < n; ++i) {
    for (TensorId t : nodes_[i].outputs) {
      ALPA_CHECK(t >= 0 && static_cast<size_t>(t) < tensors_.size(), "dangling output id");
      ALPA_CHECK(producer[t] == kNoId, "tensor '" + tensors_[t].name + "' has two producers");
      producer[t] = static_cast<NodeId>(i);
    }
  }
  // Kahn's algorithm; the min-heap over insertion indices makes the order canonical.
  std::vector<int> pending(n, 0);
  std::vector<std::vector<NodeId>> users(n);
  for (size_t i = 0; i < n; ++i) {
    for (TensorId t : nodes_[i].inputs) {
      ALPA_CHECK(t >= 0 && static_cast<size_t>(t) < tensors_.size(), "dangling input id");
      if (producer[t] != kNoId) {
        ++pending[i];
        users[producer[t]].push_back(static_cast<NodeId>(i));
      }
    }
  }
  std::priority_queue<NodeId, std::vector<NodeId>, std::greater<>> ready;
  for (size_t i = 0; i < n; ++i) {
    if (pending[i] == 0) ready.push(static_cast<NodeId>(i));
  }
  std::vector<NodeId> order;
  order.reserve(n);
  while (!ready.empty()) {
    NodeId next = ready.top();
    ready.pop();
    order.push_back(next);
    for (NodeId user : users[next]) {
      if (--pending[user] == 0) ready.push(user);
    }
  }
  ALPA_CHECK(order.size() == n, "graph has a cycle");

  std::vector<Node> sorted;
  sorted.reserve(n);
  for (NodeId old_id : order) sorted.push_back(std::move(nodes_[old_id]));
  nodes_ = std::move(sorted);

  for (auto& t : tensors_) {
    t.producer = kNoId;
    t.consumers.clear();
  }
  node_index_.clear();
  tensor_index_.clear();
  for (size_t i = 0; i < n; ++i) {
    const NodeId id = static_cast<NodeId>(i);
    for (TensorId t : nodes_[i].outputs) tensors_[t].producer = id;
    for (TensorId t : nodes_[i].inputs) {
      auto& c = tensors_[t].consumers;
      if (c.empty() || c.back() != id) c.push_back(id);
    }
    ALPA_CHECK(node_index_.emplace(nodes_[i].name, id).second,
               "duplicate node name '" + nodes_[i].name + "'");
  }
  for (size_t i = 0; i < tensors_.size(); ++i) {
    ALPA_CHECK(tensor_index_.emplace(tensors_[i].name, static_cast<TensorId>(i)).second,
               "duplicate tensor name '" + tensors_[i].name + "'");
  }
}

TensorId Graph::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? kNoId : it->second;
}

NodeId Graph::find_node(std::string_view name) const {
  auto it = node_index_.find(name);
  return it == node_index_.end() ? kNoId : it->second;
}

std::vector<TensorId> Graph::tensors_with_role(TensorRole role) const {
  std::vector<TensorId> out;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    if (tensors_[i].role == role) out.push_back(static_cast<TensorId>(i));
  }
  return out;
}

// Structural signature of a node: op, attributes, and the dtype, shape and role of each
// operand (names excluded, so layer 3 and layer 7 of a stack compare equal).
uint64_t node_signature(const Graph& g, const Node& node) {
  std::string key(op_name(node.kind));
  for (const auto& [k, v] : node.attrs.values()) key += "|" + k + "=" + to_string(v);
  auto add_tensor = [&](TensorId t) {
    const Tensor& tensor = g.tensor(t);
    key += "|" + std::string(dtype_name(tensor.dtype)) + std::string(role_name(tensor.role));
    for (int64_t d : tensor.shape) key += "," + std::to_string(d);
  };
  for (TensorId t : node.inputs) add_tensor(t);
  key += "->";
  for (TensorId t : node.outputs) add_tensor(t);
  return std::hash<std::string>{}(key);
}

std::optional<RepeatedRun> longest_repeated_run(const std::vector<uint64_t>& sig, const std::vector<bool>& heavy) {
  const int64_t n = static_cast<int64_t>(sig.size());
  std::vector<int64_t> heavy_prefix(n + 1, 0);
  for (int64_t i = 0; i < n; ++i) heavy_prefix[i + 1] = heavy_prefix[i] + (heavy[i] ? 1 : 0);
  RepeatedRun best;
  int64_t best_cover = 0;
  for (int64_t p = 2; p <= n / 2; ++p) {
    int64_t j = 0;
    while (j + p < n) {
      if (sig[j] != sig[j + p]) {
        ++j;
        continue;
      }
      const int64_t a = j;
      while (j + p < n && sig[j] == sig[j + p]) ++j;
      const int64_t repeats = (j - a + p) / p;  // s[a, j + p) has period p
      const int64_t cover = repeats * p;
      // Strictly greater: ties keep the smaller period and the earlier start.
      if (repeats >= 2 && cover > best_cover && heavy_prefix[a + p] - heavy_prefix[a] > 0) {
        best_cover = cover;
        best = {a, p, repeats};
      }
    }
  }
  if (best_cover == 0) return std::nullopt;
  return best;
}

std::optional<RepeatedRun> longest_repeated_run(const Graph& g, size_t num_nodes) {
  std::vector<uint64_t> sig(num_nodes);
  std::vector<bool> heavy(num_nodes);
  for (size_t i = 0; i < num_nodes; ++i) {
    sig[i] = node_signature(g, g.node(static_cast<NodeId>(i)));
    heavy[i] = is_heavy_op(g.node(static_cast<NodeId>(i)).kind);
  }
  return longest_repeated_run(sig, heavy);
}

}  // namespace alpa
