#include "planner/intra_op/solve.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <memory>
#include <unordered_map>

#include "planner/common/log.h"
#include "planner/common/error.h"
#include "planner/intra_op/min_sum.h"
#include "planner/intra_op/parallel.h"
#include "planner/ilp/mip.h"

namespace alpa {
namespace {

// An edge's cost matrix with identical rows and identical columns collapsed into classes:
// variables are needed per (row class, column class), not per strategy pair.
struct CompressedEdge {
  std::vector<int> row_class, col_class;  // per strategy
  std::vector<std::vector<double>> cost;  // [row class][col class]
  double at(int s_from, int s_to) const { return cost[row_class[s_from]][col_class[s_to]]; }
};

std::vector<int> classes(size_t n, const std::function<bool(size_t, size_t)>& same, size_t& count) {
  std::vector<int> cls(n, -1);
  std::vector<size_t> reps;
  for (size_t i = 0; i < n; ++i) {
    for (size_t r = 0; r < reps.size(); ++r) {
      if (same(i, reps[r])) { cls[i] = static_cast<int>(r); break; }
    }
    if (cls[i] < 0) {
      cls[i] = static_cast<int>(reps.size());
      reps.push_back(i);
    }
  }
  count = reps.size();
  return cls;
}

}  // namespace

struct PreparedEdges {
  struct Edge {
    const GroupEdge* source = nullptr;
    // Separable: cost[r][c] = row_part[r] + col_part[c] (folded into the endpoints' costs).
    bool separable = false;
    std::vector<double> row_part, col_part;
    CompressedEdge compressed;  // otherwise
  };
  std::vector<Edge> edges;  // in the graph's edge order
};

std::shared_ptr<const PreparedEdges> prepare_edges(const StrategyGraph& sg) {
  auto out = std::make_shared<PreparedEdges>();
  out->edges.resize(sg.edges.size());
  for (size_t k = 0; k < sg.edges.size(); ++k) {
    const GroupEdge& e = sg.edges[k];
    PreparedEdges::Edge& pe = out->edges[k];
    pe.source = &e;
    const size_t R = e.cost.size(), C = e.cost.empty() ? 0 : e.cost[0].size();
    bool separable = true;
    for (size_t r = 0; r < R && separable; ++r) {
      for (size_t c = 0; c < C; ++c) {
        const double d = e.cost[r][c] - e.cost[r][0] - e.cost[0][c] + e.cost[0][0];
        if (std::abs(d) > 1e-12 * (std::abs(e.cost[r][c]) + std::abs(e.cost[0][0]) + 1e-300)) { separable = false; break; }
      }
    }
    if (separable) {
      pe.separable = true;
      pe.row_part.resize(R);
      pe.col_part.resize(C);
      for (size_t r = 0; r < R; ++r) pe.row_part[r] = e.cost[r][0] - e.cost[0][0];
      for (size_t c = 0; c < C; ++c) pe.col_part[c] = e.cost[0][c];
      continue;
    }
    CompressedEdge& ce = pe.compressed;
    size_t nr = 0, nc = 0;
    ce.row_class = classes(R, [&](size_t a, size_t b) { return e.cost[a] == e.cost[b]; }, nr);
    ce.col_class = classes(C, [&](size_t a, size_t b) {
      for (size_t r = 0; r < R; ++r) if (e.cost[r][a] != e.cost[r][b]) return false;
      return true;
    }, nc);
    ce.cost.assign(nr, std::vector<double>(nc, 0));
    for (size_t r = 0; r < R; ++r) {
      for (size_t c = 0; c < C; ++c) ce.cost[ce.row_class[r]][ce.col_class[c]] = e.cost[r][c];
    }
  }
  return out;
}

namespace {

// A compressed edge between two groups of the graph being solved.
struct EdgeRef {
  int from = 0, to = 0;
  const CompressedEdge* data = nullptr;
  double at(int s_from, int s_to) const { return data->at(s_from, s_to); }
};

// The strategy graph as the solver sees it: separable edges folded into node costs, the rest
// compressed, with adjacency.
struct Prepared {
  std::shared_ptr<const PreparedEdges> shared;  // keeps the edges' data alive
  std::vector<std::vector<double>> node_cost;
  std::vector<std::vector<int64_t>> memory;
  std::vector<EdgeRef> edges;
  std::vector<std::vector<int>> edges_of;  // per group: indices into edges
};

// `sub`: the graph is a cost-only part of a larger one whose prepared edges are given; its edges
// are those with both ends inside (sg.edges is not read).
Prepared prepare(const StrategyGraph& sg, const SubGraphEdges* sub = nullptr) {
  Prepared p;
  const size_t ng = sg.groups.size();
  p.node_cost.resize(ng);
  p.memory.resize(ng);
  for (size_t g = 0; g < ng; ++g) {
    p.node_cost[g] = sg.groups[g].cost;
    p.memory[g] = sg.groups[g].memory;
  }
  p.shared = sub ? sub->edges : prepare_edges(sg);
  for (const PreparedEdges::Edge& pe : p.shared->edges) {
    int from = pe.source->from, to = pe.source->to;
    if (sub) {
      from = sub->index_of[from];
      to = sub->index_of[to];
      if (from < 0 || to < 0) continue;
    }
    if (pe.separable) {
      for (size_t r = 0; r < pe.row_part.size(); ++r) p.node_cost[from][r] += pe.row_part[r];
      for (size_t c = 0; c < pe.col_part.size(); ++c) p.node_cost[to][c] += pe.col_part[c];
      continue;
    }
    p.edges.push_back({from, to, &pe.compressed});
  }
  p.edges_of.resize(ng);
  for (size_t k = 0; k < p.edges.size(); ++k) {
    p.edges_of[p.edges[k].from].push_back(static_cast<int>(k));
    p.edges_of[p.edges[k].to].push_back(static_cast<int>(k));
  }
  return p;
}

// A sub-problem: the groups of `subset` are free, every other group with fixed[g] >= 0 is fixed.
struct SubResult {
  bool feasible = false;
  bool proven_optimal = true;
  std::vector<int> choice;  // per subset group
  double cost = 0;          // of the subset: node costs + edges inside + edges to fixed groups
  int64_t memory = 0;
  int64_t variables = 0, constraints = 0;
};

// A sub-problem with the fixed groups' edges folded into the free groups' costs.
struct LocalProblem {
  std::vector<int> local;                  // per group: index in the subset, -1 outside
  std::vector<std::vector<double>> cost;   // per subset group and strategy
  std::vector<int> inner;                  // edges with both ends in the subset
};

LocalProblem local_problem(const Prepared& p, const std::vector<int>& subset, const std::vector<int>& fixed) {
  LocalProblem lp;
  const size_t n = subset.size();
  lp.local.assign(p.node_cost.size(), -1);
  for (size_t i = 0; i < n; ++i) lp.local[subset[i]] = static_cast<int>(i);
  lp.cost.resize(n);
  for (size_t i = 0; i < n; ++i) lp.cost[i] = p.node_cost[subset[i]];
  for (size_t i = 0; i < n; ++i) {
    for (int k : p.edges_of[subset[i]]) {
      const EdgeRef& e = p.edges[k];
      const int lf = lp.local[e.from], lt = lp.local[e.to];
      auto& c = lp.cost[i];
      if (lf >= 0 && lt >= 0) {
        if (lf == static_cast<int>(i)) lp.inner.push_back(k);
      } else if (lf == static_cast<int>(i)) {
        for (size_t s = 0; s < c.size(); ++s) c[s] += e.at(static_cast<int>(s), fixed[e.to]);
      } else {
        for (size_t s = 0; s < c.size(); ++s) c[s] += e.at(fixed[e.from], static_cast<int>(s));
      }
    }
  }
  return lp;
}

// `price` > 0 adds price·bytes to every strategy's cost in the objective (a Lagrangian memory
// price); the returned cost never includes it.
// Visits every combination of a sub-problem's strategies, group 0 varying fastest (combination
// index Σ choice[i] · Π_{j<i} strategies of j), with its cost under `objective` (per group and
// strategy, then the edges inside the subset) and its memory.
template <typename Visit>
void for_each_combination(const Prepared& p, const std::vector<int>& subset, const LocalProblem& lp,
                          const std::vector<std::vector<double>>& objective, Visit&& visit) {
  const size_t n = subset.size();
  std::vector<int> ch(n, 0);
  uint64_t index = 0;
  while (true) {
    double c = 0;
    int64_t m = 0;
    for (size_t i = 0; i < n; ++i) {
      c += objective[i][ch[i]];
      m += p.memory[subset[i]][ch[i]];
    }
    for (int k : lp.inner) c += p.edges[k].at(ch[lp.local[p.edges[k].from]], ch[lp.local[p.edges[k].to]]);
    visit(ch, c, m, index);
    ++index;
    size_t i = 0;
    for (; i < n; ++i) {
      if (++ch[i] < static_cast<int>(objective[i].size())) break;
      ch[i] = 0;
    }
    if (i == n) break;
  }
}

constexpr double kEnumerateSubset = 512;  // sub-problems this small are enumerated, not solved

SubResult solve_subset(const Prepared& p, const std::vector<int>& subset, const std::vector<int>& fixed,
                       int64_t mem_cap, const SolveOptions& options, double price = 0) {
  SubResult res;
  const size_t n = subset.size();
  const LocalProblem lp = local_problem(p, subset, fixed);
  const std::vector<int>& local = lp.local;
  const std::vector<std::vector<double>>& cost = lp.cost;
  const std::vector<int>& inner = lp.inner;
  int64_t min_mem = 0;
  for (size_t i = 0; i < n; ++i) {
    const auto& m = p.memory[subset[i]];
    min_mem += *std::min_element(m.begin(), m.end());
  }
  if (mem_cap >= 0 && min_mem > mem_cap) return res;  // infeasible, proven

  std::vector<std::vector<double>> objective = cost;
  if (price > 0) {
    for (size_t i = 0; i < n; ++i) {
      for (size_t s = 0; s < objective[i].size(); ++s) objective[i][s] += price * static_cast<double>(p.memory[subset[i]][s]);
    }
  }
  // Cost and memory recomputed exactly from a choice.
  auto finish_choice = [&](SubResult& r) {
    for (size_t i = 0; i < n; ++i) {
      r.cost += cost[i][r.choice[i]];
      r.memory += p.memory[subset[i]][r.choice[i]];
    }
    for (int k : inner) {
      const EdgeRef& e = p.edges[k];
      r.cost += e.at(r.choice[local[e.from]], r.choice[local[e.to]]);
    }
  };
  // Small sub-problems (most of a stage's): every combination, exactly; ties to the first in
  // lexicographic order. Faster than setting up an ILP by orders of magnitude.
  double combos = 1;
  for (size_t i = 0; i < n; ++i) combos *= static_cast<double>(cost[i].size());
  if (combos <= kEnumerateSubset) {
    std::vector<int> best;
    double best_obj = 0;
    for_each_combination(p, subset, lp, objective, [&](const std::vector<int>& c, double obj, int64_t mem, uint64_t) {
      if (mem_cap >= 0 && mem > mem_cap) return;
      if (best.empty() || obj < best_obj || (obj == best_obj && c < best)) {
        best = c;
        best_obj = obj;
      }
    });
    if (best.empty()) return res;  // infeasible, proven
    res.feasible = true;
    res.choice = best;
    finish_choice(res);
    return res;
  }
  // Without a memory row the sub-problem is a pure sum of per-group and per-edge costs: exact
  // variable elimination, unless its graph is too wide (then the ILP). With one, the ILP, or in
  // fast mode the elimination under a memory price (below).
  const bool eliminate = mem_cap < 0 || !options.exact_knapsack;
  MinSumProblem ms;
  ms.unary = objective;
  if (eliminate) {
    for (int k : inner) {
      const EdgeRef& e = p.edges[k];
      MinSumProblem::Pair q;
      q.a = local[e.from];
      q.b = local[e.to];
      const size_t na = cost[q.a].size(), nb = cost[q.b].size();
      q.cost.resize(na * nb);
      for (size_t a = 0; a < na; ++a) {
        for (size_t b = 0; b < nb; ++b) q.cost[a * nb + b] = e.at(static_cast<int>(a), static_cast<int>(b));
      }
      ms.pairs.push_back(std::move(q));
    }
  }
  std::optional<MinSumResult> unpriced = eliminate ? minimize_min_sum(ms) : std::nullopt;
  if (unpriced && mem_cap < 0) {
    res.feasible = true;
    res.choice = std::move(unpriced->choice);
    finish_choice(res);
    return res;
  }
  if (unpriced && !options.exact_knapsack) {
    // Under a memory cap, fast and near-optimal (the inter-op pass's stage solves): the cheapest
    // choice under a memory price, the price bisected to the smallest that fits the cap (memory
    // falls as the price rises). Exact when the unconstrained choice fits.
    auto solve_at = [&](double price) {  // only the per-group terms change with the price
      SubResult r;
      for (size_t i = 0; i < n; ++i) {
        for (size_t s = 0; s < ms.unary[i].size(); ++s) {
          ms.unary[i][s] = objective[i][s] + price * static_cast<double>(p.memory[subset[i]][s]);
        }
      }
      std::optional<MinSumResult> m = minimize_min_sum(ms);
      ALPA_CHECK(m.has_value(), "variable elimination refused a problem it solved unpriced");
      r.feasible = true;
      r.choice = std::move(m->choice);
      finish_choice(r);
      return r;
    };
    SubResult best;
    best.choice = unpriced->choice;
    best.feasible = true;
    finish_choice(best);
    if (best.memory <= mem_cap) return best;
    SubResult fits;
    auto keep = [&](SubResult r) {
      if (r.memory <= mem_cap && (!fits.feasible || r.cost < fits.cost)) fits = std::move(r);
    };
    const double base = std::max(std::abs(best.cost), 1e-30) / static_cast<double>(std::max<int64_t>(1, best.memory - min_mem));
    double lo = 0, hi = base;
    int rises = 0;
    for (SubResult r = solve_at(hi); r.memory > mem_cap && rises < 40; r = solve_at(hi), ++rises) {
      lo = hi;
      hi *= 4;
    }
    keep(solve_at(hi));
    for (int step = 0; step < 24 && fits.feasible; ++step) {
      const double mid = lo > 0 ? std::sqrt(lo * hi) : hi / 4;
      SubResult r = solve_at(mid);
      if (r.memory <= mem_cap) {
        hi = mid;
        keep(std::move(r));
      } else {
        lo = mid;
      }
    }
    if (fits.feasible) {
      // Then single-group moves that lower the cost within the cap, best first, while any helps
      // (the price's choice can leave memory unused).
      std::vector<std::vector<int>> around(n);  // per group: inner edges at it
      for (size_t q = 0; q < inner.size(); ++q) {
        around[local[p.edges[inner[q]].from]].push_back(inner[q]);
        around[local[p.edges[inner[q]].to]].push_back(inner[q]);
      }
      auto group_cost = [&](size_t i, int s, const std::vector<int>& ch) {
        double c = cost[i][s];
        for (int k : around[i]) {
          const EdgeRef& e = p.edges[k];
          const int a = local[e.from] == static_cast<int>(i) ? s : ch[local[e.from]];
          const int b = local[e.to] == static_cast<int>(i) ? s : ch[local[e.to]];
          c += e.at(a, b);
        }
        return c;
      };
      for (int round = 0; round < 64; ++round) {
        double best_gain = 0;
        size_t bi = 0;
        int bs = -1;
        for (size_t i = 0; i < n; ++i) {
          const int cur = fits.choice[i];
          const double now = group_cost(i, cur, fits.choice);
          const auto& m = p.memory[subset[i]];
          for (int s = 0; s < static_cast<int>(cost[i].size()); ++s) {
            if (s == cur || fits.memory - m[cur] + m[s] > mem_cap) continue;
            const double gain = now - group_cost(i, s, fits.choice);
            if (gain > best_gain * (1 + 1e-12) + 1e-300) { best_gain = gain; bi = i; bs = s; }
          }
        }
        if (bs < 0) break;
        fits.choice[bi] = bs;
        fits.cost = 0;
        fits.memory = 0;
        finish_choice(fits);
      }
      fits.proven_optimal = false;
      return fits;
    }
    // No price found a fitting choice: the leanest strategy per group (feasible: min_mem fits).
    SubResult lean;
    lean.feasible = true;
    lean.proven_optimal = false;
    lean.choice.resize(n);
    for (size_t i = 0; i < n; ++i) {
      const auto& m = p.memory[subset[i]];
      lean.choice[i] = static_cast<int>(std::min_element(m.begin(), m.end()) - m.begin());
    }
    finish_choice(lean);
    return lean;
  }
  double max_cost = 0;
  for (const auto& v : objective) for (double c : v) max_cost = std::max(max_cost, std::abs(c));
  for (int k : inner) for (const auto& row : p.edges[k].data->cost) for (double c : row) max_cost = std::max(max_cost, std::abs(c));
  const double scale = max_cost > 0 ? 1e3 / max_cost : 1.0;  // CBC's tolerances are absolute

  ilp::MipRequest req;
  std::vector<int> x0(n);
  for (size_t i = 0; i < n; ++i) {
    x0[i] = static_cast<int>(req.vars.size());
    ilp::Constraint one;
    one.lower = one.upper = 1;
    for (size_t s = 0; s < cost[i].size(); ++s) {
      req.vars.push_back({ilp::VarType::kBinary, 0, 1, objective[i][s] * scale});
      one.terms.push_back({static_cast<int32_t>(x0[i] + s), 1});
    }
    req.rows.push_back(std::move(one));
  }
  std::vector<int> e0(inner.size());
  for (size_t q = 0; q < inner.size(); ++q) {
    const EdgeRef& e = p.edges[inner[q]];
    const int lf = local[e.from], lt = local[e.to];
    const size_t nr = e.data->cost.size(), nc = e.data->cost[0].size();
    e0[q] = static_cast<int>(req.vars.size());
    for (size_t r = 0; r < nr; ++r) {
      for (size_t c = 0; c < nc; ++c) req.vars.push_back({ilp::VarType::kContinuous, 0, 1, e.data->cost[r][c] * scale});
    }
    for (size_t r = 0; r < nr; ++r) {  // Σ_c z[r][c] = Σ_{s in row class r} x_from,s
      ilp::Constraint row;
      row.lower = row.upper = 0;
      for (size_t c = 0; c < nc; ++c) row.terms.push_back({static_cast<int32_t>(e0[q] + r * nc + c), 1});
      for (size_t s = 0; s < e.data->row_class.size(); ++s) {
        if (e.data->row_class[s] == static_cast<int>(r)) row.terms.push_back({static_cast<int32_t>(x0[lf] + s), -1});
      }
      req.rows.push_back(std::move(row));
    }
    for (size_t c = 0; c < nc; ++c) {  // Σ_r z[r][c] = Σ_{s in column class c} x_to,s
      ilp::Constraint row;
      row.lower = row.upper = 0;
      for (size_t r = 0; r < nr; ++r) row.terms.push_back({static_cast<int32_t>(e0[q] + r * nc + c), 1});
      for (size_t s = 0; s < e.data->col_class.size(); ++s) {
        if (e.data->col_class[s] == static_cast<int>(c)) row.terms.push_back({static_cast<int32_t>(x0[lt] + s), -1});
      }
      req.rows.push_back(std::move(row));
    }
  }
  if (mem_cap >= 0) {
    ilp::Constraint mem;
    const double cap = std::max<double>(1.0, static_cast<double>(mem_cap));
    mem.upper = static_cast<double>(mem_cap) / cap;
    for (size_t i = 0; i < n; ++i) {
      const auto& m = p.memory[subset[i]];
      for (size_t s = 0; s < m.size(); ++s) {
        if (m[s] != 0) mem.terms.push_back({static_cast<int32_t>(x0[i] + s), static_cast<double>(m[s]) / cap});
      }
    }
    req.rows.push_back(std::move(mem));
  }
  // Start from the leanest choice (feasible whenever anything is).
  req.initial_solution.assign(req.vars.size(), 0.0);
  std::vector<int> lean(n);
  for (size_t i = 0; i < n; ++i) {
    const auto& m = p.memory[subset[i]];
    lean[i] = static_cast<int>(std::min_element(m.begin(), m.end()) - m.begin());
    req.initial_solution[x0[i] + lean[i]] = 1;
  }
  for (size_t q = 0; q < inner.size(); ++q) {
    const EdgeRef& e = p.edges[inner[q]];
    const size_t nc = e.data->cost[0].size();
    req.initial_solution[e0[q] + e.data->row_class[lean[local[e.from]]] * nc + e.data->col_class[lean[local[e.to]]]] = 1;
  }
  req.max_nodes = options.max_nodes;
  req.safety_time_limit_s = options.time_limit_s;
  res.variables = static_cast<int64_t>(req.vars.size());
  res.constraints = static_cast<int64_t>(req.rows.size());
  const ilp::MipResult mr = ilp::solve(req);
  if (mr.solve_time_s > 0.5) {
    debug_line(DebugChannel::kSolve, "ilp: %zu groups, %zu vars, %zu rows, cap %lld, price %g: %s in %.2f s, %lld nodes", n,
               req.vars.size(), req.rows.size(), static_cast<long long>(mem_cap), price, ilp::mip_status_name(mr.status),
               mr.solve_time_s, static_cast<long long>(mr.nodes));
  }
  if (mr.status != ilp::MipStatus::kOptimal && mr.status != ilp::MipStatus::kFeasible) {
    res.proven_optimal = mr.status == ilp::MipStatus::kInfeasible;
    return res;
  }
  res.feasible = true;
  res.proven_optimal = mr.proven_optimal;
  res.choice.assign(n, 0);
  for (size_t i = 0; i < n; ++i) {
    for (size_t s = 0; s < cost[i].size(); ++s) {  // ties: the first strategy set to one
      if (mr.values[x0[i] + s] > 0.5) { res.choice[i] = static_cast<int>(s); break; }
    }
  }
  finish_choice(res);
  return res;
}

constexpr size_t kMaxFrontPoints = 32;
constexpr double kEnumerateCombinations = 2e4;  // sub-problems this small get an exact front

// A sub-problem's (cost, memory) Pareto points, cheapest first, by repeated solves with a
// tighter memory cap. `complete` is false when `max_points` cut the front short.
struct Front {
  std::vector<SubResult> points;
  bool complete = true;
  bool proven = true;
  int64_t ilps = 0, max_vars = 0, max_rows = 0;
};

Front pareto_front(const Prepared& p, const std::vector<int>& subset, const std::vector<int>& fixed,
                   int64_t mem_cap, const SubResult& cheapest, const SolveOptions& options) {
  Front f;
  auto solve = [&](int64_t cap, double price) {
    SubResult r = solve_subset(p, subset, fixed, cap, options, price);
    ++f.ilps;
    f.max_vars = std::max(f.max_vars, r.variables);
    f.max_rows = std::max(f.max_rows, r.constraints);
    f.proven = f.proven && r.proven_optimal;
    return r;
  };
  // Small sub-problems: enumerate every combination for the exact front (capped ILPs are
  // slow for CBC, enumeration of a few thousand combinations is not).
  double combos = 1;
  for (int g : subset) combos *= static_cast<double>(p.node_cost[g].size());
  if (combos <= kEnumerateCombinations) {
    const size_t n = subset.size();
    const LocalProblem lp = local_problem(p, subset, fixed);
    const std::vector<std::vector<double>>& cost = lp.cost;
    // (cost, memory, combination index) of every combination within the cap; choices are
    // decoded for the front's points only.
    struct Combo { double cost; int64_t memory; uint64_t index; };
    std::vector<Combo> all;
    all.reserve(static_cast<size_t>(combos));
    for_each_combination(p, subset, lp, cost, [&](const std::vector<int>&, double c, int64_t m, uint64_t index) {
      if (mem_cap < 0 || m <= mem_cap) all.push_back({c, m, index});
    });
    // Cheapest first; ties to the lowest combination (enumeration order is kept by stable sort).
    std::stable_sort(all.begin(), all.end(), [](const Combo& a, const Combo& b) { return a.cost < b.cost; });
    int64_t last = std::numeric_limits<int64_t>::max();
    for (const Combo& cb : all) {
      if (cb.memory >= last) continue;
      last = cb.memory;
      SubResult r;
      r.feasible = true;
      r.cost = cb.cost;
      r.memory = cb.memory;
      r.choice.resize(n);
      uint64_t rest = cb.index;
      for (size_t i = 0; i < n; ++i) {
        const uint64_t radix = cost[i].size();
        r.choice[i] = static_cast<int>(rest % radix);
        rest /= radix;
      }
      f.points.push_back(std::move(r));
    }
    return f;
  }
  // Larger sub-problems: the supported points of the front, from the cheapest choice under a
  // rising memory price (Lagrangian); capped solves are much slower for CBC.
  f.complete = false;
  f.points.push_back(cheapest);
  int64_t lean_mem = 0;
  for (int g : subset) lean_mem += *std::min_element(p.memory[g].begin(), p.memory[g].end());
  if (cheapest.memory <= lean_mem) return f;
  // The price at which saving all the extra memory would pay for a cost of the same size.
  const double base = std::max(cheapest.cost, 1e-30) / static_cast<double>(cheapest.memory - lean_mem);
  for (int k = -4; k <= 8; k += 2) {  // prices a factor of 4 apart
    SubResult r = solve(-1, base * std::ldexp(1.0, k));
    if (!r.feasible) continue;
    bool dup = false;
    for (const SubResult& q : f.points) dup = dup || (q.memory == r.memory && q.cost == r.cost);
    if (!dup && r.memory < f.points.back().memory) f.points.push_back(std::move(r));
    if (f.points.back().memory <= lean_mem) break;
  }
  return f;
}

// Signature of a sub-problem: identical layers give bit-identical costs, so they share it.
uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  return h * 0x100000001b3ull;
}
uint64_t bits(double d) {
  uint64_t u;
  std::memcpy(&u, &d, sizeof u);
  return u;
}

struct Signature {
  uint64_t a = 0, b = 0;
  bool operator==(const Signature&) const = default;
};
struct SignatureHash {
  size_t operator()(const Signature& s) const { return static_cast<size_t>(s.a ^ (s.b * 31)); }
};

// A sub-problem's signature in two parts: what does not depend on the hubs' assignment (node
// costs, memory, edges inside the component, which boundary edges exist) is hashed once per
// component; the boundary edges' costs under an assignment are hashed per assignment.
struct ComponentShape {
  Signature inner;
  struct Boundary {
    int edge = 0;
    bool inside_from = false;  // the edge's `from` is in the component (`to` is a hub)
    int slots = 0;             // strategies of the inside endpoint
  };
  std::vector<Boundary> boundary;  // in the order the full hash visited them
};

ComponentShape component_shape(const Prepared& p, const std::vector<int>& subset) {
  ComponentShape out;
  uint64_t h1 = 1469598103934665603ull, h2 = 0x84222325cbf29ce4ull;
  auto add = [&](uint64_t v) { h1 = mix(h1, v); h2 = mix(h2 ^ 0x5bd1e995, v * 0xff51afd7ed558ccdull); };
  std::vector<int> local(p.node_cost.size(), -1);
  for (size_t i = 0; i < subset.size(); ++i) local[subset[i]] = static_cast<int>(i);
  add(subset.size());
  for (size_t i = 0; i < subset.size(); ++i) {
    const int g = subset[i];
    add(p.node_cost[g].size());
    for (double c : p.node_cost[g]) add(bits(c));
    for (int64_t m : p.memory[g]) add(static_cast<uint64_t>(m));
    for (int k : p.edges_of[g]) {
      const EdgeRef& e = p.edges[k];
      const int lf = local[e.from], lt = local[e.to];
      if (lf >= 0 && lt >= 0 && lf != static_cast<int>(i)) continue;  // inner edges once
      add(static_cast<uint64_t>(lf + 7) * 1000003u + static_cast<uint64_t>(lt + 7));
      if (lf >= 0 && lt >= 0) {
        for (int c : e.data->row_class) add(static_cast<uint64_t>(c));
        for (int c : e.data->col_class) add(static_cast<uint64_t>(c));
        for (const auto& row : e.data->cost) for (double c : row) add(bits(c));
      } else {
        out.boundary.push_back({k, lf >= 0, static_cast<int>(lf >= 0 ? e.data->row_class.size() : e.data->col_class.size())});
      }
    }
  }
  out.inner = {h1, h2};
  return out;
}

Signature signature(const Prepared& p, const ComponentShape& shape, const std::vector<int>& fixed) {
  uint64_t h1 = shape.inner.a, h2 = shape.inner.b;
  auto add = [&](uint64_t v) { h1 = mix(h1, v); h2 = mix(h2 ^ 0x5bd1e995, v * 0xff51afd7ed558ccdull); };
  for (const ComponentShape::Boundary& b : shape.boundary) {
    const EdgeRef& e = p.edges[static_cast<size_t>(b.edge)];
    for (int s = 0; s < b.slots; ++s) add(bits(b.inside_from ? e.at(s, fixed[e.to]) : e.at(fixed[e.from], s)));
  }
  return {h1, h2};
}

constexpr int64_t kMaxHubAssignments = 512;

bool is_lite(const StrategyGraph& sg) {
  return sg.training == nullptr;
}

void finish(SolveResult& res, const StrategyGraph& sg, const SubGraphEdges* sub) {
  if (is_lite(sg)) {  // a cost-only graph (a pipeline stage's part of a strategy graph)
    res.objective = sg.constant_cost;
    res.memory_bytes = 0;
    for (size_t g = 0; g < sg.groups.size(); ++g) {
      res.objective += sg.groups[g].cost[res.choice[g]];
      res.memory_bytes += sg.groups[g].memory[res.choice[g]];
    }
    if (sub) {
      for (const PreparedEdges::Edge& pe : sub->edges->edges) {
        const int from = sub->index_of[pe.source->from], to = sub->index_of[pe.source->to];
        if (from >= 0 && to >= 0) res.objective += pe.source->cost[res.choice[from]][res.choice[to]];
      }
    } else {
      for (const GroupEdge& e : sg.edges) res.objective += e.cost[res.choice[e.from]][res.choice[e.to]];
    }
    return;
  }
  res.objective = evaluate_objective(sg, res.choice);
  res.memory_bytes = evaluate_memory(sg, res.choice);
}

}  // namespace

struct SolveCache {
  std::mutex mutex;  // solves of several stages may share one cache
  std::unordered_map<Signature, SubResult, SignatureHash> cheapest;
  std::unordered_map<Signature, Front, SignatureHash> fronts;
};

std::shared_ptr<SolveCache> make_solve_cache() { return std::make_shared<SolveCache>(); }

SolveResult solve_strategy_graph(const StrategyGraph& sg, const SolveOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  SolveResult res;
  const size_t ng = sg.groups.size();
  ALPA_CHECK(!options.sub_graph || is_lite(sg), "sub-graph edges given for a full strategy graph");
  const Prepared p = prepare(sg, options.sub_graph);
  int64_t min_mem = 0;
  for (size_t g = 0; g < ng; ++g) min_mem += *std::min_element(p.memory[g].begin(), p.memory[g].end());
  res.min_memory_bytes = min_mem;
  const bool budgeted = options.memory_budget_bytes > 0;
  const int64_t budget = budgeted ? options.memory_budget_bytes : -1;
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  if (budgeted && min_mem > budget) {
    res.proven_optimal = true;
    res.solve_time_s = elapsed();
    return res;
  }
  auto note = [&](int64_t vars, int64_t rows) {
    ++res.ilps_solved;
    res.largest_variables = std::max(res.largest_variables, vars);
    res.largest_constraints = std::max(res.largest_constraints, rows);
    res.total_variables += vars;
    res.total_constraints += rows;
  };

  // Hubs: groups connected to many others (the residual stream of a transformer, which its
  // element-wise followers tie together across layers). Fixing them splits the rest into
  // independent components — one per layer part — and identical layers share one solve.
  std::vector<int> hubs;
  std::vector<bool> is_hub(ng, false);
  for (size_t g = 0; g < ng; ++g) {
    std::vector<int> nb;
    for (int k : p.edges_of[g]) nb.push_back(p.edges[k].from == static_cast<int>(g) ? p.edges[k].to : p.edges[k].from);
    std::sort(nb.begin(), nb.end());
    nb.erase(std::unique(nb.begin(), nb.end()), nb.end());
    if (nb.size() >= options.hub_degree && p.node_cost[g].size() > 1) {
      hubs.push_back(static_cast<int>(g));
      is_hub[g] = true;
    }
  }
  std::vector<std::vector<int>> components;
  {
    std::vector<int> comp(ng, -1);
    for (size_t g = 0; g < ng; ++g) {
      if (is_hub[g] || comp[g] >= 0) continue;
      std::vector<int> members, stack = {static_cast<int>(g)};
      comp[g] = static_cast<int>(components.size());
      while (!stack.empty()) {
        const int u = stack.back();
        stack.pop_back();
        members.push_back(u);
        for (int k : p.edges_of[u]) {
          const int v = p.edges[k].from == u ? p.edges[k].to : p.edges[k].from;
          if (is_hub[v] || comp[v] >= 0) continue;
          comp[v] = comp[g];
          stack.push_back(v);
        }
      }
      std::sort(members.begin(), members.end());
      components.push_back(std::move(members));
    }
  }
  double assignments = 1;
  for (int h : hubs) assignments *= static_cast<double>(p.node_cost[h].size());
  const bool decompose = options.decompose && !hubs.empty() && components.size() > 1 && assignments <= kMaxHubAssignments;

  if (!decompose) {
    std::vector<int> all(ng);
    for (size_t g = 0; g < ng; ++g) all[g] = static_cast<int>(g);
    const SubResult r = solve_subset(p, all, std::vector<int>(ng, -1), budget, options);
    note(r.variables, r.constraints);
    res.feasible = r.feasible;
    res.proven_optimal = r.proven_optimal;
    if (r.feasible) {
      res.choice = r.choice;
      finish(res, sg, options.sub_graph);
    }
    res.solve_time_s = elapsed();
    return res;
  }

  res.hubs = static_cast<int64_t>(hubs.size());
  res.components = static_cast<int64_t>(components.size());
  // Enumerate hub assignments (mixed radix, first hub fastest); for each, every component is
  // an independent sub-problem. Sub-problems are solved once per distinct signature.
  const size_t na = static_cast<size_t>(assignments);
  std::vector<std::vector<int>> fixed_of(na, std::vector<int>(ng, -1));
  for (size_t a = 0; a < na; ++a) {
    size_t rest = a;
    for (int h : hubs) {
      const size_t ns = p.node_cost[h].size();
      fixed_of[a][h] = static_cast<int>(rest % ns);
      rest /= ns;
    }
  }
  // Hub-only terms per assignment.
  std::vector<double> hub_cost(na, 0);
  std::vector<int64_t> hub_mem(na, 0);
  for (size_t a = 0; a < na; ++a) {
    for (int h : hubs) {
      hub_cost[a] += p.node_cost[h][fixed_of[a][h]];
      hub_mem[a] += p.memory[h][fixed_of[a][h]];
    }
    for (const EdgeRef& e : p.edges) {
      if (is_hub[e.from] && is_hub[e.to]) hub_cost[a] += e.at(fixed_of[a][e.from], fixed_of[a][e.to]);
    }
  }
  // Distinct sub-problems.
  std::unordered_map<Signature, size_t, SignatureHash> index;
  std::vector<std::pair<size_t, size_t>> task;  // (assignment, component) of the first occurrence
  std::vector<std::vector<size_t>> task_of(na, std::vector<size_t>(components.size()));
  std::vector<ComponentShape> shapes;
  for (const std::vector<int>& comp : components) shapes.push_back(component_shape(p, comp));
  for (size_t a = 0; a < na; ++a) {
    for (size_t c = 0; c < components.size(); ++c) {
      const Signature s = signature(p, shapes[c], fixed_of[a]);
      auto [it, inserted] = index.emplace(s, task.size());
      if (inserted) task.push_back({a, c});
      task_of[a][c] = it->second;
    }
  }
  // Phase 1: the cheapest point of every distinct sub-problem (memory capped by the budget
  // less what the hubs and the other components need at least).
  // Results are independent of the budget, so a cache carried across calls (the search
  // re-solves with a tighter budget) saves them all.
  std::vector<Signature> sig_of_task(task.size());
  for (const auto& [sig, t] : index) sig_of_task[t] = sig;
  SolveCache local_cache;
  SolveCache& cache = options.cache ? *options.cache : local_cache;
  std::vector<SubResult> cheapest(task.size());
  std::vector<size_t> todo;
  {
    std::lock_guard<std::mutex> lock(cache.mutex);
    for (size_t t = 0; t < task.size(); ++t) {
      auto it = cache.cheapest.find(sig_of_task[t]);
      if (it != cache.cheapest.end()) cheapest[t] = it->second;
      else todo.push_back(t);
    }
  }
  parallel_for_index(options.threads, todo.size(), [&](size_t q) {
    const auto [a, c] = task[todo[q]];
    cheapest[todo[q]] = solve_subset(p, components[c], fixed_of[a], -1, options);
  });
  {
    std::lock_guard<std::mutex> lock(cache.mutex);
    for (size_t t : todo) {
      note(cheapest[t].variables, cheapest[t].constraints);
      cache.cheapest.emplace(sig_of_task[t], cheapest[t]);
    }
  }
  std::vector<Front> fronts(task.size());
  std::vector<bool> have_front(task.size(), false);
  double best = std::numeric_limits<double>::infinity();
  size_t best_a = 0;
  std::vector<size_t> best_point;  // per component: index into the front (0 = cheapest)
  bool best_from_front = false;
  bool all_proven = true;
  for (const SubResult& r : cheapest) all_proven = all_proven && r.proven_optimal;
  // Assignments in order of their unconstrained optimum: once that bound reaches the best
  // feasible total, no later assignment can win.
  std::vector<double> unconstrained(na, 0);
  std::vector<int64_t> unconstrained_mem(na, 0);
  std::vector<bool> solvable(na, true);
  for (size_t a = 0; a < na; ++a) {
    unconstrained[a] = hub_cost[a];
    unconstrained_mem[a] = hub_mem[a];
    for (size_t c = 0; c < components.size(); ++c) {
      const SubResult& r = cheapest[task_of[a][c]];
      solvable[a] = solvable[a] && r.feasible;
      unconstrained[a] += r.cost;
      unconstrained_mem[a] += r.memory;
    }
  }
  std::vector<size_t> order(na);
  for (size_t a = 0; a < na; ++a) order[a] = a;
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return unconstrained[x] < unconstrained[y]; });
  for (size_t a : order) {
    const double total = unconstrained[a];
    const int64_t mem = unconstrained_mem[a];
    if (total >= best) break;  // the unconstrained total bounds any capped one below
    if (!solvable[a]) continue;
    if (!budgeted || mem <= budget) {
      best = total;
      best_a = a;
      best_point.assign(components.size(), 0);
      best_from_front = false;
      continue;
    }
    // The budget binds: Pareto fronts of this assignment's sub-problems, then a multiple-choice
    // knapsack over them.
    std::vector<size_t> need;
    for (size_t c = 0; c < components.size(); ++c) {
      const size_t t = task_of[a][c];
      if (have_front[t]) continue;
      have_front[t] = true;
      std::lock_guard<std::mutex> lock(cache.mutex);
      auto it = cache.fronts.find(sig_of_task[t]);
      if (it != cache.fronts.end()) fronts[t] = it->second;
      else need.push_back(t);
    }
    std::sort(need.begin(), need.end());
    need.erase(std::unique(need.begin(), need.end()), need.end());
    parallel_for_index(options.threads, need.size(), [&](size_t q) {
      const auto [a0, c0] = task[need[q]];
      fronts[need[q]] = pareto_front(p, components[c0], fixed_of[a0], -1, cheapest[need[q]], options);
    });
    for (size_t t : need) {
      res.ilps_solved += fronts[t].ilps;
      res.largest_variables = std::max(res.largest_variables, fronts[t].max_vars);
      res.largest_constraints = std::max(res.largest_constraints, fronts[t].max_rows);
      std::lock_guard<std::mutex> lock(cache.mutex);
      cache.fronts.emplace(sig_of_task[t], fronts[t]);
    }
    for (size_t c = 0; c < components.size(); ++c) {
      const Front& f = fronts[task_of[a][c]];
      all_proven = all_proven && f.complete && f.proven;
    }
    // Multiple-choice knapsack over the fronts. Components with the same sub-problem share
    // one front, so the variables are counts: how many of them take each point.
    std::map<size_t, int64_t> multiplicity;  // task → components
    for (size_t c = 0; c < components.size(); ++c) ++multiplicity[task_of[a][c]];
    const double cap = static_cast<double>(budget - hub_mem[a]);
    if (cap < 0) continue;
    // The knapsack's LP relaxation (each front's lower convex hull, segments taken in order of
    // cost per byte saved, the last one fractionally) bounds this assignment from below: when
    // it cannot beat the best total, or cannot reach the budget at all, skip the ILP.
    {
      struct Segment { double slope, dcost, dmem; int64_t count; };
      std::vector<Segment> segs;
      double lp = hub_cost[a], used = 0;
      bool empty_front = false;
      for (const auto& [t, count] : multiplicity) {
        const auto& pts = fronts[t].points;
        if (pts.empty()) { empty_front = true; break; }
        // Hull from the cheapest point towards leaner ones.
        std::vector<size_t> hull = {0};
        size_t cur = 0;
        while (true) {
          size_t next = cur;
          double best_slope = std::numeric_limits<double>::infinity();
          for (size_t k = 0; k < pts.size(); ++k) {
            const double dm = static_cast<double>(pts[cur].memory - pts[k].memory);
            if (dm <= 0) continue;
            const double slope = (pts[k].cost - pts[cur].cost) / dm;
            if (slope < best_slope) { best_slope = slope; next = k; }
          }
          if (next == cur) break;
          segs.push_back({best_slope, pts[next].cost - pts[cur].cost, static_cast<double>(pts[cur].memory - pts[next].memory), count});
          cur = next;
        }
        lp += static_cast<double>(count) * pts[0].cost;
        used += static_cast<double>(count) * static_cast<double>(pts[0].memory);
      }
      if (empty_front) continue;
      std::stable_sort(segs.begin(), segs.end(), [](const Segment& x, const Segment& y) { return x.slope < y.slope; });
      for (const Segment& sg : segs) {
        if (used <= cap) break;
        const double need = (used - cap) / sg.dmem;  // applications needed
        const double take = std::min(static_cast<double>(sg.count), need);
        lp += take * sg.dcost;
        used -= take * sg.dmem;
      }
      if (used > cap * (1 + 1e-12) + 1) continue;  // no choice fits
      if (lp >= best) continue;
    }
    ilp::MipRequest knap;
    ilp::Constraint memrow;
    memrow.upper = 1.0;
    std::map<size_t, int> v0;
    bool empty = false;
    for (const auto& [t, count] : multiplicity) {
      const Front& f = fronts[t];
      if (f.points.empty()) { empty = true; break; }
      v0[t] = static_cast<int>(knap.vars.size());
      ilp::Constraint one;
      one.lower = one.upper = static_cast<double>(count);
      for (size_t k = 0; k < f.points.size(); ++k) {
        knap.vars.push_back({count == 1 ? ilp::VarType::kBinary : ilp::VarType::kInteger, 0, static_cast<double>(count), f.points[k].cost});
        one.terms.push_back({static_cast<int32_t>(v0[t] + k), 1});
        memrow.terms.push_back({static_cast<int32_t>(v0[t] + k), static_cast<double>(f.points[k].memory) / std::max(1.0, cap)});
      }
      knap.rows.push_back(std::move(one));
    }
    if (empty) continue;
    double kmax = 0;
    for (const auto& v : knap.vars) kmax = std::max(kmax, std::abs(v.cost));
    for (auto& v : knap.vars) v.cost *= kmax > 0 ? 1e3 / kmax : 1.0;
    knap.rows.push_back(std::move(memrow));
    // Greedy start: every component at its cheapest point, then one component at a time to
    // its next leaner point, best cost per byte saved first, until the budget holds.
    {
      std::map<size_t, std::vector<int64_t>> counts;
      int64_t used = 0;
      for (const auto& [t, count] : multiplicity) {
        counts[t].assign(fronts[t].points.size(), 0);
        counts[t][0] = count;
        used += count * fronts[t].points[0].memory;
      }
      while (static_cast<double>(used) > cap) {
        double best_ratio = std::numeric_limits<double>::infinity();
        size_t bt = 0, bk = 0;
        for (const auto& [t, cnt] : counts) {
          const auto& pts = fronts[t].points;
          for (size_t k = 0; k + 1 < pts.size(); ++k) {
            if (cnt[k] == 0) continue;
            const double saved = static_cast<double>(pts[k].memory - pts[k + 1].memory);
            const double ratio = (pts[k + 1].cost - pts[k].cost) / std::max(saved, 1.0);
            if (ratio < best_ratio) { best_ratio = ratio; bt = t; bk = k; }
            break;  // the leanest-so-far unit of this task moves first
          }
        }
        if (!std::isfinite(best_ratio)) break;
        --counts[bt][bk];
        ++counts[bt][bk + 1];
        used -= fronts[bt].points[bk].memory - fronts[bt].points[bk + 1].memory;
      }
      if (static_cast<double>(used) <= cap) {
        knap.initial_solution.assign(knap.vars.size(), 0.0);
        for (const auto& [t, cnt] : counts) {
          for (size_t k = 0; k < cnt.size(); ++k) knap.initial_solution[v0[t] + k] = static_cast<double>(cnt[k]);
        }
      }
    }
    knap.max_nodes = std::min<int64_t>(options.max_nodes, 5000);
    knap.safety_time_limit_s = options.time_limit_s;
    ilp::MipResult kr;
    if (!options.exact_knapsack) {
      // The greedy point (stage costing of the inter-op pass: thousands of these, near-optimal
      // is enough); no greedy point: nothing fits this assignment.
      if (knap.initial_solution.empty()) continue;
      kr.status = ilp::MipStatus::kFeasible;
      kr.values = knap.initial_solution;
      all_proven = false;
    } else {
      kr = ilp::solve(knap);
      note(static_cast<int64_t>(knap.vars.size()), static_cast<int64_t>(knap.rows.size()));
      all_proven = all_proven && (kr.proven_optimal || kr.status == ilp::MipStatus::kInfeasible);
    }
    if (kr.status != ilp::MipStatus::kOptimal && kr.status != ilp::MipStatus::kFeasible) continue;
    // Hand the counted points out to the components in order (cheapest points first).
    std::vector<size_t> pick(components.size(), 0);
    std::map<size_t, std::vector<int64_t>> left;
    for (const auto& [t, count] : multiplicity) {
      auto& l = left[t];
      for (size_t k = 0; k < fronts[t].points.size(); ++k) l.push_back(static_cast<int64_t>(std::llround(kr.values[v0[t] + k])));
    }
    double t2 = hub_cost[a];
    int64_t m2 = hub_mem[a];
    for (size_t c = 0; c < components.size(); ++c) {
      const size_t t = task_of[a][c];
      const Front& f = fronts[t];
      auto& l = left[t];
      size_t k = 0;
      while (k + 1 < l.size() && l[k] <= 0) ++k;
      --l[k];
      pick[c] = k;
      t2 += f.points[k].cost;
      m2 += f.points[k].memory;
    }
    if (m2 <= budget && t2 < best) {
      best = t2;
      best_a = a;
      best_point = pick;
      best_from_front = true;
    }
  }
  res.proven_optimal = all_proven;
  if (best_point.empty()) {
    res.feasible = false;
    res.solve_time_s = elapsed();
    return res;
  }
  res.feasible = true;
  res.choice.assign(ng, 0);
  for (int h : hubs) res.choice[h] = fixed_of[best_a][h];
  for (size_t c = 0; c < components.size(); ++c) {
    const size_t t = task_of[best_a][c];
    const SubResult& r = best_from_front ? fronts[t].points[best_point[c]] : cheapest[t];
    for (size_t i = 0; i < components[c].size(); ++i) res.choice[components[c][i]] = r.choice[i];
  }
  finish(res, sg, options.sub_graph);
  res.solve_time_s = elapsed();
  return res;
}

IlpSize monolithic_ilp_size(const StrategyGraph& sg) {
  const Prepared p = prepare(sg);
  IlpSize out;
  out.groups = static_cast<int64_t>(sg.groups.size());
  for (const auto& c : p.node_cost) out.variables += static_cast<int64_t>(c.size());
  out.constraints = out.groups + 1;  // one-hot rows and the memory row
  for (const EdgeRef& e : p.edges) {
    out.variables += static_cast<int64_t>(e.data->cost.size() * e.data->cost[0].size());
    out.constraints += static_cast<int64_t>(e.data->cost.size() + e.data->cost[0].size());
  }
  return out;
}

SolveResult brute_force(const StrategyGraph& sg, int64_t budget, int64_t limit) {
  const size_t ng = sg.groups.size();
  double combos = 1;
  for (const Group& g : sg.groups) combos *= static_cast<double>(g.num_strategies());
  ALPA_CHECK(combos <= static_cast<double>(limit), "too many combinations for brute force");
  SolveResult best;
  std::vector<int> choice(ng, 0);
  best.objective = std::numeric_limits<double>::infinity();
  while (true) {
    const int64_t mem = evaluate_memory(sg, choice);
    if (budget <= 0 || mem <= budget) {
      const double obj = evaluate_objective(sg, choice);
      if (obj < best.objective - 1e-12 * std::max(1.0, std::abs(obj))) {
        best.objective = obj;
        best.choice = choice;
        best.memory_bytes = mem;
        best.feasible = true;
      }
    }
    size_t g = 0;
    for (; g < ng; ++g) {
      if (++choice[g] < static_cast<int>(sg.groups[g].num_strategies())) break;
      choice[g] = 0;
    }
    if (g == ng) break;
  }
  best.proven_optimal = true;
  return best;
}

}  // namespace alpa
