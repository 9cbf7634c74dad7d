#include "planner/ilp/mip.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <thread>
#include <vector>

#include "planner/common/error.h"
#include "planner/ilp/mip_check.h"

namespace alpa::ilp {
namespace {

// Uniform numbers from a fixed-seed Mersenne twister, without std:: distributions (whose output
// differs between standard libraries).
class Random {
 public:
  explicit Random(uint64_t seed) : engine_(seed) {}
  double uniform(double lo, double hi) {
    return lo + (hi - lo) * static_cast<double>(engine_() >> 11) * 0x1.0p-53;
  }
  int below(int n) { return static_cast<int>(engine_() % static_cast<uint64_t>(n)); }

 private:
  std::mt19937_64 engine_;
};

int add_var(MipRequest& request, VarType type, double cost, double lower = 0, double upper = 1) {
  request.vars.push_back({type, lower, upper, cost});
  return static_cast<int>(request.vars.size()) - 1;
}

void add_row(MipRequest& request, std::vector<Term> terms, double lower, double upper) {
  request.rows.push_back({std::move(terms), lower, upper});
}

// ---------------------------------------------------------------------------------------------
// Small random instances checked against enumeration of every binary assignment.
//
// Binaries come first. Each continuous variable y ∈ [0, 1] appears only in its own linking rows,
// all of one direction, so its best value given the binaries is known in closed form:
//   cost(y) > 0, rows  y + Σ a·x >= l   →  y = max(0, max_rows(l − Σ a·x))
//   cost(y) < 0, rows  y + Σ a·x <= u   →  y = min(1, min_rows(u − Σ a·x))
// and the assignment is feasible iff that y and every other row hold.

struct SmallInstance {
  MipRequest request;
  int num_binaries = 0;
  std::vector<std::vector<int>> links;  // per continuous variable: its linking rows
};

std::vector<Term> random_binary_terms(Random& rng, int num_binaries, int count, double lo,
                                      double hi) {
  std::vector<Term> terms;
  for (int k = 0; k < count; ++k) terms.push_back({rng.below(num_binaries), rng.uniform(lo, hi)});
  return terms;
}

// One-hot groups, knapsack rows, a covering row and continuous variables.
SmallInstance make_knapsack_instance(Random& rng, int num_binaries) {
  SmallInstance inst;
  inst.num_binaries = num_binaries;
  MipRequest& req = inst.request;
  for (int v = 0; v < num_binaries; ++v) add_var(req, VarType::kBinary, rng.uniform(-1, 1));
  // One-hot groups over consecutive binaries: Σ x = 1.
  for (int v = 0; v + 3 <= num_binaries && rng.below(3) != 0; v += 3) {
    const int size = 2 + rng.below(2);
    std::vector<Term> terms;
    for (int k = 0; k < size; ++k) terms.push_back({v + k, 1});
    add_row(req, terms, 1, 1);
  }
  // Knapsack rows: Σ w·x <= cap.
  for (int k = 1 + rng.below(2); k > 0; --k) {
    std::vector<Term> terms;
    double total = 0;
    for (int v = 0; v < num_binaries; ++v) {
      terms.push_back({v, rng.uniform(0.1, 1)});
      total += terms.back().coef;
    }
    add_row(req, terms, -kInf, rng.uniform(0.3, 0.6) * total);
  }
  // A covering row: Σ over a few binaries >= 1 (duplicates possible, they add up).
  if (rng.below(2) == 0) add_row(req, random_binary_terms(rng, num_binaries, 3, 1, 1), 1, kInf);
  // Continuous variables with their linking rows.
  for (int c = rng.below(3); c > 0; --c) {
    const bool floor = rng.below(2) == 0;
    const int y = add_var(req, VarType::kContinuous, floor ? rng.uniform(0.1, 1) : -rng.uniform(0.1, 1));
    inst.links.emplace_back();
    for (int k = 1 + rng.below(2); k > 0; --k) {
      std::vector<Term> terms = random_binary_terms(rng, num_binaries, 2 + rng.below(2), -1, 1);
      terms.push_back({y, 1});
      const double bound = rng.uniform(-0.5, 1);
      inst.links.back().push_back(static_cast<int>(req.rows.size()));
      add_row(req, terms, floor ? bound : -kInf, floor ? kInf : bound);
    }
  }
  return inst;
}

// Assign `workers` workers to distinct tasks out of `tasks` (each worker exactly one task, each task
// at most one worker), under a budget on a second cost.
SmallInstance make_assignment_instance(Random& rng, int workers, int tasks) {
  SmallInstance inst;
  inst.num_binaries = workers * tasks;
  MipRequest& req = inst.request;
  std::vector<Term> budget;
  for (int w = 0; w < workers; ++w) {
    for (int t = 0; t < tasks; ++t) {
      add_var(req, VarType::kBinary, rng.uniform(0, 1));
      budget.push_back({w * tasks + t, rng.uniform(0, 1)});
    }
  }
  for (int w = 0; w < workers; ++w) {
    std::vector<Term> terms;
    for (int t = 0; t < tasks; ++t) terms.push_back({w * tasks + t, 1});
    add_row(req, terms, 1, 1);
  }
  for (int t = 0; t < tasks; ++t) {
    std::vector<Term> terms;
    for (int w = 0; w < workers; ++w) terms.push_back({w * tasks + t, 1});
    add_row(req, terms, -kInf, 1);
  }
  add_row(req, budget, -kInf, 0.35 * workers);
  return inst;
}

struct BruteForce {
  bool feasible = false;
  double objective = kInf;
};

BruteForce brute_force(const SmallInstance& inst) {
  const MipRequest& req = inst.request;
  BruteForce best;
  std::vector<double> x(req.vars.size(), 0);
  for (uint32_t mask = 0; mask < (1u << inst.num_binaries); ++mask) {
    for (int v = 0; v < inst.num_binaries; ++v) x[v] = (mask >> v) & 1;
    for (size_t c = 0; c < inst.links.size(); ++c) {
      const int y = inst.num_binaries + static_cast<int>(c);
      const bool floor = req.vars[y].cost > 0;
      double value = floor ? 0 : 1;
      for (int r : inst.links[c]) {
        const Constraint& row = req.rows[r];
        double rest = 0;
        for (const Term& term : row.terms) {
          if (term.var != y) rest += term.coef * x[term.var];
        }
        value = floor ? std::max(value, row.lower - rest) : std::min(value, row.upper - rest);
      }
      x[y] = value;
    }
    if (max_violation(req, x) > 1e-9) continue;
    const double objective = objective_value(req, x);
    if (objective < best.objective) best = {true, objective};
  }
  return best;
}

void expect_consistent(const MipRequest& request, const MipResult& result) {
  ASSERT_EQ(result.values.size(), request.vars.size());
  EXPECT_LE(max_violation(request, result.values), 1e-6);
  EXPECT_DOUBLE_EQ(result.objective, objective_value(request, result.values));
  for (size_t v = 0; v < request.vars.size(); ++v) {
    if (request.vars[v].type == VarType::kBinary) {
      EXPECT_TRUE(result.values[v] == 0 || result.values[v] == 1) << "binary " << v;
    }
  }
}

TEST(Mip, MatchesBruteForceOnRandomSmallInstances) {
  Random rng(20240601);
  int feasible = 0, infeasible = 0, with_continuous = 0;
  for (int i = 0; i < 32; ++i) {
    SmallInstance inst = i % 4 == 3 ? make_assignment_instance(rng, 3, 3 + i % 2)
                                    : make_knapsack_instance(rng, 4 + i % 11);
    SCOPED_TRACE("instance " + std::to_string(i));
    const BruteForce expected = brute_force(inst);
    const MipResult result = solve(inst.request);
    with_continuous += !inst.links.empty();
    if (!expected.feasible) {
      ++infeasible;
      EXPECT_EQ(result.status, MipStatus::kInfeasible) << mip_status_name(result.status);
      EXPECT_TRUE(result.values.empty());
      continue;
    }
    ++feasible;
    ASSERT_EQ(result.status, MipStatus::kOptimal) << mip_status_name(result.status);
    EXPECT_TRUE(result.proven_optimal);
    EXPECT_FALSE(result.hit_time_limit);
    EXPECT_NEAR(result.objective, expected.objective, 1e-6);
    expect_consistent(inst.request, result);
  }
  // The generator covers every case it is meant to.
  EXPECT_GE(feasible, 20);
  EXPECT_GE(infeasible, 1);
  EXPECT_GE(with_continuous, 8);
}

// x_i + x_j <= 1 for the three pairs of a triangle and x_0 + x_1 + x_2 >= 1.5: the LP relaxation is
// feasible (all 1/2), no binary point is, so infeasibility needs branching or a clique cut.
TEST(Mip, InfeasibleOddCycle) {
  MipRequest request;
  for (int v = 0; v < 3; ++v) add_var(request, VarType::kBinary, 1);
  add_row(request, {{0, 1}, {1, 1}}, -kInf, 1);
  add_row(request, {{1, 1}, {2, 1}}, -kInf, 1);
  add_row(request, {{0, 1}, {2, 1}}, -kInf, 1);
  add_row(request, {{0, 1}, {1, 1}, {2, 1}}, 1.5, kInf);
  const MipResult result = solve(request);
  EXPECT_EQ(result.status, MipStatus::kInfeasible);
  EXPECT_FALSE(result.proven_optimal);
  EXPECT_TRUE(result.values.empty());
}

TEST(Mip, InfeasibleRelaxation) {
  MipRequest request;
  add_var(request, VarType::kBinary, 1);
  add_var(request, VarType::kContinuous, 1);
  add_row(request, {{0, 1}, {1, 1}}, 2.5, kInf);
  EXPECT_EQ(solve(request).status, MipStatus::kInfeasible);
}

TEST(Mip, EmptyRequest) {
  MipRequest request;
  MipResult result = solve(request);
  EXPECT_EQ(result.status, MipStatus::kOptimal);
  EXPECT_TRUE(result.proven_optimal);
  EXPECT_EQ(result.objective, 0);
  EXPECT_TRUE(result.values.empty());

  add_row(request, {}, 1, kInf);  // 0 >= 1
  result = solve(request);
  EXPECT_EQ(result.status, MipStatus::kInfeasible);
}

// No rows: each variable sits at its cheaper bound. Objective −1 − 3 + 0.5 = −3.5.
TEST(Mip, NoRows) {
  MipRequest request;
  add_var(request, VarType::kBinary, -1);
  add_var(request, VarType::kBinary, 2);
  add_var(request, VarType::kBinary, -3);
  add_var(request, VarType::kContinuous, 1, 0.5, 1);
  const MipResult result = solve(request);
  ASSERT_EQ(result.status, MipStatus::kOptimal);
  EXPECT_EQ(result.values, (std::vector<double>{1, 0, 1, 0.5}));
  EXPECT_DOUBLE_EQ(result.objective, -3.5);
}

// 0.5·x0 + 0.5·x0 + x1 <= 1 is x0 + x1 <= 1: only one of the two (cost −1 each) can be taken.
TEST(Mip, DuplicateTermsAddUp) {
  MipRequest request;
  add_var(request, VarType::kBinary, -1);
  add_var(request, VarType::kBinary, -1);
  add_row(request, {{0, 0.5}, {1, 1}, {0, 0.5}}, -kInf, 1);
  const MipResult result = solve(request);
  ASSERT_EQ(result.status, MipStatus::kOptimal);
  EXPECT_DOUBLE_EQ(result.objective, -1);
}

TEST(Mip, StatusNames) {
  EXPECT_STREQ(mip_status_name(MipStatus::kOptimal), "optimal");
  EXPECT_STREQ(mip_status_name(MipStatus::kFeasible), "feasible");
  EXPECT_STREQ(mip_status_name(MipStatus::kInfeasible), "infeasible");
  EXPECT_STREQ(mip_status_name(MipStatus::kNoSolution), "no_solution");
}

TEST(Mip, MalformedRequestIsAnInternalError) {
  MipRequest bad_index;
  add_var(bad_index, VarType::kBinary, 1);
  add_row(bad_index, {{1, 1}}, 0, 1);
  EXPECT_THROW(solve(bad_index), InternalError);

  MipRequest bad_bounds;
  add_var(bad_bounds, VarType::kContinuous, 1, 2, 1);
  EXPECT_THROW(solve(bad_bounds), InternalError);

  MipRequest bad_row;
  add_var(bad_row, VarType::kBinary, 1);
  add_row(bad_row, {{0, 1}}, 1, 0);
  EXPECT_THROW(solve(bad_row), InternalError);

  MipRequest bad_start;
  add_var(bad_start, VarType::kBinary, 1);
  bad_start.initial_solution = {0, 0};
  EXPECT_THROW(solve(bad_start), InternalError);
}

// ---------------------------------------------------------------------------------------------
// Alpa-style instances: one-hot strategy variables s[v][i] per node, and per edge (u, w) an S×S
// block of edge variables e[i][j] tied to both endpoints:
//   (ONE-HOT v)   Σ_i s[v][i] = 1
//   (FROM e, i)   Σ_j e[i][j] = s[u][i]
//   (TO e, j)     Σ_i e[i][j] = s[w][j]
//   (MEM)         Σ_v Σ_i mem[v][i]·s[v][i] <= budget          (only when a budget is given)
// Node costs are uniform in [0, 1); an edge costs 0 when both ends pick the same strategy and
// uniform in [0, 2) otherwise. Edges are the chain (v, v+1) plus skip edges (v, v+4) for v ≡ 0 mod 4.

struct ChainSpec {
  int nodes = 20;
  int strategies = 4;
  bool skip_edges = false;
  bool continuous_edges = false;
  double memory_tightness = -1;  // in [0, 1]: budget = min + tightness·(mean − min); < 0: no row
  uint64_t seed = 1;
};

struct ChainInstance {
  MipRequest request;
  std::vector<std::vector<double>> node_cost;                // [v][i]
  std::vector<std::vector<std::vector<double>>> edge_cost;  // chain edge (v, v+1): [v][i][j]
  std::vector<int> node_var;                                 // s[v][i] = node_var[v] + i
};

ChainInstance make_chain(const ChainSpec& spec) {
  Random rng(spec.seed);
  ChainInstance inst;
  MipRequest& req = inst.request;
  const int S = spec.strategies;
  std::vector<std::vector<double>> memory(spec.nodes);
  double min_memory = 0, mean_memory = 0;
  for (int v = 0; v < spec.nodes; ++v) {
    inst.node_var.push_back(static_cast<int>(req.vars.size()));
    inst.node_cost.emplace_back();
    std::vector<Term> one_hot;
    for (int i = 0; i < S; ++i) {
      inst.node_cost[v].push_back(rng.uniform(0, 1));
      memory[v].push_back(rng.uniform(0, 1));
      one_hot.push_back({add_var(req, VarType::kBinary, inst.node_cost[v][i]), 1});
    }
    add_row(req, one_hot, 1, 1);  // (ONE-HOT v)
    min_memory += *std::min_element(memory[v].begin(), memory[v].end());
    for (double m : memory[v]) mean_memory += m / S;
  }
  std::vector<std::pair<int, int>> edges;
  for (int v = 0; v + 1 < spec.nodes; ++v) edges.push_back({v, v + 1});
  if (spec.skip_edges) {
    for (int v = 0; v + 4 < spec.nodes; v += 4) edges.push_back({v, v + 4});
  }
  const VarType edge_type = spec.continuous_edges ? VarType::kContinuous : VarType::kBinary;
  for (const auto& [u, w] : edges) {
    std::vector<std::vector<double>> cost(S, std::vector<double>(S));
    std::vector<std::vector<Term>> from(S), to(S);
    for (int i = 0; i < S; ++i) {
      for (int j = 0; j < S; ++j) {
        cost[i][j] = i == j ? 0 : rng.uniform(0, 2);
        const int e = add_var(req, edge_type, cost[i][j]);
        from[i].push_back({e, 1});
        to[j].push_back({e, 1});
      }
    }
    for (int i = 0; i < S; ++i) {
      from[i].push_back({inst.node_var[u] + i, -1});
      add_row(req, from[i], 0, 0);  // (FROM e, i)
      to[i].push_back({inst.node_var[w] + i, -1});
      add_row(req, to[i], 0, 0);  // (TO e, j)
    }
    if (w == u + 1) inst.edge_cost.push_back(cost);
  }
  if (spec.memory_tightness >= 0) {
    std::vector<Term> mem;
    for (int v = 0; v < spec.nodes; ++v) {
      for (int i = 0; i < S; ++i) mem.push_back({inst.node_var[v] + i, memory[v][i]});
    }
    add_row(req, mem, -kInf, min_memory + spec.memory_tightness * (mean_memory - min_memory));
  }
  return inst;
}

// Exact optimum of a chain without skip edges or memory row, by dynamic programming over nodes.
double chain_dp_optimum(const ChainInstance& inst) {
  std::vector<double> best = inst.node_cost[0];
  for (size_t v = 1; v < inst.node_cost.size(); ++v) {
    std::vector<double> next(best.size(), kInf);
    for (size_t j = 0; j < best.size(); ++j) {
      for (size_t i = 0; i < best.size(); ++i) {
        next[j] = std::min(next[j], best[i] + inst.edge_cost[v - 1][i][j]);
      }
      next[j] += inst.node_cost[v][j];
    }
    best = next;
  }
  return *std::min_element(best.begin(), best.end());
}

TEST(Mip, AlpaChainMatchesDynamicProgramming) {
  for (bool continuous_edges : {false, true}) {
    for (uint64_t seed = 1; seed <= 3; ++seed) {
      ChainSpec spec;
      spec.continuous_edges = continuous_edges;
      spec.seed = seed;
      const ChainInstance inst = make_chain(spec);
      const MipResult result = solve(inst.request);
      SCOPED_TRACE("seed " + std::to_string(seed) + (continuous_edges ? " continuous" : ""));
      ASSERT_EQ(result.status, MipStatus::kOptimal);
      EXPECT_NEAR(result.objective, chain_dp_optimum(inst), 1e-6);
      expect_consistent(inst.request, result);
    }
  }
}

bool same_result(const MipResult& a, const MipResult& b) {
  return a.status == b.status && a.values == b.values && a.objective == b.objective &&
         a.nodes == b.nodes && a.proven_optimal == b.proven_optimal;
}

// A chain with skip edges and a binding memory row: needs cuts and branching.
MipRequest medium_instance(uint64_t seed) {
  ChainSpec spec;
  spec.nodes = 16;
  spec.strategies = 4;
  spec.skip_edges = true;
  spec.memory_tightness = 0.2;
  spec.seed = seed;
  return make_chain(spec).request;
}

TEST(Mip, SameRequestSameResult) {
  const MipRequest request = medium_instance(7);
  const MipResult first = solve(request);
  const MipResult second = solve(request);
  ASSERT_EQ(first.status, MipStatus::kOptimal);
  EXPECT_GT(first.nodes, 0);  // the search branched
  EXPECT_TRUE(same_result(first, second));

  MipResult on_thread[2];
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) threads.emplace_back([&, t] { on_thread[t] = solve(request); });
  for (std::thread& thread : threads) thread.join();
  EXPECT_TRUE(same_result(first, on_thread[0]));
  EXPECT_TRUE(same_result(first, on_thread[1]));
}

// CBC's claim that separate models on separate threads do not interact: 8 different instances
// solved on 2 threads at once, several times, give exactly the sequential results.
TEST(Mip, ConcurrentSolvesMatchSequential) {
  constexpr int kInstances = 8, kRounds = 3;
  std::vector<MipRequest> requests;
  std::vector<MipResult> sequential;
  for (int i = 0; i < kInstances; ++i) {
    requests.push_back(medium_instance(100 + i));
    sequential.push_back(solve(requests.back()));
  }
  for (int round = 0; round < kRounds; ++round) {
    std::vector<MipResult> concurrent(kInstances);  // one pre-sized slot per instance
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t) {
      threads.emplace_back([&, t] {
        for (int i = t; i < kInstances; i += 2) concurrent[i] = solve(requests[i]);
      });
    }
    for (std::thread& thread : threads) thread.join();
    for (int i = 0; i < kInstances; ++i) {
      EXPECT_TRUE(same_result(sequential[i], concurrent[i])) << "round " << round << " instance " << i;
    }
  }
}

TEST(Mip, NodeLimitGivesSaneResult) {
  MipRequest request = medium_instance(5);
  const MipResult full = solve(request);
  ASSERT_EQ(full.status, MipStatus::kOptimal);
  ASSERT_GT(full.nodes, 1);
  request.max_nodes = 1;
  const MipResult limited = solve(request);
  ASSERT_TRUE(limited.status == MipStatus::kFeasible || limited.status == MipStatus::kOptimal)
      << mip_status_name(limited.status);
  EXPECT_FALSE(limited.hit_time_limit);
  EXPECT_EQ(limited.proven_optimal, limited.status == MipStatus::kOptimal);
  EXPECT_GE(limited.objective, full.objective - 1e-9);
  expect_consistent(request, limited);
}

TEST(Mip, InitialSolutionIsUsed) {
  MipRequest request = medium_instance(7);
  const MipResult full = solve(request);
  ASSERT_EQ(full.status, MipStatus::kOptimal);

  // With no nodes to explore CBC alone stops short of the optimum; the optimum handed in as a
  // start is what comes back.
  request.max_nodes = 0;
  const MipResult unstarted = solve(request);
  ASSERT_EQ(unstarted.status, MipStatus::kFeasible);
  ASSERT_GT(unstarted.objective, full.objective + 1e-3);
  request.initial_solution = full.values;
  const MipResult started = solve(request);
  ASSERT_TRUE(started.status == MipStatus::kFeasible || started.status == MipStatus::kOptimal);
  EXPECT_NEAR(started.objective, full.objective, 1e-9);
  expect_consistent(request, started);

  // An infeasible start (every strategy variable 1) is ignored.
  request.max_nodes = MipRequest().max_nodes;
  request.initial_solution.assign(request.vars.size(), 1);
  const MipResult ignored = solve(request);
  ASSERT_EQ(ignored.status, MipStatus::kOptimal);
  EXPECT_NEAR(ignored.objective, full.objective, 1e-9);
}

// The safety limit stops the search; the result says so and claims no proof.
TEST(Mip, TimeLimitIsReported) {
  MipRequest request = medium_instance(7);
  request.safety_time_limit_s = 1e-3;  // the root alone takes longer
  const MipResult result = solve(request);
  EXPECT_TRUE(result.hit_time_limit);
  EXPECT_FALSE(result.proven_optimal);
  ASSERT_TRUE(result.status == MipStatus::kFeasible || result.status == MipStatus::kNoSolution)
      << mip_status_name(result.status);
  if (result.status == MipStatus::kFeasible) expect_consistent(request, result);
}

TEST(Mip, UnboundedIsAnInternalError) {
  MipRequest request;
  add_var(request, VarType::kContinuous, -1, 0, kInf);
  add_var(request, VarType::kBinary, 1);
  add_row(request, {{0, 1}, {1, -1}}, 0, kInf);  // x0 >= x1, x0 free above at cost −1
  EXPECT_THROW(solve(request), InternalError);
}

}  // namespace
}  // namespace alpa::ilp
