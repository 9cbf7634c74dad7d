#include "planner/cost/collective.h"

#include "planner/cost/profile.h"

namespace alpa {

std::string_view collective_name(Collective c) {
  switch (c) {
    case Collective::kAllReduce: return "all_reduce";
    case Collective::kAllGather: return "all_gather";
    case Collective::kReduceScatter: return "reduce_scatter";
    case Collective::kAllToAll: return "all_to_all";
  }
  return "unknown";
}

double collective_bytes_per_device(Collective c, int64_t axis_size, double bytes) {
  if (axis_size <= 1) return 0;
  const double n = static_cast<double>(axis_size);
  switch (c) {
    case Collective::kAllReduce: return 2 * (n - 1) / n * bytes;  // reduce-scatter + all-gather
    case Collective::kAllGather: return (n - 1) / n * bytes;
    case Collective::kReduceScatter: return (n - 1) / n * bytes;
    case Collective::kAllToAll: return (n - 1) / n * bytes;       // keeps its own block
  }
  return 0;
}

double collective_time(Collective c, const AxisCost& axis, double bytes) {
  if (axis.size <= 1) return 0;
  if (axis.profile) {
    if (auto t = collective_time(*axis.profile, c, axis.size, axis.crosses_hosts, bytes)) return *t;
  }
  const double n = static_cast<double>(axis.size);
  switch (c) {
    case Collective::kAllReduce:
      return axis.alpha_s + axis.beta_s_per_byte * 2 * (n - 1) / n * bytes;
    case Collective::kAllGather:
    case Collective::kReduceScatter:
      return axis.alpha_s + axis.beta_s_per_byte * (n - 1) / n * bytes;
    case Collective::kAllToAll:  // the paper's fit on V100 clusters, whose B is the tensor
      // across the whole group, n times the local buffer passed here
      return axis.alpha_s + axis.beta_s_per_byte * (n - 1) / (n * n) * (n * bytes) * (n / 2);
  }
  return 0;
}

}  // namespace alpa
