// Choosing one strategy per group: the ILP of the paper (one-hot node variables, edge variables
// linked to both endpoints, a per-device memory budget), solved through planner/ilp, and a
// brute-force enumerator the tests compare it with.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "planner/intra_op/strategy_graph.h"

namespace alpa {

// Sub-problem results kept across calls on the same strategy graph (budget-independent).
struct SolveCache;
std::shared_ptr<SolveCache> make_solve_cache();

// A strategy graph's edges in the solver's form (separable ones split into per-strategy terms,
// the rest with identical rows and columns merged), computed once and shared by the solves of
// cost-only parts of the graph (the inter-op pass's stage solves). Points into the graph: valid
// while it lives.
struct PreparedEdges;
std::shared_ptr<const PreparedEdges> prepare_edges(const StrategyGraph& sg);

// A cost-only graph (no training graph) whose groups are some of a larger graph's: its edges are
// the larger graph's edges with both ends among them, and its own `edges` are not read.
struct SubGraphEdges {
  std::shared_ptr<const PreparedEdges> edges;  // of the larger graph
  std::vector<int> index_of;                   // per group of the larger graph: its index here, -1 outside
};

struct SolveOptions {
  int64_t memory_budget_bytes = 0;  // the linear memory model must stay within; <= 0: no limit
  int threads = 1;                  // parallelism across independent ILPs, never inside one
  int64_t max_nodes = 200000;       // branch-and-bound nodes per ILP (deterministic limit)
  double time_limit_s = 120;        // wall-clock safety net per ILP
  bool decompose = true;            // false: the whole graph as one ILP (the baseline)
  size_t hub_degree = 6;            // groups with this many neighbours are enumerated (hubs)
  std::shared_ptr<SolveCache> cache;  // optional: reuse results of earlier calls on this graph
  // Under a binding budget, the knapsack over the components' fronts is solved exactly (CBC) and
  // so are memory-capped sub-problems too large to enumerate; false takes the knapsack's greedy
  // point and the capped sub-problem's best point under a bisected memory price (feasible,
  // near-optimal, much faster): the inter-op pass's thousands of stage solves.
  bool exact_knapsack = true;
  const SubGraphEdges* sub_graph = nullptr;  // see SubGraphEdges
};

struct SolveResult {
  bool feasible = false;
  std::vector<int> choice;  // strategy index per group
  double objective = 0;     // seconds per step, as the ILP counts it
  int64_t memory_bytes = 0; // linear memory model of the choice
  bool proven_optimal = false;
  int64_t ilps_solved = 0;
  int64_t largest_variables = 0, largest_constraints = 0;
  int64_t total_variables = 0, total_constraints = 0;
  double solve_time_s = 0;  // wall clock (never written to plans)
  int64_t hubs = 0, components = 0;  // the decomposition used (0 hubs: one ILP)
  // When infeasible: the least memory any choice needs (the linear model's minimum).
  int64_t min_memory_bytes = 0;
};

SolveResult solve_strategy_graph(const StrategyGraph& sg, const SolveOptions& options);

// Size of the whole graph as one ILP (after folding separable edges and compressing the rest),
// without solving it: what the decomposition avoids.
struct IlpSize {
  int64_t groups = 0, variables = 0, constraints = 0;
};
IlpSize monolithic_ilp_size(const StrategyGraph& sg);

// Exhaustive enumeration of every combination (tests only; refuses more than `limit` combos).
SolveResult brute_force(const StrategyGraph& sg, int64_t memory_budget_bytes, int64_t limit = 5000000);

}  // namespace alpa
