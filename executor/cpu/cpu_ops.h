// Per-family entry points of the CPU backend; cpu_kernels.cc dispatches on the node's OpKind.
#pragma once

#include "executor/backend/kernels.h"

namespace alpa::exec::cpu {

// elementwise.cc: Add Sub Mul Div Pow Sqrt Neg Exp Log Erf Tanh Relu Sigmoid Equal Less Greater
// Not Where Clip
void run_elementwise(const KernelCall& call);
// cast_dropout.cc: Cast, Dropout
void run_cast(const KernelCall& call);
void run_dropout(const KernelCall& call);
// contraction.cc: MatMul Gemm Einsum
void run_contraction(const KernelCall& call);
// conv_pool.cc: Conv MaxPool AveragePool GlobalAveragePool ConvGradInput ConvGradWeight
// MaxPoolGrad AveragePoolGrad
void run_conv_pool(const KernelCall& call);
// normalization.cc: LayerNormalization BatchNormalization (+ grads), Softmax LogSoftmax (+ grads)
void run_normalization(const KernelCall& call);
// layout.cc: Flatten Reshape Squeeze Unsqueeze Identity Transpose Expand Gather Concat Split Slice
// GatherGrad SliceGrad
void run_layout(const KernelCall& call);
// reduce_select.cc: ReduceSum ReduceMean ReduceMax CumSum OneHot TopK SumToShape ReduceMaxGrad
// TopKGrad
void run_reduce_select(const KernelCall& call);
// loss.cc: SoftmaxCrossEntropyLoss (+ grad)
void run_loss(const KernelCall& call);
// grad.cc: ReluGrad SigmoidGrad TanhGrad ErfGrad ClipGrad PowGrad Zeros
void run_grad(const KernelCall& call);
// optimizer.cc: SgdUpdate AdamUpdate
void run_optimizer(const KernelCall& call);

}  // namespace alpa::exec::cpu
