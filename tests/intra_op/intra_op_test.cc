#include <gtest/gtest.h>

#include <iostream>

#include "planner/intra_op/solve.h"
#include "planner/intra_op/strategy_graph.h"
#include "tests/intra_op/test_graphs.h"

namespace alpa {
namespace {

using testing::mlp;
using testing::unit_cluster;

std::string describe(const StrategyGraph& sg, const std::vector<int>& choice) {
  std::string out;
  const ChosenSpecs cs = chosen_specs(sg, choice);
  for (size_t g = 0; g < sg.groups.size(); ++g) {
    out += sg.groups[g].name + ": ";
    if (sg.groups[g].is_parameter) out += sg.groups[g].param_strategy[choice[g]].name;
    else for (const auto& m : sg.groups[g].member_strategy[choice[g]]) out += m.name + " ";
    out += "\n";
  }
  return out;
}

// The leader strategy of group `name` in `choice` (a parameter's: its storage/state name).
std::string chosen(const StrategyGraph& sg, const std::vector<int>& choice, const std::string& name) {
  for (size_t g = 0; g < sg.groups.size(); ++g) {
    if (sg.groups[g].name != name) continue;
    const Group& grp = sg.groups[g];
    return grp.is_parameter ? grp.param_strategy[choice[g]].name : grp.member_strategy[choice[g]][0].name;
  }
  return "(no group " + name + ")";
}

// Six 256-sample MatMuls of width 32 on 4 devices: activations (256 x 32) outweigh the weights
// (32 x 32), so the ILP splits the batch in every layer and keeps the weights whole (their
// gradients all-reduced once): data parallelism, every layer alike.
TEST(IntraOp, MlpDataHeavyIsDataParallel) {
  const TrainingGraph tg = build_training_graph(mlp(256, 32, 6), OptimizerConfig{});
  const Cluster c = unit_cluster(1, 4);
  const StrategyGraph sg = build_strategy_graph(tg, c, {1, 4}, {1, 4}, {});
  const SolveResult r = solve_strategy_graph(sg, {});
  ASSERT_TRUE(r.feasible);
  for (int k = 0; k < 6; ++k) {
    EXPECT_EQ(chosen(sg, r.choice, "mm" + std::to_string(k)), "S1R,RR->S1R") << describe(sg, r.choice);
    EXPECT_EQ(chosen(sg, r.choice, "w" + std::to_string(k)), "RR") << describe(sg, r.choice);
  }
}

// Six 32-sample MatMuls of width 256: the weights (256 x 256) outweigh the activations, so the
// ILP picks Megatron-LM's pairing: a column-parallel layer (weight split by output columns, its
// output split) feeding a row-parallel one (weight split by input rows, its output a partial
// sum all-reduced), which needs no communication between the two; the batch is never split.
TEST(IntraOp, MlpWeightHeavyIsMegatron) {
  const TrainingGraph tg = build_training_graph(mlp(32, 256, 6), OptimizerConfig{});
  const Cluster c = unit_cluster(1, 4);
  const StrategyGraph sg = build_strategy_graph(tg, c, {1, 4}, {1, 4}, {});
  const SolveResult r = solve_strategy_graph(sg, {});
  ASSERT_TRUE(r.feasible);
  for (int k = 0; k < 6; ++k) {
    const bool column = k % 2 == 0;
    EXPECT_EQ(chosen(sg, r.choice, "mm" + std::to_string(k)), column ? "RR,RS1->RS1" : "RS1,S1R->RR") << describe(sg, r.choice);
    EXPECT_EQ(chosen(sg, r.choice, "w" + std::to_string(k)), column ? "RS1" : "S1R") << describe(sg, r.choice);
  }
}

}  // namespace
}  // namespace alpa
