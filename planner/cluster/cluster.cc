#include "planner/cluster/cluster.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <unistd.h>

#include "planner/common/error.h"

namespace alpa {

// Generated at build time from profiles/*.json (builtin_profiles.cc).
extern const std::vector<std::pair<std::string, std::string>>& builtin_profile_texts();

namespace {

using nlohmann::json;

class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}
  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw UserError(source_, key, what);
  }
  const json& field(const json& obj, const std::string& path, const std::string& key) const {
    if (!obj.is_object()) fail(path, "must be an object");
    auto it = obj.find(key);
    if (it == obj.end()) fail(path + (path.empty() ? "" : ".") + key, "is missing");
    return *it;
  }
  double number(const json& obj, const std::string& path, const std::string& key, bool positive) const {
    const json& v = field(obj, path, key);
    const std::string name = path + (path.empty() ? "" : ".") + key;
    if (!v.is_number()) fail(name, "must be a number");
    const double d = v.get<double>();
    if (positive ? !(d > 0) : !(d >= 0)) fail(name, positive ? "must be positive" : "must not be negative");
    return d;
  }
  int64_t integer(const json& obj, const std::string& path, const std::string& key, bool positive) const {
    const json& v = field(obj, path, key);
    const std::string name = path + (path.empty() ? "" : ".") + key;
    if (!v.is_number_integer()) fail(name, "must be an integer");
    // Read as double first: an unsigned value above INT64_MAX must not wrap to a small one.
    if (v.get<double>() > 9.2e18) fail(name, "is too large");
    const int64_t i = v.get<int64_t>();
    if (positive ? i <= 0 : i < 0) fail(name, positive ? "must be positive" : "must not be negative");
    return i;
  }
  std::string string(const json& obj, const std::string& path, const std::string& key) const {
    const json& v = field(obj, path, key);
    if (!v.is_string()) fail(path + (path.empty() ? "" : ".") + key, "must be a string");
    return v.get<std::string>();
  }
  void no_unknown_keys(const json& obj, const std::string& path, std::initializer_list<const char*> known) const {
    if (!obj.is_object()) fail(path.empty() ? "file" : path, "must be an object");
    for (auto it = obj.begin(); it != obj.end(); ++it) {
      bool ok = false;
      for (const char* k : known) ok = ok || it.key() == k;
      if (!ok) fail(path + (path.empty() ? "" : ".") + it.key(), "is not a known key");
    }
  }

 private:
  std::string source_;
};

LinkSpec parse_link(const Reader& r, const json& root, const std::string& key) {
  const json& l = r.field(root, "", key);
  r.no_unknown_keys(l, key, {"bandwidth_bytes_per_s", "latency_s"});
  return {r.number(l, key, "bandwidth_bytes_per_s", true), r.number(l, key, "latency_s", false)};
}

Cluster local_cluster(int64_t ranks, const std::string& spec) {
  if (ranks <= 0 || ranks > 1024) throw UserError(spec, "--cluster", "local:N needs 1 <= N <= 1024");
  Cluster c;
  c.name = "local";
  c.hosts = 1;
  c.devices_per_host = ranks;
  c.device.kind = "cpu";
  const int64_t pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  const int64_t total = pages > 0 && page > 0 ? pages * page : (int64_t{8} << 30);
  c.device.memory_bytes = total / ranks;
  c.device.reserved_bytes = std::min<int64_t>(c.device.memory_bytes / 8, int64_t{256} << 20);
  // One core per rank, no measured profile yet: an AVX2 core's fp32 FMA peak is ~50 GFLOP/s
  // (2 FMA units × 8 lanes × 2 × ~1.5 GHz); `alpa-plan profile` will replace these figures.
  c.device.peak_flops_fp32 = 50e9;
  c.device.memory_bandwidth_bytes_per_s = 10e9;
  c.intra_host = {5e9, 5e-6};  // MPI over shared memory
  c.inter_host = {1e9, 50e-6};
  return c;
}

}  // namespace

double DeviceSpec::peak_flops(DType dtype) const {
  switch (dtype) {
    case DType::kFloat16: return peak_flops_fp16;
    case DType::kBFloat16: return peak_flops_bf16;
    default: return peak_flops_fp32;
  }
}

Cluster parse_cluster(const std::string& text, const std::string& source) {
  const Reader r(source);
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {  // parse errors and numbers beyond double (1e999)
    r.fail("file", std::string("is not valid JSON: ") + e.what());
  }
  if (!root.is_object()) r.fail("file", "must hold a JSON object");
  r.no_unknown_keys(root, "", {"format", "name", "hosts", "devices_per_host", "device",
                               "intra_host_link", "inter_host_link", "achievable"});
  if (r.string(root, "", "format") != "alpa-cluster/1") r.fail("format", "must be \"alpa-cluster/1\"");
  Cluster c;
  c.name = r.string(root, "", "name");
  c.hosts = r.integer(root, "", "hosts", true);
  if (c.hosts > kMaxHosts) r.fail("hosts", "is more than this version plans for (" + std::to_string(kMaxHosts) + ")");
  c.devices_per_host = r.integer(root, "", "devices_per_host", true);
  if (c.devices_per_host > kMaxDevicesPerHost) {
    r.fail("devices_per_host", "is more than this version plans for (" + std::to_string(kMaxDevicesPerHost) + ")");
  }
  const json& d = r.field(root, "", "device");
  r.no_unknown_keys(d, "device", {"kind", "memory_bytes", "reserved_bytes", "peak_flops", "memory_bandwidth_bytes_per_s"});
  c.device.kind = r.string(d, "device", "kind");
  c.device.memory_bytes = r.integer(d, "device", "memory_bytes", true);
  c.device.reserved_bytes = r.integer(d, "device", "reserved_bytes", false);
  if (c.device.reserved_bytes >= c.device.memory_bytes) r.fail("device.reserved_bytes", "must be below memory_bytes");
  const json& f = r.field(d, "device", "peak_flops");
  r.no_unknown_keys(f, "device.peak_flops", {"fp32", "fp16", "bf16"});
  c.device.peak_flops_fp32 = r.number(f, "device.peak_flops", "fp32", true);
  c.device.peak_flops_fp16 = r.number(f, "device.peak_flops", "fp16", false);
  c.device.peak_flops_bf16 = r.number(f, "device.peak_flops", "bf16", false);
  c.device.memory_bandwidth_bytes_per_s = r.number(d, "device", "memory_bandwidth_bytes_per_s", true);
  c.intra_host = parse_link(r, root, "intra_host_link");
  c.inter_host = parse_link(r, root, "inter_host_link");
  if (root.contains("achievable")) {
    const json& a = root["achievable"];
    r.no_unknown_keys(a, "achievable", {"matmul", "memory_bandwidth", "collective"});
    for (auto [key, slot] : {std::pair{"matmul", &c.achievable.matmul},
                             std::pair{"memory_bandwidth", &c.achievable.memory_bandwidth},
                             std::pair{"collective", &c.achievable.collective}}) {
      *slot = r.number(a, "achievable", key, true);
      if (*slot > 1) r.fail(std::string("achievable.") + key, "is a fraction of peak and must be <= 1");
    }
  }
  return c;
}

std::vector<std::string> builtin_cluster_names() {
  std::vector<std::string> names;
  for (const auto& [name, text] : builtin_profile_texts()) names.push_back(name);
  return names;
}

Cluster load_cluster(const std::string& spec) {
  if (spec.rfind("local:", 0) == 0) {
    try {
      size_t used = 0;
      const int64_t n = std::stoll(spec.substr(6), &used);
      if (used != spec.size() - 6) throw std::invalid_argument(spec);
      return local_cluster(n, spec);
    } catch (const std::logic_error&) {
      throw UserError(spec, "--cluster", "expected local:N with N ranks");
    }
  }
  if (spec.rfind("builtin:", 0) == 0) {
    const auto colon = spec.find(':', 8);
    const std::string name = spec.substr(8, colon == std::string::npos ? std::string::npos : colon - 8);
    int64_t hosts = 1;
    if (colon != std::string::npos) {
      try {
        size_t used = 0;
        hosts = std::stoll(spec.substr(colon + 1), &used);
        if (used != spec.size() - colon - 1 || hosts <= 0) throw std::invalid_argument(spec);
      } catch (const std::logic_error&) {
        throw UserError(spec, "--cluster", "expected builtin:NAME:HOSTS with HOSTS >= 1");
      }
      if (hosts > kMaxHosts) {
        throw UserError(spec, "--cluster", "more hosts than this version plans for (" + std::to_string(kMaxHosts) + ")");
      }
    }
    for (const auto& [builtin, text] : builtin_profile_texts()) {
      if (builtin != name) continue;
      Cluster c = parse_cluster(text, "profiles/" + builtin + ".json");
      c.hosts = hosts;
      return c;
    }
    std::string known;
    for (const auto& n : builtin_cluster_names()) known += (known.empty() ? "" : ", ") + n;
    throw UserError(spec, "--cluster", "unknown built-in '" + name + "' (built-ins: " + known + ")");
  }
  std::ifstream in(spec);
  if (!in) throw UserError(spec, "file", "cannot be opened (expected a cluster.json, builtin:NAME:HOSTS or local:N)");
  std::stringstream text;
  text << in.rdbuf();
  return parse_cluster(text.str(), spec);
}

std::string cluster_to_json(const Cluster& c) {
  nlohmann::ordered_json j;
  j["format"] = "alpa-cluster/1";
  j["name"] = c.name;
  j["hosts"] = c.hosts;
  j["devices_per_host"] = c.devices_per_host;
  j["device"] = {{"kind", c.device.kind},
                 {"memory_bytes", c.device.memory_bytes},
                 {"reserved_bytes", c.device.reserved_bytes},
                 {"peak_flops", {{"fp32", c.device.peak_flops_fp32}, {"fp16", c.device.peak_flops_fp16}, {"bf16", c.device.peak_flops_bf16}}},
                 {"memory_bandwidth_bytes_per_s", c.device.memory_bandwidth_bytes_per_s}};
  j["intra_host_link"] = {{"bandwidth_bytes_per_s", c.intra_host.bandwidth_bytes_per_s}, {"latency_s", c.intra_host.latency_s}};
  j["inter_host_link"] = {{"bandwidth_bytes_per_s", c.inter_host.bandwidth_bytes_per_s}, {"latency_s", c.inter_host.latency_s}};
  j["achievable"] = {{"matmul", c.achievable.matmul}, {"memory_bandwidth", c.achievable.memory_bandwidth}, {"collective", c.achievable.collective}};
  return j.dump(2) + "\n";
}

}  // namespace alpa
