#include "planner/graph/op_kind.h"

#include <array>

#include "planner/common/error.h"

namespace alpa {
namespace {

using F = OpFamily;
constexpr uint32_t k0 = 0b1, k1 = 0b10, k01 = 0b11, k12 = 0b110, k012 = 0b111, kNone = 0;

// One row per op: family, differentiable inputs/outputs, tensors kept for backward.
// The saved sets follow the usual backward formulas (e.g. Relu reads its output, MatMul both
// operands, softmax its output); Dropout keeps nothing because its mask is regenerated from the
// counter-based RNG.
constexpr std::array<OpInfo, kNumOpKinds> kOps = {{
    {OpKind::kAdd, "Add", F::kElementwise, k01, k0, kNone, kNone},
    {OpKind::kSub, "Sub", F::kElementwise, k01, k0, kNone, kNone},
    {OpKind::kMul, "Mul", F::kElementwise, k01, k0, k01, kNone},
    {OpKind::kDiv, "Div", F::kElementwise, k01, k0, k01, kNone},
    {OpKind::kPow, "Pow", F::kElementwise, k01, k0, k01, k0},
    {OpKind::kSqrt, "Sqrt", F::kElementwise, k0, k0, kNone, k0},
    {OpKind::kNeg, "Neg", F::kElementwise, k0, k0, kNone, kNone},
    {OpKind::kExp, "Exp", F::kElementwise, k0, k0, kNone, k0},
    {OpKind::kLog, "Log", F::kElementwise, k0, k0, k0, kNone},
    {OpKind::kErf, "Erf", F::kElementwise, k0, k0, k0, kNone},
    {OpKind::kTanh, "Tanh", F::kElementwise, k0, k0, kNone, k0},
    {OpKind::kRelu, "Relu", F::kElementwise, k0, k0, kNone, k0},
    {OpKind::kSigmoid, "Sigmoid", F::kElementwise, k0, k0, kNone, k0},
    {OpKind::kSoftmax, "Softmax", F::kSoftmax, k0, k0, kNone, k0},
    {OpKind::kLogSoftmax, "LogSoftmax", F::kSoftmax, k0, k0, kNone, k0},
    {OpKind::kLayerNormalization, "LayerNormalization", F::kNormalization, k012, k0, k01, kNone},
    {OpKind::kBatchNormalization, "BatchNormalization", F::kNormalization, k012, k0, k01, kNone},
    {OpKind::kMatMul, "MatMul", F::kContraction, k01, k0, k01, kNone},
    {OpKind::kGemm, "Gemm", F::kContraction, k012, k0, k01, kNone},
    {OpKind::kEinsum, "Einsum", F::kContraction, kAll, k0, kAll, kNone},
    {OpKind::kConv, "Conv", F::kConv, k012, k0, k01, kNone},
    {OpKind::kMaxPool, "MaxPool", F::kPool, k0, k0, k0, k0},
    {OpKind::kAveragePool, "AveragePool", F::kPool, k0, k0, kNone, kNone},
    {OpKind::kGlobalAveragePool, "GlobalAveragePool", F::kPool, k0, k0, kNone, kNone},
    {OpKind::kFlatten, "Flatten", F::kLayout, k0, k0, kNone, kNone},
    {OpKind::kReshape, "Reshape", F::kLayout, k0, k0, kNone, kNone},
    {OpKind::kTranspose, "Transpose", F::kLayout, k0, k0, kNone, kNone},
    {OpKind::kGather, "Gather", F::kGather, k0, k0, k1, kNone},
    {OpKind::kConcat, "Concat", F::kLayout, kAll, k0, kNone, kNone},
    {OpKind::kSplit, "Split", F::kLayout, k0, kAll, kNone, kNone},
    {OpKind::kSlice, "Slice", F::kLayout, k0, k0, kNone, kNone},
    {OpKind::kSqueeze, "Squeeze", F::kLayout, k0, k0, kNone, kNone},
    {OpKind::kUnsqueeze, "Unsqueeze", F::kLayout, k0, k0, kNone, kNone},
    {OpKind::kExpand, "Expand", F::kLayout, k0, k0, kNone, kNone},
    {OpKind::kReduceSum, "ReduceSum", F::kReduction, k0, k0, kNone, kNone},
    {OpKind::kReduceMean, "ReduceMean", F::kReduction, k0, k0, kNone, kNone},
    {OpKind::kReduceMax, "ReduceMax", F::kReduction, k0, k0, k0, k0},
    {OpKind::kWhere, "Where", F::kElementwise, k12, k0, k0, kNone},
    {OpKind::kEqual, "Equal", F::kElementwise, kNone, kNone, kNone, kNone},
    {OpKind::kLess, "Less", F::kElementwise, kNone, kNone, kNone, kNone},
    {OpKind::kGreater, "Greater", F::kElementwise, kNone, kNone, kNone, kNone},
    {OpKind::kNot, "Not", F::kElementwise, kNone, kNone, kNone, kNone},
    // Cast is differentiable only between floating types; the importer checks the dtypes.
    {OpKind::kCast, "Cast", F::kElementwise, k0, k0, kNone, kNone},
    {OpKind::kClip, "Clip", F::kElementwise, k0, k0, k0, kNone},
    {OpKind::kCumSum, "CumSum", F::kScan, k0, k0, kNone, kNone},
    {OpKind::kOneHot, "OneHot", F::kSelect, kNone, kNone, kNone, kNone},
    {OpKind::kTopK, "TopK", F::kSelect, k0, k0, kNone, k1},
    {OpKind::kIdentity, "Identity", F::kLayout, k0, k0, kNone, kNone},
    {OpKind::kDropout, "Dropout", F::kDropout, k0, k0, kNone, kNone},
    {OpKind::kSoftmaxCrossEntropyLoss, "SoftmaxCrossEntropyLoss", F::kLoss, k0, k0, k01, kNone},
    {OpKind::kConstant, "Constant", F::kSource, kNone, kNone, kNone, kNone},
    {OpKind::kConstantOfShape, "ConstantOfShape", F::kSource, kNone, kNone, kNone, kNone},
    {OpKind::kShape, "Shape", F::kSource, kNone, kNone, kNone, kNone},
    {OpKind::kRange, "Range", F::kSource, kNone, kNone, kNone, kNone},
    // Internal backward and optimizer ops: never differentiated again, nothing saved.
    {OpKind::kSumToShape, "alpa.SumToShape", F::kGrad, kNone, kNone, kNone, kNone},
    {OpKind::kReluGrad, "alpa.ReluGrad", F::kGrad, kNone, kNone, kNone, kNone},
    {OpKind::kSigmoidGrad, "alpa.SigmoidGrad", F::kGrad, kNone, kNone, kNone, kNone},
    {OpKind::kTanhGrad, "alpa.TanhGrad", F::kGrad, kNone, kNone, kNone, kNone},
    {OpKind::kErfGrad, "alpa.ErfGrad", F::kGrad, kNone, kNone, kNone, kNone},
    {OpKind::kSoftmaxGrad, "alpa.SoftmaxGrad", F::kGrad, kNone, kNone, kNone, kNone},
    {OpKind::kLogSoftmaxGrad, "alpa.LogSoftmaxGrad", F::kGrad, kNone, kNone, kNone, kNone},
    {OpKind::kLayerNormalizationGrad, "alpa.LayerNormalizationGrad", F::kGrad, kNone, kNone, kNone, kNone},
    {OpKind::kBatchNormalizationGrad, "alpa.BatchNormalizationGrad", F::kGrad, kNone, kNone, kNone, kNone},
    {OpKind::kConvGradInput, "alpa.ConvGradInput", F::kGrad, kNone, kNone, kNone, kNone},
    {OpKind::kConvGradWeight, "alpa.ConvGradWeight", F::kGrad, kNone, kNone, kNone, kNone},
    {OpKind::kMaxPoolGrad, "alpa.MaxPoolGrad", F::kGrad, kNone, kNone, kNone, kNone},
    {OpKind::kAveragePoolGrad, "alpa.AveragePoolGrad", F::kGrad, kNone, kNone, kNone, kNone},
    {OpKind::kGatherGrad, "alpa.GatherGrad", F::kGrad, kNone, kNone, kNone, kNone},
    {OpKind::kSliceGrad, "alpa.SliceGrad", F::kGrad, kNone, kNone, kNone, kNone},
    {OpKind::kReduceMaxGrad, "alpa.ReduceMaxGrad", F::kGrad, kNone, kNone, kNone, kNone},
    {OpKind::kTopKGrad, "alpa.TopKGrad", F::kGrad, kNone, kNone, kNone, kNone},
    {OpKind::kClipGrad, "alpa.ClipGrad", F::kGrad, kNone, kNone, kNone, kNone},
    {OpKind::kPowGrad, "alpa.PowGrad", F::kGrad, kNone, kNone, kNone, kNone},
    {OpKind::kSoftmaxCrossEntropyLossGrad, "alpa.SoftmaxCrossEntropyLossGrad", F::kGrad, kNone, kNone, kNone, kNone},
    {OpKind::kZeros, "alpa.Zeros", F::kGrad, kNone, kNone, kNone, kNone},
    {OpKind::kSgdUpdate, "alpa.SgdUpdate", F::kOptimizer, kNone, kNone, kNone, kNone},
    {OpKind::kAdamUpdate, "alpa.AdamUpdate", F::kOptimizer, kNone, kNone, kNone, kNone},
    // A lowering's collective between two shardings of one tensor (rank programs only).
    {OpKind::kReshard, "alpa.Reshard", F::kLayout, kNone, kNone, kNone, kNone},
}};

constexpr bool table_in_enum_order() {
  for (size_t i = 0; i < kOps.size(); ++i) {
    if (static_cast<size_t>(kOps[i].kind) != i) return false;
  }
  return true;
}
static_assert(table_in_enum_order(), "kOps rows must follow the OpKind enum order");

}  // namespace

const OpInfo& op_info(OpKind kind) { return kOps[static_cast<size_t>(kind)]; }

std::string_view op_name(OpKind kind) { return op_info(kind).name; }

bool is_internal(OpKind kind) {
  const OpFamily f = op_info(kind).family;
  return f == OpFamily::kGrad || f == OpFamily::kOptimizer;
}

std::optional<OpKind> op_kind_from_onnx(std::string_view op_type) {
  for (const auto& row : kOps) {
    if (row.name == op_type && !is_internal(row.kind)) return row.kind;
  }
  return std::nullopt;
}

bool is_heavy_op(OpKind kind) {
  const OpFamily f = op_info(kind).family;
  return f == OpFamily::kContraction || f == OpFamily::kConv;
}

}  // namespace alpa
