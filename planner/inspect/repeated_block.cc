// Detection of the repeated layer structure (e.g. transformer blocks): the longest run of
// consecutive identical node sequences in canonical order.
#include <functional>

#include "planner/graph/op_cost.h"
#include "planner/inspect/inspect.h"

namespace alpa {
namespace {

bool is_heavy(OpKind kind) {
  const OpFamily f = op_info(kind).family;
  return f == OpFamily::kContraction || f == OpFamily::kConv;
}

}  // namespace

std::optional<RepeatedBlock> find_repeated_block(const Graph& g) {
  const int64_t n = static_cast<int64_t>(g.num_nodes());
  std::vector<uint64_t> sig(n);
  for (int64_t i = 0; i < n; ++i) sig[i] = node_signature(g, g.node(static_cast<NodeId>(i)));
  std::vector<int64_t> heavy_prefix(n + 1, 0);
  for (int64_t i = 0; i < n; ++i) heavy_prefix[i + 1] = heavy_prefix[i] + (is_heavy(g.node(i).kind) ? 1 : 0);

  int64_t best_cover = 0, best_period = 0, best_start = 0, best_repeats = 0;
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
        best_period = p;
        best_start = a;
        best_repeats = repeats;
      }
    }
  }
  if (best_cover == 0) return std::nullopt;
  RepeatedBlock block;
  block.block_nodes = best_period;
  block.repeats = best_repeats;
  block.first_node = g.node(static_cast<NodeId>(best_start)).name;
  block.last_node = g.node(static_cast<NodeId>(best_start + best_period - 1)).name;
  std::vector<bool> counted(g.num_tensors(), false);
  for (int64_t i = best_start; i < best_start + best_period; ++i) {
    const Node& node = g.node(static_cast<NodeId>(i));
    block.block_forward_flops += count_node(g, node).flops;
    for (TensorId t : node.inputs) {
      if (g.tensor(t).role == TensorRole::kParameter && !counted[t]) {
        counted[t] = true;
        block.block_parameter_count += g.tensor(t).numel();
      }
    }
  }
  return block;
}

}  // namespace alpa
