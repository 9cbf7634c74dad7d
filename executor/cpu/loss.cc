// SoftmaxCrossEntropyLoss and its gradient. scores [N, C, d...], labels [N, d...]; the class dim
// has stride D = prod(d...). Accumulation in double.
#include <cmath>
#include <limits>
#include <optional>
#include <vector>
#include <algorithm>

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
  // Vocab-parallel: this rank holds classes [class_offset, class_offset + C) of class_total.
  const int64_t classes = node.attrs.get_int("class_total", ls.c);
  int64_t counted = 0;
  for (int64_t label : ls.labels) {
    if (ls.ignore && label == *ls.ignore) continue;
    if (label < 0 || label >= classes) {
      bad_data(node, "label " + std::to_string(label) + " is outside [0, " + std::to_string(classes) + ")");
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

// Vocab-parallel (the class dim split across ranks; attributes set by the lowering): each
// position's max and sum of exponentials are reduced over the ranks holding the other classes
// (one max, one sum: the plan's 2 values per position), the log-sum-exp saved for the backward;
// each rank's loss is its share of the log-sum-exp less the target scores it holds (the
// lowering sums the ranks' losses). Padding classes past class_total are left out.
struct VocabBlock {
  int64_t offset = 0, valid = 0, ways = 1;
};

VocabBlock vocab_block(const Node& node, int64_t local_classes) {
  VocabBlock v;
  v.offset = node.attrs.get_int("class_offset");
  v.ways = node.attrs.get_int("class_ways");
  v.valid = std::max<int64_t>(0, std::min(local_classes, node.attrs.get_int("class_total") - v.offset));
  return v;
}

template <typename T>
void loss_vocab_parallel(const KernelCall& call) {
  const Node& node = *call.node;
  const LossSetup ls = setup(call);
  const VocabBlock vb = vocab_block(node, ls.c);
  if (!call.ctx || !call.ctx->reduce_over_classes || !call.ctx->saved_stats) {
    ALPA_CHECK(false, "vocab-parallel cross-entropy without its rank hooks");
  }
  const T* scores = call.inputs[0].as<T>();
  const int64_t positions = ls.n * ls.d;
  std::vector<float> mx(static_cast<size_t>(positions), -std::numeric_limits<float>::max());
  for (int64_t n = 0; n < ls.n; ++n) {
    for (int64_t c = 0; c < vb.valid; ++c) {
      for (int64_t j = 0; j < ls.d; ++j) {
        float& m = mx[static_cast<size_t>(n * ls.d + j)];
        m = std::max(m, static_cast<float>(scores[(n * ls.c + c) * ls.d + j]));
      }
    }
  }
  call.ctx->reduce_over_classes(node, mx.data(), positions, DType::kFloat32, true);
  std::vector<double> sum(static_cast<size_t>(positions), 0.0);
  for (int64_t n = 0; n < ls.n; ++n) {
    for (int64_t c = 0; c < vb.valid; ++c) {
      for (int64_t j = 0; j < ls.d; ++j) {
        const size_t p = static_cast<size_t>(n * ls.d + j);
        sum[p] += std::exp(static_cast<double>(scores[(n * ls.c + c) * ls.d + j]) - mx[p]);
      }
    }
  }
  std::vector<float> sum32(sum.begin(), sum.end());
  call.ctx->reduce_over_classes(node, sum32.data(), positions, DType::kFloat32, false);
  std::vector<double> lse(static_cast<size_t>(positions));
  for (size_t p = 0; p < lse.size(); ++p) lse[p] = static_cast<double>(mx[p]) + std::log(static_cast<double>(sum32[p]));
  T* log_prob = has_output(call, 1) ? call.outputs[1].as<T>() : nullptr;
  double total = 0;
  for (int64_t n = 0; n < ls.n; ++n) {
    for (int64_t j = 0; j < ls.d; ++j) {
      const size_t p = static_cast<size_t>(n * ls.d + j);
      const int64_t label = ls.labels[p];
      if (log_prob) {
        for (int64_t c = 0; c < ls.c; ++c) {
          log_prob[(n * ls.c + c) * ls.d + j] = c < vb.valid ? static_cast<T>(scores[(n * ls.c + c) * ls.d + j] - lse[p]) : T(0);
        }
      }
      if (ls.ignore && label == *ls.ignore) continue;
      total += lse[p] / static_cast<double>(vb.ways);
      const int64_t local = label - vb.offset;
      if (local >= 0 && local < vb.valid) total -= static_cast<double>(scores[(n * ls.c + local) * ls.d + j]);
    }
  }
  (*call.ctx->saved_stats)[call.inputs[0].data] = std::move(lse);
  call.outputs[0].as<T>()[0] = static_cast<T>(total / ls.count);
}

template <typename T>
void loss_grad_vocab_parallel(const KernelCall& call) {
  KernelCall inner = call;
  inner.inputs.erase(inner.inputs.begin());
  const LossSetup ls = setup(inner);
  const VocabBlock vb = vocab_block(*call.node, ls.c);
  const std::vector<double>* lse = nullptr;
  if (call.ctx && call.ctx->saved_stats) {
    auto it = call.ctx->saved_stats->find(call.inputs[1].data);
    if (it != call.ctx->saved_stats->end()) lse = &it->second;
  }
  ALPA_CHECK(lse != nullptr, "vocab-parallel cross-entropy gradient without its forward's statistics");
  const T* dloss = call.inputs[0].as<T>();
  const T* scores = call.inputs[1].as<T>();
  T* dx = call.outputs[0].as<T>();
  const double g0 = static_cast<double>(dloss[0]) / ls.count;
  for (int64_t n = 0; n < ls.n; ++n) {
    for (int64_t j = 0; j < ls.d; ++j) {
      const size_t p = static_cast<size_t>(n * ls.d + j);
      const int64_t label = ls.labels[p];
      const bool ignored = ls.ignore && label == *ls.ignore;
      for (int64_t c = 0; c < ls.c; ++c) {
        const int64_t at = (n * ls.c + c) * ls.d + j;
        if (ignored || c >= vb.valid) {
          dx[at] = T(0);
          continue;
        }
        const double prob = std::exp(static_cast<double>(scores[at]) - (*lse)[p]) - (c + vb.offset == label ? 1.0 : 0.0);
        dx[at] = static_cast<T>(prob * g0);
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
    if (node.attrs.has("class_offset")) {
      dispatch_float(dt, node, [&](auto t) { loss_vocab_parallel<decltype(t)>(call); });
    } else {
      dispatch_float(dt, node, [&](auto t) { loss<decltype(t)>(call); });
    }
  } else if (node.kind == OpKind::kSoftmaxCrossEntropyLossGrad) {
    expect_inputs(call, 3, 4);
    if (node.attrs.has("class_offset")) {
      dispatch_float(dt, node, [&](auto t) { loss_grad_vocab_parallel<decltype(t)>(call); });
    } else {
      dispatch_float(dt, node, [&](auto t) { loss_grad<decltype(t)>(call); });
    }
  } else {
    unsupported(node, "op in the loss family");
  }
}

}  // namespace alpa::exec::cpu
