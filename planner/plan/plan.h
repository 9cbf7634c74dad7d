// The execution plan (schemas/plan.schema.json): what `alpa-plan search` writes, `alpa-plan
// cost` re-costs and `alpa-run` executes. Canonical JSON: fixed key order, one entry per line,
// shortest round-trip numbers, so the same inputs give byte-identical files and `git diff` of
// two plans reads as the change in decisions.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace alpa {

inline constexpr const char* kPlanFormat = "alpa-plan/1";

struct PlanMemory {  // bytes per device (the most loaded device)
  int64_t parameter_bytes = 0;
  int64_t gradient_bytes = 0;
  int64_t optimizer_state_bytes = 0;
  int64_t activation_bytes = 0;  // activations kept for the backward pass
  int64_t peak_bytes = 0;        // simulated allocation peak of the step
  bool operator==(const PlanMemory&) const = default;
};

struct PlanEstimate {
  double iteration_time_s = 0;
  double throughput_samples_per_s = 0;
  double compute_time_s = 0;        // per device
  double communication_time_s = 0;  // per device
  // Bytes each device sends per step, per collective kind ("all_reduce", "all_gather",
  // "reduce_scatter", "all_to_all"); every kind present, zero when unused.
  std::map<std::string, double> communication_bytes;
  PlanMemory memory;
  bool operator==(const PlanEstimate&) const = default;
};

// How the intra-op search went (deterministic figures only; wall-clock times are printed,
// never written, so plans stay byte-identical).
struct PlanSolverReport {
  int64_t nodes_before_merging = 0;  // strategy-graph nodes before follower merging
  int64_t nodes_after_merging = 0;
  int64_t ilps_solved = 0;
  int64_t largest_ilp_variables = 0;
  int64_t largest_ilp_constraints = 0;
  bool proven_optimal = true;
  bool operator==(const PlanSolverReport&) const = default;
};

struct PlanTensorSpec {
  std::string tensor;  // tensor name in the training graph
  std::string spec;    // "S0R", "RS1", ...
  bool operator==(const PlanTensorSpec&) const = default;
};

struct PlanNodeStrategy {
  std::string node;      // forward node name
  std::string strategy;  // strategy name as the strategy generator prints it
  bool operator==(const PlanNodeStrategy&) const = default;
};

// Hierarchical plans (the inter-op pass): layers, stages on submeshes, transfers between them.
struct PlanLayer {
  std::string first_node, last_node;  // forward nodes, canonical order
  bool operator==(const PlanLayer&) const = default;
};

struct PlanStage {
  int64_t first_layer = 0, end_layer = 0;  // layers [first, end)
  int64_t mesh_hosts = 1, mesh_devices_per_host = 1;
  int64_t logical_d0 = 1, logical_d1 = 1;
  std::vector<int64_t> device_ids;
  std::string method = "shard";  // the intra-op space its sharding was chosen from
  bool remat = false;            // recompute the forward during the backward
  int64_t inflight = 1;          // microbatches whose activations it holds at once
  std::vector<PlanNodeStrategy> strategies;  // its forward nodes
  std::vector<PlanTensorSpec> tensors;       // their outputs and its parameters' state
  double microbatch_time_s = 0;  // forward + backward (+ recomputation, + sends) per microbatch
  double forward_time_s = 0;     // of which the forward's compute (0: unknown, an older plan)
  double step_time_s = 0;        // gradient synchronisation and optimizer update, per step
  // Bytes each of its devices sends per step in collectives inside the stage, per kind
  // (all_gather, all_reduce, all_to_all, reduce_scatter); empty in older plans.
  std::map<std::string, double> communication_bytes;
  PlanMemory memory;             // per device, with `inflight` microbatches alive
  bool operator==(const PlanStage&) const = default;
};

struct PlanTransfer {  // a boundary activation sent from one stage to the next (and its gradient back)
  int64_t from_stage = 0, to_stage = 0;
  std::string tensor;
  int64_t bytes = 0;   // one microbatch, the whole tensor
  double time_s = 0;   // forward send + backward gradient, one microbatch
  bool operator==(const PlanTransfer&) const = default;
};

// A parameter several stages read (a tied embedding): each holder sums its own contributions to
// the gradient over the step's microbatches, sends that sum to the other holders once per step,
// and every holder applies the same update.
struct PlanSharedParameter {
  std::string parameter;
  std::vector<int64_t> stages;  // holders, ascending
  int64_t bytes = 0;            // the gradient one holder sends to each other holder, per step
  double time_s = 0;            // the exchange (in the step's tail)
  bool operator==(const PlanSharedParameter&) const = default;
};

struct PlanPipeline {
  std::string schedule = "1f1b";  // 1f1b | gpipe
  std::vector<PlanLayer> layers;
  std::vector<PlanStage> stages;
  std::vector<PlanTransfer> transfers;
  std::vector<PlanSharedParameter> shared;
  // Iteration time = busy + bubble + tail: the slowest stage's B microbatches, the time it
  // waits while the pipeline fills and drains (Σ stage times − the slowest), and the step's tail
  // (the slowest stage's gradient synchronisation and optimizer update, then the shared
  // parameters' exchange).
  double busy_time_s = 0;
  double bubble_time_s = 0;
  double step_tail_s = 0;
  bool operator==(const PlanPipeline&) const = default;
};

struct Plan {
  std::string format = kPlanFormat;
  // Bindings to the inputs: graph (forward structure, global batch, autodiff-rule version;
  // not weights) and cluster.
  std::string graph_fingerprint;
  std::string cluster_fingerprint;
  std::string model;    // file name of the model the plan was made for (informational)
  std::string cluster;  // cluster name, e.g. "p3.16xlarge:8"

  // Training configuration.
  int64_t global_batch = 0;
  int64_t microbatches = 1;
  std::string optimizer = "sgd";  // sgd | adam | adamw
  std::string precision = "fp32"; // fp32 | fp16 | bf16
  std::string method = "shard";   // shard | data | zero2 | zero3 | auto | megatron | pp-dp
  int64_t memory_budget_bytes = 0;

  // The one stage of a shard-parallel plan: its devices and logical mesh.
  int64_t mesh_hosts = 1, mesh_devices_per_host = 1;
  int64_t logical_d0 = 1, logical_d1 = 1;
  std::vector<int64_t> device_ids;

  std::vector<PlanNodeStrategy> strategies;  // forward nodes in canonical order
  std::vector<PlanTensorSpec> tensors;       // forward tensors, parameters, gradients, state
  std::vector<PlanTensorSpec> overrides;     // backward tensors whose spec differs from derived

  // Hierarchical plans: the stages (the single-stage fields above are then empty).
  std::optional<PlanPipeline> pipeline;

  PlanEstimate estimate;
  PlanSolverReport solver;
  bool operator==(const Plan&) const = default;
};

// Canonical JSON text (ends with a newline).
std::string plan_to_json(const Plan& plan);
// Parses and validates the structure (types, required keys, spec syntax); `source` names the
// file in errors: UserError "<source>: <json path>: <what>" (exit code 2 in the apps).
Plan parse_plan(const std::string& json_text, const std::string& source);

// Shortest round-trip decimal form of a double (what plan and cluster files use).
std::string format_number(double value);

}  // namespace alpa
