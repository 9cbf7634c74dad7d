// FLOP and byte counts of one node, from shapes only (no profile). These are the counts the
// cost model later scales by device throughput; they are also what `inspect` reports.
#pragma once

#include "planner/graph/graph.h"

namespace alpa {

struct OpCount {
  double flops = 0;          // floating-point operations (a multiply-add counts as 2)
  double bytes_read = 0;     // input bytes touched
  double bytes_written = 0;  // output bytes produced
};

OpCount count_node(const Graph& graph, const Node& node);

}  // namespace alpa
