#include "planner/cluster/cluster.h"

#include <gtest/gtest.h>

#include "planner/cluster/mesh.h"
#include "planner/common/error.h"

namespace alpa {
namespace {

std::string error_of(const std::string& text) {
  try {
    parse_cluster(text, "c.json");
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Cluster, BuiltinsFromTheHardwareReference) {
  const Cluster p3 = load_cluster("builtin:p3.16xlarge:8");
  EXPECT_EQ(p3.num_devices(), 64);
  EXPECT_EQ(p3.device.memory_bytes, int64_t{16} << 30);
  EXPECT_DOUBLE_EQ(p3.device.peak_flops(DType::kFloat16), 125e12);
  EXPECT_DOUBLE_EQ(p3.device.peak_flops(DType::kFloat32), 15.7e12);
  EXPECT_DOUBLE_EQ(p3.inter_host.bandwidth_bytes_per_s, 3.125e9);  // 25 Gbit/s
  EXPECT_LT(p3.device.usable_memory_bytes(), p3.device.memory_bytes);
  EXPECT_DOUBLE_EQ(load_cluster("builtin:dgx-h100:2").device.peak_flops(DType::kBFloat16), 989e12);
  EXPECT_EQ(load_cluster("builtin:dgx-a100").hosts, 1);
  EXPECT_EQ(builtin_cluster_names(), (std::vector<std::string>{"dgx-a100", "dgx-h100", "p3.16xlarge"}));
  // Canonical JSON round-trips.
  EXPECT_EQ(parse_cluster(cluster_to_json(p3), "x"), p3);
}

TEST(Cluster, LocalRanks) {
  const Cluster local = load_cluster("local:4");
  EXPECT_EQ(local.num_devices(), 4);
  EXPECT_EQ(local.device.kind, "cpu");
  EXPECT_GT(local.device.memory_bytes, 0);
}

TEST(Cluster, BadInputNamesTheKey) {
  EXPECT_NE(error_of("{").find("c.json: file: is not valid JSON"), std::string::npos);
  const std::string good = cluster_to_json(load_cluster("builtin:p3.16xlarge:1"));
  std::string bad = good;
  bad.replace(bad.find("\"hosts\": 1"), 10, "\"hosts\": 0");
  EXPECT_EQ(error_of(bad), "c.json: hosts: must be positive");
  bad = good;
  bad.replace(bad.find("\"latency_s\""), 11, "\"latency\"");
  EXPECT_EQ(error_of(bad), "c.json: intra_host_link.latency: is not a known key");
  bad = good;
  bad.replace(bad.find("\"matmul\": 0.7"), 13, "\"matmul\": 1.5");
  EXPECT_EQ(error_of(bad), "c.json: achievable.matmul: is a fraction of peak and must be <= 1");
  EXPECT_THROW(load_cluster("builtin:tpu-v4:2"), UserError);
  EXPECT_THROW(load_cluster("builtin:p3.16xlarge:x"), UserError);
  EXPECT_THROW(load_cluster("local:0"), UserError);
  EXPECT_THROW(load_cluster("/nonexistent/cluster.json"), UserError);
}

// Inputs that once crashed the reader (issue 20): a non-object section, a number beyond double,
// integers beyond int64 and clusters too large to plan; each is exit 2 naming the file and key.
TEST(Cluster, OutOfRangeInputNamesTheKey) {
  const std::string good = cluster_to_json(load_cluster("builtin:p3.16xlarge:1"));
  auto with = [&](const std::string& from, const std::string& to) {
    std::string bad = good;
    const size_t at = bad.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return bad.replace(at, from.size(), to);
  };
  const size_t ach = good.find("\"achievable\"");
  ASSERT_NE(ach, std::string::npos);
  std::string no_object = good.substr(0, ach) + "\"achievable\": false\n}\n";
  EXPECT_EQ(error_of(no_object), "c.json: achievable: must be an object");
  EXPECT_NE(error_of(with("\"hosts\": 1", "\"hosts\": 1e999")).find("c.json: file: is not valid JSON"), std::string::npos);
  EXPECT_EQ(error_of(with("\"hosts\": 1", "\"hosts\": 18446744073709551615")), "c.json: hosts: is too large");
  EXPECT_EQ(error_of(with("\"hosts\": 1", "\"hosts\": 1099511627776")), "c.json: hosts: is more than this version plans for (1024)");
  EXPECT_EQ(error_of(with("\"devices_per_host\": 8", "\"devices_per_host\": 1099511627776")),
            "c.json: devices_per_host: is more than this version plans for (1024)");
  EXPECT_EQ(load_cluster("builtin:p3.16xlarge:1024").num_devices(), 1024 * 8);
  EXPECT_THROW(load_cluster("builtin:p3.16xlarge:1025"), UserError);
}

TEST(Mesh, SubmeshShapesAndLogicalViews) {
  const Cluster p3 = load_cluster("builtin:p3.16xlarge:8");
  const auto shapes = submesh_shapes(p3);
  ASSERT_EQ(shapes.size(), 11u);  // (1,1) (1,2) (1,4) (1,8) (2,8) ... (8,8)
  EXPECT_EQ(shapes[3], (MeshShape{1, 8}));
  EXPECT_EQ(shapes.back(), (MeshShape{8, 8}));
  const auto views = logical_views({2, 8});
  ASSERT_EQ(views.size(), 5u);
  EXPECT_EQ(views[1], (LogicalMesh{2, 8}));
}

// On 2 hosts × 8 V100s viewed 2 × 8, axis 0 crosses the 25 Gbit/s link and its 8 groups share
// each host's NIC; axis 1 stays on NVLink.
TEST(Mesh, AxisCostsFollowTheLinksCrossed) {
  const Cluster p3 = load_cluster("builtin:p3.16xlarge:2");
  const MeshShape mesh{2, 8};
  const AxisCost a0 = axis_cost(p3, mesh, {2, 8}, 0);
  const AxisCost a1 = axis_cost(p3, mesh, {2, 8}, 1);
  EXPECT_TRUE(a0.crosses_hosts);
  EXPECT_EQ(a0.groups_sharing_nic, 8);
  EXPECT_DOUBLE_EQ(a0.alpha_s, 20e-6);
  EXPECT_DOUBLE_EQ(a0.beta_s_per_byte, 8 / (3.125e9 * 0.8));
  EXPECT_FALSE(a1.crosses_hosts);
  EXPECT_DOUBLE_EQ(a1.beta_s_per_byte, 1 / (150e9 * 0.8));
  // 16 × 1: the single 16-device axis crosses hosts with one group.
  const AxisCost flat = axis_cost(p3, mesh, {16, 1}, 0);
  EXPECT_TRUE(flat.crosses_hosts);
  EXPECT_EQ(flat.groups_sharing_nic, 1);
  EXPECT_EQ(axis_cost(p3, mesh, {16, 1}, 1).size, 1);
  // One host, 1 × 8: NVLink only.
  EXPECT_FALSE(axis_cost(p3, {1, 8}, {1, 8}, 1).crosses_hosts);
}

}  // namespace
}  // namespace alpa
