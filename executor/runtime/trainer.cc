#include "executor/runtime/trainer.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <regex>

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

Trainer::Trainer(const TrainingGraph& tg, Kernels& kernels, uint64_t seed, std::vector<bool> active)
    : tg_(tg), kernels_(kernels), seed_(seed), active_(std::move(active)) {
  const Graph& g = tg.graph;
  ALPA_CHECK(active_.empty() || active_.size() == g.num_nodes(), "Trainer: one active flag per node expected");
  ptr_.assign(g.num_tensors(), nullptr);
  last_use_.assign(g.num_tensors(), -1);
  keep_to_end_.assign(g.num_tensors(), false);
  std::vector<bool> produced(g.num_tensors(), false);
  for (size_t k = 0; k < g.num_nodes(); ++k) {
    if (!runs(k)) continue;
    for (TensorId t : g.node(static_cast<NodeId>(k)).inputs) last_use_[t] = static_cast<int64_t>(k);
    for (TensorId t : g.node(static_cast<NodeId>(k)).outputs) produced[t] = true;
  }
  if (g.loss != kNoId) keep_to_end_[g.loss] = true;
  for (const auto& [dst, src] : tg.state_updates) keep_to_end_[src] = true;
  for (const ParameterSlot& slot : tg.parameters) keep_to_end_[slot.grad] = true;
  from_optimizer_.assign(g.num_tensors(), false);
  for (size_t k = 0; k < g.num_nodes(); ++k) {
    const Node& n = g.node(static_cast<NodeId>(k));
    if (runs(k) && in_optimizer_phase(n)) {
      for (TensorId t : n.outputs) from_optimizer_[t] = true;
    }
  }
  // A stage holds the persistent tensors its nodes read and those its nodes update.
  std::vector<bool> held(g.num_tensors(), active_.empty());
  for (size_t t = 0; t < g.num_tensors(); ++t) held[t] = held[t] || last_use_[t] >= 0;
  for (const auto& [dst, src] : tg.state_updates) held[dst] = held[dst] || produced[src];
  for (size_t t = 0; t < g.num_tensors(); ++t) {
    if (held[t] && is_persistent(static_cast<TensorId>(t))) initialize(static_cast<TensorId>(t), seed);
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
  const auto start = node_timer_ ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
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
  if (node_timer_) {
    node_timer_(static_cast<NodeId>(k), std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  if (!dump_.empty()) {
    for (TensorId t : node.outputs) {
      if (!dump_[t]) continue;
      const Tensor& ten = g.tensor(t);
      const std::string file = "s" + std::to_string(ctx_.step + 1) + "_m" + std::to_string(microbatch_) + "_" + npy_file_name(ten.name);
      write_npy((std::filesystem::path(dump_dir_) / file).string(), ten.dtype, ten.shape, ptr_[t]);
    }
  }
  if (parallel_.on_output) {
    for (TensorId t : node.outputs) {
      if (static_cast<size_t>(t) < parallel_.watch.size() && parallel_.watch[t]) {
        parallel_.on_output(t, ptr_[t], microbatch_, microbatches_);
      }
    }
  }
  // Free what no later node reads.
  auto maybe_free = [&](TensorId t) {
    const bool exported = static_cast<size_t>(t) < exported_.size() && exported_[t];
    const NodeId producer = g.tensor(t).producer;
    const bool kept_input = keep_inputs_ && (producer == kNoId || !runs(static_cast<size_t>(producer)));
    if (!is_persistent(t) && !keep_to_end_[t] && !exported && !kept_input && last_use_[t] <= static_cast<int64_t>(k) && ptr_[t]) {
      pool_.release(ptr_[t]);
      ptr_[t] = nullptr;
    }
  };
  for (TensorId t : node.inputs) maybe_free(t);
  for (TensorId t : node.outputs) maybe_free(t);
}

void Trainer::set_dump(const std::string& pattern, std::string dir) {
  dump_.clear();
  if (pattern.empty()) return;
  std::regex re;
  try {
    re = std::regex(pattern);
  } catch (const std::regex_error& e) {
    throw UserError("--dump-tensors", pattern, std::string("not a regular expression: ") + e.what());
  }
  const Graph& g = tg_.graph;
  dump_.assign(g.num_tensors(), false);
  for (size_t t = 0; t < g.num_tensors(); ++t) dump_[t] = std::regex_match(g.tensor(static_cast<TensorId>(t)).name, re);
  std::filesystem::create_directories(dir);
  dump_dir_ = std::move(dir);
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

void Trainer::begin_step(int64_t step_index, double loss_normalizer, size_t microbatches) {
  ALPA_CHECK(microbatches > 0, "a step needs at least one microbatch");
  pool_.reset_peak();
  ctx_ = StepContext{};
  ctx_.seed = seed_;
  ctx_.step = step_index;
  ctx_.loss_normalizer = loss_normalizer;
  call_ = KernelCall{};
  call_.ctx = &ctx_;
  call_.scratch = [this](size_t bytes) {
    scratch_.push_back(pool_.allocate(bytes));
    return scratch_.back();
  };
  // Where each microbatch's samples sit in the step's whole batch (dropout masks).
  if (!batch_dim_.empty() && local_samples_ > 0) {
    ctx_.batch_dim = &batch_dim_;
    ctx_.local_samples = local_samples_;
    ctx_.global_samples = local_samples_ * parallel_.batch_ways * static_cast<int64_t>(microbatches);
  }
  ctx_.sum_over_batch = parallel_.sum_over_batch;
  ctx_.sum_over_axes = parallel_.sum_over_axes;
  ctx_.reduce_over_classes = parallel_.reduce_over_classes;
  ctx_.batch_ways = parallel_.batch_ways;
  microbatches_ = microbatches;
  slots_.assign(microbatches, Slot{});
  acc_.assign(tg_.parameters.size(), nullptr);
  result_ = StepResult{};
}

void Trainer::enter(size_t m) {
  ALPA_CHECK(current_ == SIZE_MAX && m < slots_.size() && !slots_[m].finished,
             "Trainer: microbatch " + std::to_string(m) + " outside the step or already done");
  for (const auto& [t, p] : slots_[m].live) ptr_[t] = p;
  slots_[m].live.clear();
  current_ = m;
  microbatch_ = m;
  ctx_.sample_offset = (static_cast<int64_t>(m) * parallel_.batch_ways + parallel_.batch_block) * local_samples_;
  ctx_.saved_stats = &slots_[m].saved_stats;  // BatchNorm's statistics, forward to backward
}

void Trainer::leave() {
  Slot& slot = slots_[current_];
  for (size_t t = 0; t < ptr_.size(); ++t) {
    if (ptr_[t] && !is_persistent(static_cast<TensorId>(t))) {
      slot.live.emplace_back(static_cast<TensorId>(t), ptr_[t]);
      ptr_[t] = nullptr;
    }
  }
  current_ = SIZE_MAX;
}

void* Trainer::provide(size_t m, TensorId t) {
  ALPA_CHECK(m < slots_.size(), "Trainer::provide: microbatch outside the step");
  void* p = pool_.allocate(static_cast<size_t>(tg_.graph.tensor(t).bytes()));
  slots_[m].live.emplace_back(t, p);
  return p;
}

const void* Trainer::slot_value(size_t m, TensorId t) const {
  for (const auto& [id, p] : slots_.at(m).live) {
    if (id == t) return p;
  }
  ALPA_CHECK(false, "Trainer: tensor '" + tg_.graph.tensor(t).name + "' is not held for microbatch " + std::to_string(m));
  return nullptr;
}

void Trainer::release_exports(size_t m) {
  auto& live = slots_.at(m).live;
  for (auto it = live.begin(); it != live.end();) {
    const TensorId t = it->first;
    const bool exported = static_cast<size_t>(t) < exported_.size() && exported_[t];
    // After the backward, everything; after the forward, what no backward here reads.
    if (slots_[m].finished || (exported && !keep_to_end_[t] && last_use_[t] < static_cast<int64_t>(tg_.num_forward_nodes))) {
      pool_.release(it->second);
      it = live.erase(it);
    } else {
      ++it;
    }
  }
}

void Trainer::run_range(size_t m, const std::vector<const void*>* inputs, size_t first, size_t end, bool finish) {
  const Graph& g = tg_.graph;
  enter(m);
  if (inputs) {
    ALPA_CHECK(inputs->size() == g.inputs.size(), "one buffer per graph input expected");
    for (size_t i = 0; i < g.inputs.size(); ++i) {
      const TensorId id = g.inputs[i];
      if (last_use_[id] < 0) continue;  // another stage's input
      ptr_[id] = pool_.allocate(static_cast<size_t>(g.tensor(id).bytes()));
      std::memcpy(ptr_[id], (*inputs)[i], static_cast<size_t>(g.tensor(id).bytes()));
    }
  }
  const size_t nf = tg_.num_forward_nodes;
  if (recompute_ && finish && first == nf) {
    // The forward again, from the inputs the forward kept; its running statistics and loss
    // were taken the first time.
    for (size_t k = 0; k < nf; ++k) {
      if (!runs(k)) continue;
      for (TensorId t : g.node(static_cast<NodeId>(k)).outputs) {  // kept to be sent: made again
        if (ptr_[t]) pool_.release(ptr_[t]);
        ptr_[t] = nullptr;
      }
      run_node(k, call_, scratch_);
    }
    for (const auto& [dst, src] : tg_.state_updates) {
      if (ptr_[src] && !from_optimizer_[src] && tg_.graph.tensor(src).producer < static_cast<NodeId>(nf)) {
        pool_.release(ptr_[src]);
        ptr_[src] = nullptr;
      }
    }
  }
  keep_inputs_ = recompute_ && !finish;  // the recomputation reads them again
  for (size_t k = first; k < end; ++k) {
    if (runs(k) && !in_optimizer_phase(g.node(static_cast<NodeId>(k)))) run_node(k, call_, scratch_);
  }
  keep_inputs_ = false;
  const NodeId loss_node = g.loss != kNoId ? g.tensor(g.loss).producer : kNoId;
  if (loss_node != kNoId && static_cast<size_t>(loss_node) >= first && static_cast<size_t>(loss_node) < end && ptr_[g.loss]) {
    const Tensor& loss = g.tensor(g.loss);
    result_.loss += loss.dtype == DType::kFloat64 ? *static_cast<const double*>(ptr_[g.loss])
                                                  : *static_cast<const float*>(ptr_[g.loss]);
  }
  // BatchNorm running statistics: the next microbatch's forward reads them (a pipeline stage
  // may run several forwards before the first backward).
  apply_updates(/*optimizer=*/false);
  if (!finish) {
    if (recompute_) {  // keep the stage's inputs and what it sends; the backward recomputes the rest
      for (size_t t = 0; t < ptr_.size(); ++t) {
        const TensorId id = static_cast<TensorId>(t);
        const NodeId producer = g.tensor(id).producer;
        const bool input = producer == kNoId || !runs(static_cast<size_t>(producer));
        const bool sends = t < exported_.size() && exported_[t];
        if (ptr_[t] && !is_persistent(id) && !input && !sends) {
          pool_.release(ptr_[t]);
          ptr_[t] = nullptr;
        }
      }
    }
    leave();
    return;
  }
  for (size_t p = 0; p < tg_.parameters.size(); ++p) {
    const TensorId grad = tg_.parameters[p].grad;
    if (!ptr_[grad]) continue;  // another stage's parameter
    if (acc_[p] == nullptr) {
      acc_[p] = ptr_[grad];  // the first microbatch's gradient becomes the accumulator
    } else {
      if (g.tensor(grad).dtype == DType::kFloat64) accumulate_into<double>(acc_[p], ptr_[grad], g.tensor(grad).numel());
      else accumulate_into<float>(acc_[p], ptr_[grad], g.tensor(grad).numel());
      pool_.release(ptr_[grad]);
    }
    ptr_[grad] = nullptr;
  }
  Slot& slot = slots_[m];
  slot.saved_stats.clear();
  slot.finished = true;
  for (size_t t = 0; t < ptr_.size(); ++t) {  // the microbatch is done, but for what it sends
    if (!ptr_[t] || is_persistent(static_cast<TensorId>(t))) continue;
    const NodeId producer = tg_.graph.tensor(static_cast<TensorId>(t)).producer;
    const bool sends_now = t < exported_.size() && exported_[t] && producer >= static_cast<NodeId>(tg_.num_forward_nodes);
    if (sends_now) slot.live.emplace_back(static_cast<TensorId>(t), ptr_[t]);  // the backward's sends read it
    else pool_.release(ptr_[t]);
    ptr_[t] = nullptr;
  }
  current_ = SIZE_MAX;
}

void Trainer::forward(size_t m, const std::vector<const void*>& inputs) {
  run_range(m, &inputs, 0, tg_.num_forward_nodes, false);
}

void Trainer::backward(size_t m) { run_range(m, nullptr, tg_.num_forward_nodes, tg_.graph.num_nodes(), true); }

StepResult Trainer::end_step() {
  const Graph& g = tg_.graph;
  ALPA_CHECK(current_ == SIZE_MAX, "Trainer::end_step inside a microbatch");
  for (const Slot& slot : slots_) {
    ALPA_CHECK(slot.live.empty(), "Trainer::end_step: a microbatch's backward has not run");
  }
  for (size_t p = 0; p < tg_.parameters.size(); ++p) {
    if (acc_[p]) ptr_[tg_.parameters[p].grad] = acc_[p];
  }
  for (size_t k = 0; k < g.num_nodes(); ++k) {
    if (runs(k) && in_optimizer_phase(g.node(static_cast<NodeId>(k)))) run_node(k, call_, scratch_);
  }
  result_.peak_bytes = pool_.peak_bytes();
  apply_updates(/*optimizer=*/true);
  release_step_tensors();
  acc_.assign(acc_.size(), nullptr);
  return result_;
}

StepResult Trainer::step_microbatches(const std::vector<std::vector<const void*>>& microbatches,
                                      int64_t step_index, double loss_normalizer) {
  begin_step(step_index, loss_normalizer, microbatches.size());
  // One range per microbatch: a rank program's inserted nodes need not keep the forward
  // nodes first.
  for (size_t m = 0; m < microbatches.size(); ++m) run_range(m, &microbatches[m], 0, tg_.graph.num_nodes(), true);
  return end_step();
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
