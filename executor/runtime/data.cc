#include "executor/runtime/data.h"

#include <cstring>
#include <filesystem>

#include "planner/common/error.h"
#include "planner/common/format.h"
#include "planner/common/rng.h"
#include "planner/graph/shape_inference.h"

namespace alpa::exec {
namespace {

class DirectoryData : public DataSource {
 public:
  DirectoryData(const std::string& dir, const Graph& graph) : graph_(graph) {
    for (TensorId id : graph.inputs) {
      const Tensor& in = graph.tensor(id);
      const std::string path = (std::filesystem::path(dir) / (in.name + ".npy")).string();
      if (!std::filesystem::exists(path)) {
        throw UserError(path, "input '" + in.name + "'", "data file is missing");
      }
      NpyArray a = read_npy(path);
      if (a.dtype != in.dtype) {
        throw UserError(path, "dtype", std::string(dtype_name(a.dtype)) + " but input '" + in.name +
                                           "' is " + std::string(dtype_name(in.dtype)));
      }
      if (a.shape.size() != in.shape.size() || in.shape.empty()) {
        throw UserError(path, "shape", format_dims(a.shape) + " must have " + std::to_string(in.shape.size()) +
                                           " dims (samples, then " + format_dims(Shape(in.shape.begin() + (in.shape.empty() ? 0 : 1), in.shape.end())) + ")");
      }
      if (!std::equal(a.shape.begin() + 1, a.shape.end(), in.shape.begin() + 1)) {
        throw UserError(path, "shape", format_dims(a.shape) + " does not match input '" + in.name +
                                           "' " + format_dims(in.shape) + " beyond the sample dim");
      }
      if (a.shape[0] == 0) throw UserError(path, "shape", "holds no samples");
      arrays_.push_back(std::move(a));
    }
  }

  std::vector<std::vector<uint8_t>> batch(int64_t step) override {
    std::vector<std::vector<uint8_t>> out;
    for (size_t i = 0; i < graph_.inputs.size(); ++i) {
      const Tensor& in = graph_.tensor(graph_.inputs[i]);
      const NpyArray& a = arrays_[i];
      const int64_t batch = in.shape[0], samples = a.shape[0];
      const size_t sample_bytes = a.data.size() / static_cast<size_t>(samples);
      std::vector<uint8_t> buf(static_cast<size_t>(batch) * sample_bytes);
      for (int64_t s = 0; s < batch; ++s) {
        const int64_t src = (step * batch + s) % samples;
        std::memcpy(buf.data() + s * sample_bytes, a.data.data() + src * sample_bytes, sample_bytes);
      }
      out.push_back(std::move(buf));
    }
    return out;
  }

 private:
  const Graph& graph_;
  std::vector<NpyArray> arrays_;
};

// The exclusive upper bound of valid values for an integer input, from how the model uses it.
int64_t integer_range(const Graph& g, TensorId input) {
  std::vector<TensorId> frontier = {input};
  while (!frontier.empty()) {
    const TensorId t = frontier.back();
    frontier.pop_back();
    for (NodeId c : g.tensor(t).consumers) {
      const Node& n = g.node(c);
      if (n.kind == OpKind::kGather && n.inputs.size() > 1 && n.inputs[1] == t) {
        const Shape& data = g.tensor(n.inputs[0]).shape;
        return data[normalize_axis(n.attrs.get_int("axis", 0), static_cast<int64_t>(data.size()))];
      }
      if (n.kind == OpKind::kSoftmaxCrossEntropyLoss && n.inputs[1] == t) return g.tensor(n.inputs[0]).shape[1];
      if (n.kind == OpKind::kOneHot) return n.attrs.get_int("depth");
      if (op_info(n.kind).family == OpFamily::kLayout || n.kind == OpKind::kCast) {
        frontier.insert(frontier.end(), n.outputs.begin(), n.outputs.end());
      }
    }
  }
  return 2;
}

class SyntheticData : public DataSource {
 public:
  SyntheticData(const Graph& graph, uint64_t seed) : graph_(graph), seed_(seed) {
    for (TensorId id : graph.inputs) ranges_.push_back(integer_range(graph, id));
  }
  std::vector<std::vector<uint8_t>> batch(int64_t step) override {
    std::vector<std::vector<uint8_t>> out;
    for (size_t i = 0; i < graph_.inputs.size(); ++i) {
      const Tensor& in = graph_.tensor(graph_.inputs[i]);
      std::vector<uint8_t> buf(static_cast<size_t>(in.bytes()));
      const uint64_t key = stable_key(in.name);
      for (int64_t e = 0; e < in.numel(); ++e) {
        const float u = philox_uniform(seed_, static_cast<uint64_t>(step), key, static_cast<uint64_t>(e));
        if (in.dtype == DType::kFloat32) {
          const float v = 2.0f * u - 1.0f;
          std::memcpy(buf.data() + 4 * e, &v, 4);
        } else if (in.dtype == DType::kInt64) {
          const int64_t v = std::min<int64_t>(ranges_[i] - 1, static_cast<int64_t>(u * static_cast<float>(ranges_[i])));
          std::memcpy(buf.data() + 8 * e, &v, 8);
        } else if (in.dtype == DType::kInt32) {
          const int32_t v = static_cast<int32_t>(std::min<int64_t>(ranges_[i] - 1, static_cast<int64_t>(u * static_cast<float>(ranges_[i]))));
          std::memcpy(buf.data() + 4 * e, &v, 4);
        } else if (in.dtype == DType::kBool || in.dtype == DType::kUInt8) {
          buf[e] = u < 0.5f ? 0 : 1;
        } else {
          throw UserError("--data synthetic", "input '" + in.name + "'",
                          "has dtype " + std::string(dtype_name(in.dtype)) + ", which synthetic data does not generate");
        }
      }
      out.push_back(std::move(buf));
    }
    return out;
  }

 private:
  const Graph& graph_;
  uint64_t seed_;
  std::vector<int64_t> ranges_;
};

}  // namespace

std::unique_ptr<DataSource> open_data_directory(const std::string& dir, const Graph& graph) {
  if (!std::filesystem::is_directory(dir)) throw UserError(dir, "--data", "is not a directory");
  return std::make_unique<DirectoryData>(dir, graph);
}

std::unique_ptr<DataSource> synthetic_data(const Graph& graph, uint64_t seed) {
  return std::make_unique<SyntheticData>(graph, seed);
}

}  // namespace alpa::exec

namespace alpa::exec {

// The labels input of a SoftmaxCrossEntropyLoss node and its ignore_index.
SoftmaxCrossEntropyTarget labels_of(const Graph& g, const Node& sce_node, const std::string& context);

SoftmaxCrossEntropyTarget loss_target(const Graph& g, int64_t microbatches) {
  SoftmaxCrossEntropyTarget target;
  if (microbatches <= 1) return target;
  const Tensor& loss = g.tensor(g.loss);
  const Node* sce = loss.producer == kNoId ? nullptr : &g.node(loss.producer);
  if (!sce || sce->kind != OpKind::kSoftmaxCrossEntropyLoss ||
      (sce->attrs.has("reduction") && sce->attrs.get_string("reduction") != "mean")) {
    throw UserError("--microbatches", "loss '" + loss.name + "'",
                    "gradient accumulation needs the loss to be one mean SoftmaxCrossEntropyLoss "
                    "(other mean terms would not divide by the step's global count)");
  }
  return labels_of(g, *sce, "--microbatches");
}

SoftmaxCrossEntropyTarget cross_entropy_target(const Graph& g, const std::string& context) {
  const Node* sce = nullptr;
  for (const Node& n : g.nodes()) {
    if (n.kind != OpKind::kSoftmaxCrossEntropyLoss) continue;
    if (sce || (n.attrs.has("reduction") && n.attrs.get_string("reduction") != "mean")) {
      throw UserError(context, "node '" + n.name + "'",
                      "a split batch needs exactly one SoftmaxCrossEntropyLoss, with mean reduction, whose mean can use "
                      "the step's global label count");
    }
    sce = &n;
  }
  if (!sce) {
    throw UserError(context, "loss '" + g.tensor(g.loss).name + "'",
                    "a split batch needs a mean SoftmaxCrossEntropyLoss (its mean divides by the step's global label count)");
  }
  return labels_of(g, *sce, context);
}

SoftmaxCrossEntropyTarget labels_of(const Graph& g, const Node& sce_node, const std::string& context) {
  const Node* sce = &sce_node;
  SoftmaxCrossEntropyTarget target;
  TensorId labels = sce->inputs.at(1);
  while (g.tensor(labels).producer != kNoId) {  // back through reshapes to the graph input
    const Node& n = g.node(g.tensor(labels).producer);
    if (op_info(n.kind).family != OpFamily::kLayout && n.kind != OpKind::kCast) break;
    labels = n.inputs[0];
  }
  for (size_t i = 0; i < g.inputs.size(); ++i) {
    if (g.inputs[i] != labels) continue;
    if (g.input_batch_axes[i] != 0) {
      throw UserError(context, "input '" + g.tensor(labels).name + "'", "must carry the batch in dim 0");
    }
    target.input_index = i;
    target.has_ignore_index = sce->attrs.has("ignore_index");
    target.ignore_index = sce->attrs.get_int("ignore_index", 0);
    return target;
  }
  throw UserError(context, "node '" + sce->name + "'", "its labels are not a graph input");
}

void require_batch_in_dim0(const Graph& g, const std::string& context, const std::string& why) {
  for (size_t i = 0; i < g.inputs.size(); ++i) {
    if (g.input_batch_axes[i] != 0) throw UserError(context, "input '" + g.tensor(g.inputs[i]).name + "'", why);
  }
}

double count_labels(const SoftmaxCrossEntropyTarget& target, const Graph& g,
                    const std::vector<std::vector<uint8_t>>& batch) {
  const Tensor& in = g.tensor(g.inputs[target.input_index]);
  const auto& bytes = batch[target.input_index];
  if (!target.has_ignore_index) return static_cast<double>(in.numel());
  double count = 0;
  for (int64_t i = 0; i < in.numel(); ++i) {
    int64_t v = 0;
    if (in.dtype == DType::kInt64) std::memcpy(&v, bytes.data() + 8 * i, 8);
    else {
      int32_t w = 0;
      std::memcpy(&w, bytes.data() + 4 * i, 4);
      v = w;
    }
    if (v != target.ignore_index) count += 1;
  }
  return count;
}

}  // namespace alpa::exec
