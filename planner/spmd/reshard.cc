#include "planner/spmd/reshard.h"

#include <algorithm>

#include "planner/common/error.h"
#include "planner/common/format.h"

namespace alpa {
namespace {

// One dim of a layout (see the header): splitting axes, major first, and the padded size.
struct DimLayout {
  std::vector<int> axes;
  int64_t padded = 0;
};

struct Layout {
  std::vector<DimLayout> dims;
  AxisMask partial = 0;
};

int64_t ways_of(const std::vector<int>& axes, const MeshCosts& mesh) {
  int64_t w = 1;
  for (int a : axes) w *= mesh.axis_size(a);
  return w;
}

int64_t padded_size(int64_t global, int64_t ways) { return (global + ways - 1) / ways * ways; }

// The axes of size > 1 that split a dim with sharding `s`, major first.
std::vector<int> split_axes(DimSharding s, const MeshCosts& mesh) {
  std::vector<int> axes;
  if (s == DimSharding::kS0 || s == DimSharding::kS01) axes.push_back(0);
  if (s == DimSharding::kS1 || s == DimSharding::kS01) axes.push_back(1);
  std::erase_if(axes, [&](int a) { return mesh.axis_size(a) <= 1; });
  return axes;
}

int dim_split_on(const Layout& layout, int axis) {
  for (size_t d = 0; d < layout.dims.size(); ++d) {
    const auto& axes = layout.dims[d].axes;
    if (std::find(axes.begin(), axes.end(), axis) != axes.end()) return static_cast<int>(d);
  }
  return -1;
}

Layout spec_layout(const ShardingSpec& spec, const Shape& global, const MeshCosts& mesh) {
  ALPA_CHECK(spec.dims.size() == global.size(),
             "reshard: spec " + spec.to_string() + " has a rank other than the tensor's");
  Layout layout;
  bool used[2] = {false, false};
  for (size_t d = 0; d < global.size(); ++d) {
    DimLayout dim{split_axes(spec.dims[d], mesh), global[d]};
    for (int a : dim.axes) {
      ALPA_CHECK(!used[a], "reshard: spec " + spec.to_string() + " uses a mesh axis twice");
      used[a] = true;
    }
    if (!dim.axes.empty()) dim.padded = padded_size(global[d], ways_of(dim.axes, mesh));
    layout.dims.push_back(std::move(dim));
  }
  return layout;
}

// Plans the steps of the header's semantics, tracking the layout after each one.
class ReshardPlanner {
 public:
  ReshardPlanner(const Layout& src, const Layout& dst, const Shape& global, DType dtype,
                 const MeshCosts& mesh)
      : cur_(src), dst_(dst), global_(global), elem_bytes_(dtype_bytes(dtype)), mesh_(mesh) {}

  ReshardResult run() {
    for (int a : reduction_order()) reduce(a);
    for (bool moved = true; moved;) {
      moved = false;
      for (int a : {1, 0}) moved = try_all_to_all(a) || moved;
    }
    gather_beyond_kept_prefixes();
    slice_to_dst();
    return finish();
  }

 private:
  size_t kept_prefix(size_t d) const {
    const auto& cur = cur_.dims[d];
    const auto& dst = dst_.dims[d];
    size_t k = 0;
    while (k < cur.axes.size() && k < dst.axes.size() && cur.axes[k] == dst.axes[k]) ++k;
    return k > 0 && cur.padded != dst.padded ? 0 : k;
  }

  bool can_extend(size_t d, int axis) const {
    const auto& cur = cur_.dims[d].axes;
    const auto& dst = dst_.dims[d].axes;
    return kept_prefix(d) == cur.size() && cur.size() < dst.size() && dst[cur.size()] == axis;
  }

  // The elements of dim d in a local buffer about to be split further along it: a replicated
  // dim is first padded to dst's padded size.
  int64_t extent_before_split(size_t d) const {
    const auto& cur = cur_.dims[d];
    return (cur.axes.empty() ? dst_.dims[d].padded : cur.padded) / ways_of(cur.axes, mesh_);
  }

  int64_t extent(size_t d) const { return cur_.dims[d].padded / ways_of(cur_.dims[d].axes, mesh_); }

  // Local buffer bytes, with dim `d` (if any) holding `d_extent` elements instead.
  double local_bytes(int d = -1, int64_t d_extent = 0) const {
    double bytes = static_cast<double>(elem_bytes_);
    for (size_t i = 0; i < cur_.dims.size(); ++i) {
      bytes *= static_cast<double>(static_cast<int>(i) == d ? d_extent : extent(i));
    }
    return bytes;
  }

  void extend(size_t d, int axis) {
    auto& cur = cur_.dims[d];
    if (cur.axes.empty()) cur.padded = dst_.dims[d].padded;
    cur.axes.push_back(axis);
  }

  void pop_minor(size_t d) {
    auto& cur = cur_.dims[d];
    cur.axes.pop_back();
    if (cur.axes.empty()) cur.padded = global_[d];  // trim the padding of a replicated dim
  }

  std::vector<int> reduction_order() const {
    std::vector<int> order;
    for (int a : {1, 0}) {
      if ((cur_.partial >> a) & 1) order.push_back(a);
    }
    const bool both = order.size() == 2;
    if (both && dim_split_on(dst_, 0) >= 0 && dim_split_on(dst_, 0) == dim_split_on(dst_, 1)) {
      std::reverse(order.begin(), order.end());
    }
    return order;
  }

  void reduce(int axis) {
    const int d = dim_split_on(dst_, axis);
    if (d >= 0 && can_extend(d, axis)) {
      const double bytes = local_bytes(d, extent_before_split(d));
      emit(Collective::kReduceScatter, axis, d, -1, bytes, bytes / mesh_.axis_size(axis));
      extend(d, axis);
    } else {
      const double bytes = local_bytes();
      emit(Collective::kAllReduce, axis, -1, -1, bytes, bytes);
    }
    cur_.partial &= static_cast<AxisMask>(~(1u << axis));
  }

  bool try_all_to_all(int axis) {
    const int from = dim_split_on(cur_, axis);
    const int to = dim_split_on(dst_, axis);
    if (from < 0 || to < 0 || from == to) return false;
    if (cur_.dims[from].axes.back() != axis || !can_extend(to, axis)) return false;
    const double bytes = local_bytes(to, extent_before_split(to));
    emit(Collective::kAllToAll, axis, to, from, bytes, bytes);
    pop_minor(from);
    extend(to, axis);
    return true;
  }

  // Pops axes beyond each dim's kept prefix, minor first; across dims, axis 0 first.
  void gather_beyond_kept_prefixes() {
    for (;;) {
      int pick = -1;
      for (size_t d = 0; d < cur_.dims.size(); ++d) {
        const auto& axes = cur_.dims[d].axes;
        if (axes.size() <= kept_prefix(d)) continue;
        if (pick < 0 || (axes.back() == 0 && cur_.dims[pick].axes.back() != 0)) {
          pick = static_cast<int>(d);
        }
      }
      if (pick < 0) return;
      const int axis = cur_.dims[pick].axes.back();
      const double bytes = local_bytes(pick, extent(pick) * mesh_.axis_size(axis));
      emit(Collective::kAllGather, axis, pick, -1, bytes, bytes);
      pop_minor(pick);
    }
  }

  void slice_to_dst() {
    for (size_t d = 0; d < cur_.dims.size(); ++d) {
      ALPA_CHECK(kept_prefix(d) == cur_.dims[d].axes.size(),
                 "reshard: dim " + std::to_string(d) + " is not a prefix of dst after gathers");
      if (cur_.dims[d].axes.size() < dst_.dims[d].axes.size()) result_.local_slice = true;
    }
    cur_ = dst_;
  }

  void emit(Collective kind, int axis, int dim, int dim2, double bytes, double output_bytes) {
    CollectiveStep step;
    step.kind = kind;
    step.axis = axis;
    step.dim = dim;
    step.dim2 = dim2;
    step.bytes = bytes;
    step.bytes_per_device = collective_bytes_per_device(kind, mesh_.axis_size(axis), bytes);
    step.time_s = collective_time(kind, mesh_.axis[axis], bytes);
    result_.steps.push_back(step);
    outputs_.push_back(output_bytes);
  }

  ReshardResult finish() {
    for (const auto& step : result_.steps) {
      result_.time_s += step.time_s;
      result_.bytes_per_device += step.bytes_per_device;
    }
    // The last step's output is the result itself unless a slice follows.
    const size_t temps = outputs_.size() - (result_.local_slice || outputs_.empty() ? 0 : 1);
    for (size_t i = 0; i < temps; ++i) {
      result_.peak_temp_bytes =
          std::max(result_.peak_temp_bytes, static_cast<int64_t>(outputs_[i]));
    }
    return result_;
  }

  Layout cur_;
  const Layout dst_;
  const Shape& global_;
  const int64_t elem_bytes_;
  const MeshCosts& mesh_;
  ReshardResult result_;
  std::vector<double> outputs_;  // bytes of each step's output buffer
};

}  // namespace

ReshardResult reshard(const ShardingSpec& src, AxisMask src_partial, const ShardingSpec& dst,
                      const Shape& global, DType dtype, const MeshCosts& mesh) {
  ALPA_CHECK((src_partial & ~(kAxis0 | kAxis1)) == 0, "reshard: partial mask names axis > 1");
  for (int a : {0, 1}) {
    ALPA_CHECK(mesh.axis[a].size == mesh.axis_size(a),
               "reshard: mesh.axis[" + std::to_string(a) + "].size differs from the view");
  }
  Layout from = spec_layout(src, global, mesh);
  const Layout to = spec_layout(dst, global, mesh);
  for (int a : {0, 1}) {
    if (((src_partial >> a) & 1) == 0 || mesh.axis_size(a) <= 1) continue;
    ALPA_CHECK(dim_split_on(from, a) < 0, "reshard: src " + src.to_string() +
                                              " splits a dim over its partial axis " +
                                              std::to_string(a));
    from.partial |= static_cast<AxisMask>(1u << a);
  }
  return ReshardPlanner(from, to, global, dtype, mesh).run();
}

std::string describe(const ReshardResult& result) {
  std::string out;
  auto append = [&out](const std::string& part) { out += (out.empty() ? "" : "; ") + part; };
  for (const CollectiveStep& step : result.steps) {
    std::string args;
    if (step.kind == Collective::kAllToAll) {
      args = "dim" + std::to_string(step.dim2) + "->dim" + std::to_string(step.dim) + ",";
    } else if (step.dim >= 0) {
      args = "dim" + std::to_string(step.dim) + ",";
    }
    args += "axis" + std::to_string(step.axis);
    append(std::string(collective_name(step.kind)) + "(" + args + ") " + format_bytes(step.bytes));
  }
  if (result.local_slice) append("local_slice");
  return out.empty() ? "none" : out;
}

}  // namespace alpa
