#include "planner/spmd/reshard.h"

#include <gtest/gtest.h>

#include <random>

#include "planner/common/error.h"
#include "planner/common/format.h"

namespace alpa {
namespace {

// Distinct α/β per axis: axis 0 slow (crosses hosts), axis 1 fast.
constexpr double kAlpha0 = 1e-5, kBeta0 = 1e-9;
constexpr double kAlpha1 = 2e-6, kBeta1 = 1e-10;

MeshCosts make_mesh(int64_t d0, int64_t d1) {
  MeshCosts mesh;
  mesh.view = {d0, d1};
  mesh.axis[0] = AxisCost{d0, true, 0, kAlpha0, kBeta0};
  mesh.axis[1] = AxisCost{d1, false, 0, kAlpha1, kBeta1};
  return mesh;
}

ShardingSpec spec(const std::string& text, size_t rank = 2) {
  auto parsed = ShardingSpec::parse(text, rank);
  EXPECT_TRUE(parsed.has_value()) << text;
  return *parsed;
}

// The [64, 32] float32 tensor most tests move: 8192 bytes in all.
const Shape kShape{64, 32};

ReshardResult run(const std::string& src, AxisMask partial, const std::string& dst,
                  const MeshCosts& mesh, const Shape& shape = kShape,
                  DType dtype = DType::kFloat32) {
  return reshard(spec(src, shape.size()), partial, spec(dst, shape.size()), shape, dtype, mesh);
}

void expect_step(const CollectiveStep& step, Collective kind, int axis, int dim, int dim2,
                 double bytes, double bytes_per_device, double time_s) {
  EXPECT_EQ(step.kind, kind);
  EXPECT_EQ(step.axis, axis);
  EXPECT_EQ(step.dim, dim);
  EXPECT_EQ(step.dim2, dim2);
  EXPECT_DOUBLE_EQ(step.bytes, bytes);
  EXPECT_DOUBLE_EQ(step.bytes_per_device, bytes_per_device);
  EXPECT_DOUBLE_EQ(step.time_s, time_s);
}

// All-to-all time is the cost module's formula (tested there); here only its bytes matter.
double a2a_time(const MeshCosts& mesh, int axis, double bytes) {
  return collective_time(Collective::kAllToAll, mesh.axis[axis], bytes);
}

// S0R → RR: all-gather of the 8192-byte result; a device sends (n−1)/n of it.
TEST(Reshard, SplitToReplicatedAllGathers) {
  auto r = run("S0R", 0, "RR", make_mesh(2, 2));
  ASSERT_EQ(r.steps.size(), 1u);
  expect_step(r.steps[0], Collective::kAllGather, 0, 0, -1, 8192, 4096, kAlpha0 + kBeta0 * 4096);
  EXPECT_DOUBLE_EQ(r.time_s, kAlpha0 + kBeta0 * 4096);
  EXPECT_DOUBLE_EQ(r.bytes_per_device, 4096);
  EXPECT_EQ(r.peak_temp_bytes, 0);
  EXPECT_FALSE(r.local_slice);

  r = run("S0R", 0, "RR", make_mesh(4, 1));
  ASSERT_EQ(r.steps.size(), 1u);
  expect_step(r.steps[0], Collective::kAllGather, 0, 0, -1, 8192, 6144, kAlpha0 + kBeta0 * 6144);

  r = run("S1R", 0, "RR", make_mesh(1, 4));
  ASSERT_EQ(r.steps.size(), 1u);
  expect_step(r.steps[0], Collective::kAllGather, 1, 0, -1, 8192, 6144, kAlpha1 + kBeta1 * 6144);

  r = run("RS1", 0, "RR", make_mesh(2, 4));
  ASSERT_EQ(r.steps.size(), 1u);
  expect_step(r.steps[0], Collective::kAllGather, 1, 1, -1, 8192, 6144, kAlpha1 + kBeta1 * 6144);
}

// Partial sums → R: all-reduce of the 8192-byte local buffer, 2(n−1)/n of it sent.
TEST(Reshard, PartialToReplicatedAllReduces) {
  auto r = run("RR", kAxis1, "RR", make_mesh(2, 4));
  ASSERT_EQ(r.steps.size(), 1u);
  expect_step(r.steps[0], Collective::kAllReduce, 1, -1, -1, 8192, 12288, kAlpha1 + kBeta1 * 12288);
  EXPECT_EQ(r.peak_temp_bytes, 0);
  EXPECT_FALSE(r.local_slice);

  r = run("RR", kAxis0, "RR", make_mesh(2, 4));
  ASSERT_EQ(r.steps.size(), 1u);
  expect_step(r.steps[0], Collective::kAllReduce, 0, -1, -1, 8192, 8192, kAlpha0 + kBeta0 * 8192);
}

// Partial over axis 1 → S1R: reduce-scatter, half the all-reduce's traffic on 4 devices.
TEST(Reshard, PartialToSplitReduceScatters) {
  const MeshCosts mesh = make_mesh(2, 4);
  const auto rs = run("RR", kAxis1, "S1R", mesh);
  ASSERT_EQ(rs.steps.size(), 1u);
  expect_step(rs.steps[0], Collective::kReduceScatter, 1, 0, -1, 8192, 6144,
              kAlpha1 + kBeta1 * 6144);
  EXPECT_FALSE(rs.local_slice);
  EXPECT_EQ(rs.peak_temp_bytes, 0);
  const auto ar = run("RR", kAxis1, "RR", mesh);
  EXPECT_LT(rs.time_s, ar.time_s);
  EXPECT_DOUBLE_EQ(rs.bytes_per_device * 2, ar.bytes_per_device);

  // dst splits dim 0 on the other axis: all-reduce, then slice; the reduced buffer is a temp.
  auto r = run("RR", kAxis1, "S0R", mesh);
  ASSERT_EQ(r.steps.size(), 1u);
  EXPECT_EQ(r.steps[0].kind, Collective::kAllReduce);
  EXPECT_TRUE(r.local_slice);
  EXPECT_EQ(r.peak_temp_bytes, 8192);

  // Axis 0 is S01's major axis: reduce-scatter to S0 (4096 bytes out), then slice axis 1.
  r = run("RR", kAxis0, "S01R", mesh);
  ASSERT_EQ(r.steps.size(), 1u);
  expect_step(r.steps[0], Collective::kReduceScatter, 0, 0, -1, 8192, 4096,
              kAlpha0 + kBeta0 * 4096);
  EXPECT_TRUE(r.local_slice);
  EXPECT_EQ(r.peak_temp_bytes, 4096);

  // Axis 1 alone would give S1, not a prefix of S01: all-reduce, then slice.
  r = run("RR", kAxis1, "S01R", mesh);
  ASSERT_EQ(r.steps.size(), 1u);
  EXPECT_EQ(r.steps[0].kind, Collective::kAllReduce);
  EXPECT_TRUE(r.local_slice);
}

// S0R → RS0: all-to-all of the local buffer (a device keeps 1/n of it).
TEST(Reshard, AllToAllMovesTheSplit) {
  auto r = run("S0R", 0, "RS0", make_mesh(2, 2));  // local 32×32×4 = 4096 bytes
  ASSERT_EQ(r.steps.size(), 1u);
  expect_step(r.steps[0], Collective::kAllToAll, 0, 1, 0, 4096, 2048,
              a2a_time(make_mesh(2, 2), 0, 4096));
  EXPECT_FALSE(r.local_slice);
  EXPECT_EQ(r.peak_temp_bytes, 0);

  r = run("S0R", 0, "RS0", make_mesh(4, 1));  // local 16×32×4 = 2048 bytes
  ASSERT_EQ(r.steps.size(), 1u);
  expect_step(r.steps[0], Collective::kAllToAll, 0, 1, 0, 2048, 1536,
              a2a_time(make_mesh(4, 1), 0, 2048));

  r = run("S1R", 0, "RS1", make_mesh(2, 4));
  ASSERT_EQ(r.steps.size(), 1u);
  expect_step(r.steps[0], Collective::kAllToAll, 1, 1, 0, 2048, 1536,
              a2a_time(make_mesh(2, 4), 1, 2048));

  // The minor axis of S01 moves on its own: local 8×32×4 = 1024 bytes.
  r = run("S01R", 0, "S0S1", make_mesh(2, 4));
  ASSERT_EQ(r.steps.size(), 1u);
  expect_step(r.steps[0], Collective::kAllToAll, 1, 1, 0, 1024, 768,
              a2a_time(make_mesh(2, 4), 1, 1024));
}

// S01R → S0R: gathering the minor axis leaves a valid S0 (32 rows, 4096 bytes).
TEST(Reshard, S01ToS0GathersTheMinorAxis) {
  const auto r = run("S01R", 0, "S0R", make_mesh(2, 4));
  ASSERT_EQ(r.steps.size(), 1u);
  expect_step(r.steps[0], Collective::kAllGather, 1, 0, -1, 4096, 3072, kAlpha1 + kBeta1 * 3072);
  EXPECT_FALSE(r.local_slice);
  EXPECT_EQ(r.peak_temp_bytes, 0);
}

// S01R → S1R: dropping the major axis alone is no layout; gather both (4096, then 8192 bytes),
// then slice. The replicated 8192-byte buffer is the peak temporary.
TEST(Reshard, S01ToS1GathersBothThenSlices) {
  const auto r = run("S01R", 0, "S1R", make_mesh(2, 4));
  ASSERT_EQ(r.steps.size(), 2u);
  expect_step(r.steps[0], Collective::kAllGather, 1, 0, -1, 4096, 3072, kAlpha1 + kBeta1 * 3072);
  expect_step(r.steps[1], Collective::kAllGather, 0, 0, -1, 8192, 4096, kAlpha0 + kBeta0 * 4096);
  EXPECT_TRUE(r.local_slice);
  EXPECT_EQ(r.peak_temp_bytes, 8192);
  EXPECT_DOUBLE_EQ(r.bytes_per_device, 7168);
  EXPECT_DOUBLE_EQ(r.time_s, kAlpha1 + kBeta1 * 3072 + kAlpha0 + kBeta0 * 4096);
}

TEST(Reshard, ReplicatedToSplitIsAFreeSlice) {
  const auto r = run("RR", 0, "S0R", make_mesh(2, 2));
  EXPECT_TRUE(r.steps.empty());
  EXPECT_TRUE(r.local_slice);
  EXPECT_EQ(r.time_s, 0);
  EXPECT_EQ(r.bytes_per_device, 0);
  EXPECT_EQ(r.peak_temp_bytes, 0);
}

TEST(Reshard, SameSpecIsFree) {
  for (const char* s : {"RR", "S0R", "RS1", "S01R", "S1S0"}) {
    const auto r = run(s, 0, s, make_mesh(2, 4));
    EXPECT_TRUE(r.steps.empty()) << s;
    EXPECT_FALSE(r.local_slice) << s;
    EXPECT_EQ(r.time_s, 0) << s;
  }
}

// On an axis of size 1, S is R and a partial sum is complete: nothing runs.
TEST(Reshard, SizeOneAxisIsFree) {
  const MeshCosts row = make_mesh(1, 4), column = make_mesh(4, 1);
  for (const auto& [src, partial, dst, mesh] :
       std::vector<std::tuple<std::string, AxisMask, std::string, MeshCosts>>{
           {"S0R", 0, "RR", row},
           {"RR", 0, "S0R", row},
           {"RR", kAxis0, "RR", row},
           {"S0R", 0, "RS0", row},
           {"S01R", 0, "S1R", row},
           {"S01R", 0, "S0R", column},
           {"RR", kAxis1, "S1R", column},
           {"S1R", 0, "RS1", column}}) {
    const auto r = run(src, partial, dst, mesh);
    EXPECT_TRUE(r.steps.empty()) << src << " -> " << dst;
    EXPECT_FALSE(r.local_slice) << src << " -> " << dst;
    EXPECT_EQ(r.time_s, 0) << src << " -> " << dst;
  }
  // S01 on 1×4 is S1: moving it is one all-to-all over axis 1 (local 16×32×4 bytes).
  const auto r = run("S01R", 0, "RS1", row);
  ASSERT_EQ(r.steps.size(), 1u);
  expect_step(r.steps[0], Collective::kAllToAll, 1, 1, 0, 2048, 1536, a2a_time(row, 1, 2048));
}

// 10 rows over 4 ways: local 3 rows, the gather moves 4 × 3 = 12 padded rows.
TEST(Reshard, PaddedUnevenDim) {
  const Shape uneven{10, 8};
  const MeshCosts column = make_mesh(4, 1);
  auto r = run("S0R", 0, "RR", column, uneven);
  ASSERT_EQ(r.steps.size(), 1u);
  expect_step(r.steps[0], Collective::kAllGather, 0, 0, -1, 12 * 8 * 4, 288,
              kAlpha0 + kBeta0 * 288);
  // Reduce-scatter pads the 10 rows to 12 first.
  r = run("RR", kAxis0, "S0R", column, uneven);
  ASSERT_EQ(r.steps.size(), 1u);
  expect_step(r.steps[0], Collective::kReduceScatter, 0, 0, -1, 12 * 8 * 4, 288,
              kAlpha0 + kBeta0 * 288);
  // All-to-all into an uneven dim: local 2 rows × 10 columns padded to 12.
  r = run("S0R", 0, "RS0", column, Shape{8, 10});
  ASSERT_EQ(r.steps.size(), 1u);
  expect_step(r.steps[0], Collective::kAllToAll, 0, 1, 0, 2 * 12 * 4, 72, a2a_time(column, 0, 96));
  // S01 pads 10 rows to 16 on 2×4, S0 to 10: their blocks do not line up, so S01 → S0 gathers
  // both axes (2 → 8 → 16 rows) and slices, where 16 rows gather only the minor axis.
  r = run("S01R", 0, "S0R", make_mesh(2, 4), uneven);
  ASSERT_EQ(r.steps.size(), 2u);
  expect_step(r.steps[0], Collective::kAllGather, 1, 0, -1, 8 * 8 * 4, 192, kAlpha1 + kBeta1 * 192);
  expect_step(r.steps[1], Collective::kAllGather, 0, 0, -1, 16 * 8 * 4, 256,
              kAlpha0 + kBeta0 * 256);
  EXPECT_TRUE(r.local_slice);
  EXPECT_EQ(r.peak_temp_bytes, 16 * 8 * 4);
  r = run("S01R", 0, "S0R", make_mesh(2, 4), Shape{16, 8});
  ASSERT_EQ(r.steps.size(), 1u);
  expect_step(r.steps[0], Collective::kAllGather, 1, 0, -1, 8 * 8 * 4, 192, kAlpha1 + kBeta1 * 192);
}

TEST(Reshard, Float16HalvesTheBytes) {
  const MeshCosts mesh = make_mesh(2, 2);
  const auto fp32 = run("S0R", 0, "RR", mesh, kShape, DType::kFloat32);
  const auto fp16 = run("S0R", 0, "RR", mesh, kShape, DType::kFloat16);
  ASSERT_EQ(fp16.steps.size(), 1u);
  expect_step(fp16.steps[0], Collective::kAllGather, 0, 0, -1, 4096, 2048, kAlpha0 + kBeta0 * 2048);
  EXPECT_DOUBLE_EQ(fp16.bytes_per_device * 2, fp32.bytes_per_device);
  EXPECT_LT(fp16.time_s, fp32.time_s);
}

TEST(Reshard, PartialOverBothAxes) {
  const MeshCosts mesh = make_mesh(2, 4);
  // → RR: all-reduce axis 1, then axis 0, both of the whole 8192 bytes.
  auto r = run("RR", kAxis0 | kAxis1, "RR", mesh);
  ASSERT_EQ(r.steps.size(), 2u);
  expect_step(r.steps[0], Collective::kAllReduce, 1, -1, -1, 8192, 12288, kAlpha1 + kBeta1 * 12288);
  expect_step(r.steps[1], Collective::kAllReduce, 0, -1, -1, 8192, 8192, kAlpha0 + kBeta0 * 8192);
  EXPECT_EQ(r.peak_temp_bytes, 8192);
  // → S01R: axis 0 first so both reduce-scatter: 8192 → 4096 → 1024 bytes.
  r = run("RR", kAxis0 | kAxis1, "S01R", mesh);
  ASSERT_EQ(r.steps.size(), 2u);
  expect_step(r.steps[0], Collective::kReduceScatter, 0, 0, -1, 8192, 4096,
              kAlpha0 + kBeta0 * 4096);
  expect_step(r.steps[1], Collective::kReduceScatter, 1, 0, -1, 4096, 3072,
              kAlpha1 + kBeta1 * 3072);
  EXPECT_FALSE(r.local_slice);
  EXPECT_EQ(r.peak_temp_bytes, 4096);
  // → S1S0: reduce-scatter rows over axis 1 (8192 → 2048), then columns over axis 0 (→ 1024).
  r = run("RR", kAxis0 | kAxis1, "S1S0", mesh);
  ASSERT_EQ(r.steps.size(), 2u);
  expect_step(r.steps[0], Collective::kReduceScatter, 1, 0, -1, 8192, 6144,
              kAlpha1 + kBeta1 * 6144);
  expect_step(r.steps[1], Collective::kReduceScatter, 0, 1, -1, 2048, 1024,
              kAlpha0 + kBeta0 * 1024);
  // → S0R: all-reduce axis 1, reduce-scatter axis 0.
  r = run("RR", kAxis0 | kAxis1, "S0R", mesh);
  ASSERT_EQ(r.steps.size(), 2u);
  expect_step(r.steps[0], Collective::kAllReduce, 1, -1, -1, 8192, 12288, kAlpha1 + kBeta1 * 12288);
  expect_step(r.steps[1], Collective::kReduceScatter, 0, 0, -1, 8192, 4096,
              kAlpha0 + kBeta0 * 4096);
  EXPECT_DOUBLE_EQ(r.bytes_per_device, 12288 + 4096);
}

// Both axes swap dims: neither all-to-all lands on a layout, so gather both and slice; across
// dims the gather over axis 0 runs first.
TEST(Reshard, SwappedAxesGatherAxis0First) {
  const auto r = run("S0S1", 0, "S1S0", make_mesh(2, 4));
  ASSERT_EQ(r.steps.size(), 2u);
  expect_step(r.steps[0], Collective::kAllGather, 0, 0, -1, 64 * 8 * 4, 1024,
              kAlpha0 + kBeta0 * 1024);
  expect_step(r.steps[1], Collective::kAllGather, 1, 1, -1, 8192, 6144, kAlpha1 + kBeta1 * 6144);
  EXPECT_TRUE(r.local_slice);
  EXPECT_EQ(r.peak_temp_bytes, 8192);
}

TEST(Reshard, Describe) {
  const MeshCosts mesh = make_mesh(2, 2);
  EXPECT_EQ(describe(run("S0R", 0, "RR", mesh)), "all_gather(dim0,axis0) 8.00 KiB");
  EXPECT_EQ(describe(run("S0R", 0, "RS0", mesh)), "all_to_all(dim0->dim1,axis0) 4.00 KiB");
  EXPECT_EQ(describe(run("RR", kAxis1, "S0R", mesh)), "all_reduce(axis1) 8.00 KiB; local_slice");
  EXPECT_EQ(describe(run("RR", kAxis1, "S1R", mesh)), "reduce_scatter(dim0,axis1) 8.00 KiB");
  EXPECT_EQ(describe(run("RR", 0, "S0R", mesh)), "local_slice");
  EXPECT_EQ(describe(run("S0R", 0, "S0R", mesh)), "none");
}

TEST(Reshard, RejectsBrokenInvariants) {
  const MeshCosts mesh = make_mesh(2, 2);
  EXPECT_THROW(reshard(spec("S0R"), 0, spec("R", 1), kShape, DType::kFloat32, mesh), InternalError);
  EXPECT_THROW(reshard(spec("S0R"), 0, spec("RR"), Shape{64}, DType::kFloat32, mesh),
               InternalError);
  EXPECT_THROW(run("S0R", kAxis0, "RR", mesh), InternalError);  // partial over a split axis
  ShardingSpec twice{{DimSharding::kS0, DimSharding::kS0}};
  EXPECT_THROW(reshard(twice, 0, spec("RR"), kShape, DType::kFloat32, mesh), InternalError);
  MeshCosts wrong = mesh;
  wrong.axis[1].size = 1;
  EXPECT_THROW(run("S0R", 0, "RR", wrong), InternalError);
}

// ---- Property test: an element-level simulation of the steps ----
//
// Each device holds, per dim, a half-open range of (padded) global indices. The simulator
// applies each collective to those ranges with the header's padding convention, checks its
// preconditions (equal ranges within a reduction group, contiguous ranges for a gather),
// recomputes its bytes, and at the end compares every device's ranges with dst's blocks.
struct Range {
  int64_t lo = 0, hi = 0;
  int64_t size() const { return hi - lo; }
  bool operator==(const Range&) const = default;
};

class ElementSim {
 public:
  ElementSim(const ShardingSpec& src, AxisMask partial, const ShardingSpec& dst,
             const Shape& global, DType dtype, const MeshCosts& mesh)
      : dst_(dst),
        global_(global),
        elem_bytes_(dtype_bytes(dtype)),
        mesh_(mesh),
        partial_(partial),
        held_(blocks(src)) {
    for (int a : {0, 1}) {  // a partial sum over one device is already complete
      if (mesh.axis_size(a) <= 1) partial_ &= static_cast<AxisMask>(~(1u << a));
    }
  }

  // Applies `step`; returns false (with a gtest failure) when its preconditions do not hold.
  bool apply(const CollectiveStep& step) {
    const int64_t n = mesh_.axis_size(step.axis);
    if (n <= 1) return fail("step over an axis of size 1");
    switch (step.kind) {
      case Collective::kAllReduce:
        return reduce(step, -1, n);
      case Collective::kReduceScatter:
        return reduce(step, step.dim, n);
      case Collective::kAllGather:
        return move(step, step.dim, -1, n);
      case Collective::kAllToAll:
        return move(step, step.dim2, step.dim, n);
    }
    return fail("unknown collective");
  }

  // Every device holds dst's block, or (with a local slice) a superset of its real part.
  void check_final(const ReshardResult& r) const {
    EXPECT_EQ(partial_, 0) << "partial sums left";
    const auto want = blocks(dst_);
    bool differs = false;
    for (size_t dev = 0; dev < want.size(); ++dev) {
      for (size_t d = 0; d < global_.size(); ++d) {
        const Range& w = want[dev][d];
        const Range& h = held_[dev][d];
        if (w == h) continue;
        differs = true;
        const int64_t lo = std::min(w.lo, global_[d]), hi = std::min(w.hi, global_[d]);
        EXPECT_TRUE(lo == hi || (h.lo <= lo && hi <= h.hi))
            << "device " << dev << " dim " << d << " holds [" << h.lo << "," << h.hi
            << ") but needs [" << w.lo << "," << w.hi << ")";
      }
    }
    EXPECT_EQ(r.local_slice, differs);
  }

  const std::vector<double>& step_bytes() const { return bytes_; }
  const std::vector<double>& outputs() const { return outputs_; }

 private:
  using Blocks = std::vector<std::vector<Range>>;  // [device][dim]

  bool fail(const std::string& what) {
    ADD_FAILURE() << what;
    return false;
  }

  int64_t coord(size_t dev, int axis) const {
    return axis == 0 ? dev / mesh_.view.d1 : dev % mesh_.view.d1;
  }

  Blocks blocks(const ShardingSpec& spec) const {
    Blocks out(mesh_.view.size(), std::vector<Range>(global_.size()));
    for (size_t dev = 0; dev < out.size(); ++dev) {
      for (size_t d = 0; d < global_.size(); ++d) {
        const int64_t w = spec.ways(d, mesh_.view);
        const int64_t b = (global_[d] + w - 1) / w;
        int64_t j = 0;
        switch (spec.dims[d]) {
          case DimSharding::kR:
            j = 0;
            break;
          case DimSharding::kS0:
            j = coord(dev, 0);
            break;
          case DimSharding::kS1:
            j = coord(dev, 1);
            break;
          case DimSharding::kS01:
            j = coord(dev, 0) * mesh_.view.d1 + coord(dev, 1);
            break;
        }
        out[dev][d] = {j * b, j * b + b};
      }
    }
    return out;
  }

  // Devices of each group along `axis`, ordered by their coordinate on it.
  std::vector<std::vector<size_t>> groups(int axis) const {
    std::vector<std::vector<size_t>> out;
    for (size_t dev = 0; dev < held_.size(); ++dev) {
      if (coord(dev, axis) != 0) continue;
      std::vector<size_t> group;
      const size_t stride = axis == 0 ? mesh_.view.d1 : 1;
      for (int64_t k = 0; k < mesh_.axis_size(axis); ++k) group.push_back(dev + k * stride);
      out.push_back(group);
    }
    return out;
  }

  bool replicated(size_t d) const {
    for (const auto& dev : held_) {
      if (!(dev[d] == held_[0][d])) return false;
    }
    return true;
  }

  // Length of dim d about to be split: a replicated dim is padded to dst's padded size.
  int64_t split_length(size_t d) const {
    if (!replicated(d)) return held_[0][d].size();
    const int64_t w = dst_.ways(d, mesh_.view);
    return (global_[d] + w - 1) / w * w;
  }

  double bytes_of(size_t dev, int d, int64_t d_length) const {
    double bytes = static_cast<double>(elem_bytes_);
    for (size_t i = 0; i < global_.size(); ++i) {
      bytes *= static_cast<double>(static_cast<int>(i) == d ? d_length : held_[dev][i].size());
    }
    return bytes;
  }

  void trim_if_replicated(size_t d) {
    if (!replicated(d)) return;
    EXPECT_EQ(held_[0][d].lo, 0);
    for (auto& dev : held_) dev[d].hi = std::min(dev[d].hi, global_[d]);
  }

  // All-reduce (dim < 0) or reduce-scatter along `dim`.
  bool reduce(const CollectiveStep& step, int dim, int64_t n) {
    if (((partial_ >> step.axis) & 1) == 0) return fail("reduction over a non-partial axis");
    const int64_t length = dim >= 0 ? split_length(dim) : 0;
    if (dim >= 0 && length % n != 0) return fail("reduce-scatter of an indivisible dim");
    for (const auto& group : groups(step.axis)) {
      for (size_t dev : group) {
        if (held_[dev] != held_[group[0]]) return fail("reduction over unequal blocks");
      }
      if (dim < 0) continue;
      const Range base{held_[group[0]][dim].lo, held_[group[0]][dim].lo + length};
      for (size_t k = 0; k < group.size(); ++k) {
        const int64_t i = static_cast<int64_t>(k);
        held_[group[k]][dim] = {base.lo + i * length / n, base.lo + (i + 1) * length / n};
      }
    }
    const double bytes = dim >= 0 ? bytes_of(0, -1, 0) * n : bytes_of(0, -1, 0);
    bytes_.push_back(bytes);
    outputs_.push_back(dim >= 0 ? bytes / n : bytes);
    partial_ &= static_cast<AxisMask>(~(1u << step.axis));
    return true;
  }

  // All-gather of `from` (to < 0) or all-to-all from `from` to `to`.
  bool move(const CollectiveStep& step, int from, int to, int64_t n) {
    if (from < 0 || (step.kind == Collective::kAllToAll && (to < 0 || to == from))) {
      return fail("bad dims");
    }
    const int64_t length = to >= 0 ? split_length(to) : 0;
    if (to >= 0 && length % n != 0) return fail("all-to-all into an indivisible dim");
    const double bytes = bytes_of(0, to, length) * (to >= 0 ? 1 : n);
    for (const auto& group : groups(step.axis)) {
      const Range first = held_[group[0]][from];
      for (size_t k = 0; k < group.size(); ++k) {
        auto& dev = held_[group[k]];
        for (size_t d = 0; d < dev.size(); ++d) {
          if (static_cast<int>(d) != from && !(dev[d] == held_[group[0]][d])) {
            return fail("gather over blocks that differ outside the gathered dim");
          }
        }
        if (dev[from].lo != first.lo + static_cast<int64_t>(k) * first.size() ||
            dev[from].size() != first.size()) {
          return fail("gathered blocks are not contiguous");
        }
      }
      for (size_t k = 0; k < group.size(); ++k) {
        auto& dev = held_[group[k]];
        dev[from] = {first.lo, first.lo + n * first.size()};
        if (to >= 0) {
          const int64_t lo = dev[to].lo, i = static_cast<int64_t>(k);
          dev[to] = {lo + i * length / n, lo + (i + 1) * length / n};
        }
      }
    }
    trim_if_replicated(from);
    bytes_.push_back(bytes);
    outputs_.push_back(bytes);
    if (bytes_of(0, -1, 0) > bytes) return fail("buffer grew beyond the step's output");
    return true;
  }

  ShardingSpec dst_;
  Shape global_;
  int64_t elem_bytes_;
  MeshCosts mesh_;
  AxisMask partial_;
  Blocks held_;
  std::vector<double> bytes_, outputs_;
};

ShardingSpec random_spec(std::mt19937& rng, size_t rank) {
  ShardingSpec spec = ShardingSpec::replicated(rank);
  std::uniform_int_distribution<int> pick(-1, static_cast<int>(rank) - 1);
  const int d0 = rank ? pick(rng) : -1, d1 = rank ? pick(rng) : -1;
  if (d0 >= 0) spec.dims[d0] = DimSharding::kS0;
  if (d1 >= 0) spec.dims[d1] = d1 == d0 ? DimSharding::kS01 : DimSharding::kS1;
  return spec;
}

// Naive plan on divisible shapes: all-reduce every partial axis, gather every split axis.
double naive_bytes_per_device(const ShardingSpec& src, AxisMask partial, const Shape& global,
                              DType dtype, const MeshCosts& mesh) {
  double local = static_cast<double>(dtype_bytes(dtype));
  for (int64_t e : src.local_shape(global, mesh.view)) local *= static_cast<double>(e);
  double total = 0;
  for (int a : {0, 1}) {
    if ((partial >> a) & 1)
      total += collective_bytes_per_device(Collective::kAllReduce, mesh.axis_size(a), local);
  }
  for (size_t d = 0; d < global.size(); ++d) {
    const DimSharding s = src.dims[d];
    for (int a : {1, 0}) {
      const bool uses = (a == 0 && (s == DimSharding::kS0 || s == DimSharding::kS01)) ||
                        (a == 1 && (s == DimSharding::kS1 || s == DimSharding::kS01));
      if (!uses) continue;
      local *= static_cast<double>(mesh.axis_size(a));
      total += collective_bytes_per_device(Collective::kAllGather, mesh.axis_size(a), local);
    }
  }
  return total;
}

TEST(Reshard, RandomPairsReachDstElementwise) {
  std::mt19937 rng(20240607);
  const std::vector<std::pair<int64_t, int64_t>> views = {{1, 1}, {1, 4}, {4, 1}, {2, 2}, {2, 4},
                                                          {4, 2}, {1, 2}, {2, 1}, {3, 2}, {2, 3}};
  int divisible_cases = 0, with_steps = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    const auto [d0, d1] = views[rng() % views.size()];
    const MeshCosts mesh = make_mesh(d0, d1);
    const size_t rank = rng() % 4;
    Shape global(rank);
    for (auto& g : global) g = 1 + rng() % 13;
    const ShardingSpec src = random_spec(rng, rank), dst = random_spec(rng, rank);
    AxisMask partial = 0;
    for (int a : {0, 1}) {
      const bool used = std::any_of(src.dims.begin(), src.dims.end(), [a](DimSharding s) {
        return s == DimSharding::kS01 || s == (a == 0 ? DimSharding::kS0 : DimSharding::kS1);
      });
      if (!used && rng() % 2) partial |= static_cast<AxisMask>(1u << a);
    }
    const DType dtype = rng() % 2 ? DType::kFloat32 : DType::kFloat16;
    const std::string label = src.to_string() + " partial " + std::to_string(partial) + " -> " +
                              dst.to_string() + " on " + std::to_string(d0) + "x" +
                              std::to_string(d1) + " shape " + format_dims(global);
    SCOPED_TRACE(label);

    const ReshardResult r = reshard(src, partial, dst, global, dtype, mesh);
    ElementSim sim(src, partial, dst, global, dtype, mesh);
    double time = 0, per_device = 0;
    bool ok = true;
    for (const CollectiveStep& step : r.steps) {
      ok = ok && sim.apply(step);
      if (!ok) break;
      EXPECT_DOUBLE_EQ(step.bytes, sim.step_bytes().back());
      EXPECT_DOUBLE_EQ(step.time_s, collective_time(step.kind, mesh.axis[step.axis], step.bytes));
      EXPECT_DOUBLE_EQ(
          step.bytes_per_device,
          collective_bytes_per_device(step.kind, mesh.axis_size(step.axis), step.bytes));
      time += step.time_s;
      per_device += step.bytes_per_device;
    }
    if (!ok) break;
    sim.check_final(r);
    EXPECT_DOUBLE_EQ(r.time_s, time);
    EXPECT_DOUBLE_EQ(r.bytes_per_device, per_device);
    double peak = 0;
    const auto& outs = sim.outputs();
    for (size_t i = 0; i + (r.local_slice ? 0 : 1) < outs.size(); ++i)
      peak = std::max(peak, outs[i]);
    EXPECT_EQ(r.peak_temp_bytes, static_cast<int64_t>(peak));
    if (src == dst && partial == 0) {
      EXPECT_TRUE(r.steps.empty() && !r.local_slice);
    }
    // Idempotence: from the reached dst on, nothing more to do.
    const ReshardResult again = reshard(dst, 0, dst, global, dtype, mesh);
    EXPECT_TRUE(again.steps.empty() && !again.local_slice);
    // Without padding, the plan never moves more than all-reduce-then-gather-everything.
    if (src.divides(global, mesh.view) && dst.divides(global, mesh.view)) {
      ++divisible_cases;
      AxisMask effective = 0;
      for (int a : {0, 1}) {
        if (((partial >> a) & 1) && mesh.axis_size(a) > 1)
          effective |= static_cast<AxisMask>(1u << a);
      }
      EXPECT_LE(r.bytes_per_device,
                naive_bytes_per_device(src, effective, global, dtype, mesh) * (1 + 1e-12));
    }
    if (!r.steps.empty()) ++with_steps;
    if (::testing::Test::HasFailure()) break;  // one failing case is enough to read
  }
  EXPECT_GT(divisible_cases, 1000);
  EXPECT_GT(with_steps, 5000);
}

}  // namespace
}  // namespace alpa
