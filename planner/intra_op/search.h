// Shard-parallel planning of one stage on the whole cluster: build the training graph, build the
// strategy graph on each logical view of the mesh, solve, check, estimate and write the plan;
// and re-costing a (possibly hand-edited) plan against the model.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>
#include <string>
#include <vector>

#include "planner/autodiff/training_graph.h"
#include "planner/cluster/cluster.h"
#include "planner/cluster/mesh.h"
#include "planner/intra_op/solve.h"
#include "planner/intra_op/strategy_graph.h"
#include "planner/plan/plan.h"

namespace alpa {

struct SearchRequest {
  const Graph* forward = nullptr;  // the imported model at the global batch
  std::string model_name;          // for the plan (file name)
  int64_t global_batch = 0;
  int64_t microbatches = 1;
  OptimizerConfig optimizer;
  PrecisionConfig precision;
  Method method = Method::kShard;
  const Cluster* cluster = nullptr;
  std::string cluster_label;                // e.g. "p3.16xlarge:8"
  std::optional<LogicalMesh> logical;       // default: try every logical view
  int64_t memory_budget_bytes = 0;          // 0: the device's usable memory
  int threads = 1;
  int64_t max_nodes = 200000;
  double time_limit_s = 120;
  const Profile* profile = nullptr;  // measured timings (optional)
  std::string profile_text;          // its file contents, bound into the cluster fingerprint
  bool ilp_stats = false;
  bool decompose = true;   // false: solve each view as one ILP (benchmark baseline)  // also measure the one-ILP size before and after follower merging
};

// One logical view's outcome (a row of the summary table).
struct ViewOutcome {
  LogicalMesh view;
  bool feasible = false;
  PlanEstimate estimate;
  SolveResult solve;
  int64_t groups = 0, nodes_before_merging = 0;
  int64_t model_memory_bytes = 0;  // the memory model's bound of the chosen plan
  double build_time_s = 0;
  IlpSize before_merging, after_merging;  // one ILP for the whole graph (with ilp_stats)
};

struct SearchResult {
  bool found = false;
  Plan plan;
  std::vector<ViewOutcome> views;
  // When nothing fits: what the leanest candidate needs and what would help.
  std::string diagnosis;
};

SearchResult search_shard_parallel(const SearchRequest& request);

// The memory figures of a choice: parameters, gradients, optimizer state and saved activations
// as sharded, and the simulated peak of the step's allocation/free sequence.
// `nodes` (per node of the training graph; null: every node) restricts it to a pipeline
// stage's nodes: its parameters and the tensors its nodes read, tensors other stages make
// counted as received (live from the start, as their first reader here takes them), except
// those `absent` marks (per tensor; another stage's part of a shared parameter's gradient, which
// is exchanged once per step outside the step's tensors).
PlanMemory simulate_memory(const StrategyGraph& sg, const std::vector<int>& choice,
                           const std::vector<bool>* nodes = nullptr, const std::vector<bool>* absent = nullptr);
// The memory model's upper bound of that peak (what the search keeps within the budget).
int64_t memory_bound(const StrategyGraph& sg, const std::vector<int>& choice);

// Estimate of a choice, recomputed from the chosen specs (the independent checker).
PlanEstimate estimate_choice(const StrategyGraph& sg, const std::vector<int>& choice,
                             int64_t global_batch);

// Fingerprints binding a plan to its inputs.
std::string graph_fingerprint(const Graph& forward, int64_t global_batch);
// Binds the cluster and, when one is used, the profile's text.
std::string cluster_fingerprint(const Cluster& cluster, const std::string& profile_text = "");

// What `cost` checks first, for every kind of plan: the graph and cluster fingerprints and
// the cluster's mesh (UserError naming `plan_source` and the key).
void check_plan_bindings(const Plan& plan, const std::string& plan_source, const Graph& forward,
                         const Cluster& cluster, const std::string& profile_text);
// The cluster a plan names, as load_cluster takes it: "local:N" for local CPU devices,
// "builtin:NAME:HOSTS" otherwise.
std::string plan_cluster_spec(const Plan& plan);
// The training graph a plan was made for: its optimizer, precision and microbatches (checked).
// `hyper`: the run's optimizer hyperparameters (momentum adds state), with the plan's kind.
// The momentum an "sgd-momentum" plan is costed with when no run gives one: its value changes
// no figure the plan holds (the buffer's size does not depend on it).
inline constexpr double kPlannedMomentum = 0.9;
TrainingGraph plan_training_graph(const Plan& plan, const std::string& plan_source, const Graph& forward,
                                  const OptimizerConfig* hyper = nullptr);

// `alpa-plan cost`: validates `plan` against the model and cluster (fingerprints, names, specs,
// strategies) and re-costs it. Throws UserError naming `plan_source` and the element.
struct CostResult {
  PlanEstimate estimate;
  std::vector<int> choice;
};
CostResult cost_plan(const Plan& plan, const std::string& plan_source, const Graph& forward,
                     const Cluster& cluster, const Profile* profile = nullptr,
                     const std::string& profile_text = "");

// `alpa-plan cost --derive-followers`: the single-stage plan with every follower's strategy and
// every tensor, gradient and optimizer-state spec re-derived from its leaders' strategies and
// its parameters' specs (what a hand edit of a leader implies); overrides dropped. `counts`, if
// given, receives how many strategies and specs changed. Throws UserError as plan_choice does
// for the leaders and parameters.
struct DerivedCounts {
  int64_t strategies = 0, tensors = 0;
};
Plan derive_followers(const Plan& plan, const std::string& plan_source, const Graph& forward, const Cluster& cluster,
                      const Profile* profile = nullptr, DerivedCounts* counts = nullptr);

// The strategy graph of a single-stage plan: its method and microbatches on its logical view of
// the whole cluster (UserError naming `plan_source` for a bad view or method).
StrategyGraph plan_strategy_graph(const Plan& plan, const std::string& plan_source, const TrainingGraph& tg,
                                  const Cluster& cluster, const Profile* profile = nullptr);
// The strategy choice (one index per group of `sg`) a single-stage plan's strategies and specs
// name, checked: every follower, tensor spec, gradient and state spec must be what the choice
// gives. `sg` is the plan's view of `tg` (plan_training_graph). Throws UserError naming
// `plan_source` and the element. What `cost` and alpa-run's lowering both use.
std::vector<int> plan_choice(const Plan& plan, const std::string& plan_source, const TrainingGraph& tg,
                             const StrategyGraph& sg);

// The plan's bindings and training configuration, from a search request (SearchRequest or
// PipelineRequest: the model, cluster, batch, optimizer and precision fields they share).
template <typename Request>
void fill_plan_header(Plan& p, const Request& rq, const Cluster& cluster, int64_t microbatches,
                      const std::string& method, int64_t memory_budget_bytes) {
  p.model = rq.model_name;
  p.cluster = rq.cluster_label;
  p.graph_fingerprint = graph_fingerprint(*rq.forward, rq.global_batch);
  p.cluster_fingerprint = cluster_fingerprint(cluster, rq.profile_text);
  p.global_batch = rq.global_batch;
  p.microbatches = microbatches;
  p.optimizer = optimizer_name(rq.optimizer);
  p.precision = precision_name(rq.precision.compute);
  p.method = method;
  p.memory_budget_bytes = memory_budget_bytes;
}

// Appends the plan entries of a choice: each forward node in [first_node, end_node) with its
// strategy and its outputs' specs, then each parameter `with_param` accepts with its spec and
// its gradient's and optimizer state's (the state spec).
void append_plan_specs(std::vector<PlanNodeStrategy>& strategies, std::vector<PlanTensorSpec>& tensors,
                       const TrainingGraph& tg, const ChosenSpecs& cs, int64_t first_node, int64_t end_node,
                       const std::function<bool(TensorId)>& with_param);

// Parses "D0xD1".
std::optional<LogicalMesh> parse_logical_mesh(const std::string& text);
Method parse_method(const std::string& text);  // throws UserError
std::string precision_name(DType compute);
// The plan's name of an optimizer: "sgd", "sgd-momentum" (SGD keeping a momentum buffer),
// "adam" or "adamw". Plans name the state an optimizer keeps; runs give its hyperparameters.
const char* optimizer_name(const OptimizerConfig& opt);
// Its inverse: the optimizer a name stands for ("sgd-momentum" with kPlannedMomentum); nullopt
// for an unknown name.
std::optional<OptimizerConfig> optimizer_from_name(std::string_view name);

// The training graph of one microbatch (global batch / microbatches samples); throws UserError
// when the microbatch count does not divide the batch.
TrainingGraph make_training(const Graph& forward, int64_t global_batch, int64_t microbatches,
                            const OptimizerConfig& optimizer, const PrecisionConfig& precision);

}  // namespace alpa
