// Training data: one NumPy file per model input (dim 0 = samples), or synthetic batches.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "executor/runtime/npy.h"
#include "planner/graph/graph.h"

namespace alpa::exec {

class DataSource {
 public:
  virtual ~DataSource() = default;
  // One host buffer per graph input (Graph::inputs order) for step `step`.
  virtual std::vector<std::vector<uint8_t>> batch(int64_t step) = 0;
};

// DIR/<input-name>.npy for every input. Step k uses samples [k·B, (k+1)·B) modulo the number
// of samples. Throws UserError for a missing file or a wrong dtype or shape.
std::unique_ptr<DataSource> open_data_directory(const std::string& dir, const Graph& graph);

// Seeded random batches: floats uniform in [-1, 1), integers in the range the model accepts
// (embedding rows, classes, one-hot depth).
std::unique_ptr<DataSource> synthetic_data(const Graph& graph, uint64_t seed);

}  // namespace alpa::exec

namespace alpa {
// The loss's label input and its ignore_index, for the global label count of a step.
struct SoftmaxCrossEntropyTarget {
  size_t input_index = 0;  // index into Graph::inputs
  bool has_ignore_index = false;
  int64_t ignore_index = 0;
};
}  // namespace alpa

namespace alpa::exec {
// With `microbatches` > 1 the loss must be one mean-reduced SoftmaxCrossEntropyLoss whose labels
// are a graph input split along dim 0 (so its mean can use the step's global label count);
// throws UserError naming what is not.
SoftmaxCrossEntropyTarget loss_target(const Graph& graph, int64_t microbatches);
// For a batch split across ranks: the one mean SoftmaxCrossEntropyLoss anywhere in the graph
// (other loss terms are allowed: the lowering rescales means over the split batch); throws
// UserError naming `context` when there is none or more than one.
SoftmaxCrossEntropyTarget cross_entropy_target(const Graph& graph, const std::string& context);
// Splitting the batch (microbatches, ranks) takes samples from dim 0 of every input: UserError
// naming `context` and the first input whose batch is elsewhere, with `why`.
void require_batch_in_dim0(const Graph& graph, const std::string& context, const std::string& why);
// Number of counted labels (not ignore_index) in a full-batch input set.
double count_labels(const SoftmaxCrossEntropyTarget& target, const Graph& graph,
                    const std::vector<std::vector<uint8_t>>& batch);
}  // namespace alpa::exec
