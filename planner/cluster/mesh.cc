#include "planner/cluster/mesh.h"

#include <set>

#include "planner/common/error.h"

namespace alpa {

std::vector<MeshShape> submesh_shapes(const Cluster& c) {
  std::vector<MeshShape> out;
  for (int64_t k = 1; k < c.devices_per_host; k *= 2) out.push_back({1, k});
  out.push_back({1, c.devices_per_host});
  for (int64_t n = 2; n <= c.hosts; ++n) out.push_back({n, c.devices_per_host});
  return out;
}

std::vector<LogicalMesh> logical_views(const MeshShape& mesh) {
  std::vector<LogicalMesh> out;
  for (int64_t d0 = 1; d0 <= mesh.size(); ++d0) {
    if (mesh.size() % d0 == 0) out.push_back({d0, mesh.size() / d0});
  }
  return out;
}

AxisCost axis_cost(const Cluster& c, const MeshShape& mesh, const LogicalMesh& view, int axis) {
  ALPA_CHECK(view.size() == mesh.size(), "logical view does not match the submesh");
  ALPA_CHECK(axis == 0 || axis == 1, "axis must be 0 or 1");
  AxisCost cost;
  cost.size = axis == 0 ? view.d0 : view.d1;
  if (cost.size == 1) return cost;
  const int64_t groups = axis == 0 ? view.d1 : view.d0;
  auto device = [&](int64_t group, int64_t k) {  // k-th member of a group along the axis
    return axis == 0 ? k * view.d1 + group : group * view.d1 + k;
  };
  std::set<int64_t> sharing;  // groups that cross hosts and have a member on host 0
  for (int64_t g = 0; g < groups; ++g) {
    std::set<int64_t> hosts;
    for (int64_t k = 0; k < cost.size; ++k) hosts.insert(device(g, k) / mesh.devices_per_host);
    if (hosts.size() > 1) {
      cost.crosses_hosts = true;
      if (hosts.count(0)) sharing.insert(g);
    }
  }
  if (cost.crosses_hosts) {
    cost.groups_sharing_nic = static_cast<int64_t>(sharing.size());
    cost.alpha_s = c.inter_host.latency_s;
    cost.beta_s_per_byte = static_cast<double>(cost.groups_sharing_nic) /
                           (c.inter_host.bandwidth_bytes_per_s * c.achievable.collective);
  } else {
    cost.alpha_s = c.intra_host.latency_s;
    cost.beta_s_per_byte = 1.0 / (c.intra_host.bandwidth_bytes_per_s * c.achievable.collective);
  }
  return cost;
}

MeshCosts mesh_costs(const Cluster& c, const MeshShape& mesh, const LogicalMesh& view) {
  MeshCosts out;
  out.view = view;
  out.axis[0] = axis_cost(c, mesh, view, 0);
  out.axis[1] = axis_cost(c, mesh, view, 1);
  return out;
}

}  // namespace alpa
