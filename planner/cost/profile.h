// Performance profiles (profile.json, schemas/profile.schema.json): measured kernel and
// collective times on one cluster, as tables of (size, seconds) points. Lookups interpolate
// between points; without a matching table they return nullopt and the cost model keeps the
// cluster's datasheet figures.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "planner/cost/collective.h"
#include "planner/graph/dtype.h"
#include "planner/graph/op_cost.h"
#include "planner/graph/op_kind.h"

namespace alpa {

struct ProfilePoint {
  double x = 0;        // kernel_size (kernels) or bytes (collectives); > 0, strictly increasing
  double seconds = 0;  // > 0
  bool operator==(const ProfilePoint&) const = default;
};

struct KernelTable {
  OpKind op = OpKind::kMatMul;
  DType dtype = DType::kFloat32;  // float32, float16 or bfloat16
  std::vector<ProfilePoint> points;  // [flops, seconds]
  bool operator==(const KernelTable&) const = default;
};

struct CollectiveTable {
  Collective kind = Collective::kAllReduce;
  int64_t group_size = 2;
  bool crosses_hosts = false;
  std::vector<ProfilePoint> points;  // [bytes, seconds]; bytes as in collective.h
  bool operator==(const CollectiveTable&) const = default;
};

// At most one table per (op, dtype) and per (kind, group_size, crosses_hosts).
struct Profile {
  std::string cluster;      // the cluster the measurements were taken on
  std::string device_kind;  // as the cluster's device.kind
  std::vector<KernelTable> kernels;
  std::vector<CollectiveTable> collectives;
  // How it was measured (alpa-plan profile: date, ranks, BLAS threads, models), as text.
  std::map<std::string, std::string> measured;
  bool operator==(const Profile&) const = default;
};

// A kernel's size in its table: its FLOPs, or the bytes it reads and writes where it counts
// none (a copy, a gather, a transpose). What profiles record and the cost model looks up.
double kernel_size(const OpCount& count);
// The element type a node's kernel is tabled and looked up under: its first output's, else its
// first input's, when floating; float32 otherwise (profiles hold floating types only).
DType kernel_dtype(const Graph& graph, const Node& node);

// Canonical JSON (schemas/profile.schema.json): what parse_profile reads back equal.
std::string profile_to_json(const Profile& profile);

// Parses and validates profile JSON; `source` names the file in errors (UserError
// "<source>: <json path>: <what>", exit code 2 in the apps).
Profile parse_profile(const std::string& json_text, const std::string& source);
Profile load_profile_file(const std::string& path);

// Seconds for a kernel of `flops` / a collective over the full tensor of `bytes`; nullopt when
// the profile holds no table for it. Between points: linear interpolation; below the first
// point: proportional (through the origin); beyond the last: the line through the last two
// points, never below the last measured time (one-point tables scale proportionally).
std::optional<double> kernel_time(const Profile& profile, OpKind op, DType dtype, double size);
std::optional<double> collective_time(const Profile& profile, Collective kind, int64_t group_size,
                                      bool crosses_hosts, double bytes);

}  // namespace alpa
