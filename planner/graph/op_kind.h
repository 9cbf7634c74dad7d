// The closed set of operators of the graph IR, with the per-op facts every pass relies on:
// which inputs are differentiable (the importer decides parameters vs buffers from it; autodiff
// derives gradients along it) and which tensors the backward rule keeps (activation memory).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace alpa {

// X(enum name, ONNX op type)
#define ALPA_OP_KINDS(X)                                         \
  X(Add, "Add")                                                  \
  X(Sub, "Sub")                                                  \
  X(Mul, "Mul")                                                  \
  X(Div, "Div")                                                  \
  X(Pow, "Pow")                                                  \
  X(Sqrt, "Sqrt")                                                \
  X(Neg, "Neg")                                                  \
  X(Exp, "Exp")                                                  \
  X(Log, "Log")                                                  \
  X(Erf, "Erf")                                                  \
  X(Tanh, "Tanh")                                                \
  X(Relu, "Relu")                                                \
  X(Sigmoid, "Sigmoid")                                          \
  X(Softmax, "Softmax")                                          \
  X(LogSoftmax, "LogSoftmax")                                    \
  X(LayerNormalization, "LayerNormalization")                    \
  X(BatchNormalization, "BatchNormalization")                    \
  X(MatMul, "MatMul")                                            \
  X(Gemm, "Gemm")                                                \
  X(Einsum, "Einsum")                                            \
  X(Conv, "Conv")                                                \
  X(MaxPool, "MaxPool")                                          \
  X(AveragePool, "AveragePool")                                  \
  X(GlobalAveragePool, "GlobalAveragePool")                      \
  X(Flatten, "Flatten")                                          \
  X(Reshape, "Reshape")                                          \
  X(Transpose, "Transpose")                                      \
  X(Gather, "Gather")                                            \
  X(Concat, "Concat")                                            \
  X(Split, "Split")                                              \
  X(Slice, "Slice")                                              \
  X(Squeeze, "Squeeze")                                          \
  X(Unsqueeze, "Unsqueeze")                                      \
  X(Expand, "Expand")                                            \
  X(ReduceSum, "ReduceSum")                                      \
  X(ReduceMean, "ReduceMean")                                    \
  X(ReduceMax, "ReduceMax")                                      \
  X(Where, "Where")                                              \
  X(Equal, "Equal")                                              \
  X(Less, "Less")                                                \
  X(Greater, "Greater")                                          \
  X(Not, "Not")                                                  \
  X(Cast, "Cast")                                                \
  X(Clip, "Clip")                                                \
  X(CumSum, "CumSum")                                            \
  X(OneHot, "OneHot")                                            \
  X(TopK, "TopK")                                                \
  X(Identity, "Identity")                                        \
  X(Dropout, "Dropout")                                          \
  X(SoftmaxCrossEntropyLoss, "SoftmaxCrossEntropyLoss")          \
  X(Constant, "Constant")                                        \
  X(ConstantOfShape, "ConstantOfShape")                          \
  X(Shape, "Shape")                                              \
  X(Range, "Range")                                              \
  /* Internal ops: backward rules and optimizer updates (never imported from ONNX). */ \
  X(SumToShape, "alpa.SumToShape")                               \
  X(ReluGrad, "alpa.ReluGrad")                                   \
  X(SigmoidGrad, "alpa.SigmoidGrad")                             \
  X(TanhGrad, "alpa.TanhGrad")                                   \
  X(ErfGrad, "alpa.ErfGrad")                                     \
  X(SoftmaxGrad, "alpa.SoftmaxGrad")                             \
  X(LogSoftmaxGrad, "alpa.LogSoftmaxGrad")                       \
  X(LayerNormalizationGrad, "alpa.LayerNormalizationGrad")       \
  X(BatchNormalizationGrad, "alpa.BatchNormalizationGrad")       \
  X(ConvGradInput, "alpa.ConvGradInput")                         \
  X(ConvGradWeight, "alpa.ConvGradWeight")                       \
  X(MaxPoolGrad, "alpa.MaxPoolGrad")                             \
  X(AveragePoolGrad, "alpa.AveragePoolGrad")                     \
  X(GatherGrad, "alpa.GatherGrad")                               \
  X(SliceGrad, "alpa.SliceGrad")                                 \
  X(ReduceMaxGrad, "alpa.ReduceMaxGrad")                         \
  X(TopKGrad, "alpa.TopKGrad")                                   \
  X(ClipGrad, "alpa.ClipGrad")                                   \
  X(PowGrad, "alpa.PowGrad")                                     \
  X(SoftmaxCrossEntropyLossGrad, "alpa.SoftmaxCrossEntropyLossGrad") \
  X(Zeros, "alpa.Zeros")                                         \
  X(SgdUpdate, "alpa.SgdUpdate")                                 \
  X(AdamUpdate, "alpa.AdamUpdate")                               \
  X(Reshard, "alpa.Reshard")

enum class OpKind : uint8_t {
#define ALPA_OP_ENUM(name, onnx) k##name,
  ALPA_OP_KINDS(ALPA_OP_ENUM)
#undef ALPA_OP_ENUM
};

inline constexpr int kNumOpKinds = 0
#define ALPA_OP_COUNT(name, onnx) +1
    ALPA_OP_KINDS(ALPA_OP_COUNT)
#undef ALPA_OP_COUNT
    ;

enum class OpFamily : uint8_t {
  kElementwise,  // unary/binary math, comparisons, Where, Cast, Clip
  kContraction,  // MatMul, Gemm, Einsum
  kConv,
  kPool,
  kNormalization,  // LayerNormalization, BatchNormalization
  kSoftmax,
  kReduction,
  kLayout,  // Reshape, Transpose, Slice, Concat, ... (moves data, no math)
  kGather,
  kScan,  // CumSum
  kSelect,  // TopK, OneHot
  kDropout,
  kLoss,
  kSource,  // Constant, ConstantOfShape, Shape, Range: folded away at import
  kGrad,       // internal backward ops
  kOptimizer,  // internal optimizer updates
};

// Bit i of a mask refers to input (or output) i; kAll covers every operand.
inline constexpr uint32_t kAll = 0xFFFFFFFFu;

struct OpInfo {
  OpKind kind;
  std::string_view name;  // the ONNX op type
  OpFamily family;
  uint32_t differentiable_inputs;   // inputs through which a gradient flows
  uint32_t differentiable_outputs;  // outputs that carry a gradient
  uint32_t saved_inputs;            // inputs the backward rule reads
  uint32_t saved_outputs;           // outputs the backward rule reads
};

const OpInfo& op_info(OpKind kind);
std::string_view op_name(OpKind kind);
// Only ONNX operators map; internal ops ("alpa.*") never do.
std::optional<OpKind> op_kind_from_onnx(std::string_view op_type);
bool is_internal(OpKind kind);
// Contractions (MatMul, Gemm, Einsum) and convolutions: the ops that carry a model's FLOPs.
bool is_heavy_op(OpKind kind);

inline bool mask_has(uint32_t mask, size_t index) {
  return index < 32 && ((mask >> index) & 1u) != 0;
}

}  // namespace alpa
