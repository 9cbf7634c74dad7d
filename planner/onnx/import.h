// ONNX → Graph. The only module that sees protobuf/ONNX headers (they stay in import.cc).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "planner/graph/graph.h"

namespace alpa {

struct BatchDim {
  std::string input;  // graph input name
  int64_t axis = 0;
};

struct ImportOptions {
  // Binds the batch dim (dim 0 of every graph input unless `batch_dims` names another axis).
  // Optional when the dim is static; a value different from a static dim re-binds it, and any
  // Reshape that bakes in the old batch is reported by name.
  std::optional<int64_t> batch;
  std::vector<BatchDim> batch_dims;
  std::string trainable_regex;  // force matching floating initializers to be parameters
  std::string frozen_regex;     // force matching floating initializers to be buffers
};

struct ImportedModel {
  Graph graph;
  std::string path;
  int64_t opset = 0;
  std::string producer;  // producer_name + version, e.g. "pytorch 1.13.1"
  int64_t batch = 0;     // the global batch the graph describes
  int64_t folded_nodes = 0;    // nodes evaluated at import (shape chains, constants)
  int64_t removed_nodes = 0;   // identities, inactive dropouts, nodes off the loss path
  bool shape_only = false;     // some parameter carries no data
};

// Throws UserError ("<path>: <element>: <what>") for any problem with the model.
ImportedModel import_onnx_file(const std::string& path, const ImportOptions& options);
// Same, for bytes already in memory; `path` is used for messages and external data.
ImportedModel import_onnx_bytes(const std::string& bytes, const std::string& path,
                                const ImportOptions& options);

// "NAME:AXIS" → BatchDim; throws UserError naming the flag value on a malformed spec.
BatchDim parse_batch_dim(const std::string& spec);

}  // namespace alpa
