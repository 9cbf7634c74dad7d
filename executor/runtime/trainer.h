// Runs the training graph on one device: forward, backward and optimizer update per step,
// with tensors allocated from a MemoryPool and freed after their last use.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "executor/backend/kernels.h"
#include "executor/runtime/memory_pool.h"
#include "planner/autodiff/training_graph.h"

namespace alpa::exec {

struct StepResult {
  double loss = 0;
  int64_t peak_bytes = 0;  // the pool's high-water mark during the step
};

// A rank's part of a batch-parallel step, and the collectives it adds to the single-device
// step. Without it (one device), a step's microbatches are consecutive blocks of its batch.
struct BatchParallel {
  // Global index of this rank's first sample in microbatch m: m·(samples per microbatch on all
  // ranks) + block·(samples per microbatch on this rank).
  int64_t batch_ways = 1;
  int64_t batch_block = 0;
  // Sums `count` elements over the ranks sharing a microbatch (BatchNorm statistics).
  std::function<void(void* data, int64_t count, DType dtype)> sum_over_batch;
  // Sums over the ranks along the mesh axes in a mask (StepContext::sum_over_axes).
  std::function<void(int64_t axes, void* data, int64_t count, DType dtype)> sum_over_axes;
  // Per-position statistics of a vocab-parallel cross-entropy, over its class-split axis.
  std::function<void(const Node& node, void* data, int64_t count, DType dtype, bool max)> reduce_over_classes;
  // Called right after a node produces a tensor marked in `watch` (per tensor), with its buffer,
  // the microbatch and the step's microbatch count: the lowering's in-place gradient reductions.
  std::vector<bool> watch;
  std::function<void(TensorId tensor, void* data, size_t microbatch, size_t microbatches)> on_output;
  // Runs a Reshard node (the lowering's collectives) from its input buffer into its output.
  std::function<void(const Node& node, const void* in, void* out, size_t microbatch, size_t microbatches)> reshard;
};

// Each tensor's batch dim in a (local-batch) training graph, from the batch dims of the global
// forward graph (by tensor name); the backward Dropout of a forward Dropout (same rng_key) reads
// a gradient shaped like the forward's input and gets its batch dim. -1 elsewhere.
std::vector<int> training_batch_dims(const TrainingGraph& tg, const Graph& global_forward, int64_t global_batch);

class Trainer {
 public:
  // Parameters and buffers start from the model's initializers; shape-only ones from the
  // counter-based RNG keyed by `seed` and the tensor's name; optimizer state from zeros.
  // `active` (per node; empty: every node) restricts the trainer to a pipeline stage's nodes:
  // only the persistent tensors those nodes read or update are allocated.
  Trainer(const TrainingGraph& tg, Kernels& kernels, uint64_t seed, std::vector<bool> active = {});
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

  // The same step in phases, as a pipeline stage runs it: microbatches' forwards and backwards
  // in any order the schedule gives (each microbatch's tensors live in their own slot until its
  // backward ends), then end_step. Tensors produced by other stages are placed with `provide`
  // before the phase that reads them; tensors marked `exported` stay alive after the phase that
  // makes them until `release_exports`.
  void begin_step(int64_t step_index, double loss_normalizer, size_t microbatches);
  void forward(size_t microbatch, const std::vector<const void*>& inputs);
  void backward(size_t microbatch);
  void* provide(size_t microbatch, TensorId t);  // a buffer for t in the microbatch's slot
  const void* slot_value(size_t microbatch, TensorId t) const;
  void release_exports(size_t microbatch);
  void set_exported(std::vector<bool> exported) { exported_ = std::move(exported); }
  // Recomputation (a pipeline stage marked remat): a microbatch's forward keeps only the stage's
  // inputs (graph inputs and received tensors) and what it sends; its backward first runs the
  // forward again (same dropout masks: they are keyed by the step and element), without counting
  // the loss or updating running statistics twice.
  void set_recompute(bool recompute) { recompute_ = recompute; }
  // The step's gradient of parameter slot p summed over its microbatches so far (null when
  // this trainer does not compute it); valid between the last backward and end_step.
  void* accumulated_gradient(size_t p) { return acc_.at(p); }
  StepResult end_step();

  // Current value of a persistent tensor (parameter, buffer, optimizer state).
  const void* value(TensorId t) const { return ptr_.at(static_cast<size_t>(t)); }
  void* mutable_value(TensorId t) { return ptr_.at(static_cast<size_t>(t)); }  // between steps (checkpoints)
  const TrainingGraph& training_graph() const { return tg_; }
  bool holds(TensorId t) const { return ptr_.at(static_cast<size_t>(t)) != nullptr; }
  // Dropout masks keyed by global element index need each tensor's batch dim (-1: none) and
  // the samples of one microbatch on this rank.
  void set_batch_dims(std::vector<int> batch_dim, int64_t samples_per_microbatch) {
    batch_dim_ = std::move(batch_dim);
    local_samples_ = samples_per_microbatch;
  }
  void set_batch_parallel(BatchParallel parallel) { parallel_ = std::move(parallel); }
  // --dump-tensors: every tensor whose name matches `pattern` (ECMAScript regex, whole name) is
  // written right after the node that makes it, as DIR/s<step>_m<microbatch>_<name>.npy (this
  // rank's block of it). Empty pattern: nothing.
  void set_dump(const std::string& pattern, std::string dir);
  // Profiling (alpa-plan profile): called after each node with the seconds it took, the
  // allocation of its outputs and its kernel's scratch space included, as a step pays them.
  void set_node_timer(std::function<void(NodeId, double)> timer) { node_timer_ = std::move(timer); }
  int64_t persistent_bytes() const { return persistent_bytes_; }

 private:
  bool is_persistent(TensorId t) const;
  bool runs(size_t node) const { return active_.empty() || active_[node]; }
  void run_node(size_t k, KernelCall& call, std::vector<void*>& scratch);
  // Runs the active nodes [first, end) of a microbatch (with its graph inputs when given);
  // `finish`: then its gradients are accumulated and its tensors freed.
  void run_range(size_t microbatch, const std::vector<const void*>* inputs, size_t first, size_t end, bool finish);
  void enter(size_t microbatch);  // the microbatch's slot becomes the live tensors
  void leave();                   // and goes back to its slot
  void apply_updates(bool optimizer);  // state_updates whose source an optimizer node writes, or not
  void release_step_tensors();
  void initialize(TensorId t, uint64_t seed);

  const TrainingGraph& tg_;
  Kernels& kernels_;
  MemoryPool pool_;
  uint64_t seed_;
  std::vector<bool> active_;
  std::vector<void*> ptr_;
  std::vector<int64_t> last_use_;     // index of the last node reading each tensor
  std::vector<bool> keep_to_end_;     // loss, state-update sources and parameter gradients
  std::vector<bool> from_optimizer_;  // tensors written by optimizer nodes
  std::vector<bool> exported_;        // sent to other stages: kept until release_exports
  bool recompute_ = false;
  std::vector<bool> dump_;  // per tensor: written after it is made (set_dump)
  std::function<void(NodeId, double)> node_timer_;
  std::string dump_dir_;
  bool keep_inputs_ = false;  // a recomputing stage's forward: its inputs outlive their last read
  int64_t persistent_bytes_ = 0;
  std::vector<int> batch_dim_;
  int64_t local_samples_ = 0;
  BatchParallel parallel_;
  size_t microbatch_ = 0, microbatches_ = 1;  // of the step being run
  // The step in progress (begin_step .. end_step).
  struct Slot {
    std::vector<std::pair<TensorId, void*>> live;  // non-persistent tensors of the microbatch
    std::map<const void*, std::vector<double>> saved_stats;
    bool finished = false;  // its backward has run
  };
  std::vector<Slot> slots_;
  std::vector<void*> acc_;  // per parameter slot
  StepContext ctx_;
  std::vector<void*> scratch_;
  KernelCall call_;
  StepResult result_;
  size_t current_ = SIZE_MAX;  // the slot entered
};

// A persistent tensor's initial value at its (global) shape: the model's initializer, or for a
// shape-only parameter or buffer the counter-based RNG keyed by `seed` and its name; zeros for
// optimizer state.
void initial_value(const Tensor& tensor, uint64_t seed, void* dst);

// Writes every parameter and buffer of `trainer` as DIR/<name>.npy ('/', '\' and ':' in names
// become '_'), creating DIR.
void save_parameters(const std::string& dir, const Trainer& trainer);

}  // namespace alpa::exec
