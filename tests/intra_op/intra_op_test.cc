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

TEST(IntraOp, MlpDataHeavyIsDataParallel) {
  const TrainingGraph tg = build_training_graph(mlp(256, 32, 6), OptimizerConfig{});
  const Cluster c = unit_cluster(1, 4);
  const StrategyGraph sg = build_strategy_graph(tg, c, {1, 4}, {1, 4}, {});
  const SolveResult r = solve_strategy_graph(sg, {});
  ASSERT_TRUE(r.feasible);
  std::cout << describe(sg, r.choice) << "objective " << r.objective << "\n";
}

TEST(IntraOp, MlpWeightHeavyIsMegatron) {
  const TrainingGraph tg = build_training_graph(mlp(32, 256, 6), OptimizerConfig{});
  const Cluster c = unit_cluster(1, 4);
  const StrategyGraph sg = build_strategy_graph(tg, c, {1, 4}, {1, 4}, {});
  const SolveResult r = solve_strategy_graph(sg, {});
  ASSERT_TRUE(r.feasible);
  std::cout << describe(sg, r.choice) << "objective " << r.objective << "\n";
}

}  // namespace
}  // namespace alpa
