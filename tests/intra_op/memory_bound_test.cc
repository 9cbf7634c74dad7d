// The memory model the search keeps within the budget (memory_bound: the ILP's linear model,
// evaluate_memory, plus twice the largest node working set) must bound the simulated peak of
// the step's allocation/free sequence (simulate_memory) from above, for any choice of
// strategies: the solver's plan, the leanest choice (each group's least-memory strategy), the
// heaviest, and random choices.
//
// Configurations: the four PyTorch-exported test models (scripts/models/make_test_models.py) at
// batch 8, fp32 and fp16, SGD and Adam, methods shard/data/zero2/zero3, on one p3.16xlarge
// (views 1x8 and 2x4) and on four local CPU ranks (views 1x4 and 2x2; fp32 only, as the CPU
// backend runs).
//
// Also: simulate_memory's parameter, gradient and optimizer-state bytes are the sums of the
// chosen parameter strategies' param_bytes, grad_bytes and state_bytes.
//
// A failing case prints the bound's terms and the largest tensors live at the simulated peak
// (recomputed here the way simulate_memory computes them; the recomputation checks itself
// against simulate_memory's peak).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "planner/common/rng.h"
#include "planner/intra_op/search.h"
#include "planner/intra_op/solve.h"
#include "planner/intra_op/strategy_graph.h"
#include "planner/onnx/import.h"
#include "tests/common/test_models.h"
#include "tests/intra_op/test_graphs.h"

namespace alpa {
namespace {

constexpr int kRandomChoices = 20;
constexpr uint64_t kSeed = 20240601;

// ---------------------------------------------------------------------------------------------
// Shared inputs: imported models, training graphs and clusters, built once per process.

const Graph& model(const std::string& name, int64_t batch) { return testing::test_model(name, batch); }

const TrainingGraph& training(const std::string& name, int64_t batch, DType compute,
                              OptimizerKind opt) {
  static std::map<std::tuple<std::string, int64_t, DType, OptimizerKind>,
                  std::unique_ptr<TrainingGraph>>
      cache;
  auto& slot = cache[{name, batch, compute, opt}];
  if (!slot) {
    OptimizerConfig oc;
    oc.kind = opt;
    PrecisionConfig pc;
    pc.compute = compute;
    slot = std::make_unique<TrainingGraph>(build_training_graph(model(name, batch), oc, pc));
  }
  return *slot;
}

const Cluster& cluster(const std::string& spec) {
  static std::map<std::string, std::unique_ptr<Cluster>> cache;
  auto& slot = cache[spec];
  if (!slot) slot = std::make_unique<Cluster>(load_cluster(spec));
  return *slot;
}

// ---------------------------------------------------------------------------------------------
// Diagnostics: the tensors live at the simulated peak.

int64_t local_bytes_of(const Tensor& t, const ShardingSpec& s, const LogicalMesh& v) {
  if (s.dims.size() != t.shape.size() || t.shape.empty()) return t.bytes();
  return num_elements(s.local_shape(t.shape, v)) * dtype_bytes(t.dtype);
}

// simulate_memory's allocation/free sequence, recomputed with the tensors' names kept: the
// peak, the node running at the peak and the largest tensors live then.
std::string explain_peak(const StrategyGraph& sg, const std::vector<int>& choice,
                         int64_t expected_peak) {
  const TrainingGraph& tg = *sg.training;
  const Graph& g = tg.graph;
  const ChosenSpecs cs = chosen_specs(sg, choice);
  const LogicalMesh& v = sg.costs.view;
  const size_t nt = g.num_tensors(), nf = tg.num_forward_nodes;
  std::vector<int64_t> size(nt, -1);
  std::vector<bool> persistent(nt, false);
  for (const ParameterSlot& ps : tg.parameters) {
    const NodeStrategy* st = cs.param[ps.param];
    size[ps.param] = st->param_bytes;
    persistent[ps.param] = true;
    size[ps.grad] = st->grad_bytes;
    persistent[ps.grad] = true;
    for (TensorId s : ps.state) {
      size[s] = local_bytes_of(g.tensor(s), st->state, v);
      persistent[s] = true;
    }
    size[ps.updated_param] = 0;
    for (TensorId s : ps.updated_state) size[s] = 0;
  }
  for (const auto& [from, to] : tg.state_updates) {
    if (size[to] < 0) size[to] = 0;
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
    if (ten.producer == kNoId) {
      int64_t b = ten.bytes();
      for (NodeId c : ten.consumers) {
        if (static_cast<size_t>(c) >= nf) continue;
        const Node& cn = g.node(c);
        for (size_t k = 0; k < cn.inputs.size(); ++k) {
          if (cn.inputs[k] == static_cast<TensorId>(t)) b = local_bytes_of(ten, cs.node[c]->in[k], v);
        }
        break;
      }
      size[t] = b;
      continue;
    }
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
      if (!found && !f.outputs.empty()) {
        const Tensor& out0 = g.tensor(f.outputs[0]);
        const double frac = static_cast<double>(local_bytes_of(out0, st.out[0], v)) /
                            std::max<double>(1.0, static_cast<double>(out0.bytes()));
        b = static_cast<int64_t>(std::ceil(static_cast<double>(ten.bytes()) * frac));
      }
    }
    size[t] = b;
  }
  std::vector<int64_t> last_use(nt, -1);
  for (size_t i = 0; i < g.num_nodes(); ++i) {
    for (TensorId t : g.node(static_cast<NodeId>(i)).inputs) last_use[t] = static_cast<int64_t>(i);
  }
  std::set<TensorId> live_set;
  int64_t live = 0;
  for (size_t t = 0; t < nt; ++t) {
    const Tensor& ten = g.tensor(static_cast<TensorId>(t));
    if ((persistent[t] && ten.producer == kNoId) || (ten.producer == kNoId && last_use[t] >= 0)) {
      live += size[t];
      live_set.insert(static_cast<TensorId>(t));
    }
  }
  int64_t peak = live;
  std::set<TensorId> at_peak = live_set;
  int64_t peak_node = -1;
  for (size_t i = 0; i < g.num_nodes(); ++i) {
    const Node& n = g.node(static_cast<NodeId>(i));
    for (TensorId t : n.outputs) { live += size[t]; live_set.insert(t); }
    if (live > peak) { peak = live; at_peak = live_set; peak_node = static_cast<int64_t>(i); }
    std::set<TensorId> inputs(n.inputs.begin(), n.inputs.end());
    for (TensorId t : inputs) {
      if (!persistent[t] && last_use[t] == static_cast<int64_t>(i)) { live -= size[t]; live_set.erase(t); }
    }
    for (TensorId t : n.outputs) {
      if (!persistent[t] && last_use[t] < 0) { live -= size[t]; live_set.erase(t); }
    }
  }
  // Live bytes at the peak by kind.
  int64_t persistent_bytes = 0, saved_bytes = 0, other_bytes = 0;
  std::vector<std::pair<int64_t, TensorId>> largest;
  for (TensorId t : at_peak) {
    if (persistent[t]) persistent_bytes += size[t];
    else if (sg.saved[t]) saved_bytes += size[t];
    else other_bytes += size[t];
    if (size[t] > 0) largest.push_back({size[t], t});
  }
  std::sort(largest.begin(), largest.end(), [](auto& a, auto& b) { return a.first > b.first; });
  std::string out = "  simulated peak " + std::to_string(peak) +
                    (peak == expected_peak ? " (recomputation matches simulate_memory)"
                                           : " (recomputation DIFFERS from simulate_memory's " +
                                                 std::to_string(expected_peak) + ")") +
                    " at node " +
                    (peak_node < 0 ? std::string("<start>")
                                   : g.node(static_cast<NodeId>(peak_node)).name +
                                         (static_cast<size_t>(peak_node) < nf ? " (forward)" : " (backward/optimizer)")) +
                    "\n  live at the peak: persistent " + std::to_string(persistent_bytes) +
                    ", saved activations " + std::to_string(saved_bytes) + ", other " +
                    std::to_string(other_bytes) + " (" + std::to_string(at_peak.size()) + " tensors)\n";
  for (size_t k = 0; k < std::min<size_t>(12, largest.size()); ++k) {
    const TensorId t = largest[k].second;
    const Tensor& ten = g.tensor(t);
    out += "    " + std::to_string(largest[k].first) + "  " + ten.name + " [" +
           std::string(role_name(ten.role)) + (persistent[t] ? ", persistent" : "") +
           (sg.saved[t] ? ", saved" : "") + "]\n";
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The configurations.

struct Config {
  std::string model;
  int64_t batch;
  DType compute;
  OptimizerKind optimizer;
  std::string cluster;  // load_cluster spec
  LogicalMesh view;
  Method method;
};

std::string config_name(const Config& c) {
  std::string cl = c.cluster.rfind("builtin:p3", 0) == 0 ? "p3" : "local4";
  return c.model + "_b" + std::to_string(c.batch) + "_" +
         (c.compute == DType::kFloat16 ? "fp16" : "fp32") + "_" +
         (c.optimizer == OptimizerKind::kAdam ? "adam" : "sgd") + "_" + cl + "_" +
         std::to_string(c.view.d0) + "x" + std::to_string(c.view.d1) + "_" +
         method_name(c.method);
}

void PrintTo(const Config& c, std::ostream* os) { *os << config_name(c); }

std::vector<Config> configs(const std::vector<std::string>& names) {
  std::vector<Config> out;
  for (const std::string& m : std::vector<std::string>{"gpt_test", "bert_test", "moe_test", "wresnet_test"}) {
    for (DType dt : {DType::kFloat32, DType::kFloat16}) {
      for (OptimizerKind opt : {OptimizerKind::kSgd, OptimizerKind::kAdam}) {
        std::vector<std::pair<std::string, LogicalMesh>> views = {
            {"builtin:p3.16xlarge:1", {1, 8}}, {"builtin:p3.16xlarge:1", {2, 4}}};
        if (dt == DType::kFloat32) {
          views.push_back({"local:4", {1, 4}});
          views.push_back({"local:4", {2, 2}});
        }
        for (const auto& [cl, view] : views) {
          for (Method meth : {Method::kShard, Method::kData, Method::kZero2, Method::kZero3}) {
            Config c{m, 8, dt, opt, cl, view, meth};
            const std::string n = config_name(c);
            const bool listed = std::find(names.begin(), names.end(), n) != names.end();
            // `names` empty: every configuration.
            if (names.empty() || listed) out.push_back(c);
          }
        }
      }
    }
  }
  return out;
}

// Configurations where the bound does not hold yet (each runs under DISABLED_ below).
//
// GPT, method shard, every precision, optimizer and view: the simulated peak is reached at
// /blocks.1/mlp/proj/MatMul/grad/3, whose output is the weight gradient per batch element,
// [8, 256, 64] (x^T · dy batched over the batch dim, summed by the following SumToShape). It is
// B times the weight, is not saved (outside the linear model) and belongs to no forward node's
// working set (temp_bytes), so nothing in memory_bound covers it: 512 KiB in fp32 where the
// largest forward working set is 224 KiB. The data-parallel presets split it with the batch;
// BERT and the MoE model pass only because their vocab-sized embedding working sets dwarf it.
// See MemoryBoundBatchedMatMul below for the same gap on a three-node IR graph.
const std::vector<std::string>& violating() {
  static const std::vector<std::string> v = {
  };
  return v;
}

std::vector<Config> holding_configs() {
  std::vector<Config> out;
  for (const Config& c : configs({})) {
    const auto& v = violating();
    if (std::find(v.begin(), v.end(), config_name(c)) == v.end()) out.push_back(c);
  }
  return out;
}

std::vector<Config> violating_configs() {
  return violating().empty() ? std::vector<Config>{} : configs(violating());
}

// ---------------------------------------------------------------------------------------------

class MemoryBound : public ::testing::TestWithParam<Config> {};
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(MemoryBound);

// Checks one choice; `what` names it in failures.
void check_choice(const StrategyGraph& sg, const std::vector<int>& choice, const std::string& what) {
  const PlanMemory mem = simulate_memory(sg, choice);
  const int64_t bound = memory_bound(sg, choice);
  const int64_t linear = evaluate_memory(sg, choice);
  if (bound < mem.peak_bytes) {
    const ChosenSpecs cs = chosen_specs(sg, choice);
    int64_t max_temp = 0;
    std::string max_temp_node;
    for (size_t i = 0; i < cs.node.size(); ++i) {
      if (cs.node[i]->temp_bytes > max_temp) {
        max_temp = cs.node[i]->temp_bytes;
        max_temp_node = sg.training->graph.node(static_cast<NodeId>(i)).name;
      }
    }
    ADD_FAILURE() << what << ": memory_bound " << bound << " < simulated peak " << mem.peak_bytes
                  << " (short by " << mem.peak_bytes - bound << ")\n  bound = linear model "
                  << linear << " + 2 x largest working set " << max_temp << " (" << max_temp_node
                  << ")\n  simulate_memory: parameters " << mem.parameter_bytes << ", gradients "
                  << mem.gradient_bytes << ", optimizer state " << mem.optimizer_state_bytes
                  << ", saved activations " << mem.activation_bytes << "\n"
                  << explain_peak(sg, choice, mem.peak_bytes);
  }
  // Parameter, gradient and state bytes: the sums over the chosen parameter strategies.
  const ChosenSpecs cs = chosen_specs(sg, choice);
  int64_t params = 0, grads = 0, state = 0;
  for (const ParameterSlot& ps : sg.training->parameters) {
    const NodeStrategy* st = cs.param.at(ps.param);
    ASSERT_NE(st, nullptr) << what << ": parameter " << sg.training->graph.tensor(ps.param).name;
    params += st->param_bytes;
    grads += st->grad_bytes;
    state += st->state_bytes;
  }
  EXPECT_EQ(mem.parameter_bytes, params) << what;
  EXPECT_EQ(mem.gradient_bytes, grads) << what;
  EXPECT_EQ(mem.optimizer_state_bytes, state) << what;
}

void run_config(const Config& c) {
  const TrainingGraph& tg = training(c.model, c.batch, c.compute, c.optimizer);
  const Cluster& cl = cluster(c.cluster);
  StrategyGraphOptions so;
  so.method = c.method;
  const StrategyGraph sg =
      build_strategy_graph(tg, cl, {cl.hosts, cl.devices_per_host}, c.view, so);
  const size_t ng = sg.groups.size();

  // (a) The solver's plan, unconstrained, and (on the 1-D views: the budgeted ILPs of the 2-D
  // views take up to 20 s each) under a budget halfway between the leanest choice's linear
  // memory and the unconstrained plan's.
  std::vector<int> lean(ng), heavy(ng);
  for (size_t g = 0; g < ng; ++g) {
    const auto& m = sg.groups[g].memory;
    lean[g] = static_cast<int>(std::min_element(m.begin(), m.end()) - m.begin());
    heavy[g] = static_cast<int>(std::max_element(m.begin(), m.end()) - m.begin());
  }
  SolveOptions opt;
  opt.cache = make_solve_cache();
  const SolveResult free = solve_strategy_graph(sg, opt);
  ASSERT_TRUE(free.feasible);
  check_choice(sg, free.choice, "solver's plan");
  const int64_t lean_linear = evaluate_memory(sg, lean);
  if (c.view.d0 == 1 && free.memory_bytes > lean_linear) {
    opt.memory_budget_bytes = lean_linear + (free.memory_bytes - lean_linear) / 2;
    const SolveResult tight = solve_strategy_graph(sg, opt);
    ASSERT_TRUE(tight.feasible) << "budget " << opt.memory_budget_bytes;
    EXPECT_LE(evaluate_memory(sg, tight.choice), opt.memory_budget_bytes);
    check_choice(sg, tight.choice, "solver's plan within " + std::to_string(opt.memory_budget_bytes));
  }
  // (b) The leanest and the heaviest choice.
  check_choice(sg, lean, "leanest choice");
  check_choice(sg, heavy, "heaviest choice");
  // (c) Random choices.
  std::mt19937_64 rng(kSeed ^ stable_key(config_name(c)));
  for (int r = 0; r < kRandomChoices; ++r) {
    std::vector<int> choice(ng);
    for (size_t g = 0; g < ng; ++g) {
      std::uniform_int_distribution<int> pick(0, static_cast<int>(sg.groups[g].num_strategies()) - 1);
      choice[g] = pick(rng);
    }
    check_choice(sg, choice, "random choice " + std::to_string(r));
  }
}

TEST_P(MemoryBound, BoundsTheSimulatedPeak) { run_config(GetParam()); }


INSTANTIATE_TEST_SUITE_P(Models, MemoryBound, ::testing::ValuesIn(holding_configs()),
                         [](const ::testing::TestParamInfo<Config>& info) {
                           std::string n = config_name(info.param);
                           std::replace(n.begin(), n.end(), '.', '_');
                           return n;
                         });

// DISABLED_: configurations where memory_bound is below the simulated peak (see violating()).
INSTANTIATE_TEST_SUITE_P(DISABLED_Violating, MemoryBound, ::testing::ValuesIn(violating_configs()),
                         [](const ::testing::TestParamInfo<Config>& info) {
                           return config_name(info.param);
                         });

// x[B, S, K] → MatMul w[K, N] → ReduceMean: the backward computes w's gradient as a batched
// x^T · dy of shape [B, K, N], then sums it over B. With B = 32, S = 1, K = N = 64 that
// intermediate (32·64·64 elements, a quarter of it per device when the batch is split 4 ways)
// outweighs everything memory_bound counts: w and its gradient (2·64·64), the saved x and twice
// the largest forward working set (x, w and the output: 2·(32·64 + 64·64 + 32·64)).
Graph batched_matmul(int64_t batch, int64_t seq, int64_t k, int64_t n) {
  Graph g;
  auto add = [&](const std::string& name, Shape shape, TensorRole role) {
    Tensor t;
    t.name = name;
    t.shape = std::move(shape);
    t.role = role;
    return g.add_tensor(t);
  };
  const TensorId x = add("x", {batch, seq, k}, TensorRole::kDataInput);
  g.inputs = {x};
  g.input_batch_axes = {0};
  const TensorId w = add("w", {k, n}, TensorRole::kParameter);
  const TensorId h = add("h", {batch, seq, n}, TensorRole::kActivation);
  g.add_node({"mm", OpKind::kMatMul, {x, w}, {h}, {}});
  const TensorId loss = add("loss", {}, TensorRole::kLoss);
  Node mean{"mean", OpKind::kReduceMean, {h}, {loss}, {}};
  mean.attrs.set("keepdims", int64_t{0});
  g.add_node(mean);
  g.loss = loss;
  g.finalize();
  return g;
}

// The [B, K, N] weight-gradient intermediate of a batched MatMul is in the bound (it once was not).
TEST(MemoryBoundBatchedMatMul, BoundsTheSimulatedPeak) {
  const Cluster cl = testing::unit_cluster(1, 4);
  const TrainingGraph tg = build_training_graph(batched_matmul(32, 1, 64, 64), {});
  for (Method meth : {Method::kShard, Method::kData, Method::kZero2, Method::kZero3}) {
    StrategyGraphOptions so;
    so.method = meth;
    const StrategyGraph sg = build_strategy_graph(tg, cl, {1, 4}, {1, 4}, so);
    const std::string where = std::string("batched matmul 1x4 ") + method_name(meth);
    const SolveResult r = solve_strategy_graph(sg, {});
    ASSERT_TRUE(r.feasible) << where;
    check_choice(sg, r.choice, where + ": solver's plan");
    std::vector<int> lean(sg.groups.size());
    for (size_t g = 0; g < lean.size(); ++g) {
      const auto& m = sg.groups[g].memory;
      lean[g] = static_cast<int>(std::min_element(m.begin(), m.end()) - m.begin());
    }
    check_choice(sg, lean, where + ": leanest choice");
  }
}

// The IR MLP of test_graphs.h (no buffers, no constants) on a unit cluster, every method,
// precision and optimizer.
TEST(MemoryBoundMlp, BoundsTheSimulatedPeak) {
  const Cluster cl = testing::unit_cluster(1, 4);
  const Graph forward = testing::mlp(16, 32, 3);
  for (DType dt : {DType::kFloat32, DType::kFloat16}) {
    for (OptimizerKind ok : {OptimizerKind::kSgd, OptimizerKind::kAdam}) {
      OptimizerConfig oc;
      oc.kind = ok;
      PrecisionConfig pc;
      pc.compute = dt;
      const TrainingGraph tg = build_training_graph(forward, oc, pc);
      for (LogicalMesh view : {LogicalMesh{1, 4}, LogicalMesh{2, 2}}) {
        for (Method meth : {Method::kShard, Method::kData, Method::kZero2, Method::kZero3}) {
          StrategyGraphOptions so;
          so.method = meth;
          const StrategyGraph sg = build_strategy_graph(tg, cl, {1, 4}, view, so);
          const std::string where = std::string("mlp ") + (dt == DType::kFloat16 ? "fp16" : "fp32") +
                                    (ok == OptimizerKind::kAdam ? " adam " : " sgd ") +
                                    std::to_string(view.d0) + "x" + std::to_string(view.d1) + " " +
                                    method_name(meth);
          const SolveResult r = solve_strategy_graph(sg, {});
          ASSERT_TRUE(r.feasible) << where;
          check_choice(sg, r.choice, where + ": solver's plan");
          std::mt19937_64 rng(kSeed ^ stable_key(where));
          for (int k = 0; k < kRandomChoices; ++k) {
            std::vector<int> choice(sg.groups.size());
            for (size_t g = 0; g < choice.size(); ++g) {
              choice[g] = static_cast<int>(rng() % sg.groups[g].num_strategies());
            }
            check_choice(sg, choice, where + ": random choice " + std::to_string(k));
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace alpa
