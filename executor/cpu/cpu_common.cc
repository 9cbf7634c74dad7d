#include "executor/cpu/cpu_common.h"

#include <algorithm>
#include <limits>

#include "planner/common/format.h"

namespace alpa::exec::cpu {

void unsupported(const Node& node, const std::string& what) {
  throw InternalError("cpu kernels: " + std::string(op_name(node.kind)) + " node '" + node.name +
                      "': unsupported " + what);
}

void bad_data(const Node& node, const std::string& what) {
  throw UserError("node '" + node.name + "' (" + std::string(op_name(node.kind)) + "): " + what);
}

void expect_inputs(const KernelCall& call, size_t min, size_t max) {
  if (call.inputs.size() < min || call.inputs.size() > max || call.outputs.empty()) {
    unsupported(*call.node, "operand count (" + std::to_string(call.inputs.size()) + " inputs, " +
                                std::to_string(call.outputs.size()) + " outputs)");
  }
}

DType float_dtype(const KernelCall& call) {
  for (const auto& t : call.outputs) {
    if (t.data != nullptr && is_floating(t.dtype)) return t.dtype;
  }
  for (const auto& t : call.inputs) {
    if (is_floating(t.dtype)) return t.dtype;
  }
  unsupported(*call.node, "operands: no floating tensor");
}

double read_double(const TensorView& t, int64_t i) {
  switch (t.dtype) {
    case DType::kFloat32: return t.as<float>()[i];
    case DType::kFloat64: return t.as<double>()[i];
    case DType::kInt64: return static_cast<double>(t.as<int64_t>()[i]);
    case DType::kInt32: return t.as<int32_t>()[i];
    case DType::kInt8: return t.as<int8_t>()[i];
    case DType::kUInt8: case DType::kBool: return t.as<uint8_t>()[i];
    default: throw InternalError("cpu kernels: cannot read dtype " + std::string(dtype_name(t.dtype)));
  }
}

int64_t read_int(const TensorView& t, int64_t i) {
  switch (t.dtype) {
    case DType::kInt64: return t.as<int64_t>()[i];
    case DType::kInt32: return t.as<int32_t>()[i];
    case DType::kInt8: return t.as<int8_t>()[i];
    case DType::kUInt8: case DType::kBool: return t.as<uint8_t>()[i];
    default: throw InternalError("cpu kernels: indices must be integers, got " +
                                 std::string(dtype_name(t.dtype)));
  }
}

namespace {

template <typename I>
I saturate(double v) {
  if (std::isnan(v)) return 0;
  if (v >= static_cast<double>(std::numeric_limits<I>::max())) return std::numeric_limits<I>::max();
  if (v <= static_cast<double>(std::numeric_limits<I>::min())) return std::numeric_limits<I>::min();
  return static_cast<I>(v);
}

}  // namespace

void write_double(const TensorView& t, int64_t i, double v) {
  switch (t.dtype) {
    case DType::kFloat32: t.as<float>()[i] = static_cast<float>(v); return;
    case DType::kFloat64: t.as<double>()[i] = v; return;
    case DType::kInt64: t.as<int64_t>()[i] = saturate<int64_t>(v); return;
    case DType::kInt32: t.as<int32_t>()[i] = saturate<int32_t>(v); return;
    case DType::kInt8: t.as<int8_t>()[i] = saturate<int8_t>(v); return;
    case DType::kUInt8: t.as<uint8_t>()[i] = saturate<uint8_t>(v); return;
    case DType::kBool: t.as<uint8_t>()[i] = v != 0.0 ? 1 : 0; return;
    default: throw InternalError("cpu kernels: cannot write dtype " + std::string(dtype_name(t.dtype)));
  }
}

std::vector<int64_t> read_ints(const TensorView& t) {
  const int64_t n = t.numel();
  std::vector<int64_t> out(static_cast<size_t>(n));
  if (n == 0) return out;
  if (t.dtype == DType::kInt64) {
    std::memcpy(out.data(), t.data, static_cast<size_t>(n) * sizeof(int64_t));
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = read_int(t, i);
  }
  return out;
}

void* Scratch::bytes(size_t n) {
  if (call_.scratch) return call_.scratch(n);
  // Over-allocate to align to 64 bytes.
  owned_.push_back(std::make_unique<uint8_t[]>(n + 64));
  auto addr = reinterpret_cast<uintptr_t>(owned_.back().get());
  return reinterpret_cast<void*>((addr + 63) & ~uintptr_t{63});
}

Strides contiguous_strides(const Shape& shape) {
  Strides s(shape.size(), 1);
  for (int64_t d = static_cast<int64_t>(shape.size()) - 2; d >= 0; --d) s[d] = s[d + 1] * shape[d + 1];
  return s;
}

Shape align_rank(const Shape& in, size_t rank) {
  Shape out(rank - std::min(rank, in.size()), 1);
  out.insert(out.end(), in.begin(), in.end());
  return out;
}

Strides broadcast_strides(const Shape& in, const Shape& out) {
  const Shape aligned = align_rank(in, out.size());
  Strides s = contiguous_strides(aligned);
  for (size_t d = 0; d < out.size(); ++d) {
    if (aligned[d] == 1 && out[d] != 1) s[d] = 0;
  }
  return s;
}

int64_t product(const Shape& shape, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t d = begin; d < end && d < shape.size(); ++d) p *= shape[d];
  return p;
}

LoopNest make_loop_nest(const Shape& dims, std::vector<Strides> operand_strides) {
  LoopNest nest;
  nest.strides.resize(operand_strides.size());
  nest.total = 1;
  for (int64_t d : dims) nest.total *= d;
  if (nest.total == 0) return nest;
  // Walk from the innermost dim outwards, merging contiguous dims.
  std::vector<int64_t> rdims;
  std::vector<Strides> rstr(operand_strides.size());
  for (int64_t d = static_cast<int64_t>(dims.size()) - 1; d >= 0; --d) {
    if (dims[d] == 1) continue;
    bool merge = !rdims.empty();
    for (size_t k = 0; merge && k < operand_strides.size(); ++k) {
      merge = operand_strides[k][d] == rstr[k].back() * rdims.back();
    }
    if (merge) {
      rdims.back() *= dims[d];
      // the merged dim keeps the inner stride
    } else {
      rdims.push_back(dims[d]);
      for (size_t k = 0; k < operand_strides.size(); ++k) rstr[k].push_back(operand_strides[k][d]);
    }
  }
  nest.dims.assign(rdims.rbegin(), rdims.rend());
  for (size_t k = 0; k < operand_strides.size(); ++k) nest.strides[k].assign(rstr[k].rbegin(), rstr[k].rend());
  return nest;
}

void strided_copy(const Node& node, int64_t elem_bytes, const Shape& dims, void* dst,
                  const Strides& dst_strides, const void* src, const Strides& src_strides) {
  const LoopNest nest = make_loop_nest(dims, {dst_strides, src_strides});
  dispatch_bytes(elem_bytes, node, [&](auto tag) {
    using U = decltype(tag);
    U* d = static_cast<U*>(dst);
    const U* s = static_cast<const U*>(src);
    for_each_run<2>(nest, [&](const auto& off, int64_t n, const auto& st) {
      U* dp = d + off[0];
      const U* sp = s + off[1];
      if (st[0] == 1 && st[1] == 1) {
        std::memcpy(dp, sp, static_cast<size_t>(n) * sizeof(U));
      } else if (st[1] == 0 && st[0] == 1) {
        std::fill_n(dp, n, *sp);
      } else {
        for (int64_t j = 0; j < n; ++j) dp[j * st[0]] = sp[j * st[1]];
      }
    });
  });
}

void broadcast_copy(const Node& node, int64_t elem_bytes, const void* src, const Shape& src_shape,
                    void* dst, const Shape& dst_shape) {
  strided_copy(node, elem_bytes, dst_shape, dst, contiguous_strides(dst_shape), src,
               broadcast_strides(src_shape, dst_shape));
}

void permute_copy(const Node& node, int64_t elem_bytes, const void* src, const Shape& src_shape,
                  const std::vector<int64_t>& perm, void* dst) {
  const Strides in = contiguous_strides(src_shape);
  Shape out_shape(perm.size());
  Strides src_strides(perm.size());
  for (size_t d = 0; d < perm.size(); ++d) {
    out_shape[d] = src_shape[perm[d]];
    src_strides[d] = in[perm[d]];
  }
  strided_copy(node, elem_bytes, out_shape, dst, contiguous_strides(out_shape), src, src_strides);
}

Shape keepdims_shape(const Shape& x_shape, const std::vector<int64_t>& axes) {
  Shape s = x_shape;
  for (int64_t a : axes) s[a] = 1;
  return s;
}

WindowGeom window_geom(const Node& node, const Shape& x, const std::vector<int64_t>& kernel,
                       const Shape& out) {
  const size_t nsp = kernel.size();
  if (x.size() != nsp + 2 || out.size() != nsp + 2) {
    unsupported(node, "window rank: input " + format_dims(x) + ", kernel " + format_dims(kernel));
  }
  WindowGeom g;
  g.batch = x[0];
  g.channels = x[1];
  g.in.assign(x.begin() + 2, x.end());
  g.kernel = kernel;
  g.out.assign(out.begin() + 2, out.end());
  g.strides = node.attrs.get_ints("strides", std::vector<int64_t>(nsp, 1));
  g.dilations = node.attrs.get_ints("dilations", std::vector<int64_t>(nsp, 1));
  const auto pads = node.attrs.get_ints("pads", std::vector<int64_t>(2 * nsp, 0));
  if (g.strides.size() != nsp || g.dilations.size() != nsp || pads.size() != 2 * nsp) {
    unsupported(node, "strides/dilations/pads rank");
  }
  g.pad_begin.assign(pads.begin(), pads.begin() + nsp);
  g.pad_end.assign(pads.begin() + nsp, pads.end());
  return g;
}

}  // namespace alpa::exec::cpu
