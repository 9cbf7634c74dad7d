// SoftmaxCrossEntropyLoss and its gradient. scores [N, C, d...], labels [N, d...]; the class dim
// has stride D = prod(d...). Accumulation in double.
#include <cmath>
#include <limits>
#include <optional>

#include "executor/cpu/cpu_common.h"
#include "executor/cpu/cpu_ops.h"

namespace alpa::exec::cpu {
namespace {

struct LossSetup {
  int64_t n, c, d;  // batch, classes, positions per sample
  std::string reduction;
  std::optional<int64_t> ignore;
  std::vector<int64_t> labels;  // validated: in [0, C) or == ignore
  double count;                 // the mean's divisor (1 for "sum"/"none")
};

LossSetup setup(const KernelCall& call) {
  const Node& node = *call.node;
  if (call.inputs.size() > 2) unsupported(node, "class weights input");
  const Shape& s = call.inputs[0].shape;
  LossSetup ls;
  ls.n = s[0];
  ls.c = s[1];
  ls.d = product(s, 2, s.size());
  ls.reduction = node.attrs.has("reduction") ? node.attrs.get_string("reduction") : "mean";
  if (ls.reduction != "mean" && ls.reduction != "sum" && ls.reduction != "none") {
    unsupported(node, "reduction '" + ls.reduction + "'");
  }
  if (node.attrs.has("ignore_index")) ls.ignore = node.attrs.get_int("ignore_index");
  ls.labels = read_ints(call.inputs[1]);
  int64_t counted = 0;
  for (int64_t label : ls.labels) {
    if (ls.ignore && label == *ls.ignore) continue;
    if (label < 0 || label >= ls.c) {
      bad_data(node, "label " + std::to_string(label) + " is outside [0, " + std::to_string(ls.c) + ")");
    }
    ++counted;
  }
  ls.count = 1.0;
  if (ls.reduction == "mean") {
    const double norm = call.ctx ? call.ctx->loss_normalizer : 0.0;
    ls.count = norm > 0 ? norm : static_cast<double>(counted);  // 0 counted labels: 0/0 = NaN
  }
  return ls;
}

// log_softmax over the class dim for sample n into lp[c * D + j] (double).
template <typename T>
void log_softmax_sample(const T* scores, const LossSetup& ls, double* lp, double* mx, double* sum) {
  std::fill_n(mx, ls.d, -std::numeric_limits<double>::infinity());
  std::fill_n(sum, ls.d, 0.0);
  for (int64_t c = 0; c < ls.c; ++c) {
    for (int64_t j = 0; j < ls.d; ++j) mx[j] = std::max(mx[j], static_cast<double>(scores[c * ls.d + j]));
  }
  for (int64_t j = 0; j < ls.d; ++j) {
    if (std::isinf(mx[j])) mx[j] = 0;
  }
  for (int64_t c = 0; c < ls.c; ++c) {
    for (int64_t j = 0; j < ls.d; ++j) sum[j] += std::exp(scores[c * ls.d + j] - mx[j]);
  }
  for (int64_t j = 0; j < ls.d; ++j) sum[j] = mx[j] + std::log(sum[j]);
  for (int64_t c = 0; c < ls.c; ++c) {
    for (int64_t j = 0; j < ls.d; ++j) lp[c * ls.d + j] = scores[c * ls.d + j] - sum[j];
  }
}

template <typename T>
void loss(const KernelCall& call) {
  const LossSetup ls = setup(call);
  Scratch scratch(call);
  double* lp = scratch.get<double>(ls.c * ls.d);
  double* mx = scratch.get<double>(ls.d);
  double* sum = scratch.get<double>(ls.d);
  const T* scores = call.inputs[0].as<T>();
  T* out = call.outputs[0].as<T>();
  T* log_prob = has_output(call, 1) ? call.outputs[1].as<T>() : nullptr;
  double total = 0;
  for (int64_t n = 0; n < ls.n; ++n) {
    log_softmax_sample(scores + n * ls.c * ls.d, ls, lp, mx, sum);
    if (log_prob) {
      for (int64_t i = 0; i < ls.c * ls.d; ++i) log_prob[n * ls.c * ls.d + i] = static_cast<T>(lp[i]);
    }
    for (int64_t j = 0; j < ls.d; ++j) {
      const int64_t label = ls.labels[n * ls.d + j];
      const double l = (ls.ignore && label == *ls.ignore) ? 0.0 : -lp[label * ls.d + j];
      if (ls.reduction == "none") out[n * ls.d + j] = static_cast<T>(l);
      total += l;
    }
  }
  if (ls.reduction != "none") out[0] = static_cast<T>(total / ls.count);
}

// dscores = (softmax(scores) - onehot(label)) * dloss / count; 0 on ignored positions.
template <typename T>
void loss_grad(const KernelCall& call) {
  KernelCall inner = call;  // the forward's operands are inputs 1 and 2
  inner.inputs.erase(inner.inputs.begin());
  const LossSetup ls = setup(inner);
  Scratch scratch(call);
  double* lp = scratch.get<double>(ls.c * ls.d);
  double* mx = scratch.get<double>(ls.d);
  double* sum = scratch.get<double>(ls.d);
  const T* dloss = call.inputs[0].as<T>();
  const T* scores = call.inputs[1].as<T>();
  T* dx = call.outputs[0].as<T>();
  const bool per_position = ls.reduction == "none";
  for (int64_t n = 0; n < ls.n; ++n) {
    log_softmax_sample(scores + n * ls.c * ls.d, ls, lp, mx, sum);
    T* dxn = dx + n * ls.c * ls.d;
    for (int64_t j = 0; j < ls.d; ++j) {
      const int64_t label = ls.labels[n * ls.d + j];
      const bool ignored = ls.ignore && label == *ls.ignore;
      const double g = ignored ? 0.0 : static_cast<double>(dloss[per_position ? n * ls.d + j : 0]) / ls.count;
      for (int64_t c = 0; c < ls.c; ++c) {
        const double p = std::exp(lp[c * ls.d + j]) - (c == label ? 1.0 : 0.0);
        dxn[c * ls.d + j] = ignored ? T(0) : static_cast<T>(p * g);
      }
    }
  }
}

}  // namespace

void run_loss(const KernelCall& call) {
  const Node& node = *call.node;
  const DType dt = float_dtype(call);
  if (node.kind == OpKind::kSoftmaxCrossEntropyLoss) {
    expect_inputs(call, 2, 3);
    dispatch_float(dt, node, [&](auto t) { loss<decltype(t)>(call); });
  } else if (node.kind == OpKind::kSoftmaxCrossEntropyLossGrad) {
    expect_inputs(call, 3, 4);
    dispatch_float(dt, node, [&](auto t) { loss_grad<decltype(t)>(call); });
  } else {
    unsupported(node, "op in the loss family");
  }
}

}  // namespace alpa::exec::cpu
