// Stage costs for the inter-operator pass: for every range of layers, every submesh shape and
// every logical view of it, the intra-op ILP's sharding of that range alone — its latency per
// microbatch, what it pays once per step, and its memory as a function of the microbatches in
// flight — with and without activation recomputation. Identical layer ranges are solved once;
// ranges are solved in parallel (TBB) and share one sub-problem cache per view.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <vector>

#include "planner/autodiff/training_graph.h"
#include "planner/cluster/cluster.h"
#include "planner/cluster/mesh.h"
#include "planner/inter_op/layers.h"
#include "planner/intra_op/solve.h"
#include "planner/intra_op/strategy_graph.h"

namespace alpa {

enum class RematMode : uint8_t { kAuto, kNone, kFull };

// One way to run a layer range on a submesh.
struct StageOption {
  int view = 0;          // index into StageCostTable::views[mesh]
  bool remat = false;    // recompute the forward during the backward
  // The solve that chose its sharding: activation memory weighted by `solve_act_weight` within
  // `solve_budget` bytes (-1: no memory limit), so the plan's writer can reproduce it.
  int64_t solve_act_weight = 1;
  int64_t solve_budget = -1;
  double micro_s = 0;    // forward + backward (+ recomputation) of one microbatch
  double step_s = 0;     // once per step: gradient synchronisation, optimizer update
  int64_t static_bytes = 0;  // parameters, gradients, optimizer state
  int64_t act_bytes = 0;     // activations saved for the backward, one microbatch
  // Recomputation checkpoints every layer's input and recomputes one layer at a time (as
  // Megatron-LM's full recomputation does per transformer layer): it keeps the layers' inputs
  // of every microbatch in flight and one layer's activations.
  int64_t input_bytes = 0;      // the inputs of the stage's layers, one microbatch, per device
  int64_t layer_act_bytes = 0;  // the largest layer's saved activations, one microbatch
  int64_t temp_bytes = 0;    // working set of the largest node (twice, as the intra-op bound)
  // Activation bytes kept with `inflight` microbatches alive, and the peak with them.
  int64_t activation_bytes(int64_t inflight_count) const {
    return remat ? inflight_count * input_bytes + layer_act_bytes : inflight_count * act_bytes;
  }
  int64_t memory(int64_t inflight_count) const { return static_bytes + temp_bytes + activation_bytes(inflight_count); }
};

struct StageCostRequest {
  const TrainingGraph* training = nullptr;  // one microbatch
  const Layers* layers = nullptr;
  const Cluster* cluster = nullptr;
  std::vector<MeshShape> meshes;  // submesh shapes to cost
  // Views per mesh; default (empty function): every logical view.
  std::function<std::vector<LogicalMesh>(const MeshShape&)> views_of;
  Method method = Method::kShard;
  int64_t microbatches = 1;
  const Profile* profile = nullptr;
  int64_t budget_bytes = 0;  // per device
  RematMode remat = RematMode::kAuto;
  int64_t max_inflight = 1;  // the most microbatches any stage can hold (1F1B: stage count)
  int threads = 1;
  // Only these layer ranges (first, end) are costed; empty: every range.
  std::vector<std::pair<int, int>> ranges;
  std::function<void(size_t done, size_t total)> progress;
  // Upper-bound pruning: a stage whose unconstrained latency per microbatch is at least this
  // cannot be in a plan better than the best known one (iteration ≥ B · the slowest stage), so
  // no memory-bound solves are spent on it.
  double prune_micro_s = std::numeric_limits<double>::infinity();
  // Ranges that cannot be in a plan better than the best known one, per mesh (a lower bound on
  // any plan using them says so): not costed at all; a mesh left with none is not built.
  std::function<bool(int first, int end, const MeshShape& mesh)> skip;
  // strategy_graph_facts of `training` (shared by every view built); null: computed per call.
  std::shared_ptr<const StrategyGraph> facts;
};

struct StageCostTable {
  int layers = 0;
  std::vector<MeshShape> meshes;
  std::vector<std::vector<LogicalMesh>> views;  // per mesh
  // options[(i * (L + 1) + j) * meshes + m]: ways to run layers [i, j) on mesh m.
  std::vector<std::vector<StageOption>> options;
  int64_t solves = 0, distinct_ranges = 0;
  int64_t skipped = 0;  // (range, mesh) pairs `skip` ruled out
  const std::vector<StageOption>& at(int i, int j, int m) const {
    return options[(static_cast<size_t>(i) * (layers + 1) + j) * meshes.size() + m];
  }
  int64_t microbatches = 1;
  // The option that fits `budget` with `inflight` microbatches alive and is fastest for the
  // whole step on its own (microbatches × its time per microbatch + its once-per-step part: a
  // ZeRO-like sharding can save a little per microbatch and cost much more per step); -1 if none.
  int best(int i, int j, int m, int64_t inflight, int64_t budget) const;
};

StageCostTable compute_stage_costs(const StageCostRequest& request);

// The sharding of one stage: the strategy graph of its mesh and view, and the strategy index
// per group (groups outside the stage's layers at 0).
struct StageSharding {
  std::unique_ptr<StrategyGraph> graph;
  std::vector<int> choice;
  std::vector<bool> in_stage;  // per group
  SolveResult solve;
};
StageSharding solve_stage(const StageCostRequest& request, int first_layer, int end_layer,
                          const MeshShape& mesh, const LogicalMesh& view, const StageOption& option);

// Re-costing a given sharding (`alpa-plan cost`): the stage's strategy graph with nothing
// chosen yet, and the stage figures of a choice made on it (plain, without recomputation;
// `forward_s` is what recomputation adds).
StageSharding stage_graph(const StageCostRequest& request, int first_layer, int end_layer, const MeshShape& mesh,
                          const LogicalMesh& view);
struct StageEvaluation {
  StageOption option;
  double forward_s = 0;
};
StageEvaluation evaluate_stage(const StageCostRequest& request, int first_layer, int end_layer, StageSharding& sharding);

}  // namespace alpa
