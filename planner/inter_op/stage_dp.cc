#include "planner/inter_op/stage_dp.h"

#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "planner/common/error.h"

namespace alpa {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

int stage_limit(const StageDpInput& in) {
  int64_t s = std::min<int64_t>(in.layers, in.devices);
  if (in.max_stages > 0) s = std::min<int64_t>(s, in.max_stages);
  return static_cast<int>(s);
}

// Least Σ latency with every stage within t_max, for a fixed t_max.
StageDpResult dp_for(const StageDpInput& in, double t_max) {
  const int L = in.layers;
  const int64_t N = in.devices;
  const int M = static_cast<int>(in.mesh_sizes.size());
  const int S = stage_limit(in);
  // F[s][i][d]: layers [i, L) in s stages on exactly d devices.
  const size_t stride_i = static_cast<size_t>(N + 1), stride_s = static_cast<size_t>(L + 1) * stride_i;
  std::vector<double> F(static_cast<size_t>(S + 1) * stride_s, kInf);
  std::vector<int> arg_j(F.size(), -1), arg_m(F.size(), -1);
  auto idx = [&](int s, int i, int64_t d) { return static_cast<size_t>(s) * stride_s + static_cast<size_t>(i) * stride_i + static_cast<size_t>(d); };
  F[idx(0, L, 0)] = 0;
  for (int s = 1; s <= S; ++s) {
    for (int i = L - 1; i >= 0; --i) {
      for (int64_t d = 1; d <= N; ++d) {
        double best = kInf;
        int bj = -1, bm = -1;
        for (int j = i + 1; j <= L; ++j) {
          for (int m = 0; m < M; ++m) {
            const int64_t size = in.mesh_sizes[m];
            if (size > d) continue;
            const double rest = F[idx(s - 1, j, d - size)];
            if (rest == kInf) continue;
            const int64_t inflight = inflight_of(in.schedule, 0, s, in.microbatches);
            const double c = in.at(i, j, m, inflight);
            if (!(c <= t_max)) continue;
            if (c + rest < best) { best = c + rest; bj = j; bm = m; }
          }
        }
        F[idx(s, i, d)] = best;
        arg_j[idx(s, i, d)] = bj;
        arg_m[idx(s, i, d)] = bm;
      }
    }
  }
  StageDpResult r;
  int best_s = -1;
  for (int s = 1; s <= S; ++s) {
    const double v = F[idx(s, 0, N)];
    if (v < kInf && (best_s < 0 || v < F[idx(best_s, 0, N)])) best_s = s;
  }
  if (best_s < 0) return r;
  r.found = true;
  r.t_max = t_max;
  double sum = 0, mx = 0;
  int i = 0;
  int64_t d = N;
  for (int s = best_s; s >= 1; --s) {
    const int j = arg_j[idx(s, i, d)], m = arg_m[idx(s, i, d)];
    DpStage st;
    st.first = i;
    st.end = j;
    st.mesh = m;
    st.inflight = inflight_of(in.schedule, 0, s, in.microbatches);
    st.latency_s = in.at(i, j, m, st.inflight);
    sum += st.latency_s;
    mx = std::max(mx, st.latency_s);
    r.stages.push_back(st);
    d -= in.mesh_sizes[m];
    i = j;
  }
  r.objective = sum + static_cast<double>(in.microbatches - 1) * mx;
  return r;
}

}  // namespace

const char* schedule_name(Schedule s) { return s == Schedule::kGPipe ? "gpipe" : "1f1b"; }

int64_t inflight_of(Schedule schedule, int stage, int stages, int64_t microbatches) {
  if (schedule == Schedule::kGPipe) return microbatches;
  return std::min<int64_t>(stages - stage, microbatches);
}

double StageDpInput::at(int i, int j, int m, int64_t inflight) const {
  if (inflight > max_inflight) return kInf;
  const int64_t f = std::max<int64_t>(inflight, 1);
  const size_t M = mesh_sizes.size();
  return cost[((static_cast<size_t>(i) * (layers + 1) + j) * M + m) * (max_inflight + 1) + f];
}

StageDpResult stage_dp(const StageDpInput& in, int threads) {
  ALPA_CHECK(in.layers > 0 && in.devices > 0, "stage DP without layers or devices");
  // Candidate t_max: every distinct finite stage latency, ascending.
  std::vector<double> cand;
  for (double c : in.cost) if (std::isfinite(c)) cand.push_back(c);
  std::sort(cand.begin(), cand.end());
  cand.erase(std::unique(cand.begin(), cand.end()), cand.end());
  StageDpResult best;
  if (cand.empty()) return best;
  // Least Σ latency with no t_max: a lower bound on Σ for every t_max.
  const StageDpResult free = dp_for(in, kInf);
  if (!free.found) return best;
  best = free;
  int64_t tried = 1;
  if (in.microbatches <= 1) {
    best.t_max_tried = tried;
    return best;
  }
  const double sum_lb = free.objective - static_cast<double>(in.microbatches - 1) * free.t_max;
  // The smallest feasible t_max (feasibility is monotone in t_max): binary search.
  size_t lo = 0, hi = cand.size() - 1;
  while (lo < hi) {
    const size_t mid = (lo + hi) / 2;
    ++tried;
    if (dp_for(in, cand[mid]).found) hi = mid; else lo = mid + 1;
  }
  // Ascending from there, in parallel chunks, until (B − 1) · t_max alone cannot win.
  const double B1 = static_cast<double>(in.microbatches - 1);
  const size_t chunk = static_cast<size_t>(std::max(1, threads)) * 4;
  tbb::task_arena arena(std::max(1, threads));
  for (size_t k = lo; k < cand.size(); k += chunk) {
    if (sum_lb + B1 * cand[k] >= best.objective) break;
    const size_t n = std::min(chunk, cand.size() - k);
    std::vector<StageDpResult> res(n);
    arena.execute([&] {
      tbb::parallel_for(size_t{0}, n, [&](size_t q) {
        if (sum_lb + B1 * cand[k + q] < best.objective) res[q] = dp_for(in, cand[k + q]);
      }, tbb::simple_partitioner());
    });
    tried += static_cast<int64_t>(n);
    for (size_t q = 0; q < n; ++q) {  // in t_max order: ties keep the smaller t_max
      if (res[q].found && res[q].objective < best.objective) best = res[q];
    }
  }
  best.t_max_tried = tried;
  return best;
}

StageDpResult stage_brute_force(const StageDpInput& in) {
  const int L = in.layers;
  const int S = stage_limit(in);
  StageDpResult best;
  std::vector<DpStage> cur;
  std::function<void(int, int64_t)> rec = [&](int i, int64_t left) {
    if (i == L) {
      if (left != 0 || cur.empty()) return;
      const int n = static_cast<int>(cur.size());
      double sum = 0, mx = 0;
      std::vector<DpStage> st = cur;
      for (int s = 0; s < n; ++s) {
        st[s].inflight = inflight_of(in.schedule, s, n, in.microbatches);
        st[s].latency_s = in.at(st[s].first, st[s].end, st[s].mesh, st[s].inflight);
        if (!std::isfinite(st[s].latency_s)) return;
        sum += st[s].latency_s;
        mx = std::max(mx, st[s].latency_s);
      }
      const double obj = sum + static_cast<double>(in.microbatches - 1) * mx;
      if (!best.found || obj < best.objective) {
        best.found = true;
        best.objective = obj;
        best.t_max = mx;
        best.stages = st;
      }
      return;
    }
    if (static_cast<int>(cur.size()) == S) return;
    for (int j = i + 1; j <= L; ++j) {
      for (size_t m = 0; m < in.mesh_sizes.size(); ++m) {
        if (in.mesh_sizes[m] > left) continue;
        cur.push_back({i, j, static_cast<int>(m), 1, 0});
        rec(j, left - in.mesh_sizes[m]);
        cur.pop_back();
      }
    }
  };
  rec(0, in.devices);
  return best;
}

ScheduleResult simulate_schedule(Schedule schedule, const std::vector<double>& fwd,
                                 const std::vector<double>& bwd, int64_t B) {
  const int S = static_cast<int>(fwd.size());
  ScheduleResult r;
  r.order.resize(S);
  r.start_s.resize(S);
  r.max_inflight.assign(S, 0);
  for (int s = 0; s < S; ++s) {
    auto& o = r.order[s];
    if (schedule == Schedule::kGPipe) {
      for (int64_t k = 0; k < B; ++k) o.push_back(k);
      for (int64_t k = 0; k < B; ++k) o.push_back(-k - 1);
    } else {
      const int64_t warm = std::min<int64_t>(S - s - 1, B);
      int64_t f = 0, b = 0;
      for (; f < warm; ++f) o.push_back(f);
      while (f < B) {  // steady state: one forward, one backward
        o.push_back(f++);
        o.push_back(-(b++) - 1);
      }
      while (b < B) o.push_back(-(b++) - 1);
    }
  }
  // Event simulation: forward k on stage s needs forward k on s−1; backward k on s needs
  // backward k on s+1 (and its own forward k). Each stage runs its list in order.
  std::vector<std::vector<double>> fdone(S, std::vector<double>(B, -1)), bdone(S, std::vector<double>(B, -1));
  std::vector<size_t> pos(S, 0);
  std::vector<double> free_at(S, 0);
  size_t remaining = 0;
  for (int s = 0; s < S; ++s) remaining += r.order[s].size();
  while (remaining > 0) {
    bool progressed = false;
    for (int s = 0; s < S; ++s) {
      while (pos[s] < r.order[s].size()) {
        const int64_t e = r.order[s][pos[s]];
        double ready;
        if (e >= 0) {
          if (s > 0 && fdone[s - 1][e] < 0) break;
          ready = s > 0 ? fdone[s - 1][e] : 0;
        } else {
          const int64_t k = -e - 1;
          if (s + 1 < S && bdone[s + 1][k] < 0) break;
          if (fdone[s][k] < 0) break;
          ready = std::max(fdone[s][k], s + 1 < S ? bdone[s + 1][k] : 0.0);
        }
        const double start = std::max(ready, free_at[s]);
        r.start_s[s].push_back(start);
        const double end = start + (e >= 0 ? fwd[s] : bwd[s]);
        free_at[s] = end;
        if (e >= 0) fdone[s][e] = end; else bdone[s][-e - 1] = end;
        ++pos[s];
        --remaining;
        progressed = true;
      }
    }
    ALPA_CHECK(progressed, "pipeline schedule deadlocked");
  }
  for (int s = 0; s < S; ++s) {
    r.makespan_s = std::max(r.makespan_s, free_at[s]);
    int64_t live = 0;
    for (int64_t e : r.order[s]) {
      live += e >= 0 ? 1 : -1;
      r.max_inflight[s] = std::max(r.max_inflight[s], live);
    }
  }
  return r;
}

}  // namespace alpa
