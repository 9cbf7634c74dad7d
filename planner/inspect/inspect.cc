#include "planner/inspect/inspect.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "planner/autodiff/training_graph.h"
#include "planner/common/format.h"
#include "planner/graph/op_cost.h"

namespace alpa {
namespace {

// Adam's update per parameter element, as op_cost counts an AdamUpdate node: two moment updates,
// bias corrections and the update.
constexpr double kAdamFlopsPerParam = 15;

bool is_activation_like(TensorRole role) {
  return role == TensorRole::kActivation || role == TensorRole::kDataInput ||
         role == TensorRole::kLabel || role == TensorRole::kLoss;
}

int64_t sequence_length(const Graph& g) {
  for (TensorId t : g.inputs) {
    const Tensor& in = g.tensor(t);
    if (in.role == TensorRole::kDataInput && !is_floating(in.dtype) && in.shape.size() == 2) {
      return in.shape[1];
    }
  }
  return 0;
}

}  // namespace

InspectReport inspect_model(const ImportedModel& model) {
  const Graph& g = model.graph;
  InspectReport r;
  r.path = model.path;
  r.producer = model.producer;
  r.opset = model.opset;
  r.batch = model.batch;
  r.tokens_per_sample = sequence_length(g);
  r.nodes = static_cast<int64_t>(g.num_nodes());
  r.tensors = static_cast<int64_t>(g.num_tensors());
  r.folded_nodes = model.folded_nodes;
  r.removed_nodes = model.removed_nodes;
  r.shape_only = model.shape_only;

  for (const Tensor& t : g.tensors()) {
    if (t.role == TensorRole::kParameter) {
      r.parameter_count += t.numel();
      r.parameter_bytes += t.bytes();
      ++r.parameter_tensors;
    } else if (t.role == TensorRole::kBuffer) {
      r.buffer_count += t.numel();
      r.buffer_bytes += t.bytes();
      ++r.buffer_tensors;
    }
  }

  for (const Node& node : g.nodes()) {
    r.forward_flops += count_node(g, node).flops;
    ++r.op_histogram[std::string(op_name(node.kind))];
  }
  // Backward and optimizer costs are counted from the training graph (SGD with momentum);
  // the activations kept for backward are the forward tensors its backward nodes read.
  OptimizerConfig sgd;
  sgd.momentum = 0.9;
  const TrainingGraph tg = build_training_graph(g, sgd);
  std::set<TensorId> saved;
  for (size_t k = tg.num_forward_nodes; k < tg.graph.num_nodes(); ++k) {
    const Node& node = tg.graph.node(static_cast<NodeId>(k));
    const double flops = count_node(tg.graph, node).flops;
    if (op_info(node.kind).family == OpFamily::kOptimizer) {
      r.optimizer_sgd_flops += flops;
      continue;
    }
    r.backward_flops += flops;
    for (TensorId t : node.inputs) {
      if (static_cast<size_t>(t) < g.num_tensors() && is_activation_like(g.tensor(t).role)) saved.insert(t);
    }
  }
  for (TensorId t : saved) r.activation_bytes += g.tensor(t).bytes();
  r.training_flops = r.forward_flops + r.backward_flops;
  r.training_with_recompute_flops = 2.0 * r.forward_flops + r.backward_flops;
  r.optimizer_adam_flops = kAdamFlopsPerParam * static_cast<double>(r.parameter_count);

  // Gradients and optimizer state in the parameters' dtype (fp32 here).
  r.gradient_bytes = r.parameter_bytes;
  r.sgd_momentum_bytes = r.parameter_bytes;
  r.adam_state_bytes = 2 * r.parameter_bytes;
  r.repeated = find_repeated_block(g);
  return r;
}

std::string format_report_json(const InspectReport& r) {
  using nlohmann::ordered_json;
  const double samples = static_cast<double>(r.batch);
  const double tokens = samples * static_cast<double>(r.tokens_per_sample);
  auto per = [&](double divisor) {
    ordered_json j;
    if (divisor <= 0) return ordered_json(nullptr);
    j["forward_flops"] = r.forward_flops / divisor;
    j["training_flops"] = r.training_flops / divisor;
    j["training_with_recompute_flops"] = r.training_with_recompute_flops / divisor;
    return j;
  };
  ordered_json j;
  j["format"] = "alpa-inspect/1";
  j["model"] = {{"path", r.path},
                {"producer", r.producer},
                {"opset", r.opset},
                {"batch", r.batch},
                {"tokens_per_sample", r.tokens_per_sample}};
  j["graph"] = {{"nodes", r.nodes},
                {"tensors", r.tensors},
                {"folded_nodes", r.folded_nodes},
                {"removed_nodes", r.removed_nodes},
                {"shape_only", r.shape_only}};
  j["parameters"] = {{"count", r.parameter_count},
                     {"tensors", r.parameter_tensors},
                     {"size_bytes", r.parameter_bytes}};
  j["buffers"] = {{"count", r.buffer_count},
                  {"tensors", r.buffer_tensors},
                  {"size_bytes", r.buffer_bytes}};
  j["flops"] = {{"estimated_backward", false},
                {"forward_flops", r.forward_flops},
                {"backward_flops", r.backward_flops},
                {"training_flops", r.training_flops},
                {"training_with_recompute_flops", r.training_with_recompute_flops},
                {"optimizer_sgd_flops", r.optimizer_sgd_flops},
                {"optimizer_adam_flops", r.optimizer_adam_flops},
                {"per_sample", per(samples)},
                {"per_token", r.tokens_per_sample > 0 ? per(tokens) : ordered_json(nullptr)}};
  j["memory"] = {{"parameter_bytes", r.parameter_bytes},
                 {"gradient_bytes", r.gradient_bytes},
                 {"sgd_momentum_bytes", r.sgd_momentum_bytes},
                 {"adam_state_bytes", r.adam_state_bytes},
                 {"sgd_total_bytes", r.parameter_bytes + r.gradient_bytes + r.sgd_momentum_bytes},
                 {"adam_total_bytes", r.parameter_bytes + r.gradient_bytes + r.adam_state_bytes},
                 {"activation_bytes", r.activation_bytes}};
  ordered_json ops = ordered_json::object();
  for (const auto& [op, n] : r.op_histogram) ops[op] = n;
  j["ops"] = ops;
  if (r.repeated) {
    j["repeated_block"] = {{"block_nodes", r.repeated->block_nodes},
                           {"repeats", r.repeated->repeats},
                           {"first_node", r.repeated->first_node},
                           {"last_node", r.repeated->last_node},
                           {"block_parameter_count", r.repeated->block_parameter_count},
                           {"block_forward_flops", r.repeated->block_forward_flops}};
  } else {
    j["repeated_block"] = nullptr;
  }
  return j.dump(2) + "\n";
}

std::string format_report_text(const InspectReport& r) {
  std::ostringstream out;
  char line[256];
  auto row = [&](const char* label, const std::string& value) {
    std::snprintf(line, sizeof line, "  %-34s %s\n", label, value.c_str());
    out << line;
  };
  out << r.path << "  (" << (r.producer.empty() ? "unknown producer" : r.producer) << ", opset "
      << r.opset << ")\n";
  row("global batch", std::to_string(r.batch) +
                          (r.tokens_per_sample ? " x " + std::to_string(r.tokens_per_sample) + " tokens" : ""));
  row("graph", std::to_string(r.nodes) + " nodes, " + std::to_string(r.tensors) + " tensors (" +
                   std::to_string(r.folded_nodes) + " folded, " + std::to_string(r.removed_nodes) +
                   " removed at import)" + (r.shape_only ? ", shape-only weights" : ""));
  out << "parameters\n";
  row("trainable parameters", format_count(static_cast<double>(r.parameter_count)) + " (" +
                                  std::to_string(r.parameter_count) + " in " +
                                  std::to_string(r.parameter_tensors) + " tensors, " +
                                  format_bytes(static_cast<double>(r.parameter_bytes)) + ")");
  row("buffers", format_count(static_cast<double>(r.buffer_count)) + " (" +
                     std::to_string(r.buffer_tensors) + " tensors, " +
                     format_bytes(static_cast<double>(r.buffer_bytes)) + ")");
  out << "compute per iteration (backward counted from the training graph)\n";
  row("forward FLOPs", format_count(r.forward_flops));
  row("backward FLOPs", format_count(r.backward_flops));
  row("training FLOPs", format_count(r.training_flops));
  row("training FLOPs, full recompute", format_count(r.training_with_recompute_flops));
  row("optimizer FLOPs sgd / adam", format_count(r.optimizer_sgd_flops) + " / " +
                                        format_count(r.optimizer_adam_flops));
  if (r.batch > 0) row("training FLOPs per sample", format_count(r.training_flops / static_cast<double>(r.batch)));
  if (r.tokens_per_sample > 0) {
    const double tokens = static_cast<double>(r.batch) * static_cast<double>(r.tokens_per_sample);
    row("training FLOPs per token", format_count(r.training_flops / tokens) + " (" +
                                        format_count(r.training_with_recompute_flops / tokens) +
                                        " with recompute)");
  }
  out << "memory (fp32)\n";
  row("parameters", format_bytes(static_cast<double>(r.parameter_bytes)));
  row("gradients", format_bytes(static_cast<double>(r.gradient_bytes)));
  row("optimizer state sgd / adam", format_bytes(static_cast<double>(r.sgd_momentum_bytes)) + " / " +
                                        format_bytes(static_cast<double>(r.adam_state_bytes)));
  row("activations kept for backward", format_bytes(static_cast<double>(r.activation_bytes)));
  out << "operators\n";
  for (const auto& [op, n] : r.op_histogram) row(op.c_str(), std::to_string(n));
  if (r.repeated) {
    out << "repeated structure\n";
    row("block", std::to_string(r.repeated->repeats) + " x " + std::to_string(r.repeated->block_nodes) +
                     " nodes, from '" + r.repeated->first_node + "' to '" + r.repeated->last_node + "'");
    row("per block", format_count(static_cast<double>(r.repeated->block_parameter_count)) +
                         " parameters, " + format_count(r.repeated->block_forward_flops) +
                         " forward FLOPs");
  }
  return out.str();
}

}  // namespace alpa
