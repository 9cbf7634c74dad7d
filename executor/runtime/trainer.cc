#include "executor/runtime/trainer.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>

#include "executor/runtime/npy.h"
#include "planner/common/error.h"
#include "planner/common/rng.h"
#include "planner/graph/rebatch.h"

namespace alpa::exec {

std::vector<int> training_batch_dims(const TrainingGraph& tg, const Graph& forward, int64_t global_batch) {
  const Graph& g = tg.graph;
  const std::vector<int> global_dims = batch_dims(forward, global_batch);
  std::vector<int> dims(g.num_tensors(), -1);
  for (size_t t = 0; t < forward.num_tensors(); ++t) {
    const TensorId id = g.find_tensor(forward.tensor(static_cast<TensorId>(t)).name);
    if (id != kNoId) dims[static_cast<size_t>(id)] = global_dims[t];
  }
  std::map<int64_t, int> dropout_dim;  // rng_key → batch dim of the forward Dropout's input
  for (size_t k = 0; k < tg.num_forward_nodes; ++k) {
    const Node& n = g.node(static_cast<NodeId>(k));
    if (n.kind == OpKind::kDropout) dropout_dim[n.attrs.get_int("rng_key", 0)] = dims[static_cast<size_t>(n.inputs[0])];
  }
  for (size_t k = tg.num_forward_nodes; k < g.num_nodes(); ++k) {
    const Node& n = g.node(static_cast<NodeId>(k));
    if (n.kind != OpKind::kDropout) continue;
    auto it = dropout_dim.find(n.attrs.get_int("rng_key", 0));
    if (it != dropout_dim.end()) dims[static_cast<size_t>(n.inputs[0])] = it->second;
  }
  return dims;
}

bool in_optimizer_phase(const Node& node) {
  if (op_info(node.kind).family == OpFamily::kOptimizer) return true;
  return node.kind == OpKind::kReshard && node.attrs.get_int("optimizer_phase", 0) != 0;
}

Trainer::Trainer(const TrainingGraph& tg, Kernels& kernels, uint64_t seed)
    : tg_(tg), kernels_(kernels), seed_(seed) {
  const Graph& g = tg.graph;
  ptr_.assign(g.num_tensors(), nullptr);
  last_use_.assign(g.num_tensors(), -1);
  keep_to_end_.assign(g.num_tensors(), false);
  for (size_t k = 0; k < g.num_nodes(); ++k) {
    for (TensorId t : g.node(static_cast<NodeId>(k)).inputs) last_use_[t] = static_cast<int64_t>(k);
  }
  keep_to_end_[g.loss] = true;
  for (const auto& [dst, src] : tg.state_updates) keep_to_end_[src] = true;
  for (const ParameterSlot& slot : tg.parameters) keep_to_end_[slot.grad] = true;
  from_optimizer_.assign(g.num_tensors(), false);
  for (const Node& n : g.nodes()) {
    if (in_optimizer_phase(n)) {
      for (TensorId t : n.outputs) from_optimizer_[t] = true;
    }
  }
  for (size_t t = 0; t < g.num_tensors(); ++t) {
    if (is_persistent(static_cast<TensorId>(t))) initialize(static_cast<TensorId>(t), seed);
  }
  persistent_bytes_ = pool_.bytes_in_use();
}

Trainer::~Trainer() = default;

bool Trainer::is_persistent(TensorId t) const {
  const TensorRole r = tg_.graph.tensor(t).role;
  return r == TensorRole::kParameter || r == TensorRole::kBuffer || r == TensorRole::kConstant ||
         r == TensorRole::kOptimizerState;
}

void Trainer::initialize(TensorId id, uint64_t seed) {
  const Tensor& t = tg_.graph.tensor(id);
  ptr_[id] = pool_.allocate(static_cast<size_t>(t.bytes()));
  if (t.has_data() && static_cast<int64_t>(t.data->size()) != t.bytes()) {
    std::memset(ptr_[id], 0, static_cast<size_t>(t.bytes()));  // a shard: the rank program fills it
    return;
  }
  initial_value(t, seed, ptr_[id]);
}

void initial_value(const Tensor& t, uint64_t seed, void* dst) {
  if (t.has_data()) {
    std::memcpy(dst, t.data->data(), t.data->size());
    return;
  }
  std::memset(dst, 0, static_cast<size_t>(t.bytes()));
  if (t.role != TensorRole::kParameter && t.role != TensorRole::kBuffer) return;  // zeros
  if (t.dtype != DType::kFloat32) return;
  // Shape-only tensors (planning-size models): 1-D scales ("weight", running_var) start at one,
  // other 1-D tensors at zero, matrices uniform in ±1/sqrt(fan_in).
  float* p = static_cast<float*>(dst);
  const int64_t n = t.numel();
  const bool ends_weight = t.name.size() >= 6 && (t.name.rfind("weight") == t.name.size() - 6 ||
                                                  t.name.rfind("running_var") == t.name.size() - 11);
  if (t.shape.size() <= 1) {
    std::fill(p, p + n, ends_weight ? 1.0f : 0.0f);
    return;
  }
  const double fan_in = static_cast<double>(n / t.shape[0]);
  const float bound = static_cast<float>(1.0 / std::sqrt(fan_in));
  const uint64_t key = stable_key(t.name);
  for (int64_t i = 0; i < n; ++i) {
    p[i] = (2.0f * philox_uniform(seed, 0, key, static_cast<uint64_t>(i)) - 1.0f) * bound;
  }
}

void Trainer::run_node(size_t k, KernelCall& call, std::vector<void*>& scratch) {
  const Graph& g = tg_.graph;
  const Node& node = g.node(static_cast<NodeId>(k));
  auto view = [&](TensorId id) {
    const Tensor& t = g.tensor(id);
    return TensorView{t.dtype, t.shape, ptr_[id]};
  };
  call.node = &node;
  call.inputs.clear();
  call.outputs.clear();
  for (TensorId t : node.inputs) {
    ALPA_CHECK(ptr_[t] != nullptr, "tensor '" + g.tensor(t).name + "' read before it was computed");
    call.inputs.push_back(view(t));
  }
  for (TensorId t : node.outputs) {
    ptr_[t] = pool_.allocate(static_cast<size_t>(g.tensor(t).bytes()));
    call.outputs.push_back(view(t));
  }
  if (node.kind == OpKind::kReshard) {
    ALPA_CHECK(parallel_.reshard != nullptr, "Reshard node '" + node.name + "' outside a rank program");
    parallel_.reshard(node, ptr_[node.inputs[0]], ptr_[node.outputs[0]], microbatch_, microbatches_);
  } else {
    kernels_.run(call);
  }
  for (void* p : scratch) pool_.release(p);
  scratch.clear();
  if (parallel_.on_output) {
    for (TensorId t : node.outputs) {
      if (static_cast<size_t>(t) < parallel_.watch.size() && parallel_.watch[t]) {
        parallel_.on_output(t, ptr_[t], microbatch_, microbatches_);
      }
    }
  }
  // Free what no later node reads.
  auto maybe_free = [&](TensorId t) {
    if (!is_persistent(t) && !keep_to_end_[t] && last_use_[t] <= static_cast<int64_t>(k) && ptr_[t]) {
      pool_.release(ptr_[t]);
      ptr_[t] = nullptr;
    }
  };
  for (TensorId t : node.inputs) maybe_free(t);
  for (TensorId t : node.outputs) maybe_free(t);
}

void Trainer::apply_updates(bool optimizer) {
  for (const auto& [dst, src] : tg_.state_updates) {
    if (from_optimizer_[src] != optimizer || !ptr_[src]) continue;
    pool_.release(ptr_[dst]);
    ptr_[dst] = ptr_[src];
    ptr_[src] = nullptr;
  }
}

void Trainer::release_step_tensors() {
  for (size_t t = 0; t < ptr_.size(); ++t) {
    if (ptr_[t] && !is_persistent(static_cast<TensorId>(t))) {
      pool_.release(ptr_[t]);
      ptr_[t] = nullptr;
    }
  }
}

template <typename T>
void accumulate_into(void* acc, const void* grad, int64_t n) {
  T* a = static_cast<T*>(acc);
  const T* g = static_cast<const T*>(grad);
  for (int64_t i = 0; i < n; ++i) a[i] += g[i];
}

StepResult Trainer::step_microbatches(const std::vector<std::vector<const void*>>& microbatches,
                                      int64_t step_index, double loss_normalizer) {
  const Graph& g = tg_.graph;
  ALPA_CHECK(!microbatches.empty(), "a step needs at least one microbatch");
  pool_.reset_peak();
  StepContext ctx;
  ctx.seed = seed_;
  ctx.step = step_index;
  ctx.loss_normalizer = loss_normalizer;
  std::vector<void*> scratch;
  KernelCall call;
  call.ctx = &ctx;
  call.scratch = [&](size_t bytes) {
    scratch.push_back(pool_.allocate(bytes));
    return scratch.back();
  };
  const bool accumulate = microbatches.size() > 1;
  std::vector<void*> acc(tg_.parameters.size(), nullptr);
  StepResult result;
  // Where each microbatch's samples sit in the step's whole batch (dropout masks), and the
  // statistics BatchNorm saves for its backward.
  const int64_t local_samples = local_samples_;
  std::map<const void*, std::vector<double>> saved_stats;
  ctx.saved_stats = &saved_stats;
  if (!batch_dim_.empty() && local_samples > 0) {
    ctx.batch_dim = &batch_dim_;
    ctx.local_samples = local_samples;
    ctx.global_samples = local_samples * parallel_.batch_ways * static_cast<int64_t>(microbatches.size());
  }
  ctx.sum_over_batch = parallel_.sum_over_batch;
  ctx.reduce_over_classes = parallel_.reduce_over_classes;
  ctx.batch_ways = parallel_.batch_ways;
  for (size_t m = 0; m < microbatches.size(); ++m) {
    const auto& inputs = microbatches[m];
    ctx.sample_offset = (static_cast<int64_t>(m) * parallel_.batch_ways + parallel_.batch_block) * local_samples;
    microbatch_ = m;
    microbatches_ = microbatches.size();
    saved_stats.clear();
    ALPA_CHECK(inputs.size() == g.inputs.size(), "one buffer per graph input expected");
    for (size_t i = 0; i < g.inputs.size(); ++i) {
      const TensorId id = g.inputs[i];
      ptr_[id] = pool_.allocate(static_cast<size_t>(g.tensor(id).bytes()));
      std::memcpy(ptr_[id], inputs[i], static_cast<size_t>(g.tensor(id).bytes()));
    }
    for (size_t k = 0; k < g.num_nodes(); ++k) {
      if (!in_optimizer_phase(g.node(static_cast<NodeId>(k)))) run_node(k, call, scratch);
    }
    const Tensor& loss = g.tensor(g.loss);
    result.loss += loss.dtype == DType::kFloat64 ? *static_cast<const double*>(ptr_[g.loss])
                                                 : *static_cast<const float*>(ptr_[g.loss]);
    if (!accumulate) break;
    for (size_t p = 0; p < tg_.parameters.size(); ++p) {
      const TensorId grad = tg_.parameters[p].grad;
      if (acc[p] == nullptr) {
        acc[p] = ptr_[grad];  // the first microbatch's gradient becomes the accumulator
        ptr_[grad] = nullptr;
      } else if (g.tensor(grad).dtype == DType::kFloat64) {
        accumulate_into<double>(acc[p], ptr_[grad], g.tensor(grad).numel());
      } else {
        accumulate_into<float>(acc[p], ptr_[grad], g.tensor(grad).numel());
      }
    }
    apply_updates(/*optimizer=*/false);  // BatchNorm running statistics, per microbatch
    release_step_tensors();
  }
  if (accumulate) {
    for (size_t p = 0; p < tg_.parameters.size(); ++p) ptr_[tg_.parameters[p].grad] = acc[p];
  } else {
    apply_updates(/*optimizer=*/false);
  }
  for (size_t k = 0; k < g.num_nodes(); ++k) {
    if (in_optimizer_phase(g.node(static_cast<NodeId>(k)))) run_node(k, call, scratch);
  }
  result.peak_bytes = pool_.peak_bytes();
  apply_updates(/*optimizer=*/true);
  release_step_tensors();
  return result;
}

void save_parameters(const std::string& dir, const Trainer& trainer) {
  std::filesystem::create_directories(dir);
  const Graph& g = trainer.training_graph().graph;
  for (size_t t = 0; t < g.num_tensors(); ++t) {
    const Tensor& tensor = g.tensor(static_cast<TensorId>(t));
    if (tensor.role != TensorRole::kParameter && tensor.role != TensorRole::kBuffer) continue;
    write_npy((std::filesystem::path(dir) / npy_file_name(tensor.name)).string(), tensor.dtype, tensor.shape,
              trainer.value(static_cast<TensorId>(t)));
  }
}

}  // namespace alpa::exec
