#include "executor/runtime/checkpoint.h"

#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "executor/runtime/npy.h"
#include "planner/common/error.h"
#include "planner/common/format.h"

namespace alpa::exec {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

bool checkpointed(const Tensor& t) {
  return t.role == TensorRole::kParameter || t.role == TensorRole::kBuffer || t.role == TensorRole::kOptimizerState;
}

HeldBlock whole(const Tensor& t) {
  HeldBlock b;
  for (int64_t d : t.shape) b.ranges.emplace_back(0, d);
  return b;
}

Shape extent(const std::vector<std::pair<int64_t, int64_t>>& ranges) {
  Shape s;
  for (const auto& [lo, hi] : ranges) s.push_back(hi - lo);
  return s;
}

// Copies the overlap of block `src` (holding `src_ranges` of the global tensor) into block
// `dst` (holding `dst_ranges`), both dense C-order; returns the elements copied.
int64_t copy_overlap(const uint8_t* src, const std::vector<std::pair<int64_t, int64_t>>& src_ranges, uint8_t* dst,
                     const std::vector<std::pair<int64_t, int64_t>>& dst_ranges, int64_t elem) {
  const size_t rank = src_ranges.size();
  std::vector<int64_t> lo(rank), hi(rank);
  for (size_t d = 0; d < rank; ++d) {
    lo[d] = std::max(src_ranges[d].first, dst_ranges[d].first);
    hi[d] = std::min(src_ranges[d].second, dst_ranges[d].second);
    if (lo[d] >= hi[d]) return 0;
  }
  const Shape se = extent(src_ranges), de = extent(dst_ranges);
  if (rank == 0) {
    std::memcpy(dst, src, static_cast<size_t>(elem));
    return 1;
  }
  // Rows of the last dim, visited in C order over the leading dims.
  std::vector<int64_t> idx(lo.begin(), lo.end());
  const int64_t row = hi[rank - 1] - lo[rank - 1];
  int64_t copied = 0;
  while (true) {
    int64_t so = 0, dof = 0;
    for (size_t d = 0; d < rank; ++d) {
      so = so * se[d] + (idx[d] - src_ranges[d].first);
      dof = dof * de[d] + (idx[d] - dst_ranges[d].first);
    }
    std::memcpy(dst + dof * elem, src + so * elem, static_cast<size_t>(row * elem));
    copied += row;
    size_t d = rank - 1;
    while (d-- > 0) {
      if (++idx[d] < hi[d]) break;
      idx[d] = lo[d];
    }
    if (d == static_cast<size_t>(-1)) break;
  }
  return copied;
}

// The index ranges a block's local buffer spans (its valid ranges, widened by any padding).
std::vector<std::pair<int64_t, int64_t>> buffer_ranges(const HeldBlock& b) {
  if (b.buffer.empty()) return b.ranges;
  std::vector<std::pair<int64_t, int64_t>> out;
  for (size_t d = 0; d < b.ranges.size(); ++d) out.emplace_back(b.ranges[d].first, b.ranges[d].first + b.buffer[d]);
  return out;
}

json ranges_json(const std::vector<std::pair<int64_t, int64_t>>& ranges) {
  json out = json::array();
  for (const auto& [lo, hi] : ranges) out.push_back({lo, hi});
  return out;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(path.string(), "checkpoint", "cannot be read");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw UserError(path.string(), "checkpoint", "cannot be written");
}

}  // namespace

void copy_block(const void* whole, const Shape& global, int64_t elem, const HeldBlock& block, void* dst) {
  std::vector<std::pair<int64_t, int64_t>> all;
  for (int64_t d : global) all.emplace_back(0, d);
  copy_overlap(static_cast<const uint8_t*>(whole), all, static_cast<uint8_t*>(dst), buffer_ranges(block), elem);
}

void copy_into_whole(const void* block_data, const HeldBlock& block, const Shape& global, int64_t elem, void* whole) {
  std::vector<std::pair<int64_t, int64_t>> all;
  for (int64_t d : global) all.emplace_back(0, d);
  std::vector<uint8_t> valid(static_cast<size_t>(num_elements(extent(block.ranges)) * elem));
  copy_overlap(static_cast<const uint8_t*>(block_data), buffer_ranges(block), valid.data(), block.ranges, elem);
  copy_overlap(valid.data(), block.ranges, static_cast<uint8_t*>(whole), all, elem);
}

void save_checkpoint(const std::string& dir, const Trainer& trainer, const CheckpointInfo& info, int rank,
                     const BlockOf& block, const std::function<void()>& barrier) {
  const fs::path final_dir(dir), partial(dir + ".partial"), previous(dir + ".previous");
  const Graph& g = trainer.training_graph().graph;
  std::error_code ec;
  if (rank == 0) {
    fs::remove_all(partial, ec);
    fs::create_directories(partial / "shards", ec);
    if (ec) throw UserError(dir, "--save", "cannot create " + partial.string() + ": " + ec.message());
  }
  if (barrier) barrier();
  // This rank's shards, listed in rank<r>.json.
  json part = json::array();
  for (size_t t = 0; t < g.num_tensors(); ++t) {
    const Tensor& ten = g.tensor(static_cast<TensorId>(t));
    if (!checkpointed(ten)) continue;
    const HeldBlock b = block ? block(static_cast<TensorId>(t)) : whole(ten);
    if (!b.writer) continue;
    const std::string file = "shards/r" + std::to_string(rank) + "_" + std::to_string(t) + ".npy";
    const void* data = trainer.value(static_cast<TensorId>(t));
    std::vector<uint8_t> valid;
    if (!b.buffer.empty() && b.buffer != extent(b.ranges)) {  // a padded shard: its valid rows only
      valid.resize(static_cast<size_t>(num_elements(extent(b.ranges)) * dtype_bytes(ten.dtype)));
      copy_overlap(static_cast<const uint8_t*>(data), buffer_ranges(b), valid.data(), b.ranges, dtype_bytes(ten.dtype));
      data = valid.data();
    }
    write_npy((partial / file).string(), ten.dtype, extent(b.ranges), data);
    part.push_back({{"tensor", ten.name}, {"file", file}, {"ranges", ranges_json(b.ranges)}});
  }
  write_text(partial / ("rank" + std::to_string(rank) + ".json"), part.dump());
  if (barrier) barrier();
  if (rank == 0) {
    json tensors = json::object();
    for (size_t t = 0; t < g.num_tensors(); ++t) {
      const Tensor& ten = g.tensor(static_cast<TensorId>(t));
      if (!checkpointed(ten)) continue;
      const HeldBlock b = block ? block(static_cast<TensorId>(t)) : whole(ten);
      const Shape& shape = b.global.empty() ? ten.shape : b.global;
      tensors[ten.name] = {{"dtype", std::string(dtype_name(ten.dtype))}, {"shape", shape}, {"shards", json::array()}};
    }
    for (int r = 0;; ++r) {
      const fs::path p = partial / ("rank" + std::to_string(r) + ".json");
      if (!fs::exists(p)) break;
      for (const json& s : json::parse(read_text(p))) {
        tensors[s.at("tensor").get<std::string>()]["shards"].push_back({{"file", s.at("file")}, {"ranges", s.at("ranges")}});
      }
      fs::remove(p);
    }
    json manifest = {{"format", kCheckpointFormat},     {"step", info.step},
                     {"seed", info.seed},               {"optimizer", info.optimizer},
                     {"global_batch", info.global_batch}, {"tensors", tensors}};
    write_text(partial / "manifest.json", manifest.dump(1) + "\n");
    fs::remove_all(previous, ec);
    if (fs::exists(final_dir)) fs::rename(final_dir, previous, ec);
    if (ec) throw UserError(dir, "--save", "cannot move the previous checkpoint aside: " + ec.message());
    fs::rename(partial, final_dir, ec);
    if (ec) throw UserError(dir, "--save", "cannot rename " + partial.string() + ": " + ec.message());
    fs::remove_all(previous, ec);
  }
  if (barrier) barrier();
}

namespace {

json read_manifest(const std::string& dir) {
  const fs::path path = fs::path(dir) / "manifest.json";
  if (!fs::exists(path)) throw UserError(dir, "--resume", "is not a checkpoint (no manifest.json)");
  try {
    json m = json::parse(read_text(path));
    if (m.at("format").get<std::string>() != kCheckpointFormat) {
      throw UserError(path.string(), "format", "expected \"" + std::string(kCheckpointFormat) + "\"");
    }
    return m;
  } catch (const json::exception& e) {
    throw UserError(path.string(), "manifest", e.what());
  }
}

// An integer of the manifest within [lo, hi] (a float such as -0.0, a bool, or a value beyond
// int64 is refused, naming the key).
int64_t manifest_integer(const json& v, const std::string& mpath, const std::string& key, double lo, double hi) {
  if (!v.is_number_integer() || v.get<double>() < lo || v.get<double>() > hi) {
    throw UserError(mpath, key, "must be an integer from " + std::to_string(static_cast<long long>(lo)) + " to " +
                                    std::to_string(static_cast<long long>(hi)));
  }
  return v.get<int64_t>();
}

// One shard's [lo, hi) per dim, each within the tensor's `global` shape.
std::vector<std::pair<int64_t, int64_t>> shard_ranges(const json& shard, const Shape& global, const std::string& mpath,
                                                      const std::string& where) {
  const json& ranges = shard.at("ranges");
  if (!ranges.is_array() || ranges.size() != global.size()) {
    throw UserError(mpath, where + "/ranges", "must hold one [lo, hi] pair per dim of the tensor (" + std::to_string(global.size()) + ")");
  }
  std::vector<std::pair<int64_t, int64_t>> out;
  for (size_t d = 0; d < ranges.size(); ++d) {
    const json& r = ranges[d];
    const std::string at = where + "/ranges/" + std::to_string(d);
    if (!r.is_array() || r.size() != 2) throw UserError(mpath, at, "must be a [lo, hi] pair of integers");
    const double g = static_cast<double>(global[d]);
    const int64_t lo = manifest_integer(r[0], mpath, at + "/0", 0, g), hi = manifest_integer(r[1], mpath, at + "/1", 0, g);
    if (lo > hi) throw UserError(mpath, at, "lo is above hi");
    out.emplace_back(lo, hi);
  }
  return out;
}

// A shard's file: a relative path inside the checkpoint directory (no "..", not absolute).
std::string shard_file(const json& shard, const std::string& dir, const std::string& mpath, const std::string& where) {
  const json& f = shard.at("file");
  if (!f.is_string()) throw UserError(mpath, where + "/file", "must be a file name");
  const std::string name = f.get<std::string>();
  const fs::path path(name);
  bool inside = !name.empty() && path.is_relative();
  for (const fs::path& part : path) inside = inside && part != "..";
  if (!inside) throw UserError(mpath, where + "/file", "\"" + name + "\" is not a file inside the checkpoint directory");
  return dir + "/" + name;
}

}  // namespace

CheckpointInfo read_checkpoint_info(const std::string& dir) {
  const json m = read_manifest(dir);
  CheckpointInfo info;
  const std::string mpath = dir + "/manifest.json";
  try {
    info.step = manifest_integer(m.at("step"), mpath, "step", 0, 1e15);
    const json& seed = m.at("seed");
    if (!seed.is_number_integer() || seed.get<double>() < 0) throw UserError(mpath, "seed", "must be a non-negative integer");
    info.seed = seed.get<uint64_t>();
    info.optimizer = m.at("optimizer").get<std::string>();
    info.global_batch = manifest_integer(m.at("global_batch"), mpath, "global_batch", 1, 1e12);
  } catch (const json::exception& e) {
    throw UserError(dir + "/manifest.json", "step, seed, optimizer, global_batch", e.what());
  }
  return info;
}

CheckpointInfo check_resume(const std::string& dir, int64_t steps, int64_t global_batch, const std::string& optimizer,
                            const uint64_t* seed_flag) {
  const CheckpointInfo info = read_checkpoint_info(dir);
  const std::string mpath = dir + "/manifest.json";
  if (info.global_batch != global_batch) {
    throw UserError(mpath, "global_batch", std::to_string(info.global_batch) + ", this run's is " + std::to_string(global_batch));
  }
  if (info.optimizer != optimizer) throw UserError(mpath, "optimizer", "\"" + info.optimizer + "\", this run's is \"" + optimizer + "\"");
  if (seed_flag && *seed_flag != info.seed) {
    throw UserError("--seed", std::to_string(*seed_flag), "differs from the checkpoint's seed " + std::to_string(info.seed) +
                    " (leave it out: a resumed run keeps its seed)");
  }
  if (steps <= info.step) {
    throw UserError("--steps", std::to_string(steps), "the checkpoint has " + std::to_string(info.step) +
                    " steps done; --steps is the count to reach");
  }
  return info;
}

void load_checkpoint(const std::string& dir, Trainer& trainer, const BlockOf& block) {
  const json m = read_manifest(dir);
  const std::string mpath = dir + "/manifest.json";
  const Graph& g = trainer.training_graph().graph;
  if (!m.contains("tensors") || !m["tensors"].is_object()) throw UserError(mpath, "tensors", "must be an object of tensors");
  const json& tensors = m["tensors"];
  for (size_t t = 0; t < g.num_tensors(); ++t) {
    const Tensor& ten = g.tensor(static_cast<TensorId>(t));
    if (!checkpointed(ten) || !trainer.holds(static_cast<TensorId>(t))) continue;  // another stage's
    if (!tensors.contains(ten.name)) {
      throw UserError(mpath, "/tensors/\"" + ten.name + "\"", "missing: the checkpoint is of another model or optimizer");
    }
    const json& entry = tensors.at(ten.name);
    Shape global;
    std::string dtype;
    try {
      global = entry.at("shape").get<Shape>();
      dtype = entry.at("dtype").get<std::string>();
    } catch (const json::exception& e) {
      throw UserError(mpath, "/tensors/\"" + ten.name + "\"", e.what());
    }
    if (dtype != dtype_name(ten.dtype)) {
      throw UserError(mpath, "/tensors/\"" + ten.name + "\"", "dtype " + dtype + ", the model's is " + std::string(dtype_name(ten.dtype)));
    }
    const HeldBlock b = block ? block(static_cast<TensorId>(t)) : whole(ten);
    if (global.size() != b.ranges.size() || (!b.global.empty() && global != b.global)) {
      throw UserError(mpath, "/tensors/\"" + ten.name + "\"", "shape " + format_dims(global) + " differs from the model's");
    }
    for (size_t d = 0; d < global.size(); ++d) {
      if (b.ranges[d].second > global[d]) {
        throw UserError(mpath, "/tensors/\"" + ten.name + "\"", "shape " + format_dims(global) + " differs from the model's");
      }
    }
    uint8_t* dst = static_cast<uint8_t*>(trainer.mutable_value(static_cast<TensorId>(t)));
    const int64_t elem = dtype_bytes(ten.dtype);
    int64_t filled = 0;
    const std::string where = "/tensors/\"" + ten.name + "\"/shards";
    if (!entry.contains("shards") || !entry["shards"].is_array()) throw UserError(mpath, where, "must be an array of shards");
    for (size_t k = 0; k < entry["shards"].size(); ++k) {
      const json& shard = entry["shards"][k];
      const std::string at = where + "/" + std::to_string(k);
      if (!shard.is_object() || !shard.contains("ranges") || !shard.contains("file")) {
        throw UserError(mpath, at, "must be an object with \"file\" and \"ranges\"");
      }
      const std::vector<std::pair<int64_t, int64_t>> ranges = shard_ranges(shard, global, mpath, at);
      const std::string file = shard_file(shard, dir, mpath, at);
      const NpyArray a = read_npy(file);
      if (a.dtype != ten.dtype || a.shape != extent(ranges)) throw UserError(file, ten.name, "shape or dtype differs from the manifest");
      filled += copy_overlap(a.data.data(), ranges, dst, buffer_ranges(b), elem);
    }
    if (filled < num_elements(extent(b.ranges))) {
      throw UserError(mpath, "/tensors/\"" + ten.name + "\"", "its shards do not cover the part this rank holds");
    }
  }
}

}  // namespace alpa::exec
