// The kernel interface every backend implements (CPU now; CUDA later). The interpreter allocates
// every output with the shape the graph gives it and calls run(); a kernel reads its inputs and
// fully writes its outputs (it never accumulates into them).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "planner/graph/graph.h"

namespace alpa::exec {

// A dense row-major tensor in device memory. Floating tensors are float32 or float64 (the
// gradient checks run every kernel in float64); integers are int64 or int32; bool is one byte.
struct TensorView {
  DType dtype = DType::kFloat32;
  Shape shape;
  void* data = nullptr;

  int64_t numel() const { return num_elements(shape); }
  int64_t bytes() const { return numel() * dtype_bytes(dtype); }
  template <typename T>
  T* as() const { return static_cast<T*>(data); }
};

// What a step tells its kernels.
struct StepContext {
  uint64_t seed = 0;  // the run's seed (dropout masks, shape-only parameter initialisation)
  int64_t step = 0;   // 0-based training step; Adam's bias correction uses step + 1
  // > 0: mean-reduced losses divide by this global count of counted labels (the whole step's
  // batch, across microbatches and ranks) instead of the count in the kernel's own input.
  double loss_normalizer = 0;

  // Where this call's samples sit in the step's whole batch, so dropout masks are keyed by the
  // global element index (the same masks on one device, in microbatches or on many ranks).
  // Without `batch_dim` every tensor is the whole batch.
  const std::vector<int>* batch_dim = nullptr;  // per tensor: its batch dim, -1 for none
  int64_t local_samples = 0;   // samples in this call's tensors
  int64_t global_samples = 0;  // samples in the step's whole batch
  int64_t sample_offset = 0;   // global index of this call's first sample

  // The batch split across ranks: sums `count` elements over the ranks that share this
  // microbatch (synchronised BatchNorm statistics); `batch_ways` ranks in all. Null on one rank.
  std::function<void(void* data, int64_t count, DType dtype)> sum_over_batch;
  int64_t batch_ways = 1;
  // Sums over the ranks along the mesh axes in `axes` (bit a: axis a): a node whose samples are
  // split over its own axes (the batch split in some nodes only) names them in its
  // "batch_axes" attribute, and their count of blocks in "batch_ways".
  std::function<void(int64_t axes, void* data, int64_t count, DType dtype)> sum_over_axes;
  // The classes of a SoftmaxCrossEntropyLoss split across ranks (vocab-parallel): reduces
  // `count` per-position statistics over the ranks sharing the node's samples (max or sum).
  std::function<void(const Node& node, void* data, int64_t count, DType dtype, bool max)> reduce_over_classes;
  // Per-channel statistics a BatchNorm forward saves for its backward, keyed by the input
  // buffer (live from the forward to the backward of one microbatch): mean, then variance.
  std::map<const void*, std::vector<double>>* saved_stats = nullptr;
};

struct KernelCall {
  const Node* node = nullptr;
  std::vector<TensorView> inputs;
  std::vector<TensorView> outputs;
  const StepContext* ctx = nullptr;
  // Temporary device memory for the duration of the call (im2col buffers, ...), counted in the
  // allocator's high-water mark. Released when run() returns.
  std::function<void*(size_t bytes)> scratch;
};

class Kernels {
 public:
  virtual ~Kernels() = default;
  // Throws UserError for bad data (e.g. a label out of range, naming the node) and
  // InternalError for an op or dtype the backend does not implement.
  virtual void run(const KernelCall& call) = 0;
};

std::unique_ptr<Kernels> make_cpu_kernels();
// The threads the CPU kernels' BLAS runs GEMMs on (OpenBLAS's own count).
int cpu_blas_threads();

}  // namespace alpa::exec
