// Cluster descriptions (cluster.json, schemas/cluster.schema.json): hosts × devices, device
// speeds and memory, and the links inside and between hosts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "planner/graph/dtype.h"

namespace alpa {

struct LinkSpec {
  double bandwidth_bytes_per_s = 0;
  double latency_s = 0;
  bool operator==(const LinkSpec&) const = default;
};

struct DeviceSpec {
  std::string kind;
  int64_t memory_bytes = 0;
  int64_t reserved_bytes = 0;  // runtime context, workspaces: not available to tensors
  double peak_flops_fp32 = 0, peak_flops_fp16 = 0, peak_flops_bf16 = 0;
  double memory_bandwidth_bytes_per_s = 0;
  bool operator==(const DeviceSpec&) const = default;

  double peak_flops(DType dtype) const;  // 0 when the device has no such unit
  int64_t usable_memory_bytes() const { return memory_bytes - reserved_bytes; }
};

// Fractions of peak the cost model assumes without a measured profile.
struct AchievableFractions {
  double matmul = 0.7;
  double memory_bandwidth = 0.8;
  double collective = 0.8;
  bool operator==(const AchievableFractions&) const = default;
};

struct Cluster {
  std::string name;
  int64_t hosts = 1;
  int64_t devices_per_host = 1;
  DeviceSpec device;
  LinkSpec intra_host;  // per device, per direction
  LinkSpec inter_host;  // per host, shared by its devices
  AchievableFractions achievable;
  bool operator==(const Cluster&) const = default;

  int64_t num_devices() const { return hosts * devices_per_host; }
};

// Parses and validates cluster JSON; `source` names the file in errors (UserError naming the
// file and the key, exit code 2 in the apps).
Cluster parse_cluster(const std::string& json_text, const std::string& source);
// "builtin:NAME:HOSTS", "local:N" (N CPU ranks on this machine) or a path to cluster.json.
Cluster load_cluster(const std::string& spec);
std::vector<std::string> builtin_cluster_names();

// The largest clusters this version plans for (a cluster file or builtin:NAME:HOSTS beyond them
// is refused): 1024 hosts of up to 1024 devices — 8,192 GPUs at 8 per host, beyond the largest
// published runs (Megatron-LM's 3,072 GPUs); the search's time grows with the hosts (a 2-layer
// GPT on 4096 p3.16xlarge hosts took 9 minutes).
inline constexpr int64_t kMaxHosts = 1024;
inline constexpr int64_t kMaxDevicesPerHost = 1024;
// Canonical JSON (fixed key order, shortest round-trip numbers), parseable by parse_cluster.
std::string cluster_to_json(const Cluster& cluster);

}  // namespace alpa
