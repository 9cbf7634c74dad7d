// The CPU backend: dispatches each node to its op family's kernels.
#include <exception>

#include "executor/cpu/blas.h"
#include "executor/cpu/cpu_common.h"
#include "executor/cpu/cpu_ops.h"
#include "planner/graph/shape_inference.h"

namespace alpa::exec {
namespace {

using Runner = void (*)(const KernelCall&);

Runner runner_for(OpKind kind) {
  using namespace cpu;
  switch (kind) {
    case OpKind::kAdd: case OpKind::kSub: case OpKind::kMul: case OpKind::kDiv: case OpKind::kPow:
    case OpKind::kSqrt: case OpKind::kNeg: case OpKind::kExp: case OpKind::kLog: case OpKind::kErf:
    case OpKind::kTanh: case OpKind::kRelu: case OpKind::kSigmoid: case OpKind::kEqual:
    case OpKind::kLess: case OpKind::kGreater: case OpKind::kNot: case OpKind::kWhere:
    case OpKind::kClip:
      return run_elementwise;
    case OpKind::kCast: return run_cast;
    case OpKind::kDropout: return run_dropout;
    case OpKind::kMatMul: case OpKind::kGemm: case OpKind::kEinsum:
      return run_contraction;
    case OpKind::kConv: case OpKind::kMaxPool: case OpKind::kAveragePool:
    case OpKind::kGlobalAveragePool: case OpKind::kConvGradInput: case OpKind::kConvGradWeight:
    case OpKind::kMaxPoolGrad: case OpKind::kAveragePoolGrad:
      return run_conv_pool;
    case OpKind::kLayerNormalization: case OpKind::kBatchNormalization: case OpKind::kSoftmax:
    case OpKind::kLogSoftmax: case OpKind::kLayerNormalizationGrad:
    case OpKind::kBatchNormalizationGrad: case OpKind::kSoftmaxGrad: case OpKind::kLogSoftmaxGrad:
      return run_normalization;
    case OpKind::kFlatten: case OpKind::kReshape: case OpKind::kSqueeze: case OpKind::kUnsqueeze:
    case OpKind::kIdentity: case OpKind::kTranspose: case OpKind::kExpand: case OpKind::kGather:
    case OpKind::kConcat: case OpKind::kSplit: case OpKind::kSlice: case OpKind::kGatherGrad:
    case OpKind::kSliceGrad:
      return run_layout;
    case OpKind::kReduceSum: case OpKind::kReduceMean: case OpKind::kReduceMax:
    case OpKind::kCumSum: case OpKind::kOneHot: case OpKind::kTopK: case OpKind::kSumToShape:
    case OpKind::kReduceMaxGrad: case OpKind::kTopKGrad:
      return run_reduce_select;
    case OpKind::kSoftmaxCrossEntropyLoss: case OpKind::kSoftmaxCrossEntropyLossGrad:
      return run_loss;
    case OpKind::kReluGrad: case OpKind::kSigmoidGrad: case OpKind::kTanhGrad:
    case OpKind::kErfGrad: case OpKind::kClipGrad: case OpKind::kPowGrad: case OpKind::kZeros:
      return run_grad;
    case OpKind::kSgdUpdate: case OpKind::kAdamUpdate:
      return run_optimizer;
    case OpKind::kConstant: case OpKind::kConstantOfShape: case OpKind::kShape: case OpKind::kRange:
      return nullptr;  // folded at import
    case OpKind::kReshard:
      return nullptr;  // collectives: the rank runtime performs them, not a kernel
  }
  return nullptr;
}

class CpuKernels final : public Kernels {
 public:
  void run(const KernelCall& call) override {
    ALPA_CHECK(call.node != nullptr, "kernel call without a node");
    const Node& node = *call.node;
    const Runner runner = runner_for(node.kind);
    if (runner == nullptr) cpu::unsupported(node, "op (folded at import, no kernel)");
    for (const TensorView& t : call.outputs) {
      if (t.dtype == DType::kFloat16 || t.dtype == DType::kBFloat16) cpu::unsupported(node, "16-bit float dtype");
    }
    try {
      runner(call);
    } catch (const ShapeError& e) {
      // A shape helper rejected the node's attributes: the importer/planner should have.
      cpu::unsupported(node, std::string("shape: ") + e.what());
    }
  }
};

}  // namespace

std::unique_ptr<Kernels> make_cpu_kernels() { return std::make_unique<CpuKernels>(); }

int cpu_blas_threads() { return openblas_get_num_threads(); }

}  // namespace alpa::exec
