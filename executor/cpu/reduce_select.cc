// Reductions (ReduceSum/Mean/Max, SumToShape, ReduceMaxGrad), CumSum, OneHot, TopK, TopKGrad.
#include <algorithm>
#include <cmath>
#include <limits>

#include "executor/cpu/cpu_common.h"
#include "executor/cpu/cpu_ops.h"
#include "planner/common/format.h"
#include "planner/graph/shape_inference.h"

namespace alpa::exec::cpu {
namespace {

template <typename T>
bool is_nan(T v) {
  if constexpr (std::is_floating_point_v<T>) return std::isnan(v);
  return false;
}

// Shape of the reduction in keepdims form (the output's layout with or without keepdims).
Shape reduced_shape(const Node& node, const Shape& x) {
  return keepdims_shape(x, resolve_reduce_axes(node.attrs, static_cast<int64_t>(x.size())));
}

template <typename T>
void reduce_max_to(const T* x, const Shape& xs, T* y, const Shape& ys) {
  const int64_t ny = num_elements(ys);
  const T lowest = std::is_floating_point_v<T> ? -std::numeric_limits<T>::infinity()
                                               : std::numeric_limits<T>::lowest();
  std::fill_n(y, ny, lowest);
  const LoopNest nest = make_loop_nest(xs, {contiguous_strides(xs), broadcast_strides(ys, xs)});
  for_each_run<2>(nest, [&](const auto& off, int64_t n, const auto& st) {
    for (int64_t j = 0; j < n; ++j) {
      const T v = x[off[0] + j * st[0]];
      T& m = y[off[1] + j * st[1]];
      if (v > m || is_nan(v)) m = v;  // NaN propagates
    }
  });
}

template <typename T>
void reduce(const KernelCall& call) {
  const TensorView& x = call.inputs[0];
  const TensorView& y = call.outputs[0];
  const Shape ys = reduced_shape(*call.node, x.shape);
  Scratch scratch(call);
  switch (call.node->kind) {
    case OpKind::kReduceSum:
      reduce_sum_to<T>(x.as<T>(), x.shape, y.as<T>(), ys, 1.0, scratch);
      return;
    case OpKind::kReduceMean: {
      const int64_t ny = num_elements(ys);
      const double count = ny == 0 ? 1.0 : static_cast<double>(x.numel() / ny);
      reduce_sum_to<T>(x.as<T>(), x.shape, y.as<T>(), ys, count == 0 ? 1.0 : 1.0 / count, scratch);
      if (count == 0) {  // mean of nothing
        std::fill_n(y.as<T>(), ny, std::is_floating_point_v<T> ? std::numeric_limits<T>::quiet_NaN() : T(0));
      }
      return;
    }
    case OpKind::kReduceMax:
      reduce_max_to<T>(x.as<T>(), x.shape, y.as<T>(), ys);
      return;
    default:
      unsupported(*call.node, "reduction");
  }
}

template <typename T>
void sum_to_shape(const KernelCall& call) {
  const TensorView& x = call.inputs[0];
  const TensorView& y = call.outputs[0];
  if (y.shape.size() > x.shape.size()) unsupported(*call.node, "target rank above the input's");
  const Shape target = align_rank(y.shape, x.shape.size());
  for (size_t d = 0; d < target.size(); ++d) {
    if (target[d] != 1 && target[d] != x.shape[d]) {
      unsupported(*call.node, "target " + format_dims(y.shape) + " for input " + format_dims(x.shape));
    }
  }
  Scratch scratch(call);
  reduce_sum_to<T>(x.as<T>(), x.shape, y.as<T>(), target, 1.0, scratch);
}

// dx = dy / (number of maxima) at every position equal to its group's maximum, else 0.
template <typename T>
void reduce_max_grad(const KernelCall& call) {
  const TensorView& dy = call.inputs[0];
  const TensorView& x = call.inputs[1];
  const TensorView& y = call.inputs[2];
  const TensorView& dx = call.outputs[0];
  const Shape ys = reduced_shape(*call.node, x.shape);
  Scratch scratch(call);
  int64_t* ties = scratch.get<int64_t>(num_elements(ys));
  std::fill_n(ties, num_elements(ys), int64_t{0});
  const LoopNest nest = make_loop_nest(x.shape, {contiguous_strides(x.shape), broadcast_strides(ys, x.shape)});
  const T* px = x.as<T>();
  const T* py = y.as<T>();
  const T* pdy = dy.as<T>();
  T* pdx = dx.as<T>();
  for_each_run<2>(nest, [&](const auto& off, int64_t n, const auto& st) {
    for (int64_t j = 0; j < n; ++j) {
      const int64_t o = off[1] + j * st[1];
      if (px[off[0] + j * st[0]] == py[o]) ++ties[o];
    }
  });
  for_each_run<2>(nest, [&](const auto& off, int64_t n, const auto& st) {
    for (int64_t j = 0; j < n; ++j) {
      const int64_t o = off[1] + j * st[1];
      const int64_t i = off[0] + j * st[0];
      pdx[i] = px[i] == py[o] ? static_cast<T>(pdy[o] / static_cast<T>(ties[o])) : T(0);
    }
  });
}

template <typename T>
void cumsum(const KernelCall& call) {
  using Acc = std::conditional_t<std::is_floating_point_v<T>, double, int64_t>;
  const Attributes& at = call.node->attrs;
  const TensorView& x = call.inputs[0];
  const int64_t axis = normalize_axis(at.get_int("axis"), x.shape.size());
  const bool exclusive = at.get_int("exclusive", 0) != 0, reverse = at.get_int("reverse", 0) != 0;
  const int64_t outer = product(x.shape, 0, axis), n = x.shape.empty() ? 1 : x.shape[axis];
  const int64_t inner = product(x.shape, axis + 1, x.shape.size());
  Scratch scratch(call);
  Acc* acc = scratch.get<Acc>(inner);
  for (int64_t o = 0; o < outer; ++o) {
    std::fill_n(acc, inner, Acc{0});
    for (int64_t s = 0; s < n; ++s) {
      const int64_t i = reverse ? n - 1 - s : s;
      const T* xp = x.as<T>() + (o * n + i) * inner;
      T* yp = call.outputs[0].as<T>() + (o * n + i) * inner;
      for (int64_t j = 0; j < inner; ++j) {
        if (exclusive) {
          yp[j] = static_cast<T>(acc[j]);
          acc[j] += xp[j];
        } else {
          acc[j] += xp[j];
          yp[j] = static_cast<T>(acc[j]);
        }
      }
    }
  }
}

void one_hot(const KernelCall& call) {
  const Attributes& at = call.node->attrs;
  const TensorView& idx_t = call.inputs[0];
  const TensorView& y = call.outputs[0];
  const int64_t depth = at.get_int("depth");
  const int64_t axis = normalize_axis(at.get_int("axis", -1), static_cast<int64_t>(idx_t.shape.size()) + 1);
  const double off_v = at.get_float("off_value", 0.0), on_v = at.get_float("on_value", 1.0);
  const int64_t outer = product(idx_t.shape, 0, axis);
  const int64_t inner = product(idx_t.shape, axis, idx_t.shape.size());
  const std::vector<int64_t> idx = read_ints(idx_t);
  dispatch_storage(y.dtype, *call.node, [&](auto tag) {
    using T = decltype(tag);
    const bool as_bool = y.dtype == DType::kBool;
    const T off = as_bool ? T(off_v != 0) : static_cast<T>(off_v);
    const T on = as_bool ? T(on_v != 0) : static_cast<T>(on_v);
    T* py = y.as<T>();
    std::fill_n(py, y.numel(), off);
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t i = 0; i < inner; ++i) {
        int64_t v = idx[o * inner + i];
        if (v < 0 && v >= -depth) v += depth;
        if (v >= 0 && v < depth) py[(o * depth + v) * inner + i] = on;  // else: all off
      }
    }
  });
}

// NaN sorts above every number (as in PyTorch).
template <typename T>
bool value_less(T a, T b) {
  if (is_nan(a)) return false;
  if (is_nan(b)) return true;
  return a < b;
}

template <typename T>
void top_k(const KernelCall& call) {
  const Attributes& at = call.node->attrs;
  const TensorView& x = call.inputs[0];
  const int64_t axis = normalize_axis(at.get_int("axis", -1), x.shape.size());
  const int64_t k = at.get_int("k");
  const bool largest = at.get_int("largest", 1) != 0;
  const int64_t outer = product(x.shape, 0, axis), n = x.shape[axis];
  const int64_t inner = product(x.shape, axis + 1, x.shape.size());
  const TensorView& vals = call.outputs[0];
  if (call.outputs.size() < 2 || call.outputs[1].dtype != DType::kInt64) unsupported(*call.node, "Indices output");
  int64_t* out_idx = call.outputs[1].as<int64_t>();
  std::vector<std::pair<T, int64_t>> col(static_cast<size_t>(n));
  // Always returns the k elements sorted (ties: lower index first), which also satisfies sorted=0.
  auto before = [largest](const std::pair<T, int64_t>& a, const std::pair<T, int64_t>& b) {
    const bool lt = value_less(a.first, b.first), gt = value_less(b.first, a.first);
    if (lt || gt) return largest ? gt : lt;
    return a.second < b.second;
  };
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t j = 0; j < inner; ++j) {
      const T* xp = x.as<T>() + o * n * inner + j;
      for (int64_t i = 0; i < n; ++i) col[i] = {xp[i * inner], i};
      std::partial_sort(col.begin(), col.begin() + k, col.end(), before);
      for (int64_t t = 0; t < k; ++t) {
        const int64_t dst = (o * k + t) * inner + j;
        vals.as<T>()[dst] = col[t].first;
        out_idx[dst] = col[t].second;
      }
    }
  }
}

template <typename T>
void top_k_grad(const KernelCall& call) {
  const TensorView& dy = call.inputs[0];
  const TensorView& dx = call.outputs[0];
  const int64_t axis = normalize_axis(call.node->attrs.get_int("axis", -1), dx.shape.size());
  const int64_t outer = product(dx.shape, 0, axis), n = dx.shape[axis];
  const int64_t inner = product(dx.shape, axis + 1, dx.shape.size());
  const int64_t k = dy.shape[axis];
  const std::vector<int64_t> idx = read_ints(call.inputs[1]);
  T* pdx = dx.as<T>();
  std::fill_n(pdx, dx.numel(), T(0));
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t t = 0; t < k; ++t) {
      for (int64_t j = 0; j < inner; ++j) {
        const int64_t src = (o * k + t) * inner + j;
        int64_t i = idx[src];
        if (i < 0) i += n;
        if (i < 0 || i >= n) bad_data(*call.node, "TopK index " + std::to_string(idx[src]) + " out of range");
        pdx[(o * n + i) * inner + j] += dy.as<T>()[src];
      }
    }
  }
}

}  // namespace

void run_reduce_select(const KernelCall& call) {
  const Node& node = *call.node;
  switch (node.kind) {
    case OpKind::kReduceSum: case OpKind::kReduceMean: case OpKind::kReduceMax:
      expect_inputs(call, 1, 1);
      dispatch_numeric(call.inputs[0].dtype, node, [&](auto t) { reduce<decltype(t)>(call); });
      return;
    case OpKind::kSumToShape:
      expect_inputs(call, 1, 1);
      dispatch_numeric(call.inputs[0].dtype, node, [&](auto t) { sum_to_shape<decltype(t)>(call); });
      return;
    case OpKind::kReduceMaxGrad:
      expect_inputs(call, 3, 3);
      dispatch_float(call.outputs[0].dtype, node, [&](auto t) { reduce_max_grad<decltype(t)>(call); });
      return;
    case OpKind::kCumSum:
      expect_inputs(call, 1, 1);
      dispatch_numeric(call.inputs[0].dtype, node, [&](auto t) { cumsum<decltype(t)>(call); });
      return;
    case OpKind::kOneHot:
      expect_inputs(call, 1, 1);
      one_hot(call);
      return;
    case OpKind::kTopK:
      expect_inputs(call, 1, 1);
      dispatch_numeric(call.inputs[0].dtype, node, [&](auto t) { top_k<decltype(t)>(call); });
      return;
    case OpKind::kTopKGrad:
      expect_inputs(call, 2, 2);
      dispatch_float(call.outputs[0].dtype, node, [&](auto t) { top_k_grad<decltype(t)>(call); });
      return;
    default:
      unsupported(node, "op in the reduce/select family");
  }
}

}  // namespace alpa::exec::cpu
