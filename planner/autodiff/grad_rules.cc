// Gradient rules, one small function per op family. Notation: dy = GO(0); inputs I(i),
// outputs O(i). Broadcasting operands take SumToShape of their gradient.
#include <numeric>

#include "planner/autodiff/grad_builder.h"
#include "planner/common/error.h"

namespace alpa {
namespace {

using A = Attributes;

A attrs_with(const A& base, std::initializer_list<std::pair<const char*, AttrValue>> extra) {
  A a = base;
  for (const auto& [k, v] : extra) a.set(k, v);
  return a;
}

void binary_rule(GradBuilder& b) {
  const TensorId dy = b.GO(0);
  const Shape& sa = b.shape(b.I(0));
  const Shape& sb = b.shape(b.I(1));
  switch (b.forward().kind) {
    case OpKind::kAdd:
      b.set_GI(0, b.sum_to(dy, sa));
      b.set_GI(1, b.sum_to(dy, sb));
      return;
    case OpKind::kSub:
      b.set_GI(0, b.sum_to(dy, sa));
      if (b.wants(1)) b.set_GI(1, b.sum_to(b.op(OpKind::kNeg, {dy}), sb));
      return;
    case OpKind::kMul:
      if (b.wants(0)) b.set_GI(0, b.sum_to(b.op(OpKind::kMul, {dy, b.I(1)}), sa));
      if (b.wants(1)) b.set_GI(1, b.sum_to(b.op(OpKind::kMul, {dy, b.I(0)}), sb));
      return;
    case OpKind::kDiv: {
      // d/dA = dy / B;  d/dB = -(dy / B) · (A / B) = -(dy / B) · Y
      const TensorId q = b.op(OpKind::kDiv, {dy, b.I(1)});
      b.set_GI(0, b.sum_to(q, sa));
      if (b.wants(1)) b.set_GI(1, b.sum_to(b.op(OpKind::kNeg, {b.op(OpKind::kMul, {q, b.O(0)})}), sb));
      return;
    }
    case OpKind::kPow: {
      const auto g = b.op_n(OpKind::kPowGrad, {dy, b.I(0), b.I(1)}, {}, 2);
      b.set_GI(0, b.sum_to(g[0], sa));
      b.set_GI(1, b.sum_to(g[1], sb));
      return;
    }
    default:
      ALPA_CHECK(false, "not a binary op");
  }
}

void unary_rule(GradBuilder& b) {
  const TensorId dy = b.GO(0);
  const TensorId x = b.I(0), y = b.O(0);
  const DType dt = b.dtype(dy);
  switch (b.forward().kind) {
    case OpKind::kNeg: b.set_GI(0, b.op(OpKind::kNeg, {dy})); return;
    case OpKind::kExp: b.set_GI(0, b.op(OpKind::kMul, {dy, y})); return;
    case OpKind::kLog: b.set_GI(0, b.op(OpKind::kDiv, {dy, x})); return;
    case OpKind::kSqrt:  // dy / (2·sqrt(x))
      b.set_GI(0, b.op(OpKind::kMul, {b.op(OpKind::kDiv, {dy, y}), b.scalar(0.5, dt)}));
      return;
    case OpKind::kErf: b.set_GI(0, b.op(OpKind::kErfGrad, {dy, x})); return;
    case OpKind::kTanh: b.set_GI(0, b.op(OpKind::kTanhGrad, {dy, y})); return;
    case OpKind::kRelu: b.set_GI(0, b.op(OpKind::kReluGrad, {dy, y})); return;
    case OpKind::kSigmoid: b.set_GI(0, b.op(OpKind::kSigmoidGrad, {dy, y})); return;
    case OpKind::kSoftmax:
      b.set_GI(0, b.op(OpKind::kSoftmaxGrad, {dy, y}, b.attrs()));
      return;
    case OpKind::kLogSoftmax:
      b.set_GI(0, b.op(OpKind::kLogSoftmaxGrad, {dy, y}, b.attrs()));
      return;
    case OpKind::kClip: b.set_GI(0, b.op(OpKind::kClipGrad, {dy, x}, b.attrs())); return;
    case OpKind::kCast: {
      if (b.attrs().get_int("master_cast", 0) != 0) {  // fp16/bf16 gradient of an fp32 master
        b.set_GI(0, dy);
        return;
      }
      A a;
      a.set("to", static_cast<int64_t>(b.dtype(x)));
      b.set_GI(0, b.op(OpKind::kCast, {dy}, a));
      return;
    }
    case OpKind::kDropout:  // the same mask (same rng_key), applied to the gradient
      b.set_GI(0, b.op(OpKind::kDropout, {dy}, b.attrs()));
      return;
    case OpKind::kWhere: {
      const TensorId zero = b.scalar(0.0, dt);
      if (b.wants(1)) b.set_GI(1, b.sum_to(b.op(OpKind::kWhere, {x, dy, zero}), b.shape(b.I(1))));
      if (b.wants(2)) b.set_GI(2, b.sum_to(b.op(OpKind::kWhere, {x, zero, dy}), b.shape(b.I(2))));
      return;
    }
    case OpKind::kCumSum: {
      A a = b.attrs();
      a.set("reverse", static_cast<int64_t>(b.attrs().get_int("reverse", 0) == 0));
      b.set_GI(0, b.op(OpKind::kCumSum, {dy}, a));
      return;
    }
    default:
      ALPA_CHECK(false, "not a unary op");
  }
}

// Y[..., m, n] = A[..., m, k] · B[..., k, n] with numpy broadcasting and 1-D promotion.
void matmul_rule(GradBuilder& b) {
  Shape sa = b.shape(b.I(0)), sb = b.shape(b.I(1));
  const bool a_vec = sa.size() == 1, b_vec = sb.size() == 1;
  if (a_vec) sa.insert(sa.begin(), 1);
  if (b_vec) sb.push_back(1);
  const TensorId a = b.reshape(b.I(0), sa);
  const TensorId bm = b.reshape(b.I(1), sb);
  Shape sy = broadcast_shapes(Shape(sa.begin(), sa.end() - 2), Shape(sb.begin(), sb.end() - 2));
  sy.push_back(sa[sa.size() - 2]);
  sy.push_back(sb.back());
  const TensorId dy = b.reshape(b.GO(0), sy);
  auto swap_last = [&](TensorId t) {
    std::vector<int64_t> perm(b.shape(t).size());
    std::iota(perm.begin(), perm.end(), 0);
    std::swap(perm[perm.size() - 1], perm[perm.size() - 2]);
    A at;
    at.set("perm", perm);
    return b.op(OpKind::kTranspose, {t}, at);
  };
  if (b.wants(0)) {
    const TensorId da = b.op(OpKind::kMatMul, {dy, swap_last(bm)});
    b.set_GI(0, b.reshape(b.sum_to(da, sa), b.shape(b.I(0))));
  }
  if (b.wants(1) && sb.size() == 2 && sa.size() > 2) {
    // A weight shared by every leading index (x · W): one GEMM contracting all rows at once,
    // dW = A2ᵀ · dY2 with A2 = A as [rows, k], dY2 = dY as [rows, n] — not a batched product
    // per leading index summed afterwards (that holds rows/m times the weight's size).
    int64_t rows = 1;
    for (size_t d = 0; d + 1 < sa.size(); ++d) rows *= sa[d];
    const TensorId a2 = b.reshape(a, {rows, sa.back()});
    const TensorId dy2 = b.reshape(dy, {rows, sy.back()});
    const TensorId db = b.op(OpKind::kMatMul, {swap_last(a2), dy2});
    b.set_GI(1, b.reshape(db, b.shape(b.I(1))));
  } else if (b.wants(1)) {
    const TensorId db = b.op(OpKind::kMatMul, {swap_last(a), dy});
    b.set_GI(1, b.reshape(b.sum_to(db, sb), b.shape(b.I(1))));
  }
}

// Y = alpha · op(A) · op(B) + beta · C
void gemm_rule(GradBuilder& b) {
  const TensorId dy = b.GO(0);
  const int64_t ta = b.attrs().get_int("transA", 0), tb = b.attrs().get_int("transB", 0);
  const double alpha = b.attrs().get_float("alpha", 1.0), beta = b.attrs().get_float("beta", 1.0);
  auto gemm = [&](TensorId x, TensorId y, int64_t tx, int64_t ty) {
    A a;
    a.set("transA", tx);
    a.set("transB", ty);
    a.set("alpha", alpha);
    return b.op(OpKind::kGemm, {x, y}, a);
  };
  if (b.wants(0)) b.set_GI(0, ta ? gemm(b.I(1), dy, tb, 1) : gemm(dy, b.I(1), 0, 1 - tb));
  if (b.wants(1)) b.set_GI(1, tb ? gemm(dy, b.I(0), 1, ta) : gemm(b.I(0), dy, 1 - ta, 0));
  if (b.forward().inputs.size() > 2 && b.wants(2)) {
    TensorId dc = b.sum_to(dy, b.shape(b.I(2)));
    if (beta != 1.0) dc = b.op(OpKind::kMul, {dc, b.scalar(beta, b.dtype(dy))});
    b.set_GI(2, dc);
  }
}

void einsum_rule(GradBuilder& b) {
  const Node& n = b.forward();
  const EinsumSpec spec = parse_einsum(n.attrs.get_string("equation"), n.inputs.size());
  for (size_t i = 0; i < n.inputs.size(); ++i) {
    if (!b.wants(i)) continue;
    const std::string& target = spec.inputs[i];
    std::string lhs, available = spec.output;
    std::vector<TensorId> operands;
    for (size_t j = 0; j < n.inputs.size(); ++j) {
      if (j == i) continue;
      lhs += spec.inputs[j] + ",";
      available += spec.inputs[j];
      operands.push_back(n.inputs[j]);
    }
    lhs += spec.output;
    operands.push_back(b.GO(0));
    // Labels only operand i carries were summed away: the gradient is broadcast along them.
    std::string kept;
    Shape kept_shape, full_shape = b.shape(n.inputs[i]);
    for (size_t d = 0; d < target.size(); ++d) {
      if (target.find(target[d]) != d) {
        throw UserError("einsum '" + n.attrs.get_string("equation") + "'", "node '" + n.name + "'",
                        "repeated labels in one operand have no gradient rule");
      }
      if (available.find(target[d]) != std::string::npos) kept += target[d];
    }
    A a;
    a.set("equation", lhs + "->" + kept);
    TensorId grad = b.op(OpKind::kEinsum, operands, a);
    if (kept != target) {
      Shape with_ones;
      for (size_t d = 0; d < target.size(); ++d) {
        with_ones.push_back(kept.find(target[d]) != std::string::npos ? full_shape[d] : 1);
      }
      grad = b.reshape(grad, with_ones);
      A e;
      e.set("shape", full_shape);
      grad = b.op(OpKind::kExpand, {grad}, e);
    }
    b.set_GI(i, grad);
  }
}

void conv_pool_rule(GradBuilder& b) {
  const Node& n = b.forward();
  const TensorId dy = b.GO(0);
  switch (n.kind) {
    case OpKind::kConv:
      if (b.wants(0)) {
        b.set_GI(0, b.op(OpKind::kConvGradInput, {dy, b.I(1)},
                         attrs_with(n.attrs, {{"input_shape", b.shape(b.I(0))}})));
      }
      if (b.wants(1)) {
        b.set_GI(1, b.op(OpKind::kConvGradWeight, {dy, b.I(0)},
                         attrs_with(n.attrs, {{"weight_shape", b.shape(b.I(1))}})));
      }
      if (n.inputs.size() > 2 && b.wants(2)) {
        std::vector<int64_t> axes = {0};
        for (size_t d = 2; d < b.shape(dy).size(); ++d) axes.push_back(static_cast<int64_t>(d));
        A a;
        a.set("axes", axes);
        a.set("keepdims", int64_t{0});
        b.set_GI(2, b.op(OpKind::kReduceSum, {dy}, a));
      }
      return;
    case OpKind::kMaxPool:
      b.set_GI(0, b.op(OpKind::kMaxPoolGrad, {dy, b.I(0)}, n.attrs));
      return;
    case OpKind::kAveragePool:
      b.set_GI(0, b.op(OpKind::kAveragePoolGrad, {dy},
                       attrs_with(n.attrs, {{"input_shape", b.shape(b.I(0))}})));
      return;
    case OpKind::kGlobalAveragePool: {
      const Shape& xs = b.shape(b.I(0));
      double window = 1;
      for (size_t d = 2; d < xs.size(); ++d) window *= static_cast<double>(xs[d]);
      A e;
      e.set("shape", xs);
      const TensorId scaled = b.op(OpKind::kMul, {dy, b.scalar(1.0 / window, b.dtype(dy))});
      b.set_GI(0, b.op(OpKind::kExpand, {scaled}, e));
      return;
    }
    default:
      ALPA_CHECK(false, "not a conv/pool op");
  }
}

void normalization_rule(GradBuilder& b) {
  const Node& n = b.forward();
  if (n.kind == OpKind::kBatchNormalization && n.attrs.get_int("training_mode", 0) == 0) {
    throw UserError("node '" + n.name + "'", "BatchNormalization",
                    "is in inference mode; export with training=TrainingMode.TRAINING to train it");
  }
  const OpKind grad = n.kind == OpKind::kLayerNormalization ? OpKind::kLayerNormalizationGrad
                                                            : OpKind::kBatchNormalizationGrad;
  const size_t outputs = n.kind == OpKind::kLayerNormalization ? n.inputs.size() : 3;
  const auto g = b.op_n(grad, {b.GO(0), b.I(0), b.I(1)}, n.attrs, outputs);
  for (size_t i = 0; i < outputs; ++i) b.set_GI(i, g[i]);
}

void layout_rule(GradBuilder& b) {
  const Node& n = b.forward();
  const Shape& xs = b.shape(b.I(0));
  switch (n.kind) {
    case OpKind::kReshape: case OpKind::kFlatten: case OpKind::kSqueeze: case OpKind::kUnsqueeze:
      b.set_GI(0, b.reshape(b.GO(0), xs));
      return;
    case OpKind::kTranspose: {
      std::vector<int64_t> perm(xs.size());
      std::iota(perm.rbegin(), perm.rend(), 0);
      perm = n.attrs.get_ints("perm", perm);
      std::vector<int64_t> inverse(perm.size());
      for (size_t d = 0; d < perm.size(); ++d) inverse[perm[d]] = static_cast<int64_t>(d);
      A a;
      a.set("perm", inverse);
      b.set_GI(0, b.op(OpKind::kTranspose, {b.GO(0)}, a));
      return;
    }
    case OpKind::kExpand:
      b.set_GI(0, b.sum_to(b.GO(0), xs));
      return;
    case OpKind::kSlice:
      b.set_GI(0, b.op(OpKind::kSliceGrad, {b.GO(0)}, attrs_with(n.attrs, {{"input_shape", xs}})));
      return;
    case OpKind::kConcat: {
      const int64_t axis = normalize_axis(n.attrs.get_int("axis"), static_cast<int64_t>(xs.size()));
      std::vector<int64_t> sizes;
      for (TensorId t : n.inputs) sizes.push_back(b.shape(t)[axis]);
      A a;
      a.set("axis", axis);
      a.set("split", sizes);
      const auto parts = b.op_n(OpKind::kSplit, {b.GO(0)}, a, n.inputs.size());
      for (size_t i = 0; i < parts.size(); ++i) b.set_GI(i, parts[i]);
      return;
    }
    case OpKind::kSplit: {
      std::vector<TensorId> pieces;
      for (size_t o = 0; o < n.outputs.size(); ++o) {
        if (b.GO(o) != kNoId) {
          pieces.push_back(b.GO(o));
        } else {
          A z;
          z.set("shape", b.shape(b.O(o)));
          z.set("dtype", static_cast<int64_t>(b.dtype(b.O(o))));
          pieces.push_back(b.op(OpKind::kZeros, {}, z));
        }
      }
      A a;
      a.set("axis", n.attrs.get_int("axis", 0));
      b.set_GI(0, b.op(OpKind::kConcat, pieces, a));
      return;
    }
    default:
      ALPA_CHECK(false, "not a layout op");
  }
}

void reduce_select_rule(GradBuilder& b) {
  const Node& n = b.forward();
  const TensorId dy = b.GO(0);
  const Shape& xs = b.shape(b.I(0));
  switch (n.kind) {
    case OpKind::kReduceSum: case OpKind::kReduceMean: {
      const auto axes = resolve_reduce_axes(n.attrs, static_cast<int64_t>(xs.size()));
      Shape kept = xs;
      double count = 1;
      for (int64_t a : axes) {
        kept[a] = 1;
        count *= static_cast<double>(xs[a]);
      }
      TensorId g = b.reshape(dy, kept);
      if (n.kind == OpKind::kReduceMean) g = b.op(OpKind::kMul, {g, b.scalar(1.0 / count, b.dtype(dy))});
      A e;
      e.set("shape", xs);
      b.set_GI(0, b.op(OpKind::kExpand, {g}, e));
      return;
    }
    case OpKind::kReduceMax:
      b.set_GI(0, b.op(OpKind::kReduceMaxGrad, {dy, b.I(0), b.O(0)}, n.attrs));
      return;
    case OpKind::kTopK:
      b.set_GI(0, b.op(OpKind::kTopKGrad, {dy, b.O(1)}, attrs_with(n.attrs, {{"input_shape", xs}})));
      return;
    case OpKind::kGather:
      b.set_GI(0, b.op(OpKind::kGatherGrad, {dy, b.I(1)}, attrs_with(n.attrs, {{"shape", xs}})));
      return;
    case OpKind::kSoftmaxCrossEntropyLoss:
      b.set_GI(0, b.op(OpKind::kSoftmaxCrossEntropyLossGrad, {dy, b.I(0), b.I(1)}, n.attrs));
      return;
    default:
      ALPA_CHECK(false, "not a reduce/select op");
  }
}

}  // namespace

void apply_grad_rule(GradBuilder& b) {
  const Node& n = b.forward();
  switch (n.kind) {
    case OpKind::kAdd: case OpKind::kSub: case OpKind::kMul: case OpKind::kDiv: case OpKind::kPow:
      return binary_rule(b);
    case OpKind::kNeg: case OpKind::kExp: case OpKind::kLog: case OpKind::kSqrt: case OpKind::kErf:
    case OpKind::kTanh: case OpKind::kRelu: case OpKind::kSigmoid: case OpKind::kSoftmax:
    case OpKind::kLogSoftmax: case OpKind::kClip: case OpKind::kCast: case OpKind::kDropout:
    case OpKind::kWhere: case OpKind::kCumSum:
      return unary_rule(b);
    case OpKind::kMatMul: return matmul_rule(b);
    case OpKind::kGemm: return gemm_rule(b);
    case OpKind::kEinsum: return einsum_rule(b);
    case OpKind::kConv: case OpKind::kMaxPool: case OpKind::kAveragePool:
    case OpKind::kGlobalAveragePool:
      return conv_pool_rule(b);
    case OpKind::kLayerNormalization: case OpKind::kBatchNormalization:
      return normalization_rule(b);
    case OpKind::kReshape: case OpKind::kFlatten: case OpKind::kSqueeze: case OpKind::kUnsqueeze:
    case OpKind::kTranspose: case OpKind::kExpand: case OpKind::kSlice: case OpKind::kConcat:
    case OpKind::kSplit:
      return layout_rule(b);
    case OpKind::kReduceSum: case OpKind::kReduceMean: case OpKind::kReduceMax: case OpKind::kTopK:
    case OpKind::kGather: case OpKind::kSoftmaxCrossEntropyLoss:
      return reduce_select_rule(b);
    default:
      // Explicit no-gradient ops never reach here (their differentiable masks are empty).
      throw UserError("node '" + n.name + "'", std::string(op_name(n.kind)),
                      "has no gradient rule but lies on the path from a parameter to the loss");
  }
}

}  // namespace alpa
