// The training graph: the forward graph, its reverse-mode derivative with respect to every
// trainable parameter, and the optimizer's update nodes, all in one Graph so the planner shards
// and costs optimizer state like any other tensor.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "planner/graph/graph.h"

namespace alpa {

enum class OptimizerKind { kSgd, kAdam, kAdamW };

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::kSgd;
  double lr = 0.01;
  double momentum = 0.0;  // SGD
  double weight_decay = 0.0;
  double beta1 = 0.9, beta2 = 0.999, epsilon = 1e-8;  // Adam/AdamW
};

// Mixed precision for planning GPU runs: compute (activations, gradients) in fp16/bf16, fp32
// master weights and optimizer state; fp16 scales the loss (the optimizer unscales). The CPU
// backend runs fp32 only.
struct PrecisionConfig {
  DType compute = DType::kFloat32;
  double loss_scale = 0;  // 0: 2^15 for fp16 (the largest power of two fp16 holds), 1 otherwise
};

struct ParameterSlot {
  TensorId param = kNoId;
  TensorId grad = kNoId;                // "grad/<name>": summed over every use (tied weights)
  std::vector<TensorId> state;          // "momentum/<name>" or "adam_m/<name>", "adam_v/<name>"
  TensorId updated_param = kNoId;       // the optimizer node's outputs
  std::vector<TensorId> updated_state;
};

// One gradient contribution: what the backward of forward node `node` gives its input `input`
// (before contributions to the same tensor are summed). The lowering reduces or reshards these
// where the plan says.
struct GradEdge {
  NodeId node = kNoId;
  size_t input = 0;
  TensorId grad = kNoId;
};

struct TrainingGraph {
  Graph graph;
  OptimizerConfig optimizer;
  std::vector<ParameterSlot> parameters;  // in canonical tensor order
  // After each step, `first` takes the value of `second`: parameters, optimizer state and
  // buffers (BatchNorm running statistics).
  std::vector<std::pair<TensorId, TensorId>> state_updates;
  size_t num_forward_nodes = 0;  // nodes [0, n) are the forward pass
  std::vector<GradEdge> grad_edges;  // in backward order
  PrecisionConfig precision;
};

// A node of the backward summing a tensor's gradient contributions (named ".../grad_sum/...").
bool is_grad_sum(const Node& n);

// Whether a node runs once per step with the optimizer update (optimizer nodes, and Reshard
// nodes of a rank program marked optimizer_phase) rather than once per microbatch.
bool in_optimizer_phase(const Node& node);

// Throws UserError when a node on the path to the loss cannot be differentiated (naming it).
TrainingGraph build_training_graph(const Graph& forward, const OptimizerConfig& optimizer,
                                   const PrecisionConfig& precision = {});

// The forward graph computing in `compute` precision: activations and constants converted,
// float Casts retargeted, and each parameter and buffer read through a Cast of its fp32 master
// (marked "master_cast"), except BatchNorm's running statistics, which stay fp32.
Graph to_compute_precision(const Graph& forward, DType compute);

}  // namespace alpa
