#include "planner/inter_op/stage_cost.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <atomic>
#include <limits>
#include <map>
#include <mutex>
#include <optional>

#include "planner/common/log.h"
#include "planner/common/error.h"
#include "planner/intra_op/parallel.h"

namespace alpa {
namespace {


// A view's full strategy graph and what stage solves need from it. Groups may span layers (the
// residual stream's element-wise ops follow one another); a stage counts the members in its
// layers and takes one strategy for the part of the group it holds.
struct ViewGraph {
  std::unique_ptr<StrategyGraph> sg;
  std::vector<std::vector<int>> member_layer;  // per group, member: its layer
  std::vector<int> user_layer;                 // parameter groups: -1; node groups: the leader's layer
  std::vector<std::vector<int>> reader_layers;  // parameter groups: the layers of the nodes reading it
  std::vector<std::vector<int>> out_edges;     // per group: edges it produces
  std::shared_ptr<const PreparedEdges> edges;  // the solver's form of sg's edges, shared by every stage solve
  std::shared_ptr<SolveCache> cache = make_solve_cache();
};

// The layer of every member and the edges of every group of a built strategy graph.
void attach(const StageCostRequest& rq, ViewGraph& vg) {
  const StrategyGraph& sg = *vg.sg;
  const size_t ng = sg.groups.size();
  vg.member_layer.assign(ng, {});
  vg.user_layer.assign(ng, -1);
  vg.out_edges.assign(ng, {});
  vg.reader_layers.assign(ng, {});
  const Graph& graph = rq.training->graph;
  for (size_t g = 0; g < ng; ++g) {
    const Group& grp = sg.groups[g];
    for (NodeId m : grp.members) vg.member_layer[g].push_back(rq.layers->layer_of_node[m]);
    if (!grp.is_parameter) vg.user_layer[g] = rq.layers->layer_of_node[grp.leader];
    if (grp.is_parameter) {
      for (NodeId c : graph.tensor(grp.parameter).consumers) {
        if (static_cast<size_t>(c) < rq.training->num_forward_nodes) vg.reader_layers[g].push_back(rq.layers->layer_of_node[c]);
      }
    }
  }
  for (size_t k = 0; k < sg.edges.size(); ++k) vg.out_edges[sg.edges[k].from].push_back(static_cast<int>(k));
  vg.edges = prepare_edges(sg);
}

ViewGraph build_view(const StageCostRequest& rq, const MeshShape& mesh, const LogicalMesh& view) {
  StrategyGraphOptions so;
  so.method = rq.method;
  so.microbatches = rq.microbatches;
  so.profile = rq.profile;
  so.facts = rq.facts;
  ViewGraph vg;
  vg.sg = std::make_unique<StrategyGraph>(build_strategy_graph(*rq.training, *rq.cluster, mesh, view, so));
  attach(rq, vg);
  return vg;
}

std::vector<bool> stage_groups(const ViewGraph& vg, int i, int j) {
  const StrategyGraph& sg = *vg.sg;
  std::vector<bool> in(vg.member_layer.size(), false);
  auto inside = [&](int l) { return l >= i && l < j; };
  for (size_t g = 0; g < in.size(); ++g) {
    for (int l : vg.member_layer[g]) in[g] = in[g] || inside(l);
  }
  // A parameter belongs to every stage whose nodes read it (a tied embedding: two stages; a
  // parameter read by a node of this stage whose group's leader lies in another stage too: the
  // stage that runs the node holds it, as the executor does).
  for (size_t g = 0; g < in.size(); ++g) {
    if (!sg.groups[g].is_parameter || in[g]) continue;
    for (int l : vg.reader_layers[g]) in[g] = in[g] || inside(l);
  }
  return in;
}

// The stage's part of the strategy graph as a cost-only graph, without edges (the solver takes
// them from the view's prepared edges); node-group (activation) memory is multiplied by the
// microbatches in flight.
StrategyGraph lite_graph(const ViewGraph& vg, const std::vector<bool>& in, int i, int j, int64_t act_weight,
                         std::vector<int>* index_of) {
  const StrategyGraph& sg = *vg.sg;
  StrategyGraph lite;
  lite.training = nullptr;
  lite.mesh = sg.mesh;
  lite.costs = sg.costs;
  lite.options = sg.options;
  index_of->assign(in.size(), -1);
  for (size_t g = 0; g < in.size(); ++g) {
    if (!in[g]) continue;
    (*index_of)[g] = static_cast<int>(lite.groups.size());
    const Group& src = sg.groups[g];
    const size_t ns = src.num_strategies();
    Group grp;
    grp.name = src.name;
    grp.is_parameter = src.is_parameter;
    grp.cost.assign(ns, 0);
    grp.step_cost.assign(ns, 0);
    grp.memory.assign(ns, 0);
    if (src.is_parameter) {  // the parameter's own part: the totals less every member's
      grp.cost = src.cost;
      grp.step_cost = src.step_cost;
      grp.memory = src.memory;
      for (size_t m = 0; m < src.member_cost.size(); ++m) {
        for (size_t s = 0; s < ns; ++s) {
          grp.cost[s] -= src.member_cost[m][s];
          grp.step_cost[s] -= src.member_step[m][s];
          grp.memory[s] -= src.member_memory[m][s];
        }
      }
    }
    for (size_t m = 0; m < src.member_cost.size(); ++m) {
      const int l = vg.member_layer[g][m];
      if (l < i || l >= j) continue;
      const int64_t mult = src.is_parameter ? 1 : act_weight;
      for (size_t s = 0; s < ns; ++s) {
        grp.cost[s] += src.member_cost[m][s];
        grp.step_cost[s] += src.member_step[m][s];
        grp.memory[s] += src.member_memory[m][s] * mult;
      }
    }
    lite.groups.push_back(std::move(grp));
  }
  return lite;
}

// Σ f(edge, strategy of from, strategy of to) over the view graph's edges inside the stage.
template <typename F>
void for_stage_edges(const ViewGraph& vg, const std::vector<bool>& in, const std::vector<int>& choice_of_group, F&& f) {
  for (size_t g = 0; g < in.size(); ++g) {
    if (!in[g]) continue;
    for (int k : vg.out_edges[g]) {
      const GroupEdge& e = vg.sg->edges[k];
      if (in[e.to]) f(e, choice_of_group[e.from], choice_of_group[e.to]);
    }
  }
}

struct LiteSolve {
  SolveResult res;
  StageOption option;     // view, remat, inflight and input bytes unset
  double forward_s = 0;   // the stage's forward compute, one microbatch (recomputation)
};

// The stage figures of a choice on the stage's part of the graph: per-microbatch and per-step
// time (the objective less its once-per-step part, over the microbatches), memory parts, the
// recomputation time.
void fill_option(const StageCostRequest& rq, const ViewGraph& vg, const std::vector<bool>& in, int i, int j,
                 const StrategyGraph& lite, const std::vector<int>& index_of, const std::vector<int>& choice,
                 double objective, LiteSolve* out) {
  StageOption& o = out->option;
  double step = 0, forward = 0;
  int64_t temp = 0;
  std::vector<int64_t> layer_act(static_cast<size_t>(j - i), 0);
  for (size_t g = 0; g < in.size(); ++g) {
    if (!in[g]) continue;
    const int s = choice[index_of[g]];
    const Group& grp = lite.groups[index_of[g]];
    step += grp.step_cost[s];
    if (grp.is_parameter) o.static_bytes += grp.memory[s];
    const Group& src = vg.sg->groups[g];
    for (size_t m = 0; m < src.members.size(); ++m) {
      const int l = vg.member_layer[g][m];
      if (l < i || l >= j) continue;
      const NodeStrategy& st = src.member_strategy[s][m];
      temp = std::max(temp, st.temp_bytes);
      forward += st.forward_s;
      if (!grp.is_parameter) layer_act[l - i] += src.member_memory[m][s];
    }
  }
  for (int64_t a : layer_act) o.act_bytes += a;
  o.layer_act_bytes = *std::max_element(layer_act.begin(), layer_act.end());
  for (int l = i; l < j; ++l) {
    o.input_bytes += rq.layers->boundary_bytes[l] / std::max<int64_t>(1, vg.sg->mesh.size());
  }
  std::vector<int> by_group(in.size(), 0);
  for (size_t g = 0; g < in.size(); ++g) if (in[g]) by_group[g] = choice[index_of[g]];
  for_stage_edges(vg, in, by_group, [&](const GroupEdge& e, int a, int b) {
    if (!e.step_cost.empty()) step += e.step_cost[a][b];
  });
  const double K = static_cast<double>(rq.microbatches);
  o.step_s = step;
  o.micro_s = std::max(0.0, objective - step) / K;
  o.temp_bytes = 2 * temp;
  out->forward_s = forward;
}

// `floor_limit` >= 0: give up without solving when the parameters' state alone, at its smallest
// sharding on this view, exceeds it (no choice can fit a device; every option's memory has that
// floor).
LiteSolve solve_lite(const StageCostRequest& rq, const ViewGraph& vg, const std::vector<bool>& in, int i, int j,
                     int64_t act_weight, int64_t budget, int64_t floor_limit = -1) {
  std::vector<int> index_of;
  const StrategyGraph lite = lite_graph(vg, in, i, j, act_weight, &index_of);
  if (floor_limit >= 0) {
    int64_t floor = 0;
    for (const Group& g : lite.groups) {
      if (g.is_parameter && !g.memory.empty()) floor += *std::min_element(g.memory.begin(), g.memory.end());
    }
    if (floor > floor_limit) return LiteSolve{};
  }
  SubGraphEdges sub{vg.edges, index_of};
  SolveOptions so;
  so.threads = 1;
  so.cache = vg.cache;
  so.sub_graph = &sub;
  so.memory_budget_bytes = budget;
  so.exact_knapsack = false;
  LiteSolve out;
  out.res = solve_strategy_graph(lite, so);
  if (!out.res.feasible) return out;
  fill_option(rq, vg, in, i, j, lite, index_of, out.res.choice, out.res.objective, &out);
  out.option.solve_act_weight = act_weight;
  out.option.solve_budget = budget;
  return out;
}

std::vector<LogicalMesh> views_for(const StageCostRequest& rq, const MeshShape& m) {
  return rq.views_of ? rq.views_of(m) : logical_views(m);
}

}  // namespace

int StageCostTable::best(int i, int j, int m, int64_t inflight, int64_t budget) const {
  const auto& opts = at(i, j, m);
  const double B = static_cast<double>(microbatches);
  int best = -1;
  double best_alone = 0;
  for (size_t k = 0; k < opts.size(); ++k) {
    if (opts[k].memory(inflight) > budget) continue;
    const double alone = B * opts[k].micro_s + opts[k].step_s;
    if (best < 0 || alone < best_alone || (alone == best_alone && opts[k].micro_s < opts[best].micro_s)) {
      best = static_cast<int>(k);
      best_alone = alone;
    }
  }
  return best;
}

StageCostTable compute_stage_costs(const StageCostRequest& request) {
  ALPA_CHECK(request.training && request.layers && request.cluster, "stage cost request without inputs");
  StageCostRequest rq = request;
  if (!rq.facts) {
    StrategyGraphOptions so;
    so.method = rq.method;
    so.microbatches = rq.microbatches;
    so.profile = rq.profile;
    rq.facts = strategy_graph_facts(*rq.training, *rq.cluster, so);
  }
  const Layers& layers = *rq.layers;
  const int L = static_cast<int>(layers.size());
  StageCostTable table;
  table.layers = L;
  table.microbatches = rq.microbatches;
  table.meshes = rq.meshes;
  for (const MeshShape& m : rq.meshes) table.views.push_back(views_for(rq, m));
  table.options.resize(static_cast<size_t>(L) * (L + 1) * rq.meshes.size());
  // Distinct ranges: equal layer-signature sequences cost the same.
  std::vector<std::pair<int, int>> ranges = rq.ranges;
  if (ranges.empty()) {
    for (int i = 0; i < L; ++i) for (int j = i + 1; j <= L; ++j) ranges.push_back({i, j});
  }
  std::map<std::vector<uint64_t>, size_t> key_index;
  std::vector<std::pair<int, int>> reps;   // first range of each key
  std::vector<int> cap;                    // per key: the most stages that can follow, plus one
  std::vector<size_t> key_of(ranges.size());
  for (size_t r = 0; r < ranges.size(); ++r) {
    const auto [i, j] = ranges[r];
    std::vector<uint64_t> key(layers.signature.begin() + i, layers.signature.begin() + j);
    key.push_back(i == 0 ? 1 : 0);  // the first stage also reads the model's inputs
    key.push_back(j == L ? 1 : 0);  // the last stage computes the loss
    auto [it, inserted] = key_index.emplace(std::move(key), reps.size());
    if (inserted) {
      reps.push_back({i, j});
      cap.push_back(0);
    }
    key_of[r] = it->second;
    cap[it->second] = std::max<int>(cap[it->second], static_cast<int>(std::min<int64_t>(rq.max_inflight, L - i)));
  }
  table.distinct_ranges = static_cast<int64_t>(reps.size());
  if (debug_enabled(DebugChannel::kStages)) {
    for (int l = 0; l < L; ++l) {
      debug_line(DebugChannel::kStages, "layer %d: nodes [%lld,%lld) %.3g GFLOP, boundary %lld B, signature %016llx", l,
                 (long long)layers.first[l], (long long)layers.end[l], layers.flops[l] / 1e9,
                 (long long)layers.boundary_bytes[l], (unsigned long long)layers.signature[l]);
    }
  }
  // One task per (mesh, view): build its strategy graph, solve every distinct range on it.
  struct Task { int mesh, view; };
  std::vector<Task> tasks;
  for (size_t m = 0; m < rq.meshes.size(); ++m) {
    for (size_t v = 0; v < table.views[m].size(); ++v) tasks.push_back({static_cast<int>(m), static_cast<int>(v)});
  }
  std::vector<std::vector<std::vector<StageOption>>> found(tasks.size());  // [task][key]
  std::vector<int64_t> solves(tasks.size(), 0);
  std::atomic<size_t> done{0};
  std::mutex progress_mutex;
  auto report_done = [&] {  // one (view, phase) task finished
    const size_t d = ++done;
    if (rq.progress) {
      std::lock_guard<std::mutex> lock(progress_mutex);
      rq.progress(d, 2 * tasks.size());
    }
  };
  const bool allow_plain = rq.remat != RematMode::kFull;
  const bool allow_remat = rq.remat != RematMode::kNone;
  const bool debug = debug_enabled(DebugChannel::kStages);
  auto add = [&](std::vector<StageOption>& dst, const LiteSolve& ls, int view, bool plain, bool remat) {
    StageOption o = ls.option;
    o.view = view;
    if (plain) dst.push_back(o);
    if (remat) {
      o.remat = true;
      o.micro_s += ls.forward_s;  // the forward once more
      dst.push_back(o);
    }
  };
  // Phase 1: every distinct range on every view, without a memory limit.
  std::vector<std::vector<std::optional<StageOption>>> unconstrained(tasks.size(),
                                                                     std::vector<std::optional<StageOption>>(reps.size()));
  // Per mesh: the ranges `skip` rules out, and the distinct ranges still to cost.
  std::vector<std::vector<bool>> skipped(rq.meshes.size(), std::vector<bool>(ranges.size(), false));
  std::vector<std::vector<bool>> wanted(rq.meshes.size(), std::vector<bool>(reps.size(), false));
  for (size_t m = 0; m < rq.meshes.size(); ++m) {
    for (size_t r = 0; r < ranges.size(); ++r) {
      skipped[m][r] = rq.skip && rq.skip(ranges[r].first, ranges[r].second, rq.meshes[m]);
      if (skipped[m][r]) ++table.skipped;
      else wanted[m][key_of[r]] = true;
    }
  }
  parallel_for_index(rq.threads, tasks.size(), [&](size_t t) {
    const MeshShape& mesh = rq.meshes[tasks[t].mesh];
    const LogicalMesh& view = table.views[tasks[t].mesh][tasks[t].view];
    found[t].resize(reps.size());
    const std::vector<bool>& want = wanted[tasks[t].mesh];
    if (std::find(want.begin(), want.end(), true) == want.end()) {  // nothing to cost on this mesh
      report_done();
      return;
    }
    const auto t_build = std::chrono::steady_clock::now();
    const ViewGraph vg = build_view(rq, mesh, view);
    if (debug) {
      std::fprintf(stderr, "[stages] mesh %lldx%lld view %lldx%lld: %zu groups, %zu edges, built in %.2f s\n",
                   (long long)mesh.hosts, (long long)mesh.devices_per_host, (long long)view.d0, (long long)view.d1,
                   vg.sg->groups.size(), vg.sg->edges.size(),
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t_build).count());
    }
    for (size_t k = 0; k < reps.size(); ++k) {
      if (!want[k]) continue;
      const auto [i, j] = reps[k];
      const LiteSolve u = solve_lite(rq, vg, stage_groups(vg, i, j), i, j, 1, -1, rq.budget_bytes);
      ++solves[t];
      if (!u.res.feasible) continue;
      unconstrained[t][k] = u.option;
      add(found[t][k], u, tasks[t].view, allow_plain, allow_remat);
    }
    if (debug) {
      std::fprintf(stderr, "[stages] mesh %lldx%lld view %lldx%lld: %zu ranges solved in %.3f s\n",
                   (long long)mesh.hosts, (long long)mesh.devices_per_host, (long long)view.d0, (long long)view.d1,
                   reps.size(), std::chrono::duration<double>(std::chrono::steady_clock::now() - t_build).count());
    }
    report_done();
  });
  // Phase 2: memory-bound solves, on the view with the fastest unconstrained sharding only, and
  // only for stages that can still beat the bound: without recomputation where no option without
  // it fits, with recomputation where no option with it fits — each only while the options that
  // do fit are slower than that view's unconstrained sharding (a memory-bound solve cannot beat
  // it). Two in-flight counts: one microbatch (the last stage) and the most any position of the
  // range can hold; positions in between take whichever fits.
  struct Item { size_t rep; int64_t inflight; bool plain, remat; };
  std::vector<std::vector<Item>> items(tasks.size());
  for (size_t m = 0; m < rq.meshes.size(); ++m) {
    for (size_t k = 0; k < reps.size(); ++k) {
      size_t best_t = tasks.size();
      for (size_t t = 0; t < tasks.size(); ++t) {
        if (tasks[t].mesh != static_cast<int>(m) || !unconstrained[t][k]) continue;
        if (best_t == tasks.size() || unconstrained[t][k]->micro_s < unconstrained[best_t][k]->micro_s) best_t = t;
      }
      if (best_t == tasks.size() || unconstrained[best_t][k]->micro_s >= rq.prune_micro_s) continue;
      std::vector<int64_t> counts = {1};
      if (cap[k] > 1) counts.push_back(cap[k]);
      for (int64_t c : counts) {
        bool plain_fits = false, remat_fits = false;
        double best_fit = std::numeric_limits<double>::infinity();
        for (size_t t = 0; t < tasks.size(); ++t) {
          if (tasks[t].mesh != static_cast<int>(m)) continue;
          for (const StageOption& o : found[t][k]) {
            if (o.memory(c) > rq.budget_bytes) continue;
            (o.remat ? remat_fits : plain_fits) = true;
            best_fit = std::min(best_fit, o.micro_s);
          }
        }
        if (unconstrained[best_t][k]->micro_s >= best_fit) continue;
        const bool plain = allow_plain && !plain_fits, remat = allow_remat && !remat_fits;
        if (plain || remat) items[best_t].push_back({k, c, plain, remat});
      }
    }
  }
  parallel_for_index(rq.threads, tasks.size(), [&](size_t t) {
    if (!items[t].empty()) {
      const MeshShape& mesh = rq.meshes[tasks[t].mesh];
      const LogicalMesh& view = table.views[tasks[t].mesh][tasks[t].view];
      const auto t_p2 = std::chrono::steady_clock::now();
      const int64_t solves_before = solves[t];
      const ViewGraph vg = build_view(rq, mesh, view);
      for (const Item& it : items[t]) {
        const size_t k = it.rep;
        const int64_t s = it.inflight;
        const auto [i, j] = reps[k];
        const std::vector<bool> in = stage_groups(vg, i, j);
        auto fits = [&](bool remat) {
          for (const StageOption& o : found[t][k]) {
            if (o.remat == remat && o.memory(s) <= rq.budget_bytes) return true;
          }
          return false;
        };
        const StageOption& u = *unconstrained[t][k];  // this view's sharding without a limit
        const auto tc = std::chrono::steady_clock::now();
        // Solves with activations weighted by `weight` within `lin` bytes, tightened by the
        // overflow up to three times, until the stage's memory with `s` in flight fits.
        auto bounded = [&](int64_t weight, int64_t lin, bool remat) {
          for (int attempt = 0; attempt < 3 && lin > 0; ++attempt) {
            const LiteSolve c = solve_lite(rq, vg, in, i, j, weight, lin);
            ++solves[t];
            if (!c.res.feasible) return;
            StageOption o = c.option;
            o.remat = remat;
            const int64_t over = o.memory(s) - rq.budget_bytes;
            if (over <= 0) {
              add(found[t][k], c, tasks[t].view, !remat, remat || allow_remat);
              return;
            }
            lin -= over;
          }
        };
        // Without recomputation: activations of `s` microbatches count.
        if (it.plain && !fits(false)) bounded(s, rq.budget_bytes - u.temp_bytes, false);
        // Recomputation keeps layer inputs only: parameters and state within what is left.
        if (it.remat && !fits(true)) {
          bounded(0, rq.budget_bytes - u.temp_bytes - s * u.input_bytes - u.layer_act_bytes, true);
        }
        if (debug) {
          std::fprintf(stderr, "[stages]   memory-bound [%d,%d) x%lld on %lldx%lld: %.3f s\n", i, j, (long long)s,
                       (long long)view.d0, (long long)view.d1,
                       std::chrono::duration<double>(std::chrono::steady_clock::now() - tc).count());
        }
      }
      if (debug) {
        std::fprintf(stderr, "[stages] mesh %lldx%lld view %lldx%lld: %zu memory-bound items, %lld solves, %.3f s\n",
                     (long long)mesh.hosts, (long long)mesh.devices_per_host, (long long)view.d0, (long long)view.d1,
                     items[t].size(), (long long)(solves[t] - solves_before),
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - t_p2).count());
      }
    }
    report_done();
  });
  for (size_t t = 0; t < tasks.size(); ++t) {
    table.solves += solves[t];
    for (size_t r = 0; r < ranges.size(); ++r) {
      if (skipped[tasks[t].mesh][r]) continue;
      const auto [i, j] = ranges[r];
      auto& dst = table.options[(static_cast<size_t>(i) * (L + 1) + j) * rq.meshes.size() + tasks[t].mesh];
      const auto& src = found[t][key_of[r]];
      dst.insert(dst.end(), src.begin(), src.end());
    }
  }
  return table;
}

StageSharding solve_stage(const StageCostRequest& rq, int i, int j, const MeshShape& mesh,
                          const LogicalMesh& view, const StageOption& option) {
  ViewGraph vg = build_view(rq, mesh, view);
  const std::vector<bool> in = stage_groups(vg, i, j);
  StageSharding out;
  std::vector<int> index_of;
  // The search's solve, repeated with the same parameters (deterministic: the same choice).
  const LiteSolve ls = solve_lite(rq, vg, in, i, j, option.solve_act_weight, option.solve_budget);
  lite_graph(vg, in, i, j, 1, &index_of);
  out.solve = ls.res;
  out.in_stage = in;
  out.choice.assign(in.size(), 0);
  if (ls.res.feasible) {
    for (size_t g = 0; g < in.size(); ++g) if (in[g]) out.choice[g] = ls.res.choice[index_of[g]];
  }
  out.graph = std::move(vg.sg);
  return out;
}

StageSharding stage_graph(const StageCostRequest& rq, int i, int j, const MeshShape& mesh, const LogicalMesh& view) {
  ViewGraph vg = build_view(rq, mesh, view);
  StageSharding out;
  out.in_stage = stage_groups(vg, i, j);
  out.choice.assign(out.in_stage.size(), 0);
  out.graph = std::move(vg.sg);
  return out;
}

StageEvaluation evaluate_stage(const StageCostRequest& rq, int i, int j, StageSharding& sh) {
  ViewGraph vg;
  vg.sg = std::move(sh.graph);
  attach(rq, vg);
  std::vector<int> index_of;
  const StrategyGraph lite = lite_graph(vg, sh.in_stage, i, j, 1, &index_of);
  std::vector<int> local(lite.groups.size(), 0);
  for (size_t g = 0; g < sh.in_stage.size(); ++g) if (sh.in_stage[g]) local[index_of[g]] = sh.choice[g];
  double objective = 0;
  for (size_t g = 0; g < lite.groups.size(); ++g) objective += lite.groups[g].cost[local[g]];
  for_stage_edges(vg, sh.in_stage, sh.choice, [&](const GroupEdge& e, int a, int b) { objective += e.cost[a][b]; });
  LiteSolve ls;
  fill_option(rq, vg, sh.in_stage, i, j, lite, index_of, local, objective, &ls);
  sh.graph = std::move(vg.sg);
  StageEvaluation out;
  out.option = ls.option;
  out.forward_s = ls.forward_s;
  return out;
}

}  // namespace alpa
