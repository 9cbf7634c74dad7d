#include "planner/intra_op/min_sum.h"

#include <algorithm>
#include <cstddef>
#include <limits>

#include "planner/common/error.h"

namespace alpa {
namespace {

// A cost table over some variables: entry Σ_k choice[scope[k]] · stride[k] (last variable
// fastest).
struct Factor {
  std::vector<int> scope;  // ascending
  std::vector<size_t> stride;
  std::vector<double> table;
  bool alive = true;
};

void set_strides(Factor& f, const std::vector<size_t>& sizes) {
  f.stride.assign(f.scope.size(), 1);
  size_t s = 1;
  for (size_t k = f.scope.size(); k-- > 0;) {
    f.stride[k] = s;
    s *= sizes[f.scope[k]];
  }
}

// What eliminating a variable leaves behind: its best choice for every assignment of the
// variables it was tied to, to be read back once they are chosen.
struct Eliminated {
  int var = 0;
  std::vector<int> scope;
  std::vector<size_t> stride;
  std::vector<int> argmin;
};

// The elimination order: each step the variable whose elimination builds the smallest table
// (ties: fewest neighbours, then the lowest index). Empty when some table would exceed the limits.
std::vector<int> elimination_order(const MinSumProblem& pr, const std::vector<size_t>& sizes, double max_table,
                                   double max_work) {
  const size_t n = sizes.size();
  std::vector<std::vector<int>> nb(n);
  for (const MinSumProblem::Pair& q : pr.pairs) {
    nb[q.a].push_back(q.b);
    nb[q.b].push_back(q.a);
  }
  for (auto& v : nb) {
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
  }
  std::vector<bool> done(n, false);
  std::vector<int> order;
  order.reserve(n);
  double work = 0;
  for (size_t step = 0; step < n; ++step) {
    int best = -1;
    double best_table = 0;
    for (size_t v = 0; v < n; ++v) {
      if (done[v]) continue;
      double t = 1;
      for (int u : nb[v]) t *= static_cast<double>(sizes[u]);
      if (best < 0 || t < best_table || (t == best_table && nb[v].size() < nb[best].size())) {
        best = static_cast<int>(v);
        best_table = t;
      }
    }
    if (best_table > max_table) return {};
    work += best_table * static_cast<double>(sizes[best]) * static_cast<double>(nb[best].size() + 1);
    if (work > max_work) return {};
    done[best] = true;
    order.push_back(best);
    // Its neighbours become one clique.
    const std::vector<int> around = nb[best];
    for (int u : around) {
      auto& l = nb[u];
      l.erase(std::remove(l.begin(), l.end(), best), l.end());
      for (int w : around) {
        if (w != u) l.push_back(w);
      }
      std::sort(l.begin(), l.end());
      l.erase(std::unique(l.begin(), l.end()), l.end());
    }
    nb[best].clear();
  }
  return order;
}

}  // namespace

std::optional<MinSumResult> minimize_min_sum(const MinSumProblem& pr, double max_table, double max_work) {
  const size_t n = pr.unary.size();
  std::vector<size_t> sizes(n);
  for (size_t v = 0; v < n; ++v) {
    ALPA_CHECK(!pr.unary[v].empty(), "min-sum variable without choices");
    sizes[v] = pr.unary[v].size();
  }
  const std::vector<int> order = elimination_order(pr, sizes, max_table, max_work);
  if (order.size() != n) return std::nullopt;

  std::vector<Factor> factors;
  std::vector<std::vector<size_t>> factors_of(n);  // per variable: factors whose scope holds it
  auto add = [&](Factor f) {
    set_strides(f, sizes);
    for (int v : f.scope) factors_of[v].push_back(factors.size());
    factors.push_back(std::move(f));
  };
  for (size_t v = 0; v < n; ++v) add(Factor{{static_cast<int>(v)}, {}, pr.unary[v]});
  for (const MinSumProblem::Pair& q : pr.pairs) {
    ALPA_CHECK(q.a != q.b && q.cost.size() == sizes[q.a] * sizes[q.b], "malformed min-sum pair term");
    Factor f;
    if (q.a < q.b) {
      f.scope = {q.a, q.b};
      f.table = q.cost;
    } else {  // transpose into ascending scope order
      f.scope = {q.b, q.a};
      f.table.resize(q.cost.size());
      for (size_t i = 0; i < sizes[q.a]; ++i) {
        for (size_t j = 0; j < sizes[q.b]; ++j) f.table[j * sizes[q.a] + i] = q.cost[i * sizes[q.b] + j];
      }
    }
    add(std::move(f));
  }

  std::vector<Eliminated> trail;
  trail.reserve(n);
  double constant = 0;
  for (int v : order) {
    std::vector<size_t> bucket;
    for (size_t f : factors_of[v]) {
      if (factors[f].alive) bucket.push_back(f);
    }
    Factor out;
    for (size_t f : bucket) {
      for (int u : factors[f].scope) {
        if (u != v) out.scope.push_back(u);
      }
    }
    std::sort(out.scope.begin(), out.scope.end());
    out.scope.erase(std::unique(out.scope.begin(), out.scope.end()), out.scope.end());
    set_strides(out, sizes);
    size_t entries = 1;
    for (int u : out.scope) entries *= sizes[u];
    // Each bucket factor's stride along every variable of the new scope, and along v.
    const size_t ns = out.scope.size();
    const size_t nf = bucket.size();
    std::vector<size_t> along(nf * ns, 0), along_v(nf, 0);
    for (size_t b = 0; b < nf; ++b) {
      const Factor& f = factors[bucket[b]];
      for (size_t k = 0; k < f.scope.size(); ++k) {
        if (f.scope[k] == v) {
          along_v[b] = f.stride[k];
          continue;
        }
        const size_t pos = static_cast<size_t>(std::lower_bound(out.scope.begin(), out.scope.end(), f.scope[k]) - out.scope.begin());
        along[b * ns + pos] = f.stride[k];
      }
    }
    out.table.assign(entries, 0);
    Eliminated el;
    el.var = v;
    el.argmin.assign(entries, 0);
    std::vector<size_t> digit(ns, 0), offset(nf, 0);
    const size_t sv = sizes[v];
    for (size_t e = 0; e < entries; ++e) {
      // The entry's index in `out` follows the odometer (last variable fastest).
      double best = std::numeric_limits<double>::infinity();
      int arg = 0;
      for (size_t x = 0; x < sv; ++x) {
        double s = 0;
        for (size_t b = 0; b < nf; ++b) s += factors[bucket[b]].table[offset[b] + x * along_v[b]];
        if (s < best) {
          best = s;
          arg = static_cast<int>(x);
        }
      }
      out.table[e] = best;
      el.argmin[e] = arg;
      for (size_t k = ns; k-- > 0;) {
        const size_t size_k = sizes[out.scope[k]];
        if (++digit[k] < size_k) {
          for (size_t b = 0; b < nf; ++b) offset[b] += along[b * ns + k];
          break;
        }
        digit[k] = 0;
        for (size_t b = 0; b < nf; ++b) offset[b] -= (size_k - 1) * along[b * ns + k];
      }
    }
    for (size_t f : bucket) {
      factors[f].alive = false;
      std::vector<double>().swap(factors[f].table);
    }
    el.scope = out.scope;
    el.stride = out.stride;
    trail.push_back(std::move(el));
    if (out.scope.empty()) {
      constant += out.table[0];
    } else {
      add(std::move(out));
    }
  }
  MinSumResult res;
  res.objective = constant;
  res.choice.assign(n, 0);
  for (size_t k = trail.size(); k-- > 0;) {
    const Eliminated& el = trail[k];
    size_t idx = 0;
    for (size_t q = 0; q < el.scope.size(); ++q) idx += static_cast<size_t>(res.choice[el.scope[q]]) * el.stride[q];
    res.choice[el.var] = el.argmin[idx];
  }
  return res;
}

}  // namespace alpa
