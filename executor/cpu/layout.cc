// Data movement: Flatten Reshape Squeeze Unsqueeze Identity Transpose Expand Gather Concat Split
// Slice, and the scatter gradients GatherGrad and SliceGrad. Everything but the gradients is
// dtype-agnostic (moves elements by size).
#include <algorithm>
#include <numeric>

#include "executor/cpu/cpu_common.h"
#include "executor/cpu/cpu_ops.h"
#include "planner/graph/shape_inference.h"

namespace alpa::exec::cpu {
namespace {

char* bytes_of(const TensorView& t) { return static_cast<char*>(t.data); }

void copy_same(const KernelCall& call) {
  const TensorView& x = call.inputs[0];
  const TensorView& y = call.outputs[0];
  if (x.bytes() != y.bytes()) unsupported(*call.node, "element count change");
  if (x.data != y.data && x.bytes() > 0) std::memcpy(y.data, x.data, static_cast<size_t>(x.bytes()));
}

void transpose(const KernelCall& call) {
  const TensorView& x = call.inputs[0];
  std::vector<int64_t> perm(x.shape.size());
  std::iota(perm.rbegin(), perm.rend(), 0);
  perm = call.node->attrs.get_ints("perm", perm);
  permute_copy(*call.node, dtype_bytes(x.dtype), x.data, x.shape, perm, call.outputs[0].data);
}

// Outer/inner split of `shape` around `axis` (inner in elements).
struct AxisBlocks {
  int64_t outer, inner;
};
AxisBlocks blocks(const Shape& shape, int64_t axis) {
  return {product(shape, 0, axis), product(shape, axis + 1, shape.size())};
}

// Indices wrapped into [0, n); anything else is the user's data error.
std::vector<int64_t> checked_indices(const KernelCall& call, const TensorView& t, int64_t n, int64_t axis) {
  std::vector<int64_t> idx = read_ints(t);
  for (int64_t& i : idx) {
    const int64_t raw = i;
    if (i < 0) i += n;
    if (i < 0 || i >= n) {
      bad_data(*call.node, "index " + std::to_string(raw) + " is out of range for axis " +
                               std::to_string(axis) + " of size " + std::to_string(n));
    }
  }
  return idx;
}

// A table split by rows across ranks (a vocab-parallel embedding; attributes set by the
// lowering): this rank holds rows [index_offset, index_offset + n) of index_total. Indices are
// checked against the whole table and made local; rows held elsewhere read as zeros (the ranks'
// outputs are summed) and take no gradient here.
struct RowBlock {
  int64_t offset = 0, valid = 0, total = 0;
};
RowBlock row_block(const Node& node, int64_t local_rows) {
  RowBlock r;
  r.total = node.attrs.get_int("index_total", local_rows);
  r.offset = node.attrs.get_int("index_offset", 0);
  r.valid = std::max<int64_t>(0, std::min(local_rows, r.total - r.offset));
  return r;
}

void gather(const KernelCall& call) {
  const TensorView& data = call.inputs[0];
  const int64_t axis = normalize_axis(call.node->attrs.get_int("axis", 0), data.shape.size());
  const int64_t n = data.shape[axis];
  const RowBlock rb = row_block(*call.node, n);
  const std::vector<int64_t> idx = checked_indices(call, call.inputs[1], rb.total, axis);
  const AxisBlocks b = blocks(data.shape, axis);
  const int64_t row = b.inner * dtype_bytes(data.dtype);
  const int64_t cnt = static_cast<int64_t>(idx.size());
  char* out = bytes_of(call.outputs[0]);
  const char* in = bytes_of(data);
  for (int64_t o = 0; o < b.outer; ++o) {
    for (int64_t t = 0; t < cnt; ++t) {
      const int64_t local = idx[t] - rb.offset;
      if (local >= 0 && local < rb.valid) {
        std::memcpy(out + (o * cnt + t) * row, in + (o * n + local) * row, static_cast<size_t>(row));
      } else {
        std::memset(out + (o * cnt + t) * row, 0, static_cast<size_t>(row));
      }
    }
  }
}

template <typename T>
void gather_grad(const KernelCall& call) {
  const TensorView& dy = call.inputs[0];
  const TensorView& dx = call.outputs[0];
  const int64_t axis = normalize_axis(call.node->attrs.get_int("axis", 0), dx.shape.size());
  const int64_t n = dx.shape[axis];
  const RowBlock rb = row_block(*call.node, n);
  const std::vector<int64_t> idx = checked_indices(call, call.inputs[1], rb.total, axis);
  const AxisBlocks b = blocks(dx.shape, axis);
  const int64_t cnt = static_cast<int64_t>(idx.size());
  T* out = dx.as<T>();
  const T* g = dy.as<T>();
  std::fill_n(out, dx.numel(), T(0));
  for (int64_t o = 0; o < b.outer; ++o) {
    for (int64_t t = 0; t < cnt; ++t) {
      const int64_t local = idx[t] - rb.offset;
      if (local < 0 || local >= rb.valid) continue;
      T* dst = out + (o * n + local) * b.inner;
      const T* src = g + (o * cnt + t) * b.inner;
      for (int64_t i = 0; i < b.inner; ++i) dst[i] += src[i];
    }
  }
}

void concat(const KernelCall& call) {
  const TensorView& y = call.outputs[0];
  const int64_t axis = normalize_axis(call.node->attrs.get_int("axis"), y.shape.size());
  const AxisBlocks b = blocks(y.shape, axis);
  const int64_t esz = dtype_bytes(y.dtype);
  const int64_t out_row = y.shape[axis] * b.inner * esz;
  int64_t offset = 0;
  for (const TensorView& x : call.inputs) {
    if (x.dtype != y.dtype) unsupported(*call.node, "mixed operand dtypes");
    const int64_t row = x.shape[axis] * b.inner * esz;
    for (int64_t o = 0; o < b.outer && row > 0; ++o) {
      std::memcpy(bytes_of(y) + o * out_row + offset, bytes_of(x) + o * row, static_cast<size_t>(row));
    }
    offset += row;
  }
}

void split(const KernelCall& call) {
  const TensorView& x = call.inputs[0];
  const int64_t axis = normalize_axis(call.node->attrs.get_int("axis", 0), x.shape.size());
  const AxisBlocks b = blocks(x.shape, axis);
  const int64_t esz = dtype_bytes(x.dtype);
  const int64_t in_row = x.shape[axis] * b.inner * esz;
  int64_t offset = 0;
  for (const TensorView& y : call.outputs) {
    const int64_t row = y.shape[axis] * b.inner * esz;
    if (y.data != nullptr) {
      for (int64_t o = 0; o < b.outer && row > 0; ++o) {
        std::memcpy(bytes_of(y) + o * row, bytes_of(x) + o * in_row + offset, static_cast<size_t>(row));
      }
    }
    offset += row;
  }
  if (offset != in_row) unsupported(*call.node, "split sizes");
}

// The strided window of a tensor of shape `full` that Slice selects: its dims, element strides
// and the element offset of its first element.
struct SliceWindow {
  Shape dims;
  Strides strides;
  int64_t base = 0;
};

SliceWindow slice_window(const Node& node, const Shape& full) {
  const std::vector<SliceRange> ranges = resolve_slice(full, node.attrs);
  const Strides st = contiguous_strides(full);
  SliceWindow w;
  for (size_t d = 0; d < full.size(); ++d) {
    w.dims.push_back(ranges[d].count);
    w.strides.push_back(st[d] * ranges[d].step);
    if (ranges[d].count > 0) w.base += ranges[d].start * st[d];
  }
  return w;
}

void slice(const KernelCall& call) {
  const TensorView& x = call.inputs[0];
  const TensorView& y = call.outputs[0];
  const SliceWindow w = slice_window(*call.node, x.shape);
  const int64_t esz = dtype_bytes(x.dtype);
  strided_copy(*call.node, esz, w.dims, y.data, contiguous_strides(w.dims), bytes_of(x) + w.base * esz,
               w.strides);
}

void slice_grad(const KernelCall& call) {
  const TensorView& dy = call.inputs[0];
  const TensorView& dx = call.outputs[0];
  const SliceWindow w = slice_window(*call.node, dx.shape);
  const int64_t esz = dtype_bytes(dx.dtype);
  std::memset(dx.data, 0, static_cast<size_t>(dx.bytes()));
  strided_copy(*call.node, esz, w.dims, bytes_of(dx) + w.base * esz, w.strides, dy.data,
               contiguous_strides(w.dims));
}

}  // namespace

void run_layout(const KernelCall& call) {
  const Node& node = *call.node;
  switch (node.kind) {
    case OpKind::kFlatten: case OpKind::kReshape: case OpKind::kSqueeze:
    case OpKind::kUnsqueeze: case OpKind::kIdentity:
      expect_inputs(call, 1, 1);
      copy_same(call);
      return;
    case OpKind::kTranspose:
      expect_inputs(call, 1, 1);
      transpose(call);
      return;
    case OpKind::kExpand: {
      expect_inputs(call, 1, 1);
      const TensorView& x = call.inputs[0];
      broadcast_copy(node, dtype_bytes(x.dtype), x.data, x.shape, call.outputs[0].data, call.outputs[0].shape);
      return;
    }
    case OpKind::kGather:
      expect_inputs(call, 2, 2);
      gather(call);
      return;
    case OpKind::kGatherGrad:
      expect_inputs(call, 2, 2);
      dispatch_float(call.outputs[0].dtype, node, [&](auto t) { gather_grad<decltype(t)>(call); });
      return;
    case OpKind::kConcat:
      expect_inputs(call, 1, 1u << 20);
      concat(call);
      return;
    case OpKind::kSplit:
      expect_inputs(call, 1, 1);
      split(call);
      return;
    case OpKind::kSlice:
      expect_inputs(call, 1, 1);
      slice(call);
      return;
    case OpKind::kSliceGrad:
      expect_inputs(call, 1, 1);
      slice_grad(call);
      return;
    default:
      unsupported(node, "op in the layout family");
  }
}

}  // namespace alpa::exec::cpu
