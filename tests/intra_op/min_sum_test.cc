// Variable elimination for min-sum sub-problems against brute-force enumeration.
#include "planner/intra_op/min_sum.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace alpa {
namespace {

double evaluate(const MinSumProblem& pr, const std::vector<int>& c) {
  double s = 0;
  for (size_t v = 0; v < pr.unary.size(); ++v) s += pr.unary[v][c[v]];
  for (const MinSumProblem::Pair& q : pr.pairs) s += q.cost[c[q.a] * pr.unary[q.b].size() + c[q.b]];
  return s;
}

double brute_force_min(const MinSumProblem& pr) {
  const size_t n = pr.unary.size();
  std::vector<int> c(n, 0);
  double best = std::numeric_limits<double>::infinity();
  while (true) {
    best = std::min(best, evaluate(pr, c));
    size_t i = 0;
    for (; i < n; ++i) {
      if (++c[i] < static_cast<int>(pr.unary[i].size())) break;
      c[i] = 0;
    }
    if (i == n) return best;
  }
}

// Random problems of every shape the solver meets: chains, trees, cycles, dense graphs, repeated
// and reversed pairs; integer costs in half the cases so that ties are common.
MinSumProblem random_problem(std::mt19937_64& rng, std::string* what) {
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<uint64_t>(n)); };
  MinSumProblem pr;
  const int n = 1 + pick(7);
  const bool integral = pick(2) == 0;
  auto cost = [&] { return integral ? static_cast<double>(pick(4)) : std::ldexp(static_cast<double>(rng() % 100000), -10); };
  pr.unary.resize(n);
  for (auto& u : pr.unary) {
    u.resize(1 + pick(5));
    for (double& x : u) x = cost();
  }
  const int kind = pick(4);
  static const char* kinds[] = {"chain", "tree", "cycle", "dense"};
  *what = std::string(kinds[kind]) + " of " + std::to_string(n) + (integral ? ", integer costs" : "");
  std::vector<std::pair<int, int>> edges;
  for (int v = 1; v < n; ++v) {
    if (kind == 0) edges.push_back({v - 1, v});
    if (kind == 1) edges.push_back({pick(v), v});
    if (kind == 2) edges.push_back({v - 1, v});
    if (kind == 3) {
      for (int u = 0; u < v; ++u) if (pick(3) != 0) edges.push_back({u, v});
    }
  }
  if (kind == 2 && n > 2) edges.push_back({n - 1, 0});
  if (!edges.empty() && pick(2) == 0) edges.push_back(edges[pick(static_cast<int>(edges.size()))]);  // a repeated pair
  for (auto [a, b] : edges) {
    if (pick(2) == 0) std::swap(a, b);
    MinSumProblem::Pair q;
    q.a = a;
    q.b = b;
    q.cost.resize(pr.unary[a].size() * pr.unary[b].size());
    for (double& x : q.cost) x = cost();
    pr.pairs.push_back(std::move(q));
  }
  return pr;
}

TEST(MinSum, EqualsBruteForceOnRandomProblems) {
  std::mt19937_64 rng(20261126);
  for (int t = 0; t < 3000; ++t) {
    std::string what;
    const MinSumProblem pr = random_problem(rng, &what);
    SCOPED_TRACE("case " + std::to_string(t) + ": " + what);
    const std::optional<MinSumResult> r = minimize_min_sum(pr);
    ASSERT_TRUE(r.has_value());
    ASSERT_EQ(r->choice.size(), pr.unary.size());
    for (size_t v = 0; v < pr.unary.size(); ++v) {
      ASSERT_GE(r->choice[v], 0);
      ASSERT_LT(r->choice[v], static_cast<int>(pr.unary[v].size()));
    }
    const double best = brute_force_min(pr);
    const double got = evaluate(pr, r->choice);
    EXPECT_NEAR(got, best, 1e-9 * (1 + std::abs(best)));
    EXPECT_NEAR(r->objective, best, 1e-9 * (1 + std::abs(best)));
    // The same problem gives the same choice.
    EXPECT_EQ(minimize_min_sum(pr)->choice, r->choice);
  }
}

TEST(MinSum, LongChainsStaySmall) {
  // 200 variables of 30 choices in a chain: every table is one variable wide.
  std::mt19937_64 rng(7);
  MinSumProblem pr;
  pr.unary.assign(200, std::vector<double>(30));
  for (auto& u : pr.unary) for (double& x : u) x = static_cast<double>(rng() % 1000);
  for (int v = 1; v < 200; ++v) {
    MinSumProblem::Pair q{v - 1, v, std::vector<double>(900)};
    for (double& x : q.cost) x = static_cast<double>(rng() % 1000);
    pr.pairs.push_back(std::move(q));
  }
  const std::optional<MinSumResult> r = minimize_min_sum(pr, 1e3, 1e7);
  ASSERT_TRUE(r.has_value());
  EXPECT_DOUBLE_EQ(evaluate(pr, r->choice), r->objective);
  // Optimal, against a chain's own dynamic programme (Viterbi): best[c] is the cheapest prefix
  // ending with choice c, each step adding the pair's cost (row-major [previous][next]).
  std::vector<double> best = pr.unary[0];
  for (int v = 1; v < 200; ++v) {
    std::vector<double> next(30, std::numeric_limits<double>::infinity());
    for (int a = 0; a < 30; ++a) {
      for (int b = 0; b < 30; ++b) {
        next[b] = std::min(next[b], best[a] + pr.pairs[v - 1].cost[a * 30 + b] + pr.unary[v][b]);
      }
    }
    best = std::move(next);
  }
  EXPECT_DOUBLE_EQ(r->objective, *std::min_element(best.begin(), best.end()));
}

TEST(MinSum, RefusesWideGraphs) {
  // A complete graph of 10 variables with 10 choices: eliminating any variable first builds a
  // table over the other nine (10^9 entries).
  MinSumProblem pr;
  pr.unary.assign(10, std::vector<double>(10, 1.0));
  for (int a = 0; a < 10; ++a) {
    for (int b = a + 1; b < 10; ++b) pr.pairs.push_back({a, b, std::vector<double>(100, 0.5)});
  }
  EXPECT_FALSE(minimize_min_sum(pr).has_value());
  // Within generous limits the same shape on 5 variables solves.
  MinSumProblem small;
  small.unary.assign(5, std::vector<double>(10, 1.0));
  for (int a = 0; a < 5; ++a) {
    for (int b = a + 1; b < 5; ++b) small.pairs.push_back({a, b, std::vector<double>(100, 0.5)});
  }
  const std::optional<MinSumResult> r = minimize_min_sum(small);
  ASSERT_TRUE(r.has_value());
  EXPECT_DOUBLE_EQ(r->objective, 5 * 1.0 + 10 * 0.5);
  EXPECT_EQ(r->choice, std::vector<int>(5, 0));  // ties: the lowest choices
}

}  // namespace
}  // namespace alpa
