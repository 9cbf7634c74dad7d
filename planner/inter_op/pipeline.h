// The hierarchical search (`alpa-plan search --method auto`) and the baselines costed by the same
// model (`megatron`, `megatron-grid`, `pp-dp`): layers, stage costs on every submesh and view,
// the stage DP, the microbatch count, and the plan file with its stages.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "planner/autodiff/training_graph.h"
#include "planner/cluster/cluster.h"
#include "planner/inter_op/stage_cost.h"
#include "planner/inter_op/stage_dp.h"
#include "planner/plan/plan.h"

namespace alpa {

struct Profile;

enum class PipelineMethod : uint8_t { kAuto, kMegatron, kMegatronGrid, kPpDp };

struct PipelineRequest {
  const Graph* forward = nullptr;  // the imported model at the global batch
  std::string model_name;
  int64_t global_batch = 0;
  int64_t microbatches = 0;  // 0: searched (powers of two dividing the batch)
  OptimizerConfig optimizer;
  PrecisionConfig precision;
  PipelineMethod method = PipelineMethod::kAuto;
  int64_t tp = 0, pp = 0, dp = 0;  // megatron: tensor, pipeline and data parallel sizes
  const Cluster* cluster = nullptr;
  std::string cluster_label;
  const Profile* profile = nullptr;
  std::string profile_text;
  int64_t memory_budget_bytes = 0;  // 0: the device's usable memory
  int layers = 0;                   // 0: automatic
  RematMode remat = RematMode::kAuto;
  Schedule schedule = Schedule::k1F1B;
  int threads = 1;
  double time_budget_s = 0;  // 0: none
  bool progress = false;     // a progress line on stderr
  // Lower-bound pruning of (layer range, submesh) pairs once a plan is known. Never changes the
  // best iteration time; false only in tests that check exactly that.
  bool prune = true;
};

// One evaluated configuration (a row of --explain).
struct PipelineCandidate {
  std::string label;       // e.g. "B=64: 4 stages (1,8)x2 (2,8)..." or "tp=8 pp=4 dp=2 mbs=2 remat"
  bool feasible = false;
  double iteration_time_s = 0;
  std::string why;         // why it lost or could not run
};

struct PipelineResult {
  bool found = false;
  Plan plan;
  std::vector<PipelineCandidate> candidates;  // every configuration tried, best first
  std::string diagnosis;                      // when nothing fits
  bool cut_short = false;                     // --time-budget ended the search
  int64_t stage_solves = 0, distinct_ranges = 0, t_max_tried = 0;
  int64_t skipped = 0;  // (layer range, submesh) pairs the lower bound ruled out
  double search_time_s = 0;
};

PipelineResult search_pipeline(const PipelineRequest& request);

// Devices of each stage: whole-host meshes first, then the others largest first, each at the
// first aligned free block of a host (so a (1,k) mesh never straddles two hosts).
std::vector<std::vector<int64_t>> place_stages(const std::vector<MeshShape>& meshes, const Cluster& cluster);

// Sets `choice` (per group of `sg`, a strategy graph of the stage's mesh and view over the whole
// training graph) for every group marked in `in_stage` to the strategy that gives the stage's
// forward nodes [first, end) and its parameters the strategies and specs the plan stage lists
// (a group by the first of its members in the stage); other groups keep theirs. Throws
// UserError naming `plan_source` + `where` and the element.
void apply_stage_strategies(const PlanStage& stage, const std::string& plan_source, const std::string& where,
                            const TrainingGraph& tg, const StrategyGraph& sg, int64_t first, int64_t end,
                            const std::vector<bool>& in_stage, std::vector<int>& choice);

// `alpa-plan cost` of a hierarchical plan (possibly hand-edited: a stage boundary moved, a
// submesh or logical view changed, a sharding edited): validates it against the model and the
// cluster and re-costs every stage with the search's cost model. Throws UserError naming
// `plan_source` and the element.
struct PipelineCost {
  PlanEstimate estimate;
  PlanPipeline pipeline;  // the plan's pipeline with re-costed stage figures
};
PipelineCost cost_pipeline_plan(const Plan& plan, const std::string& plan_source, const Graph& forward,
                                const Cluster& cluster, const Profile* profile = nullptr,
                                const std::string& profile_text = "");

// The plan's predicted timeline of one step as a Chrome trace (the format `alpa-run --trace`
// writes, so predicted and measured open side by side): one track per stage with each
// microbatch's forward and backward where the schedule model places them (a stage's microbatch
// time split 1:2 between forward and backward, the usual ratio; the plan keeps only the sum),
// then the step's tail (gradient synchronisation, update, the shared parameters' exchange).
// A single-stage plan is one track with one step.
std::string predicted_trace_json(const Plan& plan);

}  // namespace alpa
