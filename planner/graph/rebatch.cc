#include "planner/graph/rebatch.h"

#include <algorithm>
#include <numeric>

#include "planner/common/error.h"
#include "planner/common/format.h"
#include "planner/graph/shape_inference.h"

namespace alpa {
namespace {

[[noreturn]] void cannot_split(const Node& n, const std::string& why) {
  throw UserError("node '" + n.name + "'", std::string(op_name(n.kind)),
                  "the batch cannot be split here: " + why);
}

// Output dim of `in_dim` of an operand of rank `in_rank` broadcast to rank `out_rank`.
int aligned(int in_dim, size_t in_rank, size_t out_rank) {
  return in_dim < 0 ? -1 : in_dim + static_cast<int>(out_rank - in_rank);
}

// Whether dim k of a constant operand (of `rank` dims) of element-wise node `n` lines up with
// a dim of the output that is not the batch dim: a causal mask [seq, seq] broadcast against
// scores [batch, heads, seq, seq] whose seq happens to equal the batch is no batch-shaped
// constant. False when the output carries no batch dim.
bool broadcasts_beside_batch(size_t k, size_t rank, const Node& n, const Graph& g, const std::vector<int>& bd) {
  const int od = n.outputs.empty() ? -1 : bd[n.outputs[0]];
  if (od < 0) return false;
  const size_t out_rank = g.tensor(n.outputs[0]).shape.size();
  return aligned(static_cast<int>(k), rank, out_rank) != od;
}

// Reshape-like ops: the output dim whose major factor is the batch, or error.
int reshape_dim(const Node& n, const Shape& in, const Shape& out, int b, int64_t batch) {
  int64_t prefix = 1;
  for (int d = 0; d < b; ++d) prefix *= in[d];
  int64_t acc = 1;
  for (size_t j = 0; j < out.size(); ++j) {
    // The first non-unit dim that starts where the input's batch dim starts. (Samples may
    // share it with the next dim, e.g. MoE groups of two samples; rebatch checks divisibility.)
    if (acc == prefix && out[j] != 1) return static_cast<int>(j);
    acc *= out[j];
    if (acc > prefix) break;
  }
  cannot_split(n, "the reshape from " + format_dims(in) + " to " + format_dims(out) +
                      " does not keep the samples as the major factor of one dim");
}

std::vector<int> node_batch_dims(const Graph& g, const Node& n, const std::vector<int>& bd, int64_t batch) {
  std::vector<int> out(n.outputs.size(), -1);
  auto in_dim = [&](size_t i) { return bd[n.inputs[i]]; };
  auto in_rank = [&](size_t i) { return g.tensor(n.inputs[i]).shape.size(); };
  auto out_rank = [&](size_t o) { return g.tensor(n.outputs[o]).shape.size(); };
  const OpFamily family = op_info(n.kind).family;
  int any = -1;
  for (size_t i = 0; i < n.inputs.size(); ++i) {
    if (in_dim(i) >= 0) any = static_cast<int>(i);
  }
  if (any < 0) return out;
  switch (family) {
    case OpFamily::kElementwise: case OpFamily::kDropout: case OpFamily::kScan: {
      for (size_t i = 0; i < n.inputs.size(); ++i) {
        const int d = aligned(in_dim(i), in_rank(i), out_rank(0));
        if (d >= 0 && out[0] >= 0 && d != out[0]) cannot_split(n, "operands carry the batch in different dims");
        if (d >= 0) out[0] = d;
      }
      for (size_t o = 1; o < out.size(); ++o) out[o] = out[0];
      return out;
    }
    case OpFamily::kContraction: {
      if (n.kind == OpKind::kEinsum) {
        const EinsumSpec spec = parse_einsum(n.attrs.get_string("equation"), n.inputs.size());
        for (size_t i = 0; i < n.inputs.size(); ++i) {
          if (in_dim(i) < 0) continue;
          const char label = spec.inputs[i][in_dim(i)];
          const auto pos = spec.output.find(label);
          if (pos == std::string::npos) cannot_split(n, "the einsum sums over the batch label");
          out[0] = static_cast<int>(pos);
        }
        return out;
      }
      if (n.kind == OpKind::kGemm) {
        if (in_dim(0) >= 0) {
          const bool ta = n.attrs.get_int("transA", 0) != 0;
          if ((in_dim(0) == 0) == ta) cannot_split(n, "Gemm contracts over the batch");
          out[0] = 0;
        }
        if (in_dim(1) >= 0) cannot_split(n, "Gemm's second operand carries the batch");
        return out;
      }
      // MatMul: batch in a leading dim, in A's rows or in B's columns.
      for (size_t i = 0; i < 2; ++i) {
        const int d = in_dim(i);
        if (d < 0) continue;
        const int r = static_cast<int>(in_rank(i));
        if (r == 1 || (i == 0 && d == r - 1) || (i == 1 && d == r - 2)) cannot_split(n, "MatMul contracts over the batch");
        out[0] = (i == 0 && d == r - 2) ? static_cast<int>(out_rank(0)) - 2
                 : (i == 1 && d == r - 1) ? static_cast<int>(out_rank(0)) - 1
                                          : aligned(d, r, out_rank(0));
      }
      return out;
    }
    case OpFamily::kConv: case OpFamily::kPool: case OpFamily::kNormalization: case OpFamily::kSoftmax:
      if (in_dim(0) != 0 && (family == OpFamily::kConv || family == OpFamily::kPool)) {
        cannot_split(n, "the batch is not dim 0");
      }
      if (family == OpFamily::kSoftmax &&
          normalize_axis(n.attrs.get_int("axis", -1), static_cast<int64_t>(in_rank(0))) == in_dim(0)) {
        cannot_split(n, "softmax runs along the batch dim");
      }
      if (n.kind == OpKind::kLayerNormalization &&
          normalize_axis(n.attrs.get_int("axis", -1), static_cast<int64_t>(in_rank(0))) <= in_dim(0)) {
        cannot_split(n, "layer normalisation spans the batch dim");
      }
      out[0] = in_dim(0);  // BatchNorm's running statistics (outputs 1, 2) carry no batch
      return out;
    case OpFamily::kReduction: {
      const auto axes = resolve_reduce_axes(n.attrs, static_cast<int64_t>(in_rank(0)));
      const bool keep = n.attrs.get_int("keepdims", 1) != 0;
      int d = in_dim(0);
      for (int64_t a : axes) {
        if (a == d) return out;  // reduced over the samples: a per-batch mean or sum
      }
      if (!keep) d -= static_cast<int>(std::count_if(axes.begin(), axes.end(), [&](int64_t a) { return a < in_dim(0); }));
      out[0] = d;
      return out;
    }
    case OpFamily::kLayout: {
      const Shape& xs = g.tensor(n.inputs[0]).shape;
      const Shape& ys = g.tensor(n.outputs[0]).shape;
      switch (n.kind) {
        case OpKind::kTranspose: {
          std::vector<int64_t> perm(xs.size());
          std::iota(perm.rbegin(), perm.rend(), 0);
          perm = n.attrs.get_ints("perm", perm);
          for (size_t j = 0; j < perm.size(); ++j) {
            if (perm[j] == in_dim(0)) out[0] = static_cast<int>(j);
          }
          return out;
        }
        case OpKind::kReshape: case OpKind::kFlatten: case OpKind::kSqueeze: case OpKind::kUnsqueeze:
          out[0] = reshape_dim(n, xs, ys, in_dim(0), batch);
          return out;
        case OpKind::kExpand: case OpKind::kIdentity:
          out[0] = aligned(in_dim(0), xs.size(), ys.size());
          return out;
        case OpKind::kSlice: {
          const auto r = resolve_slice(xs, n.attrs);
          if (r[in_dim(0)].count != xs[in_dim(0)] || r[in_dim(0)].start != 0 || r[in_dim(0)].step != 1) {
            cannot_split(n, "it slices the batch dim");
          }
          out[0] = in_dim(0);
          return out;
        }
        case OpKind::kConcat: case OpKind::kSplit: {
          const int64_t axis = normalize_axis(n.attrs.get_int("axis", 0), static_cast<int64_t>(xs.size()));
          for (size_t i = 0; i < n.inputs.size(); ++i) {
            if (in_dim(i) != in_dim(0) || in_dim(i) == axis) cannot_split(n, "it joins or splits along the batch");
          }
          std::fill(out.begin(), out.end(), in_dim(0));
          return out;
        }
        default:
          return out;
      }
    }
    case OpFamily::kGather: {
      const int64_t axis = normalize_axis(n.attrs.get_int("axis", 0), static_cast<int64_t>(in_rank(0)));
      if (in_dim(1) >= 0) out[0] = static_cast<int>(axis) + in_dim(1);
      if (in_dim(0) >= 0) {
        if (in_dim(0) == axis) cannot_split(n, "it gathers along the batch dim");
        out[0] = in_dim(0) < axis ? in_dim(0) : in_dim(0) + static_cast<int>(in_rank(1)) - 1;
      }
      return out;
    }
    case OpFamily::kSelect: {
      const int64_t rank = static_cast<int64_t>(n.kind == OpKind::kOneHot ? out_rank(0) : in_rank(0));
      const int64_t axis = normalize_axis(n.attrs.get_int("axis", -1), rank);
      if (n.kind == OpKind::kOneHot) {
        out[0] = in_dim(0) < axis ? in_dim(0) : in_dim(0) + 1;
      } else {
        if (axis == in_dim(0)) cannot_split(n, "top-k runs along the batch dim");
        out[0] = out[1] = in_dim(0);
      }
      return out;
    }
    case OpFamily::kLoss:
      if (in_dim(0) != 0) cannot_split(n, "scores carry the batch outside dim 0");
      if (n.attrs.has("reduction") && n.attrs.get_string("reduction") == "none") out[0] = 0;
      if (out.size() > 1) out[1] = 0;
      return out;
    default:
      cannot_split(n, "no batch rule for this op");
  }
}

}  // namespace

std::vector<int> batch_dims(const Graph& g, int64_t global_batch) {
  std::vector<int> bd(g.num_tensors(), -1);
  for (size_t i = 0; i < g.inputs.size(); ++i) {
    const int64_t axis = i < g.input_batch_axes.size() ? g.input_batch_axes[i] : 0;
    if (axis >= 0 && !g.tensor(g.inputs[i]).shape.empty()) bd[g.inputs[i]] = static_cast<int>(axis);
  }
  for (const Node& n : g.nodes()) {
    const auto out = node_batch_dims(g, n, bd, global_batch);
    for (size_t o = 0; o < out.size(); ++o) bd[n.outputs[o]] = out[o];
  }
  return bd;
}

Graph rebatch(const Graph& graph, int64_t global_batch, int64_t new_batch) {
  if (new_batch <= 0 || global_batch % new_batch != 0) {
    throw UserError("batch", std::to_string(new_batch),
                    "must divide the global batch " + std::to_string(global_batch));
  }
  if (new_batch == global_batch) return graph;
  const int64_t ratio = global_batch / new_batch;
  const std::vector<int> bd = batch_dims(graph, global_batch);
  Graph g = graph;
  for (TensorId t : g.inputs) {
    if (bd[t] >= 0) g.tensor(t).shape[bd[t]] /= ratio;
  }
  for (size_t k = 0; k < g.num_nodes(); ++k) {
    Node& n = g.node(static_cast<NodeId>(k));
    const Node& orig = graph.node(static_cast<NodeId>(k));
    for (TensorId t : n.inputs) {
      const Tensor& tensor = g.tensor(t);
      if (tensor.role == TensorRole::kConstant && tensor.shape.size() > 0) {
        for (size_t k = 0; k < tensor.shape.size(); ++k) {
          const int64_t d = tensor.shape[k];
          if (d == global_batch && global_batch > 1 && bd[t] < 0 && tensor.numel() > 1 &&
              op_info(n.kind).family != OpFamily::kGather &&
              !(op_info(n.kind).family == OpFamily::kElementwise &&
                broadcasts_beside_batch(k, tensor.shape.size(), n, g, bd))) {
            // A folded constant shaped by the batch (e.g. a mask built from Shape(input)).
            throw UserError("constant '" + tensor.name + "'", format_dims(tensor.shape),
                            "bakes in the global batch " + std::to_string(global_batch) +
                                "; the batch cannot be split");
          }
        }
      }
    }
    const int od = n.outputs.empty() ? -1 : bd[n.outputs[0]];
    if ((n.kind == OpKind::kReshape || n.kind == OpKind::kExpand) && od >= 0) {
      Shape target = graph.tensor(orig.outputs[0]).shape;
      if (target[od] % ratio != 0) {
        throw UserError("node '" + n.name + "'", std::string(op_name(n.kind)),
                        "its batch-carrying dim " + std::to_string(od) + " of " + format_dims(target) +
                            " cannot be split " + std::to_string(ratio) + " ways");
      }
      target[od] /= ratio;
      n.attrs.set("shape", target);
    }
    std::vector<TensorType> in;
    for (TensorId t : n.inputs) in.push_back({g.tensor(t).dtype, g.tensor(t).shape});
    std::vector<TensorType> types;
    try {
      types = infer_types(n, in);
    } catch (const ShapeError& e) {
      throw UserError("node '" + n.name + "'", std::string(op_name(n.kind)),
                      std::string("does not fit a batch of ") + std::to_string(new_batch) + ": " + e.what());
    }
    for (size_t o = 0; o < n.outputs.size(); ++o) g.tensor(n.outputs[o]).shape = types[o].shape;
  }
  return g;
}

}  // namespace alpa
