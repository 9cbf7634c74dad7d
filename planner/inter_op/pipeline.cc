#include "planner/inter_op/pipeline.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <set>

#include "planner/common/log.h"
#include "planner/common/error.h"
#include "planner/common/format.h"
#include "planner/graph/rebatch.h"
#include "planner/intra_op/search.h"
#include "planner/plan/trace.h"

namespace alpa {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

constexpr double kInf = std::numeric_limits<double>::infinity();

// The link a boundary activation crosses between two stages: between hosts when the cluster
// has several (placement is decided after the DP, so the DP assumes the slower link).
double transfer_time(const Cluster& c, int64_t bytes) {
  if (bytes <= 0) return 0;
  const LinkSpec& link = c.hosts > 1 ? c.inter_host : c.intra_host;
  const double bw = link.bandwidth_bytes_per_s * c.achievable.collective;
  if (bw <= 0) return 0;
  return 2 * (link.latency_s + static_cast<double>(bytes) / bw);  // activation, then its gradient
}

// The plan's traffic between stages, from which stage runs each forward node: every forward
// tensor a later stage reads (sent per microbatch, its gradient back), and every parameter the
// forward nodes of several stages read (its gradient sums exchanged once per step).
void boundary_traffic(const TrainingGraph& tg, const std::vector<int>& stage_of_node, const Cluster& cl, PlanPipeline& pl) {
  const Graph& g = tg.graph;
  pl.transfers.clear();
  pl.shared.clear();
  for (size_t i = 0; i < tg.num_forward_nodes; ++i) {
    const Node& n = g.node(static_cast<NodeId>(i));
    for (TensorId t : n.outputs) {
      std::vector<int> to;
      for (NodeId c : g.tensor(t).consumers) {
        if (c < tg.num_forward_nodes && stage_of_node[c] > stage_of_node[i]) to.push_back(stage_of_node[c]);
      }
      std::sort(to.begin(), to.end());
      to.erase(std::unique(to.begin(), to.end()), to.end());
      for (int s : to) {
        PlanTransfer tr;
        tr.from_stage = stage_of_node[i];
        tr.to_stage = s;
        tr.tensor = g.tensor(t).name;
        tr.bytes = g.tensor(t).bytes();
        tr.time_s = transfer_time(cl, tr.bytes);
        pl.transfers.push_back(std::move(tr));
      }
    }
  }
  for (const ParameterSlot& slot : tg.parameters) {
    std::vector<int64_t> holders;
    for (NodeId c : g.tensor(slot.param).consumers) {
      if (c < static_cast<NodeId>(tg.num_forward_nodes)) holders.push_back(stage_of_node[c]);
    }
    std::sort(holders.begin(), holders.end());
    holders.erase(std::unique(holders.begin(), holders.end()), holders.end());
    if (holders.size() < 2) continue;
    PlanSharedParameter sp;
    sp.parameter = g.tensor(slot.param).name;
    sp.stages = holders;
    sp.bytes = g.tensor(slot.grad).bytes();
    // Each holder sends to the others one after another; transfer_time counts two directions.
    sp.time_s = static_cast<double>(holders.size() - 1) * transfer_time(cl, sp.bytes) / 2;
    pl.shared.push_back(std::move(sp));
  }
}

double shared_exchange_time(const PlanPipeline& pl) {
  double t = 0;
  for (const PlanSharedParameter& sp : pl.shared) t += sp.time_s;
  return t;
}

struct StageChoice {
  int first = 0, end = 0;
  MeshShape mesh;
  LogicalMesh view;
  StageOption option;
  int64_t inflight = 1;
  double micro_s = 0;  // option.micro_s + the send to the next stage
};

struct Evaluated {
  bool found = false;
  int64_t microbatches = 1;
  Method intra = Method::kShard;
  double total = kInf, busy = 0, bubble = 0, tail = 0;  // as PlanPipeline reports them
  std::vector<StageChoice> stages;
  std::shared_ptr<TrainingGraph> training;
  std::shared_ptr<Layers> layers;
  mutable std::shared_ptr<const StrategyGraph> facts;  // of `training`, made on first use
  std::string label, why;
  int64_t solves = 0, ranges = 0, t_max_tried = 0, skipped = 0;
};

struct Context {
  const PipelineRequest& rq;
  int64_t budget;
  std::chrono::steady_clock::time_point start;
  double best_total = kInf;  // the best plan's iteration time so far (pruning)
  bool out_of_time() const { return rq.time_budget_s > 0 && seconds_since(start) > rq.time_budget_s; }
};

void progress_line(const Context& cx, const std::string& what) {
  if (!cx.rq.progress) return;
  std::fprintf(stderr, "\r\033[K[search %6.1fs] %s", seconds_since(cx.start), what.c_str());
  std::fflush(stderr);
}

StageCostRequest base_request(const Context& cx, const Evaluated& ev) {
  StageCostRequest sr;
  sr.training = ev.training.get();
  if (!ev.facts) {
    StrategyGraphOptions so;
    so.method = ev.intra;
    so.microbatches = ev.microbatches;
    so.profile = cx.rq.profile;
    ev.facts = strategy_graph_facts(*ev.training, *cx.rq.cluster, so);
  }
  sr.facts = ev.facts;
  sr.layers = ev.layers.get();
  sr.cluster = cx.rq.cluster;
  sr.method = ev.intra;
  sr.microbatches = ev.microbatches;
  sr.profile = cx.rq.profile;
  sr.budget_bytes = cx.budget;
  sr.remat = cx.rq.remat;
  sr.threads = cx.rq.threads;
  return sr;
}

// Iteration = Σ stage times + (B − 1) · slowest + tail, reported as the slowest stage's busy
// time (B · slowest), the bubble (the other stages' times) and the tail. One function for the
// search and for `cost`, so a plan re-costs to the same bits.
struct Totals { double busy = 0, bubble = 0, tail = 0, total = 0; };
Totals pipeline_totals(const std::vector<double>& micro, const std::vector<double>& step, int64_t B) {
  Totals t;
  size_t slowest = 0;
  for (size_t k = 0; k < micro.size(); ++k) {
    if (micro[k] > micro[slowest]) slowest = k;
    t.tail = std::max(t.tail, step[k]);
  }
  for (size_t k = 0; k < micro.size(); ++k) if (k != slowest) t.bubble += micro[k];
  t.busy = micro[slowest] * static_cast<double>(B);
  t.total = t.busy + t.bubble + t.tail;
  return t;
}

void finish_totals(Evaluated& ev) {
  std::vector<double> micro, step;
  for (const StageChoice& s : ev.stages) {
    micro.push_back(s.micro_s);
    step.push_back(s.option.step_s);
  }
  const Totals t = pipeline_totals(micro, step, ev.microbatches);
  ev.busy = t.busy;
  ev.bubble = t.bubble;
  ev.tail = t.tail;
  ev.total = t.total;
  ev.found = true;
}

std::string describe(const Evaluated& ev) {
  std::string s = "B=" + std::to_string(ev.microbatches) + ": " + std::to_string(ev.stages.size()) + " stage" +
                  (ev.stages.size() == 1 ? "" : "s");
  for (const StageChoice& st : ev.stages) {
    s += " [" + std::to_string(st.first) + "," + std::to_string(st.end) + ")@" + std::to_string(st.view.d0) + "x" +
         std::to_string(st.view.d1) + (st.option.remat ? "r" : "");
  }
  return s;
}

// Lower bounds on every option of a layer range on a submesh of d devices, from the unsharded
// training graph: each strategy computes at least 1/d of every node's work and keeps at least 1/d
// of every tensor it holds (communication and replication only add). Memory: the parameters'
// storage, gradients and optimizer state, twice the largest node's working set, and the saved
// activations of the range's heaviest layer (recomputation keeps at least that much; without it,
// at least every layer's).
struct RangeBounds {
  std::vector<double> compute_prefix;  // per layer boundary: Σ unsharded forward + backward time
  std::vector<int64_t> saved, temp;    // per layer: saved-for-backward bytes; largest node working set
  struct Param {
    int64_t bytes = 0;                 // parameter + gradient + optimizer state
    std::vector<int> layers;           // layers whose nodes read it (ascending)
  };
  std::vector<Param> params;
  double compute(int i, int j) const { return compute_prefix[j] - compute_prefix[i]; }
  int64_t memory(int i, int j) const {
    int64_t total = 0, heaviest = 0, largest = 0;
    for (const Param& p : params) {
      auto it = std::lower_bound(p.layers.begin(), p.layers.end(), i);
      if (it != p.layers.end() && *it < j) total += p.bytes;
    }
    for (int l = i; l < j; ++l) {
      heaviest = std::max(heaviest, saved[l]);
      largest = std::max(largest, temp[l]);
    }
    return total + 2 * largest + heaviest;
  }
};

RangeBounds range_bounds(const TrainingGraph& tg, const Layers& layers, const StrategyGraph& facts) {
  const Graph& g = tg.graph;
  const int L = static_cast<int>(layers.size());
  RangeBounds b;
  b.compute_prefix.assign(static_cast<size_t>(L) + 1, 0);
  b.saved.assign(L, 0);
  b.temp.assign(L, 0);
  std::vector<int> slot_of(g.num_tensors(), -1);
  for (size_t k = 0; k < tg.parameters.size(); ++k) {
    const ParameterSlot& ps = tg.parameters[k];
    slot_of[ps.param] = static_cast<int>(k);
    RangeBounds::Param p;
    p.bytes = g.tensor(ps.param).bytes() + g.tensor(ps.grad).bytes();
    for (TensorId st : ps.state) p.bytes += g.tensor(st).bytes();
    b.params.push_back(std::move(p));
  }
  for (int l = 0; l < L; ++l) {
    double c = 0;
    for (int64_t n = layers.first[l]; n < layers.end[l]; ++n) {
      const Node& node = g.node(static_cast<NodeId>(n));
      c += facts.full_time_s[n];
      int64_t working = facts.backward_bytes[n];
      for (TensorId t : node.inputs) {
        working += g.tensor(t).bytes();
        if (slot_of[t] >= 0) {
          auto& ls = b.params[slot_of[t]].layers;
          if (ls.empty() || ls.back() != l) ls.push_back(l);
        }
      }
      for (TensorId t : node.outputs) {
        working += g.tensor(t).bytes();
        if (facts.saved[t]) b.saved[l] += g.tensor(t).bytes();
      }
      b.temp[l] = std::max(b.temp[l], working);
    }
    b.compute_prefix[l + 1] = b.compute_prefix[l] + c;
  }
  return b;
}

struct SkipCounts {
  int64_t memory = 0, compute = 0;
};

// The full hierarchical DP for one microbatch count (also pp-dp: data parallel views only).
Evaluated evaluate_auto(const Context& cx, int64_t B, Method intra) {
  const PipelineRequest& rq = cx.rq;
  Evaluated ev;
  ev.microbatches = B;
  ev.intra = intra;
  ev.training = std::make_shared<TrainingGraph>(make_training(*rq.forward, rq.global_batch, B, rq.optimizer, rq.precision));
  LayerOptions lo;
  lo.layers = rq.layers;
  ev.layers = std::make_shared<Layers>(build_layers(ev.training->graph, ev.training->num_forward_nodes, lo));
  const int L = static_cast<int>(ev.layers->size());
  const Cluster& cl = *rq.cluster;
  StageCostRequest sr = base_request(cx, ev);
  sr.meshes = submesh_shapes(cl);
  if (intra == Method::kData) {
    sr.views_of = [](const MeshShape& m) { return std::vector<LogicalMesh>{{m.size(), 1}}; };
  }
  const int64_t N = cl.num_devices();
  const int S = static_cast<int>(std::min<int64_t>(L, N));
  sr.max_inflight = rq.schedule == Schedule::kGPipe ? B : std::min<int64_t>(S, B);
  sr.progress = [&](size_t done, size_t total) {
    progress_line(cx, "B=" + std::to_string(B) + ": stage costs, view " + std::to_string(done) + "/" + std::to_string(total));
  };
  // An upper bound first: the best plan of earlier microbatch counts, or before there is one,
  // the whole model as one stage on the whole cluster. Stages that cannot beat it get no
  // memory-bound solves, and (range, mesh) pairs that cannot are not costed.
  double bound = cx.best_total;
  auto skip_counts = std::make_shared<SkipCounts>();
  if (!std::isfinite(bound)) {  // once some plan is known, phase 1 costs this option anyway
    StageCostRequest one = sr;
    one.meshes = {MeshShape{cl.hosts, cl.devices_per_host}};
    one.ranges = {{0, L}};
    one.progress = nullptr;
    const StageCostTable t1 = compute_stage_costs(one);
    const int k = t1.best(0, L, 0, 1, cx.budget);
    if (k >= 0) {
      const StageOption& o = t1.at(0, L, 0)[k];
      bound = std::min(bound, o.micro_s * static_cast<double>(B) + o.step_s);
    }
  }
  {
    sr.prune_micro_s = bound / static_cast<double>(B);
    // Lower bounds on any option of a (layer range, submesh) pair, from the unsharded graph
    // (see RangeBounds): a pair that cannot fit in memory is never costed, nor, once a plan is
    // known, one that cannot beat it. An iteration takes at least B times its slowest stage,
    // and the layers outside the range get at most the devices left, so their slowest stage is
    // bounded the same way.
    if (rq.prune) {
      auto bounds = std::make_shared<const RangeBounds>(range_bounds(*ev.training, *ev.layers, *ev.facts));
      const double devices = static_cast<double>(N);
      const double Bd = static_cast<double>(B);
      const double budget = static_cast<double>(cx.budget);
      auto counts = skip_counts;
      sr.skip = [bounds, devices, Bd, bound, budget, L, counts](int i, int j, const MeshShape& m) {
        const double size = static_cast<double>(m.size());
        if (static_cast<double>(bounds->memory(i, j)) / size > budget) {
          ++counts->memory;
          return true;
        }
        if (!std::isfinite(bound)) return false;
        const double c = bounds->compute(i, j);
        double lb = c / size;
        if (j - i < L) {
          if (size >= devices) {  // the other layers need devices too
            ++counts->compute;
            return true;
          }
          lb = std::max(lb, (bounds->compute(0, L) - c) / (devices - size));
        }
        if (Bd * lb > bound * (1 + 1e-9)) {
          ++counts->compute;
          return true;
        }
        return false;
      };
    }
  }
  const StageCostTable table = compute_stage_costs(sr);
  ev.solves = table.solves;
  ev.ranges = table.distinct_ranges;
  ev.skipped = table.skipped;
  StageDpInput in;
  in.layers = L;
  in.devices = N;
  for (const MeshShape& m : sr.meshes) in.mesh_sizes.push_back(m.size());
  in.microbatches = B;
  in.schedule = rq.schedule;
  in.max_inflight = static_cast<int>(sr.max_inflight);
  const size_t M = sr.meshes.size();
  in.cost.assign(static_cast<size_t>(L) * (L + 1) * M * (in.max_inflight + 1), kInf);
  for (int i = 0; i < L; ++i) {
    for (int j = i + 1; j <= L; ++j) {
      const double send = j < L ? transfer_time(cl, ev.layers->boundary_bytes[j]) : 0;
      for (size_t m = 0; m < M; ++m) {
        for (int f = 1; f <= in.max_inflight; ++f) {
          const int k = table.best(i, j, static_cast<int>(m), f, cx.budget);
          if (k >= 0) {
            in.cost[((static_cast<size_t>(i) * (L + 1) + j) * M + m) * (in.max_inflight + 1) + f] =
                table.at(i, j, static_cast<int>(m))[k].micro_s + send;
          }
        }
      }
    }
  }
  progress_line(cx, "B=" + std::to_string(B) + ": stage DP");
  const auto t_dp = std::chrono::steady_clock::now();
  const StageDpResult dp = stage_dp(in, rq.threads);
  debug_line(DebugChannel::kStages, "B=%lld: stage DP %.3f s, %lld t_max values", (long long)B, seconds_since(t_dp),
             (long long)dp.t_max_tried);
  ev.t_max_tried = dp.t_max_tried;
  if (!dp.found) {
    if (skip_counts->compute > 0) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "no stage assignment that fits in memory can beat %.6g s (a lower bound ruled the rest out)", bound);
      ev.why = buf;
    } else {
      ev.why = "no stage assignment fits in memory";
    }
    return ev;
  }
  for (const DpStage& d : dp.stages) {
    StageChoice sc;
    sc.first = d.first;
    sc.end = d.end;
    sc.mesh = sr.meshes[d.mesh];
    sc.inflight = d.inflight;
    const int k = table.best(d.first, d.end, d.mesh, d.inflight, cx.budget);
    sc.option = table.at(d.first, d.end, d.mesh)[k];
    sc.view = table.views[d.mesh][sc.option.view];
    sc.micro_s = d.latency_s;
    ev.stages.push_back(sc);
  }
  finish_totals(ev);
  ev.label = describe(ev);
  return ev;
}

// Megatron-LM's configuration space: T-way tensor parallelism inside a host, P uniform stages,
// D-way data parallelism, 1F1B, remat none or full.
Evaluated evaluate_megatron(const Context& cx, int64_t T, int64_t P, int64_t D, int64_t B, RematMode remat,
                            std::shared_ptr<TrainingGraph> tg, std::shared_ptr<Layers> layers) {
  const PipelineRequest& rq = cx.rq;
  const Cluster& cl = *rq.cluster;
  Evaluated ev;
  ev.microbatches = B;
  ev.intra = Method::kMegatron;
  ev.training = std::move(tg);
  ev.layers = std::move(layers);
  ev.label = "tp=" + std::to_string(T) + " pp=" + std::to_string(P) + " dp=" + std::to_string(D) + " B=" +
             std::to_string(B) + (remat == RematMode::kFull ? " remat" : "");
  const int L = static_cast<int>(ev.layers->size());
  const int64_t d = T * D;
  MeshShape mesh;
  if (d <= cl.devices_per_host) {
    mesh = {1, d};
  } else if (d % cl.devices_per_host == 0) {
    mesh = {d / cl.devices_per_host, cl.devices_per_host};
  } else {
    ev.why = "a stage of " + std::to_string(d) + " devices is not a submesh of the cluster";
    return ev;
  }
  if (L % P != 0) {
    ev.why = std::to_string(P) + " stages do not divide the " + std::to_string(L) + " layers";
    return ev;
  }
  StageCostRequest sr = base_request(cx, ev);
  sr.remat = remat;
  sr.meshes = {mesh};
  const LogicalMesh view{D, T};
  sr.views_of = [view](const MeshShape&) { return std::vector<LogicalMesh>{view}; };
  sr.max_inflight = rq.schedule == Schedule::kGPipe ? B : std::min<int64_t>(P, B);
  const int per = static_cast<int>(L / P);
  for (int s = 0; s < P; ++s) sr.ranges.push_back({s * per, (s + 1) * per});
  const StageCostTable table = compute_stage_costs(sr);
  ev.solves = table.solves;
  ev.ranges = table.distinct_ranges;
  for (int s = 0; s < P; ++s) {
    StageChoice sc;
    sc.first = s * per;
    sc.end = (s + 1) * per;
    sc.mesh = mesh;
    sc.view = view;
    sc.inflight = inflight_of(rq.schedule, s, static_cast<int>(P), B);
    const int k = table.best(sc.first, sc.end, 0, sc.inflight, cx.budget);
    if (k < 0) {
      ev.why = "stage " + std::to_string(s) + " does not fit in memory";
      return ev;
    }
    sc.option = table.at(sc.first, sc.end, 0)[k];
    sc.micro_s = sc.option.micro_s + (sc.end < L ? transfer_time(cl, ev.layers->boundary_bytes[sc.end]) : 0);
    ev.stages.push_back(sc);
  }
  finish_totals(ev);
  return ev;
}

int64_t block_layers(const TrainingGraph& tg) {
  return repeated_block_count(tg.graph, tg.num_forward_nodes);
}

std::vector<int64_t> microbatch_candidates(const PipelineRequest& rq) {
  if (rq.microbatches > 0) return {rq.microbatches};
  std::vector<int64_t> out;
  for (int64_t b = 1; b <= rq.global_batch; b *= 2) {
    if (rq.global_batch % b == 0) out.push_back(b);
  }
  return out;
}

// A stage's memory per device (with `inflight` microbatches alive) and its compute per step,
// from the chosen specs of its nodes and parameters; the plan's estimate takes the busiest
// stage's compute and communication and the most loaded stage's memory.
struct StageFigures {
  PlanMemory memory;
  double compute_s = 0;
};

StageFigures stage_figures(const TrainingGraph& tg, const StrategyGraph& sg, const std::vector<int>& choice,
                           const ChosenSpecs& cs, const std::vector<bool>& in_stage, int64_t first, int64_t end, const StageOption& o,
                           int64_t inflight, int64_t microbatches) {
  StageFigures f;
  for (int64_t i = first; i < end; ++i) f.compute_s += cs.node[i]->compute_s;
  for (const ParameterSlot& ps : tg.parameters) {
    const int gi = sg.group_of_param[ps.param];
    if (gi < 0 || !in_stage[gi]) continue;
    const NodeStrategy& ns = *cs.param[ps.param];
    f.memory.parameter_bytes += ns.param_bytes;
    f.memory.gradient_bytes += ns.grad_bytes;
    f.memory.optimizer_state_bytes += ns.state_bytes;
    f.compute_s += ns.compute_s;
  }
  // The peak reported is a simulation of the stage's allocation sequence (its forward nodes,
  // their backward nodes and its parameters' updates) for one microbatch, plus what each other
  // microbatch in flight keeps: its saved activations, or with recomputation the stage's
  // inputs. The search keeps its bound, o.memory(inflight), within the budget (as the
  // single-stage search does with its memory model).
  const Graph& g = tg.graph;
  std::vector<bool> nodes(g.num_nodes(), false);
  std::set<std::string> owners;
  for (int64_t i = first; i < end; ++i) {
    nodes[static_cast<size_t>(i)] = true;
    owners.insert(g.node(static_cast<NodeId>(i)).name);
  }
  for (const ParameterSlot& ps : tg.parameters) {
    const int gi = sg.group_of_param[ps.param];
    if (gi >= 0 && in_stage[gi]) owners.insert(g.tensor(ps.param).name);
  }
  for (size_t k = tg.num_forward_nodes; k < g.num_nodes(); ++k) {
    nodes[k] = owners.count(g.node(static_cast<NodeId>(k)).derived_from) > 0;
  }
  // Another stage's part of a shared parameter's gradient is not one of this stage's tensors:
  // the holders exchange their sums once per step (alpa-run: outside the step's allocations).
  std::vector<bool> absent(g.num_tensors(), false);
  std::set<std::string> parameter_names;
  for (const ParameterSlot& ps : tg.parameters) parameter_names.insert(g.tensor(ps.param).name);
  for (size_t k = tg.num_forward_nodes; k < g.num_nodes(); ++k) {
    const Node& n = g.node(static_cast<NodeId>(k));
    if (!nodes[k] || !is_grad_sum(n) || parameter_names.count(n.derived_from) == 0) continue;
    for (TensorId t : n.inputs) {
      const NodeId p = g.tensor(t).producer;
      if (p != kNoId && !nodes[static_cast<size_t>(p)]) absent[static_cast<size_t>(t)] = true;
    }
  }
  const PlanMemory sim = simulate_memory(sg, choice, &nodes, &absent);
  const int64_t kept = o.remat ? o.input_bytes : sim.activation_bytes;
  f.memory.activation_bytes = o.remat ? o.activation_bytes(inflight) : inflight * sim.activation_bytes;
  // With several microbatches the step's gradients accumulate in a buffer of their own while
  // each microbatch's backward makes its part.
  // It holds a second copy from the second backward on: when the stage holds every microbatch
  // of the step at once (GPipe, or 1F1B with no more microbatches than stages from it on), the
  // first backward has freed one microbatch's activations by then and no forward refills them.
  const int64_t accumulator = microbatches > 1 ? sim.gradient_bytes : 0;
  int64_t others = std::max<int64_t>(0, inflight - 1) * kept + accumulator;
  if (accumulator > 0 && inflight > 1 && inflight >= microbatches) others -= std::min(kept, accumulator);
  f.memory.peak_bytes = sim.peak_bytes + others;
  return f;
}

void account_stage(PlanEstimate& e, double& busiest, const StageFigures& f, double micro_s, int64_t B, double step_s) {
  const double step_total = micro_s * static_cast<double>(B) + step_s;
  if (step_total > busiest) {
    busiest = step_total;
    e.compute_time_s = f.compute_s;
    e.communication_time_s = std::max(0.0, step_total - f.compute_s);
  }
  if (f.memory.peak_bytes > e.memory.peak_bytes) e.memory = f.memory;
}

Plan build_plan(const Context& cx, const Evaluated& ev, const std::string& method) {
  const PipelineRequest& rq = cx.rq;
  const Cluster& cl = *rq.cluster;
  const TrainingGraph& tg = *ev.training;
  const Graph& g = tg.graph;
  const Layers& layers = *ev.layers;
  Plan p;
  fill_plan_header(p, rq, cl, ev.microbatches, method, cx.budget);
  p.mesh_hosts = cl.hosts;
  p.mesh_devices_per_host = cl.devices_per_host;
  p.logical_d0 = p.logical_d1 = 0;
  PlanPipeline pl;
  pl.schedule = schedule_name(rq.schedule);
  for (size_t l = 0; l < layers.size(); ++l) {
    pl.layers.push_back({g.node(static_cast<NodeId>(layers.first[l])).name, g.node(static_cast<NodeId>(layers.end[l] - 1)).name});
  }
  std::vector<MeshShape> meshes;
  for (const StageChoice& s : ev.stages) meshes.push_back(s.mesh);
  const std::vector<std::vector<int64_t>> devices = place_stages(meshes, cl);
  StageCostRequest sr = base_request(cx, ev);
  std::vector<int> stage_of_node(tg.num_forward_nodes, 0);
  double busiest = -1;
  for (size_t k = 0; k < ev.stages.size(); ++k) {
    const StageChoice& sc = ev.stages[k];
    for (int64_t i = layers.first[sc.first]; i < layers.end[sc.end - 1]; ++i) stage_of_node[i] = static_cast<int>(k);
    StageSharding sh = solve_stage(sr, sc.first, sc.end, sc.mesh, sc.view, sc.option);
    ALPA_CHECK(sh.solve.feasible, "re-solving stage " + std::to_string(k) + " found no sharding");
    const ChosenSpecs cs = chosen_specs(*sh.graph, sh.choice);
    PlanStage st;
    st.first_layer = sc.first;
    st.end_layer = sc.end;
    st.mesh_hosts = sc.mesh.hosts;
    st.mesh_devices_per_host = sc.mesh.devices_per_host;
    st.logical_d0 = sc.view.d0;
    st.logical_d1 = sc.view.d1;
    st.device_ids = devices[k];
    st.method = method_name(ev.intra);
    st.remat = sc.option.remat;
    st.inflight = sc.inflight;
    st.microbatch_time_s = sc.micro_s;
    st.forward_time_s = std::min(evaluate_stage(sr, sc.first, sc.end, sh).forward_s, sc.micro_s);
    st.step_time_s = sc.option.step_s;
    const int64_t first = layers.first[sc.first], end = layers.end[sc.end - 1];
    append_plan_specs(st.strategies, st.tensors, tg, cs, first, end, [&](TensorId param) {
      const int gi = sh.graph->group_of_param[param];
      return gi >= 0 && sh.in_stage[gi];
    });
    const StageFigures f = stage_figures(tg, *sh.graph, sh.choice, cs, sh.in_stage, first, end, sc.option, sc.inflight, ev.microbatches);
    st.memory = f.memory;
    st.communication_bytes = bytes_per_kind(communication(*sh.graph, sh.choice, first, end, sh.in_stage));
    const double before = busiest;
    account_stage(p.estimate, busiest, f, sc.micro_s, ev.microbatches, sc.option.step_s);
    // The estimate's figures are the busiest stage's: its devices' bytes too (transfers between
    // stages are listed separately).
    if (busiest != before) p.estimate.communication_bytes = st.communication_bytes;
    pl.stages.push_back(std::move(st));
  }
  boundary_traffic(tg, stage_of_node, cl, pl);
  const double exchange = shared_exchange_time(pl);
  pl.busy_time_s = ev.busy;
  pl.bubble_time_s = ev.bubble;
  pl.step_tail_s = ev.tail + exchange;
  p.pipeline = std::move(pl);
  p.estimate.iteration_time_s = ev.total + exchange;
  p.estimate.throughput_samples_per_s =
      p.estimate.iteration_time_s > 0 ? static_cast<double>(rq.global_batch) / p.estimate.iteration_time_s : 0;
  p.solver.ilps_solved = ev.solves;
  return p;
}

std::string diagnose(const Context& cx, const std::vector<Evaluated>& tried) {
  std::string out = "no plan fits in " + format_bytes(static_cast<double>(cx.budget)) + " per device";
  // The leanest way to run the whole model: every layer on every device, one microbatch alive,
  // with the most microbatches tried (the smallest activations).
  std::vector<const Evaluated*> order;
  for (const Evaluated& ev : tried) {
    if (ev.training) order.push_back(&ev);
  }
  std::stable_sort(order.begin(), order.end(),
                   [](const Evaluated* a, const Evaluated* b) { return a->microbatches > b->microbatches; });
  for (const Evaluated* it : order) {
    const Evaluated& ev = *it;
    StageCostRequest sr = base_request(cx, ev);
    const Cluster& cl = *cx.rq.cluster;
    const MeshShape whole{cl.hosts, cl.devices_per_host};
    sr.meshes = {whole};
    sr.max_inflight = 1;
    sr.budget_bytes = std::numeric_limits<int64_t>::max() / 4;
    sr.remat = RematMode::kAuto;
    const int L = static_cast<int>(ev.layers->size());
    sr.ranges = {{0, L}};
    const StageCostTable t = compute_stage_costs(sr);
    int64_t least = -1;
    const StageOption* lean = nullptr;
    for (const StageOption& o : t.at(0, L, 0)) {
      if (least < 0 || o.memory(1) < least) { least = o.memory(1); lean = &o; }
    }
    if (lean) {
      out += ": with " + std::to_string(ev.microbatches) + " microbatches, the whole model on all " +
             std::to_string(cl.num_devices()) + " devices as one stage needs at least " + format_bytes(static_cast<double>(least)) +
             " per device (" + format_bytes(static_cast<double>(least - cx.budget)) + " over): parameters, gradients and optimizer state " +
             format_bytes(static_cast<double>(lean->static_bytes)) + ", activations " + format_bytes(static_cast<double>(lean->act_bytes)) +
             ", working set " + format_bytes(static_cast<double>(lean->temp_bytes));
    }
    break;
  }
  out += ".\n  what would help: more devices (a larger --cluster), more --microbatches, --remat auto or full, "
         "a smaller --batch";
  if (cx.rq.optimizer.kind != OptimizerKind::kSgd) out += ", --optimizer sgd";
  return out;
}

}  // namespace

std::vector<std::vector<int64_t>> place_stages(const std::vector<MeshShape>& meshes, const Cluster& cl) {
  const int64_t H = cl.hosts, M = cl.devices_per_host;
  std::vector<std::vector<bool>> used(H, std::vector<bool>(M, false));
  std::vector<std::vector<int64_t>> out(meshes.size());
  std::vector<size_t> order(meshes.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return meshes[a].size() > meshes[b].size(); });
  for (size_t k : order) {
    const MeshShape& m = meshes[k];
    bool placed = false;
    if (m.devices_per_host == M && m.hosts >= 1 && (m.hosts > 1 || M == m.size())) {
      // Whole hosts: the first run of m.hosts free hosts.
      for (int64_t h = 0; h + m.hosts <= H && !placed; ++h) {
        bool free = true;
        for (int64_t q = h; q < h + m.hosts && free; ++q) {
          for (int64_t d = 0; d < M && free; ++d) free = !used[q][d];
        }
        if (!free) continue;
        for (int64_t q = h; q < h + m.hosts; ++q) {
          for (int64_t d = 0; d < M; ++d) { used[q][d] = true; out[k].push_back(q * M + d); }
        }
        placed = true;
      }
    } else {
      const int64_t size = m.size();
      for (int64_t h = 0; h < H && !placed; ++h) {
        for (int64_t off = 0; off + size <= M && !placed; off += size) {
          bool free = true;
          for (int64_t d = off; d < off + size && free; ++d) free = !used[h][d];
          if (!free) continue;
          for (int64_t d = off; d < off + size; ++d) { used[h][d] = true; out[k].push_back(h * M + d); }
          placed = true;
        }
      }
    }
    ALPA_CHECK(placed, "stage meshes do not tile the cluster");
  }
  return out;
}

PipelineResult search_pipeline(const PipelineRequest& rq) {
  ALPA_CHECK(rq.forward && rq.cluster, "pipeline search without a model or cluster");
  const Cluster& cl = *rq.cluster;
  Context cx{rq, rq.memory_budget_bytes > 0 ? rq.memory_budget_bytes : cl.device.usable_memory_bytes(),
             std::chrono::steady_clock::now()};
  PipelineResult result;
  std::vector<Evaluated> tried;
  std::string method;
  switch (rq.method) {
    case PipelineMethod::kAuto:
    case PipelineMethod::kPpDp: {
      method = rq.method == PipelineMethod::kAuto ? "auto" : "pp-dp";
      const Method intra = rq.method == PipelineMethod::kAuto ? Method::kShard : Method::kData;
      // Most microbatches first: small microbatches fit memory most easily and pipeline with the
      // smallest bubble, so a good plan is usually found early and its time prunes the rest.
      std::vector<int64_t> counts = microbatch_candidates(rq);
      std::reverse(counts.begin(), counts.end());
      for (int64_t B : counts) {
        if (cx.out_of_time() && !tried.empty()) { result.cut_short = true; break; }
        try {
          (void)rebatch(*rq.forward, rq.global_batch, rq.global_batch / B);
        } catch (const UserError&) {
          // A microbatch the model cannot be cut to (an MoE group larger than it): not a
          // candidate, unless the user asked for exactly this count.
          if (rq.microbatches > 0) throw;
          continue;
        }
        tried.push_back(evaluate_auto(cx, B, intra));
        if (tried.back().found) cx.best_total = std::min(cx.best_total, tried.back().total);
      }
      break;
    }
    case PipelineMethod::kMegatron:
    case PipelineMethod::kMegatronGrid: {
      method = "megatron";
      const int64_t N = cl.num_devices();
      struct Config { int64_t T, P, D, mbs; RematMode remat; };
      std::vector<Config> configs;
      const std::vector<RematMode> remats = rq.remat == RematMode::kAuto
                                                ? std::vector<RematMode>{RematMode::kNone, RematMode::kFull}
                                                : std::vector<RematMode>{rq.remat};
      // Layers: the model's repeated blocks (or --layers), as Megatron-LM counts them.
      auto layers_for = [&](const TrainingGraph& tg) {
        LayerOptions lo;
        lo.layers = rq.layers > 0 ? rq.layers : static_cast<int>(std::max<int64_t>(1, block_layers(tg)));
        return std::make_shared<Layers>(build_layers(tg.graph, tg.num_forward_nodes, lo));
      };
      if (rq.method == PipelineMethod::kMegatron) {
        if (rq.tp < 1 || rq.pp < 1 || rq.dp < 1 || rq.tp * rq.pp * rq.dp != N) {
          throw UserError("--tp/--pp/--dp", std::to_string(rq.tp) + "x" + std::to_string(rq.pp) + "x" + std::to_string(rq.dp),
                          "must be positive and multiply to the cluster's " + std::to_string(N) + " devices");
        }
        for (int64_t mbs : {1, 2, 4, 8, 16, 32}) {
          for (RematMode r : remats) configs.push_back({rq.tp, rq.pp, rq.dp, mbs, r});
        }
      } else {
        for (int64_t T = 1; T <= cl.devices_per_host; T *= 2) {
          for (int64_t P = 1; P <= N; ++P) {
            if (N % (T * P) != 0) continue;
            for (int64_t mbs : {1, 2, 4, 8}) {
              for (RematMode r : remats) configs.push_back({T, P, N / (T * P), mbs, r});
            }
          }
        }
      }
      std::map<int64_t, std::pair<std::shared_ptr<TrainingGraph>, std::shared_ptr<Layers>>> graphs;
      int64_t uneven_layers = -1;  // a layer count some --pp did not divide
      size_t done = 0;
      for (const Config& c : configs) {
        ++done;
        if (cx.out_of_time() && !tried.empty()) { result.cut_short = true; break; }
        int64_t B;
        if (rq.microbatches > 0) {
          if (c.mbs != 1 || rq.global_batch % (rq.microbatches * c.D) != 0) continue;
          B = rq.microbatches;
        } else {
          if (rq.global_batch % (c.mbs * c.D) != 0) continue;
          B = rq.global_batch / (c.mbs * c.D);
        }
        auto it = graphs.find(B);
        if (it == graphs.end()) {
          std::shared_ptr<TrainingGraph> tg;
          try {
            tg = std::make_shared<TrainingGraph>(make_training(*rq.forward, rq.global_batch, B, rq.optimizer, rq.precision));
          } catch (const UserError&) {  // a microbatch the model cannot be cut to
            if (rq.microbatches > 0) throw;
            continue;
          }
          auto layers = layers_for(*tg);
          it = graphs.emplace(B, std::make_pair(tg, layers)).first;
        }
        if (it->second.second->size() % static_cast<size_t>(c.P) != 0) {
          uneven_layers = static_cast<int64_t>(it->second.second->size());
          continue;
        }
        progress_line(cx, "megatron " + std::to_string(done) + "/" + std::to_string(configs.size()) + ": tp=" +
                              std::to_string(c.T) + " pp=" + std::to_string(c.P) + " dp=" + std::to_string(c.D) + " B=" + std::to_string(B));
        tried.push_back(evaluate_megatron(cx, c.T, c.P, c.D, B, c.remat, it->second.first, it->second.second));
      }
      if (tried.empty() && uneven_layers >= 0 && rq.method == PipelineMethod::kMegatron) {
        throw UserError("--pp", std::to_string(rq.pp),
                        "Megatron-LM gives each stage the same number of layers, and the model has " + std::to_string(uneven_layers) +
                            (rq.layers > 0 ? " (--layers)" : " (its repeated blocks)") + "; pass --layers with a multiple of " +
                            std::to_string(rq.pp));
      }
      break;
    }
  }
  if (rq.progress) std::fprintf(stderr, "\r\033[K");
  int best = -1;
  for (size_t k = 0; k < tried.size(); ++k) {
    result.stage_solves += tried[k].solves;
    result.distinct_ranges += tried[k].ranges;
    result.t_max_tried += tried[k].t_max_tried;
    result.skipped += tried[k].skipped;
    if (tried[k].found && (best < 0 || tried[k].total < tried[best].total)) best = static_cast<int>(k);
  }
  for (const Evaluated& ev : tried) {
    PipelineCandidate c;
    c.label = ev.label.empty() ? "B=" + std::to_string(ev.microbatches) : ev.label;
    c.feasible = ev.found;
    c.iteration_time_s = ev.found ? ev.total : 0;
    if (!ev.found) {
      c.why = ev.why;
    } else if (&ev != &tried[best]) {
      const Evaluated& b = tried[best];
      char buf[160];
      std::snprintf(buf, sizeof buf, "%.1f%% slower: busy %.3gs, bubble %.3gs, step tail %.3gs (best: %.3gs, %.3gs, %.3gs)",
                    100 * (ev.total / b.total - 1), ev.busy, ev.bubble, ev.tail, b.busy, b.bubble, b.tail);
      c.why = buf;
    }
    result.candidates.push_back(c);
  }
  std::stable_sort(result.candidates.begin(), result.candidates.end(), [](const PipelineCandidate& a, const PipelineCandidate& b) {
    if (a.feasible != b.feasible) return a.feasible;
    return a.iteration_time_s < b.iteration_time_s;
  });
  if (best < 0) {
    result.diagnosis = diagnose(cx, tried);
    result.search_time_s = seconds_since(cx.start);
    return result;
  }
  result.plan = build_plan(cx, tried[best], method);
  result.found = true;
  result.search_time_s = seconds_since(cx.start);
  return result;
}

void apply_stage_strategies(const PlanStage& st, const std::string& src, const std::string& where, const TrainingGraph& tg,
                            const StrategyGraph& sg, int64_t first, int64_t end, const std::vector<bool>& in_stage,
                            std::vector<int>& choice) {
  const Graph& g = tg.graph;
  const LogicalMesh view{st.logical_d0, st.logical_d1};
  std::map<std::string, std::string> strat, spec;
  for (const auto& s : st.strategies) strat[s.node] = s.strategy;
  for (const auto& t : st.tensors) spec[t.tensor] = t.spec;
  // Each group's strategy from its members in this stage (parameters: their specs). A group
  // whose leader lies in an earlier stage may have several strategies that give its members here
  // the plan's: the one whose edges to the stage's other groups cost least (as the search's
  // solve of the stage picked it).
  std::vector<std::vector<int>> candidates(sg.groups.size());
  for (size_t gi = 0; gi < sg.groups.size(); ++gi) {
    if (!in_stage[gi]) continue;
    const Group& grp = sg.groups[gi];
    int chosen = -1;
    if (grp.is_parameter) {
      const std::string& pname = g.tensor(grp.parameter).name;
      auto ps = spec.find(pname);
      if (ps == spec.end()) throw UserError(src, where + "/tensors", "parameter \"" + pname + "\" has no spec");
      std::string want = ps->second;
      for (const ParameterSlot& slot : tg.parameters) {
        if (slot.param != grp.parameter) continue;
        auto gs = spec.find(g.tensor(slot.grad).name);
        if (gs != spec.end() && gs->second != ps->second) want += "/" + gs->second;
      }
      for (size_t s = 0; s < grp.num_strategies() && chosen < 0; ++s) {
        if (grp.param_strategy[s].name == want) chosen = static_cast<int>(s);
      }
      if (chosen < 0) {
        throw UserError(src, where + "/tensors/\"" + pname + "\"", "\"" + want + "\" is not a choice for this parameter on a " +
                        std::to_string(view.d0) + "x" + std::to_string(view.d1) + " mesh under method " + st.method);
      }
    } else {
      size_t m = 0;
      while (m < grp.members.size() && (grp.members[m] < first || grp.members[m] >= end)) ++m;
      if (m == grp.members.size()) continue;
      const std::string& name = g.node(grp.members[m]).name;
      auto it = strat.find(name);
      if (it == strat.end()) throw UserError(src, where + "/strategies", "node \"" + name + "\" has no strategy");
      for (size_t s = 0; s < grp.num_strategies() && chosen < 0; ++s) {
        if (grp.member_strategy[s][m].name == it->second) chosen = static_cast<int>(s);
      }
      if (chosen < 0) {
        throw UserError(src, where + "/strategies/\"" + name + "\"", "\"" + it->second + "\" is not a strategy of this node on a " +
                        std::to_string(view.d0) + "x" + std::to_string(view.d1) + " mesh under method " + st.method);
      }
      for (size_t s = static_cast<size_t>(chosen); s < grp.num_strategies(); ++s) {
        bool all = true;  // every member in the stage as the plan says
        for (size_t k = m; k < grp.members.size() && all; ++k) {
          if (grp.members[k] < first || grp.members[k] >= end) continue;
          auto sk = strat.find(g.node(grp.members[k]).name);
          all = sk != strat.end() && grp.member_strategy[s][k].name == sk->second;
        }
        if (all) candidates[gi].push_back(static_cast<int>(s));
      }
      if (!candidates[gi].empty()) chosen = candidates[gi][0];
    }
    choice[gi] = chosen;
  }
  for (size_t gi = 0; gi < sg.groups.size(); ++gi) {
    if (candidates[gi].size() < 2) continue;
    double best = std::numeric_limits<double>::infinity();
    for (int s : candidates[gi]) {
      double c = 0;
      for (const GroupEdge& e : sg.edges) {
        if (e.from == static_cast<int>(gi) && in_stage[static_cast<size_t>(e.to)]) c += e.cost[s][choice[e.to]];
        if (e.to == static_cast<int>(gi) && in_stage[static_cast<size_t>(e.from)]) c += e.cost[choice[e.from]][s];
      }
      if (c < best) {
        best = c;
        choice[gi] = s;
      }
    }
  }
}

PipelineCost cost_pipeline_plan(const Plan& plan, const std::string& src, const Graph& forward, const Cluster& cl,
                                const Profile* profile, const std::string& profile_text) {
  ALPA_CHECK(plan.pipeline.has_value(), "cost_pipeline_plan of a single-stage plan");
  const PlanPipeline& pl = *plan.pipeline;
  check_plan_bindings(plan, src, forward, cl, profile_text);
  const TrainingGraph tg = plan_training_graph(plan, src, forward);
  const Graph& g = tg.graph;
  const int64_t nf = static_cast<int64_t>(tg.num_forward_nodes);
  // Layers: contiguous forward-node ranges named by their first and last node.
  std::vector<int64_t> ends;
  int64_t next = 0;
  for (size_t l = 0; l < pl.layers.size(); ++l) {
    const std::string where = "/pipeline/layers/" + std::to_string(l);
    const NodeId a = g.find_node(pl.layers[l].first_node), b = g.find_node(pl.layers[l].last_node);
    if (a == kNoId || static_cast<int64_t>(a) >= nf) throw UserError(src, where + "/first", "no forward node \"" + pl.layers[l].first_node + "\"");
    if (b == kNoId || static_cast<int64_t>(b) >= nf) throw UserError(src, where + "/last", "no forward node \"" + pl.layers[l].last_node + "\"");
    if (static_cast<int64_t>(a) != next) {
      throw UserError(src, where + "/first", "\"" + pl.layers[l].first_node + "\" does not follow the previous layer's last node (" +
                      (next < nf ? "expected \"" + g.node(static_cast<NodeId>(next)).name + "\"" : std::string("no nodes are left")) + ")");
    }
    if (b < a) throw UserError(src, where + "/last", "comes before the layer's first node");
    next = static_cast<int64_t>(b) + 1;
    ends.push_back(next);
  }
  if (next != nf) {
    throw UserError(src, "/pipeline/layers", "the layers end at node " + std::to_string(next) + " of " + std::to_string(nf) +
                    " (\"" + g.node(static_cast<NodeId>(next)).name + "\" and after are in no layer)");
  }
  const Layers layers = layers_from_ends(g, tg.num_forward_nodes, ends);
  const int64_t B = plan.microbatches;
  const Schedule schedule = pl.schedule == "gpipe" ? Schedule::kGPipe : Schedule::k1F1B;
  const int S = static_cast<int>(pl.stages.size());
  const int64_t budget = plan.memory_budget_bytes > 0 ? plan.memory_budget_bytes : cl.device.usable_memory_bytes();
  PipelineCost out;
  out.pipeline = pl;
  std::vector<double> micros, steps;
  double busiest = -1;
  for (int k = 0; k < S; ++k) {
    const PlanStage& st = pl.stages[k];
    const std::string where = "/pipeline/stages/" + std::to_string(k);
    const MeshShape mesh{st.mesh_hosts, st.mesh_devices_per_host};
    bool valid_shape = false;
    for (const MeshShape& m : submesh_shapes(cl)) valid_shape = valid_shape || m == mesh;
    if (!valid_shape) {
      throw UserError(src, where + "/mesh", std::to_string(mesh.hosts) + " x " + std::to_string(mesh.devices_per_host) +
                      " is not a submesh of the cluster ((1, 2^k) inside a host, or whole hosts)");
    }
    std::set<int64_t> hosts;
    for (int64_t d : st.device_ids) hosts.insert(d / cl.devices_per_host);
    if (static_cast<int64_t>(hosts.size()) != mesh.hosts) {
      throw UserError(src, where + "/device_ids", "spread over " + std::to_string(hosts.size()) + " hosts; a " +
                      std::to_string(mesh.hosts) + " x " + std::to_string(mesh.devices_per_host) + " mesh needs " + std::to_string(mesh.hosts));
    }
    Method method;
    try {
      method = parse_method(st.method);
    } catch (const UserError&) {
      throw UserError(src, where + "/method", "unknown method \"" + st.method + "\"");
    }
    const int64_t inflight = inflight_of(schedule, k, S, B);
    if (st.inflight != inflight) {
      throw UserError(src, where + "/inflight", std::to_string(st.inflight) + " differs from the " + std::to_string(inflight) +
                      " microbatches stage " + std::to_string(k) + " of " + std::to_string(S) + " holds under " + pl.schedule);
    }
    StageCostRequest sr;
    sr.training = &tg;
    sr.layers = &layers;
    sr.cluster = &cl;
    sr.method = method;
    sr.microbatches = B;
    sr.profile = profile;
    sr.budget_bytes = budget;
    const LogicalMesh view{st.logical_d0, st.logical_d1};
    StageSharding sh = stage_graph(sr, static_cast<int>(st.first_layer), static_cast<int>(st.end_layer), mesh, view);
    const StrategyGraph& sg = *sh.graph;
    std::map<std::string, std::string> strat, spec;
    for (const auto& s : st.strategies) strat[s.node] = s.strategy;
    for (const auto& t : st.tensors) spec[t.tensor] = t.spec;
    const int64_t first = layers.first[st.first_layer], end = layers.end[st.end_layer - 1];
    for (const auto& s : st.strategies) {
      const NodeId id = g.find_node(s.node);
      if (id == kNoId || static_cast<int64_t>(id) < first || static_cast<int64_t>(id) >= end) {
        throw UserError(src, where + "/strategies/\"" + s.node + "\"", "is not a forward node of this stage's layers");
      }
    }
    apply_stage_strategies(st, src, where, tg, sg, first, end, sh.in_stage, sh.choice);
    // Every node of the stage has the strategy the choice gives it.
    const ChosenSpecs cs = chosen_specs(sg, sh.choice);
    for (int64_t i = first; i < end; ++i) {
      const Node& n = g.node(static_cast<NodeId>(i));
      auto it = strat.find(n.name);
      if (it == strat.end()) throw UserError(src, where + "/strategies", "node \"" + n.name + "\" has no strategy");
      if (it->second != cs.node[i]->name) {
        throw UserError(src, where + "/strategies/\"" + n.name + "\"", "\"" + it->second + "\" differs from \"" + cs.node[i]->name +
                        "\", which its inputs' specs decide (the node follows \"" + sg.groups[sg.group_of_node[i]].name + "\"; edit that one)");
      }
    }
    const StageEvaluation ev = evaluate_stage(sr, static_cast<int>(st.first_layer), static_cast<int>(st.end_layer), sh);
    StageOption o = ev.option;
    double micro = o.micro_s;
    if (st.remat) {
      o.remat = true;
      micro += ev.forward_s;
    }
    if (st.end_layer < static_cast<int64_t>(layers.size())) micro += transfer_time(cl, layers.boundary_bytes[st.end_layer]);
    PlanStage& rs = out.pipeline.stages[k];
    rs.microbatch_time_s = micro;
    rs.forward_time_s = std::min(ev.forward_s, micro);
    rs.step_time_s = o.step_s;
    const StageFigures f = stage_figures(tg, sg, sh.choice, cs, sh.in_stage, first, end, o, inflight, B);
    rs.memory = f.memory;
    if (rs.memory.peak_bytes > budget) {
      throw UserError(src, where, "needs " + format_bytes(static_cast<double>(rs.memory.peak_bytes)) + " per device with " +
                      std::to_string(inflight) + " microbatches in flight; the budget is " + format_bytes(static_cast<double>(budget)) +
                      (o.remat ? "" : " (try \"remat\": true)"));
    }
    micros.push_back(micro);
    steps.push_back(o.step_s);
    rs.communication_bytes = bytes_per_kind(communication(sg, sh.choice, first, end, sh.in_stage));
    const double before = busiest;
    account_stage(out.estimate, busiest, f, micro, B, o.step_s);
    if (busiest != before) out.estimate.communication_bytes = rs.communication_bytes;
  }
  const Totals totals = pipeline_totals(micros, steps, B);
  std::vector<int> stage_of_node(tg.num_forward_nodes, 0);
  for (size_t k = 0; k < pl.stages.size(); ++k) {
    for (int64_t i = layers.first[pl.stages[k].first_layer]; i < layers.end[pl.stages[k].end_layer - 1]; ++i) {
      stage_of_node[static_cast<size_t>(i)] = static_cast<int>(k);
    }
  }
  boundary_traffic(tg, stage_of_node, cl, out.pipeline);  // as the stages now lie (a hand edit may move them)
  const double exchange = shared_exchange_time(out.pipeline);
  out.pipeline.busy_time_s = totals.busy;
  out.pipeline.bubble_time_s = totals.bubble;
  out.pipeline.step_tail_s = totals.tail + exchange;
  out.estimate.iteration_time_s = totals.total + exchange;
  out.estimate.throughput_samples_per_s = static_cast<double>(plan.global_batch) / out.estimate.iteration_time_s;
  return out;
}

std::string predicted_trace_json(const Plan& plan) {
  std::vector<TraceTrack> tracks;
  std::vector<TraceEvent> events;
  auto event = [&](int track, const std::string& name, const char* cat, double start_s, double dur_s) {
    events.push_back({name, cat, track, start_s * 1e6, dur_s * 1e6});
  };
  if (!plan.pipeline) {
    tracks.push_back({0, "all " + std::to_string(plan.device_ids.size()) + " devices (predicted)"});
    event(0, "step", "compute", 0, plan.estimate.iteration_time_s);
    return trace_document({trace_events_json(tracks, events)});
  }
  const PlanPipeline& pl = *plan.pipeline;
  const int64_t B = plan.microbatches;
  std::vector<double> fwd, bwd;
  for (const PlanStage& st : pl.stages) {
    // The cost model's forward compute; the rest of the microbatch (backward, recomputation,
    // collectives, sends) on the backward. An older plan without it: 1:2.
    const double f = st.forward_time_s > 0 && st.forward_time_s < st.microbatch_time_s ? st.forward_time_s
                                                                                        : st.microbatch_time_s / 3;
    fwd.push_back(f);
    bwd.push_back(st.microbatch_time_s - f);
  }
  const ScheduleResult sim = simulate_schedule(pl.schedule == "gpipe" ? Schedule::kGPipe : Schedule::k1F1B, fwd, bwd, B);
  const double exchange = shared_exchange_time(pl);
  for (size_t s = 0; s < pl.stages.size(); ++s) {
    const PlanStage& st = pl.stages[s];
    std::string devices;
    for (int64_t d : st.device_ids) devices += (devices.empty() ? "" : ",") + std::to_string(d);
    tracks.push_back({static_cast<int>(s), "stage " + std::to_string(s) + " (devices " + devices + ", predicted)"});
    double end = 0;
    for (size_t k = 0; k < sim.order[s].size(); ++k) {
      const int64_t e = sim.order[s][k];
      const bool f = e >= 0;
      const double dur = f ? fwd[s] : bwd[s];
      event(static_cast<int>(s), std::string(f ? "forward " : "backward ") + std::to_string(f ? e : -e - 1), "compute",
            sim.start_s[s][k], dur);
      end = std::max(end, sim.start_s[s][k] + dur);
    }
    event(static_cast<int>(s), "update", "compute", end, st.step_time_s);
    bool holds = false;
    for (const PlanSharedParameter& sp : pl.shared) holds = holds || std::count(sp.stages.begin(), sp.stages.end(), static_cast<int64_t>(s)) > 0;
    if (holds && exchange > 0) event(static_cast<int>(s), "sync_shared", "sync", end + st.step_time_s, exchange);
  }
  return trace_document({trace_events_json(tracks, events)});
}

}  // namespace alpa
