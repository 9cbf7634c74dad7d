#include "planner/intra_op/strategy_graph.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>

#include "planner/common/log.h"
#include "planner/common/error.h"
#include "planner/cost/profile.h"
#include "planner/graph/op_cost.h"
#include "planner/graph/rebatch.h"

namespace alpa {

const char* method_name(Method m) {
  switch (m) {
    case Method::kShard: return "shard";
    case Method::kData: return "data";
    case Method::kZero2: return "zero2";
    case Method::kZero3: return "zero3";
    case Method::kMegatron: return "megatron";
  }
  return "shard";
}

bool backward_reads(const Node& n, size_t input, const std::vector<bool>& needs_grad) {
  if (!mask_has(op_info(n.kind).saved_inputs, input)) return false;
  // A weight of a contraction, convolution, normalisation or product is read only for the other
  // operands' gradients: not when none of them needs one (the first layer's).
  const OpFamily family = op_info(n.kind).family;
  if (family != OpFamily::kContraction && family != OpFamily::kConv && family != OpFamily::kNormalization &&
      n.kind != OpKind::kMul) {
    return true;
  }
  for (size_t j = 0; j < n.inputs.size(); ++j) {
    if (j != input && n.inputs[j] != n.inputs[input] && needs_grad[static_cast<size_t>(n.inputs[j])]) return true;
  }
  return false;
}

namespace {

bool is_leader_kind(OpKind k) {
  return k == OpKind::kMatMul || k == OpKind::kGemm || k == OpKind::kEinsum ||
         k == OpKind::kConv || k == OpKind::kGather;
}

DimSharding sharding_of(bool a0, bool a1) {
  if (a0 && a1) return DimSharding::kS01;
  if (a0) return DimSharding::kS0;
  if (a1) return DimSharding::kS1;
  return DimSharding::kR;
}

// Which mesh axes a spec uses on each dim: -1 none; returns dim per axis.
std::array<int, 2> dims_of_axes(const ShardingSpec& s) {
  std::array<int, 2> out = {-1, -1};
  for (size_t d = 0; d < s.dims.size(); ++d) {
    if (s.dims[d] == DimSharding::kS0 || s.dims[d] == DimSharding::kS01) out[0] = static_cast<int>(d);
    if (s.dims[d] == DimSharding::kS1 || s.dims[d] == DimSharding::kS01) out[1] = static_cast<int>(d);
  }
  return out;
}

int64_t local_bytes(const Tensor& t, const ShardingSpec& s, const LogicalMesh& v) {
  if (s.dims.size() != t.shape.size()) return t.bytes();
  return num_elements(s.local_shape(t.shape, v)) * dtype_bytes(t.dtype);
}

// One node's time on one device, unsharded.
double op_time(const Graph& g_, const Cluster& cl, const Profile* profile, const Node& n) {
  const OpCount c = count_node(g_, n);
  const DType dt = kernel_dtype(g_, n);
  double peak = cl.device.peak_flops(dt);
  if (peak <= 0) peak = cl.device.peak_flops_fp32;
  // Matmuls and convolutions run at the (tensor-core) peak; everything else is memory-bound.
  const OpFamily fam = op_info(n.kind).family;
  const bool compute_bound = fam == OpFamily::kContraction || fam == OpFamily::kConv ||
                             n.kind == OpKind::kConvGradInput || n.kind == OpKind::kConvGradWeight;
  if (profile && kernel_size(c) > 0) {
    if (auto t = kernel_time(*profile, n.kind, dt, kernel_size(c))) return *t;
  }
  const double t_flops = peak > 0 && compute_bound ? c.flops / (peak * cl.achievable.matmul) : 0;
  const double bw = cl.device.memory_bandwidth_bytes_per_s * cl.achievable.memory_bandwidth;
  const double t_bytes = bw > 0 ? (c.bytes_read + c.bytes_written) / bw : 0;
  return std::max(t_flops, t_bytes);
}

// The view-independent part of a strategy graph: batch dims, which tensors need gradients and
// are saved for the backward, iteration spaces and unsharded times.
void compute_facts(StrategyGraph& sg) {
  const TrainingGraph& tg = *sg.training;
  const Graph& g = tg.graph;
  const size_t nf = tg.num_forward_nodes;
  const size_t nt = g.num_tensors();
  // Batch axis per tensor.
  int64_t batch = 0;
  for (size_t k = 0; k < g.inputs.size(); ++k) {
    const int64_t ax = k < g.input_batch_axes.size() ? g.input_batch_axes[k] : -1;
    if (ax >= 0) { batch = g.tensor(g.inputs[k]).shape[ax]; break; }
  }
  sg.batch_dim.assign(nt, -1);
  if (batch > 0) {
    try {
      // Over the forward pass only: weight gradients contract the batch away.
      Graph fwd;
      for (const Tensor& t0 : g.tensors()) {
        Tensor t1 = t0;
        t1.producer = kNoId;
        t1.consumers.clear();
        fwd.add_tensor(std::move(t1));
      }
      for (size_t i = 0; i < nf; ++i) fwd.add_node(g.node(static_cast<NodeId>(i)));
      fwd.inputs = g.inputs;
      fwd.input_batch_axes = g.input_batch_axes;
      fwd.loss = g.loss;
      fwd.finalize();
      sg.batch_dim = batch_dims(fwd, batch);
    } catch (const UserError&) {
    }
    sg.batch_dim.resize(nt, -1);
  }
  // Tensors a gradient flows back to: reachable from a parameter and reaching the loss.
  std::vector<bool> from_param(nt, false), to_loss(nt, false);
  for (const auto& ps : tg.parameters) from_param[ps.param] = true;
  for (size_t i = 0; i < nf; ++i) {
    const Node& n = g.node(static_cast<NodeId>(i));
    const OpInfo& info = op_info(n.kind);
    bool any = false;
    for (size_t k = 0; k < n.inputs.size(); ++k) any = any || (from_param[n.inputs[k]] && mask_has(info.differentiable_inputs, k));
    if (!any) continue;
    for (size_t o = 0; o < n.outputs.size(); ++o) if (mask_has(info.differentiable_outputs, o)) from_param[n.outputs[o]] = true;
  }
  if (g.loss != kNoId) to_loss[g.loss] = true;
  for (size_t i = nf; i-- > 0;) {
    const Node& n = g.node(static_cast<NodeId>(i));
    const OpInfo& info = op_info(n.kind);
    bool any = false;
    for (size_t o = 0; o < n.outputs.size(); ++o) any = any || (to_loss[n.outputs[o]] && mask_has(info.differentiable_outputs, o));
    if (!any) continue;
    for (size_t k = 0; k < n.inputs.size(); ++k) if (mask_has(info.differentiable_inputs, k)) to_loss[n.inputs[k]] = true;
  }
  sg.needs_grad.assign(nt, false);
  for (size_t t = 0; t < nt; ++t) sg.needs_grad[t] = from_param[t] && to_loss[t];
  sg.saved.assign(nt, false);
  for (size_t i = nf; i < g.num_nodes(); ++i) {
    for (TensorId t : g.node(static_cast<NodeId>(i)).inputs) {
      const Tensor& ten = g.tensor(t);
      if (ten.producer != kNoId && static_cast<size_t>(ten.producer) >= nf) continue;
      if (ten.role == TensorRole::kParameter || ten.role == TensorRole::kOptimizerState) continue;
      sg.saved[t] = true;
    }
  }
  // Unsharded forward+backward time per forward node.
  NodeWork work = node_work(tg, *sg.cluster, sg.options.profile);
  sg.full_time_s = std::move(work.full_time_s);
  sg.forward_time_s = std::move(work.forward_time_s);
  sg.backward_bytes = std::move(work.backward_bytes);
  sg.spaces.resize(nf);
  for (size_t i = 0; i < nf; ++i) sg.spaces[i] = iteration_space(g, static_cast<NodeId>(i), sg.batch_dim);
}

class Builder {
 public:
  Builder(StrategyGraph& sg) : sg_(sg), g_(sg.training->graph), v_(sg.costs.view) {}

  void build();

 private:
  bool axis_active(int a) const { return sg_.costs.axis_size(a) > 1; }
  bool letter_fits(const Letter& l, int64_t ways) const {
    if (!l.splittable || l.size < ways) return false;
    return !l.must_divide || l.size % ways == 0;
  }
  ShardingSpec spec_for(const std::vector<int>& dims, const std::array<int, 2>& a) const {
    ShardingSpec s;
    for (int l : dims) s.dims.push_back(sharding_of(l >= 0 && a[0] == l, l >= 0 && a[1] == l));
    return s;
  }
  std::optional<NodeStrategy> make_strategy(NodeId id, std::array<int, 2> a, int scatter) const;
  std::vector<std::array<int, 2>> assignments(NodeId id) const;
  std::array<int, 2> follow(NodeId id, size_t input, const ShardingSpec& spec) const;
  const ReshardResult& reshard_cached(const ShardingSpec& src, AxisMask partial,
                                      const ShardingSpec& dst, TensorId t) const;
  double edge_cost(TensorId t, const ShardingSpec& produced, const ShardingSpec& grad_target, double* step,
                   bool param_like, const NodeStrategy& consumer, NodeId consumer_node,
                   size_t input) const;
  std::vector<ShardingSpec> candidate_specs(const Shape& shape) const;
  ShardingSpec fully_sharded(const Shape& shape) const;
  void add_param_group(TensorId p);

  StrategyGraph& sg_;
  const Graph& g_;
  LogicalMesh v_;
  std::vector<const ParameterSlot*> slot_of_;  // per tensor: its parameter slot, if any
  // Resharding results by (specs, partial axes, dtype, shape): a compact key, since building
  // stage graphs asks for millions of them.
  struct ReshardKey {
    uint32_t src = 0, dst = 0;  // 2 bits per dim (up to 8 dims)
    uint8_t rank = 0, partial = 0, dtype = 0;
    std::array<int64_t, 8> shape{};
    bool operator==(const ReshardKey&) const = default;
  };
  struct ReshardKeyHash {
    size_t operator()(const ReshardKey& k) const {
      uint64_t h = (static_cast<uint64_t>(k.src) << 32) ^ k.dst ^ (static_cast<uint64_t>(k.rank) << 56) ^
                   (static_cast<uint64_t>(k.partial) << 48) ^ (static_cast<uint64_t>(k.dtype) << 40);
      for (uint8_t d = 0; d < k.rank; ++d) h = (h ^ static_cast<uint64_t>(k.shape[d])) * 0x100000001b3ull;
      return static_cast<size_t>(h);
    }
  };
  mutable std::unordered_map<ReshardKey, ReshardResult, ReshardKeyHash> reshard_cache_;
  mutable std::unordered_map<std::string, ReshardResult> reshard_cache_long_;
};

const ReshardResult& Builder::reshard_cached(const ShardingSpec& src, AxisMask partial,
                                             const ShardingSpec& dst, TensorId t) const {
  const Tensor& ten = g_.tensor(t);
  ReshardKey key;
  const size_t rank = ten.shape.size();
  if (rank > key.shape.size()) {  // a rare high-rank tensor: keyed by text
    std::string text = src.to_string() + "|" + std::to_string(partial) + "|" + dst.to_string() + "|" +
                       std::to_string(static_cast<int>(ten.dtype));
    for (int64_t d : ten.shape) text += "," + std::to_string(d);
    auto it = reshard_cache_long_.find(text);
    if (it != reshard_cache_long_.end()) return it->second;
    return reshard_cache_long_.emplace(text, reshard(src, partial, dst, ten.shape, ten.dtype, sg_.costs)).first->second;
  }
  key.rank = static_cast<uint8_t>(rank);
  key.partial = partial;
  key.dtype = static_cast<uint8_t>(ten.dtype);
  for (size_t d = 0; d < rank; ++d) {
    key.src |= static_cast<uint32_t>(src.dims[d]) << (2 * d);
    key.dst |= static_cast<uint32_t>(dst.dims[d]) << (2 * d);
    key.shape[d] = ten.shape[d];
  }
  auto it = reshard_cache_.find(key);
  if (it != reshard_cache_.end()) return it->second;
  return reshard_cache_.emplace(key, reshard(src, partial, dst, ten.shape, ten.dtype, sg_.costs))
      .first->second;
}

std::vector<std::array<int, 2>> Builder::assignments(NodeId id) const {
  const IterationSpace& sp = sg_.spaces[id];
  const Method m = sg_.options.method;
  std::vector<int> options0 = {kNoLetter}, options1 = {kNoLetter};
  for (int a = 0; a < 2; ++a) {
    if (!axis_active(a)) continue;
    for (size_t l = 0; l < sp.letters.size(); ++l) {
      if (m == Method::kMegatron) {
        if (sp.letters[l].is_batch != (a == 0)) continue;
        if (a == 0 && options0.size() > 1) continue;  // data parallelism: the first batch letter
      } else if (m != Method::kShard && !sp.letters[l].is_batch) {
        continue;
      }
      if (letter_fits(sp.letters[l], sg_.costs.axis_size(a))) (a == 0 ? options0 : options1).push_back(static_cast<int>(l));
    }
  }
  std::vector<std::array<int, 2>> out;
  for (int l0 : options0) {
    for (int l1 : options1) {
      if (l0 >= 0 && l0 == l1 && !letter_fits(sp.letters[l0], v_.size())) continue;
      out.push_back({l0, l1});
    }
  }
  if (m == Method::kMegatron) {
    if (options0.size() > 1) {  // the batch is split on axis 0 whenever the node has one
      out.erase(std::remove_if(out.begin(), out.end(), [](const std::array<int, 2>& a) { return a[0] == kNoLetter; }), out.end());
    }
    return out;
  }
  if (m != Method::kShard) {
    // Presets: the whole mesh on the batch letter when the node has one, else replicated.
    std::vector<std::array<int, 2>> forced;
    for (size_t l = 0; l < sp.letters.size(); ++l) {
      if (!sp.letters[l].is_batch) continue;
      const std::array<int, 2> a = {axis_active(0) ? static_cast<int>(l) : kNoLetter,
                                    axis_active(1) ? static_cast<int>(l) : kNoLetter};
      if (std::find(out.begin(), out.end(), a) != out.end()) { forced.push_back(a); break; }
    }
    if (forced.empty()) forced.push_back({kNoLetter, kNoLetter});
    return forced;
  }
  return out;
}

std::optional<NodeStrategy> Builder::make_strategy(NodeId id, std::array<int, 2> a,
                                                   int scatter) const {
  const Node& n = g_.node(id);
  const IterationSpace& sp = sg_.spaces[id];
  NodeStrategy s;
  s.axis_letter = a;
  s.scatter_dim = scatter;
  for (size_t i = 0; i < n.inputs.size(); ++i) s.in.push_back(spec_for(sp.inputs[i], a));
  std::vector<AxisMask> out_partial(n.outputs.size(), 0);
  for (size_t o = 0; o < n.outputs.size(); ++o) {
    s.out.push_back(spec_for(sp.outputs[o], a));
    for (int ax = 0; ax < 2; ++ax) {
      if (a[ax] < 0) continue;
      const auto& dims = sp.outputs[o];
      if (std::find(dims.begin(), dims.end(), a[ax]) == dims.end()) {
        out_partial[o] |= static_cast<AxisMask>(1u << ax);
      }
    }
  }
  // BatchNorm's running statistics come out whole after the synchronised statistics.
  if (n.kind == OpKind::kBatchNormalization) {
    for (size_t o = 1; o < out_partial.size(); ++o) out_partial[o] = 0;
  }
  s.out_partial = out_partial;
  const int K = static_cast<int>(sg_.options.microbatches);
  for (size_t o = 0; o < n.outputs.size(); ++o) {
    if (!out_partial[o]) continue;
    ShardingSpec target = s.out[o];
    if (o == 0 && scatter >= 0) {
      if (scatter >= static_cast<int>(target.dims.size()) || target.dims[scatter] != DimSharding::kR) return std::nullopt;
      const bool p0 = out_partial[o] & kAxis0, p1 = out_partial[o] & kAxis1;
      target.dims[scatter] = sharding_of(p0, p1);
      const Tensor& t = g_.tensor(n.outputs[o]);
      if (t.shape[scatter] % target.ways(scatter, v_) != 0) return std::nullopt;
      s.out[o] = target;
    } else if (o == 0 && scatter < 0) {
      // keep target
    }
    const ReshardResult& r = reshard_cached(spec_for(sp.outputs[o], a), out_partial[o], target, n.outputs[o]);
    s.comm_s += r.time_s * K;
    s.comms.insert(s.comms.end(), r.steps.begin(), r.steps.end());
  }
  if (scatter >= 0 && !out_partial[0]) return std::nullopt;
  for (size_t i = 0; i < n.inputs.size(); ++i) {
    AxisMask m = 0;
    for (int ax = 0; ax < 2; ++ax) {
      if (a[ax] < 0) continue;
      const auto& dims = sp.inputs[i];
      if (std::find(dims.begin(), dims.end(), a[ax]) == dims.end()) m |= static_cast<AxisMask>(1u << ax);
    }
    s.in_grad_partial.push_back(m);
  }
  // Statistics exchanged for a split letter (synchronised BatchNorm, vocab-parallel loss).
  for (int ax = 0; ax < 2; ++ax) {
    if (a[ax] < 0 || sp.stats_bytes.empty() || sp.stats_bytes[a[ax]] <= 0) continue;
    CollectiveStep step;
    step.kind = Collective::kAllReduce;
    step.axis = ax;
    step.bytes = sp.stats_bytes[a[ax]];
    // The other axis splitting a dim the statistics are kept per (the rows of a vocab-parallel
    // loss, the channels of a BatchNorm): each device exchanges its block of them.
    const int other = a[1 - ax];
    if (other >= 0 && other != a[ax] && sp.stats_bytes[other] <= 0 && sg_.costs.axis_size(1 - ax) > 1) {
      const int64_t size = sp.letters[other].size, w = sg_.costs.axis_size(1 - ax);
      step.bytes = step.bytes * static_cast<double>((size + w - 1) / w) / static_cast<double>(size);
    }
    step.bytes_per_device = collective_bytes_per_device(step.kind, sg_.costs.axis_size(ax), step.bytes);
    step.time_s = collective_time(step.kind, sg_.costs.axis[ax], step.bytes);
    s.comm_s += step.time_s * K;
    s.comms.push_back(step);
  }
  // Compute: the unsharded time scaled by the share of the iteration space each device runs.
  double frac = 1;
  for (size_t l = 0; l < sp.letters.size(); ++l) {
    int64_t ways = 1;
    if (a[0] == static_cast<int>(l)) ways *= v_.d0;
    if (a[1] == static_cast<int>(l)) ways *= v_.d1;
    if (ways > 1) {
      const double size = static_cast<double>(sp.letters[l].size);
      frac *= static_cast<double>((sp.letters[l].size + ways - 1) / ways) / size;
    }
  }
  s.compute_s = sg_.full_time_s[id] * frac * K;
  s.forward_s = sg_.forward_time_s[id] * frac;
  s.work_fraction = frac;
  s.temp_bytes += static_cast<int64_t>(std::ceil(static_cast<double>(sg_.backward_bytes[id]) * frac));
  for (size_t o = 0; o < n.outputs.size(); ++o) {
    const Tensor& t = g_.tensor(n.outputs[o]);
    const int64_t b = local_bytes(t, s.out[o], v_);
    s.temp_bytes += b;
    if (sg_.saved[n.outputs[o]]) s.memory_bytes += b;
  }
  for (size_t i = 0; i < n.inputs.size(); ++i) {
    const Tensor& t = g_.tensor(n.inputs[i]);
    const int64_t b = local_bytes(t, s.in[i], v_);
    s.temp_bytes += b;
    const bool source = t.producer == kNoId && t.role != TensorRole::kParameter;
    if (source && sg_.saved[n.inputs[i]] && t.role != TensorRole::kConstant) s.memory_bytes += b;
  }
  // Name: the specs it reads and writes.
  std::string name;
  for (size_t i = 0; i < s.in.size(); ++i) {
    if (i) name += ",";
    name += s.in[i].dims.empty() ? "-" : s.in[i].to_string();
  }
  name += "->";
  for (size_t o = 0; o < s.out.size(); ++o) {
    if (o) name += ",";
    name += s.out[o].dims.empty() ? "-" : s.out[o].to_string();
  }
  s.name = name;
  return s;
}

std::array<int, 2> Builder::follow(NodeId id, size_t input, const ShardingSpec& spec) const {
  const IterationSpace& sp = sg_.spaces[id];
  std::array<int, 2> a = {kNoLetter, kNoLetter};
  const auto dims = dims_of_axes(spec);
  for (int ax = 0; ax < 2; ++ax) {
    if (dims[ax] < 0 || !axis_active(ax)) continue;
    if (static_cast<size_t>(dims[ax]) >= sp.inputs[input].size()) continue;
    const int l = sp.inputs[input][dims[ax]];
    if (l >= 0 && letter_fits(sp.letters[l], sg_.costs.axis_size(ax))) a[ax] = l;
  }
  if (a[0] >= 0 && a[0] == a[1] && !letter_fits(sp.letters[a[0]], v_.size())) a[1] = kNoLetter;
  if (sg_.options.method == Method::kMegatron) {
    for (int ax = 0; ax < 2; ++ax) {
      if (a[ax] >= 0 && sp.letters[a[ax]].is_batch != (ax == 0)) a[ax] = kNoLetter;
    }
  } else if (sg_.options.method != Method::kShard) {
    for (int ax = 0; ax < 2; ++ax) {
      if (a[ax] >= 0 && !sp.letters[a[ax]].is_batch) a[ax] = kNoLetter;
    }
  }
  return a;
}

double Builder::edge_cost(TensorId t, const ShardingSpec& produced, const ShardingSpec& grad_target, double* step,
                          bool param_like, const NodeStrategy& c, NodeId cn, size_t i) const {
  const double K = static_cast<double>(sg_.options.microbatches);
  double cost = 0;
  const ReshardResult& fwd = reshard_cached(produced, 0, c.in[i], t);
  if (fwd.time_s > 0) {
    // A parameter gathered for the forward is gathered again for the backward when that reads
    // it (ZeRO-3 frees it in between).
    const bool again = param_like && backward_reads(g_.node(cn), i, sg_.needs_grad);
    cost += fwd.time_s * K * (again ? 2 : 1);
  }
  if (sg_.needs_grad[t]) {
    const ReshardResult& bwd = reshard_cached(c.in[i], c.in_grad_partial[i], grad_target, t);
    cost += bwd.time_s * (param_like ? 1.0 : K);
    if (param_like) *step += bwd.time_s;
  }
  return cost;
}

std::vector<ShardingSpec> Builder::candidate_specs(const Shape& shape) const {
  std::vector<ShardingSpec> out;
  const int r = static_cast<int>(shape.size());
  std::vector<int> o0 = {-1}, o1 = {-1};
  for (int d = 0; d < r; ++d) {
    if (axis_active(0) && shape[d] >= v_.d0) o0.push_back(d);
    if (axis_active(1) && shape[d] >= v_.d1) o1.push_back(d);
  }
  for (int d0 : o0) {
    for (int d1 : o1) {
      if (d0 >= 0 && d0 == d1 && shape[d0] < v_.size()) continue;
      ShardingSpec s = ShardingSpec::replicated(r);
      for (int d = 0; d < r; ++d) s.dims[d] = sharding_of(d0 == d, d1 == d);
      out.push_back(s);
    }
  }
  return out;
}

ShardingSpec Builder::fully_sharded(const Shape& shape) const {
  ShardingSpec s = ShardingSpec::replicated(shape.size());
  const bool a0 = axis_active(0), a1 = axis_active(1);
  for (size_t d = 0; d < shape.size(); ++d) {  // prefer a dim the mesh divides
    if (shape[d] % v_.size() == 0 && shape[d] >= v_.size()) { s.dims[d] = sharding_of(a0, a1); return s; }
  }
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] >= v_.size()) { s.dims[d] = sharding_of(a0, a1); return s; }
  }
  return s;
}

void Builder::add_param_group(TensorId p) {
  const Tensor& t = g_.tensor(p);
  const ParameterSlot* slot = slot_of_[p];
  Group grp;
  grp.name = t.name;
  grp.is_parameter = true;
  grp.parameter = p;
  std::vector<std::pair<ShardingSpec, ShardingSpec>> choices;  // storage, state
  const ShardingSpec rep = ShardingSpec::replicated(t.shape.size());
  const ShardingSpec full = fully_sharded(t.shape);
  switch (sg_.options.method) {
    case Method::kData: choices.push_back({rep, rep}); break;
    case Method::kZero2: choices.push_back({rep, full}); break;
    case Method::kZero3: choices.push_back({full, full}); break;
    case Method::kMegatron:
      for (const ShardingSpec& s : candidate_specs(t.shape)) {
        bool on_axis0 = false;
        for (DimSharding d : s.dims) on_axis0 = on_axis0 || d == DimSharding::kS0 || d == DimSharding::kS01;
        if (!on_axis0) choices.push_back({s, s});
      }
      break;
    case Method::kShard: {
      for (const ShardingSpec& s : candidate_specs(t.shape)) {
        choices.push_back({s, s});
        // ZeRO: the state (and reduced gradient) further split over the axes s leaves free.
        const auto used = dims_of_axes(s);
        for (const ShardingSpec& z : candidate_specs(t.shape)) {
          const auto zu = dims_of_axes(z);
          bool extends = !(z == s);
          for (int ax = 0; ax < 2; ++ax) {
            if (used[ax] >= 0 && zu[ax] != used[ax]) extends = false;
          }
          // keep only the fullest extension per free axis set: every active free axis used
          for (int ax = 0; ax < 2; ++ax) {
            if (used[ax] < 0 && axis_active(ax) && zu[ax] < 0) extends = false;
          }
          if (extends) { choices.push_back({s, z}); break; }
        }
      }
      break;
    }
  }
  const Node* update = nullptr;  // the optimizer's update of the parameter
  if (slot) {
    const NodeId u = g_.tensor(slot->updated_param).producer;
    if (u != kNoId && g_.node(u).outputs[0] == slot->updated_param) update = &g_.node(u);
  }
  const double update_time = update ? op_time(g_, *sg_.cluster, sg_.options.profile, *update) : 0;
  for (const auto& [storage, state] : choices) {
    NodeStrategy s;
    s.out = {storage};
    s.state = state;
    s.name = storage.to_string() + (state == storage ? "" : "/" + state.to_string());
    s.param_bytes = local_bytes(t, storage, v_);
    if (slot) {
      s.grad_bytes = local_bytes(g_.tensor(slot->grad), state, v_);
      for (TensorId st : slot->state) s.state_bytes += local_bytes(g_.tensor(st), state, v_);
    }
    s.memory_bytes = s.param_bytes + s.grad_bytes + s.state_bytes;
    s.compute_s = update_time * static_cast<double>(num_elements(state.local_shape(t.shape, v_))) /
                  std::max<double>(1.0, static_cast<double>(t.numel()));
    if (!(state == storage)) {
      const ReshardResult& r = reshard_cached(state, 0, storage, p);  // gather the updated shard
      s.comm_s += r.time_s;
      s.comms = r.steps;
    }
    grp.param_strategy.push_back(s);
    grp.cost.push_back(s.compute_s + s.comm_s);
    grp.step_cost.push_back(s.compute_s + s.comm_s);
    grp.memory.push_back(s.memory_bytes);
  }
  sg_.group_of_param[p] = static_cast<int>(sg_.groups.size());
  sg_.groups.push_back(std::move(grp));
}

void Builder::build() {
  const TrainingGraph& tg = *sg_.training;
  const size_t nf = tg.num_forward_nodes;
  const size_t nt = g_.num_tensors();
  if (sg_.options.facts) {
    const StrategyGraph& f = *sg_.options.facts;
    ALPA_CHECK(f.training == sg_.training && f.cluster == sg_.cluster, "strategy graph facts of another graph or cluster");
    sg_.batch_dim = f.batch_dim;
    sg_.needs_grad = f.needs_grad;
    sg_.saved = f.saved;
    sg_.spaces = f.spaces;
    sg_.full_time_s = f.full_time_s;
    sg_.forward_time_s = f.forward_time_s;
    sg_.backward_bytes = f.backward_bytes;
  } else {
    compute_facts(sg_);
  }
  slot_of_.assign(nt, nullptr);
  for (const auto& ps : tg.parameters) slot_of_[ps.param] = &ps;
  // Parameter groups first (in tensor order), then node groups in canonical order.
  sg_.group_of_param.assign(nt, -1);
  for (const auto& ps : tg.parameters) add_param_group(ps.param);
  sg_.group_of_node.assign(nf, -1);
  sg_.nodes_before_merging = static_cast<int64_t>(tg.parameters.size() + nf);

  // Producer group of a tensor and its spec under a group strategy.
  struct Produced { int group = -1; size_t member = 0; size_t output = 0; bool param = false; };
  std::vector<Produced> producer(nt);
  for (const auto& ps : tg.parameters) producer[ps.param] = {sg_.group_of_param[ps.param], 0, 0, true};
  auto spec_in_group = [&](const Group& grp, size_t s, const Produced& pr) -> const ShardingSpec& {
    if (pr.param) return grp.param_strategy[s].out[0];
    if (grp.is_parameter) return grp.member_strategy[s][pr.member].out[pr.output];
    return grp.member_strategy[s][pr.member].out[pr.output];
  };
  // The parameter itself and its master-precision casts (same layout) are stored and updated
  // as the parameter's strategy says; any other follower is an ordinary activation.
  // The parameter and every follower of it (its casts, transposes, reshapes) are stored and
  // updated with the parameter: their gradients are reduced once per step, to the spec that
  // follows from the optimizer state's; any other tensor is an ordinary activation.
  auto param_like_of = [&](const Group& grp, const Produced& pr) { return pr.param || grp.is_parameter; };
  std::function<const ShardingSpec&(const Group&, size_t, const Produced&)> grad_target;
  grad_target = [&](const Group& grp, size_t s, const Produced& pr) -> const ShardingSpec& {
    if (pr.param) return grp.param_strategy[s].state;
    const NodeStrategy& m = grp.member_strategy[s][pr.member];
    if (grp.is_parameter && pr.output < m.grad_out.size()) return m.grad_out[pr.output];
    return spec_in_group(grp, s, pr);
  };

  std::map<std::pair<int, int>, GroupEdge> edges;
  for (size_t i = 0; i < nf; ++i) {
    const NodeId id = static_cast<NodeId>(i);
    const Node& n = g_.node(id);
    // The followed input: the largest one produced inside a group.
    int followed = -1;
    if (!is_leader_kind(n.kind) && sg_.options.merge_followers) {
      int64_t best = -1;
      for (size_t k = 0; k < n.inputs.size(); ++k) {
        const Produced& pr = producer[n.inputs[k]];
        if (pr.group < 0) continue;
        const int64_t size = g_.tensor(n.inputs[k]).numel();
        if (size > best) { best = size; followed = static_cast<int>(k); }
      }
    }
    int gi;
    if (followed >= 0) {
      gi = producer[n.inputs[followed]].group;
      Group& grp = sg_.groups[gi];
      const Produced pf = producer[n.inputs[followed]];
      const size_t member = grp.members.size();
      grp.members.push_back(id);
      const size_t ns = grp.num_strategies();
      if (grp.member_strategy.size() < ns) grp.member_strategy.resize(ns);
      for (size_t s = 0; s < ns; ++s) {
        const ShardingSpec& src = spec_in_group(grp, s, pf);
        std::array<int, 2> a = follow(id, followed, src);
        std::optional<NodeStrategy> st = make_strategy(id, a, -1);
        if (!st) st = make_strategy(id, {kNoLetter, kNoLetter}, -1);
        ALPA_CHECK(st.has_value(), "no strategy for follower " + n.name);
        if (grp.is_parameter) {
          // The same chain followed from the optimizer state's spec: where this follower's
          // gradient is reduced to (a reduce-scatter under ZeRO).
          const ShardingSpec& gsrc = grad_target(grp, s, pf);
          std::optional<NodeStrategy> gst = make_strategy(id, follow(id, followed, gsrc), -1);
          st->grad_out = gst ? gst->out : st->out;
        }
        grp.cost[s] += st->compute_s + st->comm_s;
        grp.memory[s] += st->memory_bytes;
        grp.member_strategy[s].push_back(std::move(*st));
      }
      grp.member_cost.emplace_back(ns, 0.0);
      grp.member_step.emplace_back(ns, 0.0);
      grp.member_memory.emplace_back(ns, 0);
      for (size_t s = 0; s < ns; ++s) {
        const NodeStrategy& st = grp.member_strategy[s][member];
        grp.member_cost[member][s] = st.compute_s + st.comm_s;
        grp.member_memory[member][s] = st.memory_bytes;
      }
    } else {
      Group grp;
      grp.name = n.name;
      grp.leader = id;
      grp.members = {id};
      std::set<std::string> seen;
      for (const auto& a : assignments(id)) {
        for (int scatter = -1; scatter < static_cast<int>(n.outputs.empty() ? 0 : g_.tensor(n.outputs[0]).shape.size()); ++scatter) {
          if ((sg_.options.method != Method::kShard || !sg_.options.allow_reduce_scatter_outputs) && scatter >= 0) break;
          std::optional<NodeStrategy> st = make_strategy(id, a, scatter);
          if (!st || !seen.insert(st->name).second) continue;
          grp.cost.push_back(st->compute_s + st->comm_s);
          grp.step_cost.push_back(0);
          grp.memory.push_back(st->memory_bytes);
          grp.member_strategy.push_back({std::move(*st)});
          if (scatter >= 0) break;  // one reduce-scatter variant: the first dim that works
        }
      }
      ALPA_CHECK(!grp.cost.empty(), "no strategy for node " + n.name);
      grp.member_cost = {grp.cost};
      grp.member_step = {grp.step_cost};
      grp.member_memory = {grp.memory};
      gi = static_cast<int>(sg_.groups.size());
      sg_.groups.push_back(std::move(grp));
    }
    sg_.group_of_node[i] = gi;
    Group& grp = sg_.groups[gi];
    const size_t member = grp.members.size() - 1;
    // Edges (or internal costs) for every input.
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      const TensorId t = n.inputs[k];
      const Produced& pr = producer[t];
      if (pr.group < 0) continue;  // data, labels, constants: loaded or made in any spec
      const bool param_like = param_like_of(sg_.groups[pr.group], pr);
      if (pr.group == gi) {
        for (size_t s = 0; s < grp.num_strategies(); ++s) {
          double step = 0;
          const double c = edge_cost(t, spec_in_group(grp, s, pr), grad_target(grp, s, pr), &step, param_like,
                                     grp.member_strategy[s][member], id, k);
          grp.cost[s] += c;
          grp.step_cost[s] += step;
          grp.member_cost[member][s] += c;  // paid where the consuming member runs
          grp.member_step[member][s] += step;
        }
        continue;
      }
      const Group& pg = sg_.groups[pr.group];
      auto key = std::make_pair(pr.group, gi);
      GroupEdge& e = edges[key];
      if (e.cost.empty()) {
        e.from = pr.group;
        e.to = gi;
        e.cost.assign(pg.num_strategies(), std::vector<double>(grp.num_strategies(), 0));
      }
      // The cost depends on the producer's (spec, gradient target) and the consumer's (input
      // spec, gradient partial axes) only: computed once per distinct pair of those.
      std::vector<size_t> prow, pcol;  // per strategy: its representative
      std::vector<size_t> row_of(pg.num_strategies()), col_of(grp.num_strategies());
      for (size_t sp = 0; sp < pg.num_strategies(); ++sp) {
        size_t r = 0;
        for (; r < prow.size(); ++r) {
          if (spec_in_group(pg, sp, pr) == spec_in_group(pg, prow[r], pr) &&
              grad_target(pg, sp, pr) == grad_target(pg, prow[r], pr)) break;
        }
        if (r == prow.size()) prow.push_back(sp);
        row_of[sp] = r;
      }
      for (size_t sc = 0; sc < grp.num_strategies(); ++sc) {
        const NodeStrategy& c = grp.member_strategy[sc][member];
        size_t q = 0;
        for (; q < pcol.size(); ++q) {
          const NodeStrategy& d = grp.member_strategy[pcol[q]][member];
          if (c.in[k] == d.in[k] && c.in_grad_partial[k] == d.in_grad_partial[k]) break;
        }
        if (q == pcol.size()) pcol.push_back(sc);
        col_of[sc] = q;
      }
      std::vector<double> dcost(prow.size() * pcol.size()), dstep(prow.size() * pcol.size());
      for (size_t r = 0; r < prow.size(); ++r) {
        for (size_t q = 0; q < pcol.size(); ++q) {
          double step = 0;
          dcost[r * pcol.size() + q] = edge_cost(t, spec_in_group(pg, prow[r], pr), grad_target(pg, prow[r], pr), &step,
                                                 param_like, grp.member_strategy[pcol[q]][member], id, k);
          dstep[r * pcol.size() + q] = step;
        }
      }
      for (size_t sp = 0; sp < pg.num_strategies(); ++sp) {
        for (size_t sc = 0; sc < grp.num_strategies(); ++sc) {
          const size_t at = row_of[sp] * pcol.size() + col_of[sc];
          e.cost[sp][sc] += dcost[at];
          if (dstep[at] != 0) {
            if (e.step_cost.empty()) e.step_cost.assign(pg.num_strategies(), std::vector<double>(grp.num_strategies(), 0));
            e.step_cost[sp][sc] += dstep[at];
          }
        }
      }
    }
    for (size_t o = 0; o < n.outputs.size(); ++o) producer[n.outputs[o]] = {gi, member, o, false};
  }
  for (auto& [key, e] : edges) sg_.edges.push_back(std::move(e));
}

}  // namespace

NodeWork node_work(const TrainingGraph& tg, const Cluster& cluster, const Profile* profile) {
  const Graph& g = tg.graph;
  const size_t nf = tg.num_forward_nodes;
  std::map<std::string, std::vector<NodeId>> derived;  // forward node name → its backward nodes
  for (size_t i = nf; i < g.num_nodes(); ++i) {
    const Node& n = g.node(static_cast<NodeId>(i));
    if (!n.derived_from.empty()) derived[n.derived_from].push_back(static_cast<NodeId>(i));
  }
  NodeWork w;
  w.full_time_s.assign(nf, 0);
  w.forward_time_s.assign(nf, 0);
  w.backward_bytes.assign(nf, 0);
  for (size_t i = 0; i < nf; ++i) {
    const Node& n = g.node(static_cast<NodeId>(i));
    const double fwd = op_time(g, cluster, profile, n);
    double t = fwd;
    auto it = derived.find(n.name);
    if (it != derived.end()) {
      for (NodeId b : it->second) {
        t += op_time(g, cluster, profile, g.node(b));
        for (TensorId o : g.node(b).outputs) w.backward_bytes[i] += g.tensor(o).bytes();
      }
    }
    w.full_time_s[i] = t;
    w.forward_time_s[i] = fwd;
  }
  return w;
}

StrategyGraph build_strategy_graph(const TrainingGraph& tg, const Cluster& cluster,
                                   const MeshShape& mesh, const LogicalMesh& view,
                                   const StrategyGraphOptions& options) {
  StrategyGraph sg;
  sg.training = &tg;
  sg.cluster = &cluster;
  sg.mesh = mesh;
  sg.costs = mesh_costs(cluster, mesh, view);
  sg.costs.axis[0].profile = sg.costs.axis[1].profile = options.profile;
  sg.options = options;
  Builder(sg).build();
  return sg;
}

std::shared_ptr<const StrategyGraph> strategy_graph_facts(const TrainingGraph& tg, const Cluster& cluster,
                                                         const StrategyGraphOptions& options) {
  auto sg = std::make_shared<StrategyGraph>();
  sg->training = &tg;
  sg->cluster = &cluster;
  sg->options = options;
  sg->options.facts = nullptr;
  compute_facts(*sg);
  return sg;
}

std::vector<EditableNode> editable_nodes(const StrategyGraph& sg) {
  std::vector<EditableNode> out;
  for (const Group& g : sg.groups) {
    if (g.is_parameter || g.members.empty()) continue;
    EditableNode e;
    e.node = g.name;
    for (const auto& members : g.member_strategy) e.strategies.push_back(members.front().name);
    out.push_back(std::move(e));
  }
  return out;
}

ChosenSpecs chosen_specs(const StrategyGraph& sg, const std::vector<int>& choice) {
  const Graph& g = sg.training->graph;
  ChosenSpecs out;
  out.node.assign(sg.group_of_node.size(), nullptr);
  out.param.assign(g.num_tensors(), nullptr);
  out.tensor.assign(g.num_tensors(), ShardingSpec{});
  for (size_t gi = 0; gi < sg.groups.size(); ++gi) {
    const Group& grp = sg.groups[gi];
    const size_t s = static_cast<size_t>(choice.at(gi));
    if (grp.is_parameter) {
      out.param[grp.parameter] = &grp.param_strategy[s];
      out.tensor[grp.parameter] = grp.param_strategy[s].out[0];
    }
    for (size_t m = 0; m < grp.members.size(); ++m) {
      const NodeStrategy& st = grp.member_strategy[s][m];
      const Node& n = g.node(grp.members[m]);
      out.node[grp.members[m]] = &st;
      for (size_t o = 0; o < n.outputs.size(); ++o) out.tensor[n.outputs[o]] = st.out[o];
    }
  }
  return out;
}

double evaluate_objective(const StrategyGraph& sg, const std::vector<int>& choice) {
  ALPA_CHECK(choice.size() == sg.groups.size(), "choice size differs from the group count");
  double total = sg.constant_cost;
  for (size_t g = 0; g < sg.groups.size(); ++g) total += sg.groups[g].cost.at(choice[g]);
  for (const GroupEdge& e : sg.edges) total += e.cost.at(choice[e.from]).at(choice[e.to]);
  return total;
}

int tensor_group(const StrategyGraph& sg, TensorId t) {
  if (sg.group_of_param[static_cast<size_t>(t)] >= 0) return sg.group_of_param[static_cast<size_t>(t)];
  const TensorId producer = sg.training->graph.tensor(t).producer;
  if (producer != kNoId && static_cast<size_t>(producer) < sg.group_of_node.size()) {
    return sg.group_of_node[static_cast<size_t>(producer)];
  }
  return -1;
}

bool param_like(const StrategyGraph& sg, TensorId t) {
  const int g = tensor_group(sg, t);
  return g >= 0 && sg.groups[static_cast<size_t>(g)].is_parameter;
}

EdgeReshards edge_reshards(const StrategyGraph& sg, const std::vector<int>& choice, const ChosenSpecs& cs,
                           NodeId node, size_t input) {
  const Graph& g = sg.training->graph;
  const Node& n = g.node(node);
  const NodeStrategy& c = *cs.node[static_cast<size_t>(node)];
  const TensorId t = n.inputs[input];
  const Tensor& ten = g.tensor(t);
  EdgeReshards out;
  const int pg = tensor_group(sg, t);
  if (pg < 0) return out;
  out.planned = true;
  const Group& pgrp = sg.groups[static_cast<size_t>(pg)];
  const ShardingSpec& produced = cs.tensor[t];
  out.param_like = pgrp.is_parameter;
  const ShardingSpec* grad_target = &produced;
  if (sg.group_of_param[t] >= 0) {
    grad_target = &pgrp.param_strategy[static_cast<size_t>(choice[static_cast<size_t>(pg)])].state;
  } else if (out.param_like) {
    const NodeStrategy& ps = *cs.node[static_cast<size_t>(ten.producer)];
    const Node& pn = g.node(ten.producer);
    for (size_t o = 0; o < pn.outputs.size(); ++o) {
      if (pn.outputs[o] == t && o < ps.grad_out.size()) grad_target = &ps.grad_out[o];
    }
  }
  out.forward = reshard(produced, 0, c.in[input], ten.shape, ten.dtype, sg.costs);
  out.forward_again = out.param_like && backward_reads(n, input, sg.needs_grad);
  if (sg.needs_grad[t]) {
    out.has_backward = true;
    out.grad_target = *grad_target;
    out.backward = reshard(c.in[input], c.in_grad_partial[input], *grad_target, ten.shape, ten.dtype, sg.costs);
  }
  return out;
}

std::vector<CommEvent> communication(const StrategyGraph& sg, const std::vector<int>& choice) {
  return communication(sg, choice, 0, static_cast<int64_t>(sg.group_of_node.size()), std::vector<bool>(sg.groups.size(), true));
}

std::vector<CommEvent> communication(const StrategyGraph& sg, const std::vector<int>& choice, int64_t first,
                                     int64_t end, const std::vector<bool>& in_groups) {
  const Graph& g = sg.training->graph;
  const ChosenSpecs cs = chosen_specs(sg, choice);
  const double K = static_cast<double>(sg.options.microbatches);
  std::vector<CommEvent> out;
  auto add = [&](TensorId t, const std::string& where, const std::vector<CollectiveStep>& steps, double count) {
    for (const CollectiveStep& st : steps) out.push_back({t, where, st, count});
  };
  for (size_t gi = 0; gi < sg.groups.size(); ++gi) {
    const Group& grp = sg.groups[gi];
    if (grp.is_parameter && in_groups[gi]) add(grp.parameter, "optimizer", grp.param_strategy[choice[gi]].comms, 1);
  }
  for (int64_t i = first; i < end; ++i) {
    const Node& n = g.node(static_cast<NodeId>(i));
    const NodeStrategy& c = *cs.node[i];
    add(n.outputs.empty() ? kNoId : n.outputs[0], n.name, c.comms, K);
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      const TensorId t = n.inputs[k];
      const int producer = sg.group_of_param[t] >= 0 ? sg.group_of_param[t]
                           : g.tensor(t).producer != kNoId && static_cast<size_t>(g.tensor(t).producer) < sg.group_of_node.size()
                               ? sg.group_of_node[g.tensor(t).producer]
                               : -1;
      if (producer >= 0 && !in_groups[producer]) continue;  // another stage's tensor: a transfer
      const EdgeReshards e = edge_reshards(sg, choice, cs, static_cast<NodeId>(i), k);
      if (!e.planned) continue;
      add(n.inputs[k], "forward", e.forward.steps, K * (e.forward_again ? 2 : 1));
      if (e.has_backward) add(n.inputs[k], "backward", e.backward.steps, e.param_like ? 1.0 : K);
    }
  }
  if (debug_enabled(DebugChannel::kComm)) {
    for (const CommEvent& ev : out) {
      debug_line(DebugChannel::kComm, "%s %s %s %.0f B x %g", ev.tensor == kNoId ? "-" : g.tensor(ev.tensor).name.c_str(),
                 ev.where.c_str(), std::string(collective_name(ev.step.kind)).c_str(), ev.step.bytes_per_device, ev.count);
    }
  }
  return out;
}

std::map<std::string, double> bytes_per_kind(const std::vector<CommEvent>& events) {
  std::map<std::string, double> out;
  for (const char* kind : {"all_gather", "all_reduce", "all_to_all", "reduce_scatter"}) out[kind] = 0;
  for (const CommEvent& ev : events) out[std::string(collective_name(ev.step.kind))] += ev.step.bytes_per_device * ev.count;
  return out;
}

int64_t evaluate_memory(const StrategyGraph& sg, const std::vector<int>& choice) {
  int64_t total = 0;
  for (size_t g = 0; g < sg.groups.size(); ++g) total += sg.groups[g].memory.at(choice[g]);
  return total;
}

}  // namespace alpa
