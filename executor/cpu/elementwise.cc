// Element-wise math, comparisons, Not, Where and Clip.
#include <algorithm>
#include <cmath>
#include <limits>

#include "executor/cpu/cpu_ops.h"
#include "executor/cpu/map.h"

namespace alpa::exec::cpu {
namespace {

template <typename T>
void binary_arith(const KernelCall& call) {
  const TensorView& a = call.inputs[0];
  const TensorView& b = call.inputs[1];
  const TensorView& y = call.outputs[0];
  if (b.dtype != a.dtype || y.dtype != a.dtype) unsupported(*call.node, "mixed operand dtypes");
  const T* pa = a.as<T>();
  const T* pb = b.as<T>();
  T* po = y.as<T>();
  switch (call.node->kind) {
    case OpKind::kAdd: map2(pa, a.shape, pb, b.shape, po, y.shape, [](T u, T v) { return T(u + v); }); break;
    case OpKind::kSub: map2(pa, a.shape, pb, b.shape, po, y.shape, [](T u, T v) { return T(u - v); }); break;
    case OpKind::kMul: map2(pa, a.shape, pb, b.shape, po, y.shape, [](T u, T v) { return T(u * v); }); break;
    case OpKind::kDiv:
      if constexpr (std::is_integral_v<T>) {
        // Integer division truncates toward zero; division by zero yields 0 (no trap).
        map2(pa, a.shape, pb, b.shape, po, y.shape, [](T u, T v) {
          if (v == 0) return T(0);
          if (v == -1) {  // wraps for INT_MIN instead of trapping
            using Un = std::make_unsigned_t<T>;
            return static_cast<T>(Un(0) - static_cast<Un>(u));
          }
          return T(u / v);
        });
      } else {
        map2(pa, a.shape, pb, b.shape, po, y.shape, [](T u, T v) { return u / v; });
      }
      break;
    default: unsupported(*call.node, "binary op");
  }
}

template <typename T>
void pow_op(const KernelCall& call) {
  const TensorView& a = call.inputs[0];
  const TensorView& b = call.inputs[1];
  const TensorView& y = call.outputs[0];
  Scratch scratch(call);
  const T* pb = as_type<T>(b, a.dtype, scratch);
  map2(a.as<T>(), a.shape, pb, b.shape, y.as<T>(), y.shape, [](T u, T v) -> T {
    if (v == T(2)) return u * u;
    if (v == T(1)) return u;
    return std::pow(u, v);
  });
}

template <typename T>
void unary(const KernelCall& call) {
  const TensorView& x = call.inputs[0];
  const TensorView& y = call.outputs[0];
  const T* px = x.as<T>();
  T* py = y.as<T>();
  const int64_t n = x.numel();
  auto apply = [&](auto f) {
    for (int64_t i = 0; i < n; ++i) py[i] = f(px[i]);
  };
  switch (call.node->kind) {
    case OpKind::kSqrt: apply([](T v) { return std::sqrt(v); }); break;
    case OpKind::kExp: apply([](T v) { return std::exp(v); }); break;
    case OpKind::kLog: apply([](T v) { return std::log(v); }); break;
    case OpKind::kErf: apply([](T v) { return std::erf(v); }); break;
    case OpKind::kTanh: apply([](T v) { return std::tanh(v); }); break;
    case OpKind::kRelu: apply([](T v) { return v > T(0) ? v : T(0); }); break;
    case OpKind::kSigmoid:
      // Stable for large |v|: never exponentiates a positive number.
      apply([](T v) {
        if (v >= T(0)) return T(1) / (T(1) + std::exp(-v));
        const T e = std::exp(v);
        return e / (T(1) + e);
      });
      break;
    default: unsupported(*call.node, "unary op");
  }
}

template <typename T>
void compare(const KernelCall& call) {
  const TensorView& a = call.inputs[0];
  const TensorView& b = call.inputs[1];
  const TensorView& y = call.outputs[0];
  if (b.dtype != a.dtype) unsupported(*call.node, "mixed operand dtypes");
  const T* pa = a.as<T>();
  const T* pb = b.as<T>();
  uint8_t* po = y.as<uint8_t>();
  switch (call.node->kind) {
    case OpKind::kEqual: map2(pa, a.shape, pb, b.shape, po, y.shape, [](T u, T v) { return uint8_t(u == v); }); break;
    case OpKind::kLess: map2(pa, a.shape, pb, b.shape, po, y.shape, [](T u, T v) { return uint8_t(u < v); }); break;
    case OpKind::kGreater: map2(pa, a.shape, pb, b.shape, po, y.shape, [](T u, T v) { return uint8_t(u > v); }); break;
    default: unsupported(*call.node, "comparison");
  }
}

template <typename T>
void clip(const KernelCall& call) {
  const Attributes& at = call.node->attrs;
  const TensorView& x = call.inputs[0];
  const T* px = x.as<T>();
  T* py = call.outputs[0].as<T>();
  const int64_t n = x.numel();
  // Bounds are doubles; for integer tensors they are rounded toward the allowed range.
  const double lo = at.get_float("min", -std::numeric_limits<double>::infinity());
  const double hi = at.get_float("max", std::numeric_limits<double>::infinity());
  if constexpr (std::is_integral_v<T>) {
    const double tmin = static_cast<double>(std::numeric_limits<T>::lowest());
    const double tmax = static_cast<double>(std::numeric_limits<T>::max());
    const T l = static_cast<T>(std::clamp(std::ceil(lo), tmin, tmax));
    const T h = static_cast<T>(std::clamp(std::floor(hi), tmin, tmax));
    for (int64_t i = 0; i < n; ++i) py[i] = std::min(std::max(px[i], l), h);
  } else {
    const T l = static_cast<T>(lo), h = static_cast<T>(hi);
    for (int64_t i = 0; i < n; ++i) {
      const T v = px[i];
      py[i] = v < l ? l : (v > h ? h : v);  // NaN passes through
    }
  }
}

void where(const KernelCall& call) {
  const TensorView& c = call.inputs[0];
  const TensorView& a = call.inputs[1];
  const TensorView& b = call.inputs[2];
  const TensorView& y = call.outputs[0];
  if (c.dtype != DType::kBool && c.dtype != DType::kUInt8) unsupported(*call.node, "condition dtype");
  if (a.dtype != y.dtype || b.dtype != y.dtype) unsupported(*call.node, "mixed operand dtypes");
  dispatch_bytes(dtype_bytes(y.dtype), *call.node, [&](auto tag) {
    using U = decltype(tag);
    map3(c.as<uint8_t>(), c.shape, a.as<U>(), a.shape, b.as<U>(), b.shape, y.as<U>(), y.shape,
         [](uint8_t k, U u, U v) { return k ? u : v; });
  });
}

}  // namespace

void run_elementwise(const KernelCall& call) {
  const Node& node = *call.node;
  switch (node.kind) {
    case OpKind::kAdd: case OpKind::kSub: case OpKind::kMul: case OpKind::kDiv:
      expect_inputs(call, 2, 2);
      dispatch_numeric(call.outputs[0].dtype, node, [&](auto t) { binary_arith<decltype(t)>(call); });
      return;
    case OpKind::kPow:
      expect_inputs(call, 2, 2);
      dispatch_float(call.inputs[0].dtype, node, [&](auto t) { pow_op<decltype(t)>(call); });
      return;
    case OpKind::kNeg:
      expect_inputs(call, 1, 1);
      dispatch_numeric(call.inputs[0].dtype, node, [&](auto t) {
        using T = decltype(t);
        const T* px = call.inputs[0].as<T>();
        T* py = call.outputs[0].as<T>();
        for (int64_t i = 0, n = call.inputs[0].numel(); i < n; ++i) py[i] = T(-px[i]);
      });
      return;
    case OpKind::kSqrt: case OpKind::kExp: case OpKind::kLog: case OpKind::kErf:
    case OpKind::kTanh: case OpKind::kRelu: case OpKind::kSigmoid:
      expect_inputs(call, 1, 1);
      dispatch_float(call.inputs[0].dtype, node, [&](auto t) { unary<decltype(t)>(call); });
      return;
    case OpKind::kEqual: case OpKind::kLess: case OpKind::kGreater:
      expect_inputs(call, 2, 2);
      dispatch_storage(call.inputs[0].dtype, node, [&](auto t) { compare<decltype(t)>(call); });
      return;
    case OpKind::kNot: {
      expect_inputs(call, 1, 1);
      const uint8_t* px = call.inputs[0].as<uint8_t>();
      uint8_t* py = call.outputs[0].as<uint8_t>();
      for (int64_t i = 0, n = call.inputs[0].numel(); i < n; ++i) py[i] = px[i] ? 0 : 1;
      return;
    }
    case OpKind::kWhere:
      expect_inputs(call, 3, 3);
      where(call);
      return;
    case OpKind::kClip:
      expect_inputs(call, 1, 1);
      dispatch_numeric(call.inputs[0].dtype, node, [&](auto t) { clip<decltype(t)>(call); });
      return;
    default:
      unsupported(node, "op in the element-wise family");
  }
}

}  // namespace alpa::exec::cpu
