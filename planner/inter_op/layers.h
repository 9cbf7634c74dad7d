// Layer construction for the inter-operator pass: the forward nodes, in canonical order, cut into
// contiguous layers of balanced FLOPs with few bytes crossing each cut. Pipeline stages are
// ranges of layers; identical layers (a transformer's blocks) share one signature, so stage
// costs of identical layer ranges are computed once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "planner/graph/graph.h"

namespace alpa {

struct LayerOptions {
  int layers = 0;        // 0: automatic (the repeated blocks grouped into at most 16 layers)
  double epsilon = 0.5;  // a layer's FLOPs stay within (1 + epsilon) of the mean
};

struct Layers {
  std::vector<int> layer_of_node;      // per forward node
  std::vector<int64_t> first, end;     // forward node range [first, end) per layer
  std::vector<uint64_t> signature;     // per layer: structure (equal for identical layers)
  std::vector<double> flops;           // per layer: forward FLOPs
  // Activation bytes crossing the cut before layer l (index 0: none), one microbatch.
  std::vector<int64_t> boundary_bytes;
  size_t size() const { return first.size(); }
};

// `num_forward_nodes` leading nodes of `graph` are the forward pass. Throws UserError when the
// requested layer count is impossible (more layers than cut points).
Layers build_layers(const Graph& graph, size_t num_forward_nodes, const LayerOptions& options);

// Layers ending at the given forward-node indices (ascending, the last = num_forward_nodes).
Layers layers_from_ends(const Graph& graph, size_t num_forward_nodes, const std::vector<int64_t>& ends);

// Repetitions of the model's repeated block (a transformer's layers); 0 when there is none.
int64_t repeated_block_count(const Graph& graph, size_t num_forward_nodes);

}  // namespace alpa
