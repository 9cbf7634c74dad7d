#include "planner/inter_op/layers.h"

#include <algorithm>
#include <limits>
#include <optional>

#include "planner/common/error.h"
#include "planner/graph/op_cost.h"

namespace alpa {
namespace {

// cut[p]: activation bytes live between forward node p-1 and node p.
std::vector<int64_t> cut_bytes(const Graph& g, size_t nf) {
  const int64_t n = static_cast<int64_t>(nf);
  // Tensors that stand for parameters (their casts, transposes) are stored with the stage that
  // uses them; every other forward tensor read after a cut crosses it.
  std::vector<bool> param_like(g.num_tensors(), false);
  for (size_t t = 0; t < g.num_tensors(); ++t) {
    const TensorRole r = g.tensor(static_cast<TensorId>(t)).role;
    param_like[t] = r == TensorRole::kParameter || r == TensorRole::kBuffer || r == TensorRole::kConstant;
  }
  std::vector<int64_t> cut(n + 1, 0);  // cut[p]: bytes live between node p-1 and node p
  {
    std::vector<int64_t> diff(n + 2, 0);
    for (int64_t i = 0; i < n; ++i) {
      const Node& node = g.node(static_cast<NodeId>(i));
      bool from_params = !node.inputs.empty();
      for (TensorId t : node.inputs) from_params = from_params && param_like[t];
      for (TensorId t : node.outputs) {
        if (from_params) { param_like[t] = true; continue; }
        int64_t last = -1;
        for (NodeId c : g.tensor(t).consumers) {
          if (static_cast<int64_t>(c) < n) last = std::max<int64_t>(last, c);
        }
        if (last > i) {
          diff[i + 1] += g.tensor(t).bytes();
          diff[last + 1] -= g.tensor(t).bytes();
        }
      }
      // Model inputs (tokens, images, labels) are read where they are needed: not counted.
    }
    int64_t run = 0;
    for (int64_t p = 0; p <= n; ++p) {
      run += diff[p];
      cut[p] = run;
    }
  }
  return cut;
}

}  // namespace

Layers build_layers(const Graph& g, size_t nf, const LayerOptions& options) {
  const int64_t n = static_cast<int64_t>(nf);
  ALPA_CHECK(n > 0, "layer construction of an empty graph");
  std::vector<double> flops(n);
  std::vector<bool> heavy(n);
  std::vector<uint64_t> sig(n);
  for (int64_t i = 0; i < n; ++i) {
    const Node& node = g.node(static_cast<NodeId>(i));
    flops[i] = count_node(g, node).flops;
    heavy[i] = is_heavy_op(node.kind);
    sig[i] = node_signature(g, node);
  }
  const std::vector<int64_t> cut = cut_bytes(g, nf);
  // Candidate cuts: between two consecutive heavy ops, the position with the fewest bytes live
  // (the earliest on ties), so every layer holds at least one heavy op.
  std::vector<int64_t> heavy_at;
  for (int64_t i = 0; i < n; ++i) if (heavy[i]) heavy_at.push_back(i);
  std::vector<int64_t> cand;
  for (size_t k = 0; k + 1 < heavy_at.size(); ++k) {
    int64_t best = heavy_at[k] + 1;
    for (int64_t p = heavy_at[k] + 1; p <= heavy_at[k + 1]; ++p) {
      if (cut[p] < cut[best]) best = p;
    }
    cand.push_back(best);
  }
  const int64_t max_layers = static_cast<int64_t>(cand.size()) + 1;
  int64_t L = options.layers;
  if (L > max_layers) {
    throw UserError("--layers", std::to_string(L),
                    "the model has only " + std::to_string(max_layers) + " possible layers (one per heavy op)");
  }
  if (L <= 0) {
    const std::optional<RepeatedRun> run = longest_repeated_run(sig, heavy);
    const int64_t repeats = run ? run->repeats : 0;
    if (repeats >= 2) {
      L = 1;
      for (int64_t d = 1; d <= std::min<int64_t>(repeats, 16); ++d) if (repeats % d == 0) L = d;
    } else {
      L = std::min<int64_t>(16, max_layers);
    }
    L = std::min(L, max_layers);
  }
  // Prefix FLOPs; DP over candidate cuts: least total bytes crossing the L-1 cuts with every
  // layer's FLOPs within (1 + epsilon) of the mean (epsilon doubled until feasible); among equal
  // byte totals, the most even FLOPs (least sum of squared layer FLOPs).
  std::vector<double> pre(n + 1, 0);
  for (int64_t i = 0; i < n; ++i) pre[i + 1] = pre[i] + flops[i];
  const int64_t C = static_cast<int64_t>(cand.size());
  std::vector<int64_t> pos(C + 2);  // 0, candidates..., n
  pos[0] = 0;
  for (int64_t c = 0; c < C; ++c) pos[c + 1] = cand[c];
  pos[C + 1] = n;
  const int64_t P = C + 2;
  const double scale = pre[n] > 0 ? 1.0 / pre[n] : 1.0;
  struct Value {
    int64_t bytes = std::numeric_limits<int64_t>::max();
    double spread = 0;
    bool operator<(const Value& o) const {
      if (bytes != o.bytes) return bytes < o.bytes;
      return spread < o.spread * (1 - 1e-12);
    }
  };
  std::vector<int64_t> cuts;
  for (double eps = options.epsilon; cuts.empty(); eps *= 2) {
    const double cap = (1 + eps) * pre[n] / static_cast<double>(L) + 1e-9 * pre[n];
    // best[l][q]: layers 0..l-1 with the l-th ending at pos[q].
    std::vector<std::vector<Value>> best(L + 1, std::vector<Value>(P));
    std::vector<std::vector<int>> from(L + 1, std::vector<int>(P, -1));
    best[0][0] = {0, 0};
    for (int64_t l = 1; l <= L; ++l) {
      for (int64_t q = 1; q < P; ++q) {
        if ((l == L) != (q == P - 1)) continue;
        for (int64_t r = q - 1; r >= 0; --r) {
          const double f = pre[pos[q]] - pre[pos[r]];
          if (f > cap) break;
          const Value& prev = best[l - 1][r];
          if (prev.bytes == std::numeric_limits<int64_t>::max()) continue;
          const Value v{prev.bytes + (q == P - 1 ? 0 : cut[pos[q]]), prev.spread + (f * scale) * (f * scale)};
          if (v < best[l][q]) { best[l][q] = v; from[l][q] = static_cast<int>(r); }
        }
      }
    }
    if (best[L][P - 1].bytes == std::numeric_limits<int64_t>::max()) {
      if (eps > 1e6) throw UserError("--layers", std::to_string(L), "cannot cut the model into this many layers");
      continue;
    }
    std::vector<int64_t> ends;
    for (int64_t l = L, q = P - 1; l > 0; --l) {
      ends.push_back(pos[q]);
      q = from[l][q];
    }
    std::reverse(ends.begin(), ends.end());
    cuts = ends;
  }
  return layers_from_ends(g, nf, cuts);
}

Layers layers_from_ends(const Graph& g, size_t nf, const std::vector<int64_t>& cuts) {
  const int64_t n = static_cast<int64_t>(nf);
  const int64_t L = static_cast<int64_t>(cuts.size());
  const std::vector<int64_t> cut = cut_bytes(g, nf);
  std::vector<double> flops(n);
  std::vector<uint64_t> sig(n);
  for (int64_t i = 0; i < n; ++i) {
    flops[i] = count_node(g, g.node(static_cast<NodeId>(i))).flops;
    sig[i] = node_signature(g, g.node(static_cast<NodeId>(i)));
  }
  Layers out;
  out.layer_of_node.assign(n, 0);
  int64_t start = 0;
  for (int64_t l = 0; l < L; ++l) {
    out.first.push_back(start);
    out.end.push_back(cuts[l]);
    uint64_t h = 1469598103934665603ULL;
    double f = 0;
    for (int64_t i = start; i < cuts[l]; ++i) {
      out.layer_of_node[i] = static_cast<int>(l);
      h = (h ^ sig[i]) * 1099511628211ULL;
      f += flops[i];
    }
    out.signature.push_back(h);
    out.flops.push_back(f);
    out.boundary_bytes.push_back(l == 0 ? 0 : cut[start]);
    start = cuts[l];
  }
  return out;
}

int64_t repeated_block_count(const Graph& g, size_t nf) {
  const std::optional<RepeatedRun> run = longest_repeated_run(g, nf);
  return run ? run->repeats : 0;
}

}  // namespace alpa
