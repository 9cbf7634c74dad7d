// Runs the training graph on one device: forward, backward and optimizer update per step,
// with tensors allocated from a MemoryPool and freed after their last use.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "executor/backend/kernels.h"
#include "executor/runtime/memory_pool.h"
#include "planner/autodiff/training_graph.h"

namespace alpa::exec {

struct StepResult {
  double loss = 0;
  int64_t peak_bytes = 0;  // the pool's high-water mark during the step
};

class Trainer {
 public:
  // Parameters and buffers start from the model's initializers; shape-only ones from the
  // counter-based RNG keyed by `seed` and the tensor's name; optimizer state from zeros.
  Trainer(const TrainingGraph& tg, Kernels& kernels, uint64_t seed);
  ~Trainer();

  // `inputs` holds one host buffer per graph input (in Graph::inputs order), each with the
  // input's dtype and shape.
  StepResult step(const std::vector<const void*>& inputs, int64_t step_index) {
    return step_microbatches({inputs}, step_index, 0.0);
  }
  // Gradient accumulation: forward and backward once per microbatch (the training graph is
  // built for one microbatch), BatchNorm statistics per microbatch, gradients summed, one
  // optimizer update. `loss_normalizer` > 0 makes mean losses divide by the step's global count
  // of counted labels; the reported loss is the sum over microbatches.
  StepResult step_microbatches(const std::vector<std::vector<const void*>>& microbatches,
                               int64_t step_index, double loss_normalizer);

  // Current value of a persistent tensor (parameter, buffer, optimizer state).
  const void* value(TensorId t) const { return ptr_.at(static_cast<size_t>(t)); }
  const TrainingGraph& training_graph() const { return tg_; }
  int64_t persistent_bytes() const { return persistent_bytes_; }

 private:
  bool is_persistent(TensorId t) const;
  void run_node(size_t k, KernelCall& call, std::vector<void*>& scratch);
  void apply_updates(bool optimizer);  // state_updates whose source an optimizer node writes, or not
  void release_step_tensors();
  void initialize(TensorId t, uint64_t seed);

  const TrainingGraph& tg_;
  Kernels& kernels_;
  MemoryPool pool_;
  uint64_t seed_;
  std::vector<void*> ptr_;
  std::vector<int64_t> last_use_;     // index of the last node reading each tensor
  std::vector<bool> keep_to_end_;     // loss, state-update sources and parameter gradients
  std::vector<bool> from_optimizer_;  // tensors written by optimizer nodes
  int64_t persistent_bytes_ = 0;
};

}  // namespace alpa::exec
