// The repeated layer structure (e.g. transformer blocks) as `inspect` reports it: the longest
// run of identical consecutive node sequences (planner/graph), with its FLOPs and parameters.
#include "planner/graph/op_cost.h"
#include "planner/inspect/inspect.h"

namespace alpa {

std::optional<RepeatedBlock> find_repeated_block(const Graph& g) {
  const std::optional<RepeatedRun> run = longest_repeated_run(g, g.num_nodes());
  if (!run) return std::nullopt;
  const int64_t best_start = run->start, best_period = run->period;
  RepeatedBlock block;
  block.block_nodes = best_period;
  block.repeats = run->repeats;
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
