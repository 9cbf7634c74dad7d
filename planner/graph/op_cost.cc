#include "planner/graph/op_cost.h"

#include <map>

#include "planner/graph/shape_inference.h"

namespace alpa {
namespace {

double numel(const Graph& g, TensorId t) { return static_cast<double>(g.tensor(t).numel()); }

double contraction_flops(const Graph& g, const Node& node) {
  const Tensor& out = g.tensor(node.outputs[0]);
  if (node.kind == OpKind::kMatMul) {
    const Shape& a = g.tensor(node.inputs[0]).shape;
    return 2.0 * static_cast<double>(out.numel()) * static_cast<double>(a.back());
  }
  if (node.kind == OpKind::kGemm) {
    const Shape& a = g.tensor(node.inputs[0]).shape;
    const double k = static_cast<double>(node.attrs.get_int("transA", 0) ? a[0] : a[1]);
    const double bias = node.inputs.size() > 2 ? static_cast<double>(out.numel()) : 0.0;
    return 2.0 * static_cast<double>(out.numel()) * k + bias;
  }
  // Einsum: every combination of all labels is one multiply per extra operand and one add.
  const EinsumSpec spec = parse_einsum(node.attrs.get_string("equation"), node.inputs.size());
  std::map<char, int64_t> size;
  for (size_t i = 0; i < node.inputs.size(); ++i) {
    const Shape& s = g.tensor(node.inputs[i]).shape;
    for (size_t d = 0; d < s.size(); ++d) {
      auto& v = size[spec.inputs[i][d]];
      v = std::max<int64_t>(v, s[d]);
    }
  }
  double all = 1;
  for (auto [label, n] : size) all *= static_cast<double>(n);
  return 2.0 * all * static_cast<double>(std::max<size_t>(node.inputs.size() - 1, 1));
}

// Backward ops: the same arithmetic as the forward op they differentiate.
double grad_flops(const Graph& g, const Node& node) {
  const double dy = node.inputs.empty() ? 0.0 : numel(g, node.inputs[0]);
  switch (node.kind) {
    case OpKind::kConvGradInput: case OpKind::kConvGradWeight: {
      const Shape& w = node.kind == OpKind::kConvGradInput ? g.tensor(node.inputs[1]).shape
                                                            : node.attrs.get_ints("weight_shape");
      double per_output = 1;
      for (size_t d = 1; d < w.size(); ++d) per_output *= static_cast<double>(w[d]);
      return 2.0 * dy * per_output;
    }
    case OpKind::kLayerNormalizationGrad: case OpKind::kBatchNormalizationGrad: return 12.0 * dy;
    case OpKind::kSoftmaxGrad: case OpKind::kLogSoftmaxGrad: return 4.0 * dy;
    case OpKind::kSoftmaxCrossEntropyLossGrad: return 4.0 * numel(g, node.inputs[1]);
    case OpKind::kZeros: case OpKind::kSliceGrad: case OpKind::kGatherGrad: case OpKind::kTopKGrad:
      return 0.0;
    default: return 2.0 * dy;
  }
}

double node_flops(const Graph& g, const Node& node) {
  const double out = node.outputs.empty() ? 0.0 : numel(g, node.outputs[0]);
  const double in = node.inputs.empty() ? 0.0 : numel(g, node.inputs[0]);
  switch (op_info(node.kind).family) {
    case OpFamily::kContraction:
      return contraction_flops(g, node);
    case OpFamily::kConv: {
      const Shape& w = g.tensor(node.inputs[1]).shape;
      double per_output = 1;  // (C_in / group) · kernel volume
      for (size_t d = 1; d < w.size(); ++d) per_output *= static_cast<double>(w[d]);
      return 2.0 * out * per_output + (node.inputs.size() > 2 ? out : 0.0);
    }
    case OpFamily::kPool: {
      if (node.kind == OpKind::kGlobalAveragePool) return in;
      double window = 1;
      for (int64_t k : node.attrs.get_ints("kernel_shape")) window *= static_cast<double>(k);
      return out * window;
    }
    case OpFamily::kElementwise:
      return node.kind == OpKind::kCast ? 0.0 : out;
    case OpFamily::kSoftmax:
      return 5.0 * out;  // max, subtract, exp, sum, divide
    case OpFamily::kNormalization:
      return 8.0 * out;  // mean, variance, normalise, scale, shift
    case OpFamily::kReduction:
    case OpFamily::kScan:
      return in;
    case OpFamily::kSelect:
      return node.kind == OpKind::kTopK ? in : 0.0;
    case OpFamily::kDropout:
      return 2.0 * out;
    case OpFamily::kLoss:
      return 5.0 * in;
    case OpFamily::kGrad:
      return grad_flops(g, node);
    case OpFamily::kOptimizer:
      return (node.kind == OpKind::kAdamUpdate ? 15.0 : 5.0) * in;
    case OpFamily::kLayout:
    case OpFamily::kGather:
    case OpFamily::kSource:
      return 0.0;
  }
  return 0.0;
}

}  // namespace

OpCount count_node(const Graph& graph, const Node& node) {
  OpCount c;
  c.flops = node_flops(graph, node);
  for (TensorId t : node.inputs) c.bytes_read += static_cast<double>(graph.tensor(t).bytes());
  for (TensorId t : node.outputs) c.bytes_written += static_cast<double>(graph.tensor(t).bytes());
  return c;
}

}  // namespace alpa
