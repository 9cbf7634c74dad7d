// LayerNormalization, BatchNormalization, Softmax, LogSoftmax and their gradients.
// Statistics and sums accumulate in double.
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "executor/cpu/cpu_common.h"
#include "executor/cpu/cpu_ops.h"
#include "planner/common/error.h"
#include "planner/graph/shape_inference.h"

namespace alpa::exec::cpu {
namespace {

// --- LayerNormalization -----------------------------------------------------------------------

struct RowSplit {
  int64_t rows, cols;
  Shape normalized;  // the dims [axis, rank)
};

RowSplit layer_norm_split(const Node& node, const Shape& x) {
  const int64_t rank = static_cast<int64_t>(x.size());
  const int64_t axis = normalize_axis(node.attrs.get_int("axis", -1), rank);
  return {product(x, 0, axis), product(x, axis, x.size()), Shape(x.begin() + axis, x.end())};
}

// A scale/bias operand expanded to the full normalized dims (a view when it already is).
template <typename T>
const T* expand_to(const Node& node, const TensorView& t, const Shape& normalized, Scratch& scratch) {
  if (t.shape == normalized || t.numel() == num_elements(normalized)) return t.as<T>();
  T* buf = scratch.get<T>(num_elements(normalized));
  broadcast_copy(node, sizeof(T), t.data, t.shape, buf, normalized);
  return buf;
}

template <typename T>
void row_stats(const T* x, int64_t n, double eps, double& mean, double& inv_std) {
  double s = 0;
  for (int64_t j = 0; j < n; ++j) s += x[j];
  mean = n ? s / static_cast<double>(n) : 0.0;
  double v = 0;
  for (int64_t j = 0; j < n; ++j) {
    const double d = x[j] - mean;
    v += d * d;
  }
  v = n ? v / static_cast<double>(n) : 0.0;
  inv_std = 1.0 / std::sqrt(v + eps);
}

template <typename T>
void layer_norm(const KernelCall& call) {
  const Node& node = *call.node;
  const TensorView& x = call.inputs[0];
  const RowSplit rs = layer_norm_split(node, x.shape);
  const double eps = node.attrs.get_float("epsilon", 1e-5);
  Scratch scratch(call);
  const T* scale = expand_to<T>(node, call.inputs[1], rs.normalized, scratch);
  const T* bias = has_input(call, 2) ? expand_to<T>(node, call.inputs[2], rs.normalized, scratch) : nullptr;
  for (int64_t r = 0; r < rs.rows; ++r) {
    const T* xr = x.as<T>() + r * rs.cols;
    T* yr = call.outputs[0].as<T>() + r * rs.cols;
    double mean, inv;
    row_stats(xr, rs.cols, eps, mean, inv);
    const T m = static_cast<T>(mean), iv = static_cast<T>(inv);
    for (int64_t j = 0; j < rs.cols; ++j) {
      const T v = (xr[j] - m) * iv * scale[j];
      yr[j] = bias ? v + bias[j] : v;
    }
    if (has_output(call, 1)) write_double(call.outputs[1], r, mean);
    if (has_output(call, 2)) write_double(call.outputs[2], r, inv);
  }
}

template <typename T>
void layer_norm_grad(const KernelCall& call) {
  const Node& node = *call.node;
  const TensorView& dy = call.inputs[0];
  const TensorView& x = call.inputs[1];
  const TensorView& sc = call.inputs[2];
  const RowSplit rs = layer_norm_split(node, x.shape);
  const double eps = node.attrs.get_float("epsilon", 1e-5);
  Scratch scratch(call);
  const T* scale = expand_to<T>(node, sc, rs.normalized, scratch);
  const int64_t D = rs.cols;
  double* dscale = scratch.get<double>(D);
  double* dbias = scratch.get<double>(D);
  std::fill_n(dscale, D, 0.0);
  std::fill_n(dbias, D, 0.0);
  double* xhat = scratch.get<double>(D);
  double* g = scratch.get<double>(D);
  for (int64_t r = 0; r < rs.rows; ++r) {
    const T* xr = x.as<T>() + r * D;
    const T* dyr = dy.as<T>() + r * D;
    double mean, inv;
    row_stats(xr, D, eps, mean, inv);
    double sum_g = 0, sum_gx = 0;
    for (int64_t j = 0; j < D; ++j) {
      xhat[j] = (xr[j] - mean) * inv;
      g[j] = static_cast<double>(dyr[j]) * scale[j];
      sum_g += g[j];
      sum_gx += g[j] * xhat[j];
      dscale[j] += static_cast<double>(dyr[j]) * xhat[j];
      dbias[j] += dyr[j];
    }
    const double mg = sum_g / static_cast<double>(D), mgx = sum_gx / static_cast<double>(D);
    T* dxr = call.outputs[0].as<T>() + r * D;
    for (int64_t j = 0; j < D; ++j) dxr[j] = static_cast<T>(inv * (g[j] - mg - xhat[j] * mgx));
  }
  // Reduce the per-position sums to the scale's (possibly broadcast) shape.
  const Shape target = align_rank(sc.shape, rs.normalized.size());
  for (size_t out = 1; out <= 2; ++out) {
    if (!has_output(call, out)) continue;
    const double* src = out == 1 ? dscale : dbias;
    T* buf = scratch.get<T>(D);
    for (int64_t j = 0; j < D; ++j) buf[j] = static_cast<T>(src[j]);
    reduce_sum_to<T>(buf, rs.normalized, call.outputs[out].as<T>(), target, 1.0, scratch);
  }
}

// --- BatchNormalization -----------------------------------------------------------------------

struct ChannelSplit {
  int64_t n, c, s;
  int64_t count() const { return n * s; }
};

ChannelSplit channel_split(const Shape& x) { return {x[0], x[1], product(x, 2, x.size())}; }

template <typename T>
void channel_stats(const T* x, const ChannelSplit& cs, int64_t c, double& mean, double& var) {
  double s = 0;
  for (int64_t n = 0; n < cs.n; ++n) {
    const T* p = x + (n * cs.c + c) * cs.s;
    for (int64_t i = 0; i < cs.s; ++i) s += p[i];
  }
  const double cnt = static_cast<double>(cs.count());
  mean = cnt > 0 ? s / cnt : 0.0;
  double v = 0;
  for (int64_t n = 0; n < cs.n; ++n) {
    const T* p = x + (n * cs.c + c) * cs.s;
    for (int64_t i = 0; i < cs.s; ++i) {
      const double d = p[i] - mean;
      v += d * d;
    }
  }
  var = cnt > 0 ? v / cnt : 0.0;
}

// Whether a BatchNorm's statistics are summed over other ranks' samples, and over how many
// ranks' blocks: the node's own split (its "batch_axes" attribute) or the rank's batch block.
struct BatchSync {
  std::function<void(void*, int64_t, DType)> sum;
  double ways = 1;
};
BatchSync batch_sync(const StepContext* ctx, const Node& node) {
  BatchSync out;
  if (!ctx) return out;
  if (node.attrs.has("batch_axes") && ctx->sum_over_axes) {
    const int64_t axes = node.attrs.get_int("batch_axes");
    out.sum = [ctx, axes](void* data, int64_t count, DType dtype) { ctx->sum_over_axes(axes, data, count, dtype); };
    out.ways = static_cast<double>(node.attrs.get_int("batch_ways", 1));
  } else if (ctx->sum_over_batch) {
    out.sum = ctx->sum_over_batch;
    out.ways = static_cast<double>(ctx->batch_ways);
  }
  return out;
}

// Per-channel mean and variance over the samples of every rank sharing the microbatch: the
// channel sums are all-reduced, then the sums of squared deviations from the global mean (two
// all-reduces of C fp64 values, what the planner counts). Returns mean[c], var[c].
template <typename T>
std::vector<double> synced_channel_stats(const TensorView& x, const ChannelSplit& cs, const BatchSync& sync) {
  const double cnt = static_cast<double>(cs.count()) * sync.ways;
  std::vector<double> out(static_cast<size_t>(2 * cs.c), 0.0);
  std::vector<double> buf(static_cast<size_t>(cs.c));
  for (int64_t c = 0; c < cs.c; ++c) {
    double s = 0;
    for (int64_t n = 0; n < cs.n; ++n) {
      const T* p = x.as<T>() + (n * cs.c + c) * cs.s;
      for (int64_t i = 0; i < cs.s; ++i) s += p[i];
    }
    buf[static_cast<size_t>(c)] = s;
  }
  sync.sum(buf.data(), cs.c, DType::kFloat64);
  for (int64_t c = 0; c < cs.c; ++c) out[static_cast<size_t>(c)] = cnt > 0 ? static_cast<double>(buf[static_cast<size_t>(c)]) / cnt : 0.0;
  for (int64_t c = 0; c < cs.c; ++c) {
    const double mean = out[static_cast<size_t>(c)];
    double v = 0;
    for (int64_t n = 0; n < cs.n; ++n) {
      const T* p = x.as<T>() + (n * cs.c + c) * cs.s;
      for (int64_t i = 0; i < cs.s; ++i) {
        const double d = p[i] - mean;
        v += d * d;
      }
    }
    buf[static_cast<size_t>(c)] = v;
  }
  sync.sum(buf.data(), cs.c, DType::kFloat64);
  for (int64_t c = 0; c < cs.c; ++c) out[static_cast<size_t>(cs.c + c)] = cnt > 0 ? static_cast<double>(buf[static_cast<size_t>(c)]) / cnt : 0.0;
  return out;
}

template <typename T>
void batch_norm(const KernelCall& call) {
  const Node& node = *call.node;
  const TensorView& x = call.inputs[0];
  const ChannelSplit cs = channel_split(x.shape);
  const double eps = node.attrs.get_float("epsilon", 1e-5);
  const double momentum = node.attrs.get_float("momentum", 0.9);
  const bool training = node.attrs.get_int("training_mode", 0) != 0;
  const TensorView &scale = call.inputs[1], &bias = call.inputs[2];
  const TensorView &in_mean = call.inputs[3], &in_var = call.inputs[4];
  const StepContext* ctx = call.ctx;
  const BatchSync sync = batch_sync(ctx, node);
  const bool synced = training && sync.sum;
  // Training: mean[c] then var[c], over every rank's samples when synchronised; computed once,
  // and saved for the backward.
  std::vector<double> stats;
  if (synced) {
    stats = synced_channel_stats<T>(x, cs, sync);
  } else if (training) {
    stats.assign(static_cast<size_t>(2 * cs.c), 0.0);
    for (int64_t c = 0; c < cs.c; ++c) channel_stats(x.as<T>(), cs, c, stats[static_cast<size_t>(c)], stats[static_cast<size_t>(cs.c + c)]);
  }
  if (training && ctx && ctx->saved_stats) (*ctx->saved_stats)[x.data] = stats;
  const double cnt = static_cast<double>(cs.count()) * (synced ? sync.ways : 1.0);
  for (int64_t c = 0; c < cs.c; ++c) {
    double mean, var;
    if (training) {
      mean = stats[static_cast<size_t>(c)];
      var = stats[static_cast<size_t>(cs.c + c)];
    } else {
      mean = read_double(in_mean, c);
      var = read_double(in_var, c);
    }
    const double inv = 1.0 / std::sqrt(var + eps);
    const T a = static_cast<T>(read_double(scale, c) * inv);
    const T b = static_cast<T>(read_double(bias, c) - mean * read_double(scale, c) * inv);
    for (int64_t n = 0; n < cs.n; ++n) {
      const T* xp = x.as<T>() + (n * cs.c + c) * cs.s;
      T* yp = call.outputs[0].as<T>() + (n * cs.c + c) * cs.s;
      for (int64_t i = 0; i < cs.s; ++i) yp[i] = xp[i] * a + b;
    }
    // Running statistics (PyTorch's rule: the running variance takes the unbiased estimate).
    const double unbiased = cnt > 1 ? var * cnt / (cnt - 1) : var;
    if (has_output(call, 1)) {
      const double m0 = read_double(in_mean, c);
      write_double(call.outputs[1], c, training ? momentum * m0 + (1 - momentum) * mean : m0);
    }
    if (has_output(call, 2)) {
      const double v0 = read_double(in_var, c);
      write_double(call.outputs[2], c, training ? momentum * v0 + (1 - momentum) * unbiased : v0);
    }
  }
}

template <typename T>
void batch_norm_grad(const KernelCall& call) {
  const Node& node = *call.node;
  const TensorView& dy = call.inputs[0];
  const TensorView& x = call.inputs[1];
  const TensorView& scale = call.inputs[2];
  const ChannelSplit cs = channel_split(x.shape);
  const double eps = node.attrs.get_float("epsilon", 1e-5);
  const StepContext* ctx = call.ctx;
  const BatchSync sync = batch_sync(ctx, node);
  const bool synced = static_cast<bool>(sync.sum);
  const double cnt = static_cast<double>(cs.count()) * (synced ? sync.ways : 1.0);
  // The forward's statistics (saved, or recomputed from x on one rank).
  const std::vector<double>* saved = nullptr;
  if (ctx && ctx->saved_stats) {
    auto it = ctx->saved_stats->find(x.data);
    if (it != ctx->saved_stats->end()) saved = &it->second;
  }
  ALPA_CHECK(!synced || saved, "BatchNormalization backward over a split batch needs its forward's statistics");
  std::vector<double> mean(static_cast<size_t>(cs.c)), inv(static_cast<size_t>(cs.c));
  std::vector<double> sums(static_cast<size_t>(2 * cs.c));  // sum_dy_xhat[c], then sum_dy[c]
  for (int64_t c = 0; c < cs.c; ++c) {
    double m, var;
    if (saved) {
      m = (*saved)[static_cast<size_t>(c)];
      var = (*saved)[static_cast<size_t>(cs.c + c)];
    } else {
      channel_stats(x.as<T>(), cs, c, m, var);
    }
    mean[static_cast<size_t>(c)] = m;
    inv[static_cast<size_t>(c)] = 1.0 / std::sqrt(var + eps);
    double sum_dy = 0, sum_dy_xhat = 0;
    for (int64_t n = 0; n < cs.n; ++n) {
      const T* xp = x.as<T>() + (n * cs.c + c) * cs.s;
      const T* gp = dy.as<T>() + (n * cs.c + c) * cs.s;
      for (int64_t i = 0; i < cs.s; ++i) {
        sum_dy += gp[i];
        sum_dy_xhat += static_cast<double>(gp[i]) * ((xp[i] - m) * inv[static_cast<size_t>(c)]);
      }
    }
    sums[static_cast<size_t>(c)] = sum_dy_xhat;
    sums[static_cast<size_t>(cs.c + c)] = sum_dy;
    // The scale and bias gradients are this rank's part; the gradient synchronisation sums them.
    if (has_output(call, 1)) call.outputs[1].as<T>()[c] = static_cast<T>(sum_dy_xhat);
    if (has_output(call, 2)) call.outputs[2].as<T>()[c] = static_cast<T>(sum_dy);
  }
  if (synced) sync.sum(sums.data(), 2 * cs.c, DType::kFloat64);  // one all-reduce of 2C fp64 values
  for (int64_t c = 0; c < cs.c; ++c) {
    if (cnt == 0) continue;
    const double iv = inv[static_cast<size_t>(c)];
    const double k = read_double(scale, c) * iv / cnt;
    const double mdy = sums[static_cast<size_t>(cs.c + c)], mdx = sums[static_cast<size_t>(c)];
    for (int64_t n = 0; n < cs.n; ++n) {
      const T* xp = x.as<T>() + (n * cs.c + c) * cs.s;
      const T* gp = dy.as<T>() + (n * cs.c + c) * cs.s;
      T* dxp = call.outputs[0].as<T>() + (n * cs.c + c) * cs.s;
      for (int64_t i = 0; i < cs.s; ++i) {
        const double xhat = (xp[i] - mean[static_cast<size_t>(c)]) * iv;
        dxp[i] = static_cast<T>(k * (cnt * gp[i] - mdy - xhat * mdx));
      }
    }
  }
}

// --- Softmax family ---------------------------------------------------------------------------

struct AxisSplit {
  int64_t outer, n, inner;
};

AxisSplit axis_split(const Node& node, const Shape& x) {
  const int64_t rank = static_cast<int64_t>(x.size());
  const int64_t axis = normalize_axis(node.attrs.get_int("axis", -1), rank);
  if (rank == 0) return {1, 1, 1};
  return {product(x, 0, axis), x[axis], product(x, axis + 1, x.size())};
}

// Softmax (log = false) or LogSoftmax (log = true) over the middle dim of [outer, n, inner].
template <typename T>
void softmax(const KernelCall& call, bool log) {
  const AxisSplit s = axis_split(*call.node, call.inputs[0].shape);
  if (s.inner == 1) {  // contiguous rows
    for (int64_t o = 0; o < s.outer; ++o) {
      const T* x = call.inputs[0].as<T>() + o * s.n;
      T* y = call.outputs[0].as<T>() + o * s.n;
      T m = -std::numeric_limits<T>::infinity();
      for (int64_t i = 0; i < s.n; ++i) m = std::max(m, x[i]);
      if (std::isinf(m)) m = T(0);
      double sum = 0;
      for (int64_t i = 0; i < s.n; ++i) {
        const T e = std::exp(x[i] - m);
        sum += e;
        if (!log) y[i] = e;
      }
      if (log) {
        const T shift = static_cast<T>(m + std::log(sum));
        for (int64_t i = 0; i < s.n; ++i) y[i] = x[i] - shift;
      } else {
        const T inv = static_cast<T>(1.0 / sum);
        for (int64_t i = 0; i < s.n; ++i) y[i] *= inv;
      }
    }
    return;
  }
  Scratch scratch(call);
  double* mx = scratch.get<double>(s.inner);
  double* sum = scratch.get<double>(s.inner);
  for (int64_t o = 0; o < s.outer; ++o) {
    const T* x = call.inputs[0].as<T>() + o * s.n * s.inner;
    T* y = call.outputs[0].as<T>() + o * s.n * s.inner;
    std::fill_n(mx, s.inner, -std::numeric_limits<double>::infinity());
    std::fill_n(sum, s.inner, 0.0);
    for (int64_t i = 0; i < s.n; ++i) {
      for (int64_t j = 0; j < s.inner; ++j) mx[j] = std::max(mx[j], static_cast<double>(x[i * s.inner + j]));
    }
    for (int64_t j = 0; j < s.inner; ++j) {
      if (std::isinf(mx[j])) mx[j] = 0;  // all -inf (or +inf): avoid inf - inf
    }
    for (int64_t i = 0; i < s.n; ++i) {
      for (int64_t j = 0; j < s.inner; ++j) {
        const T e = std::exp(x[i * s.inner + j] - static_cast<T>(mx[j]));
        sum[j] += e;
        if (!log) y[i * s.inner + j] = e;
      }
    }
    for (int64_t j = 0; j < s.inner; ++j) sum[j] = log ? mx[j] + std::log(sum[j]) : 1.0 / sum[j];
    if (log) {
      for (int64_t i = 0; i < s.n; ++i) {
        for (int64_t j = 0; j < s.inner; ++j) y[i * s.inner + j] = static_cast<T>(x[i * s.inner + j] - sum[j]);
      }
    } else {
      for (int64_t i = 0; i < s.n; ++i) {
        for (int64_t j = 0; j < s.inner; ++j) y[i * s.inner + j] *= static_cast<T>(sum[j]);
      }
    }
  }
}

// SoftmaxGrad: dx = y * (dy - sum(dy * y)); LogSoftmaxGrad: dx = dy - exp(y) * sum(dy).
template <typename T>
void softmax_grad(const KernelCall& call, bool log) {
  const AxisSplit s = axis_split(*call.node, call.inputs[1].shape);
  Scratch scratch(call);
  double* sum = scratch.get<double>(s.inner);
  for (int64_t o = 0; o < s.outer; ++o) {
    const int64_t base = o * s.n * s.inner;
    const T* dy = call.inputs[0].as<T>() + base;
    const T* y = call.inputs[1].as<T>() + base;
    T* dx = call.outputs[0].as<T>() + base;
    std::fill_n(sum, s.inner, 0.0);
    for (int64_t i = 0; i < s.n; ++i) {
      for (int64_t j = 0; j < s.inner; ++j) {
        const int64_t k = i * s.inner + j;
        sum[j] += log ? static_cast<double>(dy[k]) : static_cast<double>(dy[k]) * y[k];
      }
    }
    for (int64_t i = 0; i < s.n; ++i) {
      for (int64_t j = 0; j < s.inner; ++j) {
        const int64_t k = i * s.inner + j;
        dx[k] = log ? static_cast<T>(dy[k] - std::exp(static_cast<double>(y[k])) * sum[j])
                    : static_cast<T>(y[k] * (dy[k] - sum[j]));
      }
    }
  }
}

}  // namespace

void run_normalization(const KernelCall& call) {
  const Node& node = *call.node;
  const DType dt = float_dtype(call);
  switch (node.kind) {
    case OpKind::kLayerNormalization:
      expect_inputs(call, 2, 3);
      dispatch_float(dt, node, [&](auto t) { layer_norm<decltype(t)>(call); });
      return;
    case OpKind::kLayerNormalizationGrad:
      expect_inputs(call, 3, 3);
      dispatch_float(dt, node, [&](auto t) { layer_norm_grad<decltype(t)>(call); });
      return;
    case OpKind::kBatchNormalization:
      expect_inputs(call, 5, 5);
      dispatch_float(call.outputs[0].dtype, node, [&](auto t) { batch_norm<decltype(t)>(call); });
      return;
    case OpKind::kBatchNormalizationGrad:
      expect_inputs(call, 3, 3);
      dispatch_float(dt, node, [&](auto t) { batch_norm_grad<decltype(t)>(call); });
      return;
    case OpKind::kSoftmax: case OpKind::kLogSoftmax:
      expect_inputs(call, 1, 1);
      dispatch_float(dt, node, [&](auto t) { softmax<decltype(t)>(call, node.kind == OpKind::kLogSoftmax); });
      return;
    case OpKind::kSoftmaxGrad: case OpKind::kLogSoftmaxGrad:
      expect_inputs(call, 2, 2);
      dispatch_float(dt, node, [&](auto t) {
        softmax_grad<decltype(t)>(call, node.kind == OpKind::kLogSoftmaxGrad);
      });
      return;
    default:
      unsupported(node, "op in the normalization family");
  }
}

}  // namespace alpa::exec::cpu
