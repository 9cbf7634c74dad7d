// The strategy graph of one stage on one logical mesh: for every forward node and every
// parameter, the strategies it may take (input/output specs, compute, communication, memory),
// follower nodes merged into the group whose choice decides theirs, and resharding-cost
// matrices on the edges between groups (forward resharding plus the backward reduction of the
// gradient that flows back over the same edge).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <map>
#include <memory>
#include <vector>

#include "planner/autodiff/training_graph.h"
#include "planner/cluster/cluster.h"
#include "planner/cluster/mesh.h"
#include "planner/sharding/letters.h"
#include "planner/sharding/spec.h"
#include "planner/spmd/reshard.h"

namespace alpa {

// How the strategy space is restricted: the ILP's full space, or a baseline preset.
// kMegatron: Megatron-LM's space on a (data, tensor) view — axis 0 splits the batch (data
// parallelism), axis 1 splits only non-batch dims (tensor parallelism), parameters are never
// split on axis 0 and keep their optimizer state with them.
enum class Method : uint8_t { kShard, kData, kZero2, kZero3, kMegatron };
const char* method_name(Method m);

struct StrategyGraph;

struct StrategyGraphOptions {
  Method method = Method::kShard;
  int64_t microbatches = 1;  // gradient accumulation: per-microbatch work counts K times
  // Also offer contraction outputs reduce-scattered onto a free dim (sequence-parallel style);
  // off by default, as in Alpa: the all-reduce pattern is what Megatron-LM runs.
  bool allow_reduce_scatter_outputs = false;
  // Follower merging (element-wise and layout ops take their operand's choice); off only to
  // measure what merging saves.
  bool merge_followers = true;
  // Measured kernel and collective timings (alpa-plan profile); datasheet figures otherwise.
  const Profile* profile = nullptr;
  // The view-independent facts (strategy_graph_facts) of the same training graph and cluster,
  // computed once for the many views the inter-op pass builds; null: computed here.
  std::shared_ptr<const StrategyGraph> facts;
};

// One strategy of one forward node (or of a parameter).
struct NodeStrategy {
  std::string name;
  std::array<int, 2> axis_letter = {kNoLetter, kNoLetter};  // letter per mesh axis
  int scatter_dim = -1;  // output 0's pending sum is reduce-scattered onto this dim (-1: all-reduce)
  std::vector<ShardingSpec> in, out;       // per node input / output
  std::vector<AxisMask> in_grad_partial;   // per input: axes the backward leaves partial
  double compute_s = 0;                    // forward + backward (+ optimizer), per step
  double comm_s = 0;                       // collectives inside the node, per step
  std::vector<CollectiveStep> comms;       // those collectives (once per microbatch): the
                                           // reductions of partial outputs, output by output,
                                           // then exchanged statistics
  std::vector<AxisMask> out_partial;       // per output: axes its local result is a partial sum over
  int64_t memory_bytes = 0;                // saved-for-backward outputs (+ parameter state)
  int64_t temp_bytes = 0;                  // working set while it runs: forward inputs and
                                           // outputs, and its backward nodes' outputs
  double work_fraction = 1;                // share of the iteration space each device runs
  double forward_s = 0;                    // forward compute of one microbatch (recomputation)
  // Followers of a parameter: the spec of each output that the gradient is reduced to (what
  // following the optimizer state's spec gives); empty elsewhere.
  std::vector<ShardingSpec> grad_out;
  // Parameters only: the optimizer state's (and gradient's) spec; equals out[0] unless ZeRO.
  ShardingSpec state;
  int64_t param_bytes = 0, grad_bytes = 0, state_bytes = 0;
};

// A merged group: a leader (forward node or parameter) and the followers its choice decides.
struct Group {
  std::string name;              // leader's name
  bool is_parameter = false;
  TensorId parameter = kNoId;    // parameter groups
  NodeId leader = kNoId;         // node groups
  std::vector<NodeId> members;   // forward nodes in the group (leader first), canonical order
  // Per group strategy: each member's strategy (index parallel to members; parameter groups
  // keep the parameter's own strategy in `param_strategy`).
  std::vector<std::vector<NodeStrategy>> member_strategy;  // [strategy][member]
  std::vector<NodeStrategy> param_strategy;                // [strategy] (parameter groups)
  std::vector<double> cost;      // objective per strategy: compute + internal communication
  std::vector<int64_t> memory;   // bytes per strategy
  // The part of `cost` paid once per step whatever the microbatch count (parameter gradient
  // synchronisation, optimizer update); the rest is paid once per microbatch.
  std::vector<double> step_cost;
  // The same three per member and strategy ([member][strategy]): what each member adds (its
  // own cost and the edges inside the group it consumes). A parameter group's own part (the
  // parameter's update) is what the members leave of the totals. Pipeline stages count the
  // members of their layers only.
  std::vector<std::vector<double>> member_cost, member_step;
  std::vector<std::vector<int64_t>> member_memory;
  size_t num_strategies() const { return cost.size(); }
};

struct GroupEdge {
  int from = 0, to = 0;                   // producer group, consumer group
  std::vector<std::vector<double>> cost;  // [strategy of from][strategy of to]
  std::vector<std::vector<double>> step_cost;  // the once-per-step part of cost (empty: none)
};

struct StrategyGraph {
  const TrainingGraph* training = nullptr;
  const Cluster* cluster = nullptr;
  MeshShape mesh;
  MeshCosts costs;
  StrategyGraphOptions options;
  std::vector<int> batch_dim;          // per tensor
  std::vector<bool> needs_grad;        // per tensor: a gradient flows back to it
  std::vector<bool> saved;             // per tensor: read by the backward pass
  std::vector<IterationSpace> spaces;  // per forward node
  std::vector<double> full_time_s;     // per forward node: forward+backward time, unsharded
  std::vector<double> forward_time_s;  // per forward node: forward time alone, unsharded
  std::vector<int64_t> backward_bytes; // per forward node: bytes its backward nodes produce
  std::vector<int> group_of_node;      // per forward node
  std::vector<int> group_of_param;     // per tensor: parameter group, -1 otherwise
  std::vector<Group> groups;
  std::vector<GroupEdge> edges;
  int64_t nodes_before_merging = 0;    // forward nodes + parameters with a choice
  double constant_cost = 0;            // objective terms no choice changes
};

// Per forward node of a training graph: forward + backward time and forward time alone on one
// device of the cluster, unsharded (a strategy's compute is these times the share of the work
// each device runs), and the bytes its backward nodes produce. Independent of the mesh, so the
// inter-op pass can bound stage times without building a strategy graph.
struct NodeWork {
  std::vector<double> full_time_s, forward_time_s;
  std::vector<int64_t> backward_bytes;
};
NodeWork node_work(const TrainingGraph& tg, const Cluster& cluster, const Profile* profile);

// A strategy graph with only its view-independent facts filled in (batch dims, gradient and
// saved flags, iteration spaces, unsharded times), for StrategyGraphOptions::facts.
std::shared_ptr<const StrategyGraph> strategy_graph_facts(const TrainingGraph& tg, const Cluster& cluster,
                                                         const StrategyGraphOptions& options);

StrategyGraph build_strategy_graph(const TrainingGraph& tg, const Cluster& cluster,
                                   const MeshShape& mesh, const LogicalMesh& view,
                                   const StrategyGraphOptions& options);

// Edge and spec details, for the checker, the estimate and `cost`.
struct ChosenSpecs {
  std::vector<const NodeStrategy*> node;  // per forward node
  std::vector<const NodeStrategy*> param; // per tensor (parameters), null otherwise
  std::vector<ShardingSpec> tensor;       // per tensor: spec as produced (empty when unknown)
};
ChosenSpecs chosen_specs(const StrategyGraph& sg, const std::vector<int>& choice);

// What a plan's editor may write: per node group in canonical order, its leader's name and the
// leader's strategy names (as the plan's "strategies" section spells them), one per strategy
// of the group. Followers are not listed: their strategy follows the leader's.
struct EditableNode {
  std::string node;
  std::vector<std::string> strategies;
};
std::vector<EditableNode> editable_nodes(const StrategyGraph& sg);

// One collective of the step, and how many times per step it runs.
struct CommEvent {
  TensorId tensor = kNoId;
  std::string where;  // "forward", "backward", "optimizer", or the node that runs it
  CollectiveStep step;
  double count = 1;
};
// The resharding on one forward edge (input `input` of forward node `node`): the forward
// conversion of the produced spec to the one the node wants, and the backward conversion of the
// gradient the node gives that input (its spec, partial over some axes) to the spec the producer
// wants it in (a parameter's gradient: its optimizer-state spec). What the estimate counts and
// the executor's lowering performs.
struct EdgeReshards {
  bool planned = false;        // the input has a producer group or is a parameter
  bool param_like = false;     // a parameter or a tensor computed from parameters only: its
                               // gradient is reduced once per step, after accumulation
  bool forward_again = false;  // param-like and saved: the conversion repeats in the backward
  bool has_backward = false;   // a gradient flows back over the edge
  ShardingSpec grad_target;    // the spec the backward converts the gradient to
  ReshardResult forward, backward;
};
// The group that decides a tensor's spec: its parameter group, or its forward producer's; -1
// for graph inputs and constants.
int tensor_group(const StrategyGraph& sg, TensorId t);
// A parameter or a tensor computed from parameters only (its group is a parameter group).
bool param_like(const StrategyGraph& sg, TensorId t);

// Whether the backward of forward node `n` reads its saved input `input` (so a gathered
// parameter is gathered again for it).
bool backward_reads(const Node& n, size_t input, const std::vector<bool>& needs_grad);
EdgeReshards edge_reshards(const StrategyGraph& sg, const std::vector<int>& choice, const ChosenSpecs& specs,
                           NodeId node, size_t input);

// Every collective a choice performs, recomputed tensor by tensor from the chosen specs (not
// from the ILP's matrices): what the estimate reports and the checker sums.
std::vector<CommEvent> communication(const StrategyGraph& sg, const std::vector<int>& choice);
// The same for a pipeline stage: forward nodes [first, end), their inputs produced inside the
// stage's groups (`in_groups`; tensors from other stages are transfers), its parameters.
std::vector<CommEvent> communication(const StrategyGraph& sg, const std::vector<int>& choice, int64_t first,
                                     int64_t end, const std::vector<bool>& in_groups);
// Bytes each device sends per step for these events, per collective kind (every kind present).
std::map<std::string, double> bytes_per_kind(const std::vector<CommEvent>& events);

// Objective of a full choice (one strategy index per group), recomputed from scratch: the
// independent check of the solver's objective.
double evaluate_objective(const StrategyGraph& sg, const std::vector<int>& choice);
// Linear memory model of a choice (what the ILP constrains).
int64_t evaluate_memory(const StrategyGraph& sg, const std::vector<int>& choice);

}  // namespace alpa
