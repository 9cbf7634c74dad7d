// `alpa-plan inspect`: what a model costs to train, from the imported graph alone.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "planner/onnx/import.h"

namespace alpa {

struct RepeatedBlock {
  int64_t block_nodes = 0;  // nodes in one repetition
  int64_t repeats = 0;
  std::string first_node, last_node;  // of the first repetition
  int64_t block_parameter_count = 0;
  double block_forward_flops = 0;
};

struct InspectReport {
  std::string path, producer;
  int64_t opset = 0, batch = 0;
  int64_t tokens_per_sample = 0;  // sequence length of the token input; 0 when none
  int64_t nodes = 0, tensors = 0, folded_nodes = 0, removed_nodes = 0;
  bool shape_only = false;

  int64_t parameter_count = 0, parameter_tensors = 0, parameter_bytes = 0;
  int64_t buffer_count = 0, buffer_tensors = 0, buffer_bytes = 0;

  // Per training iteration (the global batch), counted from the training graph.
  double forward_flops = 0, backward_flops = 0;
  double optimizer_sgd_flops = 0, optimizer_adam_flops = 0;
  double training_flops = 0;                 // forward + backward
  double training_with_recompute_flops = 0;  // forward twice + backward

  int64_t gradient_bytes = 0, sgd_momentum_bytes = 0, adam_state_bytes = 0;
  int64_t activation_bytes = 0;  // activations the backward pass reads

  std::map<std::string, int64_t> op_histogram;
  std::optional<RepeatedBlock> repeated;
};

InspectReport inspect_model(const ImportedModel& model);
std::optional<RepeatedBlock> find_repeated_block(const Graph& graph);

std::string format_report_text(const InspectReport& report);
std::string format_report_json(const InspectReport& report);  // schemas/inspect.schema.json

}  // namespace alpa
