#include "planner/onnx/import.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "planner/common/error.h"
#include "planner/common/format.h"
#include "planner/common/rng.h"
#include "planner/graph/const_eval.h"
#include "planner/graph/shape_inference.h"

namespace alpa {
namespace {

constexpr int64_t kMinOpset = 13;
constexpr int64_t kMaxOpset = 18;
constexpr int64_t kMaxFoldedElements = int64_t{1} << 27;

std::optional<DType> dtype_from_onnx(int32_t code) {
  switch (code) {
    case onnx::TensorProto::FLOAT: return DType::kFloat32;
    case onnx::TensorProto::FLOAT16: return DType::kFloat16;
    case onnx::TensorProto::BFLOAT16: return DType::kBFloat16;
    case onnx::TensorProto::DOUBLE: return DType::kFloat64;
    case onnx::TensorProto::INT64: return DType::kInt64;
    case onnx::TensorProto::INT32: return DType::kInt32;
    case onnx::TensorProto::INT8: return DType::kInt8;
    case onnx::TensorProto::UINT8: return DType::kUInt8;
    case onnx::TensorProto::BOOL: return DType::kBool;
    default: return std::nullopt;
  }
}

// Per-node normalisation and folding. One instance per import.
class Importer {
 public:
  Importer(const onnx::ModelProto& model, std::string path, const ImportOptions& options)
      : model_(model), path_(std::move(path)), options_(options) {}

  ImportedModel run();

 private:
  [[noreturn]] void fail(const std::string& element, const std::string& what) const {
    throw UserError(path_, element, what);
  }
  std::string node_label(const onnx::NodeProto& n) const {
    return "node '" + node_names_.at(&n) + "' (" + n.op_type() + ")";
  }

  void check_opset();
  void check_supported_ops();
  void name_nodes();
  void add_initializers();
  void add_graph_inputs();
  void import_node(const onnx::NodeProto& n);
  void set_loss();
  void prune_and_assign_roles();

  // Tensor construction helpers.
  TensorId new_tensor(const std::string& name, DType dtype, Shape shape, TensorRole role);
  TensorId constant_tensor(const std::string& name, const ConstArray& value);
  Tensor tensor_from_proto(const onnx::TensorProto& proto, const std::string& element);

  // Operand helpers for the node being imported.
  TensorId input(const onnx::NodeProto& n, int i) const;
  bool has_input(const onnx::NodeProto& n, int i) const {
    return i < n.input_size() && !n.input(i).empty();
  }
  ConstArray const_input(const onnx::NodeProto& n, int i, const char* what) const;
  std::vector<int64_t> const_ints(const onnx::NodeProto& n, int i, const char* what) const;
  double const_scalar(const onnx::NodeProto& n, int i, const char* what) const;
  void alias(const std::string& output, TensorId target) { values_[output] = target; }

  bool normalise(const onnx::NodeProto& n, Node& node);
  void copy_attributes(const onnx::NodeProto& n, Node& node) const;
  void resolve_auto_pad(const onnx::NodeProto& n, Node& node, const Shape& x,
                        const std::vector<int64_t>& kernel) const;
  std::string shape_hint(const Node& node) const;
  // Rejects shapes whose byte size overflows int64 (corrupt or absurd dims).
  void check_size(const Shape& shape, int64_t elem_bytes, const std::string& element) const {
    const auto n = checked_num_elements(shape);
    int64_t bytes = 0;
    if (!n || __builtin_mul_overflow(*n, elem_bytes, &bytes)) {
      fail(element, "shape " + format_dims(shape) + " is too large");
    }
  }

  const onnx::ModelProto& model_;
  std::string path_;
  const ImportOptions& options_;
  ImportedModel result_;
  Graph& graph() { return result_.graph; }
  const Graph& graph() const { return result_.graph; }

  std::map<std::string, TensorId> values_;  // ONNX value name → tensor
  std::map<const onnx::NodeProto*, std::string> node_names_;
  std::set<std::string> used_node_names_;
  std::set<TensorId> initializers_;
  std::optional<int64_t> exported_batch_;  // static batch the file was exported with
  int64_t folded_ = 0, removed_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Model-level checks

void Importer::check_opset() {
  int64_t opset = -1;
  for (const auto& entry : model_.opset_import()) {
    if (entry.domain().empty() || entry.domain() == "ai.onnx") opset = entry.version();
  }
  if (opset < 0) fail("opset_import", "the model declares no default-domain opset");
  if (opset < kMinOpset || opset > kMaxOpset) {
    fail("opset_import", "opset " + std::to_string(opset) + " is not supported (supported: " +
                             std::to_string(kMinOpset) + "-" + std::to_string(kMaxOpset) +
                             "); re-export with opset_version=17");
  }
  result_.opset = opset;
  result_.producer = model_.producer_name() +
                     (model_.producer_version().empty() ? "" : " " + model_.producer_version());
}

void Importer::check_supported_ops() {
  std::map<std::string, std::string> unsupported;  // op type → first node name
  for (const auto& n : model_.graph().node()) {
    const bool default_domain = n.domain().empty() || n.domain() == "ai.onnx";
    const std::string type = default_domain ? n.op_type() : n.domain() + "." + n.op_type();
    if (!default_domain || !op_kind_from_onnx(n.op_type())) {
      unsupported.emplace(type, node_names_.at(&n));
    }
  }
  if (unsupported.empty()) return;
  std::string list;
  for (const auto& [type, first] : unsupported) {
    list += (list.empty() ? "" : ", ") + type + " (first at node '" + first + "')";
  }
  fail("graph", std::to_string(unsupported.size()) + " unsupported operator type" +
                    (unsupported.size() > 1 ? "s: " : ": ") + list);
}

void Importer::name_nodes() {
  int index = 0;
  for (const auto& n : model_.graph().node()) {
    std::string name = n.name().empty() ? n.op_type() + "_" + std::to_string(index) : n.name();
    if (used_node_names_.count(name)) {
      int k = 1;
      while (used_node_names_.count(name + "#" + std::to_string(k))) ++k;
      name += "#" + std::to_string(k);
    }
    used_node_names_.insert(name);
    node_names_[&n] = name;
    ++index;
  }
}

// ---------------------------------------------------------------------------------------------
// Tensors

TensorId Importer::new_tensor(const std::string& name, DType dtype, Shape shape, TensorRole role) {
  Tensor t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.role = role;
  return graph().add_tensor(std::move(t));
}

TensorId Importer::constant_tensor(const std::string& name, const ConstArray& value) {
  TensorId id = new_tensor(name, value.dtype, value.shape, TensorRole::kConstant);
  graph().tensor(id).data = array_to_bytes(value);
  return id;
}

template <typename T, typename Field>
std::shared_ptr<std::vector<uint8_t>> pack_field(const Field& field, int64_t n) {
  auto bytes = std::make_shared<std::vector<uint8_t>>(n * sizeof(T));
  for (int64_t i = 0; i < n; ++i) {
    const T v = static_cast<T>(field.Get(static_cast<int>(i)));
    std::memcpy(bytes->data() + i * sizeof(T), &v, sizeof(T));
  }
  return bytes;
}

Tensor Importer::tensor_from_proto(const onnx::TensorProto& p, const std::string& element) {
  Tensor t;
  t.name = p.name();
  const auto dtype = dtype_from_onnx(p.data_type());
  if (!dtype) fail(element, "unsupported element type (ONNX code " + std::to_string(p.data_type()) + ")");
  t.dtype = *dtype;
  for (int64_t d : p.dims()) {
    if (d < 0) fail(element, "negative dim " + std::to_string(d));
    t.shape.push_back(d);
  }
  check_size(t.shape, dtype_bytes(t.dtype), element);
  const int64_t n = t.numel();
  const int64_t expected = n * dtype_bytes(t.dtype);
  std::shared_ptr<std::vector<uint8_t>> bytes;
  if (p.data_location() == onnx::TensorProto::EXTERNAL) {
    std::string location;
    int64_t offset = 0, length = -1;
    for (const auto& kv : p.external_data()) {
      if (kv.key() == "location") location = kv.value();
      else if (kv.key() == "offset") offset = std::stoll(kv.value());
      else if (kv.key() == "length") length = std::stoll(kv.value());
    }
    const auto file = std::filesystem::path(path_).parent_path() / location;
    std::ifstream in(file, std::ios::binary);
    if (in) {  // absent external data → a shape-only tensor, fine for planning
      if (length < 0) length = expected;
      if (length != expected) fail(element, "external data length " + std::to_string(length) +
                                                " does not match " + std::to_string(expected) + " bytes");
      bytes = std::make_shared<std::vector<uint8_t>>(expected);
      in.seekg(offset);
      in.read(reinterpret_cast<char*>(bytes->data()), expected);
      if (!in) fail(element, "external data file '" + file.string() + "' is too short");
    }
  } else if (!p.raw_data().empty()) {
    if (static_cast<int64_t>(p.raw_data().size()) != expected) {
      fail(element, "raw_data has " + std::to_string(p.raw_data().size()) + " bytes, expected " +
                        std::to_string(expected) + " for " + format_dims(t.shape));
    }
    bytes = std::make_shared<std::vector<uint8_t>>(p.raw_data().begin(), p.raw_data().end());
  } else {
    int64_t have = -1;
    switch (t.dtype) {
      case DType::kFloat32:
        have = p.float_data_size();
        if (have == n) bytes = pack_field<float>(p.float_data(), n);
        break;
      case DType::kFloat64:
        have = p.double_data_size();
        if (have == n) bytes = pack_field<double>(p.double_data(), n);
        break;
      case DType::kInt64:
        have = p.int64_data_size();
        if (have == n) bytes = pack_field<int64_t>(p.int64_data(), n);
        break;
      case DType::kInt32:
        have = p.int32_data_size();
        if (have == n) bytes = pack_field<int32_t>(p.int32_data(), n);
        break;
      case DType::kInt8:
        have = p.int32_data_size();
        if (have == n) bytes = pack_field<int8_t>(p.int32_data(), n);
        break;
      case DType::kUInt8: case DType::kBool:
        have = p.int32_data_size();
        if (have == n) bytes = pack_field<uint8_t>(p.int32_data(), n);
        break;
      case DType::kFloat16: case DType::kBFloat16:
        have = p.int32_data_size();
        if (have == n) bytes = pack_field<uint16_t>(p.int32_data(), n);
        break;
    }
    // No data at all (have == 0 with n > 0) is a shape-only tensor; a partial list is an error.
    if (have > 0 && have != n) {
      fail(element, "holds " + std::to_string(have) + " values but its shape " +
                        format_dims(t.shape) + " needs " + std::to_string(n));
    }
    if (n == 0) bytes = std::make_shared<std::vector<uint8_t>>();
  }
  t.data = std::move(bytes);
  return t;
}

void Importer::add_initializers() {
  for (const auto& init : model_.graph().initializer()) {
    const std::string element = "initializer '" + init.name() + "'";
    if (values_.count(init.name())) fail(element, "is defined twice");
    Tensor t = tensor_from_proto(init, element);
    // Floating initializers are parameters or buffers (decided once the loss is known); all
    // others are constants that shape computations may fold through.
    t.role = is_floating(t.dtype) ? TensorRole::kParameter : TensorRole::kConstant;
    const TensorId id = graph().add_tensor(std::move(t));
    values_[init.name()] = id;
    if (is_floating(graph().tensor(id).dtype)) initializers_.insert(id);
  }
}

void Importer::add_graph_inputs() {
  std::map<std::string, int64_t> batch_axis;
  for (const auto& bd : options_.batch_dims) batch_axis[bd.input] = bd.axis;
  std::set<std::string> seen;
  for (const auto& in : model_.graph().input()) {
    if (values_.count(in.name())) continue;  // an initializer listed as input (IR < 4)
    seen.insert(in.name());
    const std::string element = "input '" + in.name() + "'";
    if (!in.type().has_tensor_type()) fail(element, "is not a tensor");
    const auto& tt = in.type().tensor_type();
    const auto dtype = dtype_from_onnx(tt.elem_type());
    if (!dtype) fail(element, "has an unsupported element type (ONNX code " + std::to_string(tt.elem_type()) + ")");
    if (!tt.has_shape()) fail(element, "has no shape; export with static shapes");
    const int rank = tt.shape().dim_size();
    const int64_t axis = batch_axis.count(in.name()) ? batch_axis[in.name()] : 0;
    if (rank > 0 && (axis < 0 || axis >= rank)) {
      fail(element, "--batch-dim axis " + std::to_string(axis) + " is out of range for rank " + std::to_string(rank));
    }
    Shape shape;
    for (int d = 0; d < rank; ++d) {
      const auto& dim = tt.shape().dim(d);
      const bool is_static = dim.has_dim_value() && dim.dim_value() > 0;
      const std::string sym = dim.has_dim_param() ? "'" + dim.dim_param() + "'" : "(unnamed)";
      if (d == axis) {
        if (options_.batch) {
          if (is_static && dim.dim_value() != *options_.batch) exported_batch_ = dim.dim_value();
          shape.push_back(*options_.batch);
        } else if (is_static) {
          if (result_.batch && result_.batch != dim.dim_value()) {
            fail(element, "static batch " + std::to_string(dim.dim_value()) +
                              " differs from another input's batch " + std::to_string(result_.batch));
          }
          result_.batch = dim.dim_value();
          shape.push_back(dim.dim_value());
        } else {
          fail(element, "batch dim " + std::to_string(d) + " " + sym + " is symbolic; pass --batch N");
        }
      } else if (is_static) {
        shape.push_back(dim.dim_value());
      } else {
        fail(element, "dim " + std::to_string(d) + " " + sym +
                          " is dynamic and --batch does not bind it (only the batch dim may be "
                          "symbolic; use --batch-dim NAME:AXIS if this is the batch)");
      }
    }
    check_size(shape, dtype_bytes(*dtype), element);
    const TensorId id = new_tensor(in.name(), *dtype, shape, TensorRole::kDataInput);
    values_[in.name()] = id;
    graph().inputs.push_back(id);
    graph().input_batch_axes.push_back(rank > 0 ? axis : -1);
  }
  for (const auto& bd : options_.batch_dims) {
    if (!seen.count(bd.input)) fail("--batch-dim", "no graph input is named '" + bd.input + "'");
  }
  if (options_.batch) result_.batch = *options_.batch;
}

// ---------------------------------------------------------------------------------------------
// Operands

TensorId Importer::input(const onnx::NodeProto& n, int i) const {
  auto it = values_.find(n.input(i));
  if (it == values_.end()) {
    throw UserError(path_, node_label(n), "input '" + n.input(i) + "' is not defined before use");
  }
  return it->second;
}

ConstArray Importer::const_input(const onnx::NodeProto& n, int i, const char* what) const {
  const Tensor& t = graph().tensor(input(n, i));
  if (t.role != TensorRole::kConstant || !t.has_data()) {
    throw UserError(path_, node_label(n),
                    std::string(what) + " input '" + n.input(i) +
                        "' is not a constant (it depends on runtime values; dynamic shapes are "
                        "not supported)");
  }
  return array_from_tensor(t);
}

std::vector<int64_t> Importer::const_ints(const onnx::NodeProto& n, int i, const char* what) const {
  const ConstArray a = const_input(n, i, what);
  std::vector<int64_t> out;
  for (int64_t k = 0; k < a.size(); ++k) out.push_back(a.as_int(k));
  return out;
}

double Importer::const_scalar(const onnx::NodeProto& n, int i, const char* what) const {
  const ConstArray a = const_input(n, i, what);
  if (a.size() != 1) {
    throw UserError(path_, node_label(n), std::string(what) + " must be a scalar");
  }
  return a.as_double(0);
}

// ---------------------------------------------------------------------------------------------
// Node normalisation: attribute-like operands become attributes.

void Importer::copy_attributes(const onnx::NodeProto& n, Node& node) const {
  for (const auto& a : n.attribute()) {
    switch (a.type()) {
      case onnx::AttributeProto::INT: node.attrs.set(a.name(), static_cast<int64_t>(a.i())); break;
      case onnx::AttributeProto::FLOAT: node.attrs.set(a.name(), static_cast<double>(a.f())); break;
      case onnx::AttributeProto::STRING: node.attrs.set(a.name(), a.s()); break;
      case onnx::AttributeProto::INTS:
        node.attrs.set(a.name(), std::vector<int64_t>(a.ints().begin(), a.ints().end()));
        break;
      case onnx::AttributeProto::FLOATS:
        node.attrs.set(a.name(), std::vector<double>(a.floats().begin(), a.floats().end()));
        break;
      default: break;  // tensors and graphs are handled per op
    }
  }
}

void Importer::resolve_auto_pad(const onnx::NodeProto& n, Node& node, const Shape& x,
                                const std::vector<int64_t>& kernel) const {
  const std::string mode = node.attrs.has("auto_pad") ? node.attrs.get_string("auto_pad") : "NOTSET";
  if (mode == "NOTSET" || mode == "VALID") return;
  if (mode != "SAME_UPPER" && mode != "SAME_LOWER") {
    throw UserError(path_, node_label(n), "unknown auto_pad '" + mode + "'");
  }
  const size_t nsp = kernel.size();
  const auto strides = node.attrs.get_ints("strides", std::vector<int64_t>(nsp, 1));
  const auto dil = node.attrs.get_ints("dilations", std::vector<int64_t>(nsp, 1));
  std::vector<int64_t> pads(2 * nsp, 0);
  for (size_t i = 0; i < nsp && i + 2 < x.size(); ++i) {
    const int64_t out = (x[i + 2] + strides[i] - 1) / strides[i];
    const int64_t total = std::max<int64_t>(0, (out - 1) * strides[i] + dil[i] * (kernel[i] - 1) + 1 - x[i + 2]);
    const int64_t small = total / 2, big = total - small;
    pads[i] = mode == "SAME_UPPER" ? small : big;
    pads[i + nsp] = mode == "SAME_UPPER" ? big : small;
  }
  node.attrs.set("pads", pads);
  node.attrs.set("auto_pad", std::string("NOTSET"));
}

// Fills `node` (kind, data inputs, attributes). Returns false when the node is an identity
// whose output was aliased to its input.
bool Importer::normalise(const onnx::NodeProto& n, Node& node) {
  node.kind = *op_kind_from_onnx(n.op_type());
  copy_attributes(n, node);
  auto data_inputs = [&](int count) {
    for (int i = 0; i < count && i < n.input_size(); ++i) {
      if (!n.input(i).empty()) node.inputs.push_back(input(n, i));
    }
  };
  switch (node.kind) {
    case OpKind::kIdentity:
      alias(n.output(0), input(n, 0));
      return false;
    case OpKind::kDropout: {
      const double ratio = has_input(n, 1) ? const_scalar(n, 1, "ratio") : 0.5;
      const bool training = has_input(n, 2) && const_scalar(n, 2, "training_mode") != 0.0;
      if (!training || ratio == 0.0) {
        alias(n.output(0), input(n, 0));
        return false;
      }
      node.attrs.set("ratio", ratio);
      // The mask's RNG key: a stable function of the node's name, so the backward pass (and
      // any recomputation or shard) regenerates the same mask.
      node.attrs.set("rng_key", static_cast<int64_t>(stable_key(node_names_.at(&n)) >> 1));
      data_inputs(1);
      return true;
    }
    case OpKind::kReshape:
      node.attrs.set("shape", const_ints(n, 1, "shape"));
      data_inputs(1);
      return true;
    case OpKind::kExpand:
      node.attrs.set("shape", const_ints(n, 1, "shape"));
      data_inputs(1);
      return true;
    case OpKind::kSplit:
      if (has_input(n, 1)) node.attrs.set("split", const_ints(n, 1, "split"));
      data_inputs(1);
      return true;
    case OpKind::kSlice:
      node.attrs.set("starts", const_ints(n, 1, "starts"));
      node.attrs.set("ends", const_ints(n, 2, "ends"));
      if (has_input(n, 3)) node.attrs.set("axes", const_ints(n, 3, "axes"));
      if (has_input(n, 4)) node.attrs.set("steps", const_ints(n, 4, "steps"));
      data_inputs(1);
      return true;
    case OpKind::kSqueeze: case OpKind::kUnsqueeze:
    case OpKind::kReduceSum: case OpKind::kReduceMean: case OpKind::kReduceMax:
      if (has_input(n, 1)) node.attrs.set("axes", const_ints(n, 1, "axes"));
      if (node.kind == OpKind::kUnsqueeze && !node.attrs.has("axes")) {
        throw UserError(path_, node_label(n), "Unsqueeze needs axes");
      }
      data_inputs(1);
      return true;
    case OpKind::kClip:
      if (has_input(n, 1)) node.attrs.set("min", const_scalar(n, 1, "min"));
      if (has_input(n, 2)) node.attrs.set("max", const_scalar(n, 2, "max"));
      data_inputs(1);
      return true;
    case OpKind::kCumSum:
      node.attrs.set("axis", saturating_int(const_scalar(n, 1, "axis")));
      data_inputs(1);
      return true;
    case OpKind::kTopK:
      node.attrs.set("k", saturating_int(const_scalar(n, 1, "K")));
      data_inputs(1);
      return true;
    case OpKind::kOneHot: {
      node.attrs.set("depth", saturating_int(const_scalar(n, 1, "depth")));
      const ConstArray values = const_input(n, 2, "values");
      if (values.size() != 2) throw UserError(path_, node_label(n), "values must hold [off, on]");
      node.attrs.set("off_value", values.as_double(0));
      node.attrs.set("on_value", values.as_double(1));
      node.attrs.set("dtype", static_cast<int64_t>(values.dtype));
      data_inputs(1);
      return true;
    }
    case OpKind::kCast: {
      const auto to = dtype_from_onnx(static_cast<int32_t>(node.attrs.get_int("to")));
      if (!to) throw UserError(path_, node_label(n), "casts to an unsupported type");
      node.attrs.set("to", static_cast<int64_t>(*to));
      data_inputs(1);
      return true;
    }
    case OpKind::kConstantOfShape: {
      node.attrs.set("shape", const_ints(n, 0, "shape"));
      DType dtype = DType::kFloat32;
      double value = 0.0;
      for (const auto& a : n.attribute()) {
        if (a.name() == "value") {
          Tensor t = tensor_from_proto(a.t(), node_label(n) + " value");
          if (!t.has_data() || t.numel() != 1) throw UserError(path_, node_label(n), "value must be one element");
          dtype = t.dtype;
          value = array_from_tensor(t).as_double(0);
        }
      }
      node.attrs.set("value", value);
      node.attrs.set("dtype", static_cast<int64_t>(dtype));
      return true;
    }
    case OpKind::kRange: {
      const ConstArray start = const_input(n, 0, "start");
      node.attrs.set("start", start.as_double(0));
      node.attrs.set("limit", const_scalar(n, 1, "limit"));
      node.attrs.set("delta", const_scalar(n, 2, "delta"));
      node.attrs.set("dtype", static_cast<int64_t>(start.dtype));
      return true;
    }
    case OpKind::kConv: case OpKind::kMaxPool: case OpKind::kAveragePool: {
      data_inputs(n.input_size());
      const Shape& x = graph().tensor(node.inputs[0]).shape;
      std::vector<int64_t> kernel;
      if (node.kind == OpKind::kConv) {
        const Shape& w = graph().tensor(node.inputs.at(1)).shape;
        if (w.size() >= 2) kernel.assign(w.begin() + 2, w.end());
      } else {
        kernel = node.attrs.get_ints("kernel_shape", {});
      }
      resolve_auto_pad(n, node, x, kernel);
      return true;
    }
    default:
      data_inputs(n.input_size());
      return true;
  }
}

std::string Importer::shape_hint(const Node& node) const {
  if (exported_batch_ && node.kind == OpKind::kReshape) {
    return "; the model was exported with batch " + std::to_string(*exported_batch_) +
           " and this Reshape's target bakes it in, so it cannot take --batch " +
           std::to_string(result_.batch) + " (re-export with a dynamic batch axis)";
  }
  return "";
}

void Importer::import_node(const onnx::NodeProto& n) {
  const std::string& name = node_names_.at(&n);
  if (n.op_type() == "Constant") {
    Tensor t;
    for (const auto& a : n.attribute()) {
      if (a.name() == "value") {
        t = tensor_from_proto(a.t(), node_label(n));
      } else if (a.name() == "value_float" || a.name() == "value_int") {
        ConstArray v;
        v.dtype = a.name() == "value_int" ? DType::kInt64 : DType::kFloat32;
        if (a.name() == "value_int") v.ints = {a.i()};
        else v.floats = {a.f()};
        t.dtype = v.dtype;
        t.data = array_to_bytes(v);
      } else if (a.name() == "value_ints" || a.name() == "value_floats") {
        ConstArray v;
        v.dtype = a.name() == "value_ints" ? DType::kInt64 : DType::kFloat32;
        v.shape = {a.name() == "value_ints" ? a.ints_size() : a.floats_size()};
        v.ints.assign(a.ints().begin(), a.ints().end());
        v.floats.assign(a.floats().begin(), a.floats().end());
        t.dtype = v.dtype;
        t.shape = v.shape;
        t.data = array_to_bytes(v);
      } else {
        fail(node_label(n), "unsupported Constant attribute '" + a.name() + "'");
      }
    }
    if (!t.has_data()) fail(node_label(n), "Constant has no value");
    t.name = n.output(0);
    t.role = TensorRole::kConstant;
    values_[n.output(0)] = graph().add_tensor(std::move(t));
    ++folded_;
    return;
  }
  if (n.op_type() == "Shape") {
    const Shape& s = graph().tensor(input(n, 0)).shape;
    const int64_t rank = static_cast<int64_t>(s.size());
    auto clampi = [rank](int64_t v) { return std::clamp<int64_t>(v < 0 ? v + rank : v, 0, rank); };
    int64_t start = 0, end = rank;
    for (const auto& a : n.attribute()) {
      if (a.name() == "start") start = clampi(a.i());
      if (a.name() == "end") end = clampi(a.i());
    }
    ConstArray v;
    v.dtype = DType::kInt64;
    for (int64_t d = start; d < end; ++d) v.ints.push_back(s[d]);
    v.shape = {static_cast<int64_t>(v.ints.size())};
    values_[n.output(0)] = constant_tensor(n.output(0), v);
    ++folded_;
    return;
  }

  Node node;
  node.name = name;
  if (!normalise(n, node)) {
    ++removed_;
    return;
  }
  for (int i = 0; i < n.output_size(); ++i) {
    // Trailing optional outputs that are absent are dropped; a gap gets a placeholder.
    int last = n.output_size() - 1;
    while (last >= 0 && n.output(last).empty()) --last;
    if (i > last) break;
    node.outputs.push_back(kNoId);
  }

  // Output types.
  std::vector<TensorType> types;
  const OpFamily family = op_info(node.kind).family;
  try {
    if (family == OpFamily::kSource) {
      const DType dtype = static_cast<DType>(node.attrs.get_int("dtype"));
      Shape shape = node.kind == OpKind::kConstantOfShape ? node.attrs.get_ints("shape") : Shape{};
      if (node.kind == OpKind::kRange) {
        const double count = std::ceil((node.attrs.get_float("limit") - node.attrs.get_float("start")) /
                                       node.attrs.get_float("delta"));
        shape = {std::max<int64_t>(0, saturating_int(count))};
      }
      types = {{dtype, shape}};
    } else {
      std::vector<TensorType> in;
      for (TensorId t : node.inputs) in.push_back({graph().tensor(t).dtype, graph().tensor(t).shape});
      types = infer_types(node, in);
    }
  } catch (const ShapeError& e) {
    fail(node_label(n), e.what() + shape_hint(node));
  }
  if (types.size() < node.outputs.size()) fail(node_label(n), "has more outputs than the operator defines");
  for (const TensorType& type : types) {
    check_size(type.shape, dtype_bytes(type.dtype), node_label(n));
    if (family == OpFamily::kSource && num_elements(type.shape) > kMaxFoldedElements) {
      fail(node_label(n), "would create a constant of " + format_dims(type.shape) + " elements");
    }
  }

  // Fold when every data input is a known constant.
  bool foldable = family != OpFamily::kDropout && family != OpFamily::kLoss &&
                  num_elements(types[0].shape) <= kMaxFoldedElements;
  std::vector<ConstArray> const_inputs;
  for (TensorId t : node.inputs) {
    const Tensor& tensor = graph().tensor(t);
    if (tensor.role != TensorRole::kConstant || !tensor.has_data()) {
      foldable = false;
      break;
    }
    const_inputs.push_back(array_from_tensor(tensor));
  }
  if (foldable && node.outputs.size() == 1) {
    std::optional<std::vector<ConstArray>> values;
    try {
      values = evaluate_constant(node, const_inputs, types);
    } catch (const ShapeError& e) {
      fail(node_label(n), e.what());
    }
    if (values) {
      values_[n.output(0)] = constant_tensor(n.output(0), (*values)[0]);
      ++folded_;
      return;
    }
  }
  if (family == OpFamily::kSource) fail(node_label(n), "could not be evaluated at import");

  for (size_t i = 0; i < node.outputs.size(); ++i) {
    const std::string out_name =
        n.output(static_cast<int>(i)).empty() ? name + ":" + std::to_string(i) : n.output(static_cast<int>(i));
    node.outputs[i] = new_tensor(out_name, types[i].dtype, types[i].shape, TensorRole::kActivation);
    values_[out_name] = node.outputs[i];
  }
  graph().add_node(std::move(node));
}

// ---------------------------------------------------------------------------------------------
// Loss, pruning and roles

void Importer::set_loss() {
  const auto& outputs = model_.graph().output();
  if (outputs.empty()) fail("graph", "has no outputs; the model must output a scalar loss");
  const std::string& name = outputs[0].name();
  const std::string element = "output '" + name + "'";
  auto it = values_.find(name);
  if (it == values_.end()) fail(element, "is not produced by any node");
  const Tensor& loss = graph().tensor(it->second);
  if (!loss.shape.empty()) {
    fail(element, "has shape " + format_dims(loss.shape) +
                      "; the model's output must be a scalar loss (e.g. mean cross entropy)");
  }
  if (!is_floating(loss.dtype)) fail(element, "must be a floating-point loss");
  if (loss.role != TensorRole::kActivation) fail(element, "is not computed by the graph's nodes");
  graph().loss = it->second;
}

void Importer::prune_and_assign_roles() {
  Graph& g = graph();
  g.finalize();
  const size_t nt = g.num_tensors();
  // Live: nodes with an output the loss depends on.
  std::vector<bool> live_tensor(nt, false), needs_grad(nt, false);
  live_tensor[g.loss] = true;
  needs_grad[g.loss] = true;
  std::vector<bool> live_node(g.num_nodes(), false);
  for (NodeId id = static_cast<NodeId>(g.num_nodes()) - 1; id >= 0; --id) {
    const Node& node = g.node(id);
    const OpInfo& info = op_info(node.kind);
    bool live = false, grad = false;
    for (size_t o = 0; o < node.outputs.size(); ++o) {
      live = live || live_tensor[node.outputs[o]];
      grad = grad || (needs_grad[node.outputs[o]] && mask_has(info.differentiable_outputs, o));
    }
    if (!live) continue;
    live_node[id] = true;
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      const TensorId t = node.inputs[i];
      live_tensor[t] = true;
      bool diff = grad && mask_has(info.differentiable_inputs, i) && is_floating(g.tensor(t).dtype);
      if (node.kind == OpKind::kCast) diff = diff && is_floating(g.tensor(node.outputs[0]).dtype);
      if (diff) needs_grad[t] = true;
    }
  }

  // Rebuild the graph with live nodes and the tensors they touch.
  Graph pruned;
  std::vector<TensorId> remap(nt, kNoId);
  auto keep = [&](TensorId t) {
    if (remap[t] == kNoId) remap[t] = pruned.add_tensor(g.tensor(t));
    return remap[t];
  };
  for (TensorId t : g.inputs) pruned.inputs.push_back(keep(t));
  pruned.input_batch_axes = g.input_batch_axes;
  for (NodeId id = 0; id < static_cast<NodeId>(g.num_nodes()); ++id) {
    if (!live_node[id]) {
      ++removed_;
      continue;
    }
    Node node = g.node(id);
    for (auto& t : node.inputs) t = keep(t);
    for (auto& t : node.outputs) t = keep(t);
    pruned.add_node(std::move(node));
  }
  pruned.loss = keep(g.loss);

  std::optional<std::regex> trainable, frozen;
  try {
    if (!options_.trainable_regex.empty()) trainable.emplace(options_.trainable_regex);
    if (!options_.frozen_regex.empty()) frozen.emplace(options_.frozen_regex);
  } catch (const std::regex_error& e) {
    throw UserError("--trainable/--frozen", "regular expression", e.what());
  }
  for (TensorId old = 0; old < static_cast<TensorId>(nt); ++old) {
    if (remap[old] == kNoId) continue;
    Tensor& t = pruned.tensor(remap[old]);
    if (initializers_.count(old)) {
      bool param = needs_grad[old];
      if (trainable && std::regex_search(t.name, *trainable)) param = true;
      if (frozen && std::regex_search(t.name, *frozen)) param = false;
      t.role = param ? TensorRole::kParameter : TensorRole::kBuffer;
      if (!t.has_data()) result_.shape_only = true;
    }
  }
  pruned.tensor(pruned.loss).role = TensorRole::kLoss;
  pruned.finalize();

  // Labels: graph inputs that reach a loss's label operand through layout ops.
  for (TensorId in : pruned.inputs) {
    std::vector<TensorId> frontier = {in};
    bool label = false;
    while (!frontier.empty() && !label) {
      const TensorId t = frontier.back();
      frontier.pop_back();
      for (NodeId c : pruned.tensor(t).consumers) {
        const Node& node = pruned.node(c);
        if (node.kind == OpKind::kSoftmaxCrossEntropyLoss && node.inputs.size() > 1 &&
            node.inputs[1] == t) {
          label = true;
        } else if (op_info(node.kind).family == OpFamily::kLayout || node.kind == OpKind::kCast) {
          frontier.insert(frontier.end(), node.outputs.begin(), node.outputs.end());
        }
      }
    }
    if (label) pruned.tensor(in).role = TensorRole::kLabel;
  }
  g = std::move(pruned);
}

ImportedModel Importer::run() {
  result_.path = path_;
  if (!model_.has_graph() || model_.graph().node_size() == 0) fail("graph", "the model has no nodes");
  check_opset();
  name_nodes();
  check_supported_ops();
  add_initializers();
  add_graph_inputs();
  for (const auto& n : model_.graph().node()) import_node(n);
  set_loss();
  prune_and_assign_roles();
  result_.folded_nodes = folded_;
  result_.removed_nodes = removed_;
  return std::move(result_);
}

}  // namespace

ImportedModel import_onnx_bytes(const std::string& bytes, const std::string& path,
                                const ImportOptions& options) {
  onnx::ModelProto model;
  google::protobuf::io::ArrayInputStream raw(bytes.data(), static_cast<int>(bytes.size()));
  google::protobuf::io::CodedInputStream coded(&raw);
  coded.SetTotalBytesLimit(std::numeric_limits<int>::max());
  if (bytes.empty() || !model.ParseFromCodedStream(&coded) || !coded.ConsumedEntireMessage()) {
    throw UserError(path, "file", "is not a valid ONNX model (protobuf parse failed: truncated or not ONNX)");
  }
  if (!model.has_graph() || model.ir_version() <= 0) {
    throw UserError(path, "file", "is not an ONNX model (no graph or IR version)");
  }
  Importer importer(model, path, options);
  return importer.run();
}

ImportedModel import_onnx_file(const std::string& path, const ImportOptions& options) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw UserError(path, "file", "is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(path, "file", "cannot be opened");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  const std::string bytes = buffer.str();
  if (bytes.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
    throw UserError(path, "file", "is larger than 2 GiB; store weights as external data");
  }
  return import_onnx_bytes(bytes, path, options);
}

BatchDim parse_batch_dim(const std::string& spec) {
  const auto colon = spec.rfind(':');
  BatchDim bd;
  try {
    if (colon == std::string::npos || colon == 0) throw std::invalid_argument("no colon");
    bd.input = spec.substr(0, colon);
    size_t used = 0;
    bd.axis = std::stoll(spec.substr(colon + 1), &used);
    if (used != spec.size() - colon - 1) throw std::invalid_argument("trailing text");
  } catch (const std::exception&) {
    throw UserError("--batch-dim", "'" + spec + "'", "expected NAME:AXIS, e.g. input_ids:0");
  }
  return bd;
}

}  // namespace alpa
