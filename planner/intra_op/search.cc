#include "planner/intra_op/search.h"

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>

#include "planner/common/log.h"
#include "planner/common/error.h"
#include "planner/common/format.h"
#include "planner/common/rng.h"
#include "planner/graph/rebatch.h"

namespace alpa {
namespace {

constexpr const char* kAutodiffVersion = "autodiff/2";  // 2: weight gradients of x·W as one GEMM

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

int64_t local_bytes_of(const Tensor& t, const ShardingSpec& s, const LogicalMesh& v) {
  if (s.dims.size() != t.shape.size() || t.shape.empty()) return t.bytes();
  return num_elements(s.local_shape(t.shape, v)) * dtype_bytes(t.dtype);
}

}  // namespace

std::optional<OptimizerConfig> optimizer_from_name(std::string_view name) {
  OptimizerConfig opt;
  if (name == "sgd") opt.kind = OptimizerKind::kSgd;
  else if (name == "sgd-momentum") {
    opt.kind = OptimizerKind::kSgd;
    opt.momentum = kPlannedMomentum;  // any non-zero value keeps the buffer
  } else if (name == "adam") opt.kind = OptimizerKind::kAdam;
  else if (name == "adamw") opt.kind = OptimizerKind::kAdamW;
  else return std::nullopt;
  return opt;
}

const char* optimizer_name(const OptimizerConfig& opt) {
  switch (opt.kind) {
    case OptimizerKind::kSgd: return opt.momentum != 0 ? "sgd-momentum" : "sgd";
    case OptimizerKind::kAdam: return "adam";
    case OptimizerKind::kAdamW: return "adamw";
  }
  return "sgd";
}

TrainingGraph make_training(const Graph& forward, int64_t batch, int64_t microbatches,
                            const OptimizerConfig& opt, const PrecisionConfig& precision) {
  if (microbatches > 1) {
    if (batch % microbatches != 0) {
      throw UserError("--microbatches", std::to_string(microbatches),
                      "does not divide the global batch " + std::to_string(batch));
    }
    return build_training_graph(rebatch(forward, batch, batch / microbatches), opt, precision);
  }
  return build_training_graph(forward, opt, precision);
}

std::string precision_name(DType compute) {
  switch (compute) {
    case DType::kFloat16: return "fp16";
    case DType::kBFloat16: return "bf16";
    default: return "fp32";
  }
}

std::optional<LogicalMesh> parse_logical_mesh(const std::string& text) {
  const auto x = text.find('x');
  if (x == std::string::npos) return std::nullopt;
  try {
    size_t p0 = 0, p1 = 0;
    const std::string a = text.substr(0, x), b = text.substr(x + 1);
    const long long d0 = std::stoll(a, &p0), d1 = std::stoll(b, &p1);
    if (p0 != a.size() || p1 != b.size() || d0 <= 0 || d1 <= 0) return std::nullopt;
    return LogicalMesh{d0, d1};
  } catch (...) {
    return std::nullopt;
  }
}

Method parse_method(const std::string& text) {
  if (text == "shard") return Method::kShard;
  if (text == "data") return Method::kData;
  if (text == "zero2") return Method::kZero2;
  if (text == "zero3") return Method::kZero3;
  if (text == "megatron") return Method::kMegatron;
  throw UserError("--method", text, "unknown method (expected auto, megatron, megatron-grid, pp-dp, shard, data, zero2 or zero3)");
}

std::string graph_fingerprint(const Graph& g, int64_t global_batch) {
  std::string canon = std::string(kAutodiffVersion) + ";batch=" + std::to_string(global_batch) + ";";
  for (const Node& n : g.nodes()) {
    canon += n.name + "=" + std::string(op_name(n.kind)) + "(";
    for (TensorId t : n.inputs) {
      const Tensor& ten = g.tensor(t);
      canon += ten.name + ":" + std::string(dtype_name(ten.dtype)) + format_dims(ten.shape) + "," ;
    }
    canon += ")->";
    for (TensorId t : n.outputs) canon += g.tensor(t).name + format_dims(g.tensor(t).shape) + ",";
    canon += ";";
  }
  return "graph:" + hex64(stable_key(canon));
}

std::string cluster_fingerprint(const Cluster& c, const std::string& profile_text) {
  std::string text = cluster_to_json(c);
  if (!profile_text.empty()) text += "\nprofile:" + profile_text;
  return "cluster:" + hex64(stable_key(text));
}

PlanMemory simulate_memory(const StrategyGraph& sg, const std::vector<int>& choice, const std::vector<bool>* nodes,
                           const std::vector<bool>* absent) {
  const TrainingGraph& tg = *sg.training;
  const Graph& g = tg.graph;
  const ChosenSpecs cs = chosen_specs(sg, choice);
  const LogicalMesh& v = sg.costs.view;
  const size_t nt = g.num_tensors(), nf = tg.num_forward_nodes;
  PlanMemory mem;
  std::vector<int64_t> size(nt, -1);
  std::vector<bool> persistent(nt, false);
  auto runs = [&](NodeId k) { return nodes == nullptr || (*nodes)[static_cast<size_t>(k)]; };
  std::vector<bool> read(nt, nodes == nullptr);  // read by a node that runs
  for (size_t i = 0; i < g.num_nodes(); ++i) {
    if (!runs(static_cast<NodeId>(i))) continue;
    for (TensorId t : g.node(static_cast<NodeId>(i)).inputs) read[t] = true;
  }
  // Parameters, their gradients and optimizer state, as their strategies shard them.
  for (const ParameterSlot& ps : tg.parameters) {
    if (!read[ps.param]) continue;  // another stage's
    const NodeStrategy* st = cs.param[ps.param];
    ALPA_CHECK(st != nullptr, "parameter without a strategy");
    size[ps.param] = st->param_bytes;
    persistent[ps.param] = true;
    mem.parameter_bytes += st->param_bytes;
    size[ps.grad] = st->grad_bytes;
    persistent[ps.grad] = true;
    mem.gradient_bytes += st->grad_bytes;
    for (TensorId s : ps.state) {
      size[s] = local_bytes_of(g.tensor(s), st->state, v);
      persistent[s] = true;
      mem.optimizer_state_bytes += size[s];
    }
    size[ps.updated_param] = 0;  // updates are in place
    for (TensorId s : ps.updated_state) size[s] = 0;
  }
  for (const auto& [from, to] : tg.state_updates) {
    if (size[to] < 0) size[to] = 0;
  }
  for (size_t t = 0; absent && t < nt; ++t) {
    if ((*absent)[t] && size[t] < 0) size[t] = 0;
  }
  std::map<std::string, NodeId, std::less<>> forward_by_name;
  for (size_t i = 0; i < nf; ++i) forward_by_name[g.node(static_cast<NodeId>(i)).name] = static_cast<NodeId>(i);
  for (size_t t = 0; t < nt; ++t) {
    if (size[t] >= 0) continue;
    const Tensor& ten = g.tensor(static_cast<TensorId>(t));
    if (ten.role == TensorRole::kBuffer || ten.role == TensorRole::kConstant) {
      size[t] = ten.bytes();
      persistent[t] = true;
      continue;
    }
    if (!cs.tensor[t].dims.empty() || ten.shape.empty()) {
      size[t] = local_bytes_of(ten, cs.tensor[t], v);
      continue;
    }
    // Graph inputs, and tensors another stage makes: as their first consumer reads them.
    if (ten.producer == kNoId || !runs(ten.producer)) {
      int64_t b = ten.bytes();
      for (NodeId c : ten.consumers) {
        if (static_cast<size_t>(c) >= nf || !runs(c)) continue;
        const Node& cn = g.node(c);
        for (size_t k = 0; k < cn.inputs.size(); ++k) {
          if (cn.inputs[k] == static_cast<TensorId>(t)) b = local_bytes_of(ten, cs.node[c]->in[k], v);
        }
        break;
      }
      size[t] = b;
      continue;
    }
    // Backward tensors: the spec of a same-shaped operand of the forward node they derive
    // from, else that node's share of the work.
    const Node& p = g.node(ten.producer);
    auto it = forward_by_name.find(p.derived_from);
    int64_t b = ten.bytes();
    if (it != forward_by_name.end()) {
      const Node& f = g.node(it->second);
      const NodeStrategy& st = *cs.node[it->second];
      bool found = false;
      for (size_t k = 0; k < f.inputs.size() && !found; ++k) {
        if (g.tensor(f.inputs[k]).shape == ten.shape) { b = local_bytes_of(ten, st.in[k], v); found = true; }
      }
      for (size_t o = 0; o < f.outputs.size() && !found; ++o) {
        if (g.tensor(f.outputs[o]).shape == ten.shape) { b = local_bytes_of(ten, st.out[o], v); found = true; }
      }
      if (!found) {  // the node's share of the iteration space, as the memory bound counts it
        b = static_cast<int64_t>(std::ceil(static_cast<double>(ten.bytes()) * st.work_fraction));
      }
    }
    size[t] = b;
  }
  // Activations the backward pass reads.
  for (size_t t = 0; t < nt; ++t) {
    const NodeId p = g.tensor(static_cast<TensorId>(t)).producer;
    if (sg.saved[t] && !persistent[t] && (p == kNoId ? read[t] : runs(p))) mem.activation_bytes += size[t];
  }
  // Allocation/free sequence: outputs allocated when produced, freed after the last reader.
  std::vector<int64_t> last_use(nt, -1);
  for (size_t i = 0; i < g.num_nodes(); ++i) {
    if (!runs(static_cast<NodeId>(i))) continue;
    for (TensorId t : g.node(static_cast<NodeId>(i)).inputs) last_use[t] = static_cast<int64_t>(i);
  }
  int64_t live = 0;
  for (size_t t = 0; t < nt; ++t) {
    const Tensor& ten = g.tensor(static_cast<TensorId>(t));
    const bool outside = ten.producer == kNoId || !runs(ten.producer);  // inputs, received tensors
    if (persistent[t] && ten.producer == kNoId && read[t]) live += size[t];
    else if (outside && !persistent[t] && last_use[t] >= 0) live += size[t];
  }
  int64_t peak = live;
  for (size_t i = 0; i < g.num_nodes(); ++i) {
    if (!runs(static_cast<NodeId>(i))) continue;
    const Node& n = g.node(static_cast<NodeId>(i));
    for (TensorId t : n.outputs) live += size[t];
    peak = std::max(peak, live);
    std::set<TensorId> inputs(n.inputs.begin(), n.inputs.end());
    for (TensorId t : inputs) {
      if (!persistent[t] && last_use[t] == static_cast<int64_t>(i)) live -= size[t];
    }
    for (TensorId t : n.outputs) {
      if (!persistent[t] && last_use[t] < 0) live -= size[t];
    }
  }
  mem.peak_bytes = peak;
  return mem;
}

int64_t memory_bound(const StrategyGraph& sg, const std::vector<int>& choice) {
  const ChosenSpecs cs = chosen_specs(sg, choice);
  int64_t max_temp = 0;
  for (const NodeStrategy* st : cs.node) max_temp = std::max(max_temp, st->temp_bytes);
  return evaluate_memory(sg, choice) + 2 * max_temp;
}

PlanEstimate estimate_choice(const StrategyGraph& sg, const std::vector<int>& choice,
                             int64_t global_batch) {
  PlanEstimate e;
  const ChosenSpecs cs = chosen_specs(sg, choice);
  for (const NodeStrategy* st : cs.node) e.compute_time_s += st->compute_s;
  for (const NodeStrategy* st : cs.param) if (st) e.compute_time_s += st->compute_s;
  const std::vector<CommEvent> events = communication(sg, choice);
  for (const CommEvent& ev : events) e.communication_time_s += ev.step.time_s * ev.count;
  e.communication_bytes = bytes_per_kind(events);
  e.iteration_time_s = e.compute_time_s + e.communication_time_s;
  e.throughput_samples_per_s = e.iteration_time_s > 0 ? static_cast<double>(global_batch) / e.iteration_time_s : 0;
  e.memory = simulate_memory(sg, choice);
  // With several microbatches the step's gradients accumulate in a buffer of their own while
  // each microbatch's are computed (as a pipeline stage's estimate counts them).
  if (sg.options.microbatches > 1) e.memory.peak_bytes += e.memory.gradient_bytes;
  return e;
}

namespace {

// Solves one view within the budget of the memory model's bound (the linear model plus the
// working set of the largest node, twice); re-solves with a tighter linear budget when the
// bound of the answer is over.
ViewOutcome solve_view(const SearchRequest& rq, const TrainingGraph& tg, const LogicalMesh& view,
                       int64_t budget, std::vector<int>* choice_out, StrategyGraph* sg_out) {
  ViewOutcome out;
  out.view = view;
  const auto t0 = std::chrono::steady_clock::now();
  StrategyGraphOptions so;
  so.method = rq.method;
  so.microbatches = rq.microbatches;
  so.profile = rq.profile;
  const MeshShape mesh{rq.cluster->hosts, rq.cluster->devices_per_host};
  StrategyGraph sg = build_strategy_graph(tg, *rq.cluster, mesh, view, so);
  out.build_time_s = seconds_since(t0);
  out.groups = static_cast<int64_t>(sg.groups.size());
  if (rq.ilp_stats) {
    out.after_merging = monolithic_ilp_size(sg);
    StrategyGraphOptions unmerged = so;
    unmerged.merge_followers = false;
    out.before_merging = monolithic_ilp_size(build_strategy_graph(tg, *rq.cluster, mesh, view, unmerged));
  }
  out.nodes_before_merging = sg.nodes_before_merging;
  SolveOptions opt;
  opt.threads = rq.threads;
  opt.max_nodes = rq.max_nodes;
  opt.time_limit_s = rq.time_limit_s;
  opt.memory_budget_bytes = budget;
  opt.cache = make_solve_cache();
  opt.decompose = rq.decompose;
  SolveResult res;
  for (int attempt = 0; attempt < 6; ++attempt) {
    SolveResult r = solve_strategy_graph(sg, opt);
    r.ilps_solved += res.ilps_solved;
    r.solve_time_s += res.solve_time_s;
    r.largest_variables = std::max(r.largest_variables, res.largest_variables);
    r.largest_constraints = std::max(r.largest_constraints, res.largest_constraints);
    r.proven_optimal = r.proven_optimal && (attempt == 0 || res.proven_optimal);
    res = r;
    if (debug_enabled(DebugChannel::kSolve)) {
      debug_line(DebugChannel::kSolve, "%lldx%lld attempt %d: feasible=%d budget=%lld min=%lld obj=%g mem=%lld bound=%lld ilps=%lld t=%.3f",
                 (long long)view.d0, (long long)view.d1, attempt, (int)res.feasible, (long long)opt.memory_budget_bytes,
                 (long long)res.min_memory_bytes, res.objective, (long long)res.memory_bytes,
                 (long long)(res.feasible ? memory_bound(sg, res.choice) : 0), (long long)res.ilps_solved, res.solve_time_s);
    }
    if (!res.feasible) break;
    const int64_t bound = memory_bound(sg, res.choice);
    out.model_memory_bytes = bound;
    if (bound <= budget) break;
    opt.memory_budget_bytes -= std::max<int64_t>(bound - budget, 1);
    if (opt.memory_budget_bytes <= 0) { res.feasible = false; break; }
    if (attempt == 5) res.feasible = false;
  }
  out.solve = res;
  out.feasible = res.feasible;
  if (res.feasible) {
    out.estimate = estimate_choice(sg, res.choice, rq.global_batch);
    // The checker: the estimate, summed tensor by tensor, must equal the ILP's objective.
    const double obj = evaluate_objective(sg, res.choice);
    const double est = out.estimate.iteration_time_s;
    ALPA_CHECK(std::abs(obj - est) <= 1e-9 * std::max(1e-12, std::abs(obj)) + 1e-15,
               "checker: re-evaluated step time " + std::to_string(est) +
                   " differs from the solver's objective " + std::to_string(obj));
    if (choice_out) *choice_out = res.choice;
  }
  if (sg_out) *sg_out = std::move(sg);
  return out;
}

std::string diagnose(const SearchRequest& rq, const TrainingGraph& tg, const LogicalMesh& view,
                     int64_t budget) {
  StrategyGraphOptions so;
  so.method = rq.method;
  so.microbatches = rq.microbatches;
  so.profile = rq.profile;
  const StrategyGraph sg = build_strategy_graph(tg, *rq.cluster, {rq.cluster->hosts, rq.cluster->devices_per_host}, view, so);
  std::vector<int> lean(sg.groups.size());
  std::vector<std::pair<int64_t, std::string>> heavy;
  for (size_t g = 0; g < sg.groups.size(); ++g) {
    const auto& m = sg.groups[g].memory;
    lean[g] = static_cast<int>(std::min_element(m.begin(), m.end()) - m.begin());
    heavy.push_back({m[lean[g]], sg.groups[g].name});
  }
  const int64_t need = memory_bound(sg, lean);
  std::sort(heavy.begin(), heavy.end(), [](auto& a, auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
  std::string out = "no plan fits in " + format_bytes(static_cast<double>(budget)) + " per device: the leanest plan on the " +
                    std::to_string(view.d0) + "x" + std::to_string(view.d1) + " mesh needs about " +
                    format_bytes(static_cast<double>(need)) + " (" + format_bytes(static_cast<double>(need - budget)) +
                    " over).\n  largest per device:";
  for (size_t k = 0; k < std::min<size_t>(5, heavy.size()); ++k) {
    out += "\n    " + heavy[k].second + ": " + format_bytes(static_cast<double>(heavy[k].first));
  }
  out += "\n  what would help: more devices (a larger --cluster)";
  if (rq.method != Method::kZero3 && rq.method != Method::kShard) out += ", --method zero3 or shard";
  out += ", a smaller --batch, more --microbatches";
  if (rq.optimizer.kind != OptimizerKind::kSgd) out += ", or --optimizer sgd";
  return out;
}

}  // namespace

SearchResult search_shard_parallel(const SearchRequest& rq) {
  ALPA_CHECK(rq.forward && rq.cluster, "search request without a model or cluster");
  const TrainingGraph tg = make_training(*rq.forward, rq.global_batch, rq.microbatches, rq.optimizer, rq.precision);
  const Cluster& cl = *rq.cluster;
  const int64_t budget = rq.memory_budget_bytes > 0 ? rq.memory_budget_bytes : cl.device.usable_memory_bytes();
  const MeshShape mesh{cl.hosts, cl.devices_per_host};
  std::vector<LogicalMesh> views;
  if (rq.logical) {
    if (rq.logical->size() != mesh.size()) {
      throw UserError("--logical-mesh", std::to_string(rq.logical->d0) + "x" + std::to_string(rq.logical->d1),
                      "has " + std::to_string(rq.logical->size()) + " devices; the cluster has " + std::to_string(mesh.size()));
    }
    views = {*rq.logical};
  } else {
    views = logical_views(mesh);
  }
  SearchResult result;
  int best = -1;
  std::vector<std::vector<int>> choices(views.size());
  for (size_t k = 0; k < views.size(); ++k) {
    result.views.push_back(solve_view(rq, tg, views[k], budget, &choices[k], nullptr));
    const ViewOutcome& o = result.views.back();
    if (o.feasible && (best < 0 || o.estimate.iteration_time_s < result.views[best].estimate.iteration_time_s)) best = static_cast<int>(k);
  }
  if (best < 0) {
    // The view with the least memory explains what is missing.
    result.diagnosis = diagnose(rq, tg, views.back(), budget);
    return result;
  }
  const ViewOutcome& o = result.views[best];
  StrategyGraphOptions so;
  so.method = rq.method;
  so.microbatches = rq.microbatches;
  so.profile = rq.profile;
  const StrategyGraph sg = build_strategy_graph(tg, cl, mesh, o.view, so);
  const std::vector<int>& choice = choices[best];
  const ChosenSpecs cs = chosen_specs(sg, choice);
  Plan& p = result.plan;
  fill_plan_header(p, rq, cl, rq.microbatches, method_name(rq.method), budget);
  p.mesh_hosts = mesh.hosts;
  p.mesh_devices_per_host = mesh.devices_per_host;
  p.logical_d0 = o.view.d0;
  p.logical_d1 = o.view.d1;
  for (int64_t d = 0; d < mesh.size(); ++d) p.device_ids.push_back(d);
  append_plan_specs(p.strategies, p.tensors, tg, cs, 0, static_cast<int64_t>(tg.num_forward_nodes),
                    [](TensorId) { return true; });
  p.estimate = o.estimate;
  p.solver.nodes_before_merging = o.nodes_before_merging;
  p.solver.nodes_after_merging = o.groups;
  for (const ViewOutcome& v : result.views) {
    p.solver.ilps_solved += v.solve.ilps_solved;
    p.solver.largest_ilp_variables = std::max(p.solver.largest_ilp_variables, v.solve.largest_variables);
    p.solver.largest_ilp_constraints = std::max(p.solver.largest_ilp_constraints, v.solve.largest_constraints);
  }
  p.solver.proven_optimal = o.solve.proven_optimal;
  result.found = true;
  return result;
}

void check_plan_bindings(const Plan& plan, const std::string& src, const Graph& forward, const Cluster& cl,
                         const std::string& profile_text) {
  const std::string fp = graph_fingerprint(forward, plan.global_batch);
  if (fp != plan.graph_fingerprint) {
    throw UserError(src, "graph_fingerprint", "the plan was made for another model or batch (plan " +
                    plan.graph_fingerprint + ", the model as imported " + fp + "; a different --batch changes it)");
  }
  const std::string cfp = cluster_fingerprint(cl, profile_text);
  if (cfp != plan.cluster_fingerprint) {
    throw UserError(src, "cluster_fingerprint", "the plan was made for another cluster or profile (plan " +
                    plan.cluster_fingerprint + ", this cluster " + cfp + ")");
  }
  if (plan.mesh_hosts != cl.hosts || plan.mesh_devices_per_host != cl.devices_per_host) {
    throw UserError(src, "mesh", "does not match the cluster's " + std::to_string(cl.hosts) + " x " + std::to_string(cl.devices_per_host));
  }
}

std::string plan_cluster_spec(const Plan& plan) {
  if (plan.cluster.rfind("local", 0) == 0) return "local:" + std::to_string(plan.mesh_hosts * plan.mesh_devices_per_host);
  return "builtin:" + plan.cluster;
}

TrainingGraph plan_training_graph(const Plan& plan, const std::string& src, const Graph& forward,
                                  const OptimizerConfig* hyper) {
  const std::optional<OptimizerConfig> named = optimizer_from_name(plan.optimizer);
  if (!named) throw UserError(src, "optimizer", "unknown optimizer \"" + plan.optimizer + "\" (sgd, sgd-momentum, adam or adamw)");
  OptimizerConfig opt = hyper ? *hyper : *named;  // the run's hyperparameters, the plan's kind
  opt.kind = named->kind;
  if (named->momentum != 0 && opt.momentum == 0) {
    throw UserError(src, "optimizer", "the plan is for SGD with momentum (it counts a momentum buffer per parameter); "
                    "give the run's momentum (alpa-run --momentum M)");
  }
  PrecisionConfig prec;
  if (plan.precision == "fp16") prec.compute = DType::kFloat16;
  else if (plan.precision == "bf16") prec.compute = DType::kBFloat16;
  else if (plan.precision != "fp32") throw UserError(src, "precision", "unknown precision \"" + plan.precision + "\" (fp32, fp16 or bf16)");
  if (plan.microbatches < 1 || plan.global_batch % plan.microbatches != 0) {
    throw UserError(src, "microbatches", std::to_string(plan.microbatches) + " does not divide the global batch " + std::to_string(plan.global_batch));
  }
  return make_training(forward, plan.global_batch, plan.microbatches, opt, prec);
}

namespace {

// The choice a plan's leader strategies and parameter specs name (followers unchecked), and the
// plan's specs by tensor name; throws UserError for a spec that does not fit its tensor or a
// leader strategy that is not one of its node's.
std::vector<int> leader_choice(const Plan& plan, const std::string& src, const TrainingGraph& tg, const StrategyGraph& sg,
                               std::map<std::string, std::string, std::less<>>& strat,
                               std::map<std::string, std::string, std::less<>>& spec) {
  const LogicalMesh view = sg.costs.view;
  const Graph& g = tg.graph;
  for (const auto& s : plan.strategies) {
    const NodeId id = g.find_node(s.node);
    if (id == kNoId || static_cast<size_t>(id) >= tg.num_forward_nodes) {
      throw UserError(src, "/strategies/\"" + s.node + "\"", "no forward node of that name in the model");
    }
    strat[s.node] = s.strategy;
  }
  for (const auto& t : plan.tensors) {
    const TensorId id = g.find_tensor(t.tensor);
    if (id == kNoId) throw UserError(src, "/tensors/\"" + t.tensor + "\"", "no tensor of that name in the training graph");
    const Tensor& ten = g.tensor(id);
    const auto parsed = ShardingSpec::parse(t.spec, ten.shape.size());
    if (!parsed && !(ten.shape.empty() && t.spec.empty())) {
      throw UserError(src, "/tensors/\"" + t.tensor + "\"", "spec \"" + t.spec + "\" does not fit the tensor's shape " + format_dims(ten.shape));
    }
    if (parsed) {
      for (size_t d = 0; d < ten.shape.size(); ++d) {
        const int64_t w = parsed->ways(d, view);
        if (w > 1 && ten.shape[d] < w) {
          throw UserError(src, "/tensors/\"" + t.tensor + "\"", "spec \"" + t.spec + "\" splits dim " + std::to_string(d) +
                          " (size " + std::to_string(ten.shape[d]) + ") " + std::to_string(w) + " ways");
        }
        if (w > 1 && ten.shape[d] % w != 0 && sg.batch_dim[id] == static_cast<int>(d)) {
          throw UserError(src, "/tensors/\"" + t.tensor + "\"", "spec \"" + t.spec + "\" splits the batch dim " + std::to_string(d) +
                          " (size " + std::to_string(ten.shape[d]) + ") " + std::to_string(w) + " ways, which does not divide it");
        }
      }
    }
    spec[t.tensor] = t.spec;
  }
  std::vector<int> choice(sg.groups.size(), -1);
  auto list = [](const std::vector<std::string>& names) {
    std::string out;
    for (size_t k = 0; k < names.size() && k < 8; ++k) out += (k ? ", " : "") + ("\"" + names[k] + "\"");
    if (names.size() > 8) out += ", ... (" + std::to_string(names.size()) + " in all)";
    return out;
  };
  for (size_t gi = 0; gi < sg.groups.size(); ++gi) {
    const Group& grp = sg.groups[gi];
    std::vector<std::string> names;
    if (grp.is_parameter) {
      const std::string& pname = g.tensor(grp.parameter).name;
      auto ps = spec.find(pname);
      if (ps == spec.end()) throw UserError(src, "/tensors", "parameter \"" + pname + "\" has no spec");
      std::string want = ps->second;
      for (const ParameterSlot& slot : tg.parameters) {
        if (slot.param != grp.parameter) continue;
        auto gs = spec.find(g.tensor(slot.grad).name);
        if (gs != spec.end() && gs->second != ps->second) want += "/" + gs->second;
      }
      for (size_t s = 0; s < grp.num_strategies(); ++s) {
        names.push_back(grp.param_strategy[s].name);
        if (grp.param_strategy[s].name == want && choice[gi] < 0) choice[gi] = static_cast<int>(s);
      }
      if (choice[gi] < 0) {
        throw UserError(src, "/tensors/\"" + pname + "\"", "parameter and gradient specs \"" + want +
                        "\" are not a choice for this parameter under method " + plan.method + "; valid: " + list(names));
      }
      continue;
    }
    const std::string& lname = g.node(grp.leader).name;
    auto it = strat.find(lname);
    if (it == strat.end()) throw UserError(src, "/strategies", "node \"" + lname + "\" has no strategy");
    for (size_t s = 0; s < grp.num_strategies(); ++s) {
      names.push_back(grp.member_strategy[s][0].name);
      if (grp.member_strategy[s][0].name == it->second && choice[gi] < 0) choice[gi] = static_cast<int>(s);
    }
    if (choice[gi] < 0) {
      throw UserError(src, "/strategies/\"" + lname + "\"", "\"" + it->second + "\" is not a strategy of this node on a " +
                      std::to_string(view.d0) + "x" + std::to_string(view.d1) + " mesh; valid: " + list(names));
    }
  }
  return choice;
}

}  // namespace

std::vector<int> plan_choice(const Plan& plan, const std::string& src, const TrainingGraph& tg,
                             const StrategyGraph& sg) {
  const Graph& g = tg.graph;
  std::map<std::string, std::string, std::less<>> strat, spec;
  const std::vector<int> choice = leader_choice(plan, src, tg, sg, strat, spec);
  // Followers and tensor specs must be what the chosen strategies give.
  const ChosenSpecs cs = chosen_specs(sg, choice);
  for (size_t i = 0; i < tg.num_forward_nodes; ++i) {
    const Node& n = g.node(static_cast<NodeId>(i));
    auto it = strat.find(n.name);
    if (it == strat.end()) throw UserError(src, "/strategies", "node \"" + n.name + "\" has no strategy");
    if (it->second != cs.node[i]->name) {
      throw UserError(src, "/strategies/\"" + n.name + "\"", "\"" + it->second + "\" differs from \"" + cs.node[i]->name +
                      "\", which its inputs' specs decide (the node follows \"" + sg.groups[sg.group_of_node[i]].name + "\"; edit that one)");
    }
    for (size_t q = 0; q < n.outputs.size(); ++q) {
      const std::string& tn = g.tensor(n.outputs[q]).name;
      auto ts = spec.find(tn);
      if (ts != spec.end() && ts->second != cs.node[i]->out[q].to_string()) {
        throw UserError(src, "/tensors/\"" + tn + "\"", "spec \"" + ts->second + "\" differs from \"" + cs.node[i]->out[q].to_string() +
                        "\", which the strategy of \"" + n.name + "\" produces");
      }
    }
  }
  // Gradient and optimizer-state specs must be the chosen parameter strategies'.
  for (const ParameterSlot& slot : tg.parameters) {
    const NodeStrategy& ps = *cs.param[slot.param];
    std::vector<TensorId> derived = {slot.grad};
    derived.insert(derived.end(), slot.state.begin(), slot.state.end());
    for (TensorId t : derived) {
      const std::string& tn = g.tensor(t).name;
      auto ts = spec.find(tn);
      if (ts != spec.end() && ts->second != ps.state.to_string()) {
        throw UserError(src, "/tensors/\"" + tn + "\"", "spec \"" + ts->second + "\" differs from the optimizer-state spec \"" +
                        ps.state.to_string() + "\" of parameter \"" + g.tensor(slot.param).name +
                        "\" (gradient and state share one spec: set it on grad/" + g.tensor(slot.param).name + ")");
      }
    }
  }
  // Backward specs are derived in this version: an override may only restate them.
  for (const auto& o : plan.overrides) {
    const TensorId id = g.find_tensor(o.tensor);
    if (id == kNoId) throw UserError(src, "/overrides/\"" + o.tensor + "\"", "no tensor of that name in the training graph");
    const std::string derived = cs.tensor[id].dims.empty() && !g.tensor(id).shape.empty() ? "" : cs.tensor[id].to_string();
    if (o.spec != derived) {
      throw UserError(src, "/overrides/\"" + o.tensor + "\"", "overriding a derived spec is not supported yet (derived: \"" + derived + "\")");
    }
  }
  return choice;
}

StrategyGraph plan_strategy_graph(const Plan& plan, const std::string& src, const TrainingGraph& tg,
                                  const Cluster& cl, const Profile* profile) {
  if (plan.logical_d0 * plan.logical_d1 != cl.num_devices()) {
    throw UserError(src, "logical_mesh", "covers " + std::to_string(plan.logical_d0 * plan.logical_d1) +
                    " devices; the cluster has " + std::to_string(cl.num_devices()));
  }
  Method method;
  try {
    method = parse_method(plan.method);
  } catch (const UserError&) {
    throw UserError(src, "method", "unknown method \"" + plan.method + "\" (shard, data, zero2 or zero3)");
  }
  StrategyGraphOptions so;
  so.method = method;
  so.microbatches = plan.microbatches;
  so.profile = profile;
  return build_strategy_graph(tg, cl, {cl.hosts, cl.devices_per_host}, {plan.logical_d0, plan.logical_d1}, so);
}

void append_plan_specs(std::vector<PlanNodeStrategy>& strategies, std::vector<PlanTensorSpec>& tensors,
                       const TrainingGraph& tg, const ChosenSpecs& cs, int64_t first_node, int64_t end_node,
                       const std::function<bool(TensorId)>& with_param) {
  const Graph& g = tg.graph;
  for (int64_t i = first_node; i < end_node; ++i) {
    const Node& n = g.node(static_cast<NodeId>(i));
    strategies.push_back({n.name, cs.node[i]->name});
    for (size_t q = 0; q < n.outputs.size(); ++q) {
      tensors.push_back({g.tensor(n.outputs[q]).name, cs.node[i]->out[q].to_string()});
    }
  }
  for (const ParameterSlot& ps : tg.parameters) {
    if (!with_param(ps.param)) continue;
    const NodeStrategy& st = *cs.param[ps.param];
    tensors.push_back({g.tensor(ps.param).name, st.out[0].to_string()});
    tensors.push_back({g.tensor(ps.grad).name, st.state.to_string()});
    for (TensorId s : ps.state) tensors.push_back({g.tensor(s).name, st.state.to_string()});
  }
}

Plan derive_followers(const Plan& plan, const std::string& src, const Graph& forward, const Cluster& cl,
                      const Profile* profile, DerivedCounts* counts) {
  const TrainingGraph tg = plan_training_graph(plan, src, forward);
  const StrategyGraph sg = plan_strategy_graph(plan, src, tg, cl, profile);
  std::map<std::string, std::string, std::less<>> strat, spec;
  const std::vector<int> choice = leader_choice(plan, src, tg, sg, strat, spec);
  Plan out = plan;
  out.strategies.clear();
  out.tensors.clear();
  out.overrides.clear();
  append_plan_specs(out.strategies, out.tensors, tg, chosen_specs(sg, choice), 0, static_cast<int64_t>(tg.num_forward_nodes),
                    [](TensorId) { return true; });
  if (counts) {
    *counts = {};
    for (const auto& s : out.strategies) counts->strategies += strat.count(s.node) && strat.at(s.node) == s.strategy ? 0 : 1;
    for (const auto& t : out.tensors) counts->tensors += spec.count(t.tensor) && spec.at(t.tensor) == t.spec ? 0 : 1;
  }
  return out;
}

CostResult cost_plan(const Plan& plan, const std::string& src, const Graph& forward, const Cluster& cl,
                     const Profile* profile, const std::string& profile_text) {
  check_plan_bindings(plan, src, forward, cl, profile_text);
  const TrainingGraph tg = plan_training_graph(plan, src, forward);
  const StrategyGraph sg = plan_strategy_graph(plan, src, tg, cl, profile);
  CostResult out;
  out.choice = plan_choice(plan, src, tg, sg);
  out.estimate = estimate_choice(sg, out.choice, plan.global_batch);
  return out;
}

}  // namespace alpa
