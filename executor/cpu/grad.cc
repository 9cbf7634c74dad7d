// Element-wise backward ops: ReluGrad SigmoidGrad TanhGrad ErfGrad ClipGrad PowGrad, and Zeros.
#include <cmath>
#include <limits>
#include <numbers>

#include "executor/cpu/cpu_ops.h"
#include "executor/cpu/map.h"

namespace alpa::exec::cpu {
namespace {

// dx = f(dy, v) for same-shaped dy and v (the forward's output or input).
template <typename T, typename F>
void pointwise(const KernelCall& call, F f) {
  const TensorView& dy = call.inputs[0];
  const TensorView& v = call.inputs[1];
  const TensorView& dx = call.outputs[0];
  map2(dy.as<T>(), dy.shape, v.as<T>(), v.shape, dx.as<T>(), dx.shape, f);
}

template <typename T>
void unary_grad(const KernelCall& call) {
  switch (call.node->kind) {
    case OpKind::kReluGrad:
      pointwise<T>(call, [](T g, T y) { return y > T(0) ? g : T(0); });
      return;
    case OpKind::kSigmoidGrad:
      pointwise<T>(call, [](T g, T y) { return g * y * (T(1) - y); });
      return;
    case OpKind::kTanhGrad:
      pointwise<T>(call, [](T g, T y) { return g * (T(1) - y * y); });
      return;
    case OpKind::kErfGrad: {
      const T k = static_cast<T>(2.0 / std::sqrt(std::numbers::pi));
      pointwise<T>(call, [k](T g, T x) { return g * k * std::exp(-x * x); });
      return;
    }
    case OpKind::kClipGrad: {
      const double lo = call.node->attrs.get_float("min", -std::numeric_limits<double>::infinity());
      const double hi = call.node->attrs.get_float("max", std::numeric_limits<double>::infinity());
      const T l = static_cast<T>(lo), h = static_cast<T>(hi);
      pointwise<T>(call, [l, h](T g, T x) { return (x >= l && x <= h) ? g : T(0); });
      return;
    }
    default:
      unsupported(*call.node, "gradient op");
  }
}

// da = dy * b * a^(b-1); db = dy * a^b * log(a), 0 where a <= 0. Both in the broadcast shape.
template <typename T>
void pow_grad(const KernelCall& call) {
  const TensorView& dy = call.inputs[0];
  const TensorView& a = call.inputs[1];
  const TensorView& b = call.inputs[2];
  Scratch scratch(call);
  const T* pa = as_type<T>(a, dy.dtype, scratch);
  const T* pb = as_type<T>(b, dy.dtype, scratch);
  if (has_output(call, 0)) {
    const TensorView& da = call.outputs[0];
    map3(dy.as<T>(), dy.shape, pa, a.shape, pb, b.shape, da.as<T>(), da.shape,
         [](T g, T x, T e) { return e == T(0) ? T(0) : g * e * std::pow(x, e - T(1)); });
  }
  if (has_output(call, 1)) {
    const TensorView& db = call.outputs[1];
    map3(dy.as<T>(), dy.shape, pa, a.shape, pb, b.shape, db.as<T>(), db.shape,
         [](T g, T x, T e) { return x > T(0) ? g * std::pow(x, e) * std::log(x) : T(0); });
  }
}

}  // namespace

void run_grad(const KernelCall& call) {
  const Node& node = *call.node;
  switch (node.kind) {
    case OpKind::kReluGrad: case OpKind::kSigmoidGrad: case OpKind::kTanhGrad:
    case OpKind::kErfGrad: case OpKind::kClipGrad:
      expect_inputs(call, 2, 2);
      dispatch_float(call.outputs[0].dtype, node, [&](auto t) { unary_grad<decltype(t)>(call); });
      return;
    case OpKind::kPowGrad:
      expect_inputs(call, 3, 3);
      dispatch_float(call.inputs[0].dtype, node, [&](auto t) { pow_grad<decltype(t)>(call); });
      return;
    case OpKind::kZeros:
      for (const TensorView& y : call.outputs) {
        if (y.data != nullptr) std::memset(y.data, 0, static_cast<size_t>(y.bytes()));
      }
      return;
    default:
      unsupported(node, "op in the gradient family");
  }
}

}  // namespace alpa::exec::cpu
