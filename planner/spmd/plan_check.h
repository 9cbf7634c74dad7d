// The planner's side of "every plan alpa-plan writes or `cost` accepts, alpa-run runs": the
// rank programs of a plan, lowered as alpa-run lowers them (lowering.h), without running them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "planner/cluster/cluster.h"
#include "planner/graph/graph.h"
#include "planner/intra_op/strategy_graph.h"
#include "planner/plan/plan.h"
#include "planner/spmd/lowering.h"

namespace alpa {

// A pipeline plan of one stage is a single-stage plan: the stage's mesh, method and shardings
// over the whole model. Throws UserError naming `plan_source` for a stage alpa-run does not
// execute so (recomputation).
Plan as_single_stage(const Plan& plan, const std::string& plan_source);

// A pipeline stage spanning several devices, as alpa-run runs it: the whole model planned by the
// stage's method on its mesh (search_shard_parallel on local:n) gives the strategy graph, and the
// stage's own strategies and specs are applied to its nodes and parameters
// (apply_stage_strategies). One per stage; every rank of the stage lowers the same choice.
// `opt`: the training graph's optimizer (the run's hyperparameters). Throws UserError naming
// `plan_source` and the stage.
struct StageChoice {
  std::unique_ptr<Cluster> mesh;      // the stage's devices (the strategy graph points here)
  std::unique_ptr<StrategyGraph> sg;  // of `plan_tg` on the stage's mesh
  std::vector<int> choice;
  Plan whole;                         // the whole-model plan of the stage's method on its mesh
};
StageChoice choose_pipeline_stage(const Plan& plan, const std::string& plan_source, const Graph& forward,
                                  const TrainingGraph& plan_tg, const OptimizerConfig& opt, int stage);

// The rank program of device `index` (logical (index / d1, index % d1)) of such a stage: its
// choice lowered as a single-stage plan's is. What alpa-run runs on that rank and what the
// planner's check lowers.
struct StageRank {
  RankLowering lowering;
  TrainingGraph local;    // the microbatch's training graph before lowering
  TrainingGraph program;  // the rank program (build_rank_program of `local`)
};
StageRank lower_stage_rank(const StageChoice& stage, const Plan& plan, const std::string& plan_source,
                           const Graph& forward, const OptimizerConfig& opt, int64_t index);

// Gradient accumulation sums each microbatch's loss: right for one mean
// SoftmaxCrossEntropyLoss producing the loss (its kernel divides by the step's global label
// count), wrong for any other term (an MoE's balancing loss, a mean over each microbatch, would
// count K times). Throws UserError naming `plan_source` when `microbatches` > 1 and the loss is
// anything else, as one device refuses --microbatches.
void require_accumulable_loss(const Graph& forward, int64_t microbatches, const std::string& plan_source);

struct RankCheck {
  int64_t ranks_lowered = 0;  // rank programs built
  int64_t devices = 0;        // the plan's devices
  int64_t stages = 1;         // a pipeline's stages (each multi-device one lowered as alpa-run does)
  bool skipped = false;       // a pipeline in half precision: not lowered (see check_rank_programs)
  // A single-stage plan: the largest peak of the lowered rank programs (simulate_program_memory),
  // what alpa-run's allocator measures. 0 for pipelines.
  int64_t peak_bytes = 0;
};

// Builds, for a single-stage plan (or a pipeline of one stage), the rank program of every device
// as alpa-run does (the plan's training graph, strategy graph and checked choice; each rank's
// lowering, its microbatch's training graph and the rank program with its Reshard nodes). For a
// pipeline of several stages: its split into stages (boundaries, each stage's program and
// instructions), and each multi-device stage's rank programs (lower_stage_rank); in half
// precision (a GPU plan: alpa-run's stages are searched on CPU devices) only the split. A mesh
// of more than 16 devices has the ranks at its corners lowered (first and last of each row and
// column), whose blocks include every dim's first and last. Throws UserError naming
// `plan_source`, the rank and what alpa-run would have refused; an internal failure of the
// lowering is reported the same way, so no plan that the executor would stop on is written.
RankCheck check_rank_programs(const Plan& plan, const std::string& plan_source, const Graph& forward,
                              const Cluster& cluster);

}  // namespace alpa
