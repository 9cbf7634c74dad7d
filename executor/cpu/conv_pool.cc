// Conv (im2col + GEMM, N-D, grouped) and its gradients; MaxPool, AveragePool, GlobalAveragePool
// and the pool gradients.
#include <algorithm>
#include <cmath>

#include "executor/cpu/blas.h"
#include "executor/cpu/cpu_common.h"
#include "executor/cpu/cpu_ops.h"

namespace alpa::exec::cpu {
namespace {

// Increments a multi-index over `dims`; returns false after the last one.
bool next_index(std::vector<int64_t>& idx, const Shape& dims, size_t count) {
  for (int64_t d = static_cast<int64_t>(count) - 1; d >= 0; --d) {
    if (++idx[d] < dims[d]) return true;
    idx[d] = 0;
  }
  return false;
}

int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

// Forward (kAccumulate = false): col[(c*K + k) * P + p] = x[c, window position] or 0 in the
// padding. Backward (true): x[c, window position] += col[...] (x must be zeroed first).
template <bool kAccumulate, typename T>
void im2col(const WindowGeom& g, std::conditional_t<kAccumulate, T*, const T*> x, int64_t channels, T* col_arg) {
  const size_t nsp = g.in.size(), last = nsp - 1;
  const int64_t K = g.kernel_size(), P = g.out_size(), S = g.in_size();
  const Strides in_st = contiguous_strides(g.in);
  const int64_t out_last = g.out[last], in_last = g.in[last], s_last = g.strides[last];
  const int64_t outer = out_last == 0 ? 0 : P / out_last;
  std::vector<int64_t> kk(nsp, 0), oo(nsp, 0);
  for (int64_t c = 0; c < channels; ++c) {
    std::fill(kk.begin(), kk.end(), 0);
    for (int64_t kf = 0; kf < K; ++kf, next_index(kk, g.kernel, nsp)) {
      T* row = col_arg + (c * K + kf) * P;
      const int64_t off_k = kk[last] * g.dilations[last] - g.pad_begin[last];
      // Outputs o with 0 <= o * s + off_k < in_last.
      const int64_t lo = std::clamp<int64_t>(ceil_div(-off_k, s_last), 0, out_last);
      const int64_t hi = std::clamp<int64_t>(ceil_div(in_last - off_k, s_last), lo, out_last);
      std::fill(oo.begin(), oo.end(), 0);
      for (int64_t of = 0; of < outer; ++of, next_index(oo, g.out, last)) {
        bool valid = true;
        int64_t base = c * S;
        for (size_t d = 0; d < last; ++d) {
          const int64_t i = oo[d] * g.strides[d] - g.pad_begin[d] + kk[d] * g.dilations[d];
          if (i < 0 || i >= g.in[d]) valid = false;
          base += i * in_st[d];
        }
        T* r = row + of * out_last;
        if constexpr (kAccumulate) {
          if (!valid) continue;
          T* xp = x + base;
          for (int64_t o = lo; o < hi; ++o) xp[o * s_last + off_k] += r[o];
        } else {
          if (!valid) {
            std::fill_n(r, out_last, T(0));
            continue;
          }
          const T* xp = x + base;
          std::fill(r, r + lo, T(0));
          if (s_last == 1) {
            std::copy(xp + lo + off_k, xp + hi + off_k, r + lo);
          } else {
            for (int64_t o = lo; o < hi; ++o) r[o] = xp[o * s_last + off_k];
          }
          std::fill(r + hi, r + out_last, T(0));
        }
      }
    }
  }
}

struct ConvShape {
  WindowGeom geom;
  int64_t group, c_per_group, m_per_group, rows;  // rows = Cg * K
  int64_t out_channels;
  bool direct;  // 1x1 kernel, stride 1, no padding: the input is its own im2col matrix
};

ConvShape conv_shape(const Node& node, const Shape& x, const Shape& w, const Shape& y) {
  ConvShape cs;
  cs.geom = window_geom(node, x, std::vector<int64_t>(w.begin() + 2, w.end()), y);
  cs.group = node.attrs.get_int("group", 1);
  cs.out_channels = w[0];
  if (cs.group <= 0 || x[1] % cs.group != 0 || w[0] % cs.group != 0) unsupported(node, "group");
  cs.c_per_group = x[1] / cs.group;
  cs.m_per_group = w[0] / cs.group;
  cs.rows = cs.c_per_group * cs.geom.kernel_size();
  cs.direct = true;
  for (size_t d = 0; d < cs.geom.in.size(); ++d) {
    cs.direct = cs.direct && cs.geom.kernel[d] == 1 && cs.geom.strides[d] == 1 &&
                cs.geom.pad_begin[d] == 0 && cs.geom.pad_end[d] == 0 && cs.geom.out[d] == cs.geom.in[d];
  }
  return cs;
}

template <typename T>
void conv(const KernelCall& call) {
  const TensorView& x = call.inputs[0];
  const TensorView& w = call.inputs[1];
  const TensorView& y = call.outputs[0];
  const ConvShape cs = conv_shape(*call.node, x.shape, w.shape, y.shape);
  const WindowGeom& g = cs.geom;
  const int64_t P = g.out_size(), S = g.in_size(), C = g.channels, M = cs.out_channels;
  Scratch scratch(call);
  T* col = cs.direct ? nullptr : scratch.get<T>(cs.rows * P);
  const T* px = x.as<T>();
  const T* pw = w.as<T>();
  T* py = y.as<T>();
  for (int64_t n = 0; n < g.batch; ++n) {
    for (int64_t grp = 0; grp < cs.group; ++grp) {
      const T* xg = px + (n * C + grp * cs.c_per_group) * S;
      const T* src = xg;
      if (!cs.direct) {
        im2col<false, T>(g, xg, cs.c_per_group, col);
        src = col;
      }
      gemm<T>(false, false, cs.m_per_group, P, cs.rows, T(1), pw + grp * cs.m_per_group * cs.rows,
              cs.rows, src, P, T(0), py + (n * M + grp * cs.m_per_group) * P, P);
    }
  }
  if (has_input(call, 2)) {
    // A rank holding a block of split input channels computes a partial sum that the lowering
    // adds up across ranks: each adds its share of the bias (bias_scale = 1 / the ranks).
    const T* pb = call.inputs[2].as<T>();
    const T scale = static_cast<T>(call.node->attrs.get_float("bias_scale", 1.0));
    for (int64_t n = 0; n < g.batch; ++n) {
      for (int64_t m = 0; m < M; ++m) {
        T* row = py + (n * M + m) * P;
        const T b = pb[m] * scale;
        for (int64_t p = 0; p < P; ++p) row[p] += b;
      }
    }
  }
}

template <typename T>
void conv_grad_input(const KernelCall& call) {
  const TensorView& dy = call.inputs[0];
  const TensorView& w = call.inputs[1];
  const TensorView& dx = call.outputs[0];
  const ConvShape cs = conv_shape(*call.node, dx.shape, w.shape, dy.shape);
  const WindowGeom& g = cs.geom;
  const int64_t P = g.out_size(), S = g.in_size(), C = g.channels, M = cs.out_channels;
  Scratch scratch(call);
  T* col = cs.direct ? nullptr : scratch.get<T>(cs.rows * P);
  const T* pdy = dy.as<T>();
  const T* pw = w.as<T>();
  T* pdx = dx.as<T>();
  if (!cs.direct) std::fill_n(pdx, dx.numel(), T(0));
  for (int64_t n = 0; n < g.batch; ++n) {
    for (int64_t grp = 0; grp < cs.group; ++grp) {
      const T* dyg = pdy + (n * M + grp * cs.m_per_group) * P;
      T* dxg = pdx + (n * C + grp * cs.c_per_group) * S;
      const T* wg = pw + grp * cs.m_per_group * cs.rows;
      if (cs.direct) {
        gemm<T>(true, false, cs.rows, P, cs.m_per_group, T(1), wg, cs.rows, dyg, P, T(0), dxg, P);
      } else {
        gemm<T>(true, false, cs.rows, P, cs.m_per_group, T(1), wg, cs.rows, dyg, P, T(0), col, P);
        im2col<true, T>(g, dxg, cs.c_per_group, col);
      }
    }
  }
}

template <typename T>
void conv_grad_weight(const KernelCall& call) {
  const TensorView& dy = call.inputs[0];
  const TensorView& x = call.inputs[1];
  const TensorView& dw = call.outputs[0];
  const ConvShape cs = conv_shape(*call.node, x.shape, dw.shape, dy.shape);
  const WindowGeom& g = cs.geom;
  const int64_t P = g.out_size(), S = g.in_size(), C = g.channels, M = cs.out_channels;
  Scratch scratch(call);
  T* col = cs.direct ? nullptr : scratch.get<T>(cs.rows * P);
  const T* pdy = dy.as<T>();
  const T* px = x.as<T>();
  T* pdw = dw.as<T>();
  std::fill_n(pdw, dw.numel(), T(0));
  for (int64_t n = 0; n < g.batch; ++n) {
    for (int64_t grp = 0; grp < cs.group; ++grp) {
      const T* xg = px + (n * C + grp * cs.c_per_group) * S;
      const T* src = xg;
      if (!cs.direct) {
        im2col<false, T>(g, xg, cs.c_per_group, col);
        src = col;
      }
      gemm<T>(false, true, cs.m_per_group, cs.rows, P, T(1), pdy + (n * M + grp * cs.m_per_group) * P,
              P, src, P, T(1), pdw + grp * cs.m_per_group * cs.rows, cs.rows);
    }
  }
}

// --- Pools ----------------------------------------------------------------------------------

// For every output position: the in-plane offsets of its window's elements that lie inside the
// input (in window order), and the number of window elements inside the padded input.
struct WindowTable {
  std::vector<int64_t> begin;  // CSR row starts, size P + 1
  std::vector<int64_t> offsets;
  std::vector<int64_t> padded_count;
};

WindowTable window_table(const WindowGeom& g) {
  const size_t nsp = g.in.size();
  const int64_t P = g.out_size(), K = g.kernel_size();
  const Strides in_st = contiguous_strides(g.in);
  WindowTable t;
  t.begin.reserve(P + 1);
  t.padded_count.reserve(P);
  t.begin.push_back(0);
  std::vector<int64_t> oo(nsp, 0), kk(nsp, 0);
  for (int64_t p = 0; p < P; ++p, next_index(oo, g.out, nsp)) {
    int64_t padded = 0;
    std::fill(kk.begin(), kk.end(), 0);
    for (int64_t kf = 0; kf < K; ++kf, next_index(kk, g.kernel, nsp)) {
      bool inside = true, inside_padded = true;
      int64_t off = 0;
      for (size_t d = 0; d < nsp; ++d) {
        const int64_t i = oo[d] * g.strides[d] - g.pad_begin[d] + kk[d] * g.dilations[d];
        if (i < 0 || i >= g.in[d]) inside = false;
        if (i < -g.pad_begin[d] || i >= g.in[d] + g.pad_end[d]) inside_padded = false;
        off += i * in_st[d];
      }
      if (inside) t.offsets.push_back(off);
      if (inside_padded) ++padded;
    }
    t.begin.push_back(static_cast<int64_t>(t.offsets.size()));
    t.padded_count.push_back(padded);
  }
  return t;
}

WindowGeom pool_geom(const Node& node, const Shape& x, const Shape& y) {
  return window_geom(node, x, node.attrs.get_ints("kernel_shape"), y);
}

// Position of the first maximum in a window (-1 for an empty window); NaN counts as maximal.
template <typename T>
int64_t window_argmax(const T* plane, const WindowTable& t, int64_t p) {
  int64_t arg = -1;
  T best = T(0);
  for (int64_t j = t.begin[p]; j < t.begin[p + 1]; ++j) {
    const T v = plane[t.offsets[j]];
    if (arg < 0 || v > best || (std::isnan(v) && !std::isnan(best))) {
      best = v;
      arg = t.offsets[j];
    }
  }
  return arg;
}

template <typename T>
void max_pool(const KernelCall& call) {
  const TensorView& x = call.inputs[0];
  const TensorView& y = call.outputs[0];
  const WindowGeom g = pool_geom(*call.node, x.shape, y.shape);
  const WindowTable t = window_table(g);
  const int64_t P = g.out_size(), S = g.in_size(), planes = g.batch * g.channels;
  int64_t* indices = has_output(call, 1) ? call.outputs[1].as<int64_t>() : nullptr;
  if (indices && call.outputs[1].dtype != DType::kInt64) unsupported(*call.node, "Indices dtype");
  for (int64_t pl = 0; pl < planes; ++pl) {
    const T* plane = x.as<T>() + pl * S;
    T* out = y.as<T>() + pl * P;
    for (int64_t p = 0; p < P; ++p) {
      const int64_t arg = window_argmax(plane, t, p);
      out[p] = arg < 0 ? T(0) : plane[arg];  // a window entirely in the padding yields 0
      if (indices) indices[pl * P + p] = pl * S + std::max<int64_t>(arg, 0);
    }
  }
}

template <typename T>
void max_pool_grad(const KernelCall& call) {
  const TensorView& dy = call.inputs[0];
  const TensorView& x = call.inputs[1];
  const TensorView& dx = call.outputs[0];
  const WindowGeom g = pool_geom(*call.node, x.shape, dy.shape);
  const WindowTable t = window_table(g);
  const int64_t P = g.out_size(), S = g.in_size(), planes = g.batch * g.channels;
  std::fill_n(dx.as<T>(), dx.numel(), T(0));
  for (int64_t pl = 0; pl < planes; ++pl) {
    const T* plane = x.as<T>() + pl * S;
    const T* g_out = dy.as<T>() + pl * P;
    T* g_in = dx.as<T>() + pl * S;
    for (int64_t p = 0; p < P; ++p) {
      const int64_t arg = window_argmax(plane, t, p);
      if (arg >= 0) g_in[arg] += g_out[p];
    }
  }
}

int64_t avg_divisor(const KernelCall& call, const WindowTable& t, int64_t p) {
  const bool include_pad = call.node->attrs.get_int("count_include_pad", 0) != 0;
  return include_pad ? t.padded_count[p] : t.begin[p + 1] - t.begin[p];
}

template <typename T>
void average_pool(const KernelCall& call) {
  const TensorView& x = call.inputs[0];
  const TensorView& y = call.outputs[0];
  const WindowGeom g = pool_geom(*call.node, x.shape, y.shape);
  const WindowTable t = window_table(g);
  const int64_t P = g.out_size(), S = g.in_size(), planes = g.batch * g.channels;
  for (int64_t pl = 0; pl < planes; ++pl) {
    const T* plane = x.as<T>() + pl * S;
    T* out = y.as<T>() + pl * P;
    for (int64_t p = 0; p < P; ++p) {
      double s = 0;
      for (int64_t j = t.begin[p]; j < t.begin[p + 1]; ++j) s += plane[t.offsets[j]];
      const int64_t div = avg_divisor(call, t, p);
      out[p] = div == 0 ? T(0) : static_cast<T>(s / static_cast<double>(div));
    }
  }
}

template <typename T>
void average_pool_grad(const KernelCall& call) {
  const TensorView& dy = call.inputs[0];
  const TensorView& dx = call.outputs[0];
  const WindowGeom g = pool_geom(*call.node, dx.shape, dy.shape);
  const WindowTable t = window_table(g);
  const int64_t P = g.out_size(), S = g.in_size(), planes = g.batch * g.channels;
  std::fill_n(dx.as<T>(), dx.numel(), T(0));
  for (int64_t pl = 0; pl < planes; ++pl) {
    const T* g_out = dy.as<T>() + pl * P;
    T* g_in = dx.as<T>() + pl * S;
    for (int64_t p = 0; p < P; ++p) {
      const int64_t div = avg_divisor(call, t, p);
      if (div == 0) continue;
      const T share = g_out[p] / static_cast<T>(div);
      for (int64_t j = t.begin[p]; j < t.begin[p + 1]; ++j) g_in[t.offsets[j]] += share;
    }
  }
}

template <typename T>
void global_average_pool(const KernelCall& call) {
  const TensorView& x = call.inputs[0];
  const int64_t planes = x.shape[0] * x.shape[1];
  const int64_t S = product(x.shape, 2, x.shape.size());
  for (int64_t pl = 0; pl < planes; ++pl) {
    const T* plane = x.as<T>() + pl * S;
    double s = 0;
    for (int64_t i = 0; i < S; ++i) s += plane[i];
    call.outputs[0].as<T>()[pl] = S == 0 ? T(0) : static_cast<T>(s / static_cast<double>(S));
  }
}

}  // namespace

void run_conv_pool(const KernelCall& call) {
  const Node& node = *call.node;
  auto with_float = [&](auto fn_tag, size_t min_in, size_t max_in) {
    expect_inputs(call, min_in, max_in);
    dispatch_float(call.outputs[0].dtype, node, [&](auto t) { fn_tag(t); });
  };
  switch (node.kind) {
    case OpKind::kConv:
      with_float([&](auto t) { conv<decltype(t)>(call); }, 2, 3);
      return;
    case OpKind::kConvGradInput:
      with_float([&](auto t) { conv_grad_input<decltype(t)>(call); }, 2, 2);
      return;
    case OpKind::kConvGradWeight:
      with_float([&](auto t) { conv_grad_weight<decltype(t)>(call); }, 2, 2);
      return;
    case OpKind::kMaxPool:
      with_float([&](auto t) { max_pool<decltype(t)>(call); }, 1, 1);
      return;
    case OpKind::kMaxPoolGrad:
      with_float([&](auto t) { max_pool_grad<decltype(t)>(call); }, 2, 2);
      return;
    case OpKind::kAveragePool:
      with_float([&](auto t) { average_pool<decltype(t)>(call); }, 1, 1);
      return;
    case OpKind::kAveragePoolGrad:
      with_float([&](auto t) { average_pool_grad<decltype(t)>(call); }, 1, 1);
      return;
    case OpKind::kGlobalAveragePool:
      with_float([&](auto t) { global_average_pool<decltype(t)>(call); }, 1, 1);
      return;
    default:
      unsupported(node, "op in the conv/pool family");
  }
}

}  // namespace alpa::exec::cpu
