// Helpers shared by the CPU kernels: dtype dispatch, strided loop nests (broadcasting, transposes,
// slices), scratch memory, error reporting and small numeric utilities.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "executor/backend/kernels.h"
#include "planner/common/error.h"

namespace alpa::exec::cpu {

using Strides = std::vector<int64_t>;

// --- Errors ---------------------------------------------------------------------------------

// InternalError: an op/dtype/attribute combination this backend does not implement.
[[noreturn]] void unsupported(const Node& node, const std::string& what);
// UserError naming the node: bad data (an index or label out of range).
[[noreturn]] void bad_data(const Node& node, const std::string& what);

// --- Views and dtypes -----------------------------------------------------------------------

// True when output `i` exists and has storage (optional outputs may be absent).
inline bool has_output(const KernelCall& call, size_t i) {
  return i < call.outputs.size() && call.outputs[i].data != nullptr;
}
inline bool has_input(const KernelCall& call, size_t i) {
  return i < call.inputs.size() && call.inputs[i].data != nullptr;
}
void expect_inputs(const KernelCall& call, size_t min, size_t max);

// The floating element type of the node: the first floating output, else the first floating input.
DType float_dtype(const KernelCall& call);

// Calls f(T{}) with T = float or double.
template <typename F>
void dispatch_float(DType dtype, const Node& node, F&& f) {
  switch (dtype) {
    case DType::kFloat32: f(float{}); return;
    case DType::kFloat64: f(double{}); return;
    default: unsupported(node, "dtype " + std::string(dtype_name(dtype)));
  }
}

// Calls f(T{}) with T = float, double, int64_t or int32_t.
template <typename F>
void dispatch_numeric(DType dtype, const Node& node, F&& f) {
  switch (dtype) {
    case DType::kFloat32: f(float{}); return;
    case DType::kFloat64: f(double{}); return;
    case DType::kInt64: f(int64_t{}); return;
    case DType::kInt32: f(int32_t{}); return;
    default: unsupported(node, "dtype " + std::string(dtype_name(dtype)));
  }
}

// Calls f(T{}) for every dtype with a native storage type (bool is uint8_t, 0/1).
template <typename F>
void dispatch_storage(DType dtype, const Node& node, F&& f) {
  switch (dtype) {
    case DType::kFloat32: f(float{}); return;
    case DType::kFloat64: f(double{}); return;
    case DType::kInt64: f(int64_t{}); return;
    case DType::kInt32: f(int32_t{}); return;
    case DType::kInt8: f(int8_t{}); return;
    case DType::kUInt8: case DType::kBool: f(uint8_t{}); return;
    default: unsupported(node, "dtype " + std::string(dtype_name(dtype)));
  }
}

// Calls f(U{}) with an unsigned integer type of the element's size (pure data movement).
template <typename F>
void dispatch_bytes(int64_t elem_bytes, const Node& node, F&& f) {
  switch (elem_bytes) {
    case 1: f(uint8_t{}); return;
    case 2: f(uint16_t{}); return;
    case 4: f(uint32_t{}); return;
    case 8: f(uint64_t{}); return;
    default: unsupported(node, "element size " + std::to_string(elem_bytes));
  }
}

// Element i of any numeric tensor as double / int64 (bool reads as 0/1).
double read_double(const TensorView& t, int64_t i);
int64_t read_int(const TensorView& t, int64_t i);
// Stores v into element i of any numeric tensor (float -> int saturates, NaN -> 0; bool: v != 0).
void write_double(const TensorView& t, int64_t i, double v);
// All elements of an integer tensor (int64/int32/...) as int64.
std::vector<int64_t> read_ints(const TensorView& t);

// --- Scratch memory -------------------------------------------------------------------------

// Temporary buffers for one kernel call: from call.scratch when the interpreter provides it,
// otherwise owned here (tests). 64-byte aligned either way (the interpreter's allocator aligns).
class Scratch {
 public:
  explicit Scratch(const KernelCall& call) : call_(call) {}
  template <typename T>
  T* get(int64_t count) {
    return static_cast<T*>(bytes(static_cast<size_t>(std::max<int64_t>(count, 1)) * sizeof(T)));
  }

 private:
  void* bytes(size_t n);
  const KernelCall& call_;
  std::vector<std::unique_ptr<uint8_t[]>> owned_;
};

// --- Shapes and loop nests ------------------------------------------------------------------

Strides contiguous_strides(const Shape& shape);
// Strides of `in` read as `out` (numpy broadcasting, right-aligned): 0 on broadcast dims.
Strides broadcast_strides(const Shape& in, const Shape& out);
// `in` right-aligned to `rank` dims (leading 1s).
Shape align_rank(const Shape& in, size_t rank);
int64_t product(const Shape& shape, size_t begin, size_t end);

// A loop nest over `dims` for N operands with per-dim element strides (any sign, 0 = broadcast).
// Dims of size 1 are dropped and adjacent dims that are contiguous for every operand merged.
struct LoopNest {
  std::vector<int64_t> dims;
  std::vector<Strides> strides;  // [operand][dim]
  int64_t total = 0;             // elements in the nest (0: nothing to do)
};
LoopNest make_loop_nest(const Shape& dims, std::vector<Strides> operand_strides);

// Calls f(offsets, n, inner_strides) for every run of the innermost dim: operand k visits
// offsets[k] + j * inner_strides[k] for j in [0, n).
template <size_t N, typename F>
void for_each_run(const LoopNest& nest, F&& f) {
  if (nest.total == 0) return;
  const size_t rank = nest.dims.size();
  std::array<int64_t, N> off{};
  std::array<int64_t, N> inner{};
  if (rank == 0) {
    f(off, int64_t{1}, inner);
    return;
  }
  for (size_t k = 0; k < N; ++k) inner[k] = nest.strides[k][rank - 1];
  const int64_t n = nest.dims[rank - 1];
  std::vector<int64_t> idx(rank, 0);
  const int64_t runs = nest.total / n;
  for (int64_t r = 0; r < runs; ++r) {
    f(off, n, inner);
    for (int64_t d = static_cast<int64_t>(rank) - 2; d >= 0; --d) {
      if (++idx[d] < nest.dims[d]) {
        for (size_t k = 0; k < N; ++k) off[k] += nest.strides[k][d];
        break;
      }
      idx[d] = 0;
      for (size_t k = 0; k < N; ++k) off[k] -= nest.strides[k][d] * (nest.dims[d] - 1);
    }
  }
}

// dst[dst_strides . i] = src[src_strides . i] for every index i of `dims` (element units).
void strided_copy(const Node& node, int64_t elem_bytes, const Shape& dims, void* dst,
                  const Strides& dst_strides, const void* src, const Strides& src_strides);
// Numpy-broadcast `src` (shape src_shape) into the contiguous `dst` of shape dst_shape.
void broadcast_copy(const Node& node, int64_t elem_bytes, const void* src, const Shape& src_shape,
                    void* dst, const Shape& dst_shape);
// dst = src transposed: dst dim d is src dim perm[d].
void permute_copy(const Node& node, int64_t elem_bytes, const void* src, const Shape& src_shape,
                  const std::vector<int64_t>& perm, void* dst);

// y (shape y_shape: x_shape with some dims 1, same rank) = scale * sum of x over those dims.
// Accumulates in double (float/double) or int64 (integers).
template <typename T>
void reduce_sum_to(const T* x, const Shape& x_shape, T* y, const Shape& y_shape, double scale,
                   Scratch& scratch) {
  using Acc = std::conditional_t<std::is_floating_point_v<T>, double, int64_t>;
  const int64_t ny = product(y_shape, 0, y_shape.size());
  Acc* acc = scratch.get<Acc>(ny);
  std::fill(acc, acc + ny, Acc{0});
  const LoopNest nest =
      make_loop_nest(x_shape, {contiguous_strides(x_shape), broadcast_strides(y_shape, x_shape)});
  for_each_run<2>(nest, [&](const auto& off, int64_t n, const auto& st) {
    const T* xp = x + off[0];
    Acc* ap = acc + off[1];
    if (st[1] == 0) {
      Acc s = 0;
      for (int64_t j = 0; j < n; ++j) s += static_cast<Acc>(xp[j * st[0]]);
      *ap += s;
    } else {
      for (int64_t j = 0; j < n; ++j) ap[j * st[1]] += static_cast<Acc>(xp[j * st[0]]);
    }
  });
  for (int64_t i = 0; i < ny; ++i) {
    y[i] = scale == 1.0 ? static_cast<T>(acc[i]) : static_cast<T>(static_cast<double>(acc[i]) * scale);
  }
}

// The shape `x_shape` reduces to over `axes` with keepdims (reduced dims set to 1).
Shape keepdims_shape(const Shape& x_shape, const std::vector<int64_t>& axes);

// --- Window geometry (Conv, pools and their gradients) --------------------------------------

struct WindowGeom {
  int64_t batch = 0, channels = 0;  // N and C of the input
  Shape in, kernel, out;            // spatial dims
  std::vector<int64_t> strides, dilations, pad_begin, pad_end;
  int64_t in_size() const { return product(in, 0, in.size()); }
  int64_t kernel_size() const { return product(kernel, 0, kernel.size()); }
  int64_t out_size() const { return product(out, 0, out.size()); }
};
// `x` is [N, C, spatial...]; `out` the output's full shape (from the graph).
WindowGeom window_geom(const Node& node, const Shape& x, const std::vector<int64_t>& kernel,
                       const Shape& out);

}  // namespace alpa::exec::cpu
