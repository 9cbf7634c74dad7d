// α-β time of a collective over one logical mesh axis (the paper's formulas, with α and β from
// the links the axis crosses; see planner/cluster/mesh.h). `bytes` is the full tensor: the
// gathered result of an all-gather, the reduced tensor of an all-reduce or reduce-scatter, the
// local buffer of an all-to-all.
#pragma once

#include <string_view>

#include "planner/cluster/mesh.h"

namespace alpa {

enum class Collective { kAllReduce, kAllGather, kReduceScatter, kAllToAll };
std::string_view collective_name(Collective c);

// Seconds; 0 on an axis of size 1.
double collective_time(Collective c, const AxisCost& axis, double bytes);
// Bytes each device sends for the collective under a ring (all-to-all: direct) algorithm:
// what a communicator measures and the plan must predict exactly.
double collective_bytes_per_device(Collective c, int64_t axis_size, double bytes);

}  // namespace alpa
