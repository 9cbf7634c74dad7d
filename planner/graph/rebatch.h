// Where the batch lives in every tensor, and the graph for a smaller batch: data-parallel
// splits and microbatches are splits of the batch dim derived from the global-batch graph
// (local shapes, Reshape/Expand targets rewritten), never a re-import.
#pragma once

#include <cstdint>
#include <vector>

#include "planner/graph/graph.h"

namespace alpa {

// For every tensor, the dim whose major factor is the sample index (its size is a multiple of
// the global batch and the samples vary slowest in it), or -1 when the tensor does not depend
// on the sample index dimension-wise (parameters, reduced losses). Throws UserError naming the
// node where the batch is mixed in a way a split cannot follow (e.g. contracted away by a
// MatMul, or reshaped into a minor position).
std::vector<int> batch_dims(const Graph& graph, int64_t global_batch);

// A copy of `graph` for `new_batch` samples (new_batch divides global_batch). Mean-reduced
// results become means over the smaller batch. Throws UserError as batch_dims does, or when a
// constant bakes in the batch.
Graph rebatch(const Graph& graph, int64_t global_batch, int64_t new_batch);

}  // namespace alpa
