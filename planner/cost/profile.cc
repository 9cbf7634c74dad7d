#include "planner/cost/profile.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "planner/common/error.h"

namespace alpa {

namespace {

using nlohmann::json;

std::string join(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

std::string indexed(const std::string& path, size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}
  [[noreturn]] void fail(const std::string& path, const std::string& what) const {
    throw UserError(source_, path, what);
  }
  void object(const json& v, const std::string& path, std::initializer_list<const char*> known) const {
    if (!v.is_object()) fail(path.empty() ? "file" : path, "must be an object");
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (std::none_of(known.begin(), known.end(), [&](const char* k) { return it.key() == k; })) {
        fail(join(path, it.key()), "is not a known key");
      }
    }
  }
  const json& field(const json& obj, const std::string& path, const std::string& key) const {
    auto it = obj.find(key);
    if (it == obj.end()) fail(join(path, key), "is missing");
    return *it;
  }
  std::string string(const json& obj, const std::string& path, const std::string& key) const {
    const json& v = field(obj, path, key);
    if (!v.is_string()) fail(join(path, key), "must be a string");
    return v.get<std::string>();
  }
  const json& array(const json& obj, const std::string& path, const std::string& key) const {
    const json& v = field(obj, path, key);
    if (!v.is_array()) fail(join(path, key), "must be an array");
    return v;
  }

 private:
  std::string source_;
};

OpKind parse_op(const Reader& r, const std::string& path, const std::string& name) {
  if (auto kind = op_kind_from_onnx(name)) return *kind;
  for (int i = 0; i < kNumOpKinds; ++i) {
    const auto kind = static_cast<OpKind>(i);
    if (is_internal(kind) && op_name(kind) == name) return kind;
  }
  r.fail(path, "unknown op '" + name + "' (expected an ONNX op type the planner supports or an alpa.* internal op)");
}

DType parse_dtype(const Reader& r, const std::string& path, const std::string& name) {
  for (DType d : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    if (dtype_name(d) == name) return d;
  }
  r.fail(path, "unknown dtype '" + name + "' (expected float32, float16 or bfloat16)");
}

Collective parse_collective(const Reader& r, const std::string& path, const std::string& name) {
  for (Collective c : {Collective::kAllReduce, Collective::kAllGather, Collective::kReduceScatter,
                       Collective::kAllToAll}) {
    if (collective_name(c) == name) return c;
  }
  r.fail(path, "unknown collective '" + name + "' (expected all_reduce, all_gather, reduce_scatter or all_to_all)");
}

// `x_name` is "size" (kernel_size) or "bytes", for the messages.
std::vector<ProfilePoint> parse_points(const Reader& r, const json& table, const std::string& path,
                                       const std::string& x_name) {
  const std::string where = join(path, "points");
  const json& arr = r.array(table, path, "points");
  if (arr.empty()) r.fail(where, "must hold at least one [" + x_name + ", seconds] point");
  std::vector<ProfilePoint> points;
  for (size_t i = 0; i < arr.size(); ++i) {
    const std::string at = indexed(where, i);
    const json& p = arr[i];
    if (!p.is_array() || p.size() != 2 || !p[0].is_number() || !p[1].is_number()) {
      r.fail(at, "must be a [" + x_name + ", seconds] pair of numbers");
    }
    const ProfilePoint point{p[0].get<double>(), p[1].get<double>()};
    if (!(point.x > 0) || !std::isfinite(point.x)) r.fail(at, x_name + " must be positive");
    if (!(point.seconds > 0) || !std::isfinite(point.seconds)) r.fail(at, "seconds must be positive");
    if (!points.empty() && !(point.x > points.back().x)) {
      r.fail(at, x_name + " must be strictly increasing (the previous point has " +
                     json(points.back().x).dump() + ")");
    }
    points.push_back(point);
  }
  return points;
}

KernelTable parse_kernel(const Reader& r, const json& k, const std::string& path) {
  r.object(k, path, {"op", "dtype", "points"});
  KernelTable t;
  t.op = parse_op(r, join(path, "op"), r.string(k, path, "op"));
  t.dtype = parse_dtype(r, join(path, "dtype"), r.string(k, path, "dtype"));
  t.points = parse_points(r, k, path, "size");
  return t;
}

CollectiveTable parse_collective_table(const Reader& r, const json& c, const std::string& path) {
  r.object(c, path, {"kind", "group_size", "crosses_hosts", "points"});
  CollectiveTable t;
  t.kind = parse_collective(r, join(path, "kind"), r.string(c, path, "kind"));
  const json& n = r.field(c, path, "group_size");
  if (!n.is_number_integer()) r.fail(join(path, "group_size"), "must be an integer");
  // Read as double first: an unsigned value above INT64_MAX must not wrap to a small one.
  if (n.get<double>() < 2) r.fail(join(path, "group_size"), "must be at least 2");
  if (n.get<double>() > 1e9) r.fail(join(path, "group_size"), "is too large");
  t.group_size = n.get<int64_t>();
  const json& h = r.field(c, path, "crosses_hosts");
  if (!h.is_boolean()) r.fail(join(path, "crosses_hosts"), "must be true or false");
  t.crosses_hosts = h.get<bool>();
  t.points = parse_points(r, c, path, "bytes");
  return t;
}

// Piecewise-linear through the points; see profile.h for the ends.
double interpolate(const std::vector<ProfilePoint>& pts, double x) {
  if (!(x > 0)) return 0;
  const ProfilePoint& first = pts.front();
  if (x <= first.x || pts.size() == 1) return first.seconds * (x / first.x);
  for (size_t i = 1; i < pts.size(); ++i) {
    if (x <= pts[i].x) {
      const ProfilePoint &a = pts[i - 1], &b = pts[i];
      return a.seconds + (b.seconds - a.seconds) * (x - a.x) / (b.x - a.x);
    }
  }
  const ProfilePoint &a = pts[pts.size() - 2], &b = pts.back();
  const double slope = std::max(0.0, (b.seconds - a.seconds) / (b.x - a.x));
  return b.seconds + slope * (x - b.x);
}

}  // namespace

Profile parse_profile(const std::string& text, const std::string& source) {
  const Reader r(source);
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {  // parse_error (line/column) and number overflow
    r.fail("file", std::string("is not valid JSON: ") + e.what());
  }
  r.object(root, "", {"format", "cluster", "device_kind", "measured", "kernels", "collectives"});
  if (r.string(root, "", "format") != "alpa-profile/1") r.fail("format", "must be \"alpa-profile/1\"");
  Profile p;
  p.cluster = r.string(root, "", "cluster");
  p.device_kind = r.string(root, "", "device_kind");
  if (root.contains("measured")) {
    const json& m = root["measured"];
    if (!m.is_object()) r.fail("measured", "must be an object of strings");
    for (auto it = m.begin(); it != m.end(); ++it) {
      if (!it->is_string()) r.fail("measured." + it.key(), "must be a string");
      p.measured[it.key()] = it->get<std::string>();
    }
  }
  const json& kernels = r.array(root, "", "kernels");
  for (size_t i = 0; i < kernels.size(); ++i) {
    const std::string path = indexed("kernels", i);
    KernelTable t = parse_kernel(r, kernels[i], path);
    for (const KernelTable& prev : p.kernels) {
      if (prev.op == t.op && prev.dtype == t.dtype) {
        r.fail(path, "repeats the table for " + std::string(op_name(t.op)) + " " + std::string(dtype_name(t.dtype)));
      }
    }
    p.kernels.push_back(std::move(t));
  }
  const json& collectives = r.array(root, "", "collectives");
  for (size_t i = 0; i < collectives.size(); ++i) {
    const std::string path = indexed("collectives", i);
    CollectiveTable t = parse_collective_table(r, collectives[i], path);
    for (const CollectiveTable& prev : p.collectives) {
      if (prev.kind == t.kind && prev.group_size == t.group_size && prev.crosses_hosts == t.crosses_hosts) {
        r.fail(path, "repeats the table for " + std::string(collective_name(t.kind)) + " over " +
                         std::to_string(t.group_size) + (t.crosses_hosts ? " devices across hosts" : " devices in a host"));
      }
    }
    p.collectives.push_back(std::move(t));
  }
  return p;
}

Profile load_profile_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw UserError(path, "file", "cannot be opened (expected a profile.json)");
  std::stringstream text;
  text << in.rdbuf();
  return parse_profile(text.str(), path);
}

double kernel_size(const OpCount& count) {
  return count.flops > 0 ? count.flops : count.bytes_read + count.bytes_written;
}

DType kernel_dtype(const Graph& g, const Node& n) {
  DType dt = DType::kFloat32;
  if (!n.outputs.empty()) dt = g.tensor(n.outputs[0]).dtype;
  if (!is_floating(dt) && !n.inputs.empty()) dt = g.tensor(n.inputs[0]).dtype;
  return is_floating(dt) ? dt : DType::kFloat32;
}

std::string profile_to_json(const Profile& p) {
  auto points = [](const std::vector<ProfilePoint>& pts) {
    std::string out = "[";
    for (size_t i = 0; i < pts.size(); ++i) {
      out += (i ? ", [" : "[") + json(pts[i].x).dump() + ", " + json(pts[i].seconds).dump() + "]";
    }
    return out + "]";
  };
  std::string out = "{\n  \"format\": \"alpa-profile/1\",\n  \"cluster\": " + json(p.cluster).dump() +
                    ",\n  \"device_kind\": " + json(p.device_kind).dump() + ",\n";
  if (!p.measured.empty()) out += "  \"measured\": " + json(p.measured).dump() + ",\n";
  out += "  \"kernels\": [";
  for (size_t i = 0; i < p.kernels.size(); ++i) {
    const KernelTable& t = p.kernels[i];
    out += std::string(i ? "," : "") + "\n    {\"op\": " + json(std::string(op_name(t.op))).dump() + ", \"dtype\": " +
           json(std::string(dtype_name(t.dtype))).dump() + ", \"points\": " + points(t.points) + "}";
  }
  out += std::string(p.kernels.empty() ? "" : "\n  ") + "],\n  \"collectives\": [";
  for (size_t i = 0; i < p.collectives.size(); ++i) {
    const CollectiveTable& t = p.collectives[i];
    out += std::string(i ? "," : "") + "\n    {\"kind\": " + json(std::string(collective_name(t.kind))).dump() +
           ", \"group_size\": " + std::to_string(t.group_size) + ", \"crosses_hosts\": " + (t.crosses_hosts ? "true" : "false") +
           ", \"points\": " + points(t.points) + "}";
  }
  out += std::string(p.collectives.empty() ? "" : "\n  ") + "]\n}\n";
  return out;
}

std::optional<double> kernel_time(const Profile& profile, OpKind op, DType dtype, double size) {
  for (const KernelTable& t : profile.kernels) {
    if (t.op == op && t.dtype == dtype) return interpolate(t.points, size);
  }
  return std::nullopt;
}

std::optional<double> collective_time(const Profile& profile, Collective kind, int64_t group_size,
                                      bool crosses_hosts, double bytes) {
  for (const CollectiveTable& t : profile.collectives) {
    if (t.kind == kind && t.group_size == group_size && t.crosses_hosts == crosses_hosts) {
      return interpolate(t.points, bytes);
    }
  }
  return std::nullopt;
}

}  // namespace alpa
