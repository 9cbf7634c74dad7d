// Submeshes of a cluster, their 2-D logical views, and the α/β of each logical axis.
#pragma once

#include <cstdint>
#include <vector>

#include "planner/cluster/cluster.h"

namespace alpa {

struct Profile;  // planner/cost/profile.h

// A physical submesh: `hosts` whole or partial hosts with `devices_per_host` devices each.
// The paper's shapes: (1,1), (1,2), (1,4) ... (1,M) inside one host, and (n,M) whole hosts.
struct MeshShape {
  int64_t hosts = 1;
  int64_t devices_per_host = 1;
  int64_t size() const { return hosts * devices_per_host; }
  bool operator==(const MeshShape&) const = default;
};

// A logical 2-D view d0 × d1 of a submesh's devices, numbered host-major: logical (i0, i1) is
// device i0·d1 + i1. Axis 1 groups consecutive devices (inside a host when d1 <= M).
struct LogicalMesh {
  int64_t d0 = 1, d1 = 1;
  int64_t size() const { return d0 * d1; }
  bool operator==(const LogicalMesh&) const = default;
};

// α-β cost of one logical axis: a collective of B bytes over it costs about α + β·(factor)·B.
struct AxisCost {
  int64_t size = 1;
  bool crosses_hosts = false;
  int64_t groups_sharing_nic = 0;  // concurrent groups of this axis whose traffic leaves host 0
  double alpha_s = 0;
  double beta_s_per_byte = 0;
  // Measured collective timings; where they have a table for this axis they replace α-β.
  const Profile* profile = nullptr;
};

// A logical mesh with the α-β cost of each of its two axes: what strategies and resharding need.
struct MeshCosts {
  LogicalMesh view;
  AxisCost axis[2];
  int64_t axis_size(int a) const { return a == 0 ? view.d0 : view.d1; }
};

std::vector<MeshShape> submesh_shapes(const Cluster& cluster);
MeshCosts mesh_costs(const Cluster& cluster, const MeshShape& mesh, const LogicalMesh& view);
std::vector<LogicalMesh> logical_views(const MeshShape& mesh);  // every d0·d1 = size, d0 ascending
AxisCost axis_cost(const Cluster& cluster, const MeshShape& mesh, const LogicalMesh& view, int axis);

}  // namespace alpa
