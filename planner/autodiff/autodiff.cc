// Reverse-mode differentiation of the forward graph and the optimizer's update nodes.
#include <map>

#include "planner/autodiff/grad_builder.h"
#include "planner/autodiff/training_graph.h"
#include "planner/common/error.h"
#include "planner/graph/const_eval.h"

namespace alpa {

bool is_grad_sum(const Node& n) { return n.kind == OpKind::kAdd && n.name.find("/grad_sum/") != std::string::npos; }

bool in_optimizer_phase(const Node& node) {
  if (op_info(node.kind).family == OpFamily::kOptimizer) return true;
  return node.kind == OpKind::kReshard && node.attrs.get_int("optimizer_phase", 0) != 0;
}


std::vector<TensorId> GradBuilder::op_n(OpKind kind, std::vector<TensorId> inputs, Attributes attrs,
                                        size_t outputs) {
  Node node;
  node.kind = kind;
  node.name = fwd_.name + "/grad/" + std::to_string(counter_++);
  node.inputs = std::move(inputs);
  node.attrs = std::move(attrs);
  node.derived_from = fwd_.name;
  node.outputs.assign(outputs, kNoId);
  std::vector<TensorType> in;
  for (TensorId t : node.inputs) in.push_back({g_.tensor(t).dtype, g_.tensor(t).shape});
  std::vector<TensorType> types;
  try {
    types = infer_types(node, in);
  } catch (const ShapeError& e) {
    ALPA_CHECK(false, "gradient of '" + fwd_.name + "' (" + std::string(op_name(fwd_.kind)) +
                          "): " + e.what());
  }
  ALPA_CHECK(types.size() >= outputs, "gradient node has too few outputs");
  for (size_t o = 0; o < outputs; ++o) {
    Tensor t;
    t.name = node.name + ":" + std::to_string(o);
    t.dtype = types[o].dtype;
    t.shape = types[o].shape;
    t.role = TensorRole::kGradient;
    node.outputs[o] = g_.add_tensor(std::move(t));
  }
  std::vector<TensorId> out = node.outputs;
  g_.add_node(std::move(node));
  return out;
}

TensorId GradBuilder::scalar(double value, DType dtype) {
  ConstArray a;
  a.dtype = dtype;
  a.floats = {value};
  Tensor t;
  t.name = fwd_.name + "/grad/const" + std::to_string(counter_++);
  t.dtype = dtype;
  t.role = TensorRole::kConstant;
  t.data = array_to_bytes(a);
  return g_.add_tensor(std::move(t));
}

TensorId GradBuilder::sum_to(TensorId t, const Shape& shape) {
  if (t == kNoId || g_.tensor(t).shape == shape) return t;
  Attributes a;
  a.set("shape", shape);
  return op(OpKind::kSumToShape, {t}, a);
}

TensorId GradBuilder::reshape(TensorId t, const Shape& shape) {
  if (t == kNoId || g_.tensor(t).shape == shape) return t;
  Attributes a;
  a.set("shape", shape);
  return op(OpKind::kReshape, {t}, a);
}

namespace {

// Tensors through which a gradient flows from some parameter to the loss.
std::vector<bool> active_tensors(const Graph& g) {
  const size_t nt = g.num_tensors();
  std::vector<bool> from_param(nt, false), to_loss(nt, false);
  for (size_t t = 0; t < nt; ++t) from_param[t] = g.tensor(static_cast<TensorId>(t)).role == TensorRole::kParameter;
  for (const Node& n : g.nodes()) {
    const OpInfo& info = op_info(n.kind);
    bool any = false;
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      any = any || (from_param[n.inputs[i]] && mask_has(info.differentiable_inputs, i));
    }
    for (size_t o = 0; o < n.outputs.size(); ++o) {
      from_param[n.outputs[o]] = any && mask_has(info.differentiable_outputs, o) &&
                                 is_floating(g.tensor(n.outputs[o]).dtype);
    }
  }
  to_loss[g.loss] = true;
  for (auto it = g.nodes().rbegin(); it != g.nodes().rend(); ++it) {
    const OpInfo& info = op_info(it->kind);
    bool any = false;
    for (size_t o = 0; o < it->outputs.size(); ++o) {
      any = any || (to_loss[it->outputs[o]] && mask_has(info.differentiable_outputs, o));
    }
    if (!any) continue;
    for (size_t i = 0; i < it->inputs.size(); ++i) {
      if (mask_has(info.differentiable_inputs, i)) to_loss[it->inputs[i]] = true;
    }
  }
  std::vector<bool> active(nt);
  for (size_t t = 0; t < nt; ++t) active[t] = from_param[t] && to_loss[t];
  return active;
}

// Sums the gradient contributions of one tensor (tied weights, fan-out) with Add nodes.
TensorId accumulate(Graph& g, const Node& owner, std::vector<TensorId> parts, int& counter) {
  TensorId sum = parts[0];
  for (size_t k = 1; k < parts.size(); ++k) {
    Node add;
    add.kind = OpKind::kAdd;
    add.name = owner.name + "/grad_sum/" + std::to_string(counter++);
    add.derived_from = owner.name;
    add.inputs = {sum, parts[k]};
    Tensor t = g.tensor(sum);
    t.name = add.name + ":0";
    t.data = nullptr;
    t.role = TensorRole::kGradient;
    add.outputs = {g.add_tensor(std::move(t))};
    sum = add.outputs[0];
    g.add_node(std::move(add));
  }
  return sum;
}

TensorId new_state(Graph& g, const std::string& name, const Tensor& like) {
  Tensor t;
  t.name = name;
  t.dtype = like.dtype;
  t.shape = like.shape;
  t.role = TensorRole::kOptimizerState;
  return g.add_tensor(std::move(t));
}

}  // namespace

Graph to_compute_precision(const Graph& source, DType compute) {
  Graph g = source;
  if (compute == DType::kFloat32) return g;
  ALPA_CHECK(compute == DType::kFloat16 || compute == DType::kBFloat16, "compute precision must be fp16 or bf16");
  for (size_t t = 0; t < g.num_tensors(); ++t) {
    Tensor& tensor = g.tensor(static_cast<TensorId>(t));
    if (!is_floating(tensor.dtype) || tensor.role == TensorRole::kParameter || tensor.role == TensorRole::kBuffer) continue;
    if (tensor.has_data()) {
      ConstArray a = array_from_tensor(tensor);
      a.dtype = compute;
      tensor.data = array_to_bytes(a);
    }
    tensor.dtype = compute;
  }
  const size_t forward_nodes = g.num_nodes();
  std::map<TensorId, TensorId> half_of;  // master → its compute-precision copy
  for (size_t k = 0; k < forward_nodes; ++k) {
    {
      Node& n = g.node(static_cast<NodeId>(k));
      if (n.kind == OpKind::kCast && is_floating(static_cast<DType>(n.attrs.get_int("to")))) {
        n.attrs.set("to", static_cast<int64_t>(compute));
      }
    }
    // add_node below may reallocate the node list: index, never hold a reference across it.
    const OpKind kind = g.node(static_cast<NodeId>(k)).kind;
    for (size_t i = 0; i < g.node(static_cast<NodeId>(k)).inputs.size(); ++i) {
      const TensorId t = g.node(static_cast<NodeId>(k)).inputs[i];
      const TensorRole role = g.tensor(t).role;
      if (role != TensorRole::kParameter && role != TensorRole::kBuffer) continue;
      if (kind == OpKind::kBatchNormalization && i >= 3) continue;  // running statistics: fp32
      auto it = half_of.find(t);
      if (it == half_of.end()) {
        Tensor half = g.tensor(t);
        half.name = "half/" + half.name;
        half.dtype = compute;
        half.role = TensorRole::kActivation;
        half.data = nullptr;
        const TensorId hid = g.add_tensor(std::move(half));
        Node cast;
        cast.name = "cast/" + g.tensor(t).name;
        cast.kind = OpKind::kCast;
        cast.inputs = {t};
        cast.outputs = {hid};
        cast.attrs.set("to", static_cast<int64_t>(compute));
        cast.attrs.set("master_cast", int64_t{1});
        g.add_node(std::move(cast));
        it = half_of.emplace(t, hid).first;
      }
      g.node(static_cast<NodeId>(k)).inputs[i] = it->second;
    }
  }
  g.finalize();
  return g;
}

TrainingGraph build_training_graph(const Graph& source, const OptimizerConfig& opt,
                                   const PrecisionConfig& precision) {
  TrainingGraph tg;
  tg.optimizer = opt;
  tg.precision = precision;
  if (tg.precision.loss_scale <= 0) tg.precision.loss_scale = precision.compute == DType::kFloat16 ? 32768.0 : 1.0;
  const Graph forward = to_compute_precision(source, precision.compute);
  tg.graph = forward;
  tg.num_forward_nodes = forward.num_nodes();
  Graph& g = tg.graph;
  const std::vector<bool> active = active_tensors(forward);

  // d loss / d loss = 1 (times the loss scale in fp16)
  std::map<TensorId, std::vector<TensorId>> contributions;
  {
    ConstArray one;
    one.dtype = forward.tensor(forward.loss).dtype;
    one.floats = {tg.precision.loss_scale};
    Tensor seed;
    seed.name = "grad/" + forward.tensor(forward.loss).name;
    seed.dtype = one.dtype;
    seed.role = TensorRole::kConstant;
    seed.data = array_to_bytes(one);
    contributions[forward.loss].push_back(g.add_tensor(std::move(seed)));
  }

  int sum_counter = 0;
  std::map<TensorId, TensorId> final_grad;
  auto gradient_of = [&](TensorId t, const Node& owner) -> TensorId {
    auto it = contributions.find(t);
    if (it == contributions.end()) return kNoId;
    const TensorId sum = accumulate(g, owner, it->second, sum_counter);
    contributions.erase(it);
    final_grad[t] = sum;
    return sum;
  };

  for (size_t k = forward.num_nodes(); k-- > 0;) {
    const Node& node = forward.node(static_cast<NodeId>(k));
    const OpInfo& info = op_info(node.kind);
    std::vector<bool> wants(node.inputs.size(), false);
    bool any_input = false;
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      wants[i] = active[node.inputs[i]] && mask_has(info.differentiable_inputs, i);
      any_input = any_input || wants[i];
    }
    if (!any_input) continue;
    GradBuilder b(g, node, wants);
    bool any_output = false;
    for (size_t o = 0; o < node.outputs.size(); ++o) {
      b.go_.push_back(mask_has(info.differentiable_outputs, o) ? gradient_of(node.outputs[o], node) : kNoId);
      any_output = any_output || b.go_.back() != kNoId;
    }
    if (!any_output) continue;
    apply_grad_rule(b);
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      if (b.gradients()[i] == kNoId) continue;
      contributions[node.inputs[i]].push_back(b.gradients()[i]);
      tg.grad_edges.push_back({static_cast<NodeId>(k), i, b.gradients()[i]});
    }
  }

  // Parameter gradients (summed over every use), named grad/<param>, then optimizer updates.
  for (TensorId p : forward.tensors_with_role(TensorRole::kParameter)) {
    ParameterSlot slot;
    slot.param = p;
    const Tensor& param = forward.tensor(p);
    Node owner;
    owner.name = param.name;
    slot.grad = gradient_of(p, owner);
    if (slot.grad == kNoId) {  // a parameter forced trainable without a path: zero gradient
      GradBuilder b(g, owner, {});
      Attributes z;
      z.set("shape", param.shape);
      z.set("dtype", static_cast<int64_t>(param.dtype));
      slot.grad = b.op(OpKind::kZeros, {}, z);
    }
    g.tensor(slot.grad).name = "grad/" + param.name;

    Node update;
    update.name = "update/" + param.name;
    update.derived_from = param.name;
    std::vector<std::string> state_names;
    if (opt.kind == OptimizerKind::kSgd) {
      update.kind = OpKind::kSgdUpdate;
      update.attrs.set("lr", opt.lr);
      update.attrs.set("momentum", opt.momentum);
      update.attrs.set("weight_decay", opt.weight_decay);
      if (opt.momentum != 0.0) state_names = {"momentum/" + param.name};
    } else {
      update.kind = OpKind::kAdamUpdate;
      update.attrs.set("lr", opt.lr);
      update.attrs.set("beta1", opt.beta1);
      update.attrs.set("beta2", opt.beta2);
      update.attrs.set("epsilon", opt.epsilon);
      update.attrs.set("weight_decay", opt.weight_decay);
      update.attrs.set("decoupled", static_cast<int64_t>(opt.kind == OptimizerKind::kAdamW));
      state_names = {"adam_m/" + param.name, "adam_v/" + param.name};
    }
    if (tg.precision.loss_scale != 1.0) update.attrs.set("loss_scale", tg.precision.loss_scale);
    for (const auto& name : state_names) slot.state.push_back(new_state(g, name, param));
    update.inputs = {p, slot.grad};
    update.inputs.insert(update.inputs.end(), slot.state.begin(), slot.state.end());
    std::vector<std::string> out_names = {"updated/" + param.name};
    for (const auto& name : state_names) out_names.push_back("updated/" + name);
    for (size_t o = 0; o < out_names.size(); ++o) {
      Tensor t;
      t.name = out_names[o];
      t.dtype = param.dtype;
      t.shape = param.shape;
      t.role = TensorRole::kActivation;  // the next step's value, written back by the runtime
      update.outputs.push_back(g.add_tensor(std::move(t)));
    }
    slot.updated_param = update.outputs[0];
    slot.updated_state.assign(update.outputs.begin() + 1, update.outputs.end());
    g.add_node(std::move(update));
    tg.state_updates.emplace_back(slot.param, slot.updated_param);
    for (size_t s = 0; s < slot.state.size(); ++s) tg.state_updates.emplace_back(slot.state[s], slot.updated_state[s]);
    tg.parameters.push_back(std::move(slot));
  }

  // Buffers updated by the forward pass: BatchNorm's running statistics.
  for (const Node& n : forward.nodes()) {
    if (n.kind != OpKind::kBatchNormalization) continue;
    for (size_t o = 1; o < n.outputs.size() && o < 3; ++o) {
      tg.state_updates.emplace_back(n.inputs[o + 2], n.outputs[o]);
    }
  }
  g.finalize();
  return tg;
}

}  // namespace alpa
