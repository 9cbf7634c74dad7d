#include "planner/sharding/letters.h"

#include <algorithm>
#include <map>

#include "planner/graph/shape_inference.h"

namespace alpa {
namespace {

class Builder {
 public:
  Builder(const Graph& g, const Node& n) : g_(g), n_(n) {
    space_.inputs.resize(n.inputs.size());
    space_.outputs.resize(n.outputs.size());
    for (size_t i = 0; i < n.inputs.size(); ++i) space_.inputs[i].assign(in(i).size(), kNoLetter);
    for (size_t o = 0; o < n.outputs.size(); ++o) space_.outputs[o].assign(out(o).size(), kNoLetter);
  }
  const Shape& in(size_t i) const { return g_.tensor(n_.inputs[i]).shape; }
  const Shape& out(size_t o) const { return g_.tensor(n_.outputs[o]).shape; }
  int64_t in_rank(size_t i) const { return static_cast<int64_t>(in(i).size()); }
  int64_t out_rank(size_t o) const { return static_cast<int64_t>(out(o).size()); }

  int letter(int64_t size, bool splittable = true) {
    space_.letters.push_back({size, splittable && size > 1, false, false});
    return static_cast<int>(space_.letters.size() - 1);
  }
  void set_in(size_t i, int64_t d, int l) { space_.inputs[i][d] = l; }
  void set_out(size_t o, int64_t d, int l) { space_.outputs[o][d] = l; }
  void unsplittable(int l) { if (l >= 0) space_.letters[l].splittable = false; }

  // Output dims of output 0 get letters; every input (and every other output of the same rank)
  // maps right-aligned, a broadcast dim (size 1 against a larger one) gets none.
  std::vector<int> elementwise(size_t num_inputs) {
    const int64_t r = out_rank(0);
    std::vector<int> ls(r);
    for (int64_t d = 0; d < r; ++d) {
      ls[d] = letter(out(0)[d]);
      set_out(0, d, ls[d]);
    }
    for (size_t o = 1; o < n_.outputs.size(); ++o) map_aligned_out(o, ls);
    for (size_t i = 0; i < std::min(num_inputs, n_.inputs.size()); ++i) map_aligned_in(i, ls);
    return ls;
  }
  void map_aligned_in(size_t i, const std::vector<int>& ls) {
    const int64_t r = static_cast<int64_t>(ls.size()), ri = in_rank(i);
    for (int64_t d = 0; d < ri; ++d) {
      const int64_t od = d + r - ri;
      if (od < 0) continue;
      if (ls[od] >= 0 && in(i)[d] == space_.letters[ls[od]].size) set_in(i, d, ls[od]);
    }
  }
  void map_aligned_out(size_t o, const std::vector<int>& ls) {
    const int64_t r = static_cast<int64_t>(ls.size()), ro = out_rank(o);
    for (int64_t d = 0; d < ro; ++d) {
      const int64_t od = d + r - ro;
      if (od < 0) continue;
      if (ls[od] >= 0 && out(o)[d] == space_.letters[ls[od]].size) set_out(o, d, ls[od]);
    }
  }

  IterationSpace take() { return std::move(space_); }
  IterationSpace& space() { return space_; }

 private:
  const Graph& g_;
  const Node& n_;
  IterationSpace space_;
};

int64_t norm_axis(int64_t axis, int64_t rank) { return axis < 0 ? axis + rank : axis; }

void matmul(Builder& b) {
  const int64_t ra = b.in_rank(0), rb = b.in_rank(1), ro = b.out_rank(0);
  const Shape& o = b.out(0);
  std::vector<int> ls(ro);
  for (int64_t d = 0; d < ro; ++d) {
    ls[d] = b.letter(o[d]);
    b.set_out(0, d, ls[d]);
  }
  const int k = b.letter(b.in(0)[ra - 1]);
  b.set_in(0, ra - 1, k);
  b.set_in(1, rb >= 2 ? rb - 2 : 0, k);
  int64_t batch_out = ro;  // output dims before m/n
  if (rb >= 2) { b.set_in(1, rb - 1, ls[ro - 1]); --batch_out; }
  if (ra >= 2) { b.set_in(0, ra - 2, ls[batch_out - 1]); --batch_out; }
  const int64_t ba = std::max<int64_t>(ra - 2, 0), bb = std::max<int64_t>(rb - 2, 0);
  for (int64_t d = 0; d < ba; ++d) {
    const int64_t od = d + batch_out - ba;
    if (b.in(0)[d] == o[od]) b.set_in(0, d, ls[od]);
  }
  for (int64_t d = 0; d < bb; ++d) {
    const int64_t od = d + batch_out - bb;
    if (b.in(1)[d] == o[od]) b.set_in(1, d, ls[od]);
  }
}

void gemm(Builder& b, const Node& n) {
  const bool ta = n.attrs.get_int("transA", 0) != 0, tb = n.attrs.get_int("transB", 0) != 0;
  const int m = b.letter(b.out(0)[0]), nn = b.letter(b.out(0)[1]);
  const int k = b.letter(b.in(0)[ta ? 0 : 1]);
  b.set_out(0, 0, m);
  b.set_out(0, 1, nn);
  b.set_in(0, ta ? 1 : 0, m);
  b.set_in(0, ta ? 0 : 1, k);
  b.set_in(1, tb ? 1 : 0, k);
  b.set_in(1, tb ? 0 : 1, nn);
  if (n.inputs.size() > 2) b.map_aligned_in(2, {m, nn});
}

bool einsum(Builder& b, const Node& n) {
  EinsumSpec spec;
  try {
    spec = parse_einsum(n.attrs.get_string("equation"), n.inputs.size());
  } catch (...) {
    return false;
  }
  std::map<char, int> ls;
  for (size_t i = 0; i < spec.inputs.size(); ++i) {
    for (size_t d = 0; d < spec.inputs[i].size(); ++d) {
      const char c = spec.inputs[i][d];
      if (!ls.count(c)) ls[c] = b.letter(b.in(i)[d]);
      if (b.in(i)[d] == b.space().letters[ls[c]].size) b.set_in(i, d, ls[c]);
    }
  }
  for (size_t d = 0; d < spec.output.size(); ++d) b.set_out(0, d, ls.at(spec.output[d]));
  return true;
}

void conv(Builder& b, const Node& n) {
  const int64_t r = b.in_rank(0);
  const bool grouped = n.attrs.get_int("group", 1) != 1;
  const int nl = b.letter(b.out(0)[0]);
  const int co = b.letter(b.out(0)[1], !grouped);
  const int ci = b.letter(b.in(1)[1], !grouped);
  b.set_in(0, 0, nl);
  b.set_out(0, 0, nl);
  b.set_out(0, 1, co);
  b.set_in(1, 0, co);
  if (!grouped) b.set_in(0, 1, ci);
  b.set_in(1, 1, ci);
  for (int64_t d = 2; d < r; ++d) b.set_out(0, d, b.letter(b.out(0)[d], false));
  if (n.inputs.size() > 2) b.set_in(2, 0, co);
}

// Reshape-like ops: group input and output dims into runs with equal products; the major dim
// of each run maps to one letter whose splits must divide both sides' major sizes.
void reshape(Builder& b) {
  const Shape& x = b.in(0);
  const Shape& y = b.out(0);
  size_t i = 0, j = 0;
  auto skip_ones = [&](const Shape& s, size_t& p) { while (p < s.size() && s[p] == 1) ++p; };
  while (true) {
    skip_ones(x, i);
    skip_ones(y, j);
    if (i >= x.size() || j >= y.size()) break;
    const size_t mi = i, mj = j;
    int64_t px = x[i++], py = y[j++];
    while (px != py) {
      if (px < py) {
        if (i >= x.size()) return;
        px *= x[i++];
      } else {
        if (j >= y.size()) return;
        py *= y[j++];
      }
    }
    const int64_t size = std::min(x[mi], y[mj]);
    const int l = b.letter(size);
    if (x[mi] != y[mj] || i - mi > 1 || j - mj > 1) b.space().letters[l].must_divide = true;
    if (x[mi] % size == 0 && y[mj] % size == 0) {
      b.set_in(0, mi, l);
      b.set_out(0, mj, l);
    }
  }
}

void reduce(Builder& b, const Node& n) {
  const int64_t r = b.in_rank(0);
  std::vector<int64_t> axes = n.attrs.get_ints("axes", {});
  const bool keep = n.attrs.get_int("keepdims", 1) != 0;
  std::vector<bool> reduced(r, axes.empty() && n.attrs.get_int("noop_with_empty_axes", 0) == 0);
  for (int64_t a : axes) {
    const int64_t d = norm_axis(a, r);
    if (d >= 0 && d < r) reduced[d] = true;
  }
  int64_t od = 0;
  for (int64_t d = 0; d < r; ++d) {
    const int l = b.letter(b.in(0)[d]);
    b.set_in(0, d, l);
    if (!reduced[d]) {
      if (od < b.out_rank(0)) b.set_out(0, od, l);
      ++od;
    } else if (keep) {
      ++od;
    }
  }
  if (n.kind == OpKind::kReduceMax) b.space().reduction = Reduction::kMax;
}

void gather(Builder& b, const Node& n) {
  const int64_t rd = b.in_rank(0), ri = b.in_rank(1);
  const int64_t axis = norm_axis(n.attrs.get_int("axis", 0), rd);
  int64_t od = 0;
  for (int64_t d = 0; d < rd; ++d) {
    if (d == axis) {
      b.set_in(0, d, b.letter(b.in(0)[d]));  // the looked-up axis: split = masked lookup + sum
      for (int64_t k = 0; k < ri; ++k) {
        const int l = b.letter(b.in(1)[k]);
        b.set_in(1, k, l);
        b.set_out(0, od++, l);
      }
    } else {
      const int l = b.letter(b.in(0)[d]);
      b.set_in(0, d, l);
      b.set_out(0, od++, l);
    }
  }
}

void cross_entropy(Builder& b, const Node& n) {
  const Shape& s = b.in(0);
  const int nl = b.letter(s[0]);
  const int cl = b.letter(s[1]);
  b.set_in(0, 0, nl);
  b.set_in(0, 1, cl);
  b.set_in(1, 0, nl);
  std::vector<int> rest;
  for (size_t d = 2; d < s.size(); ++d) {
    rest.push_back(b.letter(s[d]));
    b.set_in(0, d, rest.back());
    b.set_in(1, d - 1, rest.back());
  }
  if (n.inputs.size() > 2) b.set_in(2, 0, cl);
  if (b.out_rank(0) > 0) {  // reduction "none": per-sample losses
    b.set_out(0, 0, nl);
    for (size_t d = 0; d < rest.size(); ++d) b.set_out(0, d + 1, rest[d]);
  }
  for (size_t o = 1; o < n.outputs.size(); ++o) {  // log-probabilities, like the scores
    for (int64_t d = 0; d < b.out_rank(o); ++d) b.set_out(o, d, b.space().inputs[0][d]);
  }
  // Vocab-parallel softmax: each sample's max and sum of exponentials are all-reduced.
  b.space().stats_bytes.assign(b.space().letters.size(), 0);
  b.space().stats_bytes[cl] = 2.0 * 4.0 * static_cast<double>(num_elements(b.in(1)));
}

}  // namespace

IterationSpace iteration_space(const Graph& g, NodeId id, const std::vector<int>& batch_dim) {
  const Node& n = g.node(id);
  Builder b(g, n);
  const size_t ni = n.inputs.size();
  switch (n.kind) {
    case OpKind::kAdd: case OpKind::kSub: case OpKind::kMul: case OpKind::kDiv:
    case OpKind::kPow: case OpKind::kSqrt: case OpKind::kNeg: case OpKind::kExp:
    case OpKind::kLog: case OpKind::kErf: case OpKind::kTanh: case OpKind::kRelu:
    case OpKind::kSigmoid: case OpKind::kWhere: case OpKind::kEqual: case OpKind::kLess:
    case OpKind::kGreater: case OpKind::kNot: case OpKind::kCast: case OpKind::kClip:
    case OpKind::kIdentity: case OpKind::kDropout:
      b.elementwise(ni);
      break;
    case OpKind::kExpand:
      b.elementwise(1);
      break;
    case OpKind::kMatMul: matmul(b); break;
    case OpKind::kGemm: gemm(b, n); break;
    case OpKind::kEinsum:
      if (!einsum(b, n)) return IterationSpace{{}, std::vector<std::vector<int>>(ni),
                                              std::vector<std::vector<int>>(n.outputs.size())};
      break;
    case OpKind::kConv: conv(b, n); break;
    case OpKind::kSoftmax: case OpKind::kLogSoftmax: {
      const auto ls = b.elementwise(1);
      b.unsplittable(ls[norm_axis(n.attrs.get_int("axis", -1), b.out_rank(0))]);
      break;
    }
    case OpKind::kLayerNormalization: {
      const auto ls = b.elementwise(1);
      const int64_t axis = norm_axis(n.attrs.get_int("axis", -1), b.out_rank(0));
      for (int64_t d = axis; d < b.out_rank(0); ++d) b.unsplittable(ls[d]);
      for (size_t i = 1; i < ni; ++i) b.map_aligned_in(i, ls);
      break;
    }
    case OpKind::kBatchNormalization: {
      const auto ls = b.elementwise(1);
      for (size_t i = 1; i < ni; ++i) b.set_in(i, 0, ls[1]);
      for (size_t o = 1; o < n.outputs.size(); ++o) {
        b.space().outputs[o].assign(b.out_rank(o), kNoLetter);
        if (b.out_rank(o) == 1) b.set_out(o, 0, ls[1]);
      }
      // Synchronised statistics: mean and variance forward, two sums backward, per channel,
      // exchanged as fp64 sums (fp32 partial sums lose enough to change training noticeably
      // within ten steps).
      b.space().stats_bytes.assign(b.space().letters.size(), 0);
      const double c_bytes = 8.0 * static_cast<double>(b.in(0)[1]);
      for (size_t d = 0; d < ls.size(); ++d) {
        if (d != 1) b.space().stats_bytes[ls[d]] = 4 * c_bytes;
      }
      break;
    }
    case OpKind::kMaxPool: case OpKind::kAveragePool: case OpKind::kGlobalAveragePool: {
      const int nl = b.letter(b.out(0)[0]), cl = b.letter(b.out(0)[1]);
      b.set_in(0, 0, nl); b.set_in(0, 1, cl); b.set_out(0, 0, nl); b.set_out(0, 1, cl);
      for (size_t o = 1; o < n.outputs.size(); ++o) {
        if (b.out_rank(o) >= 2) { b.set_out(o, 0, nl); b.set_out(o, 1, cl); }
      }
      break;
    }
    case OpKind::kReshape: case OpKind::kFlatten: case OpKind::kSqueeze: case OpKind::kUnsqueeze:
      reshape(b);
      break;
    case OpKind::kTranspose: {
      const int64_t r = b.in_rank(0);
      std::vector<int64_t> perm = n.attrs.get_ints("perm", {});
      if (perm.empty()) for (int64_t d = r - 1; d >= 0; --d) perm.push_back(d);
      for (int64_t d = 0; d < r; ++d) {
        const int l = b.letter(b.in(0)[perm[d]]);
        b.set_out(0, d, l);
        b.set_in(0, perm[d], l);
      }
      break;
    }
    case OpKind::kConcat: {
      const auto ls = b.elementwise(0);
      const int64_t axis = norm_axis(n.attrs.get_int("axis"), b.out_rank(0));
      b.unsplittable(ls[axis]);
      for (size_t i = 0; i < ni; ++i) {
        for (int64_t d = 0; d < b.in_rank(i); ++d) if (d != axis) b.set_in(i, d, ls[d]);
      }
      break;
    }
    case OpKind::kSplit: case OpKind::kSlice: case OpKind::kTopK: case OpKind::kCumSum: {
      // The split/sliced/selected/scanned axis stays whole; the other dims are element-wise.
      const int64_t r = b.in_rank(0);
      for (int64_t d = 0; d < r; ++d) {
        bool same = true;
        for (size_t o = 0; o < n.outputs.size(); ++o) {
          same = same && b.out_rank(o) == r && b.out(o)[d] == b.in(0)[d];
        }
        if (n.kind == OpKind::kCumSum || n.kind == OpKind::kTopK) {
          same = d != norm_axis(n.attrs.get_int("axis", -1), r);
        }
        if (!same) continue;
        const int l = b.letter(b.in(0)[d]);
        b.set_in(0, d, l);
        for (size_t o = 0; o < n.outputs.size(); ++o) b.set_out(o, d, l);
      }
      break;
    }
    case OpKind::kOneHot: {
      const int64_t ro = b.out_rank(0);
      const int64_t axis = norm_axis(n.attrs.get_int("axis", -1), ro);
      int64_t id = 0;
      for (int64_t d = 0; d < ro; ++d) {
        const int l = b.letter(b.out(0)[d]);
        b.set_out(0, d, l);
        if (d != axis) b.set_in(0, id++, l);
      }
      break;
    }
    case OpKind::kReduceSum: case OpKind::kReduceMean: case OpKind::kReduceMax: reduce(b, n); break;
    case OpKind::kGather: gather(b, n); break;
    case OpKind::kSoftmaxCrossEntropyLoss: cross_entropy(b, n); break;
    default:
      break;  // Shape, Constant, Range, ...: replicated
  }
  IterationSpace space = b.take();
  space.stats_bytes.resize(space.letters.size(), 0);
  auto mark_batch = [&](TensorId t, const std::vector<int>& dims) {
    const int bd = batch_dim.empty() ? -1 : batch_dim[t];
    if (bd >= 0 && bd < static_cast<int>(dims.size()) && dims[bd] >= 0) {
      space.letters[dims[bd]].is_batch = true;
      space.letters[dims[bd]].must_divide = true;
    }
  };
  for (size_t i = 0; i < ni; ++i) mark_batch(n.inputs[i], space.inputs[i]);
  for (size_t o = 0; o < n.outputs.size(); ++o) mark_batch(n.outputs[o], space.outputs[o]);
  return space;
}

}  // namespace alpa
