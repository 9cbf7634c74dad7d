// Broadcasting element-wise maps over 2 or 3 operands (numpy rules). The output is contiguous
// with the broadcast shape; every element is read before the same element is written, so an
// output may alias a same-shaped input.
#pragma once

#include "executor/cpu/cpu_common.h"

namespace alpa::exec::cpu {

// out[i] = op(a[i'], b[i'']) where i', i'' are i broadcast into a's and b's shapes.
template <typename R, typename A, typename B, typename Op>
void map2(const A* pa, const Shape& sa, const B* pb, const Shape& sb, R* po, const Shape& so, Op op) {
  if (sa == so && sb == so) {
    const int64_t n = num_elements(so);
    for (int64_t i = 0; i < n; ++i) po[i] = op(pa[i], pb[i]);
    return;
  }
  const LoopNest nest =
      make_loop_nest(so, {contiguous_strides(so), broadcast_strides(sa, so), broadcast_strides(sb, so)});
  for_each_run<3>(nest, [&](const auto& off, int64_t n, const auto& st) {
    R* o = po + off[0];
    const A* x = pa + off[1];
    const B* y = pb + off[2];
    if (st[1] == 1 && st[2] == 1) {
      for (int64_t j = 0; j < n; ++j) o[j] = op(x[j], y[j]);
    } else if (st[1] == 1 && st[2] == 0) {
      const B yv = *y;
      for (int64_t j = 0; j < n; ++j) o[j] = op(x[j], yv);
    } else if (st[1] == 0 && st[2] == 1) {
      const A xv = *x;
      for (int64_t j = 0; j < n; ++j) o[j] = op(xv, y[j]);
    } else {
      for (int64_t j = 0; j < n; ++j) o[j] = op(x[j * st[1]], y[j * st[2]]);
    }
  });
}

template <typename R, typename A, typename B, typename C, typename Op>
void map3(const A* pa, const Shape& sa, const B* pb, const Shape& sb, const C* pc, const Shape& sc,
          R* po, const Shape& so, Op op) {
  if (sa == so && sb == so && sc == so) {
    const int64_t n = num_elements(so);
    for (int64_t i = 0; i < n; ++i) po[i] = op(pa[i], pb[i], pc[i]);
    return;
  }
  const LoopNest nest = make_loop_nest(
      so, {contiguous_strides(so), broadcast_strides(sa, so), broadcast_strides(sb, so),
           broadcast_strides(sc, so)});
  for_each_run<4>(nest, [&](const auto& off, int64_t n, const auto& st) {
    R* o = po + off[0];
    const A* x = pa + off[1];
    const B* y = pb + off[2];
    const C* z = pc + off[3];
    for (int64_t j = 0; j < n; ++j) o[j] = op(x[j * st[1]], y[j * st[2]], z[j * st[3]]);
  });
}

// The tensor's elements as T: its own buffer when the dtype already is T, else a converted copy
// in scratch memory.
template <typename T>
const T* as_type(const TensorView& t, DType want, Scratch& scratch) {
  if (t.dtype == want) return t.as<T>();
  const int64_t n = t.numel();
  T* buf = scratch.get<T>(n);
  for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<T>(read_double(t, i));
  return buf;
}

}  // namespace alpa::exec::cpu
