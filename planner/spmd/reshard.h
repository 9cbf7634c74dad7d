// The one resharding function: from a tensor's current sharding (a spec plus pending partial
// sums over mesh axes) to a wanted spec, the list of collectives that gets it there, with their
// bytes and α-β time. The ILP's edge costs, the plan's estimates, `alpa-plan cost` and the
// executor's lowering all call this, so predicted and performed communication agree.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "planner/cluster/mesh.h"
#include "planner/cost/collective.h"
#include "planner/graph/dtype.h"
#include "planner/graph/graph.h"
#include "planner/sharding/spec.h"

namespace alpa {

// Bit mask of logical mesh axes: bit 0 = axis 0, bit 1 = axis 1.
using AxisMask = uint8_t;
inline constexpr AxisMask kAxis0 = 1, kAxis1 = 2;

// One collective over one logical mesh axis.
struct CollectiveStep {
  Collective kind = Collective::kAllReduce;
  int axis = 0;          // logical mesh axis the collective runs over
  int dim = -1;          // all-gather: the dim gathered; reduce-scatter: the dim scattered;
                         // all-to-all: the dim that becomes split (source dim in `dim2`)
  int dim2 = -1;         // all-to-all: the dim that stops being split
  double bytes = 0;      // the `bytes` argument of collective_time (see collective.h)
  double bytes_per_device = 0;  // collective_bytes_per_device: what a communicator measures
  double time_s = 0;
  bool operator==(const CollectiveStep&) const = default;
};

struct ReshardResult {
  std::vector<CollectiveStep> steps;  // in execution order
  double time_s = 0;                  // Σ steps' time
  double bytes_per_device = 0;        // Σ steps' bytes_per_device
  int64_t peak_temp_bytes = 0;        // largest local intermediate beyond source and result
  bool local_slice = false;           // the result also needs a local slice (free, no comm)
};

// `global` and `dtype` describe the tensor; `src_partial` are the axes over which each device
// holds a partial sum (a contraction split) that must be reduced. Sizes use padded local shapes.
//
// Semantics (the executor performs exactly these steps, in this order):
//
// Layout. Per tensor dim d: the mesh axes splitting it, major first (R = [], S0 = [0],
// S1 = [1], S01 = [0, 1]), and its padded size P_d; a device holds P_d / (product of those
// axes' sizes) elements of d, the block its mesh coordinates select (S01: block i0·d1 + i1).
// A replicated dim holds exactly its global size G_d; a spec's own layout has
// P_d = ceil(G_d / W) · W for W ways (ShardingSpec::local_shape). Plus the partial mask.
// An axis of size 1 is dropped everywhere: S on it equals R, a partial sum over it is already
// complete, and no step ever runs over it.
//
// Padding. A step that first splits a replicated dim (a reduce-scatter, the receiving dim of an
// all-to-all, the final slice) pads it to dst's padded size ceil(G_d / W_dst) · W_dst, so every
// later split of it divides evenly. Reduce-scatter, all-gather and all-to-all act on padded
// buffers: an all-gather of 10 rows split 4 ways gathers 4 × 3 = 12 rows; a gather that leaves
// the dim replicated then trims it back to G_d (free).
//
// Kept prefix. Per dim, the current axes that stay are the longest common prefix of the current
// and dst axis lists, provided the current P_d equals dst's; otherwise none stay (10 rows S01 on
// 2×4 are padded to 16, which S0's 10 do not line up with, so S01 → S0 gathers both axes).
// A dim can be extended by axis a when its current axes are all kept, and a is the next axis of
// dst's list for it.
//
// 1. Reductions, one per partial axis: axis 1 then axis 0, except axis 0 first when both are
//    partial and dst splits one dim over both (then both reduce-scatter). When dst splits some dim
//    d over axis a and d can be extended by a: reduce-scatter along d over a; otherwise
//    all-reduce over a. The partial axes must not split any dim of src.
// 2. All-to-alls, in rounds over axis 1 then axis 0 until none applies: axis a moves from dim ds
//    to dim dd when a is ds's minor (last) axis now, dst splits dd over a, and dd can be extended
//    by a. CollectiveStep::dim = dd (becomes split), dim2 = ds (stops being split).
// 3. All-gathers of every axis beyond a dim's kept prefix: within a dim minor first; across dims
//    axis 0 first (it usually crosses hosts, so it moves the smaller buffer).
// 4. A local slice from what is left to dst: free; sets local_slice when it splits anything.
//
// Bytes (the `bytes` argument of collective_time, from the then-current padded local buffer):
// all-reduce: the local buffer; reduce-scatter: the local buffer, padded along its dim;
// all-gather: the gathered result (before any trim); all-to-all: the local buffer, padded along
// the dim that becomes split. Each step's time_s = collective_time(kind, mesh.axis[axis], bytes)
// and bytes_per_device = collective_bytes_per_device(kind, axis size, bytes); the result's totals
// are their sums. peak_temp_bytes is the largest buffer a step outputs, the last step's output
// excluded when it is the result (no slice follows); 0 without steps.
//
// src == dst without partial axes: no steps, zero cost. Ranks of src, dst and global must agree,
// a spec must not use an axis twice, and mesh.axis[a].size must match the view (ALPA_CHECK).
ReshardResult reshard(const ShardingSpec& src, AxisMask src_partial, const ShardingSpec& dst,
                      const Shape& global, DType dtype, const MeshCosts& mesh);

// One line for explain output: "all_gather(dim0,axis1) 1.00 MiB; local_slice", "none" if empty.
std::string describe(const ReshardResult& result);

}  // namespace alpa
