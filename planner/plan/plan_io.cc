// Plan file I/O. The writer is hand-written so the layout is fixed (keys in a fixed order, one
// strategy or tensor per line, shortest round-trip numbers); the reader checks the structure and
// reports every problem as UserError "<file>: <json path>: <what>".
//
// Paths in messages are JSON-pointer-like, with user-chosen names quoted because they contain
// slashes: /estimate/memory/peak_bytes, /device_ids/3, /strategies/"/h.0/attn/MatMul".
#include "planner/plan/plan.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <initializer_list>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>

#include "planner/common/error.h"

namespace alpa {
namespace {

// ---------------------------------------------------------------------------------------------
// Writing

// Well-formed UTF-8 as RFC 3629 defines it (what JSON readers, nlohmann included, accept back).
bool is_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t tail = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // range of the first continuation byte
    if (c >= 0xC2 && c <= 0xDF) {
      tail = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      tail = 2;
      if (c == 0xE0) lo = 0xA0;  // no overlong forms
      if (c == 0xED) hi = 0x9F;  // no surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      tail = 3;
      if (c == 0xF0) lo = 0x90;  // no overlong forms
      if (c == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
    } else {
      return false;
    }
    if (i + tail >= s.size()) return false;  // truncated sequence
    for (size_t k = 1; k <= tail; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) return false;
    }
    i += tail + 1;
  }
  return true;
}

// A JSON string literal: quote and backslash escaped, control characters as \u00xx.
std::string quote(std::string_view s) {
  ALPA_CHECK(is_utf8(s), "plan string is not valid UTF-8 (" + std::to_string(s.size()) + " bytes)");
  std::string out = "\"";
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

struct Entry {
  std::string key;
  std::string value;  // JSON text, already rendered
};

// One entry per line; `indent` is the column of the closing brace.
std::string block(const std::vector<Entry>& entries, int indent) {
  if (entries.empty()) return "{}";
  const std::string pad(indent + 2, ' ');
  std::string out = "{\n";
  for (size_t i = 0; i < entries.size(); ++i) {
    out += pad + quote(entries[i].key) + ": " + entries[i].value;
    out += i + 1 < entries.size() ? ",\n" : "\n";
  }
  return out + std::string(indent, ' ') + "}";
}

std::string inline_object(const std::vector<Entry>& entries) {
  std::string out = "{";
  for (size_t i = 0; i < entries.size(); ++i)
    out += (i ? ", " : "") + quote(entries[i].key) + ": " + entries[i].value;
  return out + "}";
}

std::string int_array(const std::vector<int64_t>& values) {
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) out += (i ? ", " : "") + std::to_string(values[i]);
  return out + "]";
}

std::string integer(int64_t value) { return std::to_string(value); }
std::string boolean(bool value) { return value ? "true" : "false"; }

std::string number(const std::string& key, double value) {
  ALPA_CHECK(std::isfinite(value), "plan " + key + " is not finite (JSON has no inf or nan)");
  return format_number(value);
}

// A name -> string section in vector order, its closing brace at column `indent`; a repeated
// name is a bug in whoever built the plan.
std::string name_map(const std::string& section, const std::vector<Entry>& entries, int indent = 2) {
  std::set<std::string> seen;
  std::vector<Entry> quoted;
  quoted.reserve(entries.size());
  for (const Entry& e : entries) {
    ALPA_CHECK(seen.insert(e.key).second, "plan " + section + " lists \"" + e.key + "\" twice");
    quoted.push_back({e.key, quote(e.value)});
  }
  return block(quoted, indent);
}

std::vector<Entry> tensor_entries(const std::vector<PlanTensorSpec>& tensors) {
  std::vector<Entry> out;
  out.reserve(tensors.size());
  for (const PlanTensorSpec& t : tensors) out.push_back({t.tensor, t.spec});
  return out;
}

std::string memory_json(const PlanMemory& m, int indent) {
  return block({{"parameter_bytes", integer(m.parameter_bytes)},
                {"gradient_bytes", integer(m.gradient_bytes)},
                {"optimizer_state_bytes", integer(m.optimizer_state_bytes)},
                {"activation_bytes", integer(m.activation_bytes)},
                {"peak_bytes", integer(m.peak_bytes)}},
               indent);
}

// Bytes each device sends per step, per collective kind (std::map: sorted by kind).
std::string bytes_json(const std::string& path, const std::map<std::string, double>& bytes, int indent) {
  std::vector<Entry> comm;
  for (const auto& [kind, b] : bytes) comm.push_back({kind, number(path + "." + kind, b)});
  return block(comm, indent);
}

std::string estimate_json(const PlanEstimate& e) {
  return block({{"iteration_time_s", number("estimate.iteration_time_s", e.iteration_time_s)},
                {"throughput_samples_per_s",
                 number("estimate.throughput_samples_per_s", e.throughput_samples_per_s)},
                {"compute_time_s", number("estimate.compute_time_s", e.compute_time_s)},
                {"communication_time_s",
                 number("estimate.communication_time_s", e.communication_time_s)},
                {"communication_bytes", bytes_json("estimate.communication_bytes", e.communication_bytes, 4)},
                {"memory", memory_json(e.memory, 4)}},
               2);
}

std::string solver_json(const PlanSolverReport& s) {
  return block({{"nodes_before_merging", integer(s.nodes_before_merging)},
                {"nodes_after_merging", integer(s.nodes_after_merging)},
                {"ilps_solved", integer(s.ilps_solved)},
                {"largest_ilp_variables", integer(s.largest_ilp_variables)},
                {"largest_ilp_constraints", integer(s.largest_ilp_constraints)},
                {"proven_optimal", boolean(s.proven_optimal)}},
               2);
}

// ---------------------------------------------------------------------------------------------
// Reading

using Json = nlohmann::ordered_json;  // keeps the file's key order (strategies, tensors)

constexpr std::initializer_list<const char*> kTopKeys = {
    "format", "model", "cluster", "graph_fingerprint", "cluster_fingerprint", "global_batch",
    "microbatches", "optimizer", "precision", "method", "memory_budget_bytes", "mesh", "pipeline",
    "logical_mesh", "device_ids", "strategies", "tensors", "overrides", "estimate", "solver"};
constexpr std::initializer_list<const char*> kNameSections = {
    "strategies", "tensors", "overrides", "communication_bytes"};

bool in(std::string_view s, std::initializer_list<const char*> list) {
  for (const char* item : list)
    if (s == item) return true;
  return false;
}

std::string join(std::initializer_list<const char*> list) {
  std::string out;
  for (const char* item : list) out += (out.empty() ? "" : ", ") + std::string(item);
  return out;
}

// Syntax of a sharding spec without its rank (ShardingSpec::parse checks the rank later):
// a sequence of R | S0 | S1 | S01 using each mesh axis at most once; "" for a scalar.
bool is_spec_syntax(std::string_view s) {
  bool axis0 = false, axis1 = false;
  for (size_t i = 0; i < s.size();) {
    const std::string_view rest = s.substr(i);
    if (rest.starts_with("R")) {
      i += 1;
    } else if (rest.starts_with("S01")) {
      if (axis0 || axis1) return false;
      axis0 = axis1 = true;
      i += 3;
    } else if (rest.starts_with("S0")) {
      if (axis0) return false;
      axis0 = true;
      i += 2;
    } else if (rest.starts_with("S1")) {
      if (axis1) return false;
      axis1 = true;
      i += 2;
    } else {
      return false;
    }
  }
  return true;
}

// A value in the parsed document with its path, for messages.
class Node {
 public:
  Node(const Json& value, std::string path, const std::string& source)
      : value_(&value), path_(std::move(path)), source_(&source) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw UserError(*source_, path_.empty() ? "/" : path_, what);
  }

  // An object with no keys outside `known`.
  void expect_keys(std::initializer_list<const char*> known) const {
    if (!value_->is_object()) fail("expected an object");
    for (auto it = value_->begin(); it != value_->end(); ++it)
      if (!in(it.key(), known))
        child(it.key()).fail("unknown key (expected one of: " + join(known) + ")");
  }
  bool has(const char* key) const { return value_->is_object() && value_->contains(key); }
  // A required key of an object.
  Node operator[](const char* key) const {
    if (!value_->is_object()) fail("expected an object");
    auto it = value_->find(key);
    if (it == value_->end()) child(key).fail("is missing");
    return Node(*it, path_ + "/" + key, *source_);
  }
  // The entries of a name -> value section, in file order.
  std::vector<std::pair<std::string, Node>> entries() const {
    if (!value_->is_object()) fail("expected an object");
    std::vector<std::pair<std::string, Node>> out;
    for (auto it = value_->begin(); it != value_->end(); ++it) {
      Node entry(it.value(), path_ + "/" + quote(it.key()), *source_);
      if (it.key().empty()) entry.fail("a name must not be empty");
      out.emplace_back(it.key(), entry);
    }
    return out;
  }
  std::vector<Node> elements() const {
    if (!value_->is_array()) fail("expected an array");
    std::vector<Node> out;
    for (size_t i = 0; i < value_->size(); ++i)
      out.emplace_back((*value_)[i], path_ + "/" + std::to_string(i), *source_);
    return out;
  }

  std::string string() const {
    if (!value_->is_string()) fail("expected a string");
    return value_->get<std::string>();
  }
  std::string nonempty_string() const {
    std::string s = string();
    if (s.empty()) fail("must not be empty");
    return s;
  }
  std::string one_of(std::initializer_list<const char*> allowed) const {
    std::string s = string();
    if (!in(s, allowed)) fail("unknown value " + quote(s) + " (expected one of: " + join(allowed) + ")");
    return s;
  }
  int64_t integer(int64_t min) const {
    if (value_->is_number_unsigned() &&
        value_->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
      fail("integer too large");
    if (!value_->is_number_integer()) fail("expected an integer");
    const auto x = value_->get<int64_t>();
    if (x < min) fail("expected an integer >= " + std::to_string(min) + ", got " + std::to_string(x));
    return x;
  }
  // A finite number >= 0 (times, rates and byte counts).
  double number() const {
    if (!value_->is_number()) fail("expected a number");
    const auto x = value_->get<double>();
    if (!std::isfinite(x)) fail("number out of range");
    if (x < 0) fail("expected a number >= 0, got " + format_number(x));
    return x;
  }
  bool boolean() const {
    if (!value_->is_boolean()) fail("expected true or false");
    return value_->get<bool>();
  }

 private:
  Node child(const std::string& key) const { return Node(*value_, path_ + "/" + key, *source_); }

  const Json* value_;
  std::string path_;
  const std::string* source_;
};

// nlohmann keeps one of two equal keys silently; in a plan a node listed twice is an error.
// Fed the parser's events, this records the path of the first repeated key.
class DuplicateKeyFinder {
 public:
  void on_event(Json::parse_event_t event, const Json& parsed) {
    using E = Json::parse_event_t;
    const bool starts = event == E::object_start || event == E::array_start || event == E::value;
    if (starts && !levels_.empty() && !levels_.back().is_object) ++levels_.back().index;
    if (event == E::object_start || event == E::array_start) levels_.push_back({event == E::object_start});
    if (event == E::object_end || event == E::array_end) levels_.pop_back();
    if (event == E::key) {
      Level& top = levels_.back();
      top.key = parsed.get<std::string>();
      if (!top.keys.insert(top.key).second && first_.empty()) first_ = path();
    }
  }
  const std::string& first_duplicate() const { return first_; }

 private:
  struct Level {
    bool is_object;
    std::set<std::string> keys = {};
    std::string key = {};
    int64_t index = -1;
  };
  std::string path() const {
    std::string out, parent_key;
    for (const Level& level : levels_) {
      if (level.is_object)
        out += "/" + (in(parent_key, kNameSections) ? quote(level.key) : level.key);
      else
        out += "/" + std::to_string(level.index);
      parent_key = level.is_object ? level.key : "";
    }
    return out;
  }
  std::vector<Level> levels_;
  std::string first_;
};

// nlohmann's message without its "[json.exception.parse_error.101] " prefix.
std::string json_message(const std::string& what) {
  const size_t end = what.find("] ");
  return what.starts_with("[json.exception.") && end != std::string::npos ? what.substr(end + 2) : what;
}

Json parse_json(const std::string& text, const std::string& source) {
  DuplicateKeyFinder duplicates;
  Json j;
  try {
    j = Json::parse(text, [&duplicates](int, Json::parse_event_t event, Json& parsed) {
      duplicates.on_event(event, parsed);
      return true;
    });
  } catch (const Json::exception& e) {
    // "parse error at line 3, column 5: syntax error while ..." -> element "line 3, column 5".
    const std::string message = json_message(e.what());
    const size_t at = message.find("at line ");
    const size_t colon = message.find(": ", at);
    if (at != std::string::npos && colon != std::string::npos)
      throw UserError(source, message.substr(at + 3, colon - at - 3), "invalid JSON: " + message.substr(colon + 2));
    throw UserError(source, "/", "invalid JSON: " + message);
  }
  if (!duplicates.first_duplicate().empty())
    throw UserError(source, duplicates.first_duplicate(), "key appears twice");
  return j;
}

// a * b, or -1 when it does not fit.
int64_t product(int64_t a, int64_t b) {
  int64_t out;
  return __builtin_mul_overflow(a, b, &out) ? -1 : out;
}

void read_mesh(const Node& root, Plan& p) {
  const Node mesh = root["mesh"];
  mesh.expect_keys({"hosts", "devices_per_host"});
  p.mesh_hosts = mesh["hosts"].integer(1);
  p.mesh_devices_per_host = mesh["devices_per_host"].integer(1);

  const Node logical = root["logical_mesh"];
  const std::vector<Node> dims = logical.elements();
  if (dims.size() != 2) logical.fail("expected [d0, d1], two positive integers");
  p.logical_d0 = dims[0].integer(1);
  p.logical_d1 = dims[1].integer(1);
  const int64_t devices = product(p.logical_d0, p.logical_d1);
  const int64_t mesh_devices = product(p.mesh_hosts, p.mesh_devices_per_host);
  if (devices < 0 || devices != mesh_devices)
    logical.fail(std::to_string(p.logical_d0) + " x " + std::to_string(p.logical_d1) +
                 " does not have the mesh's " + std::to_string(p.mesh_hosts) + " x " +
                 std::to_string(p.mesh_devices_per_host) + " devices");

  const Node ids = root["device_ids"];
  std::set<int64_t> seen;
  for (const Node& id : ids.elements()) {
    p.device_ids.push_back(id.integer(0));
    if (!seen.insert(p.device_ids.back()).second)
      id.fail("device " + std::to_string(p.device_ids.back()) + " is listed twice");
  }
  if (int64_t(p.device_ids.size()) != devices)
    ids.fail("has " + std::to_string(p.device_ids.size()) + " entries, expected d0 * d1 = " +
             std::to_string(devices));
}

std::vector<PlanTensorSpec> read_tensors(const Node& section) {
  std::vector<PlanTensorSpec> out;
  for (const auto& [name, value] : section.entries()) {
    std::string spec = value.string();
    if (!is_spec_syntax(spec))
      value.fail(quote(spec) + " is not a sharding spec (R, S0, S1 or S01 per dim, each mesh axis at most once)");
    out.push_back({name, std::move(spec)});
  }
  return out;
}

PlanMemory read_memory(const Node& m) {
  m.expect_keys({"parameter_bytes", "gradient_bytes", "optimizer_state_bytes", "activation_bytes", "peak_bytes"});
  PlanMemory out;
  out.parameter_bytes = m["parameter_bytes"].integer(0);
  out.gradient_bytes = m["gradient_bytes"].integer(0);
  out.optimizer_state_bytes = m["optimizer_state_bytes"].integer(0);
  out.activation_bytes = m["activation_bytes"].integer(0);
  out.peak_bytes = m["peak_bytes"].integer(0);
  return out;
}

PlanEstimate read_estimate(const Node& node) {
  node.expect_keys({"iteration_time_s", "throughput_samples_per_s", "compute_time_s",
                    "communication_time_s", "communication_bytes", "memory"});
  PlanEstimate e;
  e.iteration_time_s = node["iteration_time_s"].number();
  e.throughput_samples_per_s = node["throughput_samples_per_s"].number();
  e.compute_time_s = node["compute_time_s"].number();
  e.communication_time_s = node["communication_time_s"].number();
  for (const auto& [kind, bytes] : node["communication_bytes"].entries())
    e.communication_bytes[kind] = bytes.number();
  e.memory = read_memory(node["memory"]);
  return e;
}

PlanPipeline read_pipeline(const Node& node, const Plan& plan) {
  node.expect_keys({"schedule", "busy_time_s", "bubble_time_s", "step_tail_s", "layers", "stages", "transfers", "shared"});
  PlanPipeline pl;
  pl.schedule = node["schedule"].one_of({"1f1b", "gpipe"});
  pl.busy_time_s = node["busy_time_s"].number();
  pl.bubble_time_s = node["bubble_time_s"].number();
  pl.step_tail_s = node["step_tail_s"].number();
  for (const Node& l : node["layers"].elements()) {
    l.expect_keys({"first", "last"});
    pl.layers.push_back({l["first"].nonempty_string(), l["last"].nonempty_string()});
  }
  if (pl.layers.empty()) node["layers"].fail("a pipeline plan needs at least one layer");
  const int64_t L = static_cast<int64_t>(pl.layers.size());
  const int64_t devices = product(plan.mesh_hosts, plan.mesh_devices_per_host);
  std::set<int64_t> used;
  int64_t next_layer = 0;
  const std::vector<Node> stages = node["stages"].elements();
  if (stages.empty()) node["stages"].fail("a pipeline plan needs at least one stage");
  for (const Node& sn : stages) {
    sn.expect_keys({"layers", "mesh", "logical_mesh", "device_ids", "method", "remat", "inflight",
                    "microbatch_time_s", "forward_time_s", "step_time_s", "communication_bytes", "memory", "strategies",
                    "tensors"});
    PlanStage st;
    const std::vector<Node> range = sn["layers"].elements();
    if (range.size() != 2) sn["layers"].fail("expected [first, end), two layer indices");
    st.first_layer = range[0].integer(0);
    st.end_layer = range[1].integer(0);
    if (st.first_layer != next_layer)
      range[0].fail("stage starts at layer " + std::to_string(st.first_layer) + "; the previous stage ends at " + std::to_string(next_layer));
    if (st.end_layer <= st.first_layer || st.end_layer > L)
      range[1].fail("end layer " + std::to_string(st.end_layer) + " must be after the first and at most " + std::to_string(L));
    next_layer = st.end_layer;
    const Node mesh = sn["mesh"];
    mesh.expect_keys({"hosts", "devices_per_host"});
    st.mesh_hosts = mesh["hosts"].integer(1);
    st.mesh_devices_per_host = mesh["devices_per_host"].integer(1);
    const std::vector<Node> dims = sn["logical_mesh"].elements();
    if (dims.size() != 2) sn["logical_mesh"].fail("expected [d0, d1], two positive integers");
    st.logical_d0 = dims[0].integer(1);
    st.logical_d1 = dims[1].integer(1);
    const int64_t size = product(st.mesh_hosts, st.mesh_devices_per_host);
    if (size < 0 || product(st.logical_d0, st.logical_d1) != size)
      sn["logical_mesh"].fail(std::to_string(st.logical_d0) + " x " + std::to_string(st.logical_d1) + " does not have the stage mesh's devices");
    for (const Node& id : sn["device_ids"].elements()) {
      st.device_ids.push_back(id.integer(0));
      if (devices > 0 && st.device_ids.back() >= devices)
        id.fail("device " + std::to_string(st.device_ids.back()) + " is not in the cluster's " + std::to_string(devices));
      if (!used.insert(st.device_ids.back()).second)
        id.fail("device " + std::to_string(st.device_ids.back()) + " is used by two stages");
    }
    if (static_cast<int64_t>(st.device_ids.size()) != size)
      sn["device_ids"].fail("has " + std::to_string(st.device_ids.size()) + " entries, expected " + std::to_string(size));
    st.method = sn["method"].one_of({"shard", "data", "zero2", "zero3", "megatron"});
    st.remat = sn["remat"].boolean();
    st.inflight = sn["inflight"].integer(1);
    st.microbatch_time_s = sn["microbatch_time_s"].number();
    if (sn.has("forward_time_s")) {
      st.forward_time_s = sn["forward_time_s"].number();
      if (st.forward_time_s > st.microbatch_time_s) sn["forward_time_s"].fail("exceeds the stage's microbatch_time_s");
    }
    st.step_time_s = sn["step_time_s"].number();
    if (sn.has("communication_bytes")) {  // older plans: unknown
      for (const auto& [kind, bytes] : sn["communication_bytes"].entries()) st.communication_bytes[kind] = bytes.number();
    }
    st.memory = read_memory(sn["memory"]);
    for (const auto& [n, strategy] : sn["strategies"].entries()) st.strategies.push_back({n, strategy.nonempty_string()});
    st.tensors = read_tensors(sn["tensors"]);
    pl.stages.push_back(std::move(st));
  }
  if (next_layer != L) stages.back()["layers"].fail("the stages end at layer " + std::to_string(next_layer) + " of " + std::to_string(L));
  if (static_cast<int64_t>(used.size()) != devices)
    node["stages"].fail("the stages use " + std::to_string(used.size()) + " of the cluster's " + std::to_string(devices) + " devices");
  for (const Node& tn : node["transfers"].elements()) {
    tn.expect_keys({"from_stage", "to_stage", "tensor", "bytes", "time_s"});
    PlanTransfer t;
    t.from_stage = tn["from_stage"].integer(0);
    t.to_stage = tn["to_stage"].integer(0);
    if (t.from_stage >= static_cast<int64_t>(pl.stages.size()) || t.to_stage >= static_cast<int64_t>(pl.stages.size()) ||
        t.to_stage <= t.from_stage)
      tn.fail("stages " + std::to_string(t.from_stage) + " -> " + std::to_string(t.to_stage) + " are not a forward pair of this plan's stages");
    t.tensor = tn["tensor"].nonempty_string();
    t.bytes = tn["bytes"].integer(0);
    t.time_s = tn["time_s"].number();
    pl.transfers.push_back(std::move(t));
  }
  if (node.has("shared")) {
    for (const Node& sn : node["shared"].elements()) {
      sn.expect_keys({"parameter", "stages", "bytes", "time_s"});
      PlanSharedParameter sp;
      sp.parameter = sn["parameter"].nonempty_string();
      for (const Node& k : sn["stages"].elements()) {
        const int64_t s = k.integer(0);
        if (s >= static_cast<int64_t>(pl.stages.size()) || (!sp.stages.empty() && s <= sp.stages.back())) {
          k.fail("holders must be stages of this plan, ascending");
        }
        sp.stages.push_back(s);
      }
      if (sp.stages.size() < 2) sn["stages"].fail("a shared parameter has at least two holders");
      sp.bytes = sn["bytes"].integer(0);
      sp.time_s = sn["time_s"].number();
      pl.shared.push_back(std::move(sp));
    }
  }
  return pl;
}

PlanSolverReport read_solver(const Node& node) {
  node.expect_keys({"nodes_before_merging", "nodes_after_merging", "ilps_solved",
                    "largest_ilp_variables", "largest_ilp_constraints", "proven_optimal"});
  PlanSolverReport s;
  s.nodes_before_merging = node["nodes_before_merging"].integer(0);
  s.nodes_after_merging = node["nodes_after_merging"].integer(0);
  s.ilps_solved = node["ilps_solved"].integer(0);
  s.largest_ilp_variables = node["largest_ilp_variables"].integer(0);
  s.largest_ilp_constraints = node["largest_ilp_constraints"].integer(0);
  s.proven_optimal = node["proven_optimal"].boolean();
  return s;
}

}  // namespace

std::string format_number(double value) {
  ALPA_CHECK(std::isfinite(value), "format_number: JSON has no inf or nan");
  if (value == 0) return "0";  // also -0: one spelling of zero
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);  // shortest round trip
  ALPA_CHECK(ec == std::errc(), "format_number: to_chars failed");
  std::string text(buf, end);
  // to_chars writes "1e-07", "1e+300"; drop the sign '+' and leading exponent zeros.
  const size_t e = text.find('e');
  if (e != std::string::npos) {
    int exponent = 0;
    std::from_chars(text.data() + e + 1 + (text[e + 1] == '+'), text.data() + text.size(), exponent);
    text = text.substr(0, e) + "e" + std::to_string(exponent);
  }
  return text;
}

namespace {

std::string pipeline_json(const PlanPipeline& pl) {
  std::string layers = "[";
  for (size_t i = 0; i < pl.layers.size(); ++i) {
    layers += std::string(i ? "," : "") + "\n      " +
              inline_object({{"first", quote(pl.layers[i].first_node)}, {"last", quote(pl.layers[i].last_node)}});
  }
  layers += pl.layers.empty() ? "]" : "\n    ]";
  std::string stages = "[";
  for (size_t k = 0; k < pl.stages.size(); ++k) {
    const PlanStage& st = pl.stages[k];
    std::vector<Entry> strategies;
    for (const PlanNodeStrategy& s : st.strategies) strategies.push_back({s.node, s.strategy});
    const std::string path = "pipeline.stages." + std::to_string(k);
    stages += std::string(k ? "," : "") + "\n      " +
              block({{"layers", int_array({st.first_layer, st.end_layer})},
                     {"mesh", inline_object({{"hosts", integer(st.mesh_hosts)},
                                             {"devices_per_host", integer(st.mesh_devices_per_host)}})},
                     {"logical_mesh", int_array({st.logical_d0, st.logical_d1})},
                     {"device_ids", int_array(st.device_ids)},
                     {"method", quote(st.method)},
                     {"remat", boolean(st.remat)},
                     {"inflight", integer(st.inflight)},
                     {"microbatch_time_s", number(path + ".microbatch_time_s", st.microbatch_time_s)},
                     {"forward_time_s", number(path + ".forward_time_s", st.forward_time_s)},
                     {"step_time_s", number(path + ".step_time_s", st.step_time_s)},
                     {"communication_bytes", bytes_json(path + ".communication_bytes", st.communication_bytes, 8)},
                     {"memory", memory_json(st.memory, 8)},
                     {"strategies", name_map(path + ".strategies", strategies, 8)},
                     {"tensors", name_map(path + ".tensors", tensor_entries(st.tensors), 8)}},
                    6);
  }
  stages += pl.stages.empty() ? "]" : "\n    ]";
  std::string transfers = "[";
  for (size_t k = 0; k < pl.transfers.size(); ++k) {
    const PlanTransfer& t = pl.transfers[k];
    transfers += std::string(k ? "," : "") + "\n      " +
                 inline_object({{"from_stage", integer(t.from_stage)},
                                {"to_stage", integer(t.to_stage)},
                                {"tensor", quote(t.tensor)},
                                {"bytes", integer(t.bytes)},
                                {"time_s", number("pipeline.transfers.time_s", t.time_s)}});
  }
  transfers += pl.transfers.empty() ? "]" : "\n    ]";
  std::string shared = "[";
  for (size_t k = 0; k < pl.shared.size(); ++k) {
    const PlanSharedParameter& sp = pl.shared[k];
    std::string holders = "[";
    for (size_t i = 0; i < sp.stages.size(); ++i) holders += (i ? ", " : "") + integer(sp.stages[i]);
    shared += std::string(k ? "," : "") + "\n      " +
              inline_object({{"parameter", quote(sp.parameter)},
                             {"stages", holders + "]"},
                             {"bytes", integer(sp.bytes)},
                             {"time_s", number("pipeline.shared.time_s", sp.time_s)}});
  }
  shared += pl.shared.empty() ? "]" : "\n    ]";
  return block({{"schedule", quote(pl.schedule)},
                {"busy_time_s", number("pipeline.busy_time_s", pl.busy_time_s)},
                {"bubble_time_s", number("pipeline.bubble_time_s", pl.bubble_time_s)},
                {"step_tail_s", number("pipeline.step_tail_s", pl.step_tail_s)},
                {"layers", layers},
                {"stages", stages},
                {"transfers", transfers},
                {"shared", shared}},
               2);
}

}  // namespace

std::string plan_to_json(const Plan& p) {
  std::vector<Entry> strategies;
  strategies.reserve(p.strategies.size());
  for (const PlanNodeStrategy& s : p.strategies) strategies.push_back({s.node, s.strategy});
  std::vector<Entry> top = {
      {"format", quote(p.format)},
      {"model", quote(p.model)},
      {"cluster", quote(p.cluster)},
      {"graph_fingerprint", quote(p.graph_fingerprint)},
      {"cluster_fingerprint", quote(p.cluster_fingerprint)},
      {"global_batch", integer(p.global_batch)},
      {"microbatches", integer(p.microbatches)},
      {"optimizer", quote(p.optimizer)},
      {"precision", quote(p.precision)},
      {"method", quote(p.method)},
      {"memory_budget_bytes", integer(p.memory_budget_bytes)},
      {"mesh", inline_object({{"hosts", integer(p.mesh_hosts)},
                              {"devices_per_host", integer(p.mesh_devices_per_host)}})},
      {"logical_mesh", int_array({p.logical_d0, p.logical_d1})},
      {"device_ids", int_array(p.device_ids)},
      {"strategies", name_map("strategies", strategies)},
      {"tensors", name_map("tensors", tensor_entries(p.tensors))},
      {"overrides", name_map("overrides", tensor_entries(p.overrides))},
      {"estimate", estimate_json(p.estimate)},
      {"solver", solver_json(p.solver)}};
  if (p.pipeline) {  // stages carry the meshes and shardings
    std::vector<Entry> kept;
    for (Entry& e : top) {
      if (e.key == "logical_mesh" || e.key == "device_ids" || e.key == "strategies" || e.key == "tensors" ||
          e.key == "overrides") {
        continue;
      }
      if (e.key == "estimate") kept.push_back({"pipeline", pipeline_json(*p.pipeline)});
      kept.push_back(std::move(e));
    }
    top = std::move(kept);
  }
  return block(top, 0) + "\n";
}

Plan parse_plan(const std::string& json_text, const std::string& source) {
  const Json j = parse_json(json_text, source);
  const Node root(j, "", source);
  if (!j.is_object()) root.fail("expected an object");
  Plan p;
  // The format first: a newer file's other keys would only give confusing errors.
  p.format = root["format"].string();
  if (p.format != kPlanFormat)
    root["format"].fail("unsupported format " + quote(p.format) + " (expected " + kPlanFormat + ")");
  root.expect_keys(kTopKeys);
  p.model = root["model"].string();
  p.cluster = root["cluster"].string();
  p.graph_fingerprint = root["graph_fingerprint"].string();
  p.cluster_fingerprint = root["cluster_fingerprint"].string();
  p.global_batch = root["global_batch"].integer(1);
  p.microbatches = root["microbatches"].integer(1);
  p.optimizer = root["optimizer"].one_of({"sgd", "sgd-momentum", "adam", "adamw"});
  p.precision = root["precision"].one_of({"fp32", "fp16", "bf16"});
  p.method = root["method"].one_of({"shard", "data", "zero2", "zero3", "auto", "megatron", "pp-dp"});
  p.memory_budget_bytes = root["memory_budget_bytes"].integer(0);
  if (j.contains("pipeline")) {
    for (const char* key : {"logical_mesh", "device_ids", "strategies", "tensors", "overrides"}) {
      if (j.contains(key)) Node(j[key], std::string("/") + key, source).fail("belongs to a stage in a pipeline plan");
    }
    const Node mesh = root["mesh"];
    mesh.expect_keys({"hosts", "devices_per_host"});
    p.mesh_hosts = mesh["hosts"].integer(1);
    p.mesh_devices_per_host = mesh["devices_per_host"].integer(1);
    p.logical_d0 = p.logical_d1 = 0;
    p.pipeline = read_pipeline(root["pipeline"], p);
  } else {
    read_mesh(root, p);
    for (const auto& [node, strategy] : root["strategies"].entries())
      p.strategies.push_back({node, strategy.nonempty_string()});
    p.tensors = read_tensors(root["tensors"]);
    p.overrides = read_tensors(root["overrides"]);
  }
  p.estimate = read_estimate(root["estimate"]);
  p.solver = read_solver(root["solver"]);
  return p;
}

}  // namespace alpa
