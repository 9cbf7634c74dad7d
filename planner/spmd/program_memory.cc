#include "planner/spmd/program_memory.h"

#include <algorithm>
#include <vector>

namespace alpa {
namespace {

bool is_persistent_role(TensorRole r) {
  return r == TensorRole::kParameter || r == TensorRole::kBuffer || r == TensorRole::kConstant ||
         r == TensorRole::kOptimizerState;
}

// The allocator's state during the simulated step: what is live and the high-water mark.
class Allocation {
 public:
  explicit Allocation(const Graph& g) : g_(g), live_(g.num_tensors(), false) {}
  void allocate(TensorId t) {
    if (live_[t]) return;
    live_[t] = true;
    in_use_ += g_.tensor(t).bytes();
    peak_ = std::max(peak_, in_use_);
  }
  void release(TensorId t) {
    if (!live_[t]) return;
    live_[t] = false;
    in_use_ -= g_.tensor(t).bytes();
  }
  bool live(TensorId t) const { return live_[t]; }
  int64_t in_use() const { return in_use_; }
  int64_t peak() const { return peak_; }
  void reset_peak() { peak_ = in_use_; }

 private:
  const Graph& g_;
  std::vector<bool> live_;
  int64_t in_use_ = 0;
  int64_t peak_ = 0;
};

}  // namespace

ProgramMemory simulate_program_memory(const TrainingGraph& program, int64_t microbatches) {
  const Graph& g = program.graph;
  const size_t nt = g.num_tensors(), nn = g.num_nodes();
  std::vector<int64_t> last_use(nt, -1);
  for (size_t k = 0; k < nn; ++k) {
    for (TensorId t : g.node(static_cast<NodeId>(k)).inputs) last_use[t] = static_cast<int64_t>(k);
  }
  std::vector<bool> persistent(nt, false), keep_to_end(nt, false), is_grad(nt, false);
  for (size_t t = 0; t < nt; ++t) persistent[t] = is_persistent_role(g.tensor(static_cast<TensorId>(t)).role);
  if (g.loss != kNoId) keep_to_end[g.loss] = true;
  for (const auto& [dst, src] : program.state_updates) keep_to_end[src] = true;
  for (const ParameterSlot& slot : program.parameters) keep_to_end[slot.grad] = is_grad[slot.grad] = true;

  Allocation mem(g);
  ProgramMemory out;
  for (size_t t = 0; t < nt; ++t) {
    if (persistent[t]) mem.allocate(static_cast<TensorId>(t));
  }
  out.persistent_bytes = mem.in_use();
  mem.reset_peak();
  auto run = [&](size_t k) {
    const Node& n = g.node(static_cast<NodeId>(k));
    for (TensorId t : n.outputs) mem.allocate(t);
    auto maybe_free = [&](TensorId t) {
      if (!persistent[t] && !keep_to_end[t] && last_use[t] <= static_cast<int64_t>(k)) mem.release(t);
    };
    for (TensorId t : n.inputs) maybe_free(t);
    for (TensorId t : n.outputs) maybe_free(t);
  };
  std::vector<bool> accumulator(nt, false);
  for (int64_t m = 0; m < microbatches; ++m) {
    for (TensorId t : g.inputs) {
      if (last_use[t] >= 0) mem.allocate(t);
    }
    for (size_t k = 0; k < nn; ++k) {
      if (!in_optimizer_phase(g.node(static_cast<NodeId>(k)))) run(k);
    }
    // The microbatch's end: running statistics take their new values (the old ones freed), the
    // first gradients become the accumulators, everything else is freed.
    for (const auto& [dst, src] : program.state_updates) {
      if (mem.live(src) && !persistent[src]) mem.release(src);  // it replaces dst, freed
    }
    for (size_t t = 0; t < nt; ++t) {
      const TensorId id = static_cast<TensorId>(t);
      if (!mem.live(id) || persistent[t] || accumulator[t]) continue;
      if (is_grad[t] && m == 0) accumulator[t] = true;
      else mem.release(id);
    }
  }
  for (size_t k = 0; k < nn; ++k) {
    if (in_optimizer_phase(g.node(static_cast<NodeId>(k)))) run(k);
  }
  out.peak_bytes = mem.peak();
  return out;
}

}  // namespace alpa
