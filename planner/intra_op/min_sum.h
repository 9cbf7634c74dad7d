// Exact minimisation of a sum of per-variable and pairwise costs over discrete choices, by
// variable elimination (bucket elimination / non-serial dynamic programming).
//
// The intra-op sub-problems without a memory row are exactly this: one strategy per group, a
// cost per strategy, a cost per pair of strategies on every edge. Their interaction graphs are
// nearly trees (a transformer block's attention or MLP part once its residual stream is fixed),
// so eliminating one variable at a time keeps every intermediate table small and the optimum
// comes out exactly, orders of magnitude faster than a branch-and-bound ILP. Wide graphs are
// refused (the caller falls back to the ILP).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace alpa {

struct MinSumProblem {
  std::vector<std::vector<double>> unary;  // per variable: cost per choice (every variable has ≥ 1)
  struct Pair {
    int a = 0, b = 0;           // variables, a != b
    std::vector<double> cost;   // dense [choice of a][choice of b], row-major
  };
  std::vector<Pair> pairs;
};

struct MinSumResult {
  std::vector<int> choice;  // per variable
  double objective = 0;     // as summed by the elimination (recompute exactly if it matters)
};

// The optimum, or nothing when some elimination step would build a table of more than
// `max_table` entries or the whole elimination would take more than `max_work` operations.
// Ties go the same way every time (the lowest choice that reaches the minimum of its table
// entry). Deterministic: depends on the problem only.
std::optional<MinSumResult> minimize_min_sum(const MinSumProblem& problem, double max_table = 4e6,
                                             double max_work = 2e8);

}  // namespace alpa
